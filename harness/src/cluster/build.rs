//! Building the fabric and the nodes: the underlay bridge `br0` in the fabric namespace,
//! one veth per node created by a single netlink request with its peer born inside the
//! node as `eth0` (moving a link between namespaces afterwards costs an RCU grace period,
//! ~16 ms), the node's underlay address and MAC, its sysctls, its CNI configuration,
//! the way to every other node's pod subnet (host-gw routes via the node's underlay
//! address, or the VXLAN overlay of [`super::vxlan`], as the plan's network mode says),
//! and routes to the external hosts via the router. The router and the hosts themselves
//! are built in [`super::outside`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result, bail};
use ipnet::Ipv4Net;
use sim::plan::{NodePlan, Plan, UNDERLAY, prefix_of};
use sim::scenario::NetworkMode;

use super::{Cluster, HostHandle, NodeHandle, RunGuard, outside, vxlan};
use crate::cni;
use crate::netns::{self, Netns};
use crate::sweep;
use crate::system::netlink::Netlink;

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

/// The sysctl `cluster.brNetfilter` governs: whether a bridge hands the IPv4 frames it
/// switches to iptables (br_netfilter). 1 in every new namespace on this kernel.
pub const BRIDGE_NF_CALL_IPTABLES: &str = "net/bridge/bridge-nf-call-iptables";

impl Cluster {
    /// `cluster.brNetfilter`: sets `net.bridge.bridge-nf-call-iptables` in every node
    /// namespace (call it right after [`Cluster::create`], before any pod exists).
    /// Only ever in the node namespaces: br_netfilter's sysctls exist in a namespace
    /// other than the root one only where the kernel keeps them per namespace (this
    /// kernel does: reference/this-machine.md §4), so a node namespace without the file
    /// means the lesson cannot run here, and it is refused, the root namespace untouched.
    /// Each value is read back, and so is the root namespace's (which must not move).
    pub fn set_br_netfilter(&self, on: bool) -> Result<()> {
        let value = if on { "1" } else { "0" };
        let root_path = format!("/proc/sys/{BRIDGE_NF_CALL_IPTABLES}");
        // Read (never written) to prove the setting stayed in the node namespaces.
        let root_before = std::fs::read_to_string(&root_path).ok();
        for (name, node) in &self.nodes {
            let ns = &node.netns;
            if crate::system::sysctl(ns, BRIDGE_NF_CALL_IPTABLES).is_err() {
                bail!(
                    "cluster.brNetfilter: {} does not exist in node {name}'s namespace {}: this kernel keeps br_netfilter's sysctls only in the root namespace (or has no br_netfilter), and knetlab never writes the root namespace's sysctls, so bridge-nf-call-iptables cannot be set per node here",
                    root_path,
                    ns.name()
                );
            }
            crate::system::set_sysctl(ns, BRIDGE_NF_CALL_IPTABLES, value)?;
            let now = crate::system::sysctl(ns, BRIDGE_NF_CALL_IPTABLES)?;
            if now != value {
                bail!(
                    "node {name} ({}): {BRIDGE_NF_CALL_IPTABLES} reads {now} after writing {value}",
                    ns.name()
                );
            }
        }
        let root_after = std::fs::read_to_string(&root_path).ok();
        if root_before != root_after {
            bail!(
                "writing {BRIDGE_NF_CALL_IPTABLES} in the node namespaces changed the root namespace's value ({:?} -> {:?}): the kernel does not keep it per namespace",
                root_before.as_deref().map(str::trim),
                root_after.as_deref().map(str::trim)
            );
        }
        Ok(())
    }

    /// Builds the fabric, the nodes and the host-gw routes, and (when the plan has
    /// external hosts) the router and the hosts, and records this process as the run's
    /// owner in `{state_dir}/pid`. On failure everything made is removed.
    pub async fn create(plan: Plan) -> Result<Cluster> {
        Cluster::create_with_plugins(plan, Path::new(crate::cni::CNI_PATH)).await
    }

    /// [`Cluster::create`] with the CNI plugin binaries taken from `plugin_dir` instead
    /// of the installed ones (the fault tests run a private copy they can break).
    pub async fn create_with_plugins(plan: Plan, plugin_dir: &Path) -> Result<Cluster> {
        claim_prefix(&plan)?;
        // From here on the run's prefix is ours: a guard sweeps it on any early exit.
        let mut guard = RunGuard {
            prefix: plan.prefix.clone(),
            armed: true,
        };
        match build(&plan, plugin_dir).await {
            Ok(built) => {
                guard.armed = false;
                Ok(Cluster {
                    guard: RunGuard {
                        prefix: plan.prefix.clone(),
                        armed: true,
                    },
                    plan,
                    fabric: built.fabric,
                    nodes: built.nodes,
                    router: built.router,
                    hosts: built.hosts,
                    pods: BTreeMap::new(),
                    plugin_dir: plugin_dir.to_path_buf(),
                })
            }
            Err(e) => {
                guard.armed = false;
                let prefix = plan.prefix.clone();
                let report = tokio::task::spawn_blocking(move || sweep::clean_prefix(&prefix))
                    .await
                    .unwrap_or_else(|j| sweep::CleanReport {
                        errors: vec![sweep::SweepError::Task(j.to_string())],
                        ..Default::default()
                    });
                if report.is_ok() {
                    Err(e.context(format!("build cluster {}", plan.prefix)))
                } else {
                    Err(e.context(format!(
                        "build cluster {} (and cleaning up failed: {})",
                        plan.prefix,
                        report.errors_text()
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
    if !plan.hosts.is_empty() && plan.router.is_none() {
        bail!("the plan has external hosts but no router in front of them");
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
    sweep::create_state_dir(&plan.prefix)?;
    sweep::write_owner(&dir)
}

/// What [`build`] made.
struct Built {
    fabric: Netns,
    nodes: BTreeMap<String, NodeHandle>,
    router: Option<Netns>,
    hosts: BTreeMap<String, HostHandle>,
}

async fn build(plan: &Plan, plugin_dir: &Path) -> Result<Built> {
    // One batch for every namespace: fabric, nodes, then router and hosts.
    let mut names = vec![plan.fabric_netns()];
    names.extend(plan.nodes.iter().map(|n| n.netns.clone()));
    names.extend(plan.router.iter().map(|r| r.netns.clone()));
    names.extend(plan.hosts.iter().map(|h| h.netns.clone()));
    let mut made = tokio::task::spawn_blocking(move || Netns::create_many(&names))
        .await
        .context("namespace creation task")??
        .into_iter();
    let mut next = || made.next().context("namespace creation returned too few");
    let fabric = next()?;
    let node_ns = plan
        .nodes
        .iter()
        .map(|_| next())
        .collect::<Result<Vec<_>>>()?;
    let router_ns = plan.router.as_ref().map(|_| next()).transpose()?;
    let host_ns = plan
        .hosts
        .iter()
        .map(|_| next())
        .collect::<Result<Vec<_>>>()?;

    let fh = Netlink::from_handle(fabric.netlink()?, fabric.name());
    fh.bring_up("lo").await?;
    fh.add_bridge(FABRIC_BRIDGE).await?;
    let br = fh.index_by_name(FABRIC_BRIDGE).await?;
    // rtnl serialises link creation anyway, so one request after the other is the floor.
    for (node, ns) in plan.nodes.iter().zip(&node_ns) {
        fh.add_veth_with_peer_in(
            &node.fabric_port,
            Some(br),
            ns,
            NODE_UPLINK,
            Some(node.underlay_mac),
        )
        .await
        .with_context(|| {
            format!(
                "link node {} to the fabric ({} <-> {}/{NODE_UPLINK})",
                node.name,
                node.fabric_port,
                ns.name()
            )
        })?;
    }
    if let (Some(router), Some(ns)) = (&plan.router, &router_ns) {
        fh.add_veth_with_peer_in(
            &router.fabric_port,
            Some(br),
            ns,
            NODE_UPLINK,
            Some(router.underlay_mac),
        )
        .await
        .with_context(|| {
            format!(
                "link the router to the fabric ({} <-> {}/{NODE_UPLINK})",
                router.fabric_port,
                ns.name()
            )
        })?;
    }

    let state_dir = Path::new(&plan.state_dir()).to_path_buf();
    let nodes_done = futures::future::join_all(
        plan.nodes
            .iter()
            .zip(&node_ns)
            .map(|(node, ns)| configure_node(plan, node, ns, &state_dir, plugin_dir)),
    );
    let outside_done = async {
        match (&plan.router, &router_ns) {
            (Some(router), Some(ns)) => {
                let hosts: Vec<_> = plan.hosts.iter().zip(&host_ns).collect();
                outside::build(plan, router, ns, &hosts).await
            }
            _ => Ok(()),
        }
    };
    let (configured, outside_done) = futures::join!(nodes_done, outside_done);
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
    outside_done.context("set up the router and the external hosts")?;
    let hosts = plan
        .hosts
        .iter()
        .zip(host_ns)
        .map(|(h, netns)| {
            (
                h.name.clone(),
                HostHandle {
                    netns,
                    address: h.address,
                },
            )
        })
        .collect();
    Ok(Built {
        fabric,
        nodes,
        router: router_ns,
        hosts,
    })
}

/// [`Netlink::add_veth_with_peer_in`] with the peer named `eth0`, for callers that hold
/// a bare handle of [`Netns::netlink`] (their context names the namespace).
pub(super) async fn add_veth_into(
    h: impl Into<Netlink>,
    local: &str,
    controller: Option<u32>,
    peer_ns: &Netns,
    peer_mac: Option<[u8; 6]>,
) -> Result<()> {
    Ok(h.into()
        .add_veth_with_peer_in(local, controller, peer_ns, NODE_UPLINK, peer_mac)
        .await?)
}

/// Inside the node: sysctls, lo and eth0 up, the underlay address, the host-gw routes
/// or the VXLAN overlay, the routes to the external hosts via the router, and the CNI
/// configuration files.
pub(super) async fn configure_node(
    plan: &Plan,
    node: &NodePlan,
    ns: &Netns,
    state_dir: &Path,
    plugin_dir: &Path,
) -> Result<(cni::NodeNetworks, cni::NodeDirs)> {
    for (key, value) in NODE_SYSCTLS {
        crate::system::set_sysctl(ns, key, value)?;
    }
    let h = Netlink::from_handle(ns.netlink()?, ns.name());
    let eth0 = underlay_up(&h, node.underlay_ip).await?;
    match plan.network {
        NetworkMode::HostGw => host_gw_routes(&h, plan, node, eth0).await?,
        NetworkMode::Vxlan => vxlan::configure(&h, plan, node, eth0).await?,
    }
    // Pods reach the hosts, and the hosts reach the pods, with no NAT on the way. The
    // router reaches every pod subnet via the node's underlay address in both modes, so
    // host traffic never enters the tunnel.
    if let Some(router) = &plan.router {
        for host in &plan.hosts {
            h.add_gateway_route(
                Ipv4Net::from(host.address),
                router.underlay_ip,
                NODE_UPLINK,
                eth0,
            )
            .await
            .with_context(|| format!("route to host {}", host.name))?;
        }
    }
    let dirs = cni::NodeDirs::new(state_dir, &node.name);
    let networks =
        cni::conflist::write_node_configs(&plan.cni, node, &dirs, plan.pod_mtu(), plugin_dir)?;
    Ok((networks, dirs))
}

/// host-gw: each other node's pod subnet via that node's underlay address.
async fn host_gw_routes(h: &Netlink, plan: &Plan, node: &NodePlan, eth0: u32) -> Result<()> {
    for other in plan.nodes.iter().filter(|o| o.name != node.name) {
        h.add_gateway_route(other.pod_subnet, other.underlay_ip, NODE_UPLINK, eth0)
            .await?;
    }
    Ok(())
}

/// host-gw: the route to `other`'s pod subnet via its underlay address (`eth0`: the
/// index of this node's underlay link), for callers that hold a bare handle of
/// [`Netns::netlink`] (their context names the namespace).
pub(super) async fn host_gw_route(
    h: impl Into<Netlink>,
    other: &NodePlan,
    eth0: u32,
) -> Result<()> {
    Ok(h.into()
        .add_gateway_route(other.pod_subnet, other.underlay_ip, NODE_UPLINK, eth0)
        .await?)
}

/// Brings up `lo` and the underlay `eth0` and gives `eth0` its underlay address.
/// Returns `eth0`'s index.
pub(super) async fn underlay_up(h: &Netlink, ip: Ipv4Addr) -> Result<u32> {
    h.bring_up("lo").await?;
    let eth0 = h.bring_up(NODE_UPLINK).await?;
    let addr = Ipv4Net::new(ip, UNDERLAY.prefix_len()).context("the underlay's prefix")?;
    h.add_address(NODE_UPLINK, eth0, addr).await?;
    Ok(eth0)
}

/// The index of the link called `name`, for callers that hold a bare handle of
/// [`Netns::netlink`] (their context names the namespace).
pub(super) async fn index_of(h: impl Into<Netlink>, name: &str) -> Result<u32> {
    Ok(h.into().index_by_name(name).await?)
}
