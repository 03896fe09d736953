//! Service proxies: what turns Services into packet rewriting inside the node
//! namespaces, as kube-proxy does on a real node. A proxy is told the current objects on
//! every change and brings every node in line; what the rules are is decided in `sim`
//! (`sim::kube_proxy::model::input` gathers what a node's kube-proxy knows,
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

use anyhow::{Context, Result, bail};
use sim::objects::ClusterObjects;
use sim::plan::Plan;
use sim::scenario::ProxyKind;

use crate::cluster::NODE_UPLINK;
use crate::netns::Netns;
use crate::policy::run_in;

pub mod iptables;
pub mod ipvs;
pub mod nftables;
pub mod userspace;

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
    ) -> Result<ProxySyncReport>;

    /// What the proxy's rules in a node are now, read from the kernel and normalised
    /// (for iptables: the kube-proxy part of `iptables-save`, as
    /// `sim::kube_proxy::iptables::kube_proxy_view` prints it; for nftables:
    /// `nft list table ip kube-proxy`, as `sim::kube_proxy::nftables::normalise_listing`
    /// prints it).
    fn installed(&self, node: &Netns) -> Result<String>;
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
pub fn route_service_cidr(plan: &Plan, ns: &Netns) -> Result<()> {
    let cidr = plan.service_cidr.to_string();
    run_in(
        ns,
        "ip",
        &["route", "replace", &cidr, "dev", NODE_UPLINK],
        None,
    )
    .with_context(|| format!("route the service CIDR {cidr} in namespace {}", ns.name()))?;
    Ok(())
}

/// The sync every rule-writing proxy shares (iptables, nftables): compute the endpoints
/// once (every node's kube-proxy sees the same slices), render each node's rules with
/// `render`, bring the nodes in line in parallel with `apply` (given what the node got
/// last time, if it is known), and remember what each node now holds. A node whose apply
/// failed is forgotten, so the next sync starts it up again; every failure is reported.
pub(crate) fn sync_nodes<R: Send + Sync>(
    plan: &Plan,
    nodes: &[(String, Netns)],
    objects: &ClusterObjects,
    applied: &mut BTreeMap<String, R>,
    render: impl Fn(&str, sim::kube_proxy::model::ProxyInput) -> Result<R>,
    apply: impl Fn(&str, &Netns, &R, Option<&R>) -> Result<ProxyNodeSync> + Sync,
) -> Result<ProxySyncReport> {
    let start = Instant::now();
    let ports = sim::kube_proxy::model::service_ports(objects);
    let work = nodes
        .iter()
        .map(|(node, ns)| {
            let input = sim::kube_proxy::model::node_input(plan, node, ports.clone())
                .with_context(|| format!("the service proxy input of node {node}"))?;
            let rules = render(node, input)?;
            let before = applied.remove(ns.name());
            Ok((node, ns, rules, before))
        })
        .collect::<Result<Vec<_>>>()?;
    let rendered = start.elapsed();

    let results: Vec<Result<ProxyNodeSync>> =
        crate::parallel::each(&work, "a node's proxy sync", |(node, ns, rules, before)| {
            apply(node, ns, rules, before.as_ref())
        });

    let mut report = ProxySyncReport {
        render: rendered,
        ..ProxySyncReport::default()
    };
    let mut errors = Vec::new();
    for ((node, ns, rules, _), result) in work.into_iter().zip(results) {
        match result {
            Ok(done) => {
                applied.insert(ns.name().to_string(), rules);
                report.nodes.push(done);
            }
            Err(e) => errors.push(format!("node {node}: {e:#}")),
        }
    }
    report.elapsed = start.elapsed();
    if !errors.is_empty() {
        bail!("service proxy sync failed:\n  {}", errors.join("\n  "));
    }
    Ok(report)
}
