//! The scenario's changes replayed step by step on a [`ClusterObjects`], exactly as the
//! harness will apply them, with stand-in pod addresses: each cross-check (a duplicate
//! object, a pod in a namespace that does not exist, a `nodeName` that is not a node, a
//! delete or relabel of nothing, a probe target or expectation naming something that
//! does not exist yet) sees the cluster as it will be at that point.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Endpoints;
use serde_json::Value;

use super::build::{DEFAULT_NAMESPACE, Pending};
use super::decode;
use super::expect::{self, PeerUse};
use super::placeholders;
use super::source::Source;
use super::yaml::{join_index, join_key};
use super::{ClusterConfig, Expectation, Peer, RawObject};
use crate::error::{Location, ScenarioError};
use crate::names;
use crate::objects::{self, ClusterObjects, Kind, Object, PodRef};
use crate::plan::{self, Plan};
use crate::services::{self, alloc, alloc::ServiceRanges};

/// Where an object was first declared: file, position of its name, field path.
type FirstDeclared = (PathBuf, Option<Location>, String);

/// Objects declared in one list of changes, to find the same object declared twice.
#[derive(Default)]
pub(super) struct Declared(BTreeMap<(Kind, String, String), FirstDeclared>);

impl Declared {
    pub(super) fn check(
        &mut self,
        src: &Source,
        path: &str,
        kind: Kind,
        key: &(String, String),
    ) -> Result<(), ScenarioError> {
        let name_path = join_key(&join_key(path, "metadata"), "name");
        let here = src.positions.value(&name_path);
        let (ns, name) = key;
        let k = (kind, ns.clone(), name.clone());
        if let Some((file, loc, first_path)) = self.0.get(&k) {
            let what = if ns.is_empty() {
                format!("{} {name}", kind.as_str())
            } else {
                format!("{} {ns}/{name}", kind.as_str())
            };
            let mut first = file.display().to_string();
            if let Some(l) = loc {
                first += &format!(":{}:{}", l.line, l.column);
            }
            return Err(ScenarioError::new(
                &src.file,
                here,
                name_path,
                format!("{what} is declared twice; the first is at {first} ({first_path})"),
            ));
        }
        self.0.insert(k, (src.file.clone(), here, path.to_string()));
        Ok(())
    }
}

/// The cluster's objects as the scenario has changed them so far.
pub(super) struct Sim<'a> {
    pub(super) cluster: &'a ClusterConfig,
    pub(super) objects: ClusterObjects,
    /// The address plan so far (grows as nodes join), for stand-in addresses and to
    /// check that a joining node fits.
    pub(super) plan: Option<Plan>,
    /// Nodes a later step adds, with where (for messages).
    pub(super) joins_later: BTreeMap<String, String>,
    /// Stand-in addresses: the next host number in each node's pod subnet.
    pub(super) subnets: BTreeMap<String, (Ipv4Addr, u32)>,
    /// Every pod that exists at some point of the scenario.
    pub(super) ever: BTreeSet<PodRef>,
    /// Every Service that exists at some point, with every port number it ever has and
    /// whether some version of it is headless.
    pub(super) ever_services: BTreeMap<(String, String), (BTreeSet<u16>, bool)>,
    /// Every `nodeport/`, `lb/` and `extip/` target some Service offers at some point.
    pub(super) ever_external: BTreeSet<Peer>,
    /// Where Services get their addresses.
    pub(super) ranges: ServiceRanges,
    /// Some pod has a bandwidth annotation / a hostPort (the CNI list needs the plugin).
    pub(super) wants_bandwidth: bool,
    pub(super) wants_host_ports: bool,
    /// The nodes on which some pod has a hostPort at some point (`node/NAME` targets).
    pub(super) host_port_nodes: BTreeSet<String>,
    /// The workload controllers the cluster has ([`super::workload`]).
    pub(super) controllers: BTreeMap<super::workload::ControllerKey, super::workload::Tracked>,
    /// `cluster.nodes[].labels`, for scheduling.
    pub(super) node_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// Notes for the user (ignored kinds, Pending pods, what is not modelled), in order.
    pub(super) notes: Vec<String>,
}

impl<'a> Sim<'a> {
    pub(super) fn new(cluster: &'a ClusterConfig) -> Self {
        // `header::cluster` checked that the plan works out.
        let plan = Plan::new(&plan::prefix_from_seed(0), cluster).ok();
        let subnets = plan
            .iter()
            .flat_map(|p| &p.nodes)
            .map(|n| (n.name.clone(), (n.pod_subnet.network(), 2)))
            .collect();
        Self {
            plan,
            joins_later: BTreeMap::new(),
            cluster,
            objects: ClusterObjects::new(cluster.nodes.clone()),
            subnets,
            ever: BTreeSet::new(),
            ever_services: BTreeMap::new(),
            ever_external: BTreeSet::new(),
            ranges: ServiceRanges::new(cluster, None),
            wants_bandwidth: false,
            wants_host_ports: false,
            host_port_nodes: BTreeSet::new(),
            controllers: BTreeMap::new(),
            node_labels: BTreeMap::new(),
            notes: Vec::new(),
        }
    }

    /// The nodes of the cluster at this point, for messages.
    pub(super) fn nodes_here(&self) -> String {
        format!("the nodes are {}", self.objects.nodes.join(", "))
    }

    /// Why `node` is not a node at this point: it does not exist at all, or joins later.
    pub(super) fn no_such_node(&self, node: &str) -> String {
        match self.joins_later.get(node) {
            Some(when) => format!(
                "node {node} does not exist at this point ({when}); {}",
                self.nodes_here()
            ),
            None => format!("node {node} does not exist; {}", self.nodes_here()),
        }
    }

    /// A step's `nodeJoin` entry: a new node, with a valid name that no node or external
    /// host has, that fits the address plan. From here on pods may be bound to it.
    pub(super) fn join_node(
        &mut self,
        src: &Source,
        path: &str,
        name: &str,
    ) -> Result<(), ScenarioError> {
        names::dns_label(name).map_err(|e| src.at_value(path, format!("bad node name: {e}")))?;
        if self.objects.nodes.iter().any(|n| n == name) {
            return Err(src.at_value(
                path,
                format!(
                    "node {name} is already part of the cluster at this point; {}",
                    self.nodes_here()
                ),
            ));
        }
        if self.has_host(name) {
            return Err(src.at_value(
                path,
                format!(
                    "{name} is the name of an external host (cluster.externalHosts); pick another name for the node"
                ),
            ));
        }
        if let Some(plan) = self.plan.as_mut() {
            let node = plan
                .join_node(name)
                .map_err(|e| src.at_value(path, format!("node {name} cannot join: {e}")))?;
            self.subnets
                .insert(name.to_string(), (node.pod_subnet.network(), 2));
        }
        self.objects.nodes.push(name.to_string());
        Ok(())
    }

    pub(super) fn pods_here(&self) -> String {
        let pods: Vec<String> = self.objects.pods.keys().map(ToString::to_string).collect();
        match pods.len() {
            0 => "there are no pods".to_string(),
            1..=12 => format!("the pods are {}", pods.join(", ")),
            n => format!("there are {n} other pods"),
        }
    }

    /// Checks one manifest against the cluster as it is, then applies it.
    pub(super) fn apply(
        &mut self,
        p: &Pending,
        declared: &mut Declared,
    ) -> Result<RawObject, ScenarioError> {
        let src = &p.src;
        for (path, pod, text) in placeholders::placeholder_uses(&p.value, &p.path) {
            if !self.objects.pods.contains_key(&pod) {
                return Err(src.at_value(
                    &path,
                    format!(
                        "{text} names pod {pod}, which does not exist at this point ({})",
                        self.pods_here()
                    ),
                ));
            }
        }
        let pods = &self.objects.pods;
        let value = placeholders::substitute(src, &p.path, &p.value, &|r| {
            pods.get(r).and_then(objects::pod_ip)
        })?;
        let mut object = decode::decode_value(src, &p.path, &value)?;
        // What the Kubernetes objects will hold when the step runs (a Service gains its
        // allocations).
        let mut raw_value = p.value.clone();
        let (ns, name) = object.key();
        declared.check(src, &p.path, object.kind(), &(ns.clone(), name.clone()))?;
        let meta = join_key(&p.path, "metadata");
        if object.kind() == Kind::Namespace && matches!(name.as_str(), "node" | "host" | "svc") {
            // `node/NAME`, `host/NAME` and `svc/NS/NAME:PORT` name nodes, external hosts
            // and Services in probes.
            return Err(src.at_value(
                &join_key(&meta, "name"),
                format!(
                    "a namespace cannot be called `{name}`: `{name}/...` names a {} in probes and expectations",
                    match name.as_str() {
                        "node" => "node",
                        "host" => "host outside the cluster",
                        _ => "Service",
                    }
                ),
            ));
        }
        if !object.kind().is_cluster_scoped() && !self.objects.namespaces.contains_key(&ns) {
            let ns_path = join_key(&meta, "namespace");
            let at = if p.value.pointer("/metadata/namespace").is_some() {
                src.at_value(&ns_path, "")
            } else {
                src.at_key(&meta, "")
            };
            return Err(ScenarioError {
                path: ns_path,
                message: format!(
                    "namespace {ns} does not exist at this point; declare it (kind: Namespace) or add it to the model"
                ),
                ..at
            });
        }
        if let Object::Pod(pod) = &object {
            let key = PodRef::new(&ns, &name);
            if let Some(node) = objects::pod_node(pod)
                && !self.objects.nodes.iter().any(|n| n == node)
            {
                return Err(src.at_value(
                    &join_key(&join_key(&p.path, "spec"), "nodeName"),
                    self.no_such_node(node),
                ));
            }
            if let Some(old) = self.objects.pods.get(&key) {
                let mut new_spec = pod.spec.clone();
                // Without a nodeName the pod keeps the node it was bound to.
                if let (Some(n), Some(o)) = (new_spec.as_mut(), old.spec.as_ref())
                    && n.node_name.is_none()
                {
                    n.node_name = o.node_name.clone();
                }
                if new_spec != old.spec {
                    return Err(src.at_key(
                        &join_key(&p.path, "spec"),
                        format!(
                            "pod {key} already exists and a pod's spec cannot change (Kubernetes forbids it); change its labels, or delete it and create it again in a later step"
                        ),
                    ));
                }
            }
        }
        match object {
            Object::Service(svc) => {
                let svc = alloc::allocate(&self.objects.services, &self.ranges, svc)
                    .map_err(|e| decode::field_error(src, &p.path, e))?;
                alloc::record(&mut raw_value, &svc);
                if services::service_type(&svc) == services::ServiceType::LoadBalancer
                    && services::load_balancer_ips(&svc).is_empty()
                {
                    self.notes.push(format!(
                        "Service {ns}/{name}: its load-balancer address stays pending (no cluster.loadBalancerPool, as on a cluster without a load-balancer controller); its ClusterIP and NodePorts work"
                    ));
                }
                object = Object::Service(svc);
            }
            Object::Endpoints(ref ep) => self.check_endpoints(src, &p.path, ep, &ns, &name)?,
            _ => {}
        }
        let key = object.key();
        let kind = object.kind();
        if let Object::Service(svc) = &object {
            let (ports, headless) = self.ever_services.entry(key.clone()).or_default();
            ports.extend(
                services::ports(svc)
                    .iter()
                    .filter_map(|p| u16::try_from(p.port).ok()),
            );
            *headless |= services::is_headless(svc);
            self.ever_external
                .extend(crate::services::targets::targets_of(
                    svc,
                    &self.cluster.nodes,
                ));
        }
        self.objects.apply(object);
        if kind == Kind::Pod {
            let pod = PodRef::new(&key.0, &key.1);
            self.check_pod_network(src, &p.path, &pod)?;
            self.ever.insert(pod.clone());
            let stored = &self.objects.pods[&pod];
            if objects::pod_ip(stored).is_none() {
                let node = objects::pod_node(stored).unwrap_or_default().to_string();
                let on_host = objects::host_network(stored);
                // A hostNetwork pod has its node's address, as the kubelet reports it.
                if on_host && let Some(n) = self.plan.as_ref().and_then(|p| p.node(&node)) {
                    let ip = n.underlay_ip;
                    self.objects.set_pod_ip(&pod, ip);
                } else if !on_host && let Some((base, next)) = self.subnets.get_mut(&node) {
                    let ip = Ipv4Addr::from(u32::from(*base) + *next);
                    *next += 1;
                    self.objects.set_pod_ip(&pod, ip);
                }
            }
        }
        Ok(RawObject {
            value: raw_value,
            kind,
            key,
            file: src.file.clone(),
            path: p.path.clone(),
            positions: src.positions.clone(),
        })
    }

    /// Checks what the pod asks of the CNI chain (bandwidth annotations, host ports) as
    /// the kubelet and the scheduler would: values that parse, and no host port taken
    /// twice on one node.
    pub(super) fn check_pod_network(
        &mut self,
        src: &Source,
        path: &str,
        pod: &PodRef,
    ) -> Result<(), ScenarioError> {
        use crate::podnet::{self, PodNetError, PodNetField};
        let at = |e: PodNetError| {
            let field = match &e.at {
                PodNetField::Annotation(k) => {
                    join_key(&join_key(&join_key(path, "metadata"), "annotations"), k)
                }
                PodNetField::Port(c, i, f) => join_key(
                    &join_index(
                        &join_key(
                            &join_index(&join_key(&join_key(path, "spec"), "containers"), *c),
                            "ports",
                        ),
                        *i,
                    ),
                    f,
                ),
            };
            src.at_value(&field, e.message)
        };
        let stored = &self.objects.pods[pod];
        let bw = podnet::bandwidth(stored).map_err(at)?;
        self.wants_bandwidth |= !bw.is_empty();
        let ports = podnet::port_mappings(stored).map_err(at)?;
        self.wants_host_ports |= !ports.is_empty();
        let node = objects::pod_node(stored).unwrap_or_default();
        if !ports.is_empty() {
            self.host_port_nodes.insert(node.to_string());
        }
        for (other, o) in &self.objects.pods {
            if other == pod || objects::pod_node(o).unwrap_or_default() != node {
                continue;
            }
            if let Some(m) = objects::host_port_conflict(stored, o) {
                let why = if objects::host_network(stored) || objects::host_network(o) {
                    " (a hostNetwork pod's containerPorts are host ports)"
                } else {
                    ""
                };
                return Err(src.at_value(
                    &join_key(path, "spec"),
                    format!(
                        "hostPort {}/{} is already taken on node {node} by pod {other}{why}; the scheduler would not put {pod} there",
                        m.port.port, m.port.protocol
                    ),
                ));
            }
        }
        Ok(())
    }

    /// An Endpoints object belongs to the selector-less Service of the same name, which
    /// must exist now; its `nodeName`s must be nodes.
    pub(super) fn check_endpoints(
        &self,
        src: &Source,
        path: &str,
        ep: &Endpoints,
        ns: &str,
        name: &str,
    ) -> Result<(), ScenarioError> {
        let name_path = join_key(&join_key(path, "metadata"), "name");
        match self
            .objects
            .services
            .get(&(ns.to_string(), name.to_string()))
        {
            None => {
                return Err(src.at_value(
                    &name_path,
                    format!(
                        "there is no Service {ns}/{name} at this point: an Endpoints object gives the backends of the Service of the same name in the same namespace"
                    ),
                ));
            }
            Some(svc) if services::selector(svc).is_some() => {
                return Err(src.at_value(
                    &name_path,
                    format!(
                        "Service {ns}/{name} has a selector, so the endpoints controller computes its Endpoints and would overwrite these; remove the Service's selector to give its backends by hand"
                    ),
                ));
            }
            Some(_) => {}
        }
        for (i, subset) in ep.subsets.iter().flatten().enumerate() {
            for (field, list) in [
                ("addresses", &subset.addresses),
                ("notReadyAddresses", &subset.not_ready_addresses),
            ] {
                for (j, a) in list.iter().flatten().enumerate() {
                    if let Some(node) = &a.node_name
                        && !self.objects.nodes.contains(node)
                    {
                        return Err(src.at_value(
                            &format!("{path}.subsets[{i}].{field}[{j}].nodeName"),
                            self.no_such_node(node),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The namespace of a delete/label target, after checking the target exists.
    pub(super) fn target(
        &self,
        src: &Source,
        path: &str,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<String, ScenarioError> {
        let namespace = match (kind, namespace) {
            (Kind::Namespace, Some(_)) => {
                return Err(src.at_key(
                    &join_key(path, "namespace"),
                    "a Namespace is not inside a namespace; leave `namespace` out",
                ));
            }
            (k, Some(_)) if k.is_cluster_scoped() => {
                return Err(src.at_key(
                    &join_key(path, "namespace"),
                    format!(
                        "a {} is cluster-scoped, not inside a namespace; leave `namespace` out",
                        k.as_str()
                    ),
                ));
            }
            (k, None) if k.is_cluster_scoped() => String::new(),
            (_, ns) => ns.unwrap_or(DEFAULT_NAMESPACE).to_string(),
        };
        let exists = match kind {
            Kind::Namespace => self.objects.namespaces.contains_key(name),
            Kind::Pod => self
                .objects
                .pods
                .contains_key(&PodRef::new(&namespace, name)),
            Kind::NetworkPolicy => self
                .objects
                .network_policies
                .contains_key(&(namespace.clone(), name.to_string())),
            Kind::Service => self
                .objects
                .services
                .contains_key(&(namespace.clone(), name.to_string())),
            Kind::Endpoints => self
                .objects
                .endpoints
                .contains_key(&(namespace.clone(), name.to_string())),
            Kind::Ingress => self
                .objects
                .ingresses
                .contains_key(&(namespace.clone(), name.to_string())),
            Kind::Secret => self
                .objects
                .secrets
                .contains_key(&(namespace.clone(), name.to_string())),
            Kind::ClusterNetworkPolicy
            | Kind::AdminNetworkPolicy
            | Kind::BaselineAdminNetworkPolicy => self
                .objects
                .cluster_policies
                .contains_key(&(kind, name.to_string())),
        };
        if !exists {
            let what = if namespace.is_empty() {
                format!("{} {name}", kind.as_str())
            } else {
                format!("{} {namespace}/{name}", kind.as_str())
            };
            return Err(src.at_value(
                &join_key(path, "name"),
                format!("there is no {what} at this point"),
            ));
        }
        Ok(namespace)
    }

    /// Parses an `expect` and checks that its peers exist now.
    pub(super) fn expectation(
        &self,
        src: &Source,
        path: &str,
        value: &Value,
    ) -> Result<Expectation, ScenarioError> {
        let parsed = expect::parse(src, path, value)?;
        for u in &parsed.peers {
            self.peer_now(src, u)?;
        }
        // A node as a server answers only on its pods' hostPorts.
        for (_, to, port) in parsed.expectation.cells.keys() {
            let Peer::Node(n) = to else { continue };
            let served = self.objects.pods.values().any(|pod| {
                objects::pod_node(pod) == Some(n.as_str())
                    && crate::podnet::port_mappings(pod)
                        .unwrap_or_default()
                        .iter()
                        .any(|m| m.host_port == port.port && m.protocol == port.protocol)
            });
            if !served {
                let at = parsed.peers.iter().find(|u| &u.peer == to);
                return Err(ScenarioError::new(
                    &src.file,
                    at.and_then(|u| u.location),
                    at.map_or(path, |u| u.path.as_str()),
                    format!(
                        "no pod on node {n} has hostPort {port} at this point: servers are pods (ns/pod) or external hosts (host/NAME), Services (svc/NS/NAME:PORT), or nodes on their pods' hostPorts (forwarded by portmap)"
                    ),
                ));
            }
        }
        Ok(parsed.expectation)
    }

    pub(super) fn peer_now(&self, src: &Source, u: &PeerUse) -> Result<(), ScenarioError> {
        let missing = match &u.peer {
            Peer::Pod(p) if !self.objects.pods.contains_key(p) => {
                format!("pod {p} does not exist at this step ({})", self.pods_here())
            }
            Peer::Node(n) if !self.objects.nodes.contains(n) => self.no_such_node(n),
            Peer::Host(h) if !self.has_host(h) => self.no_such_host(h),
            Peer::Service {
                namespace,
                name,
                port,
            } => match self
                .objects
                .services
                .get(&(namespace.clone(), name.clone()))
            {
                None => format!(
                    "Service {namespace}/{name} does not exist at this step ({})",
                    self.services_here()
                ),
                Some(svc) if services::is_headless(svc) => headless(namespace, name),
                Some(svc) => {
                    let ports: BTreeSet<u16> = services::ports(svc)
                        .iter()
                        .filter_map(|p| u16::try_from(p.port).ok())
                        .collect();
                    if ports.contains(port) {
                        return Ok(());
                    }
                    no_such_port(namespace, name, *port, &ports, "at this step")
                }
            },
            peer if peer.is_external_service() => {
                match crate::services::targets::resolve_target(&self.objects, peer) {
                    Ok(_) => return Ok(()),
                    Err(why) => format!("{peer}: {why}"),
                }
            }
            _ => return Ok(()),
        };
        Err(ScenarioError::new(&src.file, u.location, &u.path, missing))
    }

    pub(super) fn peer_ever(
        &self,
        src: &Source,
        path: &str,
        peer: &Peer,
    ) -> Result<(), ScenarioError> {
        let missing = match peer {
            Peer::Pod(p) if !self.ever.contains(p) => format!("pod {p} does not exist at any step"),
            Peer::Node(n) if !self.objects.nodes.contains(n) => self.no_such_node(n),
            Peer::Host(h) if !self.has_host(h) => self.no_such_host(h),
            Peer::Service {
                namespace,
                name,
                port,
            } => match self.ever_services.get(&(namespace.clone(), name.clone())) {
                None => format!(
                    "Service {namespace}/{name} does not exist at any step ({})",
                    self.services_here()
                ),
                Some((_, true)) => headless(namespace, name),
                Some((ports, _)) if ports.contains(port) => return Ok(()),
                Some((ports, _)) => no_such_port(namespace, name, *port, ports, "at any step"),
            },
            peer if peer.is_external_service() => match self.external_ever(peer) {
                None => return Ok(()),
                Some(why) => why,
            },
            _ => return Ok(()),
        };
        Err(src.at_value(path, missing))
    }

    /// A node as a probe target answers only on its pods' hostPorts (through portmap):
    /// one without any at every step has nothing to probe.
    pub(super) fn node_target(
        &self,
        src: &Source,
        path: &str,
        peer: &Peer,
    ) -> Result<(), ScenarioError> {
        match peer {
            Peer::Node(n) if !self.host_port_nodes.contains(n) => Err(src.at_value(
                path,
                format!(
                    "no pod on node {n} has a hostPort at any step: a node is a probe target only on its pods' hostPorts (spec.containers[].ports[].hostPort, forwarded by the portmap plugin)"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Why a `nodeport/`, `lb/` or `extip/` target names nothing at any step (or names
    /// two Services), if it does.
    pub(super) fn external_ever(&self, peer: &Peer) -> Option<String> {
        if let Peer::LoadBalancer {
            namespace: None,
            name,
            ..
        } = peer
        {
            let namespaces: BTreeSet<&str> = self
                .ever_external
                .iter()
                .filter_map(|p| match p {
                    Peer::LoadBalancer {
                        namespace: Some(ns),
                        name: n,
                        ..
                    } if n == name => Some(ns.as_str()),
                    _ => None,
                })
                .collect();
            if namespaces.len() > 1 {
                return Some(format!(
                    "{peer} is ambiguous: load-balancer Services called {name} exist in {}; write lb/NAMESPACE/{name}:PORT",
                    namespaces.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        if self.ever_external.contains(peer) {
            return None;
        }
        Some(match peer {
            Peer::NodePort { node, .. } if !self.cluster.nodes.contains(node) => format!(
                "node {node} does not exist; the nodes are {}",
                self.cluster.nodes.join(", ")
            ),
            Peer::NodePort { port, .. } => format!(
                "no Service has node port {port} at any step (nodeport/NODE:PORT takes the Service's nodePort, allocated from 30000 upwards when not written)"
            ),
            Peer::LoadBalancer { port, .. } => format!(
                "{peer} names no Service of type LoadBalancer with an address and port {port} at any step ({})",
                self.services_here()
            ),
            _ => format!(
                "{peer} names no Service with externalIPs and that port at any step ({})",
                self.services_here()
            ),
        })
    }

    pub(super) fn services_here(&self) -> String {
        let names: Vec<String> = self
            .objects
            .services
            .keys()
            .map(|(ns, n)| format!("{ns}/{n}"))
            .collect();
        match names.len() {
            0 => "there are no Services".to_string(),
            1..=12 => format!("the Services are {}", names.join(", ")),
            n => format!("there are {n} other Services"),
        }
    }

    pub(super) fn has_host(&self, name: &str) -> bool {
        self.cluster.external_hosts.iter().any(|h| h.name == name)
    }

    pub(super) fn no_such_host(&self, name: &str) -> String {
        let names: Vec<&str> = self
            .cluster
            .external_hosts
            .iter()
            .map(|h| h.name.as_str())
            .collect();
        if names.is_empty() {
            format!("host {name} does not exist: declare it in cluster.externalHosts")
        } else {
            format!(
                "host {name} does not exist; the external hosts are {}",
                names.join(", ")
            )
        }
    }
}

/// Why a headless Service is no probe target.
fn headless(namespace: &str, name: &str) -> String {
    format!(
        "Service {namespace}/{name} is headless (clusterIP: None): it has no virtual IP to probe and kube-proxy writes no rule for it; probe its pods directly"
    )
}

/// "Service ns/name has no port N": what a `svc/ns/name:N` probe target got wrong.
fn no_such_port(
    namespace: &str,
    name: &str,
    port: u16,
    ports: &BTreeSet<u16>,
    when: &str,
) -> String {
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    if list.is_empty() {
        format!("Service {namespace}/{name} has no ports {when}: there is nothing to probe")
    } else {
        format!(
            "Service {namespace}/{name} has no port {port} {when} (its ports: {}); svc/NS/NAME:PORT names a service port, not a target port",
            list.join(", ")
        )
    }
}
