//! The pod-template-hash: which version of a template a pod was made from. Kubernetes
//! hashes a Go dump of the template with FNV-32a and prints the decimal hash through
//! `rand.SafeEncodeString`; a Go dump cannot be reproduced here, so knetlab hashes the
//! template's JSON serialisation (k8s-openapi writes fields in a fixed order and maps
//! sorted, so the same template always gives the same bytes) the same way. The result
//! has the upstream shape (up to 10 characters of `bcdfghjklmnpqrstvwxz2456789`), is
//! stable across runs, and changes whenever the template changes.

use k8s_openapi::api::core::v1::PodTemplateSpec;

use crate::workloads::error::WorkloadError;
use crate::workloads::names::safe_encode;

const FNV32_OFFSET: u32 = 0x811c_9dc5;
const FNV32_PRIME: u32 = 0x0100_0193;

/// FNV-1a, 32 bits (Go's `hash/fnv.New32a`).
pub fn fnv32a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(FNV32_OFFSET, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(FNV32_PRIME)
    })
}

/// The template's hash: `SafeEncodeString(decimal(fnv32a(json(template))))`, as
/// Kubernetes' `controller.ComputeHash` (without a collision count).
pub fn template_hash(template: &PodTemplateSpec) -> Result<String, WorkloadError> {
    let json = serde_json::to_vec(template).map_err(|e| {
        WorkloadError::invalid(
            "spec.template",
            format!("cannot serialise the template: {e}"),
        )
    })?;
    Ok(safe_encode(&fnv32a(&json).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv32a_matches_the_reference_vectors() {
        assert_eq!(fnv32a(b""), 0x811c_9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c_292c);
        assert_eq!(fnv32a(b"foobar"), 0xbf9c_f968);
    }

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "web", "tier": "fe"}},
            "spec": {"containers": [{"name": "web", "image": image}]}
        }))
        .unwrap()
    }

    #[test]
    fn same_template_same_hash_changed_template_new_hash() {
        let a = template_hash(&template("nginx:1.27")).unwrap();
        assert_eq!(a, template_hash(&template("nginx:1.27")).unwrap());
        assert_ne!(a, template_hash(&template("nginx:1.28")).unwrap());
        assert!(!a.is_empty() && a.len() <= 10);
        // A decimal string encodes to the digits' letters only, as upstream's hashes do.
        assert!(a.chars().all(|c| "456789bcdf".contains(c)), "{a}");
    }
}
