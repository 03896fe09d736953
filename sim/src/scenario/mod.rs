//! Scenario files: the YAML a user writes (cluster header, Kubernetes manifests, the
//! `model` shorthand, probes, expectations and steps), read into checked data. Parsing
//! finds every mistake before anything is built and reports it with file, line, column
//! and field path (see [`crate::error::ScenarioError`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::Ipv4Net;

use crate::error::ScenarioError;
use crate::objects::{ClusterObjects, Kind, Object, PodRef};
use crate::protocol::PortProto;

mod build;
pub mod cni;
mod controllers;
mod decode;
mod decode_tiers;
mod expect;
mod fields;
mod header;
mod inputs;
mod manifest_set;
mod model_shorthand;
mod placeholders;
mod replay;
mod replay_check;
mod source;
mod workload;
mod yaml;

pub use build::INITIAL_STEP;
pub use manifest_set::{ManifestStream, from_manifests};
pub use replay::{env_timeline, objects_per_step};
pub use yaml::Positions;

// The vocabulary a scenario is written in lives below the parser (every layer reads
// it); it is re-exported here because a parsed [`Scenario`] is made of it.
pub use crate::cluster::{
    ClusterConfig, ClusterDns, CniConfig, DenyStyle, ExternalHost, IpvsConfig, IpvsFallback,
    IpvsScheduler, NetworkMode, PolicyEngineKind, ProxyKind,
};
pub use crate::peers::Peer;

/// A parsed, checked scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    /// One line, shown by `cargo xtask list`.
    pub summary: String,
    /// What the scenario teaches.
    pub description: String,
    /// The scenario file.
    pub path: PathBuf,
    pub cluster: ClusterConfig,
    /// `cluster.loadBalancerPool`: where LoadBalancer services get their addresses
    /// (`None`: they need one written in their status). Kept beside [`ClusterConfig`]
    /// rather than in it so code that builds a `ClusterConfig` field by field keeps
    /// compiling; see [`Scenario::service_ranges`].
    pub load_balancer_pool: Option<Ipv4Net>,
    /// `cluster.brNetfilter` (default true): `false` sets
    /// `net.bridge.bridge-nf-call-iptables` to 0 in every node namespace (never in the
    /// root namespace), so the nodes' bridges switch pod frames without iptables. Kept
    /// beside [`ClusterConfig`] for the same reason as `load_balancer_pool`.
    pub br_netfilter: bool,
    pub probe: ProbeSpec,
    pub loopback: Loopback,
    /// `cluster.dns`: the cluster DNS, when the scenario asks for one (the parser then
    /// adds the `kube-system/kube-dns` pod and Service to the first step). Kept beside
    /// [`ClusterConfig`] for the same reason as `load_balancer_pool`.
    pub dns: Option<ClusterDns>,
    /// The steps in order. `steps[0]` is the initial state: its changes create every
    /// object of `model`, `manifests` and `manifestFiles` (namespaces first, then pods,
    /// then services, then the rest), and its expectation is the top-level `expect`.
    /// Later entries are the scenario's `steps:`.
    pub steps: Vec<Step>,
    /// TCP rate checks (`throughput:`), measured in every step where both pods exist.
    pub throughput: Vec<ThroughputSpec>,
    /// HTTP(S) checks through the ingress controller (`http:`).
    pub http: Vec<crate::ingress::HttpCheckSpec>,
    /// What the parser tells the user: kinds accepted without effect, unsupported kinds
    /// left out (`--ignore-unsupported`), namespaces it created, Pending pods, what the
    /// workload controllers and the scheduler do not model, v1alpha1 policies mapped onto
    /// the tiers, same-priority cluster-wide policies whose result is undefined, tiers
    /// ignored under `policy: none` (a note that first applies at a later step names it).
    pub notes: Vec<String>,
}

/// How a scenario is read.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Leave out kinds that change the network but are not modelled (CiliumNetworkPolicy,
    /// Gateway API routes, ...) with a loud warning in the notes, instead of refusing them.
    pub ignore_unsupported: bool,
}

/// One `throughput:` entry: the TCP rate from one pod to another, measured in every step
/// in which both exist, with the range it must fall in.
#[derive(Debug, Clone, PartialEq)]
pub struct ThroughputSpec {
    pub from: PodRef,
    pub to: PodRef,
    /// The TCP port the measurement's sink listens on in `to` (default 5201, iperf's).
    pub port: u16,
    /// `expectMbps: {min, max}` in Mbit/s (10^6 bits per second); `None` = no bound.
    pub min_mbps: Option<f64>,
    pub max_mbps: Option<f64>,
}

/// Whether self-to-self cells are asserted (`loopback: check`) or only shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Loopback {
    #[default]
    Ignore,
    Check,
}

/// The `probe:` section: which cells to measure. `None` means the default.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProbeSpec {
    /// Clients; default every pod.
    pub from: Option<Vec<Peer>>,
    /// Servers (pods, external hosts, Services, nodes on their pods' hostPorts); default
    /// every pod.
    pub to: Option<Vec<Peer>>,
    /// Ports; default every container port each server declares.
    pub ports: Option<Vec<PortProto>>,
    /// Per-probe deadline in milliseconds; default chosen by the harness.
    pub timeout_ms: Option<u64>,
    /// `probe.repeat: N`: probes per Service cell, so that a scenario (and CI) shows how
    /// kube-proxy spreads connections, or that ClientIP affinity pins them; the command
    /// line's `--repeat` above 1 overrides it. `None` = one probe.
    pub repeat: Option<usize>,
    /// `probe.services: true`: besides the servers above, every port of every Service
    /// with a cluster IP (`svc/NS/NAME:PORT`), as `knetlab check` probes them.
    pub services: bool,
}

/// One expected cell value, keyed by client, server and port.
pub type CellKey = (Peer, Peer, PortProto);

/// An expected matrix, from either form the scenario may use (tables per `PROTO/port`,
/// or `default` plus `exceptions`). Cells a table marks `#` are absent (not asserted).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Expectation {
    /// The value of every cell not listed (`default: allow|deny`); `None` = not asserted.
    pub default: Option<bool>,
    /// `true` = reachable.
    pub cells: BTreeMap<CellKey, bool>,
}

impl Expectation {
    /// The expected reachability of one cell, if the scenario asserts it.
    pub fn lookup(&self, from: &Peer, to: &Peer, port: PortProto) -> Option<bool> {
        self.cells
            .get(&(from.clone(), to.clone(), port))
            .copied()
            .or(self.default)
    }
}

/// One step: changes to the live cluster, then a probe round checked against `expect`.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    /// In the order they are made. A `steps:` entry lists its `apply` changes first (in
    /// file order), then its `delete`s, then its `label`s; the parser checked each one
    /// against the cluster as the changes before it leave it.
    pub changes: Vec<Change>,
    pub expect: Option<Expectation>,
    /// The nodes whose underlay link is down during this step (after its `nodeDown` and
    /// `nodeUp`): their objects are untouched, but nothing crosses the fabric to or from
    /// them. Empty in the first step.
    pub down_nodes: std::collections::BTreeSet<String>,
    /// The nodes that join the cluster in this step (`nodeJoin`), in order, before its
    /// changes are made (so the step's pods may be bound to them). Each is planned as if
    /// the scenario had listed it after the nodes before it
    /// ([`crate::plan::Plan::join_node`]). Empty in the first step.
    pub joined_nodes: Vec<String>,
}

/// A change a step makes to the cluster's objects.
#[derive(Debug, Clone)]
pub enum Change {
    /// Create or update (as `kubectl apply`).
    Apply(RawObject),
    Delete {
        kind: Kind,
        namespace: String,
        name: String,
    },
    /// Replace the object's whole label map.
    Label {
        kind: Kind,
        namespace: String,
        name: String,
        labels: BTreeMap<String, String>,
    },
}

/// A manifest as written, checked at parse time, decoded into an [`Object`] when its step
/// runs: `${ip:NS/POD}` and `${cidr:NS/POD}` are only known once the pods exist.
#[derive(Debug, Clone)]
pub struct RawObject {
    /// The manifest as JSON (YAML converted), before substitution. For a Service, the
    /// parser has written in what the API server and the load-balancer controller
    /// allocate (cluster IP, node ports, load-balancer address; see
    /// [`crate::services::alloc`]), so decoding gives the Service as the cluster holds it.
    pub value: serde_json::Value,
    /// The kind, read at parse time (the value has been checked to decode as it).
    pub kind: Kind,
    /// `(namespace, name)`, namespace empty for cluster-scoped objects.
    pub key: (String, String),
    /// The file it came from.
    pub file: PathBuf,
    /// The field path of the manifest inside that file, e.g. `manifests[3]`.
    pub path: String,
    /// Line/column of every node of that file, for error messages.
    pub positions: Arc<Positions>,
}

impl Change {
    /// Applies the change to the objects, as the API server would: decodes an `Apply`
    /// (substituting pod addresses), deletes, or replaces labels. Returns whether the
    /// target existed (always true for `Apply`). The one place a change meets the objects.
    pub fn apply_to(
        &self,
        objects: &mut ClusterObjects,
        pod_ip: &dyn Fn(&PodRef) -> Option<Ipv4Addr>,
    ) -> Result<bool, ScenarioError> {
        Ok(match self {
            Change::Apply(raw) => {
                objects.apply(raw.decode(pod_ip)?);
                true
            }
            Change::Delete {
                kind,
                namespace,
                name,
            } => objects.delete(*kind, namespace, name),
            Change::Label {
                kind,
                namespace,
                name,
                labels,
            } => objects.set_labels(*kind, namespace, name, labels.clone()),
        })
    }
}

impl Scenario {
    /// Every node the cluster ever has: `cluster.nodes`, then the nodes later steps
    /// add (`nodeJoin`), in the order they join.
    pub fn nodes_ever(&self) -> Vec<String> {
        let mut nodes = self.cluster.nodes.clone();
        nodes.extend(
            self.steps
                .iter()
                .flat_map(|s| s.joined_nodes.iter().cloned()),
        );
        nodes
    }

    /// The address ranges Service allocation works with.
    pub fn service_ranges(&self) -> crate::services::alloc::ServiceRanges {
        crate::services::alloc::ServiceRanges::new(&self.cluster, self.load_balancer_pool)
    }
}

impl RawObject {
    /// The pods whose addresses the manifest uses (`${ip:..}` / `${cidr:..}`).
    pub fn referenced_pods(&self) -> Vec<PodRef> {
        placeholders::referenced_pods(&self.value)
    }

    /// Substitutes pod addresses and decodes the manifest into a Kubernetes object.
    pub fn decode(
        &self,
        pod_ip: &dyn Fn(&PodRef) -> Option<Ipv4Addr>,
    ) -> Result<Object, ScenarioError> {
        decode::decode_object(self, pod_ip)
    }
}

/// Reads and checks a scenario file (and the manifest files it names).
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    header::load(path, &LoadOptions::default())
}

/// [`load`] with options.
pub fn load_with(path: &Path, opts: &LoadOptions) -> Result<Scenario, ScenarioError> {
    header::load(path, opts)
}

/// Checks a scenario given as text (used by tests); `path` only names it in errors.
pub fn parse_str(path: &Path, text: &str) -> Result<Scenario, ScenarioError> {
    header::parse_str(path, text, &LoadOptions::default())
}

/// [`parse_str`] with options.
pub fn parse_str_with(
    path: &Path,
    text: &str,
    opts: &LoadOptions,
) -> Result<Scenario, ScenarioError> {
    header::parse_str(path, text, opts)
}
