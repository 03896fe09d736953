//! Rule renderers: pure functions from cluster state to the text loaded into a node.
//! [`render_node`] writes the NetworkPolicy enforcer's iptables rules and ipsets for one
//! node (kube-router's layout); [`Ruleset`] is that state as data, readable back from
//! `iptables-save` / `ipset save` and printed in one normalised form for snapshots.

pub mod names;
mod policy_iptables;
pub mod proxy_iptables;
pub mod proxy_ipvs;
pub mod proxy_names;
pub mod proxy_nftables;
mod ruleset;

#[cfg(test)]
mod tests;

pub use policy_iptables::{NodeRules, RenderContext, render_node};
pub use ruleset::{
    ApplyScripts, Hook, IpSet, Ruleset, SetEntry, SetKind, apply_scripts, chain_order_key,
};
