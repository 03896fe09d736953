//! `harness` is knetlab's kernel side. It makes a [`sim`] plan real (network namespaces
//! for the fabric, nodes and pods; veths; the real CNI plugins; routes; netfilter rules)
//! and measures it with real packets. It decides nothing about what a policy means: that
//! is `sim`'s job. Everything it creates lives in namespaces named with the run's prefix,
//! never in the root network namespace.

pub mod capture;
pub mod cluster;
pub mod cni;
#[cfg(feature = "differential")]
pub mod differential;
pub mod dns;
#[cfg(test)]
mod fixtures;
pub mod host;
pub mod ingress;
pub mod netns;
pub mod policy;
pub mod prereq;
pub mod probe;
pub mod proxy;
pub mod run;
pub mod sweep;
pub mod system;
pub mod trace;
