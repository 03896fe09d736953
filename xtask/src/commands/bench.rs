//! `cargo xtask bench`: measures a scenario (by default `default-deny`: the standard model
//! on two nodes, 486 probes per step) over several runs, once as written (denied traffic
//! rejected) and once with `deny: drop`, and writes the medians, with the machine and
//! date, to BENCHMARKS.md. A benchmark, not a timed test: nothing here can fail a build.
//! With `--scale` it measures bring-up and teardown of big bare clusters instead (see
//! [`super::bench_scale`]); with `--services`, kube-proxy's rule programming for
//! thousands of Services in iptables and nftables mode (see [`super::bench_services`]);
//! with `--check`, `knetlab check` end to end (see [`super::bench_check`]); with
//! `--manifests`, big inputs: a 2 MB install manifest and a 200-pod app (see
//! [`super::bench_manifests`]); with `--tiers`, the ClusterNetworkPolicy tiers (see
//! [`super::bench_tiers`]).

use std::fmt::Write as _;
use std::time::Duration;

use harness::run::{RunOptions, RunReport};
use sim::scenario::{DenyStyle, Scenario};

use knetlab::scenarios::Catalog;

#[derive(clap::Args)]
pub struct Args {
    /// The scenario to measure.
    #[arg(default_value = "default-deny")]
    pub scenario: String,
    /// How many runs per variant (default 7, or 1 with `--scale`).
    #[arg(long)]
    pub runs: Option<usize>,
    /// Print the figures without writing BENCHMARKS.md.
    #[arg(long)]
    pub no_write: bool,
    /// Measure bring-up and teardown of big bare clusters (10x100 and 20x250, host-gw
    /// and vxlan) instead of a scenario; takes minutes. `--runs` then defaults to 1.
    #[arg(long)]
    pub scale: bool,
    /// The sizes for `--scale` (implies it), as NODESxPODS_PER_NODE, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub scale_sizes: Option<Vec<super::bench_scale::Size>>,
    /// Measure kube-proxy's rule programming instead:
    /// 1 000, 5 000 and 10 000 ClusterIP Services loaded into one node namespace, in
    /// iptables and nftables mode, full sync and a one-endpoint partial sync.
    #[arg(long)]
    pub services: bool,
    /// The Service counts for `--services` (implies it), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub service_counts: Option<Vec<usize>>,
    /// Measure `knetlab check` end to end instead, on Online Boutique as published (12
    /// Deployments, 12 Services, 13 NetworkPolicies) on 3 nodes (see
    /// [`super::bench_check`]).
    #[arg(long)]
    pub check: bool,
    /// Measure big inputs instead: reading a 2 MB install manifest (CRDs included), and
    /// `knetlab check` of 200 pods and 50 NetworkPolicies on 4 nodes, with its peak RSS
    /// (see [`super::bench_manifests`]).
    #[arg(long)]
    pub manifests: bool,
    /// Measure the ClusterNetworkPolicy tiers instead: time to enforce a change on the
    /// standard model, and 100 policies x 25 rules over 200 pods on 4 nodes rendered,
    /// loaded and changed one at a time (see [`super::bench_tiers`]).
    #[arg(long)]
    pub tiers: bool,
    /// Run from a release build, as `cargo install` builds knetlab: what runs in this
    /// process (rendering rules, reading manifests) is then measured as users run it.
    /// Builds the release profile first (minutes when cold).
    #[arg(long)]
    pub release: bool,
}

/// The figures of one run.
#[derive(Debug, Clone, Copy)]
struct Sample {
    bring_up: f64,
    teardown: f64,
    /// The first step's first probe round (the whole matrix), and how many cells it had.
    first_round: f64,
    probes: usize,
    /// Later steps: rule sync and time to enforce (median over the steps of a run).
    sync: Option<f64>,
    enforce: Option<f64>,
}

pub fn main(args: Args) -> u8 {
    if args.release && cfg!(debug_assertions) {
        return in_release_build();
    }
    if args.manifests {
        return super::bench_manifests::main(args.runs.unwrap_or(5), args.no_write);
    }
    if args.check {
        return super::bench_check::main(args.runs.unwrap_or(7), args.no_write);
    }
    if args.tiers {
        return super::bench_tiers::main(args.runs.unwrap_or(7), args.no_write);
    }
    if args.services || args.service_counts.is_some() {
        let counts = args
            .service_counts
            .clone()
            .unwrap_or_else(|| super::bench_services::DEFAULT_COUNTS.to_vec());
        return super::bench_services::main(&counts, args.no_write);
    }
    if args.scale || args.scale_sizes.is_some() {
        let sizes = args
            .scale_sizes
            .clone()
            .unwrap_or_else(super::bench_scale::default_sizes);
        return super::bench_scale::main(&sizes, args.runs.unwrap_or(1), args.no_write);
    }
    let runs = args.runs.unwrap_or(7);
    let path = match Catalog::locate(None, true).and_then(|c| c.resolve(&args.scenario)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let scenario = match sim::scenario::load(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    if !knetlab::commands::prerequisites_ready() {
        return 2;
    }
    let (rows, probes) = match measure_variants(&scenario, runs) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let table = scenario_table(&scenario, &rows, probes);
    print!("{table}");
    if !args.no_write {
        if let Err(e) = write_benchmarks(&scenario.name, &table) {
            eprintln!("error: cannot write BENCHMARKS.md: {e}");
            return 2;
        }
        eprintln!("wrote BENCHMARKS.md");
    }
    0
}

/// This same command, without `--release`, from a release build of xtask; its exit code.
fn in_release_build() -> u8 {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--release")
        .collect();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!(
        "building the release profile, then: xtask {}",
        args.join(" ")
    );
    let status = std::process::Command::new(cargo)
        .current_dir(crate::workspace_root())
        .args(["run", "--release", "--quiet", "--package", "xtask", "--"])
        .args(&args)
        .status();
    match status {
        Ok(s) => s.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(2),
        Err(e) => {
            eprintln!("error: cannot run cargo: {e}");
            2
        }
    }
}

/// Runs `scenario` `runs` times as written (denied traffic rejected) and `runs` times with
/// `deny: drop`, printing each run; the table rows (medians) and how many cells the first
/// step measured. `Err` holds the exit code once the failure is printed.
pub(super) fn measure_variants(scenario: &Scenario, runs: usize) -> Result<(String, usize), u8> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut rows = String::new();
    // Counted from what the runs measured, not computed from the scenario.
    let mut probes = 0;
    for deny in [DenyStyle::Reject, DenyStyle::Drop] {
        let mut variant = scenario.clone();
        variant.cluster.deny = deny;
        let label = match deny {
            DenyStyle::Reject => "reject",
            DenyStyle::Drop => "drop",
        };
        let mut samples = Vec::new();
        for i in 0..runs {
            match run_once(&rt, &variant) {
                Ok(s) => {
                    eprintln!(
                        "{label} run {}: bring-up {:.1} ms, first round {:.1} ms, sync {}, enforce {}, teardown {:.1} ms",
                        i + 1,
                        s.bring_up,
                        s.first_round,
                        opt(s.sync),
                        opt(s.enforce),
                        s.teardown
                    );
                    probes = s.probes;
                    samples.push(s);
                }
                Err(e) => {
                    eprintln!("error: {label} run {} failed: {e:#}", i + 1);
                    return Err(2);
                }
            }
            // Let the kernel finish freeing the namespaces before the next run.
            std::thread::sleep(Duration::from_millis(300));
        }
        let med =
            |f: &dyn Fn(&Sample) -> Option<f64>| median(samples.iter().filter_map(f).collect());
        let _ = writeln!(
            rows,
            "| {label} | {} | {} | {} | {} | {} | {} |",
            samples.len(),
            opt(med(&|s| Some(s.bring_up))),
            opt(med(&|s| Some(s.first_round))),
            opt(med(&|s| s.sync)),
            opt(med(&|s| s.enforce)),
            opt(med(&|s| Some(s.teardown))),
        );
    }
    Ok((rows, probes))
}

/// The scenario's line and the table around `rows` (see [`measure_variants`]).
pub(super) fn scenario_table(scenario: &Scenario, rows: &str, probes: usize) -> String {
    let mut table = String::new();
    let _ = writeln!(
        table,
        "Scenario `{}`: {} nodes, {} pods, {probes} probes in the first step's matrix.\n",
        scenario.name,
        scenario.cluster.nodes.len(),
        pods(scenario)
    );
    let _ = writeln!(
        table,
        "| denied traffic | runs | bring-up | first probe round | rule sync (later steps) | time to enforce (later steps) | teardown |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|---|");
    table.push_str(rows);
    table
}

fn run_once(rt: &tokio::runtime::Runtime, scenario: &Scenario) -> anyhow::Result<Sample> {
    let opts = RunOptions {
        prefix: harness::run::new_prefix(),
        keep: false,
        explain: None,
        progress: false,
        deadline: None,
        capture: None,
        repeat: 0,
        ..Default::default()
    };
    let r: RunReport = match rt.block_on(harness::run::run(scenario, &opts)) {
        Ok(r) => r,
        Err(e) => {
            print!("{}", harness::sweep::clean_prefix(&opts.prefix));
            return Err(e);
        }
    };
    if !r.ok() {
        anyhow::bail!("the matrix did not match: the figures would not mean anything");
    }
    let first = r.step_timings.first();
    let later: Vec<_> = r.step_timings.iter().skip(1).collect();
    Ok(Sample {
        bring_up: r.timings.bring_up_ms,
        teardown: r.timings.teardown_ms,
        first_round: first.map(|t| t.first_round_ms).unwrap_or(0.0),
        probes: r.steps.first().map(|s| s.cells.len()).unwrap_or(0),
        sync: median(later.iter().map(|t| t.sync_ms).collect()),
        enforce: median(later.iter().filter_map(|t| t.enforce_ms).collect()),
    })
}

fn pods(scenario: &Scenario) -> usize {
    scenario
        .steps
        .first()
        .map(|s| {
            s.changes
                .iter()
                .filter(|c| matches!(c, sim::scenario::Change::Apply(raw) if raw.kind == sim::objects::Kind::Pod))
                .count()
        })
        .unwrap_or(0)
}

fn opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1} ms"))
        .unwrap_or_else(|| "-".into())
}

pub(super) fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    (!v.is_empty()).then(|| v[v.len() / 2])
}

/// Replaces this scenario's section in BENCHMARKS.md (other sections stay).
pub(super) fn write_benchmarks(name: &str, table: &str) -> std::io::Result<()> {
    let path = crate::workspace_root().join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        "# Benchmarks\n\nWritten by `cargo xtask bench`: medians of several runs of a scenario, \
         end to end through the real CNI plugins, iptables and sockets. Debug build (what \
         `cargo xtask` runs).\n"
            .into()
    });
    let marker = format!("<!-- bench:{name} -->");
    let section = format!(
        "{marker}\n## {name}\n\nMachine: {}. Date: {}.\n\n{table}{marker}\n",
        machine(),
        today()
    );
    let new = match (old.find(&marker), old.rfind(&marker)) {
        (Some(a), Some(b)) if a != b => {
            format!("{}{}{}", &old[..a], section, &old[b + marker.len() + 1..])
        }
        _ => format!("{}\n\n{}", old.trim_end(), section),
    };
    std::fs::write(path, new)
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} vCPU ({model}), Linux {}", kernel.trim())
}

/// Today's date (UTC), as BENCHMARKS.md dates its figures.
fn today() -> String {
    time::OffsetDateTime::now_utc().date().to_string()
}
