//! The VXLAN overlay and the fabric capture against the real kernel: in vxlan mode a pod on
//! n1 reaches a pod on n2 and the fabric carries UDP 4789 between the two underlay
//! addresses with the pod addresses inside; in host-gw mode the same traffic shows the pod
//! addresses on the wire and no UDP 4789. External hosts behind the router reach the pods
//! in vxlan mode too. `verify()` notices a missing FDB entry (and the traffic it carried
//! stops). Teardown leaves nothing, and the root namespace does not change. Needs root:
//! ignored unless run with `--include-ignored` (see `common`).

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use harness::capture::{Capture, CaptureSummary, read_pcap};
use harness::cluster::{Cluster, FABRIC_BRIDGE};
use harness::netns::{self, Netns};
use sim::objects::PodRef;
use sim::plan::Plan;
use sim::scenario::{ClusterConfig, ExternalHost, NetworkMode};

/// Timings are printed; clusters are built one at a time so they mean something.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn plan(network: NetworkMode, hosts: &[(&str, &str)]) -> Plan {
    let cluster = ClusterConfig {
        nodes: vec!["n1".into(), "n2".into()],
        pod_cidr: "10.244.0.0/16".parse().unwrap(),
        service_cidr: "10.96.0.0/12".parse().unwrap(),
        network,
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

fn pods() -> Vec<(PodRef, String)> {
    vec![
        (PodRef::new("x", "a"), "n1".to_string()),
        (PodRef::new("x", "b"), "n2".to_string()),
        (PodRef::new("y", "c"), "n1".to_string()),
    ]
}

fn root_snapshot() -> String {
    let mut out = String::new();
    for args in [
        &["-o", "link"][..],
        &["-o", "addr"],
        &["route", "show", "table", "all"],
    ] {
        let o = Command::new("ip").args(args).output().expect("run ip");
        assert!(o.status.success(), "ip {args:?} failed");
        out.push_str(&String::from_utf8_lossy(&o.stdout));
    }
    out
}

fn our_namespaces(prefix: &str) -> Vec<String> {
    netns::list_run(prefix).unwrap()
}

fn ping_from(ns: &Netns, to: Ipv4Addr) -> bool {
    ns.command("ping")
        .args(["-c1", "-W1", "-q", &to.to_string()])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A TCP connection from `client` to a listener in `server`: returns the source address
/// the server saw.
fn tcp_seen_source(server: &Netns, client: &Netns, addr: Ipv4Addr, port: u16) -> Ipv4Addr {
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

fn mtu_of(ns: &Netns, dev: &str) -> u32 {
    let o = Command::new("ip")
        .args(["-n", ns.name(), "-o", "link", "show", dev])
        .output()
        .expect("run ip");
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let mut words = text.split_whitespace();
    words
        .by_ref()
        .find(|w| *w == "mtu")
        .unwrap_or_else(|| panic!("no mtu in {text:?}"));
    words.next().unwrap().parse().unwrap()
}

/// The capture file, removed when the test ends (also when it fails).
struct Pcap(PathBuf);

impl Drop for Pcap {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn capture_path(prefix: &str) -> Pcap {
    Pcap(std::env::temp_dir().join(format!("{prefix}-fabric.pcap")))
}

/// tcpdump's own reading of the file, when tcpdump is installed: proves the pcap is
/// what other tools expect. Returns the lines matching `filter`.
fn tcpdump_lines(path: &Path, filter: &str) -> Option<Vec<String>> {
    let o = Command::new("tcpdump")
        .args(["-nn", "-r"])
        .arg(path)
        .arg(filter)
        .output()
        .ok()?;
    assert!(
        o.status.success(),
        "tcpdump cannot read {}: {}",
        path.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    Some(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
    )
}

/// Builds a 2-node cluster in `network` mode, captures the fabric while pods are added
/// and a ping and a TCP connection go from x/a (n1) to x/b (n2), and returns the cluster,
/// the capture summary and the two pod addresses.
async fn build_and_probe(
    network: NetworkMode,
    hosts: &[(&str, &str)],
) -> (Cluster, CaptureSummary, Ipv4Addr, Ipv4Addr, Pcap) {
    let plan = plan(network, hosts);
    let pcap = capture_path(&plan.prefix);
    let t0 = Instant::now();
    let mut c = Cluster::create(plan).await.expect("create");
    let created = t0.elapsed();
    let capture = Capture::start(c.fabric_netns(), FABRIC_BRIDGE, &pcap.0, c.plan().pod_cidr)
        .expect("start the capture");
    c.add_pods(&pods()).await.expect("add pods");
    let t1 = Instant::now();
    c.verify().await.expect("verify");
    eprintln!(
        "{network:?}: create fabric + 2 nodes {created:?}, add 3 pods {:?}, verify {:?}",
        t1 - t0 - created,
        t1.elapsed()
    );
    let a = c.pod(&PodRef::new("x", "a")).unwrap().clone();
    let b = c.pod(&PodRef::new("x", "b")).unwrap().clone();
    assert_ne!(a.node, b.node);
    assert!(
        ping_from(&a.netns, b.ip),
        "x/a cannot ping x/b across nodes"
    );
    assert_eq!(
        tcp_seen_source(&b.netns, &a.netns, b.ip, 8080),
        a.ip,
        "the server saw another address than the client's"
    );
    let summary = capture.finish().await.expect("stop the capture");
    eprintln!("{summary}");
    assert_eq!(summary.path, pcap.0);
    assert_eq!(
        read_pcap(&pcap.0).expect("read the pcap").len() as u64,
        summary.packets
    );
    (c, summary, a.ip, b.ip, pcap)
}

async fn teardown_leaves_nothing(c: Cluster) {
    let prefix = c.plan().prefix.clone();
    let state = c.state_dir();
    let t = Instant::now();
    let report = c.teardown().await;
    eprintln!("teardown {:?}", t.elapsed());
    assert!(report.is_ok(), "{:?}", report.errors);
    assert!(our_namespaces(&prefix).is_empty(), "namespaces left behind");
    assert!(!state.exists(), "state directory left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: builds clusters in network namespaces"]
async fn vxlan_tunnels_pod_traffic_as_udp_4789() {
    common::require_root(&[]);
    let _serial = SERIAL.lock().await;
    netns::init();
    let root_before = root_snapshot();
    let (c, s, a, b, _pcap) = build_and_probe(NetworkMode::Vxlan, &[("pc", "172.17.0.5")]).await;
    let n1 = c.plan().node("n1").unwrap().underlay_ip;
    let n2 = c.plan().node("n2").unwrap().underlay_ip;

    // On the wire: UDP 4789 between the underlay addresses, the pods' packets inside,
    // and never a pod-to-pod packet without the tunnel.
    assert!(s.vxlan > 0, "no VXLAN packets:\n{s}");
    assert_eq!(s.vnis.iter().copied().collect::<Vec<_>>(), [1]);
    assert!(s.tunnels.contains_key(&(n1, n2)), "{s}");
    assert!(s.tunnels.contains_key(&(n2, n1)), "{s}");
    assert!(s.inner.get(&(a, b)).is_some_and(|n| *n >= 2), "{s}");
    assert!(s.inner.contains_key(&(b, a)), "{s}");
    assert!(
        s.plain_pod_to_pod.is_empty(),
        "pods' packets outside the tunnel:\n{s}"
    );
    if let Some(lines) = tcpdump_lines(&s.path, "udp port 4789") {
        // tcpdump prints the outer packet, then the inner one on a line of its own.
        let outer = lines.iter().filter(|l| l.contains("VXLAN")).count();
        assert_eq!(outer as u64, s.vxlan, "tcpdump disagrees:\n{lines:?}");
        let inner = format!("IP {a} > {b}: ICMP echo request");
        assert!(lines.iter().any(|l| l.starts_with(&inner)), "{lines:?}");
        let tunnel = format!("> {n2}.4789: VXLAN");
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("IP {n1}.")) && l.contains(&tunnel)),
            "{lines:?}"
        );
    }

    // The tunnel's MTU reaches the pods through the bridge plugin's config.
    let pod = c.pod(&PodRef::new("x", "a")).unwrap().netns.clone();
    assert_eq!(mtu_of(&pod, "eth0"), 1450);
    let node1 = c.node_netns("n1").unwrap().clone();
    assert_eq!(mtu_of(&node1, "vxlan.1"), 1450);

    // The node reaches a remote pod from its tunnel address (flannel's behaviour).
    let bns = c.pod(&PodRef::new("x", "b")).unwrap().netns.clone();
    assert_eq!(
        tcp_seen_source(&bns, &node1, b, 8081),
        "10.244.1.0".parse::<Ipv4Addr>().unwrap()
    );
    assert_eq!(
        c.plan()
            .node_source_for(c.plan().node("n1").unwrap(), b)
            .to_string(),
        "10.244.1.0"
    );

    // The host behind the router reaches pods on both nodes and they reach it: the
    // router routes pod subnets via the nodes' underlay addresses, outside the tunnel.
    let (host, host_ip) = c.host("pc").unwrap();
    assert_eq!(tcp_seen_source(&bns, &host, b, 8082), host_ip);
    assert_eq!(tcp_seen_source(&host, &pod, host_ip, 8083), a);
    assert!(ping_from(&host, a) && ping_from(&pod, host_ip));

    // What describe() shows: the device, its neighbours and its FDB.
    let text = c.describe().await.expect("describe");
    for want in [
        "vxlan.1 vxlan id 1 local 192.168.200.11 dstport 4789 nolearning mtu 1450 mac 0e:6b:6c:00:00:01",
        "route 10.244.2.0/24 via 10.244.2.0 dev vxlan.1 onlink",
        "neigh 10.244.2.0 lladdr 0e:6b:6c:00:00:02 dev vxlan.1 PERMANENT",
        "fdb 0e:6b:6c:00:00:02 dev vxlan.1 dst 192.168.200.12 self permanent",
        "fdb 0e:6b:6c:00:00:01 dev vxlan.1 dst 192.168.200.11 self permanent",
        "cni0 mtu 1450 (the pods' MTU)",
    ] {
        assert!(text.contains(want), "describe() lacks {want:?}:\n{text}");
    }
    // Only the router routes n2's pod subnet via n2's underlay address; n1 uses the tunnel.
    assert_eq!(
        text.matches("route 10.244.2.0/24 via 192.168.200.12 dev eth0\n")
            .count(),
        1,
        "{text}"
    );

    // A pod with a bigger MTU than the tunnel carries is a fault verify() reports.
    let set_mtu = |mtu: &str| {
        let o = pod
            .command("ip")
            .args(["link", "set", "eth0", "mtu", mtu])
            .output()
            .expect("run ip");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    set_mtu("1500");
    let fault = c.verify().await.expect_err("verify misses the pod's MTU");
    assert_eq!(fault.problems.len(), 1, "{fault}");
    assert!(
        fault.problems[0].contains("pod x/a: eth0 has MTU 1500, more than the tunnel's 1450"),
        "{fault}"
    );
    set_mtu("1450");
    c.verify().await.expect("verify after restoring the MTU");

    // Without its FDB entry n1 no longer knows where n2's VTEP is: verify() says so,
    // and the traffic stops.
    let out = node1
        .command("bridge")
        .args(["fdb", "del", "0e:6b:6c:00:00:02", "dev", "vxlan.1", "self"])
        .output()
        .expect("run bridge");
    assert!(
        out.status.success(),
        "bridge fdb del: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fault = c
        .verify()
        .await
        .expect_err("verify misses the deleted FDB entry");
    assert_eq!(fault.problems.len(), 1, "{fault}");
    assert!(
        fault.problems[0].contains(
            "node n1: no FDB entry 0e:6b:6c:00:00:02 dst 192.168.200.12 self permanent on vxlan.1"
        ),
        "{fault}"
    );
    assert!(
        !ping_from(&pod, b),
        "x/a still reaches x/b without the FDB entry"
    );

    // Without n2's tunnel device, verify() names it (and not a lookup error).
    let node2 = c.node_netns("n2").unwrap().clone();
    let out = node2
        .command("ip")
        .args(["link", "del", "vxlan.1"])
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fault = c
        .verify()
        .await
        .expect_err("verify misses the deleted device");
    assert!(
        fault
            .problems
            .iter()
            .any(|p| p == "node n2: no VXLAN device vxlan.1"),
        "{fault}"
    );

    teardown_leaves_nothing(c).await;
    assert_eq!(root_snapshot(), root_before, "the root namespace changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: builds clusters in network namespaces"]
async fn host_gw_puts_pod_addresses_on_the_wire() {
    common::require_root(&[]);
    let _serial = SERIAL.lock().await;
    netns::init();
    let root_before = root_snapshot();
    let (c, s, a, b, _pcap) = build_and_probe(NetworkMode::HostGw, &[]).await;
    assert_eq!(s.vxlan, 0, "VXLAN in host-gw mode:\n{s}");
    assert!(s.tunnels.is_empty() && s.inner.is_empty());
    assert!(
        s.plain_pod_to_pod.get(&(a, b)).is_some_and(|n| *n >= 2),
        "{s}"
    );
    assert!(s.plain_pod_to_pod.contains_key(&(b, a)), "{s}");
    if let Some(lines) = tcpdump_lines(&s.path, "udp port 4789") {
        assert!(lines.is_empty(), "{lines:?}");
    }
    if let Some(lines) = tcpdump_lines(&s.path, &format!("host {a} and host {b}")) {
        assert_eq!(
            lines.len() as u64,
            s.plain_pod_to_pod[&(a, b)] + s.plain_pod_to_pod[&(b, a)],
            "{lines:?}"
        );
    }
    let pod = c.pod(&PodRef::new("x", "a")).unwrap().netns.clone();
    assert_eq!(mtu_of(&pod, "eth0"), 1500);
    let text = c.describe().await.expect("describe");
    assert!(
        text.contains("route 10.244.2.0/24 via 192.168.200.12 dev eth0"),
        "{text}"
    );
    assert!(!text.contains("vxlan"), "{text}");
    teardown_leaves_nothing(c).await;
    assert_eq!(root_snapshot(), root_before, "the root namespace changed");
}
