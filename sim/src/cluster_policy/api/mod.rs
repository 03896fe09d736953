//! The manifests as users write them: serde types for policy.networking.k8s.io
//! v1alpha2 ClusterNetworkPolicy and v1alpha1 AdminNetworkPolicy /
//! BaselineAdminNetworkPolicy. Every struct refuses unknown fields, as the CRDs'
//! structural schemas prune-and-refuse them under strict field validation, so a typo
//! is an error rather than a silently wider rule. Checking values (ranges, exactly one
//! of) is [`super::validate`]'s job.

pub mod selector;
pub mod v1alpha1;
pub mod v1alpha2;
