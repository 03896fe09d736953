//! The cluster's Kubernetes objects, as the API server would hold them: namespaces, pods,
//! network policies, services and hand-written endpoints in `k8s-openapi` types, keyed by
//! namespace and name. Applying, deleting and relabelling objects are the changes a
//! scenario step can make; a small deterministic scheduler binds pods without
//! `spec.nodeName` to the least-loaded node. Services are stored as given (defaulted);
//! their cluster IPs, node ports and load-balancer addresses are allocated before, by
//! [`crate::services::alloc::allocate`] (the scenario parser does it).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Endpoints, Namespace, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};

pub mod service;

// Pods are named by the vocabulary's [`PodRef`]; re-exported because the objects are
// keyed by it.
pub use crate::peers::PodRef;
use crate::protocol::{PortProto, Protocol};

/// The label every namespace carries, set by the API server and immutable.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A Kubernetes object knetlab understands. (Pods are big; there are few objects, so
/// boxing them would buy nothing.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Namespace(Namespace),
    Pod(Pod),
    NetworkPolicy(NetworkPolicy),
    Service(Service),
    /// A hand-written Endpoints object (for a Service without a selector).
    Endpoints(Endpoints),
    /// A `networking.k8s.io/v1` Ingress (an `extensions/v1beta1` one arrives converted).
    Ingress(Ingress),
    /// A Secret (knetlab reads the `kubernetes.io/tls` ones an Ingress names).
    Secret(Secret),
    /// A cluster-wide policy (ClusterNetworkPolicy, AdminNetworkPolicy,
    /// BaselineAdminNetworkPolicy), already validated by the scenario parser.
    ClusterPolicy(ClusterPolicyObject),
}

/// A cluster-wide policy as the API server holds it: its kind, name, labels and the
/// manifest. The manifest is kept as JSON because its meaning lives a layer up
/// ([`crate::cluster_policy`] reads it); the parser only stores manifests that read.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterPolicyObject {
    /// [`Kind::ClusterNetworkPolicy`], [`Kind::AdminNetworkPolicy`] or
    /// [`Kind::BaselineAdminNetworkPolicy`].
    pub kind: Kind,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub manifest: serde_json::Value,
}

/// Which kind of object a delete or label change refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Namespace,
    Pod,
    NetworkPolicy,
    Service,
    Endpoints,
    Ingress,
    Secret,
    ClusterNetworkPolicy,
    AdminNetworkPolicy,
    BaselineAdminNetworkPolicy,
}

impl Kind {
    /// Cluster-scoped kinds live in no namespace.
    pub fn is_cluster_scoped(self) -> bool {
        matches!(
            self,
            Kind::Namespace
                | Kind::ClusterNetworkPolicy
                | Kind::AdminNetworkPolicy
                | Kind::BaselineAdminNetworkPolicy
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::Ingress => "Ingress",
            Kind::Secret => "Secret",
            Kind::ClusterNetworkPolicy => "ClusterNetworkPolicy",
            Kind::AdminNetworkPolicy => "AdminNetworkPolicy",
            Kind::BaselineAdminNetworkPolicy => "BaselineAdminNetworkPolicy",
        }
    }
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::Pod(_) => Kind::Pod,
            Object::NetworkPolicy(_) => Kind::NetworkPolicy,
            Object::Service(_) => Kind::Service,
            Object::Endpoints(_) => Kind::Endpoints,
            Object::Ingress(_) => Kind::Ingress,
            Object::Secret(_) => Kind::Secret,
            Object::ClusterPolicy(p) => p.kind,
        }
    }

    /// `(namespace, name)`; the namespace is empty for cluster-scoped objects.
    pub fn key(&self) -> (String, String) {
        let meta = match self {
            Object::ClusterPolicy(p) => return (String::new(), p.name.clone()),
            Object::Namespace(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::NetworkPolicy(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::Endpoints(o) => &o.metadata,
            Object::Ingress(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
        };
        let ns = match self {
            Object::Namespace(_) => String::new(),
            _ => meta.namespace.clone().unwrap_or_else(|| "default".into()),
        };
        (ns, meta.name.clone().unwrap_or_default())
    }
}

/// One declared container port of a pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeclaredPort {
    pub name: Option<String>,
    pub port: PortProto,
}

/// Everything the API server would hold for the virtual cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterObjects {
    /// Node names in cluster order; the scheduler spreads pods over them.
    pub nodes: Vec<String>,
    pub namespaces: BTreeMap<String, Namespace>,
    pub pods: BTreeMap<PodRef, Pod>,
    pub network_policies: BTreeMap<(String, String), NetworkPolicy>,
    /// Services as the API server stores them (defaulted, allocated).
    pub services: BTreeMap<(String, String), Service>,
    /// Hand-written Endpoints of selector-less Services; the endpoints of Services with
    /// a selector are computed ([`crate::services::endpoints`]), never stored.
    pub endpoints: BTreeMap<(String, String), Endpoints>,
    /// Ingresses, as `networking.k8s.io/v1` (see [`crate::ingress`]).
    pub ingresses: BTreeMap<(String, String), Ingress>,
    /// Secrets (the TLS certificates of Ingresses).
    pub secrets: BTreeMap<(String, String), Secret>,
    /// Cluster-wide policies, by kind and name (cluster-scoped: the same name may be
    /// used by a ClusterNetworkPolicy and an AdminNetworkPolicy).
    pub cluster_policies: BTreeMap<(Kind, String), ClusterPolicyObject>,
}

impl ClusterObjects {
    pub fn new(nodes: Vec<String>) -> Self {
        Self {
            nodes,
            ..Default::default()
        }
    }

    /// Creates or replaces an object, as `kubectl apply` would. Namespaces always get the
    /// `kubernetes.io/metadata.name` label; pods without `spec.nodeName` are bound to the
    /// node with the fewest pods (first in node order on a tie), as a scheduler would.
    pub fn apply(&mut self, object: Object) {
        match object {
            Object::Namespace(mut ns) => {
                let name = ns.metadata.name.clone().unwrap_or_default();
                ns.metadata
                    .labels
                    .get_or_insert_with(Default::default)
                    .insert(NAMESPACE_NAME_LABEL.into(), name.clone());
                self.namespaces.insert(name, ns);
            }
            Object::Pod(mut pod) => {
                let ns = pod
                    .metadata
                    .namespace
                    .get_or_insert_with(|| "default".into())
                    .clone();
                let key = PodRef::new(ns, pod.metadata.name.clone().unwrap_or_default());
                let spec = pod.spec.get_or_insert_with(Default::default);
                if spec.node_name.is_none() {
                    spec.node_name = match self.pods.get(&key).and_then(|p| pod_node(p)) {
                        // An update keeps the binding it had, as the API server does.
                        Some(node) => Some(node.to_string()),
                        None => self.least_loaded_node(),
                    };
                }
                // Keep what the kubelet reported (the IP) across an update of the spec.
                if pod.status.is_none() {
                    pod.status = self.pods.get(&key).and_then(|p| p.status.clone());
                }
                self.pods.insert(key, pod);
            }
            Object::NetworkPolicy(mut np) => {
                let ns = np
                    .metadata
                    .namespace
                    .get_or_insert_with(|| "default".into())
                    .clone();
                let name = np.metadata.name.clone().unwrap_or_default();
                self.network_policies.insert((ns, name), np);
            }
            Object::Service(mut svc) => {
                service::defaults(&mut svc);
                let key = service::service_key(&svc);
                if service::selector(&svc).is_some() {
                    // The endpoints controller owns the Endpoints of a Service with a
                    // selector and replaces whatever was written by hand.
                    self.endpoints.remove(&key);
                }
                self.services.insert(key, svc);
            }
            Object::Endpoints(mut ep) => {
                let ns = ep
                    .metadata
                    .namespace
                    .get_or_insert_with(|| "default".into())
                    .clone();
                let name = ep.metadata.name.clone().unwrap_or_default();
                self.endpoints.insert((ns, name), ep);
            }
            Object::Ingress(mut ing) => {
                let ns = ing
                    .metadata
                    .namespace
                    .get_or_insert_with(|| "default".into())
                    .clone();
                let name = ing.metadata.name.clone().unwrap_or_default();
                // Keep the address the controller wrote (status) across an update.
                if ing.status.is_none() {
                    ing.status = self
                        .ingresses
                        .get(&(ns.clone(), name.clone()))
                        .and_then(|i| i.status.clone());
                }
                self.ingresses.insert((ns, name), ing);
            }
            Object::Secret(mut secret) => {
                let ns = secret
                    .metadata
                    .namespace
                    .get_or_insert_with(|| "default".into())
                    .clone();
                let name = secret.metadata.name.clone().unwrap_or_default();
                self.secrets.insert((ns, name), secret);
            }
            Object::ClusterPolicy(p) => {
                self.cluster_policies.insert((p.kind, p.name.clone()), p);
            }
        }
    }

    /// Whether the cluster has any Service (or Endpoints): until a service proxy runs in
    /// the nodes, a scenario that has them cannot be run faithfully.
    pub fn has_services(&self) -> bool {
        !self.services.is_empty() || !self.endpoints.is_empty()
    }

    /// Removes an object; returns whether it existed.
    pub fn delete(&mut self, kind: Kind, namespace: &str, name: &str) -> bool {
        match kind {
            Kind::Namespace => {
                let existed = self.namespaces.remove(name).is_some();
                // Deleting a namespace deletes what is in it.
                self.pods.retain(|k, _| k.namespace != name);
                self.network_policies.retain(|(ns, _), _| ns != name);
                self.services.retain(|(ns, _), _| ns != name);
                self.endpoints.retain(|(ns, _), _| ns != name);
                self.ingresses.retain(|(ns, _), _| ns != name);
                self.secrets.retain(|(ns, _), _| ns != name);
                existed
            }
            Kind::Pod => self.pods.remove(&PodRef::new(namespace, name)).is_some(),
            Kind::NetworkPolicy => self
                .network_policies
                .remove(&(namespace.to_string(), name.to_string()))
                .is_some(),
            Kind::Service => {
                let key = (namespace.to_string(), name.to_string());
                // The endpoints controller deletes the Endpoints of a deleted Service,
                // hand-written ones included.
                self.endpoints.remove(&key);
                self.services.remove(&key).is_some()
            }
            Kind::Endpoints => self
                .endpoints
                .remove(&(namespace.to_string(), name.to_string()))
                .is_some(),
            Kind::Ingress => self
                .ingresses
                .remove(&(namespace.to_string(), name.to_string()))
                .is_some(),
            Kind::Secret => self
                .secrets
                .remove(&(namespace.to_string(), name.to_string()))
                .is_some(),
            Kind::ClusterNetworkPolicy
            | Kind::AdminNetworkPolicy
            | Kind::BaselineAdminNetworkPolicy => self
                .cluster_policies
                .remove(&(kind, name.to_string()))
                .is_some(),
        }
    }

    /// Replaces an object's whole label map (as `kubectl apply` of `metadata.labels`
    /// leaves it). Namespaces keep `kubernetes.io/metadata.name` regardless. Returns
    /// whether the object exists.
    pub fn set_labels(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        labels: BTreeMap<String, String>,
    ) -> bool {
        match kind {
            Kind::Namespace => match self.namespaces.get_mut(name) {
                Some(ns) => {
                    let mut labels = labels;
                    labels.insert(NAMESPACE_NAME_LABEL.into(), name.into());
                    ns.metadata.labels = Some(labels);
                    true
                }
                None => false,
            },
            Kind::Pod => match self.pods.get_mut(&PodRef::new(namespace, name)) {
                Some(p) => {
                    p.metadata.labels = Some(labels);
                    true
                }
                None => false,
            },
            Kind::NetworkPolicy => match self
                .network_policies
                .get_mut(&(namespace.to_string(), name.to_string()))
            {
                Some(np) => {
                    np.metadata.labels = Some(labels);
                    true
                }
                None => false,
            },
            Kind::Service => match self
                .services
                .get_mut(&(namespace.to_string(), name.to_string()))
            {
                Some(svc) => {
                    svc.metadata.labels = Some(labels);
                    true
                }
                None => false,
            },
            Kind::Endpoints => match self
                .endpoints
                .get_mut(&(namespace.to_string(), name.to_string()))
            {
                Some(ep) => {
                    ep.metadata.labels = Some(labels);
                    true
                }
                None => false,
            },
            Kind::Ingress => match self
                .ingresses
                .get_mut(&(namespace.to_string(), name.to_string()))
            {
                Some(o) => {
                    o.metadata.labels = Some(labels);
                    true
                }
                None => false,
            },
            Kind::Secret => match self
                .secrets
                .get_mut(&(namespace.to_string(), name.to_string()))
            {
                Some(o) => {
                    o.metadata.labels = Some(labels);
                    true
                }
                None => false,
            },
            Kind::ClusterNetworkPolicy
            | Kind::AdminNetworkPolicy
            | Kind::BaselineAdminNetworkPolicy => {
                match self.cluster_policies.get_mut(&(kind, name.to_string())) {
                    Some(o) => {
                        o.labels = labels;
                        true
                    }
                    None => false,
                }
            }
        }
    }

    fn least_loaded_node(&self) -> Option<String> {
        self.nodes
            .iter()
            .min_by_key(|n| {
                self.pods
                    .values()
                    .filter(|p| pod_node(p) == Some(n.as_str()))
                    .count()
            })
            .cloned()
    }

    /// A namespace's labels (empty if the namespace is unknown).
    pub fn namespace_labels(&self, name: &str) -> BTreeMap<String, String> {
        self.namespaces
            .get(name)
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default()
    }

    /// Records the address the CNI plugin gave a pod (a hostNetwork pod: its node's), as
    /// the kubelet reports it.
    pub fn set_pod_ip(&mut self, pod: &PodRef, ip: std::net::Ipv4Addr) {
        if let Some(p) = self.pods.get_mut(pod) {
            let status = p.status.get_or_insert_with(Default::default);
            status.pod_ip = Some(ip.to_string());
            status.pod_ips = Some(vec![k8s_openapi::api::core::v1::PodIP {
                ip: ip.to_string(),
            }]);
            status.phase = Some("Running".into());
        }
    }
}

/// The node a pod is bound to.
pub fn pod_node(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

/// A pod's labels (empty when it has none).
pub fn pod_labels(pod: &Pod) -> BTreeMap<String, String> {
    pod.metadata.labels.clone().unwrap_or_default()
}

/// Whether the pod runs in its node's network namespace (`spec.hostNetwork: true`): no
/// CNI call, the node's address as its own, its servers listening on the node.
pub fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// One port a pod holds on its node: a container's `hostPort`, or, for a hostNetwork
/// pod, every container port (the API server defaults `hostPort` to `containerPort`
/// there, so the scheduler counts them the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostPortUse {
    pub port: PortProto,
    /// `hostIP` (`None`: every address of the node).
    pub host_ip: Option<std::net::Ipv4Addr>,
}

impl HostPortUse {
    /// Whether two pods holding these could not share a node (the scheduler's NodePorts
    /// filter): same port and protocol, on the same address or one of them on all.
    pub fn conflicts(&self, other: &HostPortUse) -> bool {
        self.port == other.port
            && (self.host_ip.is_none() || other.host_ip.is_none() || self.host_ip == other.host_ip)
    }
}

/// The ports a pod holds on its node (see [`HostPortUse`]), in declaration order;
/// values that do not parse are left out (the parser refuses them first).
pub fn host_ports(pod: &Pod) -> Vec<HostPortUse> {
    let Some(spec) = &pod.spec else {
        return vec![];
    };
    let on_host = spec.host_network.unwrap_or(false);
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let number = match p.host_port.filter(|h| *h != 0) {
                Some(h) => h,
                None if on_host => p.container_port,
                None => return None,
            };
            let protocol = container_port_protocol(p)?;
            let host_ip = p
                .host_ip
                .as_deref()
                .and_then(|t| t.parse::<std::net::Ipv4Addr>().ok())
                .filter(|ip| !ip.is_unspecified());
            Some(HostPortUse {
                port: PortProto::new(protocol, u16::try_from(number).ok()?),
                host_ip,
            })
        })
        .collect()
}

/// The first port `pod` would hold on its node that `other` already holds there.
pub fn host_port_conflict(pod: &Pod, other: &Pod) -> Option<HostPortUse> {
    let taken = host_ports(other);
    host_ports(pod)
        .into_iter()
        .find(|m| taken.iter().any(|t| t.conflicts(m)))
}

/// The pod's IPv4 address once the CNI plugin gave it one.
pub fn pod_ip(pod: &Pod) -> Option<std::net::Ipv4Addr> {
    pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

/// A container port's protocol (TCP when unset, as the API server defaults it); `None`
/// for one the scenario's checks would have refused.
fn container_port_protocol(p: &k8s_openapi::api::core::v1::ContainerPort) -> Option<Protocol> {
    p.protocol.as_deref().unwrap_or("TCP").parse().ok()
}

/// Every container port the pod declares, in declaration order.
pub fn declared_ports(pod: &Pod) -> Vec<DeclaredPort> {
    let Some(spec) = &pod.spec else {
        return vec![];
    };
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let protocol = container_port_protocol(p)?;
            let port = u16::try_from(p.container_port).ok()?;
            Some(DeclaredPort {
                name: p.name.clone(),
                port: PortProto::new(protocol, port),
            })
        })
        .collect()
}
