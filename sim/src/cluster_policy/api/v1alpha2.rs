//! policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicy, field for field as the
//! network-policy-api CRD defines it (`apis/v1alpha2/clusternetworkpolicy_types.go`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use crate::cluster_policy::api::selector::Selector;

/// The whole manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterNetworkPolicy {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: Spec,
    /// Written by the implementation, never read.
    #[serde(default)]
    pub status: Option<serde_json::Value>,
}

/// `spec`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Spec {
    pub tier: String,
    pub priority: i64,
    pub subject: Subject,
    #[serde(default)]
    pub ingress: Vec<IngressRule>,
    #[serde(default)]
    pub egress: Vec<EgressRule>,
}

/// `spec.subject`: exactly one of the two.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Subject {
    pub namespaces: Option<Selector>,
    pub pods: Option<NamespacedPod>,
}

/// Pods selected by namespace AND pod labels.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespacedPod {
    #[serde(default)]
    pub namespace_selector: Selector,
    pub pod_selector: Selector,
}

/// One `spec.ingress[]` rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IngressRule {
    #[serde(default)]
    pub name: String,
    pub action: String,
    pub from: Vec<IngressPeer>,
    pub protocols: Option<Vec<ProtocolMatch>>,
}

/// One `spec.egress[]` rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EgressRule {
    #[serde(default)]
    pub name: String,
    pub action: String,
    pub to: Vec<EgressPeer>,
    pub protocols: Option<Vec<ProtocolMatch>>,
}

/// A source: exactly one field.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IngressPeer {
    pub namespaces: Option<Selector>,
    pub pods: Option<NamespacedPod>,
}

/// A destination: exactly one field.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EgressPeer {
    pub namespaces: Option<Selector>,
    pub pods: Option<NamespacedPod>,
    pub nodes: Option<Selector>,
    pub networks: Option<Vec<String>>,
    pub domain_names: Option<Vec<String>>,
}

/// One `protocols[]` entry: exactly one field.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProtocolMatch {
    pub tcp: Option<ProtocolPorts>,
    pub udp: Option<ProtocolPorts>,
    pub sctp: Option<ProtocolPorts>,
    pub destination_named_port: Option<String>,
}

/// `tcp:`/`udp:`/`sctp:` (at least one property, so `destinationPort` is required).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProtocolPorts {
    pub destination_port: Option<Port>,
}

/// `number` or `range`: exactly one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Port {
    pub number: Option<i64>,
    pub range: Option<PortRange>,
}

/// An inclusive range; `start < end`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortRange {
    pub start: i64,
    pub end: i64,
}
