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
use std::time::Instant;

use anyhow::{Context, Result, bail};
use sim::objects::ClusterObjects;
use sim::plan::Plan;
use sim::render::{NodeRules, Ruleset, render_node};
use sim::scenario::DenyStyle;

use super::{
    IPSET, IPTABLES_RESTORE, NodeSync, PolicyEngine, SyncReport, check_bridge_netfilter,
    read_installed, render_context, run_in,
};
use crate::netns::Netns;

/// kube-router-style iptables + ipset enforcement.
#[derive(Debug)]
pub struct IptablesEngine {
    deny: DenyStyle,
    /// The scenario turned br_netfilter off on purpose (`cluster.brNetfilter: false`):
    /// load the rules anyway, as kube-router would, instead of refusing.
    bridges_unfiltered_on_purpose: bool,
    /// What each node holds, keyed by namespace name; absent = unknown (read it first).
    installed: BTreeMap<String, Ruleset>,
}

impl IptablesEngine {
    pub fn new(deny: DenyStyle) -> Self {
        Self {
            deny,
            bridges_unfiltered_on_purpose: false,
            installed: BTreeMap::new(),
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

    fn sync(
        &mut self,
        plan: &Plan,
        nodes: &[(String, Netns)],
        objects: &ClusterObjects,
    ) -> Result<SyncReport> {
        let start = Instant::now();
        let resolved = sim::policy::resolve(objects);
        let contexts = nodes
            .iter()
            .map(|(node, _)| render_context(plan, node, self.deny))
            .collect::<Result<Vec<_>>>()?;
        let work: Vec<_> = nodes
            .iter()
            .zip(contexts)
            .map(|((node, ns), ctx)| {
                let rules = render_node(&resolved, node, &ctx);
                let known = self.installed.remove(ns.name());
                (node, ns, rules, known)
            })
            .collect();

        let rendered = start.elapsed();
        let results: Vec<Result<NodeSync>> =
            crate::parallel::each(&work, "a node's policy sync", |(node, ns, rules, known)| {
                apply_node(
                    node,
                    ns,
                    rules,
                    known.as_ref(),
                    self.bridges_unfiltered_on_purpose,
                )
            });

        let mut report = SyncReport {
            render: rendered,
            ..SyncReport::default()
        };
        let mut errors = Vec::new();
        for ((node, ns, rules, _), result) in work.into_iter().zip(results) {
            match result {
                Ok(done) => {
                    // Remember what the node holds now; a failed node stays unknown and
                    // is read back from the kernel next time.
                    self.installed.insert(ns.name().to_string(), rules.ruleset);
                    report.nodes.push(done);
                }
                Err(e) => errors.push(format!("node {node}: {e:#}")),
            }
        }
        report.elapsed = start.elapsed();
        if !errors.is_empty() {
            bail!("policy sync failed:\n  {}", errors.join("\n  "));
        }
        Ok(report)
    }
}

/// Brings one node from `known` (or what it really holds, when unknown) to `rules`.
fn apply_node(
    node: &str,
    ns: &Netns,
    rules: &NodeRules,
    known: Option<&Ruleset>,
    bridges_unfiltered_on_purpose: bool,
) -> Result<NodeSync> {
    let start = Instant::now();
    let read;
    let installed = match known {
        Some(r) => r,
        None => {
            if !bridges_unfiltered_on_purpose {
                check_bridge_netfilter(ns)?;
            }
            read = read_installed(ns)
                .with_context(|| format!("read the rules installed in namespace {}", ns.name()))?;
            &read
        }
    };
    let scripts = rules.apply_over(installed);
    if !scripts.ipset_refill.is_empty() {
        run_in(ns, IPSET, &["restore"], Some(&scripts.ipset_refill))?;
    }
    if !scripts.iptables.is_empty() {
        run_in(
            ns,
            IPTABLES_RESTORE,
            &["--noflush"],
            Some(&scripts.iptables),
        )?;
    }
    if !scripts.ipset_destroy.is_empty() {
        run_in(ns, IPSET, &["restore"], Some(&scripts.ipset_destroy))?;
    }
    Ok(NodeSync {
        node: node.to_string(),
        changed: !scripts.is_empty(),
        elapsed: start.elapsed(),
        rules: rules.ruleset.rule_count(),
        sets: rules.ruleset.sets.len(),
    })
}
