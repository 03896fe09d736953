//! Three scenario knobs of issue 4 and 5: `probe.repeat` (probes per Service cell),
//! `cluster.brNetfilter` (bridge-nf-call-iptables in the nodes) and `node/NAME` as a
//! probe target on its pods' hostPorts; each read, defaulted, and every mistake reported
//! at its file, line, column and field path.

mod common;
use common::*;

use sim::scenario::Peer;

const HEAD: &str = "name: t\nsummary: a test\n";
const MODEL: &str = "model: {namespaces: [x], pods: [a, b], ports: [80], protocols: [TCP]}\n";

#[test]
fn probe_repeat_is_read_and_checked() {
    let s = parse_ok(&format!("{HEAD}{MODEL}"));
    assert_eq!(s.probe.repeat, None);
    let s = parse_ok(&format!("{HEAD}{MODEL}probe: {{repeat: 20}}\n"));
    assert_eq!(s.probe.repeat, Some(20));
    for bad in ["0", "1001"] {
        let text = format!("{HEAD}{MODEL}probe:\n  repeat: {bad}\n");
        let e = parse_err(&text);
        let at = pos(&text, "repeat: ", 0);
        assert_error(
            &e,
            sim::error::Location {
                column: at.column + "repeat: ".len(),
                ..at
            },
            "probe.repeat",
            "between 1 and 1000 probes per Service cell",
        );
    }
    let text = format!("{HEAD}{MODEL}probe:\n  repeat: many\n");
    let e = parse_err(&text);
    assert_eq!(e.path, "probe.repeat", "{e}");
    assert_eq!(e.location, Some(pos(&text, "many", 0)), "{e}");
}

#[test]
fn br_netfilter_defaults_to_on() {
    assert!(parse_ok(&format!("{HEAD}{MODEL}")).br_netfilter);
    assert!(parse_ok(&format!("{HEAD}cluster: {{nodes: 2}}\n{MODEL}")).br_netfilter);
    let s = parse_ok(&format!(
        "{HEAD}cluster: {{nodes: 2, brNetfilter: false}}\n{MODEL}"
    ));
    assert!(!s.br_netfilter);
    let text = format!("{HEAD}cluster:\n  brNetfilter: sometimes\n{MODEL}");
    let e = parse_err(&text);
    assert_eq!(e.path, "cluster.brNetfilter", "{e}");
    assert_eq!(e.location, Some(pos(&text, "sometimes", 0)), "{e}");
}

const HOST_PORT_PODS: &str = "cluster: {nodes: 2}
manifests:
  - {apiVersion: v1, kind: Namespace, metadata: {name: x}}
  - apiVersion: v1
    kind: Pod
    metadata: {name: web, namespace: x}
    spec:
      nodeName: n1
      containers: [{name: w, image: w, ports: [{containerPort: 8080, hostPort: 30080}]}]
  - apiVersion: v1
    kind: Pod
    metadata: {name: c, namespace: x}
    spec:
      nodeName: n2
      containers: [{name: c, image: c}]
";

#[test]
fn a_node_is_a_probe_target_on_its_pods_host_ports() {
    let text = format!(
        "{HEAD}{HOST_PORT_PODS}probe:\n  from: [x/c, node/n2]\n  to: [node/n1]\nexpect:\n  default: allow\n  exceptions:\n    - {{from: x/c, to: node/n1, port: 30080, allowed: false}}\n"
    );
    let s = parse_ok(&text);
    assert_eq!(s.probe.to, Some(vec![Peer::Node("n1".into())]));
    assert!(s.cluster.cni.pods_want_host_ports);
    let expect = s.steps[0].expect.as_ref().unwrap();
    assert_eq!(
        expect.lookup(
            &"x/c".parse().unwrap(),
            &"node/n1".parse().unwrap(),
            "TCP/30080".parse().unwrap()
        ),
        Some(false)
    );
    // n2 runs no pod with a hostPort: nothing to probe there.
    let text = format!("{HEAD}{HOST_PORT_PODS}probe:\n  to: [node/n1, node/n2]\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "node/n2", 0),
        "probe.to[1]",
        "no pod on node n2 has a hostPort at any step",
    );
    // A node that does not exist.
    let text = format!("{HEAD}{HOST_PORT_PODS}probe:\n  to: [node/n7]\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "node/n7", 0),
        "probe.to[0]",
        "node n7 does not exist",
    );
}

#[test]
fn an_expectation_names_a_node_only_on_a_host_port_it_has() {
    let text = format!(
        "{HEAD}{HOST_PORT_PODS}probe:\n  to: [node/n1]\nexpect:\n  default: allow\n  exceptions:\n    - {{from: x/c, to: node/n2, port: 30080, allowed: false}}\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "node/n2", 0),
        "expect.exceptions[0].to",
        "no pod on node n2 has hostPort TCP/30080 at this point",
    );
    let text = format!(
        "{HEAD}{HOST_PORT_PODS}probe:\n  to: [node/n1]\nexpect:\n  default: allow\n  exceptions:\n    - {{from: x/c, to: node/n1, port: 30081, allowed: false}}\n"
    );
    let e = parse_err(&text);
    assert!(
        e.message
            .contains("no pod on node n1 has hostPort TCP/30081"),
        "{e}"
    );
}
