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
use crate::workloads::labels;
use crate::workloads::names::uid;
use crate::workloads::template::{check_selector, check_template, owner_reference, replicas};

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
    let labels = [(labels::POD_TEMPLATE_HASH.to_string(), hash)];
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::expand::test_support::{apps, expand_json, labels_of, names};
    use crate::workloads::names::SAFE_ALPHABET;

    fn deploy(replicas: Option<i32>, image: &str) -> Result<Expansion, WorkloadError> {
        expand_json(
            WorkloadKind::Deployment,
            apps("Deployment", "frontend", replicas, image),
            &[],
        )
    }

    #[test]
    fn pods_are_named_after_the_replica_set_of_the_template_hash() {
        let e = deploy(Some(3), "nginx").unwrap();
        let names = names(&e);
        assert_eq!(names.len(), 3);
        let hash = labels_of(&e.pods[0])[labels::POD_TEMPLATE_HASH].clone();
        for (pod, name) in e.pods.iter().zip(&names) {
            let rest = name.strip_prefix(&format!("frontend-{hash}-")).unwrap();
            assert_eq!(rest.len(), 5);
            assert!(rest.bytes().all(|c| SAFE_ALPHABET.contains(&c)));
            assert_eq!(labels_of(pod)["app"], "frontend");
            assert_eq!(pod.owner.to_string(), "Deployment/frontend");
            assert_eq!(pod.pod.metadata.namespace.as_deref(), Some("shop"));
            let owner = &pod.pod.metadata.owner_references.as_ref().unwrap()[0];
            assert_eq!(owner.kind, "ReplicaSet");
            assert_eq!(owner.name, format!("frontend-{hash}"));
            assert!(!pod.host_network);
        }
        assert_eq!(e.notes, Vec::<String>::new());
    }

    #[test]
    fn re_expanding_is_stable_scaling_keeps_names_and_a_new_template_renames() {
        let three = names(&deploy(Some(3), "nginx").unwrap());
        assert_eq!(three, names(&deploy(Some(3), "nginx").unwrap()));
        assert_eq!(names(&deploy(Some(2), "nginx").unwrap()), three[..2]);
        assert_eq!(names(&deploy(Some(5), "nginx").unwrap())[..3], three);
        let updated = names(&deploy(Some(3), "nginx:2").unwrap());
        assert!(updated.iter().all(|n| !three.contains(n)));
    }

    #[test]
    fn replicas_default_to_one_and_negative_is_refused() {
        assert_eq!(deploy(None, "nginx").unwrap().pods.len(), 1);
        assert!(deploy(Some(0), "nginx").unwrap().pods.is_empty());
        let err = deploy(Some(-2), "nginx").unwrap_err();
        assert_eq!(err.path(), "spec.replicas");
    }

    #[test]
    fn a_selector_that_misses_the_template_is_refused() {
        let mut d = apps("Deployment", "frontend", None, "nginx");
        d["spec"]["selector"] = serde_json::json!({"matchLabels": {"app": "other"}});
        let err = expand_json(WorkloadKind::Deployment, d.clone(), &[]).unwrap_err();
        assert_eq!(err.path(), "spec.selector");
        assert!(
            err.to_string().contains("API server refuses that too"),
            "{err}"
        );
        d["spec"]["selector"] = serde_json::json!({});
        let err = expand_json(WorkloadKind::Deployment, d, &[]).unwrap_err();
        assert!(err.to_string().contains("empty selector"), "{err}");
    }

    #[test]
    fn host_network_is_marked() {
        let mut d = apps("Deployment", "agent", Some(1), "x");
        d["spec"]["template"]["spec"]["hostNetwork"] = true.into();
        let e = expand_json(WorkloadKind::Deployment, d, &[]).unwrap();
        assert!(e.pods[0].host_network);
    }

    #[test]
    fn no_name_or_no_spec_is_an_error_not_a_panic() {
        let nameless =
            serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {}});
        let err = expand_json(WorkloadKind::Deployment, nameless, &[]).unwrap_err();
        assert_eq!(err.path(), "metadata.name");
        let specless = serde_json::json!({"metadata": {"name": "x"}});
        let err = expand_json(WorkloadKind::Deployment, specless, &[]).unwrap_err();
        assert_eq!(err.path(), "spec");
    }
}
