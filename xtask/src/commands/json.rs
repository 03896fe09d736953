//! The `--json` document: stable field names that later features only add to.

use harness::run::RunReport;
use serde_json::{Value, json};
use sim::matrix::Cell;

pub fn report(r: &RunReport) -> Value {
    json!({
        "scenario": r.scenario,
        "ok": r.ok(),
        "steps": r.steps.iter().enumerate().map(|(i, s)| json!({
            "name": s.name,
            "ok": s.ok(),
            "timings_ms": r.step_timings.get(i).map(|t| json!({
                "apply": t.apply_ms,
                "sync": t.sync_ms,
                "probe": t.probe_ms,
                "enforce": t.enforce_ms,
            })),
            "probe_rounds": r.step_timings.get(i).map(|t| t.rounds),
            "cells": s.cells.iter().map(cell).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "timings_ms": {
            "bring_up": r.timings.bring_up_ms,
            "probe": r.timings.probe_ms,
            "teardown": r.timings.teardown_ms,
        },
        "teardown_errors": r.teardown_errors,
    })
}

fn cell(c: &Cell) -> Value {
    let mut v = json!({
        "from": c.from,
        "to": c.to,
        "port": c.port.port,
        "protocol": c.port.protocol,
        "expected": c.expected,
        "asserted": c.asserted,
        "measured": c.measured.outcome,
        "verdict": c.measured.outcome.verdict(),
        "elapsed_us": c.measured.elapsed_us,
    });
    let o = v.as_object_mut().expect("object");
    if let Some(a) = &c.measured.answered_by {
        o.insert("answered_by".into(), json!(a));
    }
    if let Some(s) = &c.measured.seen_source {
        o.insert("seen_source".into(), json!(s));
    }
    if !c.measured.detail.is_empty() {
        o.insert("detail".into(), json!(c.measured.detail));
    }
    if let Some(or) = c.oracle {
        o.insert("oracle".into(), json!(or));
    }
    if let Some(r) = &c.reason {
        o.insert("reason".into(), json!(r));
    }
    if let Some(m) = c.mismatch() {
        o.insert("mismatch".into(), json!(m));
    }
    v
}
