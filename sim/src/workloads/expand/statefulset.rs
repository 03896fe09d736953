//! A StatefulSet's pods have stable identities: `<name>-0` … `<name>-(n-1)` (from
//! `spec.ordinals.start` if set), each with `hostname: <pod>` and `subdomain:
//! <serviceName>`, so the cluster DNS gives `<pod>.<service>.<ns>.svc.cluster.local`
//! through the headless Service. The controller labels each pod with its revision
//! (`controller-revision-hash: <name>-<hash>`), its name and (Kubernetes ≥ 1.28) its index.

use k8s_openapi::api::apps::v1::StatefulSet;

use super::{Subject, required_spec};
use crate::workloads::Expansion;
use crate::workloads::error::WorkloadError;
use crate::workloads::hash::template_hash;
use crate::workloads::kinds::WorkloadKind;
use crate::workloads::labels;
use crate::workloads::names::uid;
use crate::workloads::template::{
    check_selector, check_template, owner_reference, pod_from_template, replicas,
};

pub(super) fn expand(subject: &Subject, sts: &StatefulSet) -> Result<Expansion, WorkloadError> {
    let spec = required_spec(&sts.spec)?;
    let n = replicas(spec.replicas, "spec.replicas")?;
    let start = match spec.ordinals.as_ref().and_then(|o| o.start) {
        Some(start) => usize::try_from(start).map_err(|_| WorkloadError::Negative {
            path: "spec.ordinals.start".into(),
            value: start.into(),
        })?,
        None => 0,
    };
    check_selector(WorkloadKind::StatefulSet, &spec.selector, &spec.template)?;
    check_template(&spec.template, "spec.template", &["Always"], Some("Always"))?;
    let revision = format!("{}-{}", subject.name, template_hash(&spec.template)?);
    let service = spec.service_name.clone().filter(|s| !s.is_empty());
    let owner = owner_reference(
        "apps/v1",
        "StatefulSet",
        &subject.name,
        uid("StatefulSet", &subject.namespace, &subject.name),
    );
    let pods = (start..start + n)
        .map(|ordinal| {
            let name = format!("{}-{ordinal}", subject.name);
            let labels = vec![
                (
                    labels::CONTROLLER_REVISION_HASH.to_string(),
                    revision.clone(),
                ),
                (labels::STATEFULSET_POD_NAME.to_string(), name.clone()),
                (labels::POD_INDEX.to_string(), ordinal.to_string()),
            ];
            let mut pod = pod_from_template(
                &spec.template,
                &subject.namespace,
                name.clone(),
                labels,
                owner.clone(),
            );
            // The controller sets the identity whatever the template says.
            if let Some(pod_spec) = pod.spec.as_mut() {
                pod_spec.hostname = Some(name);
                pod_spec.subdomain = service.clone();
            }
            pod
        })
        .collect();
    let mut notes = Vec::new();
    if service.is_none() {
        notes.push(format!(
            "{}: no spec.serviceName, so its pods get no per-pod DNS names",
            subject.describe()
        ));
    }
    Ok(subject.finish(&spec.template, pods, notes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::expand::test_support::{apps, expand_json, labels_of, names};

    #[test]
    fn pods_have_ordinal_names_hostname_subdomain_and_identity_labels() {
        let mut s = apps("StatefulSet", "db", Some(3), "postgres");
        s["spec"]["serviceName"] = "db-headless".into();
        let e = expand_json(WorkloadKind::StatefulSet, s, &[]).unwrap();
        assert_eq!(names(&e), ["db-0", "db-1", "db-2"]);
        for (i, pod) in e.pods.iter().enumerate() {
            let spec = pod.pod.spec.as_ref().unwrap();
            assert_eq!(spec.hostname.as_deref(), Some(format!("db-{i}").as_str()));
            assert_eq!(spec.subdomain.as_deref(), Some("db-headless"));
            let l = labels_of(pod);
            assert_eq!(l[labels::STATEFULSET_POD_NAME], format!("db-{i}"));
            assert_eq!(l[labels::POD_INDEX], i.to_string());
            assert!(l[labels::CONTROLLER_REVISION_HASH].starts_with("db-"));
            assert_eq!(pod.owner.to_string(), "StatefulSet/db");
        }
        assert!(e.notes.is_empty(), "{:?}", e.notes);
    }

    #[test]
    fn ordinals_start_and_a_missing_service_name() {
        let mut s = apps("StatefulSet", "db", Some(2), "postgres");
        s["spec"]["ordinals"] = serde_json::json!({"start": 5});
        let e = expand_json(WorkloadKind::StatefulSet, s, &[]).unwrap();
        assert_eq!(names(&e), ["db-5", "db-6"]);
        assert!(e.pods[0].pod.spec.as_ref().unwrap().subdomain.is_none());
        assert!(e.notes[0].contains("no spec.serviceName"), "{:?}", e.notes);
    }
}
