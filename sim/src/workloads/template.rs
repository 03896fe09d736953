//! What every controller does with its pod template: the API server's checks and
//! defaults (replica counts, a selector that selects the template's own pods, a
//! template with containers and a usable restartPolicy), and the pod made from the
//! template (its labels plus the controller's, the template's spec, an owner reference).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

use crate::workloads::error::WorkloadError;
use crate::workloads::kinds::WorkloadKind;

/// The most pods knetlab makes for one controller: each pod is a network namespace.
pub const MAX_PODS_PER_CONTROLLER: usize = 1000;

/// A controller's name (`metadata.name`, which the API server requires).
pub(crate) fn name(meta: &ObjectMeta) -> Result<String, WorkloadError> {
    match meta.name.as_deref() {
        Some(n) if !n.is_empty() => Ok(n.to_string()),
        _ => Err(WorkloadError::invalid(
            "metadata.name",
            "a name is required (knetlab does not expand generateName)",
        )),
    }
}

/// A controller's namespace, `default` when the manifest gives none.
pub(crate) fn namespace(meta: &ObjectMeta) -> String {
    meta.namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// A replica count as the API server defaults it (absent → 1).
pub(crate) fn replicas(value: Option<i32>, path: &str) -> Result<usize, WorkloadError> {
    count(value.unwrap_or(1), path)
}

/// A count of pods: refused below 0, and above what a lab runs.
pub(crate) fn count(value: i32, path: &str) -> Result<usize, WorkloadError> {
    let n = usize::try_from(value).map_err(|_| WorkloadError::Negative {
        path: path.into(),
        value: value.into(),
    })?;
    if n > MAX_PODS_PER_CONTROLLER {
        return Err(WorkloadError::TooMany {
            path: path.into(),
            value: value.into(),
            max: MAX_PODS_PER_CONTROLLER,
        });
    }
    Ok(n)
}

/// An `apps/v1` selector: required, not empty, and selecting the template's labels.
pub(crate) fn check_selector(
    kind: WorkloadKind,
    selector: &LabelSelector,
    template: &PodTemplateSpec,
) -> Result<(), WorkloadError> {
    if crate::selector::is_empty(selector) {
        return Err(WorkloadError::Selector {
            path: "spec.selector".into(),
            message: format!(
                "empty selector is invalid for a {kind}: it must select the template's labels"
            ),
        });
    }
    selects_template(selector, template)
}

/// The selector selects the pods the template makes (the API server refuses a
/// controller whose own pods it would not count).
pub(crate) fn selects_template(
    selector: &LabelSelector,
    template: &PodTemplateSpec,
) -> Result<(), WorkloadError> {
    let labels = template_labels(template);
    if crate::selector::matches(selector, &labels) {
        return Ok(());
    }
    Err(WorkloadError::Selector {
        path: "spec.selector".into(),
        message: format!(
            "selector ({}) does not match the template's labels ({}); the API server refuses that too",
            crate::selector::describe(selector),
            describe_labels(&labels)
        ),
    })
}

fn describe_labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "none".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The template's labels (empty when it has none).
pub(crate) fn template_labels(template: &PodTemplateSpec) -> BTreeMap<String, String> {
    template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

/// The template has containers and a restartPolicy the controller can use
/// (`restart_policies[0]` is the default when the template names none; `None` means
/// the field is required, as for Jobs).
pub(crate) fn check_template(
    template: &PodTemplateSpec,
    path: &str,
    restart_policies: &[&str],
    default_policy: Option<&str>,
) -> Result<(), WorkloadError> {
    let Some(spec) = &template.spec else {
        return Err(WorkloadError::invalid(
            format!("{path}.spec"),
            "the pod template needs a spec with containers",
        ));
    };
    if spec.containers.is_empty() {
        return Err(WorkloadError::invalid(
            format!("{path}.spec.containers"),
            "the pod template needs at least one container",
        ));
    }
    let policy = spec.restart_policy.as_deref().or(default_policy);
    match policy {
        Some(p) if restart_policies.contains(&p) => Ok(()),
        Some(p) => Err(WorkloadError::invalid(
            format!("{path}.spec.restartPolicy"),
            format!(
                "restartPolicy {p:?} is not allowed here; use {}",
                restart_policies.join(" or ")
            ),
        )),
        None => Err(WorkloadError::invalid(
            format!("{path}.spec.restartPolicy"),
            format!(
                "restartPolicy is required here: {}",
                restart_policies.join(" or ")
            ),
        )),
    }
}

/// An owner reference to a controller, as the controller sets it on what it creates.
pub(crate) fn owner_reference(
    api_version: &str,
    kind: &str,
    name: &str,
    uid: String,
) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The pod a controller makes from its template: the template's labels and annotations
/// plus `extra_labels` (which win), the template's spec, and the owner reference.
pub(crate) fn pod_from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    name: String,
    extra_labels: Vec<(String, String)>,
    owner: OwnerReference,
) -> Pod {
    let mut labels = template_labels(template);
    labels.extend(extra_labels);
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.into()),
            labels: Some(labels),
            annotations: template
                .metadata
                .as_ref()
                .and_then(|m| m.annotations.clone()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(template.spec.clone().unwrap_or_default()),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(v: serde_json::Value) -> PodTemplateSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn replicas_default_to_one_and_refuse_negatives() {
        assert_eq!(replicas(None, "spec.replicas").unwrap(), 1);
        assert_eq!(replicas(Some(0), "spec.replicas").unwrap(), 0);
        let err = replicas(Some(-1), "spec.replicas").unwrap_err();
        assert_eq!(err.path(), "spec.replicas");
        assert!(matches!(
            replicas(Some(i32::MAX), "spec.replicas"),
            Err(WorkloadError::TooMany { .. })
        ));
    }

    #[test]
    fn templates_need_containers_and_an_allowed_restart_policy() {
        let none = template(serde_json::json!({"spec": {"containers": []}}));
        assert_eq!(
            check_template(&none, "spec.template", &["Always"], Some("Always"))
                .unwrap_err()
                .path(),
            "spec.template.spec.containers"
        );
        let job = template(serde_json::json!({"spec": {"containers": [{"name": "c"}]}}));
        let err = check_template(&job, "spec.template", &["OnFailure", "Never"], None);
        assert_eq!(err.unwrap_err().path(), "spec.template.spec.restartPolicy");
        assert!(check_template(&job, "spec.template", &["Always"], Some("Always")).is_ok());
    }
}
