//! Nodes joining a running cluster (a step's `nodeJoin`), the way a new machine joins a
//! flannel cluster: the node is built exactly as [`Cluster::create`] builds the first
//! ones (its namespace, its underlay link on the fabric bridge, sysctls, underlay
//! address, its way to every other node's pod subnet, routes to the external hosts, its
//! CNI configuration), and then every node already running learns the way to it (the
//! host-gw route, or in vxlan mode the route, permanent ARP entry and FDB entry that
//! flanneld adds when it sees a new node's lease), and so does the router. Its name,
//! addresses, pod subnet and VTEP come from [`Plan::join_node`]: what it would have had
//! had the scenario listed it after the nodes before it. Its namespace carries the run's
//! prefix, so teardown and `cargo xtask clean` remove it like any other.
//!
//! [`Plan::join_node`]: sim::plan::Plan::join_node

use std::path::Path;

use anyhow::{Context, Result, bail};
use futures::future::try_join_all;
use sim::plan::{NodePlan, Plan};
use sim::scenario::NetworkMode;

use super::build::{
    BRIDGE_NF_CALL_IPTABLES, FABRIC_BRIDGE, NODE_UPLINK, configure_node, host_gw_route, netlink_of,
};
use super::{Cluster, NodeHandle, vxlan};
use crate::netns::{self, Netns};

impl Cluster {
    /// Adds node `name` to the running cluster (see the module documentation). Pods may
    /// be bound to it once this returns; the policy engine and the service proxy pick
    /// it up at their next sync, since they sync every node the cluster has. On failure
    /// the cluster is left as it was, except for the entries towards the new node that
    /// some running nodes may already hold (teardown removes everything anyway).
    pub async fn join_node(&mut self, name: &str) -> Result<()> {
        if self.nodes.contains_key(name) {
            bail!("node {name} is already part of the cluster");
        }
        let mut plan = self.plan.clone();
        let node = plan
            .join_node(name)
            .with_context(|| format!("plan node {name}"))?
            .clone();
        let ns_name = node.netns.clone();
        let ns = tokio::task::spawn_blocking(move || Netns::create_many(&[ns_name]))
            .await
            .context("namespace creation task")??
            .pop()
            .context("namespace creation returned nothing")?;
        match self.wire_joined(&plan, &node, &ns).await {
            Ok(handle) => {
                self.plan = plan;
                self.nodes.insert(node.name.clone(), handle);
                Ok(())
            }
            Err(e) => {
                let name = ns.name().to_string();
                drop(ns);
                // Its fabric port goes with it: a veth dies with its peer's namespace.
                match netns::delete(&name) {
                    Ok(()) => Err(e),
                    Err(d) => Err(e.context(format!("(and removing {name} failed: {d:#})"))),
                }
            }
        }
        .with_context(|| format!("join node {name} ({})", node.netns))
    }

    /// Builds the joining node `node` (planned in `plan`) in its namespace `ns` and
    /// leads the running nodes and the router to it.
    async fn wire_joined(&self, plan: &Plan, node: &NodePlan, ns: &Netns) -> Result<NodeHandle> {
        let fh = netlink_of(&self.fabric)?;
        let br = fh.index_by_name(FABRIC_BRIDGE).await?;
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
        // Sysctls a run may have changed on every node since create (cluster.brNetfilter)
        // follow the first node, so the new one behaves like the others.
        if let Some(first) = self.nodes.values().next()
            && let Ok(value) = crate::system::sysctl(&first.netns, BRIDGE_NF_CALL_IPTABLES)
        {
            crate::system::set_sysctl(ns, BRIDGE_NF_CALL_IPTABLES, &value)?;
        }
        let state_dir = Path::new(&plan.state_dir()).to_path_buf();
        let (networks, dirs) = configure_node(plan, node, ns, &state_dir, &self.plugin_dir)
            .await
            .with_context(|| format!("set up node {} ({})", node.name, ns.name()))?;
        try_join_all(self.nodes.iter().map(|(name, h)| async move {
            lead_to(plan, &h.netns, node)
                .await
                .with_context(|| format!("on node {name} ({})", h.netns.name()))
        }))
        .await?;
        if let Some(router) = &self.router {
            router_route(router, node)
                .await
                .with_context(|| format!("on the router ({})", router.name()))?;
        }
        Ok(NodeHandle {
            netns: ns.clone(),
            networks,
            dirs,
        })
    }
}

/// On a running node (namespace `ns`): the way to the joining node's pod subnet, as
/// [`super::build`] gave it the way to the nodes built with it.
async fn lead_to(plan: &Plan, ns: &Netns, joining: &NodePlan) -> Result<()> {
    let h = netlink_of(ns)?;
    match plan.network {
        NetworkMode::HostGw => {
            let eth0 = h.index_by_name(NODE_UPLINK).await?;
            host_gw_route(&h, joining, eth0).await
        }
        NetworkMode::Vxlan => {
            let dev = plan
                .vtep(joining)
                .context("every node has a VTEP in vxlan mode")?
                .device;
            let vx = h.index_by_name(&dev).await?;
            vxlan::add_remote(&h, plan, vx, &dev, joining).await
        }
    }
}

/// On the router: the joining node's pod subnet via its underlay address, as the
/// router reaches every node's pods in both network modes (see [`super::outside`]): the
/// same route a host-gw node has.
async fn router_route(router: &Netns, joining: &NodePlan) -> Result<()> {
    let h = netlink_of(router)?;
    let eth0 = h.index_by_name(NODE_UPLINK).await?;
    host_gw_route(&h, joining, eth0).await
}
