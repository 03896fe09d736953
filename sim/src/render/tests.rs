//! Tests of the rendered enforcer rules: snapshots of small cases (the text a student
//! reads), and checks that the rules only restate what `policy` resolved.

use std::net::Ipv4Addr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::cluster::DenyStyle;
use crate::objects::{ClusterObjects, Object};
use crate::policy::fixtures::{add_pod, namespace, pod, policy};
use crate::policy::{self, IpBlockMatch, PeerKind};
use crate::protocol::Protocol;

use super::policy_iptables::ip_block_entries;
use super::*;

fn ctx(deny: DenyStyle) -> RenderContext {
    RenderContext {
        pod_cidr: "10.244.0.0/16".parse().unwrap(),
        service_cidr: "10.96.0.0/12".parse().unwrap(),
        deny,
        node_ip: Ipv4Addr::new(192, 168, 200, 11),
    }
}

/// A small cluster: x/a (10.244.1.10) and x/b (10.244.1.11) on n1, y/c (10.244.2.10) on
/// n2. Namespaces are labelled `ns=NAME`, pods `pod=NAME`; x/a declares `http` = TCP/80,
/// x/b declares `http` = TCP/8080 (the same name on a different port), y/c `http` =
/// TCP/80 and `dns` = UDP/53.
fn small() -> ClusterObjects {
    let mut o = ClusterObjects::new(vec!["n1".into(), "n2".into()]);
    for ns in ["x", "y"] {
        o.apply(Object::Namespace(namespace(ns, &[("ns", ns)])));
    }
    let tcp = Protocol::Tcp;
    add_pod(
        &mut o,
        pod("x", "a", &[("pod", "a")], &[("http", 80, tcp)]),
        "n1",
    );
    add_pod(
        &mut o,
        pod("x", "b", &[("pod", "b")], &[("http", 8080, tcp)]),
        "n1",
    );
    add_pod(
        &mut o,
        pod(
            "y",
            "c",
            &[("pod", "c")],
            &[("http", 80, tcp), ("dns", 53, Protocol::Udp)],
        ),
        "n2",
    );
    o
}

fn with(policies: &[(&str, &str, Value)]) -> ClusterObjects {
    let mut o = small();
    for (ns, name, spec) in policies {
        o.apply(Object::NetworkPolicy(policy(ns, name, spec.clone())));
    }
    o
}

fn render(objects: &ClusterObjects, node: &str) -> NodeRules {
    render_node(&policy::resolve(objects), node, &ctx(DenyStyle::Reject))
}

#[test]
fn default_deny_ingress() {
    let o = with(&[(
        "x",
        "default-deny",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    )]);
    insta::assert_snapshot!(render(&o, "n1").normalised());
}

#[test]
fn no_policy_on_a_node_still_has_the_layout() {
    let o = with(&[(
        "x",
        "default-deny",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    )]);
    // n2 runs only y/c, which no policy selects: every direction goes to DEFAULT.
    insta::assert_snapshot!(render(&o, "n2").normalised());
}

#[test]
fn allow_from_pod_selector() {
    let o = with(&[(
        "x",
        "allow-b",
        json!({
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [
                {"podSelector": {"matchLabels": {"pod": "b"}}},
                {"namespaceSelector": {"matchLabels": {"ns": "y"}}}
            ]}]
        }),
    )]);
    insta::assert_snapshot!(render(&o, "n1").normalised());
}

#[test]
fn ip_block_with_except_uses_nomatch() {
    let o = with(&[(
        "x",
        "ipblock",
        json!({
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [
                {"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.2.0/24", "10.244.1.11/32", "192.168.0.0/16"]}},
                {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["0.0.0.0/1"]}}
            ]}]
        }),
    )]);
    let r = render(&o, "n1");
    insta::assert_snapshot!(r.normalised());
}

#[test]
fn named_port_resolves_per_destination_pod() {
    let o = with(&[(
        "x",
        "named",
        json!({
            "podSelector": {},
            "ingress": [{"ports": [{"port": "http"}, {"port": "dns", "protocol": "UDP"}]}]
        }),
    )]);
    insta::assert_snapshot!(render(&o, "n1").normalised());
}

#[test]
fn end_port_range_and_sctp() {
    let o = with(&[(
        "x",
        "range",
        json!({
            "podSelector": {"matchLabels": {"pod": "b"}},
            "ingress": [{
                "from": [{"namespaceSelector": {}}],
                "ports": [
                    {"port": 8000, "endPort": 9000},
                    {"port": 80, "protocol": "SCTP"},
                    {"protocol": "UDP"}
                ]
            }]
        }),
    )]);
    insta::assert_snapshot!(render(&o, "n1").normalised());
}

#[test]
fn egress_policy_with_named_port_and_drop() {
    let o = with(&[(
        "x",
        "egress",
        json!({
            "podSelector": {"matchLabels": {"pod": "a"}},
            "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                 "ports": [{"port": "http"}]},
                {"ports": [{"port": 53, "protocol": "UDP"}]}
            ]
        }),
    )]);
    let r = render_node(&policy::resolve(&o), "n1", &ctx(DenyStyle::Drop));
    insta::assert_snapshot!(r.normalised());
}

#[test]
fn fresh_install_scripts() {
    let o = with(&[(
        "x",
        "allow-b",
        json!({
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}],
                         "ports": [{"port": 80}]}]
        }),
    )]);
    let r = render(&o, "n1");
    insta::assert_snapshot!(format!(
        "### ipset restore\n{}### iptables-restore --noflush\n{}",
        r.ipset_restore(),
        r.iptables_restore()
    ));
}

#[test]
fn both_directions_get_separate_chains() {
    // One policy with both types selecting both local pods: its ingress and egress rules
    // live in two chains, entered with -d POD and -s POD respectively.
    let o = with(&[(
        "x",
        "both",
        json!({
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {}}]}],
            "egress": []
        }),
    )]);
    let r = render(&o, "n1");
    let ingress = names::policy_chain("x", "both", policy::Direction::Ingress);
    let egress = names::policy_chain("x", "both", policy::Direction::Egress);
    assert_eq!(r.ruleset.chains[&ingress].len(), 2);
    // `egress: []` allows nothing: the chain exists and is empty.
    assert!(r.ruleset.chains[&egress].is_empty());
    let fw = &r.ruleset.chains[&names::pod_chain("x", "a")];
    assert!(
        fw.iter()
            .any(|l| l.contains("-d 10.244.1.10/32") && l.ends_with(&ingress))
    );
    assert!(
        fw.iter()
            .any(|l| l.contains("-s 10.244.1.10/32") && l.ends_with(&egress))
    );
}

#[test]
fn rendering_is_deterministic_and_order_free() {
    let p1 = (
        "x",
        "p1",
        json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
    );
    let p2 = (
        "x",
        "p2",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"]}),
    );
    let a = render(&with(&[p1.clone(), p2.clone()]), "n1");
    let b = render(&with(&[p2, p1]), "n1");
    assert_eq!(a, b);
    assert_eq!(a.normalised(), b.normalised());
    assert_eq!(a.iptables_restore(), b.iptables_restore());
}

#[test]
fn every_policy_rule_names_its_policy_and_rule() {
    let o = with(&[(
        "x",
        "allow-b",
        json!({
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}],
                         "ports": [{"port": 80}, {"port": "http"}]}]
        }),
    )]);
    let r = render(&o, "n1");
    let chain = names::policy_chain("x", "allow-b", policy::Direction::Ingress);
    let rules = &r.ruleset.chains[&chain];
    assert_eq!(rules.len(), 4);
    assert!(
        rules
            .iter()
            .all(|l| l.contains("--comment \"x/allow-b ingress[0].from[0] ports["))
    );
}

#[test]
fn label_change_only_refills_sets() {
    let spec = json!({
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]
    });
    let before = render(&with(&[("x", "allow-b", spec.clone())]), "n1");
    let mut o = with(&[("x", "allow-b", spec)]);
    o.set_labels(
        crate::objects::Kind::Pod,
        "x",
        "b",
        [("pod".to_string(), "other".to_string())].into(),
    );
    let after = render(&o, "n1");
    let scripts = after.apply_over(&before.ruleset);
    assert_eq!(scripts.iptables, "");
    assert_eq!(scripts.ipset_destroy, "");
    // Only the peer set, now empty, is refilled.
    assert_eq!(scripts.ipset_refill.matches("swap ").count(), 1);
    assert!(!scripts.ipset_refill.contains("add "));
}

#[test]
fn deleting_a_policy_removes_its_chain_and_sets() {
    let spec = json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]});
    let before = render(&with(&[("x", "deny", spec)]), "n1");
    let after = render(&small(), "n1");
    let scripts = after.apply_over(&before.ruleset);
    let chain = names::policy_chain("x", "deny", policy::Direction::Ingress);
    assert!(scripts.iptables.contains(&format!("-X {chain}\n")));
    let set = names::target_set("x", "deny", policy::Direction::Ingress);
    let peers = names::peer_set("x", "deny", policy::Direction::Ingress, 0, 0, false);
    assert_eq!(
        scripts.ipset_destroy,
        format!("destroy {set}\ndestroy {peers}\n")
    );
    // Applying the same rules again does nothing.
    assert!(after.apply_over(&after.ruleset).is_empty());
}

#[test]
fn ip_block_sets_match_exactly_what_policy_accepts() {
    // ipset semantics: the most specific entry containing the address decides.
    fn set_matches(entries: &[SetEntry], ip: Ipv4Addr) -> bool {
        entries
            .iter()
            .filter(|e| e.net.contains(&ip))
            .max_by_key(|e| e.net.prefix_len())
            .is_some_and(|e| !e.nomatch)
    }
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let random_net = |rng: &mut ChaCha8Rng, max_len: u8| {
        // Addresses drawn from a small space so blocks and excepts overlap often.
        let addr = Ipv4Addr::from(rng.random::<u32>() & 0xC0F0_0000 | 0x0A00_0000);
        let len = rng.random_range(0..=max_len);
        format!("{addr}/{len}")
    };
    for case in 0..500 {
        let cidr = random_net(&mut rng, 16);
        let except: Vec<String> = (0..rng.random_range(0..4))
            .map(|_| random_net(&mut rng, 20))
            .collect();
        let o = with(&[(
            "x",
            "p",
            json!({"podSelector": {}, "ingress": [{"from": [
                {"ipBlock": {"cidr": cidr, "except": except}}
            ]}]}),
        )]);
        let resolved = policy::resolve(&o);
        let rule = &resolved.policies[0].ingress[0];
        let block: &IpBlockMatch = match &rule.peers.as_ref().unwrap()[0].kind {
            PeerKind::IpBlock(b) => b,
            other => panic!("case {case}: not an ipBlock: {other:?}"),
        };
        let entries = ip_block_entries(block);
        assert!(entries.iter().all(|e| e.net.prefix_len() > 0));
        for _ in 0..200 {
            let ip = Ipv4Addr::from(rng.random::<u32>() & 0xC0FF_0000 | 0x0A00_0000);
            assert_eq!(
                set_matches(&entries, ip),
                block.contains(ip),
                "case {case}: {block} at {ip}: entries {entries:?}"
            );
        }
    }
}
