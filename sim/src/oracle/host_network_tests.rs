//! hostNetwork pods in the oracle and the enforcer's rules: never selected by a policy
//! (as subject or as a selector peer), their node as clients, their node's address as
//! servers, and always reachable from and to the pods of their own node.

use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::*;
use crate::matrix::Verdict;
use crate::objects::PodRef;
use crate::policy::fixtures::{add_pod, model_with, node_addresses, pod, pr};
use crate::protocol::Protocol;
use crate::render::{RenderContext, render_node};

/// The standard model plus `x/agent`, a hostNetwork pod on n1 labelled `pod=a` (so a
/// selector that picks `x/a` would pick it too, were it a pod-network pod) serving
/// TCP/9100 named `metrics`, with n1's address as its own.
fn with_agent(policies: &[(&str, &str, Value)]) -> ClusterObjects {
    let mut o = model_with(policies);
    let mut agent = pod(
        "x",
        "agent",
        &[("pod", "a")],
        &[("metrics", 9100, Protocol::Tcp)],
    );
    agent.spec.as_mut().unwrap().host_network = Some(true);
    let key = add_pod(&mut o, agent, "n1");
    o.set_pod_ip(&key, node_ip(&o, "n1"));
    o
}

fn node_ip(o: &ClusterObjects, node: &str) -> Ipv4Addr {
    node_addresses(o)[node]
}

fn predict_on(o: &ClusterObjects, from: &str, to: &str, port: &str) -> Prediction {
    let addresses = node_addresses(o);
    let ctx = OracleContext::new(o, PolicyEngineKind::Iptables, &addresses);
    predict(
        &ctx,
        &from.parse().expect("peer"),
        &to.parse().expect("peer"),
        port.parse().expect("port"),
    )
}

#[track_caller]
fn verdict(o: &ClusterObjects, from: &str, to: &str, port: &str) -> Verdict {
    predict_on(o, from, to, port).verdict
}

fn deny_all(ns: &str) -> (&str, &'static str, Value) {
    (
        ns,
        "deny-all",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    )
}

#[test]
fn no_policy_selects_a_host_network_pod() {
    let o = with_agent(&[deny_all("x")]);
    let resolved = crate::policy::resolve(&o);
    let agent = pr("x/agent");
    assert!(resolved.pod(&agent).unwrap().host_network);
    assert!(!resolved.policies[0].selects(&agent));
    assert!(resolved.policies[0].selects(&pr("x/a")));
    // Deny-all in its namespace leaves it open (y/a is on n2, the agent on n1).
    assert_eq!(verdict(&o, "y/a", "x/agent", "TCP/9100"), Verdict::Allow);
    let p = predict_on(&o, "y/a", "x/agent", "TCP/9100");
    let Case::Checked { ingress, .. } = &p.reason.case else {
        panic!("{}", p.reason)
    };
    assert!(matches!(ingress.outcome, SideOutcome::HostNetwork { .. }));
    let text = p.reason.to_string();
    assert!(
        text.contains("has hostNetwork: true") && text.contains("192.168.200.11"),
        "{text}"
    );
}

#[test]
fn a_selector_peer_never_matches_a_host_network_pod_but_an_ip_block_on_its_node_does() {
    // x/b (on n2) admits every pod of x on TCP/80, and pods labelled pod=a from anywhere.
    let by_selector = (
        "x",
        "b-from-x",
        json!({"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": [{"from": [
            {"podSelector": {}},
            {"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "a"}}}
        ]}]}),
    );
    let o = with_agent(std::slice::from_ref(&by_selector));
    assert_eq!(verdict(&o, "x/a", "x/b", "TCP/80"), Verdict::Allow);
    let p = predict_on(&o, "x/agent", "x/b", "TCP/80");
    assert_eq!(p.verdict, Verdict::Deny, "{}", p.reason);
    let text = p.reason.to_string();
    assert!(text.contains("192.168.200.11 is not a pod"), "{text}");
    // An ipBlock covering n1's address admits it (and node/n1 alike).
    let by_block = (
        "x",
        "b-from-n1",
        json!({"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": [{"from": [
            {"ipBlock": {"cidr": "192.168.200.11/32"}}
        ]}]}),
    );
    let o = with_agent(&[by_selector, by_block]);
    assert_eq!(verdict(&o, "x/agent", "x/b", "TCP/80"), Verdict::Allow);
}

#[test]
fn as_a_client_a_host_network_pod_is_its_node() {
    let policies = [
        deny_all("y"),
        (
            "y",
            "from-n1",
            json!({"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": [{"from": [
                {"ipBlock": {"cidr": "192.168.200.0/24"}}
            ], "ports": [{"port": 81}]}]}),
        ),
    ];
    let o = with_agent(&policies);
    let servers: Vec<String> = o
        .pods
        .keys()
        .filter(|p| p.name != "agent")
        .map(PodRef::to_string)
        .collect();
    let mut denied = 0;
    for to in &servers {
        for port in ["TCP/80", "TCP/81", "UDP/80"] {
            let as_pod = verdict(&o, "x/agent", to, port);
            assert_eq!(as_pod, verdict(&o, "node/n1", to, port), "{to} {port}");
            denied += usize::from(as_pod == Verdict::Deny);
        }
    }
    // Something was denied (y's pods on n2), so the comparison meant something.
    assert!(denied > 0);
}

#[test]
fn a_pod_and_a_host_network_pod_of_the_same_node_always_reach_each_other() {
    let o = with_agent(&[deny_all("x")]);
    // x/a runs on n1, as the agent; x/b on n2.
    for (from, to, port) in [("x/agent", "x/a", "TCP/80"), ("x/a", "x/agent", "TCP/9100")] {
        let p = predict_on(&o, from, to, port);
        assert_eq!(p.verdict, Verdict::Allow, "{}", p.reason);
        assert!(
            matches!(p.reason.case, Case::HostNetworkOwnNode { .. }),
            "{}",
            p.reason
        );
        assert!(
            p.short().contains("runs on n1's host network"),
            "{}",
            p.short()
        );
    }
    // x/b's egress is denied by deny-all: its node's address is no exception.
    assert_eq!(verdict(&o, "x/b", "x/agent", "TCP/9100"), Verdict::Deny);
    assert_eq!(verdict(&o, "x/agent", "x/b", "TCP/80"), Verdict::Deny);
    // Named ports open nothing on a hostNetwork server.
    let named = (
        "x",
        "b-to-metrics",
        json!({"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Egress"],
               "egress": [{"ports": [{"port": "metrics"}]}]}),
    );
    let o = with_agent(&[named]);
    assert_eq!(verdict(&o, "x/b", "x/agent", "TCP/9100"), Verdict::Deny);
}

#[test]
fn the_enforcer_writes_no_chain_for_a_host_network_pod() {
    let block = (
        "y",
        "from-x",
        json!({"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"ns": "x"}}}
        ]}]}),
    );
    let o = with_agent(&[deny_all("x"), block]);
    let ctx = RenderContext {
        pod_cidr: "10.244.0.0/16".parse().unwrap(),
        service_cidr: "10.96.0.0/12".parse().unwrap(),
        deny: crate::cluster::DenyStyle::Reject,
        node_ip: node_ip(&o, "n1"),
    };
    for node in ["n1", "n2"] {
        let rules = render_node(&crate::policy::resolve(&o), node, &ctx).normalised();
        // n1's address appears in the header only: no pod chain, no peer set holds it.
        let lines: Vec<&str> = rules
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains("192.168.200.11"))
            .collect();
        assert!(lines.is_empty(), "{node}: {lines:?}");
        assert!(rules.contains("10.244.1.10"), "{node}: x/a is still there");
    }
}

#[test]
fn a_headless_service_over_host_network_pods_answers_with_their_nodes_addresses() {
    let mut o = with_agent(&[]);
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": {"namespace": "x", "name": "agents"},
        "spec": {"clusterIP": "None", "selector": {"pod": "a"}, "ports": [{"port": 9100}]}
    }))
    .unwrap();
    o.apply(crate::objects::Object::Service(svc));
    let zone = crate::dns::zone(&o, "cluster.local");
    let crate::dns::Lookup::Records(answers) = zone.lookup("agents.x.svc.cluster.local", "A")
    else {
        panic!("no A records:\n{}", zone.dump())
    };
    let text: Vec<String> = answers.iter().map(ToString::to_string).collect();
    // x/a (a pod-network pod with the same label) and the agent, at n1's address.
    assert!(
        text.iter().any(|a| a.contains("192.168.200.11")),
        "{text:?}"
    );
    assert!(text.iter().any(|a| a.contains("10.244.1.10")), "{text:?}");
}
