//! The oracle against a second, deliberately naive reading of the NetworkPolicy spec,
//! over thousands of random cases (`sim::testgen`). The differential test in
//! `harness` compares the kernel with the oracle, but the rules the kernel runs are
//! rendered from the same `sim::policy` resolution the oracle reads, so a misreading of
//! the spec there would pass it unseen. This reference shares nothing with `sim::policy`
//! or `sim::selector`: it works on the raw `k8s-openapi` objects, rule by rule, written
//! straight from `networkpolicy-semantics.md`. Pure; no root.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sim::matrix::Verdict;
use sim::objects::{ClusterObjects, PodRef};
use sim::oracle::{OracleContext, predict};
use sim::protocol::{PortProto, Protocol};
use sim::scenario::{Peer, PolicyEngineKind};
use sim::testgen;

type Labels = BTreeMap<String, String>;
/// A rule's peers and ports, whichever direction it is.
type Rule<'a> = (
    Option<&'a Vec<NetworkPolicyPeer>>,
    Option<&'a Vec<NetworkPolicyPort>>,
);

fn selects(sel: &LabelSelector, labels: &Labels) -> bool {
    for (k, v) in sel.match_labels.iter().flatten() {
        if labels.get(k) != Some(v) {
            return false;
        }
    }
    for e in sel.match_expressions.iter().flatten() {
        let have = labels.get(&e.key);
        let values = e.values.clone().unwrap_or_default();
        let ok = match e.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            other => panic!("the generator wrote operator {other}"),
        };
        if !ok {
            return false;
        }
    }
    true
}

/// A connection end as the reference sees it.
struct End {
    /// `None` for a node.
    pod: Option<PodRef>,
    ip: Ipv4Addr,
    labels: Labels,
    ns_labels: Labels,
    /// Declared container ports: (name, protocol, number).
    ports: Vec<(String, Protocol, u16)>,
}

fn end_of_pod(objects: &ClusterObjects, pod: &PodRef) -> End {
    let p = &objects.pods[pod];
    let mut ns_labels = objects.namespaces[&pod.namespace]
        .metadata
        .labels
        .clone()
        .unwrap_or_default();
    ns_labels.insert("kubernetes.io/metadata.name".into(), pod.namespace.clone());
    let mut ports = Vec::new();
    for c in &p.spec.as_ref().unwrap().containers {
        for cp in c.ports.iter().flatten() {
            let proto: Protocol = cp.protocol.as_deref().unwrap_or("TCP").parse().unwrap();
            ports.push((
                cp.name.clone().unwrap_or_default(),
                proto,
                cp.container_port as u16,
            ));
        }
    }
    End {
        pod: Some(pod.clone()),
        ip: p
            .status
            .as_ref()
            .unwrap()
            .pod_ip
            .as_ref()
            .unwrap()
            .parse()
            .unwrap(),
        labels: p.metadata.labels.clone().unwrap_or_default(),
        ns_labels,
        ports,
    }
}

fn cidr(s: &str) -> Ipv4Net {
    s.parse::<Ipv4Net>().unwrap().trunc()
}

/// Whether a peer of a policy in namespace `policy_ns` is `other`.
fn peer_matches(peer: &NetworkPolicyPeer, policy_ns: &str, other: &End) -> bool {
    if let Some(b) = &peer.ip_block {
        return cidr(&b.cidr).contains(&other.ip)
            && !b
                .except
                .iter()
                .flatten()
                .any(|e| cidr(e).contains(&other.ip));
    }
    // Selector peers only ever match pods.
    let Some(pod) = &other.pod else { return false };
    let ns_ok = match &peer.namespace_selector {
        Some(sel) => selects(sel, &other.ns_labels),
        None => pod.namespace == policy_ns,
    };
    let pod_ok = match &peer.pod_selector {
        Some(sel) => selects(sel, &other.labels),
        None => true,
    };
    ns_ok && pod_ok
}

/// Whether a ports entry opens `port` on the destination `dest`.
fn port_matches(entry: &NetworkPolicyPort, dest: &End, port: PortProto) -> bool {
    let proto: Protocol = entry.protocol.as_deref().unwrap_or("TCP").parse().unwrap();
    if proto != port.protocol {
        return false;
    }
    match &entry.port {
        None => true,
        Some(IntOrString::Int(n)) => {
            let last = entry.end_port.unwrap_or(*n);
            (*n..=last).contains(&i32::from(port.port))
        }
        Some(IntOrString::String(name)) => dest
            .ports
            .iter()
            .any(|(n, p, number)| n == name && *p == proto && *number == port.port),
    }
}

/// `(ingress, egress)` after defaulting.
fn types(np: &NetworkPolicy) -> (bool, bool) {
    let spec = np.spec.as_ref().unwrap();
    match spec.policy_types.as_deref() {
        Some(t) if !t.is_empty() => (
            t.iter().any(|x| x == "Ingress"),
            t.iter().any(|x| x == "Egress"),
        ),
        _ => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
    }
}

/// One side: `subject` receives from (ingress) or sends to (egress) `other`; `dest` is
/// the destination (where named ports resolve).
fn side_allows(
    objects: &ClusterObjects,
    ingress: bool,
    subject: &End,
    other: &End,
    dest: &End,
    port: PortProto,
) -> bool {
    let pod = subject.pod.as_ref().unwrap();
    let mut isolated = false;
    for np in objects.network_policies.values() {
        let ns = np.metadata.namespace.as_deref().unwrap();
        let spec = np.spec.as_ref().unwrap();
        let sel = spec.pod_selector.clone().unwrap_or_default();
        if ns != pod.namespace || !selects(&sel, &subject.labels) {
            continue;
        }
        let (has_in, has_eg) = types(np);
        if (ingress && !has_in) || (!ingress && !has_eg) {
            continue;
        }
        isolated = true;
        let rules: Vec<Rule> = if ingress {
            spec.ingress
                .iter()
                .flatten()
                .map(|r| (r.from.as_ref(), r.ports.as_ref()))
                .collect()
        } else {
            spec.egress
                .iter()
                .flatten()
                .map(|r| (r.to.as_ref(), r.ports.as_ref()))
                .collect()
        };
        for (peers, ports) in rules {
            let peer_ok = match peers {
                None => true,
                Some(list) if list.is_empty() => true,
                Some(list) => list.iter().any(|p| peer_matches(p, ns, other)),
            };
            let port_ok = match ports {
                None => true,
                Some(list) if list.is_empty() => true,
                Some(list) => list.iter().any(|e| port_matches(e, dest, port)),
            };
            if peer_ok && port_ok {
                return true;
            }
        }
    }
    !isolated
}

fn reference(
    objects: &ClusterObjects,
    nodes: &BTreeMap<String, Ipv4Addr>,
    from: &Peer,
    to: &PodRef,
    port: PortProto,
) -> bool {
    let dest = end_of_pod(objects, to);
    match from {
        Peer::Pod(p) if p == to => true,
        Peer::Pod(p) => {
            let src = end_of_pod(objects, p);
            side_allows(objects, false, &src, &dest, &dest, port)
                && side_allows(objects, true, &dest, &src, &dest, port)
        }
        Peer::Node(n) => {
            let pod_node = objects.pods[to].spec.as_ref().unwrap().node_name.as_deref();
            if pod_node == Some(n.as_str()) {
                return true;
            }
            let src = End {
                pod: None,
                ip: nodes[n],
                labels: Labels::new(),
                ns_labels: Labels::new(),
                ports: vec![],
            };
            side_allows(objects, true, &dest, &src, &dest, port)
        }
        Peer::Host(_) => unreachable!("the model has no external hosts"),
        Peer::Service { .. }
        | Peer::Dns { .. }
        | Peer::NodePort { .. }
        | Peer::LoadBalancer { .. }
        | Peer::ExternalIp { .. } => unreachable!("the model probes no Services or names"),
    }
}

#[test]
fn the_oracle_reads_the_spec_like_a_naive_reference() {
    let model = testgen::standard_model();
    let ports: Vec<PortProto> = Protocol::ALL
        .iter()
        .flat_map(|p| testgen::PORTS.map(|n| PortProto::new(*p, n)))
        .collect();
    let cases = std::env::var("KNETLAB_REFERENCE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000u64);
    let mut wrong = Vec::new();
    let mut cells = 0;
    for seed in 0..cases {
        let mut case = testgen::random_case(seed);
        // The reference reads NetworkPolicy alone; the tiers around it have tests of
        // their own (sim/src/cluster_policy/tests, the differential test).
        case.cluster_policies.clear();
        let objects = case.objects();
        let ctx = OracleContext::new(&objects, PolicyEngineKind::Iptables, &model.node_addresses);
        let clients: Vec<Peer> = objects
            .pods
            .keys()
            .cloned()
            .map(Peer::Pod)
            .chain(model.node_addresses.keys().cloned().map(Peer::Node))
            .collect();
        for from in &clients {
            for to in objects.pods.keys() {
                for port in &ports {
                    cells += 1;
                    let want = Verdict::from_allowed(reference(
                        &objects,
                        &model.node_addresses,
                        from,
                        to,
                        *port,
                    ));
                    let got = predict(&ctx, from, &Peer::Pod(to.clone()), *port);
                    if got.verdict != want && wrong.len() < 10 {
                        wrong.push(format!(
                            "seed {seed}: {from} -> {to} {port}: reference {want:?}, oracle {:?}\n{}\n{}",
                            got.verdict,
                            got.reason,
                            case.to_scenario_yaml()
                        ));
                    }
                }
            }
        }
    }
    println!("{cases} cases, {cells} cells compared");
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}
