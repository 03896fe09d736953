//! The Services half: random Service sets ([`sim::testgen::services`]) run as the steps
//! of one scenario by [`crate::run::run`] on a live cluster (kube-proxy's iptables mode,
//! an external host behind the router), so every cell goes through the run's own
//! probing and its second looks, and is compared with the oracle: cluster IPs from pods
//! on both nodes, NodePorts of every node and load-balancer addresses from pods and from
//! the external host, each Service cell probed several times (the spread, and
//! `ClientIP` affinity holding). Cases run in batches, one cluster per batch, so a run
//! that fails loses one batch, not the whole set.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sim::testgen::services::{Clients, scenario};

use crate::run::{RunOptions, new_prefix};

/// Service cases the differential test runs unless told otherwise.
pub const DEFAULT_CASES: u64 = 60;
/// Cases per scenario (one cluster each).
pub const BATCH: usize = 30;

/// One cell of one case where the kernel and the oracle disagree.
#[derive(Debug, Clone)]
pub struct Disagreement {
    pub seed: u64,
    /// `from -> to port`.
    pub cell: String,
    /// The run's words: what was measured against what the oracle said.
    pub problem: String,
}

/// What a Services run found.
#[derive(Debug, Default)]
pub struct Findings {
    pub cases: usize,
    pub cells: usize,
    pub disagreements: Vec<Disagreement>,
    /// Batches whose run failed (with the error), their cases not counted.
    pub failed_batches: Vec<(Vec<u64>, String)>,
}

impl Findings {
    pub fn failing_seeds(&self) -> BTreeSet<u64> {
        self.disagreements.iter().map(|d| d.seed).collect()
    }

    pub fn ok(&self) -> bool {
        self.disagreements.is_empty() && self.failed_batches.is_empty()
    }

    pub fn report(&self, total: Duration) -> String {
        format!(
            "differential (services): {} cases ({} cells), {} cells in {} cases disagree, \
             {} batch(es) failed; whole run {:.1} s",
            self.cases,
            self.cells,
            self.disagreements.len(),
            self.failing_seeds().len(),
            self.failed_batches.len(),
            total.as_secs_f64()
        )
    }
}

/// Runs `seeds` in batches of [`BATCH`], each batch twice (probed from the pods, then
/// from outside), printing each disagreement as it is found.
pub async fn run_cases(seeds: &[u64]) -> Result<(Findings, Duration)> {
    let start = Instant::now();
    let mut f = Findings::default();
    for batch in seeds.chunks(BATCH) {
        let mut failing = BTreeSet::new();
        for clients in [Clients::Pods, Clients::Outside] {
            let found = run_batch(batch, clients, &mut f).await?;
            failing.extend(found);
        }
        f.cases += batch.len();
        for seed in failing {
            println!(
                "=== seed {seed} disagrees (reproduce: cargo xtask differential --kind \
                 services --seed {seed} --cases 1); the case as a scenario (from pods):\n{}",
                scenario(&[seed], Clients::Pods)
            );
        }
    }
    Ok((f, start.elapsed()))
}

/// One batch from one side; returns the seeds with disagreements.
async fn run_batch(batch: &[u64], clients: Clients, f: &mut Findings) -> Result<BTreeSet<u64>> {
    let mut failing = BTreeSet::new();
    {
        let text = scenario(batch, clients);
        let sc = sim::scenario::parse_str(Path::new("differential-services.yaml"), &text)
            .with_context(|| format!("the generated scenario of seeds {batch:?}"))?;
        let opts = RunOptions {
            prefix: new_prefix(),
            ..RunOptions::default()
        };
        let report = match crate::run::run(&sc, &opts).await {
            Ok(r) => r,
            Err(e) => {
                println!("=== seeds {batch:?} ({clients:?}): the run failed: {e:#}");
                f.failed_batches
                    .push((batch.to_vec(), format!("{clients:?}: {e:#}")));
                return Ok(failing);
            }
        };
        for (seed, step) in batch.iter().zip(&report.steps) {
            f.cells += step.cells.len();
            let wrong: Vec<Disagreement> = step
                .cells
                .iter()
                .filter(|c| !c.agrees_with_oracle())
                .map(|c| Disagreement {
                    seed: *seed,
                    cell: format!("{} -> {} {}", c.from, c.to, c.port),
                    problem: c
                        .mismatch()
                        .unwrap_or_else(|| format!("measured {:?}", c.measured)),
                })
                .collect();
            if !wrong.is_empty() {
                failing.insert(*seed);
                for d in &wrong {
                    println!("--- seed {seed}: {}: {}", d.cell, d.problem);
                }
            }
            f.disagreements.extend(wrong);
        }
        if !report.teardown_errors.is_empty() {
            f.failed_batches.push((
                batch.to_vec(),
                format!("teardown: {}", report.teardown_errors.join("; ")),
            ));
        }
    }
    Ok(failing)
}
