//! The cluster-wide policies and the [`ClusterView`] of a cluster's objects: the stored
//! manifests read again into [`ClusterPolicy`] models (with what the reader should be
//! told about them), and the namespaces, pods and nodes the evaluator looks at. The
//! scenario parser, the oracle and the renderers all start here, so they read the same
//! policies the same way.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use crate::cluster_policy::model::ClusterPolicy;
use crate::cluster_policy::overlap::same_priority_overlaps;
use crate::cluster_policy::validate::parse;
use crate::cluster_policy::view::{
    ClusterView, ContainerPortView, NamespaceView, NodeView, PodView,
};
use crate::objects::{ClusterObjects, declared_ports, host_network, pod_ip, pod_labels, pod_node};

/// The label every node carries (knetlab's nodes have no other labels).
pub const NODE_HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// The cluster-wide policies of `objects`, in a stable order (kind, then name), and the
/// notes their reading produced (v1alpha1 forms mapped onto the tiers). A stored
/// manifest that no longer reads is skipped: the scenario parser only stores manifests
/// that read, so this never happens for a parsed scenario.
pub fn policies(objects: &ClusterObjects) -> (Vec<ClusterPolicy>, Vec<String>) {
    let mut policies = Vec::new();
    let mut notes = Vec::new();
    for p in objects.cluster_policies.values() {
        if let Ok(parsed) = parse(&p.manifest) {
            notes.extend(parsed.notes);
            policies.push(parsed.policy);
        }
    }
    (policies, notes)
}

/// What `objects` looks like to the evaluator. `node_addresses` gives each node's
/// addresses (the first is the one its own traffic leaves with); nodes carry the
/// `kubernetes.io/hostname` label.
pub fn view(
    objects: &ClusterObjects,
    node_addresses: &dyn Fn(&str) -> Vec<Ipv4Addr>,
) -> ClusterView {
    let namespaces = objects
        .namespaces
        .iter()
        .map(|(name, ns)| NamespaceView {
            name: name.clone(),
            labels: ns.metadata.labels.clone().unwrap_or_default(),
        })
        .collect();
    let pods = objects
        .pods
        .iter()
        .map(|(r, pod)| PodView {
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            labels: pod_labels(pod),
            ip: pod_ip(pod).map(IpAddr::V4),
            node: pod_node(pod).map(str::to_string),
            ports: declared_ports(pod)
                .into_iter()
                .map(|d| ContainerPortView {
                    name: d.name,
                    protocol: d.port.protocol,
                    port: d.port.port,
                })
                .collect(),
            host_network: host_network(pod),
        })
        .collect();
    let nodes = objects
        .nodes
        .iter()
        .map(|name| NodeView {
            name: name.clone(),
            labels: BTreeMap::from([(NODE_HOSTNAME_LABEL.to_string(), name.clone())]),
            addresses: node_addresses(name).into_iter().map(IpAddr::V4).collect(),
        })
        .collect();
    ClusterView {
        namespaces,
        pods,
        nodes,
    }
}

/// Everything a reader of `objects` should be told about its cluster-wide policies:
/// the reading notes, then one warning per same-priority overlap.
pub fn notes(objects: &ClusterObjects) -> Vec<String> {
    let (policies, mut notes) = policies(objects);
    let view = view(objects, &|_| Vec::new());
    notes.extend(
        same_priority_overlaps(&policies, &view)
            .into_iter()
            .map(|w| format!("warning: {w}")),
    );
    notes
}
