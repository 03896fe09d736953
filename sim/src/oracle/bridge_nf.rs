//! `net.bridge.bridge-nf-call-iptables=0` in a node (`cluster.brNetfilter: false`): what
//! changes when the bridge stops handing the frames it switches to iptables.
//!
//! With br_netfilter on (every new namespace's default on this kernel), a frame the node's
//! bridge switches from one pod's port to another's still passes iptables (PREROUTING,
//! FORWARD, POSTROUTING) and conntrack. Off, it does not, and two things break the way
//! they break on a real node whose `br_netfilter` module is missing:
//! - **ClusterIP to a backend on the same bridge** ([`SameBridgeReply`]): the client's
//!   request is for the cluster IP, off its subnet, so it goes to the gateway (cni0), up
//!   through the node's IP stack, where kube-proxy DNATs it and routes it back out of cni0
//!   to the backend: it works. The backend answers the client's own address, on its own
//!   subnet: the bridge switches that reply straight to the client, conntrack never sees
//!   it, and nothing turns the source back into the cluster IP. The client gets a SYN-ACK
//!   from `backend:port` for a connection it opened to `clusterIP:port`, answers it with a
//!   reset, and its own connection never completes. A backend on another node is fine:
//!   its reply comes back routed, through conntrack on the client's node. A node's own
//!   connection is fine too (kube-proxy masquerades it to cni0's address, so the reply is
//!   for the node), and so is a pod reaching itself (the hairpin is masqueraded the same
//!   way).
//! - **NetworkPolicy between pods of the node** ([`super::Case::BridgedUnfiltered`]):
//!   the enforcer's rules live in FORWARD, and switched frames never get there (its
//!   `-m physdev --physdev-is-bridged` jumps exist for exactly these frames, and match
//!   only when br_netfilter calls iptables). Pods on one node then reach each other
//!   whatever the policies say; traffic that is routed (to and from other nodes, hosts,
//!   the node itself) is still judged.

use std::fmt;
use std::net::Ipv4Addr;

use super::{Case, OracleContext, Side};
use crate::peers::Peer;

/// A pod's connection to a cluster IP, DNATed to a backend on the client's own bridge
/// while `bridge-nf-call-iptables` is 0 there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SameBridgeReply {
    pub node: String,
    pub client: String,
    /// `ns/pod` of the backend.
    pub backend: String,
    pub backend_ip: Ipv4Addr,
    pub backend_port: u16,
    pub cluster_ip: Ipv4Addr,
    pub service_port: u16,
}

impl SameBridgeReply {
    pub fn short(&self) -> String {
        format!(
            "bridge-nf-call-iptables=0 on {}: the reply from the same-bridge backend {} bypasses conntrack's un-DNAT, the client sees an answer from {}:{} instead of the cluster IP {}:{} and resets",
            self.node,
            self.backend,
            self.backend_ip,
            self.backend_port,
            self.cluster_ip,
            self.service_port
        )
    }
}

impl fmt::Display for SameBridgeReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "net.bridge.bridge-nf-call-iptables is 0 on {node}. {client}'s connection to {cip}:{sp} \
             goes to its gateway (cni0), up through {node}'s IP stack, where kube-proxy DNATs it to \
             {backend} at {bip}:{bp}, on the same bridge. {backend} answers {client}'s own address, on \
             its own subnet, so the bridge switches the reply straight to {client}: with \
             bridge-nf-call-iptables at 0 the frame never enters iptables, conntrack never sees it, and \
             nothing rewrites its source back to {cip}:{sp}. {client} receives an answer from \
             {bip}:{bp} for a connection it opened to {cip}:{sp}, resets it, and its connection never \
             completes (the probe waits out its deadline). A backend on another node would work: its \
             reply comes back routed, through conntrack. Setting the sysctl to 1 (or loading \
             br_netfilter on a real node) fixes it.",
            node = self.node,
            client = self.client,
            cip = self.cluster_ip,
            sp = self.service_port,
            backend = self.backend,
            bip = self.backend_ip,
            bp = self.backend_port,
        )
    }
}

/// Whether `bridge-nf-call-iptables` is 0 on `node`.
fn off(ctx: &OracleContext, node: Option<&str>) -> bool {
    node.is_some_and(|n| ctx.br_netfilter_off.contains(n))
}

/// The Service backend case: `Some` when `from` is a pod whose node has
/// `bridge-nf-call-iptables=0` and `backend` is another pod on that node.
pub(super) fn same_bridge_reply(
    ctx: &OracleContext,
    from: &Peer,
    backend: &Peer,
    (backend_ip, backend_port): (Ipv4Addr, u16),
    (cluster_ip, service_port): (Ipv4Addr, u16),
) -> Option<Case> {
    let (Peer::Pod(client), Peer::Pod(server)) = (from, backend) else {
        return None;
    };
    if client == server {
        // The hairpin is masqueraded to cni0's address: its reply is routed.
        return None;
    }
    let resolved = ctx.resolved();
    let node = resolved.pod(client)?.node.clone()?;
    if !off(ctx, Some(&node)) || resolved.pod(server)?.node.as_deref() != Some(node.as_str()) {
        return None;
    }
    Some(Case::SameBridgeReply(Box::new(SameBridgeReply {
        node,
        client: client.to_string(),
        backend: server.to_string(),
        backend_ip,
        backend_port,
        cluster_ip,
        service_port,
    })))
}

/// Whether a direct connection between two different pods is switched by a bridge that
/// does not call iptables: both on one node whose `bridge-nf-call-iptables` is 0.
pub(super) fn bridged_unfiltered(
    ctx: &OracleContext,
    client_node: Option<&str>,
    server_node: Option<&str>,
) -> Option<String> {
    (client_node == server_node && off(ctx, client_node))
        .then(|| client_node.unwrap_or_default().to_string())
}

/// What the policies would have said, in a few words.
fn would_have(egress: &Side, ingress: &Side) -> &'static str {
    if egress.allowed() && ingress.allowed() {
        "the policies would allow it anyway"
    } else {
        "the policies would deny it, but never see it"
    }
}

pub(super) fn unfiltered_short(node: &str, egress: &Side, ingress: &Side) -> String {
    format!(
        "bridge-nf-call-iptables=0 on {node}: the bridge switches this pod-to-pod traffic without iptables, so no policy rule (physdev or not) sees it; {} (egress {}; ingress {})",
        would_have(egress, ingress),
        egress.short(),
        ingress.short()
    )
}

pub(super) fn unfiltered_walkthrough(
    f: &mut fmt::Formatter<'_>,
    node: &str,
    egress: &Side,
    ingress: &Side,
) -> fmt::Result {
    writeln!(
        f,
        "Both pods run on {node}, where net.bridge.bridge-nf-call-iptables is 0: the bridge switches \
         their frames from one veth to the other without handing them to iptables. The policy \
         engine's rules sit in FORWARD (with `-m physdev --physdev-is-bridged` jumps for exactly \
         this traffic, which match only when br_netfilter calls iptables), so they never see it and \
         the connection goes through whatever the policies say. For the record, what they say:"
    )?;
    writeln!(f, "{egress}")?;
    writeln!(f, "{ingress}")?;
    write!(
        f,
        "So {}. Traffic routed through {node} (to or from other nodes, hosts, the node itself) is \
         still judged.",
        would_have(egress, ingress)
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::{Value, json};

    use crate::cluster::{ClusterConfig, PolicyEngineKind};
    use crate::matrix::Verdict;
    use crate::objects::{ClusterObjects, Object};
    use crate::oracle::{Case, OracleContext, predict, predict_service};
    use crate::policy::fixtures::{model_with, node_addresses};
    use crate::services::alloc::{ServiceRanges, allocate};

    /// The standard model (x/a, x/c on n1; x/b on n2) with the policies given and a
    /// Service `x/only-a` whose one backend is x/a, port 8000 -> 80.
    fn model(policies: &[(&str, &str, Value)]) -> ClusterObjects {
        let mut o = model_with(policies);
        let cluster = ClusterConfig {
            nodes: o.nodes.clone(),
            pod_cidr: "10.244.0.0/16".parse().unwrap(),
            service_cidr: "10.96.0.0/12".parse().unwrap(),
            network: Default::default(),
            policy: Default::default(),
            deny: Default::default(),
            proxy: Default::default(),
            external_hosts: vec![],
            cni: Default::default(),
        };
        let svc = serde_json::from_value(json!({
            "metadata": {"namespace": "x", "name": "only-a"},
            "spec": {"selector": {"pod": "a"}, "ports": [{"port": 8000, "targetPort": 80}]}
        }))
        .unwrap();
        let svc = allocate(&o.services, &ServiceRanges::new(&cluster, None), svc).unwrap();
        o.apply(Object::Service(svc));
        o
    }

    fn off(nodes: &[&str]) -> BTreeSet<String> {
        nodes.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_same_bridge_backend_fails_and_a_remote_one_works() {
        let o = model(&[]);
        let addresses = node_addresses(&o);
        let ctx = OracleContext::new(&o, PolicyEngineKind::Iptables, &addresses)
            .with_br_netfilter_off(off(&["n1", "n2"]));
        let svc = "svc/x/only-a:8000".parse().unwrap();
        let port = "TCP/8000".parse().unwrap();
        // x/c shares n1's bridge with x/a.
        let p = predict_service(&ctx, &"x/c".parse().unwrap(), &svc, port);
        assert_eq!(p.verdict, Some(Verdict::Deny), "{p}");
        let Case::SameBridgeReply(r) = &p.backends[0].prediction.reason.case else {
            panic!("{p}");
        };
        assert_eq!((r.node.as_str(), r.backend.as_str()), ("n1", "x/a"));
        let short = p.backends[0].prediction.short();
        assert!(
            short.contains("bridge-nf-call-iptables=0 on n1: the reply from the same-bridge backend x/a bypasses conntrack's un-DNAT, the client sees an answer from 10.244.1.10:80 instead of the cluster IP 10.96.0.10:8000 and resets"),
            "{short}"
        );
        // x/b runs on n2: the reply comes back routed.
        let p = predict_service(&ctx, &"x/b".parse().unwrap(), &svc, port);
        assert_eq!(p.verdict, Some(Verdict::Allow), "{p}");
        // The node (masqueraded to cni0) and the backend itself (hairpin, masqueraded).
        for from in ["node/n1", "x/a"] {
            let p = predict_service(&ctx, &from.parse().unwrap(), &svc, port);
            assert_eq!(p.verdict, Some(Verdict::Allow), "{from}: {p}");
        }
        // With the sysctl at 1 (the default) nothing of this happens.
        let ctx = OracleContext::new(&o, PolicyEngineKind::Iptables, &addresses);
        let p = predict_service(&ctx, &"x/c".parse().unwrap(), &svc, port);
        assert_eq!(p.verdict, Some(Verdict::Allow), "{p}");
    }

    #[test]
    fn policies_do_not_see_bridged_traffic_but_still_see_routed_traffic() {
        let o = model(&[(
            "x",
            "deny-all",
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        )]);
        let addresses = node_addresses(&o);
        let ctx = OracleContext::new(&o, PolicyEngineKind::Iptables, &addresses)
            .with_br_netfilter_off(off(&["n1"]));
        let port = "TCP/80".parse().unwrap();
        // x/c -> x/a: both on n1, switched by the bridge.
        let p = predict(&ctx, &"x/c".parse().unwrap(), &"x/a".parse().unwrap(), port);
        assert_eq!(p.verdict, Verdict::Allow, "{}", p.reason);
        assert!(matches!(p.reason.case, Case::BridgedUnfiltered { .. }));
        assert!(
            p.short()
                .contains("the policies would deny it, but never see it"),
            "{}",
            p.short()
        );
        assert!(p.reason.to_string().contains("--physdev-is-bridged"));
        // x/b -> x/a crosses nodes: routed, judged.
        let p = predict(&ctx, &"x/b".parse().unwrap(), &"x/a".parse().unwrap(), port);
        assert_eq!(p.verdict, Verdict::Deny, "{}", p.reason);
        // On n2 the sysctl is still 1: x/b -> y/a (both on n2) is judged as usual, and
        // allowed (y is not isolated).
        let p = predict(&ctx, &"x/b".parse().unwrap(), &"y/a".parse().unwrap(), port);
        assert!(matches!(p.reason.case, Case::Checked { .. }));
    }
}
