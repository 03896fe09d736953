//! From a manifest to a validated [`ClusterPolicy`]: the kind and apiVersion pick the
//! API version, serde checks the shape (unknown fields, types) with the field path, and
//! the version's module checks the values as the CRD's schema and CEL rules do.
//! v1alpha1 AdminNetworkPolicy and BaselineAdminNetworkPolicy are mapped onto the
//! Admin and Baseline tiers, with a note saying so.

mod checks;
pub mod v1alpha1;
pub mod v1alpha2;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;

use crate::cluster_policy::error::ClusterPolicyError;
use crate::cluster_policy::model::{ClusterPolicy, Peer, PortMatch};

/// The API group of all three kinds.
pub const GROUP: &str = "policy.networking.k8s.io";

/// A policy read from a manifest, and what the reader should be told about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub policy: ClusterPolicy,
    pub notes: Vec<String>,
}

/// Whether `(apiVersion, kind)` is one of the cluster-wide policy kinds read here.
pub fn is_cluster_policy(api_version: &str, kind: &str) -> bool {
    matches!(
        (api_version.strip_prefix(GROUP), kind),
        (Some("/v1alpha2"), "ClusterNetworkPolicy")
            | (
                Some("/v1alpha1"),
                "AdminNetworkPolicy" | "BaselineAdminNetworkPolicy"
            )
    )
}

/// Read one manifest (already parsed from YAML into JSON values).
pub fn parse(manifest: &serde_json::Value) -> Result<Parsed, ClusterPolicyError> {
    let text = |key: &str| {
        manifest
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
    };
    let (api_version, kind) = (text("apiVersion"), text("kind"));
    if !is_cluster_policy(api_version, kind) {
        return Err(ClusterPolicyError::invalid(
            "kind",
            format!(
                "{kind} ({api_version}) is not a cluster-wide policy kind (ClusterNetworkPolicy \
                 {GROUP}/v1alpha2, AdminNetworkPolicy or BaselineAdminNetworkPolicy {GROUP}/v1alpha1)"
            ),
        ));
    }
    if kind == "ClusterNetworkPolicy" {
        let cnp = shape(manifest)?;
        return Ok(Parsed {
            policy: v1alpha2::validate(&cnp)?,
            notes: Vec::new(),
        });
    }
    v1alpha1::validate(&shape(manifest)?)
}

/// Deserialize with the path of the first field that does not fit.
fn shape<T: DeserializeOwned>(manifest: &serde_json::Value) -> Result<T, ClusterPolicyError> {
    serde_path_to_error::deserialize(manifest).map_err(|e| {
        let path = e.path().to_string();
        ClusterPolicyError::Shape {
            path: if path == "." { String::new() } else { path },
            message: e.into_inner().to_string(),
        }
    })
}

/// `metadata.name`, required and a DNS subdomain as for every cluster-scoped object.
fn object_name(meta: &ObjectMeta) -> Result<String, ClusterPolicyError> {
    let name = meta.name.as_deref().unwrap_or_default();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
    if !valid {
        return Err(ClusterPolicyError::invalid(
            "metadata.name",
            format!("{name:?} is not a valid name (a lowercase DNS subdomain)"),
        ));
    }
    Ok(name.to_string())
}

/// A priority, 0–1000 (both versions' CRDs).
fn priority(value: i64, path: &str) -> Result<u16, ClusterPolicyError> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p <= 1000)
        .ok_or_else(|| {
            ClusterPolicyError::invalid(path, format!("must be between 0 and 1000, not {value}"))
        })
}

/// The egress CEL rule of both versions: nodes and networks have no named ports.
fn named_ports_need_pods(
    peers: &[Peer],
    ports: Option<&[PortMatch]>,
    rule_path: &str,
) -> Result<(), ClusterPolicyError> {
    let has_named = ports
        .into_iter()
        .flatten()
        .any(|p| matches!(p, PortMatch::Named(_)));
    let has_addresses = peers
        .iter()
        .any(|p| matches!(p, Peer::Nodes(_) | Peer::Networks(_)));
    if has_named && has_addresses {
        return Err(ClusterPolicyError::invalid(
            rule_path,
            "networks/nodes/domainNames peer cannot be set with namedPorts since there are no \
             namedPorts for networks/nodes/domainNames",
        ));
    }
    Ok(())
}
