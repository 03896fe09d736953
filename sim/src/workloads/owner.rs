//! The controller a pod belongs to, read back from the pod alone: its controller owner
//! reference, with a Deployment's ReplicaSet (`<deployment>-<pod-template-hash>`) seen
//! through to the Deployment, as users name it. This works for the pods knetlab expands
//! and for pods as `kubectl get -o yaml` prints them.

use k8s_openapi::api::core::v1::Pod;

use crate::workloads::Owner;
use crate::workloads::kinds::WorkloadKind;
use crate::workloads::labels::POD_TEMPLATE_HASH;

/// The pod's owning controller, `None` for a pod no controller owns.
pub fn owner_of(pod: &Pod) -> Option<Owner> {
    let reference = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))?;
    let kind = WorkloadKind::ALL
        .into_iter()
        .find(|k| k.as_str() == reference.kind)?;
    let hash = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(POD_TEMPLATE_HASH));
    if kind == WorkloadKind::ReplicaSet
        && let Some(deployment) = hash.and_then(|h| {
            reference
                .name
                .strip_suffix(h.as_str())
                .and_then(|n| n.strip_suffix('-'))
        })
        && !deployment.is_empty()
    {
        return Some(Owner {
            kind: WorkloadKind::Deployment,
            name: deployment.to_string(),
        });
    }
    Some(Owner {
        kind,
        name: reference.name.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::expand::test_support::{apps, expand_json};

    #[test]
    fn expanded_pods_name_their_controller() {
        for kind in [
            WorkloadKind::Deployment,
            WorkloadKind::ReplicaSet,
            WorkloadKind::StatefulSet,
        ] {
            let e = expand_json(kind, apps(kind.as_str(), "web", Some(2), "nginx"), &[]).unwrap();
            for p in &e.pods {
                assert_eq!(owner_of(&p.pod).as_ref(), Some(&p.owner), "{kind}");
            }
        }
    }

    #[test]
    fn a_pod_as_kubectl_prints_it() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-5d4f8-abcde", "labels": {"pod-template-hash": "5d4f8"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web-5d4f8", "uid": "u", "controller": true}]}
        }))
        .unwrap();
        assert_eq!(owner_of(&pod).unwrap().to_string(), "Deployment/web");
        let bare: Pod =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}})).unwrap();
        assert_eq!(owner_of(&bare), None);
    }
}
