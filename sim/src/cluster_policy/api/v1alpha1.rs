//! policy.networking.k8s.io/v1alpha1 AdminNetworkPolicy and BaselineAdminNetworkPolicy
//! (`apis/v1alpha1` of network-policy-api). Fields of older revisions of the API
//! (`sameLabels`/`notSameLabels`, `namespaces.namespaceSelector`, `pods.namespaces`)
//! are read so they can be refused by name rather than as unknown fields.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use crate::cluster_policy::api::selector::{Requirement, Selector};

/// The whole manifest (either kind; BaselineAdminNetworkPolicy has no `priority`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AdminNetworkPolicy {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: Spec,
    #[serde(default)]
    pub status: Option<serde_json::Value>,
}

/// `spec`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Spec {
    pub priority: Option<i64>,
    pub subject: Subject,
    #[serde(default)]
    pub ingress: Vec<Rule<Peer>>,
    #[serde(default)]
    pub egress: Vec<Rule<Peer>>,
}

/// `spec.subject`: exactly one of the two.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Subject {
    pub namespaces: Option<NamespacesSelector>,
    pub pods: Option<NamespacedPod>,
}

/// A namespace label selector; the older revisions' fields are kept to be refused.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespacesSelector {
    pub match_labels: Option<BTreeMap<String, String>>,
    pub match_expressions: Option<Vec<Requirement>>,
    pub namespace_selector: Option<serde_json::Value>,
    pub same_labels: Option<serde_json::Value>,
    pub not_same_labels: Option<serde_json::Value>,
}

impl NamespacesSelector {
    /// The plain selector part.
    pub fn selector(&self) -> Selector {
        Selector {
            match_labels: self.match_labels.clone(),
            match_expressions: self.match_expressions.clone(),
        }
    }
}

/// Pods selected by namespace AND pod labels (`namespaces` is the older revisions').
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespacedPod {
    #[serde(default)]
    pub namespace_selector: Selector,
    pub pod_selector: Selector,
    pub namespaces: Option<serde_json::Value>,
}

/// One ingress or egress rule: `from` for ingress, `to` for egress.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rule<P> {
    #[serde(default)]
    pub name: String,
    pub action: String,
    pub from: Option<Vec<P>>,
    pub to: Option<Vec<P>>,
    pub ports: Option<Vec<PortMatch>>,
}

/// A peer: exactly one field (`nodes`, `networks` and `domainNames` only in egress).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Peer {
    pub namespaces: Option<NamespacesSelector>,
    pub pods: Option<NamespacedPod>,
    pub nodes: Option<Selector>,
    pub networks: Option<Vec<String>>,
    pub domain_names: Option<Vec<String>>,
}

/// One `ports[]` entry: exactly one field.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortMatch {
    pub port_number: Option<PortNumber>,
    pub named_port: Option<String>,
    pub port_range: Option<PortRange>,
}

/// `portNumber`: protocol (default TCP) and port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortNumber {
    pub protocol: Option<String>,
    pub port: i64,
}

/// `portRange`: protocol (default TCP), `start < end`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortRange {
    pub protocol: Option<String>,
    pub start: i64,
    pub end: i64,
}
