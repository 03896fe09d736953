//! The scenario parser end to end: a full valid scenario, the model expansion, the
//! defaults, and one test per kind of mistake, each checking the exact file, line,
//! column and field path of the error (positions are found in the test's own YAML text,
//! so the expectations read as "the error points at this word").

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use sim::error::Location;
use sim::objects::{self, ClusterObjects, Kind, Object, PodRef};
use sim::protocol::{PortProto, Protocol};
use sim::scenario::{
    self, Change, DenyStyle, Loopback, NetworkMode, Peer, PolicyEngineKind, ProxyKind, Scenario,
};

mod common;
use common::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

const HEAD: &str = "name: t\nsummary: a test\n";

/// Replays the changes of every step on a `ClusterObjects` as the harness will, with
/// made-up pod addresses, and returns the objects after each step.
fn replay(s: &Scenario) -> Vec<ClusterObjects> {
    let mut objects = ClusterObjects::new(s.cluster.nodes.clone());
    let mut out = Vec::new();
    let mut next_ip = 10u8;
    for step in &s.steps {
        for change in &step.changes {
            match change {
                Change::Apply(raw) => {
                    let o = raw
                        .decode(&|p| objects.pods.get(p).and_then(objects::pod_ip))
                        .unwrap_or_else(|e| panic!("{e}"));
                    let pod = match &o {
                        Object::Pod(_) => Some(PodRef::new(&raw.key.0, &raw.key.1)),
                        _ => None,
                    };
                    objects.apply(o);
                    if let Some(p) = pod {
                        objects.set_pod_ip(&p, Ipv4Addr::new(10, 0, 0, next_ip));
                        next_ip += 1;
                    }
                }
                other => {
                    let existed = other.apply_to(&mut objects, &|_| None);
                    assert!(existed.unwrap_or_else(|e| panic!("{e}")));
                }
            }
        }
        out.push(objects.clone());
    }
    out
}

// ---------------------------------------------------------------------------------------
// Valid scenarios

#[test]
fn full_reference_scenario() {
    let s = scenario::load(&fixture("full.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.name, "default-deny-then-allow");
    assert!(s.summary.starts_with("Default-deny ingress isolates"));
    assert!(s.description.starts_with("Lesson: a pod is open"));
    assert_eq!(s.cluster.nodes, ["n1", "n2"]);
    assert_eq!(
        s.probe.ports,
        Some(vec![
            PortProto::new(Protocol::Tcp, 80),
            PortProto::new(Protocol::Udp, 80)
        ])
    );
    assert_eq!(s.probe.timeout_ms, Some(200));
    let names: Vec<&str> = s.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            scenario::INITIAL_STEP,
            "allow x/b to x/a on TCP 80",
            "relabel y so nothing changes for x",
            "let x/a reach the web pod by address",
            "remove the default deny",
        ]
    );

    // The first step: default, x, y, z, other; then the 9 model pods and other/web;
    // then the policy.
    let initial: Vec<(Kind, String, String)> = s.steps[0]
        .changes
        .iter()
        .map(|c| match c {
            Change::Apply(raw) => (raw.kind, raw.key.0.clone(), raw.key.1.clone()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(initial.len(), 5 + 10 + 1);
    let ns: Vec<&str> = initial[..5].iter().map(|(_, _, n)| n.as_str()).collect();
    assert_eq!(ns, ["default", "x", "y", "z", "other"]);
    assert!(initial[5..15].iter().all(|(k, _, _)| *k == Kind::Pod));
    assert_eq!(initial[14], (Kind::Pod, "other".into(), "web".into()));
    assert_eq!(
        initial[15],
        (
            Kind::NetworkPolicy,
            "x".into(),
            "default-deny-ingress".into()
        )
    );
    // Where the manifest-file objects came from.
    let Change::Apply(web) = &s.steps[0].changes[14] else {
        unreachable!()
    };
    assert_eq!(web.file, fixture("extra-manifests.yaml"));
    assert_eq!(web.path, "documents[1]");

    // The table: `#` is absent, `.` and `X` are asserted.
    let e0 = s.steps[0].expect.as_ref().unwrap();
    let tcp80 = PortProto::new(Protocol::Tcp, 80);
    let pod = |s: &str| s.parse::<Peer>().unwrap();
    let server = |s: &str| s.parse::<Peer>().unwrap();
    assert_eq!(e0.default, None);
    // The reference table marks only the x rows' self cells `#`.
    assert_eq!(e0.cells.len(), 81 - 3);
    assert_eq!(e0.lookup(&pod("x/a"), &server("x/a"), tcp80), None);
    assert_eq!(e0.lookup(&pod("x/a"), &server("x/b"), tcp80), Some(false));
    assert_eq!(e0.lookup(&pod("x/a"), &server("y/a"), tcp80), Some(true));
    assert_eq!(e0.lookup(&pod("z/c"), &server("x/c"), tcp80), Some(false));
    assert_eq!(
        e0.lookup(
            &pod("z/c"),
            &server("x/c"),
            PortProto::new(Protocol::Udp, 80)
        ),
        None
    );

    // The exceptions form.
    let e1 = s.steps[1].expect.as_ref().unwrap();
    assert_eq!(e1.default, Some(false));
    assert_eq!(e1.lookup(&pod("x/b"), &server("x/a"), tcp80), Some(true));
    assert_eq!(
        e1.lookup(&pod("node/n1"), &server("x/a"), tcp80),
        Some(true)
    );
    assert_eq!(e1.lookup(&pod("x/c"), &server("x/a"), tcp80), Some(false));
    assert!(s.steps[2].expect.is_none());

    // Steps' changes in order apply, delete, label.
    assert!(
        matches!(&s.steps[2].changes[0], Change::Label { kind: Kind::Namespace, name, .. } if name == "y")
    );
    assert!(matches!(
        &s.steps[4].changes[..],
        [
            Change::Delete {
                kind: Kind::NetworkPolicy,
                ..
            },
            Change::Delete {
                kind: Kind::Pod,
                ..
            },
        ]
    ));

    // The placeholder is substituted with the address the pod has when the step runs.
    let Change::Apply(to_web) = &s.steps[3].changes[0] else {
        unreachable!()
    };
    assert_eq!(to_web.referenced_pods(), vec![PodRef::new("other", "web")]);
    let web_ip = Ipv4Addr::new(10, 244, 2, 7);
    let o = to_web
        .decode(&|p| (p == &PodRef::new("other", "web")).then_some(web_ip))
        .unwrap();
    let Object::NetworkPolicy(np) = o else {
        panic!("{o:?}")
    };
    let block = np.spec.unwrap().egress.unwrap()[0].to.as_ref().unwrap()[0]
        .ip_block
        .clone()
        .unwrap();
    assert_eq!(block.cidr, "10.244.2.7/32");
    let e = to_web.decode(&|_| None).unwrap_err();
    assert!(e.message.contains("other/web"), "{e}");

    // The whole scenario replays on the object store.
    let states = replay(&s);
    assert_eq!(states[0].pods.len(), 10);
    assert_eq!(states[0].network_policies.len(), 1);
    assert_eq!(
        states[2]
            .namespace_labels("y")
            .get("team")
            .map(String::as_str),
        Some("blue")
    );
    assert_eq!(states[4].pods.len(), 9);
    assert_eq!(states[4].network_policies.len(), 2);
}

#[test]
fn model_expansion() {
    let text = format!(
        "{HEAD}cluster: {{nodes: 2}}\nmodel: {{namespaces: [x, y, z], pods: [a, b, c], ports: [80, 81], protocols: [TCP, UDP]}}\n"
    );
    let s = parse(&text).unwrap();
    let state = &replay(&s)[0];
    assert_eq!(
        state.namespaces.keys().collect::<Vec<_>>(),
        ["default", "x", "y", "z"]
    );
    for ns in ["x", "y", "z"] {
        let labels = state.namespace_labels(ns);
        assert_eq!(labels.get("ns").map(String::as_str), Some(ns));
        assert_eq!(
            labels
                .get(objects::NAMESPACE_NAME_LABEL)
                .map(String::as_str),
            Some(ns)
        );
    }
    assert_eq!(state.pods.len(), 9);
    // Pods in model order: x/a, x/b, x/c, y/a, ... spread round-robin n1, n2, n1, ...
    let order = s.steps[0].changes.iter().filter_map(|c| match c {
        Change::Apply(raw) if raw.kind == Kind::Pod => Some(PodRef::new(&raw.key.0, &raw.key.1)),
        _ => None,
    });
    for (i, p) in order.enumerate() {
        let pod = &state.pods[&p];
        assert_eq!(
            objects::pod_node(pod),
            Some(if i % 2 == 0 { "n1" } else { "n2" }),
            "{p}"
        );
        assert_eq!(
            objects::pod_labels(pod),
            BTreeMap::from([("pod".to_string(), p.name.clone())])
        );
        let ports: Vec<(Option<String>, String)> = objects::declared_ports(pod)
            .into_iter()
            .map(|d| (d.name, d.port.to_string()))
            .collect();
        assert_eq!(
            ports,
            [
                (Some("serve-80-tcp".into()), "TCP/80".into()),
                (Some("serve-80-udp".into()), "UDP/80".into()),
                (Some("serve-81-tcp".into()), "TCP/81".into()),
                (Some("serve-81-udp".into()), "UDP/81".into()),
            ]
        );
    }
}

#[test]
fn model_defaults_to_the_standard_model() {
    let s = parse(&format!("{HEAD}model: {{ports: [80]}}\n")).unwrap();
    let state = &replay(&s)[0];
    assert_eq!(state.pods.len(), 9);
    assert_eq!(
        objects::declared_ports(&state.pods[&PodRef::new("z", "c")]).len(),
        2
    );
}

#[test]
fn defaults() {
    let s = parse(HEAD).unwrap();
    assert_eq!(s.cluster.nodes, ["n1"]);
    assert_eq!(s.cluster.pod_cidr.to_string(), "10.244.0.0/16");
    assert_eq!(s.cluster.service_cidr.to_string(), "10.96.0.0/12");
    assert_eq!(s.cluster.network, NetworkMode::HostGw);
    assert_eq!(s.cluster.policy, PolicyEngineKind::Iptables);
    assert_eq!(s.cluster.deny, DenyStyle::Reject);
    assert_eq!(s.cluster.proxy, ProxyKind::Iptables);
    assert_eq!(s.loopback, Loopback::Ignore);
    assert_eq!(s.probe, Default::default());
    assert_eq!(s.description, "");
    // One step, holding only the implicit default namespace.
    assert_eq!(s.steps.len(), 1);
    assert!(s.steps[0].expect.is_none());
    let [Change::Apply(raw)] = &s.steps[0].changes[..] else {
        panic!("{:?}", s.steps[0].changes)
    };
    assert_eq!((raw.kind, raw.key.1.as_str()), (Kind::Namespace, "default"));

    let s = parse(&format!(
        "{HEAD}cluster:\n  nodes: [alpha, beta]\n  podCIDR: 10.1.0.0/16\n  policy: none\n  deny: drop\nloopback: check\n"
    ))
    .unwrap();
    assert_eq!(s.cluster.nodes, ["alpha", "beta"]);
    assert_eq!(s.cluster.pod_cidr.to_string(), "10.1.0.0/16");
    assert_eq!(s.cluster.policy, PolicyEngineKind::None);
    assert_eq!(s.cluster.deny, DenyStyle::Drop);
    assert_eq!(s.loopback, Loopback::Check);
}

#[test]
fn pods_in_the_default_namespace_and_on_named_nodes() {
    let text = format!(
        "{HEAD}cluster: {{nodes: 3}}\nmanifests:\n  - apiVersion: v1\n    kind: Pod\n    metadata: {{name: solo}}\n    spec:\n      nodeName: n3\n      containers: [{{name: c, image: i}}]\n"
    );
    let s = parse(&text).unwrap();
    let state = &replay(&s)[0];
    let pod = &state.pods[&PodRef::new("default", "solo")];
    assert_eq!(objects::pod_node(pod), Some("n3"));
}

// ---------------------------------------------------------------------------------------
// Errors in the header

#[test]
fn unknown_header_field_suggests_the_right_one() {
    let text = format!("{HEAD}cluster:\n  nodes: 2\n  podCidr: 10.244.0.0/16\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "podCidr", 0),
        "cluster.podCidr",
        "did you mean `podCIDR`?",
    );
    let text = format!("{HEAD}stepz: []\n");
    let e = parse_err(&text);
    assert_error(&e, pos(&text, "stepz", 0), "stepz", "did you mean `steps`?");
}

#[test]
fn wrong_type_for_nodes() {
    let text = format!("{HEAD}cluster:\n  nodes: two\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "two", 0),
        "cluster.nodes",
        "expected a node count",
    );
    let text = format!("{HEAD}cluster:\n  nodes: [n1, 2]\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "2]", 0),
        "cluster.nodes[1]",
        "expected a string",
    );
}

#[test]
fn bad_values_in_the_header() {
    let text = format!("{HEAD}cluster:\n  deny: silently\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "silently", 0),
        "cluster.deny",
        "unknown value `silently`",
    );
    let text = format!("{HEAD}cluster:\n  network: vxlan\n");
    assert_eq!(parse(&text).unwrap().cluster.network, NetworkMode::Vxlan);
    let text = format!("{HEAD}cluster:\n  network: geneve\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "geneve", 0),
        "cluster.network",
        "unknown value `geneve`, expected `host-gw` or `vxlan`",
    );
    let text = format!("{HEAD}cluster:\n  proxy: ebpf\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "ebpf", 0),
        "cluster.proxy",
        "not supported yet",
    );
    let text = format!("{HEAD}cluster:\n  proxy: ipvs\n  ipvs: {{scheduler: wrr}}\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "wrr", 0),
        "cluster.ipvs.scheduler",
        "not an IPVS scheduler",
    );
    let text = format!("{HEAD}cluster:\n  proxy: ipvs\n  ipvs: {{fallback: userspace}}\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "userspace", 0),
        "cluster.ipvs.fallback",
        "unknown value `userspace`, expected `fail` or `iptables`",
    );
    let text = format!("{HEAD}cluster:\n  ipvs: {{fallback: iptables}}\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "ipvs", 0),
        "cluster.ipvs",
        "only applies with proxy: ipvs",
    );
    let text = format!("{HEAD}cluster:\n  nodes: [n1, n1]\n");
    let e = parse_err(&text);
    assert_error(&e, pos(&text, "n1", 1), "cluster.nodes[1]", "listed twice");
    let text = "name: t\n";
    let e = parse_err(text);
    assert_error(
        &e,
        pos(text, "name", 0),
        "",
        "the required field `summary` is missing",
    );
    let text = format!("{HEAD}probe:\n  ports: [TCP/80, tcp/81]\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "tcp/81", 0),
        "probe.ports[1]",
        "unknown protocol",
    );
}

#[test]
fn cidr_with_host_bits() {
    let text = format!("{HEAD}cluster:\n  podCIDR: 10.244.1.5/16\n");
    let e = parse_err(&text);
    assert_error(&e, pos(&text, "10.244.1.5", 0), "cluster.podCIDR", "");
    assert_eq!(
        e.message,
        "10.244.1.5/16 is not a network address; did you mean 10.244.0.0/16?"
    );
    let text = format!("{HEAD}cluster:\n  serviceCIDR: 10.96.0/12\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "10.96", 0),
        "cluster.serviceCIDR",
        "is not an IPv4 CIDR",
    );
    let text = format!("{HEAD}cluster:\n  nodes: 3\n  podCIDR: 10.244.0.0/23\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "10.244.0.0/23", 0),
        "cluster.podCIDR",
        "has room for 1 node subnets",
    );
}

#[test]
fn yaml_mistakes() {
    let text = format!("{HEAD}cluster:\n  nodes: 2\n  nodes: 3\n");
    let e = parse_err(&text);
    assert_eq!(e.location, Some(pos(&text, "nodes", 1)), "{e}");
    assert_eq!(
        e.message,
        "the key `nodes` appears twice in the same mapping"
    );
    let text = format!("{HEAD}cluster: {{nodes: 2\n");
    let e = parse_err(&text);
    assert!(e.message.starts_with("not valid YAML"), "{e}");
    assert!(e.location.is_some());
}

// ---------------------------------------------------------------------------------------
// Errors in manifests

const POLICY_WITH_TYPO: &str = "manifests:
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: deny, namespace: default}
    spec:
      podSelecter: {}
      policyTypes: [Ingress]
";

#[test]
fn unknown_manifest_field_is_an_error_with_a_suggestion() {
    let text = format!("{HEAD}{POLICY_WITH_TYPO}");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "podSelecter", 0),
        "manifests[0].spec.podSelecter",
        "did you mean `podSelector`?",
    );

    // Deep inside lists too.
    let text = format!(
        "{HEAD}manifests:\n  - apiVersion: v1\n    kind: Pod\n    metadata: {{name: p}}\n    spec:\n      containers:\n        - name: c\n          image: i\n          ports:\n            - {{containerPort: 80, protocl: TCP}}\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "protocl", 0),
        "manifests[0].spec.containers[0].ports[0].protocl",
        "did you mean `protocol`?",
    );

    // Far from any known field: the known ones are listed.
    let text = format!(
        "{HEAD}manifests:\n  - apiVersion: v1\n    kind: Namespace\n    metadata: {{name: q}}\n    colour: blue\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "colour", 0),
        "manifests[0].colour",
        "Namespace has `apiVersion`, `kind`, `metadata`, `spec`, `status`",
    );
}

#[test]
fn wrong_type_in_a_manifest() {
    let text = format!(
        "{HEAD}manifests:\n  - apiVersion: v1\n    kind: Pod\n    metadata: {{name: p}}\n    spec:\n      containers:\n        - name: c\n          image: i\n          ports: [{{containerPort: eighty}}]\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "eighty", 0),
        "manifests[0].spec.containers[0].ports[0].containerPort",
        "expected a whole number",
    );
}

#[test]
fn duplicate_pod() {
    let pod = "  - apiVersion: v1\n    kind: Pod\n    metadata: {name: a, namespace: x}\n    spec: {containers: [{name: c, image: i}]}\n";
    let text = format!("{HEAD}model: {{namespaces: [x], pods: [b]}}\nmanifests:\n{pod}{pod}");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "a, namespace", 1),
        "manifests[1].metadata.name",
        "Pod x/a is declared twice",
    );
    assert!(
        e.message.contains(&format!(
            "t.yaml:{}:{}",
            pos(&text, "a, namespace", 0).line,
            pos(&text, "a, namespace", 0).column
        )),
        "{e}"
    );

    // The model's objects count too.
    let text = format!("{HEAD}model: {{namespaces: [x], pods: [a]}}\nmanifests:\n{pod}");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "a, namespace", 0),
        "manifests[0].metadata.name",
        "(model.pods[0])",
    );
}

#[test]
fn pod_on_a_node_that_does_not_exist() {
    let text = format!(
        "{HEAD}cluster: {{nodes: 2}}\nmanifests:\n  - apiVersion: v1\n    kind: Pod\n    metadata: {{name: p}}\n    spec:\n      nodeName: n9\n      containers: [{{name: c, image: i}}]\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "n9", 0),
        "manifests[0].spec.nodeName",
        "node n9 does not exist; the nodes are n1, n2",
    );
}

#[test]
fn pod_in_an_undeclared_namespace() {
    // In the first step the namespace is created, as users expect of their manifests.
    let text = format!(
        "{HEAD}manifests:\n  - apiVersion: v1\n    kind: Pod\n    metadata: {{name: p, namespace: nowhere}}\n    spec: {{containers: [{{name: c, image: i}}]}}\n"
    );
    let s = parse_ok(&text);
    assert!(
        s.notes
            .iter()
            .any(|n| n.contains("namespace nowhere is used but not declared")),
        "{:?}",
        s.notes
    );
    // A step that applies into a namespace nobody made is a mistake.
    let text = format!(
        "{HEAD}steps:\n  - name: later\n    apply:\n      - apiVersion: v1\n        kind: Pod\n        metadata: {{name: p, namespace: nowhere}}\n        spec: {{containers: [{{name: c, image: i}}]}}\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "nowhere", 0),
        "steps[0].apply[0].metadata.namespace",
        "namespace nowhere does not exist",
    );
}

#[test]
fn unsupported_and_unknown_kinds() {
    let text = format!(
        "{HEAD}manifests:\n  - apiVersion: discovery.k8s.io/v1\n    kind: EndpointSlice\n    metadata: {{name: s}}\n    addressType: IPv4\n    endpoints: []\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "EndpointSlice", 0),
        "manifests[0].kind",
        "kind EndpointSlice (discovery.k8s.io/v1) is not supported yet",
    );

    let text = format!(
        "{HEAD}manifests:\n  - apiVersion: extensions/v1beta1\n    kind: Ingress\n    metadata: {{name: s}}\n"
    );
    // The seed's extensions/v1beta1 Ingress is read (and converted to v1); one without a
    // spec is refused at the object, naming the missing field.
    let e = parse_err(&text);
    assert!(
        e.to_string().contains("manifests[0].spec")
            && e.to_string()
                .contains("an Ingress needs a spec with rules or a defaultBackend"),
        "{e}"
    );

    let text = format!(
        "{HEAD}manifests:\n  - apiVersion: extensions/v1beta1\n    kind: NetworkPolicy\n    metadata: {{name: s}}\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "extensions", 0),
        "manifests[0].apiVersion",
        "write `apiVersion: networking.k8s.io/v1`",
    );

    let text = format!(
        "{HEAD}manifests:\n  - apiVersion: v1\n    kind: Namspace\n    metadata: {{name: s}}\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "Namspace", 0),
        "manifests[0].kind",
        "did you mean Namespace?",
    );

    let text = format!(
        "{HEAD}manifests:\n  - apiVersion: cilium.io/v2\n    kind: CiliumNetworkPolicy\n    metadata: {{name: s}}\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "CiliumNetworkPolicy", 0),
        "manifests[0].kind",
        "kind CiliumNetworkPolicy (cilium.io/v2) changes the pod network",
    );

    let text = format!("{HEAD}manifests:\n  - kind: Pod\n    metadata: {{name: s}}\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "kind", 0),
        "manifests[0]",
        "the manifest has no `apiVersion`",
    );
}

#[test]
fn names_and_labels_are_checked_as_the_api_server_does() {
    let text = format!(
        "{HEAD}manifests:\n  - apiVersion: v1\n    kind: Namespace\n    metadata: {{name: Prod}}\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "Prod", 0),
        "manifests[0].metadata.name",
        "not a DNS-1123 label",
    );

    let text = format!(
        "{HEAD}manifests:\n  - apiVersion: v1\n    kind: Namespace\n    metadata:\n      labels: {{a: b}}\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "metadata", 0),
        "manifests[0].metadata",
        "metadata.name is required",
    );

    let text = format!(
        "{HEAD}manifests:\n  - apiVersion: v1\n    kind: Namespace\n    metadata:\n      name: q\n      labels: {{\"bad key!\": b}}\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "\"bad key!\"", 0),
        "manifests[0].metadata.labels.bad key!",
        "not a valid label key name",
    );

    let text = format!(
        "{HEAD}manifests:\n  - apiVersion: v1\n    kind: Namespace\n    metadata:\n      name: q\n      labels: {{team: \"a b\"}}\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "\"a b\"", 0),
        "manifests[0].metadata.labels.team",
        "not a valid label value",
    );
}

#[test]
fn containers_need_an_image() {
    let text = format!(
        "{HEAD}manifests:\n  - apiVersion: v1\n    kind: Pod\n    metadata: {{name: p}}\n    spec:\n      containers:\n        - name: c\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "name: c", 0),
        "manifests[0].spec.containers[0]",
        "needs an image",
    );
}

#[test]
fn policy_values_are_checked() {
    let policy = |spec: &str| {
        format!(
            "{HEAD}manifests:\n  - apiVersion: networking.k8s.io/v1\n    kind: NetworkPolicy\n    metadata: {{name: p}}\n    spec:\n{spec}"
        )
    };
    let text = policy(
        "      ingress:\n        - from: [{ipBlock: {cidr: 10.0.0.0/24, except: [10.1.0.0/24]}}]\n",
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "10.1.0.0/24", 0),
        "manifests[0].spec.ingress[0].from[0].ipBlock.except[0]",
        "strict subset",
    );

    let text = policy("      ingress:\n        - ports: [{protocol: ICMP, port: 80}]\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "ICMP", 0),
        "manifests[0].spec.ingress[0].ports[0].protocol",
        "unknown protocol",
    );

    let text = policy("      egress:\n        - ports: [{port: 90, endPort: 80}]\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "80}", 0),
        "manifests[0].spec.egress[0].ports[0].endPort",
        "between port 90 and 65535",
    );

    let text = policy(
        "      podSelector:\n        matchExpressions: [{key: app, operator: Is, values: [a]}]\n",
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "Is", 0),
        "manifests[0].spec.podSelector.matchExpressions[0].operator",
        "unknown operator",
    );

    let text = policy("      policyTypes: [Ingress, Egres]\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "Egres", 0),
        "manifests[0].spec.policyTypes[1]",
        "unknown policy type",
    );

    let text = policy("      ingress:\n        - from: [{}]\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "{}]", 0),
        "manifests[0].spec.ingress[0].from[0]",
        "a peer needs",
    );
}

#[test]
fn errors_in_manifest_files_name_that_file() {
    let dir = std::env::temp_dir().join(format!("knetlab-parse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifests = "apiVersion: v1\nkind: Namespace\nmetadata: {name: q}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: q}\nspec:\n  ingres: []\n";
    std::fs::write(dir.join("m.yaml"), manifests).unwrap();
    let scenario = dir.join("s.yaml");
    std::fs::write(&scenario, format!("{HEAD}manifestFiles: [m.yaml]\n")).unwrap();
    let e = scenario::load(&scenario).unwrap_err();
    println!("{e}");
    assert_eq!(e.file, dir.join("m.yaml"));
    assert_eq!(e.location, Some(pos(manifests, "ingres", 0)));
    assert_eq!(e.path, "documents[1].spec.ingres");
    assert!(e.message.contains("did you mean `ingress`?"), "{e}");

    std::fs::write(
        dir.join("m.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: q}\n",
    )
    .unwrap();
    std::fs::write(
        &scenario,
        format!("{HEAD}manifestFiles: [m.yaml, missing.yaml]\n"),
    )
    .unwrap();
    let e = scenario::load(&scenario).unwrap_err();
    println!("{e}");
    assert_eq!(e.file, scenario);
    assert_eq!(e.path, "manifestFiles[1]");
    assert!(e.message.contains("cannot read manifest file"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------
// Errors in steps

const MODEL: &str = "cluster: {nodes: 2}\nmodel: {namespaces: [x, y], pods: [a, b], ports: [80], protocols: [TCP]}\n";

#[test]
fn step_deletes_and_labels_must_name_existing_objects() {
    let text = format!(
        "{HEAD}{MODEL}steps:\n  - name: s1\n    delete: [{{kind: Pod, namespace: x, name: c}}]\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "c}", 0),
        "steps[0].delete[0].name",
        "there is no Pod x/c at this point",
    );

    // Deleted in step 1, so step 2 cannot relabel it.
    let text = format!(
        "{HEAD}{MODEL}steps:\n  - name: s1\n    delete: [{{kind: Namespace, name: y}}]\n  - name: s2\n    label: [{{kind: Pod, namespace: y, name: a, labels: {{}}}}]\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "a, labels", 0),
        "steps[1].label[0].name",
        "there is no Pod y/a at this point",
    );

    let text = format!(
        "{HEAD}{MODEL}steps:\n  - name: s1\n    label: [{{kind: Pod, namespace: x, name: a, labels: {{pod: \"a b\"}}}}]\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "\"a b\"", 0),
        "steps[0].label[0].labels.pod",
        "not a valid label value",
    );

    let text =
        format!("{HEAD}{MODEL}steps:\n  - name: s1\n    delete: [{{kind: Gadget, name: a}}]\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "Gadget", 0),
        "steps[0].delete[0].kind",
        "unknown value `Gadget`",
    );
    // A controller that does not exist cannot be deleted.
    let text = format!(
        "{HEAD}{MODEL}steps:\n  - name: s1\n    delete: [{{kind: Deployment, name: gone}}]\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "gone", 0),
        "steps[0].delete[0].name",
        "there is no Deployment default/gone",
    );

    let text = format!("{HEAD}{MODEL}steps:\n  - name: s1\n  - name: s1\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "s1", 1),
        "steps[1].name",
        "already used by steps[0]",
    );
}

#[test]
fn pod_address_placeholders_must_name_existing_pods() {
    let policy = |cidr: &str| {
        format!(
            "    apply:\n      - apiVersion: networking.k8s.io/v1\n        kind: NetworkPolicy\n        metadata: {{name: p, namespace: x}}\n        spec:\n          ingress: [{{from: [{{ipBlock: {{cidr: \"{cidr}\"}}}}]}}]\n"
        )
    };
    let ok = format!(
        "{HEAD}{MODEL}steps:\n  - name: s1\n{}",
        policy("${cidr:y/b}")
    );
    let s = parse(&ok).unwrap();
    let Change::Apply(raw) = &s.steps[1].changes[0] else {
        unreachable!()
    };
    assert_eq!(raw.referenced_pods(), vec![PodRef::new("y", "b")]);

    let text = format!(
        "{HEAD}{MODEL}steps:\n  - name: s1\n{}",
        policy("${cidr:y/q}")
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "\"${cidr", 0),
        "steps[0].apply[0].spec.ingress[0].from[0].ipBlock.cidr",
        "names pod y/q, which does not exist",
    );

    let text = format!(
        "{HEAD}{MODEL}steps:\n  - name: s1\n{}",
        policy("${cidr:yq}")
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "\"${cidr", 0),
        "steps[0].apply[0].spec.ingress[0].from[0].ipBlock.cidr",
        "`yq` is not a pod",
    );
}

#[test]
fn a_pod_spec_cannot_change() {
    let text = format!(
        "{HEAD}{MODEL}steps:\n  - name: s1\n    apply:\n      - apiVersion: v1\n        kind: Pod\n        metadata: {{name: a, namespace: x}}\n        spec: {{containers: [{{name: other, image: i}}]}}\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "spec: {containers", 0),
        "steps[0].apply[0].spec",
        "spec cannot change",
    );
}

// ---------------------------------------------------------------------------------------
// Errors in expectations and probes

#[test]
fn unknown_peer_in_expect() {
    let text = format!(
        "{HEAD}{MODEL}expect:\n  default: allow\n  exceptions:\n    - {{from: x/a, to: z/a, port: 80, allowed: false}}\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "z/a", 0),
        "expect.exceptions[0].to",
        "pod z/a does not exist at this step",
    );

    let text = format!(
        "{HEAD}{MODEL}expect:\n  default: allow\n  exceptions:\n    - {{from: node/n3, to: x/a, port: 80, allowed: false}}\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "node/n3", 0),
        "expect.exceptions[0].from",
        "node n3 does not exist",
    );

    // A table row naming a pod that a step deleted.
    let text = format!(
        "{HEAD}{MODEL}steps:\n  - name: s1\n    delete: [{{kind: Pod, namespace: y, name: b}}]\n    expect:\n      TCP/80: |2\n             x/a x/b\n        x/a  .   .\n        y/b  .   .\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "y/b  .", 0),
        "steps[0].expect.TCP/80",
        "pod y/b does not exist at this step",
    );

    let text = format!("{HEAD}{MODEL}probe:\n  from: [x/a, node/n1, q/a]\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "q/a", 0),
        "probe.from[2]",
        "pod q/a does not exist at any step",
    );
}

#[test]
fn bad_table_rows() {
    let table =
        |rows: &str| format!("{HEAD}{MODEL}expect:\n  TCP/80: |2\n         x/a x/b y/a\n{rows}");
    let text = table("    x/a  .   ?   .\n    x/b  .   .   .\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "?", 0),
        "expect.TCP/80",
        "`?` in row x/a, column x/b is not a cell",
    );

    let text = table("    x/a  .   .   .\n    x/b  .   .\n");
    let e = parse_err(&text);
    let short = pos(&text, "    x/b  .   .\n", 0);
    assert_error(
        &e,
        Location {
            line: short.line,
            column: short.column + "    x/b  .   .".len(),
        },
        "expect.TCP/80",
        "row x/b has 2 cells but the table has 3 columns (no cell for y/a)",
    );

    let text = table("    x/a  .   .   .   X\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "X\n", 0),
        "expect.TCP/80",
        "row x/a has 4 cells",
    );

    let text = table("    x/a  .   .   .\n    xa   .   .   .\n");
    let e = parse_err(&text);
    assert_error(&e, pos(&text, "xa ", 0), "expect.TCP/80", "row header");

    // With an explicit indentation indicator the columns still line up.
    let text = format!(
        "{HEAD}{MODEL}expect:\n  TCP/80: |2\n        x/a x/b\n    x/a  #   X\n    x/b  X   !\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "!", 0),
        "expect.TCP/80",
        "`!` in row x/b, column x/b",
    );

    // A header indented deeper than the rows needs an explicit indentation (`|2`).
    let text = format!("{HEAD}{MODEL}expect:\n  TCP/80: |\n        x/a x/b\n    x/a  .   .\n");
    let e = parse_err(&text);
    assert_eq!(
        e.location.map(|l| l.line),
        Some(pos(&text, "x/a  .", 0).line),
        "{e}"
    );
    assert!(e.message.contains("`|2`"), "{e}");

    let text = format!("{HEAD}{MODEL}expect:\n  TCP/80: |\n    x/a node/n1\n    x/a  . .\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "node/n1", 0),
        "expect.TCP/80",
        "servers are pods (ns/pod) or external hosts",
    );
}

#[test]
fn expect_forms_cannot_be_mixed() {
    let text =
        format!("{HEAD}{MODEL}expect:\n  default: deny\n  TCP/80: |2\n        x/a\n    x/a  .\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "TCP/80", 0),
        "expect.TCP/80",
        "mixes its two forms",
    );

    let text = format!("{HEAD}{MODEL}expect:\n  defualt: deny\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "defualt", 0),
        "expect.defualt",
        "did you mean `default`?",
    );

    let text = format!(
        "{HEAD}{MODEL}expect:\n  default: deny\n  exceptions:\n    - {{from: x/a, to: x/b, port: 80, alowed: true}}\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "alowed", 0),
        "expect.exceptions[0].alowed",
        "did you mean `allowed`?",
    );
}

#[test]
fn realistic_manifests_have_no_false_unknown_fields() {
    // The test-network-policy example of the Kubernetes docs, and a pod as `kubectl get
    // -o yaml` prints it (nulls, empty maps, quantities, probes with named ports).
    let text = format!(
        "{HEAD}cluster: {{nodes: 1}}
manifests:
  - apiVersion: v1
    kind: Namespace
    metadata:
      name: myproject
      labels: {{project: myproject}}
      annotations: {{note: \"${{HOME}} stays as written\"}}
  - apiVersion: v1
    kind: Pod
    metadata:
      name: db-0
      namespace: default
      creationTimestamp: null
      labels: {{role: db, app.kubernetes.io/name: redis}}
    spec:
      containers:
        - name: redis
          image: redis:7
          command: [redis-server]
          args: [--port, \"6379\"]
          env: [{{name: A, value: \"1\"}}, {{name: B, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}]
          ports: [{{name: redis, containerPort: 6379}}]
          resources: {{limits: {{cpu: 500m, memory: 128Mi}}, requests: {{cpu: 0.1}}}}
          readinessProbe: {{tcpSocket: {{port: redis}}, periodSeconds: 5}}
          securityContext: {{runAsNonRoot: true, capabilities: {{drop: [ALL]}}}}
          volumeMounts: [{{name: data, mountPath: /data}}]
      volumes: [{{name: data, emptyDir: {{}}}}]
      restartPolicy: Always
      tolerations: [{{key: k, operator: Exists, effect: NoSchedule}}]
    status: {{}}
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata:
      name: test-network-policy
      namespace: default
    spec:
      podSelector:
        matchLabels:
          role: db
      policyTypes:
        - Ingress
        - Egress
      ingress:
        - from:
            - ipBlock:
                cidr: 172.17.0.0/16
                except:
                  - 172.17.1.0/24
            - namespaceSelector:
                matchLabels:
                  project: myproject
            - podSelector:
                matchLabels:
                  role: frontend
          ports:
            - protocol: TCP
              port: 6379
      egress:
        - to:
            - ipBlock:
                cidr: 10.0.0.0/24
          ports:
            - protocol: TCP
              port: 5978
              endPort: 5980
"
    );
    let s = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let state = &replay(&s)[0];
    assert_eq!(state.network_policies.len(), 1);
    let pod = &state.pods[&PodRef::new("default", "db-0")];
    assert_eq!(
        objects::declared_ports(pod)[0].port,
        PortProto::new(Protocol::Tcp, 6379)
    );
}

#[test]
fn table_rows_may_be_nodes() {
    let text = format!(
        "{HEAD}{MODEL}expect:\n  UDP/80: |2\n              x/a y/b\n    node/n2    .   X\n    y/b        #   .\n"
    );
    let s = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let e = s.steps[0].expect.as_ref().unwrap();
    let udp80 = PortProto::new(Protocol::Udp, 80);
    let n2 = Peer::Node("n2".into());
    assert_eq!(
        e.lookup(&n2, &Peer::Pod(PodRef::new("x", "a")), udp80),
        Some(true)
    );
    assert_eq!(
        e.lookup(&n2, &Peer::Pod(PodRef::new("y", "b")), udp80),
        Some(false)
    );
    let yb = Peer::Pod(PodRef::new("y", "b"));
    assert_eq!(
        e.lookup(&yb, &Peer::Pod(PodRef::new("x", "a")), udp80),
        None
    );
    assert_eq!(
        e.lookup(&yb, &Peer::Pod(PodRef::new("y", "b")), udp80),
        Some(true)
    );
    assert_eq!(e.cells.len(), 3);
}

#[test]
fn external_hosts_are_declared_probed_and_expected() {
    let text = format!(
        "{HEAD}cluster:\n  nodes: 1\n  externalHosts:\n    - {{name: backup, address: 172.17.0.5, serve: [TCP/5978]}}\n\
model: {{namespaces: [x], pods: [a], ports: [80], protocols: [TCP]}}\n\
probe:\n  from: [x/a, host/backup]\n  to: [x/a, host/backup]\n\
expect:\n  default: allow\n  exceptions:\n    - {{from: x/a, to: host/backup, port: 5978, allowed: false}}\n"
    );
    let s = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let h = &s.cluster.external_hosts[0];
    assert_eq!(h.name, "backup");
    assert_eq!(h.address, Ipv4Addr::new(172, 17, 0, 5));
    assert_eq!(h.serve, vec![PortProto::new(Protocol::Tcp, 5978)]);
    let backup: Peer = "host/backup".parse().unwrap();
    assert_eq!(s.probe.to.as_ref().unwrap()[1], backup);
    let e = s.steps[0].expect.as_ref().unwrap();
    let xa: Peer = "x/a".parse().unwrap();
    assert_eq!(
        e.lookup(&xa, &backup, PortProto::new(Protocol::Tcp, 5978)),
        Some(false)
    );
}

#[test]
fn external_host_mistakes() {
    let hosts = |addr: &str| {
        format!(
            "{HEAD}cluster:\n  externalHosts:\n    - {{name: pc, address: {addr}}}\nmodel: {{}}\n"
        )
    };
    let text = hosts("10.244.3.3");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "10.244.3.3", 0),
        "cluster.externalHosts[0].address",
        "inside the podCIDR",
    );
    let text = hosts("192.168.200.40");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "192.168.200.40", 0),
        "cluster.externalHosts[0].address",
        "underlay",
    );
    let text = format!("{HEAD}model: {{}}\nprobe:\n  to: [host/nowhere]\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "host/nowhere", 0),
        "probe.to[0]",
        "declare it in cluster.externalHosts",
    );
}

// ---------------------------------------------------------------------------------------
// Services as probe targets (`svc/NS/NAME:PORT`)

const WEB_SERVICE: &str = "manifests:\n  - {apiVersion: v1, kind: Service, metadata: {name: web, namespace: x}, spec: {selector: {pod: a}, ports: [{port: 8000, targetPort: 80}]}}\n";

#[test]
fn service_targets_parse_and_print() {
    let p: Peer = "svc/x/web:8000".parse().unwrap();
    assert_eq!(
        p,
        Peer::Service {
            namespace: "x".into(),
            name: "web".into(),
            port: 8000
        }
    );
    assert_eq!(p.to_string(), "svc/x/web:8000");
    assert!(p.is_service());
    for bad in [
        "svc/web:80",
        "svc/x/web",
        "svc/x/web:0",
        "svc/x/web:http",
        "svc//web:80",
        "svc/x/a/b:80",
    ] {
        let e = bad.parse::<Peer>().unwrap_err();
        assert!(e.contains("svc/NAMESPACE/NAME:PORT"), "{bad}: {e}");
    }
}

#[test]
fn service_targets_must_exist_with_that_port() {
    let text = format!("{HEAD}{MODEL}{WEB_SERVICE}probe:\n  to: [svc/x/web:8000]\n");
    let s = parse(&text).unwrap();
    assert_eq!(
        s.probe.to.as_ref().unwrap()[0].to_string(),
        "svc/x/web:8000"
    );

    let text = format!("{HEAD}{MODEL}{WEB_SERVICE}probe:\n  to: [svc/x/web:80]\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "svc/x/web:80", 0),
        "probe.to[0]",
        "Service x/web has no port 80 at any step (its ports: 8000)",
    );

    let text = format!("{HEAD}{MODEL}probe:\n  to: [svc/x/nope:80]\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "svc/x/nope:80", 0),
        "probe.to[0]",
        "Service x/nope does not exist at any step (there are no Services)",
    );

    // A Service probes nothing.
    let text = format!("{HEAD}{MODEL}{WEB_SERVICE}probe:\n  from: [svc/x/web:8000]\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "svc/x/web:8000", 0),
        "probe.from[0]",
        "is a Service: it can only be probed",
    );

    // An expectation names the Service at a step where it is gone.
    let text = format!(
        "{HEAD}{MODEL}{WEB_SERVICE}steps:\n  - name: gone\n    delete: [{{kind: Service, namespace: x, name: web}}]\n    expect:\n      default: deny\n      exceptions: [{{from: x/b, to: svc/x/web:8000, port: 8000, allowed: true}}]\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "svc/x/web:8000", 0),
        "steps[0].expect.exceptions[0].to",
        "Service x/web does not exist at this step",
    );

    // A headless Service has no virtual IP.
    let text = format!(
        "{HEAD}{MODEL}manifests:\n  - {{apiVersion: v1, kind: Service, metadata: {{name: db, namespace: x}}, spec: {{clusterIP: None, selector: {{pod: a}}, ports: [{{port: 80}}]}}}}\nprobe:\n  to: [svc/x/db:80]\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "svc/x/db:80", 0),
        "probe.to[0]",
        "Service x/db is headless (clusterIP: None): it has no virtual IP to probe",
    );

    // `svc` is not a namespace name.
    let text = format!(
        "{HEAD}manifests:\n  - {{apiVersion: v1, kind: Namespace, metadata: {{name: svc}}}}\n"
    );
    let e = parse_err(&text);
    assert!(e.message.contains("`svc/...` names a Service"), "{e}");
}
