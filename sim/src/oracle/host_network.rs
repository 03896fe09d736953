//! The oracle's words for hostNetwork pods: a side whose pod is on its node's host
//! network (no NetworkPolicy selects it; as client it sends from the node's address, as
//! server it listens there), and a hostNetwork pod with a pod of its own node, which
//! always reach each other.

use std::fmt;
use std::net::Ipv4Addr;

use crate::policy::Direction;

/// One line for a side decided by being on the host network.
pub(super) fn side_short(subject: &str, node: &str, ip: Ipv4Addr) -> String {
    format!("not policed ({subject} is on {node}'s host network, at {ip}: no policy selects it)")
}

/// The walkthrough of such a side.
pub(super) fn side_walkthrough(
    f: &mut fmt::Formatter<'_>,
    direction: Direction,
    subject: &str,
    node: &str,
    ip: Ipv4Addr,
) -> fmt::Result {
    match direction {
        Direction::Egress => write!(
            f,
            "Egress: {subject} has hostNetwork: true: it runs in {node}'s network namespace, \
             so no NetworkPolicy selects it and its traffic is {node}'s own. It leaves with \
             {node}'s address {ip}, which on the other end no podSelector or \
             namespaceSelector matches; only ipBlock peers or rules without `from` can admit it."
        ),
        Direction::Ingress => write!(
            f,
            "Ingress: the server {subject} has hostNetwork: true: it listens in {node}'s \
             network namespace at {node}'s address {ip}, and no NetworkPolicy selects it, so \
             only the client's egress decides (where a selector peer does not match it; an \
             ipBlock covering {ip} does)."
        ),
    }
}

/// One line for a hostNetwork pod and a pod of the same node.
pub(super) fn own_node_short(node: &str, host_pod: &str, pod: &str) -> String {
    format!(
        "{host_pod} runs on {node}'s host network and {pod} runs on {node}; a pod and its own node always reach each other"
    )
}

/// The walkthrough of a hostNetwork pod and a pod of the same node.
pub(super) fn own_node_walkthrough(
    f: &mut fmt::Formatter<'_>,
    node: &str,
    host_pod: &str,
    pod: &str,
) -> fmt::Result {
    write!(
        f,
        "{host_pod} has hostNetwork: true, so it is {node} itself to the network (it uses \
         {node}'s address), and {pod} runs on {node}. Traffic between a pod and its own node \
         is always allowed, either way (the kubelet's health checks need it), whatever the \
         policies say."
    )
}
