//! Assembles a [`Scenario`] from its document and checks it as a whole before anything
//! is built.
//!
//! The initial objects (the implicit `default` namespace, then `model`, `manifests` and
//! `manifestFiles` in that order, then what the cluster gets without writing it, see
//! [`super::controllers`]) become the first step, ordered namespaces, pods, the rest.
//! Then every step of `steps:` is replayed, change by change, on the cluster's objects
//! ([`super::replay_check`]), so each cross-check sees the cluster as it will be at that
//! point; the probe, throughput and HTTP sections are checked against what ever exists.
//! Each mistake is reported at its file, line, column and field path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{Value, json};

use crate::error::ScenarioError;
use crate::objects::{Kind, PodRef};

use super::controllers::{cluster_dns, ingress_controller};
use super::decode;
use super::header::{self, Document};
use super::inputs::Inputs;
use super::model_shorthand;
use super::replay_check::{Declared, Sim};
use super::source::Source;
use super::workload::PendingWorkload;
use super::yaml::{self, join_index, join_key};
use super::{Change, LoadOptions, Peer, Scenario, Step, ThroughputSpec};
use crate::names;

/// The name of the first step (the cluster as the scenario builds it).
pub const INITIAL_STEP: &str = "initial";

pub(super) const DEFAULT_NAMESPACE: &str = "default";

/// A manifest waiting to be applied, with where it came from.
pub(super) struct Pending {
    pub(super) src: Source,
    pub(super) path: String,
    pub(super) value: Value,
    pub(super) kind: Kind,
}

pub(super) fn build(
    path: &Path,
    text: &str,
    opts: &LoadOptions,
) -> Result<Scenario, ScenarioError> {
    build_with(path, text, opts, &[])
}

/// [`build`], with manifest streams read by the caller applied after `manifestFiles`,
/// each decoded as one of them is ([`super::manifest_set`]).
pub(super) fn build_with(
    path: &Path,
    text: &str,
    opts: &LoadOptions,
    streams: &[super::manifest_set::ManifestStream],
) -> Result<Scenario, ScenarioError> {
    let (docs, positions) = yaml::parse(path, text, false)?;
    let src = Source::new(path, positions);
    let Some(root) = docs.into_iter().next().flatten() else {
        return Err(ScenarioError::new(
            path,
            None,
            "",
            "the scenario file is empty",
        ));
    };
    if !root.is_object() {
        return Err(src.at_value(
            "",
            "a scenario is a mapping with name, summary, cluster, manifests, expect, ...",
        ));
    }
    let doc: Document = src.deserialize("", &root)?;
    if doc.name.trim().is_empty() {
        return Err(src.at_value("name", "the scenario needs a name"));
    }
    if doc.summary.trim().contains('\n') {
        return Err(src.at_value(
            "summary",
            "the summary is one line (put the rest in description)",
        ));
    }
    let mut cluster = header::cluster(&src, doc.cluster.as_ref())?;
    let probe = header::probe(&src, doc.probe.as_ref())?;
    let load_balancer_pool = header::load_balancer_pool(&src, doc.cluster.as_ref(), &cluster)?;
    let dns = header::cluster_dns(&src, doc.cluster.as_ref(), &cluster)?;
    let mut sim = Sim::new(&cluster);
    sim.node_labels = header::node_labels(&src, doc.cluster.as_ref())?;
    sim.ranges.load_balancer_pool = load_balancer_pool;

    // The first step: every initial object, namespaces, then pods, then the rest.
    let mut pending = Vec::new();
    if let Some(model) = &doc.model {
        for o in model_shorthand::expand(&src, "model", model)? {
            let kind = decode::manifest_kind(&src, &o.path, &o.value)?;
            pending.push(Pending {
                src: src.clone(),
                path: o.path,
                value: o.value,
                kind,
            });
        }
    }
    let mut inputs = Inputs::default();
    for (i, value) in doc.manifests.iter().flatten().enumerate() {
        inputs.add(&src, &join_index("manifests", i), value.clone(), opts)?;
    }
    for (i, file) in doc.manifest_files.iter().flatten().enumerate() {
        inputs.manifest_file(&src, &join_index("manifestFiles", i), file, opts)?;
    }
    for stream in streams {
        if inputs.stream(&stream.name, &stream.text, opts)? == 0 {
            return Err(ScenarioError::new(
                &stream.name,
                None,
                "",
                "holds no manifests (only empty documents or comments)",
            ));
        }
    }
    pending.append(&mut inputs.objects);
    ingress_controller(&src, &doc, &mut pending);
    let declares_default = pending.iter().any(|p| {
        p.kind == Kind::Namespace
            && p.value.pointer("/metadata/name") == Some(&json!(DEFAULT_NAMESPACE))
    });
    if !declares_default {
        // The API server always has it; pods without a namespace land there.
        pending.insert(
            0,
            Pending {
                src: src.clone(),
                path: String::new(),
                value: json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": DEFAULT_NAMESPACE}}),
                kind: Kind::Namespace,
            },
        );
    }
    if let Some(d) = &dns {
        cluster_dns(&src, d, &mut pending);
    }
    let mut notes = inputs.notes();
    notes.extend(implicit_namespaces(&src, &mut pending, &inputs.workloads));
    // Services before the rest, so an Endpoints object may come before its Service in
    // the files (kubectl applies a directory in any order too).
    let rank = |k: Kind| match k {
        Kind::Namespace => 0,
        Kind::Pod => 1,
        Kind::Service => 2,
        _ => 3,
    };
    // A stable sort keeps file order within each group.
    pending.sort_by_key(|p| rank(p.kind));
    let mut first_seen = Declared::default();
    let mut changes = Vec::new();
    for p in pending {
        let raw = sim.apply(&p, &mut first_seen)?;
        changes.push(Change::Apply(raw));
    }
    // Controllers last: their pods are scheduled around the pods written as Pods.
    changes.extend(sim.apply_workloads(&inputs.workloads, &mut first_seen)?);
    let mut tier_notes = Vec::new();
    cluster_policy_notes(&mut tier_notes, INITIAL_STEP, &sim.objects, &cluster);
    let mut steps = vec![Step {
        name: INITIAL_STEP.to_string(),
        changes,
        expect: doc
            .expect
            .as_ref()
            .map(|v| sim.expectation(&src, "expect", v))
            .transpose()?,
        down_nodes: BTreeSet::new(),
        joined_nodes: vec![],
    }];
    // Nodes whose underlay link is down, with the step field that took each down.
    let mut down: BTreeMap<String, String> = BTreeMap::new();

    let mut step_names: BTreeMap<String, String> = BTreeMap::new();
    step_names.insert(INITIAL_STEP.to_string(), "the first step".to_string());
    // Where each node that some step adds joins, to say so when something names it
    // before that.
    for (i, s) in doc.steps.iter().flatten().enumerate() {
        for (j, n) in s.node_join.iter().flatten().enumerate() {
            sim.joins_later.entry(n.clone()).or_insert_with(|| {
                format!(
                    "it joins in step {:?} ({})",
                    s.name,
                    join_index(&join_key(&join_index("steps", i), "nodeJoin"), j)
                )
            });
        }
    }
    for (i, s) in doc.steps.iter().flatten().enumerate() {
        let sp = join_index("steps", i);
        let name_path = join_key(&sp, "name");
        if s.name.trim().is_empty() {
            return Err(src.at_value(&name_path, "a step needs a name"));
        }
        if let Some(other) = step_names.insert(s.name.clone(), sp.clone()) {
            return Err(src.at_value(
                &name_path,
                format!("step name {:?} is already used by {other}", s.name),
            ));
        }
        for (j, n) in s.node_join.iter().flatten().enumerate() {
            sim.join_node(&src, &join_index(&join_key(&sp, "nodeJoin"), j), n)?;
        }
        let mut changes = Vec::new();
        let mut declared = Declared::default();
        for (j, value) in s.apply.iter().flatten().enumerate() {
            let p = join_index(&join_key(&sp, "apply"), j);
            let mut one = Inputs::default();
            one.add(&src, &p, value.clone(), opts)?;
            notes.extend(one.notes());
            for o in &one.objects {
                changes.push(Change::Apply(sim.apply(o, &mut declared)?));
            }
            changes.extend(sim.apply_workloads(&one.workloads, &mut declared)?);
        }
        for (j, d) in s.delete.iter().flatten().enumerate() {
            let p = join_index(&join_key(&sp, "delete"), j);
            let kind = match d.kind.object_kind() {
                Ok(kind) => kind,
                Err(w) => {
                    let ns = d
                        .namespace
                        .clone()
                        .unwrap_or_else(|| DEFAULT_NAMESPACE.into());
                    changes.extend(sim.delete_workload(&src, &p, (ns, w, d.name.clone()))?);
                    continue;
                }
            };
            let namespace = sim.target(&src, &p, kind, d.namespace.as_deref(), &d.name)?;
            if kind == Kind::Namespace && d.name == DEFAULT_NAMESPACE {
                return Err(src.at_value(
                    &join_key(&p, "name"),
                    "the default namespace cannot be deleted",
                ));
            }
            sim.objects.delete(kind, &namespace, &d.name);
            changes.push(Change::Delete {
                kind,
                namespace,
                name: d.name.clone(),
            });
        }
        for (j, l) in s.label.iter().flatten().enumerate() {
            let p = join_index(&join_key(&sp, "label"), j);
            let kind = l.kind.object_kind().unwrap_or(Kind::Secret);
            if !matches!(kind, Kind::Pod | Kind::Namespace) {
                return Err(src.at_value(
                    &join_key(&p, "kind"),
                    "label changes apply to Pods and Namespaces",
                ));
            }
            let lp = join_key(&p, "labels");
            for (k, v) in &l.labels {
                let kp = join_key(&lp, k);
                names::label_key(k).map_err(|e| src.at_key(&kp, e))?;
                names::label_value(v).map_err(|e| src.at_value(&kp, e))?;
            }
            let namespace = sim.target(&src, &p, kind, l.namespace.as_deref(), &l.name)?;
            sim.objects
                .set_labels(kind, &namespace, &l.name, l.labels.clone());
            changes.push(Change::Label {
                kind,
                namespace,
                name: l.name.clone(),
                labels: l.labels.clone(),
            });
        }
        for (j, c) in s.scale.iter().flatten().enumerate() {
            let p = join_index(&join_key(&sp, "scale"), j);
            let ns = c
                .namespace
                .clone()
                .unwrap_or_else(|| DEFAULT_NAMESPACE.into());
            let key = (ns, c.kind(), c.name.clone());
            changes.extend(sim.scale(&src, &p, key, c.replicas, &mut declared)?);
        }
        cluster_policy_notes(&mut tier_notes, &s.name, &sim.objects, &cluster);
        node_links(&src, &sp, &sim, s, &mut down)?;
        let expect = s
            .expect
            .as_ref()
            .map(|v| sim.expectation(&src, &join_key(&sp, "expect"), v))
            .transpose()?;
        steps.push(Step {
            name: s.name.clone(),
            changes,
            expect,
            down_nodes: down.keys().cloned().collect(),
            joined_nodes: s.node_join.clone().unwrap_or_default(),
        });
    }

    // Probe peers may be pods that only some steps have.
    for (i, peer) in probe.from.iter().flatten().enumerate() {
        sim.peer_ever(&src, &join_index("probe.from", i), peer)?;
    }
    for (i, peer) in probe.to.iter().flatten().enumerate() {
        sim.peer_ever(&src, &join_index("probe.to", i), peer)?;
        sim.node_target(&src, &join_index("probe.to", i), peer)?;
    }
    dns_targets(
        &src,
        dns.as_ref(),
        probe.from.as_deref().unwrap_or_default(),
        probe.to.as_deref().unwrap_or_default(),
    )?;
    let throughput = throughput(&src, &sim, doc.throughput.as_deref().unwrap_or_default())?;
    let http = http_checks(&src, &sim, &steps, doc.http.as_deref().unwrap_or_default())?;
    // The default CNI list carries portmap and bandwidth only when some pod uses them.
    let (wants_bandwidth, wants_host_ports) = (sim.wants_bandwidth, sim.wants_host_ports);
    notes.extend(sim.take_notes());
    notes.extend(tier_notes.into_iter().map(|(step, n)| {
        if step == INITIAL_STEP {
            n
        } else {
            format!("step {step:?}: {n}")
        }
    }));
    cluster.cni.pods_want_bandwidth = wants_bandwidth;
    cluster.cni.pods_want_host_ports = wants_host_ports;

    let br_netfilter = header::br_netfilter(doc.cluster.as_ref());
    Ok(Scenario {
        notes,
        br_netfilter,
        name: doc.name.trim().to_string(),
        summary: doc.summary.trim().to_string(),
        description: doc.description.unwrap_or_default().trim_end().to_string(),
        path: path.to_path_buf(),
        cluster,
        load_balancer_pool,
        dns,
        probe,
        loopback: doc.loopback.map(Into::into).unwrap_or_default(),
        steps,
        throughput,
        http,
    })
}

/// What the reader must be told about the cluster-wide policies at one step (v1alpha1
/// forms mapped, same-priority overlaps, `policy: none` ignoring them), each once.
fn cluster_policy_notes(
    notes: &mut Vec<(String, String)>,
    step: &str,
    objects: &crate::objects::ClusterObjects,
    cluster: &super::ClusterConfig,
) {
    if objects.cluster_policies.is_empty() {
        return;
    }
    let mut new = crate::cluster_policy::from_objects::notes(objects);
    if cluster.policy == super::PolicyEngineKind::None {
        new.push(
            "the policy engine is none: the Admin and Baseline tiers (ClusterNetworkPolicy, \
             AdminNetworkPolicy, BaselineAdminNetworkPolicy) are ignored like NetworkPolicy"
                .to_string(),
        );
    }
    for n in new {
        if !notes.iter().any(|(_, old)| *old == n) {
            notes.push((step.to_string(), n));
        }
    }
}

/// `dns/NAME:PORT` targets need `cluster.dns`; the cluster DNS's own port 53 is served
/// by the DNS server, which answers DNS questions, not probes: it is reached with
/// `dns/` targets (whose query crosses it on the way), not probed directly.
fn dns_targets(
    src: &Source,
    dns: Option<&super::ClusterDns>,
    from: &[Peer],
    to: &[Peer],
) -> Result<(), ScenarioError> {
    // Only a pod has the cluster's resolv.conf: a node or host resolving a cluster name
    // would be a different lesson (their resolvers do not know the cluster DNS).
    if let Some(name) = to.iter().find(|p| matches!(p, Peer::Dns { .. }))
        && let Some((i, client)) = from
            .iter()
            .enumerate()
            .find(|(_, p)| !matches!(p, Peer::Pod(_)))
    {
        return Err(src.at_value(
            &join_index("probe.from", i),
            format!("{client} cannot resolve {name}: only pods have the cluster's resolv.conf; list the pods that probe names (and the {client} probes in another scenario)"),
        ));
    }
    for (i, peer) in to.iter().enumerate() {
        let path = join_index("probe.to", i);
        match peer {
            Peer::Dns { .. } if dns.is_none() => {
                return Err(src.at_value(
                    &path,
                    format!("{peer} needs the cluster DNS: add `dns: true` to `cluster`"),
                ));
            }
            Peer::Service {
                namespace,
                name,
                port: 53,
            } if dns.is_some()
                && namespace == crate::dns::NAMESPACE
                && name == crate::dns::SERVICE_NAME =>
            {
                return Err(src.at_value(
                    &path,
                    format!("{peer} is the cluster DNS, which answers DNS questions, not probes; probe a name with dns/NAME:PORT (its query goes through {peer})"),
                ));
            }
            Peer::Pod(p)
                if dns.is_some()
                    && p.namespace == crate::dns::NAMESPACE
                    && p.name == crate::dns::POD_NAME =>
            {
                return Err(src.at_value(
                    &path,
                    format!(
                        "{peer} is the cluster DNS pod; probe a name with dns/NAME:PORT instead"
                    ),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks a step's `nodeDown` and `nodeUp` against the nodes (`sim`'s) and their link state at that
/// point (`down`: each node down now, with the field that took it down) and updates it.
/// A node may not go down twice, come up while up, or do both in one step.
fn node_links(
    src: &Source,
    step_path: &str,
    sim: &Sim,
    step: &header::StepHeader,
    down: &mut BTreeMap<String, String>,
) -> Result<(), ScenarioError> {
    let exists = |p: &str, n: &str| {
        if sim.objects.nodes.iter().any(|x| x == n) {
            Ok(())
        } else {
            Err(src.at_value(p, sim.no_such_node(n)))
        }
    };
    let down_list = step.node_down.as_deref().unwrap_or_default();
    let up_list = step.node_up.as_deref().unwrap_or_default();
    let mut going_down: BTreeMap<String, String> = BTreeMap::new();
    for (j, n) in down_list.iter().enumerate() {
        let p = join_index(&join_key(step_path, "nodeDown"), j);
        exists(&p, n)?;
        if up_list.contains(n) {
            return Err(src.at_value(
                &p,
                format!("node {n} is listed in both nodeDown and nodeUp of this step; take it down and bring it back in different steps"),
            ));
        }
        if let Some(when) = down.get(n).or(going_down.get(n)) {
            return Err(src.at_value(
                &p,
                format!("node {n}'s underlay link is already down at this point (taken down by {when}); bring it back with nodeUp first"),
            ));
        }
        going_down.insert(n.clone(), p);
    }
    for (j, n) in up_list.iter().enumerate() {
        let p = join_index(&join_key(step_path, "nodeUp"), j);
        exists(&p, n)?;
        if up_list[..j].contains(n) {
            return Err(src.at_value(&p, format!("node {n} is listed twice")));
        }
        if down.remove(n).is_none() {
            return Err(src.at_value(
                &p,
                format!("node {n}'s underlay link is not down at this point; only a node taken down by an earlier step's nodeDown can come back"),
            ));
        }
    }
    down.extend(going_down);
    Ok(())
}

/// Checks `throughput:`: pods that exist at some step, a port, a sensible range.
fn throughput(
    src: &Source,
    sim: &Sim,
    entries: &[header::ThroughputHeader],
) -> Result<Vec<ThroughputSpec>, ScenarioError> {
    let mut out = Vec::new();
    for (i, t) in entries.iter().enumerate() {
        let p = join_index("throughput", i);
        let pod = |field: &str, text: &str| -> Result<PodRef, ScenarioError> {
            let fp = join_key(&p, field);
            match text.parse::<Peer>() {
                Ok(Peer::Pod(pod)) => {
                    sim.peer_ever(src, &fp, &Peer::Pod(pod.clone()))?;
                    Ok(pod)
                }
                Ok(other) => Err(src.at_value(
                    &fp,
                    format!("{other} is not a pod: throughput is measured between pods (ns/pod)"),
                )),
                Err(e) => Err(src.at_value(&fp, e)),
            }
        };
        let from = pod("from", &t.from)?;
        let to = pod("to", &t.to)?;
        if from == to {
            return Err(src.at_value(
                &join_key(&p, "to"),
                "a pod's throughput to itself never leaves it; pick another pod",
            ));
        }
        let port = t.port.unwrap_or(5201);
        if port == 0 {
            return Err(src.at_value(&join_key(&p, "port"), "port 0 is not a port"));
        }
        let (min_mbps, max_mbps) = match &t.expect_mbps {
            None => (None, None),
            Some(r) => (r.min, r.max),
        };
        let rp = join_key(&p, "expectMbps");
        for (v, k) in [(min_mbps, "min"), (max_mbps, "max")] {
            if let Some(v) = v
                && !(v.is_finite() && v > 0.0)
            {
                return Err(src.at_value(
                    &join_key(&rp, k),
                    format!("{v} Mbit/s is not a rate above 0"),
                ));
            }
        }
        if let (Some(lo), Some(hi)) = (min_mbps, max_mbps)
            && lo > hi
        {
            return Err(src.at_value(&join_key(&rp, "max"), format!("max {hi} is below min {lo}")));
        }
        out.push(ThroughputSpec {
            from,
            to,
            port,
            min_mbps,
            max_mbps,
        });
    }
    Ok(out)
}

/// Checks `http:`: a client that exists (an external host or a pod), a URL, step names
/// that exist, a status and a backend (pod or Service) that exist at some step.
fn http_checks(
    src: &Source,
    sim: &Sim,
    steps: &[Step],
    entries: &[header::HttpHeader],
) -> Result<Vec<crate::ingress::HttpCheckSpec>, ScenarioError> {
    let mut out = Vec::new();
    for (i, h) in entries.iter().enumerate() {
        let p = join_index("http", i);
        let fp = join_key(&p, "from");
        let from = match h.from.parse::<Peer>() {
            Ok(peer @ (Peer::Host(_) | Peer::Pod(_))) => {
                sim.peer_ever(src, &fp, &peer)?;
                peer
            }
            Ok(other) => {
                return Err(src.at_value(
                    &fp,
                    format!("{other} cannot send an HTTP check; use host/NAME (outside the cluster) or ns/pod"),
                ));
            }
            Err(e) => return Err(src.at_value(&fp, e)),
        };
        let (scheme, host, path) = crate::ingress::check::parse_url(&h.url)
            .map_err(|e| src.at_value(&join_key(&p, "url"), e))?;
        if let Some(names) = &h.steps {
            for (j, n) in names.iter().enumerate() {
                if !steps.iter().any(|s| &s.name == n) {
                    let known: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
                    return Err(src.at_value(
                        &join_index(&join_key(&p, "steps"), j),
                        format!("there is no step {n:?}; the steps are {}", known.join(", ")),
                    ));
                }
            }
        }
        let ep = join_key(&p, "expect");
        let status = h.expect.as_ref().and_then(|e| e.status);
        if let Some(s) = status
            && !(100..=599).contains(&s)
        {
            return Err(src.at_value(
                &join_key(&ep, "status"),
                format!("{s} is not an HTTP status"),
            ));
        }
        let backend = h.expect.as_ref().and_then(|e| e.backend.clone());
        if let Some(b) = &backend {
            let bp = join_key(&ep, "backend");
            let known = match b.split_once('/') {
                Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                    sim.ever.contains(&PodRef::new(ns, name))
                        || sim
                            .ever_services
                            .contains_key(&(ns.to_string(), name.to_string()))
                }
                _ => {
                    return Err(src.at_value(
                        &bp,
                        format!("{b:?} is not a backend; write ns/pod or ns/service"),
                    ));
                }
            };
            if !known {
                return Err(src.at_value(&bp, format!("no pod or Service {b} exists at any step")));
            }
        }
        out.push(crate::ingress::HttpCheckSpec {
            from,
            url: h.url.clone(),
            scheme,
            host,
            path,
            steps: h.steps.clone(),
            status,
            backend,
        });
    }
    Ok(out)
}

/// Namespaces that objects use but nobody declares: `default` and `kube-system` always
/// exist (as on every cluster); any other is created, with a note.
fn implicit_namespaces(
    src: &Source,
    pending: &mut Vec<Pending>,
    workloads: &[PendingWorkload],
) -> Vec<String> {
    let declared: BTreeSet<String> = pending
        .iter()
        .filter(|p| p.kind == Kind::Namespace)
        .filter_map(|p| {
            p.value
                .pointer("/metadata/name")?
                .as_str()
                .map(String::from)
        })
        .collect();
    let used: BTreeSet<String> = pending
        .iter()
        .filter(|p| p.kind != Kind::Namespace)
        .map(|p| &p.value)
        .chain(workloads.iter().map(|w| &w.value))
        .filter_map(|v| v.pointer("/metadata/namespace")?.as_str().map(String::from))
        .filter(|ns| !ns.is_empty() && !declared.contains(ns))
        .collect();
    let mut notes = Vec::new();
    for ns in used {
        if names::dns_label(&ns).is_err() {
            // The object's own check reports the bad name at its position.
            continue;
        }
        if ns != "kube-system" {
            notes.push(format!(
                "namespace {ns} is used but not declared; it was created (as `kubectl create namespace {ns}` would)"
            ));
        }
        pending.insert(
            0,
            Pending {
                src: src.clone(),
                path: String::new(),
                value: json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                kind: Kind::Namespace,
            },
        );
    }
    notes
}
