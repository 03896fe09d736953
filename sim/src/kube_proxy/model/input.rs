//! What one node's kube-proxy knows, computed from the cluster's objects: the glue between
//! the Services and their computed endpoints ([`crate::services::endpoints`]) and the proxy
//! renderers' input ([`super::ProxyInput`]). kube-proxy builds the
//! same thing from its Service and EndpointSlice informers: one entry per service port
//! (headless ones included, which the renderer skips as kube-proxy does), the port's
//! endpoints with their node and EndpointSlice conditions, and the node's own name,
//! address and the cluster's pod CIDR (`--cluster-cidr`, the local-traffic detector).
//!
//! It also finds the port a probe cell means ([`find_port`]).

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;

use super::{Endpoint, ProxyConfig, ProxyInput, ServicePort, SessionAffinity};
use crate::objects::ClusterObjects;
use crate::plan::Plan;
use crate::services::endpoints::{self, ServiceEndpoints};
use crate::services::{
    DEFAULT_AFFINITY_TIMEOUT, ServiceType, cluster_ip, external_ips, external_policy_local,
    externally_accessible, internal_policy_local, load_balancer_ips, port_name, port_protocol,
    ports, service_type,
};

/// Why no input can be built for a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyInputError {
    #[error("node {0} is not in the cluster plan")]
    UnknownNode(String),
}

/// Everything node `node`'s kube-proxy would know, with kube-proxy's default
/// configuration ([`ProxyConfig::default`]).
pub fn proxy_input(
    objects: &ClusterObjects,
    plan: &Plan,
    node: &str,
) -> Result<ProxyInput, ProxyInputError> {
    node_input(plan, node, service_ports(objects))
}

/// [`proxy_input`] with the service ports already computed ([`service_ports`]), for a
/// caller that renders many nodes from one state.
pub fn node_input(
    plan: &Plan,
    node: &str,
    services: Vec<ServicePort>,
) -> Result<ProxyInput, ProxyInputError> {
    let np = plan
        .node(node)
        .ok_or_else(|| ProxyInputError::UnknownNode(node.to_string()))?;
    Ok(ProxyInput {
        node: node.to_string(),
        node_ip: np.underlay_ip,
        cluster_cidr: Some(plan.pod_cidr),
        config: ProxyConfig::default(),
        services,
    })
}

/// Every port of every Service, with its endpoints, sorted by namespace, name and port
/// order. The same for every node: what is local is the renderer's business.
pub fn service_ports(objects: &ClusterObjects) -> Vec<ServicePort> {
    objects
        .services
        .values()
        .flat_map(|svc| {
            let computed = endpoints::compute(objects, svc);
            service_ports_of(svc, &computed)
        })
        .collect()
}

/// The renderer's entries for one Service, given its computed endpoints.
pub fn service_ports_of(svc: &Service, computed: &ServiceEndpoints) -> Vec<ServicePort> {
    let spec = svc.spec.as_ref();
    let vip = cluster_ip(svc);
    let affinity = match spec.and_then(|s| s.session_affinity.as_deref()) {
        Some("ClientIP") => SessionAffinity::ClientIp {
            timeout_seconds: spec
                .and_then(|s| s.session_affinity_config.as_ref())
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
                .try_into()
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT as u32),
        },
        _ => SessionAffinity::None,
    };
    let source_ranges: Vec<Ipv4Net> = spec
        .and_then(|s| s.load_balancer_source_ranges.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|r| r.trim().parse::<Ipv4Net>().ok())
        .map(|n| n.trunc())
        .collect();
    // `externalTrafficPolicy` only means something for a port reachable from outside.
    let etp_local = externally_accessible(svc) && external_policy_local(svc);
    // kube-proxy keeps the health-check node port only of a Service that needs one
    // (`NeedsHealthCheck`: LoadBalancer with `externalTrafficPolicy: Local`).
    let needs_health_check = service_type(svc) == ServiceType::LoadBalancer && etp_local;
    let health = spec
        .filter(|_| needs_health_check)
        .and_then(|s| s.health_check_node_port)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n != 0);
    ports(svc)
        .iter()
        .filter_map(|p| {
            let port = u16::try_from(p.port).ok()?;
            Some(ServicePort {
                namespace: computed.namespace.clone(),
                name: computed.name.clone(),
                port_name: Some(port_name(p).to_string()).filter(|n| !n.is_empty()),
                protocol: port_protocol(p),
                cluster_ip: vip,
                port,
                node_port: p
                    .node_port
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|n| *n != 0),
                external_ips: external_ips(svc),
                load_balancer_ips: load_balancer_ips(svc),
                load_balancer_source_ranges: source_ranges.clone(),
                session_affinity: affinity,
                external_policy_local: etp_local,
                internal_policy_local: internal_policy_local(svc),
                health_check_node_port: health,
                endpoints: computed
                    .for_port(p)
                    .into_iter()
                    .map(|e| Endpoint {
                        ip: e.ip,
                        port: e.port,
                        node: e.node,
                        ready: e.ready,
                        serving: e.serving,
                        terminating: e.terminating,
                    })
                    .collect(),
            })
        })
        .collect()
}

/// Service `namespace/name`'s port numbered `port` with `protocol` (what a probe cell
/// `svc/NS/NAME:PORT` on `PROTO/PORT` means), as the renderer sees it, if it has one.
pub fn find_port<'a>(
    ports: &'a [ServicePort],
    namespace: &str,
    name: &str,
    port: u16,
    protocol: crate::protocol::Protocol,
) -> Option<&'a ServicePort> {
    ports.iter().find(|p| {
        p.namespace == namespace && p.name == name && p.port == port && p.protocol == protocol
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterConfig;
    use crate::kube_proxy::iptables::render;
    use crate::kube_proxy::model::{ClusterIpFate, cluster_ip_backends, cluster_ip_fate};
    use crate::objects::{Object, PodRef};
    use k8s_openapi::api::core::v1::{Endpoints, Namespace, Pod};
    use serde_json::{Value, json};
    use std::net::Ipv4Addr;

    fn plan() -> Plan {
        Plan::new("kl000000", &plan_cluster()).unwrap()
    }

    fn objects() -> ClusterObjects {
        let mut o = ClusterObjects::new(vec!["n1".into(), "n2".into()]);
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
        o.apply(Object::Namespace(ns));
        for (name, node, ip, ready) in [
            ("web-1", "n1", "10.244.1.2", true),
            ("web-2", "n2", "10.244.2.2", true),
            ("web-3", "n2", "10.244.2.3", false),
        ] {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"namespace": "default", "name": name, "labels": {"app": "web"},
                    "annotations": {"knetlab.io/ready": if ready { "true" } else { "false" }}},
                "spec": {"nodeName": node, "containers": [{"name": "c",
                    "ports": [{"name": "http", "containerPort": 8080}]}]},
            }))
            .unwrap();
            o.apply(Object::Pod(pod));
            o.set_pod_ip(&PodRef::new("default", name), ip.parse().unwrap());
        }
        o
    }

    fn service(o: &mut ClusterObjects, value: Value) {
        let svc: Service = serde_json::from_value(value).unwrap();
        let svc = crate::services::alloc::allocate(
            &o.services,
            &crate::services::alloc::ServiceRanges::new(&plan_cluster(), None),
            svc,
        )
        .unwrap();
        o.apply(Object::Service(svc));
    }

    fn plan_cluster() -> ClusterConfig {
        ClusterConfig {
            nodes: vec!["n1".into(), "n2".into()],
            pod_cidr: "10.244.0.0/16".parse().unwrap(),
            service_cidr: "10.96.0.0/12".parse().unwrap(),
            network: Default::default(),
            policy: Default::default(),
            deny: Default::default(),
            proxy: Default::default(),
            external_hosts: vec![],
            cni: Default::default(),
        }
    }

    #[test]
    fn a_clusterip_service_becomes_one_entry_per_port_with_its_endpoints() {
        let mut o = objects();
        service(
            &mut o,
            json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"},
                "sessionAffinity": "ClientIP",
                "ports": [{"name": "http", "port": 80, "targetPort": "http"},
                          {"port": 81, "protocol": "UDP", "targetPort": 9000}]}}),
        );
        let input = proxy_input(&o, &plan(), "n2").unwrap();
        assert_eq!(input.node, "n2");
        assert_eq!(input.node_ip.to_string(), "192.168.200.12");
        assert_eq!(input.cluster_cidr.unwrap().to_string(), "10.244.0.0/16");
        assert_eq!(input.services.len(), 2);
        let http = &input.services[0];
        assert_eq!(http.port_name_string(), "default/web:http");
        assert_eq!(http.cluster_ip.unwrap().to_string(), "10.96.0.10");
        assert_eq!(http.port, 80);
        assert_eq!(
            http.session_affinity,
            SessionAffinity::ClientIp {
                timeout_seconds: 10800
            }
        );
        let eps: Vec<(String, u16, Option<&str>, bool)> = http
            .endpoints
            .iter()
            .map(|e| (e.ip.to_string(), e.port, e.node.as_deref(), e.ready))
            .collect();
        assert_eq!(
            eps,
            [
                ("10.244.1.2".into(), 8080, Some("n1"), true),
                ("10.244.2.2".into(), 8080, Some("n2"), true),
                ("10.244.2.3".into(), 8080, Some("n2"), false),
            ]
        );
        // The unnamed port: no port name, numeric target port, its own protocol.
        let udp = &input.services[1];
        assert_eq!(udp.port_name, None);
        assert_eq!(udp.port_name_string(), "default/web");
        assert_eq!(udp.protocol, crate::protocol::Protocol::Udp);
        assert!(udp.endpoints.iter().all(|e| e.port == 9000));
        assert!(proxy_input(&o, &plan(), "n9").is_err());
    }

    #[test]
    fn only_ready_backends_are_reachable_and_the_rules_agree() {
        let mut o = objects();
        service(
            &mut o,
            json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
        );
        let input = proxy_input(&o, &plan(), "n1").unwrap();
        let port = &input.services[0];
        let backends: Vec<String> = cluster_ip_backends(port, "n1")
            .iter()
            .map(|e| e.ip.to_string())
            .collect();
        assert_eq!(backends, ["10.244.1.2", "10.244.2.2"]);
        // The renderer made exactly one SEP chain per backend the oracle counts.
        let rules = render(&input).unwrap();
        let seps = rules
            .chains_of(&port.port_name_string(), port.protocol)
            .into_iter()
            .filter(|c| c.starts_with("KUBE-SEP-"))
            .count();
        assert_eq!(seps, backends.len());
    }

    #[test]
    fn pods_being_deleted_are_terminating_endpoints_used_only_when_none_is_ready() {
        let mut o = objects();
        service(
            &mut o,
            json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
        );
        // web-1 and web-2 (the ready ones) are being deleted within their grace period.
        for name in ["web-1", "web-2"] {
            let key = PodRef::new("default", name);
            let mut pod = o.pods[&key].clone();
            pod.metadata.deletion_timestamp =
                Some(serde_json::from_value(json!("2026-01-01T00:00:00Z")).unwrap());
            o.apply(Object::Pod(pod));
        }
        let input = proxy_input(&o, &plan(), "n1").unwrap();
        let port = &input.services[0];
        let conditions: Vec<(String, bool, bool, bool)> = port
            .endpoints
            .iter()
            .map(|e| (e.ip.to_string(), e.ready, e.serving, e.terminating))
            .collect();
        assert_eq!(
            conditions,
            [
                ("10.244.1.2".into(), false, true, true),
                ("10.244.2.2".into(), false, true, true),
                ("10.244.2.3".into(), false, false, false),
            ]
        );
        // No ready endpoint anywhere: kube-proxy falls back to the serving, terminating ones.
        let backends: Vec<String> = cluster_ip_backends(port, "n1")
            .iter()
            .map(|e| e.ip.to_string())
            .collect();
        assert_eq!(backends, ["10.244.1.2", "10.244.2.2"]);
        // v1/Endpoints leaves terminating pods out; EndpointSlices keep them.
        let svc = &o.services[&("default".to_string(), "web".to_string())];
        let computed = crate::services::endpoints::compute(&o, svc);
        let listed = computed.to_endpoints(svc).unwrap();
        let listed: Vec<String> = listed
            .subsets
            .iter()
            .flatten()
            .flat_map(|s| {
                s.not_ready_addresses
                    .iter()
                    .chain(s.addresses.iter())
                    .flatten()
            })
            .map(|a| a.ip.clone())
            .collect();
        assert_eq!(listed, ["10.244.2.3"]);
        let terminating = computed
            .slices(svc)
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.terminating) == Some(true))
            .count();
        assert_eq!(terminating, 2);
    }

    #[test]
    fn only_a_load_balancer_with_local_policy_keeps_its_health_check_port() {
        let o = objects();
        let health = |ty: &str, policy: &str| {
            let svc: Service = serde_json::from_value(json!({
                "metadata": {"namespace": "default", "name": "web"},
                "spec": {"type": ty, "externalTrafficPolicy": policy, "clusterIP": "10.96.0.10",
                    "healthCheckNodePort": 32000, "selector": {"app": "web"},
                    "ports": [{"port": 80, "nodePort": 30080}]}}))
            .unwrap();
            let computed = crate::services::endpoints::compute(&o, &svc);
            service_ports_of(&svc, &computed)[0].health_check_node_port
        };
        assert_eq!(health("LoadBalancer", "Local"), Some(32000));
        assert_eq!(health("LoadBalancer", "Cluster"), None);
        assert_eq!(health("NodePort", "Local"), None);
    }

    #[test]
    fn internal_traffic_policy_local_keeps_to_the_node() {
        let mut o = objects();
        service(
            &mut o,
            json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"},
                "internalTrafficPolicy": "Local",
                "ports": [{"port": 80, "targetPort": 8080}]}}),
        );
        let input = proxy_input(&o, &plan(), "n1").unwrap();
        let port = &input.services[0];
        assert!(port.internal_policy_local);
        let on = |n: &str| -> Vec<String> {
            match cluster_ip_fate(port, n) {
                ClusterIpFate::Backends(b) => b.iter().map(|e| e.ip.to_string()).collect(),
                other => vec![format!("{other:?}")],
            }
        };
        assert_eq!(on("n1"), ["10.244.1.2"]);
        assert_eq!(on("n2"), ["10.244.2.2"]);
        // A node with no pod of the service drops (kube-proxy's "has no local endpoints").
        let mut none = port.clone();
        none.endpoints.retain(|e| e.node.as_deref() != Some("n1"));
        assert_eq!(cluster_ip_fate(&none, "n1"), ClusterIpFate::DroppedNoLocal);
    }

    #[test]
    fn headless_selectorless_and_empty_services() {
        let mut o = objects();
        service(
            &mut o,
            json!({"metadata": {"name": "headless"}, "spec": {"clusterIP": "None",
                "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
        );
        service(
            &mut o,
            json!({"metadata": {"name": "my-service"}, "spec": {
                "ports": [{"port": 80, "targetPort": 9376}]}}),
        );
        service(
            &mut o,
            json!({"metadata": {"name": "nobody"}, "spec": {"selector": {"app": "none"},
                "ports": [{"port": 80}]}}),
        );
        let ep: Endpoints = serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "my-service"},
            "subsets": [{"addresses": [{"ip": "192.0.2.42"}], "ports": [{"port": 9376}]}],
        }))
        .unwrap();
        o.apply(Object::Endpoints(ep));
        let input = proxy_input(&o, &plan(), "n1").unwrap();
        let by_name = |n: &str| input.services.iter().find(|p| p.name == n).unwrap();
        // Headless: listed (kube-proxy's informer sees it) but without a cluster IP.
        assert_eq!(by_name("headless").cluster_ip, None);
        assert_eq!(by_name("headless").endpoints.len(), 3);
        let manual = by_name("my-service");
        assert_eq!(manual.endpoints.len(), 1);
        assert_eq!(manual.endpoints[0].ip.to_string(), "192.0.2.42");
        assert_eq!(manual.endpoints[0].port, 9376);
        assert_eq!(manual.endpoints[0].node, None);
        assert_eq!(
            cluster_ip_fate(by_name("nobody"), "n1"),
            ClusterIpFate::Rejected
        );
        let rules = render(&input).unwrap();
        let text = rules.full_restore();
        assert!(
            text.contains("\"default/nobody has no endpoints\""),
            "{text}"
        );
        assert!(!text.contains("default/headless"), "{text}");
        assert!(text.contains("--to-destination 192.0.2.42:9376"), "{text}");
    }

    #[test]
    fn node_ports_external_addresses_and_policies_are_filled() {
        let mut o = objects();
        service(
            &mut o,
            json!({"metadata": {"name": "np"}, "spec": {"type": "NodePort",
                "selector": {"app": "web"}, "externalTrafficPolicy": "Local",
                "externalIPs": ["203.0.113.7"],
                "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080}]}}),
        );
        let input = proxy_input(&o, &plan(), "n1").unwrap();
        let p = &input.services[0];
        assert_eq!(p.node_port, Some(30080));
        assert_eq!(p.external_ips, ["203.0.113.7".parse::<Ipv4Addr>().unwrap()]);
        assert!(p.external_policy_local);
        assert!(!p.internal_policy_local);
        assert!(p.externally_accessible());
    }
}
