//! Tests of policy resolution itself (the semantics end to end are tested through the
//! oracle, in `oracle::tests`).

use super::fixtures::{add_pod, model_with, namespace, pod, policy, pr, standard_model};
use super::*;

#[test]
fn standard_model_resolves_with_ips() {
    let r = resolve(&standard_model());
    assert_eq!(r.pods().len(), 9);
    assert!(
        r.pods()
            .values()
            .all(|p| p.ip.is_some() && p.node.is_some())
    );
    assert_eq!(
        r.namespace_labels("y").get("ns").map(String::as_str),
        Some("y")
    );
    assert_eq!(
        r.namespace_labels("y")
            .get(NAMESPACE_NAME_LABEL)
            .map(String::as_str),
        Some("y")
    );
}

fn rule_of(objects: &ClusterObjects, dir: Direction) -> (ResolvedPolicies, ResolvedRule) {
    let r = resolve(objects);
    let rule = r.policies[0].rules(dir)[0].clone();
    (r, rule)
}

#[test]
fn peers_resolve_to_pod_sets_for_renderers() {
    let m = model_with(&[(
        "x",
        "p",
        serde_json::json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
            {"podSelector": {"matchLabels": {"pod": "b"}}},
            {"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {"matchLabels": {"pod": "c"}}},
            {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.244.0.0/16"]}}
        ]}]}),
    )]);
    let (r, rule) = rule_of(&m, Direction::Ingress);
    let p = &r.policies[0];
    assert_eq!(
        p.selected.iter().cloned().collect::<Vec<_>>(),
        vec![pr("x/a")]
    );
    assert_eq!(r.ips_of(&p.selected).len(), 1);
    let peers = rule.peers.as_ref().unwrap();
    let pods = |i: usize| match &peers[i].kind {
        PeerKind::Pods { pods, .. } => pods.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(pods(0), ["x/b"]);
    assert_eq!(pods(1), ["y/c"]);
    match &peers[2].kind {
        PeerKind::IpBlock(b) => {
            assert_eq!(b.cidr.to_string(), "10.0.0.0/8");
            assert_eq!(b.except.len(), 1);
            assert!(r.pods_in_block(b).is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rule.peer_label(2), "ingress[0].from[2]");
    assert!(!rule.has_named_ports());
}

#[test]
fn named_ports_group_destinations_for_renderers() {
    let mut m = ClusterObjects::new(vec!["n1".into()]);
    m.apply(crate::objects::Object::Namespace(namespace("x", &[])));
    let tcp = crate::protocol::Protocol::Tcp;
    add_pod(&mut m, pod("x", "a", &[], &[("web", 80, tcp)]), "n1");
    add_pod(&mut m, pod("x", "b", &[], &[("web", 8080, tcp)]), "n1");
    add_pod(&mut m, pod("x", "c", &[], &[("web", 80, tcp)]), "n1");
    add_pod(&mut m, pod("x", "d", &[], &[]), "n1");
    m.apply(crate::objects::Object::NetworkPolicy(policy(
        "x",
        "p",
        serde_json::json!({"podSelector": {}, "ingress": [{"ports": [{"port": "web"}, {"port": 9000, "endPort": 9001}]}]}),
    )));
    let (r, rule) = rule_of(&m, Direction::Ingress);
    assert!(rule.has_named_ports());
    let groups = rule.port_groups(r.pods().values());
    let shown: Vec<(String, Vec<String>)> = groups
        .iter()
        .map(|(spans, pods)| {
            let spans = spans
                .as_ref()
                .unwrap()
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>();
            (
                spans.join(" "),
                pods.iter().map(|p| p.to_string()).collect(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        vec![
            (
                "TCP/80 TCP/9000-9001".to_string(),
                vec!["x/a".to_string(), "x/c".to_string()]
            ),
            (
                "TCP/8080 TCP/9000-9001".to_string(),
                vec!["x/b".to_string()]
            ),
            ("TCP/9000-9001".to_string(), vec!["x/d".to_string()]),
        ]
    );
    // Outside the cluster a named port opens nothing.
    assert_eq!(rule.ports_on(None).unwrap().len(), 1);
}

#[test]
fn empty_peer_and_selector_with_ipblock_match_nothing() {
    let m = model_with(&[(
        "x",
        "p",
        serde_json::json!({"podSelector": {}, "ingress": [{"from": [
            {},
            {"ipBlock": {"cidr": "0.0.0.0/0"}, "podSelector": {}}
        ]}]}),
    )]);
    let (r, rule) = rule_of(&m, Direction::Ingress);
    let xb = r.pod(&pr("x/b")).unwrap();
    assert_eq!(rule.check_peer(&Endpoint::Pod(xb)), PeerCheck::NoMatch);
    for p in rule.peers.as_ref().unwrap() {
        assert!(matches!(p.kind, PeerKind::Nothing(_)), "{p:?}");
    }
}
