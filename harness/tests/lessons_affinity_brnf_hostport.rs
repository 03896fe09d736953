//! What the session-affinity, br-netfilter-off and hostport scenarios claim beyond their
//! matrices, checked against the real kernel: ClientIP affinity pins each client to one
//! backend while the Service without it spreads; every source address a hostPort's pod saw
//! is the one the oracle names (masqueraded to cni0's address for the node's own pods, the
//! client's own otherwise); and `cluster.brNetfilter: false` sets bridge-nf-call-iptables
//! to 0 in the node namespaces and nowhere else. Needs root: ignored unless run with
//! `--include-ignored` (see `common`).

mod common;

use std::path::{Path, PathBuf};

use harness::cluster::Cluster;
use harness::netns;
use harness::run::{RunOptions, RunReport};
use sim::matrix::Outcome;
use sim::plan::Plan;
use sim::scenario::{Peer, Scenario};

/// What `cluster.brNetfilter` sets (harness::cluster's build module names it too).
const BRIDGE_NF_CALL_IPTABLES: &str = "net/bridge/bridge-nf-call-iptables";

fn scenario(name: &str) -> Scenario {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(format!("{name}.yaml"));
    sim::scenario::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs a scenario as the scenario tests do (no `--repeat`: the scenario's own
/// `probe.repeat` applies), and insists it passed and cleaned up.
async fn run(sc: &Scenario) -> RunReport {
    let opts = RunOptions {
        prefix: harness::run::new_prefix(),
        repeat: 0,
        ..Default::default()
    };
    let report = harness::run::run(sc, &opts).await.expect("run");
    assert!(
        report.teardown_errors.is_empty(),
        "{:?}",
        report.teardown_errors
    );
    let text: Vec<String> = report.steps.iter().map(sim::matrix::render_step).collect();
    assert!(report.ok(), "{}", text.join("\n"));
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: runs scenarios in network namespaces"]
async fn client_ip_affinity_pins_and_the_other_service_spreads() {
    common::require_root(&[]);
    let sc = scenario("session-affinity");
    let repeat = sc.probe.repeat.expect("the scenario sets probe.repeat");
    let report = run(&sc).await;
    let mut seen = 0;
    for cell in &report.steps[0].cells {
        let svc = cell.service.as_ref().expect("only Service cells");
        let spread = &svc.spread;
        assert_eq!(spread.probes(), repeat, "{} -> {}", cell.from, cell.to);
        assert_eq!(
            spread.reached(),
            repeat,
            "{} -> {}: {spread:?}",
            cell.from,
            cell.to
        );
        let Peer::Service { name, .. } = &cell.to else {
            panic!("{} is not a Service", cell.to);
        };
        match name.as_str() {
            "sticky" => {
                assert!(
                    svc.affinity,
                    "the oracle knows sticky has ClientIP affinity"
                );
                assert_eq!(spread.answered.len(), 1, "{} pinned: {spread:?}", cell.from);
            }
            // Three backends at random, 20 connections: all on one happens once in 3^19.
            "spread" => {
                assert!(!svc.affinity);
                assert!(
                    spread.answered.len() >= 2,
                    "{} spread: {spread:?}",
                    cell.from
                );
            }
            other => panic!("unexpected Service {other}"),
        }
        seen += 1;
    }
    assert_eq!(seen, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: runs scenarios in network namespaces"]
async fn host_port_sources_are_what_the_oracle_says() {
    common::require_root(&[]);
    let report = run(&scenario("hostport")).await;
    let mut masqueraded = 0;
    let mut kept = 0;
    for step in &report.steps {
        for cell in &step.cells {
            let Peer::Node(node) = &cell.to else {
                panic!("{} is not a node", cell.to);
            };
            if cell.measured.outcome != Outcome::Allowed {
                continue;
            }
            let reason = cell.reason.as_deref().unwrap_or_default();
            // "portmap on n1 DNATs 192.168.200.11:30080 to x/web-1 10.244.1.3:8080, ..."
            let pod = reason
                .split_once(" to ")
                .and_then(|(_, r)| r.split_whitespace().next())
                .unwrap_or_else(|| panic!("{reason}"));
            assert_eq!(cell.measured.answered_by.as_deref(), Some(pod), "{reason}");
            assert_eq!(pod, format!("x/web-{}", &node[1..]), "{reason}");
            let seen = cell
                .measured
                .seen_source
                .expect("an answer names its source");
            match reason.split_once("masqueraded to ") {
                Some((_, rest)) => {
                    let ip = rest.split_whitespace().next().unwrap_or_default();
                    assert_eq!(
                        seen.to_string(),
                        ip,
                        "{} -> {}: {reason}",
                        cell.from,
                        cell.to
                    );
                    masqueraded += 1;
                }
                None => {
                    assert_eq!(
                        Some(seen),
                        cell.client_ip,
                        "{} -> {}: {reason}",
                        cell.from,
                        cell.to
                    );
                    kept += 1;
                }
            }
        }
    }
    // Both kinds happened: the node's own pods, and everyone else.
    assert!(
        masqueraded >= 3 && kept >= 3,
        "{masqueraded} masqueraded, {kept} kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: runs scenarios in network namespaces"]
async fn br_netfilter_off_is_set_in_the_node_namespaces_only() {
    common::require_root(&[]);
    let sc = scenario("br-netfilter-off");
    assert!(!sc.br_netfilter);
    let root_path = format!("/proc/sys/{BRIDGE_NF_CALL_IPTABLES}");
    let root_before = std::fs::read_to_string(&root_path).unwrap();
    let prefix = harness::run::new_prefix();
    let cluster = Cluster::create(Plan::new(&prefix, &sc.cluster).unwrap())
        .await
        .expect("build");
    let result = (|| -> anyhow::Result<Vec<String>> {
        let fresh: Vec<String> = sc
            .cluster
            .nodes
            .iter()
            .map(|n| {
                cluster
                    .node_netns(n)
                    .unwrap()
                    .sysctl(BRIDGE_NF_CALL_IPTABLES)
            })
            .collect::<anyhow::Result<_>>()?;
        assert!(
            fresh.iter().all(|v| v == "1"),
            "a new namespace starts at 1: {fresh:?}"
        );
        cluster.set_br_netfilter(false)?;
        sc.cluster
            .nodes
            .iter()
            .map(|n| {
                cluster
                    .node_netns(n)
                    .unwrap()
                    .sysctl(BRIDGE_NF_CALL_IPTABLES)
            })
            .collect()
    })();
    let fabric = cluster.fabric_netns().sysctl(BRIDGE_NF_CALL_IPTABLES);
    let td = cluster.teardown().await;
    assert!(td.errors.is_empty(), "{:?}", td.errors);
    let nodes = result.expect("set and read back");
    assert!(nodes.iter().all(|v| v == "0"), "{nodes:?}");
    assert_eq!(fabric.unwrap(), "1", "the fabric namespace is not a node");
    assert_eq!(std::fs::read_to_string(&root_path).unwrap(), root_before);
    assert!(netns::list_run(&prefix).unwrap().is_empty());
}
