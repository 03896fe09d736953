//! Whether a policy's subject selects a pod, whether a rule's peer matches the other
//! end of a connection, and whether its ports match the destination port (named ports
//! resolved on the destination pod).

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::cluster_policy::evaluate::Endpoint;
use crate::cluster_policy::model::{ClusterPolicy, Peer, PortMatch, Subject};
use crate::cluster_policy::view::{ClusterView, PodView};
use crate::protocol::Protocol;
use crate::selector;

/// Whether `policy` applies to `pod`: never to a host-network pod.
pub(crate) fn selects(policy: &ClusterPolicy, pod: &PodView, view: &ClusterView) -> bool {
    selects_in(policy, pod, &view.namespace_labels(&pod.namespace))
}

/// [`selects`], the pod's namespace labelled `ns_labels` (for a caller asking of many
/// policies about one pod).
pub(crate) fn selects_in(
    policy: &ClusterPolicy,
    pod: &PodView,
    ns_labels: &BTreeMap<String, String>,
) -> bool {
    if pod.host_network {
        return false;
    }
    match &policy.subject {
        Subject::Namespaces(ns) => selector::matches(ns, ns_labels),
        Subject::Pods { namespaces, pods } => {
            selector::matches(namespaces, ns_labels) && selector::matches(pods, &pod.labels)
        }
    }
}

/// Whether a `namespaces` or `pods` peer matches `pod` (never a host-network pod), its
/// namespace labelled `ns_labels` ([`ClusterView::namespace_labels`], which a caller
/// matching many pods computes once per namespace); a peer of another kind matches no
/// pod as such.
pub(crate) fn pod_peer_matches(
    peer: &Peer,
    pod: &PodView,
    ns_labels: &BTreeMap<String, String>,
) -> bool {
    if pod.host_network {
        return false;
    }
    match peer {
        Peer::Namespaces(ns) => selector::matches(ns, ns_labels),
        Peer::Pods { namespaces, pods } => {
            selector::matches(namespaces, ns_labels) && selector::matches(pods, &pod.labels)
        }
        Peer::Nodes(_) | Peer::Networks(_) => false,
    }
}

/// Whether `peer` matches the other end of the connection.
pub(crate) fn peer_matches(peer: &Peer, other: &Endpoint, view: &ClusterView) -> bool {
    let pod = match other {
        Endpoint::Pod { namespace, name } => view.pod(namespace, name),
        _ => None,
    };
    match peer {
        Peer::Namespaces(_) | Peer::Pods { .. } => {
            pod.is_some_and(|p| pod_peer_matches(peer, p, &view.namespace_labels(&p.namespace)))
        }
        Peer::Nodes(sel) => {
            let ip = address(other, view);
            view.nodes.iter().any(|n| {
                selector::matches(sel, &n.labels)
                    && (matches!(other, Endpoint::Node(name) if *name == n.name)
                        || ip.is_some_and(|ip| n.addresses.contains(&ip)))
            })
        }
        Peer::Networks(nets) => {
            address(other, view).is_some_and(|ip| nets.iter().any(|n| n.contains(&ip)))
        }
    }
}

/// The address an endpoint's packets carry: a pod's IP, a node's first address, or
/// the external address.
fn address(endpoint: &Endpoint, view: &ClusterView) -> Option<IpAddr> {
    match endpoint {
        Endpoint::Pod { namespace, name } => view.pod(namespace, name).and_then(|p| p.ip),
        Endpoint::Node(name) => view.node(name).and_then(|n| n.addresses.first().copied()),
        Endpoint::External(ip) => Some(*ip),
    }
}

/// Whether a rule's ports (`None`: all) match `protocol`/`port` on `destination`.
pub(crate) fn ports_match(
    ports: Option<&[PortMatch]>,
    protocol: Protocol,
    port: u16,
    destination: Option<&PodView>,
) -> bool {
    let Some(ports) = ports else { return true };
    ports.iter().any(|m| match m {
        PortMatch::Range {
            protocol: p,
            start,
            end,
        } => *p == protocol && (*start..=*end).contains(&port),
        PortMatch::Named(name) => destination.is_some_and(|d| {
            d.ports.iter().any(|c| {
                c.name.as_deref() == Some(name.as_str()) && c.protocol == protocol && c.port == port
            })
        }),
    })
}
