//! The `iptables` engine: kube-router's layout (rendered by `sim::render::render_node`)
//! applied to each node with `ipset restore` and one `iptables-restore --noflush`
//! transaction. On every sync each node is re-rendered from the current objects and
//! compared with what the engine last installed there; only the difference is written:
//! changed sets are refilled through a temporary twin and an atomic `swap`, changed
//! chains are rewritten in one transaction (which also inserts the jumps from INPUT,
//! FORWARD and OUTPUT the first time, and deletes chains no longer rendered), then sets
//! nothing uses any more are destroyed. A node whose rules did not change is not touched.
//!
//! The first time the engine meets a node, and after any failure there, it reads what
//! the node really holds (`iptables-save`, `ipset save`) instead of trusting memory, and
//! checks that bridged traffic goes through iptables at all.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use sim::objects::ClusterObjects;
use sim::plan::Plan;
use sim::render::{NodeRules, Ruleset, render_node};
use sim::scenario::DenyStyle;

use super::{
    NodeSync, PolicyEngine, PolicyError, SyncReport, check_bridge_netfilter, default_system,
    read_installed_in, render_context,
};
use crate::system::fanout::{NodeWork, sync_each};
use crate::system::{NsRef, System, Tool};

/// kube-router-style iptables + ipset enforcement.
pub struct IptablesEngine {
    deny: DenyStyle,
    /// The scenario turned br_netfilter off on purpose (`cluster.brNetfilter: false`):
    /// load the rules anyway, as kube-router would, instead of refusing.
    bridges_unfiltered_on_purpose: bool,
    /// What each node holds, keyed by namespace name; absent = unknown (read it first).
    installed: BTreeMap<String, Ruleset>,
    system: Arc<dyn System>,
}

impl IptablesEngine {
    pub fn new(deny: DenyStyle) -> Self {
        Self::with_system(deny, default_system())
    }

    /// The engine acting through `system` (the fake, in unit tests).
    pub fn with_system(deny: DenyStyle, system: Arc<dyn System>) -> Self {
        Self {
            deny,
            bridges_unfiltered_on_purpose: false,
            installed: BTreeMap::new(),
            system,
        }
    }

    /// For a scenario that turns `bridge-nf-call-iptables` off to show what it costs:
    /// nodes whose bridge does not call iptables get their rules all the same (they
    /// still judge routed traffic), instead of the sync refusing them.
    pub fn with_unfiltered_bridges(mut self) -> Self {
        self.bridges_unfiltered_on_purpose = true;
        self
    }
}

impl PolicyEngine for IptablesEngine {
    fn name(&self) -> &'static str {
        "iptables"
    }

    fn sync_refs(
        &mut self,
        plan: &Plan,
        nodes: &[(String, NsRef)],
        objects: &ClusterObjects,
    ) -> Result<SyncReport, PolicyError> {
        let start = Instant::now();
        let resolved = sim::policy::resolve(objects);
        let work = nodes
            .iter()
            .map(|(node, ns)| {
                let ctx = render_context(plan, node, self.deny)?;
                Ok(NodeWork {
                    node: node.clone(),
                    ns: ns.clone(),
                    want: render_node(&resolved, node, &ctx),
                })
            })
            .collect::<Result<Vec<_>, PolicyError>>()?;
        let render = start.elapsed();
        let system = &*self.system;
        let unfiltered = self.bridges_unfiltered_on_purpose;
        let nodes = sync_each(
            work,
            &mut self.installed,
            "a node's policy sync",
            |w, known| {
                let done = apply_node(system, &w.node, &w.ns, &w.want, known, unfiltered)?;
                Ok((done, w.want.ruleset.clone()))
            },
        )
        .map_err(PolicyError::Sync)?;
        Ok(SyncReport {
            nodes,
            render,
            elapsed: start.elapsed(),
        })
    }
}

/// Brings one node from `known` (or what it really holds, when unknown) to `rules`.
fn apply_node(
    system: &dyn System,
    node: &str,
    ns: &NsRef,
    rules: &NodeRules,
    known: Option<Ruleset>,
    bridges_unfiltered_on_purpose: bool,
) -> anyhow::Result<NodeSync> {
    let start = Instant::now();
    let installed = match known {
        Some(r) => r,
        None => {
            if !bridges_unfiltered_on_purpose {
                check_bridge_netfilter(system, ns)?;
            }
            read_installed_in(system, ns)
                .with_context(|| format!("read the rules installed in namespace {}", ns.name()))?
        }
    };
    let scripts = rules.apply_over(&installed);
    if !scripts.ipset_refill.is_empty() {
        system.run(ns, Tool::Ipset, &["restore"], Some(&scripts.ipset_refill))?;
    }
    if !scripts.iptables.is_empty() {
        system.run(
            ns,
            Tool::IptablesRestore,
            &["--noflush"],
            Some(&scripts.iptables),
        )?;
    }
    if !scripts.ipset_destroy.is_empty() {
        system.run(ns, Tool::Ipset, &["restore"], Some(&scripts.ipset_destroy))?;
    }
    Ok(NodeSync {
        node: node.to_string(),
        changed: !scripts.is_empty(),
        elapsed: start.elapsed(),
        rules: rules.ruleset.rule_count(),
        sets: rules.ruleset.sets.len(),
    })
}
