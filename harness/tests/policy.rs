//! The NetworkPolicy engines against the real kernel: the standard model (x, y, z × a, b, c
//! on two nodes, TCP servers on 80 and 81) built with the real CNI plugins, policies synced
//! by the `iptables` engine, and every cell (pods and nodes as clients) probed with real
//! TCP connections and compared with the oracle. Also: the rules read back from the kernel
//! equal the rendering, a sync with nothing changed touches nothing, deleting a policy
//! opens traffic again, `drop` makes denied probes time out, and the `none` engine enforces
//! nothing. Needs root: ignored unless run with `--include-ignored` (see `common`).

mod common;

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use harness::cluster::Cluster;
use harness::netns::{self, Netns};
use harness::policy::{self, PolicyEngine, SyncReport, engine_for};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};
use sim::matrix::Verdict;
use sim::objects::{ClusterObjects, Kind, Object, PodRef};
use sim::oracle::{OracleContext, predict};
use sim::plan::{Plan, prefix_from_seed};
use sim::protocol::{PortProto, Protocol};
use sim::render::render_node;
use sim::scenario::{ClusterConfig, DenyStyle, Peer, PolicyEngineKind};

const PORTS: [u16; 2] = [80, 81];

fn plan() -> Plan {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ (u64::from(std::process::id()) << 40);
    let cluster = ClusterConfig {
        nodes: vec!["n1".into(), "n2".into()],
        pod_cidr: "10.244.0.0/16".parse().unwrap(),
        service_cidr: "10.96.0.0/12".parse().unwrap(),
        network: Default::default(),
        policy: Default::default(),
        deny: Default::default(),
        proxy: Default::default(),
        cni: Default::default(),
        external_hosts: vec![],
    };
    Plan::new(&prefix_from_seed(seed), &cluster).unwrap()
}

/// The standard model's pods, alternating over the nodes (x/a on n1, x/b on n2, ...).
fn standard_pods() -> Vec<(PodRef, String)> {
    ["x", "y", "z"]
        .iter()
        .flat_map(|ns| ["a", "b", "c"].map(|p| PodRef::new(*ns, p)))
        .enumerate()
        .map(|(i, p)| (p, format!("n{}", i % 2 + 1)))
        .collect()
}

/// The objects as the API server would hold them once the pods run.
fn objects(pods: &[(PodRef, String)], ips: &[(PodRef, Ipv4Addr)]) -> ClusterObjects {
    let mut o = ClusterObjects::new(vec!["n1".into(), "n2".into()]);
    for ns in ["x", "y", "z"] {
        let n: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns, "labels": {"ns": ns}}}))
                .unwrap();
        o.apply(Object::Namespace(n));
    }
    for (pod, node) in pods {
        let ports: Vec<Value> = PORTS
            .iter()
            .map(|p| json!({"name": format!("serve-{p}-tcp"), "containerPort": p, "protocol": "TCP"}))
            .collect();
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"namespace": pod.namespace, "name": pod.name, "labels": {"pod": pod.name}},
            "spec": {"nodeName": node, "containers": [{"name": "server", "image": "knetlab", "ports": ports}]}
        }))
        .unwrap();
        o.apply(Object::Pod(p));
    }
    for (pod, ip) in ips {
        o.set_pod_ip(pod, *ip);
    }
    o
}

fn np(ns: &str, name: &str, spec: Value) -> Object {
    let p: NetworkPolicy =
        serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
            .unwrap();
    Object::NetworkPolicy(p)
}

/// TCP servers on every port of every pod: accept and close at once. A listener nobody
/// accepts on would fill its backlog and start dropping SYNs.
struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<(Netns, SocketAddr, JoinHandle<()>)>,
}

impl Servers {
    fn start(c: &Cluster) -> Servers {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = vec![];
        for (_, h) in c.pods() {
            for port in PORTS {
                let addr = SocketAddr::from((h.ip, port));
                let l = h
                    .netns
                    .enter(|| TcpListener::bind(addr))
                    .unwrap_or_else(|e| panic!("listen on {addr} in {}: {e}", h.netns.name()));
                let stop = stop.clone();
                let t = std::thread::spawn(move || {
                    for s in l.incoming() {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        drop(s);
                    }
                });
                threads.push((h.netns.clone(), addr, t));
            }
        }
        Servers { stop, threads }
    }

    /// Stops every server (a listening socket would keep its namespace alive after the
    /// teardown).
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for (ns, addr, t) in self.threads {
            // Wake the blocked accept(); from inside the pod, which every policy allows.
            let _ = ns.enter(|| TcpStream::connect_timeout(&addr, Duration::from_secs(1)));
            t.join().unwrap();
        }
    }
}

/// What a probe saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Connected,
    /// EHOSTUNREACH: an ICMP admin-prohibited, i.e. our REJECT.
    Rejected,
    /// ECONNREFUSED: nothing listening (or a port-unreachable).
    Refused,
    /// No answer before the deadline.
    Dropped,
    Other(i32),
}

fn probe(from: &Netns, to: Ipv4Addr, port: u16, deadline: Duration) -> Seen {
    let addr = SocketAddr::from((to, port));
    match from.enter(|| TcpStream::connect_timeout(&addr, deadline)) {
        Ok(_) => Seen::Connected,
        Err(e) if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::WouldBlock => {
            Seen::Dropped
        }
        Err(e) => match e.raw_os_error() {
            Some(n) if n == nix::errno::Errno::EHOSTUNREACH as i32 => Seen::Rejected,
            Some(n) if n == nix::errno::Errno::ECONNREFUSED as i32 => Seen::Refused,
            Some(n) => Seen::Other(n),
            None => Seen::Other(-1),
        },
    }
}

/// Probes every cell (every pod and node as client, every pod as server, ports 80 and
/// 81; not a pod to itself) and checks it against the oracle: allowed cells connect,
/// denied ones see our REJECT (or time out with `drop`). Returns the number of denied
/// cells.
fn check_matrix(c: &Cluster, objects: &ClusterObjects, deny: DenyStyle, step: &str) -> usize {
    let addrs: BTreeMap<String, Ipv4Addr> = c
        .plan()
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.underlay_ip))
        .collect();
    let oracle = OracleContext::new(objects, PolicyEngineKind::Iptables, &addrs);
    let mut clients: Vec<(Peer, Netns)> = c
        .pods()
        .map(|(p, h)| (Peer::Pod(p.clone()), h.netns.clone()))
        .collect();
    for n in &c.plan().nodes {
        clients.push((
            Peer::Node(n.name.clone()),
            c.node_netns(&n.name).unwrap().clone(),
        ));
    }
    let deadline = match deny {
        DenyStyle::Reject => Duration::from_secs(1),
        DenyStyle::Drop => Duration::from_millis(100),
    };
    let t0 = Instant::now();
    let (mut denied, mut cells, mut wrong) = (0, 0, vec![]);
    for (from, ns) in &clients {
        for (to, h) in c.pods() {
            if *from == Peer::Pod(to.clone()) {
                continue;
            }
            for port in PORTS {
                let pp = PortProto::new(Protocol::Tcp, port);
                let want = predict(&oracle, from, &Peer::Pod(to.clone()), pp);
                let seen = probe(ns, h.ip, port, deadline);
                let expected = match (want.verdict, deny) {
                    (Verdict::Allow, _) => Seen::Connected,
                    (Verdict::Deny, DenyStyle::Reject) => Seen::Rejected,
                    (Verdict::Deny, DenyStyle::Drop) => Seen::Dropped,
                };
                cells += 1;
                if want.verdict == Verdict::Deny {
                    denied += 1;
                }
                if seen != expected {
                    wrong.push(format!(
                        "{from} -> {to} {pp}: saw {seen:?}, oracle says {:?} ({})",
                        want.verdict,
                        want.short()
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{step}: {} of {cells} cells disagree with the oracle:\n  {}",
        wrong.len(),
        wrong.join("\n  ")
    );
    eprintln!(
        "{step}: {cells} cells measured in {:?}, {denied} denied, all as the oracle says",
        t0.elapsed()
    );
    denied
}

fn nodes(c: &Cluster) -> Vec<(String, Netns)> {
    c.plan()
        .nodes
        .iter()
        .map(|n| (n.name.clone(), c.node_netns(&n.name).unwrap().clone()))
        .collect()
}

/// What the kernel holds in every node equals the rendering for the current objects.
fn assert_installed_is_rendered(
    c: &Cluster,
    engine: &dyn PolicyEngine,
    objects: &ClusterObjects,
    deny: DenyStyle,
) {
    let resolved = sim::policy::resolve(objects);
    for (node, ns) in nodes(c) {
        let ctx = policy::render_context(c.plan(), &node, deny).unwrap();
        let want = render_node(&resolved, &node, &ctx).normalised();
        let got = engine.installed(&ns).unwrap();
        assert_eq!(
            got, want,
            "node {node}: installed rules differ from the rendering"
        );
    }
}

fn timing(step: &str, r: &SyncReport) {
    let per_node: Vec<String> = r
        .nodes
        .iter()
        .map(|n| {
            format!(
                "{} {:.1} ms{} ({} rules, {} sets)",
                n.node,
                n.elapsed.as_secs_f64() * 1e3,
                if n.changed { "" } else { " unchanged" },
                n.rules,
                n.sets
            )
        })
        .collect();
    eprintln!(
        "sync [{step}]: {:.1} ms total ({:.1} ms rendering); {}",
        r.elapsed.as_secs_f64() * 1e3,
        r.render.as_secs_f64() * 1e3,
        per_node.join("; ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: loads iptables rules in network namespaces"]
async fn iptables_engine_enforces_what_the_oracle_predicts() {
    common::require_root(&[]);
    let plan = plan();
    let prefix = plan.prefix.clone();
    let mut c = Cluster::create(plan).await.expect("create the cluster");
    let pods = standard_pods();
    let ips = c.add_pods(&pods).await.expect("add pods");
    let mut objects = objects(&pods, &ips);
    let servers = Servers::start(&c);
    let node_list = nodes(&c);

    // Everything below is blocking; run it so that a failure still stops the servers and
    // tears the cluster down before the panic goes on.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut engine = engine_for(PolicyEngineKind::Iptables, DenyStyle::Reject);
        assert_eq!(engine.name(), "iptables");

        // 1. No policy: the layout is installed, everything is open.
        let r = engine.sync(c.plan(), &node_list, &objects).unwrap();
        timing("install, no policy", &r);
        assert!(r.nodes.iter().all(|n| n.changed));
        assert_installed_is_rendered(&c, engine.as_ref(), &objects, DenyStyle::Reject);
        assert_eq!(
            check_matrix(&c, &objects, DenyStyle::Reject, "no policy"),
            0
        );

        // 2. Default-deny ingress in x: every probe into x is rejected, except from the
        //    node the pod runs on; the rest stays open.
        objects.apply(np(
            "x",
            "default-deny",
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        ));
        let r = engine.sync(c.plan(), &node_list, &objects).unwrap();
        timing("default-deny in x", &r);
        assert!(r.changed());
        assert_installed_is_rendered(&c, engine.as_ref(), &objects, DenyStyle::Reject);
        let denied = check_matrix(&c, &objects, DenyStyle::Reject, "default-deny in x");
        // 8 other pods + 1 other node, into each of the 3 pods of x, on 2 ports, minus
        // x's own pods to themselves (already skipped) = (8 + 1) * 3 * 2.
        assert_eq!(denied, 9 * 3 * 2);

        // 3. Nothing changed: nothing is touched.
        let before: Vec<String> = node_list
            .iter()
            .map(|(_, ns)| engine.installed(ns).unwrap())
            .collect();
        let r = engine.sync(c.plan(), &node_list, &objects).unwrap();
        timing("no change", &r);
        assert!(!r.changed(), "{r:?}");
        let after: Vec<String> = node_list
            .iter()
            .map(|(_, ns)| engine.installed(ns).unwrap())
            .collect();
        assert_eq!(before, after);

        // Time to enforce: toggle the policy 10 times; each sync is done when the last
        // node's transaction committed, and the very next probe sees the new verdict.
        let xa = c.pod(&PodRef::new("x", "a")).unwrap().ip;
        let yb = c.pod(&PodRef::new("y", "b")).unwrap().netns.clone();
        let mut times = vec![];
        for i in 0..10 {
            let on = i % 2 == 1;
            if on {
                objects.apply(np(
                    "x",
                    "default-deny",
                    json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
                ));
            } else {
                objects.delete(Kind::NetworkPolicy, "x", "default-deny");
            }
            let r = engine.sync(c.plan(), &node_list, &objects).unwrap();
            assert!(r.nodes.iter().all(|n| n.changed));
            times.push(r.elapsed);
            let want = if on { Seen::Rejected } else { Seen::Connected };
            assert_eq!(
                probe(&yb, xa, 80, Duration::from_secs(1)),
                want,
                "toggle {i}"
            );
        }
        times.sort();
        eprintln!(
            "time to enforce (default-deny toggled 10 times, both nodes): median {:.1} ms, \
             max {:.1} ms",
            times[5].as_secs_f64() * 1e3,
            times[9].as_secs_f64() * 1e3
        );

        // 4. More policies at once, checked cell by cell against the oracle: a namespace
        //    selector with a port, a policy with both directions (egress: [] denies all
        //    egress; its ingress rule must not open its own pods' egress on a shared
        //    node), and an egress ipBlock with an except plus a named port.
        objects.apply(np(
            "x",
            "allow-y-on-80",
            json!({"podSelector": {"matchLabels": {"pod": "a"}},
                   "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                                "ports": [{"port": 80}]}]}),
        ));
        objects.apply(np(
            "z",
            "both",
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                   "ingress": [{"from": [{"podSelector": {}}]}], "egress": []}),
        ));
        let xc = ips
            .iter()
            .find(|(p, _)| *p == PodRef::new("x", "c"))
            .unwrap()
            .1;
        objects.apply(np(
            "y",
            "egress-block",
            json!({"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Egress"],
                   "egress": [{"to": [{"ipBlock": {"cidr": "10.244.0.0/16",
                                                   "except": [format!("{xc}/32")]}}],
                               "ports": [{"port": "serve-81-tcp"}]}]}),
        ));
        let r = engine.sync(c.plan(), &node_list, &objects).unwrap();
        timing("three more policies", &r);
        assert_installed_is_rendered(&c, engine.as_ref(), &objects, DenyStyle::Reject);
        check_matrix(&c, &objects, DenyStyle::Reject, "four policies");

        // 5. A label change alone, no policy touched: namespace y loses `ns=y`, so x/a's
        //    namespace-selector rule no longer admits y's pods (only its sets change).
        objects.set_labels(
            Kind::Namespace,
            "",
            "y",
            [("ns".to_string(), "not-y".to_string())].into(),
        );
        let r = engine.sync(c.plan(), &node_list, &objects).unwrap();
        timing("namespace relabelled", &r);
        assert!(r.changed());
        assert_installed_is_rendered(&c, engine.as_ref(), &objects, DenyStyle::Reject);
        check_matrix(&c, &objects, DenyStyle::Reject, "namespace y relabelled");

        // 6. Deleting every policy opens everything again, and leaves only the layout.
        for name in ["default-deny", "allow-y-on-80"] {
            assert!(objects.delete(Kind::NetworkPolicy, "x", name));
        }
        assert!(objects.delete(Kind::NetworkPolicy, "z", "both"));
        assert!(objects.delete(Kind::NetworkPolicy, "y", "egress-block"));
        let r = engine.sync(c.plan(), &node_list, &objects).unwrap();
        timing("policies deleted", &r);
        assert_installed_is_rendered(&c, engine.as_ref(), &objects, DenyStyle::Reject);
        for (_, ns) in &node_list {
            let text = engine.installed(ns).unwrap();
            assert!(!text.contains("create KUBE-"), "sets left behind:\n{text}");
        }
        assert_eq!(
            check_matrix(&c, &objects, DenyStyle::Reject, "policies deleted"),
            0
        );

        // 7. `drop`: a new engine meets nodes it did not set up (it reads them first),
        //    rewrites the pod chains, and denied probes now time out.
        objects.apply(np(
            "x",
            "default-deny",
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        ));
        let mut dropper = engine_for(PolicyEngineKind::Iptables, DenyStyle::Drop);
        let r = dropper.sync(c.plan(), &node_list, &objects).unwrap();
        timing("drop engine takes over", &r);
        assert_installed_is_rendered(&c, dropper.as_ref(), &objects, DenyStyle::Drop);
        let xa = c.pod(&PodRef::new("x", "a")).unwrap().ip;
        let yb = c.pod(&PodRef::new("y", "b")).unwrap().netns.clone();
        let t = Instant::now();
        assert_eq!(
            probe(&yb, xa, 80, Duration::from_millis(100)),
            Seen::Dropped
        );
        assert!(t.elapsed() >= Duration::from_millis(100));
        let za = c.pod(&PodRef::new("z", "a")).unwrap().ip;
        assert_eq!(probe(&yb, za, 80, Duration::from_secs(1)), Seen::Connected);
        // The `none` engine installs nothing (and so removes nothing either).
        let mut none = engine_for(PolicyEngineKind::None, DenyStyle::Reject);
        assert_eq!(none.name(), "none");
        let before = none.installed(&node_list[0].1).unwrap();
        let r = none.sync(c.plan(), &node_list, &objects).unwrap();
        assert!(!r.changed());
        assert_eq!(none.installed(&node_list[0].1).unwrap(), before);

        // 8. Errors name the namespace and the script line; br_netfilter off is refused.
        let (_, n1) = &node_list[0];
        let err = policy::run_in(
            n1,
            "ipset",
            &["restore"],
            Some("create A hash:ip\nadd B 10.0.0.1\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(n1.name()) && err.contains("line 2 of the script: add B 10.0.0.1"),
            "{err}"
        );
        n1.set_sysctl("net/bridge/bridge-nf-call-iptables", "0")
            .unwrap();
        let mut fresh = engine_for(PolicyEngineKind::Iptables, DenyStyle::Reject);
        let err = fresh.sync(c.plan(), &node_list, &objects).unwrap_err();
        n1.set_sysctl("net/bridge/bridge-nf-call-iptables", "1")
            .unwrap();
        let err = format!("{err:#}");
        assert!(
            err.contains("bridge-nf-call-iptables is 0") && err.contains(n1.name()),
            "{err}"
        );
    }));

    servers.stop();
    drop(node_list);
    let report = c.teardown().await;
    assert!(report.is_ok(), "teardown: {:?}", report.errors);
    let left = netns::list_run(&prefix).unwrap();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
