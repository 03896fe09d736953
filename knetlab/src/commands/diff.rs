//! `knetlab diff OLD NEW`: runs two manifest sets (or two scenario files) side by side
//! (each run has its own prefix, so the two clusters never meet) and prints only the
//! cells whose verdict changed, with the objects behind each change and the oracle's
//! reason on both sides: what a reviewer of a manifest change wants to know.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use harness::run::RunReport;
use serde_json::json;
use sim::matrix::Cell;
use sim::objects::ClusterObjects;
use sim::scenario::{CellKey, Scenario};

use super::manifests::{self, ClusterOpts};
use super::owners::reached;

pub const AFTER_HELP: &str = "\
Examples:
  sudo knetlab diff k8s-main/ k8s-pr/                 two manifest directories
  sudo knetlab diff old.yaml new.yaml --json          two manifest files, as JSON
  sudo knetlab diff ci/baseline.yaml ci/proposed.yaml two scenario files (their first step)
  sudo knetlab diff main/ pr/ --fail-on-change        for CI: exit 1 when anything changed

Both sides are built and probed at once (every pod port and Service port from every
pod), and only the cells whose verdict differs are printed: `opens` (now reachable),
`closes` (no longer reachable); a cell on one side only counts as not reachable on the
other. A path is a scenario file when it is a YAML mapping with `summary:` and no
`kind:`; otherwise manifests (a directory stands for its *.yaml, *.yml, *.json files).

Exit codes: 0 done (with --fail-on-change: nothing changed), 1 with --fail-on-change:
some cell changed, 2 bad input or a setup failure (nothing is left behind).";

#[derive(clap::Args)]
pub struct Args {
    /// The manifests (file or directory) or scenario file before the change.
    #[arg(value_name = "OLD")]
    pub old: String,
    /// The manifests (file or directory) or scenario file after the change.
    #[arg(value_name = "NEW")]
    pub new: String,
    #[command(flatten)]
    pub cluster: ClusterOpts,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// Exit 1 when some cell's verdict changed (for CI).
    #[arg(long)]
    pub fail_on_change: bool,
    /// Per-probe deadline in milliseconds (default: the probe engine's measured figure).
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
}

/// A cell's verdict as measured: reachable, not, or split over a Service's backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Closed,
    Split,
}

impl State {
    fn of(cell: Option<&Cell>) -> State {
        match cell.map(reached) {
            Some(Some(true)) => State::Open,
            Some(None) => State::Split,
            _ => State::Closed,
        }
    }

    fn word(self) -> &'static str {
        match self {
            State::Open => "reachable",
            State::Closed => "not reachable",
            State::Split => "reachable from some backends",
        }
    }
}

/// One changed cell.
#[derive(Debug, Clone)]
pub struct Change {
    pub key: CellKey,
    old: State,
    new: State,
    old_reason: Option<String>,
    new_reason: Option<String>,
    only: Option<&'static str>,
    pub behind: Vec<String>,
}

impl Change {
    /// `opens`, `closes` or `changes`.
    pub fn verb(&self) -> &'static str {
        match (self.old, self.new) {
            (_, State::Open) => "opens",
            (_, State::Closed) => "closes",
            _ => "changes",
        }
    }
}

/// Reads a side: a scenario file, or manifests.
fn load_side(arg: &str, cluster: &ClusterOpts, side: &str) -> Result<Scenario, String> {
    let p = Path::new(arg);
    let is_scenario = p.is_file()
        && std::fs::read_to_string(p).is_ok_and(|t| {
            t.lines().any(|l| l.starts_with("summary:"))
                && !t.lines().any(|l| l.starts_with("kind:"))
        });
    if is_scenario {
        return sim::scenario::load(p).map_err(|e| e.to_string());
    }
    if arg == "-" {
        return Err(format!(
            "{side}: diff reads files and directories, not stdin"
        ));
    }
    manifests::scenario(side, &[arg.to_string()], cluster).map(|(s, _, _)| s)
}

pub fn main(args: Args) -> u8 {
    let sides = load_side(&args.old, &args.cluster, "old")
        .and_then(|o| Ok((o, load_side(&args.new, &args.cluster, "new")?)));
    let (old, new) = match sides {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    if !super::prerequisites_ready() {
        return 2;
    }
    // Side by side: distinct prefixes keep the two clusters apart.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| super::check::run(&old, args.timeout_ms, false));
        let b = super::check::run(&new, args.timeout_ms, false);
        (
            a.join()
                .unwrap_or_else(|_| Err("the OLD run crashed".into())),
            b,
        )
    });
    let (a, b) = match (a, b) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) => {
            eprintln!("error: OLD ({}): {e}", args.old);
            return 2;
        }
        (_, Err(e)) => {
            eprintln!("error: NEW ({}): {e}", args.new);
            return 2;
        }
    };
    for (side, r) in [("OLD", &a), ("NEW", &b)] {
        if let Some(step) = r.steps.first() {
            for (c, problem) in step.mismatches() {
                eprintln!(
                    "warning: {side}: {} -> {} {} differs from the oracle: {problem}",
                    c.from, c.to, c.port
                );
            }
        }
    }
    let changes = changes(&a, &b);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json_doc(&args, &a, &b, &changes)).unwrap_or_default()
        );
    } else {
        print!("{}", text(&args, &a, &b, &changes));
    }
    if args.fail_on_change && !changes.is_empty() {
        1
    } else {
        0
    }
}

/// The cells whose verdict differs between the first steps of two runs, in cell order.
pub fn changes(old: &RunReport, new: &RunReport) -> Vec<Change> {
    let cells = |r: &RunReport| -> BTreeMap<CellKey, Cell> {
        r.steps
            .first()
            .map(|s| {
                s.cells
                    .iter()
                    .filter(|c| !c.is_self())
                    .map(|c| ((c.from.clone(), c.to.clone(), c.port), c.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (a, b) = (cells(old), cells(new));
    let empty = ClusterObjects::default();
    let objs_a = old.objects.first().unwrap_or(&empty);
    let objs_b = new.objects.first().unwrap_or(&empty);
    let changed_objects = changed_objects(objs_a, objs_b);
    let keys: BTreeSet<&CellKey> = a.keys().chain(b.keys()).collect();
    let mut out = Vec::new();
    for key in keys {
        let (ca, cb) = (a.get(key), b.get(key));
        let (sa, sb) = (State::of(ca), State::of(cb));
        if sa == sb {
            continue;
        }
        let old_reason = ca.and_then(|c| c.reason.clone());
        let new_reason = cb.and_then(|c| c.reason.clone());
        // A Service cell's reason names its backends, not the policies: those are in
        // the client's cells to the backends.
        let backends: BTreeSet<String> = [ca, cb]
            .into_iter()
            .flatten()
            .filter_map(|c| c.service.as_ref())
            .flat_map(|s| s.backends.iter().map(|(b, _)| b.clone()))
            .collect();
        let backend_reasons: Vec<&str> = a
            .values()
            .chain(b.values())
            .filter(|c| c.from == key.0 && backends.contains(&c.to.to_string()))
            .filter_map(|c| c.reason.as_deref())
            .collect();
        let mut reasons: Vec<&str> = [old_reason.as_deref(), new_reason.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        reasons.extend(backend_reasons);
        let only = match (ca, cb) {
            (None, _) => Some("NEW"),
            (_, None) => Some("OLD"),
            _ => None,
        };
        out.push(Change {
            behind: behind(key, &changed_objects, &reasons, only),
            key: key.clone(),
            old: sa,
            new: sb,
            old_reason,
            new_reason,
            only,
        });
    }
    out
}

/// NetworkPolicies and Services that differ between the two sides:
/// `(kind, ns/name, added|removed|changed)`.
fn changed_objects(
    a: &ClusterObjects,
    b: &ClusterObjects,
) -> Vec<(&'static str, String, &'static str)> {
    fn diff<T: PartialEq>(
        kind: &'static str,
        a: &BTreeMap<(String, String), T>,
        b: &BTreeMap<(String, String), T>,
        out: &mut Vec<(&'static str, String, &'static str)>,
    ) {
        let keys: BTreeSet<&(String, String)> = a.keys().chain(b.keys()).collect();
        for k in keys {
            let what = match (a.get(k), b.get(k)) {
                (None, Some(_)) => "added",
                (Some(_), None) => "removed",
                (Some(x), Some(y)) if x != y => "changed",
                _ => continue,
            };
            out.push((kind, format!("{}/{}", k.0, k.1), what));
        }
    }
    let mut out = Vec::new();
    diff(
        "NetworkPolicy",
        &a.network_policies,
        &b.network_policies,
        &mut out,
    );
    diff("Service", &a.services, &b.services, &mut out);
    out
}

/// What is behind a changed cell: the changed NetworkPolicies the reasons name (either
/// side's, and for a Service cell the client's cells to its backends); else a changed
/// Service the cell targets; else the end that exists on one side only; else every
/// changed object (the reasons say the rest).
fn behind(
    key: &CellKey,
    changed: &[(&'static str, String, &'static str)],
    reasons: &[&str],
    only: Option<&str>,
) -> Vec<String> {
    let line = |(kind, id, what): &(&str, String, &str)| format!("{kind} {id} ({what})");
    // An id followed by a space, `;`, `,` or `)` in the reason, so `x/a` does not match
    // inside `x/ab`.
    let named = |id: &str| {
        reasons.iter().any(|r| {
            r.match_indices(id).any(|(i, _)| {
                let before = r[..i].chars().last();
                let after = r[i + id.len()..].chars().next();
                !before.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '/')
                    && !after
                        .is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '.' || c == '/')
            })
        })
    };
    let policies: Vec<String> = changed
        .iter()
        .filter(|(kind, id, _)| *kind == "NetworkPolicy" && named(id))
        .map(line)
        .collect();
    if !policies.is_empty() {
        return policies;
    }
    if let sim::scenario::Peer::Service {
        namespace, name, ..
    } = &key.1
    {
        let id = format!("{namespace}/{name}");
        let svc: Vec<String> = changed
            .iter()
            .filter(|(kind, i, _)| *kind == "Service" && *i == id)
            .map(line)
            .collect();
        if !svc.is_empty() {
            return svc;
        }
    }
    if let Some(side) = only {
        return vec![format!(
            "{} -> {} {} exists in {side} only (a pod, port or Service added or removed)",
            key.0, key.1, key.2
        )];
    }
    changed.iter().map(line).collect()
}

fn text(args: &Args, a: &RunReport, b: &RunReport, changes: &[Change]) -> String {
    let count = |r: &RunReport| r.steps.first().map_or(0, |s| s.cells.len());
    let opens = changes.iter().filter(|c| c.verb() == "opens").count();
    let closes = changes.iter().filter(|c| c.verb() == "closes").count();
    let mut out = format!(
        "OLD {} ({} cells) -> NEW {} ({} cells): {} changed, opens {opens}, closes {closes}\n",
        args.old,
        count(a),
        args.new,
        count(b),
        changes.len()
    );
    for c in changes {
        let (from, to, port) = &c.key;
        out += &format!(
            "\n{} {from} -> {to} {port}: {} -> {}{}\n",
            c.verb(),
            c.old.word(),
            c.new.word(),
            c.only
                .map(|s| format!(" (only in {s})"))
                .unwrap_or_default()
        );
        for b in &c.behind {
            out += &format!("  behind: {b}\n");
        }
        out += &format!(
            "  OLD: {}\n  NEW: {}\n",
            c.old_reason.as_deref().unwrap_or("(no cell)"),
            c.new_reason.as_deref().unwrap_or("(no cell)")
        );
    }
    out
}

fn json_doc(args: &Args, a: &RunReport, b: &RunReport, changes: &[Change]) -> serde_json::Value {
    let side = |s: State, r: &Option<String>, present: bool| {
        present.then(|| json!({"verdict": s.word(), "reason": r}))
    };
    json!({
        "old": {"path": args.old, "cells": a.steps.first().map_or(0, |s| s.cells.len()), "notes": a.notes},
        "new": {"path": args.new, "cells": b.steps.first().map_or(0, |s| s.cells.len()), "notes": b.notes},
        "changed": changes.iter().map(|c| json!({
            "from": c.key.0,
            "to": c.key.1,
            "port": c.key.2.port,
            "protocol": c.key.2.protocol,
            "change": c.verb(),
            "old": side(c.old, &c.old_reason, c.only != Some("NEW")),
            "new": side(c.new, &c.new_reason, c.only != Some("OLD")),
            "behind": c.behind,
        })).collect::<Vec<_>>(),
    })
}
