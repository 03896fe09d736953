//! The `nodeDown` / `nodeUp` step actions: the node set each step leaves down, and every
//! mistake reported at the node name's file, line, column and field path.

use std::collections::BTreeSet;

mod common;
use common::*;

const HEAD: &str = "name: t\nsummary: a test\ncluster: {nodes: 3}\nmodel: {namespaces: [x], pods: [a, b], ports: [80], protocols: [TCP]}\n";

fn set(nodes: &[&str]) -> BTreeSet<String> {
    nodes.iter().map(|n| n.to_string()).collect()
}

#[test]
fn steps_carry_the_nodes_that_are_down() {
    let text = format!(
        "{HEAD}steps:\n  - name: n2 down\n    nodeDown: [n2]\n  - name: n3 too\n    nodeDown: [n3]\n  - name: n2 back\n    nodeUp: [n2]\n  - name: all back\n    nodeUp: [n3]\n"
    );
    let s = parse(&text).unwrap();
    let down: Vec<BTreeSet<String>> = s.steps.iter().map(|s| s.down_nodes.clone()).collect();
    assert_eq!(
        down,
        [
            set(&[]),
            set(&["n2"]),
            set(&["n2", "n3"]),
            set(&["n3"]),
            set(&[])
        ]
    );
    // Node actions change no objects.
    assert!(s.steps[1..].iter().all(|s| s.changes.is_empty()));
}

#[test]
fn node_down_names_an_existing_node() {
    let text = format!("{HEAD}steps:\n  - name: s\n    nodeDown: [n2, n7]\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "n7", 0),
        "steps[0].nodeDown[1]",
        "node n7 does not exist; the nodes are n1, n2, n3",
    );
    let text =
        format!("{HEAD}steps:\n  - name: s\n    nodeDown: [n2]\n  - name: t\n    nodeUp: [n9]\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "n9", 0),
        "steps[1].nodeUp[0]",
        "node n9 does not exist",
    );
}

#[test]
fn a_node_cannot_go_down_twice() {
    let text =
        format!("{HEAD}steps:\n  - name: s\n    nodeDown: [n2]\n  - name: t\n    nodeDown: [n2]\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "n2", 1),
        "steps[1].nodeDown[0]",
        "node n2's underlay link is already down at this point (taken down by steps[0].nodeDown[0])",
    );
    // Twice in one list.
    let text = format!("{HEAD}steps:\n  - name: s\n    nodeDown: [n2, n2]\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "n2", 1),
        "steps[0].nodeDown[1]",
        "already down",
    );
}

#[test]
fn only_a_down_node_can_come_back() {
    let text = format!("{HEAD}steps:\n  - name: s\n    nodeUp: [n1]\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "n1]", 0),
        "steps[0].nodeUp[0]",
        "node n1's underlay link is not down at this point",
    );
    // Back up, then up again.
    let text = format!(
        "{HEAD}steps:\n  - name: s\n    nodeDown: [n3]\n  - name: t\n    nodeUp: [n3]\n  - name: u\n    nodeUp: [n3]\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "n3", 2),
        "steps[2].nodeUp[0]",
        "is not down at this point",
    );
}

#[test]
fn a_node_cannot_go_down_and_come_back_in_one_step() {
    let text = format!(
        "{HEAD}steps:\n  - name: s\n    nodeDown: [n2]\n  - name: t\n    nodeUp: [n2]\n    nodeDown: [n2]\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "n2", 2),
        "steps[1].nodeDown[0]",
        "listed in both nodeDown and nodeUp",
    );
}

#[test]
fn node_actions_are_spelled_in_camel_case() {
    let text = format!("{HEAD}steps:\n  - name: s\n    node_down: [n2]\n");
    let e = parse_err(&text);
    assert!(e.message.contains("nodeDown"), "{e}");
    assert_eq!(e.location, Some(pos(&text, "node_down", 0)), "{e}");
}
