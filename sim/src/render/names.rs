//! Stable names for the chains and ipsets of the NetworkPolicy enforcer, hashed the way
//! kube-router hashes them (`base32(sha256(parts joined without separators))`, first 16
//! characters), and the quoting `iptables-save` applies to strings, so that rendered rule
//! text is byte for byte what the kernel prints back.
//!
//! One deliberate difference from kube-router: its pod and policy chain names also hash
//! the sync start time (`syncVersion`), so they change on every full sync. We leave the
//! time out: the same cluster state always gives the same names, which keeps snapshots
//! stable and lets a re-sync with nothing changed touch nothing. Set names hash exactly
//! what kube-router hashes where the concept is the same (the policy target sets:
//! `default/allow-web` gives `KUBE-DST-M6PZR535OW6JMOTI`, as on a real node).

use data_encoding::BASE32;
use sha2::{Digest, Sha256};

use crate::policy::Direction;

/// kube-router's top-level chains, jumped to from the built-in chain of the same hook.
pub const ROUTER_INPUT: &str = "KUBE-ROUTER-INPUT";
pub const ROUTER_FORWARD: &str = "KUBE-ROUTER-FORWARD";
pub const ROUTER_OUTPUT: &str = "KUBE-ROUTER-OUTPUT";
/// ESTABLISHED/RELATED accept and the ICMP types that always pass.
pub const COMMON_CHAIN: &str = "KUBE-NWPLCY-COMMON";
/// Marks traffic in a direction no policy isolates as allowed.
pub const DEFAULT_CHAIN: &str = "KUBE-NWPLCY-DEFAULT";

/// Chain name prefixes of everything the enforcer owns in the filter table.
pub const CHAIN_PREFIXES: [&str; 4] = ["KUBE-ROUTER-", "KUBE-POD-FW-", "KUBE-NWPLCY-", "KUBE-CNP-"];
/// Set name prefixes the enforcer owns (`TMP-` sets only live during a refill).
pub const SET_PREFIXES: [&str; 3] = ["KUBE-SRC-", "KUBE-DST-", "TMP-KUBE-"];
/// The family string kube-router puts into its hashes (`v1.IPv4Protocol`).
const FAMILY: &str = "IPv4";

/// `base32(sha256(parts concatenated))[..16]`, kube-router's name hash.
pub fn hash16(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
    }
    let mut encoded = BASE32.encode(&h.finalize());
    encoded.truncate(16);
    encoded
}

/// Whether a filter-table chain belongs to the enforcer.
pub fn is_owned_chain(name: &str) -> bool {
    CHAIN_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Whether an ipset belongs to the enforcer.
pub fn is_owned_set(name: &str) -> bool {
    SET_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The firewall chain of one local pod: `KUBE-POD-FW-` + hash(namespace, pod).
pub fn pod_chain(namespace: &str, pod: &str) -> String {
    format!("KUBE-POD-FW-{}", hash16(&[namespace, pod]))
}

/// The chain holding one direction of one policy. kube-router has one chain per policy;
/// we split it by direction (see the `policy_iptables` module doc for why), so the
/// direction is part of the hash.
pub fn policy_chain(namespace: &str, policy: &str, dir: Direction) -> String {
    format!(
        "KUBE-NWPLCY-{}",
        hash16(&[namespace, policy, dir.field(), FAMILY])
    )
}

/// The set of a policy's target pods on this node: `KUBE-DST-` (matched as destination,
/// ingress) or `KUBE-SRC-` (matched as source, egress), same hash as kube-router.
pub fn target_set(namespace: &str, policy: &str, dir: Direction) -> String {
    format!(
        "{}{}",
        side_prefix(dir, Side::Target),
        hash16(&[namespace, policy, FAMILY])
    )
}

/// The set of one peer (`from[k]` / `to[k]`) of rule `rule` of a policy. kube-router
/// merges a rule's peers into one pod set and one net set; we keep one set per peer, so
/// that every rule names exactly one peer and each `ipBlock` keeps its own `except`s.
pub fn peer_set(
    namespace: &str,
    policy: &str,
    dir: Direction,
    rule: usize,
    peer: usize,
    ip_block: bool,
) -> String {
    let kind = if ip_block { "ipblock" } else { "pod" };
    format!(
        "{}{}",
        side_prefix(dir, Side::Peer),
        hash16(&[
            namespace,
            policy,
            &rule_word(dir),
            &rule.to_string(),
            FAMILY,
            kind,
            &peer.to_string(),
        ])
    )
}

/// The chain holding one direction of one cluster-wide policy (`kind` is the kind's
/// short name: `cnp`, `anp`, `banp`), its rules in order.
pub fn cluster_policy_chain(kind: &str, policy: &str, dir: Direction) -> String {
    format!(
        "{CLUSTER_POLICY_CHAIN_PREFIX}{}",
        hash16(&[kind, policy, dir.field(), FAMILY])
    )
}

/// What every cluster-wide policy's chain name starts with.
pub const CLUSTER_POLICY_CHAIN_PREFIX: &str = "KUBE-CNP-";
/// Gone to by a cluster-wide policy's Accept: marks the packet allowed, and its end
/// returns to the pod chain. One rule a match instead of a MARK and a RETURN.
pub const CLUSTER_ACCEPT_CHAIN: &str = "KUBE-CNP-ACCEPT";
/// Gone to by a Pass: marks the packet passed, and its end returns to the pod chain.
pub const CLUSTER_PASS_CHAIN: &str = "KUBE-CNP-PASS";

/// The set of the addresses a cluster-wide policy's peer stands for (pods, nodes'
/// addresses or networks; `ip_net` for a `hash:net` set), named after what the peer
/// selects (`peer`, its canonical form) rather than where it is written: every rule of
/// every policy that names the same peer on the same side matches the same set, as
/// Calico shares one set per selector. Hundreds of rules over a few namespaces then
/// need a few sets, and a pod's label change refills them without touching a chain.
pub fn cluster_peer_set(dir: Direction, peer: &str, ip_net: bool) -> String {
    let set_kind = if ip_net { "net" } else { "ip" };
    format!(
        "{}{}",
        side_prefix(dir, Side::Peer),
        hash16(&["cluster", FAMILY, set_kind, peer])
    )
}

/// The set of destination pods on which named port entry `entry` of a rule resolves to
/// `proto`/`port` (always matched as destination, as in kube-router).
pub fn named_port_set(
    namespace: &str,
    policy: &str,
    dir: Direction,
    rule: usize,
    entry: usize,
    proto: &str,
    port: u16,
) -> String {
    format!(
        "KUBE-DST-{}",
        hash16(&[
            namespace,
            policy,
            &rule_word(dir),
            &rule.to_string(),
            &entry.to_string(),
            FAMILY,
            "namedport",
            proto,
            &port.to_string(),
        ])
    )
}

/// The temporary twin a set is refilled in before the atomic `swap` (31 characters at
/// most: `TMP-` + 25).
pub fn temp_set(name: &str) -> String {
    format!("TMP-{name}")
}

/// The comment of the jump from a built-in chain to a top-level chain, with kube-router's
/// rule hash appended: `kube-router netpol - <hash(chain + rule spec)>`.
pub fn hook_comment(builtin: &str, target: &str) -> String {
    let spec = [
        "-m",
        "comment",
        "--comment",
        "kube-router netpol",
        "-j",
        target,
    ]
    .concat();
    format!("kube-router netpol - {}", hash16(&[builtin, &spec]))
}

/// kube-router's hashed comment for the service range RETURN at the top of
/// KUBE-ROUTER-INPUT.
pub fn service_range_comment(service_cidr: &str) -> String {
    let comment = "allow traffic to primary/secondary cluster IP range";
    let spec = [
        "-m",
        "comment",
        "--comment",
        comment,
        "-d",
        service_cidr,
        "-j",
        "RETURN",
    ]
    .concat();
    format!("{comment} - {}", hash16(&[ROUTER_INPUT, &spec]))
}

fn rule_word(dir: Direction) -> String {
    format!("{}rule", dir.field())
}

#[derive(Clone, Copy)]
enum Side {
    /// The pods a policy selects.
    Target,
    /// The other end of a rule.
    Peer,
}

/// Ingress matches the target as destination and peers as source; egress the reverse.
fn side_prefix(dir: Direction, side: Side) -> &'static str {
    match (dir, side) {
        (Direction::Ingress, Side::Target) | (Direction::Egress, Side::Peer) => "KUBE-DST-",
        (Direction::Ingress, Side::Peer) | (Direction::Egress, Side::Target) => "KUBE-SRC-",
    }
}

/// Writes a string the way `iptables-save` does (`xtables_save_string`): bare when it is
/// only `[A-Za-z0-9_-]`, otherwise in double quotes with `"`, `\` and `'` escaped.
pub fn save_quote(value: &str) -> String {
    let bare = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\' | '\'') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_sets_match_kube_router() {
        // The reference's example, recomputed from kube-router's own inputs.
        assert_eq!(
            target_set("default", "allow-web", Direction::Ingress),
            "KUBE-DST-M6PZR535OW6JMOTI"
        );
        assert_eq!(
            target_set("default", "allow-web", Direction::Egress),
            "KUBE-SRC-M6PZR535OW6JMOTI"
        );
    }

    #[test]
    fn names_fit_the_kernel_limits() {
        // iptables chain names: 28 characters; ipset names: 31.
        assert_eq!(pod_chain("x", "a").len(), 28);
        assert_eq!(policy_chain("x", "p", Direction::Egress).len(), 28);
        let set = peer_set("x", "p", Direction::Ingress, 0, 0, true);
        assert!(temp_set(&set).len() <= 31);
        assert_ne!(
            policy_chain("x", "p", Direction::Ingress),
            policy_chain("x", "p", Direction::Egress)
        );
        assert_eq!(
            cluster_policy_chain("cnp", "p", Direction::Egress).len(),
            25
        );
        assert_ne!(
            cluster_policy_chain("cnp", "p", Direction::Ingress),
            cluster_policy_chain("anp", "p", Direction::Ingress)
        );
        let set = cluster_peer_set(Direction::Egress, "networks:10.0.0.0/8", true);
        assert!(temp_set(&set).len() <= 31);
    }

    #[test]
    fn quoting_follows_iptables_save() {
        assert_eq!(save_quote("nocomment"), "nocomment");
        assert_eq!(save_quote("x/a in"), "\"x/a in\"");
        assert_eq!(save_quote(""), "\"\"");
        assert_eq!(save_quote("a\"b"), "\"a\\\"b\"");
    }
}
