//! Manifests that are not objects knetlab reads as they are: the sorting of every
//! manifest by what it becomes ([`classify`]), and workload controllers decoded as
//! strictly as Pods ([`controller`]).

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use super::{Check, manifest_kind, strict};
use crate::error::ScenarioError;
use crate::objects::Kind;
use crate::scenario::source::Source;
use crate::scenario::yaml::join_key;
use crate::workloads::{Controller, KindClass, WorkloadKind};

/// What a manifest becomes, decided from its `apiVersion` and `kind`.
#[derive(Debug)]
pub(crate) enum Manifest {
    /// An object knetlab reads as it is.
    Object(Kind),
    /// A workload controller, expanded into pods ([`super::workload`]).
    Workload(WorkloadKind),
    /// A kind that cannot change the pod network: accepted and listed in the notes.
    Ignored { kind: String },
    /// A kind that changes the network and that knetlab does not model: the error, which
    /// the caller reports (or, with `--ignore-unsupported`, turns into a warning).
    Unsupported(ScenarioError),
}

/// Says what a manifest becomes: [`crate::workloads::classify`] first, then the kinds
/// the decoder reads ([`manifest_kind`], which reports every other kind).
pub(crate) fn classify(src: &Source, path: &str, value: &Value) -> Result<Manifest, ScenarioError> {
    let text = |name: &str| value.get(name).and_then(Value::as_str);
    if let (Some(api_version), Some(kind)) = (text("apiVersion"), text("kind")) {
        match crate::workloads::classify(api_version, kind) {
            KindClass::Workload(w) => return Ok(Manifest::Workload(w)),
            KindClass::NoNetworkEffect => {
                return Ok(Manifest::Ignored {
                    kind: kind.to_string(),
                });
            }
            KindClass::Unsupported { .. } => {
                let message = crate::workloads::kinds::unsupported_error(api_version, kind)
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                return Ok(Manifest::Unsupported(src.at_value(
                    &join_key(path, "kind"),
                    format!("{message}; remove it, or run with --ignore-unsupported to measure without it"),
                )));
            }
            KindClass::Decoder => {}
        }
    }
    manifest_kind(src, path, value).map(Manifest::Object)
}

/// A workload controller decoded as strictly as a Pod: unknown fields anywhere (the pod
/// template included) are errors at their line and column, and the template passes the
/// checks a Pod's spec passes, at the template's own position.
pub(crate) fn controller(
    src: &Source,
    path: &str,
    value: &Value,
    kind: WorkloadKind,
) -> Result<Controller, ScenarioError> {
    let controller = match kind {
        WorkloadKind::Deployment => Controller::Deployment(strict(src, path, value)?),
        WorkloadKind::ReplicaSet => Controller::ReplicaSet(strict(src, path, value)?),
        WorkloadKind::StatefulSet => Controller::StatefulSet(strict(src, path, value)?),
        WorkloadKind::DaemonSet => Controller::DaemonSet(strict(src, path, value)?),
        WorkloadKind::Job => Controller::Job(strict(src, path, value)?),
        WorkloadKind::CronJob => Controller::CronJob(strict(src, path, value)?),
        WorkloadKind::ReplicationController => {
            Controller::ReplicationController(strict(src, path, value)?)
        }
    };
    let v = Check { src, base: path };
    // Controller names are DNS subdomains, as Pod names are.
    v.metadata(controller.metadata(), Kind::Pod)?;
    let template = match &controller {
        Controller::Deployment(o) => o.spec.as_ref().map(|s| (&s.template, "spec.template")),
        Controller::ReplicaSet(o) => o
            .spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .map(|t| (t, "spec.template")),
        Controller::StatefulSet(o) => o.spec.as_ref().map(|s| (&s.template, "spec.template")),
        Controller::DaemonSet(o) => o.spec.as_ref().map(|s| (&s.template, "spec.template")),
        Controller::Job(o) => o.spec.as_ref().map(|s| (&s.template, "spec.template")),
        Controller::CronJob(o) => o
            .spec
            .as_ref()
            .and_then(|s| s.job_template.spec.as_ref())
            .map(|s| (&s.template, "spec.jobTemplate.spec.template")),
        Controller::ReplicationController(o) => o
            .spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .map(|t| (t, "spec.template")),
    };
    if let Some((template, at)) = template {
        let base = join_key(path, at);
        let t = Check { src, base: &base };
        let meta = template.metadata.clone().unwrap_or_default();
        t.labels("metadata.labels", meta.labels.as_ref())?;
        if template.spec.is_some() {
            t.pod(&Pod {
                metadata: meta,
                spec: template.spec.clone(),
                status: None,
            })?;
        }
    }
    Ok(controller)
}
