//! kube-proxy, all of it in one place: what one node's kube-proxy knows ([`input`], built
//! from the cluster's objects), and its three modes as pure renderers of that input —
//! [`iptables`], [`nftables`] and [`ipvs`] — with the chain names and hashes they share
//! ([`names`]). The oracle reads the same input, so what the rules do and what the
//! oracle predicts come from one model.

pub mod iptables;
pub mod ipvs;
pub mod model;
pub mod names;
pub mod nftables;
