//! Who a probe runs between: a pod (by [`PodRef`]), a node, an external host, or a
//! Service reached by cluster IP, node port, load-balancer address, external IP or DNS
//! name, with the text form the scenarios and matrices write (`x/a`, `svc/default/web:80`).

use crate::names::check_dns_name;

/// A pod's identity as the matrices print it: `ns/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

impl PodRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl serde::Serialize for PodRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
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
                check_dns_name(name).map_err(|e| format!("{}: {e}", bad()))?;
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
