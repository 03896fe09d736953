//! One direction's walk through the tiers: the pod judged (source for egress,
//! destination for ingress), the policies selecting it grouped by priority, the first
//! matching rule of each, then the NetworkPolicy tier, then Baseline, then the default.

use std::collections::BTreeMap;

use crate::cluster_policy::evaluate::matching::{peer_matches, ports_match, selects};
use crate::cluster_policy::evaluate::{
    Connection, Direction, DirectionVerdict, Endpoint, NetworkPolicyTier, Step, Verdict,
};
use crate::cluster_policy::model::{Action, ClusterPolicy, Rule, Tier};
use crate::cluster_policy::view::{ClusterView, PodView};

/// How a tier ended for the connection.
enum TierEnd {
    Final(Verdict),
    /// A Pass, or no rule matched: on to the next tier.
    Next,
}

/// What one direction's walk compares rules against.
#[derive(Clone, Copy)]
struct Side<'a> {
    view: &'a ClusterView,
    /// The other end: the source for ingress, the destination for egress.
    other: &'a Endpoint,
    conn: &'a Connection,
    direction: Direction,
    /// The destination pod, where named ports are resolved.
    destination: Option<&'a PodView>,
}

/// Walk one direction.
pub(super) fn direction(
    policies: &[ClusterPolicy],
    view: &ClusterView,
    conn: &Connection,
    direction: Direction,
    network_policy: &dyn Fn(Direction) -> NetworkPolicyTier,
) -> DirectionVerdict {
    let destination = match &conn.destination {
        Endpoint::Pod { namespace, name } => view.pod(namespace, name),
        _ => None,
    };
    let (judged, other) = match direction {
        Direction::Egress => (&conn.source, &conn.destination),
        Direction::Ingress => (&conn.destination, &conn.source),
    };
    let mut steps = Vec::new();
    let finish = |verdict, steps| DirectionVerdict {
        direction,
        verdict,
        steps,
    };
    let Endpoint::Pod { namespace, name } = judged else {
        steps.push(Step::NotAPod);
        return finish(Verdict::Allow, steps);
    };
    // A pod missing from the view is judged as one no policy selects.
    let pod = view.pod(namespace, name);
    let host_network = pod.is_some_and(|p| p.host_network);
    if host_network {
        steps.push(Step::HostNetwork);
    }
    let subject = pod.filter(|p| !p.host_network);
    let side = Side {
        view,
        other,
        conn,
        direction,
        destination,
    };
    let tier_walk = |tier, steps: &mut Vec<Step>| match subject {
        Some(p) => walk_tier(tier, policies, p, &side, steps),
        None => TierEnd::Next,
    };
    if let TierEnd::Final(v) = tier_walk(Tier::Admin, &mut steps) {
        return finish(v, steps);
    }
    let np = network_policy(direction);
    steps.push(Step::NetworkPolicy(np.clone()));
    match np {
        NetworkPolicyTier::Allow { .. } => return finish(Verdict::Allow, steps),
        NetworkPolicyTier::Deny { .. } => return finish(Verdict::Deny, steps),
        NetworkPolicyTier::NotSelected => {}
    }
    if let TierEnd::Final(v) = tier_walk(Tier::Baseline, &mut steps) {
        return finish(v, steps);
    }
    steps.push(Step::Default);
    finish(Verdict::Allow, steps)
}

/// The policies of `tier` selecting `pod`, by priority; in each priority the first
/// matching rule of each policy. One action among them decides (Pass leaves the tier);
/// different actions at one priority are undefined.
fn walk_tier(
    tier: Tier,
    policies: &[ClusterPolicy],
    pod: &PodView,
    side: &Side,
    steps: &mut Vec<Step>,
) -> TierEnd {
    let Side {
        view,
        other,
        conn,
        direction,
        destination,
    } = *side;
    let mut by_priority: BTreeMap<u16, Vec<&ClusterPolicy>> = BTreeMap::new();
    for p in policies
        .iter()
        .filter(|p| p.tier == tier && selects(p, pod, view))
    {
        by_priority.entry(p.priority).or_default().push(p);
    }
    for (priority, mut group) in by_priority {
        group.sort_by_key(|p| p.id());
        let hits: Vec<(&ClusterPolicy, usize, &Rule)> = group
            .iter()
            .filter_map(|p| {
                let rules = match direction {
                    Direction::Egress => &p.egress,
                    Direction::Ingress => &p.ingress,
                };
                rules
                    .iter()
                    .enumerate()
                    .find(|(_, r)| {
                        r.peers.iter().any(|peer| peer_matches(peer, other, view))
                            && ports_match(
                                r.ports.as_deref(),
                                conn.protocol,
                                conn.port,
                                destination,
                            )
                    })
                    .map(|(i, r)| (*p, i, r))
            })
            .collect();
        let Some((_, _, first)) = hits.first() else {
            continue;
        };
        for (p, i, r) in &hits {
            steps.push(Step::Rule {
                tier,
                policy: p.id(),
                priority,
                rule: if r.name.is_empty() {
                    format!("#{i}")
                } else {
                    r.name.clone()
                },
                action: r.action,
            });
        }
        if hits.iter().any(|(_, _, r)| r.action != first.action) {
            steps.push(Step::Ambiguous {
                tier,
                priority,
                policies: hits.iter().map(|(p, _, _)| p.id()).collect(),
            });
            return TierEnd::Final(Verdict::Undefined);
        }
        return match first.action {
            Action::Accept => TierEnd::Final(Verdict::Allow),
            Action::Deny => TierEnd::Final(Verdict::Deny),
            Action::Pass => TierEnd::Next,
        };
    }
    steps.push(Step::NoMatch { tier });
    TierEnd::Next
}
