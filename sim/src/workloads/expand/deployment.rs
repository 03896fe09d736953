//! A Deployment runs its pods through a ReplicaSet named `<deployment>-<hash>`, where
//! the hash is the pod-template-hash of the current template ([`crate::workloads::hash`]);
//! its pods are that ReplicaSet's, `<deployment>-<hash>-<5 chars>`, labelled
//! `pod-template-hash: <hash>`. A new template makes a new ReplicaSet, so new pod names:
//! the end state of a rollout.

use k8s_openapi::api::apps::v1::Deployment;

use super::replicaset::replica_pods;
use super::{Subject, required_spec};
use crate::workloads::Expansion;
use crate::workloads::error::WorkloadError;
use crate::workloads::hash::template_hash;
use crate::workloads::kinds::WorkloadKind;
use crate::workloads::names::uid;
use crate::workloads::template::{check_selector, check_template, owner_reference, replicas};

/// The label a Deployment's ReplicaSet puts on its pods.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

pub(super) fn expand(subject: &Subject, d: &Deployment) -> Result<Expansion, WorkloadError> {
    let spec = required_spec(&d.spec)?;
    let n = replicas(spec.replicas, "spec.replicas")?;
    check_selector(WorkloadKind::Deployment, &spec.selector, &spec.template)?;
    check_template(&spec.template, "spec.template", &["Always"], Some("Always"))?;
    let hash = template_hash(&spec.template)?;
    let rs = format!("{}-{hash}", subject.name);
    let owner = owner_reference(
        "apps/v1",
        "ReplicaSet",
        &rs,
        uid("ReplicaSet", &subject.namespace, &rs),
    );
    let labels = [(POD_TEMPLATE_HASH_LABEL.to_string(), hash)];
    let pods = replica_pods(
        &spec.template,
        subject,
        "ReplicaSet",
        &rs,
        n,
        &labels,
        owner,
    );
    let mut notes = Vec::new();
    if spec.paused == Some(true) {
        notes.push(format!(
            "{}: spec.paused is ignored; the pods shown are those of the current template",
            subject.describe()
        ));
    }
    Ok(subject.finish(&spec.template, pods, notes))
}
