//! Probing one step: the oracle's word per cell, the probes (several per Service cell
//! with `--repeat`), and the cells that combine expectation, measurement and oracle.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Result, anyhow};
use sim::matrix::{Cell, Measurement, Outcome, ServiceCell, Spread, StepResult, Verdict};
use sim::oracle::{OracleContext, ServicePrediction, predict, predict_service};
use sim::protocol::PortProto;
use sim::scenario::{Loopback, Peer, Scenario, Step};

use crate::probe::{self, ProbeOptions, ProbeTask};

use super::*;

/// What the oracle says of one cell, in the two shapes it comes in.
pub(super) enum Said {
    Direct(sim::oracle::Prediction),
    Service(ServicePrediction),
}

impl Said {
    fn verdict(&self) -> Option<Verdict> {
        match self {
            Said::Direct(p) => Some(p.verdict),
            Said::Service(p) => p.verdict,
        }
    }

    fn short(&self) -> String {
        match self {
            Said::Direct(p) => p.short(),
            Said::Service(p) => p.short(),
        }
    }

    fn text(&self) -> String {
        match self {
            Said::Direct(p) => p.reason.to_string(),
            Said::Service(p) => p.to_string(),
        }
    }
}

pub(super) fn oracle_says(oracle: &OracleContext, from: &Peer, to: &Peer, port: PortProto) -> Said {
    if to.is_service() {
        Said::Service(predict_service(oracle, from, to, port))
    } else {
        Said::Direct(predict(oracle, from, to, port))
    }
}

/// Probes one step's cells. A Service cell is probed `repeat` times: once first (so a
/// ClientIP affinity entry exists before the rest start), then the other `repeat - 1`
/// times all at once; every answer must come from one of the backends the oracle
/// names.
pub(super) async fn probe_step(
    scenario: &Scenario,
    step: &Step,
    live: &Live,
    opts: &ProbeOptions,
    explain: Option<&(Peer, Peer, PortProto)>,
    repeat: usize,
    only: Option<&BTreeSet<CellId>>,
) -> Result<(StepResult, Option<Explained>)> {
    let mut keys = cells_of(scenario, &live.objects);
    if let Some(only) = only {
        keys.retain(|k| only.contains(k));
    }
    let extra = explain
        .filter(|k| !keys.contains(k) && only.is_none())
        .cloned();
    if let Some(k) = &extra {
        keys.push(k.clone());
    }
    let plan = live.cluster.plan();
    // What a node's traffic to another node's pods carries as its source: its underlay
    // address with host-gw, its VTEP address behind a VXLAN tunnel (as with flannel).
    let node_addresses: BTreeMap<String, Ipv4Addr> = plan
        .nodes
        .iter()
        .map(|n| {
            (
                n.name.clone(),
                plan.vtep(n).map_or(n.underlay_ip, |v| v.address),
            )
        })
        .collect();
    let host_addresses: BTreeMap<String, Ipv4Addr> = plan
        .hosts
        .iter()
        .map(|h| (h.name.clone(), h.address))
        .collect();
    let oracle = OracleContext::new(&live.objects, scenario.cluster.policy, &node_addresses)
        .with_hosts(host_addresses)
        .with_down_nodes(live.down_nodes.clone());
    let said: Vec<Said> = keys
        .iter()
        .map(|(from, to, port)| oracle_says(&oracle, from, to, *port))
        .collect();

    let mut first = Vec::with_capacity(keys.len());
    let mut again = Vec::new();
    let mut client_ips = Vec::with_capacity(keys.len());
    for (i, (from, to, port)) in keys.iter().enumerate() {
        let (client, mut client_ip) = endpoint(live, from)?;
        let task = match (to, &said[i]) {
            (
                Peer::Service {
                    namespace, name, ..
                },
                Said::Service(p),
            ) => {
                // A node's own connection to a cluster IP leaves from its underlay
                // address (the service CIDR is routed out of eth0); NAT comes later.
                let dst = service_ip(&live.objects, namespace, name)
                    .ok_or_else(|| anyhow!("{to} has no cluster IP at this step"))?;
                ProbeTask {
                    client,
                    dst,
                    port: *port,
                    expect_answer_from: p.backends.iter().map(|b| b.name.clone()).collect(),
                }
            }
            _ => {
                let (_, dst) = endpoint(live, to)?;
                if let Peer::Node(n) = from {
                    // A node talks to its own pods from its bridge address (the route to
                    // its pod subnet is on cni0), to pods behind a VXLAN tunnel from its
                    // tunnel address, and to everything else from its underlay address.
                    if let Some(node) = plan.node(n) {
                        client_ip = plan.node_source_for(node, dst);
                    }
                }
                ProbeTask {
                    client,
                    dst,
                    port: *port,
                    expect_answer_from: vec![to.to_string()],
                }
            }
        };
        if to.is_service() {
            for _ in 1..repeat {
                again.push((i, task.clone()));
            }
        }
        client_ips.push(client_ip);
        first.push(task);
    }
    let mut measured: Vec<Vec<Measurement>> = probe::run_probes(&first, opts)
        .await
        .into_iter()
        .map(|m| vec![m])
        .collect();
    if !again.is_empty() {
        let tasks: Vec<ProbeTask> = again.iter().map(|(_, t)| t.clone()).collect();
        for ((i, _), m) in again.iter().zip(probe::run_probes(&tasks, opts).await) {
            measured[*i].push(m);
        }
    }

    let mut cells: Vec<Cell> = keys
        .into_iter()
        .zip(measured)
        .zip(client_ips)
        .zip(&said)
        .map(|((((from, to, port), probes), client_ip), said)| {
            let is_self = matches!(&from, Peer::Pod(_)) && from == to;
            let expected = step
                .expect
                .as_ref()
                .and_then(|e| e.lookup(&from, &to, port))
                .map(Verdict::from_allowed);
            let (measured, service) = match said {
                Said::Service(p) => service_cell(p, probes),
                Said::Direct(_) => (probes.into_iter().next().unwrap_or_else(no_probe), None),
            };
            Cell {
                client_ip: Some(client_ip),
                asserted: !is_self || scenario.loopback == Loopback::Check,
                from,
                to,
                port,
                expected,
                measured,
                oracle: said.verdict(),
                reason: Some(said.short()),
                service,
            }
        })
        .collect();
    let explained = explain.map(|(from, to, port)| {
        let text = oracle_says(&oracle, from, to, *port).text();
        let cell = cells
            .iter()
            .find(|c| c.from == *from && c.to == *to && c.port == *port)
            .cloned();
        Explained {
            step: step.name.clone(),
            text,
            cell,
        }
    });
    if extra.is_some() {
        // Measured for the explanation only; not part of the scenario's matrix.
        cells.pop();
    }
    Ok((
        StepResult {
            name: step.name.clone(),
            cells,
        },
        explained,
    ))
}

pub(super) fn no_probe() -> Measurement {
    probe::outcome::measurement(Outcome::Error, "probe never ran", Duration::ZERO)
}

/// A Service cell from its probes: the spread, the backends with the oracle's verdict
/// for each, and as `measured` the first probe that disagrees with the oracle (an
/// error, an answer from a backend it denies, a failure where every backend allows, an
/// answer where none does), else the first probe.
pub(super) fn service_cell(
    p: &ServicePrediction,
    probes: Vec<Measurement>,
) -> (Measurement, Option<ServiceCell>) {
    let backends: Vec<(String, Verdict)> = p
        .backends
        .iter()
        .map(|b| (b.name.clone(), b.prediction.verdict))
        .collect();
    let mut spread = Spread::default();
    for m in &probes {
        spread.add(m);
    }
    let wrong = |m: &Measurement| {
        m.outcome == Outcome::Error
            || match (&m.answered_by, m.outcome) {
                (Some(who), Outcome::Allowed) => {
                    p.verdict == Some(Verdict::Deny)
                        || backends
                            .iter()
                            .any(|(b, v)| b == who && *v == Verdict::Deny)
                }
                _ => p.verdict == Some(Verdict::Allow),
            }
    };
    let shown = probes
        .iter()
        .position(wrong)
        .and_then(|i| probes.get(i).cloned())
        .or_else(|| probes.first().cloned())
        .unwrap_or_else(no_probe);
    (shown, Some(ServiceCell { backends, spread }))
}
