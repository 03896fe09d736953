//! The API server's checks on Services and Endpoints (`ValidateService`,
//! `ValidateEndpoints` in kubernetes' `pkg/apis/core/validation`), for what knetlab
//! models, so a manifest the parser accepts is one a real cluster would accept. What
//! knetlab does not model (ExternalName services, dual stack, load-balancer classes,
//! hostnames as load-balancer addresses, ...) is refused by name, never ignored.
//!
//! Metadata (names, labels) is checked by the scenario decoder like every other kind;
//! the checks here return paths relative to the object (`spec.ports[0].targetPort`).
//! Whether a cluster IP or node port is free is [`super::alloc`]'s business.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{FieldError, ServiceType};
use crate::names;
use crate::protocol::Protocol;

/// The node-port range (the API server's `--service-node-port-range` default).
pub const NODE_PORT_MIN: i32 = 30000;
pub const NODE_PORT_MAX: i32 = 32767;

/// The longest `sessionAffinityConfig.clientIP.timeoutSeconds` (one day).
pub const MAX_AFFINITY_TIMEOUT: i32 = 86400;

type Res = Result<(), FieldError>;

fn idx(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

/// An IPv4 address, or a message saying why the text is not one (IPv6 gets its own).
pub(crate) fn ipv4(text: &str) -> Result<Ipv4Addr, String> {
    match text.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => Ok(ip),
        Ok(IpAddr::V6(_)) => Err(format!(
            "{text} is an IPv6 address; knetlab's clusters are IPv4 only"
        )),
        Err(_) => Err(format!("{text:?} is not an IPv4 address")),
    }
}

/// Addresses the API server never accepts as an endpoint, external or load-balancer IP.
fn unusable(ip: Ipv4Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        Some("the unspecified address")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if ip.is_broadcast() {
        Some("the broadcast address")
    } else {
        None
    }
}

fn usable_ipv4(path: &str, text: &str, what: &str) -> Result<Ipv4Addr, FieldError> {
    let ip = ipv4(text).map_err(|m| FieldError::value(path, m))?;
    if let Some(why) = unusable(ip) {
        return Err(FieldError::value(
            path,
            format!("{ip} is {why}, which cannot be {what}"),
        ));
    }
    Ok(ip)
}

fn protocol(path: &str, p: Option<&str>) -> Result<Protocol, FieldError> {
    match p {
        None => Ok(Protocol::Tcp),
        Some(p) => p.parse().map_err(|e: String| FieldError::value(path, e)),
    }
}

fn port_number(path: &str, what: &str, n: i32) -> Res {
    if (1..=65535).contains(&n) {
        Ok(())
    } else {
        Err(FieldError::value(
            path,
            format!("{what} {n} is not a port number (1-65535)"),
        ))
    }
}

/// A required `port`: `k8s-openapi` reads a missing one as 0, which is never a port.
fn required_port(path: &str, n: i32, what: &str) -> Res {
    if n == 0 {
        return Err(FieldError::key(
            path,
            format!("`port` is required: {what} (1-65535)"),
        ));
    }
    port_number(path, "port", n)
}

/// Checks one Service (spec and status; metadata is checked by the decoder).
pub fn service(svc: &Service) -> Res {
    let Some(spec) = &svc.spec else {
        return Err(FieldError::key(
            "",
            "a Service needs a spec with at least one port",
        ));
    };
    let ty = match spec.type_.as_deref() {
        None | Some("ClusterIP") => ServiceType::ClusterIp,
        Some("NodePort") => ServiceType::NodePort,
        Some("LoadBalancer") => ServiceType::LoadBalancer,
        Some("ExternalName") => {
            return Err(FieldError::value(
                "spec.type",
                "type ExternalName is not supported yet (it is a DNS alias and knetlab has no cluster DNS yet); use ClusterIP, NodePort or LoadBalancer",
            ));
        }
        Some(other) => {
            return Err(FieldError::value(
                "spec.type",
                format!(
                    "unknown service type {other:?} (expected ClusterIP, NodePort or LoadBalancer)"
                ),
            ));
        }
    };
    if spec.external_name.is_some() {
        return Err(FieldError::key(
            "spec.externalName",
            "externalName is only for type ExternalName, which is not supported yet",
        ));
    }
    let headless = cluster_ip(spec, ty)?;
    ip_families(spec)?;
    ports(spec, ty, headless)?;
    for (k, v) in spec.selector.iter().flatten() {
        let p = format!("spec.selector.{k}");
        names::label_key(k).map_err(|e| FieldError::key(&p, e))?;
        names::label_value(v).map_err(|e| FieldError::value(&p, e))?;
    }
    affinity(spec)?;
    let external =
        ty != ServiceType::ClusterIp || spec.external_ips.as_ref().is_some_and(|v| !v.is_empty());
    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        usable_ipv4(&idx("spec.externalIPs", i), ip, "an external IP")?;
    }
    let etp_local = match spec.external_traffic_policy.as_deref() {
        None => false,
        Some(_) if !external => {
            return Err(FieldError::key(
                "spec.externalTrafficPolicy",
                "externalTrafficPolicy is only for services reachable from outside (type NodePort or LoadBalancer, or with externalIPs)",
            ));
        }
        Some("Cluster") => false,
        Some("Local") => true,
        Some(other) => {
            return Err(FieldError::value(
                "spec.externalTrafficPolicy",
                format!("unknown traffic policy {other:?} (expected Cluster or Local)"),
            ));
        }
    };
    if let Some(other) = spec
        .internal_traffic_policy
        .as_deref()
        .filter(|p| *p != "Cluster" && *p != "Local")
    {
        return Err(FieldError::value(
            "spec.internalTrafficPolicy",
            format!("unknown traffic policy {other:?} (expected Cluster or Local)"),
        ));
    }
    if let Some(n) = spec.health_check_node_port.filter(|n| *n != 0) {
        let p = "spec.healthCheckNodePort";
        if ty != ServiceType::LoadBalancer || !etp_local {
            return Err(FieldError::key(
                p,
                "healthCheckNodePort is only for LoadBalancer services with externalTrafficPolicy: Local",
            ));
        }
        node_port_range(p, n)?;
    }
    load_balancer_fields(spec, ty)?;
    if spec.traffic_distribution.is_some() {
        return Err(FieldError::key(
            "spec.trafficDistribution",
            "trafficDistribution is not supported yet (knetlab's nodes have no zones)",
        ));
    }
    status(svc, ty)
}

/// `clusterIP` / `clusterIPs`; returns whether the Service is headless.
fn cluster_ip(
    spec: &k8s_openapi::api::core::v1::ServiceSpec,
    ty: ServiceType,
) -> Result<bool, FieldError> {
    let ips = spec.cluster_ips.as_deref().unwrap_or_default();
    if ips.len() > 1 {
        return Err(FieldError::value(
            "spec.clusterIPs",
            "knetlab's clusters are IPv4 only: a Service has one cluster IP",
        ));
    }
    let single = spec.cluster_ip.as_deref().filter(|s| !s.is_empty());
    let (path, written) = match (single, ips.first()) {
        (Some(a), Some(b)) if a != b => {
            return Err(FieldError::value(
                "spec.clusterIPs[0]",
                format!("clusterIPs[0] ({b}) must equal clusterIP ({a})"),
            ));
        }
        (Some(a), _) => ("spec.clusterIP", a),
        (None, Some(b)) if !b.is_empty() => ("spec.clusterIPs[0]", b.as_str()),
        _ => return Ok(false),
    };
    if written == "None" {
        if ty != ServiceType::ClusterIp {
            return Err(FieldError::value(
                path,
                format!(
                    "a {} service cannot be headless (clusterIP: None); only type ClusterIP can",
                    ty.as_str()
                ),
            ));
        }
        return Ok(true);
    }
    ipv4(written).map_err(|m| {
        FieldError::value(
            path,
            format!("{m}; write an address of the serviceCIDR, None for a headless service, or leave it out to have one allocated"),
        )
    })?;
    Ok(false)
}

fn ip_families(spec: &k8s_openapi::api::core::v1::ServiceSpec) -> Res {
    for (i, f) in spec.ip_families.iter().flatten().enumerate() {
        let p = idx("spec.ipFamilies", i);
        match f.as_str() {
            "IPv4" if i == 0 => {}
            "IPv4" | "IPv6" => {
                return Err(FieldError::value(
                    p,
                    "knetlab's clusters are IPv4 only: ipFamilies can only be [IPv4]",
                ));
            }
            other => {
                return Err(FieldError::value(
                    p,
                    format!("unknown IP family {other:?} (expected IPv4)"),
                ));
            }
        }
    }
    match spec.ip_family_policy.as_deref() {
        None | Some("SingleStack") | Some("PreferDualStack") => Ok(()),
        Some("RequireDualStack") => Err(FieldError::value(
            "spec.ipFamilyPolicy",
            "knetlab's clusters are IPv4 only, so a dual-stack Service cannot be created; use SingleStack",
        )),
        Some(other) => Err(FieldError::value(
            "spec.ipFamilyPolicy",
            format!(
                "unknown IP family policy {other:?} (expected SingleStack, PreferDualStack or RequireDualStack)"
            ),
        )),
    }
}

fn node_port_range(path: &str, n: i32) -> Res {
    if (NODE_PORT_MIN..=NODE_PORT_MAX).contains(&n) {
        Ok(())
    } else {
        Err(FieldError::value(
            path,
            format!("{n} is outside the node-port range {NODE_PORT_MIN}-{NODE_PORT_MAX}"),
        ))
    }
}

fn ports(spec: &k8s_openapi::api::core::v1::ServiceSpec, ty: ServiceType, headless: bool) -> Res {
    let ports = spec.ports.as_deref().unwrap_or_default();
    if ports.is_empty() && !headless {
        let p = if spec.ports.is_some() {
            "spec.ports"
        } else {
            "spec"
        };
        return Err(FieldError::key(
            p,
            "a Service needs at least one port in spec.ports (only a headless service, clusterIP: None, may have none)",
        ));
    }
    let mut names_seen = BTreeSet::new();
    let mut ports_seen = BTreeSet::new();
    let mut node_ports_seen = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let pp = idx("spec.ports", i);
        match port.name.as_deref().filter(|n| !n.is_empty()) {
            None if ports.len() > 1 => {
                return Err(FieldError::key(
                    &pp,
                    "this Service has several ports, so each needs a `name`",
                ));
            }
            None => {}
            Some(n) => {
                let np = format!("{pp}.name");
                names::dns_label(n)
                    .map_err(|e| FieldError::value(&np, format!("bad port name: {e}")))?;
                if !names_seen.insert(n) {
                    return Err(FieldError::value(
                        np,
                        format!("two ports of this Service are called {n:?}"),
                    ));
                }
            }
        }
        required_port(
            &format!("{pp}.port"),
            port.port,
            "the port the Service listens on",
        )?;
        let proto = protocol(&format!("{pp}.protocol"), port.protocol.as_deref())?;
        if !ports_seen.insert((port.port, proto)) {
            return Err(FieldError::value(
                format!("{pp}.port"),
                format!("port {proto}/{} is listed twice", port.port),
            ));
        }
        let tp = format!("{pp}.targetPort");
        match &port.target_port {
            // 0 and "" mean "the same as port", as the API server defaults them.
            None | Some(IntOrString::Int(0)) => {}
            Some(IntOrString::Int(n)) => port_number(&tp, "targetPort", *n)?,
            Some(IntOrString::String(s)) if s.is_empty() => {}
            Some(IntOrString::String(s)) => names::iana_svc_name(s).map_err(|e| {
                FieldError::value(
                    &tp,
                    format!("{e}; a targetPort is a number or the name of a container port"),
                )
            })?,
        }
        if let Some(n) = port.node_port.filter(|n| *n != 0) {
            let np = format!("{pp}.nodePort");
            if ty == ServiceType::ClusterIp {
                return Err(FieldError::key(
                    np,
                    "nodePort is only for NodePort and LoadBalancer services",
                ));
            }
            node_port_range(&np, n)?;
            if !node_ports_seen.insert((n, proto)) {
                return Err(FieldError::value(
                    np,
                    format!("nodePort {proto}/{n} is used by two ports of this Service"),
                ));
            }
        }
    }
    Ok(())
}

fn affinity(spec: &k8s_openapi::api::core::v1::ServiceSpec) -> Res {
    let client_ip = match spec.session_affinity.as_deref() {
        None | Some("None") => false,
        Some("ClientIP") => true,
        Some(other) => {
            return Err(FieldError::value(
                "spec.sessionAffinity",
                format!("unknown session affinity {other:?} (expected None or ClientIP)"),
            ));
        }
    };
    let config = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref());
    match config {
        Some(_) if !client_ip => Err(FieldError::key(
            "spec.sessionAffinityConfig",
            "sessionAffinityConfig is only for sessionAffinity: ClientIP",
        )),
        Some(c) => match c.timeout_seconds {
            Some(t) if !(1..=MAX_AFFINITY_TIMEOUT).contains(&t) => Err(FieldError::value(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                format!("timeoutSeconds {t} must be between 1 and {MAX_AFFINITY_TIMEOUT}"),
            )),
            _ => Ok(()),
        },
        None => Ok(()),
    }
}

fn load_balancer_fields(spec: &k8s_openapi::api::core::v1::ServiceSpec, ty: ServiceType) -> Res {
    let lb = ty == ServiceType::LoadBalancer;
    let only_lb = |path: &str, field: &str| {
        FieldError::key(path, format!("{field} is only for type LoadBalancer"))
    };
    if let Some(ip) = &spec.load_balancer_ip {
        if !lb {
            return Err(only_lb("spec.loadBalancerIP", "loadBalancerIP"));
        }
        usable_ipv4("spec.loadBalancerIP", ip, "a load-balancer address")?;
    }
    for (i, r) in spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .enumerate()
    {
        if !lb {
            return Err(only_lb(
                "spec.loadBalancerSourceRanges",
                "loadBalancerSourceRanges",
            ));
        }
        // The API server trims and accepts host bits, as net.ParseCIDR does.
        r.trim().parse::<Ipv4Net>().map_err(|_| {
            FieldError::value(
                idx("spec.loadBalancerSourceRanges", i),
                format!("{r:?} is not an IPv4 CIDR (for example 203.0.113.0/24)"),
            )
        })?;
    }
    if spec.allocate_load_balancer_node_ports.is_some() && !lb {
        return Err(only_lb(
            "spec.allocateLoadBalancerNodePorts",
            "allocateLoadBalancerNodePorts",
        ));
    }
    if spec.load_balancer_class.is_some() {
        return Err(FieldError::key(
            "spec.loadBalancerClass",
            "loadBalancerClass is not supported yet: knetlab's own load-balancer controller assigns addresses from cluster.loadBalancerPool; leave it out",
        ));
    }
    Ok(())
}

/// `status.loadBalancer`: knetlab lets a manifest write the address an outside
/// load-balancer controller would have assigned.
fn status(svc: &Service, ty: ServiceType) -> Res {
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default();
    if ingress.is_empty() {
        return Ok(());
    }
    if ty != ServiceType::LoadBalancer {
        return Err(FieldError::key(
            "status.loadBalancer",
            "only a LoadBalancer service has load-balancer addresses",
        ));
    }
    for (i, ing) in ingress.iter().enumerate() {
        let p = idx("status.loadBalancer.ingress", i);
        if ing.hostname.is_some() {
            return Err(FieldError::key(
                format!("{p}.hostname"),
                "a load-balancer hostname is not supported yet (knetlab routes addresses, not names); write `ip`",
            ));
        }
        let Some(ip) = &ing.ip else {
            return Err(FieldError::key(
                &p,
                "a load-balancer ingress entry needs an `ip`",
            ));
        };
        usable_ipv4(&format!("{p}.ip"), ip, "a load-balancer address")?;
        match ing.ip_mode.as_deref() {
            None | Some("VIP") => {}
            Some("Proxy") => {
                return Err(FieldError::value(
                    format!("{p}.ipMode"),
                    "ipMode Proxy is not supported yet (it means the load balancer proxies and kube-proxy installs no rule for the address); use VIP",
                ));
            }
            Some(other) => {
                return Err(FieldError::value(
                    format!("{p}.ipMode"),
                    format!("unknown ipMode {other:?} (expected VIP or Proxy)"),
                ));
            }
        }
    }
    Ok(())
}

/// Checks one hand-written Endpoints object (subsets; metadata is checked by the decoder,
/// that its Service exists by the scenario parser).
pub fn endpoints(ep: &Endpoints) -> Res {
    for (i, subset) in ep.subsets.iter().flatten().enumerate() {
        let sp = idx("subsets", i);
        for (field, list) in [
            ("addresses", &subset.addresses),
            ("notReadyAddresses", &subset.not_ready_addresses),
        ] {
            for (j, a) in list.iter().flatten().enumerate() {
                address(&idx(&format!("{sp}.{field}"), j), a)?;
            }
        }
        let ports = subset.ports.as_deref().unwrap_or_default();
        let mut seen = BTreeSet::new();
        for (j, port) in ports.iter().enumerate() {
            let pp = idx(&format!("{sp}.ports"), j);
            match port.name.as_deref().filter(|n| !n.is_empty()) {
                None if ports.len() > 1 => {
                    return Err(FieldError::key(
                        &pp,
                        "this subset has several ports, so each needs a `name` (the name of the Service port it serves)",
                    ));
                }
                None => {}
                Some(n) => {
                    let np = format!("{pp}.name");
                    names::dns_label(n)
                        .map_err(|e| FieldError::value(&np, format!("bad port name: {e}")))?;
                    if !seen.insert(n) {
                        return Err(FieldError::value(
                            np,
                            format!("two ports of this subset are called {n:?}"),
                        ));
                    }
                }
            }
            required_port(
                &format!("{pp}.port"),
                port.port,
                "the port the endpoints serve on",
            )?;
            protocol(&format!("{pp}.protocol"), port.protocol.as_deref())?;
        }
    }
    Ok(())
}

fn address(path: &str, a: &EndpointAddress) -> Res {
    usable_ipv4(&format!("{path}.ip"), &a.ip, "an endpoint")?;
    if let Some(h) = &a.hostname {
        names::dns_label(h).map_err(|e| {
            FieldError::value(format!("{path}.hostname"), format!("bad hostname: {e}"))
        })?;
    }
    if let Some(r) = &a.target_ref
        && r.kind.as_deref().is_some_and(|k| k != "Pod")
    {
        return Err(FieldError::value(
            format!("{path}.targetRef.kind"),
            "an endpoint's targetRef names a Pod",
        ));
    }
    Ok(())
}
