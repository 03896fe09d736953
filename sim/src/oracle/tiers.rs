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
    self, ClusterPolicy, ClusterView, Connection, Endpoint, NetworkPolicyTier,
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
        egress: Side,
        ingress: Side,
    ) -> (Side, Side) {
        // The evaluator knows hostNetwork pods: never subjects, and matched as peers by
        // their (the node's) address only.
        let source = match source {
            Source::Pod(p) | Source::HostPod(p, _, _) => pod_endpoint(&p.pod),
            Source::Node(n, _) => node_endpoint(n),
            Source::Host(_, ip) => external_endpoint(*ip),
        };
        let destination = match dest {
            Dest::Pod(p) | Dest::HostPod(p, _, _) => pod_endpoint(&p.pod),
            Dest::Outside(_, ip) => external_endpoint(*ip),
        };
        (
            self.walk_side(source.clone(), destination.clone(), port, egress),
            self.walk_side(source, destination, port, ingress),
        )
    }

    /// One side's walk, for the connection as the kernel sees it where that side is
    /// judged: a side judged after a DNAT (a node port, a hostPort) sees the backend and
    /// its port, one judged before it sees the node's address and the port called.
    pub(super) fn walk_side(
        &self,
        source: Endpoint,
        destination: Endpoint,
        port: PortProto,
        mut side: Side,
    ) -> Side {
        let conn = Connection {
            source,
            destination,
            protocol: port.protocol,
            port: port.port,
        };
        let np = network_policy_tier(&side);
        let evaluation =
            cluster_policy::evaluate(&self.policies, &self.view, &conn, |_| np.clone());
        side.tiers = Some(match side.direction {
            crate::policy::Direction::Egress => evaluation.egress,
            crate::policy::Direction::Ingress => evaluation.ingress,
        });
        side
    }
}

/// `side` with its tier walk when the cluster has cluster-wide policies (see
/// [`Tiers::walk_side`]), unchanged otherwise: for the paths that reach a pod through a
/// node's address (node ports, load-balancer addresses, external IPs, hostPorts).
pub(super) fn walk_side(
    ctx: &super::OracleContext,
    source: Endpoint,
    destination: Endpoint,
    port: PortProto,
    side: Side,
) -> Side {
    match &ctx.tiers {
        Some(t) => t.walk_side(source, destination, port, side),
        None => side,
    }
}

/// A node as the tiers name it (the source or destination address is the node's own).
pub(super) fn node_endpoint(node: &str) -> Endpoint {
    Endpoint::Node(node.to_string())
}

/// An address outside the cluster as the tiers name it.
pub(super) fn external_endpoint(ip: Ipv4Addr) -> Endpoint {
    Endpoint::External(IpAddr::V4(ip))
}

/// A pod as the tiers name it.
pub(super) fn pod_endpoint(pod: &crate::objects::PodRef) -> Endpoint {
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
