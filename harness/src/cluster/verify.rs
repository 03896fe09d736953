//! Pod readiness: after bring-up, every link, address, route and sysctl the cluster
//! needs is read back from the kernel and checked, before any probe runs. Anything
//! missing is an infrastructure fault, reported as such and never as a policy result.

use std::net::Ipv4Addr;

use futures::future::join_all;
use ipnet::Ipv4Net;
use sim::plan::{NodePlan, UNDERLAY};

use super::build::{FABRIC_BRIDGE, NODE_SYSCTLS, NODE_UPLINK};
use super::readback::NsState;
use super::{Cluster, PodHandle};
use crate::cni::conflist::BRIDGE;

/// The cluster is not what it should be. Lists every problem found, not just the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("infrastructure fault: {}", problems.join("; "))]
pub struct InfraFault {
    pub problems: Vec<String>,
}

impl Cluster {
    /// Reads every namespace of the cluster back and checks that the fabric, the nodes'
    /// underlay, `cni0`, the host-gw routes, the sysctls and each pod's `lo`, `eth0`,
    /// address and default route are all there.
    pub async fn verify(&self) -> Result<(), InfraFault> {
        let fabric = NsState::read(&self.fabric);
        let nodes = join_all(self.nodes.values().map(|n| NsState::read(&n.netns)));
        let pods = join_all(self.pods.values().map(|p| NsState::read(&p.netns)));
        let (fabric, nodes, pods) = futures::join!(fabric, nodes, pods);

        let mut problems = vec![];
        match fabric {
            Ok(s) => check_fabric(self, &s, &mut problems),
            Err(e) => problems.push(format!("fabric: {e:#}")),
        }
        for ((name, node), state) in self.nodes.iter().zip(nodes) {
            let mut p = vec![];
            match state {
                Ok(s) => {
                    let plan = self.plan.node(name).expect("node handles follow the plan");
                    check_node(self, plan, &s, &mut p);
                    for (key, want) in NODE_SYSCTLS {
                        match node.netns.sysctl(key) {
                            Ok(v) if v == want => {}
                            Ok(v) => p.push(format!("sysctl {key} is {v}, not {want}")),
                            Err(e) => p.push(format!("{e:#}")),
                        }
                    }
                }
                Err(e) => p.push(format!("{e:#}")),
            }
            problems.extend(p.into_iter().map(|x| format!("node {name}: {x}")));
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

fn check_fabric(c: &Cluster, s: &NsState, p: &mut Vec<String>) {
    link_up(s, "lo", None, "fabric", p);
    let Some(br) = s.link(FABRIC_BRIDGE) else {
        p.push(format!("fabric: no bridge {FABRIC_BRIDGE}"));
        return;
    };
    if !br.up {
        p.push(format!("fabric: {FABRIC_BRIDGE} is down"));
    }
    for n in &c.plan.nodes {
        link_up(s, &n.fabric_port, Some(FABRIC_BRIDGE), "fabric", p);
    }
}

fn check_node(c: &Cluster, node: &NodePlan, s: &NsState, p: &mut Vec<String>) {
    link_up(s, "lo", None, "", p);
    if let Some(l) = link_up(s, NODE_UPLINK, None, "", p)
        && l.mac.as_deref() != Some(&node.underlay_mac[..])
    {
        p.push(format!(
            "{NODE_UPLINK} has MAC {}, not {}",
            mac(l.mac.as_deref()),
            mac(Some(&node.underlay_mac))
        ));
    }
    want_addr(
        s,
        NODE_UPLINK,
        net(node.underlay_ip, UNDERLAY.prefix_len()),
        p,
    );
    for other in c.plan.nodes.iter().filter(|o| o.name != node.name) {
        if !s.has_route(other.pod_subnet, Some(other.underlay_ip), NODE_UPLINK) {
            p.push(format!(
                "no route {} via {} dev {NODE_UPLINK}",
                other.pod_subnet, other.underlay_ip
            ));
        }
    }
    // cni0 appears with the node's first pod.
    let pods: Vec<&PodHandle> = c.pods.values().filter(|h| h.node == node.name).collect();
    if pods.is_empty() {
        return;
    }
    if link_up(s, BRIDGE, None, "", p).is_some() {
        want_addr(
            s,
            BRIDGE,
            net(node.gateway, node.pod_subnet.prefix_len()),
            p,
        );
        if !s.has_route(node.pod_subnet, None, BRIDGE) {
            p.push(format!("no route {} dev {BRIDGE}", node.pod_subnet));
        }
    }
    for h in pods {
        for iface in h.cni_result.host_interfaces().filter(|i| i.name != BRIDGE) {
            link_up(s, &iface.name, Some(BRIDGE), "", p);
        }
    }
}

fn check_pod(c: &Cluster, h: &PodHandle, s: &NsState, p: &mut Vec<String>) {
    link_up(s, "lo", None, "", p);
    want_addr(s, "lo", net(Ipv4Addr::LOCALHOST, 8), p);
    link_up(s, "eth0", None, "", p);
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
