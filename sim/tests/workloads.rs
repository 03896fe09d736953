//! Workload controllers end to end: manifests classified by kind, expanded into pods,
//! and the pods scheduled onto declared nodes, as a scenario step will do it.

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use sim::workloads::schedule::NamespaceLabels;
use sim::workloads::{
    Controller, Expansion, KindClass, NodeSpec, Schedule, classify, expand, schedule,
};

/// Classifies and expands a manifest as the decoder will.
fn expand_manifest(manifest: serde_json::Value, nodes: &[NodeSpec]) -> Expansion {
    let api_version = manifest["apiVersion"].as_str().unwrap().to_string();
    let kind = manifest["kind"].as_str().unwrap().to_string();
    let KindClass::Workload(kind) = classify(&api_version, &kind) else {
        panic!("{api_version} {kind} is not a workload");
    };
    expand(&Controller::from_json(kind, manifest).unwrap(), nodes).unwrap()
}

fn pods(e: &Expansion) -> Vec<Pod> {
    e.pods.iter().map(|p| p.pod.clone()).collect()
}

fn placed(s: &Schedule) -> Vec<(String, Option<String>)> {
    s.placements
        .iter()
        .map(|p| (p.name.clone(), p.node.clone()))
        .collect()
}

fn ha_deployment(replicas: i32) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "frontend", "namespace": "shop"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "frontend"}},
            "template": {
                "metadata": {"labels": {"app": "frontend"}},
                "spec": {
                    "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                        "labelSelector": {"matchLabels": {"app": "frontend"}},
                        "topologyKey": "kubernetes.io/hostname"
                    }]}},
                    "containers": [{"name": "web", "image": "nginx", "ports": [{"name": "http", "containerPort": 80}],
                                    "readinessProbe": {"httpGet": {"path": "/", "port": "http"}}}]
                }
            }
        }
    })
}

fn nodes(n: usize) -> Vec<NodeSpec> {
    (1..=n)
        .map(|i| NodeSpec::new(format!("node-{i}")))
        .collect()
}

#[test]
fn an_ha_deployment_spreads_one_replica_per_node_and_leaves_the_surplus_pending() {
    let e = expand_manifest(ha_deployment(3), &[]);
    assert!(e.notes.is_empty(), "{:?}", e.notes);
    let s = schedule(&nodes(3), &NamespaceLabels::new(), &pods(&e));
    let on: Vec<Option<String>> = placed(&s).into_iter().map(|(_, n)| n).collect();
    assert_eq!(
        on,
        [
            Some("node-1".into()),
            Some("node-2".into()),
            Some("node-3".into())
        ]
    );

    let s = schedule(&nodes(2), &NamespaceLabels::new(), &pods(&e));
    assert_eq!(s.placements[2].node, None);
    assert!(
        s.notes[0].contains("stays Pending: 0/2 nodes are available"),
        "{:?}",
        s.notes
    );
}

#[test]
fn a_daemon_set_lands_on_each_admitted_node_and_nowhere_else() {
    let mut all = nodes(3);
    all[1].labels.insert("role".into(), "edge".into());
    let ds = json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "edge-proxy", "namespace": "kube-system"},
        "spec": {
            "selector": {"matchLabels": {"app": "edge-proxy"}},
            "template": {
                "metadata": {"labels": {"app": "edge-proxy"}},
                "spec": {
                    "hostNetwork": true,
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [{"key": "role", "operator": "In", "values": ["edge"]}]}]
                    }}},
                    "containers": [{"name": "proxy", "image": "envoy"}]
                }
            }
        }
    });
    let e = expand_manifest(ds, &all);
    assert_eq!(e.pods.len(), 1);
    assert!(e.pods[0].host_network);
    assert_eq!(e.pods[0].owner.to_string(), "DaemonSet/edge-proxy");
    let s = schedule(&all, &NamespaceLabels::new(), &pods(&e));
    assert_eq!(s.placements[0].node.as_deref(), Some("node-2"));
}

#[test]
fn a_stateful_set_gets_stable_dns_identities_and_spreads() {
    let sts = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db"},
        "spec": {
            "serviceName": "db",
            "replicas": 2,
            "selector": {"matchLabels": {"app": "db"}},
            "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "pg", "image": "postgres", "ports": [{"containerPort": 5432}]}]}
            }
        }
    });
    let e = expand_manifest(sts, &[]);
    let s = schedule(&nodes(2), &NamespaceLabels::new(), &pods(&e));
    assert_eq!(
        placed(&s),
        [
            ("db-0".to_string(), Some("node-1".to_string())),
            ("db-1".to_string(), Some("node-2".to_string()))
        ]
    );
    let spec = e.pods[1].pod.spec.as_ref().unwrap();
    assert_eq!(
        (spec.hostname.as_deref(), spec.subdomain.as_deref()),
        (Some("db-1"), Some("db"))
    );
}

#[test]
fn scaling_and_rolling_out_a_deployment_between_steps() {
    let before = expand_manifest(ha_deployment(3), &[]);
    let scaled = expand_manifest(ha_deployment(2), &[]);
    let names = |e: &Expansion| -> Vec<String> {
        e.pods
            .iter()
            .map(|p| p.pod.metadata.name.clone().unwrap())
            .collect()
    };
    assert_eq!(names(&scaled), names(&before)[..2]);
    let mut changed = ha_deployment(2);
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2".into();
    let rolled = expand_manifest(changed, &[]);
    assert!(names(&rolled).iter().all(|n| !names(&before).contains(n)));
}
