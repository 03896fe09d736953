//! Who owns a pod, as a user names it (`Deployment/frontend`, or the pod itself when
//! nothing does), and `check --group-by owner`: a step's matrices with a controller's
//! replicas folded into one row and one column, showing `.`/`X` when they all agree and
//! the split (`allowed/all`, e.g. `2/3`) when they do not (`~`: every cell is a Service
//! whose backends the policies treat differently).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use k8s_openapi::api::core::v1::Pod;
use sim::matrix::{Cell, StepResult, Verdict};
use sim::objects::{ClusterObjects, PodRef};
use sim::protocol::PortProto;
use sim::scenario::Peer;

/// The controller of a pod as its user knows it (`Deployment/frontend`), from the pod's
/// controller `ownerReference`: a ReplicaSet named `<deployment>-<pod-template-hash>`
/// stands for its Deployment, as `kubectl` shows it. `None` for a bare pod.
pub fn controller(pod: &Pod) -> Option<String> {
    let refs = pod.metadata.owner_references.as_deref().unwrap_or_default();
    let owner = refs
        .iter()
        .find(|r| r.controller == Some(true))
        .or(refs.first())?;
    let hash = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"));
    if owner.kind == "ReplicaSet"
        && let Some(hash) = hash
        && let Some(deployment) = owner.name.strip_suffix(&format!("-{hash}"))
    {
        return Some(format!("Deployment/{deployment}"));
    }
    Some(format!("{}/{}", owner.kind, owner.name))
}

/// The row/column label a pod folds into: `ns/Kind/name` for a controller's pods, the
/// pod itself (`ns/name`) otherwise.
pub fn owner_label(objects: &ClusterObjects, pod: &PodRef) -> String {
    match objects.pods.get(pod).and_then(controller) {
        Some(c) => format!("{}/{c}", pod.namespace),
        None => pod.to_string(),
    }
}

/// A peer's label once folded: pods by owner (hostNetwork ones marked, their replicas
/// being on different nodes), everything else as itself.
fn label(objects: &ClusterObjects, peer: &Peer) -> String {
    match peer {
        Peer::Pod(p) if objects.pods.get(p).is_some_and(sim::objects::host_network) => {
            format!("{} (host network)", owner_label(objects, p))
        }
        Peer::Pod(p) => owner_label(objects, p),
        other => other.to_string(),
    }
}

/// Whether a cell is reachable: `Some(true)`, `Some(false)`, or `None` when a Service's
/// backends differ (or nothing was measured). A pod cell is its measurement. A Service
/// cell is the oracle's per-backend verdicts when the probes agreed with them (one probe
/// lands on one backend and cannot show that they differ), else its probes: every one
/// answered, none, or some.
pub fn reached(cell: &Cell) -> Option<bool> {
    if let Some(svc) = &cell.service
        && !svc.backends.is_empty()
        && cell.mismatch().is_none()
    {
        let allowed = svc
            .backends
            .iter()
            .filter(|(_, v)| *v == Verdict::Allow)
            .count();
        return match allowed {
            0 => Some(false),
            n if n == svc.backends.len() => Some(true),
            _ => None,
        };
    }
    match &cell.service {
        Some(svc) if svc.spread.probes() > 0 => {
            let r = svc.spread.reached();
            if r == svc.spread.probes() {
                Some(true)
            } else if r == 0 {
                Some(false)
            } else {
                None
            }
        }
        _ => cell.measured.outcome.verdict().map(|v| v == Verdict::Allow),
    }
}

/// The step's tables with pods folded by owner. A pod's cell to itself is left out (it
/// never leaves the pod); a cell that could not be measured counts as not reached.
pub fn render_grouped(step: &StepResult, objects: &ClusterObjects) -> String {
    type Key = (PortProto, String, String);
    // (reached, split over a Service's backends, all)
    let mut groups: BTreeMap<Key, (usize, usize, usize)> = BTreeMap::new();
    for c in step.cells.iter().filter(|c| !c.is_self()) {
        let key = (c.port, label(objects, &c.from), label(objects, &c.to));
        let e = groups.entry(key).or_default();
        e.2 += 1;
        match reached(c) {
            Some(true) => e.0 += 1,
            None if c.service.is_some() => e.1 += 1,
            _ => {}
        }
    }
    let ports: BTreeSet<PortProto> = groups.keys().map(|k| k.0).collect();
    let mut out = String::new();
    for port in ports {
        let here: BTreeMap<(&str, &str), (usize, usize, usize)> = groups
            .iter()
            .filter(|(k, _)| k.0 == port)
            .map(|(k, v)| ((k.1.as_str(), k.2.as_str()), *v))
            .collect();
        let rows: BTreeSet<&str> = here.keys().map(|k| k.0).collect();
        let cols: BTreeSet<&str> = here.keys().map(|k| k.1).collect();
        let row_w = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let col_w: Vec<usize> = cols.iter().map(|c| c.len().max(3)).collect();
        let _ = writeln!(out, "{port}");
        let _ = write!(out, "{:row_w$}", "");
        for (c, w) in cols.iter().zip(&col_w) {
            let _ = write!(out, "  {c:<w$}");
        }
        out.push('\n');
        for r in &rows {
            let _ = write!(out, "{r:<row_w$}");
            for (c, w) in cols.iter().zip(&col_w) {
                let s = match here.get(&(*r, *c)) {
                    None => "-".to_string(),
                    Some((_, split, n)) if split == n => "~".to_string(),
                    Some((a, _, n)) if a == n => ".".to_string(),
                    Some((0, _, _)) => "X".to_string(),
                    Some((a, _, n)) => format!("{a}/{n}"),
                };
                let _ = write!(out, "  {s:<w$}");
            }
            while out.ends_with(' ') {
                out.pop();
            }
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use sim::matrix::{Measurement, Outcome};

    fn pod(name: &str, owner: Option<(&str, &str)>, hash: Option<&str>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("app".into());
        if let Some(h) = hash {
            p.metadata.labels = Some([("pod-template-hash".to_string(), h.to_string())].into());
        }
        p.metadata.owner_references = owner.map(|(kind, name)| {
            vec![OwnerReference {
                kind: kind.into(),
                name: name.into(),
                controller: Some(true),
                ..Default::default()
            }]
        });
        p
    }

    fn cell(from: &str, to: &str, outcome: Outcome) -> Cell {
        Cell {
            from: from.parse().unwrap(),
            to: to.parse().unwrap(),
            port: "TCP/80".parse().unwrap(),
            client_ip: None,
            expected: None,
            asserted: true,
            measured: Measurement {
                outcome,
                answered_by: None,
                seen_source: None,
                detail: String::new(),
                elapsed_us: 1,
            },
            oracle: None,
            reason: None,
            service: None,
        }
    }

    #[test]
    fn a_deployments_replicas_fold_and_a_split_shows_as_a_fraction() {
        let mut objects = ClusterObjects::default();
        for (name, o, h) in [
            (
                "web-5d8f7c9b4-abcde",
                Some(("ReplicaSet", "web-5d8f7c9b4")),
                Some("5d8f7c9b4"),
            ),
            (
                "web-5d8f7c9b4-fghij",
                Some(("ReplicaSet", "web-5d8f7c9b4")),
                Some("5d8f7c9b4"),
            ),
            ("db-0", Some(("StatefulSet", "db")), None),
            ("client", None, None),
        ] {
            objects
                .pods
                .insert(PodRef::new("app", name), pod(name, o, h));
        }
        assert_eq!(
            owner_label(&objects, &PodRef::new("app", "web-5d8f7c9b4-abcde")),
            "app/Deployment/web"
        );
        assert_eq!(
            owner_label(&objects, &PodRef::new("app", "db-0")),
            "app/StatefulSet/db"
        );
        assert_eq!(
            owner_label(&objects, &PodRef::new("app", "client")),
            "app/client"
        );
        let step = StepResult {
            name: "initial".into(),
            cells: vec![
                cell("app/client", "app/web-5d8f7c9b4-abcde", Outcome::Allowed),
                cell("app/client", "app/web-5d8f7c9b4-fghij", Outcome::Rejected),
                cell("app/client", "app/db-0", Outcome::Allowed),
                cell("app/db-0", "app/web-5d8f7c9b4-abcde", Outcome::Dropped),
                cell("app/db-0", "app/web-5d8f7c9b4-fghij", Outcome::Refused),
                cell("app/db-0", "app/db-0", Outcome::Allowed),
            ],
            ..Default::default()
        };
        let text = render_grouped(&step, &objects);
        let line = |start: &str| {
            text.lines()
                .find(|l| l.starts_with(start))
                .unwrap_or_default()
                .split_whitespace()
                .skip(1)
                .collect::<Vec<_>>()
        };
        // Columns: app/Deployment/web, app/StatefulSet/db (sorted).
        assert!(
            text.contains("app/Deployment/web  app/StatefulSet/db"),
            "{text}"
        );
        assert_eq!(line("app/client"), vec!["1/2", "."]);
        // db-0 to itself is left out: its row has no db column entry.
        assert_eq!(line("app/StatefulSet/db"), vec!["X", "-"]);
    }
}
