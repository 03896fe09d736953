//! The world outside the cluster: a router on the underlay (`.1`, like a data-centre
//! gateway) and the external hosts behind it, each in a namespace of its own. A host has
//! only its address, as a /32 on its `eth0`, and a default route to the link-local next
//! hop [`ROUTER_HOST_GATEWAY`], which every router port towards a host carries (the way
//! Calico wires its workloads): so hosts need no subnets and may sit at any address a
//! lesson wants (`172.17.0.5` inside an ipBlock, `172.17.1.10` in its `except`). The
//! router routes each host's /32 out of that host's port, and every node's pod subnet via
//! the node; the nodes route each host's /32 via the router (see [`super::build`]). No
//! NAT anywhere: a host sees a pod's own address, and a pod sees the host's.
//!
//! Like a data-centre gateway in front of a cluster (MetalLB in BGP mode, a cloud's
//! load balancer in "cluster" mode), the router also routes every Service's
//! load-balancer address and external IPs via **every** node: one /32 with a next hop
//! per node (ECMP). `fib_multipath_hash_policy = 1` hashes each flow's addresses
//! **and ports**, so two connections of one client may enter different nodes, as they
//! do behind a real gateway. [`sync_service_routes`] keeps these routes in line with
//! the Services after every step.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use futures::future::try_join_all;
use ipnet::Ipv4Net;
use sim::objects::ClusterObjects;
use sim::plan::{HostPlan, Plan, ROUTER_HOST_GATEWAY, RouterPlan};

use super::build::{NODE_SYSCTLS, NODE_UPLINK, underlay_up};
use crate::netns::Netns;

/// The router forwards, and answers with ICMP errors at once, like a node.
pub const ROUTER_SYSCTLS: [(&str, &str); 2] = NODE_SYSCTLS;
/// A host's own ICMP errors (port unreachable for a port it does not serve) must not be
/// rate-limited either (floors.md §4d).
pub const HOST_SYSCTLS: [(&str, &str); 1] = [("net/ipv4/icmp_ratemask", "0")];
/// A host's only interface (the router's port towards it is named in the plan).
pub const HOST_LINK: &str = NODE_UPLINK;
/// Hash flows over the ECMP next hops by addresses and ports (layer 4), not by
/// addresses alone: one client's connections then spread over the nodes.
pub const ROUTER_MULTIPATH_SYSCTL: (&str, &str) = ("net/ipv4/fib_multipath_hash_policy", "1");

/// Inside the router: sysctls, the underlay address, one veth per host (created here,
/// its peer born inside the host as `eth0`: one request each), the gateway address and
/// host route on each port, and routes to every node's pod subnet. Then each host, in
/// parallel. The router's `eth0` must already be on the fabric bridge.
pub(super) async fn build(
    plan: &Plan,
    router: &RouterPlan,
    ns: &Netns,
    hosts: &[(&HostPlan, &Netns)],
) -> Result<()> {
    configure_router(plan, router, ns, hosts)
        .await
        .with_context(|| format!("set up the router ({})", ns.name()))?;
    try_join_all(hosts.iter().map(|(host, hns)| async move {
        configure_host(host, hns)
            .await
            .with_context(|| format!("set up host {} ({})", host.name, hns.name()))
    }))
    .await?;
    Ok(())
}

async fn configure_router(
    plan: &Plan,
    router: &RouterPlan,
    ns: &Netns,
    hosts: &[(&HostPlan, &Netns)],
) -> Result<()> {
    for (key, value) in ROUTER_SYSCTLS.into_iter().chain([ROUTER_MULTIPATH_SYSCTL]) {
        crate::system::set_sysctl(ns, key, value)?;
    }
    let h = super::build::netlink_of(ns)?;
    let eth0 = underlay_up(&h, router.underlay_ip).await?;
    // rtnl serialises link creation: one request after the other is the floor.
    for (host, hns) in hosts {
        h.add_veth_with_peer_in(&host.router_port, None, hns, HOST_LINK, None)
            .await
            .with_context(|| format!("link host {} to the router", host.name))?;
        let port = h.index_by_name(&host.router_port).await?;
        h.add_address(&host.router_port, port, Ipv4Net::from(ROUTER_HOST_GATEWAY))
            .await?;
        h.add_link_scope_route(Ipv4Net::from(host.address), &host.router_port, port)
            .await?;
    }
    for node in &plan.nodes {
        h.add_gateway_route(node.pod_subnet, node.underlay_ip, NODE_UPLINK, eth0)
            .await
            .with_context(|| format!("route to node {}", node.name))?;
    }
    Ok(())
}

/// Inside a host: lo and eth0 up, its address as a /32, a link route to the router's
/// gateway address and the default route through it.
async fn configure_host(host: &HostPlan, ns: &Netns) -> Result<()> {
    for (key, value) in HOST_SYSCTLS {
        crate::system::set_sysctl(ns, key, value)?;
    }
    let h = super::build::netlink_of(ns)?;
    h.bring_up("lo").await?;
    let eth0 = h.bring_up(HOST_LINK).await?;
    h.add_address(HOST_LINK, eth0, Ipv4Net::from(host.address))
        .await?;
    h.add_link_scope_route(Ipv4Net::from(ROUTER_HOST_GATEWAY), HOST_LINK, eth0)
        .await?;
    h.add_onlink_route(Ipv4Net::default(), ROUTER_HOST_GATEWAY, eth0)
        .await
        .with_context(|| format!("the default route via {ROUTER_HOST_GATEWAY} dev {HOST_LINK}"))?;
    Ok(())
}

/// The addresses the router sends to the nodes for the Services: every load-balancer
/// address (`status.loadBalancer.ingress[].ip`) and external IP, sorted.
pub fn service_addresses(objects: &ClusterObjects) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = objects
        .services
        .values()
        .flat_map(|svc| {
            let mut ips = sim::services::load_balancer_ips(svc);
            ips.extend(sim::services::external_ips(svc));
            ips
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Brings the Service routes in line with `objects`: in the router, each address of
/// [`service_addresses`] as a /32 via every node (ECMP); in each node of `nodes`, the
/// same /32 via the router, as a real node's default route would send it (a node's own
/// connection needs a route before kube-proxy's OUTPUT DNAT can happen, and a
/// connection kube-proxy does not DNAT, such as `externalTrafficPolicy: Local` without a
/// local endpoint, must reach filter FORWARD to meet its DROP instead of failing the
/// route lookup). Routes are written with `replace`; the ones for addresses no Service
/// has any more are deleted. Returns how many addresses are routed and how many stale
/// routes were deleted.
pub async fn sync_service_routes(
    plan: &Plan,
    router: &Netns,
    nodes: &[&Netns],
    objects: &ClusterObjects,
) -> Result<(usize, usize)> {
    let wanted = service_addresses(objects);
    let hops: Vec<Ipv4Addr> = plan.nodes.iter().map(|n| n.underlay_ip).collect();
    let mut deleted = sync_routes(router, &wanted, &hops).await?;
    if let Some(r) = &plan.router {
        for node in nodes {
            deleted += sync_routes(node, &wanted, &[r.underlay_ip]).await?;
        }
    }
    Ok((wanted.len(), deleted))
}

/// In `ns`: every address of `wanted` as a /32 via `hops` (one next hop, or ECMP over
/// several) out of `eth0`, and none of its other Service routes (those the kernel shows
/// as `proto bgp`). Returns how many stale routes it deleted.
async fn sync_routes(ns: &Netns, wanted: &[Ipv4Addr], hops: &[Ipv4Addr]) -> Result<usize> {
    let h = super::build::netlink_of(ns)?;
    let eth0 = h.index_by_name(NODE_UPLINK).await?;
    let deleted = h.delete_service_routes_except(wanted).await?;
    for ip in wanted {
        h.replace_service_route(*ip, hops, eth0).await?;
    }
    Ok(deleted)
}
