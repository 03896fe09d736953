//! The virtual cluster: a fabric namespace with the underlay bridge, one namespace per
//! node joined to it by a veth, host-gw routes or a VXLAN overlay (`vxlan.rs`) between
//! the nodes' pod subnets, and one
//! namespace per pod wired by the real CNI plugins. When the scenario declares hosts
//! outside the cluster, a router namespace sits on the underlay too, with each host in a
//! namespace of its own behind it (see `outside.rs`). Every name and address comes from
//! the [`Plan`]; nothing is ever created in the root network namespace.
//!
//! [`Cluster::create`] builds the fabric, nodes, router and hosts, [`Cluster::join_node`]
//! adds a node to the running cluster (`join.rs`), [`Cluster::add_pods`] and
//! [`Cluster::remove_pods`] run CNI ADD/DEL, [`Cluster::verify`] reads the kernel back
//! and lists everything missing, [`Cluster::describe`] renders what was built for
//! snapshots, and [`Cluster::teardown`] removes it all. A cluster that is dropped without
//! a teardown (a panic, an early return) is swept by its prefix.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use sim::objects::PodRef;
use sim::plan::Plan;

use crate::cni;
use crate::netns::Netns;
use crate::sweep;

mod build;
mod describe;
mod join;
mod link;
pub mod outside;
mod pods;
mod readback;
mod teardown;
mod verify;
mod vxlan;

pub use build::{FABRIC_BRIDGE, NODE_UPLINK};
pub use pods::{AddOptions, CheckSummary, NewPod, PodsAdded};
pub use teardown::{TeardownError, TeardownErrors, TeardownReport};
pub use verify::InfraFault;

/// A running virtual cluster.
#[derive(Debug)]
pub struct Cluster {
    plan: Plan,
    fabric: Netns,
    nodes: BTreeMap<String, NodeHandle>,
    /// The router's namespace, when the plan has external hosts.
    router: Option<Netns>,
    /// External hosts by name.
    hosts: BTreeMap<String, HostHandle>,
    pods: BTreeMap<PodRef, PodHandle>,
    guard: RunGuard,
    /// Where the CNI plugin binaries are (see [`Cluster::create_with_plugins`]).
    plugin_dir: PathBuf,
}

/// A node's namespace and its CNI setup.
#[derive(Debug, Clone)]
struct NodeHandle {
    netns: Netns,
    networks: cni::NodeNetworks,
    dirs: cni::NodeDirs,
}

/// An external host: its namespace and its address (a /32 on its `eth0`).
#[derive(Debug, Clone)]
struct HostHandle {
    netns: Netns,
    address: Ipv4Addr,
}

/// A pod that CNI wired.
#[derive(Debug, Clone)]
pub struct PodHandle {
    pub netns: Netns,
    pub node: String,
    /// The address of the pod's `eth0` (from the bridge plugin's result).
    pub ip: Ipv4Addr,
    /// The pod's default gateway (the node's `cni0`).
    pub gateway: Ipv4Addr,
    /// The `eth0` attachment's CNI result.
    pub cni_result: cni::CniResult,
    /// What the runtime passed the chain (runtimeConfig by capability), kept for CHECK
    /// and DEL as a runtime keeps it.
    pub capability_args: serde_json::Map<String, serde_json::Value>,
}

impl Cluster {
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn node_netns(&self, node: &str) -> Option<&Netns> {
        self.nodes.get(node).map(|n| &n.netns)
    }

    pub fn fabric_netns(&self) -> &Netns {
        &self.fabric
    }

    /// The router's namespace, if the cluster has external hosts.
    pub fn router_netns(&self) -> Option<&Netns> {
        self.router.as_ref()
    }

    /// An external host's namespace and address.
    pub fn host(&self, name: &str) -> Option<(Netns, Ipv4Addr)> {
        self.hosts.get(name).map(|h| (h.netns.clone(), h.address))
    }

    pub fn pod(&self, pod: &PodRef) -> Option<&PodHandle> {
        self.pods.get(pod)
    }

    /// Pods sorted by namespace and name.
    pub fn pods(&self) -> impl Iterator<Item = (&PodRef, &PodHandle)> {
        self.pods.iter()
    }

    /// The run's state directory (CNI configs, IPAM state, result cache, owner pid).
    pub fn state_dir(&self) -> PathBuf {
        PathBuf::from(self.plan.state_dir())
    }

    /// The directory holding a node's CNI configuration files (`net.d`).
    pub fn cni_conf_dir(&self, node: &str) -> Option<PathBuf> {
        self.nodes.get(node).map(|n| n.dirs.conf.clone())
    }

    /// Leaves the cluster running (`--keep`): nothing is removed when the value goes.
    /// `cargo xtask clean` or [`sweep::clean_prefix`] removes it later.
    pub fn keep(mut self) -> Plan {
        self.guard.armed = false;
        self.plan.clone()
    }
}

/// Sweeps the run by its prefix if the cluster value goes away without a teardown
/// (an error path, a panic): the last line of defence before `cargo xtask clean`.
#[derive(Debug)]
struct RunGuard {
    prefix: String,
    armed: bool,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if self.armed {
            let report = sweep::clean_prefix(&self.prefix);
            for e in &report.errors {
                eprintln!("knetlab: cleaning up run {}: {e}", self.prefix);
            }
        }
    }
}
