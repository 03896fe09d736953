//! ReplicaSets and ReplicationControllers: `replicas` pods named `<owner>-<5 chars>`
//! (the same naming serves a Deployment's ReplicaSet). A ReplicationController's
//! selector defaults to its template's labels, as the API server defaults it.

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};

use super::{Subject, required_spec};
use crate::workloads::Expansion;
use crate::workloads::error::WorkloadError;
use crate::workloads::kinds::WorkloadKind;
use crate::workloads::names::{generated_name, suffix, uid};
use crate::workloads::template::{
    check_selector, check_template, owner_reference, pod_from_template, replicas, selects_template,
    template_labels,
};

pub(super) fn expand_replica_set(
    subject: &Subject,
    rs: &ReplicaSet,
) -> Result<Expansion, WorkloadError> {
    let spec = required_spec(&rs.spec)?;
    let n = replicas(spec.replicas, "spec.replicas")?;
    let template = spec.template.as_ref().ok_or_else(|| {
        WorkloadError::invalid("spec.template", "a ReplicaSet needs a pod template")
    })?;
    check_selector(WorkloadKind::ReplicaSet, &spec.selector, template)?;
    check_template(template, "spec.template", &["Always"], Some("Always"))?;
    let owner = owner_ref("apps/v1", "ReplicaSet", subject);
    let pods = replica_pods(
        template,
        subject,
        "ReplicaSet",
        &subject.name,
        n,
        &[],
        owner,
    );
    Ok(subject.finish(template, pods, vec![]))
}

pub(super) fn expand_replication_controller(
    subject: &Subject,
    rc: &ReplicationController,
) -> Result<Expansion, WorkloadError> {
    let spec = required_spec(&rc.spec)?;
    let n = replicas(spec.replicas, "spec.replicas")?;
    let template = spec.template.as_ref().ok_or_else(|| {
        WorkloadError::invalid(
            "spec.template",
            "a ReplicationController needs a pod template",
        )
    })?;
    let selector = match spec.selector.as_ref().filter(|s| !s.is_empty()) {
        Some(s) => s.clone(),
        None => template_labels(template),
    };
    if selector.is_empty() {
        return Err(WorkloadError::Selector {
            path: "spec.selector".into(),
            message:
                "a ReplicationController needs a selector or template labels to default it from"
                    .into(),
        });
    }
    let selector = LabelSelector {
        match_labels: Some(selector),
        match_expressions: None,
    };
    selects_template(&selector, template)?;
    check_template(template, "spec.template", &["Always"], Some("Always"))?;
    let owner = owner_ref("v1", "ReplicationController", subject);
    let pods = replica_pods(
        template,
        subject,
        "ReplicationController",
        &subject.name,
        n,
        &[],
        owner,
    );
    Ok(subject.finish(template, pods, vec![]))
}

fn owner_ref(api_version: &str, kind: &str, subject: &Subject) -> OwnerReference {
    owner_reference(
        api_version,
        kind,
        &subject.name,
        uid(kind, &subject.namespace, &subject.name),
    )
}

/// `n` pods `<owner>-<suffix>`, suffix `i` derived from (`owner_kind`, `owner`, `i`):
/// pod `i` keeps its name whatever `n` is, so scaling down drops the highest indexes.
pub(super) fn replica_pods(
    template: &PodTemplateSpec,
    subject: &Subject,
    owner_kind: &str,
    owner: &str,
    n: usize,
    extra_labels: &[(String, String)],
    owner_ref: OwnerReference,
) -> Vec<Pod> {
    let mut taken: Vec<String> = Vec::with_capacity(n);
    let mut pods = Vec::with_capacity(n);
    for i in 0..n {
        let s = suffix(owner_kind, owner, &i.to_string(), &taken);
        pods.push(pod_from_template(
            template,
            &subject.namespace,
            generated_name(&format!("{owner}-"), &s),
            extra_labels.to_vec(),
            owner_ref.clone(),
        ));
        taken.push(s);
    }
    pods
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::expand::test_support::{apps, expand_json, names};

    #[test]
    fn replica_set_pods_are_name_dash_five() {
        let e = expand_json(
            WorkloadKind::ReplicaSet,
            apps("ReplicaSet", "cache", Some(2), "redis"),
            &[],
        )
        .unwrap();
        let names = names(&e);
        assert_eq!(names.len(), 2);
        assert_ne!(names[0], names[1]);
        assert!(
            names
                .iter()
                .all(|n| n.starts_with("cache-") && n.len() == "cache-".len() + 5)
        );
        assert_eq!(e.pods[0].owner.to_string(), "ReplicaSet/cache");
    }

    fn rc(selector: Option<serde_json::Value>) -> serde_json::Value {
        let mut v = serde_json::json!({
            "apiVersion": "v1", "kind": "ReplicationController",
            "metadata": {"name": "legacy"},
            "spec": {"replicas": 2, "template": {
                "metadata": {"labels": {"app": "legacy"}},
                "spec": {"containers": [{"name": "c"}]}
            }}
        });
        if let Some(s) = selector {
            v["spec"]["selector"] = s;
        }
        v
    }

    #[test]
    fn replication_controller_selector_defaults_to_the_template_labels() {
        let e = expand_json(WorkloadKind::ReplicationController, rc(None), &[]).unwrap();
        assert_eq!(e.pods.len(), 2);
        assert_eq!(e.pods[0].owner.to_string(), "ReplicationController/legacy");
        assert_eq!(e.pods[0].pod.metadata.namespace.as_deref(), Some("default"));
        let err = expand_json(
            WorkloadKind::ReplicationController,
            rc(Some(serde_json::json!({"app": "other"}))),
            &[],
        )
        .unwrap_err();
        assert_eq!(err.path(), "spec.selector");
    }
}
