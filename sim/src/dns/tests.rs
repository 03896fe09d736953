use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Pod, Service};
use serde_json::json;

use super::env::{EnvVar, pod_vars, service_vars};
use super::resolv::ResolvConf;
use super::*;
use crate::objects::{ClusterObjects, Object, PodRef};

fn pod(ns: &str, name: &str, labels: serde_json::Value, extra: serde_json::Value) -> Object {
    let mut spec = json!({"containers": [{"name": "c", "image": "x",
        "ports": [{"name": "http", "containerPort": 8080}]}]});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": spec,
    }))
    .unwrap();
    Object::Pod(p)
}

fn service(ns: &str, name: &str, cluster_ip: &str, ports: serde_json::Value) -> Object {
    let s: Service = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"clusterIP": cluster_ip, "selector": {"app": name}, "ports": ports},
    }))
    .unwrap();
    Object::Service(s)
}

/// `web` (ClusterIP, ports http 80/TCP and an unnamed 81/UDP) and `db` (headless) in
/// namespace `app`, two `db` pods (one with hostname+subdomain), one `web` pod.
fn cluster() -> ClusterObjects {
    let mut o = ClusterObjects::new(vec!["n1".into()]);
    o.apply(pod("app", "web-1", json!({"app": "web"}), json!({})));
    o.apply(pod(
        "app",
        "db-0",
        json!({"app": "db"}),
        json!({"hostname": "db-0", "subdomain": "db"}),
    ));
    o.apply(pod("app", "db-1", json!({"app": "db"}), json!({})));
    o.set_pod_ip(&PodRef::new("app", "web-1"), Ipv4Addr::new(10, 244, 1, 2));
    o.set_pod_ip(&PodRef::new("app", "db-0"), Ipv4Addr::new(10, 244, 1, 3));
    o.set_pod_ip(&PodRef::new("app", "db-1"), Ipv4Addr::new(10, 244, 1, 4));
    o.apply(service(
        "app",
        "web",
        "10.96.0.20",
        json!([{"name": "http", "port": 80, "targetPort": 8080},
               {"port": 81, "protocol": "UDP"}]),
    ));
    o.apply(service(
        "app",
        "db",
        "None",
        json!([{"name": "http", "port": 80, "targetPort": "http"}]),
    ));
    o
}

fn a(ip: [u8; 4]) -> RData {
    RData::A(Ipv4Addr::from(ip))
}

#[test]
fn cluster_ip_service_has_an_a_record() {
    let z = zone(&cluster(), CLUSTER_DOMAIN);
    assert_eq!(
        z.lookup("web.app.svc.cluster.local", "A"),
        Lookup::Records(vec![a([10, 96, 0, 20])])
    );
    // Case and the trailing dot do not matter.
    assert_eq!(
        z.lookup("WEB.app.svc.cluster.local.", "A"),
        Lookup::Records(vec![a([10, 96, 0, 20])])
    );
}

#[test]
fn named_ports_have_srv_records_unnamed_ones_none() {
    let z = zone(&cluster(), CLUSTER_DOMAIN);
    assert_eq!(
        z.lookup("_http._tcp.web.app.svc.cluster.local", "SRV"),
        Lookup::Records(vec![RData::Srv {
            priority: 0,
            weight: 100,
            port: 80,
            target: "web.app.svc.cluster.local.".into()
        }])
    );
    assert!(!z.dump().contains("_udp.web"), "{}", z.dump());
}

#[test]
fn headless_service_answers_ready_pods_and_their_names() {
    let mut o = cluster();
    // Not ready: out of DNS.
    let mut p = o.pods[&PodRef::new("app", "db-1")].clone();
    p.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(services::endpoints::READY_ANNOTATION.into(), "false".into());
    o.apply(Object::Pod(p));
    let z = zone(&o, CLUSTER_DOMAIN);
    assert_eq!(
        z.lookup("db.app.svc.cluster.local", "A"),
        Lookup::Records(vec![a([10, 244, 1, 3])])
    );
    // hostname + subdomain naming the headless service.
    assert_eq!(
        z.lookup("db-0.db.app.svc.cluster.local", "A"),
        Lookup::Records(vec![a([10, 244, 1, 3])])
    );
    // SRV per ready endpoint with the endpoint's port, pointing at its name.
    assert_eq!(
        z.lookup("_http._tcp.db.app.svc.cluster.local", "SRV"),
        Lookup::Records(vec![RData::Srv {
            priority: 0,
            weight: 100,
            port: 8080,
            target: "db-0.db.app.svc.cluster.local.".into()
        }])
    );
    // Both ready: two addresses, the other named by its dashed IP, weights split.
    let z = zone(&cluster(), CLUSTER_DOMAIN);
    assert_eq!(
        z.lookup("db.app.svc.cluster.local", "A"),
        Lookup::Records(vec![a([10, 244, 1, 3]), a([10, 244, 1, 4])])
    );
    assert_eq!(
        z.lookup("10-244-1-4.db.app.svc.cluster.local", "A"),
        Lookup::Records(vec![a([10, 244, 1, 4])])
    );
    match z.lookup("_http._tcp.db.app.svc.cluster.local", "SRV") {
        Lookup::Records(r) => {
            assert_eq!(r.len(), 2);
            assert!(r.iter().all(|x| matches!(x, RData::Srv { weight: 50, .. })));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn headless_service_without_ready_pods_is_nxdomain() {
    let mut o = cluster();
    o.delete(crate::objects::Kind::Pod, "app", "db-0");
    o.delete(crate::objects::Kind::Pod, "app", "db-1");
    let z = zone(&o, CLUSTER_DOMAIN);
    assert_eq!(z.lookup("db.app.svc.cluster.local", "A"), Lookup::NxDomain);
}

#[test]
fn hostname_without_a_matching_headless_service_is_nxdomain() {
    let mut o = cluster();
    o.delete(crate::objects::Kind::Service, "app", "db");
    let z = zone(&o, CLUSTER_DOMAIN);
    assert_eq!(
        z.lookup("db-0.db.app.svc.cluster.local", "A"),
        Lookup::NxDomain
    );
}

#[test]
fn pod_records_exist_only_for_pods_in_that_namespace() {
    let z = zone(&cluster(), CLUSTER_DOMAIN);
    assert_eq!(
        z.lookup("10-244-1-2.app.pod.cluster.local", "A"),
        Lookup::Records(vec![a([10, 244, 1, 2])])
    );
    assert_eq!(
        z.lookup("10-244-1-2.other.pod.cluster.local", "A"),
        Lookup::NxDomain
    );
    assert_eq!(
        z.lookup("10-244-9-9.app.pod.cluster.local", "A"),
        Lookup::NxDomain
    );
}

#[test]
fn other_names_nodata_nxdomain_and_not_ours() {
    let z = zone(&cluster(), CLUSTER_DOMAIN);
    assert_eq!(
        z.lookup("nope.app.svc.cluster.local", "A"),
        Lookup::NxDomain
    );
    assert_eq!(z.lookup("web.app.svc.cluster.local", "TXT"), Lookup::NoData);
    assert_eq!(z.lookup("app.svc.cluster.local", "A"), Lookup::NoData);
    assert_eq!(z.lookup("example.com", "A"), Lookup::NotOurs);
    assert_eq!(z.lookup("notcluster.local", "A"), Lookup::NotOurs);
    assert_eq!(
        z.lookup("dns-version.cluster.local", "TXT"),
        Lookup::Records(vec![RData::Txt("1.1.0".into())])
    );
}

#[test]
fn dump_is_sorted_and_stable() {
    let z = zone(&cluster(), CLUSTER_DOMAIN);
    let d = z.dump();
    assert_eq!(d, zone(&cluster(), CLUSTER_DOMAIN).dump());
    let names: Vec<&str> = d.lines().map(|l| l.split(' ').next().unwrap()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert!(
        d.contains("web.app.svc.cluster.local. 5 IN A 10.96.0.20\n"),
        "{d}"
    );
}

#[test]
fn resolv_conf_is_what_a_kubelet_writes() {
    let r = ResolvConf::for_pod("app", DEFAULT_CLUSTER_IP, CLUSTER_DOMAIN);
    assert_eq!(
        r.render(),
        "search app.svc.cluster.local svc.cluster.local cluster.local\n\
         nameserver 10.96.0.10\noptions ndots:5\n"
    );
}

#[test]
fn search_list_order_follows_ndots() {
    let r = ResolvConf::for_pod("app", DEFAULT_CLUSTER_IP, CLUSTER_DOMAIN);
    assert_eq!(
        r.candidates("web"),
        vec![
            "web.app.svc.cluster.local.",
            "web.svc.cluster.local.",
            "web.cluster.local.",
            "web."
        ]
    );
    // Five dots: as is first.
    assert_eq!(
        r.candidates("a.b.c.d.e.f")[0],
        "a.b.c.d.e.f.",
        "{:?}",
        r.candidates("a.b.c.d.e.f")
    );
    assert_eq!(
        r.candidates("web.app.svc.cluster.local."),
        vec!["web.app.svc.cluster.local."]
    );
    // `web.app` from another namespace finds the service through `svc.cluster.local`.
    let other = ResolvConf::for_pod("other", DEFAULT_CLUSTER_IP, CLUSTER_DOMAIN);
    let z = zone(&cluster(), CLUSTER_DOMAIN);
    let first_hit = other
        .candidates("web.app")
        .into_iter()
        .find(|c| matches!(z.lookup(c, "A"), Lookup::Records(_)));
    assert_eq!(first_hit.as_deref(), Some("web.app.svc.cluster.local."));
}

fn names(vars: &[EnvVar]) -> Vec<String> {
    vars.iter().map(ToString::to_string).collect()
}

#[test]
fn service_env_vars_match_the_kubelets() {
    let s: Service = serde_json::from_value(json!({
        "metadata": {"name": "nginx-service", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.50", "ports": [{"name": "http", "port": 80}]},
    }))
    .unwrap();
    assert_eq!(
        names(&service_vars(&s)),
        vec![
            "NGINX_SERVICE_SERVICE_HOST=10.96.0.50",
            "NGINX_SERVICE_SERVICE_PORT=80",
            "NGINX_SERVICE_SERVICE_PORT_HTTP=80",
            "NGINX_SERVICE_PORT=tcp://10.96.0.50:80",
            "NGINX_SERVICE_PORT_80_TCP=tcp://10.96.0.50:80",
            "NGINX_SERVICE_PORT_80_TCP_PROTO=tcp",
            "NGINX_SERVICE_PORT_80_TCP_PORT=80",
            "NGINX_SERVICE_PORT_80_TCP_ADDR=10.96.0.50",
        ]
    );
}

#[test]
fn env_vars_cover_every_port_and_skip_headless_and_other_namespaces() {
    let mut o = cluster();
    let vars = names(&pod_vars(&o, "app"));
    assert!(
        vars.contains(&"WEB_SERVICE_PORT=80".to_string()),
        "{vars:?}"
    );
    assert!(vars.contains(&"WEB_PORT=tcp://10.96.0.20:80".to_string()));
    assert!(vars.contains(&"WEB_PORT_81_UDP=udp://10.96.0.20:81".to_string()));
    assert!(vars.contains(&"WEB_PORT_81_UDP_PROTO=udp".to_string()));
    assert!(!vars.iter().any(|v| v.starts_with("DB_")), "{vars:?}");
    assert!(pod_vars(&o, "other").is_empty());
    // default/kubernetes reaches every namespace.
    o.apply(service(
        "default",
        "kubernetes",
        "10.96.0.1",
        json!([{"name": "https", "port": 443, "targetPort": 6443}]),
    ));
    let other = names(&pod_vars(&o, "other"));
    assert_eq!(other[0], "KUBERNETES_SERVICE_HOST=10.96.0.1");
    assert!(other.contains(&"KUBERNETES_SERVICE_PORT_HTTPS=443".to_string()));
}

#[test]
fn the_oracle_resolves_through_the_search_list_then_judges_the_target() {
    use crate::cluster::{ClusterDns, PolicyEngineKind};
    use crate::matrix::Verdict;
    use crate::oracle::OracleContext;
    use crate::oracle::dns::{Resolved, predict_dns};
    use crate::peers::Peer;
    use crate::protocol::{PortProto, Protocol};
    let mut o = cluster();
    o.apply(pod("other", "c", json!({"app": "c"}), json!({})));
    o.set_pod_ip(&PodRef::new("other", "c"), Ipv4Addr::new(10, 244, 1, 9));
    // The cluster DNS itself, so that the query has somewhere to go.
    o.apply(pod(
        "kube-system",
        "kube-dns",
        json!({"k8s-app": "kube-dns"}),
        json!({}),
    ));
    o.set_pod_ip(
        &PodRef::new("kube-system", "kube-dns"),
        Ipv4Addr::new(10, 244, 1, 10),
    );
    let dns_svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "kube-dns", "namespace": "kube-system"},
        "spec": {"clusterIP": "10.96.0.10", "selector": {"k8s-app": "kube-dns"},
                 "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]},
    }))
    .unwrap();
    o.apply(Object::Service(dns_svc));
    let nodes = Default::default();
    let ctx = OracleContext::new(&o, PolicyEngineKind::Iptables, &nodes);
    let dns = ClusterDns {
        cluster_ip: DEFAULT_CLUSTER_IP,
    };
    let from = Peer::Pod(PodRef::new("other", "c"));
    let tcp80 = PortProto::new(Protocol::Tcp, 80);
    let p = predict_dns(&ctx, &dns, &from, "web", tcp80);
    assert_eq!(p.verdict, Some(Verdict::Deny), "{p}");
    assert!(matches!(p.resolved, Resolved::NotFound { .. }), "{p}");
    let p = predict_dns(&ctx, &dns, &from, "web.app", tcp80);
    assert_eq!(p.verdict, Some(Verdict::Allow), "{p}");
    match &p.resolved {
        Resolved::Found { fqdn, target, .. } => {
            assert_eq!(fqdn, "web.app.svc.cluster.local.");
            assert_eq!(
                target.as_ref().map(ToString::to_string).as_deref(),
                Some("svc/app/web:80")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.answer_from(), vec!["app/web-1".to_string()]);
}
