//! Cluster-wide network policy tiers (policy.networking.k8s.io): ClusterNetworkPolicy
//! (v1alpha2) and the older AdminNetworkPolicy / BaselineAdminNetworkPolicy
//! (v1alpha1). [`validate::parse`] reads a manifest, checks it as the CRD's schema and
//! CEL rules do (errors carry the field path) and gives one [`ClusterPolicy`] model for
//! both versions; [`evaluate()`] judges a connection by walking the Admin tier, the
//! NetworkPolicy tier (supplied by the caller), the Baseline tier and the default, and
//! returns the walk for explanations; [`overlap`] warns about same-priority policies
//! whose subjects overlap; [`from_objects`] reads the stored policies and the cluster's
//! view from its objects. Everything is data in, data out.

pub mod api;
pub mod error;
pub mod evaluate;
pub mod from_objects;
pub mod model;
pub mod overlap;
pub mod validate;
pub mod view;

#[cfg(test)]
mod tests;

pub use error::ClusterPolicyError;
pub use evaluate::{
    Connection, Direction, DirectionVerdict, Endpoint, Evaluation, NetworkPolicyTier, Step,
    Verdict, evaluate,
};
pub use model::{Action, ClusterPolicy, Peer, PortMatch, Rule, SourceKind, Subject, Tier};
pub use overlap::same_priority_overlaps;
pub use validate::{Parsed, is_cluster_policy, parse};
pub use view::{ClusterView, ContainerPortView, NamespaceView, NodeView, PodView};
