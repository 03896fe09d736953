//! Seeded random NetworkPolicies and label sets over the standard model, for the
//! differential test (`harness/tests/differential.rs`): each case is applied to a live
//! cluster, probed, and every cell compared with the oracle. A seed always gives the same
//! case, so a disagreement is reproduced from its seed alone, and [`Case::to_scenario`]
//! writes it as a scenario file for `cargo xtask scenario`.
//!
//! Cases are valid API objects (what the API server would accept), drawn to exercise
//! every part of the semantics: empty, `matchLabels` and `matchExpressions` selectors
//! (In, NotIn, Exists, DoesNotExist) on labels that are sometimes there and sometimes
//! not; `podSelector`, `namespaceSelector` and both in one peer; several peers; `ipBlock`
//! on pod /32s, node pod subnets, the pod CIDR, the underlay and `0.0.0.0/0`, with
//! `except`; ports `{}`, protocol only, numbers, `endPort` ranges and named ports (some
//! with the wrong protocol, some that no pod declares) on TCP, UDP and SCTP;
//! `policyTypes` omitted or listing either or both directions; missing, empty (`[]`) and
//! `[{}]`-style rule lists, `from`/`to` and `ports`. Most cases also get up to three
//! ClusterNetworkPolicies (Admin or Baseline, distinct priorities; Accept, Deny and Pass
//! rules on namespaces, pods, networks and nodes, with numbers, ranges and named ports).
//!
//! [`services`] draws random Service sets the same way.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::OnceLock;

use ipnet::Ipv4Net;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::cluster::ClusterConfig;
use crate::objects::{self, ClusterObjects, Kind, PodRef};
use crate::plan::{self, Plan};
use crate::protocol::Protocol;
use crate::scenario::{self, Change};

pub mod services;

/// The standard model's namespaces, pods and ports.
pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const PODS: [&str; 3] = ["a", "b", "c"];
pub const PORTS: [u16; 2] = [80, 81];

/// The standard model as a scenario: what the differential test builds. SCTP is
/// declared too, so named SCTP ports resolve; probing it is up to the test.
const MODEL_SCENARIO: &str = "\
name: differential
summary: The standard model on two nodes, for random policies.
cluster: {nodes: 2, network: host-gw}
model: {namespaces: [x, y, z], pods: [a, b, c], ports: [80, 81], protocols: [TCP, UDP, SCTP]}
";

/// The standard model as the harness builds it: the objects, with each pod bound to its
/// node and given the address host-local hands out (per node `.2`, `.3`, ... of the
/// node's /24, pods sorted by namespace and name, as `Cluster::add_pods` wires them).
#[derive(Debug, Clone)]
pub struct Model {
    pub cluster: ClusterConfig,
    pub objects: ClusterObjects,
    /// Node name → its pod subnet.
    pub pod_subnets: BTreeMap<String, Ipv4Net>,
    /// Node name → its underlay address.
    pub node_addresses: BTreeMap<String, Ipv4Addr>,
}

/// The standard model (parsed once from the built-in scenario text).
pub fn standard_model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        model_of("<differential model>", MODEL_SCENARIO)
            .unwrap_or_else(|e| panic!("the built-in standard model: {e}"))
    })
}

/// Any scenario's objects as the harness would build them (the changes of every step
/// applied, each pod given the address host-local hands out): for models other than
/// the standard one, such as the benchmarks' synthetic clusters. `name` names the text
/// in errors.
pub fn model_of(name: &str, text: &str) -> Result<Model, String> {
    let sc = scenario::parse_str(Path::new(name), text).map_err(|e| e.to_string())?;
    let plan = Plan::new(&plan::prefix_from_seed(0), &sc.cluster)
        .map_err(|e| format!("{name} cannot be planned: {e}"))?;
    let mut objects = ClusterObjects::new(sc.cluster.nodes.clone());
    for change in sc.steps.iter().flat_map(|s| &s.changes) {
        if let Change::Apply(raw) = change {
            objects.apply(raw.decode(&|_| None).map_err(|e| format!("{name}: {e}"))?);
        }
    }
    // BTreeMap order is namespace, then name: the order host-local sees per node.
    let mut next: BTreeMap<String, u32> = BTreeMap::new();
    let pods: Vec<(PodRef, String)> = objects
        .pods
        .iter()
        .map(|(r, p)| {
            (
                r.clone(),
                objects::pod_node(p).unwrap_or_default().to_string(),
            )
        })
        .collect();
    for (pod, node) in pods {
        let Some(np) = plan.node(&node) else { continue };
        let host = next.entry(node).or_insert(2);
        objects.set_pod_ip(
            &pod,
            Ipv4Addr::from(u32::from(np.pod_subnet.network()) + *host),
        );
        *host += 1;
    }
    Ok(Model {
        pod_subnets: plan
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.pod_subnet))
            .collect(),
        node_addresses: plan
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.underlay_ip))
            .collect(),
        cluster: sc.cluster,
        objects,
    })
}

/// One random case: complete label maps for every namespace and pod of the model (the
/// model's own `ns=`/`pod=` labels may be gone), and the policies.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub seed: u64,
    pub policies: Vec<NetworkPolicy>,
    /// Namespace → its labels (`kubernetes.io/metadata.name` is added by the cluster).
    pub namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
    pub pod_labels: BTreeMap<PodRef, BTreeMap<String, String>>,
    /// ClusterNetworkPolicy manifests (v1alpha2), each at its own priority so no cell
    /// is left undefined.
    pub cluster_policies: Vec<Value>,
}

impl Case {
    /// Makes `objects` (the standard model) this case: relabels every namespace and pod
    /// and replaces every policy.
    pub fn apply_to(&self, objects: &mut ClusterObjects) {
        for (ns, labels) in &self.namespace_labels {
            objects.set_labels(Kind::Namespace, "", ns, labels.clone());
        }
        for (pod, labels) in &self.pod_labels {
            objects.set_labels(Kind::Pod, &pod.namespace, &pod.name, labels.clone());
        }
        objects.network_policies.clear();
        for np in &self.policies {
            objects.apply(objects::Object::NetworkPolicy(np.clone()));
        }
        objects.cluster_policies.clear();
        for manifest in &self.cluster_policies {
            let name = manifest
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            objects.apply(objects::Object::ClusterPolicy(
                objects::ClusterPolicyObject {
                    kind: Kind::ClusterNetworkPolicy,
                    name: name.to_string(),
                    labels: BTreeMap::new(),
                    manifest: manifest.clone(),
                },
            ));
        }
    }

    /// The standard model with this case applied.
    pub fn objects(&self) -> ClusterObjects {
        let mut objects = standard_model().objects.clone();
        self.apply_to(&mut objects);
        objects
    }

    /// The case as a knetlab scenario (JSON, which is also YAML): the standard model, then
    /// one step that relabels everything and applies the policies. Save it and run
    /// `cargo xtask scenario FILE` to see the case's matrix with the oracle's reasons.
    pub fn to_scenario(&self) -> Value {
        let mut label = Vec::new();
        for (ns, labels) in &self.namespace_labels {
            label.push(json!({"kind": "Namespace", "name": ns, "labels": labels}));
        }
        for (pod, labels) in &self.pod_labels {
            label.push(json!({"kind": "Pod", "namespace": pod.namespace, "name": pod.name, "labels": labels}));
        }
        let apply: Vec<Value> = self
            .policies
            .iter()
            .map(|p| serde_json::to_value(p).unwrap_or(Value::Null))
            .chain(self.cluster_policies.iter().cloned())
            .collect();
        let mut step = json!({"name": format!("seed {}", self.seed), "label": label});
        if !apply.is_empty() {
            step["apply"] = Value::Array(apply);
        }
        json!({
            "name": format!("differential-{}", self.seed),
            "summary": format!("Random case {} of the differential test.", self.seed),
            "description": "Generated by sim::testgen::random_case; the oracle's reasons explain each cell.",
            "cluster": {"nodes": 2, "network": "host-gw"},
            "model": {"namespaces": NAMESPACES, "pods": PODS, "ports": PORTS, "protocols": ["TCP", "UDP", "SCTP"]},
            "steps": [step],
        })
    }

    /// [`Case::to_scenario`] as a compact YAML file: one line per label change and per
    /// policy (in JSON's flow style, which YAML reads).
    pub fn to_scenario_yaml(&self) -> String {
        let sc = self.to_scenario();
        let line = |v: &Value| serde_json::to_string(v).unwrap_or_default();
        let mut out = String::new();
        for key in ["name", "summary", "description", "cluster", "model"] {
            out += &format!("{key}: {}\n", line(&sc[key]));
        }
        out += "steps:\n";
        for step in sc["steps"].as_array().into_iter().flatten() {
            out += &format!("  - name: {}\n", line(&step["name"]));
            for list in ["label", "apply"] {
                if let Some(items) = step[list].as_array() {
                    out += &format!("    {list}:\n");
                    for item in items {
                        out += &format!("      - {}\n", line(item));
                    }
                }
            }
        }
        out
    }
}

/// Label keys and values the generator draws from. Selectors use the same vocabulary
/// (plus a value no object ever has), so they match sometimes, not always.
const POD_LABELS: [(&str, &[&str]); 3] = [
    ("pod", &["a", "b", "c"]),
    ("app", &["web", "db"]),
    ("tier", &["front", "back"]),
];
const NS_LABELS: [(&str, &[&str]); 3] = [
    ("ns", &["x", "y", "z"]),
    ("team", &["blue", "red"]),
    ("env", &["prod", "dev"]),
];
const NEVER: &str = "none";

/// The case for `seed`.
pub fn random_case(seed: u64) -> Case {
    let model = standard_model();
    let mut g = Gen {
        rng: ChaCha8Rng::seed_from_u64(seed),
        model,
    };
    let namespace_labels = NAMESPACES
        .iter()
        .map(|ns| (ns.to_string(), g.namespace_labels(ns)))
        .collect();
    let pod_labels = model
        .objects
        .pods
        .keys()
        .map(|p| (p.clone(), g.pod_labels(&p.name)))
        .collect();
    let count = *[1usize, 1, 2, 2, 2, 3, 3, 4]
        .choose(&mut g.rng)
        .unwrap_or(&1);
    let policies = (0..count).map(|i| g.policy(i)).collect();
    // Drawn after everything else, so a seed's NetworkPolicies and labels are what
    // they were before cluster-wide policies were generated.
    let tiered = *[0usize, 0, 0, 0, 1, 1, 1, 2, 2, 3]
        .choose(&mut g.rng)
        .unwrap_or(&0);
    let cluster_policies = (0..tiered).map(|i| g.cluster_policy(i)).collect();
    Case {
        seed,
        policies,
        namespace_labels,
        pod_labels,
        cluster_policies,
    }
}

struct Gen {
    rng: ChaCha8Rng,
    model: &'static Model,
}

impl Gen {
    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.rng.random_range(0..items.len())]
    }

    fn namespace_labels(&mut self, ns: &str) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        if self.chance(0.85) {
            labels.insert("ns".to_string(), ns.to_string());
        }
        for (key, values) in &NS_LABELS[1..] {
            if self.chance(0.5) {
                labels.insert(key.to_string(), self.pick(values).to_string());
            }
        }
        labels
    }

    fn pod_labels(&mut self, pod: &str) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        if self.chance(0.85) {
            labels.insert("pod".to_string(), pod.to_string());
        }
        for (key, values) in &POD_LABELS[1..] {
            if self.chance(0.5) {
                labels.insert(key.to_string(), self.pick(values).to_string());
            }
        }
        labels
    }

    /// A label selector over `vocab`; `empty` is the chance of `{}`.
    fn selector(&mut self, vocab: &[(&str, &[&str])], empty: f64) -> Value {
        if self.chance(empty) {
            return json!({});
        }
        let mut sel = serde_json::Map::new();
        let form = self.rng.random_range(0..10);
        if form < 7 {
            let mut labels = serde_json::Map::new();
            for _ in 0..self.rng.random_range(1..=2) {
                let (key, values) = *self.pick(vocab);
                let value = self.value(values);
                labels.insert(key.to_string(), json!(value));
            }
            sel.insert("matchLabels".into(), Value::Object(labels));
        }
        if form >= 5 {
            let exprs: Vec<Value> = (0..self.rng.random_range(1..=2))
                .map(|_| self.expression(vocab))
                .collect();
            sel.insert("matchExpressions".into(), Value::Array(exprs));
        }
        Value::Object(sel)
    }

    /// A label value: usually one objects carry, sometimes one none does.
    fn value(&mut self, values: &[&str]) -> String {
        if self.chance(0.1) {
            NEVER.to_string()
        } else {
            self.pick(values).to_string()
        }
    }

    fn expression(&mut self, vocab: &[(&str, &[&str])]) -> Value {
        let (key, values) = *self.pick(vocab);
        match self.rng.random_range(0..4) {
            0 | 1 => {
                let op = if self.chance(0.5) { "In" } else { "NotIn" };
                let mut vals: Vec<String> = (0..self.rng.random_range(1..=2))
                    .map(|_| self.value(values))
                    .collect();
                vals.sort();
                vals.dedup();
                json!({"key": key, "operator": op, "values": vals})
            }
            2 => json!({"key": key, "operator": "Exists"}),
            _ => json!({"key": key, "operator": "DoesNotExist"}),
        }
    }

    fn namespace_selector(&mut self) -> Value {
        if self.chance(0.15) {
            // The label every namespace has, which no relabelling removes.
            let ns = *self.pick(&NAMESPACES);
            return json!({"matchLabels": {objects::NAMESPACE_NAME_LABEL: ns}});
        }
        self.selector(&NS_LABELS, 0.2)
    }

    fn policy(&mut self, index: usize) -> NetworkPolicy {
        let ns = *self.pick(&NAMESPACES);
        let mut spec = serde_json::Map::new();
        spec.insert("podSelector".into(), self.selector(&POD_LABELS, 0.35));
        match self.rng.random_range(0..20) {
            0..6 => {}
            6..11 => {
                spec.insert("policyTypes".into(), json!(["Ingress"]));
            }
            11..15 => {
                spec.insert("policyTypes".into(), json!(["Egress"]));
            }
            _ => {
                spec.insert("policyTypes".into(), json!(["Ingress", "Egress"]));
            }
        }
        for (field, peers) in [("ingress", "from"), ("egress", "to")] {
            if let Some(rules) = self.rules(peers) {
                spec.insert(field.into(), rules);
            }
        }
        let np = json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": format!("p{index}"), "namespace": ns},
            "spec": spec,
        });
        serde_json::from_value(np).unwrap_or_else(|e| panic!("generated policy: {e}"))
    }

    /// An `ingress` / `egress` list: missing, `[]`, or one or two rules.
    fn rules(&mut self, peers_field: &str) -> Option<Value> {
        match self.rng.random_range(0..20) {
            0..4 => None,
            4..7 => Some(json!([])),
            _ => {
                let rules: Vec<Value> = (0..self.rng.random_range(1..=2))
                    .map(|_| self.rule(peers_field))
                    .collect();
                Some(Value::Array(rules))
            }
        }
    }

    fn rule(&mut self, peers_field: &str) -> Value {
        let mut rule = serde_json::Map::new();
        match self.rng.random_range(0..20) {
            0..4 => {}
            4 => {
                rule.insert(peers_field.into(), json!([]));
            }
            _ => {
                let peers: Vec<Value> = (0..self.rng.random_range(1..=2))
                    .map(|_| self.peer())
                    .collect();
                rule.insert(peers_field.into(), Value::Array(peers));
            }
        }
        match self.rng.random_range(0..20) {
            0..7 => {}
            7 => {
                rule.insert("ports".into(), json!([]));
            }
            _ => {
                let ports: Vec<Value> = (0..self.rng.random_range(1..=2))
                    .map(|_| self.port())
                    .collect();
                rule.insert("ports".into(), Value::Array(ports));
            }
        }
        Value::Object(rule)
    }

    fn peer(&mut self) -> Value {
        match self.rng.random_range(0..20) {
            0..6 => json!({"podSelector": self.selector(&POD_LABELS, 0.2)}),
            6..11 => json!({"namespaceSelector": self.namespace_selector()}),
            11..16 => json!({
                "namespaceSelector": self.namespace_selector(),
                "podSelector": self.selector(&POD_LABELS, 0.2),
            }),
            _ => self.ip_block(),
        }
    }

    /// An `ipBlock` on addresses of the cluster, with `except` entries strictly inside.
    fn ip_block(&mut self) -> Value {
        let pod_ips: Vec<Ipv4Addr> = self
            .model
            .objects
            .pods
            .values()
            .filter_map(objects::pod_ip)
            .collect();
        let subnets: Vec<Ipv4Net> = self.model.pod_subnets.values().copied().collect();
        let nodes: Vec<Ipv4Addr> = self.model.node_addresses.values().copied().collect();
        let host = |ip: Ipv4Addr| Ipv4Net::new(ip, 32).expect("a /32");
        let cidr: Ipv4Net = match self.rng.random_range(0..12) {
            0..4 => host(*self.pick(&pod_ips)),
            4..7 => *self.pick(&subnets),
            7..9 => self.model.cluster.pod_cidr,
            9 => plan::UNDERLAY,
            10 => host(*self.pick(&nodes)),
            _ => "0.0.0.0/0".parse().expect("a CIDR"),
        };
        // Candidates for `except`: pod /32s, node subnets and the underlay, when strictly
        // inside the block (the API server refuses anything else).
        let mut inside: Vec<Ipv4Net> = pod_ips
            .iter()
            .map(|ip| host(*ip))
            .chain(subnets.iter().copied())
            .chain(nodes.iter().map(|ip| host(*ip)))
            .chain([plan::UNDERLAY])
            .filter(|n| n.prefix_len() > cidr.prefix_len() && cidr.contains(n))
            .collect();
        let mut block = json!({"cidr": cidr.to_string()});
        if !inside.is_empty() && self.chance(0.6) {
            let mut except = Vec::new();
            for _ in 0..self.rng.random_range(1..=2) {
                let i = self.rng.random_range(0..inside.len());
                except.push(inside.swap_remove(i).to_string());
                if inside.is_empty() {
                    break;
                }
            }
            block["except"] = json!(except);
        }
        json!({"ipBlock": block})
    }

    fn protocol(&mut self) -> Option<Protocol> {
        match self.rng.random_range(0..20) {
            0..8 => None,
            8..12 => Some(Protocol::Tcp),
            12..17 => Some(Protocol::Udp),
            _ => Some(Protocol::Sctp),
        }
    }

    fn port(&mut self) -> Value {
        let protocol = self.protocol();
        let mut entry = serde_json::Map::new();
        if let Some(p) = protocol {
            entry.insert("protocol".into(), json!(p.as_str()));
        }
        match self.rng.random_range(0..20) {
            // `{}` or protocol only: every port of the protocol.
            0..4 => {}
            4..10 => {
                entry.insert("port".into(), json!(*self.pick(&PORTS)));
            }
            10..13 => {
                let (first, last) =
                    *self.pick(&[(80, 81), (79, 80), (81, 90), (70, 79), (1, 65535)]);
                entry.insert("port".into(), json!(first));
                entry.insert("endPort".into(), json!(last));
            }
            _ => {
                // A model port's name: its protocol is often, not always, the entry's.
                let name = if self.chance(0.1) {
                    "http".to_string()
                } else {
                    let proto = match protocol {
                        Some(p) if self.chance(0.7) => p,
                        _ => *self.pick(&Protocol::ALL),
                    };
                    format!("serve-{}-{}", self.pick(&PORTS), proto.lower())
                };
                entry.insert("port".into(), json!(name));
            }
        }
        Value::Object(entry)
    }

    /// A ClusterNetworkPolicy: Admin or Baseline, priority `10 * index` plus a little
    /// (so two never share one), a namespaces or pods subject, and up to three rules
    /// per direction with every action, peer kind and port form.
    fn cluster_policy(&mut self, index: usize) -> Value {
        let tier = if self.chance(0.6) {
            "Admin"
        } else {
            "Baseline"
        };
        let priority = index * 10 + self.rng.random_range(0..10);
        let subject = if self.chance(0.5) {
            json!({"namespaces": self.namespace_selector()})
        } else {
            json!({"pods": {
                "namespaceSelector": self.namespace_selector(),
                "podSelector": self.selector(&POD_LABELS, 0.3),
            }})
        };
        let mut spec = json!({"tier": tier, "priority": priority, "subject": subject});
        let ingress: Vec<Value> = (0..self.rng.random_range(0..=3))
            .map(|j| self.cluster_rule(j, "from"))
            .collect();
        let egress: Vec<Value> = (0..self.rng.random_range(0..=3))
            .map(|j| self.cluster_rule(j, "to"))
            .collect();
        if !ingress.is_empty() || egress.is_empty() {
            spec["ingress"] = if ingress.is_empty() {
                json!([self.cluster_rule(0, "from")])
            } else {
                Value::Array(ingress)
            };
        }
        if !egress.is_empty() {
            spec["egress"] = Value::Array(egress);
        }
        json!({
            "apiVersion": "policy.networking.k8s.io/v1alpha2",
            "kind": "ClusterNetworkPolicy",
            "metadata": {"name": format!("c{index}")},
            "spec": spec,
        })
    }

    fn cluster_rule(&mut self, index: usize, peers_field: &str) -> Value {
        let action = *self.pick(&["Accept", "Deny", "Pass"]);
        let peers: Vec<Value> = (0..self.rng.random_range(1..=2))
            .map(|_| self.cluster_peer(peers_field == "to"))
            .collect();
        let addresses = peers
            .iter()
            .any(|p| p.get("networks").is_some() || p.get("nodes").is_some());
        let mut rule = json!({"name": format!("r{index}"), "action": action});
        rule[peers_field] = Value::Array(peers);
        if self.chance(0.6) {
            let protocols: Vec<Value> = (0..self.rng.random_range(1..=2))
                .map(|_| self.cluster_port(!addresses))
                .collect();
            rule["protocols"] = Value::Array(protocols);
        }
        rule
    }

    fn cluster_peer(&mut self, egress: bool) -> Value {
        match self.rng.random_range(0..if egress { 20 } else { 14 }) {
            0..6 => json!({"namespaces": self.namespace_selector()}),
            6..14 => json!({"pods": {
                "namespaceSelector": self.namespace_selector(),
                "podSelector": self.selector(&POD_LABELS, 0.2),
            }}),
            14..17 => {
                let cidr = self.ip_block()["ipBlock"]["cidr"].clone();
                json!({"networks": [cidr]})
            }
            _ => {
                let nodes: Vec<&String> = self.model.node_addresses.keys().collect();
                let node = (*self.pick(&nodes)).clone();
                if self.chance(0.5) {
                    json!({"nodes": {}})
                } else {
                    json!({"nodes": {"matchLabels": {"kubernetes.io/hostname": node}}})
                }
            }
        }
    }

    /// A `protocols` entry; named ports only when `named` (no nodes/networks peers).
    fn cluster_port(&mut self, named: bool) -> Value {
        if named && self.chance(0.25) {
            let proto = *self.pick(&Protocol::ALL);
            return json!({"destinationNamedPort": format!("serve-{}-{}", self.pick(&PORTS), proto.lower())});
        }
        let proto = self.pick(&Protocol::ALL).lower();
        let port = if self.chance(0.6) {
            json!({"number": *self.pick(&PORTS)})
        } else {
            let (start, end) = *self.pick(&[(80, 81), (79, 80), (81, 90), (70, 79)]);
            json!({"range": {"start": start, "end": end}})
        };
        json!({proto: {"destinationPort": port}})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::PolicyEngineKind;
    use crate::oracle::{self, OracleContext};
    use crate::peers::Peer;

    #[test]
    fn the_model_has_nine_pods_with_host_local_addresses() {
        let m = standard_model();
        assert_eq!(m.objects.pods.len(), 9);
        let ip = |p: &str| {
            let (ns, name) = p.split_once('/').unwrap();
            objects::pod_ip(&m.objects.pods[&PodRef::new(ns, name)]).unwrap()
        };
        // The scheduler alternates: x/a n1, x/b n2, x/c n1, ...
        assert_eq!(ip("x/a").to_string(), "10.244.1.2");
        assert_eq!(ip("x/b").to_string(), "10.244.2.2");
        assert_eq!(ip("x/c").to_string(), "10.244.1.3");
        assert_eq!(ip("z/c").to_string(), "10.244.1.6");
    }

    #[test]
    fn a_seed_always_gives_the_same_case() {
        for seed in [0, 1, 42, u64::MAX] {
            assert_eq!(random_case(seed), random_case(seed));
        }
        assert_ne!(random_case(1), random_case(2));
    }

    #[test]
    fn cases_cover_the_semantics() {
        // Over a few hundred seeds every feature shows up, and verdicts are mixed.
        let mut text = String::new();
        let (mut allow, mut deny) = (0, 0);
        let m = standard_model();
        for seed in 0..300 {
            let case = random_case(seed);
            text.push_str(&serde_json::to_string(&case.policies).unwrap());
            let objects = case.objects();
            let ctx = OracleContext::new(&objects, PolicyEngineKind::Iptables, &m.node_addresses);
            for from in objects.pods.keys() {
                for to in objects.pods.keys() {
                    let p = crate::protocol::PortProto::new(Protocol::Tcp, 80);
                    match oracle::predict(&ctx, &Peer::Pod(from.clone()), &Peer::Pod(to.clone()), p)
                        .verdict
                    {
                        crate::matrix::Verdict::Allow => allow += 1,
                        crate::matrix::Verdict::Deny => deny += 1,
                    }
                }
            }
        }
        for needle in [
            "\"podSelector\":{}",
            "matchLabels",
            "\"In\"",
            "NotIn",
            "\"Exists\"",
            "DoesNotExist",
            "namespaceSelector",
            "kubernetes.io/metadata.name",
            "ipBlock",
            "except",
            "0.0.0.0/0",
            "/32",
            "endPort",
            "serve-80-",
            "\"http\"",
            "SCTP",
            "UDP",
            "\"policyTypes\":[\"Egress\"]",
            "\"policyTypes\":[\"Ingress\",\"Egress\"]",
            "\"ingress\":[]",
            "\"egress\":[]",
            "\"from\":[]",
            "\"ports\":[]",
            "\"ingress\":[{}",
        ] {
            assert!(text.contains(needle), "no case has {needle}");
        }
        println!("TCP/80 over 300 cases: {allow} allowed, {deny} denied");
        assert!(allow > 1000 && deny > 1000, "allow {allow}, deny {deny}");
    }

    #[test]
    fn cases_cover_the_cluster_policy_tiers() {
        let mut text = String::new();
        let mut with = 0;
        for seed in 0..300 {
            let case = random_case(seed);
            with += usize::from(!case.cluster_policies.is_empty());
            text.push_str(&serde_json::to_string(&case.cluster_policies).unwrap());
            // Every generated manifest is one the API would accept.
            for m in &case.cluster_policies {
                crate::cluster_policy::parse(m).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{m}"));
            }
            assert!(
                crate::cluster_policy::from_objects::notes(&case.objects()).is_empty(),
                "seed {seed}: same-priority policies would leave cells undefined"
            );
        }
        for needle in [
            "\"Admin\"",
            "\"Baseline\"",
            "\"Accept\"",
            "\"Deny\"",
            "\"Pass\"",
            "\"networks\"",
            "\"nodes\"",
            "\"pods\"",
            "destinationNamedPort",
            "\"range\"",
            "\"sctp\"",
            "\"egress\"",
        ] {
            assert!(text.contains(needle), "no case has {needle}");
        }
        assert!(with > 100, "{with} of 300 cases have cluster-wide policies");
    }

    #[test]
    fn a_case_is_a_scenario() {
        for seed in 0..50 {
            let case = random_case(seed);
            for text in [
                serde_json::to_string_pretty(&case.to_scenario()).unwrap(),
                case.to_scenario_yaml(),
            ] {
                let sc = scenario::parse_str(Path::new("case.yaml"), &text)
                    .unwrap_or_else(|e| panic!("{e}\n{text}"));
                assert_eq!(sc.steps.len(), 2);
                // Replaying the scenario gives the case's objects.
                let mut objects = ClusterObjects::new(sc.cluster.nodes.clone());
                for change in sc.steps.iter().flat_map(|s| &s.changes) {
                    match change {
                        Change::Apply(raw) => objects.apply(raw.decode(&|_| None).unwrap()),
                        Change::Label {
                            kind,
                            namespace,
                            name,
                            labels,
                        } => {
                            objects.set_labels(*kind, namespace, name, labels.clone());
                        }
                        Change::Delete { .. } => unreachable!("cases delete nothing"),
                    }
                }
                let want = case.objects();
                assert_eq!(
                    objects.network_policies, want.network_policies,
                    "seed {seed}"
                );
                assert_eq!(
                    objects.cluster_policies.keys().collect::<Vec<_>>(),
                    want.cluster_policies.keys().collect::<Vec<_>>(),
                    "seed {seed}"
                );
                assert_eq!(
                    objects
                        .namespaces
                        .values()
                        .map(|n| &n.metadata.labels)
                        .collect::<Vec<_>>(),
                    want.namespaces
                        .values()
                        .map(|n| &n.metadata.labels)
                        .collect::<Vec<_>>(),
                );
                for (pod, p) in &want.pods {
                    assert_eq!(
                        objects.pods[pod].metadata.labels, p.metadata.labels,
                        "{pod}"
                    );
                }
            }
        }
    }
}
