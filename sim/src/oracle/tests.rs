//! One test per NetworkPolicy rule (issue 3, "Semantics (all of them)"), each named after
//! the rule it checks, on the standard x/y/z × a/b/c model (two nodes, pod IPs set), plus
//! checks of the explanation text.

use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::*;
use crate::matrix::Verdict;
use crate::objects::{Kind, Object, pod_ip};
use crate::policy::fixtures::{
    NAMESPACES, PODS, add_pod, model_with, namespace, node_addresses, pod, policy, pr,
    standard_model,
};
use crate::protocol::Protocol;

/// Predicts one cell: `from` is `ns/pod` or `node/N`, `to` is `ns/pod`, port `TCP/80`.
fn predict_on(objects: &ClusterObjects, from: &str, to: &str, port: &str) -> Prediction {
    predict_with(objects, PolicyEngineKind::Iptables, from, to, port)
}

fn predict_with(
    objects: &ClusterObjects,
    engine: PolicyEngineKind,
    from: &str,
    to: &str,
    port: &str,
) -> Prediction {
    let addresses = node_addresses(objects);
    let ctx = OracleContext::new(objects, engine, &addresses);
    predict(
        &ctx,
        &from.parse().expect("peer"),
        &Peer::Pod(pr(to)),
        port.parse().expect("port"),
    )
}

/// Whether the cell is allowed; on a surprise the assertion prints the explanation.
fn allowed(objects: &ClusterObjects, from: &str, to: &str, port: &str) -> bool {
    predict_on(objects, from, to, port).verdict == Verdict::Allow
}

#[track_caller]
fn assert_allowed(objects: &ClusterObjects, from: &str, to: &str, port: &str) {
    let p = predict_on(objects, from, to, port);
    assert_eq!(p.verdict, Verdict::Allow, "expected allow:\n{}", p.reason);
}

#[track_caller]
fn assert_denied(objects: &ClusterObjects, from: &str, to: &str, port: &str) {
    let p = predict_on(objects, from, to, port);
    assert_eq!(p.verdict, Verdict::Deny, "expected deny:\n{}", p.reason);
}

fn ip_of(objects: &ClusterObjects, pod: &str) -> Ipv4Addr {
    pod_ip(&objects.pods[&pr(pod)]).expect("fixture pods have IPs")
}

fn all_pods() -> Vec<String> {
    NAMESPACES
        .iter()
        .flat_map(|ns| PODS.iter().map(move |p| format!("{ns}/{p}")))
        .collect()
}

fn deny_all_ingress_in_x() -> (&'static str, &'static str, Value) {
    (
        "x",
        "default-deny-ingress",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    )
}

// ---------------------------------------------------------------- isolation, policyTypes

#[test]
fn pods_are_non_isolated_without_policies() {
    let m = standard_model();
    for from in all_pods() {
        for to in all_pods() {
            for port in ["TCP/80", "UDP/81", "SCTP/80"] {
                assert_allowed(&m, &from, &to, port);
            }
        }
    }
}

#[test]
fn policy_types_default_to_ingress_only_without_egress_rules() {
    let m = model_with(&[(
        "x",
        "p",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}}),
    )]);
    assert_denied(&m, "x/b", "x/a", "TCP/80");
    // No Egress by default: x/a still sends anywhere.
    assert_allowed(&m, "x/a", "y/b", "TCP/80");
    let p = &resolve_policies(&m)[0];
    assert!(p.policy_types.defaulted && p.policy_types.ingress && !p.policy_types.egress);
}

#[test]
fn policy_types_default_to_ingress_plus_egress_when_egress_rules_present() {
    let m = model_with(&[(
        "x",
        "p",
        json!({
            "podSelector": {"matchLabels": {"pod": "a"}},
            "egress": [{"to": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]
        }),
    )]);
    // Egress is isolated: only x/b is reachable.
    assert_allowed(&m, "x/a", "x/b", "TCP/80");
    assert_denied(&m, "x/a", "x/c", "TCP/80");
    // And Ingress came with it, with no ingress rules: deny all ingress.
    assert_denied(&m, "x/b", "x/a", "TCP/80");
}

#[test]
fn policy_types_egress_only_leaves_ingress_open() {
    let m = model_with(&[(
        "x",
        "p",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"]}),
    )]);
    assert_denied(&m, "x/a", "x/b", "TCP/80");
    assert_allowed(&m, "x/b", "x/a", "TCP/80");
}

#[test]
fn rules_of_a_direction_left_out_of_policy_types_are_ignored() {
    // The ingress rule would only admit x/b, but policyTypes says Egress only, so
    // ingress stays open for everyone.
    let m = model_with(&[(
        "x",
        "p",
        json!({
            "podSelector": {"matchLabels": {"pod": "a"}},
            "policyTypes": ["Egress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
            "egress": [{}]
        }),
    )]);
    assert_allowed(&m, "x/c", "x/a", "TCP/80");
    assert_allowed(&m, "y/a", "x/a", "TCP/80");
}

#[test]
fn empty_pod_selector_selects_every_pod_of_its_namespace_only() {
    let m = model_with(&[deny_all_ingress_in_x()]);
    for to in ["x/a", "x/b", "x/c"] {
        assert_denied(&m, "y/a", to, "TCP/80");
    }
    for to in ["y/a", "z/c"] {
        assert_allowed(&m, "x/a", to, "TCP/80");
    }
}

#[test]
fn pod_selector_selects_by_labels() {
    let m = model_with(&[(
        "x",
        "p",
        json!({"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Ingress"]}),
    )]);
    assert_denied(&m, "y/a", "x/b", "TCP/80");
    assert_allowed(&m, "y/a", "x/a", "TCP/80");
}

#[test]
fn label_change_reselects_pods() {
    let mut m = model_with(&[(
        "x",
        "p",
        json!({"podSelector": {"matchLabels": {"role": "db"}}, "policyTypes": ["Ingress"]}),
    )]);
    assert_allowed(&m, "y/a", "x/b", "TCP/80");
    let labels = [("pod", "b"), ("role", "db")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert!(m.set_labels(Kind::Pod, "x", "b", labels));
    assert_denied(&m, "y/a", "x/b", "TCP/80");
}

#[test]
fn policies_in_other_namespaces_do_not_select() {
    let m = model_with(&[(
        "y",
        "p",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    )]);
    assert_allowed(&m, "x/a", "x/b", "TCP/80");
    assert_denied(&m, "x/a", "y/b", "TCP/80");
    assert_denied(&m, "y/a", "x/b", "TCP/80");
}

// ---------------------------------------------------------------- empty vs missing lists

#[test]
fn empty_ingress_list_denies_all() {
    let m = model_with(&[(
        "x",
        "p",
        json!({"podSelector": {}, "policyTypes": ["Ingress"], "ingress": []}),
    )]);
    for from in all_pods() {
        if from != "x/a" {
            assert_denied(&m, &from, "x/a", "TCP/80");
        }
    }
    assert_denied(&m, "node/n2", "x/a", "TCP/80");
}

#[test]
fn missing_ingress_list_denies_all() {
    let m = model_with(&[deny_all_ingress_in_x()]);
    assert_denied(&m, "x/b", "x/a", "TCP/80");
    assert_denied(&m, "z/c", "x/a", "UDP/81");
}

#[test]
fn ingress_with_empty_rule_allows_all() {
    let m = model_with(&[
        deny_all_ingress_in_x(),
        (
            "x",
            "allow-all",
            json!({"podSelector": {}, "ingress": [{}]}),
        ),
    ]);
    for from in all_pods() {
        for port in ["TCP/80", "UDP/81", "SCTP/80"] {
            assert_allowed(&m, &from, "x/a", port);
        }
    }
    // From anywhere, outside the cluster included: another node's address.
    assert_allowed(&m, "node/n2", "x/a", "TCP/80");
}

#[test]
fn empty_egress_list_denies_all() {
    let m = model_with(&[(
        "x",
        "p",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": []}),
    )]);
    for to in all_pods() {
        if to != "x/a" {
            assert_denied(&m, "x/a", &to, "TCP/80");
        }
    }
}

#[test]
fn egress_with_empty_rule_allows_all() {
    let m = model_with(&[
        (
            "x",
            "deny",
            json!({"podSelector": {}, "policyTypes": ["Egress"]}),
        ),
        (
            "x",
            "allow",
            json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}),
        ),
    ]);
    for to in all_pods() {
        assert_allowed(&m, "x/a", &to, "SCTP/81");
    }
}

#[test]
fn rule_without_ports_allows_every_port_and_protocol() {
    let m = model_with(&[(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    )]);
    for port in ["TCP/80", "TCP/81", "UDP/80", "UDP/81", "SCTP/80", "SCTP/81"] {
        assert_allowed(&m, "x/b", "x/a", port);
        assert_denied(&m, "x/c", "x/a", port);
    }
}

#[test]
fn rule_without_from_matches_every_peer() {
    let m = model_with(&[(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}),
    )]);
    for from in ["x/b", "y/a", "z/c", "node/n2"] {
        assert_allowed(&m, from, "x/a", "TCP/80");
        assert_denied(&m, from, "x/a", "TCP/81");
    }
}

#[test]
fn empty_from_list_matches_every_peer() {
    let m = model_with(&[(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [], "ports": []}]}),
    )]);
    assert_allowed(&m, "z/c", "x/a", "UDP/81");
}

// ---------------------------------------------------------------- peers

#[test]
fn pod_selector_alone_means_the_policy_namespace() {
    let m = model_with(&[(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    )]);
    assert_allowed(&m, "x/b", "x/a", "TCP/80");
    assert_denied(&m, "y/b", "x/a", "TCP/80");
    assert_denied(&m, "x/c", "x/a", "TCP/80");
}

#[test]
fn namespace_selector_alone_selects_every_pod_of_matching_namespaces() {
    let m = model_with(&[(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    )]);
    for from in ["y/a", "y/b", "y/c"] {
        assert_allowed(&m, from, "x/a", "TCP/80");
    }
    assert_denied(&m, "x/b", "x/a", "TCP/80");
    assert_denied(&m, "z/b", "x/a", "TCP/80");
}

#[test]
fn empty_namespace_selector_means_every_namespace() {
    let m = model_with(&[(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}),
    )]);
    for from in all_pods() {
        assert_allowed(&m, &from, "x/a", "TCP/80");
    }
    // Every pod, but not outside addresses: another node stays out.
    assert_denied(&m, "node/n2", "x/a", "TCP/80");
}

#[test]
fn pod_and_namespace_selector_in_one_peer_is_and() {
    let m = model_with(&[(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{
            "namespaceSelector": {"matchLabels": {"ns": "y"}},
            "podSelector": {"matchLabels": {"pod": "b"}}
        }]}]}),
    )]);
    assert_allowed(&m, "y/b", "x/a", "TCP/80");
    assert_denied(&m, "y/a", "x/a", "TCP/80");
    assert_denied(&m, "x/b", "x/a", "TCP/80");
    assert_denied(&m, "z/b", "x/a", "TCP/80");
}

#[test]
fn separate_peers_are_or() {
    let m = model_with(&[(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"ns": "y"}}},
            {"podSelector": {"matchLabels": {"pod": "b"}}}
        ]}]}),
    )]);
    assert_allowed(&m, "y/a", "x/a", "TCP/80");
    assert_allowed(&m, "y/c", "x/a", "TCP/80");
    assert_allowed(&m, "x/b", "x/a", "TCP/80");
    assert_denied(&m, "x/c", "x/a", "TCP/80");
    assert_denied(&m, "z/b", "x/a", "TCP/80");
}

#[test]
fn namespace_name_label_is_always_present() {
    let m = model_with(&[(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "z"}}}
        ]}]}),
    )]);
    assert_allowed(&m, "z/a", "x/a", "TCP/80");
    assert_denied(&m, "y/a", "x/a", "TCP/80");
}

#[test]
fn match_expressions_in() {
    let m = model_with(&[(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{
            "namespaceSelector": {},
            "podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["a", "c"]}]}
        }]}]}),
    )]);
    assert_allowed(&m, "y/a", "x/b", "TCP/80");
    assert_allowed(&m, "z/c", "x/b", "TCP/80");
    assert_denied(&m, "y/b", "x/a", "TCP/80");
}

#[test]
fn not_in_matches_missing_key() {
    // No namespace has `env`: NotIn matches them all, as it matches objects lacking the key.
    let m = model_with(&[(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{
            "namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}
        }]}]}),
    )]);
    for from in all_pods() {
        assert_allowed(&m, &from, "x/a", "TCP/80");
    }
    let m = model_with(&[(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{
            "namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["y"]}]}
        }]}]}),
    )]);
    assert_denied(&m, "y/a", "x/a", "TCP/80");
    assert_allowed(&m, "z/a", "x/a", "TCP/80");
}

#[test]
fn exists_matches_any_value_of_the_key() {
    let m = model_with(&[(
        "x",
        "p",
        json!({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "Exists"}]},
               "policyTypes": ["Ingress"]}),
    )]);
    for to in ["x/a", "x/b", "x/c"] {
        assert_denied(&m, "y/a", to, "TCP/80");
    }
}

#[test]
fn does_not_exist_matches_missing_key() {
    let m = model_with(&[(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{
            "namespaceSelector": {},
            "podSelector": {"matchExpressions": [{"key": "role", "operator": "DoesNotExist"}]}
        }]}]}),
    )]);
    assert_allowed(&m, "y/a", "x/a", "TCP/80");
    let mut m = m;
    let labels = [("pod", "a"), ("role", "db")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    m.set_labels(Kind::Pod, "y", "a", labels);
    assert_denied(&m, "y/a", "x/a", "TCP/80");
}

#[test]
fn match_labels_and_match_expressions_are_anded() {
    let m = model_with(&[(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{
            "namespaceSelector": {},
            "podSelector": {
                "matchLabels": {"pod": "b"},
                "matchExpressions": [{"key": "pod", "operator": "NotIn", "values": ["b"]}]
            }
        }]}]}),
    )]);
    // pod=b AND pod not in (b): nothing can satisfy both.
    for from in all_pods() {
        if from != "x/a" {
            assert_denied(&m, &from, "x/a", "TCP/80");
        }
    }
}

// ---------------------------------------------------------------- ipBlock

fn ipblock_policy(cidr: &str, except: &[String]) -> (&'static str, &'static str, Value) {
    (
        "x",
        "p",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"ipBlock": {"cidr": cidr, "except": except}}]}]}),
    )
}

#[test]
fn ipblock_matches_pod_ips() {
    let m = standard_model();
    let yb = ip_of(&m, "y/b");
    let m = model_with(&[ipblock_policy(&format!("{yb}/32"), &[])]);
    assert_allowed(&m, "y/b", "x/a", "TCP/80");
    assert_denied(&m, "y/c", "x/a", "TCP/80");
}

#[test]
fn ipblock_except_removes_addresses() {
    let m = standard_model();
    let yb = ip_of(&m, "y/b");
    let m = model_with(&[ipblock_policy("10.244.0.0/16", &[format!("{yb}/32")])]);
    assert_denied(&m, "y/b", "x/a", "TCP/80");
    assert_allowed(&m, "y/c", "x/a", "TCP/80");
    assert_allowed(&m, "z/a", "x/a", "TCP/80");
}

#[test]
fn except_removed_address_still_allowed_by_other_peer() {
    let m = standard_model();
    let yb = ip_of(&m, "y/b");
    let m = model_with(&[(
        "x",
        "p",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
            {"ipBlock": {"cidr": "10.244.0.0/16", "except": [format!("{yb}/32")]}},
            {"ipBlock": {"cidr": format!("{yb}/32")}}
        ]}]}),
    )]);
    assert_allowed(&m, "y/b", "x/a", "TCP/80");
    // And by a peer of another policy just the same.
    let m = model_with(&[
        ipblock_policy("10.244.0.0/16", &[format!("{yb}/32")]),
        (
            "x",
            "q",
            json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
                {"namespaceSelector": {"matchLabels": {"ns": "y"}}}
            ]}]}),
        ),
    ]);
    assert_allowed(&m, "y/b", "x/a", "TCP/80");
}

#[test]
fn ipblock_zero_prefix_covers_every_pod() {
    let m = model_with(&[ipblock_policy("0.0.0.0/0", &[])]);
    for from in all_pods() {
        assert_allowed(&m, &from, "x/a", "TCP/80");
    }
    assert_allowed(&m, "node/n2", "x/a", "TCP/80");
}

#[test]
fn ipblock_host_bits_are_masked() {
    let m = standard_model();
    let yb = ip_of(&m, "y/b");
    let o = yb.octets();
    // Written with host bits set; read as the /24 holding y/b.
    let written = format!("{}.{}.{}.77/24", o[0], o[1], o[2]);
    let m = model_with(&[ipblock_policy(&written, &[])]);
    assert_allowed(&m, "y/b", "x/a", "TCP/80");
    let reason = predict_on(&m, "y/b", "x/a", "TCP/80").reason.to_string();
    assert!(reason.contains("host bits masked"), "{reason}");
}

#[test]
fn invalid_ipblock_matches_nothing() {
    let m = model_with(&[ipblock_policy("not-a-cidr", &[])]);
    assert_denied(&m, "y/b", "x/a", "TCP/80");
    let m = model_with(&[ipblock_policy("10.244.0.0/16", &["oops".into()])]);
    assert_denied(&m, "y/b", "x/a", "TCP/80");
}

#[test]
fn egress_ipblock_matches_destination_pod_ip() {
    let m = standard_model();
    let yb = ip_of(&m, "y/b");
    let m = model_with(&[(
        "x",
        "p",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"ipBlock": {"cidr": format!("{yb}/32")}}]}]}),
    )]);
    assert_allowed(&m, "x/a", "y/b", "TCP/80");
    assert_denied(&m, "x/a", "y/c", "TCP/80");
}

// ---------------------------------------------------------------- ports

fn ports_policy(ports: Value) -> (&'static str, &'static str, Value) {
    (
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"ports": ports}]}),
    )
}

#[test]
fn missing_protocol_defaults_to_tcp() {
    let m = model_with(&[ports_policy(json!([{"port": 80}]))]);
    assert_allowed(&m, "y/a", "x/a", "TCP/80");
    assert_denied(&m, "y/a", "x/a", "UDP/80");
    assert_denied(&m, "y/a", "x/a", "SCTP/80");
}

#[test]
fn empty_ports_entry_is_tcp_on_every_port() {
    let m = model_with(&[ports_policy(json!([{}]))]);
    assert_allowed(&m, "y/a", "x/a", "TCP/80");
    assert_allowed(&m, "y/a", "x/a", "TCP/81");
    assert_denied(&m, "y/a", "x/a", "UDP/80");
    assert_denied(&m, "y/a", "x/a", "SCTP/81");
}

#[test]
fn numeric_port_opens_only_that_port() {
    let m = model_with(&[ports_policy(json!([{"port": 81, "protocol": "TCP"}]))]);
    assert_allowed(&m, "y/a", "x/a", "TCP/81");
    assert_denied(&m, "y/a", "x/a", "TCP/80");
}

#[test]
fn protocol_without_port_opens_every_port_of_it() {
    let m = model_with(&[ports_policy(json!([{"protocol": "UDP"}]))]);
    assert_allowed(&m, "y/a", "x/a", "UDP/80");
    assert_allowed(&m, "y/a", "x/a", "UDP/81");
    assert_denied(&m, "y/a", "x/a", "TCP/80");
}

#[test]
fn an_allow_for_one_protocol_never_opens_another() {
    let m = model_with(&[ports_policy(json!([{"protocol": "UDP", "port": 80}]))]);
    assert_allowed(&m, "y/a", "x/a", "UDP/80");
    assert_denied(&m, "y/a", "x/a", "TCP/80");
    assert_denied(&m, "y/a", "x/a", "SCTP/80");
    assert_denied(&m, "y/a", "x/a", "UDP/81");
}

#[test]
fn sctp_rules() {
    let m = model_with(&[ports_policy(json!([{"protocol": "SCTP", "port": 81}]))]);
    assert_allowed(&m, "y/a", "x/a", "SCTP/81");
    assert_denied(&m, "y/a", "x/a", "SCTP/80");
    assert_denied(&m, "y/a", "x/a", "TCP/81");
    assert_denied(&m, "y/a", "x/a", "UDP/81");
}

#[test]
fn endport_range() {
    let m = model_with(&[ports_policy(json!([{"port": 79, "endPort": 80}]))]);
    assert_allowed(&m, "y/a", "x/a", "TCP/80");
    assert_denied(&m, "y/a", "x/a", "TCP/81");
    let m = model_with(&[ports_policy(
        json!([{"port": 80, "endPort": 81, "protocol": "UDP"}]),
    )]);
    assert_allowed(&m, "y/a", "x/a", "UDP/80");
    assert_allowed(&m, "y/a", "x/a", "UDP/81");
    assert_denied(&m, "y/a", "x/a", "TCP/80");
}

/// x/a declares `web` on TCP 80, x/b on TCP 81 (and both plain 80 and 81 too).
fn named_port_model() -> ClusterObjects {
    let mut m = ClusterObjects::new(vec!["n1".into(), "n2".into()]);
    for ns in ["x", "y"] {
        m.apply(Object::Namespace(namespace(ns, &[("ns", ns)])));
    }
    let web = |n: u16| {
        vec![
            ("web", n, Protocol::Tcp),
            ("plain", if n == 80 { 81 } else { 80 }, Protocol::Tcp),
        ]
    };
    add_pod(&mut m, pod("x", "a", &[("pod", "a")], &web(80)), "n1");
    add_pod(&mut m, pod("x", "b", &[("pod", "b")], &web(81)), "n2");
    add_pod(
        &mut m,
        pod("y", "c", &[("pod", "c")], &[("dns", 53, Protocol::Udp)]),
        "n1",
    );
    m
}

#[test]
fn named_port_resolved_on_destination_pod() {
    let mut m = named_port_model();
    m.apply(Object::NetworkPolicy(policy(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": "web"}]}]}),
    )));
    assert_allowed(&m, "y/c", "x/a", "TCP/80");
    assert_denied(&m, "y/c", "x/a", "TCP/81");
    assert_allowed(&m, "y/c", "x/b", "TCP/81");
    assert_denied(&m, "y/c", "x/b", "TCP/80");
}

#[test]
fn named_port_resolved_on_destination_pod_for_egress_too() {
    let mut m = named_port_model();
    // y/c declares no `web`; the name must resolve on x/a and x/b, the destinations.
    m.apply(Object::NetworkPolicy(policy(
        "y",
        "p",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
               "egress": [{"ports": [{"port": "web"}]}]}),
    )));
    assert_allowed(&m, "y/c", "x/a", "TCP/80");
    assert_denied(&m, "y/c", "x/a", "TCP/81");
    assert_allowed(&m, "y/c", "x/b", "TCP/81");
    assert_denied(&m, "y/c", "x/b", "TCP/80");
}

#[test]
fn named_port_requires_matching_protocol() {
    let mut m = named_port_model();
    m.apply(Object::NetworkPolicy(policy(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": "web", "protocol": "UDP"}]}]}),
    )));
    // `web` is a TCP port: a UDP `web` opens nothing, on either protocol.
    assert_denied(&m, "y/c", "x/a", "TCP/80");
    assert_denied(&m, "y/c", "x/a", "UDP/80");
}

#[test]
fn named_port_not_declared_opens_nothing() {
    let mut m = named_port_model();
    m.apply(Object::NetworkPolicy(policy(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": "metrics"}]}]}),
    )));
    for port in ["TCP/80", "TCP/81"] {
        assert_denied(&m, "y/c", "x/a", port);
        assert_denied(&m, "y/c", "x/b", port);
    }
}

#[test]
fn peers_and_ports_of_a_rule_are_both_required() {
    let m = model_with(&[(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{
            "from": [{"podSelector": {"matchLabels": {"pod": "b"}}}],
            "ports": [{"port": 80}]
        }]}),
    )]);
    assert_allowed(&m, "x/b", "x/a", "TCP/80");
    assert_denied(&m, "x/b", "x/a", "TCP/81");
    assert_denied(&m, "x/c", "x/a", "TCP/80");
}

// ---------------------------------------------------------------- combining

#[test]
fn union_of_policies() {
    let from = |pod: &str| {
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": pod}}}], "ports": [{"port": 80}]}]})
    };
    let m = model_with(&[("x", "from-b", from("b")), ("x", "from-c", from("c"))]);
    assert_allowed(&m, "x/b", "x/a", "TCP/80");
    assert_allowed(&m, "x/c", "x/a", "TCP/80");
    assert_denied(&m, "y/a", "x/a", "TCP/80");
    // A deny-all next to them takes nothing away: there are no deny rules.
    let m = model_with(&[
        ("x", "from-b", from("b")),
        ("x", "from-c", from("c")),
        deny_all_ingress_in_x(),
    ]);
    assert_allowed(&m, "x/b", "x/a", "TCP/80");
    assert_allowed(&m, "x/c", "x/a", "TCP/80");
}

#[test]
fn rules_within_a_policy_are_ored() {
    let m = model_with(&[(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}], "ports": [{"port": 80}]},
            {"from": [{"podSelector": {"matchLabels": {"pod": "c"}}}], "ports": [{"port": 81}]}
        ]}),
    )]);
    assert_allowed(&m, "x/b", "x/a", "TCP/80");
    assert_allowed(&m, "x/c", "x/a", "TCP/81");
    // No mixing across rules: b's rule does not open 81.
    assert_denied(&m, "x/b", "x/a", "TCP/81");
    assert_denied(&m, "x/c", "x/a", "TCP/80");
}

#[test]
fn both_ends_must_allow() {
    // x/a may only send to x/c; x/b admits everyone explicitly.
    let m = model_with(&[
        (
            "x",
            "a-egress",
            json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
                   "egress": [{"to": [{"podSelector": {"matchLabels": {"pod": "c"}}}]}]}),
        ),
        (
            "x",
            "b-ingress",
            json!({"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": [{}]}),
        ),
    ]);
    // An ingress allow never overrides the client's egress deny.
    assert_denied(&m, "x/a", "x/b", "TCP/80");
    assert_allowed(&m, "x/a", "x/c", "TCP/80");
    // Egress allowed but the server's ingress denies.
    let m = model_with(&[
        (
            "x",
            "a-egress",
            json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [{}]}),
        ),
        deny_all_ingress_in_x(),
    ]);
    assert_denied(&m, "x/a", "x/b", "TCP/80");
    assert_allowed(&m, "x/a", "y/b", "TCP/80");
}

#[test]
fn stateful_replies_need_no_reverse_rule() {
    // x/a accepts nothing and y/b sends nothing, yet x/a → y/b is allowed: the replies
    // from y/b to x/a belong to the connection and need no rule of their own.
    let m = model_with(&[
        (
            "x",
            "a",
            json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress", "Egress"],
                   "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
        ),
        (
            "y",
            "b",
            json!({"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Ingress", "Egress"],
                   "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}]}]}),
        ),
    ]);
    assert_allowed(&m, "x/a", "y/b", "TCP/80");
    assert_denied(&m, "y/b", "x/a", "TCP/80");
}

// ---------------------------------------------------------------- nodes, self, engine

#[test]
fn node_to_own_pod_always_allowed() {
    let m = model_with(&[deny_all_ingress_in_x(), ipblock_policy("192.0.2.0/24", &[])]);
    let node = m.pods[&pr("x/a")]
        .spec
        .as_ref()
        .unwrap()
        .node_name
        .clone()
        .unwrap();
    assert_allowed(&m, &format!("node/{node}"), "x/a", "TCP/80");
    assert_allowed(&m, &format!("node/{node}"), "x/a", "SCTP/81");
    let other = m.nodes.iter().find(|n| **n != node).unwrap();
    assert_denied(&m, &format!("node/{other}"), "x/a", "TCP/80");
}

#[test]
fn other_node_is_an_outside_address() {
    let m = standard_model();
    let xa_node = m.pods[&pr("x/a")]
        .spec
        .as_ref()
        .unwrap()
        .node_name
        .clone()
        .unwrap();
    let other = m.nodes.iter().find(|n| **n != xa_node).unwrap().clone();
    let other_ip = node_addresses(&m)[&other];
    let from = format!("node/{other}");
    // Selectors never match a node: even "every pod in every namespace" leaves it out.
    let m1 = model_with(&[(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {}}]}]}),
    )]);
    assert_denied(&m1, &from, "x/a", "TCP/80");
    // An ipBlock holding its address does.
    let m2 = model_with(&[ipblock_policy(&format!("{other_ip}/32"), &[])]);
    assert_allowed(&m2, &from, "x/a", "TCP/80");
    // Without any policy a node reaches every pod.
    assert!(allowed(&m, &from, "x/a", "TCP/80"));
}

#[test]
fn pod_to_itself_is_always_allowed() {
    let m = model_with(&[(
        "x",
        "p",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    )]);
    let p = predict_on(&m, "x/a", "x/a", "TCP/80");
    assert_eq!(p.verdict, Verdict::Allow);
    assert!(p.reason.to_string().contains("lo"), "{}", p.reason);
    assert_denied(&m, "x/a", "x/b", "TCP/80");
}

#[test]
fn policy_engine_none_allows_everything() {
    let m = model_with(&[(
        "x",
        "p",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    )]);
    let p = predict_with(&m, PolicyEngineKind::None, "x/a", "x/b", "TCP/80");
    assert_eq!(p.verdict, Verdict::Allow);
    assert!(p.short().contains("none"), "{}", p.short());
    assert_denied(&m, "x/a", "x/b", "TCP/80");
}

#[test]
fn unknown_pod_is_denied_without_panicking() {
    let m = standard_model();
    assert_denied(&m, "x/nope", "x/a", "TCP/80");
    assert_denied(&m, "x/a", "q/a", "TCP/80");
    assert_denied(&m, "node/n9", "x/a", "TCP/80");
}

// ---------------------------------------------------------------- explanations

fn resolve_policies(m: &ClusterObjects) -> Vec<crate::policy::ResolvedPolicy> {
    crate::policy::resolve(m).policies
}

#[test]
fn explains_default_deny() {
    let m = model_with(&[deny_all_ingress_in_x()]);
    let p = predict_on(&m, "x/b", "x/a", "TCP/80");
    let text = p.reason.to_string();
    assert!(text.starts_with("x/b → x/a on TCP/80: DENIED."), "{text}");
    assert!(
        text.contains("Egress: x/b is not selected by any policy"),
        "{text}"
    );
    assert!(
        text.contains("x/default-deny-ingress (podSelector {} selects every pod in x"),
        "{text}"
    );
    assert!(text.contains("ingress list is empty"), "{text}");
    assert!(text.contains("the ingress of x/a blocks it"), "{text}");
    assert!(text.lines().count() >= 4, "{text}");
    let short = p.short();
    assert!(short.starts_with("deny: egress open"), "{short}");
    assert!(short.contains("x/default-deny-ingress"), "{short}");
    assert!(!short.contains('\n'));
}

#[test]
fn explains_the_allowing_rule_peer_and_port() {
    let m = model_with(&[(
        "x",
        "allow-b",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{
            "from": [
                {"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {"matchLabels": {"pod": "c"}}},
                {"podSelector": {"matchLabels": {"pod": "b"}}}
            ],
            "ports": [{"port": 81}, {"port": "serve-80-tcp"}]
        }]}),
    )]);
    let p = predict_on(&m, "x/b", "x/a", "TCP/80");
    let text = p.reason.to_string();
    assert_eq!(p.verdict, Verdict::Allow, "{text}");
    assert!(
        text.contains("ingress[0].from[1] (pods with pod=b in x)"),
        "{text}"
    );
    assert!(
        text.contains("ports[1] TCP/serve-80-tcp (named port) = TCP/80"),
        "{text}"
    );
    assert!(
        p.short()
            .contains("allowed by x/allow-b ingress[0].from[1]"),
        "{}",
        p.short()
    );
    // And a miss says which peer failed and why.
    let p = predict_on(&m, "z/c", "x/a", "TCP/80");
    let text = p.reason.to_string();
    assert!(
        text.contains("from[0] (pods with pod=c in namespaces with ns=y) does not include z/c"),
        "{text}"
    );
    assert!(
        text.contains("a podSelector alone only looks in x"),
        "{text}"
    );
    // A port miss names the entries.
    let p = predict_on(&m, "x/b", "x/a", "UDP/80");
    let text = p.reason.to_string();
    assert!(
        text.contains("no ports entry opens it: ports[0] TCP/81"),
        "{text}"
    );
}

#[test]
fn explains_an_except() {
    let m = standard_model();
    let yb = ip_of(&m, "y/b");
    let m = model_with(&[ipblock_policy("10.244.0.0/16", &[format!("{yb}/32")])]);
    let text = predict_on(&m, "y/b", "x/a", "TCP/80").reason.to_string();
    assert!(
        text.contains(&format!(
            "covers {yb} (y/b) but its except {yb}/32 removes it"
        )),
        "{text}"
    );
}

#[test]
fn explains_egress_side_and_defaulted_types() {
    let m = model_with(&[(
        "x",
        "egress-to-c",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "egress": [{"to": [{"podSelector": {"matchLabels": {"pod": "c"}}}]}]}),
    )]);
    let text = predict_on(&m, "x/a", "x/b", "TCP/80").reason.to_string();
    assert!(
        text.contains("Egress: x/a is isolated for egress by x/egress-to-c"),
        "{text}"
    );
    assert!(
        text.contains("policyTypes omitted: [Ingress, Egress] by default"),
        "{text}"
    );
    assert!(text.contains("the egress of x/a blocks it"), "{text}");
}

// ---------------------------------------------------------------- node failure

/// Predicts one cell with the nodes in `down` cut off from the underlay.
fn predict_down(
    objects: &ClusterObjects,
    engine: PolicyEngineKind,
    down: &[&str],
    from: &str,
    to: &str,
) -> Prediction {
    let addresses = node_addresses(objects);
    let ctx = OracleContext::new(objects, engine, &addresses)
        .with_down_nodes(down.iter().map(|n| n.to_string()).collect());
    predict(
        &ctx,
        &from.parse().expect("peer"),
        &Peer::Pod(pr(to)),
        "TCP/80".parse().expect("port"),
    )
}

#[test]
fn a_down_node_is_unreachable_from_other_nodes_both_ways() {
    let m = standard_model();
    // x/a runs on n1, x/b on n2.
    for (from, to) in [("x/a", "x/b"), ("x/b", "x/a"), ("node/n1", "x/b")] {
        let p = predict_down(&m, PolicyEngineKind::Iptables, &["n2"], from, to);
        assert_eq!(p.verdict, Verdict::Deny, "{from} -> {to}:\n{}", p.reason);
        assert_eq!(
            p.reason.case,
            Case::NodeUnreachable { node: "n2".into() },
            "{from} -> {to}"
        );
        assert_eq!(
            p.short(),
            "deny: n2's underlay link is down: nothing from other nodes reaches it; traffic inside n2 still flows"
        );
    }
    let text = predict_down(&m, PolicyEngineKind::Iptables, &["n2"], "x/a", "x/b")
        .reason
        .to_string();
    assert!(text.contains("x/a → x/b on TCP/80: DENIED."), "{text}");
    assert!(text.contains("(dropped)"), "{text}");
}

#[test]
fn traffic_inside_a_down_node_and_between_the_others_still_flows() {
    let m = standard_model();
    // x/b and y/a both run on n2; x/a and x/c on n1.
    for (from, to) in [
        ("x/b", "y/a"),
        ("node/n2", "x/b"),
        ("x/a", "x/c"),
        ("x/b", "x/b"),
    ] {
        let p = predict_down(&m, PolicyEngineKind::Iptables, &["n2"], from, to);
        assert_eq!(p.verdict, Verdict::Allow, "{from} -> {to}:\n{}", p.reason);
        assert!(
            !matches!(p.reason.case, Case::NodeUnreachable { .. }),
            "{from} -> {to}"
        );
    }
    // Nothing down: the cross-node cell is an ordinary checked one.
    let p = predict_down(&m, PolicyEngineKind::Iptables, &[], "x/a", "x/b");
    assert!(
        matches!(p.reason.case, Case::Checked { .. }),
        "{}",
        p.reason
    );
}

#[test]
fn a_down_node_is_cut_off_whatever_the_policies_or_the_engine() {
    // Without enforcement every cell is allowed, except across the dead link.
    let m = standard_model();
    let p = predict_down(&m, PolicyEngineKind::None, &["n2"], "x/a", "x/b");
    assert_eq!(p.reason.case, Case::NodeUnreachable { node: "n2".into() });
    let p = predict_down(&m, PolicyEngineKind::None, &["n2"], "x/a", "x/c");
    assert_eq!(p.reason.case, Case::NoEnforcement);
    // A policy that would deny anyway is not what decides: the link is.
    let m = model_with(&[deny_all_ingress_in_x()]);
    let p = predict_down(&m, PolicyEngineKind::Iptables, &["n1"], "x/b", "x/a");
    assert_eq!(p.reason.case, Case::NodeUnreachable { node: "n1".into() });
    // On the same node the policy still decides.
    let p = predict_down(&m, PolicyEngineKind::Iptables, &["n1"], "x/c", "x/a");
    assert!(
        matches!(p.reason.case, Case::Checked { .. }),
        "{}",
        p.reason
    );
    assert_eq!(p.verdict, Verdict::Deny);
}
