//! What a probe target outside a Service's cluster IP names at one step: a node port
//! (`nodeport/NODE:PORT`), a load-balancer address (`lb/[NS/]NAME:PORT`) or an external
//! IP (`extip/NS/NAME:PORT`) resolved to the Service, the address and port to connect to
//! and the protocols to probe ([`resolve_target`]); and every such target a Service
//! offers ([`targets_of`]). The parser checks scenarios with it, the oracle and the
//! harness aim with it.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;

use crate::objects::ClusterObjects;
use crate::peers::Peer;
use crate::protocol::PortProto;
use crate::services::{self, external_ips, load_balancer_ips, node_ports, port_protocol, ports};

/// What an outside-facing target names at one step: the Service, the address and port
/// to connect to (the node's address is the harness's: `None` for a node port), and the
/// probe ports (one per protocol the Service has there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalTarget {
    pub namespace: String,
    pub name: String,
    /// The node of a node port; `None` for a load-balancer or external address.
    pub node: Option<String>,
    /// The load-balancer or external address; `None` for a node port.
    pub address: Option<Ipv4Addr>,
    /// The number a client connects to (the node port, or the service port) and the
    /// service port it belongs to.
    pub port: u16,
    pub service_port: u16,
    /// What the cells probe: the port above, once per protocol.
    pub ports: Vec<PortProto>,
}

/// Resolves `nodeport/...`, `lb/...` or `extip/...` against the objects of one step.
/// `Err` says why it names nothing now.
pub fn resolve_target(objects: &ClusterObjects, peer: &Peer) -> Result<ExternalTarget, String> {
    match peer {
        Peer::NodePort { node, port } => {
            if !objects.nodes.iter().any(|n| n == node) {
                return Err(format!("node {node} does not exist"));
            }
            let mut found = None;
            let mut protocols = Vec::new();
            for ((ns, name), svc) in &objects.services {
                for p in ports(svc) {
                    if p.node_port == Some(i32::from(*port)) {
                        found.get_or_insert((ns.clone(), name.clone(), p.port));
                        protocols.push(PortProto::new(port_protocol(p), *port));
                    }
                }
            }
            let (namespace, name, service_port) =
                found.ok_or_else(|| format!("no Service has node port {port} at this step"))?;
            protocols.sort();
            protocols.dedup();
            Ok(ExternalTarget {
                namespace,
                name,
                node: Some(node.clone()),
                address: None,
                port: *port,
                service_port: u16::try_from(service_port).unwrap_or(0),
                ports: protocols,
            })
        }
        Peer::LoadBalancer {
            namespace,
            name,
            port,
        } => {
            let (ns, svc) = find_named(objects, namespace.as_deref(), name)?;
            let address = load_balancer_ips(svc).into_iter().next().ok_or_else(|| {
                format!("Service {ns}/{name} has no load-balancer address at this step")
            })?;
            with_port(ns, name, svc, None, Some(address), *port)
        }
        Peer::ExternalIp {
            namespace,
            name,
            port,
        } => {
            let (ns, svc) = find_named(objects, Some(namespace), name)?;
            let address = external_ips(svc)
                .into_iter()
                .next()
                .ok_or_else(|| format!("Service {ns}/{name} has no externalIPs at this step"))?;
            with_port(ns, name, svc, None, Some(address), *port)
        }
        other => Err(format!("{other} is not a Service reached from outside")),
    }
}

fn with_port(
    namespace: &str,
    name: &str,
    svc: &Service,
    node: Option<String>,
    address: Option<Ipv4Addr>,
    port: u16,
) -> Result<ExternalTarget, String> {
    let mut protocols: Vec<PortProto> = ports(svc)
        .iter()
        .filter(|p| p.port == i32::from(port))
        .map(|p| PortProto::new(port_protocol(p), port))
        .collect();
    protocols.sort();
    protocols.dedup();
    if protocols.is_empty() {
        return Err(format!(
            "Service {namespace}/{name} has no port {port} at this step (lb/ and extip/ name a service port)"
        ));
    }
    Ok(ExternalTarget {
        namespace: namespace.to_string(),
        name: name.to_string(),
        node,
        address,
        port,
        service_port: port,
        ports: protocols,
    })
}

/// The Service `name` (in `namespace`, or the only one of that name anywhere).
fn find_named<'o>(
    objects: &'o ClusterObjects,
    namespace: Option<&str>,
    name: &str,
) -> Result<(&'o str, &'o Service), String> {
    let matches: Vec<(&str, &Service)> = objects
        .services
        .iter()
        .filter(|((ns, n), _)| n == name && namespace.is_none_or(|want| want == ns))
        .map(|((ns, _), s)| (ns.as_str(), s))
        .collect();
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => Err(match namespace {
            Some(ns) => format!("there is no Service {ns}/{name} at this step"),
            None => format!("there is no Service called {name} at this step"),
        }),
        many => Err(format!(
            "{} Services are called {name} (in {}): write lb/NAMESPACE/{name}:PORT",
            many.len(),
            many.iter()
                .map(|(ns, _)| *ns)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// `probe.services: true` (and `knetlab check`): every port of every Service with a
/// cluster IP, as `svc/NS/NAME:PORT`, in Service order; `except` (the cluster DNS's own
/// Service, reached through `dns/` targets instead) is left out.
pub fn cluster_ip_targets(objects: &ClusterObjects, except: Option<(&str, &str)>) -> Vec<Peer> {
    let mut out = Vec::new();
    for ((namespace, name), svc) in &objects.services {
        if except == Some((namespace.as_str(), name.as_str()))
            || services::cluster_ip(svc).is_none()
        {
            continue;
        }
        let mut numbers: Vec<u16> = ports(svc)
            .iter()
            .filter_map(|p| u16::try_from(p.port).ok())
            .collect();
        numbers.sort();
        numbers.dedup();
        out.extend(numbers.into_iter().map(|port| Peer::Service {
            namespace: namespace.clone(),
            name: name.clone(),
            port,
        }));
    }
    out
}

/// Every outside-facing target a Service offers (with the namespace written, and for a
/// load-balancer address also without it), for checking a scenario's probe targets.
pub fn targets_of(svc: &Service, nodes: &[String]) -> Vec<Peer> {
    let (namespace, name) = services::service_key(svc);
    let mut out = Vec::new();
    for np in node_ports(svc) {
        for node in nodes {
            out.push(Peer::NodePort {
                node: node.clone(),
                port: np,
            });
        }
    }
    for p in ports(svc) {
        let Ok(port) = u16::try_from(p.port) else {
            continue;
        };
        if !load_balancer_ips(svc).is_empty() {
            for ns in [Some(namespace.clone()), None] {
                out.push(Peer::LoadBalancer {
                    namespace: ns,
                    name: name.clone(),
                    port,
                });
            }
        }
        if !external_ips(svc).is_empty() {
            out.push(Peer::ExternalIp {
                namespace: namespace.clone(),
                name: name.clone(),
                port,
            });
        }
    }
    out.sort();
    out.dedup();
    out
}
