use serde_json::{Value, json};

use crate::cluster_policy::validate::parse;
use crate::cluster_policy::validate::v1alpha1::BASELINE_PRIORITY;
use crate::cluster_policy::{Action, ClusterPolicyError, PortMatch, SourceKind, Tier};
use crate::protocol::Protocol;

fn manifest(kind: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    })
}

#[test]
fn admin_network_policy_maps_onto_the_admin_tier_with_a_note() {
    let parsed = parse(&manifest(
        "AdminNetworkPolicy",
        "cluster-control",
        json!({
            "priority": 34,
            "subject": {"namespaces": {}},
            "ingress": [
                {"name": "allow-monitoring", "action": "Allow",
                 "from": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]},
                {"name": "pass-rest", "action": "Pass", "from": [{"namespaces": {}}],
                 "ports": [{"portNumber": {"port": 80}},
                           {"portRange": {"protocol": "UDP", "start": 1000, "end": 2000}},
                           {"namedPort": "dns"}]}
            ],
            "egress": [{"name": "deny-nodes", "action": "Deny", "to": [{"nodes": {}}, {"networks": ["0.0.0.0/0"]}]}],
        }),
    ))
    .expect("valid");
    let p = &parsed.policy;
    assert_eq!(
        (p.kind, p.tier, p.priority),
        (SourceKind::AdminNetworkPolicy, Tier::Admin, 34)
    );
    assert_eq!(p.id(), "anp/cluster-control");
    assert_eq!(p.ingress[0].action, Action::Accept, "Allow is Accept");
    assert_eq!(p.ingress[1].action, Action::Pass);
    assert_eq!(
        p.ingress[1].ports.as_deref(),
        Some(
            &[
                PortMatch::Range {
                    protocol: Protocol::Tcp,
                    start: 80,
                    end: 80
                },
                PortMatch::Range {
                    protocol: Protocol::Udp,
                    start: 1000,
                    end: 2000
                },
                PortMatch::Named("dns".into()),
            ][..]
        ),
        "portNumber's protocol defaults to TCP"
    );
    assert_eq!(parsed.notes.len(), 1);
    assert!(
        parsed.notes[0].contains("Admin tier at priority 34"),
        "{}",
        parsed.notes[0]
    );
}

#[test]
fn baseline_admin_network_policy_is_the_baseline_singleton() {
    let spec = json!({"subject": {"namespaces": {}},
        "ingress": [{"name": "deny-all", "action": "Deny", "from": [{"namespaces": {}}]}]});
    let parsed = parse(&manifest(
        "BaselineAdminNetworkPolicy",
        "default",
        spec.clone(),
    ))
    .expect("valid");
    let p = &parsed.policy;
    assert_eq!((p.tier, p.priority), (Tier::Baseline, BASELINE_PRIORITY));
    assert_eq!(p.id(), "banp/default");
    assert!(
        parsed.notes[0].contains("Baseline tier"),
        "{}",
        parsed.notes[0]
    );
    let e = parse(&manifest("BaselineAdminNetworkPolicy", "mine", spec)).expect_err("not default");
    assert_eq!(e.path(), "metadata.name");
}

#[test]
fn baseline_admin_network_policy_has_no_pass_and_no_priority() {
    let pass = json!({"subject": {"namespaces": {}},
        "ingress": [{"name": "p", "action": "Pass", "from": [{"namespaces": {}}]}]});
    let e = parse(&manifest("BaselineAdminNetworkPolicy", "default", pass)).expect_err("no Pass");
    assert_eq!(e.path(), "spec.ingress[0].action");
    let prio = json!({"priority": 3, "subject": {"namespaces": {}}});
    let e =
        parse(&manifest("BaselineAdminNetworkPolicy", "default", prio)).expect_err("no priority");
    assert_eq!(e.path(), "spec.priority");
}

#[test]
fn admin_network_policy_needs_a_priority_but_not_rule_names() {
    let e = parse(&manifest(
        "AdminNetworkPolicy",
        "a",
        json!({"subject": {"namespaces": {}}}),
    ))
    .expect_err("no priority");
    assert_eq!(e.path(), "spec.priority");
    let e = parse(&manifest(
        "AdminNetworkPolicy",
        "a",
        json!({"priority": 1001, "subject": {"namespaces": {}}}),
    ))
    .expect_err("too high");
    assert_eq!(e.path(), "spec.priority");
    let p = parse(&manifest(
        "AdminNetworkPolicy",
        "a",
        json!({"priority": 1, "subject": {"namespaces": {}},
        "egress": [{"action": "Deny", "to": [{"namespaces": {}}]}]}),
    ))
    .expect("a rule name is optional");
    assert_eq!(p.policy.egress[0].name, "");
}

#[test]
fn older_revisions_same_labels_are_refused_by_name() {
    let e = parse(&manifest("AdminNetworkPolicy", "a", json!({"priority": 1, "subject": {"namespaces": {}},
        "ingress": [{"name": "r", "action": "Allow", "from": [{"namespaces": {"sameLabels": ["tenant"]}}]}]})))
    .expect_err("old revision");
    assert!(matches!(e, ClusterPolicyError::Unsupported { .. }), "{e:?}");
    assert_eq!(e.path(), "spec.ingress[0].from[0].namespaces.sameLabels");
    let e = parse(&manifest(
        "AdminNetworkPolicy",
        "a",
        json!({"priority": 1,
        "subject": {"pods": {"namespaces": {"namespaceSelector": {}}, "podSelector": {}}}}),
    ))
    .expect_err("old pods.namespaces");
    assert_eq!(e.path(), "spec.subject.pods.namespaces");
}

#[test]
fn ingress_peers_cannot_be_networks_or_nodes() {
    let e = parse(&manifest(
        "AdminNetworkPolicy",
        "a",
        json!({"priority": 1, "subject": {"namespaces": {}},
        "ingress": [{"name": "r", "action": "Deny", "from": [{"networks": ["10.0.0.0/8"]}]}]}),
    ))
    .expect_err("networks in ingress");
    assert_eq!(e.path(), "spec.ingress[0].from[0].networks");
    let e = parse(&manifest(
        "AdminNetworkPolicy",
        "a",
        json!({"priority": 1, "subject": {"namespaces": {}},
        "ingress": [{"name": "r", "action": "Deny", "to": [{"namespaces": {}}]}]}),
    ))
    .expect_err("to in ingress");
    assert_eq!(e.path(), "spec.ingress[0].to");
}
