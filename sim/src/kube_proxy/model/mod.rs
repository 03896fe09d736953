//! kube-proxy's model, shared by its three modes and by the oracle: what one node's
//! kube-proxy knows ([`ProxyInput`]: its configuration and every service port with its
//! endpoints and their EndpointSlice conditions), which service ports it programs and
//! in which order ([`proxied_ports`]), and which endpoints each kind of traffic may
//! reach ([`endpoints`]: kube-proxy's `CategorizeEndpoints` and the traffic-policy
//! choice between the cluster-wide and the node-local endpoint lists). [`input`] builds
//! the input from the cluster's objects, as kube-proxy does from its informers.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::names as pn;
use crate::protocol::Protocol;

pub mod endpoints;
pub mod input;

pub use endpoints::{
    CategorizedEndpoints, ChainChoice, ClusterIpFate, TrafficPolicies, categorize_endpoints,
    cluster_ip_backends, cluster_ip_fate,
};
pub use input::{
    ProxyInputError, find_port, node_input, proxy_input, service_ports, service_ports_of,
};

/// kube-proxy's default `--iptables-masquerade-bit`.
pub const DEFAULT_MASQUERADE_BIT: u8 = 14;
/// `DefaultClientIPServiceAffinitySeconds` (3 hours).
pub const DEFAULT_CLIENT_IP_TIMEOUT_SECONDS: u32 = 10800;
/// `MaxClientIPServiceAffinitySeconds` (1 day), the API's upper bound.
pub const MAX_CLIENT_IP_TIMEOUT_SECONDS: u32 = 86400;
/// kube-proxy's command-line knobs that change the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyConfig {
    /// `--iptables-masquerade-bit` (0-31): the mark is `1 << bit`.
    pub masquerade_bit: u8,
    /// `--masquerade-all`: masquerade every ClusterIP connection.
    pub masquerade_all: bool,
    /// `--iptables-localhost-nodeports` (default true): NodePorts answer on 127.0.0.1.
    pub localhost_nodeports: bool,
    /// Whether the iptables binary supports `--random-fully` (1.6.2 and later do).
    pub random_fully: bool,
    /// `net.netfilter.nf_conntrack_tcp_be_liberal` is non-zero: no INVALID drop rule.
    pub conntrack_tcp_be_liberal: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            masquerade_bit: DEFAULT_MASQUERADE_BIT,
            masquerade_all: false,
            localhost_nodeports: true,
            random_fully: true,
            conntrack_tcp_be_liberal: false,
        }
    }
}

/// Everything one node's kube-proxy knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyInput {
    /// This node's name: endpoints whose `node` equals it are local.
    pub node: String,
    /// The node's address (kube-proxy `nodeIP`): a `loadBalancerSourceRanges` entry that
    /// contains it also admits traffic from the load-balancer IPs themselves.
    pub node_ip: Ipv4Addr,
    /// The cluster-wide pod CIDR used to tell pod traffic from the rest
    /// (`--cluster-cidr`, detect-local-mode ClusterCIDR). `None`: no local detector.
    pub cluster_cidr: Option<Ipv4Net>,
    pub config: ProxyConfig,
    /// One entry per service port (a Service with two ports gives two entries).
    pub services: Vec<ServicePort>,
}

/// `spec.sessionAffinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionAffinity {
    #[default]
    None,
    /// `ClientIP` with `sessionAffinityConfig.clientIP.timeoutSeconds`
    /// ([`DEFAULT_CLIENT_IP_TIMEOUT_SECONDS`] when the Service does not say).
    ClientIp { timeout_seconds: u32 },
}

/// One port of one Service, as kube-proxy's service map holds it (already filtered to
/// IPv4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub namespace: String,
    pub name: String,
    /// `ports[].name`; `None` (or empty) for an unnamed port.
    pub port_name: Option<String>,
    pub protocol: Protocol,
    /// `None` for a headless Service (`clusterIP: None`): no rules at all.
    pub cluster_ip: Option<Ipv4Addr>,
    pub port: u16,
    pub node_port: Option<u16>,
    pub external_ips: Vec<Ipv4Addr>,
    /// `status.loadBalancer.ingress[].ip` (VIP mode).
    pub load_balancer_ips: Vec<Ipv4Addr>,
    pub load_balancer_source_ranges: Vec<Ipv4Net>,
    pub session_affinity: SessionAffinity,
    /// `externalTrafficPolicy: Local` (only matters if the port is reachable from
    /// outside: NodePort, external IPs or load-balancer IPs).
    pub external_policy_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_policy_local: bool,
    /// `spec.healthCheckNodePort`, which kube-proxy keeps only for a LoadBalancer
    /// Service with `externalTrafficPolicy: Local` (`NeedsHealthCheck`); every mode
    /// opens it when set.
    pub health_check_node_port: Option<u16>,
    /// The endpoints of this port from the EndpointSlices, any order.
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// A plain ClusterIP service port with no endpoints yet.
    pub fn cluster_ip(
        namespace: &str,
        name: &str,
        port_name: Option<&str>,
        protocol: Protocol,
        cluster_ip: Ipv4Addr,
        port: u16,
    ) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
            port_name: port_name.map(str::to_string),
            protocol,
            cluster_ip: Some(cluster_ip),
            port,
            node_port: None,
            external_ips: Vec::new(),
            load_balancer_ips: Vec::new(),
            load_balancer_source_ranges: Vec::new(),
            session_affinity: SessionAffinity::None,
            external_policy_local: false,
            internal_policy_local: false,
            health_check_node_port: None,
            endpoints: Vec::new(),
        }
    }

    /// `ns/name:port` (or `ns/name`), the string in every comment and hash.
    pub fn port_name_string(&self) -> String {
        pn::service_port_name(&self.namespace, &self.name, self.port_name.as_deref())
    }

    /// Reachable through a NodePort, an external IP or a load-balancer IP
    /// (`ExternallyAccessible`).
    pub fn externally_accessible(&self) -> bool {
        self.node_port.is_some_and(|p| p != 0)
            || !self.load_balancer_ips.is_empty()
            || !self.external_ips.is_empty()
    }
}

/// One endpoint of a service port with its EndpointSlice conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// `nodeName`; `None` for hand-written endpoints outside the cluster (never local).
    pub node: Option<String>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

impl Endpoint {
    /// A ready (and serving, not terminating) endpoint.
    pub fn ready(ip: Ipv4Addr, port: u16, node: Option<&str>) -> Self {
        Self {
            ip,
            port,
            node: node.map(str::to_string),
            ready: true,
            serving: true,
            terminating: false,
        }
    }

    /// The endpoint of a pod that is being deleted: not ready, terminating, and serving
    /// as long as its readiness probe still passes.
    pub fn terminating(ip: Ipv4Addr, port: u16, node: Option<&str>, serving: bool) -> Self {
        Self {
            ip,
            port,
            node: node.map(str::to_string),
            ready: false,
            serving,
            terminating: true,
        }
    }
}

/// Input kube-proxy itself would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("masquerade bit {0} is out of range (0-31)")]
    MasqueradeBit(u8),
    #[error("service port {0} ({1}) is listed twice")]
    DuplicatePort(String, Protocol),
}

/// `fmt.Sprintf("%#08x", 1<<bit)`: Go pads the digits, not the prefix, to 8.
pub fn masquerade_mark(bit: u8) -> String {
    format!("{:#010x}", 1u32 << bit)
}

/// The masquerade mark of `cfg`, or the error for a bit no mark can hold.
pub fn checked_mark(cfg: &ProxyConfig) -> Result<String, ProxyError> {
    if cfg.masquerade_bit > 31 {
        return Err(ProxyError::MasqueradeBit(cfg.masquerade_bit));
    }
    Ok(masquerade_mark(cfg.masquerade_bit))
}

/// The service ports kube-proxy programs, in the order every renderer walks them: its
/// service map holds only ports with a cluster IP (headless services and their
/// endpoints get no rules and do not count towards the large-cluster limit), and they
/// are sorted by namespace, name, port name and protocol (kube-proxy walks a Go map).
pub fn proxied_ports(input: &ProxyInput) -> Vec<&ServicePort> {
    let mut ports: Vec<&ServicePort> = input
        .services
        .iter()
        .filter(|s| s.cluster_ip.is_some())
        .collect();
    ports.sort_by(|a, b| {
        (&a.namespace, &a.name, &a.port_name, a.protocol).cmp(&(
            &b.namespace,
            &b.name,
            &b.port_name,
            b.protocol,
        ))
    });
    ports
}
