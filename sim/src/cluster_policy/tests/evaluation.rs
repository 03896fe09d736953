use serde_json::json;

use super::{cluster, cnp};
use crate::cluster_policy::evaluate::{
    Connection, Direction, Endpoint, NetworkPolicyTier, Verdict, evaluate,
};
use crate::cluster_policy::{ClusterPolicy, same_priority_overlaps};
use crate::protocol::Protocol;

fn pod(ns: &str, name: &str) -> Endpoint {
    Endpoint::Pod {
        namespace: ns.into(),
        name: name.into(),
    }
}

fn conn(source: Endpoint, to: (&str, &str), protocol: Protocol, port: u16) -> Connection {
    Connection {
        source,
        destination: pod(to.0, to.1),
        protocol,
        port,
    }
}

/// draco → harry on TCP/80, no NetworkPolicy.
fn draco_to_harry() -> Connection {
    conn(
        pod("slytherin", "draco"),
        ("gryffindor", "harry"),
        Protocol::Tcp,
        80,
    )
}

fn no_np(_: Direction) -> NetworkPolicyTier {
    NetworkPolicyTier::NotSelected
}

fn verdict(policies: &[ClusterPolicy], c: &Connection) -> Verdict {
    evaluate(policies, &cluster(), c, no_np).verdict
}

/// An ingress policy on gryffindor from slytherin with `action`.
fn from_slytherin(name: &str, tier: &str, priority: u16, action: &str) -> ClusterPolicy {
    cnp(
        name,
        json!({"tier": tier, "priority": priority,
            "subject": {"namespaces": {"matchLabels": {"house": "gryffindor"}}},
            "ingress": [{"name": format!("{}-from-slytherin", action.to_lowercase()), "action": action,
                "from": [{"namespaces": {"matchLabels": {"house": "slytherin"}}}]}]}),
    )
}

#[test]
fn no_policy_means_default_allow() {
    let e = evaluate(&[], &cluster(), &draco_to_harry(), no_np);
    assert_eq!(e.verdict, Verdict::Allow);
    assert_eq!(
        e.ingress.to_string(),
        "ingress: allow (Admin: no rule matches; NetworkPolicy: no policy selects the pod; \
         Baseline: no rule matches; default: allow)"
    );
}

#[test]
fn admin_policies_apply_by_priority_lower_first() {
    let deny = from_slytherin("deny", "Admin", 20, "Deny");
    let accept = from_slytherin("accept", "Admin", 10, "Accept");
    assert_eq!(
        verdict(&[deny.clone(), accept], &draco_to_harry()),
        Verdict::Allow
    );
    let accept_later = from_slytherin("accept", "Admin", 30, "Accept");
    assert_eq!(
        verdict(&[deny, accept_later], &draco_to_harry()),
        Verdict::Deny
    );
}

#[test]
fn rules_apply_in_order_first_match_wins() {
    let p = |first: &str, second: &str| {
        cnp(
            "ordered",
            json!({"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
            "ingress": [
                {"name": "one", "action": first, "from": [{"namespaces": {}}]},
                {"name": "two", "action": second, "from": [{"namespaces": {}}]},
            ]}),
        )
    };
    assert_eq!(
        verdict(&[p("Deny", "Accept")], &draco_to_harry()),
        Verdict::Deny
    );
    assert_eq!(
        verdict(&[p("Accept", "Deny")], &draco_to_harry()),
        Verdict::Allow
    );
}

#[test]
fn pass_skips_the_rest_of_the_admin_tier_and_the_network_policy_tier_decides() {
    let pass = from_slytherin("deny-slytherin", "Admin", 10, "Pass");
    let deny = from_slytherin("deny-later", "Admin", 20, "Deny");
    let e = evaluate(&[pass, deny], &cluster(), &draco_to_harry(), |d| match d {
        Direction::Ingress => NetworkPolicyTier::Allow {
            by: "gryffindor/allow-web".into(),
        },
        Direction::Egress => NetworkPolicyTier::NotSelected,
    });
    assert_eq!(e.verdict, Verdict::Allow);
    assert_eq!(
        e.ingress
            .steps
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [
            "Admin: cnp/deny-slytherin priority 10 rule \"pass-from-slytherin\" → Pass",
            "NetworkPolicy: gryffindor/allow-web → allow",
        ]
    );
}

#[test]
fn baseline_applies_only_when_no_network_policy_selects_the_pod() {
    let baseline = from_slytherin("baseline-deny", "Baseline", 1, "Deny");
    assert_eq!(
        verdict(std::slice::from_ref(&baseline), &draco_to_harry()),
        Verdict::Deny
    );
    let np_allows = |_: Direction| NetworkPolicyTier::Allow {
        by: "gryffindor/allow".into(),
    };
    let e = evaluate(&[baseline], &cluster(), &draco_to_harry(), np_allows);
    assert_eq!(e.verdict, Verdict::Allow);
}

#[test]
fn admin_decisions_override_network_policy() {
    let accept = from_slytherin("accept", "Admin", 1, "Accept");
    let np_denies = |_: Direction| NetworkPolicyTier::Deny {
        by: "gryffindor/default-deny".into(),
    };
    let e = evaluate(&[accept], &cluster(), &draco_to_harry(), np_denies);
    assert_eq!(e.ingress.verdict, Verdict::Allow);
    // Egress from draco is judged by draco's NetworkPolicies, which deny here.
    assert_eq!(e.egress.verdict, Verdict::Deny);
    assert_eq!(e.verdict, Verdict::Deny, "both directions must allow");
}

#[test]
fn egress_is_judged_at_the_source() {
    let deny_egress = cnp(
        "no-egress",
        json!({"tier": "Admin", "priority": 1,
        "subject": {"namespaces": {"matchLabels": {"house": "slytherin"}}},
        "egress": [{"action": "Deny", "to": [{"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "web"}}}}]}]}),
    );
    let e = evaluate(
        std::slice::from_ref(&deny_egress),
        &cluster(),
        &draco_to_harry(),
        no_np,
    );
    assert_eq!(
        (e.egress.verdict, e.ingress.verdict),
        (Verdict::Deny, Verdict::Allow)
    );
    assert_eq!(
        e.egress.steps[0].to_string(),
        "Admin: cnp/no-egress priority 1 rule \"#0\" → Deny"
    );
    let to_ron = conn(
        pod("slytherin", "draco"),
        ("gryffindor", "ron"),
        Protocol::Tcp,
        80,
    );
    assert_eq!(
        verdict(&[deny_egress], &to_ron),
        Verdict::Allow,
        "ron is not app=web"
    );
}

#[test]
fn subject_pods_needs_namespace_and_pod_labels() {
    let p = cnp(
        "web-only",
        json!({"tier": "Admin", "priority": 1,
        "subject": {"pods": {"namespaceSelector": {"matchLabels": {"house": "gryffindor"}},
                              "podSelector": {"matchLabels": {"app": "web"}}}},
        "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}]}),
    );
    assert_eq!(
        verdict(std::slice::from_ref(&p), &draco_to_harry()),
        Verdict::Deny
    );
    let to_ron = conn(
        pod("slytherin", "draco"),
        ("gryffindor", "ron"),
        Protocol::Tcp,
        80,
    );
    assert_eq!(verdict(std::slice::from_ref(&p), &to_ron), Verdict::Allow);
    let harry_to_draco = conn(
        pod("gryffindor", "harry"),
        ("slytherin", "draco"),
        Protocol::Tcp,
        80,
    );
    assert_eq!(
        verdict(&[p], &harry_to_draco),
        Verdict::Allow,
        "draco's namespace is not selected"
    );
}

#[test]
fn namespaces_match_their_metadata_name_label() {
    let p = cnp(
        "by-name",
        json!({"tier": "Admin", "priority": 1,
        "subject": {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "gryffindor"}}},
        "ingress": [{"action": "Deny", "from": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "slytherin"}}}]}]}),
    );
    assert_eq!(verdict(&[p], &draco_to_harry()), Verdict::Deny);
}

#[test]
fn named_ports_are_resolved_on_the_destination_pod() {
    let p = cnp(
        "named",
        json!({"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
        "ingress": [{"action": "Deny", "from": [{"namespaces": {}}], "protocols": [{"destinationNamedPort": "http"}]}]}),
    );
    assert_eq!(
        verdict(std::slice::from_ref(&p), &draco_to_harry()),
        Verdict::Deny
    );
    let other_port = conn(
        pod("slytherin", "draco"),
        ("gryffindor", "harry"),
        Protocol::Tcp,
        8080,
    );
    assert_eq!(
        verdict(std::slice::from_ref(&p), &other_port),
        Verdict::Allow
    );
    let udp = conn(
        pod("slytherin", "draco"),
        ("gryffindor", "harry"),
        Protocol::Udp,
        80,
    );
    assert_eq!(
        verdict(std::slice::from_ref(&p), &udp),
        Verdict::Allow,
        "http is TCP"
    );
    let ron = conn(
        pod("slytherin", "draco"),
        ("gryffindor", "ron"),
        Protocol::Tcp,
        80,
    );
    assert_eq!(
        verdict(&[p], &ron),
        Verdict::Allow,
        "ron has no port named http"
    );
}

#[test]
fn port_ranges_are_inclusive_and_per_protocol() {
    let p = cnp(
        "range",
        json!({"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
        "ingress": [{"action": "Deny", "from": [{"namespaces": {}}],
            "protocols": [{"tcp": {"destinationPort": {"range": {"start": 80, "end": 90}}}}]}]}),
    );
    for (proto, port, expected) in [
        (Protocol::Tcp, 80, Verdict::Deny),
        (Protocol::Tcp, 90, Verdict::Deny),
        (Protocol::Tcp, 91, Verdict::Allow),
        (Protocol::Udp, 85, Verdict::Allow),
    ] {
        let c = conn(
            pod("slytherin", "draco"),
            ("gryffindor", "harry"),
            proto,
            port,
        );
        assert_eq!(
            verdict(std::slice::from_ref(&p), &c),
            expected,
            "{proto}/{port}"
        );
    }
}

#[test]
fn nodes_peers_match_node_addresses() {
    let p = cnp(
        "no-workers",
        json!({"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
        "egress": [{"action": "Deny", "to": [{"nodes": {"matchLabels": {"role": "worker"}}}]}]}),
    );
    // The host-network agent listens on n1's address.
    let to_agent = conn(
        pod("slytherin", "draco"),
        ("kube-system", "agent"),
        Protocol::Tcp,
        10250,
    );
    assert_eq!(verdict(std::slice::from_ref(&p), &to_agent), Verdict::Deny);
    assert_eq!(verdict(&[p], &draco_to_harry()), Verdict::Allow);
}

#[test]
fn networks_peers_match_pod_addresses_too() {
    let p = cnp(
        "no-10-0-0",
        json!({"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
        "egress": [{"action": "Deny", "to": [{"networks": ["10.0.0.0/24"]}]}]}),
    );
    assert_eq!(
        verdict(std::slice::from_ref(&p), &draco_to_harry()),
        Verdict::Deny
    );
    let harry_to_draco = conn(
        pod("gryffindor", "harry"),
        ("slytherin", "draco"),
        Protocol::Tcp,
        80,
    );
    assert_eq!(verdict(&[p], &harry_to_draco), Verdict::Allow);
}

#[test]
fn host_network_pods_are_never_subjects_nor_pod_peers() {
    let deny_all = cnp(
        "deny-all",
        json!({"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
        "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}]}),
    );
    let to_agent = conn(
        pod("slytherin", "draco"),
        ("kube-system", "agent"),
        Protocol::Tcp,
        10250,
    );
    let e = evaluate(
        std::slice::from_ref(&deny_all),
        &cluster(),
        &to_agent,
        no_np,
    );
    assert_eq!(e.verdict, Verdict::Allow);
    assert_eq!(
        e.ingress.steps[0].to_string(),
        "host-network pod: never a subject of a cluster-wide policy"
    );
    let from_agent = conn(
        pod("kube-system", "agent"),
        ("gryffindor", "harry"),
        Protocol::Tcp,
        80,
    );
    assert_eq!(
        verdict(&[deny_all], &from_agent),
        Verdict::Allow,
        "not a namespaces peer"
    );
}

#[test]
fn sources_outside_the_cluster_are_not_judged_for_egress() {
    let from_outside = conn(
        Endpoint::External("203.0.113.9".parse().expect("ip")),
        ("gryffindor", "harry"),
        Protocol::Tcp,
        80,
    );
    let e = evaluate(&[], &cluster(), &from_outside, no_np);
    assert_eq!(e.egress.verdict, Verdict::Allow);
    assert_eq!(
        e.egress.steps[0].to_string(),
        "not a pod: no policy applies → allow"
    );
    assert_eq!(e.verdict, Verdict::Allow);
}

#[test]
fn networks_peers_judge_egress_to_addresses_outside_the_cluster() {
    let p = cnp(
        "no-internet",
        json!({"tier": "Baseline", "priority": 1, "subject": {"namespaces": {}},
        "egress": [
            {"action": "Accept", "to": [{"networks": ["192.0.2.0/24"]}]},
            {"action": "Deny", "to": [{"networks": ["0.0.0.0/0"]}]},
        ]}),
    );
    let to = |ip: &str| Connection {
        source: pod("gryffindor", "harry"),
        destination: Endpoint::External(ip.parse().expect("ip")),
        protocol: Protocol::Tcp,
        port: 443,
    };
    let e = evaluate(
        std::slice::from_ref(&p),
        &cluster(),
        &to("203.0.113.9"),
        no_np,
    );
    assert_eq!(
        (e.egress.verdict, e.ingress.verdict),
        (Verdict::Deny, Verdict::Allow)
    );
    assert_eq!(verdict(&[p], &to("192.0.2.7")), Verdict::Allow);
}

#[test]
fn same_priority_policies_that_disagree_are_undefined_and_warned_about() {
    let deny = from_slytherin("deny", "Admin", 5, "Deny");
    let accept = from_slytherin("accept", "Admin", 5, "Accept");
    let policies = [deny, accept];
    let e = evaluate(&policies, &cluster(), &draco_to_harry(), no_np);
    assert_eq!(e.verdict, Verdict::Undefined);
    assert_eq!(
        e.ingress.steps.last().map(ToString::to_string).as_deref(),
        Some("Admin: cnp/accept and cnp/deny share priority 5 and disagree → undefined")
    );
    let warnings = same_priority_overlaps(&policies, &cluster());
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].starts_with("cnp/deny and cnp/accept are both in the Admin tier at priority 5"),
        "{}",
        warnings[0]
    );
    // Same action at the same priority: the outcome is the same whichever applies.
    let deny2 = from_slytherin("deny2", "Admin", 5, "Deny");
    let agree = [from_slytherin("deny", "Admin", 5, "Deny"), deny2];
    assert_eq!(verdict(&agree, &draco_to_harry()), Verdict::Deny);
    // Different tiers or priorities never warn.
    let apart = [
        from_slytherin("a", "Admin", 5, "Deny"),
        from_slytherin("b", "Baseline", 5, "Deny"),
    ];
    assert!(same_priority_overlaps(&apart, &cluster()).is_empty());
}
