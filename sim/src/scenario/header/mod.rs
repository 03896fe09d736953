//! The scenario document: its top-level fields as serde structs, and the `cluster:` and
//! `probe:` headers turned into checked values.
//!
//! The structs deny unknown fields and are deserialized through `serde_path_to_error`
//! (see [`Source::deserialize`]), so every mistake is reported at its field with file,
//! line and column. Kubernetes manifests, `expect` and the model are kept as JSON here
//! and checked by their own modules.

use std::collections::BTreeMap;
use std::path::Path;

use ipnet::Ipv4Net;
use serde::Deserialize;
use serde_json::Value;

use crate::error::ScenarioError;
use crate::plan::{self, Plan, PlanError};
use crate::protocol::PortProto;

use super::model_shorthand::Model;
use super::source::Source;
use super::yaml::{join_index, join_key};
use crate::workloads::WorkloadKind;

mod nodes;

use nodes::Nodes;
pub(crate) use nodes::node_labels;

use super::{
    ClusterConfig, DenyStyle, ExternalHost, IpvsConfig, IpvsFallback, LoadOptions, Loopback,
    NetworkMode, Peer, PolicyEngineKind, ProbeSpec, ProxyKind, Scenario,
};
use crate::names;

pub(super) fn load(path: &Path, opts: &LoadOptions) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ScenarioError::new(path, None, "", format!("cannot read the scenario: {e}"))
    })?;
    parse_str(path, &text, opts)
}

pub(super) fn parse_str(
    path: &Path,
    text: &str,
    opts: &LoadOptions,
) -> Result<Scenario, ScenarioError> {
    super::build::build(path, text, opts)
}

/// The whole scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Document {
    pub name: String,
    /// One line, shown by `cargo xtask list`.
    pub summary: String,
    pub description: Option<String>,
    pub cluster: Option<ClusterHeader>,
    pub model: Option<Model>,
    pub manifests: Option<Vec<Value>>,
    pub manifest_files: Option<Vec<String>>,
    pub probe: Option<ProbeHeader>,
    pub loopback: Option<LoopbackHeader>,
    pub expect: Option<Value>,
    pub steps: Option<Vec<StepHeader>>,
    pub throughput: Option<Vec<ThroughputHeader>>,
    pub http: Option<Vec<HttpHeader>>,
}

/// One entry of `http:` (checked in `build.rs`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpHeader {
    pub from: String,
    pub url: String,
    pub steps: Option<Vec<String>>,
    pub expect: Option<HttpExpectHeader>,
}

/// `expect: {status, backend}` of an `http:` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpExpectHeader {
    pub status: Option<u16>,
    pub backend: Option<String>,
}

/// One entry of `throughput:` (checked in `build.rs`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ThroughputHeader {
    pub from: String,
    pub to: String,
    pub port: Option<u16>,
    pub expect_mbps: Option<MbpsRange>,
}

/// `expectMbps: {min, max}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MbpsRange {
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// `cluster:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClusterHeader {
    nodes: Option<Nodes>,
    #[serde(rename = "podCIDR")]
    pod_cidr: Option<String>,
    #[serde(rename = "serviceCIDR")]
    service_cidr: Option<String>,
    network: Option<NetworkHeader>,
    policy: Option<PolicyHeader>,
    deny: Option<DenyHeader>,
    proxy: Option<String>,
    /// `cluster.ipvs: {scheduler, fallback}` (only with `proxy: ipvs`).
    ipvs: Option<IpvsHeader>,
    #[serde(rename = "externalHosts")]
    external_hosts: Option<Vec<ExternalHostHeader>>,
    /// Where LoadBalancer services get their addresses (checked by [`load_balancer_pool`]).
    #[serde(rename = "loadBalancerPool")]
    load_balancer_pool: Option<String>,
    /// Checked by `cni.rs`.
    cni: Option<Value>,
    /// `net.bridge.bridge-nf-call-iptables` in every node (default true; see
    /// [`br_netfilter`]).
    #[serde(rename = "brNetfilter")]
    br_netfilter: Option<bool>,
    /// `dns: true` or `dns: {clusterIP: A.B.C.D}` (checked by [`cluster_dns`]).
    dns: Option<Value>,
}

/// `cluster.ipvs` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IpvsHeader {
    scheduler: Option<String>,
    fallback: Option<IpvsFallbackHeader>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum IpvsFallbackHeader {
    Fail,
    Iptables,
}

/// One entry of `cluster.externalHosts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExternalHostHeader {
    name: String,
    address: String,
    serve: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum NetworkHeader {
    HostGw,
    Vxlan,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum PolicyHeader {
    Iptables,
    None,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum DenyHeader {
    Reject,
    Drop,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LoopbackHeader {
    Ignore,
    Check,
}

impl From<LoopbackHeader> for Loopback {
    fn from(l: LoopbackHeader) -> Self {
        match l {
            LoopbackHeader::Ignore => Loopback::Ignore,
            LoopbackHeader::Check => Loopback::Check,
        }
    }
}

/// `probe:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ProbeHeader {
    from: Option<Vec<String>>,
    to: Option<Vec<String>>,
    ports: Option<Vec<String>>,
    timeout_ms: Option<u64>,
    repeat: Option<u64>,
    /// `services: true`: also every Service port from every client.
    services: Option<bool>,
}

/// One entry of `steps:`. New nodes join first (`nodeJoin`); then its changes run in
/// the order apply, delete, label; then its nodes go down (`nodeDown`) or come back
/// (`nodeUp`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StepHeader {
    pub name: String,
    pub apply: Option<Vec<Value>>,
    pub delete: Option<Vec<ObjectRef>>,
    pub label: Option<Vec<LabelChange>>,
    /// Controllers given a new replica count (after the step's other changes).
    pub scale: Option<Vec<ScaleChange>>,
    /// Nodes whose underlay link goes down in this step (a pulled cable).
    #[serde(rename = "nodeDown")]
    pub node_down: Option<Vec<String>>,
    /// Nodes whose underlay link comes back in this step.
    #[serde(rename = "nodeUp")]
    pub node_up: Option<Vec<String>>,
    /// Nodes that join the cluster at the start of this step, before its changes (so
    /// its pods may be bound to them).
    #[serde(rename = "nodeJoin")]
    pub node_join: Option<Vec<String>>,
    pub expect: Option<Value>,
}

/// The kinds a step may delete or relabel.
#[derive(Debug, Clone, Copy, Deserialize)]
pub(crate) enum KindName {
    Namespace,
    Pod,
    NetworkPolicy,
    Service,
    Endpoints,
    Ingress,
    Secret,
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
    ReplicationController,
    ClusterNetworkPolicy,
    AdminNetworkPolicy,
    BaselineAdminNetworkPolicy,
}

impl KindName {
    /// The object kind, or the workload controller it names.
    pub(crate) fn object_kind(self) -> Result<crate::objects::Kind, WorkloadKind> {
        use crate::objects::Kind;
        Ok(match self {
            KindName::Namespace => Kind::Namespace,
            KindName::Pod => Kind::Pod,
            KindName::NetworkPolicy => Kind::NetworkPolicy,
            KindName::Service => Kind::Service,
            KindName::Endpoints => Kind::Endpoints,
            KindName::Ingress => Kind::Ingress,
            KindName::Secret => Kind::Secret,
            KindName::ClusterNetworkPolicy => Kind::ClusterNetworkPolicy,
            KindName::AdminNetworkPolicy => Kind::AdminNetworkPolicy,
            KindName::BaselineAdminNetworkPolicy => Kind::BaselineAdminNetworkPolicy,
            KindName::Deployment => return Err(WorkloadKind::Deployment),
            KindName::ReplicaSet => return Err(WorkloadKind::ReplicaSet),
            KindName::StatefulSet => return Err(WorkloadKind::StatefulSet),
            KindName::DaemonSet => return Err(WorkloadKind::DaemonSet),
            KindName::Job => return Err(WorkloadKind::Job),
            KindName::CronJob => return Err(WorkloadKind::CronJob),
            KindName::ReplicationController => return Err(WorkloadKind::ReplicationController),
        })
    }
}

/// The controllers a step may scale.
#[derive(Debug, Clone, Copy, Deserialize)]
pub(crate) enum ScaleKind {
    Deployment,
    ReplicaSet,
    StatefulSet,
    ReplicationController,
    Job,
}

/// `{kind, namespace, name, replicas}` of a `scale:` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScaleChange {
    kind: ScaleKind,
    pub namespace: Option<String>,
    pub name: String,
    pub replicas: i64,
}

impl ScaleChange {
    pub(crate) fn kind(&self) -> WorkloadKind {
        match self.kind {
            ScaleKind::Deployment => WorkloadKind::Deployment,
            ScaleKind::ReplicaSet => WorkloadKind::ReplicaSet,
            ScaleKind::StatefulSet => WorkloadKind::StatefulSet,
            ScaleKind::ReplicationController => WorkloadKind::ReplicationController,
            ScaleKind::Job => WorkloadKind::Job,
        }
    }
}

/// `{kind, namespace, name}` of a `delete:` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ObjectRef {
    pub kind: KindName,
    pub namespace: Option<String>,
    pub name: String,
}

/// `{kind, namespace, name, labels}` of a `label:` entry: `labels` is the new whole map.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LabelChange {
    pub kind: KindName,
    pub namespace: Option<String>,
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

const DEFAULT_POD_CIDR: &str = "10.244.0.0/16";
const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";
const DEFAULT_NODES: u64 = 1;
/// The most probes per Service cell `probe.repeat` may ask for (as `--repeat`).
const MAX_REPEAT: u64 = 1000;

/// A CIDR that must be a network address (no host bits set).
fn network(src: &Source, path: &str, text: &str) -> Result<Ipv4Net, ScenarioError> {
    let net: Ipv4Net = text.parse().map_err(|_| {
        src.at_value(
            path,
            format!("{text:?} is not an IPv4 CIDR (for example 10.244.0.0/16)"),
        )
    })?;
    if net.addr() != net.network() {
        return Err(src.at_value(
            path,
            format!(
                "{net} is not a network address; did you mean {}?",
                net.trunc()
            ),
        ));
    }
    Ok(net)
}

/// Checks `cluster:` and fills in the defaults.
pub(crate) fn cluster(
    src: &Source,
    header: Option<&ClusterHeader>,
) -> Result<ClusterConfig, ScenarioError> {
    let default = ClusterHeader::default();
    let h = header.unwrap_or(&default);
    let nodes_path = "cluster.nodes";
    let nodes = match h.nodes.as_ref().unwrap_or(&Nodes::Count(DEFAULT_NODES)) {
        Nodes::Count(0) => {
            return Err(src.at_value(nodes_path, "a cluster needs at least one node"));
        }
        Nodes::Count(n) if *n > plan::MAX_NODES as u64 => {
            return Err(src.at_value(nodes_path, PlanError::TooManyNodes(*n as usize).to_string()));
        }
        Nodes::Count(n) => (1..=*n).map(|i| format!("n{i}")).collect(),
        Nodes::Names(entries) => {
            if entries.is_empty() {
                return Err(src.at_value(nodes_path, "a cluster needs at least one node"));
            }
            let names: Vec<String> = entries.iter().map(|e| e.name().to_string()).collect();
            for (i, n) in names.iter().enumerate() {
                let p = join_index(nodes_path, i);
                names::dns_label(n).map_err(|e| src.at_value(&p, format!("bad node name: {e}")))?;
                if names[..i].contains(n) {
                    return Err(src.at_value(&p, format!("node {n} is listed twice")));
                }
            }
            names
        }
    };
    // A scenario's own CNI list that names a range implies the pod CIDR (see cni.rs).
    let (cni, cni_range) = super::cni::parse(src, h.cni.as_ref())?;
    let pod_cidr = match (h.pod_cidr.as_deref(), cni_range) {
        (None, Some(range)) => range,
        (given, range) => {
            let cidr = network(src, "cluster.podCIDR", given.unwrap_or(DEFAULT_POD_CIDR))?;
            if let Some(range) = range.filter(|r| *r != cidr) {
                return Err(src.at_value(
                    "cluster.podCIDR",
                    format!("podCIDR {cidr} differs from the range {range} of the CNI configuration; knetlab gives node i the i-th /24 of that range, so leave podCIDR out or make it {range}"),
                ));
            }
            cidr
        }
    };
    let service_cidr = network(
        src,
        "cluster.serviceCIDR",
        h.service_cidr.as_deref().unwrap_or(DEFAULT_SERVICE_CIDR),
    )?;
    let overlaps = |a: Ipv4Net, b: Ipv4Net| a.contains(&b.network()) || b.contains(&a.network());
    if overlaps(pod_cidr, service_cidr) {
        return Err(src.at_value(
            "cluster.serviceCIDR",
            format!("serviceCIDR {service_cidr} overlaps podCIDR {pod_cidr}"),
        ));
    }
    for (net, p) in [
        (pod_cidr, "cluster.podCIDR"),
        (service_cidr, "cluster.serviceCIDR"),
    ] {
        if overlaps(net, plan::UNDERLAY) {
            return Err(src.at_value(
                p,
                format!(
                    "{net} overlaps the nodes' underlay network {}",
                    plan::UNDERLAY
                ),
            ));
        }
    }
    let network = match h.network {
        None | Some(NetworkHeader::HostGw) => NetworkMode::HostGw,
        Some(NetworkHeader::Vxlan) => NetworkMode::Vxlan,
    };
    let proxy = match h.proxy.as_deref() {
        None | Some("iptables") => ProxyKind::Iptables,
        Some("nftables") => ProxyKind::Nftables,
        Some("ipvs") => ProxyKind::Ipvs(ipvs_config(src, h.ipvs.as_ref())?),
        Some("userspace") => ProxyKind::Userspace,
        Some(other) => {
            return Err(src.at_value(
                "cluster.proxy",
                format!("proxy {other:?} is not supported yet; use iptables"),
            ));
        }
    };
    if h.ipvs.is_some() && !matches!(proxy, ProxyKind::Ipvs(_)) {
        return Err(src.at_key("cluster.ipvs", "cluster.ipvs only applies with proxy: ipvs"));
    }
    let external_hosts = external_hosts(src, h, pod_cidr, service_cidr, &nodes)?;
    let config = ClusterConfig {
        external_hosts,
        nodes,
        pod_cidr,
        service_cidr,
        network,
        policy: match h.policy {
            None | Some(PolicyHeader::Iptables) => PolicyEngineKind::Iptables,
            Some(PolicyHeader::None) => PolicyEngineKind::None,
        },
        deny: match h.deny {
            None | Some(DenyHeader::Reject) => DenyStyle::Reject,
            Some(DenyHeader::Drop) => DenyStyle::Drop,
        },
        proxy,
        cni,
    };
    // The address plan has the last word on whether the nodes fit.
    Plan::new(&plan::prefix_from_seed(0), &config).map_err(|e| match e {
        PlanError::PodCidrTooSmall { .. } => src.at_value("cluster.podCIDR", e.to_string()),
        PlanError::TooManyNodes(_) => src.at_value(nodes_path, e.to_string()),
    })?;
    Ok(config)
}

/// Checks `cluster.ipvs` (defaults: scheduler rr, fallback fail).
fn ipvs_config(src: &Source, h: Option<&IpvsHeader>) -> Result<IpvsConfig, ScenarioError> {
    let Some(h) = h else {
        return Ok(IpvsConfig::default());
    };
    let scheduler = match h.scheduler.as_deref() {
        None => Default::default(),
        Some(s) => s
            .parse()
            .map_err(|e: String| src.at_value("cluster.ipvs.scheduler", e))?,
    };
    Ok(IpvsConfig {
        scheduler,
        fallback: match h.fallback {
            None | Some(IpvsFallbackHeader::Fail) => IpvsFallback::Fail,
            Some(IpvsFallbackHeader::Iptables) => IpvsFallback::Iptables,
        },
    })
}

/// `cluster.brNetfilter`: whether the nodes' bridges hand the frames they switch to
/// iptables (`net.bridge.bridge-nf-call-iptables`, 1 in every new namespace). `false`
/// sets it to 0 in each node namespace, the classic misconfiguration.
pub(crate) fn br_netfilter(header: Option<&ClusterHeader>) -> bool {
    header.and_then(|h| h.br_netfilter).unwrap_or(true)
}

/// Checks `cluster.loadBalancerPool`: a network that overlaps nothing of the cluster
/// (pods, services, underlay, the router's link-local range, external hosts), since the
/// router sends its addresses to the nodes.
pub(crate) fn load_balancer_pool(
    src: &Source,
    header: Option<&ClusterHeader>,
    cluster: &ClusterConfig,
) -> Result<Option<Ipv4Net>, ScenarioError> {
    let Some(text) = header.and_then(|h| h.load_balancer_pool.as_deref()) else {
        return Ok(None);
    };
    let path = "cluster.loadBalancerPool";
    let pool = network(src, path, text)?;
    let ranges = crate::services::alloc::ServiceRanges::new(cluster, None);
    if let Some(what) = ranges.conflict(pool) {
        return Err(src.at_value(
            path,
            format!("loadBalancerPool {pool} overlaps {what}; load-balancer addresses must lie outside the cluster's ranges"),
        ));
    }
    Ok(Some(pool))
}

/// Checks `cluster.externalHosts`: names, addresses outside every cluster range, ports.
fn external_hosts(
    src: &Source,
    h: &ClusterHeader,
    pod_cidr: Ipv4Net,
    service_cidr: Ipv4Net,
    nodes: &[String],
) -> Result<Vec<ExternalHost>, ScenarioError> {
    let base = "cluster.externalHosts";
    let mut hosts: Vec<ExternalHost> = Vec::new();
    for (i, e) in h.external_hosts.iter().flatten().enumerate() {
        let p = join_index(base, i);
        let name_path = join_key(&p, "name");
        names::dns_label(&e.name)
            .map_err(|m| src.at_value(&name_path, format!("bad host name: {m}")))?;
        if hosts.iter().any(|o| o.name == e.name) {
            return Err(src.at_value(&name_path, format!("host {} is declared twice", e.name)));
        }
        if nodes.contains(&e.name) {
            return Err(src.at_value(&name_path, format!("{} is already a node's name", e.name)));
        }
        let addr_path = join_key(&p, "address");
        let address: std::net::Ipv4Addr = e.address.parse().map_err(|_| {
            src.at_value(
                &addr_path,
                format!("{:?} is not an IPv4 address", e.address),
            )
        })?;
        let link_local: Ipv4Net = "169.254.0.0/16".parse().expect("constant");
        for (net, what) in [
            (pod_cidr, "the podCIDR"),
            (service_cidr, "the serviceCIDR"),
            (plan::UNDERLAY, "the nodes' underlay network"),
            (link_local, "the link-local range the router uses"),
        ] {
            if net.contains(&address) {
                return Err(src.at_value(&addr_path, format!("{address} is inside {what} {net}: an external host needs an address outside the cluster")));
            }
        }
        if address.is_unspecified()
            || address.is_loopback()
            || address.is_multicast()
            || address.is_broadcast()
        {
            return Err(src.at_value(&addr_path, format!("{address} cannot be a host's address")));
        }
        if let Some(o) = hosts.iter().find(|o| o.address == address) {
            return Err(src.at_value(
                &addr_path,
                format!("{address} is already host {}'s address", o.name),
            ));
        }
        let mut serve = Vec::new();
        for (j, s) in e.serve.iter().flatten().enumerate() {
            let sp = join_index(&join_key(&p, "serve"), j);
            serve.push(s.parse::<PortProto>().map_err(|m| src.at_value(&sp, m))?);
        }
        serve.sort();
        serve.dedup();
        hosts.push(ExternalHost {
            name: e.name.clone(),
            address,
            serve,
        });
    }
    Ok(hosts)
}

/// Checks `probe:` (peers are checked against the pods later).
pub(crate) fn probe(
    src: &Source,
    header: Option<&ProbeHeader>,
) -> Result<ProbeSpec, ScenarioError> {
    let Some(h) = header else {
        return Ok(ProbeSpec::default());
    };
    let list = |name: &str,
                items: &Option<Vec<String>>|
     -> Result<Option<Vec<(String, String)>>, ScenarioError> {
        let base = join_key("probe", name);
        match items {
            None => Ok(None),
            Some(v) if v.is_empty() => Err(src.at_value(
                &base,
                format!("probe.{name} is empty; leave it out for the default"),
            )),
            Some(v) => Ok(Some(
                v.iter()
                    .enumerate()
                    .map(|(i, s)| (join_index(&base, i), s.clone()))
                    .collect(),
            )),
        }
    };
    let from = list("from", &h.from)?
        .map(|items| {
            items
                .into_iter()
                .map(|(p, s)| super::expect::client(&s).map_err(|e| src.at_value(&p, e)))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let to = list("to", &h.to)?
        .map(|items| {
            items
                .into_iter()
                // A node is a target on its pods' hostPorts (checked once the pods are known).
                .map(|(p, s)| s.parse::<Peer>().map_err(|e| src.at_value(&p, e)))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let ports = list("ports", &h.ports)?
        .map(|items| {
            items
                .into_iter()
                .map(|(p, s)| s.parse().map_err(|e: String| src.at_value(&p, e)))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    if h.timeout_ms == Some(0) {
        return Err(src.at_value(
            "probe.timeoutMs",
            "a probe deadline of 0 ms leaves no time to answer",
        ));
    }
    let repeat = match h.repeat {
        None => None,
        Some(n @ 1..=MAX_REPEAT) => Some(n as usize),
        Some(n) => {
            return Err(src.at_value(
                "probe.repeat",
                format!("probe.repeat {n} is out of range: between 1 and {MAX_REPEAT} probes per Service cell"),
            ));
        }
    };
    Ok(ProbeSpec {
        from,
        to,
        ports,
        timeout_ms: h.timeout_ms,
        repeat,
        services: h.services.unwrap_or(false),
    })
}

/// Checks `cluster.dns`: `true` (the cluster DNS at 10.96.0.10), `false` (none, as when
/// left out) or `{clusterIP: A.B.C.D}`, an address inside the service CIDR.
pub(crate) fn cluster_dns(
    src: &Source,
    header: Option<&ClusterHeader>,
    cluster: &ClusterConfig,
) -> Result<Option<super::ClusterDns>, ScenarioError> {
    let path = "cluster.dns";
    let bad = || {
        src.at_value(
            path,
            "write `dns: true` for the cluster DNS at 10.96.0.10, or `dns: {clusterIP: A.B.C.D}`",
        )
    };
    let cluster_ip = match header.and_then(|h| h.dns.as_ref()) {
        None | Some(Value::Bool(false)) => return Ok(None),
        Some(Value::Bool(true)) => crate::dns::DEFAULT_CLUSTER_IP,
        Some(Value::Object(m)) => {
            if let Some(k) = m.keys().find(|k| k.as_str() != "clusterIP") {
                return Err(src.at_key(
                    &join_key(path, k),
                    format!("unknown field `{k}`; cluster.dns has only `clusterIP`"),
                ));
            }
            let ip_path = join_key(path, "clusterIP");
            match m.get("clusterIP") {
                None => crate::dns::DEFAULT_CLUSTER_IP,
                Some(Value::String(s)) => s
                    .parse()
                    .map_err(|_| src.at_value(&ip_path, format!("{s:?} is not an IPv4 address")))?,
                Some(_) => return Err(src.at_value(&ip_path, "an IPv4 address, as a string")),
            }
        }
        Some(_) => return Err(bad()),
    };
    if !cluster.service_cidr.contains(&cluster_ip) {
        return Err(src.at_value(
            path,
            format!(
                "the cluster DNS address {cluster_ip} is outside the service CIDR {}",
                cluster.service_cidr
            ),
        ));
    }
    Ok(Some(super::ClusterDns { cluster_ip }))
}
