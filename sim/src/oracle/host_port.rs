//! The oracle for `node/NAME` as a probe target: a pod's `hostPort`, which the portmap
//! plugin forwards from the node's addresses to the pod.
//!
//! What Debian's portmap (v1.1.1, measured on this machine) writes into the node's nat
//! table for a pod at 10.244.1.2 with `hostPort: 30080 -> containerPort: 8080`:
//! ```text
//! -A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
//! -A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
//! -A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
//! -A CNI-DN-… -s 10.244.1.0/24 -p tcp -m tcp --dport 30080 -j CNI-HOSTPORT-SETMARK
//! -A CNI-DN-… -s 127.0.0.1/32 -p tcp -m tcp --dport 30080 -j CNI-HOSTPORT-SETMARK
//! -A CNI-DN-… -p tcp -m tcp --dport 30080 -j DNAT --to-destination 10.244.1.2:8080
//! -A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
//! ```
//! So any local address of the node, port 30080, is DNATed to the pod on the pod's node
//! (PREROUTING for what arrives, OUTPUT for the node's own connections). With `snat`
//! (portmap's default, and knetlab's default list) the "hairpin" mark rule matches the
//! container's address **with its subnet's mask**: every pod of that node, not only the
//! pod itself, is masqueraded to cni0's address on the way out, so that the reply comes
//! back through the node and is un-DNATed. Nothing else is masqueraded: a host outside
//! the cluster, another node, or a pod on another node keeps its own address.
//!
//! What NetworkPolicy sees: the enforcer's rules are in filter FORWARD, after nat
//! PREROUTING (the DNAT) and **before** nat POSTROUTING (the masquerade). The server
//! pod's ingress therefore judges the real client address, on the container port, even
//! when its socket sees cni0's address; a node's own connection has a LOCAL source and
//! passes "from local node". The client pod's egress is judged on the client's node: on
//! the server's node it is already DNATed (the server pod, container port), from any
//! other node it is still for the target node's address and the host port.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use super::{Case, OracleContext, Side, SideOutcome, prediction, side, tiers};
use crate::cluster::{CniConfig, PolicyEngineKind};
use crate::matrix::Verdict;
use crate::objects::{ClusterObjects, PodRef, pod_ip, pod_node};
use crate::peers::Peer;
use crate::podnet::{PortMapping, port_mappings};
use crate::policy::{Direction, Endpoint};
use crate::protocol::PortProto;

/// What the oracle knows about host ports: whether portmap runs, and the nodes'
/// addresses (see [`OracleContext::with_host_ports`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPorts {
    /// `None`: no portmap in the CNI chain, so hostPorts forward nothing.
    pub portmap: Option<Portmap>,
    /// Per node: its underlay address (where `node/NAME` is probed) and its bridge's
    /// address (what portmap masquerades the node's own pods to).
    pub nodes: BTreeMap<String, NodeAddresses>,
}

/// One node's addresses, as [`HostPorts`] needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeAddresses {
    pub underlay: Ipv4Addr,
    pub bridge: Ipv4Addr,
}

/// The portmap plugin's settings that change the prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Portmap {
    /// `snat` (portmap's default: true): masquerade connections from the node's pod
    /// subnet and from 127.0.0.1.
    pub snat: bool,
}

impl Portmap {
    /// Portmap in the chain `cni` describes: knetlab's default list carries it (with
    /// `snat: true`) when some pod has a hostPort; a scenario's own list when it names it.
    pub fn of(cni: &CniConfig) -> Option<Portmap> {
        match &cni.conflist {
            None => cni.pods_want_host_ports.then_some(Portmap { snat: true }),
            Some(list) => list
                .get("plugins")
                .and_then(|p| p.as_array())
                .into_iter()
                .flatten()
                .find(|p| p.get("type").and_then(|t| t.as_str()) == Some("portmap"))
                .map(|p| Portmap {
                    snat: p.get("snat").and_then(|s| s.as_bool()).unwrap_or(true),
                }),
        }
    }
}

/// The pod on `node` whose hostPort is `port` (on every address, or on `node_ip`), with
/// its mapping; `None` when no running pod there has it.
pub fn host_port_pod(
    objects: &ClusterObjects,
    node: &str,
    node_ip: Option<Ipv4Addr>,
    port: PortProto,
) -> Option<(PodRef, PortMapping)> {
    objects.pods.iter().find_map(|(r, pod)| {
        if pod_node(pod) != Some(node) || pod_ip(pod).is_none() {
            return None;
        }
        port_mappings(pod).ok()?.into_iter().find_map(|m| {
            (m.host_port == port.port
                && m.protocol == port.protocol
                && m.host_ip.is_none_or(|ip| Some(ip) == node_ip))
            .then(|| (r.clone(), m))
        })
    })
}

/// Every hostPort of the running pods on `node`, as probe ports.
pub fn host_ports_of(objects: &ClusterObjects, node: &str) -> Vec<PortProto> {
    let mut out: Vec<PortProto> = objects
        .pods
        .values()
        .filter(|p| pod_node(p) == Some(node) && pod_ip(p).is_some())
        .flat_map(|p| port_mappings(p).unwrap_or_default())
        .map(|m| PortProto::new(m.protocol, m.host_port))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A cell whose server is `node/NAME` on a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPortCase {
    pub node: String,
    pub node_ip: Ipv4Addr,
    pub port: PortProto,
    pub fate: HostPortFate,
}

/// What happens to a connection to the node's address on that port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPortFate {
    /// No running pod of the node has this hostPort: nothing listens, the node resets
    /// the connection (or answers port unreachable).
    NothingMapped,
    /// A pod has the hostPort, but the CNI chain has no portmap plugin: the runtime
    /// handed the mapping over and nobody acted on it.
    NoPortmap { pod: PodRef },
    /// portmap DNATs it to `pod` at `pod_ip:container_port`; `masqueraded`: the address
    /// the pod's socket sees instead of the client's; `inner` decides (policies, the
    /// node's own traffic, a downed link...).
    Forwarded {
        pod: PodRef,
        pod_ip: Ipv4Addr,
        container_port: u16,
        masqueraded: Option<Ipv4Addr>,
        inner: Box<Case>,
    },
}

impl HostPortCase {
    pub fn verdict(&self) -> Verdict {
        match &self.fate {
            HostPortFate::NothingMapped | HostPortFate::NoPortmap { .. } => Verdict::Deny,
            HostPortFate::Forwarded { inner, .. } => inner.verdict(),
        }
    }

    /// The pod that answers, if portmap forwards the connection to one.
    pub fn answering_pod(&self) -> Option<&PodRef> {
        match &self.fate {
            HostPortFate::Forwarded { pod, .. } => Some(pod),
            _ => None,
        }
    }

    /// The explanation of the connection after portmap's DNAT.
    fn inner(&self, from: &Peer) -> Option<super::Explanation> {
        let HostPortFate::Forwarded {
            pod,
            container_port,
            inner,
            ..
        } = &self.fate
        else {
            return None;
        };
        let to = Peer::Pod(pod.clone());
        let port = PortProto::new(self.port.protocol, *container_port);
        Some(prediction(from, &to, port, (**inner).clone()).reason)
    }

    pub(super) fn short(&self, from: &Peer) -> String {
        let (node, ip, port) = (&self.node, self.node_ip, self.port.port);
        match &self.fate {
            HostPortFate::NothingMapped => format!(
                "no pod on {node} has hostPort {port}/{}: nothing listens on {ip}:{port}",
                self.port.protocol
            ),
            HostPortFate::NoPortmap { pod } => format!(
                "{pod} asks for hostPort {port}, but the CNI chain has no portmap plugin: nothing forwards {ip}:{port}"
            ),
            HostPortFate::Forwarded {
                pod,
                pod_ip,
                container_port,
                masqueraded,
                ..
            } => {
                let seen = match masqueraded {
                    Some(m) => format!(
                        ", masqueraded to {m} (the pod sees that; the policies, in FORWARD before POSTROUTING, still see the client)"
                    ),
                    None => String::new(),
                };
                let inner = self
                    .inner(from)
                    .map(|e| {
                        let s = e.short();
                        s.split_once(": ").map(|(_, r)| r.to_string()).unwrap_or(s)
                    })
                    .unwrap_or_default();
                format!(
                    "portmap on {node} DNATs {ip}:{port} to {pod} {pod_ip}:{container_port}{seen}; then {inner}"
                )
            }
        }
    }

    pub(super) fn walkthrough(&self, f: &mut fmt::Formatter<'_>, from: &Peer) -> fmt::Result {
        let (node, ip, port, proto) =
            (&self.node, self.node_ip, self.port.port, self.port.protocol);
        match &self.fate {
            HostPortFate::NothingMapped => write!(
                f,
                "No running pod on {node} has hostPort {port}/{proto}, so portmap wrote no DNAT for \
                 it and nothing on {node} listens on {ip}:{port}: the node resets the connection."
            ),
            HostPortFate::NoPortmap { pod } => write!(
                f,
                "{pod} declares hostPort {port}/{proto}, but hostPort is not Kubernetes' doing: the \
                 kubelet hands the mapping to the runtime, which passes it to the CNI chain as \
                 runtimeConfig.portMappings, and only a plugin with the portMappings capability \
                 (portmap) acts on it. This chain has none, so nothing on {node} forwards \
                 {ip}:{port}: the node resets the connection."
            ),
            HostPortFate::Forwarded {
                pod,
                pod_ip,
                container_port,
                masqueraded,
                ..
            } => {
                writeln!(
                    f,
                    "{port}/{proto} is a hostPort of {pod}: portmap's CNI-HOSTPORT-DNAT chain on \
                     {node} (from nat PREROUTING for what arrives, OUTPUT for the node's own \
                     connections, `--dst-type LOCAL`) DNATs {ip}:{port} to {pod_ip}:{container_port}."
                )?;
                match masqueraded {
                    Some(m) => writeln!(
                        f,
                        "{from} is a pod of {node}: portmap's `snat` rule (`-s` the pod's address \
                         with its subnet's mask, so every pod of the node) marks it, and \
                         CNI-HOSTPORT-MASQ masquerades it to cni0's address {m}, so that the reply \
                         comes back through the node to be un-DNATed. {pod} sees the connection \
                         come from {m}; the policy engine, in filter FORWARD (after the DNAT, before \
                         the masquerade in POSTROUTING), still sees {from}."
                    )?,
                    None => writeln!(
                        f,
                        "Nothing masquerades it (portmap's `snat` only marks the node's own pods and \
                         127.0.0.1): {pod} sees the client's own address."
                    )?,
                }
                match self.inner(from) {
                    Some(e) => write!(f, "{e}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Predicts `from` → `node/NAME` on `port`.
pub(super) fn decide(ctx: &OracleContext, from: &Peer, node: &str, port: PortProto) -> Case {
    let Some(addrs) = ctx.host_ports.nodes.get(node) else {
        return Case::Unknown(format!("node {node} has no known address"));
    };
    let case = |fate| {
        Case::HostPort(Box::new(HostPortCase {
            node: node.to_string(),
            node_ip: addrs.underlay,
            port,
            fate,
        }))
    };
    let Some((pod, mapping)) = host_port_pod(ctx.objects, node, Some(addrs.underlay), port) else {
        return case(HostPortFate::NothingMapped);
    };
    let Some(portmap) = ctx.host_ports.portmap else {
        return case(HostPortFate::NoPortmap { pod });
    };
    let resolved = ctx.resolved();
    let Some(server) = resolved.pod(&pod) else {
        return Case::Unknown(format!("{pod} is not a pod of the cluster"));
    };
    let Some(pod_ip) = server.ip else {
        return Case::Unknown(format!("{pod} has no address yet"));
    };
    let container_port = PortProto::new(port.protocol, mapping.container_port);
    let client_pod = match from {
        Peer::Pod(p) => match resolved.pod(p) {
            Some(info) => Some(info),
            None => return Case::Unknown(format!("{p} is not a pod of the cluster")),
        },
        _ => None,
    };
    let client_node: Option<&str> = match from {
        Peer::Pod(_) => client_pod.and_then(|c| c.node.as_deref()),
        Peer::Node(n) => Some(n.as_str()),
        _ => None,
    };
    let local_pod = client_node == Some(node) && client_pod.is_some();
    let masqueraded = (local_pod && portmap.snat).then_some(addrs.bridge);
    let forwarded = |inner: Case| {
        case(HostPortFate::Forwarded {
            pod: pod.clone(),
            pod_ip,
            container_port: mapping.container_port,
            masqueraded,
            inner: Box::new(inner),
        })
    };
    // A downed underlay link: nothing crosses the fabric to or from that node.
    if client_node != Some(node)
        && let Some(down) = [client_node, Some(node)]
            .into_iter()
            .flatten()
            .find(|n| ctx.down_nodes.contains(*n))
    {
        return forwarded(Case::NodeUnreachable {
            node: down.to_string(),
        });
    }
    if local_pod && !portmap.snat && client_pod.map(|c| &c.pod) == Some(&pod) {
        return forwarded(Case::Unknown(format!(
            "with portmap's snat off, {pod}'s connection to its own hostPort comes back to it unmasqueraded: the reply goes over lo inside the pod, is never un-DNATed, and is reset"
        )));
    }
    if local_pod && !portmap.snat && ctx.br_netfilter_off.contains(node) {
        let client = from.to_string();
        return forwarded(Case::Unknown(format!(
            "with portmap's snat off and bridge-nf-call-iptables=0 on {node}, {pod}'s reply to {client} is switched by the bridge without conntrack's un-DNAT: {client} sees an answer from {pod_ip}:{} instead of {}:{} and resets",
            mapping.container_port, addrs.underlay, port.port
        )));
    }
    if ctx.engine == PolicyEngineKind::None {
        return forwarded(Case::NoEnforcement);
    }
    // The client's egress, judged on the client's node.
    let egress = match (from, client_pod) {
        (_, Some(c)) if local_pod => side(
            resolved,
            Direction::Egress,
            c,
            &Endpoint::Pod(server),
            container_port,
        ),
        (_, Some(c)) => side(
            resolved,
            Direction::Egress,
            c,
            &Endpoint::Address(addrs.underlay),
            port,
        ),
        (Peer::Node(n), None) => {
            if n == node {
                // The node's own connection: "from local node" in the pod's chain.
                return forwarded(Case::OwnNode { node: n.clone() });
            }
            let Some(ip) = ctx.host_ports.nodes.get(n).map(|a| a.underlay) else {
                return Case::Unknown(format!("node {n} has no known address"));
            };
            Side::untiered(
                Direction::Egress,
                from.to_string(),
                SideOutcome::NodeTraffic {
                    node: n.clone(),
                    ip,
                },
            )
        }
        (Peer::Host(h), None) => match ctx.host_addresses.get(h) {
            Some(ip) => Side::untiered(
                Direction::Egress,
                from.to_string(),
                SideOutcome::HostTraffic {
                    host: h.clone(),
                    ip: *ip,
                },
            ),
            None => return Case::Unknown(format!("host {h} is not declared")),
        },
        _ => return Case::Unknown(format!("{from} cannot be a client")),
    };
    // The server's ingress sees the client's own address (before any masquerade).
    let source_ip = match &egress.outcome {
        SideOutcome::NodeTraffic { ip, .. } | SideOutcome::HostTraffic { ip, .. } => Some(*ip),
        _ => None,
    };
    let ingress = match (client_pod, source_ip) {
        (Some(c), _) => side(
            resolved,
            Direction::Ingress,
            server,
            &Endpoint::Pod(c),
            container_port,
        ),
        (None, Some(ip)) => side(
            resolved,
            Direction::Ingress,
            server,
            &Endpoint::Address(ip),
            container_port,
        ),
        (None, None) => return Case::Unknown(format!("{from} has no known address")),
    };
    // The tiers judge each side where the kernel does: a pod's egress on the server's
    // node after portmap's DNAT (the server pod on its container port), elsewhere before
    // it (the node's address on the hostPort); the ingress at the server pod, from the
    // client's own address.
    let client = match (client_pod, from, source_ip) {
        (Some(c), _, _) => tiers::pod_endpoint(&c.pod),
        (None, Peer::Node(n), _) => tiers::node_endpoint(n),
        (None, _, Some(ip)) => tiers::external_endpoint(ip),
        (None, _, None) => return Case::Unknown(format!("{from} has no known address")),
    };
    let egress = if local_pod {
        let server_end = tiers::pod_endpoint(&pod);
        tiers::walk_side(ctx, client.clone(), server_end, container_port, egress)
    } else {
        tiers::walk_side(
            ctx,
            client.clone(),
            tiers::node_endpoint(node),
            port,
            egress,
        )
    };
    let ingress = tiers::walk_side(
        ctx,
        client,
        tiers::pod_endpoint(&pod),
        container_port,
        ingress,
    );
    if client_pod.map(|c| &c.pod) == Some(&pod) {
        forwarded(Case::Hairpin { egress, ingress })
    } else {
        forwarded(Case::Checked { egress, ingress })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::oracle::predict;
    use crate::policy::fixtures::{add_pod, model_with, node_addresses, pr};

    /// The standard model (x/a, x/c on n1; x/b on n2) plus `x/web` on n1, labelled
    /// `app=web`, serving 8080 with hostPort 30080, and the policies given.
    fn model(policies: &[(&str, &str, Value)]) -> ClusterObjects {
        let mut o = model_with(policies);
        let web = serde_json::from_value(json!({
            "metadata": {"namespace": "x", "name": "web", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "knetlab",
                "ports": [{"containerPort": 8080, "hostPort": 30080}]}]}
        }))
        .unwrap();
        add_pod(&mut o, web, "n1");
        o
    }

    fn host_ports(o: &ClusterObjects, snat: Option<bool>) -> HostPorts {
        HostPorts {
            portmap: snat.map(|snat| Portmap { snat }),
            nodes: node_addresses(o)
                .into_iter()
                .enumerate()
                .map(|(i, (n, underlay))| {
                    let bridge = Ipv4Addr::new(10, 244, i as u8 + 1, 1);
                    (n, NodeAddresses { underlay, bridge })
                })
                .collect(),
        }
    }

    fn case(
        o: &ClusterObjects,
        snat: Option<bool>,
        from: &str,
        port: &str,
    ) -> (Verdict, HostPortCase, String) {
        let addresses = node_addresses(o);
        let ctx = OracleContext::new(o, PolicyEngineKind::Iptables, &addresses)
            .with_hosts([("pc".to_string(), Ipv4Addr::new(203, 0, 113, 10))].into())
            .with_host_ports(host_ports(o, snat));
        let p = predict(
            &ctx,
            &from.parse().unwrap(),
            &"node/n1".parse().unwrap(),
            port.parse().unwrap(),
        );
        let Case::HostPort(h) = &p.reason.case else {
            panic!("{}", p.reason);
        };
        (p.verdict, (**h).clone(), p.reason.to_string())
    }

    fn masqueraded(h: &HostPortCase) -> Option<Ipv4Addr> {
        match &h.fate {
            HostPortFate::Forwarded { masqueraded, .. } => *masqueraded,
            _ => None,
        }
    }

    #[test]
    fn a_host_port_is_forwarded_to_its_pod_and_only_the_nodes_own_pods_are_masqueraded() {
        let o = model(&[]);
        assert_eq!(host_ports_of(&o, "n1"), ["TCP/30080".parse().unwrap()]);
        assert!(host_ports_of(&o, "n2").is_empty());
        for (from, masq) in [
            ("x/a", Some(Ipv4Addr::new(10, 244, 1, 1))),
            ("x/web", Some(Ipv4Addr::new(10, 244, 1, 1))),
            ("x/b", None),
            ("node/n1", None),
            ("node/n2", None),
            ("host/pc", None),
        ] {
            let (v, h, text) = case(&o, Some(true), from, "TCP/30080");
            assert_eq!(v, Verdict::Allow, "{from}: {text}");
            assert_eq!(h.answering_pod(), Some(&pr("x/web")), "{from}");
            assert_eq!(masqueraded(&h), masq, "{from}: {text}");
        }
        let (_, h, text) = case(&o, Some(true), "x/a", "TCP/30080");
        assert!(
            text.contains("DNATs 192.168.200.11:30080 to 10.244.1.15:8080"),
            "{text}"
        );
        assert!(
            text.contains("masquerades it to cni0's address 10.244.1.1"),
            "{text}"
        );
        // Without snat nothing is masqueraded.
        let (_, h2, _) = case(&o, Some(false), "x/a", "TCP/30080");
        assert_eq!(masqueraded(&h2), None);
        assert_ne!(h, h2);
        // Another port, or no portmap in the chain: nothing answers.
        let (v, h, _) = case(&o, Some(true), "x/a", "TCP/30081");
        assert_eq!((v, &h.fate), (Verdict::Deny, &HostPortFate::NothingMapped));
        let (v, h, text) = case(&o, None, "x/a", "TCP/30080");
        assert_eq!(v, Verdict::Deny);
        assert!(matches!(h.fate, HostPortFate::NoPortmap { .. }), "{text}");
    }

    #[test]
    fn policies_judge_the_client_before_the_masquerade() {
        // web accepts x/c (a pod of its node, masqueraded for its socket) and 203.0.113.0/24.
        let o = model(&[(
            "x",
            "web",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [
                {"podSelector": {"matchLabels": {"pod": "c"}}},
                {"ipBlock": {"cidr": "203.0.113.0/24"}}]}]}),
        )]);
        for (from, allowed) in [
            ("x/c", true),
            ("x/a", false),
            ("x/b", false),
            ("node/n1", true),
            ("node/n2", false),
            ("host/pc", true),
            // Hairpin: its egress is open, which is enough.
            ("x/web", true),
        ] {
            let (v, _, text) = case(&o, Some(true), from, "TCP/30080");
            assert_eq!(v, Verdict::from_allowed(allowed), "{from}: {text}");
        }
    }

    #[test]
    fn a_remote_clients_egress_sees_the_node_address_and_the_host_port() {
        let egress = |to: Value| {
            model(&[(
                "x",
                "b-egress",
                json!({"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Egress"], "egress": [to]}),
            )])
        };
        let to_node = egress(
            json!({"to": [{"ipBlock": {"cidr": "192.168.200.11/32"}}], "ports": [{"port": 30080}]}),
        );
        let (v, _, text) = case(&to_node, Some(true), "x/b", "TCP/30080");
        assert_eq!(v, Verdict::Allow, "{text}");
        let to_pod = egress(
            json!({"to": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": 8080}]}),
        );
        let (v, _, text) = case(&to_pod, Some(true), "x/b", "TCP/30080");
        assert_eq!(v, Verdict::Deny, "{text}");
    }
}
