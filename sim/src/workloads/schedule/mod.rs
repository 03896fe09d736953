//! Binding pods to nodes the way users steer a scheduler: `nodeName` (no scheduler at
//! all), `nodeSelector`, required node affinity, and required pod affinity and
//! anti-affinity. Among the nodes that pass, a pod goes to the one with the fewest pods,
//! the first in node order on a tie, so placements are deterministic. A pod no node
//! passes stays Pending, with the scheduler's kind of explanation ("0/2 nodes are
//! available: 2 node(s) didn't match pod anti-affinity rules"); as the real scheduler
//! retries, Pending pods are tried again after others were placed.
//!
//! Not modelled, and said in the notes when a pod uses them: topology spread
//! constraints, preferred (soft) affinities, taints and tolerations (nodes have no
//! taints), other schedulers, resources.

mod node_affinity;
mod pod_affinity;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use crate::workloads::node::NodeSpec;

pub use node_affinity::{admits, terms_match};
pub use pod_affinity::NamespaceLabels;

use pod_affinity::{Placed, Refusal};

/// Where one pod runs; `node: None` is a Pending pod (see the notes for why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub namespace: String,
    pub name: String,
    pub node: Option<String>,
}

/// Placements in the order the pods were given, and notes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    pub placements: Vec<Placement>,
    pub notes: Vec<String>,
}

/// Binds `pods`, taken in creation order, to `nodes`. A pod with `spec.nodeName` stays
/// there (the kubelet refuses it, leaving it unplaced, if its node selector or affinity
/// excludes the node or the node does not exist).
pub fn schedule(nodes: &[NodeSpec], namespaces: &NamespaceLabels, pods: &[Pod]) -> Schedule {
    let mut scheduler = Scheduler::new(nodes, namespaces);
    let mut nodes_of: Vec<Option<usize>> = vec![None; pods.len()];
    let mut retry = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        match scheduler.place(pod) {
            Ok(node) => nodes_of[i] = Some(node),
            Err(Unplaced::Unschedulable) => retry.push(i),
            Err(Unplaced::Never) => {}
        }
    }
    // The scheduler retries unschedulable pods when the cluster changed; here that is
    // whenever a pass placed something.
    loop {
        let before = retry.len();
        retry.retain(|&i| match scheduler.place_unbound(&pods[i]) {
            Ok(node) => {
                nodes_of[i] = Some(node);
                false
            }
            Err(_) => true,
        });
        if retry.is_empty() || retry.len() == before {
            break;
        }
    }
    for &i in &retry {
        let note = scheduler.explain(&pods[i]);
        scheduler.notes.push(note);
    }
    let placements = pods
        .iter()
        .zip(&nodes_of)
        .map(|(pod, node)| Placement {
            namespace: pod_namespace(pod).to_string(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            node: node.map(|n| nodes[n].name.clone()),
        })
        .collect();
    let mut notes = scheduler.notes;
    notes.extend(not_modelled_notes(pods));
    Schedule { placements, notes }
}

/// Why a pod was not placed.
enum Unplaced {
    /// No node passes now; another pass may place it.
    Unschedulable,
    /// It will never be placed by a scheduler (a missing node, scheduling gates).
    Never,
}

/// The nodes with their registered labels, and the pods bound so far.
struct Scheduler<'a> {
    nodes: &'a [NodeSpec],
    node_labels: Vec<BTreeMap<String, String>>,
    namespaces: &'a NamespaceLabels,
    bound: Vec<(&'a Pod, usize)>,
    notes: Vec<String>,
}

impl<'a> Scheduler<'a> {
    fn new(nodes: &'a [NodeSpec], namespaces: &'a NamespaceLabels) -> Self {
        Self {
            nodes,
            node_labels: nodes.iter().map(NodeSpec::registered_labels).collect(),
            namespaces,
            bound: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn place(&mut self, pod: &'a Pod) -> Result<usize, Unplaced> {
        let spec = pod.spec.as_ref();
        if let Some(node_name) = spec.and_then(|s| s.node_name.as_deref()) {
            return self.bind_named(pod, node_name);
        }
        if spec.is_some_and(|s| s.scheduling_gates.as_ref().is_some_and(|g| !g.is_empty())) {
            self.notes.push(format!(
                "pod {} stays Pending: it has scheduling gates, which nothing here removes",
                pod_ref(pod)
            ));
            return Err(Unplaced::Never);
        }
        self.place_unbound(pod)
    }

    /// `spec.nodeName`: no scheduler, but the kubelet still checks node affinity.
    fn bind_named(&mut self, pod: &'a Pod, node_name: &str) -> Result<usize, Unplaced> {
        let Some(index) = self.nodes.iter().position(|n| n.name == node_name) else {
            self.notes.push(format!(
                "pod {} names node {node_name:?}, which does not exist: it stays Pending",
                pod_ref(pod)
            ));
            return Err(Unplaced::Never);
        };
        let spec = pod.spec.clone().unwrap_or_default();
        if !admits(&spec, node_name, &self.node_labels[index]) {
            self.notes.push(format!(
                "pod {} names node {node_name:?}, but its nodeSelector or node affinity excludes that node: the kubelet refuses it (NodeAffinity) and it does not run",
                pod_ref(pod)
            ));
            return Err(Unplaced::Never);
        }
        self.bound.push((pod, index));
        Ok(index)
    }

    /// The least-loaded node that passes every filter (first in node order on a tie).
    fn place_unbound(&mut self, pod: &'a Pod) -> Result<usize, Unplaced> {
        let feasible = (0..self.nodes.len()).filter(|&i| self.refusal(pod, i).is_none());
        let best = feasible.min_by_key(|&i| self.bound.iter().filter(|(_, n)| *n == i).count());
        match best {
            Some(index) => {
                self.bound.push((pod, index));
                Ok(index)
            }
            None => Err(Unplaced::Unschedulable),
        }
    }

    /// Why the pod cannot go to node `i`, if it cannot.
    fn refusal(&self, pod: &Pod, i: usize) -> Option<&'static str> {
        let spec = pod.spec.clone().unwrap_or_default();
        if !admits(&spec, &self.nodes[i].name, &self.node_labels[i]) {
            return Some("didn't match Pod's node affinity/selector");
        }
        let placed: Vec<Placed> = self
            .bound
            .iter()
            .map(|(p, n)| Placed {
                pod: p,
                node_labels: &self.node_labels[*n],
            })
            .collect();
        pod_affinity::check(pod, &self.node_labels[i], &placed, self.namespaces)
            .err()
            .map(Refusal::words)
    }

    /// The scheduler's message for a pod that stays Pending.
    fn explain(&self, pod: &Pod) -> String {
        let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
        for i in 0..self.nodes.len() {
            if let Some(r) = self.refusal(pod, i) {
                *reasons.entry(r).or_default() += 1;
            }
        }
        let why: Vec<String> = reasons
            .iter()
            .map(|(r, n)| format!("{n} node(s) {r}"))
            .collect();
        let mut note = format!(
            "pod {} stays Pending: 0/{} nodes are available",
            pod_ref(pod),
            self.nodes.len()
        );
        if !why.is_empty() {
            note.push_str(": ");
            note.push_str(&why.join(", "));
        }
        note
    }
}

/// One note per scheduling feature that is not modelled, naming the pods that use it.
fn not_modelled_notes(pods: &[Pod]) -> Vec<String> {
    let mut users: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for pod in pods {
        let Some(spec) = &pod.spec else { continue };
        let affinity = spec.affinity.as_ref();
        let preferred = affinity.is_some_and(|a| {
            a.node_affinity.as_ref().is_some_and(|n| {
                n.preferred_during_scheduling_ignored_during_execution
                    .is_some()
            }) || a.pod_affinity.as_ref().is_some_and(|p| {
                p.preferred_during_scheduling_ignored_during_execution
                    .is_some()
            }) || a.pod_anti_affinity.as_ref().is_some_and(|p| {
                p.preferred_during_scheduling_ignored_during_execution
                    .is_some()
            })
        });
        let features = [
            (
                spec.topology_spread_constraints
                    .as_ref()
                    .is_some_and(|t| !t.is_empty()),
                "topologySpreadConstraints are not modelled (pods are spread to the least-loaded node)",
            ),
            (
                preferred,
                "preferred (soft) affinities are not modelled; only required ones place pods",
            ),
            (
                spec.tolerations.as_ref().is_some_and(|t| !t.is_empty()),
                "taints are not modelled (nodes have none), so tolerations change nothing",
            ),
            (
                spec.scheduler_name
                    .as_deref()
                    .is_some_and(|s| s != "default-scheduler"),
                "schedulerName is ignored: the one scheduler here places every pod",
            ),
        ];
        for (used, words) in features {
            if used {
                users.entry(words).or_default().push(pod_ref(pod));
            }
        }
    }
    users
        .into_iter()
        .map(|(words, pods)| format!("{words}: {}", pods.join(", ")))
        .collect()
}

fn pod_namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

fn pod_ref(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod_namespace(pod),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}
