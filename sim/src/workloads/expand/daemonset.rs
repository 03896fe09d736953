//! A DaemonSet runs one pod on every node its nodeSelector and required node affinity
//! admit, named `<name>-<5 chars>` (the suffix derived from the node's name, so a pod
//! keeps its name when other nodes come and go), labelled `controller-revision-hash:
//! <hash>`. As the real controller does, it pins each pod to its node by replacing the
//! required node affinity with `matchFields: metadata.name In [<node>]`, which the
//! scheduler ([`crate::workloads::schedule`]) then honours.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
};

use super::{Subject, required_spec};
use crate::workloads::Expansion;
use crate::workloads::error::WorkloadError;
use crate::workloads::hash::template_hash;
use crate::workloads::kinds::WorkloadKind;
use crate::workloads::labels;
use crate::workloads::names::{generated_name, suffix, uid};
use crate::workloads::node::NodeSpec;
use crate::workloads::schedule::admits;
use crate::workloads::template::{
    check_selector, check_template, owner_reference, pod_from_template,
};

pub(super) fn expand(
    subject: &Subject,
    ds: &DaemonSet,
    nodes: &[NodeSpec],
) -> Result<Expansion, WorkloadError> {
    let spec = required_spec(&ds.spec)?;
    check_selector(WorkloadKind::DaemonSet, &spec.selector, &spec.template)?;
    check_template(&spec.template, "spec.template", &["Always"], Some("Always"))?;
    let hash = template_hash(&spec.template)?;
    let owner = owner_reference(
        "apps/v1",
        "DaemonSet",
        &subject.name,
        uid("DaemonSet", &subject.namespace, &subject.name),
    );
    let pod_spec = spec.template.spec.clone().unwrap_or_default();
    let mut taken = Vec::new();
    let mut pods = Vec::new();
    for node in nodes {
        if !admits(&pod_spec, &node.name, &node.registered_labels()) {
            continue;
        }
        let s = suffix("DaemonSet", &subject.name, &node.name, &taken);
        let mut pod = pod_from_template(
            &spec.template,
            &subject.namespace,
            generated_name(&format!("{}-", subject.name), &s),
            vec![(labels::CONTROLLER_REVISION_HASH.to_string(), hash.clone())],
            owner.clone(),
        );
        taken.push(s);
        if let Some(ps) = pod.spec.as_mut() {
            pin_to_node(ps.affinity.get_or_insert_with(Default::default), &node.name);
        }
        pods.push(pod);
    }
    let mut notes = Vec::new();
    if pods.is_empty() {
        notes.push(format!(
            "{}: no node matches its nodeSelector or node affinity, so it runs no pod",
            subject.describe()
        ));
    }
    Ok(subject.finish(&spec.template, pods, notes))
}

/// The DaemonSet controller's `ReplaceDaemonSetPodNodeNameNodeAffinity`: the required
/// node terms become one term selecting the node by name (the controller already
/// checked the original terms against it).
fn pin_to_node(affinity: &mut Affinity, node: &str) {
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.to_string()]),
            }]),
        }],
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::expand::test_support::{apps, expand_json, labels_of, names};
    use crate::workloads::schedule::terms_match;

    fn nodes() -> Vec<NodeSpec> {
        let mut gpu = NodeSpec::new("n2");
        gpu.labels.insert("gpu".into(), "true".into());
        vec![NodeSpec::new("n1"), gpu, NodeSpec::new("n3")]
    }

    #[test]
    fn one_pod_per_node_pinned_by_name() {
        let e = expand_json(
            WorkloadKind::DaemonSet,
            apps("DaemonSet", "agent", None, "a"),
            &nodes(),
        )
        .unwrap();
        assert_eq!(e.pods.len(), 3);
        for (pod, node) in e.pods.iter().zip(["n1", "n2", "n3"]) {
            let terms = &pod
                .pod
                .spec
                .as_ref()
                .unwrap()
                .affinity
                .as_ref()
                .unwrap()
                .node_affinity
                .as_ref()
                .unwrap()
                .required_during_scheduling_ignored_during_execution
                .as_ref()
                .unwrap()
                .node_selector_terms;
            assert!(terms_match(terms, node, &Default::default()));
            assert!(!terms_match(terms, "other", &Default::default()));
            assert!(labels_of(pod).contains_key(labels::CONTROLLER_REVISION_HASH));
        }
        // A node's pod keeps its name when other nodes go.
        let fewer = expand_json(
            WorkloadKind::DaemonSet,
            apps("DaemonSet", "agent", None, "a"),
            &nodes()[1..],
        )
        .unwrap();
        assert_eq!(names(&fewer), names(&e)[1..]);
    }

    #[test]
    fn only_admitted_nodes_get_a_pod() {
        let mut ds = apps("DaemonSet", "gpu-agent", None, "a");
        ds["spec"]["template"]["spec"]["nodeSelector"] = serde_json::json!({"gpu": "true"});
        let e = expand_json(WorkloadKind::DaemonSet, ds.clone(), &nodes()).unwrap();
        assert_eq!(e.pods.len(), 1);
        ds["spec"]["template"]["spec"]["nodeSelector"] = serde_json::json!({"gpu": "false"});
        let e = expand_json(WorkloadKind::DaemonSet, ds, &nodes()).unwrap();
        assert!(e.pods.is_empty());
        assert!(e.notes[0].contains("no node matches"), "{:?}", e.notes);
    }
}
