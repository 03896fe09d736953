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
                "proxy_sync": t.proxy_sync_ms,
                "probe": t.probe_ms,
                "enforce": t.enforce_ms,
            })),
            "probe_rounds": r.step_timings.get(i).map(|t| t.rounds),
            "proxy_restore_bytes": r.step_timings.get(i).map(|t| t.proxy_restore_bytes),
            "throughput": r.throughput.get(i).map(|v| v.iter().map(|c| {
                let mut j = json!(c);
                j["ok"] = json!(c.ok());
                j
            }).collect::<Vec<_>>()).unwrap_or_default(),
            "cells": s.cells.iter().map(cell).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "timings_ms": {
            "bring_up": r.timings.bring_up_ms,
            "probe": r.timings.probe_ms,
            "teardown": r.timings.teardown_ms,
        },
        "teardown_errors": r.teardown_errors,
        "capture": r.capture_summary,
        "cni": r.cni,
        "notes": r.notes,
        "pods": pods(r),
        "ingress": r.ingress.iter().map(|s| {
            let mut j = json!(s);
            j["checks"] = json!(s.checks.iter().map(|c| {
                let mut cj = json!(c);
                cj["ok"] = json!(c.ok());
                cj
            }).collect::<Vec<_>>());
            j
        }).collect::<Vec<_>>(),
        // Cluster DNS per step (scenarios with `cluster.dns`): the zone, every `dns/`
        // cell's resolution, the pods' service environment variables.
        "dns": r.dns,
        "traces": r.traces.iter().map(|t| json!({"step": t.step, "story": t.text})).collect::<Vec<_>>(),
    })
}

/// The pods as the last step left them, with the controller that owns each.
fn pods(r: &RunReport) -> Vec<Value> {
    let Some(objects) = r.objects.last() else {
        return vec![];
    };
    objects
        .pods
        .iter()
        .map(|(key, pod)| {
            json!({
                "namespace": key.namespace,
                "name": key.name,
                "node": sim::objects::pod_node(pod),
                "ip": sim::objects::pod_ip(pod).map(|ip| ip.to_string()),
                "labels": pod.metadata.labels.clone().unwrap_or_default(),
                "owner": sim::workloads::owner_of(pod).map(|o| o.to_string()),
                "hostNetwork": sim::objects::host_network(pod),
            })
        })
        .collect()
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
    if let Some(svc) = &c.service {
        // Which backend answered each probe (`--repeat N`), and the oracle's verdict per
        // backend.
        o.insert("spread".into(), json!(svc.spread));
        o.insert(
            "backends".into(),
            json!(
                svc.backends
                    .iter()
                    .map(|(b, v)| json!({"name": b, "oracle": v}))
                    .collect::<Vec<_>>()
            ),
        );
    }
    v
}
