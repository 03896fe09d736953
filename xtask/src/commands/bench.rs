//! `cargo xtask bench`: measures bring-up, probing and teardown of a scenario (by default
//! the standard model on two nodes) over several runs and writes the medians, with the
//! machine and date, to BENCHMARKS.md. A benchmark, not a timed test.

use std::fmt::Write as _;
use std::time::Duration;

use harness::run::{RunOptions, Timings};

use crate::scenario_files;

#[derive(clap::Args)]
pub struct Args {
    /// The scenario to measure.
    #[arg(default_value = "default-deny")]
    pub scenario: String,
    /// How many runs.
    #[arg(long, default_value_t = 7)]
    pub runs: usize,
    /// Print the figures without writing BENCHMARKS.md.
    #[arg(long)]
    pub no_write: bool,
}

pub fn main(args: Args) -> u8 {
    let path = match scenario_files::resolve(&args.scenario) {
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
    let mut log = |m: &str| eprintln!("{m}");
    if let Err(e) = harness::prereq::ensure(&mut log) {
        eprintln!("error: {e:#}");
        return 2;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut samples: Vec<Timings> = Vec::new();
    let mut probes = 0;
    for i in 0..args.runs {
        let opts = RunOptions {
            prefix: harness::run::new_prefix(),
            keep: false,
            explain: None,
            deadline: None,
        };
        match rt.block_on(harness::run::run(&scenario, &opts)) {
            Ok(r) => {
                probes = r.steps.iter().map(|s| s.cells.len()).sum();
                eprintln!(
                    "run {}: bring-up {:.1} ms, probe {:.1} ms ({probes} probes), teardown {:.1} ms{}",
                    i + 1,
                    r.timings.bring_up_ms,
                    r.timings.probe_ms,
                    r.timings.teardown_ms,
                    if r.ok() { "" } else { " (matrix mismatch!)" }
                );
                samples.push(r.timings);
            }
            Err(e) => {
                eprintln!("error: run {} failed: {e:#}", i + 1);
                print!("{}", harness::netns::sweep::clean_prefix(&opts.prefix));
                return 2;
            }
        }
        // Let the kernel finish freeing the namespaces before the next run.
        std::thread::sleep(Duration::from_millis(300));
    }
    let med = |f: fn(&Timings) -> f64| median(samples.iter().map(f).collect());
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| scenario | runs | bring-up median | probe median ({probes} probes) | teardown median |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|");
    let _ = writeln!(
        table,
        "| {} ({} nodes) | {} | {:.1} ms | {:.1} ms | {:.1} ms |",
        scenario.name,
        scenario.cluster.nodes.len(),
        samples.len(),
        med(|t| t.bring_up_ms),
        med(|t| t.probe_ms),
        med(|t| t.teardown_ms)
    );
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// Replaces this scenario's section in BENCHMARKS.md (other sections stay).
fn write_benchmarks(name: &str, table: &str) -> std::io::Result<()> {
    let path = crate::workspace_root().join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        "# Benchmarks\n\nWritten by `cargo xtask bench`; medians of several runs.\n".into()
    });
    let marker = format!("<!-- bench:{name} -->");
    let machine = machine();
    let date = chrono_free_date();
    let section =
        format!("{marker}\n## {name}\n\nMachine: {machine}. Date: {date}.\n\n{table}{marker}\n");
    let new = match (old.find(&marker), old.rfind(&marker)) {
        (Some(a), Some(b)) if a != b => {
            format!("{}{}{}", &old[..a], section, &old[b + marker.len() + 1..])
        }
        _ => format!("{}\n{}", old.trim_end(), "\n".to_string() + &section),
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
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} vCPU ({model}), Linux {}", kernel.trim())
}

fn chrono_free_date() -> String {
    std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
