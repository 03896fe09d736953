//! The cluster DNS against the real kernel: the hickory server bound inside a namespace
//! answers A, SRV, NXDOMAIN and REFUSED over UDP and TCP, swaps its records at once, and
//! its answer time is measured; then whole runs of a `cluster.dns` scenario check that
//! nothing DNS-related is left running or on disk after teardown, after a failed run, and
//! after `--keep` followed by the sweep `cargo xtask clean` does. One test function, so
//! that its counts of this process's sockets are not disturbed by another test. Needs root:
//! ignored unless run with `--include-ignored` (see `common`).

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness::dns::{Answer, DnsServer, NO_UPSTREAM, resolv_conf_path, resolve};
use harness::netns::{self, Netns};
use harness::run::{RunOptions, new_prefix};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use serde_json::json;
use sim::dns::resolv::ResolvConf;
use sim::dns::{CLUSTER_DOMAIN, zone};
use sim::objects::{ClusterObjects, Object, PodRef};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sockets this process holds open.
fn open_sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|l| l.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

/// Waits up to 2 s for this process's sockets to come back to `n` (aborted tasks close
/// theirs when the runtime drops them, a moment later); returns the last count.
async fn sockets_settle(n: usize) -> usize {
    let until = Instant::now() + Duration::from_secs(2);
    loop {
        let now = open_sockets();
        if now <= n || Instant::now() > until {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn etc_netns_of(prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir("/etc/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

fn objects() -> ClusterObjects {
    let mut o = ClusterObjects::new(vec!["n1".into()]);
    let svc = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "app"},
        "spec": {"clusterIP": "10.96.0.20", "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80}]},
    }))
    .unwrap();
    o.apply(Object::Service(svc));
    o
}

/// One question over TCP (two-byte length prefix, RFC 1035 4.2.2) from inside `ns`.
async fn ask_tcp(ns: &Netns, server: SocketAddr, name: &str, kind: RecordType) -> Message {
    let sock = ns.enter(tokio::net::TcpSocket::new_v4).unwrap();
    let mut stream = sock.connect(server).await.unwrap();
    let mut msg = Message::new(7, MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    let bytes = msg.to_vec().unwrap();
    stream
        .write_all(&(bytes.len() as u16).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&bytes).await.unwrap();
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

async fn server_in_a_namespace(prefix: &str) {
    let name = format!("{prefix}-dns");
    let ns = Netns::create_many(std::slice::from_ref(&name))
        .unwrap()
        .remove(0);
    let up = ns
        .command("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .unwrap();
    assert!(up.success());
    let sockets_before = open_sockets();
    let server = DnsServer::start(&ns, zone(&objects(), CLUSTER_DOMAIN)).unwrap();
    let conf = ResolvConf::for_pod("app", Ipv4Addr::LOCALHOST, CLUSTER_DOMAIN);
    let deadline = Duration::from_millis(500);

    // The search list finds the Service from its namespace.
    let r = resolve(&ns, &conf, "web", deadline).await;
    assert_eq!(r.answer, Answer::Addresses, "{r:?}");
    assert_eq!(r.addresses, vec![Ipv4Addr::new(10, 96, 0, 20)]);
    assert_eq!(r.found_as.as_deref(), Some("web.app.svc.cluster.local."));
    // A name nobody has: NXDOMAIN under each suffix, REFUSED as is (not our zone).
    let r = resolve(&ns, &conf, "nope", deadline).await;
    assert_eq!(r.answer, Answer::NotFound, "{r:?}");
    let codes: Vec<&str> = r.asked.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(codes, ["NXDOMAIN", "NXDOMAIN", "NXDOMAIN", "REFUSED"]);
    assert_eq!(
        server
            .counters()
            .refused
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the REFUSED answer is logged as {NO_UPSTREAM:?}"
    );

    // TCP: SRV of a named port, and NXDOMAIN with the zone's SOA.
    let at = SocketAddr::from((Ipv4Addr::LOCALHOST, 53));
    let m = ask_tcp(
        &ns,
        at,
        "_http._tcp.web.app.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    match &m.answers[0].data {
        RData::SRV(srv) => {
            assert_eq!(srv.port, 80);
            assert_eq!(srv.target.to_ascii(), "web.app.svc.cluster.local.");
        }
        other => panic!("not an SRV: {other:?}"),
    }
    let m = ask_tcp(&ns, at, "nope.app.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(
        m.authorities
            .iter()
            .any(|r| matches!(r.data, RData::SOA(_))),
        "{m:?}"
    );

    // The answer time, over 200 questions one after the other.
    let mut times = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let r = resolve(&ns, &conf, "web.app.svc.cluster.local.", deadline).await;
        times.push(t.elapsed());
        assert_eq!(r.answer, Answer::Addresses);
    }
    times.sort();
    eprintln!(
        "DNS answer time over loopback in one namespace (200 questions): p50 {:?}, p99 {:?}, max {:?}",
        times[100], times[198], times[199]
    );

    // Swapping the records: the next answer comes from the new zone.
    let mut o = objects();
    o.delete(sim::objects::Kind::Service, "app", "web");
    server.set_zone(zone(&o, CLUSTER_DOMAIN));
    let r = resolve(&ns, &conf, "web", deadline).await;
    assert_eq!(r.answer, Answer::NotFound, "{r:?}");

    // Shutting down closes its sockets: port 53 is free again.
    server.shutdown().await.unwrap();
    assert_eq!(
        sockets_settle(sockets_before).await,
        sockets_before,
        "the server's sockets are closed"
    );
    let rebound = ns.enter(|| std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 53)));
    assert!(rebound.is_ok(), "port 53 is still taken: {rebound:?}");
    drop(rebound);
    drop(ns);
    netns::delete(&name).unwrap();
}

fn dns_scenario(dir: &Path, extra_step: &str) -> sim::scenario::Scenario {
    let text = format!(
        "name: t\nsummary: s\ndescription: d\ncluster:\n  nodes: 1\n  dns: true\n\
         manifests:\n  - {{apiVersion: v1, kind: Pod, metadata: {{name: a, labels: {{app: a}}}}, \
         spec: {{containers: [{{name: c, image: x, ports: [{{containerPort: 80}}]}}]}}}}\n  \
         - {{apiVersion: v1, kind: Service, metadata: {{name: a}}, spec: {{selector: {{app: a}}, \
         ports: [{{port: 80}}]}}}}\n\
         probe:\n  from: [default/a]\n  to: [dns/a:80]\n{extra_step}"
    );
    let path = dir.join("t.yaml");
    std::fs::write(&path, &text).unwrap();
    sim::scenario::load(&path).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn options(prefix: &str, keep: bool) -> RunOptions {
    RunOptions {
        prefix: prefix.to_string(),
        keep,
        ..Default::default()
    }
}

async fn runs_leave_nothing_behind() {
    let dir = std::env::temp_dir().join(format!("knetlab-dns-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sockets_before = open_sockets();

    // A good run: the name resolves, and teardown removes every file.
    let s = dns_scenario(&dir, "");
    let prefix = new_prefix();
    let report = harness::run::run(&s, &options(&prefix, false))
        .await
        .unwrap();
    assert!(report.ok(), "{:?}", report.steps);
    assert!(
        report.teardown_errors.is_empty(),
        "{:?}",
        report.teardown_errors
    );
    assert_eq!(report.dns.len(), 1);
    assert!(
        report.dns[0].resolutions[0].2.answer == Answer::Addresses,
        "{:?}",
        report.dns[0]
    );
    eprintln!(
        "a pod's name lookup through kube-proxy to the DNS pod: {} us (resolv.conf search, first suffix)",
        report.dns[0].resolutions[0].2.elapsed_us
    );
    assert!(
        etc_netns_of(&prefix).is_empty(),
        "{:?}",
        etc_netns_of(&prefix)
    );
    assert!(netns::list_run(&prefix).unwrap().is_empty());
    assert_eq!(
        sockets_settle(sockets_before).await,
        sockets_before,
        "a socket of the run is still open"
    );

    // A failed run: the second step's pod cannot get its resolv.conf (a file stands
    // where its /etc/netns directory goes), so the run fails after the DNS server has
    // started; its teardown still removes everything, the obstacle included.
    let s = dns_scenario(
        &dir,
        "steps:\n  - name: add-b\n    apply:\n      - {apiVersion: v1, kind: Pod, metadata: {name: b}, \
         spec: {containers: [{name: c, image: x}]}}\n",
    );
    let prefix = new_prefix();
    let plan = sim::plan::Plan::new(&prefix, &s.cluster).unwrap();
    let blocker = PathBuf::from("/etc/netns").join(plan.pod_netns(&PodRef::new("default", "b")));
    std::fs::create_dir_all("/etc/netns").unwrap();
    std::fs::write(&blocker, "not a directory").unwrap();
    let err = harness::run::run(&s, &options(&prefix, false))
        .await
        .expect_err("the run fails");
    eprintln!("the failed run said: {err:#}");
    assert!(format!("{err:#}").contains("cluster DNS"), "{err:#}");
    assert!(
        etc_netns_of(&prefix).is_empty(),
        "{:?}",
        etc_netns_of(&prefix)
    );
    assert!(netns::list_run(&prefix).unwrap().is_empty());
    assert_eq!(
        sockets_settle(sockets_before).await,
        sockets_before,
        "a socket of the failed run is still open"
    );

    // --keep leaves the resolv.conf files (what `ip netns exec POD getent hosts` reads),
    // and the sweep `cargo xtask clean` runs removes them.
    let s = dns_scenario(&dir, "");
    let prefix = new_prefix();
    let report = harness::run::run(&s, &options(&prefix, true))
        .await
        .unwrap();
    assert!(report.kept.is_some());
    let plan = sim::plan::Plan::new(&prefix, &s.cluster).unwrap();
    let conf = std::fs::read_to_string(resolv_conf_path(
        &plan.pod_netns(&PodRef::new("default", "a")),
    ))
    .unwrap();
    assert_eq!(
        conf,
        "search default.svc.cluster.local svc.cluster.local cluster.local\n\
         nameserver 10.96.0.10\noptions ndots:5\n"
    );
    // The system resolver of a kept pod asks the cluster DNS, which still answers.
    let pod_ns = plan.pod_netns(&PodRef::new("default", "a"));
    let out = tokio::process::Command::new("ip")
        .args(["netns", "exec", &pod_ns, "getent", "hosts", "a"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("a.default.svc.cluster.local"),
        "getent hosts a in {pod_ns}: {text:?} {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("getent hosts a in a kept pod: {}", text.trim());
    harness::dns::kept_server()
        .expect("the kept run's DNS server")
        .shutdown()
        .await
        .unwrap();
    let swept = harness::sweep::clean_prefix(&prefix);
    assert!(swept.is_ok(), "{swept}");
    assert!(
        etc_netns_of(&prefix).is_empty(),
        "{:?}",
        etc_netns_of(&prefix)
    );
    assert!(netns::list_run(&prefix).unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: serves cluster DNS in network namespaces"]
async fn cluster_dns_answers_and_leaves_nothing_behind() {
    common::require_root(&[]);
    let prefix = new_prefix();
    server_in_a_namespace(&prefix).await;
    runs_leave_nothing_behind().await;
}
