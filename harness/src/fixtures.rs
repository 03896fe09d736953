//! A cluster to unit-test the engines with, without root: the standard model (two nodes,
//! namespaces x, y and z with pods a, b and c, each pod with the address the harness
//! would give it) planned with a fixed prefix, plus whatever manifests a test adds.

use std::path::Path;

use sim::objects::ClusterObjects;
use sim::plan::{Plan, prefix_from_seed};
use sim::testgen::standard_model;

/// The standard model's plan and objects.
pub fn standard() -> (Plan, ClusterObjects) {
    let model = standard_model();
    let plan = Plan::new(&prefix_from_seed(0), &model.cluster).expect("plan the standard model");
    (plan, model.objects.clone())
}

/// `objects` with the manifests of `yaml` (a YAML list of objects) applied.
pub fn with(objects: &ClusterObjects, yaml: &str) -> ClusterObjects {
    let text = format!(
        "name: fixture\nsummary: x\ncluster: {{nodes: 2, network: host-gw}}\nmodel: {{namespaces: \
         [x, y, z], pods: [a, b, c], ports: [80, 81], protocols: [TCP, UDP, SCTP]}}\n\
         manifests:\n{yaml}"
    );
    let sc = sim::scenario::parse_str(Path::new("<fixture>"), &text).expect("a fixture parses");
    let mut out = objects.clone();
    let ips = objects.clone();
    let pod_ip = |p: &sim::objects::PodRef| ips.pods.get(p).and_then(sim::objects::pod_ip);
    for change in sc.steps.iter().flat_map(|s| &s.changes) {
        change
            .apply_to(&mut out, &pod_ip)
            .expect("a fixture applies");
    }
    out
}

/// A ClusterIP Service `name` on port 80 over the pods of namespace x labelled
/// `pod=<selects>`.
pub fn service(name: &str, ip: &str, selects: &str) -> String {
    format!(
        "  - apiVersion: v1\n    kind: Service\n    metadata: {{name: {name}, namespace: x}}\n    \
         spec:\n      clusterIP: {ip}\n      selector: {{pod: {selects}}}\n      \
         ports: [{{name: http, port: 80, targetPort: 80, protocol: TCP}}]\n"
    )
}

/// The node names and namespace references of `plan` (namespaces by name only).
pub fn nodes(plan: &Plan) -> Vec<(String, crate::system::NsRef)> {
    plan.nodes
        .iter()
        .map(|n| {
            (
                n.name.clone(),
                crate::system::NsRef::named(format!("{}-{}", plan.prefix, n.name)),
            )
        })
        .collect()
}
