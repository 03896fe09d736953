//! Workload controllers in scenario files: controllers become pods with owners and
//! nodes, kinds without network effect are noted once, unsupported kinds fail (or warn),
//! directories and `List`s are read, steps scale, roll out and delete controllers, and
//! bad input is reported at its file, line and column.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{assert_error, parse_err, parse_ok, pos};
use sim::objects::ClusterObjects;
use sim::scenario::{self, LoadOptions, objects_per_step};

const HEAD: &str = "name: t\nsummary: a test\n";

fn web(replicas: i32, image: &str) -> String {
    format!(
        r#"  - apiVersion: apps/v1
    kind: Deployment
    metadata: {{name: web, namespace: shop}}
    spec:
      replicas: {replicas}
      selector: {{matchLabels: {{app: web}}}}
      template:
        metadata: {{labels: {{app: web}}}}
        spec:
          containers: [{{name: c, image: "{image}", ports: [{{containerPort: 80}}]}}]
"#
    )
}

/// `ns/name -> (node, owner)` of every pod after each step.
fn pods(objects: &ClusterObjects) -> BTreeMap<String, (String, Option<String>)> {
    objects
        .pods
        .iter()
        .map(|(k, p)| {
            (
                k.to_string(),
                (
                    sim::objects::pod_node(p).unwrap_or("-").to_string(),
                    sim::workloads::owner_of(p).map(|o| o.to_string()),
                ),
            )
        })
        .collect()
}

#[test]
fn controllers_become_owned_scheduled_pods_and_other_kinds_are_noted_once() {
    let text = format!(
        r#"{HEAD}cluster: {{nodes: 2}}
manifests:
  - {{apiVersion: v1, kind: ServiceAccount, metadata: {{name: a, namespace: shop}}}}
  - {{apiVersion: v1, kind: ConfigMap, metadata: {{name: a, namespace: shop}}, data: {{k: v}}}}
  - {{apiVersion: v1, kind: ConfigMap, metadata: {{name: b, namespace: shop}}}}
  - {{apiVersion: cert-manager.io/v1, kind: Certificate, metadata: {{name: c}}, spec: {{}}}}
{}  - apiVersion: apps/v1
    kind: StatefulSet
    metadata: {{name: db, namespace: shop}}
    spec:
      replicas: 2
      serviceName: db
      selector: {{matchLabels: {{app: db}}}}
      template:
        metadata: {{labels: {{app: db}}}}
        spec: {{containers: [{{name: c, image: i, ports: [{{containerPort: 5432}}]}}]}}
  - apiVersion: apps/v1
    kind: DaemonSet
    metadata: {{name: agent}}
    spec:
      selector: {{matchLabels: {{app: agent}}}}
      template:
        metadata: {{labels: {{app: agent}}}}
        spec: {{containers: [{{name: c, image: i}}]}}
  - apiVersion: batch/v1
    kind: CronJob
    metadata: {{name: nightly}}
    spec:
      schedule: "0 0 * * *"
      jobTemplate:
        spec:
          template:
            spec: {{restartPolicy: Never, containers: [{{name: c, image: i}}]}}
"#,
        web(3, "nginx")
    );
    let s = parse_ok(&text);
    let steps = objects_per_step(&s);
    let pods = pods(&steps[0].1);
    let owners: Vec<&str> = pods.values().filter_map(|(_, o)| o.as_deref()).collect();
    assert_eq!(owners.iter().filter(|o| **o == "Deployment/web").count(), 3);
    assert_eq!(pods["shop/db-0"].1.as_deref(), Some("StatefulSet/db"));
    assert_eq!(pods["shop/db-1"].1.as_deref(), Some("StatefulSet/db"));
    // One DaemonSet pod per node.
    let mut agent_nodes: Vec<&str> = pods
        .iter()
        .filter(|(_, (_, o))| o.as_deref() == Some("DaemonSet/agent"))
        .map(|(_, (n, _))| n.as_str())
        .collect();
    agent_nodes.sort();
    assert_eq!(agent_nodes, ["n1", "n2"]);
    // Every pod is bound; a Deployment spreads over both nodes.
    assert!(
        pods.values().all(|(n, _)| n == "n1" || n == "n2"),
        "{pods:?}"
    );
    // The namespace nobody declared was created, and the CronJob made no pods.
    assert!(steps[0].1.namespaces.contains_key("shop"));
    let ignored: Vec<&String> = s
        .notes
        .iter()
        .filter(|n| n.contains("not modelled:"))
        .collect();
    assert_eq!(ignored.len(), 1, "{:?}", s.notes);
    assert!(
        ignored[0].contains("Certificate, ConfigMap (2), ServiceAccount"),
        "{ignored:?}"
    );
    assert!(
        s.notes.iter().any(|n| n.contains("CronJob")),
        "{:?}",
        s.notes
    );
    // A StatefulSet whose serviceName names no headless Service is said.
    assert!(s.notes.iter().any(|n| n.contains("db")), "{:?}", s.notes);
}

#[test]
fn an_unknown_field_in_a_template_is_an_error_at_its_position() {
    let text = format!(
        "{HEAD}manifests:\n{}",
        web(1, "nginx").replace(
            "image: \"nginx\"",
            "image: \"nginx\", imagePullPolice: Always"
        )
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "imagePullPolice", 0),
        "manifests[0].spec.template.spec.containers[0].imagePullPolice",
        "imagePullPolicy",
    );
}

#[test]
fn a_selector_missing_the_template_and_negative_replicas_are_refused() {
    let text = format!(
        "{HEAD}manifests:\n{}",
        web(1, "nginx").replace("matchLabels: {app: web}", "matchLabels: {app: other}")
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "{matchLabels", 0),
        "manifests[0].spec.selector",
        "does not match the template's labels",
    );
    let text = format!("{HEAD}manifests:\n{}", web(-1, "nginx"));
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "-1", 0),
        "manifests[0].spec.replicas",
        "greater than or equal to 0",
    );
    // The template's containers are checked as a Pod's are.
    let text = format!(
        "{HEAD}manifests:\n{}",
        web(1, "nginx").replace("name: c,", "name: C_1,")
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "C_1", 0),
        "manifests[0].spec.template.spec.containers[0].name",
        "bad container name",
    );
}

#[test]
fn unsupported_kinds_fail_with_their_position_or_warn_when_asked() {
    let text = format!(
        "{HEAD}manifests:\n  - apiVersion: gateway.networking.k8s.io/v1\n    kind: HTTPRoute\n    metadata: {{name: r}}\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "HTTPRoute", 0),
        "manifests[0].kind",
        "--ignore-unsupported",
    );
    let s = scenario::parse_str_with(
        Path::new("t.yaml"),
        &text,
        &LoadOptions {
            ignore_unsupported: true,
        },
    )
    .unwrap();
    assert!(
        s.notes.iter().any(|n| n.starts_with("WARNING")
            && n.contains("HTTPRoute")
            && n.contains("t.yaml:5:11")),
        "{:?}",
        s.notes
    );
}

#[test]
fn lists_and_server_populated_fields_are_read() {
    let text = format!(
        r#"{HEAD}manifests:
  - apiVersion: v1
    kind: List
    items:
      - apiVersion: v1
        kind: Pod
        metadata:
          name: p
          uid: 0b1c
          resourceVersion: "42"
          creationTimestamp: "2024-01-01T00:00:00Z"
          managedFields: [{{manager: kubectl, operation: Update}}]
          annotations: {{kubectl.kubernetes.io/last-applied-configuration: "{{}}"}}
        spec: {{containers: [{{name: c, image: i}}]}}
        status: {{phase: Running}}
      - {{apiVersion: v1, kind: ConfigMap, metadata: {{name: x}}}}
"#
    );
    let s = parse_ok(&text);
    let steps = objects_per_step(&s);
    assert!(steps[0].1.pods.keys().any(|k| k.to_string() == "default/p"));
    assert!(
        s.notes.iter().any(|n| n.contains("ConfigMap")),
        "{:?}",
        s.notes
    );
}

#[test]
fn typed_lists_are_read_and_their_items_take_the_list_type() {
    // kube-prometheus ships its Grafana dashboards as a `ConfigMapList`.
    let text = format!(
        r#"{HEAD}manifests:
  - apiVersion: v1
    kind: ConfigMapList
    items:
      - {{apiVersion: v1, kind: ConfigMap, metadata: {{name: a}}}}
      - {{metadata: {{name: b}}, data: {{x: y}}}}
  - apiVersion: v1
    kind: PodList
    items:
      - metadata: {{name: q}}
        spec: {{containers: [{{name: c, image: i}}]}}
"#
    );
    let s = parse_ok(&text);
    let steps = objects_per_step(&s);
    assert!(steps[0].1.pods.keys().any(|k| k.to_string() == "default/q"));
    assert!(
        s.notes.iter().any(|n| n.contains("ConfigMap (2)")),
        "{:?}",
        s.notes
    );
}

#[test]
fn node_labels_steer_selectors_and_what_cannot_be_placed_stays_pending() {
    let text = format!(
        r#"{HEAD}cluster:
  nodes: [{{name: a, labels: {{disk: ssd}}}}, b]
manifests:
  - apiVersion: apps/v1
    kind: Deployment
    metadata: {{name: fast}}
    spec:
      replicas: 2
      selector: {{matchLabels: {{app: fast}}}}
      template:
        metadata: {{labels: {{app: fast}}}}
        spec:
          nodeSelector: {{disk: ssd, beta.kubernetes.io/os: linux}}
          affinity:
            podAntiAffinity:
              requiredDuringSchedulingIgnoredDuringExecution:
                - labelSelector: {{matchLabels: {{app: fast}}}}
                  topologyKey: kubernetes.io/hostname
          containers: [{{name: c, image: i}}]
"#
    );
    let s = parse_ok(&text);
    let steps = objects_per_step(&s);
    let pods = pods(&steps[0].1);
    assert_eq!(pods.len(), 1, "{pods:?}");
    assert!(pods.values().all(|(n, _)| n == "a"));
    assert!(
        s.notes
            .iter()
            .any(|n| n.contains("0/2 nodes are available")),
        "{:?}",
        s.notes
    );
}

#[test]
fn steps_scale_roll_out_and_delete_controllers() {
    let text = format!(
        r#"{HEAD}cluster: {{nodes: 2}}
manifests:
  - {{apiVersion: v1, kind: Namespace, metadata: {{name: shop}}}}
{}steps:
  - name: scale up
    scale: [{{kind: Deployment, namespace: shop, name: web, replicas: 4}}]
  - name: roll out
    apply:
{}  - name: gone
    delete: [{{kind: Deployment, namespace: shop, name: web}}]
"#,
        web(2, "nginx"),
        web(4, "nginx:2")
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    );
    let s = parse_ok(&text);
    let steps = objects_per_step(&s);
    let names =
        |i: usize| -> Vec<String> { steps[i].1.pods.keys().map(|k| k.name.clone()).collect() };
    let first = names(0);
    assert_eq!(first.len(), 2);
    let scaled = names(1);
    assert_eq!(scaled.len(), 4);
    assert!(
        first.iter().all(|n| scaled.contains(n)),
        "scaling keeps the pods"
    );
    let rolled = names(2);
    assert_eq!(rolled.len(), 4);
    assert!(
        rolled.iter().all(|n| !scaled.contains(n)),
        "a new template renames"
    );
    assert!(names(3).is_empty());
}

#[test]
fn scaling_what_does_not_exist_or_below_zero_is_refused() {
    let text = format!(
        "{HEAD}manifests:\n{}steps:\n  - name: s\n    scale: [{{kind: Deployment, namespace: shop, name: nope, replicas: 1}}]\n",
        web(1, "nginx")
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "nope", 0),
        "steps[0].scale[0].name",
        "there is no Deployment shop/nope",
    );
    let text = format!(
        "{HEAD}manifests:\n{}steps:\n  - name: s\n    scale: [{{kind: Deployment, namespace: shop, name: web, replicas: -3}}]\n",
        web(1, "nginx")
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "-3", 0),
        "steps[0].scale[0].replicas",
        "replicas must be from 0",
    );
}

#[test]
fn manifest_directories_are_read_in_name_order_and_must_hold_manifests() {
    let dir = std::env::temp_dir().join(format!("knetlab-manifests-{}", std::process::id()));
    let app = dir.join("app");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::create_dir_all(app.join("nested")).unwrap();
    std::fs::write(
        app.join("b.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: b}\nspec: {containers: [{name: c, image: i}]}\n",
    )
    .unwrap();
    std::fs::write(
        app.join("a.json"),
        r#"{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "a"}}"#,
    )
    .unwrap();
    std::fs::write(app.join("README.md"), "not a manifest").unwrap();
    std::fs::write(
        app.join("nested/c.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: c}\nspec: {containers: [{name: c, image: i}]}\n",
    )
    .unwrap();
    let scenario = dir.join("s.yaml");
    std::fs::write(&scenario, format!("{HEAD}manifestFiles: [app]\n")).unwrap();
    let s = scenario::load(&scenario).unwrap_or_else(|e| panic!("{e}"));
    let steps = objects_per_step(&s);
    let names: Vec<String> = steps[0].1.pods.keys().map(|k| k.name.clone()).collect();
    assert_eq!(names, ["b"], "not recursive");
    std::fs::write(&scenario, format!("{HEAD}manifestFiles: [empty]\n")).unwrap();
    let e = scenario::load(&scenario).unwrap_err();
    assert_eq!(e.path, "manifestFiles[0]");
    assert_eq!(e.location.map(|l| l.line), Some(3));
    assert!(e.message.contains("holds no *.yaml"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
