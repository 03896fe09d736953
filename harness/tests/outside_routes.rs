//! The router's Service routes against the real kernel: every load-balancer address and
//! external IP as a /32 via every node (ECMP, layer-4 hash), the same /32 via the router in
//! each node, both rewritten and withdrawn as the Services change. Needs root: ignored
//! unless run with `--include-ignored` (see `common`).

mod common;

use std::process::Command;

use harness::cluster::Cluster;
use harness::cluster::outside::sync_service_routes;
use harness::netns::Netns;
use k8s_openapi::api::core::v1::Service;
use sim::objects::{ClusterObjects, Object};
use sim::plan::Plan;
use sim::scenario::{ClusterConfig, ExternalHost};

fn plan() -> Plan {
    let cluster = ClusterConfig {
        nodes: vec!["n1".into(), "n2".into()],
        pod_cidr: "10.244.0.0/16".parse().unwrap(),
        service_cidr: "10.96.0.0/12".parse().unwrap(),
        network: Default::default(),
        policy: Default::default(),
        deny: Default::default(),
        proxy: Default::default(),
        cni: Default::default(),
        external_hosts: vec![ExternalHost {
            name: "pc".into(),
            address: "172.17.0.10".parse().unwrap(),
            serve: vec![],
        }],
    };
    Plan::new(&harness::run::new_prefix(), &cluster).unwrap()
}

/// A LoadBalancer Service with its status written, as knetlab's controller writes it.
fn objects(lb: &[&str], external: &[&str]) -> ClusterObjects {
    let mut o = ClusterObjects::new(vec!["n1".into(), "n2".into()]);
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "default", "name": "web"},
        "spec": {"type": "LoadBalancer", "externalIPs": external,
                 "ports": [{"port": 80}]},
        "status": {"loadBalancer": {"ingress":
            lb.iter().map(|ip| serde_json::json!({"ip": ip})).collect::<Vec<_>>()}}
    }))
    .unwrap();
    o.apply(Object::Service(svc));
    o
}

fn routes(ns: &Netns) -> String {
    let out = ns
        .command("ip")
        .args(["-4", "route", "show", "proto", "bgp"])
        .output()
        .expect("run ip route");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: builds clusters in network namespaces"]
async fn service_addresses_are_routed_via_every_node_and_withdrawn() {
    common::require_root(&[]);
    let plan = plan();
    let c = Cluster::create(plan.clone()).await.expect("create");
    let result = async {
        let router = c.router_netns().expect("a router").clone();
        let nodes: Vec<&Netns> = ["n1", "n2"]
            .iter()
            .map(|n| c.node_netns(n).expect("node"))
            .collect();
        let hash = Command::new("ip")
            .args(["netns", "exec", router.name(), "sysctl", "-n"])
            .arg("net.ipv4.fib_multipath_hash_policy")
            .output()
            .expect("sysctl");
        assert_eq!(String::from_utf8_lossy(&hash.stdout).trim(), "1");

        let o = objects(&["203.0.113.1"], &["192.0.2.100"]);
        let (routed, deleted) = sync_service_routes(&plan, &router, &nodes, &o)
            .await
            .expect("sync");
        assert_eq!((routed, deleted), (2, 0));
        let r = routes(&router);
        for ip in ["203.0.113.1", "192.0.2.100"] {
            assert!(r.contains(ip), "{ip} not routed by the router:\n{r}");
        }
        for hop in ["nexthop via 192.168.200.11", "nexthop via 192.168.200.12"] {
            assert!(r.contains(hop), "no {hop}:\n{r}");
        }
        for n in &nodes {
            let r = routes(n);
            assert!(
                r.contains("203.0.113.1 via 192.168.200.1 dev eth0"),
                "node {}:\n{r}",
                n.name()
            );
        }
        // Again with nothing changed: nothing to delete, the same routes.
        let before = routes(&router);
        sync_service_routes(&plan, &router, &nodes, &o)
            .await
            .expect("sync again");
        assert_eq!(routes(&router), before);

        // The address moves: the old one is withdrawn everywhere.
        let o = objects(&["203.0.113.2"], &[]);
        let (routed, deleted) = sync_service_routes(&plan, &router, &nodes, &o)
            .await
            .expect("sync after the change");
        assert_eq!((routed, deleted), (1, 2 + 2 * 2));
        let r = routes(&router);
        assert!(
            r.contains("203.0.113.2") && !r.contains("203.0.113.1"),
            "{r}"
        );
        assert!(!r.contains("192.0.2.100"), "{r}");
        // The router's own routes (hosts, pod subnets) are untouched.
        let all = router
            .command("ip")
            .args(["-4", "route"])
            .output()
            .expect("ip route");
        let all = String::from_utf8_lossy(&all.stdout).to_string();
        assert!(all.contains("172.17.0.10 dev h1"), "{all}");
        assert!(all.contains("10.244.1.0/24 via 192.168.200.11"), "{all}");
    };
    // Tear down whatever happened.
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(result)).await;
    let report = c.teardown().await;
    assert!(report.errors.is_empty(), "teardown: {:?}", report.errors);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
