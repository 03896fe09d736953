//! A normalised description of what was built, read back from the kernel (so it proves
//! the build rather than repeating the plan): per node its underlay address, pod subnet,
//! `cni0` address and routes; the router's addresses and routes and each external host's
//! (when there are any); per pod its node, address and default route. It leaves
//! out everything that changes between runs (the run prefix, pids, MACs the plugin
//! picked, interface indexes and veth names), so snapshots are stable.

use anyhow::Result;
use futures::future::{join_all, try_join_all};
use std::fmt::Write;

use super::Cluster;
use super::build::{FABRIC_BRIDGE, NODE_UPLINK};
use super::outside::HOST_LINK;
use super::readback::NsState;
use crate::cni::conflist::BRIDGE;

impl Cluster {
    pub async fn describe(&self) -> Result<String> {
        let fabric = NsState::read(&self.fabric);
        let nodes = try_join_all(self.nodes.values().map(|n| NsState::read(&n.netns)));
        let router = async {
            match &self.router {
                Some(ns) => NsState::read(ns).await.map(Some),
                None => Ok(None),
            }
        };
        let hosts = try_join_all(self.hosts.values().map(|h| NsState::read(&h.netns)));
        let pods = join_all(self.pods.values().map(|p| NsState::read(&p.netns)));
        let (fabric, nodes, router, hosts, pods) =
            futures::join!(fabric, nodes, router, hosts, pods);
        let (fabric, nodes, router, hosts) = (fabric?, nodes?, router?, hosts?);

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
        for (name, s) in self.nodes.keys().zip(&nodes) {
            writeln!(out, "node {name}")?;
            writeln!(out, "  {NODE_UPLINK} {}", addrs(s, NODE_UPLINK))?;
            // The pod subnet as the kernel has it: the network of cni0's address.
            let subnets: Vec<String> = s
                .addrs_of(BRIDGE)
                .iter()
                .map(|a| a.trunc().to_string())
                .collect();
            writeln!(out, "  pod subnet {}", list(subnets))?;
            writeln!(
                out,
                "  {BRIDGE} {} ({} ports)",
                addrs(s, BRIDGE),
                s.ports_of(BRIDGE).len()
            )?;
            for r in s.route_lines() {
                writeln!(out, "  route {r}")?;
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
