//! Pods: their namespaces, and the CNI calls that wire them. Each pod joins two networks,
//! as under containerd: the loopback network on `lo`, then the pod network on `eth0`.
//! ADDs run in parallel across nodes but strictly in pod order within a node, so
//! host-local hands out the same addresses on every run. DELs run on a few threads at
//! once (their cost is mostly waiting), in any order.
//!
//! With [`AddOptions::check`], every attachment is CHECKed once all ADDs succeeded (with
//! the cached result as `prevResult`, one thread per node like ADD), as issue 5 asks; the
//! known CHECK bugs of Debian's plugins come back as notes (see [`cni::exec`]), any
//! other CHECK failure undoes the whole call like a failed ADD.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Map, Value};
use sim::objects::PodRef;
use sim::plan::Plan;

use super::{Cluster, NodeHandle, PodHandle};
use crate::cni::{self, CheckNote, CniResult, ConfList, RuntimeConf};
use crate::netns::{self, Netns, sweep};

/// One CNI attachment: a network joined on one interface of one pod.
#[derive(Debug, Clone)]
struct Attachment {
    node: Netns,
    list: ConfList,
    rt: RuntimeConf,
    cache_dir: PathBuf,
}

/// How many CHECKs run at once. Plugin processes are mostly CPU (Go start-up), so on two
/// cores one thread per node and four threads measured the same (~4-5 ms a CHECK).
const CHECK_THREADS: usize = 4;

/// One pod for [`Cluster::add_pods_with`]: its node, and what the runtime passes the CNI
/// chain for it (see [`cni::capabilities`]).
#[derive(Debug, Clone)]
pub struct NewPod {
    pub pod: PodRef,
    pub node: String,
    pub capability_args: Map<String, Value>,
}

/// How [`Cluster::add_pods_with`] runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct AddOptions {
    /// CNI CHECK every attachment once all ADDs succeeded.
    pub check: bool,
}

/// What [`Cluster::add_pods_with`] did.
#[derive(Debug, Clone, Default)]
pub struct PodsAdded {
    /// Each pod's address, in the order given.
    pub ips: Vec<(PodRef, Ipv4Addr)>,
    /// Set when CHECK ran.
    pub check: Option<CheckSummary>,
    /// Per node: how many pods it ADDed and how long its (serial) ADDs took, sorted by
    /// node. `cargo xtask bench --scale` reports the per-pod median from these.
    pub node_adds: Vec<(String, usize, Duration)>,
}

/// The CHECK round after the ADDs.
#[derive(Debug, Clone, Default)]
pub struct CheckSummary {
    /// Attachments checked (up to two per pod: `lo` and `eth0`; skipped ones not counted).
    pub attachments: usize,
    pub elapsed: Duration,
    /// Known plugin bugs stepped over (never a real failure: those are errors).
    pub notes: Vec<CheckNote>,
    /// Networks not checked, and why (e.g. a cniVersion before CHECK existed).
    pub skipped: Vec<String>,
}

impl CheckSummary {
    /// One line per plugin and known bug (naming the upstream issue and the pods), and
    /// one per network not checked. Empty when every CHECK simply passed.
    pub fn lines(&self) -> Vec<String> {
        let mut by_bug: BTreeMap<(&str, &str), Vec<&CheckNote>> = BTreeMap::new();
        for n in &self.notes {
            by_bug.entry((&n.plugin, n.issue)).or_default().push(n);
        }
        let mut out: Vec<String> = by_bug
            .into_iter()
            .map(|((plugin, issue), notes)| {
                let mut pods: Vec<&str> = notes.iter().map(|n| n.pod.as_str()).collect();
                pods.sort();
                pods.dedup();
                format!(
                    "CNI CHECK of {plugin} failed for {} pod{} ({}) with a known bug of Debian's plugins 1.1.1, {issue}: {}; counted as passed",
                    pods.len(),
                    if pods.len() == 1 { "" } else { "s" },
                    pods.join(", "),
                    notes[0].what
                )
            })
            .collect();
        out.extend(
            self.skipped
                .iter()
                .map(|s| format!("CNI CHECK skipped: {s}")),
        );
        out
    }
}

impl Cluster {
    /// Creates the pods' namespaces (in one batch) and wires them with CNI. Returns each
    /// pod's address, in the order given. Within a node pods are added sorted by
    /// namespace and name, so the same set of pods gets the same addresses every run.
    /// If any ADD fails, every pod of this call is removed again and the error names
    /// each failure. No runtimeConfig and no CHECK: see [`Cluster::add_pods_with`].
    pub async fn add_pods(&mut self, pods: &[(PodRef, String)]) -> Result<Vec<(PodRef, Ipv4Addr)>> {
        let pods: Vec<NewPod> = pods
            .iter()
            .map(|(pod, node)| NewPod {
                pod: pod.clone(),
                node: node.clone(),
                capability_args: Map::new(),
            })
            .collect();
        Ok(self.add_pods_with(&pods, AddOptions::default()).await?.ips)
    }

    /// [`Cluster::add_pods`] with each pod's runtimeConfig values, and optionally a CNI
    /// CHECK of every attachment after the ADDs (failing CHECKs undo the call too).
    pub async fn add_pods_with(&mut self, new: &[NewPod], opts: AddOptions) -> Result<PodsAdded> {
        let pods: Vec<(PodRef, String)> = new
            .iter()
            .map(|n| (n.pod.clone(), n.node.clone()))
            .collect();
        let caps: BTreeMap<PodRef, Map<String, Value>> = new
            .iter()
            .map(|n| (n.pod.clone(), n.capability_args.clone()))
            .collect();
        let pods = &pods[..];
        let mut seen = BTreeSet::new();
        for (pod, node) in pods {
            if !self.nodes.contains_key(node) {
                bail!("pod {pod} is bound to node {node}, which the cluster does not have");
            }
            if self.pods.contains_key(pod) || !seen.insert(pod.clone()) {
                bail!("pod {pod} already exists");
            }
        }
        if pods.is_empty() {
            return Ok(PodsAdded::default());
        }
        let names: Vec<String> = pods.iter().map(|(p, _)| self.plan.pod_netns(p)).collect();
        if let Some(taken) = names
            .iter()
            .find(|n| Path::new(netns::NETNS_DIR).join(n).exists())
        {
            bail!("network namespace {taken} already exists");
        }
        let made = tokio::task::spawn_blocking(move || {
            Netns::create_many(&names).inspect_err(|_| {
                // create_many stops at the first failure: remove what it made before.
                for n in &names {
                    let _ = netns::delete(n);
                }
            })
        })
        .await
        .context("namespace creation task")??;

        // Per node, pods in a fixed order; each node's ADDs run on a thread of their own.
        let mut per_node: BTreeMap<&str, Vec<(PodRef, Netns)>> = BTreeMap::new();
        for ((pod, node), ns) in pods.iter().zip(&made) {
            per_node
                .entry(node.as_str())
                .or_default()
                .push((pod.clone(), ns.clone()));
        }
        let jobs: Vec<Vec<(PodRef, String, Vec<Attachment>)>> = per_node
            .into_iter()
            .map(|(node, mut list)| {
                list.sort_by(|a, b| a.0.cmp(&b.0));
                let handle = &self.nodes[node];
                list.into_iter()
                    .map(|(pod, ns)| {
                        let atts = attachments(&self.plan, node, handle, &pod, &ns, &caps[&pod]);
                        (pod, node.to_string(), atts)
                    })
                    .collect()
            })
            .collect();
        // One thread per node. On two cores 2, 4 and 10 threads measured the same at
        // 10 nodes x 100 pods (10.3-12.0 s of ADDs, `cargo xtask bench --scale`): the
        // plugin processes are the cost, not the waiting.
        let threads = jobs.len();
        let every: Vec<Attachment> = jobs
            .iter()
            .flatten()
            .flat_map(|(_, _, atts)| atts.iter().cloned())
            .collect();
        let per_node_atts: Vec<Vec<Attachment>> = jobs
            .iter()
            .map(|node_pods| {
                node_pods
                    .iter()
                    .flat_map(|(_, _, atts)| atts.iter().cloned())
                    .collect()
            })
            .collect();
        let outcomes = tokio::task::spawn_blocking(move || {
            cni::parallel_map(jobs, threads, |node_pods| {
                let started = Instant::now();
                let node_name = node_pods.first().map(|(_, n, _)| n.clone());
                let mut done = vec![];
                for (pod, node, atts) in node_pods {
                    match add_pod(&atts) {
                        Ok(result) => done.push(Ok((pod, node, result))),
                        Err(e) => {
                            // Later pods of this node would get other addresses than
                            // planned: stop here.
                            done.push(Err(e));
                            break;
                        }
                    }
                }
                let timing = node_name.map(|n| (n, done.len(), started.elapsed()));
                (timing, done)
            })
        })
        .await
        .context("CNI ADD task")?;

        let (node_adds, outcomes): (Vec<_>, Vec<_>) = outcomes.into_iter().unzip();
        let node_adds: Vec<(String, usize, Duration)> = node_adds.into_iter().flatten().collect();
        let mut added = BTreeMap::new();
        let mut errors = vec![];
        for r in outcomes.into_iter().flatten() {
            match r.and_then(|(pod, node, result)| {
                handle_of(&made, &self.plan, &pod, node, result, caps[&pod].clone())
                    .map(|h| (pod, h))
            }) {
                Ok((pod, h)) => {
                    added.insert(pod, h);
                }
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        let mut check = None;
        if errors.is_empty() && opts.check {
            let t = Instant::now();
            // CHECKs read and compare, they change nothing: any order, any overlap.
            let every: Vec<Attachment> =
                interleave_nodes(per_node_atts.into_iter().flatten().collect());
            let checked = tokio::task::spawn_blocking(move || {
                cni::parallel_map(every, CHECK_THREADS, |a| {
                    vec![cni::check(&a.node, &a.list, &a.rt, &a.cache_dir)]
                })
            })
            .await
            .context("CNI CHECK task")?;
            let mut summary = CheckSummary::default();
            for r in checked.into_iter().flatten() {
                match r {
                    Ok(report) => {
                        summary.attachments += usize::from(report.skipped.is_none());
                        summary.notes.extend(report.notes);
                        summary.skipped.extend(report.skipped);
                    }
                    Err(e) => errors.push(e.to_string()),
                }
            }
            summary.skipped.sort();
            summary.skipped.dedup();
            summary.elapsed = t.elapsed();
            check = Some(summary);
        }
        if !errors.is_empty() {
            drop(added);
            let pod_names: Vec<String> = pods.iter().map(|(p, _)| self.plan.pod_netns(p)).collect();
            drop(made);
            let undo = tokio::task::spawn_blocking(move || undo(every, &pod_names))
                .await
                .unwrap_or_else(|e| vec![format!("cleanup task failed: {e}")]);
            let mut msg = format!("wiring pods failed: {}", errors.join("; "));
            if !undo.is_empty() {
                msg.push_str(&format!(
                    " (and removing them again failed: {})",
                    undo.join("; ")
                ));
            }
            return Err(anyhow!(msg));
        }
        let ips = pods.iter().map(|(p, _)| (p.clone(), added[p].ip)).collect();
        self.pods.extend(added);
        Ok(PodsAdded {
            ips,
            check,
            node_adds,
        })
    }

    /// DELs the pods' attachments and deletes their namespaces. Goes on past failures
    /// and reports them all; the pods are forgotten either way.
    pub async fn remove_pods(&mut self, pods: &[PodRef]) -> Result<()> {
        let mut every = vec![];
        let mut names = vec![];
        let mut errors = vec![];
        for pod in pods {
            let Some(h) = self.pods.remove(pod) else {
                errors.push(format!("pod {pod} is not in the cluster"));
                continue;
            };
            let node = &self.nodes[&h.node];
            every.extend(attachments(
                &self.plan,
                &h.node,
                node,
                pod,
                &h.netns,
                &h.capability_args,
            ));
            names.push(self.plan.pod_netns(pod));
        }
        errors.extend(
            tokio::task::spawn_blocking(move || undo(every, &names))
                .await
                .unwrap_or_else(|e| vec![format!("pod removal task failed: {e}")]),
        );
        if errors.is_empty() {
            Ok(())
        } else {
            Err(anyhow!("removing pods: {}", errors.join("; ")))
        }
    }

    /// CNI CHECK of a pod's attachments (`lo` and `eth0`) against the cached results.
    /// Returns the known plugin bugs stepped over (see [`cni::exec`]).
    pub async fn check_pod(&self, pod: &PodRef) -> Result<Vec<CheckNote>> {
        let h = self
            .pods
            .get(pod)
            .with_context(|| format!("pod {pod} is not in the cluster"))?;
        let atts = attachments(
            &self.plan,
            &h.node,
            &self.nodes[&h.node],
            pod,
            &h.netns,
            &h.capability_args,
        );
        tokio::task::spawn_blocking(move || -> Result<Vec<CheckNote>> {
            let mut notes = vec![];
            for a in &atts {
                notes.extend(cni::check(&a.node, &a.list, &a.rt, &a.cache_dir)?.notes);
            }
            Ok(notes)
        })
        .await
        .context("CNI CHECK task")?
    }

    /// DELs every pod's attachments (teardown's first step). Returns the failures.
    pub(super) fn deleter(&self) -> impl FnOnce() -> Vec<String> + Send + 'static {
        let every: Vec<Attachment> = self
            .pods
            .iter()
            .flat_map(|(pod, h)| {
                attachments(
                    &self.plan,
                    &h.node,
                    &self.nodes[&h.node],
                    pod,
                    &h.netns,
                    &h.capability_args,
                )
            })
            .collect();
        move || del_many(interleave_nodes(every))
    }
}

/// The pod's attachments in ADD order: `lo`, then `eth0`. Both carry the pod's
/// capability args; only plugins that declare a capability ever see them.
fn attachments(
    plan: &Plan,
    node: &str,
    handle: &NodeHandle,
    pod: &PodRef,
    ns: &Netns,
    capability_args: &Map<String, Value>,
) -> Vec<Attachment> {
    let container_id = plan.container_id(pod);
    handle
        .networks
        .in_add_order()
        .into_iter()
        .map(|(list, ifname)| Attachment {
            node: handle.netns.clone(),
            list: list.clone(),
            rt: RuntimeConf {
                container_id: container_id.clone(),
                netns: ns.path(),
                ifname: ifname.to_string(),
                // What containerd passes, so plugins that read them find them.
                args: vec![
                    ("IgnoreUnknown".into(), "1".into()),
                    ("K8S_POD_NAMESPACE".into(), pod.namespace.clone()),
                    ("K8S_POD_NAME".into(), pod.name.clone()),
                    ("K8S_POD_INFRA_CONTAINER_ID".into(), container_id.clone()),
                ],
                capability_args: capability_args.clone(),
                node_netns: handle.netns.name().to_string(),
                pod: pod.to_string(),
                node: node.to_string(),
            },
            cache_dir: handle.dirs.cache.clone(),
        })
        .collect()
}

/// ADDs one pod's attachments in order; returns the `eth0` result.
fn add_pod(atts: &[Attachment]) -> Result<CniResult> {
    let mut last = None;
    for a in atts {
        last = Some(cni::add(&a.node, &a.list, &a.rt, &a.cache_dir)?);
    }
    last.context("a pod without attachments")
}

fn handle_of(
    made: &[Netns],
    plan: &Plan,
    pod: &PodRef,
    node: String,
    result: CniResult,
    capability_args: Map<String, Value>,
) -> Result<PodHandle> {
    let name = plan.pod_netns(pod);
    let netns = made
        .iter()
        .find(|n| n.name() == name)
        .cloned()
        .with_context(|| format!("namespace {name} vanished"))?;
    let (addr, gw) = result.ipv4_of("eth0").with_context(|| {
        format!("the CNI result for pod {pod} on node {node} has no IPv4 address on eth0")
    })?;
    let gateway =
        gw.with_context(|| format!("the CNI result for pod {pod} on node {node} has no gateway"))?;
    Ok(PodHandle {
        netns,
        node,
        ip: addr.addr(),
        gateway,
        cni_result: result,
        capability_args,
    })
}

/// Undoes attachments (DEL, in reverse ADD order per pod) and deletes the namespaces.
fn undo(every: Vec<Attachment>, names: &[String]) -> Vec<String> {
    let mut errors = del_many(interleave_nodes(every));
    for name in names {
        if let Err(e) = netns::delete(name) {
            errors.push(format!("{e:#}"));
        }
    }
    errors
}

/// DELs attachments on a few threads; returns the failures.
fn del_many(every: Vec<Attachment>) -> Vec<String> {
    cni::parallel_map(every, sweep::DEL_THREADS, |a| {
        cni::del(&a.node, &a.list, &a.rt, &a.cache_dir)
    })
    .into_iter()
    .filter_map(|r| r.err().map(|e| e.to_string()))
    .collect()
}

/// Orders DELs so that neighbouring jobs belong to different nodes and `eth0` comes
/// before `lo` within a pod (the reverse of ADD, as runtimes do).
fn interleave_nodes(every: Vec<Attachment>) -> Vec<Attachment> {
    let mut per_node: BTreeMap<String, Vec<Attachment>> = BTreeMap::new();
    for a in every {
        per_node.entry(a.rt.node.clone()).or_default().push(a);
    }
    let mut queues: Vec<std::vec::IntoIter<Attachment>> = per_node
        .into_values()
        .map(|mut v| {
            // Attachments come pod by pod in ADD order: reversed, each pod's come in
            // reverse ADD order.
            v.reverse();
            v.into_iter()
        })
        .collect();
    let mut out = vec![];
    loop {
        let mut any = false;
        for q in &mut queues {
            if let Some(a) = q.next() {
                out.push(a);
                any = true;
            }
        }
        if !any {
            break;
        }
    }
    out
}
