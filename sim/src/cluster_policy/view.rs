//! The small view of a cluster the evaluator needs: namespaces with labels, pods with
//! namespace, labels, address, node, container ports (named or not) and hostNetwork,
//! and nodes with labels and addresses. Whoever wires this in fills it from the
//! scenario's objects; nothing here reads them directly.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::protocol::Protocol;

/// The label the API server puts on every namespace (so `namespaces:` selectors can
/// name one namespace).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A namespace and its labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// A container port of a pod (`name` for named-port matches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPortView {
    pub name: Option<String>,
    pub protocol: Protocol,
    pub port: u16,
}

/// A pod as policies see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The pod's address (its node's address for a host-network pod).
    pub ip: Option<IpAddr>,
    pub node: Option<String>,
    pub ports: Vec<ContainerPortView>,
    /// Host-network pods are never subjects nor `namespaces`/`pods` peers.
    pub host_network: bool,
}

/// A node and the addresses in its `status.addresses`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub addresses: Vec<IpAddr>,
}

/// Everything the evaluator looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub namespaces: Vec<NamespaceView>,
    pub pods: Vec<PodView>,
    pub nodes: Vec<NodeView>,
}

impl ClusterView {
    /// A namespace's labels, with `kubernetes.io/metadata.name` as the API server sets
    /// it (also for a namespace the view does not list).
    pub fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        let mut labels = self
            .namespaces
            .iter()
            .find(|n| n.name == namespace)
            .map(|n| n.labels.clone())
            .unwrap_or_default();
        labels.insert(NAMESPACE_NAME_LABEL.into(), namespace.into());
        labels
    }

    /// The pod `namespace/name`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&PodView> {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&NodeView> {
        self.nodes.iter().find(|n| n.name == name)
    }
}
