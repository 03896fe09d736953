//! Running a scenario end to end: build the cluster, then for each step apply its changes
//! (pods through the CNI plugins, policies through the enforcer), probe, and compare what
//! was measured with what the scenario expects and what the oracle predicts. Teardown is
//! the caller's guarantee: [`run`] tears down on success and on error, and the caller
//! sweeps the run's prefix after a panic or Ctrl-C (see `netns::sweep::clean_prefix`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use sim::matrix::{Cell, StepResult, Verdict};
use sim::objects::{ClusterObjects, Kind, Object, PodRef, declared_ports, pod_ip, pod_node};
use sim::oracle::{OracleContext, predict};
use sim::plan::Plan;
use sim::protocol::PortProto;
use sim::scenario::{Change, Loopback, Peer, Scenario, Step};

use crate::netns::Netns;

use crate::cluster::Cluster;
use crate::policy::{self, PolicyEngine, SyncReport};
use crate::probe::{self, ProbeOptions, ProbeTask, ServerSpec, Servers};

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
}

/// Where one step's time went.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct StepTimings {
    /// From the start of the change until every node's rules were loaded.
    pub apply_ms: f64,
    /// Of that, the policy engine's sync (all nodes, in parallel).
    pub sync_ms: f64,
    /// Probe rounds of this step.
    pub probe_ms: f64,
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
    }
}

/// Runs a whole scenario. Tears the cluster down before returning unless `keep`.
pub async fn run(scenario: &Scenario, opts: &RunOptions) -> Result<RunReport> {
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
    let cluster = Cluster::create(plan)
        .await
        .context("build the fabric and the nodes")?;
    let mut live = Live {
        cluster,
        objects: ClusterObjects::new(scenario.cluster.nodes.clone()),
        servers: BTreeMap::new(),
        host_servers: None,
        engine: policy::engine_for(scenario.cluster.policy, scenario.cluster.deny),
    };
    let outcome = match start_host_servers(scenario, &live.cluster).await {
        Ok(servers) => {
            live.host_servers = servers;
            drive(scenario, opts, &mut live, started).await
        }
        Err(e) => Err(e),
    };
    let Live { cluster, .. } = live;
    match outcome {
        Ok(mut report) => {
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
        explanations: vec![],
        step_timings: vec![],
        rules: vec![],
    };
    let probe_opts = ProbeOptions {
        deadline: opts.deadline.unwrap_or(ProbeOptions::default().deadline),
        ..ProbeOptions::default()
    };
    for (i, step) in scenario.steps.iter().enumerate() {
        let changed_at = Instant::now();
        apply_step(step, live)
            .await
            .with_context(|| format!("step {:?}", step.name))?;
        let sync = sync_policies(live)
            .with_context(|| format!("step {:?}: enforce the policies", step.name))?;
        let applied_at = Instant::now();
        live.cluster
            .verify()
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
        let t = Instant::now();
        let mut rounds = 0;
        let (result, explained, enforce_ms) = loop {
            let (result, explained) =
                probe_step(scenario, step, live, &probe_opts, opts.explain.as_ref()).await?;
            rounds += 1;
            let agrees = result
                .cells
                .iter()
                .all(|c| c.measured.outcome.verdict() == c.oracle);
            if agrees {
                break (result, explained, Some(ms(changed_at.elapsed())));
            }
            if rounds >= ENFORCE_ROUNDS || changed_at.elapsed() > ENFORCE_PATIENCE {
                break (result, explained, None);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let probe_ms = ms(t.elapsed());
        report.timings.probe_ms += probe_ms;
        report.step_timings.push(StepTimings {
            apply_ms: ms(applied_at - changed_at),
            sync_ms: ms(sync.elapsed),
            probe_ms,
            rounds,
            enforce_ms,
        });
        report.rules.push(installed_rules(live)?);
        report.explanations.extend(explained);
        report.steps.push(result);
    }
    Ok(report)
}

/// How many probe rounds a step may take to see the oracle's verdicts everywhere, and for
/// how long, before what the last round saw is reported as the result.
const ENFORCE_ROUNDS: usize = 10;
const ENFORCE_PATIENCE: Duration = Duration::from_secs(2);

/// Brings the policy engine in line with the objects in every node.
fn sync_policies(live: &mut Live) -> Result<SyncReport> {
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
    // The engine runs short-lived tools; keep the async workers free meanwhile.
    tokio::task::block_in_place(|| {
        let report = live.engine.sync(&plan, &nodes, &live.objects)?;
        if report.changed() {
            policy::forget_flows(&nodes)?;
        }
        Ok(report)
    })
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
async fn apply_step(step: &Step, live: &mut Live) -> Result<()> {
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
        let placed: Vec<(PodRef, String)> = new_pods
            .iter()
            .map(|p| {
                let node = live
                    .objects
                    .pods
                    .get(p)
                    .and_then(pod_node)
                    .unwrap_or_default();
                (p.clone(), node.to_string())
            })
            .collect();
        let ips = live.cluster.add_pods(&placed).await?;
        for (pod, ip) in ips {
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
/// server declares (or `probe.ports`).
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
        _ => true,
    };
    let mut cells = Vec::new();
    for server in to.iter().filter(|p| exists(p)) {
        let ports = match &scenario.probe.ports {
            Some(p) => p.clone(),
            None => served_ports(scenario, objects, server),
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

/// What a server serves: a pod's declared container ports, a host's `serve` list.
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
    };
    ports.sort();
    ports.dedup();
    ports
}

/// The address and namespace of a probe end.
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
    }
}

async fn probe_step(
    scenario: &Scenario,
    step: &Step,
    live: &Live,
    opts: &ProbeOptions,
    explain: Option<&(Peer, Peer, PortProto)>,
) -> Result<(StepResult, Option<Explained>)> {
    let mut keys = cells_of(scenario, &live.objects);
    let extra = explain.filter(|k| !keys.contains(k)).cloned();
    if let Some(k) = &extra {
        keys.push(k.clone());
    }
    let mut tasks = Vec::with_capacity(keys.len());
    let mut client_ips = Vec::with_capacity(keys.len());
    for (from, to, port) in &keys {
        let (client, mut client_ip) = endpoint(live, from)?;
        let (_, dst) = endpoint(live, to)?;
        if let Peer::Node(n) = from {
            // A node talks to its own pods from its bridge address (the route to its pod
            // subnet is on cni0) and to everything else from its underlay address.
            if let Some(node) = live.cluster.plan().node(n)
                && node.pod_subnet.contains(&dst)
            {
                client_ip = node.gateway;
            }
        }
        client_ips.push(client_ip);
        tasks.push(ProbeTask {
            client,
            dst,
            port: *port,
            expect_answer_from: Some(to.to_string()),
        });
    }
    let measured = probe::run_probes(&tasks, opts).await;
    let plan = live.cluster.plan();
    let node_addresses: BTreeMap<String, Ipv4Addr> = plan
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.underlay_ip))
        .collect();
    let host_addresses: BTreeMap<String, Ipv4Addr> = plan
        .hosts
        .iter()
        .map(|h| (h.name.clone(), h.address))
        .collect();
    let oracle = OracleContext::new(&live.objects, scenario.cluster.policy, &node_addresses)
        .with_hosts(host_addresses);
    let mut cells: Vec<Cell> = keys
        .into_iter()
        .zip(measured)
        .zip(client_ips)
        .map(|(((from, to, port), measured), client_ip)| {
            let is_self = matches!(&from, Peer::Pod(_)) && from == to;
            let expected = step
                .expect
                .as_ref()
                .and_then(|e| e.lookup(&from, &to, port))
                .map(Verdict::from_allowed);
            let prediction = predict(&oracle, &from, &to, port);
            Cell {
                client_ip: Some(client_ip),
                asserted: !is_self || scenario.loopback == Loopback::Check,
                from,
                to,
                port,
                expected,
                measured,
                oracle: Some(prediction.verdict),
                reason: Some(prediction.short()),
            }
        })
        .collect();
    let explained = explain.map(|(from, to, port)| {
        let text = predict(&oracle, from, to, *port).reason.to_string();
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
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let pid = std::process::id() as u64;
    sim::plan::prefix_from_seed(nanos.wrapping_mul(6364136223846793005) ^ (pid << 20) ^ pid)
}
