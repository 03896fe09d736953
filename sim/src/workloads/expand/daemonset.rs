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

use super::statefulset::CONTROLLER_REVISION_HASH_LABEL;
use super::{Subject, required_spec};
use crate::workloads::Expansion;
use crate::workloads::error::WorkloadError;
use crate::workloads::hash::template_hash;
use crate::workloads::kinds::WorkloadKind;
use crate::workloads::names::{suffix, uid};
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
            format!("{}-{s}", subject.name),
            vec![(CONTROLLER_REVISION_HASH_LABEL.to_string(), hash.clone())],
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
