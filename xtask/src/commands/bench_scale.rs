//! `cargo xtask bench --scale`: bring-up and teardown of big clusters (by default 10 nodes
//! x 100 pods and 20 nodes x 250 pods, in host-gw and vxlan mode), straight through
//! [`harness::cluster::Cluster`] (create, add_pods, verify, teardown) with the real CNI
//! plugins, no policies, no ports and no probes: what issue 5's "Speed and scale" targets
//! (under 15 ms a pod including the plugin execs, the harness under 200 MB at 5 000 pods,
//! nothing left behind), and where the ADD time goes (namespace creation, a pod's ADD
//! latency as its node fills, the CPU of the plugins, of the harness and of the whole
//! machine). Sizes run smallest first with progress on stderr, because the
//! big one takes minutes on two cores. The table becomes the `scale` section of
//! BENCHMARKS.md (written by [`super::bench::write_benchmarks`]).

use std::fmt::Write as _;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use harness::cluster::{AddOptions, Cluster, NewPod};
use sim::objects::PodRef;
use sim::plan::Plan;
use sim::scenario::NetworkMode;

use super::bench::{median, write_benchmarks};

/// The targets.
const TARGET_MS_PER_POD: f64 = 15.0;
const TARGET_PEAK_MB: f64 = 200.0;

/// One cluster size: `NODESxPODS` (pods per node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub nodes: usize,
    pub pods_per_node: usize,
}

impl Size {
    fn pods(self) -> usize {
        self.nodes * self.pods_per_node
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.nodes, self.pods_per_node)
    }
}

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> Result<Size, String> {
        let bad = || format!("{s:?} is not a size: write NODESxPODS_PER_NODE, e.g. 10x100");
        let (n, p) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
        let nodes: usize = n.trim().parse().map_err(|_| bad())?;
        let pods_per_node: usize = p.trim().parse().map_err(|_| bad())?;
        if nodes == 0 || pods_per_node == 0 {
            return Err(format!("{s:?}: nodes and pods per node must be at least 1"));
        }
        // host-local hands out a node's /24 minus the network, gateway and broadcast.
        if pods_per_node > 253 {
            return Err(format!(
                "{s:?}: a node's pod subnet is a /24, room for 253 pods"
            ));
        }
        if nodes > sim::plan::MAX_NODES {
            return Err(format!(
                "{s:?}: the underlay holds at most {} nodes",
                sim::plan::MAX_NODES
            ));
        }
        Ok(Size {
            nodes,
            pods_per_node,
        })
    }
}

/// The sizes `--scale` runs without `--scale-sizes`.
pub fn default_sizes() -> Vec<Size> {
    vec![
        Size {
            nodes: 10,
            pods_per_node: 100,
        },
        Size {
            nodes: 20,
            pods_per_node: 250,
        },
    ]
}

/// The figures of one bring-up and teardown.
#[derive(Debug, Clone)]
struct Sample {
    create: Duration,
    add: Duration,
    verify: Duration,
    /// Per node: its serial ADDs divided by its pods (ms), one value per node.
    node_add_per_pod: Vec<f64>,
    teardown: Duration,
    cni_del: Duration,
    /// VmHWM after the teardown (the peak since the reset before this run), in MB.
    peak_mb: Option<f64>,
    leftovers: Vec<String>,
    /// The 1-minute load average when the run started: other work on the machine
    /// inflates every figure here (two cores).
    load: Option<f64>,
    /// RSS when the run started (after handing freed heap back), in MB: the run's own
    /// growth is the peak minus this.
    start_mb: Option<f64>,
    /// Where the ADD time goes (see [`AddProfile`]).
    profile: AddProfile,
}

/// Where the time of the ADD phase went: namespace creation, one pod's ADD by its
/// position in its node (does it grow as the node fills?), and the CPU time of the
/// plugins (children) and of the harness itself over the phase, per pod.
#[derive(Debug, Clone, Default)]
struct AddProfile {
    netns_create: Duration,
    /// Per tenth of each node's pods (in ADD order): the mean ADD latency of one pod in
    /// that tenth, median over the nodes, in ms.
    by_tenth: Vec<f64>,
    /// CPU time (user + system) per pod during the ADDs, in ms.
    plugins_cpu_per_pod: f64,
    harness_cpu_per_pod: f64,
    /// Busy CPU time of the whole machine per pod during the ADDs (/proc/stat), in ms:
    /// more than the two above when other work runs (or the kernel works in threads of
    /// its own, e.g. freeing namespaces).
    machine_cpu_per_pod: Option<f64>,
}

fn mode_name(mode: NetworkMode) -> &'static str {
    match mode {
        NetworkMode::HostGw => "host-gw",
        NetworkMode::Vxlan => "vxlan",
    }
}

/// Runs every size in both network modes, `runs` times each, prints the table and (unless
/// `no_write`) writes it to BENCHMARKS.md. Returns the exit code.
pub fn main(sizes: &[Size], runs: usize, no_write: bool) -> u8 {
    if !knetlab::commands::prerequisites_ready() {
        return 2;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut sizes = sizes.to_vec();
    // Small first: the first figures come quickly, and the peak memory grows in order.
    sizes.sort_by_key(|s| (s.pods(), s.nodes));
    sizes.dedup();
    let mut rows = String::new();
    let mut profile_rows = String::new();
    let mut verdicts = vec![];
    for size in &sizes {
        for mode in [NetworkMode::HostGw, NetworkMode::Vxlan] {
            let mut samples = vec![];
            for i in 0..runs.max(1) {
                eprintln!(
                    "scale {size} {}, run {}/{}: {} pods",
                    mode_name(mode),
                    i + 1,
                    runs.max(1),
                    size.pods()
                );
                match rt.block_on(run_once(*size, mode)) {
                    Ok(s) => {
                        samples.push(s);
                    }
                    Err(e) => {
                        eprintln!("error: scale {size} {} failed: {e:#}", mode_name(mode));
                        return 2;
                    }
                }
                // Let the kernel finish freeing the namespaces (~0.3 ms each) first.
                std::thread::sleep(Duration::from_millis(300 + size.pods() as u64 / 2));
            }
            let (row, verdict) = summarise(*size, mode, &samples);
            rows.push_str(&row);
            profile_rows.push_str(&profile_row(*size, mode, &samples));
            verdicts.push(verdict);
        }
    }
    let mut table = String::new();
    let _ = writeln!(
        table,
        "`cargo xtask bench --scale`: one cluster per size and network mode built with \
         `Cluster::create`, `add_pods` (CNI ADD of `loopback` and `bridge` + `host-local` \
         for every pod: three plugin processes a pod, one thread per node), `verify`, then \
         `teardown` (CNI DEL of both attachments, {} threads, then the namespaces and state \
         go). Pods have no ports, there are no policies and no probes. Median of {} run{} \
         per row. Bring-up per pod = (create + ADDs + verify) / pods; one pod's ADD = a node's \
         serial ADDs / its pods, median over the nodes: the latency of one pod's ADD \
         (`lo` then `eth0`) while every node ADDs at once; teardown per pod = teardown / pods. Peak RSS is the \
         process's VmHWM, reset before each run (`/proc/self/clear_refs`, after `malloc_trim` gave the \
         previous run's freed heap back; RSS at start is where it began), so it covers \
         the whole xtask process (a debug build) but not the plugin processes. Load at start \
         is the 1-minute load average when the run began: on two cores any other work \
         inflates every time here. Targets \
         (issue 5): < {TARGET_MS_PER_POD} ms a pod including the plugin execs, < \
         {TARGET_PEAK_MB} MB at 5 000 pods, nothing left behind.\n",
        harness::sweep::DEL_THREADS,
        runs.max(1),
        if runs.max(1) == 1 { "" } else { "s" },
    );
    let _ = writeln!(
        table,
        "| network | nodes x pods | pods | create | pod ADDs | verify | bring-up per pod | one pod's ADD (latency) | teardown | of which CNI DEL | teardown per pod | peak RSS | RSS at start | left behind | load at start |"
    );
    let _ = writeln!(
        table,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    table.push_str(&rows);
    table.push('\n');
    let _ = writeln!(
        table,
        "Where the ADD time goes (medians over the runs): creating the pods' namespaces (one \
         thread, while the ADDs run); one pod's ADD latency in the first and the last tenth \
         of each node's pods (median over the nodes: does a pod cost more as its node \
         fills?); CPU time per pod during the ADDs of the plugin processes (`getrusage` of \
         the children), of the harness itself, and of the whole machine (`/proc/stat`: more \
         than the two when other work shares the two cores).\n"
    );
    let _ = writeln!(
        table,
        "| network | nodes x pods | namespaces created | ADD latency, first tenth | ADD latency, last tenth | plugins' CPU per pod | harness CPU per pod | whole machine CPU per pod |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|---|---|");
    table.push_str(&profile_rows);
    table.push('\n');
    for v in &verdicts {
        let _ = writeln!(table, "- {v}");
    }
    print!("{table}");
    if !no_write {
        if let Err(e) = write_benchmarks("scale", &table) {
            eprintln!("error: cannot write BENCHMARKS.md: {e}");
            return 2;
        }
        eprintln!("wrote BENCHMARKS.md");
    }
    if verdicts.iter().any(|v| v.contains("LEFT BEHIND")) {
        return 1;
    }
    0
}

/// One row of the "where the ADD time goes" table.
fn profile_row(size: Size, mode: NetworkMode, samples: &[Sample]) -> String {
    let med = |f: &dyn Fn(&AddProfile) -> Option<f64>| {
        median(samples.iter().filter_map(|s| f(&s.profile)).collect())
    };
    let ms = |v: Option<f64>, digits: usize| {
        v.map(|v| format!("{v:.digits$} ms"))
            .unwrap_or_else(|| "-".into())
    };
    format!(
        "| {} | {size} | {} | {} | {} | {} | {} | {} |\n",
        mode_name(mode),
        ms(med(&|p| Some(p.netns_create.as_secs_f64() * 1e3)), 0),
        ms(med(&|p| p.by_tenth.first().copied()), 0),
        ms(med(&|p| p.by_tenth.last().copied()), 0),
        ms(med(&|p| Some(p.plugins_cpu_per_pod)), 2),
        ms(med(&|p| Some(p.harness_cpu_per_pod)), 2),
        ms(med(&|p| p.machine_cpu_per_pod), 2),
    )
}

fn summarise(size: Size, mode: NetworkMode, samples: &[Sample]) -> (String, String) {
    let pods = size.pods() as f64;
    let med = |f: &dyn Fn(&Sample) -> f64| median(samples.iter().map(f).collect());
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let create = med(&|s| ms(s.create));
    let add = med(&|s| ms(s.add));
    let verify = med(&|s| ms(s.verify));
    let up_per_pod = med(&|s| (ms(s.create) + ms(s.add) + ms(s.verify)) / pods);
    let node_add = median(
        samples
            .iter()
            .filter_map(|s| median(s.node_add_per_pod.clone()))
            .collect(),
    );
    let teardown = med(&|s| ms(s.teardown));
    let cni_del = med(&|s| ms(s.cni_del));
    let down_per_pod = med(&|s| ms(s.teardown) / pods);
    let peak = median(samples.iter().filter_map(|s| s.peak_mb).collect());
    let load = median(samples.iter().filter_map(|s| s.load).collect());
    let start = median(samples.iter().filter_map(|s| s.start_mb).collect());
    let mut left: Vec<String> = samples.iter().flat_map(|s| s.leftovers.clone()).collect();
    left.sort();
    left.dedup();
    let f = |v: Option<f64>| {
        v.map(|v| format!("{v:.0} ms"))
            .unwrap_or_else(|| "-".into())
    };
    let f2 = |v: Option<f64>| {
        v.map(|v| format!("{v:.2} ms"))
            .unwrap_or_else(|| "-".into())
    };
    let row = format!(
        "| {} | {size} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
        mode_name(mode),
        size.pods(),
        f(create),
        f(add),
        f(verify),
        f2(up_per_pod),
        f2(node_add),
        f(teardown),
        f(cni_del),
        f2(down_per_pod),
        peak.map(|p| format!("{p:.1} MB"))
            .unwrap_or_else(|| "-".into()),
        start
            .map(|p| format!("{p:.1} MB"))
            .unwrap_or_else(|| "-".into()),
        if left.is_empty() {
            "nothing".to_string()
        } else {
            left.join(", ")
        },
        load.map(|l| format!("{l:.1}"))
            .unwrap_or_else(|| "-".into()),
    );
    let mut verdict = format!("{size} {}:", mode_name(mode));
    if let Some(v) = up_per_pod {
        if v <= TARGET_MS_PER_POD {
            let _ = write!(
                verdict,
                " bring-up {v:.2} ms a pod meets the {TARGET_MS_PER_POD} ms target;"
            );
        } else {
            let _ = write!(
                verdict,
                " bring-up {v:.2} ms a pod MISSES the {TARGET_MS_PER_POD} ms target by {:.2} ms ({:.0} %);",
                v - TARGET_MS_PER_POD,
                (v / TARGET_MS_PER_POD - 1.0) * 100.0
            );
        }
    }
    if let Some(p) = peak {
        // The memory target is stated for 5 000 pods: scale it for other sizes.
        let budget = TARGET_PEAK_MB * (pods / 5000.0).max(1.0);
        let _ = write!(
            verdict,
            " peak RSS {p:.1} MB {} the {budget:.0} MB budget;",
            if p <= budget { "within" } else { "OVER" }
        );
    }
    if left.is_empty() {
        verdict.push_str(" nothing left behind.");
    } else {
        let _ = write!(verdict, " LEFT BEHIND: {}.", left.join(", "));
    }
    (row, verdict)
}

/// One bring-up and teardown of `size` in `mode`, with progress on stderr.
async fn run_once(size: Size, mode: NetworkMode) -> Result<Sample> {
    let load = load_average();
    let prefix = harness::run::new_prefix();
    let plan = plan(&prefix, size, mode)?;
    release_free_memory();
    reset_peak_rss();
    let start_mb = peak_rss_mb();
    let t = Instant::now();
    let mut cluster = Cluster::create(plan)
        .await
        .with_context(|| format!("build the fabric and {} nodes ({prefix})", size.nodes))?;
    let create = t.elapsed();
    eprintln!(
        "  fabric and {} nodes in {:.0} ms (peak RSS so far {}); adding {} pods",
        size.nodes,
        create.as_secs_f64() * 1e3,
        mb(peak_rss_mb()),
        size.pods()
    );
    let pods: Vec<NewPod> = cluster
        .plan()
        .nodes
        .iter()
        .flat_map(|n| {
            (0..size.pods_per_node).map(move |i| NewPod {
                pod: PodRef::new("scale", format!("{}-p{i:03}", n.name)),
                node: n.name.clone(),
                capability_args: Default::default(),
            })
        })
        .collect();
    let t = Instant::now();
    let (children0, self0, machine0) = (
        cpu_time(nix::libc::RUSAGE_CHILDREN),
        cpu_time(nix::libc::RUSAGE_SELF),
        machine_busy(),
    );
    // On failure the cluster value drops here and its guard sweeps the prefix.
    let added = cluster
        .add_pods_with(&pods, AddOptions::default())
        .await
        .context("add the pods")?;
    let add = t.elapsed();
    let n = size.pods() as f64;
    let profile = AddProfile {
        netns_create: added.netns_create,
        by_tenth: by_tenth(&added.pod_adds),
        plugins_cpu_per_pod: (cpu_time(nix::libc::RUSAGE_CHILDREN) - children0) * 1e3 / n,
        harness_cpu_per_pod: (cpu_time(nix::libc::RUSAGE_SELF) - self0) * 1e3 / n,
        machine_cpu_per_pod: machine0.zip(machine_busy()).map(|(a, b)| (b - a) * 1e3 / n),
    };
    eprintln!("  {}", profile_line(&profile));
    let node_add_per_pod: Vec<f64> = added
        .node_adds
        .iter()
        .map(|(_, n, d)| d.as_secs_f64() * 1e3 / (*n).max(1) as f64)
        .collect();
    eprintln!(
        "  {} pods ADDed in {:.0} ms ({:.2} ms a pod, peak RSS so far {}); verifying",
        added.ips.len(),
        add.as_secs_f64() * 1e3,
        add.as_secs_f64() * 1e3 / size.pods() as f64,
        mb(peak_rss_mb())
    );
    let t = Instant::now();
    if let Err(fault) = cluster.verify().await {
        let td = cluster.teardown().await;
        bail!(
            "verify found an infrastructure fault: {fault}{}",
            if td.is_ok() {
                ""
            } else {
                " (and teardown failed)"
            }
        );
    }
    let verify = t.elapsed();
    eprintln!(
        "  verified in {:.0} ms (peak RSS so far {}); tearing down",
        verify.as_secs_f64() * 1e3,
        mb(peak_rss_mb())
    );
    let td = cluster.teardown().await;
    let peak_mb = peak_rss_mb();
    if !td.is_ok() {
        bail!("teardown failed: {}", td.errors.join("; "));
    }
    let leftovers = leftovers(&prefix)?;
    eprintln!(
        "  torn down in {:.0} ms (CNI DEL {:.0} ms); peak RSS {}; {}",
        td.elapsed.as_secs_f64() * 1e3,
        td.cni_del.as_secs_f64() * 1e3,
        mb(peak_mb),
        if leftovers.is_empty() {
            "nothing left behind".to_string()
        } else {
            format!("LEFT BEHIND: {}", leftovers.join(", "))
        }
    );
    Ok(Sample {
        create,
        add,
        verify,
        node_add_per_pod,
        teardown: td.elapsed,
        cni_del: td.cni_del,
        peak_mb,
        leftovers,
        load,
        start_mb,
        profile,
    })
}

/// One line: namespace creation, ADD latency by tenth, CPU per pod.
fn profile_line(p: &AddProfile) -> String {
    let tenths: Vec<String> = p.by_tenth.iter().map(|v| format!("{v:.0}")).collect();
    format!(
        "namespaces created in {:.0} ms; one pod's ADD by tenth of its node's pods: {} ms; CPU per pod: plugins {:.2} ms, harness {:.2} ms, whole machine {}",
        p.netns_create.as_secs_f64() * 1e3,
        tenths.join(" / "),
        p.plugins_cpu_per_pod,
        p.harness_cpu_per_pod,
        p.machine_cpu_per_pod
            .map(|v| format!("{v:.2} ms"))
            .unwrap_or_else(|| "-".into())
    )
}

/// Per tenth of each node's pods (in ADD order), the mean ADD of one pod there, median
/// over the nodes, in ms.
fn by_tenth(per_node: &[Vec<Duration>]) -> Vec<f64> {
    (0..10)
        .filter_map(|t| {
            let means: Vec<f64> = per_node
                .iter()
                .filter_map(|adds| {
                    let (lo, hi) = (adds.len() * t / 10, adds.len() * (t + 1) / 10);
                    let part = adds.get(lo..hi).filter(|p| !p.is_empty())?;
                    Some(
                        part.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e3
                            / part.len() as f64,
                    )
                })
                .collect();
            median(means)
        })
        .collect()
}

/// User + system CPU seconds of this process (`RUSAGE_SELF`) or of its waited-for
/// children and their descendants (`RUSAGE_CHILDREN`: the plugin processes).
fn cpu_time(who: nix::libc::c_int) -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: nix::libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { nix::libc::getrusage(who, &mut u) } != 0 {
        return 0.0;
    }
    let s = |t: nix::libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    s(u.ru_utime) + s(u.ru_stime)
}

/// Busy CPU seconds of the whole machine since boot (/proc/stat: everything but idle and
/// iowait), all cores together.
fn machine_busy() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = cpu.iter().take(8).sum();
    let idle = cpu.get(3)? + cpu.get(4)?;
    // USER_HZ is 100 on Linux.
    Some((total - idle) / 100.0)
}

/// The plan of a bare cluster of `size` in `mode`, through the scenario parser so the
/// defaults (pod CIDR, CNI chain) are exactly a scenario's.
fn plan(prefix: &str, size: Size, mode: NetworkMode) -> Result<Plan> {
    let text = format!(
        "name: scale\nsummary: bench --scale\ncluster:\n  nodes: {}\n  network: {}\n  policy: none\n",
        size.nodes,
        mode_name(mode)
    );
    let scenario = sim::scenario::parse_str(Path::new("bench --scale"), &text)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("describe the benchmark cluster")?;
    Plan::new(prefix, &scenario.cluster).context("plan the benchmark cluster")
}

/// What the run left: namespaces with its prefix, and its state directory.
fn leftovers(prefix: &str) -> Result<Vec<String>> {
    let mut left: Vec<String> = harness::netns::list_run(prefix)?
        .into_iter()
        .map(|n| format!("netns {n}"))
        .collect();
    let state = Path::new(sim::plan::STATE_ROOT).join(prefix);
    if state.exists() {
        left.push(format!("{}", state.display()));
    }
    Ok(left)
}

/// Hands the heap the previous run freed back to the kernel (glibc keeps it otherwise),
/// so one row's peak does not start from the last row's high-water mark.
fn release_free_memory() {
    // SAFETY: malloc_trim only walks glibc's own arenas; it has no preconditions.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// Resets VmHWM to the current RSS (Linux >= 4.0: writing 5 to clear_refs), so each run's
/// peak is its own. Best effort: the figure is then the process's peak so far.
fn reset_peak_rss() {
    if let Err(e) = std::fs::write("/proc/self/clear_refs", "5") {
        eprintln!("  (cannot reset the peak RSS: {e}; the figure is the process's peak so far)");
    }
}

/// The 1-minute load average (/proc/loadavg).
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn mb(v: Option<f64>) -> String {
    v.map(|p| format!("{p:.1} MB"))
        .unwrap_or_else(|| "unknown".into())
}

/// VmHWM of this process in MB (the whole process: runtime, cluster state, buffers).
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_latency_by_tenth_is_the_median_over_the_nodes() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_millis(m))
                .collect::<Vec<_>>()
        };
        // Ten pods a node: each tenth is one pod.
        let a = ms(&[1, 1, 1, 1, 1, 1, 1, 1, 1, 10]);
        let b = ms(&[2, 2, 2, 2, 2, 2, 2, 2, 2, 20]);
        let c = ms(&[3, 3, 3, 3, 3, 3, 3, 3, 3, 30]);
        let t = by_tenth(&[a, b, c]);
        assert_eq!(t.len(), 10);
        assert_eq!((t[0], t[9]), (2.0, 20.0));
        // Twenty pods: a tenth is the mean of two.
        let d = ms(&[1, 3].repeat(10));
        assert_eq!(by_tenth(&[d]), vec![2.0; 10]);
        assert!(by_tenth(&[]).is_empty());
    }

    #[test]
    fn sizes_parse_and_refuse_nonsense() {
        assert_eq!(
            "10x100".parse::<Size>(),
            Ok(Size {
                nodes: 10,
                pods_per_node: 100
            })
        );
        assert_eq!("20X250".parse::<Size>().map(Size::pods), Ok(5000));
        for bad in ["10", "x100", "0x5", "3x0", "2x254", "ax3"] {
            assert!(bad.parse::<Size>().is_err(), "{bad} parsed");
        }
    }
}
