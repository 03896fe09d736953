//! Tests named after the API's rules: validation in [`validation`], v1alpha1 mapping in
//! [`v1alpha1`], the tier walk in [`evaluation`]. The fixture cluster is small: two
//! houses' namespaces, a web pod with a named port, a host-network pod, two nodes.

mod evaluation;
mod v1alpha1;
mod validation;

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::cluster_policy::validate::parse;
use crate::cluster_policy::view::{
    ClusterView, ContainerPortView, NamespaceView, NodeView, PodView,
};
use crate::cluster_policy::{ClusterPolicy, ClusterPolicyError};
use crate::protocol::Protocol;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A v1alpha2 ClusterNetworkPolicy manifest around `spec`.
fn cnp_manifest(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// A valid ClusterNetworkPolicy (panics in tests only).
fn cnp(name: &str, spec: Value) -> ClusterPolicy {
    parse(&cnp_manifest(name, spec))
        .expect("valid policy")
        .policy
}

/// The error a ClusterNetworkPolicy spec is refused with.
fn cnp_error(spec: Value) -> ClusterPolicyError {
    parse(&cnp_manifest("p", spec)).expect_err("refused")
}

fn pod(ns: &str, name: &str, pod_labels: &[(&str, &str)], ip: &str, node: &str) -> PodView {
    PodView {
        namespace: ns.into(),
        name: name.into(),
        labels: labels(pod_labels),
        ip: Some(ip.parse().expect("ip")),
        node: Some(node.into()),
        ports: Vec::new(),
        host_network: false,
    }
}

/// gryffindor/harry (app=web, port `http` TCP/80), gryffindor/ron (app=db),
/// slytherin/draco, kube-system/agent (host network on n1), nodes n1 (worker) and n2
/// (control-plane).
fn cluster() -> ClusterView {
    let mut harry = pod("gryffindor", "harry", &[("app", "web")], "10.0.0.1", "n1");
    harry.ports = vec![
        ContainerPortView {
            name: Some("http".into()),
            protocol: Protocol::Tcp,
            port: 80,
        },
        ContainerPortView {
            name: None,
            protocol: Protocol::Udp,
            port: 53,
        },
    ];
    let mut agent = pod(
        "kube-system",
        "agent",
        &[("app", "agent")],
        "192.168.0.1",
        "n1",
    );
    agent.host_network = true;
    ClusterView {
        namespaces: vec![
            NamespaceView {
                name: "gryffindor".into(),
                labels: labels(&[("house", "gryffindor")]),
            },
            NamespaceView {
                name: "slytherin".into(),
                labels: labels(&[("house", "slytherin")]),
            },
            NamespaceView {
                name: "kube-system".into(),
                labels: BTreeMap::new(),
            },
        ],
        pods: vec![
            harry,
            pod("gryffindor", "ron", &[("app", "db")], "10.0.0.2", "n2"),
            pod("slytherin", "draco", &[("app", "web")], "10.0.1.1", "n2"),
            agent,
        ],
        nodes: vec![
            NodeView {
                name: "n1".into(),
                labels: labels(&[("role", "worker")]),
                addresses: vec!["192.168.0.1".parse().expect("ip")],
            },
            NodeView {
                name: "n2".into(),
                labels: labels(&[("role", "control-plane")]),
                addresses: vec!["192.168.0.2".parse().expect("ip")],
            },
        ],
    }
}
