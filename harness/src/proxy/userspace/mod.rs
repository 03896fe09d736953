//! The `userspace` proxy: kube-proxy's first mode (removed in v1.26), for the "why
//! iptables replaced it" lesson. kube-proxy itself carried every connection:
//! - per service port it listened on a port of its own on the node (here: a socket
//!   bound inside the node's namespace from a thread that entered it, served by tokio
//!   tasks of this process; no process per node);
//! - nat rules sent the cluster IP there: `KUBE-PORTALS-CONTAINER` (from PREROUTING,
//!   for pods: `REDIRECT --to-ports`) and `KUBE-PORTALS-HOST` (from OUTPUT, for the
//!   node itself: `DNAT` to the node's address and the proxy port);
//! - for each connection it picked a ready endpoint round-robin (`LoadBalancerRR`,
//!   keeping a client on its endpoint with `sessionAffinity: ClientIP`) and dialled it,
//!   trying the next endpoint when a dial failed, with timeouts 250 ms, 500 ms, 1 s and
//!   2 s (`EndpointDialTimeouts`, `TryConnectEndpoints`), then copied bytes both ways;
//! - UDP was relayed per client "session" (one socket towards the endpoint per client
//!   address), dropped after `--udp-timeout` (250 ms) without traffic.
//!
//! So a backend sees the **node's** address as the source (the proxy's own connection),
//! never the client's: NetworkPolicies that name client pods stop matching (the oracle
//! knows: `sim::oracle`'s userspace branch), and every byte crosses user space twice.
//! Proxy ports are taken in order from [`PROXY_PORT_BASE`] (kube-proxy's
//! `--proxy-port-range`; random by default there), so rules and snapshots are stable.
//! A port without endpoints has its socket closed, so connections are refused (kube-proxy
//! accepted them and closed them at once; a refusal is what a probe can measure).
//! SCTP ports get no proxy (kube-proxy's userspace mode had none either); NodePorts,
//! external and load-balancer IPs are not proxied by this lesson engine.
//!
//! Teardown: dropping the proxy aborts every listener task, and with it the connection
//! and session tasks it owns (each listener keeps them in a `JoinSet`), which closes
//! every socket it made in the nodes. A node whose sync failed is forgotten the same way
//! (its listeners closed) and started again at the next sync.
//!
//! One file per job: [`portals`] renders the nat rules and reads them back, [`relay`]
//! carries the connections; this file syncs the nodes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use sim::kube_proxy::model::service_ports;
use sim::objects::ClusterObjects;
use sim::plan::Plan;
use sim::protocol::Protocol;

use super::{
    ProxyError, ProxyNodeSync, ProxySyncReport, ServiceProxy, default_system, route_service_cidr,
};
use crate::system::fanout::{NodeWork, sync_each};
use crate::system::{NsRef, System, Tool};

pub mod portals;
mod relay;

pub use portals::{
    PORTALS_CONTAINER, PORTALS_HOST, PROXY_PORT_BASE, Portal, portal_restore, portal_view,
};
pub use relay::{DIAL_TIMEOUTS, UDP_SESSION_TIMEOUT};
use relay::{NodeState, sync_listeners};

/// kube-proxy's userspace mode.
pub struct UserspaceProxy {
    nodes: BTreeMap<String, NodeState>,
    system: Arc<dyn System>,
}

impl Default for UserspaceProxy {
    fn default() -> Self {
        Self::with_system(default_system())
    }
}

impl UserspaceProxy {
    pub fn new() -> Self {
        Self::default()
    }

    /// The proxy acting through `system` (the fake, in unit tests).
    pub fn with_system(system: Arc<dyn System>) -> Self {
        Self {
            nodes: BTreeMap::new(),
            system,
        }
    }
}

impl ServiceProxy for UserspaceProxy {
    fn name(&self) -> &'static str {
        "userspace"
    }

    fn sync_refs(
        &mut self,
        plan: &Plan,
        nodes: &[(String, NsRef)],
        objects: &ClusterObjects,
    ) -> Result<ProxySyncReport, ProxyError> {
        let start = Instant::now();
        let rt = tokio::runtime::Handle::try_current().map_err(|_| ProxyError::NoRuntime)?;
        let mut ports = service_ports(objects);
        ports.retain(|p| p.cluster_ip.is_some() && p.protocol != Protocol::Sctp);
        ports.sort_by(|a, b| {
            (&a.namespace, &a.name, &a.port_name, a.protocol).cmp(&(
                &b.namespace,
                &b.name,
                &b.port_name,
                b.protocol,
            ))
        });
        let work = nodes
            .iter()
            .map(|(node, ns)| {
                let np = plan
                    .node(node)
                    .ok_or_else(|| ProxyError::UnknownNode(node.clone()))?;
                Ok(NodeWork {
                    node: node.clone(),
                    ns: ns.clone(),
                    want: np.underlay_ip,
                })
            })
            .collect::<Result<Vec<_>, ProxyError>>()?;
        let render = start.elapsed();
        let system = &*self.system;
        let nodes = sync_each(
            work,
            &mut self.nodes,
            "a node's userspace proxy sync",
            |w, state| {
                let _runtime = rt.enter();
                let mut state = state.unwrap_or_default();
                let done = sync_node(system, plan, w, &mut state, &ports, &rt)?;
                Ok((done, state))
            },
        )
        .map_err(|errors| ProxyError::Sync {
            mode: "userspace proxy",
            errors,
        })?;
        Ok(ProxySyncReport {
            nodes,
            render,
            elapsed: start.elapsed(),
        })
    }

    fn installed_in(&self, node: &NsRef) -> Result<String, ProxyError> {
        let saved = self
            .system
            .run(node, Tool::IptablesSave, &["-t", "nat"], None)?;
        let mut text = portal_view(&saved);
        if let Some(state) = self.nodes.get(node.name()) {
            text.push_str(
                "# userspace proxy listeners (tasks of this process, sockets in the node)\n",
            );
            for l in state.listeners.values() {
                let b = l.balancer.lock().map_err(|_| ProxyError::Poisoned)?;
                let eps: Vec<String> = b.endpoints.iter().map(|e| e.to_string()).collect();
                let _ = writeln!(
                    text,
                    "{} 0.0.0.0:{} for {} {}:{} -> [{}] round-robin{}{}",
                    l.portal.protocol,
                    l.portal.proxy_port,
                    l.portal.service,
                    l.portal.cluster_ip,
                    l.portal.port,
                    eps.join(" "),
                    b.affinity
                        .map(|t| format!(", ClientIP affinity {}s", t.as_secs()))
                        .unwrap_or_default(),
                    if l.task.is_none() {
                        " (closed: no endpoints, connections are refused)"
                    } else {
                        ""
                    }
                );
            }
        }
        Ok(text)
    }
}

/// One node: its listeners brought in line, then on the first sync the service CIDR
/// route and the jumps (unless the node already has them), then the portals when they
/// changed.
fn sync_node(
    system: &dyn System,
    plan: &Plan,
    w: &NodeWork<Ipv4Addr>,
    state: &mut NodeState,
    ports: &[sim::kube_proxy::model::ServicePort],
    rt: &tokio::runtime::Handle,
) -> anyhow::Result<ProxyNodeSync> {
    let (node, ns) = (w.node.as_str(), &w.ns);
    let start = Instant::now();
    sync_listeners(state, node, ns, ports, rt)
        .with_context(|| format!("run the userspace proxy's listeners in node {node}"))?;
    let portals: Vec<Portal> = state.listeners.values().map(|l| l.portal.clone()).collect();
    let text = portal_restore(&portals, w.want);
    let first = state.rules.is_none();
    if first {
        route_service_cidr(system, plan, ns)?;
        let saved = system.run(ns, Tool::IptablesSave, &["-t", "nat"], None)?;
        if !portals::has_jumps(&saved) {
            system
                .run(
                    ns,
                    Tool::IptablesRestore,
                    &["--noflush"],
                    Some(&portals::jump_restore()),
                )
                .with_context(|| format!("insert the userspace proxy's jumps in node {node}"))?;
        }
    }
    if state.rules.as_deref() == Some(&text) {
        return Ok(ProxyNodeSync::unchanged(node, start));
    }
    system
        .run(ns, Tool::IptablesRestore, &["--noflush"], Some(&text))
        .with_context(|| format!("load the userspace proxy's portals into node {node}"))?;
    state.rules = Some(text.clone());
    Ok(ProxyNodeSync::written(
        node,
        first,
        text.len(),
        text.lines().count(),
        start,
    ))
}
