//! The `proxy-modes` lesson against the real kernel: the four `scenarios/proxy-modes-*`
//! scenarios (one Service, the same objects through `manifestFiles`) run under the
//! iptables, nftables, ipvs (falling back to iptables: this kernel has no IPVS) and
//! userspace proxies. Their matrices must be equal cell for cell, the rules installed in
//! the nodes must differ from mode to mode (ipvs's installed part is iptables mode's, plus
//! the rendered IPVS table), and the backends must see the client under kube-proxy's NAT
//! modes but the node under the userspace proxy. Also: `fallback: fail` stops the run
//! before anything is built, and `cluster.ipvs` is checked at parse time. Needs root:
//! ignored unless run with `--include-ignored` (see `common`).

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::run::{RunOptions, RunReport, new_prefix, run};
use sim::matrix::Verdict;
use sim::scenario::{IpvsFallback, Peer, ProxyKind};

const MODES: [&str; 4] = ["iptables", "nftables", "ipvs", "userspace"];

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("scenarios")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn options() -> RunOptions {
    RunOptions {
        prefix: new_prefix(),
        repeat: 3,
        ..RunOptions::default()
    }
}

fn run_mode(rt: &tokio::runtime::Runtime, mode: &str) -> RunReport {
    let path = scenarios_dir().join(format!("proxy-modes-{mode}.yaml"));
    let scenario = sim::scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let opts = options();
    let report = rt
        .block_on(run(&scenario, &opts))
        .unwrap_or_else(|e| panic!("proxy-modes-{mode}: {e:#}"));
    assert!(
        harness::netns::list_run(&opts.prefix).unwrap().is_empty(),
        "proxy-modes-{mode} left namespaces behind"
    );
    assert!(
        report.teardown_errors.is_empty(),
        "{:?}",
        report.teardown_errors
    );
    report
}

/// Each cell: (from, to, port) → (measured verdict, oracle's verdict).
type Matrix = BTreeMap<String, (Option<Verdict>, Option<Verdict>)>;

fn matrix(report: &RunReport) -> Matrix {
    report
        .steps
        .iter()
        .flat_map(|s| &s.cells)
        .map(|c| {
            (
                format!("{} -> {} {}", c.from, c.to, c.port),
                (c.measured.outcome.verdict(), c.oracle),
            )
        })
        .collect()
}

/// The source address each answering pod cell's backend saw, with the client's own.
fn sources(report: &RunReport) -> Vec<(Peer, Ipv4Addr, Ipv4Addr)> {
    report
        .steps
        .iter()
        .flat_map(|s| &s.cells)
        .filter(|c| matches!(c.from, Peer::Pod(_)))
        .filter_map(|c| Some((c.from.clone(), c.client_ip?, c.measured.seen_source?)))
        .collect()
}

#[test]
#[ignore = "needs root: runs service proxies in network namespaces"]
fn four_proxy_modes_one_matrix_different_rules() {
    common::require_root(&[]);
    let rt = runtime();
    let mut reports: BTreeMap<&str, RunReport> = BTreeMap::new();
    for mode in MODES {
        let report = run_mode(&rt, mode);
        assert!(report.ok(), "proxy-modes-{mode} has wrong cells");
        reports.insert(mode, report);
    }

    let reference = matrix(&reports["iptables"]);
    assert_eq!(reference.len(), 10, "{reference:?}");
    assert!(
        reference
            .values()
            .all(|v| *v == (Some(Verdict::Allow), Some(Verdict::Allow))),
        "{reference:?}"
    );
    for mode in MODES {
        assert_eq!(
            matrix(&reports[mode]),
            reference,
            "{mode} differs from iptables"
        );
    }

    // The installed rules: per node, the last step.
    let installed = |mode: &str| -> String {
        reports[mode]
            .proxy_rules
            .last()
            .unwrap()
            .iter()
            .map(|(n, t)| format!("{n}\n{t}"))
            .collect()
    };
    for (i, a) in MODES.iter().enumerate() {
        for b in &MODES[i + 1..] {
            assert_ne!(installed(a), installed(b), "{a} and {b} installed the same");
        }
    }
    assert!(installed("iptables").contains("-j KUBE-SVC-"));
    assert!(installed("nftables").contains("table ip kube-proxy"));
    assert!(installed("userspace").contains("-j REDIRECT --to-ports 20000"));
    // ipvs fell back: iptables mode's rules are installed, the IPVS table only rendered.
    let ipvs = installed("ipvs");
    assert!(ipvs.contains("-j KUBE-SVC-"), "{ipvs}");
    assert!(ipvs.contains("NOT installed"), "{ipvs}");
    assert!(ipvs.contains("TCP  10.96.0.10:80 rr\n"), "{ipvs}");
    assert!(ipvs.contains("UDP  10.96.0.10:53 rr\n"), "{ipvs}");
    assert!(
        reports["ipvs"]
            .notes
            .iter()
            .any(|n| n.contains("no IPVS") && n.contains("iptables proxy runs instead")),
        "{:?}",
        reports["ipvs"].notes
    );

    // Who the backend thinks is calling: the client under NAT modes, the node under
    // the userspace proxy (its bridge or underlay address).
    for mode in ["iptables", "nftables", "ipvs"] {
        let s = sources(&reports[mode]);
        assert!(!s.is_empty());
        for (from, own, seen) in s {
            // A backend that is the client itself (hairpin) is masqueraded in every mode.
            if from.to_string().starts_with("default/client-") {
                assert_eq!(own, seen, "{mode}: {from} seen as {seen}");
            }
        }
    }
    let nodes: [Ipv4Addr; 4] = [
        "10.244.1.1".parse().unwrap(),
        "10.244.2.1".parse().unwrap(),
        "192.168.200.11".parse().unwrap(),
        "192.168.200.12".parse().unwrap(),
    ];
    let s = sources(&reports["userspace"]);
    assert!(!s.is_empty());
    for (from, own, seen) in s {
        assert_ne!(own, seen, "userspace: {from} seen as itself");
        assert!(nodes.contains(&seen), "userspace: {from} seen as {seen}");
    }
}

#[test]
#[ignore = "needs root: runs service proxies in network namespaces"]
fn ipvs_without_the_kernel_module_fails_before_building_unless_told_to_fall_back() {
    common::require_root(&[]);
    let ipvs = scenarios_dir().join("proxy-modes-ipvs.yaml");
    let text = std::fs::read_to_string(&ipvs).unwrap();
    let parse = |t: &str| sim::scenario::parse_str(&ipvs, t);
    let s = parse(&text).unwrap();
    let ProxyKind::Ipvs(config) = s.cluster.proxy else {
        panic!("{:?}", s.cluster.proxy);
    };
    assert_eq!(config.fallback, IpvsFallback::Iptables);

    // The default fallback is `fail`.
    let failing = text.replace(
        "ipvs: {scheduler: rr, fallback: iptables}",
        "ipvs: {scheduler: sh}",
    );
    let s = parse(&failing).unwrap();
    if harness::proxy::ipvs::detect().unwrap().is_some() {
        eprintln!("this kernel has IPVS: the fail path cannot be shown here");
        return;
    }
    let rt = runtime();
    let opts = options();
    let err = rt.block_on(run(&s, &opts)).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("this kernel has no IPVS"), "{msg}");
    assert!(msg.contains("modprobe ip_vs"), "{msg}");
    assert!(msg.contains("cluster.ipvs.fallback: iptables"), "{msg}");
    // Nothing was built.
    assert!(harness::netns::list_run(&opts.prefix).unwrap().is_empty());
    rt.shutdown_timeout(Duration::from_secs(1));
}

#[test]
fn cluster_ipvs_is_checked_where_it_is_written() {
    let ipvs = scenarios_dir().join("proxy-modes-ipvs.yaml");
    let text = std::fs::read_to_string(&ipvs).unwrap();
    let err = |t: String| {
        sim::scenario::parse_str(&ipvs, &t)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let line = text.lines().position(|l| l.contains("ipvs: {")).unwrap() + 1;
    let bad = err(text.replace("scheduler: rr", "scheduler: wrr"));
    assert!(bad.contains("not an IPVS scheduler"), "{bad}");
    assert!(
        bad.contains(&format!(":{line}:")),
        "no line {line} in: {bad}"
    );
    let bad = err(text.replace("fallback: iptables", "fallback: nftables"));
    assert!(bad.contains("fallback"), "{bad}");
    let bad = err(text.replace("fallback: iptables", "fallbak: iptables"));
    assert!(bad.contains("fallbak"), "{bad}");
    let bad = err(text.replace("proxy: ipvs", "proxy: iptables"));
    assert!(
        bad.contains("cluster.ipvs only applies with proxy: ipvs"),
        "{bad}"
    );
    // Every scheduler parses.
    for sched in ["rr", "lc", "dh", "sh"] {
        let t = text.replace("scheduler: rr", &format!("scheduler: {sched}"));
        let s = sim::scenario::parse_str(&ipvs, &t).unwrap();
        let ProxyKind::Ipvs(c) = s.cluster.proxy else {
            panic!()
        };
        assert_eq!(c.scheduler.as_str(), sched);
    }
    let s = sim::scenario::load(&scenarios_dir().join("proxy-modes-userspace.yaml")).unwrap();
    assert_eq!(s.cluster.proxy, ProxyKind::Userspace);
}

/// The IPVS-mode netfilter state sim renders is accepted by the real tools: the ipsets
/// and rules `harness::proxy::ipvs::load_netfilter` writes load into a fresh namespace
/// (IPVS itself is absent, but sets and iptables are not), and `iptables-save` then
/// shows the set-matching rules. A NodePort and a load balancer whose source range
/// admits the node fill the NodePort and load-balancer sets.
#[test]
#[ignore = "needs root: runs service proxies in network namespaces"]
fn rendered_ipvs_netfilter_state_loads_into_a_namespace() {
    use sim::cluster::IpvsScheduler;
    use sim::kube_proxy::ipvs::render;
    use sim::kube_proxy::model::{Endpoint, ProxyConfig, ProxyInput, ServicePort};

    common::require_root(&[]);
    let node_ip: Ipv4Addr = "192.168.200.11".parse().unwrap();
    let mut sp = ServicePort::cluster_ip(
        "default",
        "web",
        Some("http"),
        sim::protocol::Protocol::Tcp,
        "10.96.0.10".parse().unwrap(),
        80,
    );
    sp.node_port = Some(30080);
    sp.load_balancer_ips = vec!["203.0.113.10".parse().unwrap()];
    sp.load_balancer_source_ranges = vec!["192.168.200.0/24".parse().unwrap()];
    sp.endpoints = vec![
        Endpoint::ready("10.244.1.2".parse().unwrap(), 8080, Some("n1")),
        Endpoint::ready("10.244.2.2".parse().unwrap(), 8080, Some("n2")),
    ];
    let input = ProxyInput {
        node: "n1".into(),
        node_ip,
        cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
        config: ProxyConfig::default(),
        services: vec![sp],
    };
    let rules = render(&input, IpvsScheduler::Rr, &[node_ip]).unwrap();
    let name = format!("{}-n1", new_prefix());
    let ns = harness::netns::Netns::create_many(std::slice::from_ref(&name))
        .unwrap()
        .remove(0);
    let outcome = std::panic::catch_unwind(|| {
        harness::proxy::ipvs::load_netfilter(&ns, "n1", &rules, true).unwrap();
        // A second sync (no jumps, sets flushed and refilled) is accepted too.
        harness::proxy::ipvs::load_netfilter(&ns, "n1", &rules, false).unwrap();
        let saved = harness::policy::run_in(&ns, "iptables-nft-save", &[], None).unwrap();
        let sets = harness::policy::run_in(&ns, "ipset", &["list", "-n"], None).unwrap();
        (saved, sets)
    });
    drop(ns);
    harness::netns::delete(&name).unwrap();
    let (saved, sets) = outcome.unwrap_or_else(|e| std::panic::resume_unwind(e));
    for line in [
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        "-A KUBE-SERVICES -m comment --comment \"Kubernetes service lb portal\" -m set --match-set KUBE-LOAD-BALANCER dst,dst -j KUBE-LOAD-BALANCER",
        "-A KUBE-NODE-PORT -p tcp -m comment --comment \"Kubernetes nodeport TCP port for masquerade purpose\" -m set --match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ",
        "-A KUBE-SERVICES ! -s 10.244.0.0/16 -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ",
        "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT --reject-with icmp-port-unreachable",
    ] {
        assert!(saved.lines().any(|l| l == line), "missing {line}\n{saved}");
    }
    assert_eq!(sets.lines().count(), 17, "{sets}");
}
