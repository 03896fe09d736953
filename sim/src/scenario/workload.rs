//! Workload controllers in a scenario: a Deployment, StatefulSet, DaemonSet, Job, ... is
//! decoded strictly ([`decode::controller`]), expanded into the pods its controller would
//! create ([`crate::workloads::expand`]), and those pods are scheduled
//! ([`crate::workloads::schedule`]) and applied as ordinary Pod changes, so Services,
//! DNS, kube-proxy and policy follow them as they follow written Pods.
//!
//! A controller applied again converges as a finished rollout would: pods whose name
//! and template are unchanged stay; the others are deleted and the new ones created
//! (new names, new addresses). Scaling re-expands with the new count; deleting a
//! controller deletes its pods. A pod no node admits stays Pending: it is not created
//! (it has no address and nothing probes it), and a note says why.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use super::Change;
use super::build::Pending;
use super::decode;
use super::replay_check::{Declared, Sim};
use super::source::Source;
use super::yaml::join_key;
use crate::error::ScenarioError;
use crate::objects::{Kind, PodRef};
use crate::workloads::{self, Controller, NodeSpec, Owner, WorkloadKind};

/// A controller manifest waiting to be applied, with where it came from.
pub(super) struct PendingWorkload {
    pub src: Source,
    pub path: String,
    pub value: Value,
    pub kind: WorkloadKind,
}

/// A controller the cluster has, and where it was declared (errors about it point there).
#[derive(Clone)]
pub(super) struct Tracked {
    src: Source,
    path: String,
    controller: Controller,
}

/// `(namespace, kind, name)` of a controller.
pub(super) type ControllerKey = (String, WorkloadKind, String);

fn key_of(controller: &Controller) -> ControllerKey {
    let meta = controller.metadata();
    (
        meta.namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| super::build::DEFAULT_NAMESPACE.into()),
        controller.kind(),
        meta.name.clone().unwrap_or_default(),
    )
}

impl Sim<'_> {
    /// Applies controllers declared together (the first step's, or one `apply` entry),
    /// returning the changes to their pods in order: deletions, then creations.
    pub(super) fn apply_workloads(
        &mut self,
        items: &[PendingWorkload],
        declared: &mut Declared,
    ) -> Result<Vec<Change>, ScenarioError> {
        let mut list = Vec::new();
        let mut seen: BTreeMap<ControllerKey, &str> = BTreeMap::new();
        for w in items {
            let controller = decode::controller(&w.src, &w.path, &w.value, w.kind)?;
            let key = key_of(&controller);
            if let Some(first) = seen.insert(key.clone(), &w.path) {
                return Err(w.src.at_value(
                    &join_key(&w.path, "metadata.name"),
                    format!(
                        "{} {}/{} is declared twice; the first is at {first}",
                        key.1, key.0, key.2
                    ),
                ));
            }
            list.push(Tracked {
                src: w.src.clone(),
                path: w.path.clone(),
                controller,
            });
        }
        self.converge(list, declared)
    }

    /// The nodes of the cluster now, with their declared labels.
    pub(super) fn node_specs(&self) -> Vec<NodeSpec> {
        self.objects
            .nodes
            .iter()
            .map(|n| NodeSpec {
                name: n.clone(),
                labels: self.node_labels.get(n).cloned().unwrap_or_default(),
            })
            .collect()
    }

    /// Records a note once.
    pub(super) fn note(&mut self, note: String) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    /// The pods of one controller that exist now.
    fn pods_of(&self, key: &ControllerKey) -> Vec<PodRef> {
        let (ns, kind, name) = key;
        let owner = Owner {
            kind: *kind,
            name: name.clone(),
        };
        self.objects
            .pods
            .iter()
            .filter(|(r, p)| &r.namespace == ns && workloads::owner_of(p).as_ref() == Some(&owner))
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// Brings the pods of `list`'s controllers to what the controllers want.
    fn converge(
        &mut self,
        list: Vec<Tracked>,
        declared: &mut Declared,
    ) -> Result<Vec<Change>, ScenarioError> {
        let nodes = self.node_specs();
        let mut changes = Vec::new();
        let mut new_pods: Vec<(usize, Pod)> = Vec::new();
        for (i, t) in list.iter().enumerate() {
            let key = key_of(&t.controller);
            if !self.objects.namespaces.contains_key(&key.0) {
                return Err(t.src.at_value(
                    &join_key(&t.path, "metadata"),
                    format!(
                        "namespace {} does not exist at this point; declare it (kind: Namespace)",
                        key.0
                    ),
                ));
            }
            let expansion = workloads::expand(&t.controller, &nodes)
                .map_err(|e| t.src.at_value(&join_key(&t.path, e.path()), e.message()))?;
            for n in expansion.notes {
                self.note(n);
            }
            let wanted: BTreeMap<String, Pod> = expansion
                .pods
                .into_iter()
                .map(|p| (p.pod.metadata.name.clone().unwrap_or_default(), p.pod))
                .collect();
            let mut kept = BTreeSet::new();
            for old in self.pods_of(&key) {
                let same = wanted
                    .get(&old.name)
                    .is_some_and(|w| same_pod(&self.objects.pods[&old], w));
                if same {
                    kept.insert(old.name.clone());
                } else {
                    self.objects.delete(Kind::Pod, &old.namespace, &old.name);
                    changes.push(Change::Delete {
                        kind: Kind::Pod,
                        namespace: old.namespace,
                        name: old.name,
                    });
                }
            }
            new_pods.extend(
                wanted
                    .into_iter()
                    .filter(|(name, _)| !kept.contains(name))
                    .map(|(_, pod)| (i, pod)),
            );
        }
        // Creation order within a controller is name order (StatefulSet ordinals first
        // to last); all new pods are scheduled together, after the bound ones.
        let bound: Vec<Pod> = self.objects.pods.values().cloned().collect();
        let mut all = bound.clone();
        all.extend(new_pods.iter().map(|(_, p)| p.clone()));
        let namespaces = self
            .objects
            .namespaces
            .iter()
            .map(|(n, ns)| (n.clone(), ns.metadata.labels.clone().unwrap_or_default()))
            .collect();
        let schedule = workloads::schedule(&nodes, &namespaces, &all);
        for n in schedule.notes {
            self.note(n);
        }
        for ((i, mut pod), placement) in new_pods
            .into_iter()
            .zip(&schedule.placements[bound.len()..])
        {
            // A Pending pod is not created: the scheduler's note says why.
            let Some(node) = &placement.node else {
                continue;
            };
            pod.spec.get_or_insert_with(Default::default).node_name = Some(node.clone());
            let t = &list[i];
            let value = serde_json::to_value(&pod).map_err(|e| {
                t.src.at_value(
                    &t.path,
                    format!("cannot encode the pod {:?}: {e}", pod.metadata.name),
                )
            })?;
            let raw = self.apply(
                &Pending {
                    src: t.src.clone(),
                    path: t.path.clone(),
                    value,
                    kind: Kind::Pod,
                },
                declared,
            )?;
            changes.push(Change::Apply(raw));
        }
        for t in list {
            self.headless_service_check(&t);
            self.controllers.insert(key_of(&t.controller), t);
        }
        Ok(changes)
    }

    /// A StatefulSet's `serviceName` should name a headless Service: without one its pods
    /// get no DNS names (a warning, as the API server accepts it).
    fn headless_service_check(&mut self, t: &Tracked) {
        let Controller::StatefulSet(ss) = &t.controller else {
            return;
        };
        let Some(service) = ss.spec.as_ref().and_then(|s| s.service_name.as_deref()) else {
            return;
        };
        let (ns, _, name) = key_of(&t.controller);
        let headless = self
            .objects
            .services
            .get(&(ns.clone(), service.to_string()))
            .map(crate::services::is_headless);
        let problem = match headless {
            Some(true) => return,
            Some(false) => "is not headless (clusterIP: None)",
            None => "does not exist",
        };
        self.note(format!(
            "warning: StatefulSet {ns}/{name} names serviceName {service}, which {problem}: its pods get no <pod>.{service}.{ns}.svc names"
        ));
    }

    /// `delete: [{kind: Deployment, ...}]`: the controller and its pods go.
    pub(super) fn delete_workload(
        &mut self,
        src: &Source,
        path: &str,
        key: ControllerKey,
    ) -> Result<Vec<Change>, ScenarioError> {
        if self.controllers.remove(&key).is_none() {
            return Err(src.at_value(
                &join_key(path, "name"),
                format!("there is no {} {}/{} at this point", key.1, key.0, key.2),
            ));
        }
        let mut changes = Vec::new();
        for pod in self.pods_of(&key) {
            self.objects.delete(Kind::Pod, &pod.namespace, &pod.name);
            changes.push(Change::Delete {
                kind: Kind::Pod,
                namespace: pod.namespace,
                name: pod.name,
            });
        }
        Ok(changes)
    }

    /// `scale: [{kind, namespace, name, replicas}]`: the controller with a new count.
    pub(super) fn scale(
        &mut self,
        src: &Source,
        path: &str,
        key: ControllerKey,
        replicas: i64,
        declared: &mut Declared,
    ) -> Result<Vec<Change>, ScenarioError> {
        let Some(mut t) = self.controllers.get(&key).cloned() else {
            return Err(src.at_value(
                &join_key(path, "name"),
                format!("there is no {} {}/{} at this point", key.1, key.0, key.2),
            ));
        };
        let rp = join_key(path, "replicas");
        let n = i32::try_from(replicas)
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                src.at_value(
                    &rp,
                    format!("replicas must be from 0 to {}, not {replicas}", i32::MAX),
                )
            })?;
        let count = match &mut t.controller {
            Controller::Deployment(o) => o.spec.as_mut().map(|s| &mut s.replicas),
            Controller::ReplicaSet(o) => o.spec.as_mut().map(|s| &mut s.replicas),
            Controller::StatefulSet(o) => o.spec.as_mut().map(|s| &mut s.replicas),
            Controller::ReplicationController(o) => o.spec.as_mut().map(|s| &mut s.replicas),
            Controller::Job(o) => o.spec.as_mut().map(|s| &mut s.parallelism),
            Controller::DaemonSet(_) | Controller::CronJob(_) => {
                return Err(src.at_value(
                    &join_key(path, "kind"),
                    format!("a {} cannot be scaled (it has no replica count)", key.1),
                ));
            }
        };
        if let Some(count) = count {
            *count = Some(n);
        }
        // Errors from here on (too many pods) point at the scale entry.
        t.src = src.clone();
        t.path = path.to_string();
        self.converge(vec![t], declared).map_err(|mut e| {
            if e.path.ends_with("spec.replicas") || e.path.ends_with("spec.parallelism") {
                let at = src.at_value(&rp, "");
                e.path = rp.clone();
                e.location = at.location;
            }
            e
        })
    }

    /// The notes the controllers and the scheduler left, for [`super::Scenario::notes`].
    pub(super) fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }
}

/// The pod the controller wants is the one that runs: same labels, same spec (the
/// running one is bound to a node).
fn same_pod(running: &Pod, wanted: &Pod) -> bool {
    let mut spec = running.spec.clone();
    if let (Some(s), Some(w)) = (spec.as_mut(), wanted.spec.as_ref()) {
        s.node_name.clone_from(&w.node_name);
    }
    running.metadata.labels == wanted.metadata.labels && spec == wanted.spec
}
