//! The `iptables` engine: kube-router's layout (rendered by `sim::render::render_node`,
//! with the cluster-wide policy tiers around it)
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
use sim::cluster_policy::from_objects;
use sim::objects::ClusterObjects;
use sim::plan::Plan;
use sim::render::{ClusterTiers, NodeRules, Ruleset, render_node_tiered};
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
        // The cluster-wide policy tiers, judged on the same view the oracle uses; a
        // node stands for its underlay address and, with VXLAN, its tunnel address.
        let (policies, _) = from_objects::policies(objects);
        let view = from_objects::view(objects, &|name| {
            plan.node(name)
                .map(|n| {
                    let mut addresses = vec![n.underlay_ip];
                    addresses.extend(plan.vtep(n).map(|v| v.address));
                    addresses
                })
                .unwrap_or_default()
        });
        let tiers = ClusterTiers::new(&policies, &view);
        let work = nodes
            .iter()
            .map(|(node, ns)| {
                let ctx = render_context(plan, node, self.deny)?;
                Ok(NodeWork {
                    node: node.clone(),
                    ns: ns.clone(),
                    want: render_node_tiered(&resolved, &tiers, node, &ctx),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::policy::PolicyError;
    use crate::system::fake::Fake;

    /// Into every pod of x, only from the pods named b (a set of sources per node).
    const ONLY_B: &str = "  - apiVersion: networking.k8s.io/v1\n    kind: NetworkPolicy\n    \
                          metadata: {name: only-b, namespace: x}\n    spec:\n      \
                          podSelector: {}\n      ingress: [{from: [{podSelector: \
                          {matchLabels: {pod: b}}}]}]\n";

    /// What a node the engine does not know yet goes through: the bridge check, reading
    /// what it holds, then the sets and the rules.
    const FIRST: [&str; 5] = [
        "sysctl net/bridge/bridge-nf-call-iptables",
        "iptables-nft-save -t filter",
        "ipset save",
        "ipset restore",
        "iptables-nft-restore --noflush",
    ];

    fn setup() -> (
        Plan,
        ClusterObjects,
        Vec<(String, NsRef)>,
        Arc<Fake>,
        IptablesEngine,
    ) {
        let (plan, objects) = fixtures::standard();
        let objects = fixtures::with(&objects, ONLY_B);
        let nodes = fixtures::nodes(&plan);
        let fake = Arc::new(Fake::new());
        let engine = IptablesEngine::with_system(DenyStyle::Reject, fake.clone());
        (plan, objects, nodes, fake, engine)
    }

    #[test]
    fn a_first_sync_reads_then_writes_and_an_unchanged_one_touches_nothing() {
        let (plan, objects, nodes, fake, mut engine) = setup();
        let r = engine.sync_refs(&plan, &nodes, &objects).unwrap();
        assert!(r.changed());
        assert_eq!(r.nodes.len(), 2);
        for (_, ns) in &nodes {
            assert_eq!(fake.take_summaries(ns.name()), FIRST, "{}", ns.name());
        }
        let r = engine.sync_refs(&plan, &nodes, &objects).unwrap();
        assert!(!r.changed());
        assert_eq!(fake.calls(), []);
    }

    #[test]
    fn a_later_sync_writes_only_the_difference_without_reading() {
        let (plan, objects, nodes, fake, mut engine) = setup();
        engine.sync_refs(&plan, &nodes, &objects).unwrap();
        fake.take_calls();
        let (_, open) = fixtures::standard();
        let r = engine.sync_refs(&plan, &nodes, &open).unwrap();
        assert!(r.changed());
        let summaries: Vec<String> = fake.calls().iter().map(|c| c.summary()).collect();
        assert!(
            summaries
                .iter()
                .all(|s| s.starts_with("iptables-nft-restore") || s == "ipset restore"),
            "{summaries:?}"
        );
        assert!(
            summaries
                .iter()
                .any(|s| s == "iptables-nft-restore --noflush")
        );
        // The rules are written before the sets they no longer use are destroyed.
        let calls = fake.calls();
        let destroy = calls.iter().rposition(|c| c.summary() == "ipset restore");
        let rules = calls
            .iter()
            .position(|c| c.summary() == "iptables-nft-restore --noflush");
        if let (Some(d), Some(r)) = (destroy, rules) {
            assert!(r < d, "{summaries:?}");
        }
    }

    #[test]
    fn every_failing_node_is_reported_and_forgotten_the_others_kept() {
        let (plan, objects, nodes, fake, mut engine) = setup();
        let n2 = nodes[1].1.name().to_string();
        let failing = n2.clone();
        fake.fail_next(
            move |c| c.is_run(&failing, Tool::IptablesRestore),
            "iptables-restore: line 1 failed",
        );
        let err = engine.sync_refs(&plan, &nodes, &objects).unwrap_err();
        let PolicyError::Sync(errors) = &err else {
            panic!("not a sync error: {err}");
        };
        assert_eq!(errors.nodes().collect::<Vec<_>>(), ["n2"]);
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "policy sync failed:\n  node n2: `iptables-nft-restore --noflush` failed in \
                 namespace {n2} (exit status: 1): iptables-restore: line 1 failed\n  line 1 \
                 of the script: "
            )),
            "{text}"
        );
        fake.take_calls();
        // n1 is known and unchanged: left alone; n2 was forgotten: read and written again.
        let r = engine.sync_refs(&plan, &nodes, &objects).unwrap();
        assert_eq!(fake.take_summaries(nodes[0].1.name()), Vec::<String>::new());
        assert_eq!(fake.take_summaries(&n2), FIRST);
        assert_eq!(
            r.nodes.iter().map(|n| n.changed).collect::<Vec<_>>(),
            [false, true]
        );
    }

    #[test]
    fn a_node_whose_bridge_skips_iptables_is_refused_unless_on_purpose() {
        let (plan, objects, nodes, fake, mut engine) = setup();
        let n1 = nodes[0].1.name().to_string();
        fake.set_sysctl_value(&n1, "net/bridge/bridge-nf-call-iptables", "0");
        let err = engine.sync_refs(&plan, &nodes, &objects).unwrap_err();
        assert!(
            err.to_string()
                .contains("net.bridge.bridge-nf-call-iptables is 0 in namespace"),
            "{err}"
        );
        fake.take_calls();
        let mut on_purpose =
            IptablesEngine::with_system(DenyStyle::Reject, fake.clone()).with_unfiltered_bridges();
        on_purpose.sync_refs(&plan, &nodes, &objects).unwrap();
        assert_eq!(fake.take_summaries(&n1), FIRST[1..]);
    }
}
