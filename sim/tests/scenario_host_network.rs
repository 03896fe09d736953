//! hostNetwork pods in scenario files: accepted as bare Pods and in controller
//! templates, their host port must be their container port, and their container ports
//! are host ports to the scheduler (a second pod on the same port and node is refused or
//! stays Pending, as Kubernetes does it).

mod common;

use common::{assert_error, parse_err, parse_ok, pos};
use sim::objects::{self, PodRef};
use sim::scenario::objects_per_step;

const HEAD: &str = "name: t\nsummary: a test\ncluster: {nodes: 2}\n";

fn daemon_set(name: &str, port: u16) -> String {
    format!(
        r#"  - apiVersion: apps/v1
    kind: DaemonSet
    metadata: {{name: {name}, namespace: kube-system}}
    spec:
      selector: {{matchLabels: {{app: {name}}}}}
      template:
        metadata: {{labels: {{app: {name}}}}}
        spec:
          hostNetwork: true
          containers: [{{name: c, image: i, ports: [{{name: metrics, containerPort: {port}}}]}}]
"#
    )
}

#[test]
fn a_host_network_daemon_set_runs_one_pod_per_node_on_the_host_network() {
    let s = parse_ok(&format!(
        "{HEAD}manifests:\n{}",
        daemon_set("exporter", 9100)
    ));
    let steps = objects_per_step(&s);
    let pods = &steps[0].1.pods;
    assert_eq!(pods.len(), 2);
    let mut nodes: Vec<&str> = pods.values().filter_map(objects::pod_node).collect();
    nodes.sort();
    assert_eq!(nodes, ["n1", "n2"]);
    assert!(pods.values().all(objects::host_network));
    // Its container port is a host port on its node.
    let ports = objects::host_ports(pods.values().next().unwrap());
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].port.to_string(), "TCP/9100");
}

#[test]
fn a_second_daemon_set_on_the_same_port_stays_pending_with_the_schedulers_words() {
    let s = parse_ok(&format!(
        "{HEAD}manifests:\n{}{}{}",
        daemon_set("exporter", 9100),
        daemon_set("other", 9100),
        daemon_set("third", 9200),
    ));
    let pods = &objects_per_step(&s)[0].1.pods;
    let owners: Vec<String> = pods
        .keys()
        .map(|p| p.name.split('-').next().unwrap().to_string())
        .collect();
    assert_eq!(owners, ["exporter", "exporter", "third", "third"]);
    let pending: Vec<&String> = s.notes.iter().filter(|n| n.contains("Pending")).collect();
    assert_eq!(pending.len(), 2, "{:?}", s.notes);
    for n in pending {
        assert!(n.starts_with("pod kube-system/other-"), "{n}");
        assert!(
            n.ends_with("0/2 nodes are available: 1 node(s) didn't have free ports for the requested pod ports, 1 node(s) didn't match Pod's node affinity/selector"),
            "{n}"
        );
    }
}

#[test]
fn bare_host_network_pods_are_accepted_and_a_port_clash_on_a_node_is_an_error() {
    let pod = |name: &str, port: u16, host_port: Option<u16>| {
        let hp = host_port.map_or(String::new(), |h| format!(", hostPort: {h}"));
        format!(
            "  - {{apiVersion: v1, kind: Pod, metadata: {{name: {name}}}, spec: {{nodeName: n1, hostNetwork: true, containers: [{{name: c, image: i, ports: [{{containerPort: {port}{hp}}}]}}]}}}}\n"
        )
    };
    let s = parse_ok(&format!(
        "{HEAD}manifests:\n{}{}",
        pod("a", 9100, Some(9100)),
        pod("b", 9200, None)
    ));
    let pods = &objects_per_step(&s)[0].1.pods;
    assert!(objects::host_network(&pods[&PodRef::new("default", "b")]));

    let text = format!(
        "{HEAD}manifests:\n{}{}",
        pod("a", 9100, None),
        pod("b", 9100, None)
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "{nodeName", 1),
        "manifests[1].spec",
        "hostPort 9100/TCP is already taken on node n1 by pod default/a (a hostNetwork pod's containerPorts are host ports)",
    );

    let text = format!("{HEAD}manifests:\n{}", pod("a", 9100, Some(9101)));
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "9101", 0),
        "manifests[0].spec.containers[0].ports[0].hostPort",
        "hostPort 9101 must match containerPort 9100 when hostNetwork is true",
    );
}
