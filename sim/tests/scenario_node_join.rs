//! The `nodeJoin` step action: nodes that join a running cluster, planned as if listed
//! last, usable by the step's own pods, and every mistake reported at the node name's
//! file, line, column and field path.

mod common;
use common::*;

use sim::objects::{PodRef, pod_node};
use sim::plan::Plan;

const HEAD: &str = "name: t\nsummary: a test\ncluster: {nodes: 2, network: vxlan}\nmodel: {namespaces: [x], pods: [a, b], ports: [80], protocols: [TCP]}\n";

fn pod_on(name: &str, node: &str) -> String {
    format!(
        "      - {{apiVersion: v1, kind: Pod, metadata: {{name: {name}, namespace: x}}, spec: {{nodeName: {node}, containers: [{{name: c, image: i, ports: [{{containerPort: 80}}]}}]}}}}\n"
    )
}

#[test]
fn a_step_adds_nodes_and_its_pods_may_use_them() {
    let text = format!(
        "{HEAD}steps:\n  - name: n3 joins\n    nodeJoin: [n3]\n    apply:\n{}  - name: two more\n    nodeJoin: [n4, edge-1]\n    apply:\n{}",
        pod_on("c", "n3"),
        pod_on("d", "edge-1"),
    );
    let s = parse_ok(&text);
    let joined: Vec<Vec<String>> = s.steps.iter().map(|s| s.joined_nodes.clone()).collect();
    assert_eq!(
        joined,
        [
            vec![],
            vec!["n3".to_string()],
            vec!["n4".into(), "edge-1".into()]
        ]
    );
    assert_eq!(s.cluster.nodes, ["n1", "n2"]);
    assert_eq!(s.nodes_ever(), ["n1", "n2", "n3", "n4", "edge-1"]);
    // The plan a run grows step by step is the plan of the nodes listed in that order.
    let mut plan = Plan::new("kl000000", &s.cluster).unwrap();
    for n in s.steps.iter().flat_map(|s| &s.joined_nodes) {
        plan.join_node(n).unwrap();
    }
    let mut listed = s.cluster.clone();
    listed.nodes = s.nodes_ever();
    assert_eq!(plan, Plan::new("kl000000", &listed).unwrap());
    let edge = plan.node("edge-1").unwrap();
    assert_eq!(
        (edge.index, edge.pod_subnet.to_string()),
        (5, "10.244.5.0/24".into())
    );
}

#[test]
fn pods_without_a_node_name_are_scheduled_onto_joined_nodes_only_once_they_exist() {
    // Before the join the scheduler spreads over n1 and n2; after it the empty n3 is the
    // least loaded node.
    let text = format!(
        "{HEAD}steps:\n  - name: n3 joins\n    nodeJoin: [n3]\n    apply:\n      - {{apiVersion: v1, kind: Pod, metadata: {{name: c, namespace: x}}, spec: {{containers: [{{name: c, image: i}}]}}}}\n"
    );
    let s = parse_ok(&text);
    let mut objects = sim::objects::ClusterObjects::new(s.cluster.nodes.clone());
    for (i, step) in s.steps.iter().enumerate() {
        objects.nodes.extend(step.joined_nodes.iter().cloned());
        for c in &step.changes {
            c.apply_to(&mut objects, &|_| None).unwrap();
        }
        let nodes: Vec<&str> = objects.pods.values().filter_map(pod_node).collect();
        if i == 0 {
            assert!(!nodes.contains(&"n3"), "{nodes:?}");
        }
    }
    assert_eq!(pod_node(&objects.pods[&PodRef::new("x", "c")]), Some("n3"));
}

#[test]
fn a_pod_on_a_node_that_joins_later_is_an_error_that_says_when_it_joins() {
    let text = format!(
        "{HEAD}steps:\n  - name: early\n    apply:\n{}  - name: n3 joins\n    nodeJoin: [n3]\n",
        pod_on("c", "n3"),
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "n3", 0),
        "steps[0].apply[0].spec.nodeName",
        "node n3 does not exist at this point (it joins in step \"n3 joins\" (steps[1].nodeJoin[0])); the nodes are n1, n2",
    );
    // A node nothing adds.
    let text = format!(
        "{HEAD}steps:\n  - name: s\n    apply:\n{}",
        pod_on("c", "n9")
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "n9", 0),
        "steps[0].apply[0].spec.nodeName",
        "node n9 does not exist; the nodes are n1, n2",
    );
}

#[test]
fn expectations_and_node_actions_see_joined_nodes_from_their_step_on() {
    // An expectation of the step before the join may not name the node.
    let text = format!(
        "{HEAD}probe: {{from: [x/a, node/n3]}}\nsteps:\n  - name: early\n    expect: {{default: allow, exceptions: [{{from: node/n3, to: x/a, port: 80, allowed: false}}]}}\n  - name: n3 joins\n    nodeJoin: [n3]\n"
    );
    let e = parse_err(&text);
    assert_eq!(e.path, "steps[0].expect.exceptions[0].from", "{e}");
    assert!(
        e.message.contains("node n3 does not exist at this point"),
        "{e}"
    );
    // From its step on it is a node like the others: probed from, taken down.
    let text = format!(
        "{HEAD}probe: {{from: [x/a, node/n3]}}\nsteps:\n  - name: n3 joins\n    nodeJoin: [n3]\n    expect: {{default: allow}}\n  - name: n3 down\n    nodeDown: [n3]\n"
    );
    let s = parse_ok(&text);
    assert!(s.steps[2].down_nodes.contains("n3"));
    // Taking it down before it exists is not.
    let text =
        format!("{HEAD}steps:\n  - name: s\n    nodeDown: [n3]\n  - name: t\n    nodeJoin: [n3]\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "n3", 0),
        "steps[0].nodeDown[0]",
        "joins in step \"t\"",
    );
}

#[test]
fn bad_joins_are_errors_at_the_name() {
    let cases = [
        (
            "nodeJoin: [n2]",
            "n2",
            "steps[0].nodeJoin[0]",
            "node n2 is already part of the cluster at this point",
        ),
        (
            "nodeJoin: [n3, n3]",
            "n3",
            "steps[0].nodeJoin[1]",
            "node n3 is already part of the cluster",
        ),
        (
            "nodeJoin: [Bad_Name]",
            "Bad_Name",
            "steps[0].nodeJoin[0]",
            "bad node name",
        ),
    ];
    for (line, word, path, message) in cases {
        let text = format!("{HEAD}steps:\n  - name: s\n    {line}\n");
        let e = parse_err(&text);
        let nth = usize::from(line == "nodeJoin: [n3, n3]");
        assert_error(&e, pos(&text, word, nth), path, message);
    }
    // Joined in an earlier step.
    let text =
        format!("{HEAD}steps:\n  - name: s\n    nodeJoin: [n3]\n  - name: t\n    nodeJoin: [n3]\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "n3", 1),
        "steps[1].nodeJoin[0]",
        "already part",
    );
    // No room in the pod CIDR: a /23 holds one node subnet.
    let text = "name: t\nsummary: a test\ncluster: {nodes: 1, podCIDR: 10.244.0.0/23}\nsteps:\n  - name: s\n    nodeJoin: [n2]\n";
    let e = parse_err(text);
    assert_error(
        &e,
        pos(text, "n2", 0),
        "steps[0].nodeJoin[0]",
        "node n2 cannot join: podCIDR 10.244.0.0/23 has room for 1 node subnets of /24, but the cluster has 2 nodes",
    );
    // The name of an external host.
    let text = "name: t\nsummary: a test\ncluster: {nodes: 1, externalHosts: [{name: pc, address: 172.17.0.5}]}\nsteps:\n  - name: s\n    nodeJoin: [pc]\n";
    let e = parse_err(text);
    assert_error(
        &e,
        pos(text, "pc", 1),
        "steps[0].nodeJoin[0]",
        "external host",
    );
}

#[test]
fn the_node_join_scenario_adds_n3_in_its_second_step() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/node-join.yaml");
    let s = sim::scenario::load(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.cluster.nodes, ["n1", "n2"]);
    assert_eq!(s.steps.len(), 2);
    assert_eq!(s.steps[1].joined_nodes, ["n3"]);
    assert_eq!(s.nodes_ever(), ["n1", "n2", "n3"]);
}
