//! The step loop: apply a step's changes, sync the rules, verify the infrastructure, then
//! probe round after round until every cell agrees with the oracle (the time to enforce)
//! or patience runs out.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use sim::matrix::{Cell, StepResult};
use sim::protocol::PortProto;
use sim::scenario::{Peer, Scenario, Step};

use crate::probe::ProbeOptions;
use crate::probe::throughput::{self, ThroughputCheck, ThroughputOptions};

use super::{
    CniReport, Explained, Live, RunOptions, RunReport, StepAhead, StepTimings, Timings,
    apply::{apply_step, installed_proxy_rules, installed_rules, sync_rules},
    dns_step::{dns_step_report, refresh_dns},
    ingress_step::ingress_step,
    ms, note,
    probe_step::probe_step,
    trace_step::trace_cell,
};

/// Takes down the underlay link of the nodes the step wants down and brings back the
/// others that are down (see [`Cluster::set_node_underlay`]). Returns whether a node
/// came back.
pub(super) async fn set_node_links(step: &Step, live: &mut Live) -> Result<bool> {
    let going_down: Vec<String> = step
        .down_nodes
        .difference(&live.down_nodes)
        .cloned()
        .collect();
    let coming_up: Vec<String> = live
        .down_nodes
        .difference(&step.down_nodes)
        .cloned()
        .collect();
    for node in &going_down {
        live.cluster.set_node_underlay(node, false).await?;
        live.down_nodes.insert(node.clone());
    }
    for node in &coming_up {
        live.cluster.set_node_underlay(node, true).await?;
        live.down_nodes.remove(node);
    }
    Ok(!coming_up.is_empty())
}

/// Adds the nodes the step joins (`nodeJoin`) to the running cluster
/// ([`Cluster::join_node`]) and to the objects, so the scheduler and the oracle count
/// them, before the step's changes (which may bind pods to them).
pub(super) async fn join_nodes(step: &Step, live: &mut Live) -> Result<()> {
    for node in &step.joined_nodes {
        live.cluster.join_node(node).await?;
        if !live.objects.nodes.contains(node) {
            live.objects.nodes.push(node.clone());
        }
    }
    Ok(())
}

/// What was built, read back again after a step that joined nodes: the new nodes, and
/// on every node the routes (and in vxlan mode the FDB and neighbour entries) towards
/// them. Appended to the `@built` snapshot, which otherwise shows the first step only.
pub(super) async fn built_after_join(step: &Step, live: &Live) -> Result<String> {
    Ok(format!(
        "\n== after step {:?} (joined: {}) ==\n{}",
        step.name,
        step.joined_nodes.join(", "),
        live.cluster.describe().await?
    ))
}

pub(super) async fn drive(
    scenario: &Scenario,
    opts: &RunOptions,
    live: &mut Live,
    started: Instant,
) -> Result<RunReport> {
    let mut report = RunReport {
        scenario: scenario.name.clone(),
        prefix: opts.prefix.clone(),
        steps: vec![],
        timings: Timings::default(),
        built: String::new(),
        teardown_errors: vec![],
        kept: None,
        capture_summary: None,
        explanations: vec![],
        step_timings: vec![],
        rules: vec![],
        proxy_rules: vec![],
        notes: vec![],
        objects: vec![],
        traces: vec![],
        dns: vec![],
        cni: CniReport {
            notes: crate::cni::capabilities::unused_settings(scenario),
            ..CniReport::default()
        },
        throughput: vec![],
        ingress: vec![],
    };
    let probe_opts = ProbeOptions {
        deadline: opts.deadline.unwrap_or(ProbeOptions::default().deadline),
        ..ProbeOptions::default()
    };
    for (i, step) in scenario.steps.iter().enumerate() {
        if i > 0 {
            before_step(opts, step, i, &live.down_nodes, report.steps.last()).await?;
        }
        super::progress::stage(|| {
            format!(
                "step {}/{} {:?}: applying its changes",
                i + 1,
                scenario.steps.len(),
                step.name
            )
        });
        let changed_at = Instant::now();
        join_nodes(step, live)
            .await
            .with_context(|| format!("step {:?}: nodes joining the cluster", step.name))?;
        apply_step(scenario, step, live, &mut report.cni)
            .await
            .with_context(|| format!("step {:?}", step.name))?;
        let node_back = set_node_links(step, live)
            .await
            .with_context(|| format!("step {:?}: take nodes down or bring them back", step.name))?;
        let (proxied, sync) = sync_rules(live)
            .with_context(|| format!("step {:?}: load the proxy and policy rules", step.name))?;
        refresh_dns(live)
            .with_context(|| format!("step {:?}: refresh the cluster DNS", step.name))?;
        let applied_at = Instant::now();
        live.cluster
            .verify_with_down(&live.down_nodes)
            .await
            .map_err(|fault| anyhow!("infrastructure fault (not a policy result): {fault}"))?;
        if i == 0 {
            report.timings.bring_up_ms = ms(started.elapsed());
            report.built = live.cluster.describe().await?;
            // hostNetwork pods have nothing built for them: say where they run.
            for (pod, node) in &live.host_network {
                let ip = super::apply::ip_of(&live.objects, pod)
                    .map_or_else(|| "-".to_string(), |ip| ip.to_string());
                report.built += &format!("pod {pod} on {node}: host network, address {ip}\n");
            }
            note(opts, || {
                format!(
                    "{} pods up through the CNI plugins, policies loaded, everything verified in {:.0} ms",
                    live.objects.pods.len(),
                    report.timings.bring_up_ms
                )
            });
        } else {
            note(opts, || {
                format!(
                    "step {:?}: changes applied and rules synced in {:.1} ms",
                    step.name,
                    ms(applied_at - changed_at)
                )
            });
        }
        // Probe until every cell shows the verdict the oracle predicts for the new state
        // (the time to enforce), or give up and report what the last round saw.
        // The first round measures every cell; later rounds measure again only the cells
        // that disagreed, with a generous deadline, so that a probe slowed down by a busy
        // machine is not taken for a dropped packet.
        let t = Instant::now();
        let table_fulls_before = crate::host::neighbours::table_fulls();
        let mut rounds = 0;
        let mut first_round_ms = 0.0;
        let mut so_far: Option<(StepResult, Option<Explained>)> = None;
        let (result, explained, enforce_ms) = loop {
            let disagreeing: Option<BTreeSet<CellId>> = so_far.as_ref().map(|(r, _)| {
                r.cells
                    .iter()
                    .filter(|c| !c.agrees_with_oracle())
                    .map(|c| (c.from.clone(), c.to.clone(), c.port))
                    .collect()
            });
            let round_opts = match &disagreeing {
                None => probe_opts.clone(),
                Some(_) => ProbeOptions {
                    deadline: probe_opts.deadline.max(RETRY_DEADLINE),
                    ..probe_opts.clone()
                },
            };
            super::progress::stage(|| {
                format!(
                    "step {}/{} {:?}: probe round {}{}",
                    i + 1,
                    scenario.steps.len(),
                    step.name,
                    rounds + 1,
                    match &disagreeing {
                        Some(d) => format!(" ({} cells disagreed with the oracle)", d.len()),
                        None => String::new(),
                    }
                )
            });
            let (fresh, fresh_explained) = probe_step(
                scenario,
                step,
                live,
                &round_opts,
                opts.explain.as_ref(),
                opts.repeat,
                disagreeing.as_ref(),
            )
            .await?;
            rounds += 1;
            if rounds == 1 {
                first_round_ms = ms(t.elapsed());
            }
            let (result, explained) = match so_far.take() {
                None => (fresh, fresh_explained),
                Some((mut all, mut explained)) => {
                    // Indexed: a round can re-measure thousands of a 40 000-cell matrix.
                    let at: BTreeMap<CellId, usize> = all
                        .cells
                        .iter()
                        .enumerate()
                        .map(|(i, c)| ((c.from.clone(), c.to.clone(), c.port), i))
                        .collect();
                    for cell in fresh.cells {
                        if let Some(e) = explained.as_mut().and_then(|e| e.cell.as_mut())
                            && e.from == cell.from
                            && e.to == cell.to
                            && e.port == cell.port
                        {
                            *e = cell.clone();
                        }
                        if let Some(&i) = at.get(&(cell.from.clone(), cell.to.clone(), cell.port)) {
                            all.cells[i] = cell;
                        }
                    }
                    (all, explained)
                }
            };
            let agrees = result.cells.iter().all(Cell::agrees_with_oracle);
            if agrees {
                break (result, explained, Some(ms(changed_at.elapsed())));
            }
            let (max_rounds, patience) = if node_back {
                // Every round of a recovering node waits out the deadline of its dropped
                // cells, so only the clock limits it (see NODE_BACK_PATIENCE).
                (usize::MAX, NODE_BACK_PATIENCE)
            } else {
                (ENFORCE_ROUNDS, ENFORCE_PATIENCE)
            };
            // Patience counts from when the rules were in place (a loaded machine can
            // spend it all on the apply), and a disagreeing cell is always measured a
            // second time with the generous deadline before it is reported.
            if rounds >= max_rounds || (rounds >= MIN_ROUNDS && applied_at.elapsed() > patience) {
                break (result, explained, None);
            }
            so_far = Some((result, explained));
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        // Cells that never showed the oracle's verdict: a fault that came up during the
        // probes (a link deleted, a full conntrack table) would pass for a policy's drop.
        if enforce_ms.is_none() {
            if let (Some(before), Some(after)) =
                (table_fulls_before, crate::host::neighbours::table_fulls())
                && after > before
            {
                return Err(anyhow!(
                    "step {:?}: infrastructure fault during the probes (not a policy \
                     result): {}",
                    step.name,
                    crate::host::neighbours::overflow_message(after - before)
                ));
            }
            live.cluster
                .verify_with_down(&live.down_nodes)
                .await
                .map_err(|fault| {
                    anyhow!(
                        "step {:?}: infrastructure fault during the probes (not a policy \
                         result): {fault}",
                        step.name
                    )
                })?;
        }
        let probe_ms = ms(t.elapsed());
        report.timings.probe_ms += probe_ms;
        report.step_timings.push(StepTimings {
            apply_ms: ms(applied_at - changed_at),
            sync_ms: ms(sync.elapsed),
            proxy_sync_ms: proxied.as_ref().map_or(0.0, |p| ms(p.elapsed)),
            proxy_nodes_written: proxied
                .as_ref()
                .map_or(0, |p| p.nodes.iter().filter(|n| n.changed).count()),
            proxy_restore_bytes: proxied
                .as_ref()
                .map_or(0, |p| p.nodes.iter().map(|n| n.restore_bytes).sum()),
            probe_ms,
            first_round_ms,
            rounds,
            enforce_ms,
        });
        if i > 0 && !step.joined_nodes.is_empty() {
            report.built += &built_after_join(step, live).await?;
        }
        report.rules.push(installed_rules(live)?);
        report.proxy_rules.push(installed_proxy_rules(live)?);
        report.explanations.extend(explained);
        report.dns.extend(dns_step_report(scenario, i, live));
        report.objects.push(live.objects.clone());
        if let Some(cell) = &opts.trace {
            let n = report.traces.len();
            let traced = trace_cell(scenario, step, live, cell, n, &probe_opts)
                .await
                .with_context(|| {
                    format!(
                        "step {:?}: trace {} -> {} {}",
                        step.name, cell.0, cell.1, cell.2
                    )
                })?;
            report.traces.push(traced);
        }
        report.steps.push(result);
        report
            .throughput
            .push(measure_throughput(scenario, live).await);
        report
            .ingress
            .extend(ingress_step(scenario, step, opts, live).await?);
    }
    Ok(report)
}

/// `--pause`: tells the hook what the next step will change and waits for it (it reads
/// from the terminal, so it runs on a blocking thread with the spinner hidden).
async fn before_step(
    opts: &RunOptions,
    step: &Step,
    index: usize,
    down_now: &BTreeSet<String>,
    previous: Option<&StepResult>,
) -> Result<()> {
    let Some(hook) = opts.before_step.clone() else {
        return Ok(());
    };
    let ahead = StepAhead {
        index,
        name: step.name.clone(),
        changes: sim::report::changes::describe(step, down_now),
        previous: previous.cloned(),
    };
    tokio::task::spawn_blocking(move || super::progress::suspend(|| (hook.0)(ahead)))
        .await
        .with_context(|| format!("pause before step {:?}", step.name))
}

/// Measures the scenario's `throughput:` entries whose pods both exist now, one after
/// the other (two at once would share the CPU and the link).
pub(super) async fn measure_throughput(scenario: &Scenario, live: &Live) -> Vec<ThroughputCheck> {
    let mut out = Vec::new();
    for spec in &scenario.throughput {
        let (Some(from), Some(to)) = (live.cluster.pod(&spec.from), live.cluster.pod(&spec.to))
        else {
            continue;
        };
        let m = throughput::measure(
            &from.netns,
            &to.netns,
            to.ip,
            spec.port,
            ThroughputOptions::default(),
        )
        .await;
        out.push(ThroughputCheck::new(spec, m));
    }
    out
}

/// One cell: client, server, port.
pub(super) type CellId = (Peer, Peer, PortProto);

/// The deadline for measuring a disagreeing cell again (a probe that was merely slow on a
/// busy machine answers well within it; a real drop costs this much once per round).
pub(super) const RETRY_DEADLINE: Duration = Duration::from_millis(500);

/// How many probe rounds a step may take to see the oracle's verdicts everywhere, and for
/// how long, before what the last round saw is reported as the result.
pub(super) const ENFORCE_ROUNDS: usize = 10;
pub(super) const ENFORCE_PATIENCE: Duration = Duration::from_secs(2);

/// The probe rounds a step gets whatever the clock says: the first, and one that measures
/// the disagreeing cells again with [`RETRY_DEADLINE`]. In a 1000-run soak at load 12,
/// runs whose apply alone took longer than [`ENFORCE_PATIENCE`] reported slow answers as
/// drops after a single 100 ms round.
pub(super) const MIN_ROUNDS: usize = 2;

/// How long a step that brings a node's underlay link back may take to see every cell
/// as predicted. Measured: 0.8-0.93 s after `nodeUp` (host-gw and vxlan alike), 7-8
/// probe rounds of 100 ms. The figures fit this account (not traced further): losing
/// carrier made the node forget its neighbours, its ARP requests for the other nodes
/// went nowhere while the link was down, and the pending request is retried once a
/// second (`retrans_time_ms`), about 1 s after the first lost probe of the down step.
pub(super) const NODE_BACK_PATIENCE: Duration = Duration::from_secs(4);
