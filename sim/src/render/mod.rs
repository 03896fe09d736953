//! The NetworkPolicy enforcer's renderer: pure functions from cluster state to the text
//! loaded into a node (kube-proxy's renderers are in [`crate::kube_proxy`]). [`render_node`] writes the NetworkPolicy enforcer's iptables rules and ipsets for one
//! node (kube-router's layout); [`Ruleset`] is that state as data, readable back from
//! `iptables-save` / `ipset save` and printed in one normalised form for snapshots.

pub mod names;
mod policy_iptables;
mod ruleset;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tiers_tests;

pub use policy_iptables::{
    ClusterTiers, NodeRules, RenderContext, render_node, render_node_tiered,
};
pub use ruleset::{
    ApplyScripts, Hook, IpSet, Ruleset, SetEntry, SetKind, apply_scripts, chain_order_key,
};
