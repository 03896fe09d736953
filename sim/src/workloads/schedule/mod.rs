//! Binding pods to nodes the way users steer a scheduler: `nodeName` (no scheduler at
//! all), `nodeSelector`, required node affinity, and required pod affinity and
//! anti-affinity, and the NodePorts filter (a node where another pod already holds a
//! host port the pod asks for, a hostNetwork pod's container ports included, is out).
//! Among the nodes that pass, a pod goes to the one with the fewest pods,
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

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;

use crate::objects::{HostPortUse, host_port_conflict};
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
    // Named by controller, so that the note reads the same after a scale step.
    let vacuous: BTreeSet<String> = pods
        .iter()
        .filter(|p| pod_affinity::anti_term_selects_nothing(p, pods, namespaces))
        .map(|p| match crate::workloads::owner::owner_of(p) {
            Some(o) => format!("{} {}/{}", o.kind, pod_namespace(p), o.name),
            None => pod_ref(p),
        })
        .collect();
    if !vacuous.is_empty() {
        notes.push(format!(
            "a required podAntiAffinity term selects no pod (compare its labelSelector with the pods' labels), so it keeps nothing apart: {}",
            vacuous.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
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
        if !admits_pod(pod, node_name, &self.node_labels[index]) {
            self.notes.push(format!(
                "pod {} names node {node_name:?}, but its nodeSelector or node affinity excludes that node: the kubelet refuses it (NodeAffinity) and it does not run",
                pod_ref(pod)
            ));
            return Err(Unplaced::Never);
        }
        if let Some((other, m)) = self.port_taken(pod, index) {
            self.notes.push(format!(
                "pod {} names node {node_name:?}, but port {} is already taken there by pod {other}: the kubelet refuses it (NodePorts) and it does not run",
                pod_ref(pod),
                m.port
            ));
            return Err(Unplaced::Never);
        }
        self.bound.push((pod, index));
        Ok(index)
    }

    /// A pod bound to node `i` that already holds a port `pod` would take there (host
    /// ports, and every container port of a hostNetwork pod), with that port.
    fn port_taken(&self, pod: &Pod, i: usize) -> Option<(String, HostPortUse)> {
        self.bound
            .iter()
            .filter(|(_, n)| *n == i)
            .find_map(|(other, _)| host_port_conflict(pod, other).map(|m| (pod_ref(other), m)))
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
        if !admits_pod(pod, &self.nodes[i].name, &self.node_labels[i]) {
            return Some("didn't match Pod's node affinity/selector");
        }
        if self.port_taken(pod, i).is_some() {
            // The NodePorts filter's words.
            return Some("didn't have free ports for the requested pod ports");
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

/// [`admits`] for a pod (one without a spec asks for nothing).
fn admits_pod(pod: &Pod, node_name: &str, node_labels: &BTreeMap<String, String>) -> bool {
    pod.spec
        .as_ref()
        .is_none_or(|s| admits(s, node_name, node_labels))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<NodeSpec> {
        (1..=n).map(|i| NodeSpec::new(format!("n{i}"))).collect()
    }

    fn pod(name: &str, labels: serde_json::Value, spec: serde_json::Value) -> Pod {
        let mut spec = spec;
        spec["containers"] = serde_json::json!([{"name": "c"}]);
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": spec
        }))
        .unwrap()
    }

    fn anti(app: &str, key: &str) -> serde_json::Value {
        serde_json::json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}
        ]}}})
    }

    fn nodes_of(s: &Schedule) -> Vec<Option<&str>> {
        s.placements.iter().map(|p| p.node.as_deref()).collect()
    }

    fn run(nodes: &[NodeSpec], pods: &[Pod]) -> Schedule {
        schedule(nodes, &NamespaceLabels::new(), pods)
    }

    #[test]
    fn least_loaded_node_first_in_node_order_on_a_tie() {
        let pods: Vec<Pod> = (0..4)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    serde_json::json!({}),
                    serde_json::json!({}),
                )
            })
            .collect();
        let s = run(&nodes(3), &pods);
        assert_eq!(
            nodes_of(&s),
            [Some("n1"), Some("n2"), Some("n3"), Some("n1")]
        );
        assert!(s.notes.is_empty());
    }

    #[test]
    fn node_name_binds_and_counts_toward_load() {
        let pods = [
            pod(
                "pinned",
                serde_json::json!({}),
                serde_json::json!({"nodeName": "n1"}),
            ),
            pod("free", serde_json::json!({}), serde_json::json!({})),
            pod(
                "ghost",
                serde_json::json!({}),
                serde_json::json!({"nodeName": "n9"}),
            ),
        ];
        let s = run(&nodes(2), &pods);
        assert_eq!(nodes_of(&s), [Some("n1"), Some("n2"), None]);
        assert!(
            s.notes[0].contains("\"n9\", which does not exist"),
            "{:?}",
            s.notes
        );
    }

    #[test]
    fn node_selector_picks_labelled_nodes_or_leaves_the_pod_pending() {
        let mut ns = nodes(3);
        ns[2].labels.insert("disk".into(), "ssd".into());
        let pods = [
            pod(
                "a",
                serde_json::json!({}),
                serde_json::json!({"nodeSelector": {"disk": "ssd"}}),
            ),
            pod(
                "b",
                serde_json::json!({}),
                serde_json::json!({"nodeSelector": {"kubernetes.io/os": "linux"}}),
            ),
            pod(
                "c",
                serde_json::json!({}),
                serde_json::json!({"nodeSelector": {"disk": "nvme"}}),
            ),
        ];
        let s = run(&ns, &pods);
        assert_eq!(nodes_of(&s), [Some("n3"), Some("n1"), None]);
        assert_eq!(
            s.notes,
            [
                "pod default/c stays Pending: 0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector"
            ]
        );
    }

    #[test]
    fn anti_affinity_spreads_three_replicas_and_leaves_one_pending_on_two_nodes() {
        let replicas: Vec<Pod> = (0..3)
            .map(|i| {
                pod(
                    &format!("web-{i}"),
                    serde_json::json!({"app": "web"}),
                    anti("web", "kubernetes.io/hostname"),
                )
            })
            .collect();
        let s = run(&nodes(3), &replicas);
        assert_eq!(nodes_of(&s), [Some("n1"), Some("n2"), Some("n3")]);
        let s = run(&nodes(2), &replicas);
        assert_eq!(nodes_of(&s), [Some("n1"), Some("n2"), None]);
        assert_eq!(
            s.notes,
            [
                "pod default/web-2 stays Pending: 0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules"
            ]
        );
    }

    #[test]
    fn an_anti_affinity_term_that_selects_no_pod_spreads_nothing_and_says_so() {
        // The Kubernetes docs' ZooKeeper example: the term selects app=zk, the pods are
        // labelled app.kubernetes.io/name=zk, so three replicas fit on two nodes.
        let replicas: Vec<Pod> = (0..3)
            .map(|i| {
                pod(
                    &format!("zk-{i}"),
                    serde_json::json!({"app.kubernetes.io/name": "zk"}),
                    anti("zk", "kubernetes.io/hostname"),
                )
            })
            .collect();
        let s = run(&nodes(2), &replicas);
        assert_eq!(nodes_of(&s), [Some("n1"), Some("n2"), Some("n1")]);
        assert_eq!(
            s.notes,
            [
                "a required podAntiAffinity term selects no pod (compare its labelSelector with the pods' labels), so it keeps nothing apart: default/zk-0, default/zk-1, default/zk-2"
            ]
        );
    }

    #[test]
    fn existing_pods_anti_affinity_keeps_others_away() {
        let pods = [
            pod(
                "loner",
                serde_json::json!({"app": "loner"}),
                anti("web", "kubernetes.io/hostname"),
            ),
            pod(
                "web",
                serde_json::json!({"app": "web"}),
                serde_json::json!({"nodeSelector": {"kubernetes.io/hostname": "n1"}}),
            ),
        ];
        let s = run(&nodes(2), &pods);
        assert_eq!(nodes_of(&s), [Some("n1"), None]);
        assert!(s.notes[0].contains("1 node(s) didn't match Pod's node affinity/selector, 1 node(s) didn't satisfy existing pods anti-affinity rules"), "{:?}", s.notes);
    }

    #[test]
    fn affinity_joins_its_peer_even_when_the_peer_comes_later() {
        let with_db = serde_json::json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}
        ]}}});
        let pods = [
            pod("filler", serde_json::json!({}), serde_json::json!({})),
            pod("app", serde_json::json!({"app": "app"}), with_db),
            pod(
                "db",
                serde_json::json!({"app": "db"}),
                serde_json::json!({}),
            ),
        ];
        let s = run(&nodes(3), &pods);
        // db goes to n2 (n1 has the filler); app, retried after, joins it.
        assert_eq!(nodes_of(&s), [Some("n1"), Some("n2"), Some("n2")]);
        assert!(s.notes.is_empty(), "{:?}", s.notes);
    }

    #[test]
    fn any_topology_key_from_node_labels() {
        let mut ns = nodes(4);
        for (n, zone) in ns.iter_mut().zip(["a", "a", "b", "b"]) {
            n.labels
                .insert("topology.kubernetes.io/zone".into(), zone.into());
        }
        let replicas: Vec<Pod> = (0..3)
            .map(|i| {
                pod(
                    &format!("z-{i}"),
                    serde_json::json!({"app": "z"}),
                    anti("z", "topology.kubernetes.io/zone"),
                )
            })
            .collect();
        let s = run(&ns, &replicas);
        assert_eq!(nodes_of(&s), [Some("n1"), Some("n3"), None]);
        // A key no node has: anti-affinity is always satisfied.
        let s = run(
            &nodes(1),
            &[
                pod("r0", serde_json::json!({"app": "r"}), anti("r", "rack")),
                pod("r1", serde_json::json!({"app": "r"}), anti("r", "rack")),
            ],
        );
        assert_eq!(nodes_of(&s), [Some("n1"), Some("n1")]);
    }

    #[test]
    fn namespaces_of_a_term() {
        let mut other_ns: NamespaceLabels = NamespaceLabels::new();
        other_ns.insert(
            "other".into(),
            [("team".to_string(), "x".to_string())].into(),
        );
        let mut elsewhere = pod(
            "db",
            serde_json::json!({"app": "db"}),
            serde_json::json!({}),
        );
        elsewhere.metadata.namespace = Some("other".into());
        let own_ns_only = pod(
            "a",
            serde_json::json!({"app": "a"}),
            anti("db", "kubernetes.io/hostname"),
        );
        let s = schedule(&nodes(1), &other_ns, &[elsewhere.clone(), own_ns_only]);
        assert_eq!(nodes_of(&s), [Some("n1"), Some("n1")]);
        let mut by_selector = anti("db", "kubernetes.io/hostname");
        by_selector["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            [0]["namespaceSelector"] = serde_json::json!({"matchLabels": {"team": "x"}});
        let s = schedule(
            &nodes(1),
            &other_ns,
            &[elsewhere, pod("b", serde_json::json!({}), by_selector)],
        );
        assert_eq!(nodes_of(&s), [Some("n1"), None]);
    }

    #[test]
    fn match_label_keys_narrow_a_term_to_the_pods_own_value() {
        let mut term = anti("web", "kubernetes.io/hostname");
        term["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
            ["matchLabelKeys"] = serde_json::json!(["pod-template-hash"]);
        let old = pod(
            "old",
            serde_json::json!({"app": "web", "pod-template-hash": "a"}),
            term.clone(),
        );
        let new = pod(
            "new",
            serde_json::json!({"app": "web", "pod-template-hash": "b"}),
            term.clone(),
        );
        let twin = pod(
            "twin",
            serde_json::json!({"app": "web", "pod-template-hash": "b"}),
            term,
        );
        // During a rollout the new revision ignores the old one, but not its own kind.
        let s = run(&nodes(1), &[old, new, twin]);
        assert_eq!(nodes_of(&s), [Some("n1"), Some("n1"), None]);
    }

    #[test]
    fn what_is_not_modelled_is_noted_once_per_feature() {
        let spread = serde_json::json!({
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}],
            "tolerations": [{"operator": "Exists"}]
        });
        let s = run(
            &nodes(1),
            &[
                pod("a", serde_json::json!({}), spread.clone()),
                pod("b", serde_json::json!({}), spread),
            ],
        );
        assert_eq!(s.notes.len(), 2, "{:?}", s.notes);
        assert!(
            s.notes
                .iter()
                .any(|n| n.starts_with("topologySpreadConstraints")
                    && n.ends_with("default/a, default/b"))
        );
        assert!(
            s.notes
                .iter()
                .any(|n| n.starts_with("taints are not modelled"))
        );
    }

    /// A pod with one container declaring `port`, on the host network or with a hostPort.
    fn port_pod(name: &str, host_network: bool, port: i32, host_port: Option<i32>) -> Pod {
        let mut p = serde_json::json!({"containerPort": port});
        if let Some(h) = host_port {
            p["hostPort"] = h.into();
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "kube-system"},
            "spec": {"hostNetwork": host_network, "containers": [{"name": "c", "ports": [p]}]}
        }))
        .unwrap()
    }

    #[test]
    fn host_network_ports_are_host_ports_to_the_scheduler() {
        // Two agents on port 9100 cannot share a node; a third goes Pending on two nodes.
        let pods = [
            port_pod("a", true, 9100, None),
            port_pod("b", true, 9100, None),
            port_pod("c", true, 9100, None),
            // Another port shares a node happily.
            port_pod("d", true, 9200, None),
        ];
        let s = run(&nodes(2), &pods);
        assert_eq!(nodes_of(&s), [Some("n1"), Some("n2"), None, Some("n1")]);
        assert_eq!(
            s.notes,
            [
                "pod kube-system/c stays Pending: 0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports"
            ]
        );
        // A pod network pod's hostPort collides with a hostNetwork pod's containerPort.
        let s = run(
            &nodes(1),
            &[
                port_pod("agent", true, 8080, None),
                port_pod("web", false, 80, Some(8080)),
                port_pod("plain", false, 8080, None),
            ],
        );
        assert_eq!(nodes_of(&s), [Some("n1"), None, Some("n1")]);
        assert!(
            s.notes[0].contains("kube-system/web stays Pending"),
            "{:?}",
            s.notes
        );
    }

    #[test]
    fn a_named_node_whose_port_is_taken_refuses_the_pod() {
        let mut b = port_pod("b", true, 9100, None);
        b.spec.as_mut().unwrap().node_name = Some("n1".into());
        let s = run(&nodes(2), &[port_pod("a", true, 9100, None), b]);
        assert_eq!(nodes_of(&s), [Some("n1"), None]);
        assert_eq!(
            s.notes,
            [
                "pod kube-system/b names node \"n1\", but port TCP/9100 is already taken there by pod kube-system/a: the kubelet refuses it (NodePorts) and it does not run"
            ]
        );
    }
}
