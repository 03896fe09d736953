//! The Admin and Baseline tiers of cluster-wide policies in a node's rules, around the
//! NetworkPolicy chains. Which pods a policy selects, which addresses a peer stands for
//! and where a named port resolves come from [`crate::cluster_policy`]; this writes them
//! down.
//!
//! In a local pod's chain, per direction: first one jump per Admin policy selecting the
//! pod (by priority, then by id), each taken only while neither an Accept nor a Pass has
//! marked the packet; then the NetworkPolicy rules as without tiers (a pod they isolate
//! gets its final decision there: an Admin Accept has already set the allowed mark, so
//! their deny does not fire); for a direction no NetworkPolicy isolates, the Baseline
//! policies' jumps (after clearing an Admin Pass, taken only while neither an Accept nor
//! a Pass of the Baseline tier has marked the packet) come before the default.
//!
//! A policy's chain holds its rules in order, one line per peer and port. Deny denies in
//! the scenario's style. Accept goes (`-g`) to `KUBE-CNP-ACCEPT`, which marks the packet
//! allowed and, at its end, returns to the pod chain (so an egress Accept still lets the
//! destination's ingress be judged, as a NetworkPolicy egress allow does); Pass goes to
//! `KUBE-CNP-PASS`, which marks it passed. One line a match, where kube-router's MARK and
//! RETURN pair takes two: at 100 policies of 25 rules that is a quarter fewer rules to
//! load. The pass mark is cleared with the allowed mark at the end of the pod chain.
//!
//! A peer's addresses are one set per peer selector and side ([`names::cluster_peer_set`]),
//! shared by every rule naming it, as Calico shares its selector sets.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

use crate::cluster::DenyStyle;
use crate::cluster_policy::{
    Action, ClusterPolicy, ClusterView, Peer, PodView, PortMatch, Rule as PolicyRule, Tier,
};
use crate::policy::{Direction, PodInfo, PortSpan};

use super::super::names;
use super::super::ruleset::{IpSet, SetEntry, SetKind};
use super::rule::{Rule, deny_target, with_span};
use super::{Builder, MARK_ALLOWED};

/// Set by a Pass: "the rest of the Admin tier is skipped".
pub(super) const MARK_PASSED: &str = "0x40000/0x40000";
/// The pass mark's bit.
const PASS_BIT: &str = "0x40000";
/// Neither allowed nor passed: the Admin jumps' guard.
const MARK_UNDECIDED: &str = "0x0/0x50000";
/// Clears both the allowed and the passed marks.
pub(super) const CLEAR_TIER_MARKS: &str = "MARK --set-xmark 0x0/0x50000";

/// The cluster-wide policies a node's rules are rendered with, and the sets their peers
/// stand for: those are the same on every node, so they are worked out once here.
#[derive(Debug, Clone)]
pub struct ClusterTiers<'a> {
    pub policies: &'a [ClusterPolicy],
    pub view: &'a ClusterView,
    /// Per policy (as in `policies`), per direction (ingress, egress), per rule, per
    /// peer: the name of its set.
    set_names: Vec<[Vec<Vec<String>>; 2]>,
    /// Each peer set's members, by name.
    sets: BTreeMap<String, IpSet>,
}

impl<'a> ClusterTiers<'a> {
    /// The tiers of `policies` over the cluster `view`.
    pub fn new(policies: &'a [ClusterPolicy], view: &'a ClusterView) -> Self {
        let mut sets = BTreeMap::new();
        let set_names = policies
            .iter()
            .map(|policy| {
                [Direction::Ingress, Direction::Egress].map(|dir| {
                    rules(policy, dir)
                        .iter()
                        .map(|rule| {
                            rule.peers
                                .iter()
                                .map(|peer| peer_set(&mut sets, view, dir, peer))
                                .collect()
                        })
                        .collect()
                })
            })
            .collect();
        Self {
            policies,
            view,
            set_names,
            sets,
        }
    }

    /// No cluster-wide policy: the rules are NetworkPolicy's alone.
    pub fn none(view: &'a ClusterView) -> Self {
        Self::new(&[], view)
    }

    /// The peers' sets of `policy` (one of ours) for `dir`: per rule, per peer, the
    /// set's name and members.
    fn peer_sets<'s>(
        &'s self,
        policy: &ClusterPolicy,
        dir: Direction,
    ) -> impl Fn(usize, usize) -> Option<(&'s str, &'s IpSet)> + 's {
        let side = match dir {
            Direction::Ingress => 0,
            Direction::Egress => 1,
        };
        let names = self
            .policies
            .iter()
            .position(|p| std::ptr::eq(p, policy))
            .and_then(|at| self.set_names.get(at))
            .map(|per_dir| &per_dir[side]);
        // Every policy a node's rules are rendered for comes from `policies`.
        debug_assert!(
            names.is_some(),
            "{} is not among the tiers' policies",
            policy.id()
        );
        move |rule, peer| {
            let name = names?.get(rule)?.get(peer)?;
            Some((name.as_str(), self.sets.get(name)?))
        }
    }

    /// The policies of `tier` selecting `pod` with rules for `dir`, in evaluation order.
    pub(super) fn selecting(
        &self,
        tier: Tier,
        pod: &PodInfo,
        dir: Direction,
    ) -> Vec<&'a ClusterPolicy> {
        let Some(view) = self
            .view
            .pod(&pod.pod.namespace, &pod.pod.name)
            .filter(|_| !self.policies.is_empty())
        else {
            return Vec::new();
        };
        let ns_labels = self.view.namespace_labels(&view.namespace);
        let mut found: Vec<&ClusterPolicy> = self
            .policies
            .iter()
            .filter(|p| p.tier == tier && !rules(p, dir).is_empty())
            .filter(|p| crate::cluster_policy::evaluate::matching::selects_in(p, view, &ns_labels))
            .collect();
        found.sort_by_key(|p| (p.priority, p.id()));
        found
    }
}

fn rules(policy: &ClusterPolicy, dir: Direction) -> &[PolicyRule] {
    match dir {
        Direction::Ingress => &policy.ingress,
        Direction::Egress => &policy.egress,
    }
}

fn tier_dir(dir: Direction) -> &'static str {
    dir.field()
}

/// Everything one node's tiers add: pod-chain jumps are written by the pod chain; this
/// writes the policies' chains and sets.
pub(super) fn policy_chains(
    b: &mut Builder,
    tiers: &ClusterTiers,
    used: &BTreeMap<(String, Direction), &ClusterPolicy>,
    local: &[(&PodInfo, Ipv4Addr)],
    deny: DenyStyle,
) {
    for ((_, dir), policy) in used {
        policy_chain(b, tiers, policy, *dir, local, deny);
    }
    if !used.is_empty() {
        decision_chains(b);
    }
}

/// The jump from a pod chain to a policy's chain, guarded by the tier's mark test.
pub(super) fn jump(policy: &ClusterPolicy, tier: Tier, ip: Ipv4Addr, dir: Direction) -> Rule {
    let chain = names::cluster_policy_chain(policy.kind.short_name(), &policy.name, dir);
    let guard = match tier {
        Tier::Admin => format!("-m mark --mark {MARK_UNDECIDED}"),
        // A Pass in the Baseline tier skips the rest of it, as in the Admin tier; the
        // pod chain clears an Admin Pass before the Baseline jumps (see `clear_pass`).
        Tier::Baseline => format!("-m mark --mark {MARK_UNDECIDED}"),
    };
    let rule = match dir {
        Direction::Ingress => Rule::new().dst(ip),
        Direction::Egress => Rule::new().src(ip),
    };
    rule.comment(format!(
        "{tier}: {} priority {} {}",
        policy.id(),
        policy.priority,
        tier_dir(dir)
    ))
    .m(guard)
    .jump(chain)
}

/// Before a pod's Baseline jumps: forget an Admin tier's Pass (it handed the connection
/// on to the NetworkPolicy tier, and from there to this one).
pub(super) fn clear_pass(ip: Ipv4Addr, dir: Direction) -> Rule {
    let rule = match dir {
        Direction::Ingress => Rule::new().dst(ip),
        Direction::Egress => Rule::new().src(ip),
    };
    rule.comment(format!(
        "Baseline {}: an Admin Pass ends here",
        tier_dir(dir)
    ))
    .jump(format!("MARK --set-xmark 0x0/{}", PASS_BIT))
}

/// One direction of one policy: its rules in order.
fn policy_chain(
    b: &mut Builder,
    tiers: &ClusterTiers,
    policy: &ClusterPolicy,
    dir: Direction,
    local: &[(&PodInfo, Ipv4Addr)],
    deny: DenyStyle,
) {
    let kind = policy.kind.short_name();
    let chain = names::cluster_policy_chain(kind, &policy.name, dir);
    b.ensure_chain(&chain);
    let peer_sets = tiers.peer_sets(policy, dir);
    for (i, rule) in rules(policy, dir).iter().enumerate() {
        let rule_name = if rule.name.is_empty() {
            format!("#{i}")
        } else {
            rule.name.clone()
        };
        let head = format!(
            "{}: {} priority {} {} rule {rule_name:?}",
            policy.tier,
            policy.id(),
            policy.priority,
            tier_dir(dir)
        );
        let peer_field = match dir {
            Direction::Ingress => "from",
            Direction::Egress => "to",
        };
        for (k, peer) in rule.peers.iter().enumerate() {
            // Worked out by `ClusterTiers::new` for every peer of its policies.
            let Some((set, members)) = peer_sets(i, k) else {
                continue;
            };
            if !b.sets.contains_key(set) {
                b.add_set(set, members.clone());
            }
            let side = match dir {
                Direction::Ingress => "src",
                Direction::Egress => "dst",
            };
            let base = Rule::new().m(format!("-m set --match-set {set} {side}"));
            for (port_label, port_rule) in port_rules(tiers, rule, dir, peer, local) {
                let comment = format!("{head} {peer_field}[{k}]{port_label} -> {}", rule.action);
                let r = port_rule(base.clone()).comment(comment);
                decide(b, &chain, r, rule.action, deny);
            }
        }
    }
}

/// What a matching rule does: Deny denies; Accept and Pass go to the chain that sets
/// their mark, whose end returns to the pod chain (so the rest of this policy's rules
/// are skipped, as a MARK and a RETURN on the mark would, in one rule instead of two).
fn decide(b: &mut Builder, chain: &str, r: Rule, action: Action, deny: DenyStyle) {
    let r = match action {
        Action::Deny => r.jump(deny_target(deny)),
        Action::Accept => r.goto(names::CLUSTER_ACCEPT_CHAIN),
        Action::Pass => r.goto(names::CLUSTER_PASS_CHAIN),
    };
    b.push(chain, r);
}

/// The chains Accept and Pass go to (only on a node that has some policy chain).
fn decision_chains(b: &mut Builder) {
    for (chain, mark, what) in [
        (names::CLUSTER_ACCEPT_CHAIN, MARK_ALLOWED, "Accept"),
        (names::CLUSTER_PASS_CHAIN, MARK_PASSED, "Pass"),
    ] {
        b.push(
            chain,
            Rule::new()
                .comment(format!(
                    "cluster-wide policy {what}: mark, back to the pod chain"
                ))
                .jump(format!("MARK --set-xmark {mark}")),
        );
    }
}

type PortRule = Box<dyn Fn(Rule) -> Rule>;

/// The port conditions of a rule, each with its label: every port (no `protocols`),
/// each number or range, and each named port resolved on each destination pod (the
/// subject's local pods for ingress, the peer's pods for egress) as `-d POD --dport N`.
fn port_rules(
    tiers: &ClusterTiers,
    rule: &PolicyRule,
    dir: Direction,
    peer: &Peer,
    local: &[(&PodInfo, Ipv4Addr)],
) -> Vec<(String, PortRule)> {
    let Some(ports) = &rule.ports else {
        return vec![(String::new(), Box::new(|r| r))];
    };
    let mut out: Vec<(String, PortRule)> = Vec::new();
    for (j, m) in ports.iter().enumerate() {
        match m {
            PortMatch::Range {
                protocol,
                start,
                end,
            } => {
                let span = PortSpan {
                    protocol: *protocol,
                    range: Some((*start, *end)),
                };
                out.push((
                    format!(" protocols[{j}] {span}"),
                    Box::new(move |r| with_span(r, Some(&span))),
                ));
            }
            PortMatch::Named(name) => {
                // The destination pods: the subject's local pods (ingress) or the peer's.
                let destinations: Vec<(&PodView, Ipv4Addr)> = match dir {
                    Direction::Ingress => local
                        .iter()
                        .filter_map(|(p, ip)| {
                            let view = tiers.view.pod(&p.pod.namespace, &p.pod.name)?;
                            Some((view, *ip))
                        })
                        .collect(),
                    Direction::Egress => peer_pods(tiers.view, peer),
                };
                for (pod, ip) in destinations {
                    for c in pod
                        .ports
                        .iter()
                        .filter(|c| c.name.as_deref() == Some(name.as_str()))
                    {
                        let span = PortSpan {
                            protocol: c.protocol,
                            range: Some((c.port, c.port)),
                        };
                        out.push((
                            format!(
                                " protocols[{j}] {name} = {span} on {}/{}",
                                pod.namespace, pod.name
                            ),
                            Box::new(move |r| with_span(r.dst(ip), Some(&span))),
                        ));
                    }
                }
            }
        }
    }
    out
}

/// The pods a `namespaces`/`pods` peer stands for, with their addresses. Namespace
/// labels are looked up once per namespace: a node with thousands of peers over
/// hundreds of pods would otherwise spend seconds rebuilding them.
fn peer_pods<'v>(view: &'v ClusterView, peer: &Peer) -> Vec<(&'v PodView, Ipv4Addr)> {
    let mut ns_labels: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
    view.pods
        .iter()
        .filter(|p| {
            let labels = ns_labels
                .entry(p.namespace.as_str())
                .or_insert_with(|| view.namespace_labels(&p.namespace));
            crate::cluster_policy::evaluate::matching::pod_peer_matches(peer, p, labels)
        })
        .filter_map(|p| match p.ip {
            Some(IpAddr::V4(ip)) => Some((p, ip)),
            _ => None,
        })
        .collect()
}

/// The name of the set a peer stands for, its members added to `sets` unless a peer
/// before selected the same on the same side: pods (`hash:ip`), the matching nodes'
/// addresses (`hash:ip`), or networks (`hash:net`, IPv4 only: the cluster is IPv4).
fn peer_set(
    sets: &mut BTreeMap<String, IpSet>,
    view: &ClusterView,
    dir: Direction,
    peer: &Peer,
) -> String {
    let name = names::cluster_peer_set(dir, &peer.key(), matches!(peer, Peer::Networks(_)));
    if sets.contains_key(&name) {
        return name;
    }
    let content = match peer {
        Peer::Namespaces(_) | Peer::Pods { .. } => IpSet::new(
            SetKind::HashIp,
            peer_pods(view, peer)
                .into_iter()
                .map(|(p, ip)| SetEntry::host(ip, format!("{}/{}", p.namespace, p.name))),
        ),
        Peer::Nodes(_) => {
            let entries: Vec<SetEntry> = view
                .nodes
                .iter()
                .filter(|n| {
                    crate::cluster_policy::evaluate::matching::peer_matches(
                        peer,
                        &crate::cluster_policy::Endpoint::Node(n.name.clone()),
                        view,
                    )
                })
                .flat_map(|n| {
                    n.addresses.iter().filter_map(move |a| match a {
                        IpAddr::V4(ip) => Some(SetEntry::host(*ip, format!("node/{}", n.name))),
                        IpAddr::V6(_) => None,
                    })
                })
                .collect();
            IpSet::new(SetKind::HashIp, entries)
        }
        Peer::Networks(nets) => {
            let entries: Vec<SetEntry> = nets
                .iter()
                .filter_map(|n| match n {
                    IpNet::V4(v4) => Some(*v4),
                    IpNet::V6(_) => None,
                })
                .flat_map(halves)
                .map(|net| SetEntry {
                    net,
                    nomatch: false,
                    comment: format!("network {net}"),
                })
                .collect();
            IpSet::new(SetKind::HashNet, entries)
        }
    };
    sets.insert(name.clone(), content);
    name
}

/// A network as `hash:net` can hold it (a /0 as its two /1 halves).
fn halves(net: Ipv4Net) -> Vec<Ipv4Net> {
    if net.prefix_len() == 0 {
        ["0.0.0.0/1", "128.0.0.0/1"]
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect()
    } else {
        vec![net.trunc()]
    }
}
