//! Decoding the cluster-wide policy kinds (ClusterNetworkPolicy, AdminNetworkPolicy,
//! BaselineAdminNetworkPolicy): [`crate::cluster_policy::parse`] checks them as the CRD
//! would, and its errors, which carry the field path, are placed at their file, line
//! and column.

use serde_json::Value;

use crate::cluster_policy::SourceKind;
use crate::error::ScenarioError;
use crate::objects::{ClusterPolicyObject, Kind, Object};

use super::decode::rel;
use super::source::{self, Source};

/// A ClusterNetworkPolicy (v1alpha2) or an AdminNetworkPolicy /
/// BaselineAdminNetworkPolicy (v1alpha1), checked by [`crate::cluster_policy::parse`]
/// as the CRD would check it; its errors name the field, placed in the file.
pub(super) fn cluster_policy(
    src: &Source,
    path: &str,
    value: &Value,
) -> Result<Object, ScenarioError> {
    use crate::cluster_policy::ClusterPolicyError;
    let parsed = crate::cluster_policy::parse(value).map_err(|e| {
        let at = rel(path, e.path());
        match &e {
            ClusterPolicyError::Shape { message, .. } if message.starts_with("unknown field") => {
                src.at_key(&at, format!("{}: {}", value_kind(value), message))
            }
            ClusterPolicyError::Shape { message, .. } => {
                src.at_value(&at, source::readable(message))
            }
            ClusterPolicyError::Invalid { message, .. } => src.at_value(&at, message.clone()),
            ClusterPolicyError::Unsupported { message, .. } => {
                src.at_value(&at, format!("{message}; knetlab does not model this"))
            }
        }
    })?;
    let kind = match parsed.policy.kind {
        SourceKind::ClusterNetworkPolicy => Kind::ClusterNetworkPolicy,
        SourceKind::AdminNetworkPolicy => Kind::AdminNetworkPolicy,
        SourceKind::BaselineAdminNetworkPolicy => Kind::BaselineAdminNetworkPolicy,
    };
    let labels = value
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    Ok(Object::ClusterPolicy(ClusterPolicyObject {
        kind,
        name: parsed.policy.name,
        labels,
        manifest: value.clone(),
    }))
}

/// `ClusterNetworkPolicy`, for messages.
fn value_kind(value: &Value) -> &str {
    value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
}
