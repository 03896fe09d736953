//! Building the fabric and the nodes: the underlay bridge `br0` in the fabric namespace,
//! one veth per node created by a single rtnetlink request with its peer born inside the
//! node as `eth0` (moving a link between namespaces afterwards costs an RCU grace period,
//! ~16 ms), the node's underlay address and MAC, its sysctls, its CNI configuration, and
//! host-gw routes to every other node's pod subnet.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{Context, Result, bail};
use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};
use sim::plan::{NodePlan, Plan, STATE_ROOT, UNDERLAY, prefix_of};

use super::{Cluster, NodeHandle, RunGuard};
use crate::cni;
use crate::netns::{self, Netns, sweep};

/// The fabric's bridge.
pub const FABRIC_BRIDGE: &str = "br0";
/// The node's underlay interface.
pub const NODE_UPLINK: &str = "eth0";
/// Sysctls written in every node namespace. Forwarding makes the node a router for its
/// pods; `icmp_ratemask=0` stops the ICMP rate limiter from delaying REJECTed probes by
/// a second (floors.md §4d).
pub const NODE_SYSCTLS: [(&str, &str); 2] = [
    ("net/ipv4/ip_forward", "1"),
    ("net/ipv4/icmp_ratemask", "0"),
];

impl Cluster {
    /// Builds the fabric, the nodes and the host-gw routes, and records this process as
    /// the run's owner in `{state_dir}/pid`. On failure everything made is removed.
    pub async fn create(plan: Plan) -> Result<Cluster> {
        claim_prefix(&plan)?;
        // From here on the run's prefix is ours: a guard sweeps it on any early exit.
        let mut guard = RunGuard {
            prefix: plan.prefix.clone(),
            armed: true,
        };
        match build(&plan).await {
            Ok((fabric, nodes)) => {
                guard.armed = false;
                Ok(Cluster {
                    guard: RunGuard {
                        prefix: plan.prefix.clone(),
                        armed: true,
                    },
                    plan,
                    fabric,
                    nodes,
                    pods: BTreeMap::new(),
                })
            }
            Err(e) => {
                guard.armed = false;
                let prefix = plan.prefix.clone();
                let report = tokio::task::spawn_blocking(move || sweep::clean_prefix(&prefix))
                    .await
                    .unwrap_or_else(|j| sweep::CleanReport {
                        errors: vec![format!("cleanup task failed: {j}")],
                        ..Default::default()
                    });
                if report.is_ok() {
                    Err(e.context(format!("build cluster {}", plan.prefix)))
                } else {
                    Err(e.context(format!(
                        "build cluster {} (and cleaning up failed: {})",
                        plan.prefix,
                        report.errors.join("; ")
                    )))
                }
            }
        }
    }
}

/// Makes sure nothing of this prefix exists yet, then creates the state directory and
/// the owner file. Refuses (touching nothing) when the prefix is in use, so the cleanup
/// of a failed build can never remove another run's objects.
fn claim_prefix(plan: &Plan) -> Result<()> {
    if plan.nodes.is_empty() {
        bail!("a cluster needs at least one node");
    }
    if let Some(other) = netns::list()?
        .into_iter()
        .find(|n| prefix_of(n) == Some(plan.prefix.as_str()))
    {
        bail!(
            "run prefix {} is already in use (namespace {other} exists)",
            plan.prefix
        );
    }
    let dir = sweep::state_dir(&plan.prefix);
    if dir != Path::new(&plan.state_dir()) {
        bail!(
            "state directory mismatch: {} vs {}",
            dir.display(),
            plan.state_dir()
        );
    }
    // A concurrent sweep may remove an empty STATE_ROOT between the two calls: retry.
    let mut attempt = 0;
    loop {
        std::fs::create_dir_all(STATE_ROOT).with_context(|| format!("create {STATE_ROOT}"))?;
        match std::fs::create_dir(&dir) {
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempt < 3 => attempt += 1,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                bail!(
                    "run prefix {} is already in use ({} exists)",
                    plan.prefix,
                    dir.display()
                )
            }
            Err(e) => return Err(e).with_context(|| format!("create {}", dir.display())),
        }
    }
    sweep::write_owner(&dir)
}

async fn build(plan: &Plan) -> Result<(Netns, BTreeMap<String, NodeHandle>)> {
    let mut names = vec![plan.fabric_netns()];
    names.extend(plan.nodes.iter().map(|n| n.netns.clone()));
    let mut made = tokio::task::spawn_blocking(move || Netns::create_many(&names))
        .await
        .context("namespace creation task")??;
    let fabric = made.remove(0);
    let node_ns = made;

    let fh = fabric.netlink()?;
    set_up(&fh, "lo")
        .await
        .with_context(|| format!("bring up lo in {}", fabric.name()))?;
    fh.link()
        .add(LinkBridge::new(FABRIC_BRIDGE).up().build())
        .execute()
        .await
        .with_context(|| format!("create bridge {FABRIC_BRIDGE} in {}", fabric.name()))?;
    let br = index_of(&fh, FABRIC_BRIDGE)
        .await
        .with_context(|| format!("in {}", fabric.name()))?;
    // rtnl serialises link creation anyway, so one request after the other is the floor.
    for (node, ns) in plan.nodes.iter().zip(&node_ns) {
        add_uplink(&fh, br, node, ns).await.with_context(|| {
            format!(
                "link node {} to the fabric ({} <-> {}/{NODE_UPLINK})",
                node.name,
                node.fabric_port,
                ns.name()
            )
        })?;
    }

    let state_dir = Path::new(&plan.state_dir()).to_path_buf();
    let configured = futures::future::join_all(
        plan.nodes
            .iter()
            .zip(&node_ns)
            .map(|(node, ns)| configure_node(plan, node, ns, &state_dir)),
    )
    .await;
    let mut nodes = BTreeMap::new();
    for ((node, ns), r) in plan.nodes.iter().zip(node_ns).zip(configured) {
        let (networks, dirs) =
            r.with_context(|| format!("set up node {} ({})", node.name, ns.name()))?;
        nodes.insert(
            node.name.clone(),
            NodeHandle {
                netns: ns,
                networks,
                dirs,
            },
        );
    }
    Ok((fabric, nodes))
}

/// One request: the fabric port enslaved to `br0` and up, its peer born inside the node
/// as `eth0` with the planned MAC. The peer must be created down: `IFF_UP` on the peer
/// fails the whole request with ENOTCONN.
async fn add_uplink(fh: &Handle, br: u32, node: &NodePlan, ns: &Netns) -> Result<()> {
    let ns_file = File::open(ns.path()).with_context(|| format!("open {}", ns.path().display()))?;
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(NODE_UPLINK.to_string())
        .address(node.underlay_mac.to_vec())
        .setns_by_fd(ns_file.as_raw_fd())
        .build();
    let msg = LinkVeth::new(&node.fabric_port, NODE_UPLINK)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .controller(br)
        .up()
        .build();
    fh.link().add(msg).execute().await?;
    Ok(())
}

/// Inside the node: sysctls, lo and eth0 up, the underlay address, the host-gw routes,
/// and the CNI configuration files.
async fn configure_node(
    plan: &Plan,
    node: &NodePlan,
    ns: &Netns,
    state_dir: &Path,
) -> Result<(cni::NodeNetworks, cni::NodeDirs)> {
    for (key, value) in NODE_SYSCTLS {
        ns.set_sysctl(key, value)?;
    }
    let h = ns.netlink()?;
    set_up(&h, "lo").await.context("bring up lo")?;
    let eth0 = index_of(&h, NODE_UPLINK).await?;
    h.link()
        .set(LinkUnspec::new_with_index(eth0).up().build())
        .execute()
        .await
        .with_context(|| format!("bring up {NODE_UPLINK}"))?;
    h.address()
        .add(eth0, IpAddr::V4(node.underlay_ip), UNDERLAY.prefix_len())
        .execute()
        .await
        .with_context(|| {
            format!(
                "add {}/{} to {NODE_UPLINK}",
                node.underlay_ip,
                UNDERLAY.prefix_len()
            )
        })?;
    for other in plan.nodes.iter().filter(|o| o.name != node.name) {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(other.pod_subnet.network(), other.pod_subnet.prefix_len())
            .gateway(other.underlay_ip)
            .output_interface(eth0)
            .build();
        h.route().add(route).execute().await.with_context(|| {
            format!(
                "add route {} via {} dev {NODE_UPLINK}",
                other.pod_subnet, other.underlay_ip
            )
        })?;
    }
    let dirs = cni::NodeDirs::new(state_dir, &node.name);
    let networks = cni::conflist::write_node_configs(node, &dirs)?;
    Ok((networks, dirs))
}

async fn set_up(h: &Handle, name: &str) -> Result<()> {
    let i = index_of(h, name).await?;
    h.link()
        .set(LinkUnspec::new_with_index(i).up().build())
        .execute()
        .await
        .with_context(|| format!("bring up {name}"))
}

pub(super) async fn index_of(h: &Handle, name: &str) -> Result<u32> {
    h.link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
        .with_context(|| format!("look up link {name}"))?
        .map(|l| l.header.index)
        .with_context(|| format!("no link {name}"))
}
