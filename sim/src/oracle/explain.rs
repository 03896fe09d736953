//! The oracle's reasons: a structured account of one prediction (which policies isolate
//! each end, which rule, peer and port let the connection through, or why none did), with
//! a several-line walkthrough (`Display`) and a one-line form for the JSON `reason`.

use std::fmt;
use std::net::Ipv4Addr;

use crate::cluster_policy::{DirectionVerdict, Step as TierStep, Verdict as TierVerdict};
use crate::matrix::Verdict;

use crate::peers::Peer;
use crate::policy::{
    Direction, Endpoint, PeerCheck, PeerKind, PodInfo, PolicyCheck, PortCheck, PortMatcher,
    ResolvedPeer, ResolvedRule, RuleCheck,
};
use crate::protocol::PortProto;
use crate::selector;

/// Why the oracle predicts what it predicts for one cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub from: Peer,
    pub to: Peer,
    pub port: PortProto,
    pub verdict: Verdict,
    pub case: Case,
}

/// Which situation decided the cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Case {
    /// `policy: none`: the plugin accepts policies and enforces nothing.
    NoEnforcement,
    /// A pod to itself: through `lo` in its own netns, never seen by the node.
    Loopback,
    /// A node to a pod it runs: always allowed (the kubelet rule).
    OwnNode { node: String },
    /// A hostNetwork pod and a pod of the same node, either way round: the hostNetwork
    /// end is the node itself, and traffic between a pod and its own node is always
    /// allowed (the enforcer's "from local node" / "to local node").
    HostNetworkOwnNode {
        node: String,
        host_pod: String,
        pod: String,
    },
    /// A probe end that does not exist (denied: nothing can answer).
    Unknown(String),
    /// Both ends checked against the policies; both must allow.
    Checked { egress: Side, ingress: Side },
    /// A pod reaching itself through a Service (hairpin): the packet goes out to the
    /// node and comes back DNATed to the pod's own address, so the enforcer does see it.
    /// NetworkPolicy does not say what applies to a pod's traffic to itself; kube-router
    /// (and knetlab's enforcer, which follows its layout) sends it through the pod's one
    /// firewall chain, where the pod's egress rules (`-s` the pod) and its ingress rules
    /// (`-d` the pod) both match and either one allowing marks it allowed: it passes when
    /// egress **or** ingress allows.
    Hairpin { egress: Side, ingress: Side },
    /// One end runs on (or is) a node whose underlay link is down and the other end is
    /// elsewhere: nothing crosses the fabric to or from that node, whatever the policies
    /// say. Nobody answers, so a probe measures `dropped`.
    NodeUnreachable { node: String },
    /// `node/NAME` probed on a port: a pod's hostPort, forwarded by the portmap plugin
    /// (see [`super::host_port`]), or nothing listening there.
    HostPort(Box<super::host_port::HostPortCase>),
    /// `bridge-nf-call-iptables=0` on `node` and a pod reaching a ClusterIP whose chosen
    /// backend sits on the same bridge: the request is DNATed on the way out, but the
    /// reply is switched by the bridge straight to the client, never seen by conntrack,
    /// so it keeps the backend's address; the client resets it (see
    /// [`super::bridge_nf`]). Denied whatever the policies say.
    SameBridgeReply(Box<super::bridge_nf::SameBridgeReply>),
    /// `bridge-nf-call-iptables=0` on `node` and two pods on its bridge: their frames are
    /// switched without entering iptables, so the policy engine's rules (its physdev
    /// jumps included) never see them: allowed whatever the policies say. The two sides
    /// are what the policies would have said.
    BridgedUnfiltered {
        node: String,
        egress: Side,
        ingress: Side,
    },
}

impl Case {
    pub fn verdict(&self) -> Verdict {
        match self {
            Case::NoEnforcement
            | Case::Loopback
            | Case::OwnNode { .. }
            | Case::HostNetworkOwnNode { .. } => Verdict::Allow,
            Case::Unknown(_) | Case::NodeUnreachable { .. } => Verdict::Deny,
            Case::HostPort(h) => h.verdict(),
            Case::SameBridgeReply(_) => Verdict::Deny,
            Case::BridgedUnfiltered { .. } => Verdict::Allow,
            Case::Checked { egress, ingress } => {
                Verdict::from_allowed(egress.allowed() && ingress.allowed())
            }
            Case::Hairpin { egress, ingress } => {
                Verdict::from_allowed(egress.allowed() || ingress.allowed())
            }
        }
    }
}

/// One end of the connection: the client's egress or the server's ingress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Side {
    pub direction: Direction,
    /// The pod (or `node/N`) this side is about.
    pub subject: String,
    /// What NetworkPolicy alone says of this side.
    pub outcome: SideOutcome,
    /// When the cluster has cluster-wide policies: the walk through the tiers (Admin,
    /// NetworkPolicy as in `outcome`, Baseline, default), which decides the side.
    pub tiers: Option<DirectionVerdict>,
}

impl Side {
    /// A side as NetworkPolicy alone sees it; the tier walk, when the cluster has
    /// cluster-wide policies, is added by whoever judges the side with them.
    pub fn untiered(
        direction: Direction,
        subject: impl Into<String>,
        outcome: SideOutcome,
    ) -> Self {
        Self {
            direction,
            subject: subject.into(),
            outcome,
            tiers: None,
        }
    }

    pub fn allowed(&self) -> bool {
        if let Some(t) = &self.tiers {
            return t.verdict == TierVerdict::Allow;
        }
        match &self.outcome {
            SideOutcome::NodeTraffic { .. }
            | SideOutcome::HostNetwork { .. }
            | SideOutcome::HostTraffic { .. }
            | SideOutcome::NotAPod { .. }
            | SideOutcome::NotIsolated => true,
            SideOutcome::Isolated { allowed, .. } => *allowed,
        }
    }
}

impl Side {
    /// Whether same-priority cluster-wide policies disagree on this side: the API
    /// leaves the result to the implementation, so the oracle does not predict it.
    pub fn undefined(&self) -> bool {
        self.tiers
            .as_ref()
            .is_some_and(|t| t.verdict == TierVerdict::Undefined)
    }
}

/// How one end decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SideOutcome {
    /// The client is a node: no NetworkPolicy governs a node's own egress.
    NodeTraffic { node: String, ip: Ipv4Addr },
    /// The side's pod is a hostNetwork pod on `node`, whose address `ip` it uses: no
    /// NetworkPolicy selects it, as client (its egress is the node's) or as server.
    HostNetwork { node: String, ip: Ipv4Addr },
    /// The client is a host outside the cluster: nothing in the cluster polices its egress.
    HostTraffic { host: String, ip: Ipv4Addr },
    /// The server is not a pod (a host outside the cluster): no NetworkPolicy governs
    /// what it accepts.
    NotAPod { who: String, ip: Ipv4Addr },
    /// No policy selects the pod for this direction: open.
    NotIsolated,
    /// Policies select the pod for this direction; allowed when one of their rules does.
    Isolated {
        policies: Vec<PolicyReport>,
        allowed: bool,
    },
}

/// One policy isolating an end, and how each of its rules fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyReport {
    /// `ns/name`.
    pub policy: String,
    /// How it selects the pod: `podSelector {} selects every pod in x`.
    pub selects: String,
    /// `policyTypes [Ingress]`, or how they were defaulted.
    pub policy_types: String,
    /// Its rules for this direction, in order (empty: it allows nothing).
    pub rules: Vec<RuleReport>,
}

/// One rule checked against the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleReport {
    /// `ingress[0]`.
    pub rule: String,
    pub outcome: RuleOutcome,
}

/// Whether a rule allowed the connection, and if not, why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleOutcome {
    Allows {
        /// `ingress[0].from[1]`, or `ingress[0]` when the rule has no `from`.
        peer_label: String,
        /// `pods with pod=b in x`, or `any peer (the rule has no from)`.
        peer: String,
        /// `ports[0] TCP/80`, or `every port and protocol (the rule has no ports)`.
        port: String,
    },
    /// No peer is the other end: one line per peer saying why.
    NoPeer { misses: Vec<String> },
    /// A peer matched, but no port entry opens the probed port: one line per entry.
    NoPort {
        peer_label: String,
        peer: String,
        misses: Vec<String>,
    },
}

impl RuleOutcome {
    fn allows(&self) -> bool {
        matches!(self, RuleOutcome::Allows { .. })
    }
}

/// Builds the report of one policy's check. `other` is the far end (the source for
/// ingress, the destination for egress); `dest` the destination pod, on which named
/// ports resolve.
pub(super) fn policy_report(
    check: &PolicyCheck,
    direction: Direction,
    other: &Endpoint,
    dest: Option<&PodInfo>,
) -> PolicyReport {
    let policy = check.policy;
    let selects = if selector::is_empty(&policy.pod_selector) {
        format!("podSelector {{}} selects every pod in {}", policy.namespace)
    } else {
        format!(
            "podSelector {} selects it",
            selector::describe(&policy.pod_selector)
        )
    };
    let t = policy.policy_types;
    let listed: Vec<&str> = [Direction::Ingress, Direction::Egress]
        .into_iter()
        .filter(|d| t.has(*d))
        .map(Direction::policy_type)
        .collect();
    let policy_types = if t.defaulted {
        let why = if t.egress {
            "since it has egress rules"
        } else {
            "since it has no egress rules"
        };
        format!(
            "policyTypes omitted: [{}] by default, {why}",
            listed.join(", ")
        )
    } else {
        format!("policyTypes [{}]", listed.join(", "))
    };
    let rules = check
        .rules
        .iter()
        .map(|(rule, c)| RuleReport {
            rule: rule.label(),
            outcome: rule_outcome(rule, c, direction, other, dest),
        })
        .collect();
    PolicyReport {
        policy: policy.id(),
        selects,
        policy_types,
        rules,
    }
}

fn rule_outcome(
    rule: &ResolvedRule,
    check: &RuleCheck,
    direction: Direction,
    other: &Endpoint,
    dest: Option<&PodInfo>,
) -> RuleOutcome {
    let (peer_label, peer) = match check.peer {
        PeerCheck::AnyPeer => (
            rule.label(),
            format!("any peer (the rule has no {})", direction.peers_field()),
        ),
        PeerCheck::Peer(i) => (rule.peer_label(i), peer_kind(rule, i)),
        PeerCheck::NoMatch => {
            let misses = rule
                .peers
                .iter()
                .flatten()
                .map(|p| {
                    format!(
                        "{}[{}] ({}) {}",
                        direction.peers_field(),
                        p.index,
                        p.kind,
                        peer_miss(p, other)
                    )
                })
                .collect();
            return RuleOutcome::NoPeer { misses };
        }
    };
    match check.port {
        PortCheck::AllPorts => RuleOutcome::Allows {
            peer_label,
            peer,
            port: "every port and protocol (the rule has no ports)".into(),
        },
        PortCheck::Entry { index, span } => {
            let entry = rule
                .ports
                .iter()
                .flatten()
                .find(|e| e.index == index)
                .map(|e| match &e.matcher {
                    PortMatcher::Named { .. } => format!("{e} = {span} on the destination"),
                    _ => e.to_string(),
                })
                .unwrap_or_default();
            RuleOutcome::Allows {
                peer_label,
                peer,
                port: format!("ports[{index}] {entry}"),
            }
        }
        PortCheck::NoMatch => {
            let misses = rule
                .ports
                .iter()
                .flatten()
                .map(|e| {
                    let note = match &e.matcher {
                        PortMatcher::Named { protocol, name } => {
                            match (dest, e.on(dest.map(|d| d.ports.as_slice()))) {
                                (None, _) => {
                                    " (the destination is not a pod: named ports open nothing)"
                                        .to_string()
                                }
                                (Some(d), None) => {
                                    format!(" ({} declares no {protocol} port named {name})", d.pod)
                                }
                                (Some(d), Some(span)) => format!(" (= {span} on {})", d.pod),
                            }
                        }
                        _ => String::new(),
                    };
                    format!("ports[{}] {e}{note}", e.index)
                })
                .collect();
            RuleOutcome::NoPort {
                peer_label,
                peer,
                misses,
            }
        }
    }
}

fn peer_kind(rule: &ResolvedRule, index: usize) -> String {
    rule.peers
        .iter()
        .flatten()
        .find(|p| p.index == index)
        .map(|p| p.kind.to_string())
        .unwrap_or_default()
}

/// Why a peer does not match the far end.
fn peer_miss(peer: &ResolvedPeer, other: &Endpoint) -> String {
    match (&peer.kind, other) {
        (
            PeerKind::Pods {
                namespace_selector: None,
                policy_namespace,
                ..
            },
            Endpoint::Pod(p),
        ) if p.pod.namespace != *policy_namespace => format!(
            "does not include {} (a podSelector alone only looks in {policy_namespace})",
            p.pod
        ),
        (PeerKind::Pods { .. }, Endpoint::Pod(p)) => format!("does not include {}", p.pod),
        (PeerKind::Pods { .. }, Endpoint::Address(a)) => {
            format!("selects pods only, and {a} is not a pod")
        }
        (PeerKind::IpBlock(b), _) => match other.ip() {
            None => format!("cannot match {other}: it has no IP yet"),
            Some(ip) => {
                let who = match other {
                    Endpoint::Pod(p) => format!("{ip} ({})", p.pod),
                    Endpoint::Address(_) => ip.to_string(),
                };
                match b.excepted_by(ip) {
                    Some(e) => format!("covers {who} but its except {e} removes it"),
                    None => format!("does not cover {who}"),
                }
            }
        },
        (PeerKind::Nothing(_), _) => "matches nothing".into(),
    }
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "allow",
        Verdict::Deny => "deny",
    }
}

/// The one sentence both forms of a [`Case::NodeUnreachable`] explanation share.
fn node_down_text(node: &str) -> String {
    format!(
        "{node}'s underlay link is down: nothing from other nodes reaches it; traffic inside {node} still flows"
    )
}

impl Explanation {
    /// Whether the cell's outcome is undefined by the API (same-priority cluster-wide
    /// policies disagree on a side that decides it): not a prediction to check.
    pub fn undefined(&self) -> bool {
        match &self.case {
            Case::Checked { egress, ingress } => {
                egress.undefined() && ingress.allowed()
                    || ingress.undefined() && egress.allowed()
                    || egress.undefined() && ingress.undefined()
            }
            Case::Hairpin { egress, ingress } => {
                (egress.undefined() || ingress.undefined())
                    && !(egress.allowed() || ingress.allowed())
            }
            _ => false,
        }
    }

    /// One line, for the JSON `reason`: `deny: egress open (x/b not isolated); ingress
    /// denied (x/a isolated by x/default-deny-ingress; no rule allows it)`.
    pub fn short(&self) -> String {
        let v = if self.undefined() {
            "undefined"
        } else {
            verdict_word(self.verdict)
        };
        match &self.case {
            Case::NoEnforcement => {
                format!("{v}: the policy engine is none, so the plugin enforces nothing")
            }
            Case::Loopback => format!(
                "{v}: a pod reaching its own IP stays on lo in its netns and never reaches the node's enforcer"
            ),
            Case::OwnNode { node } => format!(
                "{v}: {node} is the node {} runs on; a node always reaches its own pods",
                self.to
            ),
            Case::HostNetworkOwnNode {
                node,
                host_pod,
                pod,
            } => format!(
                "{v}: {}",
                super::host_network::own_node_short(node, host_pod, pod)
            ),
            Case::Unknown(what) => format!("{v}: {what}"),
            Case::NodeUnreachable { node } => format!("{v}: {}", node_down_text(node)),
            Case::HostPort(h) => format!("{v}: {}", h.short(&self.from)),
            Case::SameBridgeReply(r) => format!("{v}: {}", r.short()),
            Case::BridgedUnfiltered {
                node,
                egress,
                ingress,
            } => format!(
                "{v}: {}",
                super::bridge_nf::unfiltered_short(node, egress, ingress)
            ),
            Case::Checked { egress, ingress } => {
                format!(
                    "{v}: egress {}; ingress {}",
                    egress.short(),
                    ingress.short()
                )
            }
            Case::Hairpin { egress, ingress } => format!(
                "{v}: hairpin through the node, either direction suffices: egress {}; ingress {}",
                egress.short(),
                ingress.short()
            ),
        }
    }
}

impl Side {
    pub(super) fn short(&self) -> String {
        if let Some(t) = &self.tiers {
            let steps: Vec<String> = t.steps.iter().map(TierStep::to_string).collect();
            return format!("{} ({})", t.verdict, steps.join("; "));
        }
        match &self.outcome {
            SideOutcome::NodeTraffic { node, ip } => {
                format!("not policed (node/{node} sends from {ip})")
            }
            SideOutcome::HostTraffic { host, ip } => {
                format!("not policed (host/{host} is outside the cluster, sending from {ip})")
            }
            SideOutcome::HostNetwork { node, ip } => {
                super::host_network::side_short(&self.subject, node, *ip)
            }
            SideOutcome::NotAPod { who, ip } => {
                format!("not policed ({who} at {ip} is not a pod)")
            }
            SideOutcome::NotIsolated => format!("open ({} not isolated)", self.subject),
            SideOutcome::Isolated { policies, allowed } => {
                let first_allow = policies.iter().find_map(|p| {
                    p.rules.iter().find_map(|r| match &r.outcome {
                        RuleOutcome::Allows { peer_label, .. } => {
                            Some(format!("{} {peer_label}", p.policy))
                        }
                        _ => None,
                    })
                });
                match (allowed, first_allow) {
                    (true, Some(by)) => format!("allowed by {by}"),
                    _ => {
                        let ids: Vec<&str> = policies.iter().map(|p| p.policy.as_str()).collect();
                        format!(
                            "denied ({} isolated by {}; no rule allows it)",
                            self.subject,
                            ids.join(", ")
                        )
                    }
                }
            }
        }
    }

    fn heading(&self) -> &'static str {
        match self.direction {
            Direction::Ingress => "Ingress",
            Direction::Egress => "Egress",
        }
    }
}

impl fmt::Display for Explanation {
    /// The walkthrough: a header, the egress side, the ingress side, the conclusion.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = match self.verdict {
            _ if self.undefined() => {
                "UNDEFINED (same-priority cluster-wide policies disagree; the API leaves the \
                 result to the implementation, so the oracle does not predict it)"
            }
            Verdict::Allow => "ALLOWED",
            Verdict::Deny => "DENIED",
        };
        writeln!(f, "{} → {} on {}: {word}.", self.from, self.to, self.port)?;
        match &self.case {
            Case::NoEnforcement => write!(
                f,
                "The cluster's policy engine is `none`: like flannel or the plain bridge plugin, \
                 it accepts NetworkPolicy objects and enforces nothing, so every connection goes through."
            ),
            Case::Loopback => write!(
                f,
                "{} is talking to itself: traffic to its own IP goes through lo inside its network \
                 namespace and never reaches the node, where policies are enforced, so it is always allowed.",
                self.to
            ),
            Case::OwnNode { node } => write!(
                f,
                "{} runs on {node}. Traffic between a pod and its own node is always allowed \
                 (the kubelet's health checks need it), whatever the policies say.",
                self.to
            ),
            Case::HostNetworkOwnNode {
                node,
                host_pod,
                pod,
            } => super::host_network::own_node_walkthrough(f, node, host_pod, pod),
            Case::Unknown(what) => write!(f, "{what}, so nothing can answer."),
            Case::NodeUnreachable { node } => write!(
                f,
                "{}. The connection would have to cross the fabric to or from {node}, so it is \
                 lost on the way: no policy is consulted, nobody answers, and a probe waits out \
                 its deadline (dropped). The objects are unchanged; Kubernetes would only mark \
                 the node NotReady and evict its pods minutes later.",
                node_down_text(node)
            ),
            Case::HostPort(h) => h.walkthrough(f, &self.from),
            Case::SameBridgeReply(r) => write!(f, "{r}"),
            Case::BridgedUnfiltered {
                node,
                egress,
                ingress,
            } => super::bridge_nf::unfiltered_walkthrough(f, node, egress, ingress),
            Case::Hairpin { egress, ingress } => {
                writeln!(
                    f,
                    "{} reaches itself through a Service: the connection leaves the pod, the node \
                     DNATs it back to the pod's own address, and the enforcer sees it. NetworkPolicy \
                     leaves a pod's traffic to itself undefined; kube-router's layout runs it through \
                     the pod's one firewall chain, where its egress and its ingress rules both apply \
                     and either one allowing is enough.",
                    self.to
                )?;
                writeln!(f, "{egress}")?;
                writeln!(f, "{ingress}")?;
                match (egress.allowed(), ingress.allowed()) {
                    (false, false) => write!(f, "Neither direction allows it."),
                    (true, true) => write!(f, "Both directions allow it."),
                    (true, false) => write!(
                        f,
                        "Its egress allows it, which is enough here, although its ingress would not."
                    ),
                    (false, true) => write!(
                        f,
                        "Its ingress allows it, which is enough here, although its egress would not."
                    ),
                }
            }
            Case::Checked { egress, ingress } => {
                writeln!(f, "{egress}")?;
                writeln!(f, "{ingress}")?;
                match (egress.allowed(), ingress.allowed()) {
                    (true, true) => write!(
                        f,
                        "Both ends allow it (replies of the connection are then allowed too: enforcement is stateful)."
                    ),
                    (false, true) => write!(
                        f,
                        "Both ends must allow: the egress of {} blocks it, even though the ingress of {} would accept it.",
                        egress.subject, ingress.subject
                    ),
                    (true, false) => write!(
                        f,
                        "Both ends must allow: the ingress of {} blocks it.",
                        ingress.subject
                    ),
                    (false, false) => write!(
                        f,
                        "Neither end allows it: the egress of {} and the ingress of {} both block it.",
                        egress.subject, ingress.subject
                    ),
                }
            }
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(t) = &self.tiers {
            write!(
                f,
                "{}: the tiers, in evaluation order, for {}:",
                self.heading(),
                self.subject
            )?;
            for (i, step) in t.steps.iter().enumerate() {
                write!(f, "\n  {}. {step}", i + 1)?;
            }
            write!(f, "\n  → {} {}.", self.direction.field(), t.verdict)?;
            let consulted = t
                .steps
                .iter()
                .any(|s| matches!(s, TierStep::NetworkPolicy(_)));
            if !consulted {
                return Ok(());
            }
            writeln!(f, "\n  The NetworkPolicy tier in detail:")?;
        }
        let head = self.heading();
        let dir = self.direction.field();
        match &self.outcome {
            SideOutcome::HostTraffic { host, ip } => write!(
                f,
                "{head}: the client is host {host}, outside the cluster; no NetworkPolicy governs \
                 its traffic. It arrives from {ip}, which on the other end only ipBlock peers or \
                 rules without `from` can admit."
            ),
            SideOutcome::NotAPod { who, ip } => write!(
                f,
                "{head}: the server {who} ({ip}) is not a pod, so no NetworkPolicy governs what it \
                 accepts; only the client's egress decides."
            ),
            SideOutcome::HostNetwork { node, ip } => {
                super::host_network::side_walkthrough(f, self.direction, &self.subject, node, *ip)
            }
            SideOutcome::NodeTraffic { node, ip } => write!(
                f,
                "{head}: the client is node {node}, not a pod; no NetworkPolicy governs a node's own \
                 traffic. It leaves {node} with its address {ip}, which on the other end only \
                 ipBlock peers or rules without `from` can admit."
            ),
            SideOutcome::NotIsolated => write!(
                f,
                "{head}: {} is not selected by any policy with {head} in its policyTypes, so its {dir} is open.",
                self.subject
            ),
            SideOutcome::Isolated { policies, allowed } => {
                let list: Vec<String> = policies
                    .iter()
                    .map(|p| format!("{} ({}; {})", p.policy, p.selects, p.policy_types))
                    .collect();
                write!(
                    f,
                    "{head}: {} is isolated for {dir} by {}.",
                    self.subject,
                    list.join(" and ")
                )?;
                for p in policies {
                    if p.rules.is_empty() {
                        write!(
                            f,
                            "\n  - {}: its {dir} list is empty, so it allows no {dir} at all.",
                            p.policy
                        )?;
                    }
                    for r in &p.rules {
                        write!(f, "\n  - {} {}: ", p.policy, r.rule)?;
                        match &r.outcome {
                            RuleOutcome::Allows {
                                peer_label,
                                peer,
                                port,
                            } => write!(f, "ALLOWS it: {peer_label} ({peer}) matches, on {port}.")?,
                            RuleOutcome::NoPeer { misses } => {
                                write!(f, "no peer matches: {}.", misses.join("; "))?
                            }
                            RuleOutcome::NoPort {
                                peer_label,
                                peer,
                                misses,
                            } => write!(
                                f,
                                "{peer_label} ({peer}) matches, but no ports entry opens it: {}.",
                                misses.join("; ")
                            )?,
                        }
                    }
                }
                let allowing = policies
                    .iter()
                    .filter(|p| p.rules.iter().any(|r| r.outcome.allows()))
                    .count();
                if *allowed {
                    write!(
                        f,
                        "\n  Policies add up: one allowing rule is enough, so {} accepts it on {dir}.",
                        self.subject
                    )?;
                    if allowing > 1 {
                        write!(f, " ({allowing} policies allow it.)")?;
                    }
                    Ok(())
                } else {
                    write!(
                        f,
                        "\n  No rule of any policy selecting {} allows it, so its {dir} denies the connection.",
                        self.subject
                    )
                }
            }
        }
    }
}
