//! A step's changes in words ("apply NetworkPolicy y/allow-x", "node n2 goes down"), for
//! `--pause` (said before the step runs, so a room can predict the matrix) and for the
//! report. One line per change, in the order the step makes them.

use std::collections::BTreeSet;

use crate::objects::Kind;
use crate::scenario::{Change, Step};

fn object(kind: Kind, namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        format!("{} {name}", kind.as_str())
    } else {
        format!("{} {namespace}/{name}", kind.as_str())
    }
}

fn labels_words(labels: &std::collections::BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        "no labels".to_string()
    } else {
        labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What `step` changes, given the nodes that were down before it.
pub fn describe(step: &Step, down_before: &BTreeSet<String>) -> Vec<String> {
    let mut out = vec![];
    for c in &step.changes {
        out.push(match c {
            Change::Apply(raw) => {
                let (ns, name) = &raw.key;
                let mut s = format!("apply {}", object(raw.kind, ns, name));
                let meta_labels = raw
                    .value
                    .pointer("/metadata/labels")
                    .and_then(|v| v.as_object())
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect::<std::collections::BTreeMap<_, _>>()
                    });
                if matches!(raw.kind, Kind::Pod | Kind::Namespace)
                    && let Some(labels) = meta_labels
                {
                    s += &format!(" (labels {})", labels_words(&labels));
                }
                if raw.kind == Kind::Pod
                    && let Some(node) = raw.value.pointer("/spec/nodeName").and_then(|v| v.as_str())
                {
                    s += &format!(" on node {node}");
                }
                s
            }
            Change::Delete {
                kind,
                namespace,
                name,
            } => format!("delete {}", object(*kind, namespace, name)),
            Change::Label {
                kind,
                namespace,
                name,
                labels,
            } => format!(
                "relabel {}: {}",
                object(*kind, namespace, name),
                labels_words(labels)
            ),
        });
    }
    for n in step.down_nodes.difference(down_before) {
        out.push(format!("node {n} goes down (its underlay link is cut)"));
    }
    for n in down_before.difference(&step.down_nodes) {
        out.push(format!(
            "node {n} comes back (its underlay link is up again)"
        ));
    }
    if out.is_empty() {
        out.push("nothing changes (the same cluster is probed again)".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(name: &str) -> crate::scenario::Scenario {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../scenarios")
            .join(format!("{name}.yaml"));
        crate::scenario::load(&path).unwrap()
    }

    #[test]
    fn relabelling_and_policies_are_said_in_words() {
        let s = scenario("label-change");
        let none = BTreeSet::new();
        assert_eq!(
            describe(&s.steps[1], &none),
            ["apply NetworkPolicy x/allow-trusted-namespaces"]
        );
        assert_eq!(
            describe(&s.steps[2], &none),
            ["relabel Namespace y: ns=y, trusted=yes"]
        );
        let first = describe(&s.steps[0], &none);
        assert!(
            first.contains(&"apply Namespace x (labels ns=x)".to_string()),
            "{first:?}"
        );
        assert!(
            first
                .iter()
                .any(|l| l.starts_with("apply Pod x/a (labels pod=a)")),
            "{first:?}"
        );
    }

    #[test]
    fn nodes_going_down_and_coming_back_are_said() {
        let s = scenario("node-failure");
        let down = describe(&s.steps[1], &s.steps[0].down_nodes);
        assert_eq!(down, ["node n2 goes down (its underlay link is cut)"]);
        let up = describe(&s.steps[2], &s.steps[1].down_nodes);
        assert_eq!(up, ["node n2 comes back (its underlay link is up again)"]);
    }
}
