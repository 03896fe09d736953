//! Reading a stored Service's fields (type, cluster IP, ports, selector, traffic
//! policies, load-balancer and external addresses, node ports) and the API server's
//! defaulting that every stored Service went through ([`defaults`]); on an undefaulted
//! Service the readers fall back to the API server's defaults.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    ClientIPConfig, Service, ServicePort, ServiceSpec, SessionAffinityConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::protocol::Protocol;

/// `sessionAffinityConfig.clientIP.timeoutSeconds` when unset: three hours.
pub const DEFAULT_AFFINITY_TIMEOUT: i32 = 10800;

/// The API server's defaults, as `kubectl get svc -o yaml` shows them: type ClusterIP,
/// protocol TCP, targetPort = port, sessionAffinity None (ClientIP: a 3-hour timeout),
/// traffic policies Cluster, IPv4 single stack, `allocateLoadBalancerNodePorts: true`,
/// ipMode VIP, namespace `default`, `clusterIPs` mirroring `clusterIP`. Idempotent.
pub fn defaults(svc: &mut Service) {
    svc.metadata
        .namespace
        .get_or_insert_with(|| "default".into());
    let external = externally_accessible(svc);
    let spec = svc.spec.get_or_insert_with(ServiceSpec::default);
    let ty = spec.type_.get_or_insert_with(|| "ClusterIP".into()).clone();
    for p in spec.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".into());
        let unset = match &p.target_port {
            None | Some(IntOrString::Int(0)) => true,
            Some(IntOrString::String(s)) => s.is_empty(),
            Some(IntOrString::Int(_)) => false,
        };
        if unset {
            p.target_port = Some(IntOrString::Int(p.port));
        }
        if p.node_port == Some(0) {
            p.node_port = None;
        }
    }
    let affinity = spec.session_affinity.get_or_insert_with(|| "None".into());
    if affinity == "ClientIP" {
        let config = spec
            .session_affinity_config
            .get_or_insert_with(SessionAffinityConfig::default)
            .client_ip
            .get_or_insert_with(ClientIPConfig::default);
        config
            .timeout_seconds
            .get_or_insert(DEFAULT_AFFINITY_TIMEOUT);
    }
    spec.internal_traffic_policy
        .get_or_insert_with(|| "Cluster".into());
    if external {
        spec.external_traffic_policy
            .get_or_insert_with(|| "Cluster".into());
    }
    if ty == "LoadBalancer" {
        spec.allocate_load_balancer_node_ports.get_or_insert(true);
    }
    if spec.health_check_node_port == Some(0) {
        spec.health_check_node_port = None;
    }
    if spec.cluster_ip.as_deref() == Some("") {
        spec.cluster_ip = None;
    }
    match (&spec.cluster_ip, &spec.cluster_ips) {
        (Some(ip), None) => spec.cluster_ips = Some(vec![ip.clone()]),
        (None, Some(ips)) if !ips.is_empty() => spec.cluster_ip = Some(ips[0].clone()),
        _ => {}
    }
    spec.ip_families.get_or_insert_with(|| vec!["IPv4".into()]);
    spec.ip_family_policy
        .get_or_insert_with(|| "SingleStack".into());
    for ing in svc
        .status
        .iter_mut()
        .filter_map(|s| s.load_balancer.as_mut())
        .filter_map(|lb| lb.ingress.as_mut())
        .flatten()
    {
        if ing.ip.is_some() {
            ing.ip_mode.get_or_insert_with(|| "VIP".into());
        }
    }
}

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
