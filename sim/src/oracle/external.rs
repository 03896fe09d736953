//! The oracle for Services reached from outside their cluster IP: a node port
//! (`nodeport/NODE:PORT`), a load-balancer address (`lb/[NS/]NAME:PORT`) or an external
//! IP (`extip/NS/NAME:PORT`).
//!
//! Such a connection is decided on the node it **enters** (the reference, §1.10-1.12):
//! - a node port enters the node whose address it names; a load-balancer address or an
//!   external IP from a host outside the cluster enters whichever node the router's ECMP
//!   route hashes the flow to (any node); from a pod or a node it never leaves that node:
//!   kube-proxy's KUBE-SERVICES matches the address in PREROUTING/OUTPUT right there;
//! - there, KUBE-EXT decides. `externalTrafficPolicy: Cluster` marks the connection for
//!   masquerade and lets KUBE-SVC pick any ready endpoint of the cluster;
//!   `externalTrafficPolicy: Local` picks only the entry node's own endpoints and keeps
//!   the client's address, and a node without one DROPs the connection (filter
//!   KUBE-EXTERNAL-SERVICES, "has no local endpoints"). Pod traffic (`-s podCIDR`) and
//!   the node's own (`--src-type LOCAL`) are short-circuited to the Cluster chain even
//!   with Local, pods without masquerade;
//! - NetworkPolicy runs in filter FORWARD, after the DNAT (nat PREROUTING) and **before**
//!   the masquerade (nat POSTROUTING). A backend on the entry node is judged on the
//!   client's real address, although its socket sees the entry node's bridge address;
//!   a backend on another node is judged on its own node, where the packet arrives
//!   already masqueraded to the entry node's address (underlay, or VTEP behind VXLAN):
//!   an address that is no pod, which only `ipBlock`s or empty peers admit.
//!
//! So a cell is a set of **paths**, entry node × backend, each with its own verdict and
//! the source address the backend sees (which tells a measured answer's path apart). A
//! cell whose paths disagree depends on the path (`verdict: None`), as a Service cell
//! whose backends disagree; each answer is then checked against the path it took.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use super::{
    Case, OracleContext, Path, Prediction, Side, SideOutcome, decide, prediction, side, tiers,
};
use crate::cluster::PolicyEngineKind;
use crate::kube_proxy::model::{Endpoint, ServicePort, SessionAffinity, categorize_endpoints};
use crate::matrix::Verdict;
use crate::peers::Peer;
use crate::policy::{Direction, Endpoint as PolicyEndpoint};
use crate::protocol::PortProto;
use crate::services::targets::{ExternalTarget, resolve_target};

/// How the connection meets kube-proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalFate {
    /// It enters `entries` (one node, or every node behind the router's ECMP route)
    /// at `address:port`; [`ExternalPrediction::paths`] says what each does.
    Entered {
        address: Option<Ipv4Addr>,
        port: u16,
        entries: Vec<String>,
        how: EntryKind,
        /// `externalTrafficPolicy: Local`.
        local: bool,
        affinity: bool,
    },
    /// Nothing answers there (no such Service or port, no address): why.
    Unreachable(String),
}

/// How the client reaches the entry node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A node port: the node named.
    NodePort,
    /// A host outside: the router's ECMP route spreads flows over every node.
    Router,
    /// A pod or a node: kube-proxy on the client's own node catches the address.
    OwnNode,
}

/// One way a connection can go: in at `entry`, then to a backend or nowhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPrediction {
    pub entry: String,
    pub outcome: PathOutcome,
}

/// What happens on one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathOutcome {
    /// DNAT to this backend.
    Backend {
        /// As the probe servers name themselves (`ns/pod`, `host/NAME` or `ip:port`).
        name: String,
        ip: Ipv4Addr,
        port: u16,
        /// Masqueraded by KUBE-POSTROUTING on the entry node.
        masquerade: bool,
        /// The source address NetworkPolicy judges (on the backend's node).
        policy_source: Option<Ipv4Addr>,
        /// The source address the backend's socket sees.
        seen_source: Option<Ipv4Addr>,
        /// The ordinary prediction for this hop, as the policy sees it (boxed: it is
        /// much larger than the other outcomes).
        prediction: Box<Prediction>,
    },
    /// The Service has no ready endpoint: filter KUBE-EXTERNAL-SERVICES REJECTs.
    NoEndpoints,
    /// `externalTrafficPolicy: Local` and no endpoint on the entry node: DROP.
    NoLocalEndpoints,
    /// The entry node's underlay link is down: the router still sends flows there.
    EntryDown,
    /// The reply does not come back through the entry node (no masquerade, the backend
    /// elsewhere): the client sees an answer from an address it did not call.
    Asymmetric { backend: String },
    /// The source is outside `loadBalancerSourceRanges`: KUBE-PROXY-FIREWALL drops it.
    SourceRange,
}

impl PathPrediction {
    pub fn verdict(&self) -> Verdict {
        match &self.outcome {
            PathOutcome::Backend { prediction, .. } => prediction.verdict,
            _ => Verdict::Deny,
        }
    }

    /// `n1 -> x/a`, or `n1 -> (dropped)`: the path's name in the spread.
    pub fn label(&self) -> String {
        let what = match &self.outcome {
            PathOutcome::Backend { name, .. } => name.clone(),
            PathOutcome::NoEndpoints => "(rejected)".to_string(),
            PathOutcome::NoLocalEndpoints | PathOutcome::SourceRange => "(dropped)".to_string(),
            PathOutcome::EntryDown => "(node down)".to_string(),
            PathOutcome::Asymmetric { backend } => format!("{backend} (asymmetric)"),
        };
        format!("{} -> {what}", self.entry)
    }

    /// The backend that answers on this path and the source it sees, if one does.
    pub fn answer(&self) -> Option<(&str, Option<Ipv4Addr>)> {
        match &self.outcome {
            PathOutcome::Backend {
                name, seen_source, ..
            } => Some((name, *seen_source)),
            _ => None,
        }
    }
}

/// The prediction for a cell whose server is a node port, load-balancer address or
/// external IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalPrediction {
    pub from: Peer,
    pub to: Peer,
    pub port: PortProto,
    pub fate: ExternalFate,
    pub paths: Vec<PathPrediction>,
    /// `Some(Allow)`: every path allows; `Some(Deny)`: none does; `None`: it depends on
    /// the path (the entry node the router picks, the backend kube-proxy picks).
    pub verdict: Option<Verdict>,
}

impl ExternalPrediction {
    /// The path a measured answer took: the backend that answered and the source it saw.
    pub fn path_of(&self, answered_by: &str, seen: Option<Ipv4Addr>) -> Option<&PathPrediction> {
        let mut candidates = self
            .paths
            .iter()
            .filter(|p| p.answer().is_some_and(|(n, _)| n == answered_by));
        let all: Vec<&PathPrediction> = candidates.by_ref().collect();
        all.iter()
            .find(|p| p.answer().is_some_and(|(_, s)| seen.is_some() && s == seen))
            .or_else(|| match all.as_slice() {
                [only] if seen.is_none() => Some(only),
                _ => None,
            })
            .copied()
    }

    /// The backends that may answer (for the probe's "expected answerers").
    pub fn answerers(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .paths
            .iter()
            .filter_map(|p| p.answer().map(|(n, _)| n.to_string()))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    fn allowing(&self) -> usize {
        self.paths
            .iter()
            .filter(|p| p.verdict() == Verdict::Allow)
            .count()
    }

    /// The one-line reason (the JSON `reason` field).
    pub fn short(&self) -> String {
        let head = match self.verdict {
            Some(Verdict::Allow) => "allow",
            Some(Verdict::Deny) => "deny",
            None => "depends on the path",
        };
        match &self.fate {
            ExternalFate::Unreachable(why) => format!("{head}: {why}"),
            ExternalFate::Entered { local, .. } => {
                let each: Vec<String> = self
                    .paths
                    .iter()
                    .map(|p| match &p.outcome {
                        PathOutcome::Backend {
                            prediction,
                            policy_source,
                            seen_source,
                            ..
                        } => format!(
                            "{} {} (policy sees {}, pod sees {})",
                            p.label(),
                            word(prediction.verdict),
                            addr(*policy_source),
                            addr(*seen_source)
                        ),
                        _ => format!("{} deny", p.label()),
                    })
                    .collect();
                let policy = if *local { "Local" } else { "Cluster" };
                let tail = match self.verdict {
                    None => format!(
                        "; {} of {} paths allow (not asserted; each answer is checked against its path)",
                        self.allowing(),
                        self.paths.len()
                    ),
                    _ => String::new(),
                };
                format!(
                    "{head}: externalTrafficPolicy {policy}, paths [{}]{tail}",
                    each.join(", ")
                )
            }
        }
    }
}

fn word(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "allow",
        Verdict::Deny => "deny",
    }
}

fn addr(a: Option<Ipv4Addr>) -> String {
    a.map_or_else(|| "?".to_string(), |a| a.to_string())
}

impl fmt::Display for ExternalPrediction {
    /// The walkthrough: how the connection enters, what KUBE-EXT does there, then each
    /// path's own story and the conclusion.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match self.verdict {
            Some(Verdict::Allow) => "ALLOWED",
            Some(Verdict::Deny) => "DENIED",
            None => "DEPENDS ON THE PATH",
        };
        writeln!(
            f,
            "{} → {} on {}: {verdict}.",
            self.from, self.to, self.port
        )?;
        let ExternalFate::Entered {
            address,
            port,
            entries,
            how,
            local,
            affinity,
        } = &self.fate
        else {
            if let ExternalFate::Unreachable(why) = &self.fate {
                write!(f, "{why}, so nothing can answer.")?;
            }
            return Ok(());
        };
        let at = match address {
            Some(a) => format!("{a}:{port}"),
            None => format!("node port {port}"),
        };
        match how {
            EntryKind::NodePort => writeln!(
                f,
                "The connection goes to {}'s address, {at}: kube-proxy there matches it in \
                 KUBE-NODEPORTS (any local address, `--dst-type LOCAL`) and sends it to KUBE-EXT.",
                entries.join(", ")
            )?,
            EntryKind::Router => writeln!(
                f,
                "The client is outside the cluster: its router routes {at} via every node \
                 (ECMP, hashing each flow's addresses and ports), so a connection may enter \
                 any of {}. There kube-proxy's KUBE-SERVICES matches the address and sends it \
                 to KUBE-EXT.",
                entries.join(", ")
            )?,
            EntryKind::OwnNode => writeln!(
                f,
                "The client is inside the cluster: kube-proxy on its own node, {}, catches \
                 {at} in KUBE-SERVICES before it is routed anywhere (the connection never \
                 goes out to the load balancer), and sends it to KUBE-EXT.",
                entries.join(", ")
            )?,
        }
        if *local {
            writeln!(
                f,
                "externalTrafficPolicy Local: traffic from outside goes only to endpoints on \
                 the entry node (KUBE-SVL) and keeps the client's address; a node without one \
                 DROPs it (\"has no local endpoints\"). A pod's traffic (`-s` the pod CIDR) is \
                 short-circuited to every endpoint without masquerade, and the node's own \
                 (`--src-type LOCAL`) is masqueraded and sent to every endpoint."
            )?;
        } else {
            writeln!(
                f,
                "externalTrafficPolicy Cluster: KUBE-EXT marks the connection for masquerade \
                 (KUBE-MARK-MASQ) and KUBE-SVC picks any ready endpoint of the cluster{}. \
                 NetworkPolicy (filter FORWARD) judges the connection after the DNAT but \
                 before the masquerade (nat POSTROUTING): on the entry node it still sees the \
                 client's own address; a backend on another node receives it from the entry \
                 node's address.",
                if *affinity {
                    " (sessionAffinity ClientIP pins a client to one)"
                } else {
                    ""
                }
            )?;
        }
        for p in &self.paths {
            write!(f, "\n-- via {}: ", p.entry)?;
            match &p.outcome {
                PathOutcome::Backend {
                    name,
                    ip,
                    port,
                    masquerade,
                    policy_source,
                    seen_source,
                    prediction,
                } => {
                    writeln!(
                        f,
                        "DNAT to {name} ({ip}:{port}){}; the policy judges source {}, the pod \
                         sees {}: {}",
                        if *masquerade { ", masqueraded" } else { "" },
                        addr(*policy_source),
                        addr(*seen_source),
                        word(prediction.verdict)
                    )?;
                    writeln!(f, "{}", prediction.reason)?;
                }
                PathOutcome::NoEndpoints => writeln!(
                    f,
                    "the Service has no ready endpoint: filter KUBE-EXTERNAL-SERVICES REJECTs it \
                     (\"has no endpoints\"): deny"
                )?,
                PathOutcome::NoLocalEndpoints => writeln!(
                    f,
                    "no endpoint runs on {}: filter KUBE-EXTERNAL-SERVICES DROPs the connection \
                     (\"has no local endpoints\"), the client times out: deny",
                    p.entry
                )?,
                PathOutcome::EntryDown => writeln!(
                    f,
                    "{}'s underlay link is down, and the router has no health check: flows \
                     hashed to it are lost: deny",
                    p.entry
                )?,
                PathOutcome::Asymmetric { backend } => writeln!(
                    f,
                    "KUBE-EXT short-circuits the pod's traffic to {backend} without masquerade, \
                     so the reply goes straight back to the pod, not through {}: the client \
                     gets an answer from an address it did not call and the connection never \
                     opens: deny",
                    p.entry
                )?,
                PathOutcome::SourceRange => writeln!(
                    f,
                    "the client's address is outside loadBalancerSourceRanges: KUBE-FW lets it \
                     through to nowhere and KUBE-PROXY-FIREWALL DROPs it: deny"
                )?,
            }
        }
        let n = self.paths.len();
        match self.verdict {
            Some(Verdict::Allow) => write!(f, "\nEvery path allows it."),
            Some(Verdict::Deny) => write!(f, "\nNo path allows it."),
            None => write!(
                f,
                "\n{} of {n} paths allow it: whether a probe gets through depends on the entry \
                 node and the backend picked, so the cell is not asserted; each answer is \
                 checked against the path it took (told apart by the source address the pod saw).",
                self.allowing()
            ),
        }
    }
}

/// Predicts a cell whose server `to` is `nodeport/...`, `lb/...` or `extip/...`.
pub fn predict_external(
    ctx: &OracleContext,
    from: &Peer,
    to: &Peer,
    port: PortProto,
) -> ExternalPrediction {
    let (fate, paths) = fate_and_paths(ctx, from, to, port);
    let verdict = match &fate {
        ExternalFate::Unreachable(_) => Some(Verdict::Deny),
        ExternalFate::Entered { .. } => {
            let allowing = paths
                .iter()
                .filter(|p| p.verdict() == Verdict::Allow)
                .count();
            if paths.is_empty() || allowing == 0 {
                Some(Verdict::Deny)
            } else if allowing == paths.len() {
                Some(Verdict::Allow)
            } else {
                None
            }
        }
    };
    ExternalPrediction {
        from: from.clone(),
        to: to.clone(),
        port,
        fate,
        paths,
        verdict,
    }
}

/// Where the client is, as this oracle needs it.
enum Client {
    Pod { node: String, ip: Option<Ipv4Addr> },
    Node { node: String },
    Host { ip: Ipv4Addr },
}

fn fate_and_paths(
    ctx: &OracleContext,
    from: &Peer,
    to: &Peer,
    port: PortProto,
) -> (ExternalFate, Vec<PathPrediction>) {
    let unreachable = |why: String| (ExternalFate::Unreachable(why), Vec::new());
    let target = match resolve_target(ctx.objects, to) {
        Ok(t) => t,
        Err(why) => return unreachable(why),
    };
    if !target.ports.contains(&port) {
        return unreachable(format!("{to} has no {} port", port.protocol));
    }
    let Some(sp) = ctx.service_ports.iter().find(|p| {
        p.namespace == target.namespace
            && p.name == target.name
            && p.port == target.service_port
            && p.protocol == port.protocol
    }) else {
        return unreachable(format!(
            "Service {}/{} has no port {} (at this step)",
            target.namespace, target.name, target.service_port
        ));
    };
    let client = match from {
        Peer::Pod(p) => match ctx.resolved.pod(p).and_then(|i| i.node.clone()) {
            Some(node) => Client::Pod {
                node,
                ip: ctx.resolved.pod(p).and_then(|i| i.ip),
            },
            None => return unreachable(format!("{p} is not a pod of the cluster")),
        },
        Peer::Node(n) => Client::Node { node: n.clone() },
        Peer::Host(h) => match ctx.host_addresses.get(h) {
            Some(ip) => Client::Host { ip: *ip },
            None => return unreachable(format!("host {h} is not declared")),
        },
        other => return unreachable(format!("{other} cannot be a client")),
    };
    let (entries, how) = match (&target.node, &client) {
        (Some(node), _) => (vec![node.clone()], EntryKind::NodePort),
        (None, Client::Host { .. }) => (ctx.objects.nodes.clone(), EntryKind::Router),
        (None, Client::Pod { node, .. } | Client::Node { node }) => {
            (vec![node.clone()], EntryKind::OwnNode)
        }
    };
    let local = sp.external_policy_local;
    let fate = ExternalFate::Entered {
        address: target.address,
        port: target.port,
        entries: entries.clone(),
        how,
        local,
        affinity: matches!(sp.session_affinity, SessionAffinity::ClientIp { .. }),
    };
    let mut paths = Vec::new();
    for entry in entries {
        paths.extend(paths_via(ctx, from, &client, &entry, sp, port, &target));
    }
    (fate, paths)
}

fn paths_via(
    ctx: &OracleContext,
    from: &Peer,
    client: &Client,
    entry: &str,
    sp: &ServicePort,
    port: PortProto,
    target: &ExternalTarget,
) -> Vec<PathPrediction> {
    let path = |outcome| PathPrediction {
        entry: entry.to_string(),
        outcome,
    };
    if matches!(client, Client::Host { .. }) && ctx.down_nodes.contains(entry) {
        return vec![path(PathOutcome::EntryDown)];
    }
    if let (Client::Host { ip }, Some(_)) = (client, target.address)
        && !sp.load_balancer_source_ranges.is_empty()
        && target.node.is_none()
        && sp
            .load_balancer_ips
            .contains(&target.address.unwrap_or(Ipv4Addr::UNSPECIFIED))
        && !sp
            .load_balancer_source_ranges
            .iter()
            .any(|r| r.contains(ip))
    {
        return vec![path(PathOutcome::SourceRange)];
    }
    // kube-proxy on the entry node picks the endpoints.
    let cat = categorize_endpoints(sp, entry);
    let chains = cat.chains();
    if !chains.has_endpoints {
        return vec![path(PathOutcome::NoEndpoints)];
    }
    // Which chain KUBE-EXT goes on to, and whether it masquerades.
    let from_pod = matches!(client, Client::Pod { .. });
    let from_entry_itself = matches!(client, Client::Node { node } if node == entry);
    let (backends, masquerade) = if !chains.external_local {
        (cat.cluster_endpoints(), true)
    } else if from_pod {
        (cat.cluster_endpoints(), false)
    } else if from_entry_itself {
        (cat.cluster_endpoints(), true)
    } else {
        if !chains.has_external {
            return vec![path(PathOutcome::NoLocalEndpoints)];
        }
        (cat.external_endpoints(), false)
    };
    backends
        .into_iter()
        .map(|e| path(backend_path(ctx, from, client, entry, e, port, masquerade)))
        .collect()
}

fn backend_path(
    ctx: &OracleContext,
    from: &Peer,
    client: &Client,
    entry: &str,
    e: &Endpoint,
    port: PortProto,
    masquerade: bool,
) -> PathOutcome {
    let (name, peer) = super::service::backend_identity(ctx, e.ip, e.port);
    let target = PortProto::new(port.protocol, e.port);
    let shown = peer.clone().unwrap_or_else(|| Peer::Host(name.clone()));
    let on_entry = e.node.as_deref() == Some(entry);
    let client_node = match client {
        Client::Pod { node, .. } | Client::Node { node } => Some(node.as_str()),
        Client::Host { .. } => None,
    };
    let client_ip = match client {
        Client::Pod { ip, .. } => *ip,
        Client::Node { node } => ctx.node_addresses.get(node).copied(),
        Client::Host { ip } => Some(*ip),
    };
    // A pod sent back to itself is masqueraded whatever the policy: KUBE-SEP's first
    // rule marks `-s <endpoint>` (hairpin), so its reply comes back through the entry
    // node.
    let masquerade =
        masquerade || (matches!(client, Client::Pod { .. }) && client_ip == Some(e.ip));
    // Without masquerade a backend off the entry node replies straight to a client that
    // called the entry node (only a pod's node-port connection to another node can do
    // that: KUBE-EXT's `-s podCIDR` short-circuit).
    if !masquerade && !on_entry && client_node != Some(entry) {
        return PathOutcome::Asymmetric { backend: name };
    }
    // The entry node's address on the way to the backend: its bridge for its own pods,
    // else the address its traffic to other nodes' pods leaves with (underlay or VTEP).
    let entry_source = if on_entry {
        ctx.node_fabric.get(entry).map(|a| a.bridge)
    } else if e.node.is_some() {
        ctx.node_addresses.get(entry).copied()
    } else {
        ctx.node_fabric.get(entry).map(|a| a.underlay)
    };
    let seen_source = if masquerade { entry_source } else { client_ip };
    // A backend decided before any policy is consulted.
    let settled = |name: String, case: Case| PathOutcome::Backend {
        name,
        ip: e.ip,
        port: e.port,
        masquerade,
        policy_source: None,
        seen_source,
        prediction: Box::new(prediction(from, &shown, target, case)),
    };
    let Some(peer) = peer else {
        let case = Case::Unknown(format!(
            "{}:{} is neither a pod of the cluster nor a declared host",
            e.ip, e.port
        ));
        return settled(name, case);
    };
    if let Some(case) = super::service::unserved(ctx, &peer, target) {
        return settled(name, case);
    }
    let (case, policy_source) = if on_entry || !masquerade || e.node.is_none() {
        // Judged before the masquerade: the client's own address.
        (
            policy_case(ctx, from, client, entry, &peer, port, target),
            client_ip,
        )
    } else {
        // Judged on the backend's node, masqueraded to the entry node's address; a pod
        // client's egress was judged on its own node first.
        let hop = decide(
            ctx,
            &Peer::Node(entry.to_string()),
            &peer,
            target,
            Path::ViaNode,
        );
        let case = match (hop, client) {
            (Case::Checked { ingress, .. }, Client::Pod { .. }) => {
                match client_egress(ctx, from, entry, &peer, port, target) {
                    Some(egress) => Case::Checked { egress, ingress },
                    None => Case::Unknown(format!("{from} is not a pod of the cluster")),
                }
            }
            (Case::Checked { ingress, .. }, Client::Host { ip }) => Case::Checked {
                egress: host_side(from, entry_source.unwrap_or(*ip)),
                ingress,
            },
            (other, _) => other,
        };
        (case, entry_source)
    };
    let case = if ctx.engine == PolicyEngineKind::None
        && !matches!(case, Case::NodeUnreachable { .. } | Case::Unknown(_))
    {
        Case::NoEnforcement
    } else {
        case
    };
    PathOutcome::Backend {
        name,
        ip: e.ip,
        port: e.port,
        masquerade,
        policy_source,
        seen_source,
        prediction: Box::new(prediction(from, &shown, target, case)),
    }
}

/// The policies' verdict when the backend's node sees the client's own address. A pod
/// client that called another node's port had its egress judged at home, on that node's
/// address and the node port (not yet DNATed there).
fn policy_case(
    ctx: &OracleContext,
    from: &Peer,
    client: &Client,
    entry: &str,
    backend: &Peer,
    called: PortProto,
    target: PortProto,
) -> Case {
    let case = decide(ctx, from, backend, target, Path::ViaNode);
    match (case, client) {
        (Case::Checked { ingress, .. }, Client::Pod { node, .. }) if node != entry => {
            match client_egress(ctx, from, entry, backend, called, target) {
                Some(egress) => Case::Checked { egress, ingress },
                None => Case::Unknown(format!("{from} is not a pod of the cluster")),
            }
        }
        (case, _) => case,
    }
}

/// A pod client's egress, judged on its own node: to the backend itself when the DNAT
/// happened there (the entry is the client's node), else to the entry node's address.
fn client_egress(
    ctx: &OracleContext,
    from: &Peer,
    entry: &str,
    backend: &Peer,
    called: PortProto,
    target: PortProto,
) -> Option<Side> {
    let Peer::Pod(p) = from else { return None };
    let info = ctx.resolved.pod(p)?;
    let client = tiers::pod_endpoint(p);
    if info.node.as_deref() == Some(entry) {
        let dest = match backend {
            Peer::Pod(b) => ctx.resolved.pod(b).map(PolicyEndpoint::Pod),
            _ => None,
        };
        let dest = dest.unwrap_or(PolicyEndpoint::Address(Ipv4Addr::UNSPECIFIED));
        let egress = side(&ctx.resolved, Direction::Egress, info, &dest, target);
        // The DNAT happened on this node, before the filter: the tiers see the backend.
        let backend_end = match backend {
            Peer::Pod(b) => tiers::pod_endpoint(b),
            Peer::Host(h) => tiers::external_endpoint(
                ctx.host_addresses
                    .get(h)
                    .copied()
                    .unwrap_or(Ipv4Addr::UNSPECIFIED),
            ),
            _ => tiers::external_endpoint(Ipv4Addr::UNSPECIFIED),
        };
        return Some(tiers::walk_side(ctx, client, backend_end, target, egress));
    }
    let entry_ip = ctx.node_fabric.get(entry).map(|a| a.underlay)?;
    let egress = side(
        &ctx.resolved,
        Direction::Egress,
        info,
        &PolicyEndpoint::Address(entry_ip),
        called,
    );
    // Not yet DNATed: the tiers see the entry node's address and the port called.
    Some(tiers::walk_side(
        ctx,
        client,
        tiers::node_endpoint(entry),
        called,
        egress,
    ))
}

/// A host client's side, arriving from `ip`: its own address, or the entry node's once
/// masqueraded (what the backend's node sees, so the walkthrough says that address).
fn host_side(from: &Peer, ip: Ipv4Addr) -> Side {
    let host = match from {
        Peer::Host(h) => h.clone(),
        other => other.to_string(),
    };
    Side::untiered(
        Direction::Egress,
        from.to_string(),
        SideOutcome::HostTraffic { host, ip },
    )
}

/// The node addresses external paths need, per node (see
/// [`OracleContext::with_node_fabric`]).
pub type NodeFabric = BTreeMap<String, super::NodeAddresses>;

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::cluster::ClusterConfig;
    use crate::objects::{ClusterObjects, Object};
    use crate::oracle::NodeAddresses;
    use crate::policy::fixtures::{model_with, node_addresses};
    use crate::services::alloc::{ServiceRanges, allocate};
    use crate::services::targets::targets_of;

    /// The standard model (x/a, x/c on n1; x/b on n2) with the policies given and a
    /// LoadBalancer Service `x/web` over `selector`, node port 30080, LB 203.0.113.1.
    fn model(policies: &[(&str, &str, Value)], selector: Value, local: bool) -> ClusterObjects {
        let mut o = model_with(policies);
        let cluster = ClusterConfig {
            nodes: o.nodes.clone(),
            pod_cidr: "10.244.0.0/16".parse().unwrap(),
            service_cidr: "10.96.0.0/12".parse().unwrap(),
            network: Default::default(),
            policy: Default::default(),
            deny: Default::default(),
            proxy: Default::default(),
            external_hosts: vec![],
            cni: Default::default(),
        };
        let svc = serde_json::from_value(json!({
            "metadata": {"namespace": "x", "name": "web"},
            "spec": {"type": "LoadBalancer", "selector": selector,
                     "externalTrafficPolicy": if local { "Local" } else { "Cluster" },
                     "ports": [{"port": 8000, "targetPort": 80, "nodePort": 30080}]}
        }))
        .unwrap();
        let ranges = ServiceRanges::new(&cluster, Some("203.0.113.0/28".parse().unwrap()));
        let svc = allocate(&o.services, &ranges, svc).unwrap();
        o.apply(Object::Service(svc));
        o
    }

    fn fabric(o: &ClusterObjects) -> NodeFabric {
        o.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    n.clone(),
                    NodeAddresses {
                        underlay: Ipv4Addr::new(192, 168, 200, 11 + i as u8),
                        bridge: Ipv4Addr::new(10, 244, 1 + i as u8, 1),
                    },
                )
            })
            .collect()
    }

    fn predict_on(o: &ClusterObjects, from: &str, to: &str, port: &str) -> ExternalPrediction {
        let addresses = node_addresses(o);
        let ctx = OracleContext::new(o, PolicyEngineKind::Iptables, &addresses)
            .with_hosts([("pc".to_string(), "172.17.0.10".parse().unwrap())].into())
            .with_node_fabric(fabric(o));
        predict_external(
            &ctx,
            &from.parse().unwrap(),
            &to.parse().unwrap(),
            port.parse().unwrap(),
        )
    }

    /// (label, verdict, source the pod sees) per path.
    fn paths(p: &ExternalPrediction) -> Vec<(String, Verdict, Option<String>)> {
        p.paths
            .iter()
            .map(|x| {
                (
                    x.label(),
                    x.verdict(),
                    x.answer().and_then(|(_, s)| s).map(|s| s.to_string()),
                )
            })
            .collect()
    }

    fn namespace_only() -> (&'static str, &'static str, Value) {
        (
            "x",
            "deny-from-other-namespaces",
            json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
        )
    }

    #[test]
    fn targets_parse_and_print_back() {
        for text in [
            "nodeport/n1:30080",
            "lb/web:8000",
            "lb/x/web:8000",
            "extip/x/web:8000",
        ] {
            let peer: Peer = text.parse().unwrap();
            assert!(peer.is_external_service(), "{text}");
            assert_eq!(peer.to_string(), text);
        }
        for bad in [
            "nodeport/n1",
            "nodeport/:80",
            "lb/:80",
            "lb/web:0",
            "extip/web:80",
        ] {
            assert!(bad.parse::<Peer>().is_err(), "{bad}");
        }
        let o = model(&[], json!({"app": "none"}), false);
        let t = resolve_target(&o, &"lb/web:8000".parse().unwrap()).unwrap();
        assert_eq!(t.address, Some("203.0.113.1".parse().unwrap()));
        assert_eq!(t.ports, ["TCP/8000".parse().unwrap()]);
        let t = resolve_target(&o, &"nodeport/n2:30080".parse().unwrap()).unwrap();
        assert_eq!((t.node.as_deref(), t.service_port), (Some("n2"), 8000));
        assert!(resolve_target(&o, &"nodeport/n2:30081".parse().unwrap()).is_err());
        assert!(resolve_target(&o, &"lb/y/web:8000".parse().unwrap()).is_err());
        assert!(
            targets_of(&o.services[&("x".into(), "web".into())], &o.nodes)
                .contains(&"lb/web:8000".parse().unwrap())
        );
    }

    #[test]
    fn cluster_policy_masquerades_to_the_entry_nodes_address() {
        let o = model(&[], json!({"pod": "a"}), false);
        // x/a runs on n1: entering n1 it sees n1's bridge, entering n2 n2's underlay.
        let p = predict_on(&o, "host/pc", "lb/web:8000", "TCP/8000");
        assert_eq!(p.verdict, Some(Verdict::Allow), "{p}");
        assert_eq!(
            paths(&p),
            [
                (
                    "n1 -> x/a".into(),
                    Verdict::Allow,
                    Some("10.244.1.1".into())
                ),
                (
                    "n2 -> x/a".into(),
                    Verdict::Allow,
                    Some("192.168.200.12".into())
                ),
            ]
        );
        let via = p.path_of("x/a", Some("192.168.200.12".parse().unwrap()));
        assert_eq!(via.map(|x| x.entry.as_str()), Some("n2"));
        assert!(
            p.path_of("x/a", Some("172.17.0.10".parse().unwrap()))
                .is_none()
        );
    }

    /// Adds an Admin ClusterNetworkPolicy (priority 10) with `spec`'s subject and rules.
    fn add_admin_cnp(o: &mut ClusterObjects, name: &str, spec: Value) {
        let mut spec = spec;
        spec["tier"] = json!("Admin");
        spec["priority"] = json!(10);
        crate::policy::fixtures::add_cnp(o, name, spec);
    }

    /// A pod of y on `node`.
    fn y_pod_on(o: &ClusterObjects, node: &str) -> String {
        o.pods
            .iter()
            .find(|(r, p)| r.namespace == "y" && crate::objects::pod_node(p) == Some(node))
            .map(|(r, _)| r.to_string())
            .expect("the model has a pod of y on every node")
    }

    #[test]
    fn the_tiers_judge_a_node_port_at_the_backend_on_the_source_the_kernel_sees() {
        let mut o = model(&[], json!({"pod": "a"}), false);
        add_admin_cnp(
            &mut o,
            "x-denies-y",
            json!({"subject": {"namespaces": {"matchLabels": {"ns": "x"}}},
                   "ingress": [{"name": "deny-y", "action": "Deny",
                                "from": [{"namespaces": {"matchLabels": {"ns": "y"}}}]}]}),
        );
        let client = y_pod_on(&o, "n2");
        // Into n1, where x/a runs: judged before the masquerade, on the client itself.
        let p = predict_on(&o, &client, "nodeport/n1:30080", "TCP/30080");
        assert_eq!(p.verdict, Some(Verdict::Deny), "{p}");
        assert!(
            p.to_string()
                .contains(r#"Admin: cnp/x-denies-y priority 10 rule "deny-y" → Deny"#),
            "{p}"
        );
        // Into n2: masqueraded to n2's address on the way to n1, a node, which no
        // `namespaces` peer matches.
        let p = predict_on(&o, &client, "nodeport/n2:30080", "TCP/30080");
        assert_eq!(p.verdict, Some(Verdict::Allow), "{p}");
        assert!(p.to_string().contains("Admin: no rule matches"), "{p}");
    }

    #[test]
    fn egress_to_nodes_is_judged_before_another_nodes_dnat_and_after_the_own_nodes() {
        let mut o = model(&[], json!({"pod": "a"}), false);
        add_admin_cnp(
            &mut o,
            "y-not-to-nodes",
            json!({"subject": {"namespaces": {"matchLabels": {"ns": "y"}}},
                   "egress": [{"name": "deny-nodes", "action": "Deny", "to": [{"nodes":
                       {"matchExpressions": [{"key": "kubernetes.io/hostname",
                                              "operator": "Exists"}]}}]}]}),
        );
        let client = y_pod_on(&o, "n2");
        // Its own node's port: DNATed on n2 before n2's filter sees it (to x/a).
        let p = predict_on(&o, &client, "nodeport/n2:30080", "TCP/30080");
        assert_eq!(p.verdict, Some(Verdict::Allow), "{p}");
        // n1's: n2's filter sees a connection to n1's address.
        let p = predict_on(&o, &client, "nodeport/n1:30080", "TCP/30080");
        assert_eq!(p.verdict, Some(Verdict::Deny), "{p}");
        assert!(
            p.to_string()
                .contains(r#"Admin: cnp/y-not-to-nodes priority 10 rule "deny-nodes" → Deny"#),
            "{p}"
        );
    }

    #[test]
    fn the_pitfall_a_namespace_only_policy_sees_the_entry_node() {
        let o = model(&[namespace_only()], json!({"pod": "a"}), false);
        // x/b (on n2) through n1's node port: DNAT on n1, where x/a runs; the policy
        // judges x/b's own address before the masquerade: allowed.
        let p = predict_on(&o, "x/b", "nodeport/n1:30080", "TCP/30080");
        assert_eq!(p.verdict, Some(Verdict::Allow), "{p}");
        assert_eq!(paths(&p)[0].2.as_deref(), Some("10.244.1.1"));
        // Through n2's: masqueraded to n2's address before it reaches n1: no pod of x.
        let p = predict_on(&o, "x/b", "nodeport/n2:30080", "TCP/30080");
        assert_eq!(p.verdict, Some(Verdict::Deny), "{p}");
        assert!(
            p.to_string()
                .contains("the policy judges source 192.168.200.12"),
            "{p}"
        );
        // From outside, the client's address is no pod either way.
        let p = predict_on(&o, "host/pc", "lb/web:8000", "TCP/8000");
        assert_eq!(p.verdict, Some(Verdict::Deny), "{p}");
        // A pod of x on n1 calling the load-balancer address: caught on n1, local.
        let p = predict_on(&o, "x/c", "lb/web:8000", "TCP/8000");
        assert_eq!(p.verdict, Some(Verdict::Allow), "{p}");
        assert!(matches!(
            p.fate,
            ExternalFate::Entered {
                how: EntryKind::OwnNode,
                ..
            }
        ));
    }

    #[test]
    fn local_policy_keeps_the_client_address_and_drops_where_no_endpoint_runs() {
        let o = model(&[], json!({"pod": "a"}), true);
        let p = predict_on(&o, "host/pc", "lb/web:8000", "TCP/8000");
        assert_eq!(p.verdict, None, "{p}");
        assert_eq!(
            paths(&p),
            [
                (
                    "n1 -> x/a".into(),
                    Verdict::Allow,
                    Some("172.17.0.10".into())
                ),
                ("n2 -> (dropped)".into(), Verdict::Deny, None),
            ]
        );
        assert!(
            p.short().starts_with("depends on the path"),
            "{}",
            p.short()
        );
        let p = predict_on(&o, "host/pc", "nodeport/n2:30080", "TCP/30080");
        assert_eq!(p.verdict, Some(Verdict::Deny));
        assert!(p.to_string().contains("has no local endpoints"), "{p}");
        // A pod is short-circuited to every endpoint, unmasqueraded: x/b (n2) through
        // n2 to x/a on n1 works, the reply comes back through n2; through n1 too.
        for entry in ["n1", "n2"] {
            let p = predict_on(&o, "x/b", &format!("nodeport/{entry}:30080"), "TCP/30080");
            assert_eq!(
                paths(&p),
                [(
                    format!("{entry} -> x/a"),
                    Verdict::Allow,
                    Some("10.244.2.10".into())
                )],
                "{p}"
            );
        }
        // But y/a (n2) through n1 to x/b on n2: x/b answers y/a straight on n2's
        // bridge, never through n1, so the connection does not open.
        let o = model(&[], json!({"pod": "b"}), true);
        let p = predict_on(&o, "y/a", "nodeport/n1:30080", "TCP/30080");
        assert_eq!(
            paths(&p),
            [("n1 -> x/b (asymmetric)".into(), Verdict::Deny, None)]
        );
        // x/b itself through n1 lands on itself: KUBE-SEP's hairpin rule masquerades it
        // to n1's address, so the reply does come back through n1.
        let p = predict_on(&o, "x/b", "nodeport/n1:30080", "TCP/30080");
        assert_eq!(
            paths(&p),
            [(
                "n1 -> x/b".into(),
                Verdict::Allow,
                Some("192.168.200.11".into())
            )],
            "{p}"
        );
    }

    #[test]
    fn down_entry_nodes_and_missing_endpoints() {
        let o = model(&[], json!({"pod": "a"}), false);
        let addresses = node_addresses(&o);
        let ctx = OracleContext::new(&o, PolicyEngineKind::Iptables, &addresses)
            .with_hosts([("pc".to_string(), "172.17.0.10".parse().unwrap())].into())
            .with_node_fabric(fabric(&o))
            .with_down_nodes(["n2".to_string()].into());
        let p = predict_external(
            &ctx,
            &"host/pc".parse().unwrap(),
            &"lb/web:8000".parse().unwrap(),
            "TCP/8000".parse().unwrap(),
        );
        assert_eq!(p.verdict, None, "{p}");
        assert_eq!(p.paths[1].outcome, PathOutcome::EntryDown);
        let o = model(&[], json!({"pod": "nobody"}), false);
        let p = predict_on(&o, "host/pc", "nodeport/n1:30080", "TCP/30080");
        assert_eq!(p.verdict, Some(Verdict::Deny));
        assert_eq!(p.paths[0].outcome, PathOutcome::NoEndpoints);
        let p = predict_on(&o, "host/pc", "lb/web:8000", "UDP/8000");
        assert!(matches!(p.fate, ExternalFate::Unreachable(_)), "{p}");
    }
}
