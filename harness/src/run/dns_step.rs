//! The cluster DNS in the run loop (`cluster.dns`, see [`crate::dns`]): refreshing the
//! server's records and the pods' resolv.conf after each step, the `dns/NAME:PORT`
//! cells (resolve from inside the client pod, then probe what the name gave), the step's
//! DNS report, and stopping it all at the end.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use sim::matrix::{Measurement, Outcome};
use sim::objects::ClusterObjects;
use sim::oracle::OracleContext;
use sim::oracle::dns::{DnsPrediction, predict_dns};
use sim::protocol::{PortProto, Protocol};
use sim::scenario::{Peer, Scenario};

use crate::dns::{Answer, ClusterDns, DnsStep, Resolution};
use crate::probe::{self, ProbeOptions, ProbeTask};

use super::{
    Live,
    drive::CellId,
    probe_step::{Said, no_probe, oracle_says},
};

/// After a step's changes: the DNS server serves the new records, new pods get their
/// resolv.conf, deleted ones lose it. Nothing without `cluster.dns`.
pub(super) fn refresh_dns(live: &mut Live) -> Result<()> {
    match live.dns.as_mut() {
        Some(d) => d.refresh(&live.cluster, &live.objects),
        None => Ok(()),
    }
}

/// Stops the DNS server and removes the resolv.conf files (leaves the files with
/// `keep`). Returns the problems met.
pub(super) async fn finish_dns(dns: Option<ClusterDns>, keep: bool) -> Vec<String> {
    match dns {
        None => vec![],
        Some(d) if keep => {
            d.keep();
            vec![]
        }
        Some(d) => d.shutdown().await,
    }
}

/// The ports a `dns/NAME:PORT` cell from `client` is probed on (see
/// [`sim::oracle::dns::probe_ports`]); TCP without `cluster.dns`.
pub(super) fn dns_ports(
    scenario: &Scenario,
    objects: &ClusterObjects,
    client: &Peer,
    name: &str,
    port: u16,
) -> Vec<PortProto> {
    match &scenario.dns {
        Some(dns) => sim::oracle::dns::probe_ports(objects, dns, client, name, port),
        None => vec![PortProto::new(Protocol::Tcp, port)],
    }
}

/// The oracle's word on a `dns/` cell (`None` without `cluster.dns`, which the parser
/// refuses).
pub(super) fn predict_dns_cell(
    scenario: &Scenario,
    oracle: &OracleContext,
    from: &Peer,
    to: &Peer,
    port: PortProto,
) -> Option<DnsPrediction> {
    let (Some(dns), Peer::Dns { name, .. }) = (&scenario.dns, to) else {
        return None;
    };
    Some(predict_dns(oracle, dns, from, name, port))
}

/// Resolves the name of every `dns/` cell from inside its client pod (all at once),
/// by index into `keys`. Each resolution is also recorded for the step's report.
pub(super) async fn resolve_dns_cells(
    live: &Live,
    keys: &[CellId],
    deadline: Duration,
) -> BTreeMap<usize, Resolution> {
    let Some(dns) = &live.dns else {
        return BTreeMap::new();
    };
    let mut jobs = Vec::new();
    for (i, (from, to, _)) in keys.iter().enumerate() {
        let Peer::Dns { name, .. } = to else { continue };
        let client = match from {
            Peer::Pod(p) => live
                .cluster
                .pod(p)
                .map(|h| (h.netns.clone(), p.namespace.clone())),
            _ => None,
        };
        let name = name.clone();
        let conf = client.as_ref().map(|(_, ns)| dns.conf_for(ns));
        jobs.push(async move {
            let r = match (client, conf) {
                (Some((netns, _)), Some(conf)) => {
                    crate::dns::resolve(&netns, &conf, &name, deadline).await
                }
                _ => Resolution {
                    name: name.clone(),
                    answer: Answer::Error,
                    found_as: None,
                    addresses: vec![],
                    asked: vec![],
                    detail: "only a pod has the cluster's resolv.conf".into(),
                    elapsed_us: 0,
                },
            };
            (i, r)
        });
    }
    let mut out: BTreeMap<usize, Resolution> =
        futures::future::join_all(jobs).await.into_iter().collect();
    // A name that got no answer is a verdict only while the server itself answers.
    let unanswered = |r: &Resolution| {
        matches!(
            r.answer,
            Answer::Timeout | Answer::Refused | Answer::Rejected
        )
    };
    if out.values().any(unanswered)
        && let Err(down) = dns.health(&live.cluster, deadline).await
    {
        for r in out.values_mut().filter(|r| unanswered(r)) {
            r.answer = Answer::Error;
            r.detail = down.to_string();
        }
    }
    for (i, r) in &out {
        let (from, to, _) = &keys[*i];
        dns.record(from.to_string(), to.to_string(), r.clone());
    }
    out
}

/// The probe of a resolved `dns/` cell (to the first address the name gave, answered
/// by whoever the oracle names), or the measurement of a name that did not resolve.
pub(super) fn dns_task(
    client: crate::netns::Netns,
    port: PortProto,
    resolution: Option<&Resolution>,
    said: &DnsPrediction,
) -> std::result::Result<ProbeTask, Measurement> {
    let Some(r) = resolution else {
        return Err(probe::outcome::measurement(
            Outcome::Error,
            "the name was not resolved",
            Duration::ZERO,
        ));
    };
    let elapsed = Duration::from_micros(r.elapsed_us);
    let outcome = match r.answer {
        Answer::Addresses => {
            return Ok(ProbeTask {
                client,
                dst: r.addresses[0],
                port,
                expect_answer_from: said.answer_from(),
            });
        }
        // NXDOMAIN: the question arrived and the answer is "nothing there".
        Answer::NotFound | Answer::Refused => Outcome::Refused,
        Answer::Timeout => Outcome::Dropped,
        Answer::Rejected => Outcome::Rejected,
        Answer::Error => Outcome::Error,
    };
    Err(probe::outcome::measurement(
        outcome,
        format!("dns: {}", r.summary()),
        elapsed,
    ))
}

/// Runs the probes whose index is not in `settled` (names that did not resolve) and
/// returns a measurement per task, the settled ones as given. A resolved `dns/` cell's
/// probe gets the name's answer in front of its detail.
pub(super) async fn run_probes_except(
    tasks: &[ProbeTask],
    mut settled: BTreeMap<usize, Measurement>,
    resolved: &BTreeMap<usize, Resolution>,
    opts: &ProbeOptions,
) -> Vec<Measurement> {
    let run: Vec<ProbeTask> = tasks
        .iter()
        .enumerate()
        .filter(|(i, _)| !settled.contains_key(i))
        .map(|(_, t)| t.clone())
        .collect();
    let mut measured = probe::run_probes(&run, opts).await.into_iter();
    (0..tasks.len())
        .map(|i| match settled.remove(&i) {
            Some(m) => m,
            None => {
                let mut m = measured.next().unwrap_or_else(no_probe);
                if let Some(r) = resolved.get(&i) {
                    m.detail = if m.detail.is_empty() {
                        format!("dns: {}", r.summary())
                    } else {
                        format!("dns: {}; {}", r.summary(), m.detail)
                    };
                }
                m
            }
        })
        .collect()
}

/// What the cluster DNS showed in this step: its records, what each `dns/` cell's
/// client got, and every pod's service environment variables.
pub(super) fn dns_step_report(scenario: &Scenario, index: usize, live: &Live) -> Option<DnsStep> {
    let dns = live.dns.as_ref()?;
    let step = scenario.steps.get(index)?;
    let env = sim::scenario::env_timeline(scenario)
        .into_iter()
        .nth(index)
        .map(|(_, e)| e)
        .unwrap_or_default();
    Some(DnsStep {
        step: step.name.clone(),
        zone: dns.zone().map(|z| z.dump()).unwrap_or_default(),
        resolutions: dns.take_resolutions(),
        env,
    })
}

/// The oracle's word on any cell: [`Said::Dns`] for a `dns/` target, else
/// [`oracle_says`].
pub(super) fn said_for(
    scenario: &Scenario,
    oracle: &OracleContext,
    from: &Peer,
    to: &Peer,
    port: PortProto,
) -> Said {
    match predict_dns_cell(scenario, oracle, from, to, port) {
        Some(p) => Said::Dns(Box::new(p)),
        None => oracle_says(oracle, from, to, port),
    }
}

/// The ports the probe servers of `pod` serve: all its declared ports, except port 53
/// (UDP and TCP) of the cluster DNS pod, where the DNS server listens instead.
pub(super) fn without_dns_ports(
    live: &Live,
    pod: &sim::objects::PodRef,
    ports: Vec<PortProto>,
) -> Vec<PortProto> {
    if live.dns.is_none() || !sim::dns::is_dns_pod(pod) {
        return ports;
    }
    ports.into_iter().filter(|p| p.port != 53).collect()
}
