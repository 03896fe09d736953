//! The oracle: predicts each matrix cell from the Kubernetes objects, with the reason a
//! workshop attendee can follow. It decides nothing about NetworkPolicy itself (that is
//! [`crate::policy`]); it adds what happens around the policies:
//! - the engine: with `policy: none` nothing is enforced and every cell is allowed;
//! - the matrix diagonal: a pod reaching its own IP goes through `lo` inside its own
//!   network namespace and never reaches the node, where our enforcer runs, so it is
//!   always allowed (the conformance tooling does not assert it either);
//! - the kubelet rule: a node reaches the pods it runs at all times; another node is just
//!   an outside address (its underlay IP), which only `ipBlock`s or empty peers admit;
//! - both ends: the client's egress and the server's ingress must each allow; replies
//!   of an allowed connection are allowed (stateful), so a probe is one prediction.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::matrix::Verdict;
use crate::objects::{ClusterObjects, PodRef};
use crate::policy::{self, Direction, Endpoint, PodInfo, ResolvedPolicies, SideVerdict};
use crate::protocol::PortProto;
use crate::scenario::{Peer, PolicyEngineKind};

mod explain;
#[cfg(test)]
mod tests;

pub use explain::{Case, Explanation, PolicyReport, RuleOutcome, RuleReport, Side, SideOutcome};

/// What the oracle knows: the objects (resolved once), the engine and the nodes' addresses.
#[derive(Debug, Clone)]
pub struct OracleContext<'a> {
    pub objects: &'a ClusterObjects,
    pub engine: PolicyEngineKind,
    /// Node name → underlay IP; a probe from `node/N` leaves with that address.
    pub node_addresses: &'a BTreeMap<String, Ipv4Addr>,
    resolved: ResolvedPolicies,
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
            resolved: policy::resolve(objects),
        }
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
pub fn predict(ctx: &OracleContext, from: &Peer, to: &PodRef, port: PortProto) -> Prediction {
    let case = decide(ctx, from, to, port);
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

fn decide(ctx: &OracleContext, from: &Peer, to: &PodRef, port: PortProto) -> Case {
    let resolved = &ctx.resolved;
    let Some(dest) = resolved.pod(to) else {
        return Case::Unknown(format!("{to} is not a pod of the cluster"));
    };
    let source = match from {
        Peer::Pod(p) => match resolved.pod(p) {
            Some(info) => Source::Pod(info),
            None => return Case::Unknown(format!("{p} is not a pod of the cluster")),
        },
        Peer::Node(n) => Source::Node(n),
    };
    if ctx.engine == PolicyEngineKind::None {
        return Case::NoEnforcement;
    }
    match source {
        Source::Pod(p) if p.pod == *to => Case::Loopback,
        Source::Node(n) if dest.node.as_deref() == Some(n.as_str()) => {
            Case::OwnNode { node: n.clone() }
        }
        Source::Node(n) => match ctx.node_addresses.get(n) {
            None => Case::Unknown(format!("node {n} has no known address")),
            Some(ip) => {
                let egress = Side {
                    direction: Direction::Egress,
                    subject: format!("node/{n}"),
                    outcome: SideOutcome::NodeTraffic {
                        node: n.clone(),
                        ip: *ip,
                    },
                };
                let other = Endpoint::Address(*ip);
                let ingress = side(resolved, Direction::Ingress, dest, &other, port);
                Case::Checked { egress, ingress }
            }
        },
        Source::Pod(p) => {
            let egress = side(resolved, Direction::Egress, p, &Endpoint::Pod(dest), port);
            let ingress = side(resolved, Direction::Ingress, dest, &Endpoint::Pod(p), port);
            Case::Checked { egress, ingress }
        }
    }
}

enum Source<'a> {
    Pod(&'a PodInfo),
    Node(&'a String),
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
    Side {
        direction,
        subject: subject.pod.to_string(),
        outcome,
    }
}
