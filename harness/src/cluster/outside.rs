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

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context, Result};
use futures::TryStreamExt;
use futures::future::try_join_all;
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteNextHop, RouteProtocol, RouteScope,
};
use sim::objects::ClusterObjects;
use sim::plan::{HostPlan, Plan, ROUTER_HOST_GATEWAY, RouterPlan};

use super::build::{NODE_SYSCTLS, NODE_UPLINK, add_veth_into, index_of, set_up, underlay_up};
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
/// The routing protocol the router's Service routes carry (`proto bgp`, as a gateway
/// that learnt them from MetalLB's BGP speakers would show them), so a sync finds its
/// own routes, and only those, again: every other route here is `proto static`.
const SERVICE_ROUTE_PROTOCOL: RouteProtocol = RouteProtocol::Bgp;

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
    let h = ns.netlink()?;
    let eth0 = underlay_up(&h, router.underlay_ip).await?;
    // rtnl serialises link creation: one request after the other is the floor.
    for (host, hns) in hosts {
        add_veth_into(&h, &host.router_port, None, hns, None)
            .await
            .with_context(|| {
                format!(
                    "link host {} to the router ({} <-> {}/{HOST_LINK})",
                    host.name,
                    host.router_port,
                    hns.name()
                )
            })?;
        let port = index_of(&h, &host.router_port).await?;
        h.address()
            .add(port, IpAddr::V4(ROUTER_HOST_GATEWAY), 32)
            .execute()
            .await
            .with_context(|| format!("add {ROUTER_HOST_GATEWAY}/32 to {}", host.router_port))?;
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(host.address, 32)
            .output_interface(port)
            .scope(RouteScope::Link)
            .build();
        h.route()
            .add(route)
            .execute()
            .await
            .with_context(|| format!("add route {}/32 dev {}", host.address, host.router_port))?;
    }
    for node in &plan.nodes {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(node.pod_subnet.network(), node.pod_subnet.prefix_len())
            .gateway(node.underlay_ip)
            .output_interface(eth0)
            .build();
        h.route().add(route).execute().await.with_context(|| {
            format!(
                "add route {} via {} dev {NODE_UPLINK} (node {})",
                node.pod_subnet, node.underlay_ip, node.name
            )
        })?;
    }
    Ok(())
}

/// Inside a host: lo and eth0 up, its address as a /32, a link route to the router's
/// gateway address and the default route through it.
async fn configure_host(host: &HostPlan, ns: &Netns) -> Result<()> {
    for (key, value) in HOST_SYSCTLS {
        crate::system::set_sysctl(ns, key, value)?;
    }
    let h = ns.netlink()?;
    set_up(&h, "lo").await?;
    let eth0 = set_up(&h, HOST_LINK).await?;
    h.address()
        .add(eth0, IpAddr::V4(host.address), 32)
        .execute()
        .await
        .with_context(|| format!("add {}/32 to {HOST_LINK}", host.address))?;
    let gw = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(ROUTER_HOST_GATEWAY, 32)
        .output_interface(eth0)
        .scope(RouteScope::Link)
        .build();
    h.route()
        .add(gw)
        .execute()
        .await
        .with_context(|| format!("add route {ROUTER_HOST_GATEWAY}/32 dev {HOST_LINK}"))?;
    let default = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
        .gateway(ROUTER_HOST_GATEWAY)
        .output_interface(eth0)
        .onlink()
        .build();
    h.route().add(default).execute().await.with_context(|| {
        format!("add route default via {ROUTER_HOST_GATEWAY} dev {HOST_LINK} onlink")
    })?;
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
/// several) out of `eth0`, and none of its other Service routes. Returns how many
/// stale routes it deleted.
async fn sync_routes(ns: &Netns, wanted: &[Ipv4Addr], hops: &[Ipv4Addr]) -> Result<usize> {
    let h = ns.netlink()?;
    let eth0 = index_of(&h, NODE_UPLINK)
        .await
        .with_context(|| format!("find {NODE_UPLINK} in {}", ns.name()))?;
    let mut stale = Vec::new();
    let mut dump = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    while let Some(route) = dump
        .try_next()
        .await
        .with_context(|| format!("list the routes of {}", ns.name()))?
    {
        if route.header.protocol != SERVICE_ROUTE_PROTOCOL
            || route.header.destination_prefix_length != 32
        {
            continue;
        }
        let dst = route.attributes.iter().find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
            _ => None,
        });
        if dst.is_some_and(|ip| !wanted.contains(&ip)) {
            stale.push(route);
        }
    }
    let deleted = stale.len();
    for route in stale {
        h.route()
            .del(route)
            .execute()
            .await
            .with_context(|| format!("delete a stale Service route in {}", ns.name()))?;
    }
    let next_hops: Vec<RouteNextHop> = hops
        .iter()
        .map(|ip| {
            let mut hop = RouteNextHop::default();
            hop.interface_index = eth0;
            hop.attributes = vec![RouteAttribute::Gateway(RouteAddress::Inet(*ip))];
            hop
        })
        .collect();
    for ip in wanted {
        let builder = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(*ip, 32)
            .protocol(SERVICE_ROUTE_PROTOCOL);
        let route = match hops {
            [one] => builder.gateway(*one).output_interface(eth0).build(),
            _ => builder.multipath(next_hops.clone()).build(),
        };
        h.route()
            .add(route)
            .replace()
            .execute()
            .await
            .with_context(|| {
                format!(
                    "route {ip}/32 via {} in {}",
                    hops.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    ns.name()
                )
            })?;
    }
    Ok(deleted)
}
