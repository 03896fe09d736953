//! Nodes as a scenario declares them (`cluster.nodes: [{name, labels}]`) and the labels
//! every kubelet adds when it registers its node, which nodeSelectors and affinities
//! commonly test (`kubernetes.io/os: linux`, `kubernetes.io/hostname`).
//!
//! The architecture is always `amd64`, not the host's: a scenario's placements and
//! snapshots must not depend on the machine that runs them. A scenario that wants an
//! arm64 node declares `kubernetes.io/arch: arm64` itself; labels the scenario declares
//! win over the kubelet's (as a kubelet configured with `--node-labels` would have it).

use std::collections::BTreeMap;

/// `kubernetes.io/hostname`: the label pod (anti-)affinity spreads over.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
pub const OS_LABEL: &str = "kubernetes.io/os";
pub const ARCH_LABEL: &str = "kubernetes.io/arch";
/// The deprecated spellings kubelets still set.
pub const BETA_OS_LABEL: &str = "beta.kubernetes.io/os";
pub const BETA_ARCH_LABEL: &str = "beta.kubernetes.io/arch";

/// The operating system and architecture every node reports.
pub const NODE_OS: &str = "linux";
pub const NODE_ARCH: &str = "amd64";

/// A node as the scenario declares it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeSpec {
    pub name: String,
    /// The labels the scenario gives the node (not including the kubelet's).
    pub labels: BTreeMap<String, String>,
}

impl NodeSpec {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            labels: BTreeMap::new(),
        }
    }

    /// The node's labels as the API server holds them once its kubelet registered:
    /// hostname, os and arch (current and `beta.` spellings), then the declared labels.
    pub fn registered_labels(&self) -> BTreeMap<String, String> {
        let mut labels: BTreeMap<String, String> = [
            (HOSTNAME_LABEL, self.name.as_str()),
            (OS_LABEL, NODE_OS),
            (ARCH_LABEL, NODE_ARCH),
            (BETA_OS_LABEL, NODE_OS),
            (BETA_ARCH_LABEL, NODE_ARCH),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        labels.extend(self.labels.clone());
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_labels_then_declared_ones() {
        let mut node = NodeSpec::new("n1");
        node.labels.insert("zone".into(), "a".into());
        node.labels.insert(ARCH_LABEL.into(), "arm64".into());
        let labels = node.registered_labels();
        assert_eq!(labels[HOSTNAME_LABEL], "n1");
        assert_eq!(labels[OS_LABEL], "linux");
        assert_eq!(labels[BETA_OS_LABEL], "linux");
        assert_eq!(labels[BETA_ARCH_LABEL], "amd64");
        assert_eq!(labels[ARCH_LABEL], "arm64");
        assert_eq!(labels["zone"], "a");
    }
}
