//! `--trace FROM TO:PORT/PROTO` in a step: after the step's matrix is measured, one more
//! probe of that cell is followed through every node and the router (see
//! [`crate::trace`]) and told as a story, ending with what it measured and what the
//! oracle says.

use anyhow::{Result, anyhow};
use sim::protocol::PortProto;
use sim::scenario::{Peer, Scenario, Step};
use sim::trace::{NodeInfo, TraceContext};

use crate::netns::Netns;
use crate::probe::{ProbeOptions, ProbeTask};

use super::{
    Live,
    cells::{endpoint, external_address, service_ip},
    drive::RETRY_DEADLINE,
    probe_step::{node_addresses, oracle_context, oracle_says},
};

/// A step's trace: the story, in words.
#[derive(Debug, Clone)]
pub struct Traced {
    pub step: String,
    pub text: String,
}

/// Traces `cell` in the live cluster as it is after `step`. `n` numbers the run's
/// traces (each takes its own source port).
pub(super) async fn trace_cell(
    scenario: &Scenario,
    step: &Step,
    live: &Live,
    cell: &(Peer, Peer, PortProto),
    n: usize,
    opts: &ProbeOptions,
) -> Result<Traced> {
    let (from, to, port) = cell;
    let plan = live.cluster.plan();
    let (client, _) = endpoint(live, from)?;
    let dst = match to {
        Peer::Service {
            namespace, name, ..
        } => service_ip(&live.objects, namespace, name)
            .ok_or_else(|| anyhow!("{to} has no cluster IP at step {:?}", step.name))?,
        Peer::Dns { name, .. } => anyhow::bail!(
            "--trace follows a probe to an address: to trace dns/{name}, trace the Service or \
             pod the name stands for (svc/NS/NAME:PORT or NS/POD)"
        ),
        _ if to.is_external_service() => external_address(live, to)?,
        _ => endpoint(live, to)?.1,
    };
    let task = ProbeTask {
        client,
        dst,
        port: *port,
        // Any server may answer: the story says who did.
        expect_answer_from: vec![],
    };
    let mut places: Vec<(String, Netns)> = plan
        .nodes
        .iter()
        .filter_map(|n| {
            live.cluster
                .node_netns(&n.name)
                .map(|ns| (n.name.clone(), ns.clone()))
        })
        .collect();
    if let Some(r) = live.cluster.router_netns() {
        places.push(("router".into(), r.clone()));
    }
    let deadline = opts.deadline.max(RETRY_DEADLINE);
    let traced =
        crate::trace::trace(&places, &task, deadline, crate::trace::source_port(n)).await?;
    let mut ctx = context(scenario, live);
    ctx.forward_tos = crate::probe::TRACE_TOS as u8;
    // Where the probe enters the places we watch: the client's node, the node itself, or
    // the router for a host outside; then the others.
    let first = match from {
        Peer::Pod(p) => match live.host_network.get(p) {
            Some(node) => Some(node.clone()),
            None => live.cluster.pod(p).map(|h| h.node.clone()),
        },
        Peer::Node(n) => Some(n.clone()),
        Peer::Host(_) => Some("router".to_string()),
        _ => None,
    };
    ctx.path = first
        .into_iter()
        .chain(places.iter().map(|(p, _)| p.clone()))
        .fold(Vec::new(), |mut v, p| {
            if !v.contains(&p) {
                v.push(p);
            }
            v
        });
    let node_addresses = node_addresses(plan);
    let oracle = oracle_context(scenario, live, &node_addresses);
    let said = oracle_says(&oracle, from, to, *port);
    let m = &traced.measured;
    let outcome = format!(
        "{}{}{}",
        m.outcome.as_str(),
        m.answered_by
            .as_ref()
            .map(|b| format!(" (answered by {b})"))
            .unwrap_or_default(),
        if m.detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", m.detail)
        }
    );
    let title = format!(
        "trace of {from} -> {to} {port} at step {:?}, from source port {} (TRACE rules in \
         the raw table of every node and the router, events read with xtables-monitor)",
        step.name,
        crate::trace::source_port(n)
    );
    Ok(Traced {
        step: step.name.clone(),
        text: sim::trace::tell(&ctx, &title, &traced.events, &outcome, &said.short()),
    })
}

/// Names for every address the story may meet.
fn context(scenario: &Scenario, live: &Live) -> TraceContext {
    let plan = live.cluster.plan();
    let mut names = std::collections::BTreeMap::new();
    for (p, h) in live.cluster.pods() {
        names.insert(h.ip, p.to_string());
    }
    for n in &plan.nodes {
        names.insert(n.underlay_ip, format!("{} (underlay)", n.name));
        names.insert(n.gateway, format!("{} (bridge)", n.name));
        if let Some(v) = plan.vtep(n) {
            names.insert(v.address, format!("{} (vxlan)", n.name));
        }
    }
    for h in &plan.hosts {
        names.insert(h.address, format!("host/{}", h.name));
    }
    for ((ns, name), svc) in &live.objects.services {
        if let Some(ip) = sim::services::cluster_ip(svc) {
            names.insert(ip, format!("svc {ns}/{name}"));
        }
    }
    let _ = scenario;
    TraceContext {
        names,
        nodes: plan
            .nodes
            .iter()
            .map(|n| NodeInfo {
                name: n.name.clone(),
                underlay_ip: n.underlay_ip,
                pod_subnet: n.pod_subnet,
                vxlan: plan.vtep(n).map(|v| (v.device, v.vni, v.port)),
            })
            .collect(),
        bridge: "cni0".into(),
        uplink: crate::cluster::NODE_UPLINK.into(),
        forward_tos: 0,
        path: vec![],
    }
}
