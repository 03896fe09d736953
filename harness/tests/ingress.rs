//! The ingress controller's processes: every nginx a run starts inside the controller pod's
//! namespace is ended by its pid at teardown, after a run whose checks fail too, and
//! `clean` ends the nginx of a run that died without tearing down (found by the pid file in
//! the run's state directory). Needs root: ignored unless run with `--include-ignored` (see
//! `common`).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::ingress::{Controller, workers};
use harness::netns::Netns;
use harness::sweep;
use harness::sweep::processes::nginx_using;

/// One test at a time: each watches the machine's processes.
static SERIAL: Mutex<()> = Mutex::new(());

fn fanout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/ingress-fanout.yaml")
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                .map(|st| st != "Z")
        })
        .unwrap_or(false)
}

/// Runs a scenario while a watcher thread records every nginx process (masters by their
/// command line naming the run's directory, workers as their children); returns whether
/// the run's checks passed and every pid seen.
fn run_watched(scenario: &sim::scenario::Scenario) -> (bool, BTreeSet<u32>) {
    let prefix = harness::run::new_prefix();
    let dir = sweep::state_dir(&prefix).join(harness::ingress::DIR);
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (seen, stop, dir) = (seen.clone(), stop.clone(), dir.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for master in nginx_using(&dir) {
                    let mut s = seen.lock().unwrap();
                    s.insert(master);
                    s.extend(workers(master));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let opts = harness::run::RunOptions {
        prefix: prefix.clone(),
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(harness::run::run(scenario, &opts));
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = sweep::clean_prefix(&prefix);
            panic!("the run failed: {e:#}");
        }
    };
    assert!(
        report.teardown_errors.is_empty(),
        "{:?}",
        report.teardown_errors
    );
    assert!(
        harness::netns::list_run(&prefix).unwrap().is_empty(),
        "namespaces left"
    );
    let seen = seen.lock().unwrap().clone();
    (report.ok(), seen)
}

#[test]
#[ignore = "needs root: starts nginx in network namespaces"]
fn nginx_is_ended_at_teardown() {
    common::require_root(&[]);
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scenario = sim::scenario::load(&fanout()).unwrap();
    let (ok, seen) = run_watched(&scenario);
    assert!(ok, "the fanout scenario's checks failed");
    assert!(seen.len() >= 2, "saw no nginx master and worker: {seen:?}");
    let left: Vec<u32> = seen.into_iter().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "nginx processes left running: {left:?}");
}

#[test]
#[ignore = "needs root: starts nginx in network namespaces"]
fn nginx_is_ended_after_a_failed_run() {
    common::require_root(&[]);
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The same scenario with an expectation no backend meets: the run reports failure.
    let text = std::fs::read_to_string(fanout())
        .unwrap()
        .replace("expect: {status: 404}}", "expect: {status: 418}}");
    let scenario = sim::scenario::parse_str(&fanout(), &text).unwrap();
    let (ok, seen) = run_watched(&scenario);
    assert!(!ok, "the run should have failed its http checks");
    assert!(!seen.is_empty(), "saw no nginx");
    let left: Vec<u32> = seen.into_iter().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "nginx processes left running: {left:?}");
}

/// A run that died without teardown leaves nginx in its namespace; `clean` finds it by
/// the pid file, ends it, and can then remove the namespace (nginx no longer counts as
/// a live user of it).
#[test]
#[ignore = "needs root: starts nginx in network namespaces"]
fn clean_ends_a_dead_runs_nginx() {
    common::require_root(&[]);
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let prefix = harness::run::new_prefix();
    // Whatever happens below, nothing of this run outlives the test.
    struct Sweep(String);
    impl Drop for Sweep {
        fn drop(&mut self) {
            let _ = sweep::clean_prefix(&self.0);
        }
    }
    let _sweep = Sweep(prefix.clone());
    let state = sweep::state_dir(&prefix);
    std::fs::create_dir_all(&state).unwrap();
    let name = format!("{prefix}-ctl");
    let ns = Netns::create_many(std::slice::from_ref(&name))
        .unwrap()
        .remove(0);
    let mut ctl = Controller::new(ns, "127.0.0.2".parse().unwrap(), &state).unwrap();
    let model = sim::ingress::IngressModel::new(&sim::objects::ClusterObjects::default());
    let synced = ctl.sync(&model).unwrap();
    assert_eq!(synced.action, "started");
    let master = ctl.pid().unwrap();
    let dir = ctl.dir().to_path_buf();
    let children = workers(master);
    assert!(!children.is_empty(), "nginx has no worker");
    // The run "dies": its nginx keeps running, nobody stops it.
    ctl.detach();
    assert!(alive(master));
    // (A worker just forked still shows the master's command line for a moment.)
    assert!(nginx_using(&dir).contains(&master));
    let report = sweep::clean_run(&prefix, false);
    assert!(report.is_ok(), "{:?}", report.errors);
    assert!(
        report.skipped.is_empty(),
        "the dead run was skipped: {:?}",
        report.skipped
    );
    assert!(!alive(master), "the nginx master is still running");
    for w in children {
        assert!(!alive(w), "nginx worker {w} is still running");
    }
    assert!(harness::netns::list_run(&prefix).unwrap().is_empty());
    assert!(!state.exists());
}
