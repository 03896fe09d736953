//! The flannel-style VXLAN overlay (`cluster.network: vxlan`): in every node a VXLAN
//! device (`vxlan.1`, VNI 1, UDP 4789, the node's underlay address as the outer source,
//! learning off) with a fixed MAC and MTU 1450, the network address of the node's pod
//! subnet as a /32 on it, and for every other node three static entries, exactly what
//! flanneld's vxlan backend programs:
//! - a route `REMOTE_SUBNET via REMOTE_NET_ADDR dev vxlan.1 onlink` (the next hop is the
//!   remote VTEP's address, reachable only "on link" since no subnet covers it),
//! - a permanent ARP entry `REMOTE_NET_ADDR lladdr REMOTE_VTEP_MAC` (no ARP over the
//!   tunnel),
//! - an FDB entry `REMOTE_VTEP_MAC dst REMOTE_UNDERLAY_IP self permanent` (which node to
//!   send that MAC's frames to, as UDP).
//!
//! So a pod's packet to a remote pod leaves the node as UDP 4789 between the underlay
//! addresses, with the original frame inside. Also reads all of it back for
//! [`super::Cluster::verify`] and [`super::Cluster::describe`].

use std::fmt::Write;
use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use ipnet::Ipv4Net;
use sim::plan::{NodePlan, Plan, VtepPlan};

use super::build::NODE_UPLINK;
use super::readback::NsState;
use crate::netns::Netns;
use crate::system::netlink::{Netlink, NewVxlan};

/// Creates the node's VTEP and the route, ARP and FDB entries for every other node.
/// `eth0` is the index of the node's (already up) underlay link.
pub(super) async fn configure(h: &Netlink, plan: &Plan, node: &NodePlan, eth0: u32) -> Result<()> {
    let vtep = plan
        .vtep(node)
        .context("the plan has no VXLAN endpoint for this node (not in vxlan mode)")?;
    let dev = &vtep.device;
    // One request: device, MAC, MTU and up together (the underlay link is up already).
    h.add_vxlan(&NewVxlan {
        name: dev,
        vni: vtep.vni,
        underlay: eth0,
        local: vtep.local,
        port: vtep.port,
        mac: &vtep.mac,
        mtu: vtep.mtu,
    })
    .await
    .with_context(|| format!("through {NODE_UPLINK}"))?;
    let vx = h.index_by_name(dev).await?;
    h.add_address(dev, vx, Ipv4Net::from(vtep.address)).await?;
    for other in plan.nodes.iter().filter(|o| o.name != node.name) {
        add_remote(h, plan, vx, dev, other).await?;
    }
    Ok(())
}

/// The three entries that lead this node's VTEP (`dev`, index `vx`) to `other`'s: the
/// route to its pod subnet, the permanent ARP entry and the FDB entry.
pub(super) async fn add_remote(
    nl: &Netlink,
    plan: &Plan,
    vx: u32,
    dev: &str,
    other: &NodePlan,
) -> Result<()> {
    let remote = plan
        .vtep(other)
        .context("every node has a VTEP in vxlan mode")?;
    nl.add_onlink_route(other.pod_subnet, remote.address, vx)
        .await
        .with_context(|| {
            format!(
                "add route {} via {} dev {dev} onlink (node {})",
                other.pod_subnet, remote.address, other.name
            )
        })?;
    nl.add_neighbour(vx, remote.address, &remote.mac)
        .await
        .with_context(|| {
            format!(
                "add neighbour {} lladdr {} dev {dev} nud permanent (node {})",
                remote.address,
                mac(&remote.mac),
                other.name
            )
        })?;
    nl.add_fdb(vx, &remote.mac, remote.local)
        .await
        .with_context(|| {
            format!(
                "add fdb {} dev {dev} dst {} self permanent (node {})",
                mac(&remote.mac),
                remote.local,
                other.name
            )
        })?;
    Ok(())
}

/// A VXLAN device as the kernel has it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct VtepState {
    pub name: String,
    pub up: bool,
    pub mac: Option<Vec<u8>>,
    pub mtu: Option<u32>,
    pub vni: Option<u32>,
    pub port: Option<u16>,
    pub local: Option<Ipv4Addr>,
    /// The underlay link the device sends through.
    pub link: Option<u32>,
    pub learning: Option<bool>,
    /// Permanent IPv4 neighbours on the device: (address, MAC), sorted.
    pub neighbours: Vec<(Ipv4Addr, Vec<u8>)>,
    /// The device's own FDB entries: (MAC, remote underlay address, permanent), sorted.
    pub fdb: Vec<(Vec<u8>, Option<Ipv4Addr>, bool)>,
}

/// Reads a node's VTEP back in vxlan mode; `None` (without reading) in host-gw mode.
pub(super) async fn read_node(plan: &Plan, node: &str, ns: &Netns) -> Result<Option<VtepState>> {
    let Some(want) = plan.node(node).and_then(|n| plan.vtep(n)) else {
        return Ok(None);
    };
    let h = Netlink::from_handle(ns.netlink()?, ns.name());
    read(&h, &want.device).await
}

/// Reads the VXLAN device called `dev` with its neighbours and FDB, or `None` if the
/// namespace has no such device.
pub(super) async fn read(h: &Netlink, dev: &str) -> Result<Option<VtepState>> {
    let Some(link) = h.vxlan(dev).await? else {
        return Ok(None);
    };
    let mut neighbours = h
        .permanent_neighbours(link.index)
        .await
        .with_context(|| format!("read the neighbours of {dev}"))?;
    neighbours.sort();
    let mut fdb: Vec<_> = h
        .own_fdb(link.index)
        .await
        .with_context(|| format!("read the FDB of {dev}"))?
        .into_iter()
        .map(|e| (e.mac, e.dst, e.permanent))
        .collect();
    fdb.sort();
    Ok(Some(VtepState {
        name: dev.to_string(),
        up: link.up,
        mac: link.mac,
        mtu: link.mtu,
        vni: link.vni,
        port: link.port,
        local: link.local,
        link: link.link,
        learning: link.learning,
        neighbours,
        fdb,
    }))
}

/// Checks a node's VTEP, its address and its entries for every other node against the
/// plan. `ns` is the node's links, addresses and routes.
pub(super) fn check(
    plan: &Plan,
    node: &NodePlan,
    want: &VtepPlan,
    got: Option<&VtepState>,
    ns: &NsState,
    p: &mut Vec<String>,
) {
    let dev = &want.device;
    let Some(got) = got else {
        p.push(format!("no VXLAN device {dev}"));
        return;
    };
    if !got.up {
        p.push(format!("{dev} is down"));
    }
    let mut field = |what: &str, got: String, want: String| {
        if got != want {
            p.push(format!("{dev} has {what} {got}, not {want}"));
        }
    };
    let opt = |v: Option<String>| v.unwrap_or_else(|| "none".into());
    field(
        "VNI",
        opt(got.vni.map(|v| v.to_string())),
        want.vni.to_string(),
    );
    field(
        "port",
        opt(got.port.map(|v| v.to_string())),
        want.port.to_string(),
    );
    field(
        "local",
        opt(got.local.map(|v| v.to_string())),
        want.local.to_string(),
    );
    field(
        "MTU",
        opt(got.mtu.map(|v| v.to_string())),
        want.mtu.to_string(),
    );
    field("MAC", opt(got.mac.as_deref().map(mac)), mac(&want.mac));
    field(
        "learning",
        opt(got.learning.map(|v| v.to_string())),
        "false".into(),
    );
    let uplink = ns.link(NODE_UPLINK).map(|l| l.index);
    if got.link.is_none() || got.link != uplink {
        p.push(format!("{dev} does not send through {NODE_UPLINK}"));
    }
    let addr = Ipv4Net::new(want.address, 32).expect("/32 is a valid prefix");
    if !ns.addrs_of(dev).contains(&addr) {
        p.push(format!("{dev} lacks address {addr}"));
    }
    for other in plan.nodes.iter().filter(|o| o.name != node.name) {
        let Some(remote) = plan.vtep(other) else {
            continue;
        };
        if !ns.has_route(other.pod_subnet, Some(remote.address), dev) {
            p.push(format!(
                "no route {} via {} dev {dev} (node {})",
                other.pod_subnet, remote.address, other.name
            ));
        }
        if !got
            .neighbours
            .iter()
            .any(|(ip, m)| *ip == remote.address && m[..] == remote.mac[..])
        {
            p.push(format!(
                "no permanent neighbour {} lladdr {} on {dev} (node {})",
                remote.address,
                mac(&remote.mac),
                other.name
            ));
        }
        if !got
            .fdb
            .iter()
            .any(|(m, dst, perm)| m[..] == remote.mac[..] && *dst == Some(remote.local) && *perm)
        {
            p.push(format!(
                "no FDB entry {} dst {} self permanent on {dev} (node {})",
                mac(&remote.mac),
                remote.local,
                other.name
            ));
        }
    }
}

/// The VTEP as `ip -d link`, `ip neigh` and `bridge fdb` would show it (sorted, no
/// indexes), for snapshots.
pub(super) fn describe(s: &VtepState, out: &mut String) -> std::fmt::Result {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "?".into());
    writeln!(
        out,
        "  {} vxlan id {} local {} dstport {}{} mtu {} mac {}",
        s.name,
        opt(s.vni.map(|v| v.to_string())),
        opt(s.local.map(|v| v.to_string())),
        opt(s.port.map(|v| v.to_string())),
        if s.learning == Some(false) {
            " nolearning"
        } else {
            ""
        },
        opt(s.mtu.map(|v| v.to_string())),
        opt(s.mac.as_deref().map(mac)),
    )?;
    for (ip, m) in &s.neighbours {
        writeln!(
            out,
            "  neigh {ip} lladdr {} dev {} PERMANENT",
            mac(m),
            s.name
        )?;
    }
    for (m, dst, perm) in &s.fdb {
        writeln!(
            out,
            "  fdb {} dev {}{} self{}",
            mac(m),
            s.name,
            dst.map(|d| format!(" dst {d}")).unwrap_or_default(),
            if *perm { " permanent" } else { "" }
        )?;
    }
    Ok(())
}

pub(super) fn mac(m: &[u8]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
