//! The `iptables` service proxy against the real kernel: Services over pods wired by the
//! real CNI plugins on two nodes, kube-proxy's rules loaded by the proxy, and real
//! connections to the cluster IPs answered by the probe servers in the pods. Checks that
//! the rules read back from every node are the rendering, that adding one endpoint rewrites
//! only that Service's chains (and how big and how fast that partial sync is), that
//! connections spread over every backend, that ClientIP affinity pins a client to one
//! backend, and that the proxy and the NetworkPolicy engine share the tables. Needs root:
//! ignored unless run with `--include-ignored` (see `common`).

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use harness::cluster::Cluster;
use harness::netns::Netns;
use harness::policy::engine_for;
use harness::probe::{self, ProbeOptions, ProbeTask, ServerSpec, Servers};
use harness::proxy::{ProxySyncReport, ServiceProxy, proxy_for};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use serde_json::{Value, json};
use sim::kube_proxy::iptables::{ProxyRules, kube_proxy_view, render};
use sim::kube_proxy::model::proxy_input;
use sim::matrix::Outcome;
use sim::objects::{ClusterObjects, Object, PodRef};
use sim::plan::{Plan, prefix_from_seed};
use sim::protocol::{PortProto, Protocol};
use sim::scenario::{ClusterConfig, DenyStyle, PolicyEngineKind, ProxyKind};
use sim::services::alloc::{ServiceRanges, allocate};

const TARGET: u16 = 8080;

fn cluster_config() -> ClusterConfig {
    ClusterConfig {
        nodes: vec!["n1".into(), "n2".into()],
        pod_cidr: "10.244.0.0/16".parse().unwrap(),
        service_cidr: "10.96.0.0/12".parse().unwrap(),
        network: Default::default(),
        policy: Default::default(),
        deny: Default::default(),
        proxy: Default::default(),
        cni: Default::default(),
        external_hosts: vec![],
    }
}

fn plan() -> Plan {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ (u64::from(std::process::id()) << 40);
    Plan::new(&prefix_from_seed(seed), &cluster_config()).unwrap()
}

/// The pods of every test: three `app=web` backends (two on n1), one `app=api` backend
/// and a client, on alternating nodes.
fn pods() -> Vec<(PodRef, String, &'static str)> {
    [
        ("web-1", "n1", "web"),
        ("web-2", "n2", "web"),
        ("web-3", "n1", "web"),
        ("api-1", "n2", "api"),
        ("client", "n2", "client"),
    ]
    .into_iter()
    .map(|(p, n, app)| (PodRef::new("default", p), n.to_string(), app))
    .collect()
}

fn pod_object(pod: &PodRef, node: &str, app: &str) -> Object {
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"namespace": pod.namespace, "name": pod.name, "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [{"name": "server", "image": "knetlab",
            "ports": [{"name": "http", "containerPort": TARGET}]}]},
    }))
    .unwrap();
    Object::Pod(p)
}

/// Creates (or updates) a Service as the API server would store it.
fn apply_service(objects: &mut ClusterObjects, name: &str, spec: Value) {
    let svc: Service = serde_json::from_value(
        json!({"metadata": {"namespace": "default", "name": name}, "spec": spec}),
    )
    .unwrap();
    let ranges = ServiceRanges::new(&cluster_config(), None);
    let svc = allocate(&objects.services, &ranges, svc).expect("allocate the Service");
    objects.apply(Object::Service(svc));
}

fn cluster_ip(objects: &ClusterObjects, name: &str) -> Ipv4Addr {
    sim::services::cluster_ip(&objects.services[&("default".to_string(), name.to_string())])
        .expect("a cluster IP")
}

/// A cluster with the pods wired, their probe servers running, and their objects.
struct Fixture {
    cluster: Cluster,
    objects: ClusterObjects,
    servers: Vec<Servers>,
}

impl Fixture {
    async fn new() -> Fixture {
        // A cluster dropped by a panic below sweeps its namespaces by its prefix.
        let cluster = Cluster::create(plan()).await.expect("create the cluster");
        let mut objects = ClusterObjects::new(vec!["n1".into(), "n2".into()]);
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
        objects.apply(Object::Namespace(ns));
        let mut f = Fixture {
            cluster,
            objects,
            servers: vec![],
        };
        f.add_pods(&pods()).await;
        f
    }

    /// Wires pods, records their addresses and starts their servers on the target port.
    async fn add_pods(&mut self, pods: &[(PodRef, String, &str)]) {
        let wire: Vec<(PodRef, String)> = pods
            .iter()
            .map(|(p, n, _)| (p.clone(), n.clone()))
            .collect();
        let ips = self.cluster.add_pods(&wire).await.expect("add pods");
        for (pod, node, app) in pods {
            self.objects.apply(pod_object(pod, node, app));
        }
        let mut specs = vec![];
        for (pod, ip) in ips {
            self.objects.set_pod_ip(&pod, ip);
            specs.push(ServerSpec {
                name: pod.to_string(),
                netns: self.cluster.pod(&pod).unwrap().netns.clone(),
                ports: vec![PortProto::new(Protocol::Tcp, TARGET)],
            });
        }
        self.servers.push(
            probe::start_servers(specs)
                .await
                .expect("start the servers"),
        );
    }

    fn nodes(&self) -> Vec<(String, Netns)> {
        self.cluster
            .plan()
            .nodes
            .iter()
            .map(|n| {
                (
                    n.name.clone(),
                    self.cluster.node_netns(&n.name).unwrap().clone(),
                )
            })
            .collect()
    }

    fn sync(&self, proxy: &mut dyn ServiceProxy) -> ProxySyncReport {
        tokio::task::block_in_place(|| {
            proxy
                .sync(self.cluster.plan(), &self.nodes(), &self.objects)
                .expect("proxy sync")
        })
    }

    /// What kube-proxy renders for node `node` now.
    fn rendered(&self, node: &str) -> ProxyRules {
        render(&proxy_input(&self.objects, self.cluster.plan(), node).unwrap()).unwrap()
    }

    /// The kernel's rules equal the rendering in every node.
    fn assert_installed_is_rendered(&self, proxy: &dyn ServiceProxy, when: &str) {
        for (node, ns) in self.nodes() {
            let want = kube_proxy_view(&self.rendered(&node).saved().unwrap());
            let got = tokio::task::block_in_place(|| proxy.installed(&ns)).unwrap();
            assert_eq!(
                got, want,
                "{when}: node {node}: installed rules differ from the rendering"
            );
        }
    }

    /// `n` probes from `from` to the Service's cluster IP and port 80: the first alone,
    /// the rest at once. Returns who answered each.
    async fn probe_service(&self, from: &str, service: &str, n: usize) -> Vec<Option<String>> {
        let client = self
            .cluster
            .pod(&PodRef::new("default", from))
            .unwrap()
            .netns
            .clone();
        let task = ProbeTask {
            client,
            dst: cluster_ip(&self.objects, service),
            port: PortProto::new(Protocol::Tcp, 80),
            expect_answer_from: vec![],
        };
        let opts = ProbeOptions {
            deadline: Duration::from_secs(1),
            ..ProbeOptions::default()
        };
        let mut out = probe::run_probes(std::slice::from_ref(&task), &opts).await;
        out.extend(probe::run_probes(&vec![task; n.saturating_sub(1)], &opts).await);
        out.into_iter()
            .map(|m| match m.outcome {
                Outcome::Allowed => m.answered_by,
                other => panic!("a probe to {service} was {other:?}: {}", m.detail),
            })
            .collect()
    }

    async fn teardown(self) {
        for s in self.servers {
            s.shutdown().await;
        }
        let report = self.cluster.teardown().await;
        assert!(report.errors.is_empty(), "teardown: {:?}", report.errors);
    }
}

/// Runs `body` on a fresh fixture and tears it down afterwards, also when `body` panics.
async fn with_fixture<F>(body: F)
where
    F: for<'a> FnOnce(&'a mut Fixture) -> futures::future::BoxFuture<'a, ()>,
{
    let mut f = Fixture::new().await;
    let result = AssertUnwindSafe(body(&mut f)).catch_unwind().await;
    f.teardown().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn web() -> Value {
    json!({"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]})
}

fn report_line(what: &str, r: &ProxySyncReport) {
    let nodes: Vec<String> = r
        .nodes
        .iter()
        .map(|n| {
            format!(
                "{} {:.1} ms {} ({} bytes, {} lines)",
                n.node,
                n.elapsed.as_secs_f64() * 1e3,
                if !n.changed {
                    "untouched"
                } else if n.full {
                    "full"
                } else {
                    "partial"
                },
                n.restore_bytes,
                n.restore_lines
            )
        })
        .collect();
    eprintln!(
        "proxy sync [{what}]: {:.1} ms ({:.2} ms rendering); {}",
        r.elapsed.as_secs_f64() * 1e3,
        r.render.as_secs_f64() * 1e3,
        nodes.join("; ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: loads kube-proxy rules in network namespaces"]
async fn installed_rules_are_the_rendering_and_share_the_tables_with_the_policy_engine() {
    common::require_root(&[]);
    with_fixture(|f| {
        Box::pin(async move {
            apply_service(&mut f.objects, "web", web());
            let mut affinity = web();
            affinity["sessionAffinity"] = json!("ClientIP");
            apply_service(&mut f.objects, "sticky", affinity);
            apply_service(
                &mut f.objects,
                "nobody",
                json!({"selector": {"app": "none"}, "ports": [{"port": 80}]}),
            );
            apply_service(
                &mut f.objects,
                "headless",
                json!({"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"port": 80}]}),
            );
            let mut proxy = proxy_for(ProxyKind::Iptables);
            assert_eq!(proxy.name(), "iptables");
            let r = f.sync(proxy.as_mut());
            report_line("start-up", &r);
            assert!(r.nodes.iter().all(|n| n.changed && n.full), "{r:?}");
            f.assert_installed_is_rendered(proxy.as_ref(), "start-up");

            // The policy engine writes into the same tables: neither disturbs the other.
            let mut policies = engine_for(PolicyEngineKind::Iptables, DenyStyle::Reject);
            tokio::task::block_in_place(|| {
                policies
                    .sync(f.cluster.plan(), &f.nodes(), &f.objects)
                    .expect("policy sync")
            });
            f.assert_installed_is_rendered(proxy.as_ref(), "after the policy engine");
            let resolved = sim::policy::resolve(&f.objects);
            for (node, ns) in f.nodes() {
                let ctx =
                    harness::policy::render_context(f.cluster.plan(), &node, DenyStyle::Reject)
                        .unwrap();
                let want = sim::render::render_node(&resolved, &node, &ctx).normalised();
                let got = tokio::task::block_in_place(|| policies.installed(&ns)).unwrap();
                assert_eq!(got, want, "node {node}: the policy engine's rules");
            }

            // Nothing changed: nothing is touched.
            let r = f.sync(proxy.as_mut());
            report_line("no change", &r);
            assert!(!r.changed(), "{r:?}");

            // Through the rules: the service answers, the empty one does not.
            let answers = f.probe_service("client", "web", 3).await;
            assert!(
                answers
                    .iter()
                    .all(|a| a.as_deref().is_some_and(|w| w.starts_with("default/web-")))
            );
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: loads kube-proxy rules in network namespaces"]
async fn adding_one_endpoint_rewrites_only_that_services_chains() {
    common::require_root(&[]);
    with_fixture(|f| {
        Box::pin(async move {
            apply_service(&mut f.objects, "web", web());
            apply_service(
                &mut f.objects,
                "api",
                json!({"selector": {"app": "api"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}),
            );
            // Two hundred more Services (one endpoint each), so the node holds what a
            // small real cluster has and a full sync has something to be compared with.
            for i in 0..200 {
                apply_service(
                    &mut f.objects,
                    &format!("filler-{i:03}"),
                    json!({"selector": {"app": "api"}, "ports": [{"port": 80, "targetPort": "http"}]}),
                );
            }
            let mut proxy = proxy_for(ProxyKind::Iptables);
            let r = f.sync(proxy.as_mut());
            report_line("start-up", &r);
            let before: BTreeMap<String, ProxyRules> =
                f.nodes().into_iter().map(|(n, _)| (n.clone(), f.rendered(&n))).collect();

            // One more web pod.
            f.add_pods(&[(PodRef::new("default", "web-4"), "n2".into(), "web")])
                .await;
            let r = f.sync(proxy.as_mut());
            report_line("one endpoint added", &r);
            let api_chains: Vec<String> = before["n1"]
                .chains_of("default/api:http", Protocol::Tcp)
                .into_iter()
                .map(str::to_string)
                .collect();
            assert!(!api_chains.is_empty());
            for n in &r.nodes {
                assert!(n.changed && !n.full, "{n:?}");
                let after = f.rendered(&n.node);
                let partial = after.incremental_restore(&before[&n.node]);
                // The engine wrote exactly kube-proxy's partial sync ...
                assert_eq!(n.restore_bytes, partial.len(), "node {}", n.node);
                // ... which names none of api's chains and all of web's.
                for c in &api_chains {
                    assert!(!partial.contains(&format!(":{c} ")), "{c} rewritten:\n{partial}");
                    assert!(!partial.contains(&format!("-A {c} ")), "{c} rewritten:\n{partial}");
                }
                for c in after.chains_of("default/web:http", Protocol::Tcp) {
                    assert!(partial.contains(&format!(":{c} - [0:0]")), "{c} not written:\n{partial}");
                }
                let full = after.full_restore();
                eprintln!(
                    "node {}: partial sync {} bytes ({} lines) against a full sync of {} bytes ({} lines)",
                    n.node,
                    partial.len(),
                    partial.lines().count(),
                    full.len(),
                    full.lines().count()
                );
                // The top-level chains (one rule per Service) are always rewritten; of
                // the 202 Services' own chains only web's are.
                assert!(partial.len() * 4 < full.len(), "{} vs {}", partial.len(), full.len());
            }
            f.assert_installed_is_rendered(proxy.as_ref(), "one endpoint added");

            // And back: the endpoint's SEP chain goes (flushed and deleted).
            let gone = f.rendered("n1");
            f.objects
                .delete(sim::objects::Kind::Pod, "default", "web-4");
            let r = f.sync(proxy.as_mut());
            report_line("one endpoint removed", &r);
            let now = f.rendered("n1");
            let stale: Vec<&str> = gone
                .active_service_chains()
                .into_iter()
                .filter(|c| !now.active_service_chains().contains(c))
                .collect();
            assert_eq!(stale.len(), 1, "{stale:?}");
            assert!(now.incremental_restore(&gone).contains(&format!("-X {}", stale[0])));
            f.assert_installed_is_rendered(proxy.as_ref(), "one endpoint removed");
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: loads kube-proxy rules in network namespaces"]
async fn connections_spread_over_every_backend() {
    common::require_root(&[]);
    with_fixture(|f| {
        Box::pin(async move {
            apply_service(&mut f.objects, "web", web());
            let mut proxy = proxy_for(ProxyKind::Iptables);
            f.sync(proxy.as_mut());
            let answers = f.probe_service("client", "web", 60).await;
            let mut spread: BTreeMap<String, usize> = BTreeMap::new();
            for a in answers.into_iter().flatten() {
                *spread.entry(a).or_default() += 1;
            }
            eprintln!("60 connections from default/client to default/web: {spread:?}");
            // Each backend has a 1/3 chance per connection: missing one in 60 happens
            // with probability 3 * (2/3)^60, about 1e-10.
            let backends = ["default/web-1", "default/web-2", "default/web-3"];
            assert_eq!(
                spread.keys().map(String::as_str).collect::<Vec<_>>(),
                backends
            );
            assert_eq!(spread.values().sum::<usize>(), 60);
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: loads kube-proxy rules in network namespaces"]
async fn client_ip_affinity_pins_a_client_to_one_backend() {
    common::require_root(&[]);
    with_fixture(|f| {
        Box::pin(async move {
            let mut sticky = web();
            sticky["sessionAffinity"] = json!("ClientIP");
            apply_service(&mut f.objects, "web", sticky);
            let mut proxy = proxy_for(ProxyKind::Iptables);
            f.sync(proxy.as_mut());
            for client in ["client", "api-1"] {
                let answers = f.probe_service(client, "web", 30).await;
                let first = answers[0].clone().unwrap();
                assert!(
                    answers.iter().all(|a| a.as_deref() == Some(first.as_str())),
                    "{client}: {answers:?}"
                );
                eprintln!(
                    "30 connections from default/{client}: all to {first} (ClientIP affinity)"
                );
            }
            // The affinity table kube-proxy's `-m recent` keeps, in the client's node.
            let node = f.cluster.node_netns("n2").unwrap().clone();
            let lists = tokio::task::block_in_place(|| {
                harness::policy::run_in(&node, "sh", &["-c", "ls /proc/net/xt_recent"], None)
            })
            .unwrap();
            assert!(lists.contains("KUBE-SEP-"), "{lists}");
        })
    })
    .await;
}
