//! Random NetworkPolicies and label sets (`sim::testgen::random_case`) applied to one
//! live standard-model cluster on two nodes, enforced by the `iptables` engine and
//! probed with real packets; every cell's measured verdict must equal the oracle's.
//! Shared by the differential test and `cargo xtask differential --kind policy`.
//!
//! Per case: relabel the namespaces and pods and replace the policies (in the objects),
//! sync the engine, flush conntrack in the nodes, and probe the whole matrix: the nine
//! pods and both nodes as clients, the nine pods as servers, TCP, UDP and SCTP on 80 and
//! 81 (594 probes, self cells included). The flush makes each case start from no
//! connections: a UDP probe whose random source port happens to match a flow a previous
//! case allowed would otherwise ride on that flow's conntrack entry and pass, as real
//! established flows do when a policy changes (`flush: false` shows it: about one UDP
//! probe in a thousand then passes on its first look against a new deny).
//! A cell that disagrees, or whose probe failed, is probed once more with a long
//! deadline, so a slow machine is not mistaken for a wrong enforcer; the second answer
//! counts.
//!
//! Any disagreement prints the seed, the case as a scenario file (policies and labels;
//! save it and run `cargo xtask scenario FILE`), the cell, what was measured and the
//! oracle's explanation.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sim::matrix::{Measurement, Outcome, Verdict};
use sim::objects::{self, PodRef};
use sim::oracle::{OracleContext, predict};
use sim::plan::Plan;
use sim::protocol::{PortProto, Protocol};
use sim::scenario::{DenyStyle, Peer, PolicyEngineKind};
use sim::testgen::{self as generate, Case, Model};

use crate::cluster::Cluster;
use crate::netns::Netns;
use crate::policy::engine_for;
use crate::probe::{ProbeOptions, ProbeTask, ServerSpec, run_probes, start_servers};

/// Policy cases the differential test runs unless told otherwise.
pub const DEFAULT_CASES: u64 = 300;
/// The deadline of the second look at a suspicious cell.
const RECHECK_DEADLINE: Duration = Duration::from_secs(1);
/// Cells printed per failing case (the rest are counted).
const PRINT_CELLS: usize = 12;

pub(super) fn env_u64(name: &str) -> Result<Option<u64>> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map(Some)
            .with_context(|| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(None),
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub seeds: Vec<u64>,
    pub deny: DenyStyle,
    /// Flush conntrack in the nodes between cases (see the module comment).
    pub flush: bool,
}

impl Settings {
    /// `KNETLAB_DIFF_CASES` (default 300) cases from seed `KNETLAB_DIFF_FIRST` (default
    /// 0); `KNETLAB_DIFF_SEED=123` runs that one case; `KNETLAB_DIFF_DENY=drop` uses the
    /// drop style; `KNETLAB_DIFF_NO_FLUSH=1` keeps conntrack between cases.
    pub fn from_env() -> Result<Settings> {
        let seeds = match env_u64("KNETLAB_DIFF_SEED")? {
            Some(seed) => vec![seed],
            None => {
                let first = env_u64("KNETLAB_DIFF_FIRST")?.unwrap_or(0);
                let n = env_u64("KNETLAB_DIFF_CASES")?.unwrap_or(DEFAULT_CASES);
                (first..first.saturating_add(n)).collect()
            }
        };
        let deny = match std::env::var("KNETLAB_DIFF_DENY").as_deref() {
            Err(_) | Ok("reject") => DenyStyle::Reject,
            Ok("drop") => DenyStyle::Drop,
            Ok(other) => bail!("KNETLAB_DIFF_DENY={other:?}: write reject or drop"),
        };
        let flush = std::env::var("KNETLAB_DIFF_NO_FLUSH").is_err();
        Ok(Settings { seeds, deny, flush })
    }
}

/// One probed cell of the matrix.
#[derive(Debug, Clone)]
pub struct Cell {
    from: Peer,
    to: PodRef,
    port: PortProto,
    task: ProbeTask,
}

/// A cell where the kernel and the oracle disagree (or that could not be measured).
pub struct Disagreement {
    cell: Cell,
    measured: Measurement,
    /// The first measurement, when the second look changed nothing but the detail.
    first: Measurement,
    oracle: Verdict,
    explanation: String,
}

/// What the whole run found.
#[derive(Default)]
pub struct Findings {
    /// Seed → its disagreements.
    pub failing: BTreeMap<u64, (Case, Vec<Disagreement>)>,
    pub cases: usize,
    pub cells: usize,
    /// Measured outcomes over every cell (after the second looks).
    outcomes: BTreeMap<&'static str, usize>,
    rechecked: usize,
    /// Second looks that turned a disagreement into an agreement, by what the first
    /// look measured.
    rescued: BTreeMap<String, usize>,
    sync: Duration,
    flush: Duration,
    probe: Duration,
    oracle: Duration,
    slowest_case: (Duration, u64),
}

/// Builds the standard model's cluster, runs every case of `settings` on it, tears it
/// down, prints each failing case as it is found, and returns what it found with the
/// wall time (the whole run, bring-up and teardown included).
pub async fn run_cases(settings: &Settings) -> Result<(Findings, Duration)> {
    let model = generate::standard_model();
    let plan =
        Plan::new(&crate::run::new_prefix(), &model.cluster).context("plan the standard model")?;
    println!("differential (policy): cluster {}", plan.prefix);
    let start = Instant::now();
    let mut cluster = Cluster::create(plan).await.context("build the cluster")?;
    let result = run(&mut cluster, model, settings).await;
    let teardown = cluster.teardown().await;
    let total = start.elapsed();
    let findings = result.context("the differential run failed")?;
    if !teardown.is_ok() {
        bail!("teardown failed: {}", teardown.errors.join("; "));
    }
    Ok((findings, total))
}

async fn run(cluster: &mut Cluster, model: &Model, settings: &Settings) -> Result<Findings> {
    // The pods, bound to the nodes the model's scheduler chose.
    let pods: Vec<(PodRef, String)> = model
        .objects
        .pods
        .iter()
        .map(|(r, p)| {
            (
                r.clone(),
                objects::pod_node(p).unwrap_or_default().to_string(),
            )
        })
        .collect();
    let ips = cluster.add_pods(&pods).await.context("add the pods")?;
    for (pod, ip) in &ips {
        let planned = objects::pod_ip(&model.objects.pods[pod]);
        if planned != Some(*ip) {
            bail!(
                "pod {pod} got {ip} but the generator's model expects {planned:?}: the generated \
                 ipBlocks would name other pods than intended"
            );
        }
    }

    let servers = start_servers(
        model
            .objects
            .pods
            .iter()
            .map(|(r, p)| {
                Ok(ServerSpec {
                    name: r.to_string(),
                    netns: cluster.pod(r).context("pod handle")?.netns.clone(),
                    ports: objects::declared_ports(p)
                        .into_iter()
                        .map(|d| d.port)
                        .collect(),
                })
            })
            .collect::<Result<Vec<_>>>()?,
    )
    .await
    .context("start the servers")?;

    let nodes: Vec<(String, Netns)> = model
        .cluster
        .nodes
        .iter()
        .map(|n| {
            let ns = cluster.node_netns(n).context("node handle")?.clone();
            Ok((n.clone(), ns))
        })
        .collect::<Result<_>>()?;
    let cells = matrix(cluster, model, &nodes)?;
    let tasks: Vec<ProbeTask> = cells.iter().map(|c| c.task.clone()).collect();
    let opts = ProbeOptions::default();
    let recheck = ProbeOptions {
        deadline: RECHECK_DEADLINE,
        ..ProbeOptions::default()
    };
    let mut engine = engine_for(PolicyEngineKind::Iptables, settings.deny);
    let plan = cluster.plan().clone();

    let mut f = Findings::default();
    let outcome = async {
        for &seed in &settings.seeds {
            let case_start = Instant::now();
            let case = generate::random_case(seed);
            let objects = case.objects();

            let t = Instant::now();
            tokio::task::block_in_place(|| engine.sync(&plan, &nodes, &objects))
                .with_context(|| format!("seed {seed}: sync the policy engine"))?;
            f.sync += t.elapsed();
            if settings.flush {
                let t = Instant::now();
                tokio::task::block_in_place(|| flush_conntrack(&nodes))?;
                f.flush += t.elapsed();
            }

            let t = Instant::now();
            let mut measured = run_probes(&tasks, &opts).await;
            f.probe += t.elapsed();

            let t = Instant::now();
            let ctx =
                OracleContext::new(&objects, PolicyEngineKind::Iptables, &model.node_addresses);
            let predicted: Vec<_> = cells
                .iter()
                .map(|c| predict(&ctx, &c.from, &Peer::Pod(c.to.clone()), c.port))
                .collect();
            f.oracle += t.elapsed();

            // A second, patient look at every cell that disagrees or was not measured.
            let suspicious: Vec<usize> = (0..cells.len())
                .filter(|&i| !agrees(&measured[i], predicted[i].verdict))
                .collect();
            let mut first = BTreeMap::new();
            if !suspicious.is_empty() {
                let again: Vec<ProbeTask> = suspicious.iter().map(|&i| tasks[i].clone()).collect();
                let t = Instant::now();
                let second = run_probes(&again, &recheck).await;
                f.probe += t.elapsed();
                f.rechecked += suspicious.len();
                for (&i, m) in suspicious.iter().zip(second) {
                    if agrees(&m, predicted[i].verdict) {
                        let what = format!(
                            "{} on {}",
                            measured[i].outcome.as_str(),
                            cells[i].port.protocol
                        );
                        *f.rescued.entry(what).or_default() += 1;
                    }
                    first.insert(i, std::mem::replace(&mut measured[i], m));
                }
            }

            let mut wrong = Vec::new();
            for (i, cell) in cells.iter().enumerate() {
                *f.outcomes.entry(measured[i].outcome.as_str()).or_default() += 1;
                if !agrees(&measured[i], predicted[i].verdict) {
                    wrong.push(Disagreement {
                        cell: cell.clone(),
                        measured: measured[i].clone(),
                        first: first.remove(&i).unwrap_or_else(|| measured[i].clone()),
                        oracle: predicted[i].verdict,
                        explanation: predicted[i].reason.to_string(),
                    });
                }
            }
            f.cases += 1;
            f.cells += cells.len();
            if !wrong.is_empty() {
                print_case(&case, &wrong);
                f.failing.insert(seed, (case, wrong));
            }
            let took = case_start.elapsed();
            if took > f.slowest_case.0 {
                f.slowest_case = (took, seed);
            }
        }
        Ok::<(), anyhow::Error>(())
    }
    .await;
    // Close every socket and namespace handle before the teardown removes the namespaces.
    servers.shutdown().await;
    drop((cells, tasks, nodes));
    outcome?;
    Ok(f)
}

/// Every pod and node to every pod on TCP, UDP and SCTP 80 and 81, self cells included.
fn matrix(cluster: &Cluster, model: &Model, nodes: &[(String, Netns)]) -> Result<Vec<Cell>> {
    let mut clients: Vec<(Peer, Netns)> = Vec::new();
    for pod in model.objects.pods.keys() {
        let h = cluster.pod(pod).with_context(|| format!("pod {pod}"))?;
        clients.push((Peer::Pod(pod.clone()), h.netns.clone()));
    }
    for (name, ns) in nodes {
        clients.push((Peer::Node(name.clone()), ns.clone()));
    }
    let mut cells = Vec::new();
    for (to, pod) in &model.objects.pods {
        let dst = cluster.pod(to).with_context(|| format!("pod {to}"))?.ip;
        let mut ports: Vec<PortProto> = objects::declared_ports(pod)
            .into_iter()
            .map(|d| d.port)
            .collect();
        ports.sort();
        ports.dedup();
        for (from, client) in &clients {
            for port in &ports {
                cells.push(Cell {
                    from: from.clone(),
                    to: to.clone(),
                    port: *port,
                    task: ProbeTask {
                        client: client.clone(),
                        dst,
                        port: *port,
                        expect_answer_from: vec![to.to_string()],
                    },
                });
            }
        }
    }
    let protocols: Vec<Protocol> = cells.iter().map(|c| c.port.protocol).collect();
    for p in Protocol::ALL {
        if !protocols.contains(&p) {
            bail!("the model declares no {p} port; the matrix would not cover it");
        }
    }
    Ok(cells)
}

/// Whether a measurement is the oracle's verdict. A probe the harness could not run, and
/// a refusal (every probed port is served, so a refusal means a broken server, not a
/// policy), never agree.
fn agrees(m: &Measurement, oracle: Verdict) -> bool {
    match m.outcome {
        Outcome::Error | Outcome::Refused => false,
        o => o.verdict() == Some(oracle),
    }
}

fn flush_conntrack(nodes: &[(String, Netns)]) -> Result<()> {
    crate::policy::forget_flows(nodes)
}

fn print_case(case: &Case, wrong: &[Disagreement]) {
    println!(
        "=== seed {}: {} cells disagree with the oracle (reproduce: cargo xtask differential \
         --kind policy --seed {} --cases 1)\n\
         --- the case as a scenario (save it and run `cargo xtask scenario FILE`):\n{}",
        case.seed,
        wrong.len(),
        case.seed,
        case.to_scenario_yaml()
    );
    for d in wrong.iter().take(PRINT_CELLS) {
        let c = &d.cell;
        let first = if d.first != d.measured {
            format!(" (first look: {})", describe(&d.first))
        } else {
            String::new()
        };
        println!(
            "--- {} -> {} {}: measured {}{first}; the oracle says {:?}\n{}\n",
            c.from,
            c.to,
            c.port,
            describe(&d.measured),
            d.oracle,
            d.explanation
        );
    }
    if wrong.len() > PRINT_CELLS {
        println!("--- and {} more cells\n", wrong.len() - PRINT_CELLS);
    }
}

/// `rejected (ICMP admin prohibited from 10.244.1.1) after 0.3 ms`.
fn describe(m: &Measurement) -> String {
    let mut words = vec![m.outcome.as_str().to_string()];
    if let Some(who) = &m.answered_by {
        words.push(format!("by {who}"));
    }
    if !m.detail.is_empty() {
        words.push(format!("({})", m.detail));
    }
    words.push(format!("after {:.1} ms", m.elapsed_us as f64 / 1000.0));
    words.join(" ")
}

pub fn report(f: &Findings, settings: &Settings, total: Duration) -> String {
    let per = |d: Duration| d.as_secs_f64() * 1000.0 / f.cases.max(1) as f64;
    fn tally<K: std::fmt::Display>(m: &BTreeMap<K, usize>) -> String {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
    format!(
        "differential (policy): {} cases ({} cells), {} failing; deny {:?}, conntrack flushed between cases: {}\n\
         outcomes: {}\n\
         second looks: {} cells; then agreeing: {}{}\n\
         per case: sync {:.1} ms, conntrack flush {:.1} ms, probe {:.1} ms, oracle {:.1} ms; \
         slowest case {:.0} ms (seed {}); whole test {:.1} s",
        f.cases,
        f.cells,
        f.failing.len(),
        settings.deny,
        settings.flush,
        tally(&f.outcomes),
        f.rechecked,
        f.rescued.values().sum::<usize>(),
        if f.rescued.is_empty() {
            String::new()
        } else {
            format!(" (their first looks: {})", tally(&f.rescued))
        },
        per(f.sync),
        per(f.flush),
        per(f.probe),
        per(f.oracle),
        f.slowest_case.0.as_secs_f64() * 1000.0,
        f.slowest_case.1,
        total.as_secs_f64()
    )
}
