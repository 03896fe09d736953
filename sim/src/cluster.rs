//! The cluster a scenario asks for, as plain configuration: nodes and address ranges,
//! how nodes reach each other's pods, which NetworkPolicy enforcer and which service
//! proxy run (with the IPVS scheduler), the CNI chain, external hosts and the cluster
//! DNS. Every layer above reads these kinds; they depend on nothing but [`crate::protocol`].

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;

use crate::protocol::PortProto;

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
    /// `cluster.cni`: the CNI chain (see `crate::scenario::cni`).
    pub cni: CniConfig,
}

/// `cluster.cni`: the CNI chain that wires the pods (checked by `crate::scenario::cni`).
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
    pub scheduler: IpvsScheduler,
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

/// The IPVS scheduler (`--ipvs-scheduler`); the four the scenarios may pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum IpvsScheduler {
    /// Round robin, kube-proxy's default.
    #[default]
    Rr,
    /// Least connections.
    Lc,
    /// Destination hashing.
    Dh,
    /// Source hashing.
    Sh,
}

impl IpvsScheduler {
    pub const ALL: [IpvsScheduler; 4] = [Self::Rr, Self::Lc, Self::Dh, Self::Sh];

    /// The kernel's name (`rr`), as ipvsadm prints it and netlink carries it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rr => "rr",
            Self::Lc => "lc",
            Self::Dh => "dh",
            Self::Sh => "sh",
        }
    }
}

impl fmt::Display for IpvsScheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IpvsScheduler {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("{s:?} is not an IPVS scheduler knetlab offers (rr, lc, dh or sh)")
            })
    }
}

/// `cluster.dns`: a real DNS server in the `kube-system/kube-dns` pod behind the
/// `kube-system/kube-dns` Service at `cluster_ip`, serving [`crate::dns::zone`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterDns {
    pub cluster_ip: Ipv4Addr,
}
