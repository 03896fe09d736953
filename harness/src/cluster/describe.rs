//! A normalised description of what was built, read back from the kernel (so it proves
//! the build rather than repeating the plan): per node its underlay address, pod subnet,
//! `cni0` address and routes, and in vxlan mode its VXLAN device (VNI, port, local
//! address, MTU, MAC) with its permanent neighbours and FDB entries and the pods' MTU
//! (the bridge's); the router's addresses and routes and each external host's
//! (when there are any); per pod its node, address and default route. It leaves
//! out everything that changes between runs (the run prefix, pids, MACs the plugin
//! picked, interface indexes and veth names), so snapshots are stable.

use anyhow::Result;
use futures::future::try_join_all;
use std::fmt::Write;

use super::Cluster;
use super::build::{FABRIC_BRIDGE, NODE_UPLINK};
use super::outside::HOST_LINK;
use super::readback::NsState;
use super::vxlan;

impl Cluster {
    pub async fn describe(&self) -> Result<String> {
        let fabric = NsState::read(&self.fabric);
        let nodes = try_join_all(self.nodes.values().map(|n| NsState::read(&n.netns)));
        let vteps = try_join_all(
            self.nodes
                .iter()
                .map(|(name, n)| vxlan::read_node(&self.plan, name, &n.netns)),
        );
        let router = async {
            match &self.router {
                Some(ns) => NsState::read(ns).await.map(Some),
                None => Ok(None),
            }
        };
        let hosts = try_join_all(self.hosts.values().map(|h| NsState::read(&h.netns)));
        let pods = super::readback::read_many(self.pods.values().map(|p| &p.netns));
        let (fabric, nodes, vteps, router, hosts, pods) =
            futures::join!(fabric, nodes, vteps, router, hosts, pods);
        let (fabric, nodes, vteps, router, hosts) = (fabric?, nodes?, vteps?, router?, hosts?);

        let mut out = String::new();
        let list = |v: Vec<String>| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(" ")
            }
        };
        let addrs =
            |s: &NsState, dev: &str| list(s.addrs_of(dev).iter().map(|a| a.to_string()).collect());
        let ports = fabric
            .ports_of(FABRIC_BRIDGE)
            .into_iter()
            .map(str::to_string)
            .collect();
        writeln!(out, "fabric {FABRIC_BRIDGE} ports: {}", list(ports))?;
        for ((name, s), vtep) in self.nodes.keys().zip(&nodes).zip(&vteps) {
            writeln!(out, "node {name}")?;
            writeln!(out, "  {NODE_UPLINK} {}", addrs(s, NODE_UPLINK))?;
            let bridge = self.nodes[name].networks.bridge.as_str();
            // The pod subnet as the kernel has it: the network of cni0's address.
            let subnets: Vec<String> = s
                .addrs_of(bridge)
                .iter()
                .map(|a| a.trunc().to_string())
                .collect();
            writeln!(out, "  pod subnet {}", list(subnets))?;
            writeln!(
                out,
                "  {bridge} {} ({} ports)",
                addrs(s, bridge),
                s.ports_of(bridge).len()
            )?;
            for r in s.route_lines() {
                writeln!(out, "  route {r}")?;
            }
            if let Some(v) = vtep {
                vxlan::describe(v, &mut out)?;
                // The bridge plugin gives the bridge and every pod veth the same MTU.
                if let Some(mtu) = s.link(bridge).and_then(|l| l.mtu) {
                    writeln!(out, "  {bridge} mtu {mtu} (the pods' MTU)")?;
                }
            }
        }
        if let Some(s) = &router {
            writeln!(out, "router")?;
            writeln!(out, "  {NODE_UPLINK} {}", addrs(s, NODE_UPLINK))?;
            // Router ports are named in the plan (h1, h2, ... in declaration order).
            for host in &self.plan.hosts {
                writeln!(
                    out,
                    "  {} {} (host {})",
                    host.router_port,
                    addrs(s, &host.router_port),
                    host.name
                )?;
            }
            for r in s.route_lines() {
                writeln!(out, "  route {r}")?;
            }
        }
        for (name, s) in self.hosts.keys().zip(&hosts) {
            writeln!(out, "host {name}")?;
            writeln!(out, "  {HOST_LINK} {}", addrs(s, HOST_LINK))?;
            writeln!(out, "  lo {}", addrs(s, "lo"))?;
            for r in s.route_lines() {
                writeln!(out, "  route {r}")?;
            }
        }
        for ((pod, h), s) in self.pods.iter().zip(pods) {
            let s = s?;
            writeln!(out, "pod {pod}")?;
            writeln!(out, "  node {}", h.node)?;
            writeln!(out, "  eth0 {}", addrs(&s, "eth0"))?;
            writeln!(out, "  lo {}", addrs(&s, "lo"))?;
            for r in s
                .route_lines()
                .into_iter()
                .filter(|r| r.starts_with("default"))
            {
                writeln!(out, "  route {r}")?;
            }
        }
        Ok(out)
    }
}
