//! Services before any proxy sees them: what the API server and the controllers around it
//! do with `v1/Service` and `v1/Endpoints`. Everything here is a pure function over the
//! plain Kubernetes objects of [`crate::objects::ClusterObjects`]:
//!
//! - [`validate`]: the API server's checks on a Service or Endpoints manifest, and a plain
//!   "not supported yet" for the few fields knetlab does not model;
//! - [`alloc`]: the API server's defaulting and allocation (cluster IP, node ports, the
//!   health-check node port) and a load-balancer controller's address assignment,
//!   deterministic, written into the Service itself (`spec.clusterIP`,
//!   `spec.ports[].nodePort`, `status.loadBalancer`), so downstream code reads the object
//!   as `kubectl get svc -o yaml` would show it;
//! - [`endpoints`]: which pods back which service port, as the endpoints and
//!   EndpointSlice controllers compute it, shaped as `v1/Endpoints` and EndpointSlices,
//!   and rendered as text for snapshots;
//! - [`proxy_input`]: what one node's kube-proxy knows (every service port with its
//!   endpoints), the input of the proxy renderers, and which endpoints a ClusterIP
//!   connection made on a node can reach.
//!
//! The helpers below read a Service that went through [`alloc::defaults`] (every stored
//! Service has); on an undefaulted one they fall back to the API server's defaults.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::objects::ClusterObjects;
use crate::protocol::{PortProto, Protocol};

pub mod alloc;
pub mod endpoints;
pub mod proxy_input;
pub mod render;
pub mod validate;

pub use proxy_input::proxy_input;

/// A Service field the API server (or knetlab) refuses, relative to the object's root
/// (`spec.ports[1].targetPort`); the scenario parser turns it into file, line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Relative field path; empty for the whole object.
    pub path: String,
    /// Whether the mistake is the field being there at all (point at its key) rather
    /// than its value.
    pub at_key: bool,
    pub message: String,
}

impl FieldError {
    pub(crate) fn value(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            at_key: false,
            message: message.into(),
        }
    }

    pub(crate) fn key(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            at_key: true,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "field `{}`: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for FieldError {}

/// `spec.type`. `ExternalName` is refused by [`validate`], so it never reaches here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceType {
    ClusterIp,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    /// The name Kubernetes uses (`ClusterIP`).
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIp => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// The Service's type (`ClusterIP` when unset).
pub fn service_type(svc: &Service) -> ServiceType {
    match svc.spec.as_ref().and_then(|s| s.type_.as_deref()) {
        Some("NodePort") => ServiceType::NodePort,
        Some("LoadBalancer") => ServiceType::LoadBalancer,
        _ => ServiceType::ClusterIp,
    }
}

/// `(namespace, name)`, the namespace defaulting to `default`.
pub fn service_key(svc: &Service) -> (String, String) {
    (
        svc.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

/// `clusterIP: None`: no virtual IP, no proxy rules; DNS hands out the endpoints.
pub fn is_headless(svc: &Service) -> bool {
    written_cluster_ip(svc) == Some("None")
}

/// The cluster IP, once allocated (`None` for headless services).
pub fn cluster_ip(svc: &Service) -> Option<Ipv4Addr> {
    written_cluster_ip(svc)?.parse().ok()
}

/// `spec.clusterIP`, or `spec.clusterIPs[0]` when only that is written; empty = unset.
pub(crate) fn written_cluster_ip(svc: &Service) -> Option<&str> {
    let spec = svc.spec.as_ref()?;
    spec.cluster_ip
        .as_deref()
        .filter(|s| !s.is_empty())
        .or_else(|| spec.cluster_ips.as_ref()?.first().map(String::as_str))
        .filter(|s| !s.is_empty())
}

/// The Service's ports (empty for a port-less headless service).
pub fn ports(svc: &Service) -> &[ServicePort] {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default()
}

/// A service port's protocol (`TCP` when unset; an invalid one was refused at parse time).
pub fn port_protocol(port: &ServicePort) -> Protocol {
    port.protocol
        .as_deref()
        .and_then(|p| p.parse().ok())
        .unwrap_or(Protocol::Tcp)
}

/// A service port's name, `""` when unnamed (the form kube-proxy and Endpoints use).
pub fn port_name(port: &ServicePort) -> &str {
    port.name.as_deref().unwrap_or("")
}

/// The pod selector, `None` for a selector-less Service (whose Endpoints are written by
/// hand). `selector: {}` counts as none: the API server stores an empty map as no map.
pub fn selector(svc: &Service) -> Option<LabelSelector> {
    let map: &BTreeMap<String, String> = svc.spec.as_ref()?.selector.as_ref()?;
    if map.is_empty() {
        return None;
    }
    Some(LabelSelector {
        match_labels: Some(map.clone()),
        match_expressions: None,
    })
}

/// Whether traffic from outside may reach the Service (NodePort, LoadBalancer, or any
/// `externalIPs`): the services `externalTrafficPolicy` applies to.
pub fn externally_accessible(svc: &Service) -> bool {
    service_type(svc) != ServiceType::ClusterIp
        || svc
            .spec
            .as_ref()
            .and_then(|s| s.external_ips.as_ref())
            .is_some_and(|ips| !ips.is_empty())
}

/// `externalTrafficPolicy: Local`.
pub fn external_policy_local(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.external_traffic_policy.as_deref())
        == Some("Local")
}

/// `internalTrafficPolicy: Local`.
pub fn internal_policy_local(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.internal_traffic_policy.as_deref())
        == Some("Local")
}

/// The load-balancer addresses in `status.loadBalancer.ingress[].ip`.
pub fn load_balancer_ips(svc: &Service) -> Vec<Ipv4Addr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

/// `spec.externalIPs`, parsed.
pub fn external_ips(svc: &Service) -> Vec<Ipv4Addr> {
    svc.spec
        .as_ref()
        .and_then(|s| s.external_ips.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .collect()
}

/// The node ports the Service holds: its ports' `nodePort`s and its
/// `healthCheckNodePort`, sorted, without repeats (two ports of different protocols may
/// share one).
pub fn node_ports(svc: &Service) -> Vec<u16> {
    let mut out: Vec<u16> = ports(svc)
        .iter()
        .filter_map(|p| p.node_port)
        .chain(svc.spec.as_ref().and_then(|s| s.health_check_node_port))
        .filter_map(|n| u16::try_from(n).ok())
        .filter(|n| *n != 0)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The `PROTO/port`s a probe target `svc/NS/NAME:PORT` stands for: one per port of the
/// Service numbered `port` (53/TCP and 53/UDP, say), sorted. Empty when the Service or
/// the port does not exist (at this point of the scenario).
pub fn probe_ports(
    objects: &ClusterObjects,
    namespace: &str,
    name: &str,
    port: u16,
) -> Vec<PortProto> {
    let mut out: Vec<PortProto> = objects
        .services
        .get(&(namespace.to_string(), name.to_string()))
        .map(|svc| {
            ports(svc)
                .iter()
                .filter(|p| p.port == i32::from(port))
                .map(|p| PortProto::new(port_protocol(p), port))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out.dedup();
    out
}
