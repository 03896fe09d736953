//! `cargo xtask scenario NAME|PATH`: build the scenario's cluster, probe every step,
//! print the matrices (or one JSON document with `--json`), tear down. Teardown also
//! happens on error, on panic (the run's prefix is swept) and on Ctrl-C.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use harness::run::{RunOptions, RunReport};
use sim::scenario::Scenario;

use crate::scenario_files;

#[derive(clap::Args)]
pub struct Args {
    /// A scenario name (`scenarios/NAME.yaml`) or a path to a scenario file.
    pub scenario: String,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// Leave the cluster up afterwards and print how to enter it.
    #[arg(long)]
    pub keep: bool,
    /// Per-probe deadline in milliseconds (default: the probe engine's measured figure,
    /// or the scenario's probe.timeoutMs).
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
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
    let opts = RunOptions {
        prefix: harness::run::new_prefix(),
        keep: args.keep,
        deadline: args
            .timeout_ms
            .or(scenario.probe.timeout_ms)
            .map(Duration::from_millis),
    };
    if !args.json {
        eprintln!(
            "{}: {} ({} nodes, run prefix {})",
            scenario.name,
            scenario.summary,
            scenario.cluster.nodes.len(),
            opts.prefix
        );
    }
    match run_guarded(&scenario, &opts) {
        Guarded::Done(Ok(report)) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&crate::commands::json::report(&report))
                        .unwrap_or_default()
                );
            } else {
                print_text(&scenario, &report);
            }
            if report.ok() { 0 } else { 1 }
        }
        Guarded::Done(Err(e)) => {
            eprintln!("error: {e:#}");
            2
        }
        Guarded::Interrupted => {
            eprintln!("interrupted: tearing down run {}", opts.prefix);
            print!("{}", harness::netns::sweep::clean_prefix(&opts.prefix));
            130
        }
        Guarded::Panicked => {
            eprintln!("knetlab crashed: tearing down run {}", opts.prefix);
            print!("{}", harness::netns::sweep::clean_prefix(&opts.prefix));
            2
        }
    }
}

enum Guarded {
    Done(anyhow::Result<RunReport>),
    Interrupted,
    Panicked,
}

/// Runs the scenario so that a panic or Ctrl-C still leads to teardown.
fn run_guarded(scenario: &Scenario, opts: &RunOptions) -> Guarded {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Guarded::Done(Err(e.into())),
    };
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        rt.block_on(async {
            tokio::select! {
                r = harness::run::run(scenario, opts) => Some(r),
                _ = tokio::signal::ctrl_c() => None,
            }
        })
    }));
    // Stop servers and in-flight work before any sweep.
    rt.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(Some(r)) => Guarded::Done(r),
        Ok(None) => Guarded::Interrupted,
        Err(_) => Guarded::Panicked,
    }
}

fn print_text(scenario: &Scenario, report: &RunReport) {
    for (i, step) in report.steps.iter().enumerate() {
        println!("== step {}: {} ==", i + 1, step.name);
        println!();
        print!("{}", sim::matrix::render_step(step));
        println!();
    }
    let t = &report.timings;
    println!(
        "timings: bring-up {:.1} ms, probing {:.1} ms, teardown {:.1} ms",
        t.bring_up_ms, t.probe_ms, t.teardown_ms
    );
    for e in &report.teardown_errors {
        println!("teardown problem: {e}");
    }
    if let Some(kept) = &report.kept {
        println!("\nThe cluster is still up (--keep). Enter it with:");
        for (node, ns) in &kept.nodes {
            println!("  node {node:12} sudo ip netns exec {ns} bash");
        }
        for (pod, ns, ip) in &kept.pods {
            println!(
                "  pod  {:12} sudo ip netns exec {ns} bash    # {ip}",
                pod.to_string()
            );
        }
        println!(
            "Probe servers stopped with this process. Remove the cluster with: cargo xtask clean --force"
        );
    }
    let verdict = if report.ok() { "PASS" } else { "FAIL" };
    println!(
        "{verdict}: {} ({} steps)",
        scenario.name,
        report.steps.len()
    );
}
