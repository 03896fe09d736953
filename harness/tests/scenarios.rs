//! One test per scenario file (libtest-mimic): each builds the scenario's cluster, runs
//! every step, fails on any wrong cell, and snapshots (insta) the matrices, a normalised
//! description of what was built, the policy engine's rules and (for scenarios with
//! Services) the service proxy's rules into `scenarios/snapshots/`, next to the scenarios.
//! Needs root: every scenario is an ignored trial unless run with `--include-ignored` (see
//! `common`).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn main() {
    harness::netns::init();
    let args = Arguments::from_args();
    if !args.ignored && !args.include_ignored {
        eprintln!(
            "the scenario trials are ignored: they build clusters and need root \
             (`sudo cargo xtask test` runs them with --include-ignored)"
        );
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(workspace_root().join("scenarios"))
        .expect("read scenarios/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scenario files found");
    let trials = files
        .into_iter()
        .map(|file| {
            let name = file.file_stem().unwrap().to_string_lossy().to_string();
            Trial::test(format!("scenario::{name}"), move || {
                common::require_root(&[]);
                run_one(&name, &file)
            })
            .with_ignored_flag(true)
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

fn run_one(name: &str, file: &Path) -> Result<(), Failed> {
    let scenario = sim::scenario::load(file).map_err(|e| format!("{e}"))?;
    let opts = harness::run::RunOptions {
        prefix: harness::run::new_prefix(),
        keep: false,
        explain: None,
        progress: false,
        capture: None,
        // One probe per Service cell: the spread over backends is random, snapshots are not.
        repeat: 0,
        deadline: scenario.probe.timeout_ms.map(Duration::from_millis),
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let prefix = opts.prefix.clone();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(harness::run::run(&scenario, &opts))
    }));
    rt.shutdown_timeout(Duration::from_secs(2));
    let report = match result {
        Ok(r) => r.map_err(|e| format!("{e:#}"))?,
        Err(_) => {
            let _ = harness::sweep::clean_prefix(&prefix);
            return Err("the run panicked (its namespaces were swept)".into());
        }
    };
    if !report.teardown_errors.is_empty() {
        return Err(format!("teardown problems: {}", report.teardown_errors.join("; ")).into());
    }
    let mut matrices = String::new();
    for (i, step) in report.steps.iter().enumerate() {
        matrices.push_str(&format!("== step {}: {} ==\n", i + 1, step.name));
        matrices.push_str(&sim::matrix::render_tables(step));
    }
    // The ingress controller per step: its nginx.conf and the `http:` checks.
    let mut ingress = String::new();
    for s in &report.ingress {
        ingress.push_str(&format!(
            "== step: {} == controller {} ==\n{}{}\n",
            s.step,
            s.controller,
            harness::ingress::checks::render_step(s),
            if s.controller == "unchanged" {
                "(nginx.conf unchanged)\n".to_string()
            } else {
                s.config.clone()
            }
        ));
    }
    if !report.ok() {
        let mut text: Vec<String> = report.steps.iter().map(sim::matrix::render_step).collect();
        text.extend(
            report
                .ingress
                .iter()
                .map(harness::ingress::checks::render_step),
        );
        return Err(format!("wrong cells in {name}:\n{}", text.join("\n")).into());
    }
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(workspace_root().join("scenarios/snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.set_input_file(file);
    let mut rules = String::new();
    for (i, (step, nodes)) in report.steps.iter().zip(&report.rules).enumerate() {
        for (node, text) in nodes {
            rules.push_str(&format!(
                "== step {}: {} == node {node} ==\n{text}\n",
                i + 1,
                step.name
            ));
        }
    }
    // kube-proxy's rules per node, as `iptables-save` shows them (only scenarios with
    // Services run a service proxy).
    let mut proxy = String::new();
    for (i, (step, nodes)) in report.steps.iter().zip(&report.proxy_rules).enumerate() {
        for (node, text) in nodes {
            proxy.push_str(&format!(
                "== step {}: {} == node {node} ==\n{text}\n",
                i + 1,
                step.name
            ));
        }
    }
    settings.bind(|| {
        insta::assert_snapshot!(format!("{name}@matrix"), matrices);
        insta::assert_snapshot!(format!("{name}@built"), report.built);
        insta::assert_snapshot!(format!("{name}@rules"), rules);
        if !proxy.is_empty() {
            insta::assert_snapshot!(format!("{name}@proxy"), proxy);
        }
        // The cluster DNS's records, answers and the pods' service variables per step
        // (only scenarios with `cluster.dns`).
        if !report.dns.is_empty() {
            let dns: Vec<String> = report
                .dns
                .iter()
                .enumerate()
                .map(|(i, d)| d.render(i + 1, i.checked_sub(1).map(|p| &report.dns[p])))
                .collect();
            insta::assert_snapshot!(format!("{name}@dns"), dns.join("\n"));
        }
        if !ingress.is_empty() {
            insta::assert_snapshot!(format!("{name}@ingress"), ingress);
        }
    });
    Ok(())
}
