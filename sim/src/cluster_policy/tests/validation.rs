use serde_json::json;

use super::{cnp, cnp_error};
use crate::cluster_policy::validate::{is_cluster_policy, parse};
use crate::cluster_policy::{ClusterPolicyError, Peer, PortMatch, Subject, Tier};
use crate::protocol::Protocol;

fn admin(extra: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({"tier": "Admin", "priority": 10, "subject": {"namespaces": {}}});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    spec
}

fn ingress_rule(extra: serde_json::Value) -> serde_json::Value {
    let mut rule = json!({"name": "r", "action": "Deny", "from": [{"namespaces": {}}]});
    if let (Some(r), Some(e)) = (rule.as_object_mut(), extra.as_object()) {
        r.extend(e.clone());
    }
    rule
}

#[test]
fn a_valid_policy_becomes_the_model() {
    let p = cnp(
        "deny-slytherin",
        admin(json!({
            "subject": {"pods": {"namespaceSelector": {"matchLabels": {"house": "gryffindor"}},
                                  "podSelector": {"matchLabels": {"app": "web"}}}},
            "ingress": [ingress_rule(json!({"protocols": [
                {"tcp": {"destinationPort": {"number": 80}}},
                {"udp": {"destinationPort": {"range": {"start": 5000, "end": 6000}}}},
                {"destinationNamedPort": "http"}
            ]}))],
            "egress": [{"action": "Accept", "to": [{"networks": ["10.0.0.0/8"]}, {"nodes": {}}]}],
        })),
    );
    assert_eq!(p.tier, Tier::Admin);
    assert_eq!(p.priority, 10);
    assert_eq!(p.id(), "cnp/deny-slytherin");
    assert!(matches!(p.subject, Subject::Pods { .. }));
    assert_eq!(
        p.ingress[0].ports.as_deref(),
        Some(
            &[
                PortMatch::Range {
                    protocol: Protocol::Tcp,
                    start: 80,
                    end: 80
                },
                PortMatch::Range {
                    protocol: Protocol::Udp,
                    start: 5000,
                    end: 6000
                },
                PortMatch::Named("http".into()),
            ][..]
        )
    );
    assert!(matches!(
        &p.egress[0].peers[..],
        [Peer::Networks(_), Peer::Nodes(_)]
    ));
    assert_eq!(p.egress[0].name, "", "a v1alpha2 rule name is optional");
}

#[test]
fn priority_is_0_to_1000() {
    assert_eq!(cnp("p", admin(json!({"priority": 0}))).priority, 0);
    assert_eq!(cnp("p", admin(json!({"priority": 1000}))).priority, 1000);
    for bad in [1001, -1] {
        let e = cnp_error(admin(json!({"priority": bad})));
        assert_eq!(e.path(), "spec.priority");
        assert!(e.to_string().contains("between 0 and 1000"), "{e}");
    }
}

#[test]
fn tier_is_admin_or_baseline() {
    assert_eq!(
        cnp("p", admin(json!({"tier": "Baseline"}))).tier,
        Tier::Baseline
    );
    let e = cnp_error(admin(json!({"tier": "NetworkPolicy"})));
    assert_eq!(e.path(), "spec.tier");
}

#[test]
fn subject_is_exactly_one_of_namespaces_or_pods() {
    let both = cnp_error(admin(json!({"subject": {
        "namespaces": {}, "pods": {"podSelector": {}}
    }})));
    assert_eq!(both.path(), "spec.subject");
    assert!(
        both.to_string().contains("namespaces, pods are all set"),
        "{both}"
    );
    let none = cnp_error(admin(json!({"subject": {}})));
    assert!(none.to_string().contains("none is set"), "{none}");
}

#[test]
fn at_most_25_rules_per_direction_and_25_peers_per_rule() {
    let rules: Vec<_> = (0..26).map(|_| ingress_rule(json!({}))).collect();
    assert_eq!(
        cnp_error(admin(json!({"ingress": rules}))).path(),
        "spec.ingress"
    );
    let rules: Vec<_> = (0..25).map(|_| ingress_rule(json!({}))).collect();
    assert_eq!(cnp("p", admin(json!({"ingress": rules}))).ingress.len(), 25);
    let peers: Vec<_> = (0..26).map(|_| json!({"namespaces": {}})).collect();
    let e = cnp_error(admin(
        json!({"ingress": [ingress_rule(json!({"from": peers}))]}),
    ));
    assert_eq!(e.path(), "spec.ingress[0].from");
}

#[test]
fn a_rule_needs_at_least_one_peer() {
    let e = cnp_error(admin(
        json!({"ingress": [ingress_rule(json!({"from": []}))]}),
    ));
    assert_eq!(e.path(), "spec.ingress[0].from");
    assert!(e.to_string().contains("at least 1"), "{e}");
}

#[test]
fn a_peer_is_exactly_one_of_its_fields() {
    let e = cnp_error(admin(json!({"egress": [{"action": "Deny", "to": [
        {"namespaces": {}, "networks": ["10.0.0.0/8"]}
    ]}]})));
    assert_eq!(e.path(), "spec.egress[0].to[0]");
    let e = cnp_error(admin(json!({"egress": [{"action": "Deny", "to": [{}]}]})));
    assert!(e.to_string().contains("none is set"), "{e}");
}

#[test]
fn ingress_peers_are_namespaces_or_pods_only() {
    let e = cnp_error(admin(
        json!({"ingress": [ingress_rule(json!({"from": [{"networks": ["10.0.0.0/8"]}]}))]}),
    ));
    assert!(matches!(e, ClusterPolicyError::Shape { .. }), "{e:?}");
    assert!(
        e.path().starts_with("spec.ingress[0].from[0]"),
        "{}",
        e.path()
    );
}

#[test]
fn unknown_fields_are_refused_with_their_path() {
    let e = cnp_error(admin(
        json!({"ingress": [ingress_rule(json!({"form": []}))]}),
    ));
    assert!(matches!(e, ClusterPolicyError::Shape { .. }), "{e:?}");
    assert!(e.to_string().contains("form"), "{e}");
    assert_eq!(e.path(), "spec.ingress[0].form");
    // A misspelt selector field would otherwise select everything.
    let e = cnp_error(admin(
        json!({"subject": {"namespaces": {"matchLabel": {"a": "b"}}}}),
    ));
    assert!(e.to_string().contains("matchLabel"), "{e}");
}

#[test]
fn selector_requirements_are_checked() {
    let e = cnp_error(admin(
        json!({"subject": {"namespaces": {"matchExpressions": [
            {"key": "a", "operator": "In"}
        ]}}}),
    ));
    assert_eq!(
        e.path(),
        "spec.subject.namespaces.matchExpressions[0].values"
    );
    let e = cnp_error(admin(
        json!({"subject": {"namespaces": {"matchExpressions": [
            {"key": "a", "operator": "Near", "values": ["x"]}
        ]}}}),
    ));
    assert_eq!(
        e.path(),
        "spec.subject.namespaces.matchExpressions[0].operator"
    );
}

#[test]
fn action_is_accept_deny_or_pass() {
    let e = cnp_error(admin(
        json!({"ingress": [ingress_rule(json!({"action": "Allow"}))]}),
    ));
    assert_eq!(e.path(), "spec.ingress[0].action");
    assert!(
        e.to_string().contains("\"Accept\", \"Deny\", \"Pass\""),
        "{e}"
    );
}

#[test]
fn rule_names_are_at_most_100_characters() {
    let long = "x".repeat(101);
    let e = cnp_error(admin(
        json!({"ingress": [ingress_rule(json!({"name": long}))]}),
    ));
    assert_eq!(e.path(), "spec.ingress[0].name");
}

#[test]
fn ports_are_1_to_65535_and_ranges_start_below_end() {
    let proto =
        |p: serde_json::Value| admin(json!({"ingress": [ingress_rule(json!({"protocols": [p]}))]}));
    let e = cnp_error(proto(json!({"tcp": {"destinationPort": {"number": 0}}})));
    assert_eq!(
        e.path(),
        "spec.ingress[0].protocols[0].tcp.destinationPort.number"
    );
    let e = cnp_error(proto(
        json!({"sctp": {"destinationPort": {"number": 70000}}}),
    ));
    assert!(e.to_string().contains("between 1 and 65535"), "{e}");
    let e = cnp_error(proto(
        json!({"tcp": {"destinationPort": {"range": {"start": 90, "end": 90}}}}),
    ));
    assert_eq!(
        e.path(),
        "spec.ingress[0].protocols[0].tcp.destinationPort.range"
    );
    assert!(
        e.to_string()
            .contains("Start port must be less than End port"),
        "{e}"
    );
    let e = cnp_error(proto(
        json!({"tcp": {"destinationPort": {"number": 80, "range": {"start": 1, "end": 2}}}}),
    ));
    assert_eq!(e.path(), "spec.ingress[0].protocols[0].tcp.destinationPort");
    let e = cnp_error(proto(json!({"tcp": {}})));
    assert_eq!(e.path(), "spec.ingress[0].protocols[0].tcp");
    let e = cnp_error(proto(
        json!({"tcp": {"destinationPort": {"number": 80}}, "destinationNamedPort": "http"}),
    ));
    assert_eq!(e.path(), "spec.ingress[0].protocols[0]");
    let e = cnp_error(admin(
        json!({"ingress": [ingress_rule(json!({"protocols": []}))]}),
    ));
    assert_eq!(e.path(), "spec.ingress[0].protocols");
}

#[test]
fn named_ports_cannot_go_with_nodes_or_networks_peers() {
    let e = cnp_error(admin(json!({"egress": [{"action": "Accept",
        "to": [{"pods": {"podSelector": {}}}, {"nodes": {}}],
        "protocols": [{"destinationNamedPort": "http"}]}]})));
    assert_eq!(e.path(), "spec.egress[0]");
    assert!(e.to_string().contains("namedPorts"), "{e}");
}

#[test]
fn networks_are_cidrs() {
    let e = cnp_error(admin(
        json!({"egress": [{"action": "Deny", "to": [{"networks": ["10.0.0.0/33"]}]}]}),
    ));
    assert_eq!(e.path(), "spec.egress[0].to[0].networks[0]");
    let e = cnp_error(admin(
        json!({"egress": [{"action": "Deny", "to": [{"networks": []}]}]}),
    ));
    assert_eq!(e.path(), "spec.egress[0].to[0].networks");
}

#[test]
fn domain_names_are_refused_never_ignored() {
    let e = cnp_error(admin(
        json!({"egress": [{"action": "Accept", "to": [{"domainNames": ["*.example.com"]}]}]}),
    ));
    assert!(matches!(e, ClusterPolicyError::Unsupported { .. }), "{e:?}");
    assert_eq!(e.path(), "spec.egress[0].to[0].domainNames");
    assert!(e.to_string().contains("knetlab does not model this"), "{e}");
}

#[test]
fn metadata_name_is_required() {
    let e = parse(&json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {},
        "spec": admin(json!({})),
    }))
    .expect_err("no name");
    assert_eq!(e.path(), "metadata.name");
}

#[test]
fn the_three_kinds_are_recognised() {
    assert!(is_cluster_policy(
        "policy.networking.k8s.io/v1alpha2",
        "ClusterNetworkPolicy"
    ));
    assert!(is_cluster_policy(
        "policy.networking.k8s.io/v1alpha1",
        "AdminNetworkPolicy"
    ));
    assert!(is_cluster_policy(
        "policy.networking.k8s.io/v1alpha1",
        "BaselineAdminNetworkPolicy"
    ));
    assert!(!is_cluster_policy(
        "policy.networking.k8s.io/v1alpha1",
        "ClusterNetworkPolicy"
    ));
    assert!(!is_cluster_policy("networking.k8s.io/v1", "NetworkPolicy"));
    let e = parse(&json!({"apiVersion": "v1", "kind": "Pod"})).expect_err("not ours");
    assert_eq!(e.path(), "kind");
}
