//! The oracle with cluster-wide policies, one test per rule of the tiers as the
//! network-policy-api documents them, on the standard x/y/z × a/b/c model.

use serde_json::{Value, json};

use super::*;
use crate::matrix::Verdict;
use crate::policy::fixtures::{add_cnp, model_with, node_addresses, pr};

/// Adds a ClusterNetworkPolicy with `spec` to `objects`.
fn predict_tiers(
    objects: &ClusterObjects,
    engine: PolicyEngineKind,
    from: &str,
    to: &str,
) -> Prediction {
    let addresses = node_addresses(objects);
    let ctx = OracleContext::new(objects, engine, &addresses);
    predict(
        &ctx,
        &Peer::Pod(pr(from)),
        &Peer::Pod(pr(to)),
        "TCP/80".parse().expect("port"),
    )
}

#[track_caller]
fn verdict(objects: &ClusterObjects, from: &str, to: &str) -> Verdict {
    predict_tiers(objects, PolicyEngineKind::Iptables, from, to).verdict
}

fn ns(name: &str) -> Value {
    json!({"namespaces": {"matchLabels": {"ns": name}}})
}

fn admin(priority: u16, subject_ns: &str, rules: Value) -> Value {
    json!({
        "tier": "Admin",
        "priority": priority,
        "subject": ns(subject_ns),
        "ingress": rules,
    })
}

fn allow_all_ingress_in_x() -> (&'static str, &'static str, Value) {
    (
        "x",
        "allow-all",
        json!({"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]}),
    )
}

fn deny_all_ingress_in_x() -> (&'static str, &'static str, Value) {
    (
        "x",
        "deny-all",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    )
}

#[test]
fn admin_deny_is_final_whatever_network_policy_says() {
    let mut m = model_with(&[allow_all_ingress_in_x()]);
    add_cnp(
        &mut m,
        "deny-y",
        admin(
            10,
            "x",
            json!([{"name": "deny-from-y", "action": "Deny", "from": [ns("y")]}]),
        ),
    );
    let p = predict_tiers(&m, PolicyEngineKind::Iptables, "y/a", "x/a");
    assert_eq!(p.verdict, Verdict::Deny, "{}", p.reason);
    assert!(
        p.short()
            .contains("Admin: cnp/deny-y priority 10 rule \"deny-from-y\" → Deny"),
        "{}",
        p.short()
    );
    // Not a peer of the rule: on to the NetworkPolicy tier, which allows.
    assert_eq!(verdict(&m, "z/a", "x/a"), Verdict::Allow);
}

#[test]
fn admin_accept_is_final_over_a_network_policy_that_isolates() {
    let mut m = model_with(&[deny_all_ingress_in_x()]);
    add_cnp(
        &mut m,
        "accept-y",
        admin(
            10,
            "x",
            json!([{"name": "accept-y", "action": "Accept", "from": [ns("y")]}]),
        ),
    );
    assert_eq!(verdict(&m, "y/a", "x/a"), Verdict::Allow);
    assert_eq!(verdict(&m, "z/a", "x/a"), Verdict::Deny);
}

#[test]
fn pass_skips_the_rest_of_the_admin_tier_and_the_network_policy_tier_decides() {
    let mut m = model_with(&[deny_all_ingress_in_x()]);
    add_cnp(
        &mut m,
        "a-pass",
        admin(
            5,
            "x",
            json!([{"name": "pass-y", "action": "Pass", "from": [ns("y")]}]),
        ),
    );
    // Would accept, but comes after the Pass (higher number): skipped.
    add_cnp(
        &mut m,
        "b-accept",
        admin(
            10,
            "x",
            json!([{"name": "accept-y", "action": "Accept", "from": [ns("y")]}]),
        ),
    );
    let p = predict_tiers(&m, PolicyEngineKind::Iptables, "y/a", "x/a");
    assert_eq!(p.verdict, Verdict::Deny, "{}", p.reason);
    let short = p.short();
    assert!(
        short.contains(
            "Admin: cnp/a-pass priority 5 rule \"pass-y\" → Pass; NetworkPolicy: x/deny-all → deny"
        ),
        "{short}"
    );
    assert!(!short.contains("b-accept"), "{short}");
}

#[test]
fn baseline_is_consulted_only_when_no_network_policy_selects_the_pod() {
    let mut m = model_with(&[(
        "x",
        "allow-y",
        json!({"podSelector": {}, "policyTypes": ["Ingress"],
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    )]);
    add_cnp(
        &mut m,
        "default-deny",
        json!({"tier": "Baseline", "priority": 100, "subject": {"namespaces": {}},
               "ingress": [{"name": "deny-all", "action": "Deny", "from": [{"namespaces": {}}]}]}),
    );
    // x is selected by a NetworkPolicy: it decides, both ways.
    assert_eq!(verdict(&m, "y/a", "x/a"), Verdict::Allow);
    assert_eq!(verdict(&m, "z/a", "x/a"), Verdict::Deny);
    // y is not: the baseline denies.
    let p = predict_tiers(&m, PolicyEngineKind::Iptables, "x/a", "y/a");
    assert_eq!(p.verdict, Verdict::Deny, "{}", p.reason);
    assert!(
        p.short()
            .contains("Baseline: cnp/default-deny priority 100 rule \"deny-all\" → Deny"),
        "{}",
        p.short()
    );
}

#[test]
fn lower_priority_number_is_evaluated_first() {
    let mut m = model_with(&[]);
    add_cnp(
        &mut m,
        "accept",
        admin(
            20,
            "x",
            json!([{"name": "accept-y", "action": "Accept", "from": [ns("y")]}]),
        ),
    );
    add_cnp(
        &mut m,
        "deny",
        admin(
            10,
            "x",
            json!([{"name": "deny-y", "action": "Deny", "from": [ns("y")]}]),
        ),
    );
    assert_eq!(verdict(&m, "y/a", "x/a"), Verdict::Deny);
}

#[test]
fn rules_of_a_policy_are_evaluated_in_order_first_match_wins() {
    let mut m = model_with(&[]);
    add_cnp(
        &mut m,
        "ordered",
        admin(
            10,
            "x",
            json!([
                {"name": "accept-y", "action": "Accept", "from": [ns("y")]},
                {"name": "deny-all", "action": "Deny", "from": [{"namespaces": {}}]},
            ]),
        ),
    );
    assert_eq!(verdict(&m, "y/a", "x/a"), Verdict::Allow);
    assert_eq!(verdict(&m, "z/a", "x/a"), Verdict::Deny);
}

#[test]
fn egress_accept_still_needs_the_destinations_ingress() {
    let mut m = model_with(&[deny_all_ingress_in_x()]);
    add_cnp(
        &mut m,
        "y-out",
        json!({"tier": "Admin", "priority": 10, "subject": ns("y"),
               "egress": [{"name": "accept-all", "action": "Accept", "to": [{"namespaces": {}}]}]}),
    );
    let p = predict_tiers(&m, PolicyEngineKind::Iptables, "y/a", "x/a");
    assert_eq!(p.verdict, Verdict::Deny, "{}", p.reason);
    assert_eq!(verdict(&m, "y/a", "z/a"), Verdict::Allow);
}

#[test]
fn same_priority_policies_that_disagree_are_undefined_not_predicted() {
    let mut m = model_with(&[]);
    add_cnp(
        &mut m,
        "one",
        admin(
            10,
            "x",
            json!([{"name": "accept-y", "action": "Accept", "from": [ns("y")]}]),
        ),
    );
    add_cnp(
        &mut m,
        "two",
        admin(
            10,
            "x",
            json!([{"name": "deny-y", "action": "Deny", "from": [ns("y")]}]),
        ),
    );
    let p = predict_tiers(&m, PolicyEngineKind::Iptables, "y/a", "x/a");
    assert!(p.reason.undefined(), "{}", p.reason);
    assert!(p.short().starts_with("undefined:"), "{}", p.short());
    assert!(p.reason.to_string().contains("UNDEFINED"), "{}", p.reason);
    // A cell only one of them matches is defined.
    let q = predict_tiers(&m, PolicyEngineKind::Iptables, "z/a", "x/a");
    assert!(!q.reason.undefined());
    assert_eq!(q.verdict, Verdict::Allow);
    // The scenario's notes name both policies.
    let notes = crate::cluster_policy::from_objects::notes(&m);
    assert!(
        notes
            .iter()
            .any(|n| n.contains("cnp/one") && n.contains("cnp/two")),
        "{notes:?}"
    );
}

#[test]
fn policy_engine_none_ignores_the_tiers() {
    let mut m = model_with(&[]);
    add_cnp(
        &mut m,
        "deny-y",
        admin(
            10,
            "x",
            json!([{"name": "deny-from-y", "action": "Deny", "from": [ns("y")]}]),
        ),
    );
    let p = predict_tiers(&m, PolicyEngineKind::None, "y/a", "x/a");
    assert_eq!(p.verdict, Verdict::Allow, "{}", p.reason);
}

#[test]
fn without_cluster_policies_the_explanation_is_unchanged() {
    let m = model_with(&[deny_all_ingress_in_x()]);
    let p = predict_tiers(&m, PolicyEngineKind::Iptables, "y/a", "x/a");
    assert!(!p.short().contains("Admin:"), "{}", p.short());
    assert!(!p.reason.to_string().contains("tiers"), "{}", p.reason);
}

#[test]
fn the_walkthrough_lists_the_tiers_in_evaluation_order() {
    let mut m = model_with(&[deny_all_ingress_in_x()]);
    add_cnp(
        &mut m,
        "pass-y",
        admin(
            10,
            "x",
            json!([{"name": "pass", "action": "Pass", "from": [ns("y")]}]),
        ),
    );
    let text = predict_tiers(&m, PolicyEngineKind::Iptables, "y/a", "x/a")
        .reason
        .to_string();
    let admin_at = text.find("1. Admin: cnp/pass-y").expect(&text);
    let np_at = text
        .find("2. NetworkPolicy: x/deny-all → deny")
        .expect(&text);
    assert!(admin_at < np_at, "{text}");
    assert!(text.contains("The NetworkPolicy tier in detail"), "{text}");
}

/// The standard model plus `x/web` on n1 (`app=web`, 8080 with hostPort 30080), portmap
/// with `snat`, and the nodes' addresses: a context for `node/n1` targets.
fn host_port_model() -> ClusterObjects {
    let mut m = model_with(&[]);
    let web = serde_json::from_value(json!({
        "metadata": {"namespace": "x", "name": "web", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "knetlab",
            "ports": [{"containerPort": 8080, "hostPort": 30080}]}]}
    }))
    .expect("a pod");
    crate::policy::fixtures::add_pod(&mut m, web, "n1");
    m
}

fn predict_host_port(objects: &ClusterObjects, from: &str) -> Prediction {
    let addresses = node_addresses(objects);
    let host_ports = HostPorts {
        portmap: Some(Portmap { snat: true }),
        nodes: addresses
            .iter()
            .enumerate()
            .map(|(i, (n, underlay))| {
                let bridge = std::net::Ipv4Addr::new(10, 244, i as u8 + 1, 1);
                (
                    n.clone(),
                    NodeAddresses {
                        underlay: *underlay,
                        bridge,
                    },
                )
            })
            .collect(),
    };
    let ctx = OracleContext::new(objects, PolicyEngineKind::Iptables, &addresses)
        .with_hosts([("pc".to_string(), std::net::Ipv4Addr::new(203, 0, 113, 10))].into())
        .with_host_ports(host_ports);
    predict(
        &ctx,
        &from.parse().expect("a peer"),
        &"node/n1".parse().expect("a node"),
        "TCP/30080".parse().expect("port"),
    )
}

/// The model's pods of namespace `ns` on `node`.
fn pods_on(objects: &ClusterObjects, ns: &str, node: &str) -> Vec<String> {
    objects
        .pods
        .iter()
        .filter(|(r, p)| r.namespace == ns && crate::objects::pod_node(p) == Some(node))
        .map(|(r, _)| r.to_string())
        .collect()
}

#[test]
fn a_host_port_connection_is_judged_by_the_tiers_at_the_pod_on_the_real_client() {
    let mut m = host_port_model();
    add_cnp(
        &mut m,
        "web-denies-y",
        json!({
            "tier": "Admin",
            "priority": 10,
            "subject": {"pods": {"namespaceSelector": {"matchLabels": {"ns": "x"}},
                                 "podSelector": {"matchLabels": {"app": "web"}}}},
            "ingress": [{"name": "deny-y", "action": "Deny", "from": [ns("y")]}],
        }),
    );
    // y's pods, on either node (a pod of n1 is masqueraded for web's socket, not for
    // the filter): the Admin Deny at web, on the container port.
    for from in ["y/a", "y/b", "y/c"] {
        let p = predict_host_port(&m, from);
        assert_eq!(p.verdict, Verdict::Deny, "{from}: {}", p.reason);
        let text = p.reason.to_string();
        assert!(
            text.contains(r#"Admin: cnp/web-denies-y priority 10 rule "deny-y" → Deny"#),
            "{from}: {text}"
        );
    }
    // z's pods, a node and a host outside: no rule matches them.
    for from in ["z/a", "z/b", "node/n2", "host/pc"] {
        let p = predict_host_port(&m, from);
        assert_eq!(p.verdict, Verdict::Allow, "{from}: {}", p.reason);
    }
}

#[test]
fn egress_to_nodes_denies_another_nodes_host_port_but_not_the_own_nodes() {
    let mut m = host_port_model();
    add_cnp(
        &mut m,
        "y-not-to-nodes",
        json!({
            "tier": "Admin",
            "priority": 10,
            "subject": ns("y"),
            "egress": [{"name": "deny-nodes", "action": "Deny", "to": [
                {"nodes": {"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "Exists"}]}}]}],
        }),
    );
    let (home, away) = (pods_on(&m, "y", "n1"), pods_on(&m, "y", "n2"));
    assert!(!home.is_empty() && !away.is_empty(), "{home:?} {away:?}");
    // On n1 portmap's DNAT comes before the filter: the egress goes to web, no node.
    for from in &home {
        let p = predict_host_port(&m, from);
        assert_eq!(p.verdict, Verdict::Allow, "{from}: {}", p.reason);
    }
    // From n2 the packet still goes to n1's address when n2's filter sees it.
    for from in &away {
        let p = predict_host_port(&m, from);
        assert_eq!(p.verdict, Verdict::Deny, "{from}: {}", p.reason);
        assert!(
            p.reason
                .to_string()
                .contains(r#"Admin: cnp/y-not-to-nodes priority 10 rule "deny-nodes" → Deny"#),
            "{from}: {}",
            p.reason
        );
    }
}
