//! Rule precedence, the routing decisions and the rendered nginx configuration.

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use serde_json::{Value, json};

use super::*;
use crate::objects::Object;

fn pod(ns: &str, name: &str, ip: &str, app: &str) -> Object {
    let mut p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i",
                 "ports": [{"containerPort": 8080, "name": "http"}]}]},
    }))
    .unwrap();
    p.status = Some(k8s_openapi::api::core::v1::PodStatus {
        pod_ip: Some(ip.into()),
        ..Default::default()
    });
    Object::Pod(p)
}

fn svc(ns: &str, name: &str, app: &str) -> Object {
    let s: Service = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"app": app}, "ports": [{"port": 80, "targetPort": "http"}]},
    }))
    .unwrap();
    Object::Service(s)
}

fn ingress(ns: &str, name: &str, spec: Value) -> Object {
    let i: Ingress = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns}, "spec": spec,
    }))
    .unwrap();
    Object::Ingress(i)
}

fn path(p: &str, ty: &str, service: &str) -> Value {
    json!({"path": p, "pathType": ty, "backend": {"service": {"name": service, "port": {"number": 80}}}})
}

/// s1..s4 backed by one pod each, and `empty` with no pod.
fn cluster(ingresses: Vec<Object>) -> ClusterObjects {
    let mut o = ClusterObjects::new(vec!["n1".into()]);
    for (i, s) in ["s1", "s2", "s3", "s4"].iter().enumerate() {
        o.apply(pod(
            "default",
            &format!("{s}-pod"),
            &format!("10.244.1.{}", i + 2),
            s,
        ));
        o.apply(svc("default", s, s));
    }
    o.apply(svc("default", "empty", "nobody"));
    for i in ingresses {
        o.apply(i);
    }
    o
}

fn backend(r: &Route) -> String {
    match (&r.service, r.status) {
        (Some(s), 200) => s.name.clone(),
        _ => r.status.to_string(),
    }
}

#[test]
fn exact_beats_prefix_and_longest_prefix_wins() {
    let o = cluster(vec![ingress(
        "default",
        "web",
        json!({"rules": [{"host": "foo.bar.com", "http": {"paths": [
            path("/", "Prefix", "s1"),
            path("/foo", "Prefix", "s2"),
            path("/foo/bar", "Prefix", "s3"),
            path("/foo", "Exact", "s4"),
        ]}}]}),
    )]);
    let m = IngressModel::new(&o);
    let r = |p: &str| backend(&m.route(Scheme::Http, "foo.bar.com", p));
    assert_eq!(r("/foo"), "s4", "Exact /foo wins over Prefix /foo");
    assert_eq!(r("/foo/"), "s2");
    assert_eq!(r("/foo/x"), "s2");
    assert_eq!(r("/foo/bar"), "s3", "the longest prefix wins");
    assert_eq!(r("/foo/bar/baz"), "s3");
    assert_eq!(r("/foo/barbaz"), "s2", "prefixes match whole path elements");
    assert_eq!(r("/foobar"), "s1", "/foobar is not under /foo");
    assert_eq!(r("/"), "s1");
    assert_eq!(r("/foo?q=1"), "s4", "the query is not part of the path");
}

#[test]
fn host_match_before_default_and_wildcards() {
    let o = cluster(vec![
        ingress(
            "default",
            "a",
            json!({"rules": [
                {"host": "foo.bar.com", "http": {"paths": [path("/", "Prefix", "s1")]}},
                {"host": "*.bar.com", "http": {"paths": [path("/", "Prefix", "s2")]}},
            ]}),
        ),
        ingress(
            "default",
            "catch",
            json!({"defaultBackend": {"service": {"name": "s3", "port": {"number": 80}}}}),
        ),
    ]);
    let m = IngressModel::new(&o);
    assert_eq!(backend(&m.route(Scheme::Http, "foo.bar.com", "/x")), "s1");
    assert_eq!(backend(&m.route(Scheme::Http, "FOO.bar.com:80", "/")), "s1");
    assert_eq!(backend(&m.route(Scheme::Http, "baz.bar.com", "/")), "s2");
    // nginx's wildcard covers any depth (the Ingress API would say one label).
    assert_eq!(backend(&m.route(Scheme::Http, "a.b.bar.com", "/")), "s2");
    assert_eq!(backend(&m.route(Scheme::Http, "other.com", "/")), "s3");
    let r = m.route(Scheme::Http, "other.com", "/");
    assert!(r.why.contains("catch-all"), "{}", r.why);
}

#[test]
fn unmatched_paths_unavailable_services_and_tls_redirects() {
    let o = cluster(vec![ingress(
        "default",
        "a",
        json!({
        "tls": [{"hosts": ["secure.com"], "secretName": "secure-tls"}],
        "rules": [
            {"host": "foo.bar.com", "http": {"paths": [
                path("/foo", "Prefix", "s1"),
                path("/empty", "Prefix", "empty"),
                path("/missing", "ImplementationSpecific", "nope"),
            ]}},
            {"host": "secure.com", "http": {"paths": [path("/", "Prefix", "s2")]}},
        ]}),
    )]);
    let m = IngressModel::new(&o);
    let r = m.route(Scheme::Http, "foo.bar.com", "/bar");
    assert_eq!(r.status, 404, "{}", r.why);
    let r = m.route(Scheme::Http, "foo.bar.com", "/empty/x");
    assert_eq!(r.status, 503);
    assert!(r.why.contains("no ready endpoint"), "{}", r.why);
    let r = m.route(Scheme::Http, "foo.bar.com", "/missing/x");
    assert_eq!(r.status, 503);
    assert!(r.why.contains("does not exist"), "{}", r.why);
    assert_eq!(m.route(Scheme::Http, "secure.com", "/").status, 308);
    assert_eq!(backend(&m.route(Scheme::Https, "secure.com", "/")), "s2");
    assert_eq!(m.certificates.len(), 1);
    assert_eq!(m.certificates[0].pem, None, "the Secret is not given");
    assert!(m.notes.iter().any(|n| n.contains("self-signed")));
    let r = m.route(Scheme::Https, "foo.bar.com", "/foo");
    assert_eq!(r.upstreams.len(), 1);
    assert_eq!(
        r.upstreams[0].port, 8080,
        "the pod's target port, not the service port"
    );
}

#[test]
fn the_first_ingress_keeps_a_contested_path_and_classes_are_honoured() {
    let o = cluster(vec![
        ingress(
            "default",
            "b",
            json!({"rules": [{"host": "x.com", "http": {"paths": [path("/a", "Prefix", "s2")]}}]}),
        ),
        ingress(
            "default",
            "a",
            json!({"rules": [{"host": "x.com", "http": {"paths": [path("/a", "Prefix", "s1")]}}]}),
        ),
        ingress(
            "default",
            "other-class",
            json!({"ingressClassName": "traefik",
                   "rules": [{"host": "y.com", "http": {"paths": [path("/", "Prefix", "s1")]}}]}),
        ),
    ]);
    let m = IngressModel::new(&o);
    assert_eq!(backend(&m.route(Scheme::Http, "x.com", "/a")), "s1");
    assert_eq!(m.route(Scheme::Http, "y.com", "/").status, 404);
    assert!(
        m.notes.iter().any(|n| n.contains("traefik")),
        "{:?}",
        m.notes
    );
    assert!(
        m.notes.iter().any(|n| n.contains("defined it first")),
        "{:?}",
        m.notes
    );
}

#[test]
fn path_helpers() {
    assert!(path_matches(PathKind::Prefix, "/", "/anything"));
    assert!(path_matches(PathKind::Prefix, "/a/b", "/a/b/"));
    assert!(!path_matches(PathKind::Prefix, "/a/b", "/a/bc"));
    assert!(!path_matches(PathKind::Exact, "/a", "/a/"));
    assert_eq!(normalise_path(Some("/foo/")), "/foo");
    assert_eq!(normalise_path(None), "/");
    assert_eq!(path_kind("ImplementationSpecific"), PathKind::Prefix);
    assert!(wildcard_matches("*.a.com", "x.a.com"));
    assert!(!wildcard_matches("*.a.com", "a.com"));
    assert!(wildcard_matches("*.a.com", "y.x.a.com"));
    assert!(!wildcard_matches("*.a.com", "xa.com"));
    let (s, h, p) = check::parse_url("https://Foo.bar.com").unwrap();
    assert_eq!(
        (s, h.as_str(), p.as_str()),
        (Scheme::Https, "foo.bar.com", "/")
    );
    assert!(check::parse_url("http://foo:8080/").is_err());
    assert!(check::parse_url("ftp://foo/").is_err());
}

#[test]
fn rendered_configuration() {
    let o = cluster(vec![ingress(
        "default",
        "fanout",
        json!({
        "tls": [{"hosts": ["foo.bar.com"], "secretName": "foo-tls"}],
        "rules": [{"host": "foo.bar.com", "http": {"paths": [
            path("/foo", "Prefix", "s1"),
            path("/foo", "Exact", "s2"),
            path("/bar", "Prefix", "s2"),
            path("/empty", "Prefix", "empty"),
        ]}}]}),
    )]);
    let m = IngressModel::new(&o);
    let text = render::render(
        &m,
        &render::RenderOptions {
            dir: "/run/knetlab/PREFIX/ingress".into(),
            ips: false,
        },
    );
    // Exact /foo owns `location = /foo`; Prefix /foo keeps only `location /foo/`.
    assert_eq!(text.matches("location = /foo {").count(), 1);
    assert!(text.contains("server ${ip:default/s1-pod}:8080; # default/s1-pod"));
    let with_ips = render::render(
        &m,
        &render::RenderOptions {
            dir: "/d".into(),
            ips: true,
        },
    );
    assert!(with_ips.contains("server 10.244.1.2:8080;"));
    assert_eq!(
        text,
        render::render(
            &IngressModel::new(&o),
            &render::RenderOptions {
                dir: "/run/knetlab/PREFIX/ingress".into(),
                ips: false
            }
        ),
        "deterministic"
    );
    insta::assert_snapshot!(text);
}

fn scenario_file(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(format!("{name}.yaml"))
}

/// The ingress scenarios parse, get the controller's objects added, and the v1beta1 one
/// is converted with its note.
#[test]
fn ingress_scenarios_parse_with_the_controller_added() {
    for name in [
        "ingress-fanout",
        "ingress-virtual-hosts",
        "ingress-tls",
        "ingress-default-backend",
        "ingress-networkpolicy",
    ] {
        let s = crate::scenario::load(&scenario_file(name)).unwrap_or_else(|e| panic!("{e}"));
        assert!(!s.http.is_empty(), "{name}");
        let mut o = ClusterObjects::new(s.cluster.nodes.clone());
        for step in &s.steps {
            for c in &step.changes {
                c.apply_to(&mut o, &|_| Some("10.244.1.9".parse().unwrap()))
                    .unwrap();
            }
        }
        let pods: Vec<PodRef> = o.pods.keys().cloned().collect();
        for (i, p) in pods.iter().enumerate() {
            o.set_pod_ip(p, std::net::Ipv4Addr::new(10, 244, 1, 2 + i as u8));
        }
        assert!(o.pods.contains_key(&controller::pod_ref()), "{name}");
        let svc = &o.services[&(controller::NAMESPACE.into(), controller::SERVICE.into())];
        assert_eq!(
            crate::services::node_ports(svc),
            vec![controller::HTTP_NODE_PORT, controller::HTTPS_NODE_PORT]
        );
        if name == "ingress-virtual-hosts" {
            let m = IngressModel::new(&o);
            assert!(
                m.notes.iter().any(|n| n.contains("extensions/v1beta1")),
                "{:?}",
                m.notes
            );
            assert_eq!(backend(&m.route(Scheme::Http, "bar.foo.com", "/")), "s2");
        }
    }
}

#[test]
fn v1beta1_mistakes_are_placed_in_the_file() {
    let text = r#"name: t
summary: s
manifests:
  - apiVersion: extensions/v1beta1
    kind: Ingress
    metadata: {name: i}
    spec:
      rules:
        - host: a.com
          http:
            paths:
              - backend: {serviceName: s, servicePrt: 80}
"#;
    let e = crate::scenario::parse_str(std::path::Path::new("t.yaml"), text).unwrap_err();
    let shown = e.to_string();
    assert!(shown.contains("t.yaml:12:"), "{shown}");
    assert!(shown.contains("servicePort"), "{shown}");
    let text = text.replace("servicePrt", "servicePort").replace(
        "paths:\n              - backend",
        "paths:\n              - pathType: Fuzzy\n                backend",
    );
    let e = crate::scenario::parse_str(std::path::Path::new("t.yaml"), &text).unwrap_err();
    assert!(e.to_string().contains("pathType"), "{e}");
}
