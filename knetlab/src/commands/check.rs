//! `knetlab check PATH... | -`: the manifests a user already has, with no scenario file.
//! Builds the cluster, applies everything, probes every pod's declared ports and every
//! Service port from every pod, and prints a summary (nodes, pods per owner and node,
//! the objects read, notes), the matrices, and the oracle's reason for every denied cell
//! a policy decides. `--save-scenario` writes the result as a baseline scenario.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use harness::run::{RunOptions, RunReport};
use serde_json::json;
use sim::matrix::Verdict;
use sim::objects::{ClusterObjects, Kind, host_network, pod_node};
use sim::scenario::{Change, Scenario};

use super::manifests::{self, ClusterOpts};
use super::owners::{self, owner_label};

pub const AFTER_HELP: &str = "\
Examples:
  sudo knetlab check ./k8s/                              every *.yaml, *.yml, *.json in k8s/
  helm template my-app ./chart | sudo knetlab check -    a rendered chart, on stdin
  kustomize build overlays/prod | sudo knetlab check - --nodes 3 --network vxlan
  sudo knetlab check ./k8s/ --group-by owner             a controller's replicas as one row
  sudo knetlab check ./k8s/ --save-scenario ci/baseline.yaml
  sudo knetlab scenario ci/baseline.yaml                 fails once connectivity changes

Every pod is probed on every container port it declares, and every Service port
(svc/NS/NAME:PORT), from every pod. A table per PROTO/port: rows are clients, columns
only the pods (and Services) that serve that port; `.` reachable, `X` not.

Exit codes: 0 every cell as the oracle predicts, 1 a cell differs from the oracle's
prediction, 2 bad input (nothing is built) or a setup failure.";

#[derive(clap::Args)]
pub struct Args {
    /// Manifest files, directories (their *.yaml, *.yml and *.json files, sorted by
    /// name, not recursive), or - to read a multi-document stream from stdin.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<String>,
    #[command(flatten)]
    pub cluster: ClusterOpts,
    /// Fold a controller's replicas into one row and column (`2/3`: two of three cells
    /// reached) instead of one per pod.
    #[arg(long, value_enum, value_name = "owner")]
    pub group_by: Option<GroupBy>,
    /// Also write a scenario to FILE that references the same manifests (paths relative
    /// to FILE's directory) and expects every cell as measured: a baseline to commit.
    #[arg(long, value_name = "FILE")]
    pub save_scenario: Option<PathBuf>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// Per-probe deadline in milliseconds (default: the probe engine's measured figure).
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Owner,
}

pub fn main(args: Args) -> u8 {
    let (scenario, _, streams) = match manifests::scenario("check", &args.paths, &args.cluster) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    if let Some(file) = &args.save_scenario
        && let Err(e) = super::baseline::target(file)
    {
        eprintln!("error: {e}");
        return 2;
    }
    let report = match run(&scenario, args.timeout_ms, !args.json) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let Some(step) = report.steps.first() else {
        eprintln!("error: the run measured nothing");
        return 2;
    };
    let empty = ClusterObjects::default();
    let objects = report.objects.first().unwrap_or(&empty);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json_doc(&scenario, &report, objects))
                .unwrap_or_default()
        );
    } else {
        print!("{}", summary(&scenario, &report, objects));
        println!();
        if args.group_by == Some(GroupBy::Owner) {
            print!("{}", owners::render_grouped(step, objects));
            println!(
                ". every cell reached   X none   a/n a of n cells reached   ~ depends on the Service backend   - not probed"
            );
        } else {
            print!("{}", sim::matrix::render_tables(step));
            println!("{}", sim::matrix::LEGEND);
        }
        let denied = denied_by_policy(&report);
        if !denied.is_empty() {
            println!("\ndenied by policy:");
            for (cell, reason) in denied {
                println!("  {cell}: {reason}");
            }
        }
        for (cell, problem) in step.mismatches() {
            println!(
                "DIFFERS FROM THE ORACLE: {} -> {} {}: {problem}",
                cell.from, cell.to, cell.port
            );
        }
        let t = &report.timings;
        println!(
            "\ntimings: bring-up {:.1} ms, probing {:.1} ms, teardown {:.1} ms",
            t.bring_up_ms, t.probe_ms, t.teardown_ms
        );
    }
    if let Some(file) = &args.save_scenario {
        match super::baseline::write(file, &args.cluster, &args.paths, &streams, step) {
            Ok(n) => eprintln!("baseline: {} ({n} cells expected)", file.display()),
            Err(e) => {
                eprintln!("error: --save-scenario: {e}");
                return 2;
            }
        }
    }
    if report.ok() { 0 } else { 1 }
}

/// Runs a manifest scenario (checks prerequisites first). `progress`: a line per stage
/// on stderr when someone watches.
pub fn run(
    scenario: &Scenario,
    timeout_ms: Option<u64>,
    progress: bool,
) -> Result<RunReport, String> {
    let mut log = |m: &str| eprintln!("{m}");
    harness::prereq::ensure(&mut log).map_err(|e| format!("{e:#}"))?;
    let opts = RunOptions {
        prefix: harness::run::new_prefix(),
        deadline: timeout_ms.map(Duration::from_millis),
        progress: progress
            && std::env::var_os("CI").is_none()
            && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ..Default::default()
    };
    super::scenario::run_plain(scenario, &opts)
}

/// The kinds read, counted: `2 Namespace, 5 Pod, 1 Service`. A controller's pods count
/// as the one controller the user wrote (`12 Deployment`, not `12 Pod`).
fn kinds_read(scenario: &Scenario) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut controllers: BTreeSet<(String, String)> = BTreeSet::new();
    for c in scenario.steps.iter().flat_map(|s| &s.changes) {
        // The implicit `default` namespace has no path: the user did not write it.
        let Change::Apply(raw) = c else { continue };
        if raw.path.is_empty() {
            continue;
        }
        let owner = (raw.kind == Kind::Pod)
            .then(|| serde_json::from_value(raw.value.clone()).ok())
            .flatten()
            .and_then(|pod| owners::controller(&pod));
        match owner {
            Some(owner) => {
                controllers.insert((raw.key.0.clone(), owner));
            }
            None => *counts.entry(format!("{:?}", raw.kind)).or_default() += 1,
        }
    }
    for (_, owner) in controllers {
        let kind = owner.split('/').next().unwrap_or_default().to_string();
        *counts.entry(kind).or_default() += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    parts.join(", ")
}

/// Pods per owner and node: `(owner, node) -> count`.
fn pods_per_owner(objects: &ClusterObjects) -> BTreeMap<String, BTreeMap<String, usize>> {
    let mut out: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for (p, pod) in &objects.pods {
        let node = pod_node(pod).unwrap_or("(pending)").to_string();
        *out.entry(owner_label(objects, p))
            .or_default()
            .entry(node)
            .or_default() += 1;
    }
    out
}

fn summary(scenario: &Scenario, report: &RunReport, objects: &ClusterObjects) -> String {
    let mut out = String::new();
    out += &format!(
        "nodes: {} ({})\n",
        objects.nodes.len(),
        objects.nodes.join(", ")
    );
    out += &format!("objects read: {}\n", kinds_read(scenario));
    let per = pods_per_owner(objects);
    let nodes: BTreeSet<&String> = per.values().flat_map(|m| m.keys()).collect();
    out += &format!("pods: {} (per owner and node)\n", objects.pods.len());
    let w = per.keys().map(|k| k.len()).max().unwrap_or(0).max(5);
    out += &format!("  {:w$}", "owner");
    for n in &nodes {
        out += &format!("  {n:>4}");
    }
    out.push('\n');
    for (owner, counts) in &per {
        out += &format!("  {owner:w$}");
        for n in &nodes {
            let c = counts.get(*n).copied().unwrap_or(0);
            out += &format!("  {c:>4}");
        }
        out.push('\n');
    }
    let on_host: Vec<String> = objects
        .pods
        .iter()
        .filter(|(_, pod)| host_network(pod))
        .map(|(p, pod)| format!("{p} (host {})", pod_node(pod).unwrap_or("?")))
        .collect();
    if !on_host.is_empty() {
        out += &format!(
            "on the host network (the node's address; no NetworkPolicy selects them): {}\n",
            on_host.join(", ")
        );
    }
    for n in report.cni.notes.iter().chain(&report.notes) {
        out += &format!("note: {n}\n");
    }
    out
}

/// Every denied cell whose verdict a NetworkPolicy decides, with the oracle's reason.
fn denied_by_policy(report: &RunReport) -> Vec<(String, String)> {
    let Some(step) = report.steps.first() else {
        return vec![];
    };
    step.cells
        .iter()
        .filter(|c| c.oracle == Some(Verdict::Deny) || owners::reached(c) == Some(false))
        .filter_map(|c| {
            let r = c.reason.as_ref()?;
            r.contains("isolated by")
                .then(|| (format!("{} -> {} {}", c.from, c.to, c.port), r.clone()))
        })
        .collect()
}

fn json_doc(
    scenario: &Scenario,
    report: &RunReport,
    objects: &ClusterObjects,
) -> serde_json::Value {
    let pods: Vec<serde_json::Value> = objects
        .pods
        .iter()
        .map(|(p, pod)| {
            json!({
                "namespace": p.namespace,
                "name": p.name,
                "node": pod_node(pod),
                "ip": pod.status.as_ref().and_then(|s| s.pod_ip.clone()),
                "labels": pod.metadata.labels.clone().unwrap_or_default(),
                "owner": owners::controller(pod),
                "hostNetwork": host_network(pod),
            })
        })
        .collect();
    let denied: Vec<serde_json::Value> = denied_by_policy(report)
        .into_iter()
        .map(|(cell, reason)| json!({"cell": cell, "reason": reason}))
        .collect();
    json!({
        "nodes": objects.nodes,
        "objects_read": kinds_read(scenario),
        "pods": pods,
        "denied_by_policy": denied,
        "run": super::json::report(report),
    })
}
