//! Services end to end through the scenario parser: every type parses and comes out
//! allocated (cluster IP, node ports, load-balancer address) as the cluster will hold it;
//! each kind of mistake is reported at its file, line, column and field path; allocation
//! is deterministic and follows creation order; endpoints are computed per pod (named
//! target ports, protocols, readiness, hand-written Endpoints); the text rendering is
//! snapshotted.

use std::net::Ipv4Addr;

use sim::objects::{self, ClusterObjects, Object, PodRef};
use sim::scenario::{Change, Scenario};
use sim::services::{self, ServiceType, endpoints, render};

mod common;
use common::*;

/// Replays every step as the harness does (decode the raw manifests, apply them; new
/// pods get the next address of their node's /24) and returns the objects after each.
fn replay(s: &Scenario) -> Vec<ClusterObjects> {
    let mut objects = ClusterObjects::new(s.cluster.nodes.clone());
    let mut next_host = 2u8;
    let mut out = Vec::new();
    for step in &s.steps {
        for change in &step.changes {
            match change {
                Change::Apply(raw) => {
                    let o = raw
                        .decode(&|p| objects.pods.get(p).and_then(objects::pod_ip))
                        .unwrap_or_else(|e| panic!("{e}"));
                    let new_pod = match &o {
                        Object::Pod(_) => {
                            let key = PodRef::new(&raw.key.0, &raw.key.1);
                            (!objects.pods.contains_key(&key)).then_some(key)
                        }
                        _ => None,
                    };
                    objects.apply(o);
                    if let Some(p) = new_pod {
                        let node = objects::pod_node(&objects.pods[&p]).unwrap().to_string();
                        let i = s.cluster.nodes.iter().position(|n| *n == node).unwrap();
                        objects.set_pod_ip(&p, Ipv4Addr::new(10, 244, i as u8 + 1, next_host));
                        next_host += 1;
                    }
                }
                Change::Delete {
                    kind,
                    namespace,
                    name,
                } => assert!(objects.delete(*kind, namespace, name)),
                Change::Label {
                    kind,
                    namespace,
                    name,
                    labels,
                } => assert!(objects.set_labels(*kind, namespace, name, labels.clone())),
            }
        }
        out.push(objects.clone());
    }
    out
}

const HEAD: &str = "name: t\nsummary: a test\n";

/// Two nodes, namespace `x`, web pods that call their port `http` but run it on
/// different numbers (a on n1: 8080, b on n2: 80), and a DNS pod whose `dns` port exists
/// for UDP only.
const CLUSTER: &str = "cluster:
  nodes: 2
  loadBalancerPool: 203.0.113.0/29
  externalHosts:
    - {name: legacy, address: 192.0.2.42, serve: [TCP/9376]}
manifests:
  - {apiVersion: v1, kind: Namespace, metadata: {name: x}}
  - apiVersion: v1
    kind: Pod
    metadata: {name: a, namespace: x, labels: {app: web}}
    spec:
      nodeName: n1
      containers:
        - {name: c, image: nginx, ports: [{name: http, containerPort: 8080}, {name: dns, containerPort: 53, protocol: UDP}]}
  - apiVersion: v1
    kind: Pod
    metadata: {name: b, namespace: x, labels: {app: web}}
    spec:
      nodeName: n2
      containers:
        - {name: c, image: nginx, ports: [{name: http, containerPort: 80}]}
";

fn service(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "  - apiVersion: v1\n    kind: Service\n    metadata: {{name: {name}, namespace: {ns}}}\n    spec: {spec}\n"
    )
}

fn svc<'a>(o: &'a ClusterObjects, ns: &str, name: &str) -> &'a k8s_openapi::api::core::v1::Service {
    o.services
        .get(&(ns.to_string(), name.to_string()))
        .unwrap_or_else(|| panic!("no service {ns}/{name}"))
}

// ---------------------------------------------------------------------------------------
// Valid services of every type

#[test]
fn every_type_parses_and_is_allocated() {
    let text = format!(
        "{HEAD}{CLUSTER}{}{}{}{}{}",
        service(
            "x",
            "web",
            "{selector: {app: web}, ports: [{name: http, port: 80, targetPort: http}]}"
        ),
        service(
            "x",
            "web-headless",
            "{clusterIP: None, selector: {app: web}, ports: [{port: 80}]}"
        ),
        service(
            "x",
            "web-np",
            "{type: NodePort, selector: {app: web}, ports: [{name: http, port: 80, targetPort: http}, {name: fixed, port: 81, nodePort: 30000}]}"
        ),
        service(
            "x",
            "web-lb",
            "{type: LoadBalancer, selector: {app: web}, ports: [{port: 80, targetPort: http}]}"
        ),
        service(
            "x",
            "web-local",
            "{type: LoadBalancer, externalTrafficPolicy: Local, selector: {app: web}, ports: [{port: 80, targetPort: http}]}"
        ),
    );
    let s = parse_ok(&text);
    assert_eq!(
        s.load_balancer_pool,
        Some("203.0.113.0/29".parse().unwrap())
    );
    let o = &replay(&s)[0];
    assert!(o.has_services());

    let web = svc(o, "x", "web");
    assert_eq!(services::service_type(web), ServiceType::ClusterIp);
    assert_eq!(
        services::cluster_ip(web),
        Some(Ipv4Addr::new(10, 96, 0, 10))
    );
    let spec = web.spec.as_ref().unwrap();
    assert_eq!(
        spec.cluster_ips.as_deref(),
        Some(&["10.96.0.10".to_string()][..])
    );
    assert_eq!(spec.session_affinity.as_deref(), Some("None"));
    assert_eq!(
        spec.ports.as_ref().unwrap()[0].protocol.as_deref(),
        Some("TCP")
    );
    assert_eq!(spec.ports.as_ref().unwrap()[0].node_port, None);

    let headless = svc(o, "x", "web-headless");
    assert!(services::is_headless(headless));
    assert_eq!(services::cluster_ip(headless), None);

    // The explicitly requested 30000 is skipped by the automatic choice.
    let np = svc(o, "x", "web-np");
    let ports = np.spec.as_ref().unwrap().ports.as_ref().unwrap();
    assert_eq!(ports[0].node_port, Some(30001));
    assert_eq!(ports[1].node_port, Some(30000));
    // The headless Service took no address.
    assert_eq!(services::cluster_ip(np), Some(Ipv4Addr::new(10, 96, 0, 11)));

    let lb = svc(o, "x", "web-lb");
    assert_eq!(
        services::load_balancer_ips(lb),
        [Ipv4Addr::new(203, 0, 113, 1)]
    );
    assert_eq!(services::node_ports(lb), [30002]);
    assert_eq!(lb.spec.as_ref().unwrap().health_check_node_port, None);
    assert_eq!(
        lb.spec.as_ref().unwrap().external_traffic_policy.as_deref(),
        Some("Cluster")
    );

    let local = svc(o, "x", "web-local");
    assert_eq!(
        services::load_balancer_ips(local),
        [Ipv4Addr::new(203, 0, 113, 2)]
    );
    let spec = local.spec.as_ref().unwrap();
    assert_eq!(spec.ports.as_ref().unwrap()[0].node_port, Some(30003));
    assert_eq!(spec.health_check_node_port, Some(30004));
    let ingress = &local
        .status
        .as_ref()
        .unwrap()
        .load_balancer
        .as_ref()
        .unwrap()
        .ingress
        .as_ref()
        .unwrap()[0];
    assert_eq!(ingress.ip_mode.as_deref(), Some("VIP"));
}

#[test]
fn the_manual_endpoints_example_reaches_an_outside_host() {
    // The Kubernetes docs' Service without a selector, and its hand-written Endpoints
    // (written first: the parser applies Services before the rest of the initial step).
    let text = format!(
        "{HEAD}{CLUSTER}  - apiVersion: v1
    kind: Endpoints
    metadata: {{name: my-service}}
    subsets:
      - addresses:
          - ip: 192.0.2.42
        ports:
          - port: 9376
{}",
        service(
            "default",
            "my-service",
            "{ports: [{protocol: TCP, port: 80, targetPort: 9376}]}"
        )
    );
    let s = parse_ok(&text);
    let o = &replay(&s)[0];
    let svc = svc(o, "default", "my-service");
    let computed = endpoints::compute(o, svc);
    assert!(matches!(computed.origin, endpoints::Origin::Manual(_)));
    let port = &services::ports(svc)[0];
    let eps = computed.for_port(port);
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].to_string(), "192.0.2.42:9376");
    assert!(eps[0].ready);
    assert_eq!(eps[0].node, None);
    // kubectl shows the object as written; the mirrored slice has no node.
    assert_eq!(
        computed.to_endpoints(svc).unwrap(),
        o.endpoints[&("default".to_string(), "my-service".to_string())]
    );
    let slices = computed.slices(svc);
    assert_eq!(slices.len(), 1);
    assert_eq!(slices[0].endpoints[0].node_name, None);
    assert_eq!(
        slices[0].metadata.labels.as_ref().unwrap()[endpoints::MANAGED_BY_LABEL],
        endpoints::MIRRORING_CONTROLLER
    );
}

#[test]
fn externalname_and_unknown_kinds_are_refused_by_name() {
    let text = format!(
        "{HEAD}{CLUSTER}{}",
        service(
            "x",
            "ext",
            "{type: ExternalName, externalName: db.example.com}"
        )
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "ExternalName", 0),
        "manifests[3].spec.type",
        "type ExternalName is not supported yet",
    );
}

// ---------------------------------------------------------------------------------------
// Mistakes, each at its place

#[test]
fn bad_target_port_name() {
    let text = format!(
        "{HEAD}{CLUSTER}{}",
        service(
            "x",
            "web",
            "{selector: {app: web}, ports: [{port: 80, targetPort: http_alt}]}"
        )
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "http_alt", 0),
        "manifests[3].spec.ports[0].targetPort",
        "a targetPort is a number or the name of a container port",
    );
    let text = format!(
        "{HEAD}{CLUSTER}{}",
        service(
            "x",
            "web",
            "{selector: {app: web}, ports: [{port: 80, targetPort: 70000}]}"
        )
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "70000", 0),
        "manifests[3].spec.ports[0].targetPort",
        "targetPort 70000 is not a port number",
    );
}

#[test]
fn cluster_ip_outside_the_cidr_or_taken() {
    let text = format!(
        "{HEAD}{CLUSTER}{}",
        service("x", "web", "{clusterIP: 10.200.0.5, ports: [{port: 80}]}")
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "10.200.0.5", 0),
        "manifests[3].spec.clusterIP",
        "not inside the serviceCIDR 10.96.0.0/12",
    );

    // The first service takes .10 automatically; the second asks for it.
    let text = format!(
        "{HEAD}{CLUSTER}{}{}",
        service("x", "one", "{ports: [{port: 80}]}"),
        service("x", "two", "{clusterIP: 10.96.0.10, ports: [{port: 80}]}")
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "10.96.0.10", 0),
        "manifests[4].spec.clusterIP",
        "cluster IP 10.96.0.10 is already Service x/one's",
    );

    let text = format!(
        "{HEAD}{CLUSTER}{}",
        service("x", "web", "{clusterIP: 10.96.0.1, ports: [{port: 80}]}")
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "10.96.0.1,", 0),
        "manifests[3].spec.clusterIP",
        "belongs to the default/kubernetes Service",
    );

    let text = format!(
        "{HEAD}{CLUSTER}{}",
        service(
            "x",
            "web",
            "{type: NodePort, clusterIP: None, ports: [{port: 80}]}"
        )
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "None", 0),
        "manifests[3].spec.clusterIP",
        "cannot be headless",
    );
}

#[test]
fn duplicate_node_ports() {
    // Across Services: whatever the protocol, a node port is one Service's.
    let text = format!(
        "{HEAD}{CLUSTER}{}{}",
        service(
            "x",
            "one",
            "{type: NodePort, ports: [{port: 80, nodePort: 30080}]}"
        ),
        service(
            "x",
            "two",
            "{type: NodePort, ports: [{port: 53, protocol: UDP, nodePort: 30080}]}"
        )
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "30080", 1),
        "manifests[4].spec.ports[0].nodePort",
        "node port 30080 is already used by Service x/one",
    );

    // Within a Service: once per protocol.
    let text = format!(
        "{HEAD}{CLUSTER}{}",
        service(
            "x",
            "one",
            "{type: NodePort, ports: [{name: a, port: 80, nodePort: 30080}, {name: b, port: 81, nodePort: 30080}]}"
        )
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "30080", 1),
        "manifests[3].spec.ports[1].nodePort",
        "nodePort TCP/30080 is used by two ports of this Service",
    );
    // ... but TCP and UDP may share one (DNS-style), and share an allocated one too.
    let text = format!(
        "{HEAD}{CLUSTER}{}{}",
        service(
            "x",
            "dns",
            "{type: NodePort, ports: [{name: tcp, port: 53, nodePort: 30053}, {name: udp, port: 53, protocol: UDP, nodePort: 30053}]}"
        ),
        service(
            "x",
            "dns2",
            "{type: NodePort, ports: [{name: tcp, port: 53}, {name: udp, port: 53, protocol: UDP}]}"
        )
    );
    let o = &replay(&parse_ok(&text))[0];
    assert_eq!(services::node_ports(svc(o, "x", "dns")), [30053]);
    assert_eq!(services::node_ports(svc(o, "x", "dns2")), [30000]);

    let text = format!(
        "{HEAD}{CLUSTER}{}",
        service("x", "one", "{ports: [{port: 80, nodePort: 30080}]}")
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "nodePort", 0),
        "manifests[3].spec.ports[0].nodePort",
        "only for NodePort and LoadBalancer",
    );

    let text = format!(
        "{HEAD}{CLUSTER}{}",
        service(
            "x",
            "one",
            "{type: NodePort, ports: [{port: 80, nodePort: 8080}]}"
        )
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "8080", 1),
        "manifests[3].spec.ports[0].nodePort",
        "outside the node-port range 30000-32767",
    );
}

#[test]
fn load_balancer_without_a_pool() {
    let cluster = CLUSTER.replace("  loadBalancerPool: 203.0.113.0/29\n", "");
    let text = format!(
        "{HEAD}{cluster}{}",
        service("x", "lb", "{type: LoadBalancer, ports: [{port: 80}]}")
    );
    // As on a cluster with no load-balancer controller: the address stays pending, the
    // ClusterIP and the NodePort work, and a note says so.
    let s = parse_ok(&text);
    let objects = &sim::scenario::objects_per_step(&s)[0].1;
    let lb = svc(objects, "x", "lb");
    assert!(sim::services::load_balancer_ips(lb).is_empty());
    let port = &lb.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
    assert!(port.node_port.is_some_and(|n| (30000..=32767).contains(&n)));
    assert!(
        s.notes
            .iter()
            .any(|n| n.contains("Service x/lb") && n.contains("pending")),
        "{:?}",
        s.notes
    );

    // An address written in the status (an outside controller's) needs no pool.
    let text = format!(
        "{HEAD}{cluster}  - apiVersion: v1
    kind: Service
    metadata: {{name: lb, namespace: x}}
    spec: {{type: LoadBalancer, ports: [{{port: 80}}]}}
    status: {{loadBalancer: {{ingress: [{{ip: 198.51.100.7}}]}}}}
"
    );
    let o = &replay(&parse_ok(&text))[0];
    assert_eq!(
        services::load_balancer_ips(svc(o, "x", "lb")),
        [Ipv4Addr::new(198, 51, 100, 7)]
    );

    // ... but not one inside the cluster's ranges.
    let bad = text.replace("198.51.100.7", "10.244.1.9");
    let e = parse_err(&bad);
    assert_error(
        &e,
        pos(&bad, "10.244.1.9", 0),
        "manifests[3].status.loadBalancer.ingress[0].ip",
        "inside the podCIDR",
    );
}

#[test]
fn load_balancer_pool_must_stay_outside_the_cluster() {
    for (pool, what) in [
        ("10.244.8.0/24", "the podCIDR"),
        ("10.96.0.0/24", "the serviceCIDR"),
        ("192.168.200.0/28", "the nodes' underlay network"),
        ("192.0.2.32/27", "external host legacy's address"),
        ("203.0.113.1/29", "not a network address"),
    ] {
        let text = format!("{HEAD}{}", CLUSTER.replace("203.0.113.0/29", pool));
        let e = parse_err(&text);
        assert_error(&e, pos(&text, pool, 0), "cluster.loadBalancerPool", what);
    }
}

#[test]
fn load_balancer_addresses_shared_only_on_different_ports() {
    // The data-centre gateway pattern: two Services on one address, different ports.
    let text = format!(
        "{HEAD}{CLUSTER}{}{}",
        service(
            "x",
            "http",
            "{type: LoadBalancer, loadBalancerIP: 203.0.113.5, ports: [{port: 80}]}"
        ),
        service(
            "x",
            "ssh",
            "{type: LoadBalancer, loadBalancerIP: 203.0.113.5, ports: [{port: 22}]}"
        )
    );
    let o = &replay(&parse_ok(&text))[0];
    for name in ["http", "ssh"] {
        assert_eq!(
            services::load_balancer_ips(svc(o, "x", name)),
            [Ipv4Addr::new(203, 0, 113, 5)]
        );
    }
    let clash = text.replace("port: 22", "port: 80");
    let e = parse_err(&clash);
    assert_error(
        &e,
        pos(&clash, "203.0.113.5", 1),
        "manifests[4].spec.loadBalancerIP",
        "already serves TCP/80 for Service x/http",
    );
    let outside = text.replace(
        "203.0.113.5, ports: [{port: 22}]",
        "198.51.100.1, ports: [{port: 22}]",
    );
    let e = parse_err(&outside);
    assert_error(
        &e,
        pos(&outside, "198.51.100.1", 0),
        "manifests[4].spec.loadBalancerIP",
        "not inside cluster.loadBalancerPool 203.0.113.0/29",
    );
}

#[test]
fn endpoints_need_their_selector_less_service() {
    let endpoints = "  - apiVersion: v1
    kind: Endpoints
    metadata: {name: my-service, namespace: x}
    subsets: [{addresses: [{ip: 192.0.2.42}], ports: [{port: 9376}]}]
";
    let text = format!("{HEAD}{CLUSTER}{endpoints}");
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "my-service", 0),
        "manifests[3].metadata.name",
        "there is no Service x/my-service at this point",
    );

    let text = format!(
        "{HEAD}{CLUSTER}{endpoints}{}",
        service(
            "x",
            "my-service",
            "{selector: {app: web}, ports: [{port: 80}]}"
        )
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "my-service", 0),
        "manifests[3].metadata.name",
        "has a selector, so the endpoints controller computes its Endpoints",
    );

    let bad = format!(
        "{HEAD}{CLUSTER}{}{}",
        endpoints.replace("192.0.2.42}", "192.0.2.42, nodeName: n9}"),
        service("x", "my-service", "{ports: [{port: 80}]}")
    );
    let e = parse_err(&bad);
    assert_error(
        &e,
        pos(&bad, "n9", 0),
        "manifests[3].subsets[0].addresses[0].nodeName",
        "node n9 does not exist",
    );

    let bad = format!(
        "{HEAD}{CLUSTER}{}{}",
        endpoints.replace("192.0.2.42", "127.0.0.1"),
        service("x", "my-service", "{ports: [{port: 80}]}")
    );
    let e = parse_err(&bad);
    assert_error(
        &e,
        pos(&bad, "127.0.0.1", 0),
        "manifests[3].subsets[0].addresses[0].ip",
        "a loopback address",
    );
}

#[test]
fn service_fields_are_checked_as_the_api_server_does() {
    let cases: [(&str, &str, &str, &str); 9] = [
        (
            "{selectr: {app: web}, ports: [{port: 80}]}",
            "selectr",
            "spec.selectr",
            "did you mean `selector`?",
        ),
        (
            "{ports: [{name: http}]}",
            "{name: http}",
            "spec.ports[0].port",
            "`port` is required",
        ),
        (
            "{ports: [{port: 80, protocol: ICMP}]}",
            "ICMP",
            "spec.ports[0].protocol",
            "unknown protocol \"ICMP\"",
        ),
        (
            "{ports: [{port: 80}, {port: 81}]}",
            "{port: 80}, {port: 81}",
            "spec.ports[0]",
            "each needs a `name`",
        ),
        (
            "{type: Ingress, ports: [{port: 80}]}",
            "Ingress",
            "spec.type",
            "unknown service type",
        ),
        (
            "{selector: {app: web}}",
            "spec: {selector",
            "spec",
            "needs at least one port",
        ),
        (
            "{externalTrafficPolicy: Local, ports: [{port: 80}]}",
            "externalTrafficPolicy",
            "spec.externalTrafficPolicy",
            "only for services reachable from outside",
        ),
        (
            "{sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 90000}}, ports: [{port: 80}]}",
            "90000",
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
            "between 1 and 86400",
        ),
        (
            "{clusterIP: fd00::1, ports: [{port: 80}]}",
            "fd00::1",
            "spec.clusterIP",
            "IPv4 only",
        ),
    ];
    for (spec, needle, path, message) in cases {
        let text = format!("{HEAD}{CLUSTER}{}", service("x", "web", spec));
        let e = parse_err(&text);
        // The needle may also stand in the cluster header: look after the manifests.
        let nth = CLUSTER.matches(needle).count() + HEAD.matches(needle).count();
        assert_error(
            &e,
            pos(&text, needle, nth),
            &format!("manifests[3].{path}"),
            message,
        );
    }

    let text = format!(
        "{HEAD}{CLUSTER}{}",
        service("x", "9web", "{ports: [{port: 80}]}")
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "9web", 0),
        "manifests[3].metadata.name",
        "DNS-1035",
    );

    // A headless Service may have no ports; a selector-less one is fine.
    let text = format!(
        "{HEAD}{CLUSTER}{}{}",
        service("x", "h", "{clusterIP: None, selector: {app: web}}"),
        service("x", "manual", "{ports: [{port: 80}]}")
    );
    let o = &replay(&parse_ok(&text))[0];
    assert!(services::is_headless(svc(o, "x", "h")));
    let manual = svc(o, "x", "manual");
    assert_eq!(
        endpoints::compute(o, manual).origin,
        endpoints::Origin::Missing
    );
    assert_eq!(endpoints::compute(o, manual).to_endpoints(manual), None);
}

#[test]
fn services_can_be_deleted_but_not_relabelled() {
    let text = format!(
        "{HEAD}{CLUSTER}{}  - apiVersion: v1
    kind: Endpoints
    metadata: {{name: m, namespace: x}}
    subsets: [{{addresses: [{{ip: 192.0.2.42}}]}}]
steps:
  - name: drop
    delete: [{{kind: Service, namespace: x, name: m}}]
  - name: again
    apply:
      - apiVersion: v1
        kind: Service
        metadata: {{name: m2, namespace: x}}
        spec: {{ports: [{{port: 80}}]}}
",
        service("x", "m", "{ports: [{port: 80}]}")
    );
    let s = parse_ok(&text);
    let states = replay(&s);
    assert!(states[0].endpoints.contains_key(&("x".into(), "m".into())));
    // Deleting the Service deleted its Endpoints too.
    assert!(!states[1].has_services());
    // The freed cluster IP is the lowest free one again.
    assert_eq!(
        services::cluster_ip(svc(&states[2], "x", "m2")),
        Some(Ipv4Addr::new(10, 96, 0, 10))
    );

    let bad = format!(
        "{HEAD}{CLUSTER}{}steps:\n  - name: s\n    label: [{{kind: Service, namespace: x, name: m, labels: {{a: b}}}}]\n",
        service("x", "m", "{ports: [{port: 80}]}")
    );
    let e = parse_err(&bad);
    assert_error(
        &e,
        pos(&bad, "Service, namespace", 0),
        "steps[0].label[0].kind",
        "label changes apply to Pods and Namespaces",
    );

    let bad = format!(
        "{HEAD}{CLUSTER}steps:\n  - name: s\n    delete: [{{kind: Endpoints, namespace: x, name: nope}}]\n"
    );
    let e = parse_err(&bad);
    assert_error(
        &e,
        pos(&bad, "nope", 0),
        "steps[0].delete[0].name",
        "there is no Endpoints x/nope at this point",
    );
}

// ---------------------------------------------------------------------------------------
// Allocation

#[test]
fn allocation_is_deterministic_and_follows_creation_order() {
    let text = format!(
        "{HEAD}{CLUSTER}{}{}{}steps:
  - name: more
    apply:
{}{}",
        service("x", "c", "{clusterIP: 10.96.0.11, ports: [{port: 80}]}"),
        service("x", "b", "{type: NodePort, ports: [{port: 80}]}"),
        service("x", "a", "{type: LoadBalancer, ports: [{port: 80}]}"),
        // An update without clusterIP or nodePort keeps them; a new Service takes the
        // lowest free ones.
        service(
            "x",
            "b",
            "{type: NodePort, ports: [{port: 80}, {name: extra, port: 81}]}"
        )
        .replace("\n  ", "\n      ")
        .replacen("  - ", "      - ", 1)
        .replace("{port: 80}, {name", "{name: first, port: 80}, {name"),
        service("x", "d", "{type: LoadBalancer, ports: [{port: 80}]}")
            .replace("\n  ", "\n      ")
            .replacen("  - ", "      - ", 1),
    );
    let first = replay(&parse_ok(&text));
    let second = replay(&parse_ok(&text));
    assert_eq!(first, second, "two parses allocate the same");

    let o = &first[0];
    // File order is creation order: c (which asked for .11), b, a.
    assert_eq!(
        services::cluster_ip(svc(o, "x", "b")),
        Some(Ipv4Addr::new(10, 96, 0, 10))
    );
    assert_eq!(
        services::cluster_ip(svc(o, "x", "a")),
        Some(Ipv4Addr::new(10, 96, 0, 12))
    );
    assert_eq!(
        services::cluster_ip(svc(o, "x", "c")),
        Some(Ipv4Addr::new(10, 96, 0, 11))
    );
    assert_eq!(services::node_ports(svc(o, "x", "b")), [30000]);
    assert_eq!(services::node_ports(svc(o, "x", "a")), [30001]);

    let o = &first[1];
    let b = svc(o, "x", "b");
    assert_eq!(services::cluster_ip(b), Some(Ipv4Addr::new(10, 96, 0, 10)));
    // The renamed first port lost its old node port (kept by name only), and a new
    // choice never takes a port the Service still held before the update: both are new.
    let ports = services::ports(b);
    assert_eq!(ports[0].node_port, Some(30002));
    assert_eq!(ports[1].node_port, Some(30003));
    let d = svc(o, "x", "d");
    assert_eq!(services::cluster_ip(d), Some(Ipv4Addr::new(10, 96, 0, 13)));
    assert_eq!(
        services::load_balancer_ips(d),
        [Ipv4Addr::new(203, 0, 113, 2)]
    );
    // `a` keeps its address.
    assert_eq!(
        services::load_balancer_ips(svc(o, "x", "a")),
        [Ipv4Addr::new(203, 0, 113, 1)]
    );
}

#[test]
fn cluster_ip_cannot_change() {
    let text = format!(
        "{HEAD}{CLUSTER}{}steps:\n  - name: s\n    apply:\n      - apiVersion: v1\n        kind: Service\n        metadata: {{name: a, namespace: x}}\n        spec: {{clusterIP: 10.96.0.20, ports: [{{port: 80}}]}}\n",
        service("x", "a", "{ports: [{port: 80}]}")
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "10.96.0.20", 0),
        "steps[0].apply[0].spec.clusterIP",
        "this Service already has cluster IP 10.96.0.10",
    );
}

// ---------------------------------------------------------------------------------------
// Endpoints

#[test]
fn named_target_ports_resolve_per_pod_and_per_protocol() {
    let text = format!(
        "{HEAD}{CLUSTER}{}{}",
        service(
            "x",
            "web",
            "{selector: {app: web}, ports: [{name: http, port: 80, targetPort: http}, {name: dns-tcp, port: 53, targetPort: dns}, {name: dns-udp, port: 53, protocol: UDP, targetPort: dns}]}"
        ),
        service(
            "x",
            "plain",
            "{selector: {app: web}, ports: [{port: 8000, targetPort: 9000}]}"
        )
    );
    let o = &replay(&parse_ok(&text))[0];
    let web = svc(o, "x", "web");
    let computed = endpoints::compute(o, web);
    let ports = services::ports(web);
    let show = |port| {
        computed
            .for_port(port)
            .iter()
            .map(|e| format!("{e}@{}", e.node.as_deref().unwrap_or("-")))
            .collect::<Vec<_>>()
    };
    // `http` is 8080 on a (n1) and 80 on b (n2).
    assert_eq!(show(&ports[0]), ["10.244.1.2:8080@n1", "10.244.2.3:80@n2"]);
    // a's `dns` port is UDP: it backs the UDP service port only; b has none.
    assert!(show(&ports[1]).is_empty());
    assert_eq!(show(&ports[2]), ["10.244.1.2:53@n1"]);

    // v1/Endpoints: one subset per set of resolved ports.
    let ep = computed.to_endpoints(web).unwrap();
    let subsets = ep.subsets.unwrap();
    assert_eq!(subsets.len(), 2);
    let numbers: Vec<Vec<i32>> = subsets
        .iter()
        .map(|s| s.ports.iter().flatten().map(|p| p.port).collect())
        .collect();
    assert!(numbers.contains(&vec![53, 8080]), "{numbers:?}");
    assert!(numbers.contains(&vec![80]), "{numbers:?}");

    let plain = svc(o, "x", "plain");
    let eps = endpoints::compute(o, plain).for_port(&services::ports(plain)[0]);
    assert_eq!(
        eps.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["10.244.1.2:9000", "10.244.2.3:9000"]
    );
}

#[test]
fn readiness_is_an_annotation_a_step_can_flip() {
    let mark = |ready: &str| {
        format!(
            "      - apiVersion: v1
        kind: Pod
        metadata: {{name: b, namespace: x, labels: {{app: web}}, annotations: {{knetlab.io/ready: \"{ready}\"}}}}
        spec:
          nodeName: n2
          containers:
            - {{name: c, image: nginx, ports: [{{name: http, containerPort: 80}}]}}
"
        )
    };
    let text = format!(
        "{HEAD}{CLUSTER}{}{}steps:\n  - name: b-not-ready\n    apply:\n{}  - name: b-ready\n    apply:\n{}",
        service(
            "x",
            "web",
            "{selector: {app: web}, ports: [{port: 80, targetPort: http}]}"
        ),
        service(
            "x",
            "publish",
            "{publishNotReadyAddresses: true, selector: {app: web}, ports: [{port: 80, targetPort: http}]}"
        ),
        mark("false"),
        mark("true"),
    );
    let states = replay(&parse_ok(&text));
    let ready_of = |o: &ClusterObjects, name: &str| {
        let s = svc(o, "x", name);
        endpoints::compute(o, s)
            .for_port(&services::ports(s)[0])
            .iter()
            .map(|e| (e.to_string(), e.ready, e.serving))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ready_of(&states[0], "web"),
        [
            ("10.244.1.2:8080".into(), true, true),
            ("10.244.2.3:80".into(), true, true)
        ]
    );
    assert_eq!(
        ready_of(&states[1], "web"),
        [
            ("10.244.1.2:8080".into(), true, true),
            ("10.244.2.3:80".into(), false, false)
        ]
    );
    // publishNotReadyAddresses: proxies still use it, but it is not serving.
    assert_eq!(
        ready_of(&states[1], "publish")[1],
        ("10.244.2.3:80".into(), true, false)
    );
    assert_eq!(ready_of(&states[2], "web"), ready_of(&states[0], "web"));
    // The pod kept its address through the updates.
    assert_eq!(
        objects::pod_ip(&states[2].pods[&PodRef::new("x", "b")]),
        Some(Ipv4Addr::new(10, 244, 2, 3))
    );

    let web = svc(&states[1], "x", "web");
    let ep = endpoints::compute(&states[1], web)
        .to_endpoints(web)
        .unwrap();
    let subsets = ep.subsets.unwrap();
    let b = subsets
        .iter()
        .find(|s| s.ports.as_ref().unwrap()[0].port == 80)
        .unwrap();
    assert_eq!(b.addresses, None);
    assert_eq!(b.not_ready_addresses.as_ref().unwrap()[0].ip, "10.244.2.3");

    let bad = text.replacen("\"false\"", "\"no\"", 1);
    let e = parse_err(&bad);
    assert_error(
        &e,
        pos(&bad, "\"no\"", 0),
        "steps[0].apply[0].metadata.annotations.knetlab.io/ready",
        "is \"true\" or \"false\"",
    );
}

// ---------------------------------------------------------------------------------------
// Text

#[test]
fn rendering() {
    let text = format!(
        "{HEAD}{CLUSTER}  - apiVersion: v1
    kind: Pod
    metadata: {{name: c, namespace: x, labels: {{app: web}}, annotations: {{knetlab.io/ready: \"false\"}}}}
    spec:
      nodeName: n1
      containers:
        - {{name: c, image: nginx, ports: [{{name: http, containerPort: 8081}}]}}
  - apiVersion: v1
    kind: Endpoints
    metadata: {{name: my-service}}
    subsets: [{{addresses: [{{ip: 192.0.2.42}}], ports: [{{port: 9376}}]}}]
{}{}{}{}{}",
        service("x", "web", "{selector: {app: web}, ports: [{name: http, port: 80, targetPort: http}]}"),
        service("x", "headless", "{clusterIP: None, selector: {app: web}}"),
        service("x", "nobody", "{type: NodePort, selector: {app: nothing}, ports: [{port: 80}]}"),
        service(
            "x",
            "lb",
            "{type: LoadBalancer, externalTrafficPolicy: Local, externalIPs: [198.51.100.9], selector: {app: web}, ports: [{name: http, port: 80, targetPort: http}, {name: dns, port: 53, protocol: UDP, targetPort: dns}]}"
        ),
        service("default", "my-service", "{ports: [{port: 80, targetPort: 9376}]}"),
    );
    let o = &replay(&parse_ok(&text))[0];
    insta::assert_snapshot!(render::render(o));
}
