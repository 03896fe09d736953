//! Workload controllers become the pods their controllers would create. A Deployment,
//! ReplicaSet, StatefulSet, DaemonSet, Job or ReplicationController is expanded into
//! pods with the template's labels and spec plus what the controller adds (names,
//! `pod-template-hash`, `controller-revision-hash`, StatefulSet identity, Job labels, an
//! owner); a CronJob makes none. Names are deterministic (see [`names`] and [`hash`]),
//! so expanding an unchanged controller again gives the same pods, a changed template
//! gives new names, and scaling down drops the highest indexes.
//!
//! Around that: [`kinds`] decides what becomes of a manifest's kind, [`node`] gives
//! nodes the labels their kubelets set, [`schedule`] binds pods to nodes as nodeName,
//! nodeSelector and required (anti-)affinities ask, and [`podspec`] notes where a pod
//! spec will not do what its author may expect. Everything is data in, data out.

pub mod error;
pub mod expand;
pub mod hash;
pub mod kinds;
pub mod labels;
pub mod names;
pub mod node;
pub mod owner;
pub mod podspec;
pub mod schedule;
mod template;

use k8s_openapi::api::core::v1::Pod;

pub use error::WorkloadError;
pub use expand::{Controller, expand};
pub use kinds::{KindClass, WorkloadKind, classify};
pub use node::NodeSpec;
pub use owner::owner_of;
pub use schedule::{Placement, Schedule, schedule};
pub use template::MAX_PODS_PER_CONTROLLER;

/// The controller a pod belongs to, as a user knows it: a Deployment's pods show
/// `Deployment/frontend`, not the ReplicaSet in between (that one is in the pod's
/// `metadata.ownerReferences`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner {
    pub kind: WorkloadKind,
    pub name: String,
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

impl serde::Serialize for Owner {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One pod a controller creates.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpandedPod {
    /// The pod as the API server would hold it (not yet bound to a node).
    pub pod: Pod,
    pub owner: Owner,
    /// `spec.hostNetwork`: the pod shares its node's network namespace.
    pub host_network: bool,
}

/// The pods a controller creates, in name order for StatefulSets and creation order
/// otherwise, and notes for the user.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expansion {
    pub pods: Vec<ExpandedPod>,
    pub notes: Vec<String>,
}
