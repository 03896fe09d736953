//! The oracle: predicts each matrix cell from the Kubernetes objects, with the reason a
//! workshop attendee can follow. It decides nothing about NetworkPolicy itself (that is
//! [`crate::policy`]); it adds what happens around the policies:
//! - the engine: with `policy: none` nothing is enforced and every cell is allowed;
//! - the matrix diagonal: a pod reaching its own IP goes through `lo` inside its own
//!   network namespace and never reaches the node, where our enforcer runs, so it is
//!   always allowed (the conformance tooling does not assert it either);
//! - the kubelet rule: a node reaches the pods it runs at all times; another node is just
//!   an outside address (its underlay IP), which only `ipBlock`s or empty peers admit;
//! - hostNetwork pods are their node: as clients they send what `node/NAME` sends, as
//!   servers they listen at the node's address; no NetworkPolicy selects them, and a
//!   pod and a hostNetwork pod of the same node always reach each other (pod and node);
//! - both ends: the client's egress and the server's ingress must each allow; replies
//!   of an allowed connection are allowed (stateful), so a probe is one prediction;
//! - hairpin: a pod that reaches itself through a Service (DNATed back to its own
//!   address) does pass the node; the enforcer (kube-router's layout: one firewall chain
//!   per pod holding both its ingress and its egress rules) lets it through when either
//!   direction allows, and so does the oracle ([`Case::Hairpin`]);
//! - node failure: when a node's underlay link is down
//!   ([`OracleContext::with_down_nodes`]), anything between it and another place is
//!   lost before policies matter ([`Case::NodeUnreachable`]); traffic inside it flows;
//! - Services: see [`predict_service`], which predicts each backend with the rules
//!   above and combines them;
//! - cluster-wide policies (ClusterNetworkPolicy and its v1alpha1 forms): each side's
//!   NetworkPolicy verdict becomes the NetworkPolicy tier of a walk through the Admin
//!   and Baseline tiers ([`tiers`]); a cell same-priority policies disagree on is
//!   undefined ([`Explanation::undefined`]), never guessed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::cluster::PolicyEngineKind;
use crate::matrix::Verdict;
use crate::objects::ClusterObjects;
use crate::peers::Peer;
use crate::policy::{self, Direction, Endpoint, PodInfo, ResolvedPolicies, SideVerdict};
use crate::protocol::PortProto;

mod bridge_nf;
pub mod dns;
mod explain;
mod external;
mod host_network;
#[cfg(test)]
mod host_network_tests;
mod host_port;
mod service;
#[cfg(test)]
mod tests;
mod tiers;
#[cfg(test)]
mod tiers_tests;

pub use bridge_nf::SameBridgeReply;
pub use explain::{Case, Explanation, PolicyReport, RuleOutcome, RuleReport, Side, SideOutcome};
pub use external::{
    EntryKind, ExternalFate, ExternalPrediction, NodeFabric, PathOutcome, PathPrediction,
    predict_external,
};
// Target resolution is Service semantics; re-exported where the harness aims its probes.
pub use crate::services::targets::{ExternalTarget, resolve_target, targets_of};
pub use host_port::{
    HostPortCase, HostPortFate, HostPorts, NodeAddresses, Portmap, host_port_pod, host_ports_of,
};
pub use service::{
    BackendPrediction, ServiceFate, ServicePrediction, predict_service, userspace_source,
};

/// What the oracle knows: the objects (resolved once), the engine and the nodes' addresses.
#[derive(Debug, Clone)]
pub struct OracleContext<'a> {
    pub objects: &'a ClusterObjects,
    pub engine: PolicyEngineKind,
    /// Node name → underlay IP; a probe from `node/N` leaves with that address.
    pub node_addresses: &'a BTreeMap<String, Ipv4Addr>,
    /// External host name → address (see [`OracleContext::with_hosts`]).
    pub host_addresses: BTreeMap<String, Ipv4Addr>,
    /// Nodes whose underlay link is down (see [`OracleContext::with_down_nodes`]).
    pub down_nodes: BTreeSet<String>,
    /// Nodes where `net.bridge.bridge-nf-call-iptables` is 0 (see
    /// [`OracleContext::with_br_netfilter_off`]).
    pub br_netfilter_off: BTreeSet<String>,
    /// portmap and the nodes' addresses, for `node/NAME` targets (see
    /// [`OracleContext::with_host_ports`]).
    pub host_ports: HostPorts,
    /// Per node: its underlay and bridge addresses, for node ports, load-balancer
    /// addresses and external IPs (see [`OracleContext::with_node_fabric`]).
    pub node_fabric: NodeFabric,
    /// `cluster.proxy` (see [`OracleContext::with_proxy`]): userspace mode dials each
    /// backend from the client's node, so backends see (and policies judge) the node, not
    /// the client; nftables mode rejects a Service without endpoints in a chain of its
    /// own, which the policy engine's ACCEPT cannot shadow.
    pub proxy: crate::cluster::ProxyKind,
    resolved: ResolvedPolicies,
    /// The cluster-wide policies and the view they are judged on; `None` when the
    /// cluster has none (then nothing changes from NetworkPolicy alone).
    tiers: Option<tiers::Tiers>,
    /// Every service port with its endpoints, as kube-proxy sees them.
    service_ports: Vec<crate::kube_proxy::model::ServicePort>,
}

impl<'a> OracleContext<'a> {
    /// Resolves the policies once; build a new context after the objects change.
    pub fn new(
        objects: &'a ClusterObjects,
        engine: PolicyEngineKind,
        node_addresses: &'a BTreeMap<String, Ipv4Addr>,
    ) -> Self {
        Self {
            objects,
            engine,
            node_addresses,
            host_addresses: BTreeMap::new(),
            down_nodes: BTreeSet::new(),
            br_netfilter_off: BTreeSet::new(),
            host_ports: HostPorts::default(),
            node_fabric: NodeFabric::new(),
            proxy: crate::cluster::ProxyKind::Iptables,
            resolved: policy::resolve(objects),
            tiers: tiers::Tiers::of(objects, node_addresses),
            service_ports: crate::kube_proxy::model::service_ports(objects),
        }
    }

    /// Adds the addresses of the hosts outside the cluster (`host/NAME` peers).
    pub fn with_hosts(mut self, hosts: BTreeMap<String, Ipv4Addr>) -> Self {
        self.host_addresses = hosts;
        self
    }

    /// Marks nodes whose underlay link is down: traffic between them and anything not
    /// on the same node is lost ([`Case::NodeUnreachable`]).
    pub fn with_down_nodes(mut self, nodes: BTreeSet<String>) -> Self {
        self.down_nodes = nodes;
        self
    }

    /// The service proxy that runs (`cluster.proxy`). In userspace mode a Service's
    /// backend is reached by the proxy on the client's node, from that node's address
    /// ([`service::userspace_source`]); in nftables mode a Service without endpoints is
    /// rejected even when the policy engine accepts the client's egress.
    pub fn with_proxy(mut self, proxy: crate::cluster::ProxyKind) -> Self {
        self.proxy = proxy;
        self
    }

    /// Whether the proxy is kube-proxy's userspace mode.
    pub fn userspace_proxy(&self) -> bool {
        self.proxy == crate::cluster::ProxyKind::Userspace
    }

    /// Marks nodes whose bridge does not call iptables (`cluster.brNetfilter: false`):
    /// a pod's ClusterIP connection to a backend on its own bridge fails
    /// ([`Case::SameBridgeReply`]) and policies do not see traffic between two pods of
    /// the node ([`Case::BridgedUnfiltered`]).
    pub fn with_br_netfilter_off(mut self, nodes: BTreeSet<String>) -> Self {
        self.br_netfilter_off = nodes;
        self
    }

    /// What `node/NAME` targets need: whether portmap runs, and the nodes' addresses
    /// ([`Case::HostPort`]).
    pub fn with_host_ports(mut self, host_ports: HostPorts) -> Self {
        self.host_ports = host_ports;
        self
    }

    /// The nodes' underlay and bridge addresses, which Services reached from outside
    /// need: a node port is the node's underlay address, and a masqueraded connection
    /// reaches a backend on the entry node from its bridge address
    /// ([`predict_external`]).
    pub fn with_node_fabric(mut self, nodes: NodeFabric) -> Self {
        self.node_fabric = nodes;
        self
    }

    /// The resolved policies the predictions are made from.
    pub fn resolved(&self) -> &ResolvedPolicies {
        &self.resolved
    }
}

/// The predicted verdict of one cell and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prediction {
    pub verdict: Verdict,
    pub reason: Explanation,
}

impl Prediction {
    /// The one-line reason (for the JSON `reason` field).
    pub fn short(&self) -> String {
        self.reason.short()
    }
}

/// Predicts whether `from` reaches `to` on `port`, and explains it.
/// A Service target (`svc/...`) has no single verdict: see [`predict_service`].
pub fn predict(ctx: &OracleContext, from: &Peer, to: &Peer, port: PortProto) -> Prediction {
    let case = decide(ctx, from, to, port, Path::Direct);
    prediction(from, to, port, case)
}

fn prediction(from: &Peer, to: &Peer, port: PortProto, case: Case) -> Prediction {
    let verdict = case.verdict();
    Prediction {
        verdict,
        reason: Explanation {
            from: from.clone(),
            to: to.clone(),
            port,
            verdict,
            case,
        },
    }
}

/// How the connection reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// To the server's own address.
    Direct,
    /// To a Service's cluster IP, DNATed by the node's kube-proxy rules: even a pod
    /// reaching itself this way leaves its namespace and comes back through the node
    /// (hairpin), where the policies are enforced.
    ViaNode,
}

fn decide(ctx: &OracleContext, from: &Peer, to: &Peer, port: PortProto, path: Path) -> Case {
    let resolved = &ctx.resolved;
    let dest = match to {
        Peer::Pod(p) => match resolved.pod(p) {
            // A hostNetwork server listens on its node, at the node's address.
            Some(info) if info.host_network => match (&info.node, info.ip) {
                (Some(n), Some(ip)) => Dest::HostPod(info, n, ip),
                _ => return Case::Unknown(format!("{p} is not running on a node")),
            },
            Some(info) => Dest::Pod(info),
            None => return Case::Unknown(format!("{p} is not a pod of the cluster")),
        },
        Peer::Host(h) => match ctx.host_addresses.get(h) {
            Some(ip) => Dest::Outside(to.to_string(), *ip),
            None => return Case::Unknown(format!("host {h} is not declared")),
        },
        Peer::Node(n) => return host_port::decide(ctx, from, n, port),
        Peer::Service { .. } => {
            return Case::Unknown(format!(
                "{to} is a Service: which pod answers is kube-proxy's choice (see predict_service)"
            ));
        }
        Peer::NodePort { .. } | Peer::LoadBalancer { .. } | Peer::ExternalIp { .. } => {
            return Case::Unknown(format!(
                "{to} is a Service reached from outside: where it lands depends on the entry node (see predict_external)"
            ));
        }
        Peer::Dns { .. } => {
            return Case::Unknown(format!(
                "{to} is a DNS name: it is resolved first (see sim::oracle::dns)"
            ));
        }
    };
    let source = match from {
        Peer::Pod(p) => match resolved.pod(p) {
            // A hostNetwork client is its node: it leaves with the address `node/NAME`
            // would (see [`OracleContext::node_addresses`]).
            Some(info) if info.host_network => {
                let node = info.node.as_ref();
                match node.and_then(|n| ctx.node_addresses.get(n).map(|ip| (n, *ip))) {
                    Some((n, ip)) => Source::HostPod(info, n, ip),
                    None => return Case::Unknown(format!("{p} is not running on a node")),
                }
            }
            Some(info) => Source::Pod(info),
            None => return Case::Unknown(format!("{p} is not a pod of the cluster")),
        },
        Peer::Node(n) => match ctx.node_addresses.get(n) {
            Some(ip) => Source::Node(n, *ip),
            None => return Case::Unknown(format!("node {n} has no known address")),
        },
        Peer::Host(h) => match ctx.host_addresses.get(h) {
            Some(ip) => Source::Host(h, *ip),
            None => return Case::Unknown(format!("host {h} is not declared")),
        },
        Peer::Service { .. }
        | Peer::Dns { .. }
        | Peer::NodePort { .. }
        | Peer::LoadBalancer { .. }
        | Peer::ExternalIp { .. } => {
            return Case::Unknown(format!("{from} is a probe target: it cannot be a client"));
        }
    };
    // A downed underlay link cuts a node off before any policy is consulted; ends on the
    // same node still meet on its bridge.
    let (src_node, dst_node) = (source.node(), dest.node());
    if src_node != dst_node
        && let Some(node) = [src_node, dst_node]
            .into_iter()
            .flatten()
            .find(|n| ctx.down_nodes.contains(*n))
    {
        return Case::NodeUnreachable {
            node: node.to_string(),
        };
    }
    if ctx.engine == PolicyEngineKind::None {
        return Case::NoEnforcement;
    }
    // The client's egress.
    let egress = match (&source, &dest) {
        (Source::Pod(p), Dest::Pod(d)) if p.pod == d.pod && path == Path::Direct => {
            return Case::Loopback;
        }
        (Source::Node(n, _), Dest::Pod(d)) if d.node.as_deref() == Some(n.as_str()) => {
            return Case::OwnNode { node: (*n).clone() };
        }
        (Source::HostPod(h, _, _), Dest::HostPod(d, _, _))
            if h.pod == d.pod && path == Path::Direct =>
        {
            return Case::Loopback;
        }
        // A hostNetwork pod and a pod of the same node: node and pod, either way.
        (Source::HostPod(h, n, _), Dest::Pod(p)) | (Source::Pod(p), Dest::HostPod(h, n, _))
            if p.node.as_deref() == Some(n.as_str()) =>
        {
            return Case::HostNetworkOwnNode {
                node: (*n).clone(),
                host_pod: h.pod.to_string(),
                pod: p.pod.to_string(),
            };
        }
        (Source::HostPod(h, n, ip), _) => Side::untiered(
            Direction::Egress,
            h.pod.to_string(),
            SideOutcome::HostNetwork {
                node: (*n).clone(),
                ip: *ip,
            },
        ),
        (Source::Node(n, ip), _) => Side::untiered(
            Direction::Egress,
            format!("node/{n}"),
            SideOutcome::NodeTraffic {
                node: (*n).clone(),
                ip: *ip,
            },
        ),
        (Source::Host(h, ip), _) => Side::untiered(
            Direction::Egress,
            format!("host/{h}"),
            SideOutcome::HostTraffic {
                host: (*h).clone(),
                ip: *ip,
            },
        ),
        (Source::Pod(p), Dest::Pod(d)) => {
            side(resolved, Direction::Egress, p, &Endpoint::Pod(d), port)
        }
        (Source::Pod(p), Dest::Outside(_, ip) | Dest::HostPod(_, _, ip)) => side(
            resolved,
            Direction::Egress,
            p,
            &Endpoint::Address(*ip),
            port,
        ),
    };
    // The server's ingress.
    let ingress = match (&dest, &source) {
        (Dest::HostPod(d, n, ip), _) => Side::untiered(
            Direction::Ingress,
            d.pod.to_string(),
            SideOutcome::HostNetwork {
                node: (*n).clone(),
                ip: *ip,
            },
        ),
        (Dest::Outside(who, ip), _) => Side::untiered(
            Direction::Ingress,
            who.clone(),
            SideOutcome::NotAPod {
                who: who.clone(),
                ip: *ip,
            },
        ),
        (Dest::Pod(d), Source::Pod(p)) => {
            side(resolved, Direction::Ingress, d, &Endpoint::Pod(p), port)
        }
        (Dest::Pod(d), Source::Node(_, ip) | Source::Host(_, ip) | Source::HostPod(_, _, ip)) => {
            side(
                resolved,
                Direction::Ingress,
                d,
                &Endpoint::Address(*ip),
                port,
            )
        }
    };
    let (egress, ingress) = match &ctx.tiers {
        Some(t) => t.walk(&source, &dest, port, egress, ingress),
        None => (egress, ingress),
    };
    match (&source, &dest) {
        // Only reachable through a Service: a pod DNATed back to itself.
        (Source::Pod(p), Dest::Pod(d)) if p.pod == d.pod => Case::Hairpin { egress, ingress },
        (Source::Pod(_), Dest::Pod(_)) if path == Path::Direct => {
            match bridge_nf::bridged_unfiltered(ctx, src_node, dst_node) {
                Some(node) => Case::BridgedUnfiltered {
                    node,
                    egress,
                    ingress,
                },
                None => Case::Checked { egress, ingress },
            }
        }
        _ => Case::Checked { egress, ingress },
    }
}

enum Source<'a> {
    Pod(&'a PodInfo),
    Node(&'a String, Ipv4Addr),
    Host(&'a String, Ipv4Addr),
    /// A hostNetwork pod, its node and the address its traffic leaves with (the
    /// node's, as for `node/NAME`).
    HostPod(&'a PodInfo, &'a String, Ipv4Addr),
}

enum Dest<'a> {
    Pod(&'a PodInfo),
    /// Not a pod: `host/NAME` and its address.
    Outside(String, Ipv4Addr),
    /// A hostNetwork pod, listening on its node at the node's address.
    HostPod(&'a PodInfo, &'a String, Ipv4Addr),
}

impl Source<'_> {
    /// The node the client runs on (or is); `None` outside the cluster.
    fn node(&self) -> Option<&str> {
        match self {
            Source::Pod(p) => p.node.as_deref(),
            Source::Node(n, _) | Source::HostPod(_, n, _) => Some(n.as_str()),
            Source::Host(..) => None,
        }
    }
}

impl Dest<'_> {
    /// The node the server runs on; `None` outside the cluster.
    fn node(&self) -> Option<&str> {
        match self {
            Dest::Pod(p) => p.node.as_deref(),
            Dest::HostPod(_, n, _) => Some(n.as_str()),
            Dest::Outside(..) => None,
        }
    }
}

/// One end, evaluated by the policy semantics and turned into a report.
fn side(
    resolved: &ResolvedPolicies,
    direction: Direction,
    subject: &PodInfo,
    other: &Endpoint,
    port: PortProto,
) -> Side {
    let verdict = resolved.evaluate(direction, subject, other, port);
    let dest = match direction {
        Direction::Ingress => Some(subject),
        Direction::Egress => other.pod(),
    };
    let outcome = match &verdict {
        SideVerdict::NotIsolated => SideOutcome::NotIsolated,
        SideVerdict::Isolated(checks) => SideOutcome::Isolated {
            allowed: verdict.allowed(),
            policies: checks
                .iter()
                .map(|c| explain::policy_report(c, direction, other, dest))
                .collect(),
        },
    };
    Side::untiered(direction, subject.pod.to_string(), outcome)
}
