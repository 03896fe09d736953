//! Test fixtures: the standard conformance model (namespaces x, y, z labelled `ns=NAME`,
//! pods a, b, c labelled `pod=NAME`, each declaring 80 and 81 on TCP, UDP and SCTP with
//! Cyclonus-style names `serve-80-tcp`), bound to two nodes with pod IPs set, and helpers
//! to add policies (NetworkPolicies and ClusterNetworkPolicies) written as JSON. Shared by the policy, oracle and renderer tests.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};

use crate::objects::{ClusterObjects, Object, PodRef};
use crate::protocol::Protocol;

pub(crate) const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub(crate) const PODS: [&str; 3] = ["a", "b", "c"];

/// A pod manifest with labels and `(name, port, protocol)` container ports.
pub(crate) fn pod(
    ns: &str,
    name: &str,
    labels: &[(&str, &str)],
    ports: &[(&str, u16, Protocol)],
) -> Pod {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p, proto)| json!({"name": n, "containerPort": p, "protocol": proto.as_str()}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name, "labels": labels},
        "spec": {"containers": [{"name": "server", "image": "knetlab", "ports": ports}]}
    }))
    .expect("fixture pod")
}

pub(crate) fn namespace(name: &str, labels: &[(&str, &str)]) -> Namespace {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
        .expect("fixture namespace")
}

/// A policy from its JSON `spec`.
pub(crate) fn policy(ns: &str, name: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
        .expect("fixture policy")
}

/// The standard ports: 80 and 81 on every protocol, named `serve-80-tcp` and so on.
pub(crate) fn standard_ports() -> Vec<(String, u16, Protocol)> {
    Protocol::ALL
        .iter()
        .flat_map(|p| [80u16, 81].map(|n| (format!("serve-{n}-{}", p.lower()), n, *p)))
        .collect()
}

/// The underlay address of node `n1`, `n2`... (`192.168.200.11`...).
pub(crate) fn node_addresses(objects: &ClusterObjects) -> BTreeMap<String, Ipv4Addr> {
    objects
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), Ipv4Addr::new(192, 168, 200, 11 + i as u8)))
        .collect()
}

/// Adds a pod bound to `node` with the next free IP of that node's /24 (`10.244.N.x`).
pub(crate) fn add_pod(objects: &mut ClusterObjects, mut p: Pod, node: &str) -> PodRef {
    let node_index = objects
        .nodes
        .iter()
        .position(|n| n == node)
        .expect("known node")
        + 1;
    p.spec.get_or_insert_with(Default::default).node_name = Some(node.into());
    let key = PodRef::new(
        p.metadata.namespace.clone().unwrap_or_default(),
        p.metadata.name.clone().unwrap_or_default(),
    );
    let on_node = objects
        .pods
        .values()
        .filter(|q| crate::objects::pod_node(q) == Some(node))
        .count();
    objects.apply(Object::Pod(p));
    objects.set_pod_ip(
        &key,
        Ipv4Addr::new(10, 244, node_index as u8, 10 + on_node as u8),
    );
    key
}

/// x, y, z × a, b, c on nodes n1 and n2 (pods alternate: x/a on n1, x/b on n2, ...).
pub(crate) fn standard_model() -> ClusterObjects {
    let mut objects = ClusterObjects::new(vec!["n1".into(), "n2".into()]);
    let ports = standard_ports();
    let ports: Vec<(&str, u16, Protocol)> =
        ports.iter().map(|(n, p, q)| (n.as_str(), *p, *q)).collect();
    let mut i = 0;
    for ns in NAMESPACES {
        objects.apply(Object::Namespace(namespace(ns, &[("ns", ns)])));
        for name in PODS {
            let node = if i % 2 == 0 { "n1" } else { "n2" };
            add_pod(&mut objects, pod(ns, name, &[("pod", name)], &ports), node);
            i += 1;
        }
    }
    objects
}

/// The standard model plus policies given as `(namespace, name, spec)`.
pub(crate) fn model_with(policies: &[(&str, &str, Value)]) -> ClusterObjects {
    let mut objects = standard_model();
    for (ns, name, spec) in policies {
        objects.apply(Object::NetworkPolicy(policy(ns, name, spec.clone())));
    }
    objects
}

/// `ns/name`.
pub(crate) fn pr(s: &str) -> PodRef {
    let (ns, name) = s.split_once('/').expect("ns/name");
    PodRef::new(ns, name)
}

/// Applies a v1alpha2 ClusterNetworkPolicy named `name` with `spec`.
pub fn add_cnp(o: &mut ClusterObjects, name: &str, spec: Value) {
    o.apply(Object::ClusterPolicy(crate::objects::ClusterPolicyObject {
        kind: crate::objects::Kind::ClusterNetworkPolicy,
        name: name.into(),
        labels: Default::default(),
        manifest: json!({
            "apiVersion": "policy.networking.k8s.io/v1alpha2",
            "kind": "ClusterNetworkPolicy",
            "metadata": {"name": name},
            "spec": spec,
        }),
    }));
}
