//! Pod readiness: after bring-up, every link, address, route and sysctl the cluster
//! needs (fabric, nodes, router, external hosts, pods) is read back from the kernel and
//! checked, with room in each node's conntrack table, before any probe runs (and again
//! after probes that disagreed with the oracle). Anything
//! missing is an infrastructure fault, reported as such and never as a policy result.
//! A node whose underlay link a step took down on purpose (`nodeDown`) is checked with
//! its fabric port down instead ([`Cluster::verify_with_down`]).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use futures::future::join_all;
use ipnet::Ipv4Net;
use sim::plan::{HostPlan, NodePlan, ROUTER_HOST_GATEWAY, RouterPlan, UNDERLAY};

use super::build::{FABRIC_BRIDGE, NODE_SYSCTLS, NODE_UPLINK};
use super::outside::{HOST_LINK, HOST_SYSCTLS, ROUTER_SYSCTLS};
use super::readback::NsState;
use super::vxlan::{self, VtepState};
use super::{Cluster, PodHandle};
use crate::netns::Netns;

/// The cluster is not what it should be. Lists every problem found, not just the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("infrastructure fault: {}", problems.join("; "))]
pub struct InfraFault {
    pub problems: Vec<String>,
}

impl Cluster {
    /// Reads every namespace of the cluster back and checks that the fabric, the nodes'
    /// underlay, `cni0`, the host-gw routes (or, in vxlan mode, each node's VXLAN device
    /// with its address, routes, permanent neighbours and FDB entries) and the routes to
    /// the external hosts, the
    /// router's links, addresses and routes, each host's address and routes, the
    /// sysctls, and each pod's `lo`, `eth0`, address and default route are all there,
    /// and that no node's conntrack table is full.
    pub async fn verify(&self) -> Result<(), InfraFault> {
        self.verify_with_down(&BTreeSet::new()).await
    }

    /// [`Cluster::verify`] while the nodes in `down` have their underlay link taken down
    /// on purpose ([`Cluster::set_node_underlay`]): their fabric port must be down, not
    /// up; everything else is checked as usual.
    pub async fn verify_with_down(&self, down: &BTreeSet<String>) -> Result<(), InfraFault> {
        let fabric = NsState::read(&self.fabric);
        let nodes = join_all(self.nodes.values().map(|n| NsState::read(&n.netns)));
        let vteps = join_all(
            self.nodes
                .iter()
                .map(|(name, n)| vxlan::read_node(&self.plan, name, &n.netns)),
        );
        let router = async {
            match &self.router {
                Some(ns) => Some(NsState::read(ns).await),
                None => None,
            }
        };
        let hosts = join_all(self.hosts.values().map(|h| NsState::read(&h.netns)));
        let pods = super::readback::read_many(self.pods.values().map(|p| &p.netns));
        let (fabric, nodes, vteps, router, hosts, pods) =
            futures::join!(fabric, nodes, vteps, router, hosts, pods);

        let mut problems = vec![];
        match fabric {
            Ok(s) => check_fabric(self, &s, down, &mut problems),
            Err(e) => problems.push(format!("fabric: {e:#}")),
        }
        for (((name, node), state), vtep) in self.nodes.iter().zip(nodes).zip(vteps) {
            let mut p = vec![];
            match (state, vtep) {
                (Ok(s), Ok(vtep)) => {
                    let plan = self.plan.node(name).expect("node handles follow the plan");
                    check_node(self, plan, &s, vtep.as_ref(), &mut p);
                    want_sysctls(&node.netns, &NODE_SYSCTLS, &mut p);
                    conntrack_room(&node.netns, &mut p);
                }
                (Err(e), _) | (_, Err(e)) => p.push(format!("{e:#}")),
            }
            problems.extend(p.into_iter().map(|x| format!("node {name}: {x}")));
        }
        if let (Some(ns), Some(plan), Some(state)) = (&self.router, &self.plan.router, router) {
            let mut p = vec![];
            match state {
                Ok(s) => {
                    check_router(self, plan, &s, &mut p);
                    want_sysctls(ns, &ROUTER_SYSCTLS, &mut p);
                }
                Err(e) => p.push(format!("{e:#}")),
            }
            problems.extend(p.into_iter().map(|x| format!("router: {x}")));
        }
        for ((name, host), state) in self.hosts.iter().zip(hosts) {
            let mut p = vec![];
            match state {
                Ok(s) => {
                    let plan = self.plan.host(name).expect("host handles follow the plan");
                    check_host(plan, &s, &mut p);
                    want_sysctls(&host.netns, &HOST_SYSCTLS, &mut p);
                }
                Err(e) => p.push(format!("{e:#}")),
            }
            problems.extend(p.into_iter().map(|x| format!("host {name}: {x}")));
        }
        for ((pod, handle), state) in self.pods.iter().zip(pods) {
            let mut p = vec![];
            match state {
                Ok(s) => check_pod(self, handle, &s, &mut p),
                Err(e) => p.push(format!("{e:#}")),
            }
            problems.extend(p.into_iter().map(|x| format!("pod {pod}: {x}")));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(InfraFault { problems })
        }
    }
}

fn check_fabric(c: &Cluster, s: &NsState, down: &BTreeSet<String>, p: &mut Vec<String>) {
    link_up(s, "lo", None, "fabric", p);
    let Some(br) = s.link(FABRIC_BRIDGE) else {
        p.push(format!("fabric: no bridge {FABRIC_BRIDGE}"));
        return;
    };
    if !br.up {
        p.push(format!("fabric: {FABRIC_BRIDGE} is down"));
    }
    for n in &c.plan.nodes {
        if !down.contains(&n.name) {
            link_up(s, &n.fabric_port, Some(FABRIC_BRIDGE), "fabric", p);
            continue;
        }
        // Taken down on purpose: it must still be there, on the bridge, and down.
        let mut found = vec![];
        if let Some(l) = link_up(s, &n.fabric_port, Some(FABRIC_BRIDGE), "fabric", &mut found)
            && l.up
        {
            p.push(format!(
                "fabric: {} is up, but node {}'s underlay link should be down",
                n.fabric_port, n.name
            ));
        }
        let expected = format!("fabric: {} is down", n.fabric_port);
        p.extend(found.into_iter().filter(|x| *x != expected));
    }
    if let Some(r) = &c.plan.router {
        link_up(s, &r.fabric_port, Some(FABRIC_BRIDGE), "fabric", p);
    }
}

/// Checks `eth0` with its planned MAC and underlay address (nodes and the router).
fn check_uplink(s: &NsState, ip: Ipv4Addr, want_mac: &[u8; 6], p: &mut Vec<String>) {
    if let Some(l) = link_up(s, NODE_UPLINK, None, "", p)
        && l.mac.as_deref() != Some(&want_mac[..])
    {
        p.push(format!(
            "{NODE_UPLINK} has MAC {}, not {}",
            mac(l.mac.as_deref()),
            mac(Some(want_mac))
        ));
    }
    want_addr(s, NODE_UPLINK, net(ip, UNDERLAY.prefix_len()), p);
}

fn check_router(c: &Cluster, router: &RouterPlan, s: &NsState, p: &mut Vec<String>) {
    link_up(s, "lo", None, "", p);
    check_uplink(s, router.underlay_ip, &router.underlay_mac, p);
    for host in &c.plan.hosts {
        if link_up(s, &host.router_port, None, "", p).is_some() {
            want_addr(s, &host.router_port, net(ROUTER_HOST_GATEWAY, 32), p);
            if !s.has_route(net(host.address, 32), None, &host.router_port) {
                p.push(format!(
                    "no route {}/32 dev {} (host {})",
                    host.address, host.router_port, host.name
                ));
            }
        }
    }
    for node in &c.plan.nodes {
        if !s.has_route(node.pod_subnet, Some(node.underlay_ip), NODE_UPLINK) {
            p.push(format!(
                "no route {} via {} dev {NODE_UPLINK} (node {})",
                node.pod_subnet, node.underlay_ip, node.name
            ));
        }
    }
}

fn check_host(host: &HostPlan, s: &NsState, p: &mut Vec<String>) {
    link_up(s, "lo", None, "", p);
    want_addr(s, "lo", net(Ipv4Addr::LOCALHOST, 8), p);
    if link_up(s, HOST_LINK, None, "", p).is_none() {
        return;
    }
    want_addr(s, HOST_LINK, net(host.address, 32), p);
    if !s.has_route(net(ROUTER_HOST_GATEWAY, 32), None, HOST_LINK) {
        p.push(format!("no route {ROUTER_HOST_GATEWAY}/32 dev {HOST_LINK}"));
    }
    if !s.has_route(Ipv4Net::default(), Some(ROUTER_HOST_GATEWAY), HOST_LINK) {
        p.push(format!(
            "no default route via {ROUTER_HOST_GATEWAY} dev {HOST_LINK}"
        ));
    }
}

fn want_sysctls(ns: &Netns, want: &[(&str, &str)], p: &mut Vec<String>) {
    for (key, want) in want {
        match crate::system::sysctl(ns, key) {
            Ok(v) if v == *want => {}
            Ok(v) => p.push(format!("sysctl {key} is {v}, not {want}")),
            Err(e) => p.push(format!("{:#}", anyhow::Error::new(e))),
        }
    }
}

/// A full conntrack table drops every new connection (the kernel logs "table full,
/// dropping packet"), which a probe would take for a policy's drop. The limit is the
/// host's (`nf_conntrack_max` cannot be written in a namespace on this kernel); the
/// count is the namespace's own.
fn conntrack_room(ns: &Netns, p: &mut Vec<String>) {
    let read = |key: &str| {
        crate::system::sysctl(ns, key)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    if let (Some(count), Some(max)) = (
        read("net/netfilter/nf_conntrack_count"),
        read("net/netfilter/nf_conntrack_max"),
    ) && max > 0
        && count >= max
    {
        p.push(format!(
            "conntrack table full ({count} of {max} entries): new connections are dropped"
        ));
    }
}

fn check_node(
    c: &Cluster,
    node: &NodePlan,
    s: &NsState,
    vtep: Option<&VtepState>,
    p: &mut Vec<String>,
) {
    link_up(s, "lo", None, "", p);
    check_uplink(s, node.underlay_ip, &node.underlay_mac, p);
    match c.plan.vtep(node) {
        Some(want) => vxlan::check(&c.plan, node, &want, vtep, s, p),
        None => {
            for other in c.plan.nodes.iter().filter(|o| o.name != node.name) {
                if !s.has_route(other.pod_subnet, Some(other.underlay_ip), NODE_UPLINK) {
                    p.push(format!(
                        "no route {} via {} dev {NODE_UPLINK}",
                        other.pod_subnet, other.underlay_ip
                    ));
                }
            }
        }
    }
    if let Some(router) = &c.plan.router {
        for host in &c.plan.hosts {
            if !s.has_route(net(host.address, 32), Some(router.underlay_ip), NODE_UPLINK) {
                p.push(format!(
                    "no route {}/32 via {} dev {NODE_UPLINK} (host {})",
                    host.address, router.underlay_ip, host.name
                ));
            }
        }
    }
    // cni0 appears with the node's first pod.
    let pods: Vec<&PodHandle> = c.pods.values().filter(|h| h.node == node.name).collect();
    if pods.is_empty() {
        return;
    }
    // The pod network's bridge (cni0 unless the scenario's CNI list names another).
    let bridge = c.nodes[&node.name].networks.bridge.as_str();
    if link_up(s, bridge, None, "", p).is_some() {
        want_addr(
            s,
            bridge,
            net(node.gateway, node.pod_subnet.prefix_len()),
            p,
        );
        if !s.has_route(node.pod_subnet, None, bridge) {
            p.push(format!("no route {} dev {bridge}", node.pod_subnet));
        }
    }
    for h in pods {
        // Not every host interface is a bridge port: bandwidth's ifb is not.
        for iface in h
            .cni_result
            .wiring_interfaces()
            .filter(|i| i.name != bridge)
        {
            link_up(s, &iface.name, Some(bridge), "", p);
        }
    }
}

fn check_pod(c: &Cluster, h: &PodHandle, s: &NsState, p: &mut Vec<String>) {
    link_up(s, "lo", None, "", p);
    want_addr(s, "lo", net(Ipv4Addr::LOCALHOST, 8), p);
    if let Some(eth0) = link_up(s, "eth0", None, "", p)
        && let (Some(max), Some(mtu)) = (c.plan.pod_mtu(), eth0.mtu)
        && mtu > max
    {
        p.push(format!(
            "eth0 has MTU {mtu}, more than the tunnel's {max}: big packets would not fit"
        ));
    }
    let node = c.plan.node(&h.node).expect("pods sit on planned nodes");
    want_addr(s, "eth0", net(h.ip, node.pod_subnet.prefix_len()), p);
    if !node.pod_subnet.contains(&h.ip) {
        p.push(format!(
            "address {} is outside node {}'s pod subnet {}",
            h.ip, node.name, node.pod_subnet
        ));
    }
    if h.gateway != node.gateway {
        p.push(format!(
            "gateway {} is not node {}'s cni0 address {}",
            h.gateway, node.name, node.gateway
        ));
    }
    if !s.has_route(Ipv4Net::default(), Some(h.gateway), "eth0") {
        p.push(format!("no default route via {} dev eth0", h.gateway));
    }
}

/// Checks that `name` exists, is up and (if asked) is a port of `controller`.
fn link_up<'a>(
    s: &'a NsState,
    name: &str,
    controller: Option<&str>,
    label: &str,
    p: &mut Vec<String>,
) -> Option<&'a super::readback::Link> {
    let label = if label.is_empty() {
        String::new()
    } else {
        format!("{label}: ")
    };
    let Some(l) = s.link(name) else {
        p.push(format!("{label}no link {name}"));
        return None;
    };
    if !l.up {
        p.push(format!("{label}{name} is down"));
    }
    if let Some(want) = controller {
        let got = l.controller.map(|i| s.link_name(i));
        if got != Some(want) {
            p.push(format!(
                "{label}{name} is not a port of {want} (controller {})",
                got.unwrap_or("none")
            ));
        }
    }
    Some(l)
}

fn want_addr(s: &NsState, dev: &str, want: Ipv4Net, p: &mut Vec<String>) {
    if s.link(dev).is_some() && !s.addrs_of(dev).contains(&want) {
        p.push(format!("{dev} lacks address {want}"));
    }
}

fn net(ip: Ipv4Addr, len: u8) -> Ipv4Net {
    Ipv4Net::new(ip, len).expect("prefix lengths come from valid networks")
}

fn mac(m: Option<&[u8]>) -> String {
    m.map_or_else(
        || "none".to_string(),
        |m| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        },
    )
}
