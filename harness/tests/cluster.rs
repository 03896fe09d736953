//! The virtual cluster against the real kernel and the real CNI plugins: bring-up,
//! verification, cross-node pings, deterministic addresses, a stable description, teardown
//! without a trace, the sweep after a killed run, and the router with external hosts behind
//! it (pods and hosts reach each other without NAT). Needs root: ignored unless run with
//! `--include-ignored` (see `common`). Also checks that the root namespace's links,
//! addresses and routes are exactly what they were before.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use harness::cluster::Cluster;
use harness::netns::{self, Netns};
use harness::sweep;
use sim::matrix::{Outcome, Verdict};
use sim::objects::PodRef;
use sim::plan::Plan;
use sim::scenario::{ClusterConfig, ExternalHost, Peer};

/// The tests build clusters at the same time; the root-namespace check must not see
/// another test's half-built cluster (nothing should show there anyway, but the tests
/// also time things).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn plan(nodes: usize) -> Plan {
    let cluster = ClusterConfig {
        nodes: (1..=nodes).map(|i| format!("n{i}")).collect(),
        pod_cidr: "10.244.0.0/16".parse().unwrap(),
        service_cidr: "10.96.0.0/12".parse().unwrap(),
        network: Default::default(),
        policy: Default::default(),
        deny: Default::default(),
        proxy: Default::default(),
        cni: Default::default(),
        external_hosts: vec![],
    };
    Plan::new(&harness::run::new_prefix(), &cluster).unwrap()
}

/// Five pods over two nodes, round-robin like the model shorthand.
fn five_pods() -> Vec<(PodRef, String)> {
    let pods = [("x", "a"), ("x", "b"), ("y", "a"), ("y", "b"), ("z", "c")];
    pods.iter()
        .enumerate()
        .map(|(i, (ns, name))| (PodRef::new(*ns, *name), format!("n{}", i % 2 + 1)))
        .collect()
}

/// The root namespace as `ip` shows it.
fn root_snapshot() -> String {
    let mut out = String::new();
    for args in [
        &["-o", "link"][..],
        &["-o", "addr"],
        &["route", "show", "table", "all"],
    ] {
        let o = Command::new("ip").args(args).output().expect("run ip");
        assert!(o.status.success(), "ip {args:?} failed");
        // Link and address lines carry counters that change on their own only in `-s`
        // mode; these outputs are stable unless something changed.
        out.push_str(&String::from_utf8_lossy(&o.stdout));
    }
    out
}

fn our_namespaces(prefix: &str) -> Vec<String> {
    netns::list_run(prefix).unwrap()
}

fn ping(c: &Cluster, from: &PodRef, to: Ipv4Addr) -> bool {
    let ns = &c.pod(from).unwrap().netns;
    ns.command("ping")
        .args(["-c1", "-W1", "-q", &to.to_string()])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Describe output with the run's node subnets intact but nothing run-specific.
fn assert_no_run_specifics(text: &str, plan: &Plan) {
    assert!(
        !text.contains(&plan.prefix),
        "describe() leaks the prefix:\n{text}"
    );
    assert!(
        !text.contains("veth"),
        "describe() leaks veth names:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: builds clusters in network namespaces"]
async fn two_nodes_five_pods_build_verify_ping_teardown() {
    common::require_root(&[]);
    let _serial = SERIAL.lock().await;
    netns::init();
    let root_before = root_snapshot();
    let pods = five_pods();

    let mut ips_per_run = vec![];
    let mut descriptions = vec![];
    for run in 0..2 {
        let plan = plan(2);
        let prefix = plan.prefix.clone();
        let state_dir = plan.state_dir();
        let t0 = Instant::now();
        let mut c = Cluster::create(plan).await.expect("create");
        let created = t0.elapsed();
        assert_eq!(
            sweep::live_owner(std::path::Path::new(&state_dir)),
            Some(std::process::id())
        );
        let t1 = Instant::now();
        let ips = c.add_pods(&pods).await.expect("add pods");
        let added = t1.elapsed();
        let t2 = Instant::now();
        c.verify().await.expect("verify");
        let verified = t2.elapsed();
        eprintln!(
            "run {run}: create {created:?}, add 5 pods {added:?}, verify {verified:?}, total {:?}",
            t0.elapsed()
        );

        // Addresses: in their node's subnet, distinct, and what the handles say.
        for (pod, ip) in &ips {
            let h = c.pod(pod).unwrap();
            assert_eq!(h.ip, *ip);
            assert!(
                c.plan().node(&h.node).unwrap().pod_subnet.contains(ip),
                "{pod} {ip}"
            );
            assert_eq!(h.gateway, c.plan().node(&h.node).unwrap().gateway);
        }
        let mut distinct: Vec<Ipv4Addr> = ips.iter().map(|(_, ip)| *ip).collect();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), pods.len());

        // Cross-node and same-node reachability with real packets.
        let xa = PodRef::new("x", "a"); // n1
        let xb = PodRef::new("x", "b"); // n2
        let ya = PodRef::new("y", "a"); // n1
        assert_ne!(c.pod(&xa).unwrap().node, c.pod(&xb).unwrap().node);
        assert!(
            ping(&c, &xa, c.pod(&xb).unwrap().ip),
            "x/a cannot ping x/b across nodes"
        );
        assert!(
            ping(&c, &xb, c.pod(&xa).unwrap().ip),
            "x/b cannot ping x/a across nodes"
        );
        assert!(
            ping(&c, &xa, c.pod(&ya).unwrap().ip),
            "x/a cannot ping y/a on its node"
        );
        assert!(ping(&c, &xa, Ipv4Addr::LOCALHOST), "x/a's lo does not work");
        let n2 = c.plan().node("n2").unwrap().underlay_ip;
        assert!(
            ping(&c, &xa, n2),
            "x/a cannot reach node n2's underlay address"
        );

        // CHECK agrees with the kernel.
        c.check_pod(&xa).await.expect("CNI CHECK");

        let text = c.describe().await.expect("describe");
        assert_eq!(
            text,
            c.describe().await.unwrap(),
            "describe() is not stable within a run"
        );
        assert_no_run_specifics(&text, c.plan());
        assert!(
            text.contains("route 10.244.2.0/24 via 192.168.200.12 dev eth0"),
            "{text}"
        );
        eprintln!("{text}");
        descriptions.push(text);
        ips_per_run.push(ips);

        let report = c.teardown().await;
        eprintln!(
            "run {run}: teardown {:?} (CNI DEL {:?})",
            report.elapsed, report.cni_del
        );
        assert!(report.is_ok(), "teardown errors: {:?}", report.errors);
        assert_eq!(report.namespaces_removed, 1 + 2 + pods.len());
        assert!(
            our_namespaces(&prefix).is_empty(),
            "namespaces left: {:?}",
            our_namespaces(&prefix)
        );
        assert!(
            !std::path::Path::new(&state_dir).exists(),
            "{state_dir} left behind"
        );
    }
    assert_eq!(
        ips_per_run[0], ips_per_run[1],
        "pod addresses differ between two builds"
    );
    assert_eq!(
        descriptions[0], descriptions[1],
        "describe() differs between two builds"
    );
    assert_eq!(root_snapshot(), root_before, "the root namespace changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: builds clusters in network namespaces"]
async fn verify_reports_every_missing_piece() {
    common::require_root(&[]);
    let _serial = SERIAL.lock().await;
    let root_before = root_snapshot();
    let mut c = Cluster::create(plan(2)).await.expect("create");
    let pods = five_pods();
    c.add_pods(&pods[..2]).await.expect("add pods");
    c.verify().await.expect("verify before breaking anything");

    // Break two things in two namespaces: a host-gw route in n1, the default route of x/a.
    let n1 = c.node_netns("n1").unwrap().clone();
    let st = n1
        .command("ip")
        .args(["route", "del", "10.244.2.0/24"])
        .status()
        .unwrap();
    assert!(st.success());
    let xa = c.pod(&PodRef::new("x", "a")).unwrap().netns.clone();
    let st = xa
        .command("ip")
        .args(["route", "del", "default"])
        .status()
        .unwrap();
    assert!(st.success());
    let fault = c.verify().await.expect_err("verify must notice");
    eprintln!("{fault}");
    assert_eq!(fault.problems.len(), 2, "{:?}", fault.problems);
    assert!(
        fault.problems[0].starts_with("node n1: no route 10.244.2.0/24"),
        "{:?}",
        fault.problems
    );
    assert!(
        fault.problems[1].starts_with("pod x/a: no default route"),
        "{:?}",
        fault.problems
    );
    // CHECK sees the broken pod too.
    assert!(c.check_pod(&PodRef::new("x", "a")).await.is_err());

    // Removing a pod removes its namespace and its cache entries.
    let prefix = c.plan().prefix.clone();
    c.remove_pods(&[PodRef::new("x", "b")])
        .await
        .expect("remove pod");
    assert!(c.pod(&PodRef::new("x", "b")).is_none());
    assert_eq!(our_namespaces(&prefix).len(), 1 + 2 + 1);
    drop((n1, xa));
    let report = c.teardown().await;
    assert!(report.is_ok(), "{:?}", report.errors);
    assert!(our_namespaces(&prefix).is_empty());
    assert_eq!(root_snapshot(), root_before, "the root namespace changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: builds clusters in network namespaces"]
async fn a_killed_run_is_swept_by_its_prefix() {
    common::require_root(&[]);
    let _serial = SERIAL.lock().await;
    let root_before = root_snapshot();
    let mut c = Cluster::create(plan(2)).await.expect("create");
    c.add_pods(&five_pods()).await.expect("add pods");
    let prefix = c.plan().prefix.clone();
    let state_dir = c.plan().state_dir();
    // A killed run: nothing of the cluster value runs any more.
    std::mem::forget(c);
    assert_eq!(our_namespaces(&prefix).len(), 1 + 2 + 5);

    // Our own pid owns it, so an unforced clean leaves it alone. (Only this run is
    // looked at: a global `clean` would also sweep other people's orphaned runs.)
    let report = sweep::clean_run(&prefix, false);
    assert_eq!(report.skipped.len(), 1, "{report}");
    assert_eq!(report.skipped[0].pid, Some(std::process::id()));
    assert_eq!(report.skipped[0].reason, "owns it");
    assert_eq!(our_namespaces(&prefix).len(), 1 + 2 + 5);
    // Without the owner file, the handles this process still holds (leaked with the
    // cluster value) mark the namespaces as in use.
    std::fs::remove_file(std::path::Path::new(&state_dir).join(sweep::OWNER_FILE)).unwrap();
    let report = sweep::clean_run(&prefix, false);
    assert_eq!(report.skipped.len(), 1, "{report}");
    assert_eq!(report.skipped[0].reason, "uses its namespaces");
    assert_eq!(our_namespaces(&prefix).len(), 1 + 2 + 5);

    // ...and the fallback sweep removes it, DELeting each cached attachment.
    let report = sweep::clean_prefix(&prefix);
    eprintln!("{report}");
    assert!(report.is_ok(), "{:?}", report.errors);
    assert_eq!(report.swept, vec![prefix.clone()]);
    assert_eq!(report.cni_deletes, 2 * 5, "lo and eth0 of each pod");
    assert_eq!(report.namespaces_removed.len(), 1 + 2 + 5);
    assert!(our_namespaces(&prefix).is_empty());
    assert!(!std::path::Path::new(&state_dir).exists());
    // Sweeping again finds nothing.
    let again = sweep::clean_prefix(&prefix);
    assert!(again.is_ok() && again.swept.is_empty(), "{again:?}");
    assert!(again.namespaces_removed.is_empty() && again.cni_deletes == 0);
    assert_eq!(root_snapshot(), root_before, "the root namespace changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: builds clusters in network namespaces"]
async fn bad_requests_create_nothing() {
    common::require_root(&[]);
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::create(plan(1)).await.expect("create");
    let prefix = c.plan().prefix.clone();
    let before = our_namespaces(&prefix);
    let err = c
        .add_pods(&[(PodRef::new("x", "a"), "n9".into())])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("n9"), "{err}");
    let dup = [
        (PodRef::new("x", "a"), "n1".to_string()),
        (PodRef::new("x", "a"), "n1".to_string()),
    ];
    assert!(c.add_pods(&dup).await.is_err());
    assert_eq!(our_namespaces(&prefix), before);
    // The same prefix cannot be claimed twice while the run lives.
    let err = Cluster::create(c.plan().clone()).await.unwrap_err();
    assert!(err.to_string().contains("already in use"), "{err}");
    assert_eq!(
        our_namespaces(&prefix),
        before,
        "a refused create must not remove the live run"
    );
    let report = c.teardown().await;
    assert!(report.is_ok(), "{:?}", report.errors);
    assert!(our_namespaces(&prefix).is_empty());
}

/// The standard model (x, y, z × a, b, c) on two nodes: prints bring-up and teardown
/// times (median of 5). Checks correctness, not speed: the machine is shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: builds clusters in network namespaces"]
async fn nine_pods_timing() {
    common::require_root(&[]);
    let _serial = SERIAL.lock().await;
    let pods: Vec<(PodRef, String)> = ["x", "y", "z"]
        .iter()
        .flat_map(|ns| ["a", "b", "c"].map(|p| PodRef::new(*ns, p)))
        .enumerate()
        .map(|(i, p)| (p, format!("n{}", i % 2 + 1)))
        .collect();
    let mut rows: Vec<[Duration; 5]> = vec![];
    for _ in 0..5 {
        let t0 = Instant::now();
        let mut c = Cluster::create(plan(2)).await.expect("create");
        let create = t0.elapsed();
        c.add_pods(&pods).await.expect("add pods");
        let add = t0.elapsed() - create;
        c.verify().await.expect("verify");
        let up = t0.elapsed();
        let report = c.teardown().await;
        assert!(report.is_ok(), "{:?}", report.errors);
        rows.push([create, add, up, report.elapsed, report.cni_del]);
    }
    let median = |i: usize| {
        let mut v: Vec<Duration> = rows.iter().map(|r| r[i]).collect();
        v.sort();
        v[v.len() / 2]
    };
    eprintln!(
        "9 pods on 2 nodes, median of 5: create {:?}, add_pods {:?}, up incl. verify {:?}, \
         teardown {:?} (CNI DEL {:?})",
        median(0),
        median(1),
        median(2),
        median(3),
        median(4)
    );
}

/// A plugin failure names the plugin, pod, node and the plugin's own error, and every
/// pod of the failed call is removed again; the pods of other calls stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: builds clusters in network namespaces"]
async fn a_failed_add_is_rolled_back_and_explained() {
    common::require_root(&[]);
    let _serial = SERIAL.lock().await;
    let root_before = root_snapshot();
    let mut c = Cluster::create(plan(2)).await.expect("create");
    let prefix = c.plan().prefix.clone();
    let pods = five_pods();
    c.add_pods(&pods[1..2]).await.expect("x/b on n2");
    // Make n1's cni0 something the bridge plugin cannot use: a veth.
    let n1 = c.node_netns("n1").unwrap().clone();
    let st = n1
        .command("ip")
        .args([
            "link", "add", "cni0", "type", "veth", "peer", "name", "cni0peer",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    drop(n1);
    let err = c
        .add_pods(&[pods[0].clone(), pods[3].clone()])
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    eprintln!("{msg}");
    assert!(
        msg.contains("CNI ADD of plugin bridge for pod x/a (eth0) on node n1: plugin error code"),
        "{msg}"
    );
    assert!(c.pod(&pods[0].0).is_none() && c.pod(&pods[3].0).is_none());
    assert!(c.pod(&pods[1].0).is_some());
    // Fabric, two nodes and x/b: the namespaces of the failed call are gone.
    assert_eq!(
        our_namespaces(&prefix).len(),
        1 + 2 + 1,
        "{:?}",
        our_namespaces(&prefix)
    );
    let cache = c.state_dir().join("n2/cache");
    let cached: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        cached.len(),
        2,
        "only x/b's lo and eth0 stay cached: {cached:?}"
    );
    c.verify().await.expect("the pods that stayed are intact");
    let report = c.teardown().await;
    assert!(report.is_ok(), "{:?}", report.errors);
    assert!(our_namespaces(&prefix).is_empty());
    assert_eq!(root_snapshot(), root_before, "the root namespace changed");
}

/// A plan with `nodes` nodes and the given external hosts (name, address).
fn plan_with_hosts(nodes: usize, hosts: &[(&str, &str)]) -> Plan {
    let cluster = ClusterConfig {
        nodes: (1..=nodes).map(|i| format!("n{i}")).collect(),
        pod_cidr: "10.244.0.0/16".parse().unwrap(),
        service_cidr: "10.96.0.0/12".parse().unwrap(),
        network: Default::default(),
        policy: Default::default(),
        deny: Default::default(),
        proxy: Default::default(),
        cni: Default::default(),
        external_hosts: hosts
            .iter()
            .map(|(name, address)| ExternalHost {
                name: name.to_string(),
                address: address.parse().unwrap(),
                serve: vec![],
            })
            .collect(),
    };
    Plan::new(&harness::run::new_prefix(), &cluster).unwrap()
}

fn ping_from(ns: &Netns, to: Ipv4Addr) -> bool {
    ns.command("ping")
        .args(["-c1", "-W1", "-q", &to.to_string()])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Opens a TCP connection from `client` to a listener in `server` at `addr`, and returns
/// the client address the server's `accept` saw.
fn seen_source(server: &Netns, client: &Netns, addr: Ipv4Addr, port: u16) -> Ipv4Addr {
    let listener = server
        .enter(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))
        .unwrap_or_else(|e| panic!("listen on {port} in {}: {e}", server.name()));
    let target = SocketAddr::from((addr, port));
    let _conn = client
        .enter(|| TcpStream::connect_timeout(&target, Duration::from_secs(2)))
        .unwrap_or_else(|e| panic!("connect from {} to {target}: {e}", client.name()));
    let (_, peer) = listener.accept().expect("accept");
    match peer.ip() {
        IpAddr::V4(ip) => ip,
        other => panic!("IPv6 peer {other}"),
    }
}

/// The ipBlock lesson's outside world: a router on the underlay and two hosts behind it
/// (one inside 172.17.0.0/16, one in its `except` range 172.17.1.0/24), reached from pods
/// on both nodes and reaching them, with no NAT in either direction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: builds clusters in network namespaces"]
async fn router_and_external_hosts_build_verify_ping_teardown() {
    common::require_root(&[]);
    let _serial = SERIAL.lock().await;
    netns::init();
    let root_before = root_snapshot();
    let hosts = [("pc", "172.17.0.5"), ("lab", "172.17.1.10")];
    let pods = [
        (PodRef::new("x", "a"), "n1".to_string()),
        (PodRef::new("x", "b"), "n2".to_string()),
    ];
    let mut descriptions = vec![];
    for run in 0..2 {
        let plan = plan_with_hosts(2, &hosts);
        let prefix = plan.prefix.clone();
        let t0 = Instant::now();
        let mut c = Cluster::create(plan).await.expect("create");
        let created = t0.elapsed();
        c.add_pods(&pods).await.expect("add pods");
        let t1 = Instant::now();
        c.verify().await.expect("verify");
        eprintln!(
            "run {run}: create with router and 2 hosts {created:?}, verify {:?}",
            t1.elapsed()
        );
        let router = c.router_netns().expect("a router").clone();
        assert_eq!(router.name(), format!("{prefix}-router"));
        assert_eq!(
            our_namespaces(&prefix).len(),
            1 + 2 + 1 + 2 + 2,
            "{:?}",
            our_namespaces(&prefix)
        );
        assert!(c.host("nobody").is_none());

        for (name, address) in hosts {
            let (hns, ip) = c.host(name).expect("host handle");
            assert_eq!(ip.to_string(), address);
            assert_eq!(hns.name(), format!("{prefix}-host-{name}"));
            for (pod, _) in &pods {
                let p = c.pod(pod).unwrap();
                assert!(ping_from(&p.netns, ip), "{pod} cannot ping host {name}");
                assert!(ping_from(&hns, p.ip), "host {name} cannot ping {pod}");
                // No NAT either way: each side sees the other's own address.
                assert_eq!(
                    seen_source(&hns, &p.netns, ip, 5978),
                    p.ip,
                    "host {name} sees another address than {pod}'s"
                );
                assert_eq!(
                    seen_source(&p.netns, &hns, p.ip, 5979),
                    ip,
                    "{pod} sees another address than host {name}'s"
                );
            }
            // Nodes reach the hosts too (from their underlay address).
            let n1 = c.node_netns("n1").unwrap();
            assert!(ping_from(n1, ip), "node n1 cannot ping host {name}");
        }
        // The hosts reach each other through the router.
        let (pc, _) = c.host("pc").unwrap();
        let (_, lab_ip) = c.host("lab").unwrap();
        assert!(ping_from(&pc, lab_ip), "host pc cannot ping host lab");

        let text = c.describe().await.expect("describe");
        assert_eq!(
            text,
            c.describe().await.unwrap(),
            "describe() is not stable"
        );
        assert_no_run_specifics(&text, c.plan());
        for want in [
            "fabric br0 ports: ul0 ul1 ul2",
            "router\n  eth0 192.168.200.1/24\n  h1 169.254.1.1/32 (host pc)\n  h2 169.254.1.1/32 (host lab)\n",
            "  route 10.244.1.0/24 via 192.168.200.11 dev eth0\n",
            "  route 172.17.0.5/32 dev h1 scope link\n",
            "  route 172.17.1.10/32 dev h2 scope link\n",
            "host lab\n  eth0 172.17.1.10/32\n  lo 127.0.0.1/8\n",
            "host pc\n  eth0 172.17.0.5/32\n",
            "  route 169.254.1.1/32 dev eth0 scope link\n",
            "  route default via 169.254.1.1 dev eth0 onlink\n",
            "  route 172.17.0.5/32 via 192.168.200.1 dev eth0\n",
        ] {
            assert!(text.contains(want), "describe() lacks {want:?}:\n{text}");
        }
        if run == 0 {
            eprintln!("{text}");
        }
        descriptions.push(text);

        // verify() names each missing piece: a node's route to a host, a host's default
        // route, and the router's route to a node's pods.
        let n1 = c.node_netns("n1").unwrap().clone();
        let ip = |ns: &Netns, args: &[&str]| {
            assert!(
                ns.command("ip").args(args).status().unwrap().success(),
                "ip {args:?}"
            );
        };
        ip(&n1, &["route", "del", "172.17.1.10/32"]);
        ip(&pc, &["route", "del", "default"]);
        ip(&router, &["route", "del", "10.244.2.0/24"]);
        ip(&router, &["link", "set", "h2", "down"]);
        let fault = c.verify().await.expect_err("verify must notice");
        eprintln!("{fault}");
        assert_eq!(
            fault.problems,
            vec![
                "node n1: no route 172.17.1.10/32 via 192.168.200.1 dev eth0 (host lab)",
                "router: h2 is down",
                // The kernel drops a link's routes when it goes down.
                "router: no route 172.17.1.10/32 dev h2 (host lab)",
                "router: no route 10.244.2.0/24 via 192.168.200.12 dev eth0 (node n2)",
                "host pc: no default route via 169.254.1.1 dev eth0",
            ],
        );

        drop((n1, pc, router));
        let report = c.teardown().await;
        assert!(report.is_ok(), "teardown errors: {:?}", report.errors);
        assert_eq!(report.namespaces_removed, 1 + 2 + 1 + 2 + 2);
        assert!(
            our_namespaces(&prefix).is_empty(),
            "namespaces left: {:?}",
            our_namespaces(&prefix)
        );
    }
    assert_eq!(
        descriptions[0], descriptions[1],
        "describe() differs between two builds"
    );
    assert_eq!(root_snapshot(), root_before, "the root namespace changed");
}

/// A scenario with two external hosts, run end to end through `harness::run::run`: the
/// hosts' servers answer as `host/NAME`, host↔pod cells are measured in both directions
/// with each side's own address, and an ipBlock with `except` tells the two hosts apart.
const HOSTS_SCENARIO: &str = r#"
name: hosts-end-to-end
summary: Pods and hosts outside the cluster reach each other through the router.
description: |
  Test scenario: host/pc sits in 172.17.0.0/16, host/lab in its except range.
cluster:
  nodes: 2
  externalHosts:
    - {name: pc, address: 172.17.0.5, serve: [TCP/5978]}
    - {name: lab, address: 172.17.1.10}
model:
  namespaces: [x]
  pods: [a, b]
  ports: [80]
  protocols: [TCP]
probe:
  from: [x/a, x/b, host/pc, host/lab]
  to: [x/a, host/pc]
expect:
  default: allow
steps:
  - name: ingress to x/a only from 172.17.0.0/16 except 172.17.1.0/24
    apply:
      - apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: from-outside, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: a}}
          ingress:
            - from: [{ipBlock: {cidr: 172.17.0.0/16, except: [172.17.1.0/24]}}]
    expect:
      default: allow
      exceptions:
        - {from: x/b, to: x/a, port: 80, allowed: false}
        - {from: host/lab, to: x/a, port: 80, allowed: false}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: builds clusters in network namespaces"]
async fn a_scenario_measures_host_and_pod_cells() {
    common::require_root(&[]);
    let _serial = SERIAL.lock().await;
    netns::init();
    let root_before = root_snapshot();
    let scenario = sim::scenario::parse_str(
        std::path::Path::new("hosts-end-to-end.yaml"),
        HOSTS_SCENARIO,
    )
    .expect("parse the scenario");
    let opts = harness::run::RunOptions {
        prefix: harness::run::new_prefix(),
        ..Default::default()
    };
    let t = Instant::now();
    let report = harness::run::run(&scenario, &opts).await.expect("run");
    eprintln!(
        "scenario with 2 hosts: {:?} in all ({:?})",
        t.elapsed(),
        report.timings
    );
    for step in &report.steps {
        eprintln!("{}", sim::matrix::render_step(step));
    }
    assert!(report.ok(), "wrong cells");
    assert!(
        report.teardown_errors.is_empty(),
        "{:?}",
        report.teardown_errors
    );
    assert!(our_namespaces(&opts.prefix).is_empty());
    assert!(report.built.contains("\nrouter\n"), "{}", report.built);
    assert!(report.built.contains("\nhost pc\n"), "{}", report.built);

    let pc = Peer::Host("pc".into());
    let lab = Peer::Host("lab".into());
    let xa = Peer::Pod(PodRef::new("x", "a"));
    let xb = Peer::Pod(PodRef::new("x", "b"));
    let cell = |step: usize, from: &Peer, to: &Peer| {
        report.steps[step]
            .cells
            .iter()
            .find(|c| c.from == *from && c.to == *to)
            .unwrap_or_else(|| panic!("no cell {from} -> {to} in step {step}"))
            .clone()
    };
    let pc_ip: Ipv4Addr = "172.17.0.5".parse().unwrap();
    let lab_ip: Ipv4Addr = "172.17.1.10".parse().unwrap();
    // Pods to the host: the host's server answered, and saw the pod's own address.
    for from in [&xa, &xb] {
        let c = cell(0, from, &pc);
        assert_eq!(c.port.to_string(), "TCP/5978");
        assert_eq!(c.measured.outcome, Outcome::Allowed, "{c:?}");
        assert_eq!(c.measured.answered_by.as_deref(), Some("host/pc"));
        assert_eq!(
            c.measured.seen_source, c.client_ip,
            "NAT on {from} -> host/pc"
        );
    }
    // Hosts to the pod: x/a answered and saw the host's own address.
    for (from, ip) in [(&pc, pc_ip), (&lab, lab_ip)] {
        let c = cell(0, from, &xa);
        assert_eq!(c.measured.outcome, Outcome::Allowed, "{c:?}");
        assert_eq!(c.measured.answered_by.as_deref(), Some("x/a"));
        assert_eq!(c.client_ip, Some(ip));
        assert_eq!(c.measured.seen_source, Some(ip), "NAT on {from} -> x/a");
    }
    // Host to host, through the router.
    let c = cell(0, &lab, &pc);
    assert_eq!(c.measured.answered_by.as_deref(), Some("host/pc"));
    assert_eq!(c.measured.seen_source, Some(lab_ip));
    // The ipBlock lets pc in and keeps lab (in the except range) and x/b out.
    assert_eq!(cell(1, &pc, &xa).measured.outcome, Outcome::Allowed);
    assert_eq!(
        cell(1, &lab, &xa).measured.outcome.verdict(),
        Some(Verdict::Deny)
    );
    assert_eq!(
        cell(1, &xb, &xa).measured.outcome.verdict(),
        Some(Verdict::Deny)
    );
    assert_eq!(cell(1, &xb, &pc).measured.outcome, Outcome::Allowed);
    assert_eq!(root_snapshot(), root_before, "the root namespace changed");
}
