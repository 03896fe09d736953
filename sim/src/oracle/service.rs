//! The oracle for cells whose server is a Service's cluster IP (`svc/NS/NAME:PORT`).
//!
//! kube-proxy decides where such a connection goes on the client's node, before any
//! policy sees it: its nat rules DNAT the new connection to one endpoint picked at random
//! (`-m statistic --mode random`, or pinned by `-m recent` with ClientIP affinity), or its
//! filter rules REJECT it (no endpoints) or DROP it (`internalTrafficPolicy: Local` and
//! none on this node). After the DNAT the policies judge an ordinary connection to the
//! chosen endpoint, on its address and **target port** (the reference, §5.5): a pod
//! client keeps its own address (it is inside the cluster CIDR, so kube-proxy does not
//! masquerade it), a node keeps its address as for a direct probe, and a pod that lands on
//! itself goes out to the node and back (hairpin), so its own policies apply to it.
//!
//! So the prediction is made per backend, and the cell's verdict is `allow` only when
//! every backend allows, `deny` when none does (or there is none). When the backends
//! disagree the cell is **mixed**: whether one probe gets through depends on kube-proxy's
//! dice, so no single verdict can be asserted. Such a cell carries `verdict: None`; what
//! can still be checked is that every answer came from a backend predicted to allow (see
//! [`crate::matrix::Cell::mismatch`]).

use std::fmt;
use std::net::Ipv4Addr;

use crate::kube_proxy::model::SessionAffinity;
use crate::kube_proxy::model::{ClusterIpFate, cluster_ip_fate, find_port};
use crate::matrix::Verdict;
use crate::objects::pod_ip;
use crate::peers::Peer;
use crate::protocol::PortProto;

use super::{OracleContext, Path, Prediction, decide, prediction};

/// What kube-proxy on the client's node does with a new connection to the cluster IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceFate {
    /// DNAT to one of the backends (in [`ServicePrediction::backends`]).
    Balanced {
        node: String,
        cluster_ip: Ipv4Addr,
        /// `ClientIP` affinity: a client keeps the backend it first got.
        affinity: bool,
        /// kube-proxy's userspace mode: no DNAT, its proxy on the node accepts the
        /// connection and opens its own to a backend (round-robin).
        userspace: bool,
    },
    /// No usable endpoint: filter KUBE-SERVICES REJECTs (`has no endpoints`).
    /// `shadowed`: the client is a pod and the kube-router-style enforcer runs; its
    /// FORWARD jump comes first and ACCEPTs the pod's allowed egress ("rule to explicitly
    /// ACCEPT traffic that comply to network policies"), so kube-proxy's REJECT is never
    /// reached and the connection is forwarded to nowhere: the client times out instead
    /// of being refused (kube-router issue #1453; Calico had the same, issue #1055). The
    /// node's own connections go through OUTPUT and are rejected. Not in nftables mode:
    /// its reject chain is hooked apart from the policy engine's.
    NoEndpoints {
        node: String,
        cluster_ip: Ipv4Addr,
        shadowed: bool,
    },
    /// `internalTrafficPolicy: Local` without an endpoint on the client's node: filter
    /// KUBE-SERVICES DROPs (`has no local endpoints`).
    NoLocalEndpoints { node: String, cluster_ip: Ipv4Addr },
    /// Nothing proxies it (no such Service or port, headless, a client outside the
    /// nodes): the reason in words.
    Unreachable(String),
}

/// One endpoint the connection may be DNATed to, and the oracle's verdict for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendPrediction {
    /// Who answers from there, as the probe servers name themselves: `ns/pod`,
    /// `host/NAME`, or the bare `ip:port` when nothing of the cluster is there.
    pub name: String,
    pub ip: Ipv4Addr,
    /// The target port (what the policies see).
    pub port: u16,
    /// The ordinary prediction for the client to this backend on its target port.
    pub prediction: Prediction,
}

/// The prediction for a Service cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePrediction {
    pub from: Peer,
    pub to: Peer,
    pub port: PortProto,
    pub fate: ServiceFate,
    pub backends: Vec<BackendPrediction>,
    /// `Some(Allow)`: every backend allows; `Some(Deny)`: none does, or the connection
    /// is rejected or dropped before any; `None`: mixed (see the module docs).
    pub verdict: Option<Verdict>,
}

impl ServicePrediction {
    /// The backend called `name` (as the server answered), if it is one.
    pub fn backend(&self, name: &str) -> Option<&BackendPrediction> {
        self.backends.iter().find(|b| b.name == name)
    }

    /// How many backends allow.
    pub fn allowing(&self) -> usize {
        self.backends
            .iter()
            .filter(|b| b.prediction.verdict == Verdict::Allow)
            .count()
    }

    /// The one-line reason (the JSON `reason` field).
    pub fn short(&self) -> String {
        let head = match self.verdict {
            Some(Verdict::Allow) => "allow",
            Some(Verdict::Deny) => "deny",
            None => "mixed",
        };
        match &self.fate {
            ServiceFate::Unreachable(why) => format!("{head}: {why}"),
            ServiceFate::NoEndpoints {
                cluster_ip,
                shadowed: false,
                ..
            } => format!(
                "{head}: {} has no endpoints, so kube-proxy REJECTs connections to {cluster_ip}",
                service_name(&self.to)
            ),
            ServiceFate::NoEndpoints {
                cluster_ip,
                shadowed: true,
                ..
            } => format!(
                "{head}: {} has no endpoints; kube-proxy's REJECT for {cluster_ip} sits behind kube-router's ACCEPT of the pod's traffic in FORWARD, so the connection goes nowhere and times out",
                service_name(&self.to)
            ),
            ServiceFate::NoLocalEndpoints { node, cluster_ip } => format!(
                "{head}: internalTrafficPolicy Local and no endpoint on {node}, so kube-proxy DROPs connections to {cluster_ip}"
            ),
            ServiceFate::Balanced {
                affinity,
                userspace,
                ..
            } => {
                let each: Vec<String> = self
                    .backends
                    .iter()
                    // The address too: a pod recreated under its old name has a new one.
                    .map(|b| {
                        format!(
                            "{} {}:{} {}",
                            b.name,
                            b.ip,
                            b.port,
                            verdict_word(b.prediction.verdict)
                        )
                    })
                    .collect();
                let tail = match self.verdict {
                    None => format!(
                        "; {} of {} backends allow, so it depends on which one kube-proxy picks (not asserted; each answer is checked against its backend)",
                        self.allowing(),
                        self.backends.len()
                    ),
                    _ => String::new(),
                };
                let pinned = if *affinity && self.backends.len() > 1 {
                    "; sessionAffinity ClientIP keeps the client on the first one it gets"
                } else {
                    ""
                };
                let how = if *userspace {
                    "the node's userspace proxy dials one of"
                } else {
                    "DNAT to one of"
                };
                format!("{head}: {how} [{}]{pinned}{tail}", each.join(", "))
            }
        }
    }
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "allow",
        Verdict::Deny => "deny",
    }
}

fn service_name(to: &Peer) -> String {
    match to {
        Peer::Service {
            namespace, name, ..
        } => format!("Service {namespace}/{name}"),
        other => other.to_string(),
    }
}

impl fmt::Display for ServicePrediction {
    /// The walkthrough: what kube-proxy does on the client's node, then each backend's
    /// own walkthrough, then the conclusion.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = match self.verdict {
            Some(Verdict::Allow) => "ALLOWED",
            Some(Verdict::Deny) => "DENIED",
            None => "MIXED",
        };
        writeln!(f, "{} → {} on {}: {word}.", self.from, self.to, self.port)?;
        match &self.fate {
            ServiceFate::Unreachable(why) => return write!(f, "{why}, so nothing can answer."),
            ServiceFate::NoEndpoints {
                node,
                cluster_ip,
                shadowed,
            } => {
                write!(
                    f,
                    "{} has no ready endpoint, so kube-proxy wrote no DNAT for {cluster_ip}:{} and \
                     its filter chain KUBE-SERVICES on {node} REJECTs new connections to it \
                     (\"has no endpoints\").",
                    service_name(&self.to),
                    self.port.port
                )?;
                return if *shadowed {
                    write!(
                        f,
                        " But a pod's connection meets that REJECT in FORWARD, after kube-router's \
                         chain, which ACCEPTs whatever the pod's policies allow (\"rule to explicitly \
                         ACCEPT traffic that comply to network policies\"): the REJECT is never \
                         reached, the packet is routed towards an address nobody has, and the \
                         client times out instead of being refused (kube-router issue #1453; \
                         Calico had the same, issue #1055). With `policy: none` the pod would be \
                         rejected at once, as the node's own connections are (they go through OUTPUT)."
                    )
                } else {
                    write!(
                        f,
                        " The client gets an ICMP port unreachable from the node, at once."
                    )
                };
            }
            ServiceFate::NoLocalEndpoints { node, cluster_ip } => {
                return write!(
                    f,
                    "{} has internalTrafficPolicy Local and no endpoint on {node}, the client's node, \
                     so kube-proxy there DROPs new connections to {cluster_ip}:{} (\"has no local \
                     endpoints\"): the client times out.",
                    service_name(&self.to),
                    self.port.port
                );
            }
            ServiceFate::Balanced {
                node,
                cluster_ip,
                userspace: true,
                ..
            } => {
                writeln!(
                    f,
                    "kube-proxy on {node} runs in userspace mode: KUBE-PORTALS-CONTAINER redirects \
                     {cluster_ip}:{} to its proxy port on the node, which accepts the connection \
                     and opens a new one to one of {} endpoints (round-robin, the next one if a \
                     dial fails), from the node's own address. The policies then judge a \
                     connection from {node} to that pod on its target port.",
                    self.port.port,
                    self.backends.len()
                )?;
            }
            ServiceFate::Balanced {
                node,
                cluster_ip,
                affinity,
                ..
            } => {
                let how = if *affinity {
                    "picks one at random for the client's first connection and then keeps it \
                     (sessionAffinity ClientIP: `-m recent`)"
                } else {
                    "picks one at random for every new connection (`-m statistic --mode random`)"
                };
                let port = self.port.port;
                match self.backends.len() {
                    1 => writeln!(
                        f,
                        "kube-proxy on {node} DNATs {cluster_ip}:{port} to the Service's only \
                         endpoint. The policies then judge a connection to that pod on its target port."
                    )?,
                    n => writeln!(
                        f,
                        "kube-proxy on {node} DNATs {cluster_ip}:{port} to one of {n} endpoints: it \
                         {how}. The policies then judge a connection to that pod on its target port."
                    )?,
                }
            }
        }
        for b in &self.backends {
            writeln!(
                f,
                "\n-- backend {} ({}:{}): {}",
                b.name,
                b.ip,
                b.port,
                verdict_word(b.prediction.verdict)
            )?;
            writeln!(f, "{}", b.prediction.reason)?;
        }
        let n = self.backends.len();
        match self.verdict {
            Some(Verdict::Allow) => {
                write!(f, "\nEvery backend allows it, whichever kube-proxy picks.")
            }
            Some(Verdict::Deny) => write!(f, "\nNo backend allows it, whichever kube-proxy picks."),
            None => write!(
                f,
                "\n{} of {n} backends allow it: a probe gets through only when kube-proxy picks one \
                 of those, so the cell is not asserted; each answer is checked against the backend \
                 that gave it.",
                self.allowing()
            ),
        }
    }
}

/// Predicts a cell whose server is `to` = `svc/NS/NAME:PORT` on `port` (its protocol
/// and the service port), from a pod or a node.
pub fn predict_service(
    ctx: &OracleContext,
    from: &Peer,
    to: &Peer,
    port: PortProto,
) -> ServicePrediction {
    let (fate, backends) = fate_and_backends(ctx, from, to, port);
    let verdict = match &fate {
        ServiceFate::Balanced { .. } if !backends.is_empty() => {
            let allowing = backends
                .iter()
                .filter(|b| b.prediction.verdict == Verdict::Allow)
                .count();
            if allowing == backends.len() {
                Some(Verdict::Allow)
            } else if allowing == 0 {
                Some(Verdict::Deny)
            } else {
                None
            }
        }
        _ => Some(Verdict::Deny),
    };
    ServicePrediction {
        from: from.clone(),
        to: to.clone(),
        port,
        fate,
        backends,
        verdict,
    }
}

fn fate_and_backends(
    ctx: &OracleContext,
    from: &Peer,
    to: &Peer,
    port: PortProto,
) -> (ServiceFate, Vec<BackendPrediction>) {
    let unreachable = |why: String| (ServiceFate::Unreachable(why), Vec::new());
    let Peer::Service {
        namespace,
        name,
        port: number,
    } = to
    else {
        return unreachable(format!("{to} is not a Service"));
    };
    let Some(sp) = find_port(&ctx.service_ports, namespace, name, *number, port.protocol) else {
        return unreachable(format!(
            "Service {namespace}/{name} has no port {} (at this step)",
            port
        ));
    };
    let Some(cluster_ip) = sp.cluster_ip else {
        return unreachable(format!(
            "Service {namespace}/{name} is headless (clusterIP: None): it has no virtual IP and kube-proxy writes no rule for it"
        ));
    };
    // The node whose kube-proxy rules the connection meets first.
    let node = match from {
        Peer::Pod(p) => match ctx.resolved.pod(p).and_then(|i| i.node.clone()) {
            Some(n) => n,
            None => return unreachable(format!("{p} is not a pod of the cluster")),
        },
        Peer::Node(n) => n.clone(),
        Peer::Host(h) => {
            return unreachable(format!(
                "host/{h} is outside the cluster: cluster IPs are only routed inside the nodes"
            ));
        }
        Peer::Service { .. }
        | Peer::Dns { .. }
        | Peer::NodePort { .. }
        | Peer::LoadBalancer { .. }
        | Peer::ExternalIp { .. } => {
            return unreachable(format!("{from} cannot be a client"));
        }
    };
    let backends = match cluster_ip_fate(sp, &node) {
        ClusterIpFate::Rejected => {
            // Only iptables mode's REJECT sits in filter FORWARD behind the policy
            // engine's jump; nftables mode rejects in its own chain, which an ACCEPT in
            // another chain does not end (measured: refused, not a timeout).
            // (A hostNetwork client is its node: its packets never cross FORWARD.)
            let shadowed = matches!(from, Peer::Pod(p) if ctx.resolved.pod(p).is_some_and(|i| !i.host_network))
                && ctx.engine == crate::cluster::PolicyEngineKind::Iptables
                && ctx.proxy != crate::cluster::ProxyKind::Nftables;
            return (
                ServiceFate::NoEndpoints {
                    node,
                    cluster_ip,
                    shadowed,
                },
                Vec::new(),
            );
        }
        ClusterIpFate::DroppedNoLocal => {
            return (
                ServiceFate::NoLocalEndpoints { node, cluster_ip },
                Vec::new(),
            );
        }
        ClusterIpFate::Backends(b) => b,
    };
    let backends = backends
        .into_iter()
        .map(|e| {
            let (name, peer) = backend_identity(ctx, e.ip, e.port);
            let target = PortProto::new(port.protocol, e.port);
            let refused = peer.as_ref().and_then(|p| unserved(ctx, p, target));
            let case = match (&peer, refused) {
                (_, Some(refused)) => refused,
                // The userspace proxy accepts the connection on the node and dials the
                // backend itself: the policies judge the node's connection.
                (Some(p), None) if ctx.userspace_proxy() => {
                    decide(ctx, &Peer::Node(node.clone()), p, target, Path::Direct)
                }
                (Some(p), None) => super::bridge_nf::same_bridge_reply(
                    ctx,
                    from,
                    p,
                    (e.ip, e.port),
                    (cluster_ip, *number),
                )
                .unwrap_or_else(|| decide(ctx, from, p, target, Path::ViaNode)),
                (None, None) => super::Case::Unknown(format!(
                    "{}:{} is neither a pod of the cluster nor a declared host",
                    e.ip, e.port
                )),
            };
            let shown = peer.clone().unwrap_or_else(|| Peer::Host(name.clone()));
            BackendPrediction {
                name,
                ip: e.ip,
                port: e.port,
                prediction: prediction(from, &shown, target, case),
            }
        })
        .collect();
    let fate = ServiceFate::Balanced {
        node,
        cluster_ip,
        affinity: matches!(sp.session_affinity, SessionAffinity::ClientIp { .. }),
        userspace: ctx.userspace_proxy(),
    };
    (fate, backends)
}

/// A pod backend that declares no container port `target`: nothing listens there (a
/// pod serves exactly its declared ports), so the connection is refused whatever the
/// policies say. kube-proxy does not check a numeric `targetPort` against the pod's
/// ports; the differential test found the oracle allowing such backends. The cluster's
/// own components are the exception: nginx in the ingress controller pod and the DNS
/// server in the cluster DNS pod listen on their ports without declaring them.
pub(super) fn unserved(
    ctx: &OracleContext,
    backend: &Peer,
    target: PortProto,
) -> Option<super::Case> {
    let Peer::Pod(p) = backend else {
        return None;
    };
    let component = *p == crate::ingress::controller::pod_ref()
        || (p.namespace == crate::dns::NAMESPACE && p.name == crate::dns::POD_NAME);
    if component {
        return None;
    }
    let pod = ctx.objects.pods.get(p)?;
    if crate::objects::declared_ports(pod)
        .iter()
        .any(|d| d.port == target)
    {
        return None;
    }
    Some(super::Case::Unknown(format!(
        "{p} declares no container port {target}, so nothing listens there: the connection \
         is refused"
    )))
}

/// With the userspace proxy (`cluster.proxy: userspace`): the source address a backend
/// sees when a client on `node` reaches it through a Service. The proxy on `node` dials
/// it, so the kernel picks the node's address towards the backend: the bridge address
/// for a pod on the same node, the address the node reaches other nodes' pods from
/// (underlay, or the tunnel's in vxlan mode) for a remote pod, the underlay address for
/// anything else. `None` if the node is unknown.
pub fn userspace_source(ctx: &OracleContext, node: &str, backend: Ipv4Addr) -> Option<Ipv4Addr> {
    let fabric = ctx.node_fabric.get(node);
    let backend_node = ctx
        .objects
        .pods
        .values()
        .find(|p| pod_ip(p) == Some(backend))
        .and_then(|p| crate::objects::pod_node(p).map(str::to_string));
    match backend_node.as_deref() {
        Some(n) if n == node => fabric.map(|a| a.bridge),
        Some(_) => ctx.node_addresses.get(node).copied(),
        None => fabric.map(|a| a.underlay),
    }
}

/// The name a backend answers with, and the peer it is: the pod with that address, else
/// the declared host with it, else just `ip:port`. hostNetwork pods share their node's
/// address, so among several pods there the one declaring the port is the one.
pub(super) fn backend_identity(
    ctx: &OracleContext,
    ip: Ipv4Addr,
    port: u16,
) -> (String, Option<Peer>) {
    let at_ip = || {
        ctx.objects
            .pods
            .iter()
            .filter(|(_, pod)| pod_ip(pod) == Some(ip))
    };
    let serving = at_ip().find(|(_, pod)| {
        crate::objects::declared_ports(pod)
            .iter()
            .any(|d| d.port.port == port)
    });
    if let Some((p, _)) = serving.or_else(|| at_ip().next()) {
        return (p.to_string(), Some(Peer::Pod(p.clone())));
    }
    if let Some((h, _)) = ctx.host_addresses.iter().find(|(_, a)| **a == ip) {
        let peer = Peer::Host(h.clone());
        return (peer.to_string(), Some(peer));
    }
    (format!("{ip}:{port}"), None)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::{Value, json};

    use super::*;
    use crate::cluster::{ClusterConfig, PolicyEngineKind};
    use crate::objects::{ClusterObjects, Kind, Object};
    use crate::policy::fixtures::{model_with, node_addresses};
    use crate::services::alloc::{ServiceRanges, allocate};

    /// The standard model with x/a, x/b, x/c also labelled `app=web` (x/a and x/c on
    /// n1, x/b on n2), the policies given, and a Service `x/web` built from `spec`.
    fn model(policies: &[(&str, &str, Value)], spec: Value) -> ClusterObjects {
        let mut o = model_with(policies);
        for p in ["a", "b", "c"] {
            let labels = BTreeMap::from([("pod".into(), p.into()), ("app".into(), "web".into())]);
            o.set_labels(Kind::Pod, "x", p, labels);
        }
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
        let svc = serde_json::from_value(
            json!({"metadata": {"namespace": "x", "name": "web"}, "spec": spec}),
        )
        .unwrap();
        let svc = allocate(&o.services, &ServiceRanges::new(&cluster, None), svc).unwrap();
        o.apply(Object::Service(svc));
        o
    }

    fn web() -> Value {
        json!({"selector": {"app": "web"}, "ports": [{"port": 8000, "targetPort": 80}]})
    }

    fn predict_on(o: &ClusterObjects, from: &str, to: &str, port: &str) -> ServicePrediction {
        let addresses = node_addresses(o);
        let ctx = OracleContext::new(o, PolicyEngineKind::Iptables, &addresses);
        predict_service(
            &ctx,
            &from.parse().unwrap(),
            &to.parse().unwrap(),
            port.parse().unwrap(),
        )
    }

    fn backends(p: &ServicePrediction) -> Vec<(String, u16, Verdict)> {
        p.backends
            .iter()
            .map(|b| (b.name.clone(), b.port, b.prediction.verdict))
            .collect()
    }

    #[test]
    fn every_backend_allowing_makes_the_cell_allowed() {
        let o = model(&[], web());
        let p = predict_on(&o, "y/a", "svc/x/web:8000", "TCP/8000");
        assert_eq!(p.verdict, Some(Verdict::Allow), "{p}");
        assert_eq!(
            backends(&p),
            [
                ("x/a".to_string(), 80, Verdict::Allow),
                ("x/c".to_string(), 80, Verdict::Allow),
                ("x/b".to_string(), 80, Verdict::Allow)
            ]
        );
        assert!(
            matches!(&p.fate, ServiceFate::Balanced { node, affinity: false, .. } if node == "n2")
        );
        let text = p.to_string();
        assert!(
            text.contains("kube-proxy on n2 DNATs 10.96.0.10:8000 to one of 3 endpoints"),
            "{text}"
        );
        assert!(
            text.contains("-- backend x/b (10.244.2.10:80): allow"),
            "{text}"
        );
    }

    /// Differential services seed 2: a numeric targetPort the selected pod does not
    /// declare was predicted allowed; the pod refuses it.
    #[test]
    fn a_backend_that_does_not_serve_the_target_port_refuses() {
        let spec =
            json!({"selector": {"app": "web"}, "ports": [{"port": 8000, "targetPort": 8080}]});
        let o = model(&[], spec);
        let p = predict_on(&o, "y/a", "svc/x/web:8000", "TCP/8000");
        assert_eq!(p.verdict, Some(Verdict::Deny), "{p}");
        assert!(
            backends(&p)
                .iter()
                .all(|(_, port, v)| *port == 8080 && *v == Verdict::Deny),
            "{p}"
        );
        assert!(
            p.to_string()
                .contains("declares no container port TCP/8080"),
            "{p}"
        );
    }

    #[test]
    fn backends_behind_a_down_node_are_lost_and_the_cell_is_mixed() {
        // x/a and x/c run on n1, x/b on n2; the client y/b runs on n1.
        let o = model(&[], web());
        let addresses = node_addresses(&o);
        let ctx = OracleContext::new(&o, PolicyEngineKind::Iptables, &addresses)
            .with_down_nodes(["n2".to_string()].into());
        let p = predict_service(
            &ctx,
            &"y/b".parse().unwrap(),
            &"svc/x/web:8000".parse().unwrap(),
            "TCP/8000".parse().unwrap(),
        );
        assert_eq!(p.verdict, None, "{p}");
        assert_eq!(p.allowing(), 2, "{p}");
        let b = p.backend("x/b").unwrap();
        assert_eq!(b.prediction.verdict, Verdict::Deny);
        assert_eq!(
            b.prediction.reason.case,
            crate::oracle::Case::NodeUnreachable { node: "n2".into() }
        );
    }

    #[test]
    fn backends_judged_differently_make_a_mixed_cell() {
        // Only x/a accepts anything from y.
        let o = model(
            &[(
                "x",
                "only-a",
                json!({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b", "c"]}]},
                       "policyTypes": ["Ingress"]}),
            )],
            web(),
        );
        let p = predict_on(&o, "y/a", "svc/x/web:8000", "TCP/8000");
        assert_eq!(p.verdict, None, "{p}");
        assert_eq!(p.allowing(), 1);
        assert_eq!(p.backend("x/b").unwrap().prediction.verdict, Verdict::Deny);
        let short = p.short();
        assert!(
            short.starts_with("mixed: DNAT to one of [x/a 10.244.1.10:80 allow, x/c 10.244.1.11:80 deny, x/b 10.244.2.10:80 deny]"),
            "{short}"
        );
        assert!(p.to_string().contains("1 of 3 backends allow it"), "{p}");
    }

    #[test]
    fn policies_see_the_target_port_not_the_service_port() {
        let allow = |port: u16| {
            (
                "x",
                "web-port",
                json!({"podSelector": {}, "ingress": [{"ports": [{"port": port}]}]}),
            )
        };
        let o = model(&[allow(80)], web());
        assert_eq!(
            predict_on(&o, "y/a", "svc/x/web:8000", "TCP/8000").verdict,
            Some(Verdict::Allow)
        );
        let o = model(&[allow(8000)], web());
        let p = predict_on(&o, "y/a", "svc/x/web:8000", "TCP/8000");
        assert_eq!(p.verdict, Some(Verdict::Deny), "{p}");
    }

    #[test]
    fn no_endpoints_is_rejected_and_headless_has_no_virtual_ip() {
        let o = model(
            &[],
            json!({"selector": {"app": "nothing"}, "ports": [{"port": 80}]}),
        );
        let p = predict_on(&o, "y/a", "svc/x/web:80", "TCP/80");
        assert_eq!(p.verdict, Some(Verdict::Deny));
        assert!(matches!(p.fate, ServiceFate::NoEndpoints { .. }), "{p}");
        // A pod's connection: kube-router's ACCEPT comes first, so it times out.
        assert!(
            matches!(p.fate, ServiceFate::NoEndpoints { shadowed: true, .. }),
            "{p}"
        );
        assert!(p.to_string().contains("kube-router issue #1453"), "{p}");
        let n = predict_on(&o, "node/n1", "svc/x/web:80", "TCP/80");
        assert_eq!(n.verdict, Some(Verdict::Deny));
        assert!(
            n.short()
                .contains("has no endpoints, so kube-proxy REJECTs"),
            "{}",
            n.short()
        );
        let o = model(
            &[],
            json!({"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"port": 80}]}),
        );
        let p = predict_on(&o, "y/a", "svc/x/web:80", "TCP/80");
        assert!(matches!(p.fate, ServiceFate::Unreachable(_)), "{p}");
        // A port the Service does not have, or another protocol.
        let o = model(&[], web());
        assert!(matches!(
            predict_on(&o, "y/a", "svc/x/web:80", "TCP/80").fate,
            ServiceFate::Unreachable(_)
        ));
        assert!(matches!(
            predict_on(&o, "y/a", "svc/x/web:8000", "UDP/8000").fate,
            ServiceFate::Unreachable(_)
        ));
    }

    #[test]
    fn a_pod_reaching_itself_through_its_service_meets_its_own_policies() {
        let only_a = json!({"selector": {"pod": "a"}, "ports": [{"port": 8000, "targetPort": 80}]});
        let o = model(&[], only_a.clone());
        let p = predict_on(&o, "x/a", "svc/x/web:8000", "TCP/8000");
        assert_eq!(p.verdict, Some(Verdict::Allow));
        // Not the loopback shortcut: the connection goes out to the node and back.
        assert!(
            matches!(
                p.backends[0].prediction.reason.case,
                crate::oracle::Case::Hairpin { .. }
            ),
            "{p}"
        );
        let deny = |types: Value| {
            model(
                &[(
                    "x",
                    "deny",
                    json!({"podSelector": {}, "policyTypes": types}),
                )],
                only_a.clone(),
            )
        };
        // kube-router's one chain per pod: either direction allowing is enough.
        let p = predict_on(
            &deny(json!(["Ingress"])),
            "x/a",
            "svc/x/web:8000",
            "TCP/8000",
        );
        assert_eq!(p.verdict, Some(Verdict::Allow), "{p}");
        assert!(
            p.to_string()
                .contains("Its egress allows it, which is enough here"),
            "{p}"
        );
        let p = predict_on(
            &deny(json!(["Egress"])),
            "x/a",
            "svc/x/web:8000",
            "TCP/8000",
        );
        assert_eq!(p.verdict, Some(Verdict::Allow), "{p}");
        let p = predict_on(
            &deny(json!(["Ingress", "Egress"])),
            "x/a",
            "svc/x/web:8000",
            "TCP/8000",
        );
        assert_eq!(p.verdict, Some(Verdict::Deny), "{p}");
        // Another pod is judged as always: both ends must allow.
        let p = predict_on(
            &deny(json!(["Ingress"])),
            "x/b",
            "svc/x/web:8000",
            "TCP/8000",
        );
        assert_eq!(p.verdict, Some(Verdict::Deny), "{p}");
    }

    #[test]
    fn nodes_and_internal_traffic_policy_local() {
        let o = model(
            &[(
                "x",
                "deny-all",
                json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
            )],
            web(),
        );
        // n1 runs x/a and x/c (always reachable from their node), x/b is on n2.
        let p = predict_on(&o, "node/n1", "svc/x/web:8000", "TCP/8000");
        assert_eq!(p.verdict, None, "{p}");
        assert_eq!(p.backend("x/b").unwrap().prediction.verdict, Verdict::Deny);
        let mut local = web();
        local["internalTrafficPolicy"] = json!("Local");
        let o = model(&[], local);
        let p = predict_on(&o, "y/a", "svc/x/web:8000", "TCP/8000");
        // y/a runs on n2, where only x/b is.
        assert_eq!(backends(&p), [("x/b".to_string(), 80, Verdict::Allow)]);
        let o2 = {
            let mut o = o.clone();
            o.delete(Kind::Pod, "x", "b");
            o
        };
        let p = predict_on(&o2, "y/a", "svc/x/web:8000", "TCP/8000");
        assert_eq!(p.verdict, Some(Verdict::Deny));
        assert!(
            matches!(p.fate, ServiceFate::NoLocalEndpoints { .. }),
            "{p}"
        );
        // Hosts outside the cluster have no route to cluster IPs.
        let p = predict_on(&o, "host/pc", "svc/x/web:8000", "TCP/8000");
        assert!(matches!(p.fate, ServiceFate::Unreachable(_)), "{p}");
    }

    #[test]
    fn the_userspace_proxy_dials_backends_from_the_node() {
        // x admits only its own pods. y/a (on n2) is not one of them, so through
        // kube-proxy's DNAT every backend denies; through the userspace proxy each
        // backend sees n2 instead: its own pod x/b always admits its node, the pods on
        // n1 see an outside address and deny.
        let o = model(
            &[(
                "x",
                "own-namespace",
                json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
            )],
            web(),
        );
        let addresses = node_addresses(&o);
        let ctx = OracleContext::new(&o, PolicyEngineKind::Iptables, &addresses);
        let cell = |ctx: &OracleContext| {
            predict_service(
                ctx,
                &"y/a".parse().unwrap(),
                &"svc/x/web:8000".parse().unwrap(),
                "TCP/8000".parse().unwrap(),
            )
        };
        assert_eq!(cell(&ctx).verdict, Some(Verdict::Deny));
        let fabric: crate::oracle::NodeFabric = [
            ("n1", [192, 168, 200, 11], [10, 244, 1, 1]),
            ("n2", [192, 168, 200, 12], [10, 244, 2, 1]),
        ]
        .into_iter()
        .map(|(n, u, b)| {
            (
                n.to_string(),
                crate::oracle::NodeAddresses {
                    underlay: Ipv4Addr::from(u),
                    bridge: Ipv4Addr::from(b),
                },
            )
        })
        .collect();
        let ctx = ctx
            .with_proxy(crate::cluster::ProxyKind::Userspace)
            .with_node_fabric(fabric);
        let p = cell(&ctx);
        assert_eq!(p.verdict, None, "{p}");
        assert_eq!(
            backends(&p),
            [
                ("x/a".to_string(), 80, Verdict::Deny),
                ("x/c".to_string(), 80, Verdict::Deny),
                ("x/b".to_string(), 80, Verdict::Allow)
            ]
        );
        let ip = |b: &str| p.backend(b).unwrap().ip;
        assert_eq!(
            userspace_source(&ctx, "n2", ip("x/b")),
            Some(Ipv4Addr::new(10, 244, 2, 1))
        );
        assert_eq!(
            userspace_source(&ctx, "n2", ip("x/a")),
            Some(Ipv4Addr::new(192, 168, 200, 12))
        );
        // The story is the userspace proxy's, not a DNAT.
        assert!(p.to_string().contains("runs in userspace mode"), "{p}");
        assert!(
            p.short().contains("userspace proxy dials one of"),
            "{}",
            p.short()
        );
        assert!(!p.short().contains("DNAT"), "{}", p.short());
    }
}
