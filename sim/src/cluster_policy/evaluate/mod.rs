//! The verdict for one connection under the tiers, with the walk that led to it.
//! Egress is judged at the source and ingress at the destination; each walks the Admin
//! tier (policies by priority, rules in order: Accept and Deny are final, Pass leaves
//! the tier), then the NetworkPolicy tier (given by the caller, since NetworkPolicy
//! evaluation lives in [`crate::policy`]), then the Baseline tier, then the default
//! (allow). Both directions must allow. Same-priority policies that disagree on a
//! connection make the verdict [`Verdict::Undefined`], as the API says it is.

mod walk;

pub(crate) mod matching;

use std::fmt;
use std::net::IpAddr;

use crate::cluster_policy::model::{Action, ClusterPolicy, Tier};
use crate::cluster_policy::view::ClusterView;
use crate::protocol::Protocol;

/// One end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Pod {
        namespace: String,
        name: String,
    },
    /// A node's own address (the kubelet, a host process).
    Node(String),
    /// An address outside the cluster.
    External(IpAddr),
}

/// A connection. A pod's NetworkPolicy-like rules judge it where it is a pod: egress at
/// a source pod, ingress at a destination pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub source: Endpoint,
    pub destination: Endpoint,
    pub protocol: Protocol,
    pub port: u16,
}

/// Which side of the connection a walk judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// At the source pod.
    Egress,
    /// At the destination pod.
    Ingress,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Egress => "egress",
            Direction::Ingress => "ingress",
        })
    }
}

/// What the NetworkPolicy tier says for one direction of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkPolicyTier {
    /// No NetworkPolicy selects the pod for this direction: evaluation goes on.
    NotSelected,
    /// Selected and allowed, by the named policy (`x/allow-web`).
    Allow { by: String },
    /// Selected and not allowed (`by` names the selecting policies).
    Deny { by: String },
}

/// A verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Allow,
    Deny,
    /// Same-priority policies disagree; an implementation may apply either.
    Undefined,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Undefined => "undefined",
        })
    }
}

/// One line of the walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A cluster-wide policy's rule matched.
    Rule {
        tier: Tier,
        policy: String,
        priority: u16,
        /// The rule's name, or `#index` when it has none.
        rule: String,
        action: Action,
    },
    /// Policies of one priority disagree.
    Ambiguous {
        tier: Tier,
        priority: u16,
        policies: Vec<String>,
    },
    /// No rule of the tier matched (or no policy of the tier selects the pod).
    NoMatch { tier: Tier },
    /// The pod is on the host network: no cluster-wide policy has it as a subject.
    HostNetwork,
    /// This end is not a pod: nothing judges this direction.
    NotAPod,
    /// What the NetworkPolicy tier said.
    NetworkPolicy(NetworkPolicyTier),
    /// Nothing decided: Kubernetes' default.
    Default,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Rule {
                tier,
                policy,
                priority,
                rule,
                action,
            } => write!(
                f,
                "{tier}: {policy} priority {priority} rule {rule:?} → {action}"
            ),
            Step::Ambiguous {
                tier,
                priority,
                policies,
            } => write!(
                f,
                "{tier}: {} share priority {priority} and disagree → undefined",
                policies.join(" and ")
            ),
            Step::NoMatch { tier } => write!(f, "{tier}: no rule matches"),
            Step::HostNetwork => {
                f.write_str("host-network pod: never a subject of a cluster-wide policy")
            }
            Step::NotAPod => f.write_str("not a pod: no policy applies → allow"),
            Step::NetworkPolicy(NetworkPolicyTier::NotSelected) => {
                f.write_str("NetworkPolicy: no policy selects the pod")
            }
            Step::NetworkPolicy(NetworkPolicyTier::Allow { by }) => {
                write!(f, "NetworkPolicy: {by} → allow")
            }
            Step::NetworkPolicy(NetworkPolicyTier::Deny { by }) => {
                write!(f, "NetworkPolicy: {by} → deny")
            }
            Step::Default => f.write_str("default: allow"),
        }
    }
}

/// The verdict of one direction and its walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectionVerdict {
    pub direction: Direction,
    pub verdict: Verdict,
    pub steps: Vec<Step>,
}

impl fmt::Display for DirectionVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let steps: Vec<String> = self.steps.iter().map(Step::to_string).collect();
        write!(
            f,
            "{}: {} ({})",
            self.direction,
            self.verdict,
            steps.join("; ")
        )
    }
}

/// The connection's verdict: deny if either direction denies, undefined if either is
/// undefined, allow otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub verdict: Verdict,
    pub egress: DirectionVerdict,
    pub ingress: DirectionVerdict,
}

/// Judge `conn` under `policies`. `network_policy` tells, for each direction, what
/// the NetworkPolicy tier decides for the pod judged in that direction.
pub fn evaluate(
    policies: &[ClusterPolicy],
    view: &ClusterView,
    conn: &Connection,
    network_policy: impl Fn(Direction) -> NetworkPolicyTier,
) -> Evaluation {
    let egress = walk::direction(policies, view, conn, Direction::Egress, &network_policy);
    let ingress = walk::direction(policies, view, conn, Direction::Ingress, &network_policy);
    let verdict = match (egress.verdict, ingress.verdict) {
        (Verdict::Deny, _) | (_, Verdict::Deny) => Verdict::Deny,
        (Verdict::Undefined, _) | (_, Verdict::Undefined) => Verdict::Undefined,
        _ => Verdict::Allow,
    };
    Evaluation {
        verdict,
        egress,
        ingress,
    }
}
