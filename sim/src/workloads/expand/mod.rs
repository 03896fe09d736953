//! From a controller manifest to the pods its controller would create: the checks and
//! defaults the API server applies, then one file per controller for naming and labels.

mod daemonset;
mod deployment;
mod job;
mod replicaset;
mod statefulset;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::workloads::error::WorkloadError;
use crate::workloads::kinds::WorkloadKind;
use crate::workloads::node::NodeSpec;
use crate::workloads::podspec::pod_spec_notes;
use crate::workloads::template;
use crate::workloads::{ExpandedPod, Expansion, Owner};

/// A workload controller manifest. (The variants are big; there are few controllers,
/// so boxing them would buy nothing.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Controller {
    Deployment(Deployment),
    ReplicaSet(ReplicaSet),
    StatefulSet(StatefulSet),
    DaemonSet(DaemonSet),
    Job(Job),
    CronJob(CronJob),
    ReplicationController(ReplicationController),
}

impl Controller {
    pub fn kind(&self) -> WorkloadKind {
        match self {
            Controller::Deployment(_) => WorkloadKind::Deployment,
            Controller::ReplicaSet(_) => WorkloadKind::ReplicaSet,
            Controller::StatefulSet(_) => WorkloadKind::StatefulSet,
            Controller::DaemonSet(_) => WorkloadKind::DaemonSet,
            Controller::Job(_) => WorkloadKind::Job,
            Controller::CronJob(_) => WorkloadKind::CronJob,
            Controller::ReplicationController(_) => WorkloadKind::ReplicationController,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Controller::Deployment(o) => &o.metadata,
            Controller::ReplicaSet(o) => &o.metadata,
            Controller::StatefulSet(o) => &o.metadata,
            Controller::DaemonSet(o) => &o.metadata,
            Controller::Job(o) => &o.metadata,
            Controller::CronJob(o) => &o.metadata,
            Controller::ReplicationController(o) => &o.metadata,
        }
    }

    /// Reads a controller of `kind` from its JSON form (how the decoder holds a manifest).
    pub fn from_json(kind: WorkloadKind, value: serde_json::Value) -> serde_json::Result<Self> {
        Ok(match kind {
            WorkloadKind::Deployment => Controller::Deployment(serde_json::from_value(value)?),
            WorkloadKind::ReplicaSet => Controller::ReplicaSet(serde_json::from_value(value)?),
            WorkloadKind::StatefulSet => Controller::StatefulSet(serde_json::from_value(value)?),
            WorkloadKind::DaemonSet => Controller::DaemonSet(serde_json::from_value(value)?),
            WorkloadKind::Job => Controller::Job(serde_json::from_value(value)?),
            WorkloadKind::CronJob => Controller::CronJob(serde_json::from_value(value)?),
            WorkloadKind::ReplicationController => {
                Controller::ReplicationController(serde_json::from_value(value)?)
            }
        })
    }
}

/// The pods `controller` creates on a cluster of `nodes` (a DaemonSet needs them), or
/// why the API server would refuse it. Re-expanding after a change gives what the
/// controller would converge to: same names for an unchanged template, new ones for a
/// changed template, surplus replicas dropped from the highest index.
pub fn expand(controller: &Controller, nodes: &[NodeSpec]) -> Result<Expansion, WorkloadError> {
    let meta = controller.metadata();
    let subject = Subject {
        kind: controller.kind(),
        namespace: template::namespace(meta),
        name: template::name(meta)?,
    };
    match controller {
        Controller::Deployment(o) => deployment::expand(&subject, o),
        Controller::ReplicaSet(o) => replicaset::expand_replica_set(&subject, o),
        Controller::StatefulSet(o) => statefulset::expand(&subject, o),
        Controller::DaemonSet(o) => daemonset::expand(&subject, o, nodes),
        Controller::Job(o) => job::expand_job(&subject, o),
        Controller::CronJob(_) => Ok(job::expand_cron_job(&subject)),
        Controller::ReplicationController(o) => {
            replicaset::expand_replication_controller(&subject, o)
        }
    }
}

/// The controller being expanded.
pub(crate) struct Subject {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
}

impl Subject {
    fn owner(&self) -> Owner {
        Owner {
            kind: self.kind,
            name: self.name.clone(),
        }
    }

    /// `Deployment default/web`, how notes name it.
    fn describe(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }

    /// The expansion: the pods with their owner, and notes about the template.
    fn finish(
        &self,
        template: &PodTemplateSpec,
        pods: Vec<Pod>,
        mut notes: Vec<String>,
    ) -> Expansion {
        if let Some(spec) = &template.spec {
            notes.extend(pod_spec_notes(&self.describe(), spec));
        }
        let pods = pods
            .into_iter()
            .map(|pod| ExpandedPod {
                host_network: crate::objects::host_network(&pod),
                owner: self.owner(),
                pod,
            })
            .collect();
        Expansion { pods, notes }
    }
}

/// `spec`, which every controller needs.
fn required_spec<T>(spec: &Option<T>) -> Result<&T, WorkloadError> {
    spec.as_ref()
        .ok_or_else(|| WorkloadError::invalid("spec", "the manifest needs a spec"))
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::collections::BTreeMap;

    use super::*;

    /// A controller of `kind` from JSON, expanded on `nodes`.
    pub fn expand_json(
        kind: WorkloadKind,
        value: serde_json::Value,
        nodes: &[NodeSpec],
    ) -> Result<Expansion, WorkloadError> {
        expand(&Controller::from_json(kind, value).unwrap(), nodes)
    }

    pub fn names(e: &Expansion) -> Vec<String> {
        e.pods
            .iter()
            .map(|p| p.pod.metadata.name.clone().unwrap())
            .collect()
    }

    pub fn labels_of(p: &ExpandedPod) -> BTreeMap<String, String> {
        p.pod.metadata.labels.clone().unwrap()
    }

    /// An apps/v1 controller with `replicas` and a one-container template labelled
    /// `app: <name>`.
    pub fn apps(kind: &str, name: &str, replicas: Option<i32>, image: &str) -> serde_json::Value {
        let mut spec = serde_json::json!({
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image, "ports": [{"containerPort": 80}]}]}
            }
        });
        if let Some(r) = replicas {
            spec["replicas"] = r.into();
        }
        serde_json::json!({
            "apiVersion": "apps/v1", "kind": kind,
            "metadata": {"name": name, "namespace": "shop"},
            "spec": spec
        })
    }
}
