//! `--trace` against the real kernel: a probe into a default-deny namespace is followed to
//! the rule that rejects it on the target's node, a probe a ClusterNetworkPolicy decides
//! to the `KUBE-CNP-` rule that decided, and a probe to a ClusterIP shows kube-proxy's
//! DNAT to a backend and the chains it went through. Needs root (the TRACE
//! target) and xtables-monitor: ignored unless run with `--include-ignored` (see `common`).

mod common;

use std::path::Path;

use harness::netns;
use harness::run::{RunOptions, new_prefix, run};
use sim::protocol::PortProto;
use sim::scenario::Peer;

fn scenario(name: &str) -> sim::scenario::Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(format!("{name}.yaml"));
    sim::scenario::load(&path).expect("scenario loads")
}

async fn traced(name: &str, from: &str, to: &str, port: &str) -> Vec<String> {
    netns::init();
    let opts = RunOptions {
        prefix: new_prefix(),
        trace: Some((
            from.parse::<Peer>().unwrap(),
            to.parse::<Peer>().unwrap(),
            port.parse::<PortProto>().unwrap(),
        )),
        ..RunOptions::default()
    };
    let report = run(&scenario(name), &opts).await.expect("run");
    assert!(report.ok(), "the scenario itself still passes with a trace");
    assert_eq!(
        report.traces.len(),
        report.steps.len(),
        "one trace per step"
    );
    assert!(
        netns::list_run(&opts.prefix).unwrap().is_empty(),
        "torn down"
    );
    report.traces.into_iter().map(|t| t.text).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: traces packets in network namespaces"]
async fn a_denied_probe_is_followed_to_the_rule_that_rejects_it() {
    common::require_root(&[common::XTABLES_MONITOR]);
    let stories = traced("default-deny", "y/a", "x/b", "TCP/80").await;
    // Step 1: the default deny in x rejects it in x/b's pod firewall chain.
    let s = &stories[0];
    assert!(s.contains("KUBE-POD-FW-"), "{s}");
    assert!(s.contains("rejected here"), "{s}");
    assert!(s.contains("measured: rejected"), "{s}");
    // Step 2 removes the policy: the SYN goes through and the SYN-ACK comes back.
    let s = &stories[1];
    assert!(!s.contains("rejected here"), "{s}");
    assert!(s.contains("SYN ACK"), "{s}");
    assert!(s.contains("measured: allowed"), "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: traces packets in network namespaces"]
async fn a_service_probe_shows_kube_proxys_dnat() {
    common::require_root(&[common::XTABLES_MONITOR]);
    let stories = traced(
        "service-clusterip",
        "default/client-1",
        "svc/default/nginx:80",
        "TCP/80",
    )
    .await;
    let s = &stories[0];
    assert!(s.contains("KUBE-SERVICES"), "{s}");
    assert!(s.contains("KUBE-SEP-"), "{s}");
    assert!(s.contains("destination rewritten (DNAT)"), "{s}");
    assert!(s.contains("measured: allowed"), "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: traces packets in network namespaces"]
async fn a_cross_node_probe_is_seen_entering_the_vxlan_tunnel() {
    common::require_root(&[common::XTABLES_MONITOR]);
    let stories = traced("overlay-vxlan", "demo/client-1", "demo/web-2", "TCP/80").await;
    let s = &stories[0];
    assert!(s.contains("encapsulated in VXLAN (VNI 1)"), "{s}");
    // The SYN is seen on n1, then on n2 after the tunnel; the SYN-ACK comes back.
    let n1 = s.find("n1: TCP SYN ").expect("SYN on n1");
    let n2 = s.find("n2: TCP SYN ").expect("SYN on n2");
    assert!(n1 < n2, "{s}");
    assert!(s.contains("SYN ACK"), "{s}");
    assert!(s.contains("measured: allowed"), "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: traces packets in network namespaces"]
async fn a_tier_decision_is_followed_to_the_kube_cnp_rule_that_made_it() {
    common::require_root(&[common::XTABLES_MONITOR]);
    // y's connections into x: the Admin tier's Deny decides, before x's NetworkPolicy
    // (which allows everything) is consulted.
    let stories = traced("cnp-admin-deny", "y/a", "x/a", "TCP/80").await;
    let s = &stories[0];
    let rejected = s
        .lines()
        .find(|l| l.contains("-j REJECT"))
        .unwrap_or_else(|| panic!("no REJECT rule in the story:\n{s}"));
    assert!(rejected.contains("KUBE-CNP-"), "{rejected}\n{s}");
    assert!(
        rejected.contains(r#"rule \"deny-from-y\""#) || rejected.contains(r#"rule "deny-from-y""#),
        "the rule's comment names the policy's rule: {rejected}\n{s}"
    );
    assert!(
        rejected.contains("cnp/deny-y-to-x priority 10"),
        "{rejected}\n{s}"
    );
    assert!(
        s.contains(
            r#"=> cluster-wide policy rule matched: Admin: cnp/deny-y-to-x priority 10 ingress rule \"deny-from-y\" from[0] -> Deny"#
        ),
        "{s}"
    );
    assert!(s.contains("rejected here"), "{s}");
    assert!(s.contains("measured: rejected"), "{s}");
    // The oracle's walk, which ends the story, names the same rule.
    assert!(
        s.contains(r#"Admin: cnp/deny-y-to-x priority 10 rule "deny-from-y" → Deny"#),
        "{s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: traces packets in network namespaces"]
async fn an_admin_accept_is_seen_marking_the_packet_in_its_kube_cnp_chain() {
    common::require_root(&[common::XTABLES_MONITOR]);
    // cnp-steps, step 2: lock-x's Accept for y comes before its Deny; y's SYN goes from
    // lock-x's chain to KUBE-CNP-ACCEPT, is marked allowed there, and goes through.
    let stories = traced("cnp-steps", "y/a", "x/a", "TCP/80").await;
    let s = &stories[2];
    let accepted = s
        .lines()
        .find(|l| l.contains("KUBE-CNP-") && l.contains("accept-trusted"))
        .unwrap_or_else(|| panic!("no KUBE-CNP rule of accept-trusted in the story:\n{s}"));
    assert!(accepted.contains("-> Accept"), "{accepted}\n{s}");
    assert!(
        s.contains(
            "=> cluster-wide policy rule matched: Admin: cnp/lock-x priority 10 ingress rule"
        ),
        "{s}"
    );
    assert!(
        s.lines()
            .any(|l| l.contains("KUBE-CNP-ACCEPT") && l.contains("MARK --set-xmark 0x10000")),
        "no mark in KUBE-CNP-ACCEPT in the story:\n{s}"
    );
    assert!(!s.contains("matched: cluster-wide policy Accept"), "{s}");
    assert!(!s.contains("rejected here"), "{s}");
    assert!(s.contains("measured: allowed"), "{s}");
}
