//! `sim` is knetlab's pure model. It reads scenario files, holds the Kubernetes objects
//! of a virtual cluster, plans names and addresses, predicts reachability (the oracle)
//! and renders rules and matrices as text. Nothing here needs root or touches the kernel:
//! every function is data in, data out, so it is all unit-tested without privileges.

pub mod cluster;
pub mod cluster_policy;
pub mod dns;
pub mod error;
pub mod ingress;
pub mod kube_proxy;
pub mod matrix;
pub mod names;
pub mod objects;
pub mod oracle;
pub mod peers;
pub mod plan;
pub mod podnet;
pub mod policy;
pub mod protocol;
pub mod render;
pub mod report;
pub mod scenario;
pub mod selector;
pub mod services;
#[cfg(feature = "testgen")]
pub mod testgen;
pub mod trace;
pub mod workloads;
