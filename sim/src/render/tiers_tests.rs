//! The enforcer's rules with cluster-wide policy tiers: a snapshot of a node's chains
//! (Admin jumps before the NetworkPolicy rules, Baseline before the default), and
//! checks of the layout a packet's fate depends on.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde_json::json;

use crate::cluster::DenyStyle;
use crate::cluster_policy::from_objects;
use crate::objects::{ClusterObjects, Object};
use crate::policy::fixtures::{add_cnp, add_pod, namespace, pod, policy};
use crate::policy::{self};
use crate::protocol::Protocol;

use super::*;

fn ctx() -> RenderContext {
    RenderContext {
        pod_cidr: "10.244.0.0/16".parse().unwrap(),
        service_cidr: "10.96.0.0/12".parse().unwrap(),
        deny: DenyStyle::Reject,
        node_ip: Ipv4Addr::new(192, 168, 200, 11),
    }
}

/// x/a (`http` = TCP/80) on n1, y/c on n2; namespaces labelled `ns=NAME`.
fn cluster() -> ClusterObjects {
    let mut o = ClusterObjects::new(vec!["n1".into(), "n2".into()]);
    for ns in ["x", "y"] {
        o.apply(Object::Namespace(namespace(ns, &[("ns", ns)])));
    }
    add_pod(
        &mut o,
        pod("x", "a", &[("pod", "a")], &[("http", 80, Protocol::Tcp)]),
        "n1",
    );
    add_pod(&mut o, pod("y", "c", &[("pod", "c")], &[]), "n2");
    o
}

fn render(o: &ClusterObjects, node: &str) -> NodeRules {
    let (policies, _) = from_objects::policies(o);
    let view = from_objects::view(o, &|n| match n {
        "n1" => vec![Ipv4Addr::new(192, 168, 200, 11)],
        _ => vec![Ipv4Addr::new(192, 168, 200, 12)],
    });
    let tiers = ClusterTiers::new(&policies, &view);
    render_node_tiered(&policy::resolve(o), &tiers, node, &ctx())
}

fn tiered() -> ClusterObjects {
    let mut o = cluster();
    o.apply(Object::NetworkPolicy(policy(
        "x",
        "allow-web",
        json!({"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"ports": [{"port": 80}]}]}),
    )));
    add_cnp(
        &mut o,
        "guard-x",
        json!({"tier": "Admin", "priority": 10,
               "subject": {"namespaces": {"matchLabels": {"ns": "x"}}},
               "ingress": [
                   {"name": "pass-y-http", "action": "Pass",
                    "from": [{"namespaces": {"matchLabels": {"ns": "y"}}}],
                    "protocols": [{"destinationNamedPort": "http"}]},
                   {"name": "deny-y", "action": "Deny",
                    "from": [{"namespaces": {"matchLabels": {"ns": "y"}}}]}],
               "egress": [
                   {"name": "accept-nodes", "action": "Accept", "to": [{"nodes": {}}]},
                   {"name": "accept-net", "action": "Accept", "to": [{"networks": ["192.0.2.0/24"]}],
                    "protocols": [{"tcp": {"destinationPort": {"range": {"start": 8000, "end": 8999}}}}]}]}),
    );
    add_cnp(
        &mut o,
        "baseline",
        json!({"tier": "Baseline", "priority": 1, "subject": {"namespaces": {}},
               "egress": [{"name": "deny-all", "action": "Deny", "to": [{"namespaces": {}}]}]}),
    );
    o
}

#[test]
fn tiers_around_network_policy() {
    insta::assert_snapshot!(render(&tiered(), "n1").normalised());
}

#[test]
fn admin_jumps_come_before_the_network_policy_rules_and_baseline_before_the_default() {
    let rules = render(&tiered(), "n1");
    let fw = names::pod_chain("x", "a");
    let lines = &rules.ruleset.chains[&fw];
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {lines:#?}"))
    };
    let admin = at("Admin: cnp/guard-x priority 10 ingress");
    let np = at("x/allow-web ingress");
    assert!(admin < np);
    // x/a's egress is isolated by no NetworkPolicy: the Baseline, then the default.
    let baseline = at("Baseline: cnp/baseline priority 1 egress");
    let default = at("default egress");
    assert!(baseline < default);
    assert!(lines.iter().any(|l| l.contains("0x0/0x50000")));
}

#[test]
fn each_rule_is_commented_with_tier_policy_and_rule_and_named_ports_resolve_on_the_destination() {
    let rules = render(&tiered(), "n1");
    let chain = names::cluster_policy_chain("cnp", "guard-x", policy::Direction::Ingress);
    let lines = &rules.ruleset.chains[&chain];
    assert!(
        lines.iter().any(|l| l.contains("rule \\\"pass-y-http\\\"")
            && l.contains("-d 10.244.1.10/32")
            && l.contains("--dport 80")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("rule \\\"deny-y\\\"")
            && l.contains("REJECT --reject-with icmp-admin-prohibited")),
        "{lines:#?}"
    );
}

#[test]
fn without_cluster_policies_the_rules_are_network_policys_alone() {
    let mut o = cluster();
    o.apply(Object::NetworkPolicy(policy(
        "x",
        "deny",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    )));
    let plain = render_node(&policy::resolve(&o), "n1", &ctx());
    assert_eq!(render(&o, "n1"), plain);
    assert!(!plain.normalised().contains("KUBE-CNP-"));
}

#[test]
fn a_change_to_one_policy_rewrites_only_its_own_chain() {
    let before = render(&tiered(), "n1");
    let mut o = tiered();
    add_cnp(
        &mut o,
        "baseline",
        json!({"tier": "Baseline", "priority": 1, "subject": {"namespaces": {}},
               "egress": [{"name": "deny-all-now-accept", "action": "Accept", "to": [{"namespaces": {}}]}]}),
    );
    let after = render(&o, "n1");
    let changed: Vec<&String> = after
        .ruleset
        .chains
        .iter()
        .filter(|(name, lines)| before.ruleset.chains.get(*name) != Some(lines))
        .map(|(name, _)| name)
        .collect();
    let baseline = names::cluster_policy_chain("cnp", "baseline", policy::Direction::Egress);
    assert_eq!(changed, vec![&baseline]);
}

/// The sets a chain's rules match.
fn sets_matched(rules: &NodeRules, chain: &str) -> BTreeSet<String> {
    rules.ruleset.chains[chain]
        .iter()
        .filter_map(|l| l.split("--match-set ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn rules_naming_the_same_peer_share_one_set_however_it_is_written() {
    let mut o = tiered();
    // A third rule names y again, as an expression rather than a label.
    add_cnp(
        &mut o,
        "also-y",
        json!({"tier": "Admin", "priority": 20,
               "subject": {"namespaces": {"matchLabels": {"ns": "x"}}},
               "ingress": [{"name": "accept-y", "action": "Accept",
                            "from": [{"namespaces": {"matchExpressions": [
                                {"key": "ns", "operator": "In", "values": ["y"]}]}}]}]}),
    );
    let rules = render(&o, "n1");
    let guard = names::cluster_policy_chain("cnp", "guard-x", policy::Direction::Ingress);
    let also = names::cluster_policy_chain("cnp", "also-y", policy::Direction::Ingress);
    let shared = sets_matched(&rules, &guard);
    assert_eq!(shared.len(), 1, "{shared:?}");
    assert_eq!(sets_matched(&rules, &also), shared);
    // Another peer is another set.
    let egress = names::cluster_policy_chain("cnp", "guard-x", policy::Direction::Egress);
    assert!(sets_matched(&rules, &egress).is_disjoint(&shared));
}

#[test]
fn accept_and_pass_go_to_one_marking_chain_each() {
    let rules = render(&tiered(), "n1");
    let ingress = names::cluster_policy_chain("cnp", "guard-x", policy::Direction::Ingress);
    let pass = &rules.ruleset.chains[&ingress][0];
    assert!(
        pass.ends_with(&format!("-g {}", names::CLUSTER_PASS_CHAIN)),
        "{pass}"
    );
    for (chain, mark) in [
        (names::CLUSTER_ACCEPT_CHAIN, "0x10000/0x10000"),
        (names::CLUSTER_PASS_CHAIN, "0x40000/0x40000"),
    ] {
        let lines = &rules.ruleset.chains[chain];
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(lines[0].ends_with(&format!("-j MARK --set-xmark {mark}")));
    }
}

#[test]
fn a_pod_joining_a_peer_refills_its_set_and_rewrites_no_chain() {
    let before = render(&tiered(), "n1");
    let mut o = tiered();
    // A new pod in y, on the other node: guard-x's peer `ns=y` now has two members.
    add_pod(&mut o, pod("y", "d", &[("pod", "d")], &[]), "n2");
    let after = render(&o, "n1");
    let scripts = after.apply_over(&before.ruleset);
    assert!(scripts.iptables.is_empty(), "{}", scripts.iptables);
    let guard = names::cluster_policy_chain("cnp", "guard-x", policy::Direction::Ingress);
    let set = sets_matched(&after, &guard).into_iter().next().unwrap();
    assert!(
        scripts
            .ipset_refill
            .contains(&format!("swap {} {set}", names::temp_set(&set))),
        "{}",
        scripts.ipset_refill
    );
}
