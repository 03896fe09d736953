//! NetworkPolicy engines: what enforces the cluster's policies inside the node
//! namespaces. An engine is told the current objects on every change and brings every
//! node in line; what the rules mean and look like is decided in `sim` (`sim::policy`,
//! `sim::render`), so an engine only applies text and reports how long it took.
//!
//! One engine per file: [`iptables`] (kube-router's layout with ipsets, the default) and
//! [`none`] (enforces nothing, like flannel or the plain bridge plugin). A new engine
//! (nftables, say) is a new file and a line in [`engine_for`].

use std::sync::Arc;
use std::time::Duration;

use sim::objects::ClusterObjects;
use sim::plan::Plan;
use sim::render::{RenderContext, Ruleset};
use sim::scenario::{DenyStyle, PolicyEngineKind};

use crate::netns::Netns;
use crate::system::fanout::{NodeErrors, each_node};
use crate::system::{NsRef, System, SystemError, Tool, node_refs};

pub mod iptables;
pub mod none;

/// The binary of `iptables-restore` the engines use (see [`Tool`]); for callers outside
/// the engines that load rules of their own (benchmarks).
pub const IPTABLES_RESTORE: &str = Tool::IptablesRestore.binary();

/// Runs a program in a namespace (see [`crate::system::exec::run_in`]); kept here for
/// the callers that run programs of their own.
pub use crate::system::exec::run_in;

/// Why a policy sync, or reading what a node holds, failed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("node {0} is not in the cluster plan")]
    UnknownNode(String),
    /// Some nodes could not be brought in line; the others were.
    #[error("policy sync failed:\n  {0}")]
    Sync(NodeErrors),
    /// Bridged traffic in the node does not go through iptables (see
    /// [`check_bridge_netfilter`]).
    #[error(
        "net.bridge.bridge-nf-call-iptables is {value} in namespace {ns}: bridged \
         same-node pod traffic would bypass every NetworkPolicy rule; it must be 1 \
         (the default in a new namespace)"
    )]
    BridgeUnfiltered { ns: String, value: String },
    #[error("read {key} in namespace {ns} (is br_netfilter in the kernel?)")]
    BridgeUnknown {
        ns: String,
        key: String,
        #[source]
        source: Box<SystemError>,
    },
    #[error(transparent)]
    System(#[from] SystemError),
}

impl From<crate::system::ToolError> for PolicyError {
    fn from(e: crate::system::ToolError) -> Self {
        PolicyError::System(e.into())
    }
}

/// Enforces NetworkPolicy in the nodes. Blocking: applying means running a few
/// short-lived tools inside each node namespace, nodes in parallel.
pub trait PolicyEngine: Send {
    /// `iptables`, `none`.
    fn name(&self) -> &'static str;

    /// Brings every node in `nodes` (name and namespace) in line with `objects`. `plan`
    /// gives the cluster's CIDRs and each node's underlay address. Call it after every
    /// change (policies, pods, labels); nodes whose rules did not change are not touched.
    fn sync(
        &mut self,
        plan: &Plan,
        nodes: &[(String, Netns)],
        objects: &ClusterObjects,
    ) -> Result<SyncReport, PolicyError> {
        self.sync_refs(plan, &node_refs(nodes), objects)
    }

    /// [`Self::sync`] for nodes given by reference (what unit tests give with the fake).
    fn sync_refs(
        &mut self,
        plan: &Plan,
        nodes: &[(String, NsRef)],
        objects: &ClusterObjects,
    ) -> Result<SyncReport, PolicyError>;

    /// What the enforcer's rules in a node are now, read from the kernel and normalised
    /// (our chains from `iptables-save`, our sets from `ipset save`; counters, hash
    /// seeds and sizes stripped). Comparable with `sim::render::NodeRules::normalised`.
    fn installed(&self, node: &Netns) -> Result<String, PolicyError> {
        read_installed(node).map(|r| r.normalised())
    }
}

/// The engine a scenario asks for.
pub fn engine_for(kind: PolicyEngineKind, deny: DenyStyle) -> Box<dyn PolicyEngine> {
    match kind {
        PolicyEngineKind::Iptables => Box::new(iptables::IptablesEngine::new(deny)),
        PolicyEngineKind::None => Box::new(none::NoneEngine),
    }
}

/// The engine a scenario asks for (`cluster.policy`, `cluster.deny`), told whether the
/// scenario turns br_netfilter off on purpose (`cluster.brNetfilter: false`: then nodes
/// whose bridge does not call iptables are synced rather than refused).
pub fn engine_for_scenario(scenario: &sim::scenario::Scenario) -> Box<dyn PolicyEngine> {
    let c = &scenario.cluster;
    match (c.policy, scenario.br_netfilter) {
        (PolicyEngineKind::Iptables, false) => {
            Box::new(iptables::IptablesEngine::new(c.deny).with_unfiltered_bridges())
        }
        (kind, _) => engine_for(kind, c.deny),
    }
}

/// What one sync did in one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSync {
    pub node: String,
    /// Whether anything was written to the node.
    pub changed: bool,
    /// Wall time for this node: rendering compared, tools run.
    pub elapsed: Duration,
    /// Rules (hooks included) and sets the node holds for us afterwards.
    pub rules: usize,
    pub sets: usize,
}

/// What one sync did, per node (in the order the nodes were given).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub nodes: Vec<NodeSync>,
    /// Of `elapsed`, resolving the policies and rendering every node's rules.
    pub render: Duration,
    /// Wall time of the whole sync (nodes run in parallel).
    pub elapsed: Duration,
}

impl SyncReport {
    /// Whether any node was written to.
    pub fn changed(&self) -> bool {
        self.nodes.iter().any(|n| n.changed)
    }

    /// The slowest node's time.
    pub fn slowest(&self) -> Duration {
        self.nodes
            .iter()
            .map(|n| n.elapsed)
            .max()
            .unwrap_or_default()
    }
}

/// The render context of one node of `plan`.
pub fn render_context(
    plan: &Plan,
    node: &str,
    deny: DenyStyle,
) -> Result<RenderContext, PolicyError> {
    let Some(np) = plan.nodes.iter().find(|n| n.name == node) else {
        return Err(PolicyError::UnknownNode(node.to_string()));
    };
    Ok(RenderContext {
        pod_cidr: plan.pod_cidr,
        service_cidr: plan.service_cidr,
        deny,
        node_ip: np.underlay_ip,
    })
}

/// Reads the enforcer's state in a node from the kernel.
pub fn read_installed(node: &Netns) -> Result<Ruleset, PolicyError> {
    read_installed_in(&crate::system::Real, &NsRef::from(node))
}

/// Reads the enforcer's state in a node through `system`.
pub fn read_installed_in(system: &dyn System, ns: &NsRef) -> Result<Ruleset, PolicyError> {
    let ipt = system.run(ns, Tool::IptablesSave, &["-t", "filter"], None)?;
    let sets = system.run(ns, Tool::Ipset, &["save"], None)?;
    Ok(Ruleset::from_saved(&ipt, &sets))
}

/// Fails unless bridged traffic in the node goes through iptables: without
/// `net.bridge.bridge-nf-call-iptables=1`, same-node pod-to-pod traffic is switched by the
/// bridge without ever seeing a FORWARD rule, and every policy between two pods of one
/// node silently does nothing.
pub fn check_bridge_netfilter(system: &dyn System, ns: &NsRef) -> Result<(), PolicyError> {
    let key = "net/bridge/bridge-nf-call-iptables";
    let value = system
        .sysctl(ns, key)
        .map_err(|source| PolicyError::BridgeUnknown {
            ns: ns.name().to_string(),
            key: key.to_string(),
            source: Box::new(source),
        })?;
    if value != "1" {
        return Err(PolicyError::BridgeUnfiltered {
            ns: ns.name().to_string(),
            value,
        });
    }
    Ok(())
}

/// Forgets every tracked flow in the nodes (`conntrack -F` in each node namespace).
///
/// Why: enforcement is stateful, so a flow conntrack already knows passes as ESTABLISHED
/// whatever the new rules say, in a real cluster too. Probes are meant to be new
/// connections, but a UDP probe whose random source port repeats a flow an earlier step
/// allowed would ride on that entry (seen about once in a thousand probes). After rules
/// change, knetlab therefore starts every node from an empty flow table.
pub fn forget_flows(nodes: &[(String, Netns)]) -> anyhow::Result<()> {
    forget_flows_in(&crate::system::Real, &node_refs(nodes))?;
    Ok(())
}

/// [`forget_flows`] through `system`; every node is flushed, failures gathered.
pub fn forget_flows_in(system: &dyn System, nodes: &[(String, NsRef)]) -> Result<(), NodeErrors> {
    each_node(nodes, "a conntrack flush", |_, ns| {
        system
            .run(ns, Tool::Conntrack, &["-F"], None)
            .map_err(|e| anyhow::Error::new(e).context("flush the conntrack table"))?;
        Ok(())
    })
    .map(drop)
}

/// The system the engines use unless told otherwise: the real kernel.
pub(crate) fn default_system() -> Arc<dyn System> {
    crate::system::real()
}
