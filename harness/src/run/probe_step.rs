//! Probing one step: the oracle's word per cell, the probes (several per Service cell
//! with `--repeat`), and the cells that combine expectation, measurement and oracle.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Result, anyhow};
use sim::matrix::{Cell, Measurement, Outcome, ServiceCell, Spread, StepResult, Verdict};
use sim::oracle::{
    HostPorts, NodeAddresses, OracleContext, Portmap, ServicePrediction, predict, predict_service,
};
use sim::protocol::PortProto;
use sim::scenario::{Loopback, Peer, Scenario, Step};

use crate::probe::{self, ProbeOptions, ProbeTask};

use super::{
    Explained, Live,
    cells::{cells_of, endpoint, external_address, host_network_ends, sending_node, service_ip},
    dns_step::{dns_task, resolve_dns_cells, run_probes_except, said_for},
    drive::CellId,
};

/// What the oracle says of one cell, in the two shapes it comes in.
pub(super) enum Said {
    Direct(sim::oracle::Prediction),
    Service(ServicePrediction),
    /// A `dns/NAME:PORT` cell (see [`dns_step`]).
    Dns(Box<sim::oracle::dns::DnsPrediction>),
    /// A `nodeport/`, `lb/` or `extip/` cell: one prediction per path (entry node ×
    /// backend).
    External(sim::oracle::ExternalPrediction),
}

impl Said {
    pub(super) fn verdict(&self) -> Option<Verdict> {
        match self {
            // Same-priority cluster-wide policies disagreeing: the API leaves it open.
            Said::Direct(p) => (!p.reason.undefined()).then_some(p.verdict),
            Said::Service(p) => p.verdict,
            Said::Dns(p) => p.verdict,
            Said::External(p) => p.verdict,
        }
    }

    pub(super) fn short(&self) -> String {
        match self {
            Said::Direct(p) => p.short(),
            Said::Service(p) => p.short(),
            Said::Dns(p) => p.short(),
            Said::External(p) => p.short(),
        }
    }

    pub(super) fn text(&self) -> String {
        match self {
            Said::Direct(p) => p.reason.to_string(),
            Said::Service(p) => p.to_string(),
            Said::Dns(p) => p.to_string(),
            Said::External(p) => p.to_string(),
        }
    }
}

pub(super) fn oracle_says(oracle: &OracleContext, from: &Peer, to: &Peer, port: PortProto) -> Said {
    if to.is_service() {
        Said::Service(predict_service(oracle, from, to, port))
    } else if to.is_external_service() {
        Said::External(sim::oracle::predict_external(oracle, from, to, port))
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
    // `--repeat` wins when given; otherwise the scenario's `probe.repeat`.
    let repeat = if repeat > 0 {
        repeat
    } else {
        scenario.probe.repeat.unwrap_or(1)
    };
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
    let host_network = host_network_ends(live, &keys);
    let plan = live.cluster.plan();
    if let Some(router) = live.cluster.router_netns() {
        // The router's ECMP routes to the Services' outside addresses, as they are now.
        // (Nodes whose underlay link is down keep the routes they have.)
        let nodes: Vec<&crate::netns::Netns> = plan
            .nodes
            .iter()
            .filter(|n| !live.down_nodes.contains(&n.name))
            .filter_map(|n| live.cluster.node_netns(&n.name))
            .collect();
        crate::cluster::outside::sync_service_routes(plan, router, &nodes, &live.objects).await?;
    }
    let node_addresses = node_addresses(plan);
    let oracle = oracle_context(scenario, live, &node_addresses);
    let said: Vec<Said> = keys
        .iter()
        .map(|(from, to, port)| said_for(scenario, &oracle, from, to, *port))
        .collect();
    let resolved = resolve_dns_cells(live, &keys, opts.deadline).await;
    let mut settled = BTreeMap::new();

    let mut first = Vec::with_capacity(keys.len());
    let mut again = Vec::new();
    let mut client_ips = Vec::with_capacity(keys.len());
    for (i, (from, to, port)) in keys.iter().enumerate() {
        let (client, mut client_ip) = endpoint(live, from)?;
        let task = match (to, &said[i]) {
            (Peer::Dns { .. }, Said::Dns(p)) => {
                match dns_task(client.clone(), *port, resolved.get(&i), p) {
                    Ok(task) => task,
                    Err(m) => {
                        // Never sent: the name gave no address to probe.
                        settled.insert(i, m);
                        ProbeTask {
                            client,
                            dst: Ipv4Addr::UNSPECIFIED,
                            port: *port,
                            expect_answer_from: vec![],
                        }
                    }
                }
            }
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
            (_, Said::External(p)) => ProbeTask {
                client,
                dst: external_address(live, to)?,
                port: *port,
                expect_answer_from: p.answerers(),
            },
            _ => {
                let (_, dst) = endpoint(live, to)?;
                if let Some(n) = sending_node(live, from) {
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
                    expect_answer_from: vec![answerer(to, &said[i])],
                }
            }
        };
        if to.is_service() || to.is_external_service() {
            for _ in 1..repeat {
                again.push((i, task.clone()));
            }
        }
        client_ips.push(client_ip);
        first.push(task);
    }
    let mut measured: Vec<Vec<Measurement>> = run_probes_except(&first, settled, &resolved, opts)
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
                Said::Dns(d) => match &d.service {
                    Some(sp) => service_cell(sp, probes),
                    None => (probes.into_iter().next().unwrap_or_else(no_probe), None),
                },
                Said::External(p) => external_cell(p, probes),
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
        let text = said_for(scenario, &oracle, from, to, *port).text();
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
            host_network,
        },
        explained,
    ))
}

/// What `node/NAME` targets need from the run: portmap's settings in the CNI chain, and
/// each node's underlay and bridge addresses.
fn host_ports(scenario: &Scenario, plan: &sim::plan::Plan) -> HostPorts {
    HostPorts {
        portmap: Portmap::of(&scenario.cluster.cni),
        nodes: plan
            .nodes
            .iter()
            .map(|n| {
                (
                    n.name.clone(),
                    NodeAddresses {
                        underlay: n.underlay_ip,
                        bridge: n.gateway,
                    },
                )
            })
            .collect(),
    }
}

/// Who must answer a probe to `to`: the pod itself, the host, or for `node/NAME` the pod
/// whose hostPort portmap forwards it to.
fn answerer(to: &Peer, said: &Said) -> String {
    if let Said::Direct(p) = said
        && let sim::oracle::Case::HostPort(h) = &p.reason.case
        && let Some(pod) = h.answering_pod()
    {
        return pod.to_string();
    }
    to.to_string()
}

/// What a node's traffic to another node's pods carries as its source, per node: its
/// underlay address with host-gw, its VTEP address behind a VXLAN tunnel (as with
/// flannel). The oracle needs it to judge node-sourced traffic.
pub(super) fn node_addresses(plan: &sim::plan::Plan) -> BTreeMap<String, Ipv4Addr> {
    plan.nodes
        .iter()
        .map(|n| {
            (
                n.name.clone(),
                plan.vtep(n).map_or(n.underlay_ip, |v| v.address),
            )
        })
        .collect()
}

/// The oracle for the live cluster as it is now: the one place that tells it what runs
/// (policy engine, proxy), what is down, and the cluster's addresses.
pub(super) fn oracle_context<'a>(
    scenario: &Scenario,
    live: &'a Live,
    node_addresses: &'a BTreeMap<String, Ipv4Addr>,
) -> OracleContext<'a> {
    let plan = live.cluster.plan();
    let host_addresses: BTreeMap<String, Ipv4Addr> = plan
        .hosts
        .iter()
        .map(|h| (h.name.clone(), h.address))
        .collect();
    let host_ports = host_ports(scenario, plan);
    OracleContext::new(&live.objects, scenario.cluster.policy, node_addresses)
        .with_hosts(host_addresses)
        .with_down_nodes(live.down_nodes.clone())
        .with_br_netfilter_off(if scenario.br_netfilter {
            BTreeSet::new()
        } else {
            plan.nodes.iter().map(|n| n.name.clone()).collect()
        })
        .with_node_fabric(host_ports.nodes.clone())
        .with_host_ports(host_ports)
        .with_proxy(scenario.cluster.proxy)
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
    let affinity = matches!(
        p.fate,
        sim::oracle::ServiceFate::Balanced { affinity: true, .. }
    );
    (
        shown,
        Some(ServiceCell {
            backends,
            spread,
            affinity,
        }),
    )
}

/// A `nodeport/`, `lb/` or `extip/` cell from its probes: like [`service_cell`], with
/// the oracle's paths (`n1 -> x/a`) in place of backends. Each answer is put on the path
/// it took, told apart by who answered and the source address it saw (the entry node's
/// bridge or underlay address when masqueraded, the client's own otherwise); an answer
/// no path predicts is counted under its own name, which the check reports.
pub(super) fn external_cell(
    p: &sim::oracle::ExternalPrediction,
    probes: Vec<Measurement>,
) -> (Measurement, Option<ServiceCell>) {
    let backends: Vec<(String, Verdict)> = p
        .paths
        .iter()
        .map(|path| (path.label(), path.verdict()))
        .collect();
    let label_of = |m: &Measurement| -> Option<(String, Verdict)> {
        let who = m.answered_by.as_deref()?;
        Some(match p.path_of(who, m.seen_source) {
            Some(path) => (path.label(), path.verdict()),
            None => (
                format!(
                    "{who} (seen from {})",
                    m.seen_source
                        .map_or_else(|| "?".to_string(), |ip| ip.to_string())
                ),
                Verdict::Deny,
            ),
        })
    };
    let mut spread = Spread::default();
    for m in &probes {
        match (label_of(m), m.outcome) {
            (Some((label, _)), Outcome::Allowed) => {
                *spread.answered.entry(label).or_default() += 1;
            }
            (_, outcome) => *spread.unanswered.entry(outcome).or_default() += 1,
        }
    }
    let wrong = |m: &Measurement| {
        m.outcome == Outcome::Error
            || match (label_of(m), m.outcome) {
                (Some((_, v)), Outcome::Allowed) => {
                    p.verdict == Some(Verdict::Deny) || v == Verdict::Deny
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
    let affinity = matches!(
        p.fate,
        sim::oracle::ExternalFate::Entered { affinity: true, .. }
    );
    (
        shown,
        Some(ServiceCell {
            backends,
            spread,
            affinity,
        }),
    )
}
