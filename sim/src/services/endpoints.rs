//! Which pods back which port of a Service, as the endpoints and EndpointSlice
//! controllers compute it (kubernetes' `endpointslice/utils.go` `podToEndpoint`,
//! `ShouldPodBeInEndpoints`, and `FindPort`):
//!
//! - a Service with a selector is backed by the pods of its namespace whose labels match
//!   (through [`crate::selector::matches`]), that have an address and have not finished;
//! - each service port's `targetPort` is resolved per pod: a number is used as is, a
//!   name is looked up among the pod's container ports **with the service port's
//!   protocol**, so two pods may serve one service port on different numbers, and a pod
//!   without such a port does not back that service port;
//! - a Service without a selector is backed by the hand-written `v1/Endpoints` object of
//!   the same name, if any (the EndpointSlice mirroring controller's job).
//!
//! **Readiness.** `status` is not something `kubectl apply` sets, so knetlab marks a pod
//! not ready with the annotation `knetlab.io/ready: "false"` (a step can flip it by
//! applying the pod again with the annotation changed: annotations are metadata, which
//! may change, unlike the spec). Every other pod is ready, as a pod without readiness
//! probe is once its containers run. Not-ready pods are listed as `notReadyAddresses`
//! (EndpointSlice: `ready: false, serving: false`) and proxies skip them, unless the
//! Service sets `publishNotReadyAddresses`.
//!
//! **Terminating.** A pod with `metadata.deletionTimestamp` is being deleted within its
//! grace period: EndpointSlices keep it with `terminating: true` and `ready: false`
//! (`serving` still its readiness), so that kube-proxy can fall back to serving,
//! terminating endpoints while none is ready; `v1/Endpoints` leaves it out. knetlab
//! itself deletes pods at once, so only a manifest that carries the field (a pod caught
//! mid-deletion) gives one.
//!
//! The result is kept as one [`Address`] per backend with the ports it serves, which
//! gives the three shapes downstream code wants: per service port
//! ([`ServiceEndpoints::for_port`], what kube-proxy programs), `v1/Endpoints`
//! ([`ServiceEndpoints::to_endpoints`]) and EndpointSlices with a `nodeName` per endpoint
//! ([`ServiceEndpoints::slices`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CoreEndpointPort, EndpointSubset, Endpoints, ObjectReference,
    Pod, Service, ServicePort,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint as SliceEndpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};

use super::{is_headless, port_name, port_protocol, selector, service_key};
use crate::objects::{ClusterObjects, PodRef, declared_ports, pod_ip, pod_labels, pod_node};
use crate::protocol::Protocol;

/// The annotation that marks a pod not ready (`"false"`); anything else, or none, is ready.
pub const READY_ANNOTATION: &str = "knetlab.io/ready";

/// The label every EndpointSlice carries with its Service's name.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming the controller that manages an EndpointSlice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// The label on the Endpoints and slices of a headless Service.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// The EndpointSlice controller (Services with a selector).
pub const SLICE_CONTROLLER: &str = "endpointslice-controller.k8s.io";
/// The EndpointSlice mirroring controller (hand-written Endpoints).
pub const MIRRORING_CONTROLLER: &str = "endpointslicemirroring-controller.k8s.io";
/// The most endpoints one slice holds (kube-controller-manager's default).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// Whether the pod is ready: no `knetlab.io/ready: "false"` annotation.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(READY_ANNOTATION))
        .is_none_or(|v| v != "false")
}

/// The container port number a service port reaches on this pod (`FindPort`): a numeric
/// `targetPort` as is, an unset one as the service port, a named one looked up among the
/// pod's container ports of the same protocol; `None` when the pod has no such port.
pub fn find_port(pod: &Pod, port: &ServicePort) -> Option<u16> {
    match &port.target_port {
        None | Some(IntOrString::Int(0)) => u16::try_from(port.port).ok(),
        Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
        Some(IntOrString::String(s)) if s.is_empty() => u16::try_from(port.port).ok(),
        Some(IntOrString::String(name)) => {
            let protocol = port_protocol(port);
            declared_ports(pod)
                .into_iter()
                .find(|d| d.name.as_deref() == Some(name.as_str()) && d.port.protocol == protocol)
                .map(|d| d.port.port)
        }
    }
}

/// One port a backend serves, named after the service port it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointPort {
    /// The service port's name (`""` when unnamed).
    pub name: String,
    pub protocol: Protocol,
    /// The number on the backend (the resolved `targetPort`).
    pub port: u16,
}

/// One backend address of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub ip: Ipv4Addr,
    /// Whether proxies send traffic here: the pod is ready, or the Service publishes
    /// not-ready addresses (EndpointSlice `ready`).
    pub ready: bool,
    /// The pod's own readiness (EndpointSlice `serving`).
    pub serving: bool,
    /// The pod is being deleted (`deletionTimestamp` set; EndpointSlice `terminating`).
    pub terminating: bool,
    /// The node the pod runs on; hand-written endpoints have none unless they say so.
    pub node: Option<String>,
    /// The pod (hand-written endpoints: the `targetRef`, if it names a pod).
    pub pod: Option<PodRef>,
    /// `spec.hostname` of a pod whose `spec.subdomain` is the Service's name.
    pub hostname: Option<String>,
    /// Sorted; empty when the pod has none of the Service's target ports.
    pub ports: Vec<EndpointPort>,
}

/// Where a Service's backends come from. (Few of these exist at once: boxing the
/// Endpoints would buy nothing.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// Computed from the Service's selector.
    Selector,
    /// The hand-written `v1/Endpoints` object of a selector-less Service.
    Manual(Endpoints),
    /// A selector-less Service with no Endpoints object: no backends.
    Missing,
}

/// The backends of one Service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceEndpoints {
    pub namespace: String,
    pub name: String,
    pub origin: Origin,
    pub headless: bool,
    /// Sorted by address, ready ones first for an address listed both ways.
    pub addresses: Vec<Address>,
}

/// One backend of one service port: what a proxy load-balances over.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub node: Option<String>,
    pub pod: Option<PodRef>,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.ip, self.port)
    }
}

/// The backends of one Service, given the cluster's objects.
pub fn compute(objects: &ClusterObjects, svc: &Service) -> ServiceEndpoints {
    let (namespace, name) = service_key(svc);
    let headless = is_headless(svc);
    let (origin, mut addresses) = match selector(svc) {
        Some(sel) => (Origin::Selector, from_pods(objects, svc, &sel)),
        None => match objects.endpoints.get(&(namespace.clone(), name.clone())) {
            Some(ep) => (Origin::Manual(ep.clone()), from_endpoints(ep)),
            None => (Origin::Missing, vec![]),
        },
    };
    addresses.sort_by_key(|a| (a.ip, !a.ready));
    ServiceEndpoints {
        namespace,
        name,
        origin,
        headless,
        addresses,
    }
}

/// The backends of every Service, by `(namespace, name)`.
pub fn all(objects: &ClusterObjects) -> Vec<ServiceEndpoints> {
    objects
        .services
        .values()
        .map(|svc| compute(objects, svc))
        .collect()
}

fn from_pods(
    objects: &ClusterObjects,
    svc: &Service,
    sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
) -> Vec<Address> {
    let (namespace, name) = service_key(svc);
    let publish_not_ready = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let service_ports = super::ports(svc);
    objects
        .pods
        .iter()
        .filter(|(r, _)| r.namespace == namespace)
        .filter(|(_, pod)| crate::selector::matches(sel, &pod_labels(pod)))
        .filter(|(_, pod)| {
            // Finished pods leave; knetlab's pods run until deleted.
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .filter_map(|(r, pod)| {
            let ip = pod_ip(pod)?;
            let serving = pod_ready(pod);
            let terminating = pod.metadata.deletion_timestamp.is_some();
            let mut ports: Vec<EndpointPort> = service_ports
                .iter()
                .filter_map(|sp| {
                    Some(EndpointPort {
                        name: port_name(sp).to_string(),
                        protocol: port_protocol(sp),
                        port: find_port(pod, sp)?,
                    })
                })
                .collect();
            ports.sort();
            let spec = pod.spec.as_ref();
            let hostname = spec
                .filter(|s| s.subdomain.as_deref() == Some(name.as_str()))
                .and_then(|s| s.hostname.clone());
            Some(Address {
                ip,
                // A terminating pod is never ready, unless not-ready ones are published.
                ready: publish_not_ready || (serving && !terminating),
                serving,
                terminating,
                node: pod_node(pod).map(str::to_string),
                pod: Some(r.clone()),
                hostname,
                ports,
            })
        })
        .collect()
}

fn from_endpoints(ep: &Endpoints) -> Vec<Address> {
    // One address may stand in several subsets (with different ports): merge them.
    let mut by_ip: BTreeMap<(Ipv4Addr, bool), Address> = BTreeMap::new();
    for subset in ep.subsets.iter().flatten() {
        let ports: Vec<EndpointPort> = subset
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(EndpointPort {
                    name: p.name.clone().unwrap_or_default(),
                    protocol: p.protocol.as_deref().unwrap_or("TCP").parse().ok()?,
                    port: u16::try_from(p.port).ok()?,
                })
            })
            .collect();
        for (list, ready) in [
            (&subset.addresses, true),
            (&subset.not_ready_addresses, false),
        ] {
            for a in list.iter().flatten() {
                let Ok(ip) = a.ip.parse::<Ipv4Addr>() else {
                    continue;
                };
                let entry = by_ip.entry((ip, ready)).or_insert_with(|| Address {
                    ip,
                    ready,
                    serving: ready,
                    terminating: false,
                    node: a.node_name.clone(),
                    pod: a
                        .target_ref
                        .as_ref()
                        .and_then(|r| Some(PodRef::new(r.namespace.clone()?, r.name.clone()?))),
                    hostname: a.hostname.clone(),
                    ports: vec![],
                });
                entry.ports.extend(ports.iter().cloned());
                entry.ports.sort();
                entry.ports.dedup();
            }
        }
    }
    by_ip.into_values().collect()
}

impl ServiceEndpoints {
    /// The backends of one service port (matched by port name and protocol, as
    /// kube-proxy matches EndpointSlice ports), ready or not, sorted.
    pub fn for_port(&self, port: &ServicePort) -> Vec<Endpoint> {
        let name = port_name(port);
        let protocol = port_protocol(port);
        let mut out: Vec<Endpoint> = self
            .addresses
            .iter()
            .flat_map(|a| {
                a.ports
                    .iter()
                    .filter(|p| p.name == name && p.protocol == protocol)
                    .map(|p| Endpoint {
                        ip: a.ip,
                        port: p.port,
                        ready: a.ready,
                        serving: a.serving,
                        terminating: a.terminating,
                        node: a.node.clone(),
                        pod: a.pod.clone(),
                    })
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The addresses grouped by node (`None`: endpoints outside the cluster's nodes, as
    /// hand-written ones usually are). What "local endpoints" means to a proxy.
    pub fn by_node(&self) -> BTreeMap<Option<&str>, Vec<&Address>> {
        let mut out: BTreeMap<Option<&str>, Vec<&Address>> = BTreeMap::new();
        for a in &self.addresses {
            out.entry(a.node.as_deref()).or_default().push(a);
        }
        out
    }

    /// The addresses grouped by the ports they serve, each group sorted by address:
    /// the unit both `v1/Endpoints` subsets and EndpointSlices are made of.
    fn by_ports(&self) -> BTreeMap<&[EndpointPort], Vec<&Address>> {
        let mut out: BTreeMap<&[EndpointPort], Vec<&Address>> = BTreeMap::new();
        for a in &self.addresses {
            out.entry(a.ports.as_slice()).or_default().push(a);
        }
        out
    }

    fn labels(&self, svc: &Service) -> BTreeMap<String, String> {
        let mut labels = svc.metadata.labels.clone().unwrap_or_default();
        if self.headless {
            labels.insert(HEADLESS_LABEL.into(), String::new());
        }
        labels
    }

    /// The `v1/Endpoints` object: the hand-written one for a selector-less Service, the
    /// endpoints controller's for one with a selector (one subset per set of ports,
    /// ready pods under `addresses`, the others under `notReadyAddresses`), `None` when
    /// a selector-less Service has none.
    pub fn to_endpoints(&self, svc: &Service) -> Option<Endpoints> {
        match &self.origin {
            Origin::Manual(ep) => return Some(ep.clone()),
            Origin::Missing => return None,
            Origin::Selector => {}
        }
        let portless = super::ports(svc).is_empty();
        let subsets: Vec<EndpointSubset> = self
            .by_ports()
            .into_iter()
            // A pod with none of the target ports is left out, unless the Service has no
            // ports at all (a headless Service's plain address list).
            .filter(|(ports, _)| !ports.is_empty() || portless)
            .map(|(ports, addresses)| {
                let list = |ready: bool| {
                    let v: Vec<EndpointAddress> = addresses
                        .iter()
                        .filter(|a| a.ready == ready)
                        // The endpoints controller leaves terminating pods out (unless
                        // not-ready addresses are published, which makes them ready).
                        .filter(|a| a.ready || !a.terminating)
                        .map(|a| EndpointAddress {
                            ip: a.ip.to_string(),
                            hostname: a.hostname.clone(),
                            node_name: a.node.clone(),
                            target_ref: a.pod.as_ref().map(pod_reference),
                        })
                        .collect();
                    (!v.is_empty()).then_some(v)
                };
                EndpointSubset {
                    addresses: list(true),
                    not_ready_addresses: list(false),
                    ports: (!ports.is_empty()).then(|| {
                        ports
                            .iter()
                            .map(|p| CoreEndpointPort {
                                name: (!p.name.is_empty()).then(|| p.name.clone()),
                                port: i32::from(p.port),
                                protocol: Some(p.protocol.as_str().into()),
                                app_protocol: None,
                            })
                            .collect()
                    }),
                }
            })
            .collect();
        Some(Endpoints {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(self.labels(svc)).filter(|l| !l.is_empty()),
                ..Default::default()
            },
            subsets: (!subsets.is_empty()).then_some(subsets),
        })
    }

    /// The EndpointSlices, as the EndpointSlice controller (selector) or the mirroring
    /// controller (hand-written Endpoints) would write them: one slice per set of ports,
    /// at most 100 endpoints each, every endpoint with its `nodeName`. A Service with a
    /// selector and no matching pod has one empty slice, as in a real cluster. Names
    /// are `<service>-<5 characters>` like the controller's `generateName`, the
    /// characters derived from the Service and the slice's place so they are stable.
    pub fn slices(&self, svc: &Service) -> Vec<EndpointSlice> {
        let controller = match &self.origin {
            Origin::Selector => SLICE_CONTROLLER,
            Origin::Manual(_) => MIRRORING_CONTROLLER,
            Origin::Missing => return vec![],
        };
        let mut labels = self.labels(svc);
        labels.insert(SERVICE_NAME_LABEL.into(), self.name.clone());
        labels.insert(MANAGED_BY_LABEL.into(), controller.into());
        let mut groups: Vec<(&[EndpointPort], Vec<&Address>)> = Vec::new();
        for (ports, addresses) in self.by_ports() {
            for chunk in addresses.chunks(MAX_ENDPOINTS_PER_SLICE) {
                groups.push((ports, chunk.to_vec()));
            }
        }
        if groups.is_empty() && self.origin == Origin::Selector {
            groups.push((&[], vec![]));
        }
        groups
            .into_iter()
            .enumerate()
            .map(|(i, (ports, addresses))| EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(slice_name(&self.namespace, &self.name, i)),
                    namespace: Some(self.namespace.clone()),
                    labels: Some(labels.clone()),
                    ..Default::default()
                },
                address_type: "IPv4".into(),
                endpoints: addresses
                    .iter()
                    .map(|a| SliceEndpoint {
                        addresses: vec![a.ip.to_string()],
                        conditions: Some(EndpointConditions {
                            ready: Some(a.ready),
                            serving: Some(a.serving),
                            terminating: Some(a.terminating),
                        }),
                        hostname: a.hostname.clone(),
                        node_name: a.node.clone(),
                        target_ref: a.pod.as_ref().map(pod_reference),
                        ..Default::default()
                    })
                    .collect(),
                ports: (!ports.is_empty()).then(|| {
                    ports
                        .iter()
                        .map(|p| SlicePort {
                            name: Some(p.name.clone()),
                            port: Some(i32::from(p.port)),
                            protocol: Some(p.protocol.as_str().into()),
                            app_protocol: None,
                        })
                        .collect()
                }),
            })
            .collect()
    }
}

fn pod_reference(p: &PodRef) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: Some(p.namespace.clone()),
        name: Some(p.name.clone()),
        ..Default::default()
    }
}

/// `<service>-xxxxx` with `generateName`'s alphabet (no vowels, no look-alikes), derived
/// from the Service and the slice's index instead of drawn at random.
fn slice_name(namespace: &str, service: &str, index: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let digest = Sha256::digest(format!("{namespace}/{service}/{index}").as_bytes());
    let suffix: String = digest
        .iter()
        .take(5)
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    // generateName keeps the whole name within 63 characters.
    let prefix: String = format!("{service}-").chars().take(58).collect();
    format!("{prefix}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(annotations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "x", "labels": {"app": "web"}, "annotations": annotations},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [
                {"name": "dns", "containerPort": 5353, "protocol": "UDP"},
                {"name": "web", "containerPort": 8080}]}]},
        }))
        .unwrap()
    }

    fn port(target: serde_json::Value, protocol: &str) -> ServicePort {
        serde_json::from_value(json!({"port": 53, "protocol": protocol, "targetPort": target}))
            .unwrap()
    }

    #[test]
    fn find_port_follows_find_port() {
        let p = pod(json!({}));
        assert_eq!(find_port(&p, &port(json!("dns"), "UDP")), Some(5353));
        assert_eq!(find_port(&p, &port(json!("dns"), "TCP")), None);
        assert_eq!(find_port(&p, &port(json!("web"), "TCP")), Some(8080));
        assert_eq!(find_port(&p, &port(json!("nope"), "TCP")), None);
        assert_eq!(find_port(&p, &port(json!(9000), "TCP")), Some(9000));
        assert_eq!(find_port(&p, &port(json!(0), "TCP")), Some(53));
        assert_eq!(find_port(&p, &port(json!(""), "TCP")), Some(53));
    }

    #[test]
    fn readiness_annotation() {
        assert!(pod_ready(&pod(json!({}))));
        assert!(pod_ready(&pod(json!({READY_ANNOTATION: "true"}))));
        assert!(!pod_ready(&pod(json!({READY_ANNOTATION: "false"}))));
    }

    #[test]
    fn slice_names_look_generated_and_are_stable() {
        let a = slice_name("x", "web", 0);
        assert_eq!(a, slice_name("x", "web", 0));
        assert_ne!(a, slice_name("x", "web", 1));
        assert_ne!(a, slice_name("y", "web", 0));
        let suffix = a.strip_prefix("web-").unwrap();
        assert_eq!(suffix.len(), 5);
        assert!(
            suffix
                .bytes()
                .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
        );
        assert!(slice_name("x", &"s".repeat(63), 0).len() <= 63);
    }

    #[test]
    fn big_services_are_cut_into_slices_of_a_hundred() {
        let mut objects = ClusterObjects::new(vec!["n1".into()]);
        for i in 0..230u32 {
            let mut p = pod(json!({}));
            p.metadata.name = Some(format!("p{i}"));
            objects.pods.insert(PodRef::new("x", format!("p{i}")), p);
            objects.set_pod_ip(
                &PodRef::new("x", format!("p{i}")),
                Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 1, 0)) + 2 + i),
            );
        }
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "x"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "web"}]},
        }))
        .unwrap();
        let computed = compute(&objects, &svc);
        let sizes: Vec<usize> = computed
            .slices(&svc)
            .iter()
            .map(|s| s.endpoints.len())
            .collect();
        assert_eq!(sizes, [100, 100, 30]);
        let eps = computed.for_port(&crate::services::ports(&svc)[0]);
        assert_eq!(eps.len(), 230);
        // Sorted by address, not by name.
        assert!(eps.windows(2).all(|w| w[0].ip < w[1].ip));
    }
}
