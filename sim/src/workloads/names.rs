//! Deterministic names for what controllers create. Kubernetes appends random
//! characters of `rand.SafeEncodeString`'s alphabet (no vowels, no look-alike digits);
//! knetlab derives them from who creates the pod and which one it is, so snapshots are
//! stable and re-expanding an unchanged controller gives the same names.
//!
//! The 5-character suffix of a pod is computed from the string `<kind>/<owner>/<key>`
//! (`ReplicaSet/frontend-5d59d67564/0`, `DaemonSet/agent/node-2`): its FNV-32a hash is
//! written as 5 base-27 digits, least significant first, each digit an index into
//! [`SAFE_ALPHABET`]. Should two siblings collide, the later one hashes
//! `<kind>/<owner>/<key>/1`, `/2`, ... until its name is free. The name is the
//! `generateName` prefix (`<owner>-`, cut to 58 characters as the API server cuts it)
//! followed by the suffix.

use sha2::{Digest, Sha256};

use crate::workloads::hash::fnv32a;

/// `k8s.io/apimachinery/pkg/util/rand`'s alphabet: no vowels (no words), no 0/1/3
/// (no look-alikes).
pub const SAFE_ALPHABET: &[u8; 27] = b"bcdfghjklmnpqrstvwxz2456789";

/// How many characters a generated name suffix has (`generateName` uses 5).
pub const SUFFIX_LEN: usize = 5;

/// `rand.SafeEncodeString`: every byte becomes `SAFE_ALPHABET[byte % 27]`.
pub fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| char::from(SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()]))
        .collect()
}

/// The longest `generateName` prefix the API server keeps: a generated name must fit
/// the 63 characters of a label value with its suffix.
pub const MAX_GENERATE_NAME_PREFIX: usize = 63 - SUFFIX_LEN;

/// A generated name: `prefix` (cut to [`MAX_GENERATE_NAME_PREFIX`] bytes, as the API
/// server cuts it) followed by `suffix`.
pub fn generated_name(prefix: &str, suffix: &str) -> String {
    let mut end = prefix.len().min(MAX_GENERATE_NAME_PREFIX);
    // Names are ASCII when valid; never split a character of an invalid one.
    while !prefix.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}", &prefix[..end])
}

/// The 5-character suffix for `key` (an index or a node name) under an owner, avoiding
/// the suffixes in `taken` (the siblings named before it).
pub fn suffix(kind: &str, owner: &str, key: &str, taken: &[String]) -> String {
    let base = format!("{kind}/{owner}/{key}");
    let mut attempt = 0u32;
    loop {
        let input = if attempt == 0 {
            base.clone()
        } else {
            format!("{base}/{attempt}")
        };
        let candidate = encode_base27(fnv32a(input.as_bytes()));
        if !taken.contains(&candidate) {
            return candidate;
        }
        attempt += 1;
    }
}

fn encode_base27(mut h: u32) -> String {
    let radix = SAFE_ALPHABET.len() as u32;
    (0..SUFFIX_LEN)
        .map(|_| {
            let digit = (h % radix) as usize;
            h /= radix;
            char::from(SAFE_ALPHABET[digit])
        })
        .collect()
}

/// A deterministic object UID (`metadata.uid`), UUID-shaped: the first 16 bytes of
/// SHA-256 of `<kind>/<namespace>/<name>`, with the version-4 and variant bits set.
pub fn uid(kind: &str, namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{kind}/{namespace}/{name}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_encode_maps_bytes_into_the_alphabet() {
        // '0' is byte 48, 48 % 27 = 21: the alphabet's '4'.
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
    }

    #[test]
    fn suffixes_are_stable_distinct_and_safe() {
        let a = suffix("ReplicaSet", "web-abc", "0", &[]);
        assert_eq!(a, suffix("ReplicaSet", "web-abc", "0", &[]));
        assert_eq!(a.len(), SUFFIX_LEN);
        assert!(a.bytes().all(|c| SAFE_ALPHABET.contains(&c)));
        assert_ne!(a, suffix("ReplicaSet", "web-abc", "1", &[]));
        assert_ne!(a, suffix("ReplicaSet", "web-abd", "0", &[]));
        // A collision moves on to another suffix.
        let b = suffix("ReplicaSet", "web-abc", "0", std::slice::from_ref(&a));
        assert_ne!(a, b);
        assert_eq!(b.len(), SUFFIX_LEN);
    }

    #[test]
    fn generated_names_cut_long_prefixes() {
        assert_eq!(generated_name("web-", "bcdfg"), "web-bcdfg");
        let long = "x".repeat(70);
        assert_eq!(generated_name(&long, "bcdfg").len(), 63);
        assert_eq!(
            generated_name(&format!("a{}", "é".repeat(40)), "bcdfg").len(),
            62
        );
    }

    #[test]
    fn uids_are_uuid_shaped_and_stable() {
        let u = uid("Job", "default", "pi");
        assert_eq!(u, uid("Job", "default", "pi"));
        assert_ne!(u, uid("Job", "other", "pi"));
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }
}
