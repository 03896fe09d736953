//! Every scenario's expectations against the oracle, without root: each
//! `scenarios/*.yaml` is loaded, its steps are replayed on [`ClusterObjects`] the way the
//! harness applies them (with the pod addresses host-local will hand out), and every
//! cell a step's `expect` asserts is compared with [`oracle::predict`]. A disagreement is
//! either a wrong expectation or an oracle bug; both are printed with the oracle's
//! reasoning, so the author can tell which.
//!
//! Addresses: host-local gives the pods of node i (1-based) `.2`, `.3`, ... of
//! `10.244.i.0/24` (the plan's subnet of that node) in the order they are wired on that
//! node, and never hands an address out twice in a run (it moves on from the last one it
//! gave), so a deleted pod's address is not reused. The harness wires the pods a step
//! creates in one batch, on each node sorted by namespace and name
//! (`Cluster::add_pods`), before it decodes the step's other manifests.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use sim::matrix::Verdict;
use sim::objects::{self, ClusterObjects, PodRef};
use sim::oracle::{self, OracleContext};
use sim::plan::{self, Plan};
use sim::protocol::PortProto;
use sim::scenario::{self, Change, Expectation, Loopback, Peer, Scenario, Step};

fn scenario_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// The cluster's objects as the harness will have them after each step, with the pod
/// addresses host-local hands out.
struct Replay {
    objects: ClusterObjects,
    /// Node name → (its pod subnet's network address, the next host number to give).
    next_ip: BTreeMap<String, (Ipv4Addr, u32)>,
    node_addresses: BTreeMap<String, Ipv4Addr>,
    /// The address plan, grown as nodes join (`nodeJoin`).
    plan: Plan,
}

impl Replay {
    fn new(sc: &Scenario) -> Result<Self, String> {
        let plan = Plan::new(&plan::prefix_from_seed(0), &sc.cluster).map_err(|e| e.to_string())?;
        Ok(Self {
            plan: plan.clone(),
            objects: ClusterObjects::new(sc.cluster.nodes.clone()),
            next_ip: plan
                .nodes
                .iter()
                .map(|n| (n.name.clone(), (n.pod_subnet.network(), 2)))
                .collect(),
            node_addresses: plan
                .nodes
                .iter()
                .map(|n| (n.name.clone(), n.underlay_ip))
                .collect(),
        })
    }

    fn apply_step(&mut self, step: &Step) -> Result<(), String> {
        // Nodes joining in this step exist before its changes, as the harness does it.
        for name in &step.joined_nodes {
            let n = self.plan.join_node(name).map_err(|e| e.to_string())?;
            self.next_ip
                .insert(n.name.clone(), (n.pod_subnet.network(), 2));
            self.node_addresses.insert(n.name.clone(), n.underlay_ip);
            self.objects.nodes.push(name.clone());
        }
        // Pods created in this step, waiting for their addresses.
        let mut new_pods: Vec<PodRef> = Vec::new();
        for change in &step.changes {
            match change {
                Change::Apply(raw) if raw.kind == objects::Kind::Pod => {
                    let object = raw.decode(&|_: &PodRef| None).map_err(|e| e.to_string())?;
                    self.objects.apply(object);
                    let pod = PodRef::new(&raw.key.0, &raw.key.1);
                    if objects::pod_ip(&self.objects.pods[&pod]).is_none() {
                        new_pods.push(pod);
                    }
                }
                other => {
                    // `${ip:..}` needs the addresses of the pods made so far.
                    self.assign_ips(&mut new_pods)?;
                    let before = self.objects.clone();
                    other
                        .apply_to(&mut self.objects, &|p: &PodRef| {
                            before.pods.get(p).and_then(objects::pod_ip)
                        })
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        self.assign_ips(&mut new_pods)
    }

    /// What `node/NAME` targets need, as the harness gives it: portmap's settings and the
    /// nodes' underlay and bridge addresses.
    fn host_ports(&self, sc: &Scenario) -> oracle::HostPorts {
        let plan = Plan::new(&plan::prefix_from_seed(0), &sc.cluster).expect("checked");
        oracle::HostPorts {
            portmap: oracle::Portmap::of(&sc.cluster.cni),
            nodes: plan
                .nodes
                .iter()
                .map(|n| {
                    let addresses = oracle::NodeAddresses {
                        underlay: n.underlay_ip,
                        bridge: n.gateway,
                    };
                    (n.name.clone(), addresses)
                })
                .collect(),
        }
    }

    /// Gives the waiting pods their addresses as `harness::cluster::Cluster::add_pods`
    /// wires them: per node, sorted by namespace and name.
    fn assign_ips(&mut self, new_pods: &mut Vec<PodRef>) -> Result<(), String> {
        new_pods.sort();
        for pod in new_pods.drain(..) {
            let Some(stored) = self.objects.pods.get(&pod) else {
                continue; // deleted again in the same step
            };
            let node = objects::pod_node(stored)
                .ok_or_else(|| format!("pod {pod} was not bound to a node"))?
                .to_string();
            // A hostNetwork pod gets no address from host-local: it has its node's.
            if objects::host_network(stored) {
                let ip = self
                    .plan
                    .node(&node)
                    .ok_or_else(|| format!("pod {pod} is on unknown node {node}"))?
                    .underlay_ip;
                self.objects.set_pod_ip(&pod, ip);
                continue;
            }
            let (base, next) = self
                .next_ip
                .get_mut(&node)
                .ok_or_else(|| format!("pod {pod} is on unknown node {node}"))?;
            let ip = Ipv4Addr::from(u32::from(*base) + *next);
            *next += 1;
            self.objects.set_pod_ip(&pod, ip);
        }
        Ok(())
    }
}

/// The cells a step probes, as `harness::run` chooses them: every client (the
/// `probe.from` list, or every pod) to every server (`probe.to`, or every pod) on the
/// `probe.ports` list, or else on every port the server has (a pod's declared container
/// ports, an external host's `serve` list). Pods that do not exist at this step are left
/// out.
fn probe_cells(sc: &Scenario, objects: &ClusterObjects) -> Vec<(Peer, Peer, PortProto)> {
    let exists = |p: &Peer| match p {
        Peer::Pod(p) => objects.pods.contains_key(p),
        // A node that joins in a later step is not there yet.
        Peer::Node(n) => objects.nodes.contains(n),
        Peer::Host(_) => true,
        Peer::Service {
            namespace,
            name,
            port,
        } => !sim::services::probe_ports(objects, namespace, name, *port).is_empty(),
        Peer::Dns { .. } => true,
        // `nodeport/`, `lb/`, `extip/`: while some Service offers it.
        Peer::NodePort { .. } | Peer::LoadBalancer { .. } | Peer::ExternalIp { .. } => {
            oracle::resolve_target(objects, p).is_ok()
        }
    };
    // The cluster DNS pod is in no default set (it serves DNS, not probes).
    let pods: Vec<Peer> = objects
        .pods
        .keys()
        .filter(|p| sc.dns.is_none() || !sim::dns::is_dns_pod(p))
        .cloned()
        .map(Peer::Pod)
        .collect();
    let clients: Vec<Peer> = match &sc.probe.from {
        Some(list) => list.iter().filter(|p| exists(p)).cloned().collect(),
        None => pods.clone(),
    };
    let mut servers: Vec<Peer> = match &sc.probe.to {
        Some(list) => list.iter().filter(|p| exists(p)).cloned().collect(),
        None => pods,
    };
    if sc.probe.services {
        let dns = (sim::dns::NAMESPACE, sim::dns::SERVICE_NAME);
        let targets =
            sim::services::targets::cluster_ip_targets(objects, sc.dns.is_some().then_some(dns));
        servers.extend(targets.into_iter().filter(|p| exists(p)));
    }
    let mut cells = Vec::new();
    for to in &servers {
        let served = served_ports(sc, objects, to);
        // `probe.ports` is probed on every server as given (as the harness does).
        let mut ports: Vec<PortProto> = sc.probe.ports.clone().unwrap_or(served);
        ports.sort();
        ports.dedup();
        for from in &clients {
            let ports = match (to, &sc.dns) {
                (Peer::Dns { name, port }, Some(dns)) => {
                    sim::oracle::dns::probe_ports(objects, dns, from, name, *port)
                }
                _ => ports.clone(),
            };
            for port in &ports {
                cells.push((from.clone(), to.clone(), *port));
            }
        }
    }
    cells
}

/// What a server serves: a pod's declared container ports, an external host's `serve`.
fn served_ports(sc: &Scenario, objects: &ClusterObjects, server: &Peer) -> Vec<PortProto> {
    match server {
        Peer::Pod(p) => objects
            .pods
            .get(p)
            .map(|pod| {
                objects::declared_ports(pod)
                    .into_iter()
                    .map(|d| d.port)
                    .collect()
            })
            .unwrap_or_default(),
        Peer::Host(h) => sc
            .cluster
            .external_hosts
            .iter()
            .filter(|x| x.name == *h)
            .flat_map(|x| x.serve.iter().copied())
            .collect(),
        // Its pods' hostPorts.
        Peer::Node(n) => oracle::host_ports_of(objects, n),
        Peer::Service {
            namespace,
            name,
            port,
        } => sim::services::probe_ports(objects, namespace, name, *port),
        // Per client (see probe_cells).
        Peer::Dns { .. } => Vec::new(),
        Peer::NodePort { .. } | Peer::LoadBalancer { .. } | Peer::ExternalIp { .. } => {
            oracle::resolve_target(objects, server)
                .map(|t| t.ports)
                .unwrap_or_default()
        }
    }
}

/// Checks one step's expectation; returns the number of cells checked and the problems.
fn check_step(
    sc: &Scenario,
    step: &Step,
    expect: &Expectation,
    ctx: &OracleContext,
) -> (usize, Vec<String>) {
    let cells = probe_cells(sc, ctx.objects);
    let mut problems = Vec::new();
    let mut checked = 0;
    for (from, to, port) in &cells {
        // A node to its own hostPort is no loopback: it goes through portmap's DNAT.
        let is_self = matches!(from, Peer::Pod(_)) && from == to;
        if is_self && sc.loopback == Loopback::Ignore {
            continue;
        }
        let Some(expected) = expect.lookup(from, to, *port) else {
            continue;
        };
        checked += 1;
        if let (Peer::Dns { name, .. }, Some(dns)) = (to, &sc.dns) {
            let prediction = sim::oracle::dns::predict_dns(ctx, dns, from, name, *port);
            if prediction.verdict != Some(Verdict::from_allowed(expected)) {
                problems.push(format!(
                    "step {:?}: {from} -> {to} {port}: expect says {expected:?}, the oracle says {:?}\n{prediction}",
                    step.name, prediction.verdict
                ));
            }
            continue;
        }
        if !served_ports(sc, ctx.objects, to).contains(port) {
            problems.push(format!(
                "step {:?}: {from} -> {to} {port} is asserted, but {to} does not serve {port} (the probe would be refused)",
                step.name
            ));
            continue;
        }
        let expected = Verdict::from_allowed(expected);
        if to.is_external_service() {
            let prediction = oracle::predict_external(ctx, from, to, *port);
            match prediction.verdict {
                Some(v) if v != expected => problems.push(format!(
                    "step {:?}: {from} -> {to} {port}: expect says {expected:?}, the oracle says {v:?}\n{prediction}",
                    step.name
                )),
                None => problems.push(format!(
                    "step {:?}: {from} -> {to} {port} is asserted, but its paths disagree (a cell that depends on the path cannot be asserted)\n{prediction}",
                    step.name
                )),
                _ => {}
            }
            continue;
        }
        if to.is_service() {
            let prediction = oracle::predict_service(ctx, from, to, *port);
            match prediction.verdict {
                Some(v) if v != expected => problems.push(format!(
                    "step {:?}: {from} -> {to} {port}: expect says {expected:?}, the oracle says {v:?}\n{prediction}",
                    step.name
                )),
                None => problems.push(format!(
                    "step {:?}: {from} -> {to} {port} is asserted, but its backends disagree (a mixed cell cannot be asserted)\n{prediction}",
                    step.name
                )),
                _ => {}
            }
            continue;
        }
        let prediction = oracle::predict(ctx, from, to, *port);
        if prediction.verdict != expected {
            problems.push(format!(
                "step {:?}: {from} -> {to} {port}: expect says {expected:?}, the oracle says {:?}\n{}",
                step.name, prediction.verdict, prediction.reason
            ));
        }
    }
    // A cell the scenario asserts but never probes is a mistake in the scenario (a port
    // the server does not declare, a peer outside the probe set).
    for (from, to, port) in expect.cells.keys() {
        if !cells
            .iter()
            .any(|(f, t, p)| f == from && t == to && p == port)
        {
            problems.push(format!(
                "step {:?}: {from} -> {to} {port} is asserted but not probed (not in the probe set, or {to} does not declare {port})",
                step.name
            ));
        }
    }
    (checked, problems)
}

fn check_scenario(path: &Path) -> Result<Vec<String>, String> {
    let sc = scenario::load(path).map_err(|e| e.to_string())?;
    let mut replay = Replay::new(&sc)?;
    let mut problems = Vec::new();
    if sc.summary.is_empty() || sc.description.is_empty() {
        problems.push("the scenario needs a summary and a description (its lesson)".to_string());
    }
    let mut report = Vec::new();
    for step in &sc.steps {
        replay
            .apply_step(step)
            .map_err(|e| format!("step {:?}: {e}", step.name))?;
        let Some(expect) = &step.expect else {
            report.push(format!("{}: -", step.name));
            continue;
        };
        let hosts = sc
            .cluster
            .external_hosts
            .iter()
            .map(|h| (h.name.clone(), h.address))
            .collect();
        let ctx = OracleContext::new(&replay.objects, sc.cluster.policy, &replay.node_addresses)
            .with_hosts(hosts)
            .with_down_nodes(step.down_nodes.clone())
            .with_br_netfilter_off(if sc.br_netfilter {
                Default::default()
            } else {
                sc.cluster.nodes.iter().cloned().collect()
            })
            .with_host_ports(replay.host_ports(&sc))
            .with_node_fabric(replay.host_ports(&sc).nodes);
        let (checked, p) = check_step(&sc, step, expect, &ctx);
        if checked == 0 && p.is_empty() {
            problems.push(format!(
                "step {:?}: its expect asserts no probed cell",
                step.name
            ));
        }
        report.push(format!("{}: {checked} cells", step.name));
        problems.extend(p);
    }
    println!("{}: {}", sc.name, report.join(", "));
    Ok(problems)
}

#[test]
fn every_scenario_agrees_with_the_oracle() {
    let files = scenario_files();
    assert!(!files.is_empty(), "no scenarios found");
    let mut failed = Vec::new();
    for file in &files {
        let name = file
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        match check_scenario(file) {
            Ok(problems) if problems.is_empty() => {}
            Ok(problems) => {
                for p in &problems {
                    println!("{name}: DISAGREEMENT {p}\n");
                }
                failed.push(format!("{name} ({} problems)", problems.len()));
            }
            Err(e) => {
                println!("{name}: cannot check: {e}\n");
                failed.push(format!("{name} (cannot check)"));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "scenarios disagreeing with the oracle: {}",
        failed.join(", ")
    );
}
