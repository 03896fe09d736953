//! The probe engine against real namespaces: a node namespace with a bridge, pod
//! namespaces on it, servers in every pod, and iptables rules in the node that make each
//! outcome happen for real (allowed, refused, dropped, rejected) for TCP, UDP and SCTP.
//! The timing test runs the standard model's 486-probe round and prints the measured
//! answer-time tail that `ProbeOptions::default()`'s deadline is based on.
//!
//! Needs root: ignored unless run with `--include-ignored` (see `common`). Every namespace
//! is named with a fresh run prefix and removed at the end, also when a test fails.

mod common;

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use harness::netns::{self, Netns};
use harness::probe::{ProbeOptions, ProbeTask, ServerSpec, Servers, run_probes, start_servers};
use sim::matrix::{Measurement, Outcome};
use sim::objects::PodRef;
use sim::protocol::{PortProto, Protocol};
use tokio::sync::Mutex;

/// Tests here measure time: run them one at a time (each test has its own runtime).
static SERIAL: Mutex<()> = Mutex::const_new(());

const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);

struct Pod {
    id: PodRef,
    ns: Netns,
    ip: Ipv4Addr,
}

/// One node namespace with bridge `br0` (10.250.0.1/24) and pods on it. Dropping it
/// deletes every namespace it made.
struct Topology {
    names: Vec<String>,
    node: Option<Netns>,
    pods: Vec<Pod>,
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.pods.clear();
        self.node = None;
        for name in &self.names {
            if let Err(e) = netns::delete(name) {
                eprintln!("cleanup: {e:#}");
            }
        }
    }
}

/// Runs an `ip -batch` script inside `ns`.
fn ip_batch(ns: &Netns, script: &str) -> Result<()> {
    let mut child = ns
        .command("ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start ip -batch in {}", ns.name()))?;
    child
        .stdin
        .take()
        .context("ip stdin")?
        .write_all(script.as_bytes())
        .with_context(|| format!("write the ip script for {}", ns.name()))?;
    let out = child.wait_with_output().context("wait for ip")?;
    ensure!(
        out.status.success(),
        "ip -batch in {} failed: {}\n{script}",
        ns.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

impl Topology {
    fn build(pods: &[(&str, &str)]) -> Result<Topology> {
        netns::init();
        let prefix = harness::run::new_prefix();
        let node_name = format!("{prefix}-node");
        let pod_names: Vec<String> = pods
            .iter()
            .map(|(ns, name)| format!("{prefix}-pod-{ns}-{name}"))
            .collect();
        let mut names = vec![node_name.clone()];
        names.extend(pod_names.iter().cloned());
        let mut topo = Topology {
            names: names.clone(),
            node: None,
            pods: vec![],
        };
        let made = Netns::create_many(&names)?;
        let node = made[0].clone();
        topo.node = Some(node.clone());
        node.set_sysctl("net/ipv4/icmp_ratemask", "0")?;
        let mut script = format!(
            "link add br0 type bridge\nlink set br0 up\naddr add {NODE_IP}/24 dev br0\nlink set lo up\n"
        );
        for (i, name) in pod_names.iter().enumerate() {
            script += &format!(
                "link add veth{i} type veth peer name eth0 netns {name}\nlink set veth{i} master br0 up\n"
            );
        }
        ip_batch(&node, &script)?;
        node.set_sysctl("net/bridge/bridge-nf-call-iptables", "1")?;
        for (i, ((ns, name), pod_ns)) in pods.iter().zip(&made[1..]).enumerate() {
            let ip = Ipv4Addr::new(10, 250, 0, 10 + i as u8);
            ip_batch(
                pod_ns,
                &format!(
                    "link set lo up\nlink set eth0 up\naddr add {ip}/24 dev eth0\nroute add default via {NODE_IP}\n"
                ),
            )?;
            topo.pods.push(Pod {
                id: PodRef::new(*ns, *name),
                ns: pod_ns.clone(),
                ip,
            });
        }
        Ok(topo)
    }

    fn node(&self) -> &Netns {
        self.node.as_ref().expect("built")
    }

    fn pod(&self, id: &str) -> &Pod {
        self.pods
            .iter()
            .find(|p| p.id.to_string() == id)
            .unwrap_or_else(|| panic!("no pod {id}"))
    }

    /// Runs `iptables -w ARGS...` in the node.
    fn iptables(&self, args: &[&str]) -> Result<()> {
        let out = self
            .node()
            .command("iptables")
            .arg("-w")
            .args(args)
            .output()
            .with_context(|| format!("run iptables {args:?} in {}", self.node().name()))?;
        if !out.status.success() {
            bail!(
                "iptables {args:?} in {}: {}",
                self.node().name(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Bridged traffic to `ports` of every protocol gets `target` (e.g. `DROP`).
    fn filter_ports(&self, ports: &str, target: &[&str]) -> Result<()> {
        for proto in ["tcp", "udp", "sctp"] {
            let mut args = vec![
                "-A",
                "FORWARD",
                "-m",
                "physdev",
                "--physdev-is-bridged",
                "-p",
                proto,
                "--dport",
                ports,
                "-j",
            ];
            args.extend_from_slice(target);
            self.iptables(&args)?;
        }
        Ok(())
    }

    async fn serve(&self, ports: &[PortProto]) -> Result<Servers> {
        let specs = self
            .pods
            .iter()
            .map(|p| ServerSpec {
                name: p.id.to_string(),
                netns: p.ns.clone(),
                ports: ports.to_vec(),
            })
            .collect();
        start_servers(specs).await
    }
}

fn all_ports(ports: &[u16]) -> Vec<PortProto> {
    Protocol::ALL
        .iter()
        .flat_map(|&proto| ports.iter().map(move |&p| PortProto::new(proto, p)))
        .collect()
}

fn task(from: &Pod, to: &Pod, port: PortProto) -> ProbeTask {
    ProbeTask {
        client: from.ns.clone(),
        dst: to.ip,
        port,
        expect_answer_from: vec![to.id.to_string()],
    }
}

/// Probes `from → to` on `port` for each protocol and checks the outcome.
async fn expect_each_protocol(
    topo: &Topology,
    from: &str,
    to: &str,
    port: u16,
    want: Outcome,
    opts: &ProbeOptions,
) -> Vec<Measurement> {
    let (from, to) = (topo.pod(from), topo.pod(to));
    let tasks: Vec<ProbeTask> = Protocol::ALL
        .iter()
        .map(|&p| task(from, to, PortProto::new(p, port)))
        .collect();
    let got = run_probes(&tasks, opts).await;
    for (t, m) in tasks.iter().zip(&got) {
        assert_eq!(m.outcome, want, "{} → {} {}: {m:?}", from.id, to.id, t.port);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: probes between network namespaces"]
async fn each_outcome_is_measured_for_tcp_udp_and_sctp() -> Result<()> {
    common::require_root(&[]);
    let _serial = SERIAL.lock().await;
    let topo = Topology::build(&[("x", "a"), ("x", "b"), ("x", "c")])?;
    let servers = topo.serve(&all_ports(&[80, 81])).await?;
    assert_eq!(
        servers.sockets(),
        3 * 5,
        "per pod: 2 TCP, 2 UDP, 1 SCTP responder"
    );
    let opts = ProbeOptions::default();
    let (a, b) = (topo.pod("x/a"), topo.pod("x/b"));

    // Conntrack on, and anything it finds invalid dropped: the crafted SCTP answers must
    // pass as proper replies (tags, checksum), as they must behind a stateful enforcer.
    topo.iptables(&[
        "-A",
        "FORWARD",
        "-m",
        "conntrack",
        "--ctstate",
        "INVALID",
        "-j",
        "DROP",
    ])?;

    // allowed: the right pod answers and sees the client's own address.
    for m in expect_each_protocol(&topo, "x/a", "x/b", 80, Outcome::Allowed, &opts).await {
        assert_eq!(m.answered_by.as_deref(), Some("x/b"));
        assert_eq!(m.seen_source, Some(a.ip));
        assert!(m.elapsed_us < opts.deadline.as_micros() as u64);
    }
    // A pod probing itself (over lo) too.
    for m in expect_each_protocol(&topo, "x/a", "x/a", 81, Outcome::Allowed, &opts).await {
        assert_eq!(m.answered_by.as_deref(), Some("x/a"));
        assert_eq!(m.seen_source, Some(a.ip));
    }
    // The wrong pod answering is a harness error, never "allowed".
    let wrong: Vec<ProbeTask> = all_ports(&[80])
        .into_iter()
        .map(|p| ProbeTask {
            expect_answer_from: vec!["x/c".into()],
            ..task(a, b, p)
        })
        .collect();
    for m in run_probes(&wrong, &opts).await {
        assert_eq!(m.outcome, Outcome::Error, "{m:?}");
        assert!(m.detail.contains("expected x/c"), "{m:?}");
    }

    // refused: nothing listens on 82 (TCP RST, UDP port unreachable from the pod, SCTP ABORT).
    let refused = expect_each_protocol(&topo, "x/a", "x/b", 82, Outcome::Refused, &opts).await;
    assert!(
        refused[1].detail.contains("(the destination)"),
        "{:?}",
        refused[1]
    );
    assert!(refused[2].detail.contains("ABORT"), "{:?}", refused[2]);

    // dropped: the node drops port 81; port 80 still passes.
    topo.filter_ports("81", &["DROP"])?;
    for m in expect_each_protocol(&topo, "x/a", "x/b", 81, Outcome::Dropped, &opts).await {
        assert!(m.elapsed_us >= opts.deadline.as_micros() as u64, "{m:?}");
    }
    expect_each_protocol(&topo, "x/a", "x/c", 81, Outcome::Dropped, &opts).await;
    expect_each_protocol(&topo, "x/a", "x/b", 80, Outcome::Allowed, &opts).await;
    // The filter is in the node: a pod's probe of itself never crosses it.
    expect_each_protocol(&topo, "x/b", "x/b", 81, Outcome::Allowed, &opts).await;

    // rejected: admin-prohibited from the node, at once.
    topo.iptables(&["-F", "FORWARD"])?;
    topo.filter_ports("81", &["REJECT", "--reject-with", "icmp-admin-prohibited"])?;
    for m in expect_each_protocol(&topo, "x/a", "x/b", 81, Outcome::Rejected, &opts).await {
        // What the kernel makes of it: EHOSTUNREACH on the socket, the node as sender.
        assert!(
            m.detail.contains("prohibited (code 13)")
                && m.detail.contains(&format!("from {NODE_IP}"))
                && m.detail.contains("EHOSTUNREACH"),
            "{m:?}"
        );
        assert!(m.elapsed_us < opts.deadline.as_micros() as u64);
    }
    expect_each_protocol(&topo, "x/a", "x/b", 80, Outcome::Allowed, &opts).await;
    // Many at once: with icmp_ratemask=0 in the node none is rate limited into silence.
    let burst: Vec<ProbeTask> = (0..40)
        .flat_map(|_| all_ports(&[81]).into_iter().map(|p| task(a, b, p)))
        .collect();
    let got = run_probes(&burst, &opts).await;
    for (t, m) in burst.iter().zip(&got) {
        assert_eq!(m.outcome, Outcome::Rejected, "{}: {m:?}", t.port);
    }

    // A port unreachable sent by the node on the pod's behalf is a filter, not the pod.
    topo.iptables(&["-F", "FORWARD"])?;
    topo.filter_ports("81", &["REJECT", "--reject-with", "icmp-port-unreachable"])?;
    for m in expect_each_protocol(&topo, "x/a", "x/b", 81, Outcome::Rejected, &opts).await {
        assert!(m.detail.contains("on the destination's behalf"), "{m:?}");
    }
    // ... while the pod's own port unreachable is still "refused".
    expect_each_protocol(&topo, "x/a", "x/b", 82, Outcome::Refused, &opts).await;

    servers.shutdown().await;
    Ok(())
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn describe(label: &str, v: &mut [u64]) -> String {
    v.sort_unstable();
    format!(
        "{label:>5}: n={:>6} p50 {:>6} µs  p90 {:>6}  p99 {:>6}  p99.9 {:>6}  max {:>6}",
        v.len(),
        percentile(v, 0.5),
        percentile(v, 0.9),
        percentile(v, 0.99),
        percentile(v, 0.999),
        v.last().copied().unwrap_or(0)
    )
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: probes between network namespaces"]
async fn standard_model_round_of_486_probes() -> Result<()> {
    common::require_root(&[]);
    let _serial = SERIAL.lock().await;
    let pods: Vec<(&str, &str)> = ["x", "y", "z"]
        .iter()
        .flat_map(|ns| ["a", "b", "c"].iter().map(move |p| (*ns, *p)))
        .collect();
    let topo = Topology::build(&pods)?;
    let ports = all_ports(&[80, 81]);
    let servers = topo.serve(&ports).await?;
    let opts = ProbeOptions::default();
    let mut tasks = vec![];
    for from in &topo.pods {
        for to in &topo.pods {
            for &p in &ports {
                tasks.push(task(from, to, p));
            }
        }
    }
    assert_eq!(tasks.len(), 486);
    let is_self = |t: &ProbeTask| {
        t.client.name() == topo.pods.iter().find(|p| p.ip == t.dst).unwrap().ns.name()
    };
    let check = |got: &[Measurement], cross: Outcome| {
        for (t, m) in tasks.iter().zip(got) {
            let want = if is_self(t) { Outcome::Allowed } else { cross };
            assert_eq!(
                m.outcome,
                want,
                "{} → {} {}: {m:?}",
                t.client.name(),
                t.dst,
                t.port
            );
            if want == Outcome::Allowed {
                assert_eq!(
                    m.answered_by.as_ref(),
                    t.expect_answer_from.first(),
                    "{m:?}"
                );
                let client_ip = topo
                    .pods
                    .iter()
                    .find(|p| p.ns.name() == t.client.name())
                    .unwrap()
                    .ip;
                assert_eq!(m.seen_source, Some(client_ip), "{m:?}");
            }
        }
    };

    // Warm-up (ARP, first connections), then the measured rounds: the answer-time tail
    // under a full round's load is what the default deadline rests on.
    check(&run_probes(&tasks, &opts).await, Outcome::Allowed);
    let rounds: usize = std::env::var("KNETLAB_PROBE_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let mut by_proto: [Vec<u64>; 3] = Default::default();
    let mut walls = vec![];
    for _ in 0..rounds {
        let t0 = Instant::now();
        let got = run_probes(&tasks, &opts).await;
        walls.push(t0.elapsed());
        check(&got, Outcome::Allowed);
        for (t, m) in tasks.iter().zip(&got) {
            let i = Protocol::ALL
                .iter()
                .position(|&p| p == t.port.protocol)
                .unwrap();
            by_proto[i].push(m.elapsed_us);
        }
    }
    let mut all: Vec<u64> = by_proto.iter().flatten().copied().collect();
    println!(
        "answer time over {rounds} rounds of 486 concurrent probes (deadline {:?}):",
        opts.deadline
    );
    println!("{}", describe("all", &mut all));
    for (proto, v) in Protocol::ALL.iter().zip(by_proto.iter_mut()) {
        println!("{}", describe(proto.as_str(), v));
    }
    let allowed_wall = median(walls.clone());
    println!(
        "allowed round: median {:.1} ms, max {:.1} ms",
        allowed_wall.as_secs_f64() * 1e3,
        walls.iter().max().unwrap().as_secs_f64() * 1e3
    );

    // Every cross-pod probe rejected by the node.
    topo.filter_ports(
        "80:81",
        &["REJECT", "--reject-with", "icmp-admin-prohibited"],
    )?;
    let mut walls = vec![];
    for _ in 0..5 {
        let t0 = Instant::now();
        let got = run_probes(&tasks, &opts).await;
        walls.push(t0.elapsed());
        check(&got, Outcome::Rejected);
    }
    let reject_wall = median(walls);

    // Every cross-pod probe dropped: all wait out the deadline, in parallel.
    topo.iptables(&["-F", "FORWARD"])?;
    topo.filter_ports("80:81", &["DROP"])?;
    let mut walls = vec![];
    for _ in 0..3 {
        let t0 = Instant::now();
        let got = run_probes(&tasks, &opts).await;
        walls.push(t0.elapsed());
        check(&got, Outcome::Dropped);
    }
    let drop_wall = median(walls);
    println!(
        "486-probe round: allowed {:.1} ms, reject {:.1} ms, drop {:.1} ms (target < 200 ms)",
        allowed_wall.as_secs_f64() * 1e3,
        reject_wall.as_secs_f64() * 1e3,
        drop_wall.as_secs_f64() * 1e3
    );
    assert!(
        reject_wall < Duration::from_millis(200),
        "reject round {reject_wall:?}"
    );
    assert!(
        drop_wall < Duration::from_millis(200),
        "drop round {drop_wall:?}"
    );

    servers.shutdown().await;
    Ok(())
}
