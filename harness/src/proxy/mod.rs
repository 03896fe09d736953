//! Service proxies: what turns Services into packet rewriting inside the node
//! namespaces, as kube-proxy does on a real node. A proxy is told the current objects on
//! every change and brings every node in line; what the rules are is decided in `sim`
//! (`sim::kube_proxy::model` gathers what a node's kube-proxy knows,
//! `sim::kube_proxy::iptables` renders it), so a proxy only applies text, remembers what
//! it applied, and reports how long it took and how much it wrote.
//!
//! One proxy per file: [`iptables`] (kube-proxy's iptables mode, the default),
//! [`nftables`] (kube-proxy's nftables mode, one `ip kube-proxy` table per node),
//! [`ipvs`] (kube-proxy's IPVS mode, with the scenario's choice when the kernel has
//! no IPVS) and [`userspace`] (the historical mode: a proxy port per service port).
//!
//! Living next to the NetworkPolicy engine (`crate::policy`): both write to the same
//! tables of the same node, so each owns chains with its own names (`KUBE-SVC-*`,
//! `KUBE-SERVICES`, ... here; `KUBE-ROUTER-*`, `KUBE-POD-FW-*`, `KUBE-NWPLCY-*` there),
//! never flushes a built-in chain (restores run with `--noflush` and never list a
//! built-in chain), and inserts its jumps from the built-in chains once. The run syncs
//! the proxy before the policy engine, so that the policy engine's jumps, inserted at
//! position 1 after kube-proxy's, come first in FORWARD, as kube-router keeps its jump
//! on top on a real node: a masqueraded (marked) hairpin connection must meet the
//! policies before kube-proxy's KUBE-FORWARD accepts marked packets.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sim::kube_proxy::model::ProxyInput;
use sim::objects::ClusterObjects;
use sim::plan::Plan;
use sim::scenario::ProxyKind;

use crate::cluster::NODE_UPLINK;
use crate::netns::Netns;
use crate::system::fanout::{NodeErrors, NodeWork, sync_each};
use crate::system::{NsRef, System, SystemError, ToolError, node_refs};

pub mod iptables;
pub mod ipvs;
pub mod nftables;
pub mod userspace;

/// Why a proxy sync, or reading what a node holds, failed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("node {0} is not in the plan")]
    UnknownNode(String),
    #[error("the service proxy input of node {node}")]
    Input {
        node: String,
        #[source]
        source: sim::kube_proxy::model::ProxyInputError,
    },
    /// `sim` refused to render a node's rules; the text says which and why.
    #[error("{0}")]
    Render(String),
    /// Some nodes could not be brought in line; the others were. `mode` is `service
    /// proxy` or `IPVS proxy`.
    #[error("{mode} sync failed:\n  {errors}")]
    Sync {
        mode: &'static str,
        errors: NodeErrors,
    },
    /// IPVS mode on a kernel without IPVS, and the scenario does not fall back.
    #[error("{message}{}", .detect_error.as_ref().map(|e| format!(" (asking the kernel failed: {e})")).unwrap_or_default())]
    IpvsMissing {
        message: String,
        detect_error: Option<String>,
    },
    /// The userspace proxy serves connections with tokio tasks.
    #[error("the userspace proxy serves connections with tokio: sync it inside a runtime")]
    NoRuntime,
    #[error("a proxy lock was poisoned")]
    Poisoned,
    #[error(transparent)]
    System(#[from] SystemError),
}

impl From<ToolError> for ProxyError {
    fn from(e: ToolError) -> Self {
        ProxyError::System(e.into())
    }
}

/// Runs Services in the nodes. Blocking: applying means running short-lived tools
/// inside each node namespace, nodes in parallel.
pub trait ServiceProxy: Send {
    /// `iptables`.
    fn name(&self) -> &'static str;

    /// Brings every node in `nodes` (name and namespace) in line with the Services and
    /// endpoints of `objects`. Call it after every change (Services, Endpoints, pods,
    /// labels, readiness); nodes whose rules did not change are not touched.
    fn sync(
        &mut self,
        plan: &Plan,
        nodes: &[(String, Netns)],
        objects: &ClusterObjects,
    ) -> Result<ProxySyncReport, ProxyError> {
        self.sync_refs(plan, &node_refs(nodes), objects)
    }

    /// [`Self::sync`] for nodes given by reference (what unit tests give with the fake).
    fn sync_refs(
        &mut self,
        plan: &Plan,
        nodes: &[(String, NsRef)],
        objects: &ClusterObjects,
    ) -> Result<ProxySyncReport, ProxyError>;

    /// What the proxy's rules in a node are now, read from the kernel and normalised
    /// (for iptables: the kube-proxy part of `iptables-save`, as
    /// `sim::kube_proxy::iptables::kube_proxy_view` prints it; for nftables:
    /// `nft list table ip kube-proxy`, as `sim::kube_proxy::nftables::normalise_listing`
    /// prints it).
    fn installed(&self, node: &Netns) -> Result<String, ProxyError> {
        self.installed_in(&NsRef::from(node))
    }

    /// [`Self::installed`] for a namespace given by reference.
    fn installed_in(&self, node: &NsRef) -> Result<String, ProxyError>;
}

/// The proxy a scenario asks for.
pub fn proxy_for(kind: ProxyKind) -> Box<dyn ServiceProxy> {
    match kind {
        ProxyKind::Iptables => Box::new(iptables::IptablesProxy::new()),
        ProxyKind::Ipvs(config) => Box::new(ipvs::IpvsProxy::new(config)),
        ProxyKind::Userspace => Box::new(userspace::UserspaceProxy::new()),
        ProxyKind::Nftables => Box::new(nftables::NftablesProxy::new()),
    }
}

/// What one sync did in one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyNodeSync {
    pub node: String,
    /// Whether anything was written to the node.
    pub changed: bool,
    /// A first sync (start-up: canaries, jumps, route, then every chain) rather than a
    /// partial one (only the top-level chains and the Services that changed).
    pub full: bool,
    /// Size of the restore text written (bytes and lines); 0 when nothing was written.
    pub restore_bytes: usize,
    pub restore_lines: usize,
    /// Wall time for this node: compare, write, wait for the tool.
    pub elapsed: Duration,
}

impl ProxyNodeSync {
    /// A node left alone: its rules did not change.
    pub fn unchanged(node: &str, start: Instant) -> Self {
        Self {
            node: node.to_string(),
            changed: false,
            full: false,
            restore_bytes: 0,
            restore_lines: 0,
            elapsed: start.elapsed(),
        }
    }

    /// A node that was written `bytes` and `lines` of rules.
    pub fn written(node: &str, full: bool, bytes: usize, lines: usize, start: Instant) -> Self {
        Self {
            node: node.to_string(),
            changed: true,
            full,
            restore_bytes: bytes,
            restore_lines: lines,
            elapsed: start.elapsed(),
        }
    }
}
/// What one sync did, per node (in the order the nodes were given).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxySyncReport {
    pub nodes: Vec<ProxyNodeSync>,
    /// Of `elapsed`: computing endpoints and rendering every node's rules.
    pub render: Duration,
    /// Wall time of the whole sync (nodes run in parallel).
    pub elapsed: Duration,
}

impl ProxySyncReport {
    /// Whether any node was written to.
    pub fn changed(&self) -> bool {
        self.nodes.iter().any(|n| n.changed)
    }
}

/// Routes the service CIDR out of the node's underlay link, as the node's default route
/// does on a real node.
///
/// Why a route at all: a real node has a default route, and its own connections to a
/// cluster IP (and a pod's connection to a cluster IP with no DNAT, which must reach
/// the FORWARD chain to be REJECTed) need one: for a locally made packet the kernel
/// routes before nat OUTPUT rewrites the destination, and without a route `connect`
/// fails with "network unreachable" before kube-proxy's rules see anything. knetlab's
/// nodes have no default route (nothing lies beyond the underlay), so the proxy adds the
/// narrowest route with the same effect: `SERVICE_CIDR dev eth0`, no gateway, so the
/// kernel picks the underlay address as source exactly as via a default route, and
/// kube-proxy's `! -s <podCIDR> -j KUBE-MARK-MASQ` then masquerades node traffic as on
/// a real node. A packet no rule DNATs is sent to nobody and dies there (no ARP answer),
/// where on a real node the gateway would drop it.
pub fn route_service_cidr(system: &dyn System, plan: &Plan, ns: &NsRef) -> Result<(), SystemError> {
    system.replace_link_route(ns, plan.service_cidr, NODE_UPLINK)
}

/// Every node's input and rendering, in the nodes' order: the endpoints are computed
/// once (every node's kube-proxy sees the same slices), then `render` makes each node's
/// rules from its input.
pub(crate) fn render_nodes<R>(
    plan: &Plan,
    nodes: &[(String, NsRef)],
    objects: &ClusterObjects,
    render: impl Fn(&str, ProxyInput) -> Result<R, ProxyError>,
) -> Result<Vec<NodeWork<R>>, ProxyError> {
    let ports = sim::kube_proxy::model::service_ports(objects);
    nodes
        .iter()
        .map(|(node, ns)| {
            let input = sim::kube_proxy::model::node_input(plan, node, ports.clone()).map_err(
                |source| ProxyError::Input {
                    node: node.clone(),
                    source,
                },
            )?;
            Ok(NodeWork {
                node: node.clone(),
                ns: ns.clone(),
                want: render(node, input)?,
            })
        })
        .collect()
}

/// Brings the rendered nodes in line in parallel with `apply` (given what the node got
/// last time, if it is known), and remembers what each node now holds in `applied`. A
/// node whose rendering equals what it got last time is not touched. A node whose apply
/// failed is forgotten, so the next sync starts it up again; every failure is reported.
pub(crate) fn apply_nodes<R: PartialEq + Clone + Send + Sync>(
    work: Vec<NodeWork<R>>,
    applied: &mut BTreeMap<String, R>,
    mode: &'static str,
    apply: impl Fn(&NodeWork<R>, Option<&R>) -> anyhow::Result<ProxyNodeSync> + Sync,
) -> Result<Vec<ProxyNodeSync>, ProxyError> {
    sync_each(work, applied, "a node's proxy sync", |w, before| {
        let start = Instant::now();
        let done = if before.as_ref() == Some(&w.want) {
            ProxyNodeSync::unchanged(&w.node, start)
        } else {
            apply(w, before.as_ref())?
        };
        Ok((done, w.want.clone()))
    })
    .map_err(|errors| ProxyError::Sync { mode, errors })
}

/// The sync every rule-writing proxy shares (iptables, nftables): [`render_nodes`],
/// then [`apply_nodes`], timed.
pub(crate) fn sync_nodes<R: PartialEq + Clone + Send + Sync>(
    plan: &Plan,
    nodes: &[(String, NsRef)],
    objects: &ClusterObjects,
    applied: &mut BTreeMap<String, R>,
    render: impl Fn(&str, ProxyInput) -> Result<R, ProxyError>,
    apply: impl Fn(&NodeWork<R>, Option<&R>) -> anyhow::Result<ProxyNodeSync> + Sync,
) -> Result<ProxySyncReport, ProxyError> {
    let start = Instant::now();
    let work = render_nodes(plan, nodes, objects, render)?;
    let render = start.elapsed();
    let nodes = apply_nodes(work, applied, "service proxy", apply)?;
    Ok(ProxySyncReport {
        nodes,
        render,
        elapsed: start.elapsed(),
    })
}

/// The system the proxies use unless told otherwise: the real kernel.
pub(crate) fn default_system() -> std::sync::Arc<dyn System> {
    crate::system::real()
}

#[cfg(test)]
mod tests;
