//! The `iptables` proxy: kube-proxy's iptables mode, rendered by
//! `sim::kube_proxy::iptables` from `sim::kube_proxy::model` and loaded into each
//! node with one `iptables-nft-restore --noflush` per sync, nodes in parallel.
//!
//! As kube-proxy does:
//! - the **first sync** of a node is its start-up: the empty KUBE-PROXY-CANARY chains,
//!   the chains the built-in chains jump to, the jumps themselves (inserted at position 1
//!   in kube-proxy's order, so they end up as on a real node), then a full sync writing
//!   every chain, all in one restore; plus the route for the service CIDR (see
//!   [`super::route_service_cidr`]). If the node already has the canary (the engine lost
//!   track of it after a failure), the jumps are there and only a full sync is written,
//!   deleting the per-service chains that are no longer wanted;
//! - **later syncs** are partial: `ProxyRules::incremental_restore` against the rendering
//!   last applied to that node rewrites the top-level chains, only the chains of the
//!   Services that changed, and deletes stale ones. A node whose rendering did not change
//!   is not touched at all.
//!
//! Restores never name a built-in chain, so the NetworkPolicy engine's jumps and chains
//! in the same tables are left alone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use sim::kube_proxy::iptables::{
    ProxyRules, Table, bootstrap_restore, is_kube_proxy_chain, kube_proxy_view, render,
};
use sim::kube_proxy::names::KUBE_PROXY_CANARY;
use sim::objects::ClusterObjects;
use sim::plan::Plan;

use super::{
    ProxyError, ProxyNodeSync, ProxySyncReport, ServiceProxy, default_system, route_service_cidr,
    sync_nodes,
};
use crate::system::{NsRef, System, Tool};

/// kube-proxy in iptables mode.
pub struct IptablesProxy {
    /// The rendering last applied to each node, keyed by namespace name; absent = the
    /// node was never synced (or its last sync failed): start it up.
    applied: BTreeMap<String, ProxyRules>,
    system: Arc<dyn System>,
}

impl Default for IptablesProxy {
    fn default() -> Self {
        Self::with_system(default_system())
    }
}

impl IptablesProxy {
    pub fn new() -> Self {
        Self::default()
    }

    /// The proxy acting through `system` (the fake, in unit tests).
    pub fn with_system(system: Arc<dyn System>) -> Self {
        Self {
            applied: BTreeMap::new(),
            system,
        }
    }
}

impl ServiceProxy for IptablesProxy {
    fn name(&self) -> &'static str {
        "iptables"
    }

    fn sync_refs(
        &mut self,
        plan: &Plan,
        nodes: &[(String, NsRef)],
        objects: &ClusterObjects,
    ) -> Result<ProxySyncReport, ProxyError> {
        let system = &*self.system;
        sync_nodes(
            plan,
            nodes,
            objects,
            &mut self.applied,
            |node, input| {
                render(&input).map_err(|e| {
                    ProxyError::Render(format!("render kube-proxy's rules for node {node}: {e}"))
                })
            },
            |w, before| apply_node(system, plan, &w.node, &w.ns, &w.want, before),
        )
    }

    fn installed_in(&self, node: &NsRef) -> Result<String, ProxyError> {
        let saved = self.system.run(node, Tool::IptablesSave, &[], None)?;
        Ok(kube_proxy_view(&saved))
    }
}

/// Brings one node from `before` (a different rendering last applied, or nothing) to
/// `rules`.
fn apply_node(
    system: &dyn System,
    plan: &Plan,
    node: &str,
    ns: &NsRef,
    rules: &ProxyRules,
    before: Option<&ProxyRules>,
) -> anyhow::Result<ProxyNodeSync> {
    let start = Instant::now();
    let (text, full) = match before {
        Some(prev) => (rules.incremental_restore(prev), false),
        None => (start_up(system, plan, ns, rules)?, true),
    };
    system
        .run(ns, Tool::IptablesRestore, &["--noflush"], Some(&text))
        .with_context(|| format!("load kube-proxy's rules into node {node}"))?;
    Ok(ProxyNodeSync::written(
        node,
        full,
        text.len(),
        text.lines().count(),
        start,
    ))
}

/// The restore text of a node's first sync, after routing the service CIDR: start-up
/// and a full sync on a fresh node; on a node that already has kube-proxy's canary
/// (started before), a full sync that also deletes the per-service chains it no longer
/// wants.
fn start_up(
    system: &dyn System,
    plan: &Plan,
    ns: &NsRef,
    rules: &ProxyRules,
) -> Result<String, ProxyError> {
    route_service_cidr(system, plan, ns)?;
    let saved = system.run(ns, Tool::IptablesSave, &["-t", "nat"], None)?;
    let nat_chains: Vec<&str> = saved
        .lines()
        .filter_map(|l| l.strip_prefix(':')?.split_whitespace().next())
        .filter(|c| is_kube_proxy_chain(Table::Nat, c))
        .collect();
    if nat_chains.contains(&KUBE_PROXY_CANARY) {
        return Ok(rules.full_restore_replacing(nat_chains));
    }
    let mut text = bootstrap_restore(true);
    text.push_str(&rules.full_restore());
    Ok(text)
}
