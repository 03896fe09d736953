//! The differential test: seeded random cases on live clusters, every cell's measured
//! verdict compared with the oracle's (see `harness::differential`). Two kinds:
//! random NetworkPolicies and labels over the standard model (`policy`), and random
//! Service sets run as scenario steps (`services`). `cargo xtask differential` runs any
//! number of either and prints every disagreement.
//!
//! Environment: `KNETLAB_DIFF_CASES` (default 300) policy cases from seed
//! `KNETLAB_DIFF_FIRST` (default 0); `KNETLAB_DIFF_SEED=123` runs that one case;
//! `KNETLAB_DIFF_DENY=drop` uses the drop style (every denied probe then waits out its
//! deadline); `KNETLAB_DIFF_NO_FLUSH=1` keeps conntrack between cases.
//! `KNETLAB_DIFF_SERVICE_CASES` (default 60) Service cases from seed
//! `KNETLAB_DIFF_FIRST`.
//!
//! Needs root: ignored unless run with `--include-ignored` (see `common`).

mod common;

use harness::differential::{policy, seeds, services};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: enforces policies in a live cluster"]
async fn random_policies_agree_with_the_oracle() {
    common::require_root(&[]);
    let settings = policy::Settings::from_env().expect("settings");
    let (findings, total) = policy::run_cases(&settings)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    println!("{}", policy::report(&findings, &settings, total));
    assert!(findings.cases == settings.seeds.len(), "every case ran");
    assert!(
        findings.failing.is_empty(),
        "{} of {} cases disagree with the oracle (seeds {:?}); see above",
        findings.failing.len(),
        findings.cases,
        findings.failing.keys().collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: runs Services in live clusters"]
async fn random_services_agree_with_the_oracle() {
    common::require_root(&[]);
    let var = |name: &str| {
        std::env::var(name).ok().map(|v| {
            v.trim()
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{name}={v:?}"))
        })
    };
    let first = var("KNETLAB_DIFF_FIRST").unwrap_or(0);
    let cases = var("KNETLAB_DIFF_SERVICE_CASES").unwrap_or(services::DEFAULT_CASES);
    let seeds = seeds(first, cases);
    let (findings, total) = services::run_cases(&seeds)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    println!("{}", findings.report(total));
    assert_eq!(
        findings.cases,
        seeds.len(),
        "every case ran: {:?}",
        findings.failed_batches
    );
    assert!(
        findings.ok(),
        "{} cells of seeds {:?} disagree with the oracle; see above",
        findings.disagreements.len(),
        findings.failing_seeds()
    );
}
