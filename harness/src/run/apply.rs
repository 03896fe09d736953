//! Applying a step to the live cluster: pods through the CNI plugins (with their probe
//! servers; a hostNetwork pod gets no CNI call and serves in its node's namespace, at
//! its node's address), the other objects into the model, the rules through the service proxy and
//! the policy engine, and reading back what each installed.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use anyhow::{Context, Result, anyhow};
use sim::objects::{
    ClusterObjects, Kind, Object, PodRef, declared_ports, host_network, pod_ip, pod_node,
};
use sim::scenario::{Change, Peer, Scenario, Step};

use crate::netns::Netns;

use crate::cluster::Cluster;
use crate::cluster::{AddOptions, NewPod};
use crate::policy::{self, SyncReport};
use crate::probe::{self, ServerSpec, Servers};
use crate::proxy::ProxySyncReport;

use super::{CniReport, DEFAULT_CNI_CHECK, Live, dns_step::without_dns_ports, ms};

/// Brings the service proxy (when there is one) and then the policy engine in line with
/// the objects in every node, and forgets the nodes' tracked flows if either changed
/// anything. The proxy goes first so that the policy engine's jumps end up above
/// kube-proxy's in the built-in chains (see [`crate::proxy`]).
pub(super) fn sync_rules(live: &mut Live) -> Result<(Option<ProxySyncReport>, SyncReport)> {
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
pub(super) fn installed_proxy_rules(live: &Live) -> Result<Vec<(String, String)>> {
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
pub(super) fn installed_rules(live: &Live) -> Result<Vec<(String, String)>> {
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

/// Applies one step's changes: namespaces, pods and pod deletions first, in order (pods
/// need their IPs before anything may refer to them), then the other deletions, labels
/// and the other objects.
pub(super) async fn apply_step(
    scenario: &Scenario,
    step: &Step,
    live: &mut Live,
    cni: &mut CniReport,
) -> Result<()> {
    let mut later = Vec::new();
    let mut new_pods = Vec::new();
    let mut deleted = Vec::new();
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
            // Pod deletions in their place, as the parser checked them: a controller's
            // rollout deletes a pod before it creates the next (a DaemonSet's keeps the
            // name; a hostNetwork one needs the old pod's ports free on the node).
            Change::Delete {
                kind: Kind::Pod,
                namespace,
                name,
            } => {
                live.objects.delete(Kind::Pod, namespace, name);
                deleted.push(PodRef::new(namespace, name));
            }
            other => later.push(other),
        }
    }
    // Deleted pods leave before new ones arrive: hostNetwork pods stop their servers, and
    // a pod created again under the same name is DELeted from its old attachments first.
    let replaced: Vec<PodRef> = deleted
        .iter()
        .filter(|p| new_pods.contains(p) && live.cluster.pod(p).is_some())
        .cloned()
        .collect();
    for p in &deleted {
        live.servers.remove(p);
        live.host_network.remove(p);
    }
    if !replaced.is_empty() {
        live.cluster.remove_pods(&replaced).await?;
    }
    // A hostNetwork pod gets no CNI call: it has its node's namespace and address, as
    // the kubelet reports it.
    let (on_host, new_pods): (Vec<PodRef>, Vec<PodRef>) = new_pods
        .into_iter()
        .partition(|p| live.objects.pods.get(p).is_some_and(host_network));
    for p in &on_host {
        let node = live
            .objects
            .pods
            .get(p)
            .and_then(pod_node)
            .unwrap_or_default()
            .to_string();
        let ip = live
            .cluster
            .plan()
            .node(&node)
            .map(|n| n.underlay_ip)
            .ok_or_else(|| {
                anyhow!(
                    "hostNetwork pod {p} is bound to node {node}, which the cluster does not have"
                )
            })?;
        live.objects.set_pod_ip(p, ip);
        live.host_network.insert(p.clone(), node);
    }
    start_servers(live, &on_host).await?;
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
    // hostNetwork pods have only their servers to stop.
    let host_gone: Vec<PodRef> = live
        .host_network
        .keys()
        .filter(|p| !live.objects.pods.contains_key(*p))
        .cloned()
        .collect();
    for p in &host_gone {
        live.servers.remove(p);
        live.host_network.remove(p);
    }
    if !gone.is_empty() {
        for p in &gone {
            live.servers.remove(p);
        }
        live.cluster.remove_pods(&gone).await?;
    }
    Ok(())
}

/// The network namespace a pod's processes run in: its own, or its node's for a
/// hostNetwork pod.
pub(super) fn pod_netns(live: &Live, pod: &PodRef) -> Option<Netns> {
    match live.host_network.get(pod) {
        Some(node) => live.cluster.node_netns(node).cloned(),
        None => live.cluster.pod(pod).map(|h| h.netns.clone()),
    }
}

pub(super) fn ip_of(objects: &ClusterObjects, pod: &PodRef) -> Option<Ipv4Addr> {
    objects.pods.get(pod).and_then(pod_ip)
}

pub(super) async fn start_servers(live: &mut Live, pods: &[PodRef]) -> Result<()> {
    for pod in pods {
        let netns = pod_netns(live, pod).ok_or_else(|| anyhow!("pod {pod} has no namespace"))?;
        let ports = live
            .objects
            .pods
            .get(pod)
            .map(|p| declared_ports(p).into_iter().map(|d| d.port).collect())
            .unwrap_or_default();
        let ports = without_dns_ports(live, pod, ports);
        let spec = ServerSpec {
            name: pod.to_string(),
            netns,
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
pub(super) async fn start_host_servers(
    scenario: &Scenario,
    cluster: &Cluster,
) -> Result<Option<Servers>> {
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
