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
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Map, Value};
use sim::objects::PodRef;
use sim::plan::Plan;

use super::teardown::TeardownError;
use super::{Cluster, NodeHandle, PodHandle};
use crate::cni::{self, CheckNote, CniResult, ConfList, RuntimeConf};
use crate::netns::{self, Netns};
use crate::sweep;

/// One pod's ADD on its node's thread: the pod, its node, its namespace's name, and its
/// attachments in ADD order.
type PodJob = (PodRef, String, String, Vec<Attachment>);

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
    /// Per node (sorted like `node_adds`): each pod's ADD (`lo` then `eth0`) in the
    /// order the node ran them, to see whether a pod's ADD grows with the pods before it.
    pub pod_adds: Vec<Vec<Duration>>,
    /// Creating the pods' namespaces (on one thread, while the ADDs run).
    pub netns_create: Duration,
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

        // Per node, pods in a fixed order; each node's ADDs run on a thread of their own,
        // and one more thread creates the namespaces just ahead of them (see
        // [`round_robin`]).
        let mut per_node: BTreeMap<&str, Vec<(PodRef, String)>> = BTreeMap::new();
        for ((pod, node), name) in pods.iter().zip(names) {
            per_node
                .entry(node.as_str())
                .or_default()
                .push((pod.clone(), name));
        }
        let jobs: Vec<Vec<PodJob>> = per_node
            .into_iter()
            .map(|(node, mut list)| {
                list.sort_by(|a, b| a.0.cmp(&b.0));
                let handle = &self.nodes[node];
                list.into_iter()
                    .map(|(pod, name)| {
                        let path = Path::new(netns::NETNS_DIR).join(&name);
                        let atts = attachments(&self.plan, node, handle, &pod, path, &caps[&pod]);
                        (pod, node.to_string(), name, atts)
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
            .flat_map(|(_, _, _, atts)| atts.iter().cloned())
            .collect();
        let per_node_atts: Vec<Vec<Attachment>> = jobs
            .iter()
            .map(|node_pods| {
                node_pods
                    .iter()
                    .flat_map(|(_, _, _, atts)| atts.iter().cloned())
                    .collect()
            })
            .collect();
        let outcomes = tokio::task::spawn_blocking(move || {
            // One thread creates the namespaces, in the order the node threads use
            // them (round-robin over the nodes), and hands each to its node's thread.
            let order: Vec<(usize, PodRef, String)> = round_robin(
                jobs.iter()
                    .map(|pods| {
                        pods.iter()
                            .map(|(p, _, n, _)| (p.clone(), n.clone()))
                            .collect()
                    })
                    .collect(),
            );
            let (senders, receivers): (Vec<_>, Vec<_>) = jobs
                .iter()
                .map(|_| mpsc::channel::<Result<Netns>>())
                .unzip();
            std::thread::scope(|s| {
                let creator = s.spawn(move || {
                    let started = Instant::now();
                    for (i, pod, name) in order {
                        let made = Netns::create_many(std::slice::from_ref(&name))
                            .and_then(|mut v| {
                                v.pop().context("namespace creation returned nothing")
                            })
                            .with_context(|| format!("create the namespace of pod {pod}"));
                        let failed = made.is_err();
                        // A node thread that stopped early has dropped its receiver.
                        let _ = senders[i].send(made);
                        if failed {
                            break;
                        }
                    }
                    started.elapsed()
                });
                let node_jobs: Vec<_> = jobs.into_iter().zip(receivers).collect();
                let outcomes = cni::parallel_map(node_jobs, threads, |(node_pods, made)| {
                    let started = Instant::now();
                    let node_name = node_pods.first().map(|(_, n, _, _)| n.clone());
                    let mut done = vec![];
                    let mut each = vec![];
                    for (pod, node, _, atts) in node_pods {
                        let t = Instant::now();
                        let r = made
                            .recv()
                            .unwrap_or_else(|_| {
                                Err(anyhow!("the namespace of pod {pod} was not created"))
                            })
                            .and_then(|ns| add_pod(&atts).map(|result| (ns, result)));
                        each.push(t.elapsed());
                        match r {
                            Ok((ns, result)) => done.push(Ok((pod, node, ns, result))),
                            Err(e) => {
                                // Later pods of this node would get other addresses than
                                // planned: stop here.
                                done.push(Err(e));
                                break;
                            }
                        }
                    }
                    let timing = node_name.map(|n| (n, done.len(), started.elapsed(), each));
                    (timing, done)
                });
                let created = creator.join().unwrap_or_default();
                (outcomes, created)
            })
        })
        .await
        .context("CNI ADD task")?;
        let (outcomes, netns_create) = outcomes;

        let (timings, outcomes): (Vec<_>, Vec<_>) = outcomes.into_iter().unzip();
        type NodeAdds = Vec<(String, usize, Duration)>;
        let (node_adds, pod_adds): (NodeAdds, Vec<Vec<Duration>>) = timings
            .into_iter()
            .flatten()
            .map(|(n, count, total, each)| ((n, count, total), each))
            .unzip();
        let mut added = BTreeMap::new();
        let mut errors = vec![];
        for r in outcomes.into_iter().flatten() {
            match r.and_then(|(pod, node, ns, result)| {
                handle_of(ns, &pod, node, result, caps[&pod].clone()).map(|h| (pod, h))
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
            pod_adds,
            netns_create,
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
                h.netns.path(),
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
            h.netns.path(),
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
    pub(super) fn deleter(&self) -> impl FnOnce() -> Vec<TeardownError> + Send + 'static {
        let every: Vec<Attachment> = self
            .pods
            .iter()
            .flat_map(|(pod, h)| {
                attachments(
                    &self.plan,
                    &h.node,
                    &self.nodes[&h.node],
                    pod,
                    h.netns.path(),
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
    netns_path: PathBuf,
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
                netns: netns_path.clone(),
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
                plugin_dir: handle.networks.plugin_dir.clone(),
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
    netns: Netns,
    pod: &PodRef,
    node: String,
    result: CniResult,
    capability_args: Map<String, Value>,
) -> Result<PodHandle> {
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

/// The pods of every node (node index, pod, namespace name) in the order the node
/// threads ADD them when they all go at the same pace: each node's first pod, then each
/// node's second, and so on. The namespace creator goes in this order, one namespace
/// at a time, so ADDs start as soon as the first namespaces exist instead of after all
/// of them: creating 5 000 namespaces first took 8-11 s at 1.6-2.1 ms each on one
/// thread while the other core waited (`cargo xtask bench --scale`, 20x250). Creating
/// them on the node threads themselves, right before each ADD, measured worse (20
/// creations at once contend in the kernel with the plugins' netlink work: 61 ms a
/// namespace), so one thread creates them all.
fn round_robin(per_node: Vec<Vec<(PodRef, String)>>) -> Vec<(usize, PodRef, String)> {
    let mut queues: Vec<_> = per_node.into_iter().map(Vec::into_iter).collect();
    let mut out = vec![];
    loop {
        let before = out.len();
        for (i, q) in queues.iter_mut().enumerate() {
            if let Some((pod, name)) = q.next() {
                out.push((i, pod, name));
            }
        }
        if out.len() == before {
            return out;
        }
    }
}

/// Undoes attachments (DEL, in reverse ADD order per pod) and deletes the namespaces.
fn undo(every: Vec<Attachment>, names: &[String]) -> Vec<String> {
    let mut errors = del_many(interleave_nodes(every));
    for name in names {
        if let Err(e) = netns::delete(name) {
            errors.push(TeardownError::Namespace {
                name: name.clone(),
                message: format!("{e:#}"),
            });
        }
    }
    errors.iter().map(ToString::to_string).collect()
}

/// DELs attachments on a few threads; returns the failures, keyed by pod interface.
fn del_many(every: Vec<Attachment>) -> Vec<TeardownError> {
    let keys: Vec<(String, String, String)> = every
        .iter()
        .map(|a| {
            (
                a.rt.node_netns.clone(),
                a.rt.pod.clone(),
                a.rt.ifname.clone(),
            )
        })
        .collect();
    cni::parallel_map(every, sweep::DEL_THREADS, |a| {
        cni::del(&a.node, &a.list, &a.rt, &a.cache_dir)
    })
    .into_iter()
    .zip(keys)
    .filter_map(|(r, (node, pod, ifname))| {
        r.err().map(|e| TeardownError::Del {
            node,
            pod,
            ifname,
            message: e.to_string(),
        })
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_created_in_the_order_the_node_threads_use_them() {
        let node = |n: &str, pods: usize| -> Vec<(PodRef, String)> {
            (0..pods)
                .map(|i| (PodRef::new("x", format!("{n}-{i}")), format!("ns-{n}-{i}")))
                .collect()
        };
        let order: Vec<(usize, String)> =
            round_robin(vec![node("a", 3), node("b", 1), node("c", 2)])
                .into_iter()
                .map(|(i, _, name)| (i, name))
                .collect();
        let want = [
            (0, "ns-a-0"),
            (1, "ns-b-0"),
            (2, "ns-c-0"),
            (0, "ns-a-1"),
            (2, "ns-c-1"),
            (0, "ns-a-2"),
        ];
        assert_eq!(order, want.map(|(i, n)| (i, n.to_string())).to_vec());
        assert!(round_robin(vec![]).is_empty());
    }
}
