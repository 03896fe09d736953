//! Pods: their namespaces, and the CNI calls that wire them. Each pod joins two networks,
//! as under containerd: the loopback network on `lo`, then the pod network on `eth0`.
//! ADDs run in parallel across nodes but strictly in pod order within a node, so
//! host-local hands out the same addresses on every run. DELs run on a few threads at
//! once (their cost is mostly waiting), in any order.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use sim::objects::PodRef;
use sim::plan::Plan;

use super::{Cluster, NodeHandle, PodHandle};
use crate::cni::{self, CniResult, ConfList, RuntimeConf};
use crate::netns::{self, Netns, sweep};

/// One CNI attachment: a network joined on one interface of one pod.
#[derive(Debug, Clone)]
struct Attachment {
    node: Netns,
    list: ConfList,
    rt: RuntimeConf,
    cache_dir: PathBuf,
}

impl Cluster {
    /// Creates the pods' namespaces (in one batch) and wires them with CNI. Returns each
    /// pod's address, in the order given. Within a node pods are added sorted by
    /// namespace and name, so the same set of pods gets the same addresses every run.
    /// If any ADD fails, every pod of this call is removed again and the error names
    /// each failure.
    pub async fn add_pods(&mut self, pods: &[(PodRef, String)]) -> Result<Vec<(PodRef, Ipv4Addr)>> {
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
            return Ok(vec![]);
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
                        let atts = attachments(&self.plan, node, handle, &pod, &ns);
                        (pod, node.to_string(), atts)
                    })
                    .collect()
            })
            .collect();
        let threads = jobs.len();
        let every: Vec<Attachment> = jobs
            .iter()
            .flatten()
            .flat_map(|(_, _, atts)| atts.iter().cloned())
            .collect();
        let outcomes = tokio::task::spawn_blocking(move || {
            cni::parallel_map(jobs, threads, |node_pods| {
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
                done
            })
        })
        .await
        .context("CNI ADD task")?;

        let mut added = BTreeMap::new();
        let mut errors = vec![];
        for r in outcomes.into_iter().flatten() {
            match r.and_then(|(pod, node, result)| {
                handle_of(&made, &self.plan, &pod, node, result).map(|h| (pod, h))
            }) {
                Ok((pod, h)) => {
                    added.insert(pod, h);
                }
                Err(e) => errors.push(format!("{e:#}")),
            }
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
        let out = pods.iter().map(|(p, _)| (p.clone(), added[p].ip)).collect();
        self.pods.extend(added);
        Ok(out)
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
            every.extend(attachments(&self.plan, &h.node, node, pod, &h.netns));
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
    pub async fn check_pod(&self, pod: &PodRef) -> Result<()> {
        let h = self
            .pods
            .get(pod)
            .with_context(|| format!("pod {pod} is not in the cluster"))?;
        let atts = attachments(&self.plan, &h.node, &self.nodes[&h.node], pod, &h.netns);
        tokio::task::spawn_blocking(move || -> Result<()> {
            for a in &atts {
                cni::check(&a.node, &a.list, &a.rt, &a.cache_dir)?;
            }
            Ok(())
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
                attachments(&self.plan, &h.node, &self.nodes[&h.node], pod, &h.netns)
            })
            .collect();
        move || del_many(interleave_nodes(every))
    }
}

/// The pod's attachments in ADD order: `lo`, then `eth0`.
fn attachments(
    plan: &Plan,
    node: &str,
    handle: &NodeHandle,
    pod: &PodRef,
    ns: &Netns,
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
