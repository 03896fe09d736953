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
mod decode;
mod expect;
mod fields;
mod header;
mod model_shorthand;
pub(crate) mod names;
mod source;
mod yaml;

pub use build::INITIAL_STEP;
pub use yaml::Positions;

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
}

/// `cluster.dns`: a real DNS server in the `kube-system/kube-dns` pod behind the
/// `kube-system/kube-dns` Service at `cluster_ip`, serving [`crate::dns::zone`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterDns {
    pub cluster_ip: Ipv4Addr,
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

/// The `cluster:` header.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Node names in order (`nodes: 2` gives `n1`, `n2`).
    pub nodes: Vec<String>,
    /// Default 10.244.0.0/16; node i (1-based) gets the i-th /24 inside it.
    pub pod_cidr: Ipv4Net,
    /// Default 10.96.0.0/12.
    pub service_cidr: Ipv4Net,
    pub network: NetworkMode,
    pub policy: PolicyEngineKind,
    pub deny: DenyStyle,
    pub proxy: ProxyKind,
    /// Hosts outside the cluster, behind a router on the underlay.
    pub external_hosts: Vec<ExternalHost>,
    /// `cluster.cni`: the CNI chain (see [`cni`]).
    pub cni: CniConfig,
}

/// `cluster.cni`: the CNI chain that wires the pods (checked by [`cni`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CniConfig {
    /// The scenario's own network configuration list (a single `.conf` already wrapped
    /// into a list of one); `None` = knetlab's default list: bridge + host-local, plus
    /// `portmap` when some pod has a hostPort and `bandwidth` when some pod has a
    /// bandwidth annotation (each plugin exec costs a few ms per pod, so the default list
    /// only carries what the scenario uses).
    pub conflist: Option<serde_json::Value>,
    /// Where the list came from (`cluster.cni.conflist` or the file), for messages.
    pub origin: Option<String>,
    /// Some pod of some step has a bandwidth annotation (filled in by the parser).
    pub pods_want_bandwidth: bool,
    /// Some container of some pod has a hostPort (filled in by the parser).
    pub pods_want_host_ports: bool,
    /// `burst`: the token bucket passed with each bandwidth rate, in bits. `None` (or
    /// `runtime`) = what containerd and CRI-O pass: 4294967295 bits.
    pub burst: Option<u64>,
    /// `check`: run CNI CHECK for every pod after its ADD; `None` = the harness's default.
    pub check: Option<bool>,
}

/// A host outside the cluster (`cluster.externalHosts`): its own namespace behind the
/// router, which routes between the hosts and the nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalHost {
    pub name: String,
    pub address: Ipv4Addr,
    /// Ports it serves (answering like a pod does, with `host/NAME`).
    pub serve: Vec<PortProto>,
}

/// How nodes reach each other's pod subnets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// Routes to each remote pod subnet via the node's underlay address.
    #[default]
    HostGw,
    /// A flannel-style VXLAN overlay: one VXLAN device per node, static FDB and ARP
    /// entries for every other node, each remote pod subnet routed over the tunnel.
    Vxlan,
}

/// Which NetworkPolicy enforcer runs in the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PolicyEngineKind {
    /// kube-router-style iptables chains with ipsets.
    #[default]
    Iptables,
    /// Accepts policies and enforces nothing, like flannel or the plain bridge plugin.
    None,
}

/// How the enforcer denies traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DenyStyle {
    /// An ICMP error at once (kube-router's choice): fast matrices.
    #[default]
    Reject,
    /// Silence (Calico's default): probes wait out their deadline.
    Drop,
}

/// Which service proxy runs in the nodes (only `iptables` exists yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyKind {
    #[default]
    Iptables,
    /// kube-proxy's nftables mode (`cluster.proxy: nftables`): one `ip kube-proxy` table.
    Nftables,
    /// kube-proxy's IPVS mode (`cluster.proxy: ipvs`, tuned by `cluster.ipvs`): what
    /// happens on a kernel without IPVS is the scenario's choice.
    Ipvs(IpvsConfig),
    /// The historical userspace mode (`cluster.proxy: userspace`, removed in v1.26): a
    /// proxy port per service port on the node, backends see the node's address.
    Userspace,
}

/// `cluster.ipvs`: the scheduler of every virtual server and what a run does when the
/// kernel has no IPVS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IpvsConfig {
    /// `scheduler: rr|lc|dh|sh` (default rr, kube-proxy's).
    pub scheduler: crate::render::proxy_ipvs::IpvsScheduler,
    pub fallback: IpvsFallback,
}

/// `cluster.ipvs.fallback`: what to do without IPVS in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IpvsFallback {
    /// Stop before building, as current kube-proxy refuses to start ("can't use the
    /// IPVS proxier").
    #[default]
    Fail,
    /// Run the iptables proxy instead, as kube-proxy before v1.x did when IPVS was
    /// missing; the run's notes say so.
    Iptables,
}

/// Whether self-to-self cells are asserted (`loopback: check`) or only shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Loopback {
    #[default]
    Ignore,
    Check,
}

/// One end of a probe: a pod (`x/a`), a node (`node/n1`) or an external host
/// (`host/admin-pc`); as a server also a Service's ClusterIP (`svc/default/web:80`), a
/// node port (`nodeport/n1:30000`), a load-balancer address (`lb/web:80`,
/// `lb/default/web:80`) or an external IP (`extip/default/web:80`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    Pod(PodRef),
    /// `node/NAME`: as a client, the node itself; as a server, its address on its pods'
    /// hostPorts (forwarded by the portmap plugin to the pod).
    Node(String),
    Host(String),
    /// `svc/NS/NAME:PORT`: the Service's cluster IP and service port `port` (of the
    /// cell's protocol), answered by whichever endpoint kube-proxy picks.
    Service {
        namespace: String,
        name: String,
        port: u16,
    },
    /// `nodeport/NODE:PORT`: node `node`'s underlay address and node port `port` (the
    /// Service's `nodePort`, not its `port`), answered by whichever endpoint kube-proxy
    /// on that node picks.
    NodePort {
        node: String,
        port: u16,
    },
    /// `lb/NAME:PORT` or `lb/NS/NAME:PORT`: the Service's load-balancer address
    /// (`status.loadBalancer.ingress[0].ip`) and service port `port`. Without a
    /// namespace the name must be unambiguous across the scenario's Services.
    LoadBalancer {
        namespace: Option<String>,
        name: String,
        port: u16,
    },
    /// `extip/NS/NAME:PORT`: the Service's first `spec.externalIPs` address and service
    /// port `port` (routed to every node by the router, as a load-balancer address is).
    ExternalIp {
        namespace: String,
        name: String,
        port: u16,
    },
    /// `dns/NAME:PORT`: whatever `NAME` resolves to from the client pod, through its
    /// resolv.conf (search list, ndots) and the cluster DNS (`cluster.dns`), probed on
    /// `port`. Only a probe target.
    Dns {
        name: String,
        port: u16,
    },
}

impl Peer {
    /// Whether this is a Service (`svc/NS/NAME:PORT`).
    pub fn is_service(&self) -> bool {
        matches!(self, Peer::Service { .. })
    }

    /// Whether this is a Service reached from outside its cluster IP: a node port, a
    /// load-balancer address or an external IP (entered through a node's kube-proxy
    /// KUBE-EXT chain; see `crate::oracle::predict_external`).
    pub fn is_external_service(&self) -> bool {
        matches!(
            self,
            Peer::NodePort { .. } | Peer::LoadBalancer { .. } | Peer::ExternalIp { .. }
        )
    }
}

impl serde::Serialize for Peer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Pod(p) => write!(f, "{p}"),
            Peer::Node(n) => write!(f, "node/{n}"),
            Peer::Host(h) => write!(f, "host/{h}"),
            Peer::Service {
                namespace,
                name,
                port,
            } => write!(f, "svc/{namespace}/{name}:{port}"),
            Peer::NodePort { node, port } => write!(f, "nodeport/{node}:{port}"),
            Peer::LoadBalancer {
                namespace: Some(ns),
                name,
                port,
            } => write!(f, "lb/{ns}/{name}:{port}"),
            Peer::LoadBalancer {
                namespace: None,
                name,
                port,
            } => write!(f, "lb/{name}:{port}"),
            Peer::ExternalIp {
                namespace,
                name,
                port,
            } => write!(f, "extip/{namespace}/{name}:{port}"),
            Peer::Dns { name, port } => write!(f, "dns/{name}:{port}"),
        }
    }
}

impl std::str::FromStr for Peer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('/') {
            Some(("node", n)) if !n.is_empty() => Ok(Peer::Node(n.to_string())),
            Some(("host", h)) if !h.is_empty() => Ok(Peer::Host(h.to_string())),
            Some(("svc", rest)) => {
                let bad = || {
                    format!(
                        "{s:?} is not a Service target (write svc/NAMESPACE/NAME:PORT, for example svc/default/web:80)"
                    )
                };
                let (ns, rest) = rest.split_once('/').ok_or_else(bad)?;
                let (name, port) = rest.rsplit_once(':').ok_or_else(bad)?;
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(bad)?;
                if ns.is_empty() || name.is_empty() || name.contains('/') {
                    return Err(bad());
                }
                Ok(Peer::Service {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                    port,
                })
            }
            Some(("nodeport", rest)) => {
                let (node, port) = rest
                    .rsplit_once(':')
                    .and_then(|(n, p)| Some((n, nonzero_port(p)?)))
                    .filter(|(n, _)| !n.is_empty() && !n.contains('/'))
                    .ok_or_else(|| {
                        format!(
                            "{s:?} is not a node port target (write nodeport/NODE:NODEPORT, for example nodeport/n1:30000)"
                        )
                    })?;
                Ok(Peer::NodePort {
                    node: node.to_string(),
                    port,
                })
            }
            Some(("lb", rest)) => {
                let bad = || {
                    format!(
                        "{s:?} is not a load-balancer target (write lb/NAME:PORT or lb/NAMESPACE/NAME:PORT, for example lb/web:80)"
                    )
                };
                let (path, port) = rest.rsplit_once(':').ok_or_else(bad)?;
                let port = nonzero_port(port).ok_or_else(bad)?;
                let (namespace, name) = match path.split_once('/') {
                    Some((ns, name)) => (Some(ns.to_string()), name),
                    None => (None, path),
                };
                if name.is_empty()
                    || name.contains('/')
                    || namespace.as_deref().is_some_and(str::is_empty)
                {
                    return Err(bad());
                }
                Ok(Peer::LoadBalancer {
                    namespace,
                    name: name.to_string(),
                    port,
                })
            }
            Some(("extip", rest)) => {
                let bad = || {
                    format!(
                        "{s:?} is not an external-IP target (write extip/NAMESPACE/NAME:PORT, for example extip/default/web:80)"
                    )
                };
                let (ns, rest) = rest.split_once('/').ok_or_else(bad)?;
                let (name, port) = rest.rsplit_once(':').ok_or_else(bad)?;
                let port = nonzero_port(port).ok_or_else(bad)?;
                if ns.is_empty() || name.is_empty() || name.contains('/') {
                    return Err(bad());
                }
                Ok(Peer::ExternalIp {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                    port,
                })
            }
            Some(("dns", rest)) => {
                let bad = || {
                    format!(
                        "{s:?} is not a DNS target (write dns/NAME:PORT, for example dns/my-svc.my-ns:80)"
                    )
                };
                let (name, port) = rest.rsplit_once(':').ok_or_else(bad)?;
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(bad)?;
                crate::dns::resolv::check_name(name).map_err(|e| format!("{}: {e}", bad()))?;
                Ok(Peer::Dns {
                    name: name.to_string(),
                    port,
                })
            }
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Peer::Pod(PodRef::new(ns, name)))
            }
            _ => Err(format!(
                "{s:?} is not a probe peer (write ns/pod, node/NAME for a node, host/NAME for an external host, svc/NS/NAME:PORT for a Service, nodeport/NODE:NODEPORT, lb/[NS/]NAME:PORT or extip/NS/NAME:PORT for a Service from outside, or dns/NAME:PORT for a name the cluster DNS resolves)"
            )),
        }
    }
}

/// A port number other than 0, as written in a probe target.
fn nonzero_port(s: &str) -> Option<u16> {
    s.parse::<u16>().ok().filter(|p| *p != 0)
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
        decode::referenced_pods(&self.value)
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
    header::load(path)
}

/// Checks a scenario given as text (used by tests); `path` only names it in errors.
pub fn parse_str(path: &Path, text: &str) -> Result<Scenario, ScenarioError> {
    header::parse_str(path, text)
}
