//! `cargo xtask bench --services`: how long kube-proxy's rule programming takes for a big
//! node, in iptables and in nftables mode. In ONE node namespace (nothing else: no
//! fabric, no pods) it renders and loads 1 000, 5 000 and 10 000 ClusterIP Services with
//! 2-3 endpoints each (synthetic objects built here, `--service-counts` to choose), and
//! measures per mode: rendering (the `sim` renderer, text included), the full load (the
//! first sync: `iptables-nft-restore` of kube-proxy's start-up and full sync, or one
//! `nft -f` transaction), its size, and a partial sync after one endpoint is added to
//! one Service: time and bytes written, which must be a small fraction of the full load
//! (checked here; a failure exits 1). Figures are printed next to the published ones the
//! reference lists, and written to BENCHMARKS.md unless `--no-write`.
//!
//! Every load runs the real tool inside the namespace, process start included, as the
//! service proxies do (`harness::proxy`). Between modes and sizes the namespace's
//! ruleset is emptied (`nft flush ruleset`, inside it), so each full load starts from a
//! fresh node.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use harness::netns::Netns;
use harness::policy::{IPTABLES_RESTORE, run_in};
use harness::proxy::nftables::{NFT, load};
use sim::kube_proxy::iptables::{self as ipt, bootstrap_restore};
use sim::kube_proxy::model::{Endpoint, ProxyConfig, ProxyInput, ServicePort};
use sim::kube_proxy::nftables as nft;
use sim::protocol::Protocol;

/// The sizes measured when `--service-counts` is not given.
pub const DEFAULT_COUNTS: [usize; 3] = [1_000, 5_000, 10_000];

/// The partial sync must write at most this share of the full load's bytes (kube-proxy's
/// iptables partial sync still rewrites KUBE-SERVICES whole: about a tenth of the text)
/// and take at most this share of its time.
const MAX_INCREMENTAL_BYTES: f64 = 0.25;
const MAX_INCREMENTAL_TIME: f64 = 0.5;

const SERVICE_CIDR: &str = "10.96.0.0/12";
const SERVICE_BASE: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 0);
const POD_CIDR: &str = "10.244.0.0/16";
const POD_BASE: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 0);
const NODE_IP: &str = "192.168.200.11";

/// The figures of one mode at one size.
#[derive(Debug, Clone, Copy)]
struct Figures {
    render: Duration,
    full: Duration,
    full_bytes: usize,
    full_lines: usize,
    incremental: Duration,
    incremental_bytes: usize,
}

impl Figures {
    fn byte_share(&self) -> f64 {
        self.incremental_bytes as f64 / self.full_bytes.max(1) as f64
    }
    fn time_share(&self) -> f64 {
        self.incremental.as_secs_f64() / self.full.as_secs_f64().max(1e-9)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Iptables,
    Nftables,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Iptables => "iptables",
            Mode::Nftables => "nftables",
        }
    }
}

pub fn main(counts: &[usize], no_write: bool) -> u8 {
    match run(counts, no_write) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    }
}

fn run(counts: &[usize], no_write: bool) -> Result<bool> {
    if counts.is_empty() || counts.contains(&0) {
        bail!("--service-counts needs positive numbers");
    }
    let prefix = harness::run::new_prefix();
    let name = format!("{prefix}-n1");
    let nodes = Netns::create_many(std::slice::from_ref(&name))
        .with_context(|| format!("create the node namespace {name}"))?;
    eprintln!("node namespace {name}");
    let node = &nodes[0];
    let load_before = load_average();
    let measured = measure_all(node, counts);
    let load_after = load_average();
    // Teardown whatever happened.
    let gone = harness::netns::delete(&name).with_context(|| format!("delete namespace {name}"));
    let rows = measured?;
    gone?;

    let mut table = table(&rows);
    let _ = writeln!(
        table,
        "\nLoad average (1 min) before and after the run: {load_before} and {load_after} \
         (other work on the machine slows the loads; the shares are what matter).",
    );
    println!("{table}");
    let mut ok = true;
    for (n, mode, f) in &rows {
        let fine =
            f.byte_share() <= MAX_INCREMENTAL_BYTES && f.time_share() <= MAX_INCREMENTAL_TIME;
        println!(
            "{} {n} services: one endpoint added wrote {} bytes ({:.2} % of the full load) in {:.1} ms ({:.1} % of its time){}",
            mode.name(),
            f.incremental_bytes,
            f.byte_share() * 100.0,
            ms(f.incremental),
            f.time_share() * 100.0,
            if fine {
                ""
            } else {
                "  <-- NOT a small fraction"
            }
        );
        ok &= fine;
    }
    if !no_write {
        super::bench::write_benchmarks("services", &table).context("write BENCHMARKS.md")?;
        println!("written to BENCHMARKS.md");
    }
    Ok(ok)
}

fn measure_all(node: &Netns, counts: &[usize]) -> Result<Vec<(usize, Mode, Figures)>> {
    let mut rows = Vec::new();
    for &n in counts {
        for mode in [Mode::Iptables, Mode::Nftables] {
            eprintln!("{} services, {}…", n, mode.name());
            let f = measure(node, mode, n)
                .with_context(|| format!("{} with {n} services", mode.name()))?;
            rows.push((n, mode, f));
        }
    }
    Ok(rows)
}

/// A node's kube-proxy input with `n` ClusterIP services of 2 or 3 ready endpoints each
/// (alternating), on this node and another.
fn input(n: usize) -> ProxyInput {
    let base = u32::from(SERVICE_BASE);
    let pods = u32::from(POD_BASE);
    let services = (0..n)
        .map(|i| {
            let mut sp = ServicePort::cluster_ip(
                "bench",
                &format!("svc-{i:05}"),
                Some("http"),
                Protocol::Tcp,
                Ipv4Addr::from(base + 10 + i as u32),
                80,
            );
            sp.endpoints = (0..2 + i % 2)
                .map(|k| {
                    let ip = Ipv4Addr::from(pods + 256 + (i * 3 + k) as u32);
                    Endpoint::ready(ip, 8080, Some(if k % 2 == 0 { "n1" } else { "n2" }))
                })
                .collect();
            sp
        })
        .collect();
    ProxyInput {
        node: "n1".into(),
        node_ip: NODE_IP.parse().expect("constant"),
        cluster_cidr: Some(POD_CIDR.parse().expect("constant")),
        config: ProxyConfig::default(),
        services,
    }
}

/// The same input with one more endpoint on the middle service.
fn one_more_endpoint(input: &ProxyInput) -> ProxyInput {
    let mut next = input.clone();
    let mid = next.services.len() / 2;
    next.services[mid].endpoints.push(Endpoint::ready(
        "10.244.250.1".parse().expect("constant"),
        8080,
        Some("n2"),
    ));
    next
}

fn measure(node: &Netns, mode: Mode, n: usize) -> Result<Figures> {
    // A fresh node: nothing of the previous mode or size left.
    run_in(node, NFT, &["flush", "ruleset"], None)?;
    let before = input(n);
    let after = one_more_endpoint(&before);
    let service_cidr = Some(SERVICE_CIDR.parse().expect("constant"));
    match mode {
        Mode::Iptables => {
            let t = Instant::now();
            let rules = ipt::render(&before).map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut full = bootstrap_restore(true);
            full.push_str(&rules.full_restore());
            let render = t.elapsed();
            let next = ipt::render(&after).map_err(|e| anyhow::anyhow!("{e}"))?;
            let inc = next.incremental_restore(&rules);
            let t = Instant::now();
            run_in(node, IPTABLES_RESTORE, &["--noflush"], Some(&full))?;
            let full_time = t.elapsed();
            let t = Instant::now();
            run_in(node, IPTABLES_RESTORE, &["--noflush"], Some(&inc))?;
            let inc_time = t.elapsed();
            Ok(Figures {
                render,
                full: full_time,
                full_bytes: full.len(),
                full_lines: full.lines().count(),
                incremental: inc_time,
                incremental_bytes: inc.len(),
            })
        }
        Mode::Nftables => {
            let t = Instant::now();
            let rules = nft::render(&before, service_cidr).map_err(|e| anyhow::anyhow!("{e}"))?;
            let full = rules.full_transaction();
            let render = t.elapsed();
            let next = nft::render(&after, service_cidr).map_err(|e| anyhow::anyhow!("{e}"))?;
            let inc = next.incremental_transaction(&rules);
            let t = Instant::now();
            load(node, &full)?;
            let full_time = t.elapsed();
            let t = Instant::now();
            load(node, &inc)?;
            let inc_time = t.elapsed();
            Ok(Figures {
                render,
                full: full_time,
                full_bytes: full.len(),
                full_lines: full.lines().count(),
                incremental: inc_time,
                incremental_bytes: inc.len(),
            })
        }
    }
}

/// The 1-minute load average, as `/proc/loadavg` gives it.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn size(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// The measured table and, under it, the published figures to compare with.
fn table(rows: &[(usize, Mode, Figures)]) -> String {
    let mut t = String::new();
    t.push_str(
        "One node namespace, synthetic ClusterIP Services with 2-3 endpoints each (about 2.5 \
         on average), one run per cell. Render = the `sim` renderer with the text; full load = \
         the node's first sync through the real tool (`iptables-nft-restore --noflush` of \
         kube-proxy's start-up and full sync, or one `nft -f -` transaction), process start \
         included; partial = one endpoint added to one Service, kube-proxy's partial sync.\n\n",
    );
    t.push_str(
        "| services | mode | render | full load | full text | partial sync | partial text |\n",
    );
    t.push_str("|---:|---|---:|---:|---:|---:|---:|\n");
    for (n, mode, f) in rows {
        let _ = writeln!(
            t,
            "| {n} | {} | {:.0} ms | {:.0} ms | {} ({} lines) | {:.1} ms ({:.1} %) | {} ({:.2} %) |",
            mode.name(),
            ms(f.render),
            ms(f.full),
            size(f.full_bytes),
            f.full_lines,
            ms(f.incremental),
            f.time_share() * 100.0,
            size(f.incremental_bytes),
            f.byte_share() * 100.0,
        );
    }
    if let Some(summary) = summary(rows) {
        t.push('\n');
        t.push_str(&summary);
        t.push('\n');
    }
    t.push_str(
        "\nPublished figures to compare with (as listed in the reference, \
         `peers-and-style.md` §B.3 and `floors.md` §6):\n\n\
         | source | figure |\n|---|---|\n\
         | KEP-3453 (kubernetes/enhancements `keps/sig-network/3453-minimize-iptables-restore`) | iptables partial restores, 5 000-node scale test: p50 network-programming latency ~27 s → ~13 s, ~5 s with `--iptables-min-sync-period 1s`; p90/p99 stay dominated by full resyncs |\n\
         | KEP-3866 (`keps/sig-network/3866-nftables-proxy`) | why: iptables has no incremental API (every change re-uploads the whole ruleset) and first-packet matching is O(services); nftables mode uses verdict maps. The kubernetes.io blog (2025-02-28) has latency graphs at 5k/10k/30k Services whose numbers the reference could not extract |\n\
         | AWS EKS best practices (nftables) | the iptables latency problem shows above ~1 000 Services |\n\
         | floors.md §6, this VM, raw tools | 10 003 rules: `iptables-nft-restore` 207 ms, `nft -f` 235 ms; one-rule change with 50k rules loaded: `--noflush` restore 25 ms, `nft add rule` 60 ms (nft fetches the ruleset cache first) |\n",
    );
    t
}

/// One sentence comparing the modes at the largest size measured in both.
fn summary(rows: &[(usize, Mode, Figures)]) -> Option<String> {
    let find = |n: usize, m: Mode| {
        rows.iter()
            .find(|(k, mode, _)| *k == n && *mode == m)
            .map(|r| r.2)
    };
    let n = rows
        .iter()
        .map(|r| r.0)
        .filter(|&n| find(n, Mode::Iptables).is_some() && find(n, Mode::Nftables).is_some())
        .max()?;
    let (i, f) = (find(n, Mode::Iptables)?, find(n, Mode::Nftables)?);
    Some(format!(
        "At {n} Services the full load took {:.1} s with nftables against {:.1} s with \
         iptables; adding one endpoint wrote {} with nftables (that Service's chains; map \
         elements unchanged) against {} with iptables (kube-proxy's partial restore still \
         rewrites the top-level KUBE-SERVICES chain whole), in {:.0} ms against {:.0} ms.",
        f.full.as_secs_f64(),
        i.full.as_secs_f64(),
        size(f.incremental_bytes),
        size(i.incremental_bytes),
        ms(f.incremental),
        ms(i.incremental),
    ))
}
