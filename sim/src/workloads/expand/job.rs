//! A Job runs `parallelism` pods at once (default 1), never more than `completions`
//! when that is smaller, as the Job controller does; its pods are `<job>-<5 chars>`, or
//! `<job>-<index>-<5 chars>` with hostname `<job>-<index>` for an Indexed Job, and carry
//! the Job's labels with a deterministic controller uid. A suspended Job runs none. A
//! CronJob creates no pods until its schedule fires, which knetlab does not run.

use k8s_openapi::api::batch::v1::Job;

use super::replicaset::replica_pods;
use super::{Subject, required_spec};
use crate::workloads::Expansion;
use crate::workloads::error::WorkloadError;
use crate::workloads::labels;
use crate::workloads::names::{generated_name, suffix, uid};
use crate::workloads::template::{
    check_template, count, owner_reference, pod_from_template, selects_template,
};

pub(super) fn expand_job(subject: &Subject, job: &Job) -> Result<Expansion, WorkloadError> {
    let spec = required_spec(&job.spec)?;
    let parallelism = count(spec.parallelism.unwrap_or(1), "spec.parallelism")?;
    let completions = spec
        .completions
        .map(|c| count(c, "spec.completions"))
        .transpose()?;
    let indexed = match spec.completion_mode.as_deref() {
        None | Some("NonIndexed") => false,
        Some("Indexed") if completions.is_some() => true,
        Some("Indexed") => {
            return Err(WorkloadError::invalid(
                "spec.completions",
                "an Indexed Job needs completions",
            ));
        }
        Some(other) => {
            return Err(WorkloadError::invalid(
                "spec.completionMode",
                format!("completionMode {other:?} is neither NonIndexed nor Indexed"),
            ));
        }
    };
    match (spec.manual_selector, &spec.selector) {
        (Some(true), Some(sel)) => selects_template(sel, &spec.template)?,
        (Some(true), None) => {
            return Err(WorkloadError::Selector {
                path: "spec.selector".into(),
                message: "manualSelector needs a selector".into(),
            });
        }
        (_, Some(_)) => {
            return Err(WorkloadError::Selector {
                path: "spec.selector".into(),
                message: "the Job's selector is generated; set manualSelector: true to give one"
                    .into(),
            });
        }
        (_, None) => {}
    }
    check_template(
        &spec.template,
        "spec.template",
        &["OnFailure", "Never"],
        None,
    )?;

    let job_uid = uid("Job", &subject.namespace, &subject.name);
    let labels: Vec<(String, String)> = [
        (labels::JOB_CONTROLLER_UID, job_uid.as_str()),
        (labels::JOB_NAME, subject.name.as_str()),
        (labels::LEGACY_JOB_CONTROLLER_UID, job_uid.as_str()),
        (labels::LEGACY_JOB_NAME, subject.name.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let owner = owner_reference("batch/v1", "Job", &subject.name, job_uid.clone());
    let suspended = spec.suspend == Some(true);
    let n = if suspended {
        0
    } else {
        completions.map_or(parallelism, |c| c.min(parallelism))
    };
    let pods = if indexed {
        let mut taken = Vec::new();
        (0..n)
            .map(|i| {
                let s = suffix("Job", &subject.name, &i.to_string(), &taken);
                let mut labels = labels.clone();
                labels.push((labels::JOB_COMPLETION_INDEX.to_string(), i.to_string()));
                let mut pod = pod_from_template(
                    &spec.template,
                    &subject.namespace,
                    generated_name(&format!("{}-{i}-", subject.name), &s),
                    labels,
                    owner.clone(),
                );
                taken.push(s);
                pod.metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(labels::JOB_COMPLETION_INDEX.to_string(), i.to_string());
                if let Some(ps) = pod.spec.as_mut() {
                    ps.hostname = Some(format!("{}-{i}", subject.name));
                }
                pod
            })
            .collect()
    } else {
        replica_pods(
            &spec.template,
            subject,
            "Job",
            &subject.name,
            n,
            &labels,
            owner,
        )
    };
    let mut notes = Vec::new();
    if suspended {
        notes.push(format!(
            "{}: suspended, so it runs no pod",
            subject.describe()
        ));
    } else if n > 0 {
        notes.push(format!(
            "{}: its pods are shown running; a real Job's pods stop once they complete",
            subject.describe()
        ));
    }
    Ok(subject.finish(&spec.template, pods, notes))
}

pub(super) fn expand_cron_job(subject: &Subject) -> Expansion {
    Expansion {
        pods: vec![],
        notes: vec![format!(
            "{}: creates no pods until its schedule fires, and knetlab runs no schedules",
            subject.describe()
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::expand::test_support::{expand_json, labels_of, names};
    use crate::workloads::kinds::WorkloadKind;

    fn job(spec: serde_json::Value) -> Result<Expansion, WorkloadError> {
        let mut spec = spec;
        spec["template"] = serde_json::json!({
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c"}]}
        });
        expand_json(
            WorkloadKind::Job,
            serde_json::json!({"metadata": {"name": "pi", "namespace": "batch"}, "spec": spec}),
            &[],
        )
    }

    #[test]
    fn parallelism_defaults_to_one_and_completions_caps_it() {
        assert_eq!(job(serde_json::json!({})).unwrap().pods.len(), 1);
        assert_eq!(
            job(serde_json::json!({"parallelism": 3}))
                .unwrap()
                .pods
                .len(),
            3
        );
        assert_eq!(
            job(serde_json::json!({"parallelism": 5, "completions": 2}))
                .unwrap()
                .pods
                .len(),
            2
        );
        assert_eq!(
            job(serde_json::json!({"parallelism": 2, "completions": 10}))
                .unwrap()
                .pods
                .len(),
            2
        );
        assert!(
            job(serde_json::json!({"parallelism": 3, "suspend": true}))
                .unwrap()
                .pods
                .is_empty()
        );
        assert_eq!(
            job(serde_json::json!({"parallelism": -1}))
                .unwrap_err()
                .path(),
            "spec.parallelism"
        );
    }

    #[test]
    fn pods_carry_the_job_labels_with_a_stable_uid() {
        let e = job(serde_json::json!({"parallelism": 2})).unwrap();
        let l = labels_of(&e.pods[0]);
        let uid = uid("Job", "batch", "pi");
        assert_eq!(l[labels::JOB_CONTROLLER_UID], uid);
        assert_eq!(l[labels::LEGACY_JOB_CONTROLLER_UID], uid);
        assert_eq!(l[labels::JOB_NAME], "pi");
        assert_eq!(l[labels::LEGACY_JOB_NAME], "pi");
        assert!(
            names(&e)
                .iter()
                .all(|n| n.starts_with("pi-") && n.len() == 8)
        );
        assert_eq!(e.pods[0].owner.to_string(), "Job/pi");
    }

    #[test]
    fn indexed_jobs_name_and_label_the_index() {
        let e = job(
            serde_json::json!({"parallelism": 2, "completions": 4, "completionMode": "Indexed"}),
        )
        .unwrap();
        let n = names(&e);
        assert!(
            n[0].starts_with("pi-0-") && n[1].starts_with("pi-1-"),
            "{n:?}"
        );
        assert_eq!(labels_of(&e.pods[1])[labels::JOB_COMPLETION_INDEX], "1");
        assert_eq!(
            e.pods[1].pod.spec.as_ref().unwrap().hostname.as_deref(),
            Some("pi-1")
        );
    }

    #[test]
    fn the_api_servers_job_checks() {
        let always = expand_json(
            WorkloadKind::Job,
            serde_json::json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"containers": [{"name": "c"}]}}}}),
            &[],
        );
        assert_eq!(
            always.unwrap_err().path(),
            "spec.template.spec.restartPolicy"
        );
        let sel = job(serde_json::json!({"selector": {"matchLabels": {"a": "b"}}}));
        assert_eq!(sel.unwrap_err().path(), "spec.selector");
    }

    #[test]
    fn cron_jobs_make_no_pods_and_say_so() {
        let e = expand_json(
            WorkloadKind::CronJob,
            serde_json::json!({"metadata": {"name": "nightly"}, "spec": {"schedule": "0 0 * * *", "jobTemplate": {}}}),
            &[],
        )
        .unwrap();
        assert!(e.pods.is_empty());
        assert!(
            e.notes[0].contains("CronJob default/nightly"),
            "{:?}",
            e.notes
        );
    }
}
