//! Fills the report's plain data ([`sim::report::ReportData`]) from a finished run: the
//! plan (names and addresses), the objects of each step as the run held them (pods with
//! the addresses the CNI plugin gave), the measured matrices and the installed rules.
//! The one place the harness feeds `--report` and `--dot`.

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use sim::plan::Plan;
use sim::report::{ReportData, StepData, Topology};
use sim::scenario::Scenario;

use crate::cluster::FABRIC_BRIDGE;
use crate::cni::conflist::{self, ConfList};

use super::RunReport;

/// The pods' bridge every node gets (the CNI list's first plugin decides it).
fn pod_bridge(plan: &Plan) -> String {
    plan.cni
        .conflist
        .as_ref()
        .and_then(|v| ConfList::from_value(v).ok())
        .map(|l| conflist::bridge_name(&l))
        .unwrap_or_else(|| conflist::BRIDGE.to_string())
}

/// The topology of step `i` (0-based) of a finished run.
pub fn topology(scenario: &Scenario, report: &RunReport, i: usize) -> Result<Topology> {
    let plan = Plan::new(&report.prefix, &scenario.cluster)
        .with_context(|| format!("plan the cluster of {}", scenario.name))?;
    let objects = report
        .objects
        .get(i)
        .with_context(|| format!("the run recorded no objects for step {}", i + 1))?;
    let down = scenario
        .steps
        .get(i)
        .map(|s| s.down_nodes.clone())
        .unwrap_or_default();
    Ok(Topology::build(
        &plan,
        objects,
        &pod_bridge(&plan),
        FABRIC_BRIDGE,
        &down,
    ))
}

/// Everything the HTML report shows.
pub fn report_data(scenario: &Scenario, report: &RunReport) -> Result<ReportData> {
    let mut steps = vec![];
    let mut down_before = BTreeSet::new();
    for (i, result) in report.steps.iter().enumerate() {
        let step = scenario
            .steps
            .get(i)
            .with_context(|| format!("the scenario has no step {}", i + 1))?;
        let (policies, services) = sim::report::objects_text(&report.objects[i]);
        let timing = report.step_timings.get(i).map(|t| match t.enforce_ms {
            Some(ms) => format!(
                "Every cell showed the predicted verdict {ms:.1} ms after the change (apply {:.1} ms, {} probe round{}).",
                t.apply_ms,
                t.rounds,
                if t.rounds == 1 { "" } else { "s" }
            ),
            None => format!(
                "No probe round agreed with the oracle ({} rounds); the last one is shown.",
                t.rounds
            ),
        });
        steps.push(StepData {
            name: result.name.clone(),
            changes: sim::report::changes::describe(step, &down_before),
            topology: topology(scenario, report, i)?,
            result: result.clone(),
            policies,
            services,
            rules: report.rules.get(i).cloned().unwrap_or_default(),
            proxy_rules: report.proxy_rules.get(i).cloned().unwrap_or_default(),
            timing,
            extras: extras(report, i, &result.name),
        });
        down_before = step.down_nodes.clone();
    }
    Ok(ReportData {
        scenario: scenario.name.clone(),
        summary: scenario.summary.clone(),
        description: scenario.description.clone(),
        ok: report.ok(),
        steps,
        notes: report
            .cni
            .notes
            .iter()
            .chain(&report.notes)
            .cloned()
            .collect(),
    })
}

/// The step's Services and endpoints, `--trace` story, cluster DNS and Ingress checks,
/// for the report.
fn extras(report: &RunReport, index: usize, step: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(objects) = report.objects.get(index)
        && !objects.services.is_empty()
    {
        out.push((
            "Services and endpoints (kubectl get services,endpoints; EndpointSlices)".to_string(),
            sim::services::render::render(objects),
        ));
    }
    for t in report.traces.iter().filter(|t| t.step == step) {
        out.push(("Trace of one probe (--trace)".to_string(), t.text.clone()));
    }
    if let Some(pos) = report.dns.iter().position(|d| d.step == step) {
        let previous = pos.checked_sub(1).and_then(|p| report.dns.get(p));
        out.push((
            "Cluster DNS".to_string(),
            report.dns[pos].render(index + 1, previous),
        ));
    }
    for s in report.ingress.iter().filter(|s| s.step == step) {
        out.push((
            "Ingress checks".to_string(),
            crate::ingress::checks::render_step(s),
        ));
    }
    out
}
