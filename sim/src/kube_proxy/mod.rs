//! kube-proxy, all of it in one place: its model ([`model`]: what one node's kube-proxy
//! knows, built from the cluster's objects, and which endpoints each kind of traffic
//! reaches), and its three modes as pure renderers of that model — [`iptables`],
//! [`nftables`] and [`ipvs`] — with the iptables chain names and hashes ([`names`]).
//! The oracle reads the same model, so what the rules do and what the oracle predicts
//! come from one place.

pub mod iptables;
pub mod ipvs;
pub mod model;
pub mod names;
pub mod nftables;
