//! Which cells a step measures and where their ends are: clients × servers × ports,
//! the ports a server serves, and the namespace and address of each end.

use std::net::Ipv4Addr;

use anyhow::{Result, anyhow};
use sim::objects::{ClusterObjects, PodRef, declared_ports};
use sim::protocol::PortProto;
use sim::scenario::{Peer, Scenario};

use crate::netns::Netns;

use super::{Live, dns_step::dns_ports};

/// The cells a step measures, in a stable order: clients × servers × the ports each
/// server declares (or `probe.ports`). A Service target `svc/NS/NAME:PORT` is probed on
/// its own port, once per protocol the Service has on that number (`probe.ports` lists
/// the pods' ports and does not apply to it); one that does not exist at this step, or
/// has no such port now, is left out like a pod that does not exist yet.
pub(super) fn cells_of(
    scenario: &Scenario,
    objects: &ClusterObjects,
) -> Vec<(Peer, Peer, PortProto)> {
    // The cluster DNS pod serves DNS, not probes: it is in no default set.
    let pods: Vec<PodRef> = objects
        .pods
        .keys()
        .filter(|p| scenario.dns.is_none() || !sim::dns::is_dns_pod(p))
        .cloned()
        .collect();
    let from: Vec<Peer> = match &scenario.probe.from {
        Some(f) => f.clone(),
        None => pods.iter().cloned().map(Peer::Pod).collect(),
    };
    let mut to: Vec<Peer> = match &scenario.probe.to {
        Some(t) => t.clone(),
        None => pods.iter().cloned().map(Peer::Pod).collect(),
    };
    if scenario.probe.services {
        to.extend(service_targets(scenario, objects));
    }
    let exists = |p: &Peer| match p {
        Peer::Pod(pod) => objects.pods.contains_key(pod),
        // A node that joins in a later step (`nodeJoin`) is not there yet.
        Peer::Node(n) => objects.nodes.contains(n),
        Peer::Service { .. } => !served_ports(scenario, objects, p).is_empty(),
        p if p.is_external_service() => !served_ports(scenario, objects, p).is_empty(),
        _ => true,
    };
    let mut cells = Vec::new();
    for server in to.iter().filter(|p| exists(p)) {
        let ports = match (&scenario.probe.ports, server) {
            (Some(p), s) if !s.is_service() && !s.is_external_service() => p.clone(),
            _ => served_ports(scenario, objects, server),
        };
        for client in from.iter().filter(|p| exists(p)) {
            let ports = match server {
                Peer::Dns { name, port } => dns_ports(scenario, objects, client, name, *port),
                _ => ports.clone(),
            };
            for port in &ports {
                cells.push((client.clone(), server.clone(), *port));
            }
        }
    }
    cells.sort();
    cells
}

/// `probe.services`: every Service port with a cluster IP but the cluster DNS's own.
fn service_targets(scenario: &Scenario, objects: &ClusterObjects) -> Vec<Peer> {
    let dns = (sim::dns::NAMESPACE, sim::dns::SERVICE_NAME);
    sim::services::targets::cluster_ip_targets(objects, scenario.dns.is_some().then_some(dns))
}

/// What a server serves: a pod's declared container ports, a host's `serve` list, a
/// node its pods' hostPorts, a Service's ports numbered like the target (none when it
/// is headless: no virtual IP).
pub(super) fn served_ports(
    scenario: &Scenario,
    objects: &ClusterObjects,
    server: &Peer,
) -> Vec<PortProto> {
    let mut ports: Vec<PortProto> = match server {
        Peer::Pod(p) => objects
            .pods
            .get(p)
            .map(|pod| declared_ports(pod).into_iter().map(|d| d.port).collect())
            .unwrap_or_default(),
        Peer::Host(h) => scenario
            .cluster
            .external_hosts
            .iter()
            .find(|x| x.name == *h)
            .map(|x| x.serve.clone())
            .unwrap_or_default(),
        // A node serves its pods' hostPorts (forwarded by portmap).
        Peer::Node(n) => sim::oracle::host_ports_of(objects, n),
        Peer::Service {
            namespace,
            name,
            port,
        } => match service_ip(objects, namespace, name) {
            Some(_) => sim::services::probe_ports(objects, namespace, name, *port),
            None => vec![],
        },
        // Per client: see [`dns_ports`].
        Peer::Dns { .. } => vec![],
        // The node port or service port, once per protocol the Service has there.
        Peer::NodePort { .. } | Peer::LoadBalancer { .. } | Peer::ExternalIp { .. } => {
            sim::oracle::resolve_target(objects, server)
                .map(|t| t.ports)
                .unwrap_or_default()
        }
    };
    ports.sort();
    ports.dedup();
    ports
}

/// A Service's cluster IP (`None` when it does not exist or is headless).
pub(super) fn service_ip(
    objects: &ClusterObjects,
    namespace: &str,
    name: &str,
) -> Option<Ipv4Addr> {
    objects
        .services
        .get(&(namespace.to_string(), name.to_string()))
        .and_then(sim::services::cluster_ip)
}

/// The address and namespace of a probe end (a Service has no namespace: it is only a
/// server, reached at its cluster IP, see [`probe_step`]).
pub(super) fn endpoint(live: &Live, peer: &Peer) -> Result<(Netns, Ipv4Addr)> {
    match peer {
        // A hostNetwork pod is its node's namespace at its node's address.
        Peer::Pod(p) if live.host_network.contains_key(p) => {
            endpoint(live, &Peer::Node(live.host_network[p].clone()))
        }
        Peer::Pod(p) => {
            let h = live
                .cluster
                .pod(p)
                .ok_or_else(|| anyhow!("pod {p} is not running"))?;
            Ok((h.netns.clone(), h.ip))
        }
        Peer::Node(n) => {
            let ns = live
                .cluster
                .node_netns(n)
                .ok_or_else(|| anyhow!("node {n} does not exist"))?;
            let ip = live
                .cluster
                .plan()
                .node(n)
                .map(|n| n.underlay_ip)
                .ok_or_else(|| anyhow!("node {n} has no address"))?;
            Ok((ns.clone(), ip))
        }
        Peer::Host(h) => live
            .cluster
            .host(h)
            .ok_or_else(|| anyhow!("host {h} does not exist")),
        Peer::Service { .. } => Err(anyhow!("{peer} is a Service: it cannot be a client")),
        Peer::Dns { .. } => Err(anyhow!("{peer} is a DNS name: it cannot be a client")),
        Peer::NodePort { .. } | Peer::LoadBalancer { .. } | Peer::ExternalIp { .. } => Err(
            anyhow!("{peer} is a Service's outside address: it cannot be a client"),
        ),
    }
}

/// The node a probe end sends from when it is a node: `node/NAME`, or a hostNetwork pod.
pub(super) fn sending_node<'a>(live: &'a Live, peer: &'a Peer) -> Option<&'a str> {
    match peer {
        Peer::Node(n) => Some(n),
        Peer::Pod(p) => live.host_network.get(p).map(String::as_str),
        _ => None,
    }
}

/// The hostNetwork pods among `cells`' ends, with their node (for the tables' labels).
pub(super) fn host_network_ends(
    live: &Live,
    cells: &[(Peer, Peer, PortProto)],
) -> std::collections::BTreeMap<Peer, String> {
    cells
        .iter()
        .flat_map(|(from, to, _)| [from, to])
        .filter_map(|p| match p {
            Peer::Pod(pod) => live.host_network.get(pod).map(|n| (p.clone(), n.clone())),
            _ => None,
        })
        .collect()
}

/// The address a probe to `nodeport/`, `lb/` or `extip/` connects to: the node's
/// underlay address, or the Service's load-balancer or external address.
pub(super) fn external_address(live: &Live, peer: &Peer) -> Result<Ipv4Addr> {
    let target = sim::oracle::resolve_target(&live.objects, peer).map_err(|e| anyhow!("{e}"))?;
    match (&target.node, target.address) {
        (Some(node), _) => live
            .cluster
            .plan()
            .node(node)
            .map(|n| n.underlay_ip)
            .ok_or_else(|| anyhow!("node {node} has no address")),
        (None, Some(ip)) => Ok(ip),
        (None, None) => Err(anyhow!("{peer} has no address at this step")),
    }
}
