//! Running a scenario end to end: build the cluster, then for each step apply its changes
//! (pods through the CNI plugins, Services through the service proxy, policies through
//! the enforcer), probe, and compare what was measured with what the scenario expects and
//! what the oracle predicts. Teardown is
//! the caller's guarantee: [`run`] tears down on success and on error, and the caller
//! sweeps the run's prefix after a panic or Ctrl-C (see `netns::sweep::clean_prefix`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use sim::matrix::{Cell, Measurement, Outcome, ServiceCell, Spread, StepResult, Verdict};
use sim::objects::{ClusterObjects, Kind, Object, PodRef, declared_ports, pod_ip, pod_node};
use sim::oracle::{OracleContext, ServicePrediction, predict, predict_service};
use sim::plan::Plan;
use sim::protocol::PortProto;
use sim::scenario::{Change, Loopback, Peer, Scenario, Step};

use crate::netns::Netns;

use crate::capture::Capture;
use crate::cluster::{AddOptions, NewPod};
use crate::cluster::{Cluster, FABRIC_BRIDGE};
use crate::policy::{self, PolicyEngine, SyncReport};
use crate::probe::throughput::{self, ThroughputCheck, ThroughputOptions};
use crate::probe::{self, ProbeOptions, ProbeTask, ServerSpec, Servers};
use crate::proxy::{self, ProxySyncReport, ServiceProxy};

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
    /// `--repeat N`: probes per Service cell (0 and 1 both mean one), to see how
    /// kube-proxy spreads connections over the backends. Pod and host cells are probed
    /// once whatever this says.
    pub repeat: usize,
}

fn note(opts: &RunOptions, msg: impl FnOnce() -> String) {
    if opts.progress {
        eprintln!("  {}", msg());
    }
}

/// Wall-clock times of a run.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Timings {
    pub bring_up_ms: f64,
    pub probe_ms: f64,
    pub teardown_ms: f64,
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub scenario: String,
    pub prefix: String,
    pub steps: Vec<StepResult>,
    pub timings: Timings,
    /// Normalised description of what was built (after the first step), for snapshots.
    pub built: String,
    /// Problems during teardown (the run's verdict still stands, but they are shown).
    pub teardown_errors: Vec<String>,
    /// Names of what was left up with `--keep`.
    pub kept: Option<Kept>,
    /// For `--explain`: per step, the oracle's full reasoning and the measured cell.
    pub explanations: Vec<Explained>,
    /// Per step: how long applying, syncing and probing took, and the time to enforce.
    pub step_timings: Vec<StepTimings>,
    /// Per step, per node: the enforcer's rules as installed (normalised).
    pub rules: Vec<Vec<(String, String)>>,
    /// What the CNI chain did besides wiring (CHECK, notes on known plugin bugs).
    pub cni: CniReport,
    /// Per step: the scenario's `throughput:` checks measured in it.
    pub throughput: Vec<Vec<ThroughputCheck>>,
    /// With [`RunOptions::capture`]: what was on the wire (see [`crate::capture`]).
    pub capture_summary: Option<String>,
    /// Per step, per node: the service proxy's rules as installed (normalised, as
    /// `iptables-save` prints kube-proxy's part); empty when the scenario has no Services
    /// (then no proxy runs).
    pub proxy_rules: Vec<Vec<(String, String)>>,
    /// Things the run did not do or only partly did, in words (for example Service types
    /// whose rules are installed but cannot be probed yet).
    pub notes: Vec<String>,
}

/// Where one step's time went.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct StepTimings {
    /// From the start of the change until every node's rules were loaded.
    pub apply_ms: f64,
    /// Of that, the policy engine's sync (all nodes, in parallel).
    pub sync_ms: f64,
    /// Of that, the service proxy's sync (all nodes, in parallel; 0 without Services).
    pub proxy_sync_ms: f64,
    /// What the service proxy wrote: nodes written to, and the restore text's size
    /// summed over them (a partial sync writes only the Services that changed).
    pub proxy_nodes_written: usize,
    pub proxy_restore_bytes: usize,
    /// Probe rounds of this step.
    pub probe_ms: f64,
    /// The first round alone: every cell of the step measured once.
    pub first_round_ms: f64,
    pub rounds: usize,
    /// From the start of the change to the end of the first probe round in which every
    /// cell showed the oracle's verdict: knetlab's "time to enforce". `None` if no round
    /// agreed.
    pub enforce_ms: Option<f64>,
}

/// The oracle's walkthrough for one cell in one step, with what was measured.
#[derive(Debug, Clone)]
pub struct Explained {
    pub step: String,
    pub text: String,
    pub cell: Option<Cell>,
}

/// What `--keep` left behind and how to get in.
#[derive(Debug, Clone)]
pub struct Kept {
    pub nodes: Vec<(String, String)>,
    pub pods: Vec<(PodRef, String, Ipv4Addr)>,
    /// The fabric, the router and the external hosts: (what, namespace).
    pub others: Vec<(String, String)>,
}

impl RunReport {
    pub fn ok(&self) -> bool {
        self.steps.iter().all(StepResult::ok)
            && self.throughput.iter().flatten().all(ThroughputCheck::ok)
    }
}

/// The CNI chain beyond addresses: CHECK after every ADD round, and notes.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CniReport {
    /// Attachments CHECKed (two per pod) and the time CHECK took, over all steps.
    pub checked: usize,
    pub check_ms: f64,
    /// Known plugin bugs CHECK stepped over (one line per plugin and issue), networks
    /// not checked, and pod settings the chain ignores.
    pub notes: Vec<String>,
}

/// Runs a whole scenario. Tears the cluster down before returning unless `keep`.
pub async fn run(scenario: &Scenario, opts: &RunOptions) -> Result<RunReport> {
    let notes = refuse_what_no_engine_runs(scenario)?;
    let plan = Plan::new(&opts.prefix, &scenario.cluster)
        .with_context(|| format!("plan the cluster of {}", scenario.path.display()))?;
    let started = Instant::now();
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
    let cluster = Cluster::create(plan)
        .await
        .context("build the fabric and the nodes")?;
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
        host_servers: None,
        engine: policy::engine_for(scenario.cluster.policy, scenario.cluster.deny),
        // kube-proxy runs only when the scenario has Services: it would load nothing
        // but its empty chains otherwise, and every other scenario keeps its nodes (and
        // their snapshots) as they were.
        proxy: has_services(scenario).then(|| proxy::proxy_for(scenario.cluster.proxy)),
        down_nodes: BTreeSet::new(),
    };
    let outcome = match start_host_servers(scenario, &live.cluster).await {
        Ok(servers) => {
            live.host_servers = servers;
            drive(scenario, opts, &mut live, started).await
        }
        Err(e) => Err(e),
    };
    let Live { cluster, .. } = live;
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
                report.kept = Some(kept(&cluster));
                cluster.keep();
            } else {
                let t = Instant::now();
                let td = cluster.teardown().await;
                report.timings.teardown_ms = ms(t.elapsed());
                report.teardown_errors = td.errors;
            }
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

struct Live {
    cluster: Cluster,
    objects: ClusterObjects,
    servers: BTreeMap<PodRef, Servers>,
    /// The servers of the external hosts that serve ports, started with the cluster.
    host_servers: Option<Servers>,
    engine: Box<dyn PolicyEngine>,
    /// The service proxy, when the scenario has Services.
    proxy: Option<Box<dyn ServiceProxy>>,
    /// Nodes whose underlay link is down now (`nodeDown`).
    down_nodes: BTreeSet<String>,
}

/// Takes down the underlay link of the nodes the step wants down and brings back the
/// others that are down (see [`Cluster::set_node_underlay`]). Returns whether a node
/// came back.
async fn set_node_links(step: &Step, live: &mut Live) -> Result<bool> {
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

async fn drive(
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
        cni: CniReport {
            notes: crate::cni::capabilities::unused_settings(scenario),
            ..CniReport::default()
        },
        throughput: vec![],
    };
    let probe_opts = ProbeOptions {
        deadline: opts.deadline.unwrap_or(ProbeOptions::default().deadline),
        ..ProbeOptions::default()
    };
    for (i, step) in scenario.steps.iter().enumerate() {
        let changed_at = Instant::now();
        apply_step(scenario, step, live, &mut report.cni)
            .await
            .with_context(|| format!("step {:?}", step.name))?;
        let node_back = set_node_links(step, live)
            .await
            .with_context(|| format!("step {:?}: take nodes down or bring them back", step.name))?;
        let (proxied, sync) = sync_rules(live)
            .with_context(|| format!("step {:?}: load the proxy and policy rules", step.name))?;
        let applied_at = Instant::now();
        live.cluster
            .verify_with_down(&live.down_nodes)
            .await
            .map_err(|fault| anyhow!("infrastructure fault (not a policy result): {fault}"))?;
        if i == 0 {
            report.timings.bring_up_ms = ms(started.elapsed());
            report.built = live.cluster.describe().await?;
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
            let (fresh, fresh_explained) = probe_step(
                scenario,
                step,
                live,
                &round_opts,
                opts.explain.as_ref(),
                opts.repeat.max(1),
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
                    for cell in fresh.cells {
                        let same = |c: &Cell| {
                            c.from == cell.from && c.to == cell.to && c.port == cell.port
                        };
                        if let Some(e) = explained.as_mut().and_then(|e| e.cell.as_mut())
                            && same(e)
                        {
                            *e = cell.clone();
                        }
                        if let Some(old) = all.cells.iter_mut().find(|c| same(c)) {
                            *old = cell;
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
            if rounds >= max_rounds || changed_at.elapsed() > patience {
                break (result, explained, None);
            }
            so_far = Some((result, explained));
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
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
        report.rules.push(installed_rules(live)?);
        report.proxy_rules.push(installed_proxy_rules(live)?);
        report.explanations.extend(explained);
        report.steps.push(result);
        report
            .throughput
            .push(measure_throughput(scenario, live).await);
    }
    Ok(report)
}

/// Measures the scenario's `throughput:` entries whose pods both exist now, one after
/// the other (two at once would share the CPU and the link).
async fn measure_throughput(scenario: &Scenario, live: &Live) -> Vec<ThroughputCheck> {
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

/// What this slice of the service proxy cannot do yet, said before anything is built
/// rather than ignored: a probe from a host outside the cluster to a cluster IP (not
/// routed outside the nodes; external clients come with NodePorts and load balancers) is
/// refused. Services whose NodePorts, load-balancer or external IPs the scenario cannot
/// probe yet run anyway (their rules are installed and their cluster IP works); the
/// returned notes say so.
fn refuse_what_no_engine_runs(scenario: &Scenario) -> Result<Vec<String>> {
    let from: &[Peer] = scenario.probe.from.as_deref().unwrap_or_default();
    let to: &[Peer] = scenario.probe.to.as_deref().unwrap_or_default();
    if let (Some(host), Some(svc)) = (
        from.iter().find(|p| matches!(p, Peer::Host(_))),
        to.iter().find(|p| p.is_service()),
    ) {
        anyhow::bail!(
            "{}: probe.from has {host} and probe.to has {svc}: a cluster IP is only routed \
             inside the cluster's nodes, so a host outside it cannot reach one (outside \
             clients use NodePorts and load-balancer addresses, which knetlab cannot probe \
             yet); list the host's probes in another scenario",
            scenario.path.display()
        );
    }
    let mut notes = std::collections::BTreeSet::new();
    for step in &scenario.steps {
        for change in &step.changes {
            let Change::Apply(raw) = change else { continue };
            if raw.kind != Kind::Service {
                continue;
            }
            let spec = raw.value.get("spec");
            let ty = spec
                .and_then(|s| s.get("type"))
                .and_then(|t| t.as_str())
                .unwrap_or("ClusterIP");
            let external_ips = spec
                .and_then(|s| s.get("externalIPs"))
                .and_then(|v| v.as_array())
                .is_some_and(|a| !a.is_empty());
            let what = match (ty, external_ips) {
                ("NodePort" | "LoadBalancer", true) => format!("type {ty} with externalIPs"),
                ("NodePort" | "LoadBalancer", false) => format!("type {ty}"),
                (_, true) => "externalIPs".to_string(),
                _ => continue,
            };
            notes.insert(format!(
                "Service {}/{} has {what}: kube-proxy's rules for it are installed, but only \
                 its cluster IP is probed (node ports, load-balancer and external IPs cannot \
                 be probed yet)",
                raw.key.0, raw.key.1
            ));
        }
    }
    Ok(notes.into_iter().collect())
}

/// Whether any step of the scenario creates a Service or an Endpoints object.
fn has_services(scenario: &Scenario) -> bool {
    scenario.steps.iter().flat_map(|s| &s.changes).any(
        |c| matches!(c, Change::Apply(raw) if matches!(raw.kind, Kind::Service | Kind::Endpoints)),
    )
}

/// One cell: client, server, port.
type CellId = (Peer, Peer, PortProto);

/// The deadline for measuring a disagreeing cell again (a probe that was merely slow on a
/// busy machine answers well within it; a real drop costs this much once per round).
const RETRY_DEADLINE: Duration = Duration::from_millis(500);

/// How many probe rounds a step may take to see the oracle's verdicts everywhere, and for
/// how long, before what the last round saw is reported as the result.
const ENFORCE_ROUNDS: usize = 10;
const ENFORCE_PATIENCE: Duration = Duration::from_secs(2);

/// How long a step that brings a node's underlay link back may take to see every cell
/// as predicted. Measured: 0.8-0.93 s after `nodeUp` (host-gw and vxlan alike), 7-8
/// probe rounds of 100 ms. The figures fit this account (not traced further): losing
/// carrier made the node forget its neighbours, its ARP requests for the other nodes
/// went nowhere while the link was down, and the pending request is retried once a
/// second (`retrans_time_ms`), about 1 s after the first lost probe of the down step.
const NODE_BACK_PATIENCE: Duration = Duration::from_secs(4);

/// Brings the service proxy (when there is one) and then the policy engine in line with
/// the objects in every node, and forgets the nodes' tracked flows if either changed
/// anything. The proxy goes first so that the policy engine's jumps end up above
/// kube-proxy's in the built-in chains (see [`crate::proxy`]).
fn sync_rules(live: &mut Live) -> Result<(Option<ProxySyncReport>, SyncReport)> {
    let nodes: Vec<(String, Netns)> = live
        .cluster
        .plan()
        .nodes
        .iter()
        .filter_map(|n| {
            live.cluster
                .node_netns(&n.name)
                .map(|ns| (n.name.clone(), ns.clone()))
        })
        .collect();
    let plan = live.cluster.plan().clone();
    // The engines run short-lived tools; keep the async workers free meanwhile.
    tokio::task::block_in_place(|| {
        let proxied = match live.proxy.as_mut() {
            Some(p) => Some(
                p.sync(&plan, &nodes, &live.objects)
                    .context("run the Services through the service proxy")?,
            ),
            None => None,
        };
        let report = live
            .engine
            .sync(&plan, &nodes, &live.objects)
            .context("enforce the policies")?;
        if report.changed() || proxied.as_ref().is_some_and(ProxySyncReport::changed) {
            policy::forget_flows(&nodes)?;
        }
        Ok((proxied, report))
    })
}

/// The service proxy's rules as installed in each node now (normalised, for
/// snapshots); empty without a proxy.
fn installed_proxy_rules(live: &Live) -> Result<Vec<(String, String)>> {
    let Some(proxy) = &live.proxy else {
        return Ok(vec![]);
    };
    let mut out = Vec::new();
    for n in &live.cluster.plan().nodes {
        if let Some(ns) = live.cluster.node_netns(&n.name) {
            let text = tokio::task::block_in_place(|| proxy.installed(ns)).with_context(|| {
                format!(
                    "read the service proxy's rules installed in node {}",
                    n.name
                )
            })?;
            out.push((n.name.clone(), text));
        }
    }
    Ok(out)
}

/// The enforcer's rules as installed in each node now (normalised, for snapshots).
fn installed_rules(live: &Live) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for n in &live.cluster.plan().nodes {
        if let Some(ns) = live.cluster.node_netns(&n.name) {
            let text = tokio::task::block_in_place(|| live.engine.installed(ns))
                .with_context(|| format!("read the rules installed in node {}", n.name))?;
            out.push((n.name.clone(), text));
        }
    }
    Ok(out)
}

/// Applies one step's changes: namespaces and pods first (pods need their IPs before
/// anything may refer to them), then deletions, labels and the other objects.
async fn apply_step(
    scenario: &Scenario,
    step: &Step,
    live: &mut Live,
    cni: &mut CniReport,
) -> Result<()> {
    let mut later = Vec::new();
    let mut new_pods = Vec::new();
    for change in &step.changes {
        match change {
            Change::Apply(raw) if matches!(raw.kind, Kind::Namespace | Kind::Pod) => {
                let obj = raw.decode(&|p| ip_of(&live.objects, p))?;
                if let Object::Pod(_) = &obj {
                    let (ns, name) = obj.key();
                    let key = PodRef::new(ns, name);
                    if !live.objects.pods.contains_key(&key) {
                        new_pods.push(key);
                    }
                }
                live.objects.apply(obj);
            }
            other => later.push(other),
        }
    }
    if !new_pods.is_empty() {
        let mut placed = Vec::with_capacity(new_pods.len());
        for p in &new_pods {
            let obj = live.objects.pods.get(p);
            // What the runtime passes the chain: host ports and bandwidth limits.
            let capability_args = match obj {
                Some(o) => {
                    crate::cni::capabilities::capability_args(o, scenario.cluster.cni.burst)?
                }
                None => Default::default(),
            };
            placed.push(NewPod {
                pod: p.clone(),
                node: obj.and_then(pod_node).unwrap_or_default().to_string(),
                capability_args,
            });
        }
        let check = scenario.cluster.cni.check.unwrap_or(DEFAULT_CNI_CHECK);
        let added = live
            .cluster
            .add_pods_with(&placed, AddOptions { check })
            .await?;
        if let Some(c) = &added.check {
            cni.checked += c.attachments;
            cni.check_ms += ms(c.elapsed);
            cni.notes.extend(c.lines());
        }
        for (pod, ip) in added.ips {
            live.objects.set_pod_ip(&pod, ip);
        }
        start_servers(live, &new_pods).await?;
    }
    // Every pod of this step has its address by now.
    let ips: BTreeMap<PodRef, Ipv4Addr> = live
        .objects
        .pods
        .iter()
        .filter_map(|(p, pod)| pod_ip(pod).map(|ip| (p.clone(), ip)))
        .collect();
    for change in later {
        change.apply_to(&mut live.objects, &|p| ips.get(p).copied())?;
    }
    // Pods that were deleted, directly or with their namespace, leave the cluster.
    let mut gone: Vec<PodRef> = live
        .cluster
        .pods()
        .map(|(p, _)| p.clone())
        .filter(|p| !live.objects.pods.contains_key(p))
        .collect();
    gone.sort();
    gone.dedup();
    if !gone.is_empty() {
        for p in &gone {
            live.servers.remove(p);
        }
        live.cluster.remove_pods(&gone).await?;
    }
    Ok(())
}

fn ip_of(objects: &ClusterObjects, pod: &PodRef) -> Option<Ipv4Addr> {
    objects.pods.get(pod).and_then(pod_ip)
}

async fn start_servers(live: &mut Live, pods: &[PodRef]) -> Result<()> {
    for pod in pods {
        let handle = live
            .cluster
            .pod(pod)
            .ok_or_else(|| anyhow!("pod {pod} has no namespace"))?;
        let ports = live
            .objects
            .pods
            .get(pod)
            .map(|p| declared_ports(p).into_iter().map(|d| d.port).collect())
            .unwrap_or_default();
        let spec = ServerSpec {
            name: pod.to_string(),
            netns: handle.netns.clone(),
            ports,
        };
        let servers = probe::start_servers(vec![spec])
            .await
            .with_context(|| format!("start the servers of pod {pod}"))?;
        live.servers.insert(pod.clone(), servers);
    }
    Ok(())
}

/// Starts a server in every external host that serves ports (`cluster.externalHosts[].
/// serve`), answering as `host/NAME` like a pod answers with its `ns/name`.
async fn start_host_servers(scenario: &Scenario, cluster: &Cluster) -> Result<Option<Servers>> {
    let mut specs = Vec::new();
    for host in scenario
        .cluster
        .external_hosts
        .iter()
        .filter(|h| !h.serve.is_empty())
    {
        let (netns, _) = cluster
            .host(&host.name)
            .ok_or_else(|| anyhow!("host {} has no namespace", host.name))?;
        specs.push(ServerSpec {
            name: Peer::Host(host.name.clone()).to_string(),
            netns,
            ports: host.serve.clone(),
        });
    }
    if specs.is_empty() {
        return Ok(None);
    }
    probe::start_servers(specs)
        .await
        .map(Some)
        .context("start the servers of the external hosts")
}

/// The cells a step measures, in a stable order: clients × servers × the ports each
/// server declares (or `probe.ports`). A Service target `svc/NS/NAME:PORT` is probed on
/// its own port, once per protocol the Service has on that number (`probe.ports` lists
/// the pods' ports and does not apply to it); one that does not exist at this step, or
/// has no such port now, is left out like a pod that does not exist yet.
fn cells_of(scenario: &Scenario, objects: &ClusterObjects) -> Vec<(Peer, Peer, PortProto)> {
    let pods: Vec<PodRef> = objects.pods.keys().cloned().collect();
    let from: Vec<Peer> = match &scenario.probe.from {
        Some(f) => f.clone(),
        None => pods.iter().cloned().map(Peer::Pod).collect(),
    };
    let to: Vec<Peer> = match &scenario.probe.to {
        Some(t) => t.clone(),
        None => pods.iter().cloned().map(Peer::Pod).collect(),
    };
    let exists = |p: &Peer| match p {
        Peer::Pod(pod) => objects.pods.contains_key(pod),
        Peer::Service { .. } => !served_ports(scenario, objects, p).is_empty(),
        _ => true,
    };
    let mut cells = Vec::new();
    for server in to.iter().filter(|p| exists(p)) {
        let ports = match (&scenario.probe.ports, server) {
            (Some(p), s) if !s.is_service() => p.clone(),
            _ => served_ports(scenario, objects, server),
        };
        for client in from.iter().filter(|p| exists(p)) {
            for port in &ports {
                cells.push((client.clone(), server.clone(), *port));
            }
        }
    }
    cells.sort();
    cells
}

/// What a server serves: a pod's declared container ports, a host's `serve` list, a
/// Service's ports numbered like the target (none when it is headless: no virtual IP).
fn served_ports(scenario: &Scenario, objects: &ClusterObjects, server: &Peer) -> Vec<PortProto> {
    let mut ports: Vec<PortProto> = match server {
        Peer::Pod(p) => objects
            .pods
            .get(p)
            .map(|pod| declared_ports(pod).into_iter().map(|d| d.port).collect())
            .unwrap_or_default(),
        Peer::Host(h) => scenario
            .cluster
            .external_hosts
            .iter()
            .find(|x| x.name == *h)
            .map(|x| x.serve.clone())
            .unwrap_or_default(),
        Peer::Node(_) => vec![],
        Peer::Service {
            namespace,
            name,
            port,
        } => match service_ip(objects, namespace, name) {
            Some(_) => sim::services::probe_ports(objects, namespace, name, *port),
            None => vec![],
        },
    };
    ports.sort();
    ports.dedup();
    ports
}

/// A Service's cluster IP (`None` when it does not exist or is headless).
fn service_ip(objects: &ClusterObjects, namespace: &str, name: &str) -> Option<Ipv4Addr> {
    objects
        .services
        .get(&(namespace.to_string(), name.to_string()))
        .and_then(sim::services::cluster_ip)
}

/// The address and namespace of a probe end (a Service has no namespace: it is only a
/// server, reached at its cluster IP, see [`probe_step`]).
fn endpoint(live: &Live, peer: &Peer) -> Result<(Netns, Ipv4Addr)> {
    match peer {
        Peer::Pod(p) => {
            let h = live
                .cluster
                .pod(p)
                .ok_or_else(|| anyhow!("pod {p} is not running"))?;
            Ok((h.netns.clone(), h.ip))
        }
        Peer::Node(n) => {
            let ns = live
                .cluster
                .node_netns(n)
                .ok_or_else(|| anyhow!("node {n} does not exist"))?;
            let ip = live
                .cluster
                .plan()
                .node(n)
                .map(|n| n.underlay_ip)
                .ok_or_else(|| anyhow!("node {n} has no address"))?;
            Ok((ns.clone(), ip))
        }
        Peer::Host(h) => live
            .cluster
            .host(h)
            .ok_or_else(|| anyhow!("host {h} does not exist")),
        Peer::Service { .. } => Err(anyhow!("{peer} is a Service: it cannot be a client")),
    }
}

/// What the oracle says of one cell, in the two shapes it comes in.
enum Said {
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

fn oracle_says(oracle: &OracleContext, from: &Peer, to: &Peer, port: PortProto) -> Said {
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
async fn probe_step(
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

fn no_probe() -> Measurement {
    probe::outcome::measurement(Outcome::Error, "probe never ran", Duration::ZERO)
}

/// A Service cell from its probes: the spread, the backends with the oracle's verdict
/// for each, and as `measured` the first probe that disagrees with the oracle (an
/// error, an answer from a backend it denies, a failure where every backend allows, an
/// answer where none does), else the first probe.
fn service_cell(
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

fn kept(cluster: &Cluster) -> Kept {
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

fn ms(d: Duration) -> f64 {
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
