//! Assembles a [`Scenario`] from its document and checks it as a whole before anything
//! is built.
//!
//! The initial objects (the implicit `default` namespace, then `model`, `manifests` and
//! `manifestFiles` in that order) become the first step, ordered namespaces, pods, the
//! rest. Then every step of `steps:` is replayed, change by change, on a
//! [`ClusterObjects`] exactly as the harness will apply them (apply, then delete, then
//! label), with stand-in pod addresses so that `${ip:NS/POD}` can be checked. That way
//! each cross-check sees the cluster as it will be at that point: a duplicate object, a
//! pod in a namespace that does not exist, a `nodeName` that is not a node, a delete or
//! relabel of something that is not there, a placeholder or an expectation naming a pod
//! that does not exist yet; each reported at its file, line, column and field path.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::error::{Location, ScenarioError};
use crate::objects::{self, ClusterObjects, Kind, Object, PodRef};
use crate::plan::{self, Plan};
use crate::services::{self, alloc, alloc::ServiceRanges};
use k8s_openapi::api::core::v1::Endpoints;

use super::decode;
use super::expect::{self, PeerUse};
use super::header::{self, Document};
use super::model_shorthand;
use super::source::Source;
use super::yaml::{self, join_index, join_key};
use super::{Change, ClusterConfig, Expectation, Peer, RawObject, Scenario, Step, ThroughputSpec};
use crate::names;

/// The name of the first step (the cluster as the scenario builds it).
pub const INITIAL_STEP: &str = "initial";

const DEFAULT_NAMESPACE: &str = "default";

/// A manifest waiting to be applied, with where it came from.
struct Pending {
    src: Source,
    path: String,
    value: Value,
    kind: Kind,
}

pub(super) fn build(path: &Path, text: &str) -> Result<Scenario, ScenarioError> {
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
    for (i, value) in doc.manifests.iter().flatten().enumerate() {
        let p = join_index("manifests", i);
        let kind = decode::manifest_kind(&src, &p, value)?;
        pending.push(Pending {
            src: src.clone(),
            path: p,
            value: value.clone(),
            kind,
        });
    }
    for (i, file) in doc.manifest_files.iter().flatten().enumerate() {
        pending.extend(manifest_file(&src, &join_index("manifestFiles", i), file)?);
    }
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
            let kind = decode::manifest_kind(&src, &p, value)?;
            let raw = sim.apply(
                &Pending {
                    src: src.clone(),
                    path: p,
                    value: value.clone(),
                    kind,
                },
                &mut declared,
            )?;
            changes.push(Change::Apply(raw));
        }
        for (j, d) in s.delete.iter().flatten().enumerate() {
            let p = join_index(&join_key(&sp, "delete"), j);
            let kind = Kind::from(d.kind);
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
            let kind = Kind::from(l.kind);
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
    cluster.cni.pods_want_bandwidth = wants_bandwidth;
    cluster.cni.pods_want_host_ports = wants_host_ports;

    let br_netfilter = header::br_netfilter(doc.cluster.as_ref());
    Ok(Scenario {
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

/// Adds the ingress-nginx controller's namespace, pod and NodePort Service to the first
/// step when some step has an Ingress (see [`crate::ingress::controller`]).
fn ingress_controller(src: &Source, doc: &Document, pending: &mut Vec<Pending>) {
    let has_ingress = pending.iter().any(|p| p.kind == Kind::Ingress)
        || doc
            .steps
            .iter()
            .flatten()
            .flat_map(|s| s.apply.iter().flatten())
            .any(crate::ingress::controller::is_ingress);
    if !has_ingress {
        return;
    }
    let declared = |kind: &str, ns: &str, name: &str| {
        pending.iter().any(|p| {
            p.kind.as_str() == kind
                && p.value.pointer("/metadata/name") == Some(&json!(name))
                && (ns.is_empty() || p.value.pointer("/metadata/namespace") == Some(&json!(ns)))
        })
    };
    let added: Vec<Pending> = crate::ingress::controller::manifests(&declared)
        .into_iter()
        .map(|value| Pending {
            src: src.clone(),
            path: String::new(),
            kind: match value.get("kind").and_then(Value::as_str) {
                Some("Namespace") => Kind::Namespace,
                Some("Pod") => Kind::Pod,
                _ => Kind::Service,
            },
            value,
        })
        .collect();
    pending.extend(added);
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

/// Adds what `cluster.dns` asks for to the initial objects, as kubeadm would have
/// created them: the `kube-system` namespace (unless declared), the `kube-system/kube-dns`
/// pod (last of the pods, so every other pod is scheduled as without it) and the
/// `kube-dns` Service at the configured address (first of the Services, so no other
/// Service is allocated that address). Errors about them point at `cluster.dns`.
fn cluster_dns(src: &Source, dns: &super::ClusterDns, pending: &mut Vec<Pending>) {
    use crate::dns::{APP_LABEL, NAMESPACE, POD_NAME, SERVICE_NAME};
    let path = "cluster.dns".to_string();
    let declares_ns = pending.iter().any(|p| {
        p.kind == Kind::Namespace && p.value.pointer("/metadata/name") == Some(&json!(NAMESPACE))
    });
    if !declares_ns {
        pending.push(Pending {
            src: src.clone(),
            path: path.clone(),
            value: json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
            kind: Kind::Namespace,
        });
    }
    let labels = json!({APP_LABEL.0: APP_LABEL.1});
    pending.push(Pending {
        src: src.clone(),
        path: path.clone(),
        value: json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": POD_NAME, "namespace": NAMESPACE, "labels": labels},
            "spec": {"containers": [{"name": "coredns", "image": "knetlab/cluster-dns",
                "ports": [
                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                    {"name": "metrics", "containerPort": 9153, "protocol": "TCP"}]}]},
        }),
        kind: Kind::Pod,
    });
    let first_service = pending
        .iter()
        .position(|p| p.kind == Kind::Service)
        .unwrap_or(pending.len());
    pending.insert(
        first_service,
        Pending {
            src: src.clone(),
            path,
            value: json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": SERVICE_NAME, "namespace": NAMESPACE, "labels": labels},
                "spec": {"clusterIP": dns.cluster_ip.to_string(), "selector": labels, "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                    {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]},
            }),
            kind: Kind::Service,
        },
    );
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

/// Why a headless Service is no probe target.
fn headless(namespace: &str, name: &str) -> String {
    format!(
        "Service {namespace}/{name} is headless (clusterIP: None): it has no virtual IP to probe and kube-proxy writes no rule for it; probe its pods directly"
    )
}

/// "Service ns/name has no port N": what a `svc/ns/name:N` probe target got wrong.
fn no_such_port(
    namespace: &str,
    name: &str,
    port: u16,
    ports: &BTreeSet<u16>,
    when: &str,
) -> String {
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    if list.is_empty() {
        format!("Service {namespace}/{name} has no ports {when}: there is nothing to probe")
    } else {
        format!(
            "Service {namespace}/{name} has no port {port} {when} (its ports: {}); svc/NS/NAME:PORT names a service port, not a target port",
            list.join(", ")
        )
    }
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

/// Reads one of `manifestFiles` (relative to the scenario) as multi-document YAML.
fn manifest_file(src: &Source, path: &str, name: &str) -> Result<Vec<Pending>, ScenarioError> {
    let dir = src.file.parent().unwrap_or(Path::new("."));
    let file: PathBuf = dir.join(name);
    let text = std::fs::read_to_string(&file).map_err(|e| {
        src.at_value(
            path,
            format!("cannot read manifest file {}: {e}", file.display()),
        )
    })?;
    let (docs, positions) = yaml::parse(&file, &text, true)?;
    let fsrc = Source::new(&file, positions);
    let mut out = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        let Some(value) = doc else { continue };
        let p = yaml::document_path(i);
        let kind = decode::manifest_kind(&fsrc, &p, &value)?;
        out.push(Pending {
            src: fsrc.clone(),
            path: p,
            value,
            kind,
        });
    }
    if out.is_empty() {
        return Err(src.at_value(
            path,
            format!("manifest file {} holds no manifests", file.display()),
        ));
    }
    Ok(out)
}

/// Where an object was first declared: file, position of its name, field path.
type FirstDeclared = (PathBuf, Option<Location>, String);

/// Objects declared in one list of changes, to find the same object declared twice.
#[derive(Default)]
struct Declared(BTreeMap<(Kind, String, String), FirstDeclared>);

impl Declared {
    fn check(
        &mut self,
        src: &Source,
        path: &str,
        kind: Kind,
        key: &(String, String),
    ) -> Result<(), ScenarioError> {
        let name_path = join_key(&join_key(path, "metadata"), "name");
        let here = src.positions.value(&name_path);
        let (ns, name) = key;
        let k = (kind, ns.clone(), name.clone());
        if let Some((file, loc, first_path)) = self.0.get(&k) {
            let what = if ns.is_empty() {
                format!("{} {name}", kind.as_str())
            } else {
                format!("{} {ns}/{name}", kind.as_str())
            };
            let mut first = file.display().to_string();
            if let Some(l) = loc {
                first += &format!(":{}:{}", l.line, l.column);
            }
            return Err(ScenarioError::new(
                &src.file,
                here,
                name_path,
                format!("{what} is declared twice; the first is at {first} ({first_path})"),
            ));
        }
        self.0.insert(k, (src.file.clone(), here, path.to_string()));
        Ok(())
    }
}

/// The cluster's objects as the scenario has changed them so far.
struct Sim<'a> {
    cluster: &'a ClusterConfig,
    objects: ClusterObjects,
    /// The address plan so far (grows as nodes join), for stand-in addresses and to
    /// check that a joining node fits.
    plan: Option<Plan>,
    /// Nodes a later step adds, with where (for messages).
    joins_later: BTreeMap<String, String>,
    /// Stand-in addresses: the next host number in each node's pod subnet.
    subnets: BTreeMap<String, (Ipv4Addr, u32)>,
    /// Every pod that exists at some point of the scenario.
    ever: BTreeSet<PodRef>,
    /// Every Service that exists at some point, with every port number it ever has and
    /// whether some version of it is headless.
    ever_services: BTreeMap<(String, String), (BTreeSet<u16>, bool)>,
    /// Every `nodeport/`, `lb/` and `extip/` target some Service offers at some point.
    ever_external: BTreeSet<Peer>,
    /// Where Services get their addresses.
    ranges: ServiceRanges,
    /// Some pod has a bandwidth annotation / a hostPort (the CNI list needs the plugin).
    wants_bandwidth: bool,
    wants_host_ports: bool,
    /// The nodes on which some pod has a hostPort at some point (`node/NAME` targets).
    host_port_nodes: BTreeSet<String>,
}

impl<'a> Sim<'a> {
    fn new(cluster: &'a ClusterConfig) -> Self {
        // `header::cluster` checked that the plan works out.
        let plan = Plan::new(&plan::prefix_from_seed(0), cluster).ok();
        let subnets = plan
            .iter()
            .flat_map(|p| &p.nodes)
            .map(|n| (n.name.clone(), (n.pod_subnet.network(), 2)))
            .collect();
        Self {
            plan,
            joins_later: BTreeMap::new(),
            cluster,
            objects: ClusterObjects::new(cluster.nodes.clone()),
            subnets,
            ever: BTreeSet::new(),
            ever_services: BTreeMap::new(),
            ever_external: BTreeSet::new(),
            ranges: ServiceRanges::new(cluster, None),
            wants_bandwidth: false,
            wants_host_ports: false,
            host_port_nodes: BTreeSet::new(),
        }
    }

    /// The nodes of the cluster at this point, for messages.
    fn nodes_here(&self) -> String {
        format!("the nodes are {}", self.objects.nodes.join(", "))
    }

    /// Why `node` is not a node at this point: it does not exist at all, or joins later.
    fn no_such_node(&self, node: &str) -> String {
        match self.joins_later.get(node) {
            Some(when) => format!(
                "node {node} does not exist at this point ({when}); {}",
                self.nodes_here()
            ),
            None => format!("node {node} does not exist; {}", self.nodes_here()),
        }
    }

    /// A step's `nodeJoin` entry: a new node, with a valid name that no node or external
    /// host has, that fits the address plan. From here on pods may be bound to it.
    fn join_node(&mut self, src: &Source, path: &str, name: &str) -> Result<(), ScenarioError> {
        names::dns_label(name).map_err(|e| src.at_value(path, format!("bad node name: {e}")))?;
        if self.objects.nodes.iter().any(|n| n == name) {
            return Err(src.at_value(
                path,
                format!(
                    "node {name} is already part of the cluster at this point; {}",
                    self.nodes_here()
                ),
            ));
        }
        if self.has_host(name) {
            return Err(src.at_value(
                path,
                format!(
                    "{name} is the name of an external host (cluster.externalHosts); pick another name for the node"
                ),
            ));
        }
        if let Some(plan) = self.plan.as_mut() {
            let node = plan
                .join_node(name)
                .map_err(|e| src.at_value(path, format!("node {name} cannot join: {e}")))?;
            self.subnets
                .insert(name.to_string(), (node.pod_subnet.network(), 2));
        }
        self.objects.nodes.push(name.to_string());
        Ok(())
    }

    fn pods_here(&self) -> String {
        let pods: Vec<String> = self.objects.pods.keys().map(ToString::to_string).collect();
        match pods.len() {
            0 => "there are no pods".to_string(),
            1..=12 => format!("the pods are {}", pods.join(", ")),
            n => format!("there are {n} other pods"),
        }
    }

    /// Checks one manifest against the cluster as it is, then applies it.
    fn apply(&mut self, p: &Pending, declared: &mut Declared) -> Result<RawObject, ScenarioError> {
        let src = &p.src;
        for (path, pod, text) in decode::placeholder_uses(&p.value, &p.path) {
            if !self.objects.pods.contains_key(&pod) {
                return Err(src.at_value(
                    &path,
                    format!(
                        "{text} names pod {pod}, which does not exist at this point ({})",
                        self.pods_here()
                    ),
                ));
            }
        }
        let pods = &self.objects.pods;
        let value = decode::substitute(src, &p.path, &p.value, &|r| {
            pods.get(r).and_then(objects::pod_ip)
        })?;
        let mut object = decode::decode_value(src, &p.path, &value)?;
        // What the Kubernetes objects will hold when the step runs (a Service gains its
        // allocations).
        let mut raw_value = p.value.clone();
        let (ns, name) = object.key();
        declared.check(src, &p.path, object.kind(), &(ns.clone(), name.clone()))?;
        let meta = join_key(&p.path, "metadata");
        if object.kind() == Kind::Namespace && matches!(name.as_str(), "node" | "host" | "svc") {
            // `node/NAME`, `host/NAME` and `svc/NS/NAME:PORT` name nodes, external hosts
            // and Services in probes.
            return Err(src.at_value(
                &join_key(&meta, "name"),
                format!(
                    "a namespace cannot be called `{name}`: `{name}/...` names a {} in probes and expectations",
                    match name.as_str() {
                        "node" => "node",
                        "host" => "host outside the cluster",
                        _ => "Service",
                    }
                ),
            ));
        }
        if object.kind() != Kind::Namespace && !self.objects.namespaces.contains_key(&ns) {
            let ns_path = join_key(&meta, "namespace");
            let at = if p.value.pointer("/metadata/namespace").is_some() {
                src.at_value(&ns_path, "")
            } else {
                src.at_key(&meta, "")
            };
            return Err(ScenarioError {
                path: ns_path,
                message: format!(
                    "namespace {ns} does not exist at this point; declare it (kind: Namespace) or add it to the model"
                ),
                ..at
            });
        }
        if let Object::Pod(pod) = &object {
            let key = PodRef::new(&ns, &name);
            if let Some(node) = objects::pod_node(pod)
                && !self.objects.nodes.iter().any(|n| n == node)
            {
                return Err(src.at_value(
                    &join_key(&join_key(&p.path, "spec"), "nodeName"),
                    self.no_such_node(node),
                ));
            }
            if let Some(old) = self.objects.pods.get(&key) {
                let mut new_spec = pod.spec.clone();
                // Without a nodeName the pod keeps the node it was bound to.
                if let (Some(n), Some(o)) = (new_spec.as_mut(), old.spec.as_ref())
                    && n.node_name.is_none()
                {
                    n.node_name = o.node_name.clone();
                }
                if new_spec != old.spec {
                    return Err(src.at_key(
                        &join_key(&p.path, "spec"),
                        format!(
                            "pod {key} already exists and a pod's spec cannot change (Kubernetes forbids it); change its labels, or delete it and create it again in a later step"
                        ),
                    ));
                }
            }
        }
        match object {
            Object::Service(svc) => {
                let svc = alloc::allocate(&self.objects.services, &self.ranges, svc)
                    .map_err(|e| decode::field_error(src, &p.path, e))?;
                alloc::record(&mut raw_value, &svc);
                object = Object::Service(svc);
            }
            Object::Endpoints(ref ep) => self.check_endpoints(src, &p.path, ep, &ns, &name)?,
            _ => {}
        }
        let key = object.key();
        let kind = object.kind();
        if let Object::Service(svc) = &object {
            let (ports, headless) = self.ever_services.entry(key.clone()).or_default();
            ports.extend(
                services::ports(svc)
                    .iter()
                    .filter_map(|p| u16::try_from(p.port).ok()),
            );
            *headless |= services::is_headless(svc);
            self.ever_external
                .extend(crate::oracle::targets_of(svc, &self.cluster.nodes));
        }
        self.objects.apply(object);
        if kind == Kind::Pod {
            let pod = PodRef::new(&key.0, &key.1);
            self.check_pod_network(src, &p.path, &pod)?;
            self.ever.insert(pod.clone());
            let stored = &self.objects.pods[&pod];
            if objects::pod_ip(stored).is_none() {
                let node = objects::pod_node(stored).unwrap_or_default().to_string();
                if let Some((base, next)) = self.subnets.get_mut(&node) {
                    let ip = Ipv4Addr::from(u32::from(*base) + *next);
                    *next += 1;
                    self.objects.set_pod_ip(&pod, ip);
                }
            }
        }
        Ok(RawObject {
            value: raw_value,
            kind,
            key,
            file: src.file.clone(),
            path: p.path.clone(),
            positions: src.positions.clone(),
        })
    }

    /// Checks what the pod asks of the CNI chain (bandwidth annotations, host ports) as
    /// the kubelet and the scheduler would: values that parse, and no host port taken
    /// twice on one node.
    fn check_pod_network(
        &mut self,
        src: &Source,
        path: &str,
        pod: &PodRef,
    ) -> Result<(), ScenarioError> {
        use crate::podnet::{self, PodNetError, PodNetField};
        let at = |e: PodNetError| {
            let field = match &e.at {
                PodNetField::Annotation(k) => {
                    join_key(&join_key(&join_key(path, "metadata"), "annotations"), k)
                }
                PodNetField::Port(c, i, f) => join_key(
                    &join_index(
                        &join_key(
                            &join_index(&join_key(&join_key(path, "spec"), "containers"), *c),
                            "ports",
                        ),
                        *i,
                    ),
                    f,
                ),
            };
            src.at_value(&field, e.message)
        };
        let stored = &self.objects.pods[pod];
        let bw = podnet::bandwidth(stored).map_err(at)?;
        self.wants_bandwidth |= !bw.is_empty();
        let ports = podnet::port_mappings(stored).map_err(at)?;
        self.wants_host_ports |= !ports.is_empty();
        let node = objects::pod_node(stored).unwrap_or_default();
        if !ports.is_empty() {
            self.host_port_nodes.insert(node.to_string());
        }
        for (other, o) in &self.objects.pods {
            if other == pod || objects::pod_node(o).unwrap_or_default() != node {
                continue;
            }
            let taken = podnet::port_mappings(o).unwrap_or_default();
            if let Some(m) = ports.iter().find(|m| {
                taken.iter().any(|t| {
                    t.host_port == m.host_port
                        && t.protocol == m.protocol
                        && (t.host_ip.is_none() || m.host_ip.is_none() || t.host_ip == m.host_ip)
                })
            }) {
                return Err(src.at_value(
                    &join_key(path, "spec"),
                    format!(
                        "hostPort {}/{} is already taken on node {node} by pod {other}; the scheduler would not put {pod} there",
                        m.host_port, m.protocol
                    ),
                ));
            }
        }
        Ok(())
    }

    /// An Endpoints object belongs to the selector-less Service of the same name, which
    /// must exist now; its `nodeName`s must be nodes.
    fn check_endpoints(
        &self,
        src: &Source,
        path: &str,
        ep: &Endpoints,
        ns: &str,
        name: &str,
    ) -> Result<(), ScenarioError> {
        let name_path = join_key(&join_key(path, "metadata"), "name");
        match self
            .objects
            .services
            .get(&(ns.to_string(), name.to_string()))
        {
            None => {
                return Err(src.at_value(
                    &name_path,
                    format!(
                        "there is no Service {ns}/{name} at this point: an Endpoints object gives the backends of the Service of the same name in the same namespace"
                    ),
                ));
            }
            Some(svc) if services::selector(svc).is_some() => {
                return Err(src.at_value(
                    &name_path,
                    format!(
                        "Service {ns}/{name} has a selector, so the endpoints controller computes its Endpoints and would overwrite these; remove the Service's selector to give its backends by hand"
                    ),
                ));
            }
            Some(_) => {}
        }
        for (i, subset) in ep.subsets.iter().flatten().enumerate() {
            for (field, list) in [
                ("addresses", &subset.addresses),
                ("notReadyAddresses", &subset.not_ready_addresses),
            ] {
                for (j, a) in list.iter().flatten().enumerate() {
                    if let Some(node) = &a.node_name
                        && !self.objects.nodes.contains(node)
                    {
                        return Err(src.at_value(
                            &format!("{path}.subsets[{i}].{field}[{j}].nodeName"),
                            self.no_such_node(node),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The namespace of a delete/label target, after checking the target exists.
    fn target(
        &self,
        src: &Source,
        path: &str,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<String, ScenarioError> {
        let namespace = match (kind, namespace) {
            (Kind::Namespace, Some(_)) => {
                return Err(src.at_key(
                    &join_key(path, "namespace"),
                    "a Namespace is not inside a namespace; leave `namespace` out",
                ));
            }
            (Kind::Namespace, None) => String::new(),
            (_, ns) => ns.unwrap_or(DEFAULT_NAMESPACE).to_string(),
        };
        let exists = match kind {
            Kind::Namespace => self.objects.namespaces.contains_key(name),
            Kind::Pod => self
                .objects
                .pods
                .contains_key(&PodRef::new(&namespace, name)),
            Kind::NetworkPolicy => self
                .objects
                .network_policies
                .contains_key(&(namespace.clone(), name.to_string())),
            Kind::Service => self
                .objects
                .services
                .contains_key(&(namespace.clone(), name.to_string())),
            Kind::Endpoints => self
                .objects
                .endpoints
                .contains_key(&(namespace.clone(), name.to_string())),
            Kind::Ingress => self
                .objects
                .ingresses
                .contains_key(&(namespace.clone(), name.to_string())),
            Kind::Secret => self
                .objects
                .secrets
                .contains_key(&(namespace.clone(), name.to_string())),
        };
        if !exists {
            let what = if namespace.is_empty() {
                format!("{} {name}", kind.as_str())
            } else {
                format!("{} {namespace}/{name}", kind.as_str())
            };
            return Err(src.at_value(
                &join_key(path, "name"),
                format!("there is no {what} at this point"),
            ));
        }
        Ok(namespace)
    }

    /// Parses an `expect` and checks that its peers exist now.
    fn expectation(
        &self,
        src: &Source,
        path: &str,
        value: &Value,
    ) -> Result<Expectation, ScenarioError> {
        let parsed = expect::parse(src, path, value)?;
        for u in &parsed.peers {
            self.peer_now(src, u)?;
        }
        // A node as a server answers only on its pods' hostPorts.
        for (_, to, port) in parsed.expectation.cells.keys() {
            let Peer::Node(n) = to else { continue };
            let served = self.objects.pods.values().any(|pod| {
                objects::pod_node(pod) == Some(n.as_str())
                    && crate::podnet::port_mappings(pod)
                        .unwrap_or_default()
                        .iter()
                        .any(|m| m.host_port == port.port && m.protocol == port.protocol)
            });
            if !served {
                let at = parsed.peers.iter().find(|u| &u.peer == to);
                return Err(ScenarioError::new(
                    &src.file,
                    at.and_then(|u| u.location),
                    at.map_or(path, |u| u.path.as_str()),
                    format!(
                        "no pod on node {n} has hostPort {port} at this point: servers are pods (ns/pod) or external hosts (host/NAME), Services (svc/NS/NAME:PORT), or nodes on their pods' hostPorts (forwarded by portmap)"
                    ),
                ));
            }
        }
        Ok(parsed.expectation)
    }

    fn peer_now(&self, src: &Source, u: &PeerUse) -> Result<(), ScenarioError> {
        let missing = match &u.peer {
            Peer::Pod(p) if !self.objects.pods.contains_key(p) => {
                format!("pod {p} does not exist at this step ({})", self.pods_here())
            }
            Peer::Node(n) if !self.objects.nodes.contains(n) => self.no_such_node(n),
            Peer::Host(h) if !self.has_host(h) => self.no_such_host(h),
            Peer::Service {
                namespace,
                name,
                port,
            } => match self
                .objects
                .services
                .get(&(namespace.clone(), name.clone()))
            {
                None => format!(
                    "Service {namespace}/{name} does not exist at this step ({})",
                    self.services_here()
                ),
                Some(svc) if services::is_headless(svc) => headless(namespace, name),
                Some(svc) => {
                    let ports: BTreeSet<u16> = services::ports(svc)
                        .iter()
                        .filter_map(|p| u16::try_from(p.port).ok())
                        .collect();
                    if ports.contains(port) {
                        return Ok(());
                    }
                    no_such_port(namespace, name, *port, &ports, "at this step")
                }
            },
            peer if peer.is_external_service() => {
                match crate::oracle::resolve_target(&self.objects, peer) {
                    Ok(_) => return Ok(()),
                    Err(why) => format!("{peer}: {why}"),
                }
            }
            _ => return Ok(()),
        };
        Err(ScenarioError::new(&src.file, u.location, &u.path, missing))
    }

    fn peer_ever(&self, src: &Source, path: &str, peer: &Peer) -> Result<(), ScenarioError> {
        let missing = match peer {
            Peer::Pod(p) if !self.ever.contains(p) => format!("pod {p} does not exist at any step"),
            Peer::Node(n) if !self.objects.nodes.contains(n) => self.no_such_node(n),
            Peer::Host(h) if !self.has_host(h) => self.no_such_host(h),
            Peer::Service {
                namespace,
                name,
                port,
            } => match self.ever_services.get(&(namespace.clone(), name.clone())) {
                None => format!(
                    "Service {namespace}/{name} does not exist at any step ({})",
                    self.services_here()
                ),
                Some((_, true)) => headless(namespace, name),
                Some((ports, _)) if ports.contains(port) => return Ok(()),
                Some((ports, _)) => no_such_port(namespace, name, *port, ports, "at any step"),
            },
            peer if peer.is_external_service() => match self.external_ever(peer) {
                None => return Ok(()),
                Some(why) => why,
            },
            _ => return Ok(()),
        };
        Err(src.at_value(path, missing))
    }

    /// A node as a probe target answers only on its pods' hostPorts (through portmap):
    /// one without any at every step has nothing to probe.
    fn node_target(&self, src: &Source, path: &str, peer: &Peer) -> Result<(), ScenarioError> {
        match peer {
            Peer::Node(n) if !self.host_port_nodes.contains(n) => Err(src.at_value(
                path,
                format!(
                    "no pod on node {n} has a hostPort at any step: a node is a probe target only on its pods' hostPorts (spec.containers[].ports[].hostPort, forwarded by the portmap plugin)"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Why a `nodeport/`, `lb/` or `extip/` target names nothing at any step (or names
    /// two Services), if it does.
    fn external_ever(&self, peer: &Peer) -> Option<String> {
        if let Peer::LoadBalancer {
            namespace: None,
            name,
            ..
        } = peer
        {
            let namespaces: BTreeSet<&str> = self
                .ever_external
                .iter()
                .filter_map(|p| match p {
                    Peer::LoadBalancer {
                        namespace: Some(ns),
                        name: n,
                        ..
                    } if n == name => Some(ns.as_str()),
                    _ => None,
                })
                .collect();
            if namespaces.len() > 1 {
                return Some(format!(
                    "{peer} is ambiguous: load-balancer Services called {name} exist in {}; write lb/NAMESPACE/{name}:PORT",
                    namespaces.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        if self.ever_external.contains(peer) {
            return None;
        }
        Some(match peer {
            Peer::NodePort { node, .. } if !self.cluster.nodes.contains(node) => format!(
                "node {node} does not exist; the nodes are {}",
                self.cluster.nodes.join(", ")
            ),
            Peer::NodePort { port, .. } => format!(
                "no Service has node port {port} at any step (nodeport/NODE:PORT takes the Service's nodePort, allocated from 30000 upwards when not written)"
            ),
            Peer::LoadBalancer { port, .. } => format!(
                "{peer} names no Service of type LoadBalancer with an address and port {port} at any step ({})",
                self.services_here()
            ),
            _ => format!(
                "{peer} names no Service with externalIPs and that port at any step ({})",
                self.services_here()
            ),
        })
    }

    fn services_here(&self) -> String {
        let names: Vec<String> = self
            .objects
            .services
            .keys()
            .map(|(ns, n)| format!("{ns}/{n}"))
            .collect();
        match names.len() {
            0 => "there are no Services".to_string(),
            1..=12 => format!("the Services are {}", names.join(", ")),
            n => format!("there are {n} other Services"),
        }
    }

    fn has_host(&self, name: &str) -> bool {
        self.cluster.external_hosts.iter().any(|h| h.name == name)
    }

    fn no_such_host(&self, name: &str) -> String {
        let names: Vec<&str> = self
            .cluster
            .external_hosts
            .iter()
            .map(|h| h.name.as_str())
            .collect();
        if names.is_empty() {
            format!("host {name} does not exist: declare it in cluster.externalHosts")
        } else {
            format!(
                "host {name} does not exist; the external hosts are {}",
                names.join(", ")
            )
        }
    }
}
