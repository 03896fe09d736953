//! The cluster-wide policy tiers around NetworkPolicy: once both ends have been judged
//! by NetworkPolicy alone, each side's verdict is replaced by the walk of
//! [`crate::cluster_policy::evaluate()`] (Admin, then the NetworkPolicy tier as just
//! judged, then Baseline, then the default), egress at the source and ingress at the
//! destination. The walk is kept in the side for the explanation; a walk that ends in
//! same-priority policies disagreeing makes the cell undefined, never a guess.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use crate::cluster_policy::from_objects;
use crate::cluster_policy::{
    self, ClusterPolicy, ClusterView, Connection, Direction as TierDirection, Endpoint,
    NetworkPolicyTier,
};
use crate::objects::ClusterObjects;
use crate::protocol::PortProto;

use super::explain::{RuleOutcome, Side, SideOutcome};
use super::{Dest, Source};

/// The cluster's cluster-wide policies and the view they are judged on.
#[derive(Debug, Clone)]
pub(super) struct Tiers {
    policies: Vec<ClusterPolicy>,
    view: ClusterView,
}

impl Tiers {
    /// `None` when the cluster has no cluster-wide policy.
    pub(super) fn of(
        objects: &ClusterObjects,
        node_addresses: &BTreeMap<String, Ipv4Addr>,
    ) -> Option<Self> {
        let (policies, _) = from_objects::policies(objects);
        if policies.is_empty() {
            return None;
        }
        Some(Self {
            policies,
            view: from_objects::view(objects, &|n| {
                node_addresses.get(n).copied().into_iter().collect()
            }),
        })
    }

    /// Both sides with their tier walks.
    pub(super) fn walk(
        &self,
        source: &Source,
        dest: &Dest,
        port: PortProto,
        mut egress: Side,
        mut ingress: Side,
    ) -> (Side, Side) {
        let conn = Connection {
            source: match source {
                // The evaluator knows hostNetwork pods: never subjects, and matched as
                // peers by their (the node's) address only.
                Source::Pod(p) | Source::HostPod(p, _, _) => pod_endpoint(&p.pod),
                Source::Node(n, _) => Endpoint::Node((*n).clone()),
                Source::Host(_, ip) => Endpoint::External(IpAddr::V4(*ip)),
            },
            destination: match dest {
                Dest::Pod(p) | Dest::HostPod(p, _, _) => pod_endpoint(&p.pod),
                Dest::Outside(_, ip) => Endpoint::External(IpAddr::V4(*ip)),
            },
            protocol: port.protocol,
            port: port.port,
        };
        let evaluation = cluster_policy::evaluate(&self.policies, &self.view, &conn, |d| match d {
            TierDirection::Egress => network_policy_tier(&egress),
            TierDirection::Ingress => network_policy_tier(&ingress),
        });
        egress.tiers = Some(evaluation.egress);
        ingress.tiers = Some(evaluation.ingress);
        (egress, ingress)
    }
}

fn pod_endpoint(pod: &crate::objects::PodRef) -> Endpoint {
    Endpoint::Pod {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
    }
}

/// What the NetworkPolicy tier said for one side, by the policies that said it.
fn network_policy_tier(side: &Side) -> NetworkPolicyTier {
    match &side.outcome {
        SideOutcome::Isolated { policies, allowed } => {
            let by: Vec<&str> = policies
                .iter()
                .filter(|p| {
                    !*allowed
                        || p.rules
                            .iter()
                            .any(|r| matches!(r.outcome, RuleOutcome::Allows { .. }))
                })
                .map(|p| p.policy.as_str())
                .collect();
            let by = by.join(", ");
            if *allowed {
                NetworkPolicyTier::Allow { by }
            } else {
                NetworkPolicyTier::Deny { by }
            }
        }
        SideOutcome::NotIsolated
        | SideOutcome::NodeTraffic { .. }
        | SideOutcome::HostNetwork { .. }
        | SideOutcome::HostTraffic { .. }
        | SideOutcome::NotAPod { .. } => NetworkPolicyTier::NotSelected,
    }
}
