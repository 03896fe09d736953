//! Seeded random Service sets for the Services half of the differential test: each case
//! relabels four server pods and replaces the Services with one to three new ones,
//! drawn over every part of what kube-proxy does: label selectors that match some, all
//! or none of the pods; `targetPort` by number or by name (the name resolving to a
//! different number on different pods, or to none); TCP and UDP; `ClusterIP`, `NodePort`
//! and `LoadBalancer`; `sessionAffinity: ClientIP`; both `internalTrafficPolicy` and
//! `externalTrafficPolicy` values. Cases are steps of one scenario, so one cluster
//! serves all of them: a case's Services are named after its parity (`a0`.. on even
//! positions, `b0`.. on odd ones) and the step deletes the previous case's set, so that
//! no Service is ever changed in place. Clients are a pod on each node and an external
//! host, probing cluster IPs, every node's NodePorts and the load-balancer addresses.
//!
//! [`scenario`] writes the scenario (YAML); the harness runs it and compares every cell
//! with the oracle.

use std::collections::BTreeMap;

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

/// A declared container port: name, number, protocol.
type DeclaredPort = (&'static str, u16, &'static str);

/// The server pods: name, node, declared ports. `http` is 8080 on some pods and 8081 on
/// another, so a named `targetPort` lands on different numbers.
const SERVERS: [(&str, &str, &[DeclaredPort]); 4] = [
    (
        "p1",
        "n1",
        &[
            ("http", 8080, "TCP"),
            ("alt", 8081, "TCP"),
            ("dns", 5353, "UDP"),
        ],
    ),
    ("p2", "n1", &[("http", 8081, "TCP"), ("dns", 5353, "UDP")]),
    ("p3", "n2", &[("http", 8080, "TCP"), ("alt", 8082, "TCP")]),
    ("p4", "n2", &[("http", 8080, "TCP")]),
];
/// The client pods, one per node.
const CLIENTS: [(&str, &str); 2] = [("c1", "n1"), ("c2", "n2")];
/// The namespace of every pod and Service.
const NAMESPACE: &str = "default";
/// Services per parity, and their slots' service ports.
const SLOTS: usize = 3;
const SERVICE_PORTS: [(u16, &str); 3] = [(80, "TCP"), (81, "TCP"), (53, "UDP")];
/// Probes per Service cell (enough to see a spread, and affinity hold).
const REPEAT: u32 = 4;

/// A Service's name: `a0`.. for cases at even positions, `b0`.. at odd ones.
fn service_name(position: usize, slot: usize) -> String {
    format!(
        "{}{slot}",
        if position.is_multiple_of(2) { 'a' } else { 'b' }
    )
}

/// The NodePort of a (position, slot, service port): distinct for every Service of up
/// to 200 consecutive cases, so no step's Services claim a port an earlier step's still
/// hold (30000-31999, inside the default range).
fn node_port(position: usize, slot: usize, port_index: usize) -> u16 {
    30000 + ((position % 200) * 10 + slot * 3 + port_index) as u16
}

/// One random case: the server pods' labels and the Services (as API objects).
#[derive(Debug, Clone, PartialEq)]
pub struct ServicesCase {
    pub seed: u64,
    /// Server pod → its labels.
    pub labels: BTreeMap<String, BTreeMap<String, String>>,
    pub services: Vec<Value>,
}

/// The case for `seed`, at `position` in its scenario (which names its Services).
pub fn random_services_case(seed: u64, position: usize) -> ServicesCase {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5e41_1ce5);
    let labels = SERVERS
        .iter()
        .map(|(name, _, _)| {
            let mut l = BTreeMap::new();
            l.insert(
                "app".to_string(),
                pick(&mut rng, &["web", "db"]).to_string(),
            );
            if rng.random_bool(0.7) {
                l.insert("tier".to_string(), pick(&mut rng, &["a", "b"]).to_string());
            }
            (name.to_string(), l)
        })
        .collect();
    let count = rng.random_range(1..=SLOTS);
    let services = (0..count)
        .map(|slot| random_service(&mut rng, position, slot))
        .collect();
    ServicesCase {
        seed,
        labels,
        services,
    }
}

fn pick<'a>(rng: &mut ChaCha8Rng, from: &[&'a str]) -> &'a str {
    from.choose(rng).copied().unwrap_or_default()
}

fn random_service(rng: &mut ChaCha8Rng, position: usize, slot: usize) -> Value {
    let kind = pick(rng, &["ClusterIP", "ClusterIP", "NodePort", "LoadBalancer"]);
    // A selector that matches all, some or none of the servers.
    let mut selector = serde_json::Map::new();
    if rng.random_bool(0.8) {
        selector.insert("app".into(), json!(pick(rng, &["web", "db", "cache"])));
    }
    if selector.is_empty() || rng.random_bool(0.4) {
        selector.insert("tier".into(), json!(pick(rng, &["a", "b"])));
    }
    let mut ports = Vec::new();
    for (i, (port, protocol)) in SERVICE_PORTS.iter().enumerate() {
        if ports.is_empty() && i == SERVICE_PORTS.len() - 1 || rng.random_bool(0.45) {
            let target = match *protocol {
                "UDP" => match rng.random_range(0..3) {
                    0 => json!(5353),
                    1 => json!("dns"),
                    _ => json!("http"),
                },
                _ => match rng.random_range(0..6) {
                    0 => json!(8080),
                    1 => json!(8081),
                    2 => json!("alt"),
                    3 => json!("missing"),
                    _ => json!("http"),
                },
            };
            let mut p = json!({
                "name": format!("p{port}"),
                "port": port,
                "protocol": protocol,
                "targetPort": target,
            });
            if kind != "ClusterIP" {
                p["nodePort"] = json!(node_port(position, slot, i));
            }
            ports.push(p);
        }
    }
    let mut spec = json!({"type": kind, "selector": selector, "ports": ports});
    if rng.random_bool(0.3) {
        spec["sessionAffinity"] = json!("ClientIP");
    }
    if rng.random_bool(0.3) {
        spec["internalTrafficPolicy"] = json!("Local");
    }
    if kind != "ClusterIP" && rng.random_bool(0.4) {
        spec["externalTrafficPolicy"] = json!("Local");
    }
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service_name(position, slot), "namespace": NAMESPACE},
        "spec": spec,
    })
}

fn pod(
    name: &str,
    node: &str,
    labels: &BTreeMap<String, String>,
    ports: &[(&str, u16, &str)],
) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p, proto)| json!({"name": n, "containerPort": p, "protocol": proto}))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x", "ports": ports}]},
    })
}

/// Who probes: the client pods (every target), or the external host (NodePorts and
/// load-balancer addresses: a cluster IP is not routed outside the cluster, and the
/// scenario parser refuses such cells).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clients {
    Pods,
    Outside,
}

/// Every target some case has: each Service port's cluster IP (for pods), and for the
/// other types every node's NodePort and (LoadBalancer) the load-balancer address. The
/// run probes, in each step, those of the Services that exist then.
fn probe_targets(cases: &[ServicesCase], clients: Clients) -> Vec<String> {
    let mut to = Vec::new();
    for s in cases.iter().flat_map(|c| &c.services) {
        let name = s["metadata"]["name"].as_str().unwrap_or_default();
        let kind = s["spec"]["type"].as_str().unwrap_or_default();
        for p in s["spec"]["ports"].as_array().into_iter().flatten() {
            let port = &p["port"];
            if clients == Clients::Pods {
                to.push(format!("svc/{NAMESPACE}/{name}:{port}"));
            }
            if kind == "LoadBalancer" {
                to.push(format!("lb/{NAMESPACE}/{name}:{port}"));
            }
            if let Some(np) = p["nodePort"].as_u64() {
                for node in ["n1", "n2"] {
                    to.push(format!("nodeport/{node}:{np}"));
                }
            }
        }
    }
    to.sort();
    to.dedup();
    to
}

/// The scenario that runs `seeds` as consecutive steps on one cluster, probed by
/// `clients` (YAML; JSON flow style, one object per line). Step `i` is named `seed S`.
pub fn scenario(seeds: &[u64], clients: Clients) -> String {
    let line = |v: &Value| serde_json::to_string(v).unwrap_or_default();
    let cases: Vec<ServicesCase> = seeds
        .iter()
        .enumerate()
        .map(|(i, s)| random_services_case(*s, i))
        .collect();
    let mut out = String::new();
    out += "name: differential-services\n";
    out += "summary: Random Service sets, one per step, for the differential test.\n";
    out += "description: Generated by sim::testgen::services; each step is one seed.\n";
    out += "cluster:\n  nodes: 2\n  network: host-gw\n  policy: none\n  \
            loadBalancerPool: 203.0.113.0/28\n  \
            externalHosts:\n    - {name: laptop, address: 172.17.0.10}\n";
    out += "manifests:\n";
    let first = cases.first();
    for (name, node, ports) in SERVERS {
        let labels = first
            .and_then(|c| c.labels.get(name).cloned())
            .unwrap_or_default();
        out += &format!("  - {}\n", line(&pod(name, node, &labels, ports)));
    }
    for (name, node) in CLIENTS {
        let labels = BTreeMap::from([("app".to_string(), "client".to_string())]);
        out += &format!("  - {}\n", line(&pod(name, node, &labels, &[])));
    }
    for s in first.iter().flat_map(|c| &c.services) {
        out += &format!("  - {}\n", line(s));
    }
    let from: Vec<String> = match clients {
        Clients::Pods => CLIENTS
            .iter()
            .map(|(c, _)| format!("{NAMESPACE}/{c}"))
            .collect(),
        Clients::Outside => vec!["host/laptop".to_string()],
    };
    out += &format!(
        "probe:\n  from: {}\n  to: {}\n  repeat: {REPEAT}\n",
        line(&json!(from)),
        line(&json!(probe_targets(&cases, clients)))
    );
    if cases.len() > 1 {
        out += "steps:\n";
    }
    for (i, case) in cases.iter().enumerate().skip(1) {
        out += &format!("  - name: seed {}\n", case.seed);
        out += "    label:\n";
        for (pod, labels) in &case.labels {
            out += &format!(
                "      - {}\n",
                line(
                    &json!({"kind": "Pod", "namespace": NAMESPACE, "name": pod, "labels": labels})
                )
            );
        }
        out += "    delete:\n";
        for s in &cases[i - 1].services {
            out += &format!(
                "      - {}\n",
                line(
                    &json!({"kind": "Service", "namespace": NAMESPACE, "name": s["metadata"]["name"]})
                )
            );
        }
        out += "    apply:\n";
        for s in &case.services {
            out += &format!("      - {}\n", line(s));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_seed_always_gives_the_same_case() {
        assert_eq!(random_services_case(7, 0), random_services_case(7, 0));
        assert_ne!(random_services_case(7, 0), random_services_case(8, 0));
    }

    #[test]
    fn generated_scenarios_parse() {
        for first in [0u64, 100, 1000] {
            for clients in [Clients::Pods, Clients::Outside] {
                let seeds: Vec<u64> = (first..first + 20).collect();
                let text = scenario(&seeds, clients);
                let sc = crate::scenario::parse_str(Path::new("services.yaml"), &text)
                    .unwrap_or_else(|e| panic!("{e}\n{text}"));
                assert_eq!(sc.steps.len(), seeds.len(), "one step per seed");
            }
        }
    }

    #[test]
    fn cases_cover_every_kind_of_service() {
        let all: Vec<Value> = (0..200)
            .flat_map(|s| random_services_case(s, 0).services)
            .collect();
        let has = |f: &dyn Fn(&Value) -> bool| all.iter().any(f);
        for kind in ["ClusterIP", "NodePort", "LoadBalancer"] {
            assert!(has(&|s| s["spec"]["type"] == kind), "{kind}");
        }
        assert!(has(&|s| s["spec"]["sessionAffinity"] == "ClientIP"));
        assert!(has(&|s| s["spec"]["internalTrafficPolicy"] == "Local"));
        assert!(has(&|s| s["spec"]["externalTrafficPolicy"] == "Local"));
        assert!(has(&|s| s["spec"]["ports"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["targetPort"].is_string()))));
        assert!(has(&|s| s["spec"]["ports"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["protocol"] == "UDP"))));
    }
}
