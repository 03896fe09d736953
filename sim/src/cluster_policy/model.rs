//! The validated policy both API versions become: a tier, a priority, a subject and
//! ordered ingress/egress rules whose peers and ports are already checked. The
//! evaluator only ever sees this form, so v1alpha1 and v1alpha2 share one semantics.

use std::fmt;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::protocol::Protocol;

/// The tiers a cluster-wide policy sits in (the NetworkPolicy tier is between them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    Admin,
    Baseline,
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tier::Admin => "Admin",
            Tier::Baseline => "Baseline",
        })
    }
}

/// What a matching rule does (v1alpha1's `Allow` is `Accept`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Accept,
    Deny,
    Pass,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Accept => "Accept",
            Action::Deny => "Deny",
            Action::Pass => "Pass",
        })
    }
}

/// The manifest a policy came from, for explanations (`cnp/name`, `anp/name`,
/// `banp/default`, the kinds' short names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKind {
    ClusterNetworkPolicy,
    AdminNetworkPolicy,
    BaselineAdminNetworkPolicy,
}

impl SourceKind {
    /// kubectl's short name for the kind.
    pub fn short_name(self) -> &'static str {
        match self {
            SourceKind::ClusterNetworkPolicy => "cnp",
            SourceKind::AdminNetworkPolicy => "anp",
            SourceKind::BaselineAdminNetworkPolicy => "banp",
        }
    }
}

/// One validated cluster-wide policy.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterPolicy {
    pub kind: SourceKind,
    pub name: String,
    pub tier: Tier,
    /// Lower first; 0–1000.
    pub priority: u16,
    pub subject: Subject,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
}

impl ClusterPolicy {
    /// `cnp/deny-slytherin`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.kind.short_name(), self.name)
    }
}

/// The pods a policy applies to (never host-network pods).
#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    /// Every pod in the namespaces whose labels match.
    Namespaces(LabelSelector),
    /// Pods whose namespace AND own labels match.
    Pods {
        namespaces: LabelSelector,
        pods: LabelSelector,
    },
}

/// One rule, in the order written.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The rule's `name` (may be empty: it is optional in v1alpha2).
    pub name: String,
    pub action: Action,
    /// `from` (ingress) or `to` (egress): any of them matching is enough.
    pub peers: Vec<Peer>,
    /// `None`: every port of every protocol; otherwise any entry matching.
    pub ports: Option<Vec<PortMatch>>,
}

/// A peer of a rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Peer {
    /// Every (non-host-network) pod in the matching namespaces.
    Namespaces(LabelSelector),
    /// (Non-host-network) pods matching both selectors.
    Pods {
        namespaces: LabelSelector,
        pods: LabelSelector,
    },
    /// The addresses of the matching nodes (egress only).
    Nodes(LabelSelector),
    /// Addresses in any of these CIDRs, pods included (egress only).
    Networks(Vec<IpNet>),
}

impl Peer {
    /// What the peer selects, written the same however its selectors are written
    /// ([`crate::selector::canonical`]): two peers with the same key stand for the same
    /// addresses, so the rules naming them can share one set.
    pub fn key(&self) -> String {
        use crate::selector::canonical;
        match self {
            Peer::Namespaces(ns) => format!("namespaces:{}", canonical(ns)),
            Peer::Pods { namespaces, pods } => {
                format!("pods:{}|{}", canonical(namespaces), canonical(pods))
            }
            Peer::Nodes(nodes) => format!("nodes:{}", canonical(nodes)),
            Peer::Networks(nets) => {
                let mut nets: Vec<String> = nets.iter().map(|n| n.trunc().to_string()).collect();
                nets.sort_unstable();
                nets.dedup();
                format!("networks:{}", nets.join(","))
            }
        }
    }
}

/// A destination port condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortMatch {
    /// `protocol` and a port in `start..=end` (a single number has `start == end`).
    Range {
        protocol: Protocol,
        start: u16,
        end: u16,
    },
    /// A container port of the destination pod with this name (any protocol it has).
    Named(String),
}
