//! The `iptables` proxy: kube-proxy's iptables mode, rendered by
//! `sim::kube_proxy::iptables` from `sim::kube_proxy::model::input` and loaded into each
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
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use sim::kube_proxy::iptables::{
    ProxyRules, Table, bootstrap_restore, is_kube_proxy_chain, kube_proxy_view, render,
};
use sim::kube_proxy::names::KUBE_PROXY_CANARY;
use sim::objects::ClusterObjects;
use sim::plan::Plan;

use super::{ProxyNodeSync, ProxySyncReport, ServiceProxy, route_service_cidr};
use crate::netns::Netns;
use crate::policy::{IPTABLES_RESTORE, IPTABLES_SAVE, run_in};

/// kube-proxy in iptables mode.
#[derive(Debug, Default)]
pub struct IptablesProxy {
    /// The rendering last applied to each node, keyed by namespace name; absent = the
    /// node was never synced (or its last sync failed): start it up.
    applied: BTreeMap<String, ProxyRules>,
}

impl IptablesProxy {
    pub fn new() -> Self {
        Self::default()
    }
}

impl ServiceProxy for IptablesProxy {
    fn name(&self) -> &'static str {
        "iptables"
    }

    fn sync(
        &mut self,
        plan: &Plan,
        nodes: &[(String, Netns)],
        objects: &ClusterObjects,
    ) -> Result<ProxySyncReport> {
        super::sync_nodes(
            plan,
            nodes,
            objects,
            &mut self.applied,
            |node, input| {
                render(&input)
                    .map_err(|e| anyhow!("render kube-proxy's rules for node {node}: {e}"))
            },
            |node, ns, rules, before| apply_node(plan, node, ns, rules, before),
        )
    }

    fn installed(&self, node: &Netns) -> Result<String> {
        let saved = run_in(node, IPTABLES_SAVE, &[], None)?;
        Ok(kube_proxy_view(&saved))
    }
}

/// Brings one node from `before` (the rendering last applied, or nothing) to `rules`.
fn apply_node(
    plan: &Plan,
    node: &str,
    ns: &Netns,
    rules: &ProxyRules,
    before: Option<&ProxyRules>,
) -> Result<ProxyNodeSync> {
    let start = Instant::now();
    let (text, full) = match before {
        Some(prev) if prev == rules => {
            return Ok(ProxyNodeSync {
                node: node.to_string(),
                changed: false,
                full: false,
                restore_bytes: 0,
                restore_lines: 0,
                elapsed: start.elapsed(),
            });
        }
        Some(prev) => (rules.incremental_restore(prev), false),
        None => (start_up(plan, ns, rules)?, true),
    };
    run_in(ns, IPTABLES_RESTORE, &["--noflush"], Some(&text))
        .with_context(|| format!("load kube-proxy's rules into node {node}"))?;
    Ok(ProxyNodeSync {
        node: node.to_string(),
        changed: true,
        full,
        restore_bytes: text.len(),
        restore_lines: text.lines().count(),
        elapsed: start.elapsed(),
    })
}

/// The restore text of a node's first sync, after routing the service CIDR: start-up
/// and a full sync on a fresh node; on a node that already has kube-proxy's canary
/// (started before), a full sync that also deletes the per-service chains it no longer
/// wants.
fn start_up(plan: &Plan, ns: &Netns, rules: &ProxyRules) -> Result<String> {
    route_service_cidr(plan, ns)?;
    let saved = run_in(ns, IPTABLES_SAVE, &["-t", "nat"], None)?;
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
