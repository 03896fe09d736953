//! `cluster.dns` and `dns/NAME:PORT` targets in scenario files: what the parser adds
//! (the kube-dns pod and Service), what it refuses, and the service environment
//! variables' timeline.

mod common;

use common::{parse_err, parse_ok};
use sim::objects::{ClusterObjects, Kind, PodRef};
use sim::scenario::{Change, Peer};

const BASE: &str = "name: t\nsummary: s\ncluster:\n  nodes: 2\n";

fn objects_after_first_step(s: &sim::scenario::Scenario) -> ClusterObjects {
    let mut o = ClusterObjects::new(s.cluster.nodes.clone());
    for c in &s.steps[0].changes {
        c.apply_to(&mut o, &|_| None).unwrap();
    }
    o
}

#[test]
fn cluster_dns_adds_the_kube_dns_pod_and_service() {
    let s = parse_ok(&format!(
        "{BASE}  dns: true\nmanifests:\n  - {{apiVersion: v1, kind: Service, metadata: {{name: a}}, spec: {{selector: {{x: y}}, ports: [{{port: 80}}]}}}}\n"
    ));
    assert_eq!(s.dns.unwrap().cluster_ip.to_string(), "10.96.0.10");
    let o = objects_after_first_step(&s);
    assert!(o.namespaces.contains_key("kube-system"));
    assert!(o.pods.contains_key(&PodRef::new("kube-system", "kube-dns")));
    let svc = &o.services[&("kube-system".to_string(), "kube-dns".to_string())];
    assert_eq!(
        sim::services::cluster_ip(svc).unwrap().to_string(),
        "10.96.0.10"
    );
    // The scenario's own Service is allocated around it.
    let a = &o.services[&("default".to_string(), "a".to_string())];
    assert_ne!(
        sim::services::cluster_ip(a).unwrap().to_string(),
        "10.96.0.10"
    );
    // kube-dns comes first among the Services of the first step.
    let first_service = s.steps[0]
        .changes
        .iter()
        .find_map(|c| match c {
            Change::Apply(r) if r.kind == Kind::Service => Some(r.key.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(first_service, ("kube-system".into(), "kube-dns".into()));
}

#[test]
fn cluster_dns_address_may_be_chosen_and_is_checked() {
    let s = parse_ok(&format!("{BASE}  dns: {{clusterIP: 10.96.0.53}}\n"));
    assert_eq!(s.dns.unwrap().cluster_ip.to_string(), "10.96.0.53");
    let e = parse_err(&format!("{BASE}  dns: {{clusterIP: 192.168.0.1}}\n"));
    assert!(e.to_string().contains("outside the service CIDR"), "{e}");
    let e = parse_err(&format!("{BASE}  dns: {{address: 10.96.0.53}}\n"));
    assert!(e.to_string().contains("unknown field `address`"), "{e}");
    let e = parse_err(&format!("{BASE}  dns: yes please\n"));
    assert!(e.to_string().contains("dns: true"), "{e}");
    assert!(parse_ok(&format!("{BASE}  dns: false\n")).dns.is_none());
    assert!(parse_ok(BASE).dns.is_none());
}

#[test]
fn dns_targets_parse_and_need_cluster_dns() {
    assert_eq!(
        "dns/my-svc.my-ns:80".parse::<Peer>(),
        Ok(Peer::Dns {
            name: "my-svc.my-ns".into(),
            port: 80
        })
    );
    assert_eq!(
        Peer::Dns {
            name: "web".into(),
            port: 8080
        }
        .to_string(),
        "dns/web:8080"
    );
    assert!("dns/web".parse::<Peer>().is_err());
    assert!("dns/we b:80".parse::<Peer>().is_err());
    assert!("dns/web..x:80".parse::<Peer>().is_err());
    let pods = "manifests:\n  - {apiVersion: v1, kind: Pod, metadata: {name: c}, spec: {containers: [{name: c, image: x}]}}\n";
    let e = parse_err(&format!(
        "{BASE}{pods}probe:\n  from: [default/c]\n  to: [dns/web:80]\n"
    ));
    assert!(e.to_string().contains("needs the cluster DNS"), "{e}");
    parse_ok(&format!(
        "{BASE}  dns: true\n{pods}probe:\n  from: [default/c]\n  to: [dns/web:80]\n"
    ));
    let e = parse_err(&format!(
        "{BASE}  dns: true\n{pods}probe:\n  from: [dns/web:80]\n"
    ));
    assert!(e.to_string().contains("can only be probed"), "{e}");
    let e = parse_err(&format!(
        "{BASE}  dns: true\n{pods}probe:\n  from: [default/c, node/n1]\n  to: [dns/web:80]\n"
    ));
    assert!(
        e.to_string()
            .contains("only pods have the cluster's resolv.conf"),
        "{e}"
    );
    let e = parse_err(&format!(
        "{BASE}  dns: true\n{pods}probe:\n  to: [svc/kube-system/kube-dns:53]\n"
    ));
    assert!(e.to_string().contains("answers DNS questions"), "{e}");
}

#[test]
fn env_vars_are_those_of_the_services_when_the_pod_started() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/service-env-vars.yaml");
    let s = sim::scenario::load(&path).unwrap();
    let t = sim::scenario::env_timeline(&s);
    let names: Vec<&str> = t.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["initial", "create-service", "create-late-pod"]);
    let early = PodRef::new("app", "early");
    let late = PodRef::new("app", "late");
    assert!(t[0].1[&early].is_empty());
    assert!(t[1].1[&early].is_empty(), "the Service came after the pod");
    assert!(!t[1].1.contains_key(&late));
    let vars: Vec<String> = t[2].1[&late].iter().map(|v| v.to_string()).collect();
    assert!(
        vars.iter()
            .any(|v| v.starts_with("WEB_SERVICE_HOST=10.96.")),
        "{vars:?}"
    );
    assert!(
        vars.contains(&"WEB_SERVICE_PORT=80".to_string()),
        "{vars:?}"
    );
    assert!(
        vars.contains(&"WEB_SERVICE_PORT_METRICS=9090".to_string()),
        "{vars:?}"
    );
    assert!(t[2].1[&early].is_empty());
}

#[test]
fn the_dns_scenarios_load() {
    for name in ["dns", "deny-egress-allow-dns", "service-env-vars"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../scenarios/{name}.yaml"));
        let s = sim::scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(s.dns.is_some(), "{name}");
    }
}
