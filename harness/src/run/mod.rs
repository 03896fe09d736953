//! Running a scenario end to end: build the cluster, then for each step apply its changes
//! (pods through the CNI plugins, Services through the service proxy, policies through
//! the enforcer), probe, and compare what was measured with what the scenario expects and
//! what the oracle predicts. Teardown is
//! the caller's guarantee: [`run`] tears down on success and on error, and the caller
//! sweeps the run's prefix after a panic or Ctrl-C (see `sweep::clean_prefix`).

mod apply;
mod cells;
mod dns_step;
mod drive;
mod ingress_step;
mod preflight;
mod probe_step;
mod progress;
mod report;
mod report_data;
mod trace_step;

pub use report::{CniReport, Explained, Kept, RunReport, StepTimings, Timings};
pub use report_data::{report_data, topology};
pub use trace_step::Traced;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sim::objects::{ClusterObjects, PodRef};
use sim::plan::Plan;
use sim::protocol::PortProto;
use sim::scenario::{Peer, Scenario};

use crate::capture::Capture;
use crate::cluster::{Cluster, FABRIC_BRIDGE};
use crate::policy::{self, PolicyEngine};
use crate::probe::Servers;
use crate::proxy::{self, ServiceProxy};

use apply::start_host_servers;
use dns_step::finish_dns;
use drive::drive;
use preflight::{has_services, ipvs_preflight, refuse_what_no_engine_runs, userspace_preflight};

/// Whether pods are CNI CHECKed after their ADD when the scenario does not say
/// (`cluster.cni.check: true`, or `cargo xtask scenario --cni-check`). Off, because of
/// what it costs on the 2-core VM: a CHECK is one plugin process per plugin and
/// attachment (lo and eth0), ~10 ms of CPU per pod, and default-deny (2 nodes, 9 pods,
/// debug build, other builds running) went from 100-197 ms of bring-up without CHECK to
/// 189-359 ms with it (CHECK itself 58-101 ms for 18 attachments on 4 threads): past
/// the 0.2 s target. Runtimes do not run CHECK either (the CRI has no such call).
pub const DEFAULT_CNI_CHECK: bool = false;

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The run's unique prefix (the caller makes it, so it can sweep after a crash).
    pub prefix: String,
    /// Leave the cluster up at the end.
    pub keep: bool,
    /// Per-probe deadline; default from the probe engine's measured figure.
    pub deadline: Option<Duration>,
    /// One cell to explain in every step (`--explain`); it is probed even when the
    /// scenario's probe set leaves it out.
    pub explain: Option<(Peer, Peer, PortProto)>,
    /// Print a line per stage to stderr (for people at a terminal; off in CI).
    pub progress: bool,
    /// `--capture fabric`: write every frame crossing the fabric bridge, from right
    /// after the fabric is built until teardown, to this pcap file.
    pub capture: Option<std::path::PathBuf>,
    /// `--repeat N`: probes per Service cell, to see how kube-proxy spreads connections
    /// over the backends. 0 means "not asked": the scenario's `probe.repeat` then
    /// applies (one probe without it); any other number wins over the scenario's. Pod,
    /// node and host cells are probed once whatever this says.
    pub repeat: usize,
    /// `--trace FROM TO:PORT/PROTO`: after every step's probes, follow one more probe of
    /// this cell through the kernel's netfilter trace and tell its story.
    pub trace: Option<(Peer, Peer, PortProto)>,
    /// `--pause`: called before every step after the first with what the step will
    /// change; the run waits until it returns (the CLI waits for Enter).
    pub before_step: Option<StepHook>,
    /// Where the CNI plugin binaries are; the installed ones (`/usr/lib/cni`) when
    /// `None`. The fault tests point a run at a private copy they can break.
    pub cni_plugin_dir: Option<std::path::PathBuf>,
}

/// A callback run before a step (see [`RunOptions::before_step`]).
#[derive(Clone)]
pub struct StepHook(pub std::sync::Arc<dyn Fn(StepAhead) + Send + Sync>);

impl std::fmt::Debug for StepHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StepHook")
    }
}

/// What [`StepHook`] is told about the step ahead.
#[derive(Debug, Clone)]
pub struct StepAhead {
    /// 0-based position of the step.
    pub index: usize,
    pub name: String,
    /// Its changes in words ([`sim::report::changes::describe`]).
    pub changes: Vec<String>,
    /// The result of the step before it.
    pub previous: Option<sim::matrix::StepResult>,
}

pub(super) fn note(opts: &RunOptions, msg: impl FnOnce() -> String) {
    if opts.progress {
        progress::line(&msg());
    }
}

/// Runs a whole scenario. Tears the cluster down before returning unless `keep`.
pub async fn run(scenario: &Scenario, opts: &RunOptions) -> Result<RunReport> {
    // What the parser found worth saying first (kinds, namespaces, Pending pods,
    // cluster-wide policies mapped or overlapping).
    let mut notes = scenario.notes.clone();
    notes.extend(refuse_what_no_engine_runs(scenario)?);
    notes.extend(ipvs_preflight(scenario)?);
    userspace_preflight(scenario)?;
    let plan = Plan::new(&opts.prefix, &scenario.cluster)
        .with_context(|| format!("plan the cluster of {}", scenario.path.display()))?;
    let started = Instant::now();
    let _spinner = progress::start(opts);
    progress::stage(|| format!("building the fabric and {} node(s)", plan.nodes.len()));
    note(opts, || {
        format!(
            "building the fabric and {} node{} ({} network)",
            plan.nodes.len(),
            if plan.nodes.len() == 1 { "" } else { "s" },
            match scenario.cluster.network {
                sim::scenario::NetworkMode::HostGw => "host-gw",
                sim::scenario::NetworkMode::Vxlan => "vxlan",
            }
        )
    });
    let pod_cidr = plan.pod_cidr;
    let plugin_dir = opts
        .cni_plugin_dir
        .clone()
        .unwrap_or_else(|| crate::cni::CNI_PATH.into());
    let cluster = Cluster::create_with_plugins(plan, &plugin_dir)
        .await
        .context("build the fabric and the nodes")?;
    if !scenario.br_netfilter
        && let Err(e) = cluster.set_br_netfilter(false)
    {
        let td = cluster.teardown().await;
        return Err(e.context(format!(
            "cluster.brNetfilter: false{}",
            if td.errors.is_empty() {
                ""
            } else {
                " (and teardown failed)"
            }
        )));
    }
    let capture = match &opts.capture {
        Some(path) => match Capture::start(cluster.fabric_netns(), FABRIC_BRIDGE, path, pod_cidr) {
            Ok(c) => Some(c),
            Err(e) => {
                let td = cluster.teardown().await;
                return Err(e.context(format!(
                    "capture the fabric{}",
                    if td.errors.is_empty() {
                        ""
                    } else {
                        " (and teardown failed)"
                    }
                )));
            }
        },
        None => None,
    };
    let mut live = Live {
        cluster,
        objects: ClusterObjects::new(scenario.cluster.nodes.clone()),
        servers: BTreeMap::new(),
        host_network: BTreeMap::new(),
        host_servers: None,
        engine: policy::engine_for_scenario(scenario),
        // kube-proxy runs only when the scenario has Services: it would load nothing
        // but its empty chains otherwise, and every other scenario keeps its nodes (and
        // their snapshots) as they were.
        proxy: has_services(scenario).then(|| proxy::proxy_for(scenario.cluster.proxy)),
        down_nodes: BTreeSet::new(),
        dns: scenario.dns.map(crate::dns::ClusterDns::new),
        ingress: None,
    };
    let outcome = match start_host_servers(scenario, &live.cluster).await {
        Ok(servers) => {
            live.host_servers = servers;
            drive(scenario, opts, &mut live, started).await
        }
        Err(e) => Err(e),
    };
    // nginx ends (by its pid) before its pod's namespace goes; --keep leaves it serving
    // (`cargo xtask clean` ends it by its pid file).
    if let Some(c) = live.ingress.take() {
        if opts.keep { c.detach() } else { drop(c) }
    }
    let Live {
        cluster,
        dns,
        proxy,
        ..
    } = live;
    // Stop the service proxy's tasks (the userspace proxy's listeners) before teardown.
    drop(proxy);
    let dns_errors = finish_dns(dns, opts.keep && outcome.is_ok()).await;
    // Stop the capture before teardown: the teardown's own frames are of no interest.
    let captured = match capture {
        Some(c) => Some(c.finish().await),
        None => None,
    };
    let outcome = match (outcome, captured) {
        (Ok(mut report), Some(Ok(summary))) => {
            report.capture_summary = Some(summary.to_string());
            Ok(report)
        }
        (Ok(_), Some(Err(e))) => Err(e.context("summarise the fabric capture")),
        (outcome, _) => outcome,
    };
    match outcome {
        Ok(mut report) => {
            report.notes.extend(notes);
            if opts.keep {
                let left = kept(&cluster);
                if let Err(e) = crate::sweep::write_kept(&left.state(&scenario.name, &opts.prefix))
                {
                    report.notes.push(format!("{e:#}"));
                }
                report.kept = Some(left);
                cluster.keep();
            } else {
                let t = Instant::now();
                let td = cluster.teardown().await;
                report.timings.teardown_ms = ms(t.elapsed());
                report.teardown_errors = td.errors.to_strings();
            }
            report.teardown_errors.extend(dns_errors);
            Ok(report)
        }
        Err(e) => {
            let td = cluster.teardown().await;
            if td.errors.is_empty() {
                Err(e)
            } else {
                Err(e.context(format!(
                    "teardown afterwards also failed: {}",
                    td.errors.join("; ")
                )))
            }
        }
    }
}

pub(super) struct Live {
    cluster: Cluster,
    objects: ClusterObjects,
    servers: BTreeMap<PodRef, Servers>,
    /// The hostNetwork pods, with their node: they have no namespace of their own (their
    /// servers listen in the node's).
    host_network: BTreeMap<PodRef, String>,
    /// The servers of the external hosts that serve ports, started with the cluster.
    host_servers: Option<Servers>,
    engine: Box<dyn PolicyEngine>,
    /// The service proxy, when the scenario has Services.
    proxy: Option<Box<dyn ServiceProxy>>,
    /// Nodes whose underlay link is down now (`nodeDown`).
    down_nodes: BTreeSet<String>,
    /// The cluster DNS (`cluster.dns`): its server and the pods' resolv.conf files.
    dns: Option<crate::dns::ClusterDns>,
    /// The ingress controller's nginx, once a step has an Ingress.
    ingress: Option<crate::ingress::Controller>,
}

pub(super) fn kept(cluster: &Cluster) -> Kept {
    Kept {
        nodes: cluster
            .plan()
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.netns.clone()))
            .collect(),
        pods: cluster
            .pods()
            .map(|(p, h)| (p.clone(), h.netns.name().to_string(), h.ip))
            .collect(),
        others: {
            let plan = cluster.plan();
            let mut v = vec![("fabric".to_string(), plan.fabric_netns())];
            if let Some(r) = &plan.router {
                v.push(("router".into(), r.netns.clone()));
            }
            v.extend(
                plan.hosts
                    .iter()
                    .map(|h| (format!("host/{} ({})", h.name, h.address), h.netns.clone())),
            );
            v
        },
    }
}

pub(super) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

/// A fresh run prefix (`kl` + 6 characters) from the pid and the clock, so two runs at
/// once never share one.
pub fn new_prefix() -> String {
    // A counter too, so that two calls in the same process never collide (tests make
    // several clusters at once).
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let pid = std::process::id() as u64;
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    sim::plan::prefix_from_seed(
        nanos.wrapping_mul(6364136223846793005)
            ^ (pid << 20)
            ^ pid
            ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15),
    )
}
