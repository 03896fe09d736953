//! Hostile values in Ingress objects (issue 13): the parser rejects what the API server
//! and ingress-nginx reject, at the field, with its position in the file; and whatever
//! reaches the nginx.conf renderer anyway (objects built without the parser) is rendered
//! inertly: the configuration keeps exactly the expected `server` and `location` blocks.

mod common;

use common::{assert_error, parse_err, pos};
use k8s_openapi::api::networking::v1::Ingress;
use serde_json::json;
use sim::ingress::IngressModel;
use sim::ingress::render::{RenderOptions, render};
use sim::objects::{ClusterObjects, Object};

const HEAD: &str = "name: t\nsummary: a test\n";

/// The values every field is tried with.
fn hostile() -> Vec<String> {
    vec![
        "/x { return 200 pwned; } location /y".into(),
        "/foo;}".into(),
        "/a\nb".into(),
        "/a\r\nreturn 200 x;".into(),
        "/$host".into(),
        "/#x".into(),
        "/\"x\"".into(),
        "/'x".into(),
        "/a/../b".into(),
        "/a/..".into(),
        "/a\0b".into(),
        "/a\\b".into(),
        "/a b".into(),
        format!("/{}", "a".repeat(5000)),
    ]
}

/// A YAML double-quoted scalar (JSON's escapes are YAML's).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn ingress_doc(host: &str, path: &str, path_type: &str) -> String {
    format!(
        "{HEAD}manifests:\n  - apiVersion: networking.k8s.io/v1\n    kind: Ingress\n    metadata: {{name: i}}\n    spec:\n      rules:\n        - host: {host}\n          http:\n            paths:\n              - path: {path}\n                pathType: {path_type}\n                backend: {{service: {{name: web, port: {{number: 80}}}}}}\n"
    )
}

#[test]
fn hostile_paths_are_rejected_at_the_field() {
    for path_type in ["Exact", "Prefix", "ImplementationSpecific"] {
        for p in hostile() {
            let value = quoted(&p);
            let text = ingress_doc("foo.bar.com", &value, path_type);
            let e = parse_err(&text);
            assert_error(
                &e,
                pos(&text, &value, 0),
                "manifests[0].spec.rules[0].http.paths[0].path",
                "path",
            );
        }
    }
    // The two paths, as written there.
    let text = ingress_doc(
        "foo.bar.com",
        "'/x { return 200 pwned; } location /y'",
        "ImplementationSpecific",
    );
    let e = parse_err(&text);
    assert!(e.message.contains("the character ' '"), "{e}");
    let text = ingress_doc("foo.bar.com", "/foo;}", "Prefix");
    let e = parse_err(&text);
    assert!(e.message.contains("';'"), "{e}");
    // What stays legal.
    for ok in ["/", "/foo", "/foo/bar-baz_1.2", "/a..b"] {
        let text = ingress_doc("foo.bar.com", ok, "Prefix");
        sim::scenario::parse_str(std::path::Path::new("t.yaml"), &text)
            .unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}

#[test]
fn hostile_hosts_are_rejected_at_the_field() {
    let mut hosts: Vec<String> = vec![
        "foo.bar.com;}".into(),
        "foo.bar.com { return 200 x; }".into(),
        "a\nb".into(),
        "$host".into(),
        "#x".into(),
        "\"x\"".into(),
        "..".into(),
        "a\0b".into(),
        "10.0.0.1".into(),
        "foo.*.com".into(),
        format!("{}.com", "a".repeat(300)),
    ];
    hosts.push("x".repeat(300));
    for h in hosts {
        let value = quoted(&h);
        let text = ingress_doc(&value, "/", "Prefix");
        let e = parse_err(&text);
        assert_error(
            &e,
            pos(&text, &value, 0),
            "manifests[0].spec.rules[0].host",
            "host",
        );
    }
}

#[test]
fn hostile_names_secrets_and_annotations_are_rejected_at_the_field() {
    let ingress = |spec: &str, meta: &str| {
        format!(
            "{HEAD}manifests:\n  - apiVersion: networking.k8s.io/v1\n    kind: Ingress\n    metadata: {{name: i{meta}}}\n    spec:\n{spec}"
        )
    };
    let rule = |backend: &str| {
        format!(
            "      rules:\n        - host: foo.bar.com\n          http:\n            paths:\n              - path: /\n                pathType: Prefix\n                backend: {{service: {backend}}}\n"
        )
    };
    let cases = [
        (
            ingress(&rule("{name: \"web;}\", port: {number: 80}}"), ""),
            "\"web;}\"",
            "manifests[0].spec.rules[0].http.paths[0].backend.service.name",
            "Service name",
        ),
        (
            ingress(&rule("{name: web, port: {name: \"http;}\"}}"), ""),
            "\"http;}\"",
            "manifests[0].spec.rules[0].http.paths[0].backend.service.port.name",
            "port name",
        ),
        (
            ingress(
                &format!(
                    "{}      tls: [{{hosts: [foo.bar.com], secretName: \"../../etc/x\"}}]\n",
                    rule("{name: web, port: {number: 80}}")
                ),
                "",
            ),
            "\"../../etc/x\"",
            "manifests[0].spec.tls[0].secretName",
            "secretName",
        ),
        (
            ingress(
                &format!(
                    "{}      tls: [{{hosts: [\"foo.bar.com\\n}}\"], secretName: s}}]\n",
                    rule("{name: web, port: {number: 80}}")
                ),
                "",
            ),
            "\"foo.bar.com\\n}\"",
            "manifests[0].spec.tls[0].hosts[0]",
            "host",
        ),
        (
            ingress(
                &format!(
                    "      ingressClassName: \"nginx;\"\n{}",
                    rule("{name: web, port: {number: 80}}")
                ),
                "",
            ),
            "\"nginx;\"",
            "manifests[0].spec.ingressClassName",
            "ingressClassName",
        ),
        (
            ingress(
                &rule("{name: web, port: {number: 80}}"),
                ", annotations: {knetlab.io/converted-from: \"x\\n}\"}",
            ),
            "\"x\\n}\"",
            "manifests[0].metadata.annotations.knetlab.io/converted-from",
            "converted",
        ),
    ];
    for (text, at, path, part) in cases {
        let e = parse_err(&text);
        assert_error(&e, pos(&text, at, 0), path, part);
    }
}

#[test]
fn a_tls_secret_must_hold_pem() {
    let text = format!(
        "{HEAD}manifests:\n  - apiVersion: v1\n    kind: Secret\n    type: kubernetes.io/tls\n    metadata: {{name: s}}\n    stringData:\n      tls.crt: \"ssl_ciphers x;\\n\"\n      tls.key: \"-----BEGIN PRIVATE KEY-----\\nAA==\\n-----END PRIVATE KEY-----\\n\"\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "stringData", 0),
        "manifests[0].stringData",
        "tls.crt is not PEM",
    );
}

// ---------------------------------------------------------------------------------------
// The renderer, fed directly (no parser in front of it)

/// nginx's tokens: words, quoted strings (unescaped), `{`, `}` and `;`; comments dropped.
fn tokens(conf: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = conf.chars().peekable();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<String>| {
        if !word.is_empty() {
            out.push(std::mem::take(word));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '#' => {
                flush(&mut word, &mut out);
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '"' | '\'' => {
                flush(&mut word, &mut out);
                let mut s = String::from("\u{1}");
                while let Some(q) = chars.next() {
                    match q {
                        '\\' => match chars.next() {
                            Some('n') => s.push('\n'),
                            Some('r') => s.push('\r'),
                            Some('t') => s.push('\t'),
                            Some(x) => s.push(x),
                            None => panic!("unterminated escape"),
                        },
                        q2 if q2 == c => break,
                        q2 => s.push(q2),
                    }
                }
                out.push(s);
            }
            '{' | '}' | ';' => {
                flush(&mut word, &mut out);
                out.push(c.to_string());
            }
            c if c.is_whitespace() => flush(&mut word, &mut out),
            c => word.push(c),
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Each `server` block's `location` arguments (quoted ones marked), by the block's
/// `server_name`; panics unless braces balance and every statement ends.
fn locations(conf: &str) -> Vec<(String, Vec<Vec<String>>)> {
    let toks = tokens(conf);
    let mut depth = 0;
    let mut servers: Vec<(String, Vec<Vec<String>>)> = Vec::new();
    let mut stmt: Vec<String> = Vec::new();
    for t in toks {
        match t.as_str() {
            "{" => {
                if stmt.first().map(String::as_str) == Some("server") && depth == 1 {
                    servers.push((String::new(), vec![]));
                }
                if stmt.first().map(String::as_str) == Some("location") {
                    assert_eq!(depth, 2, "location outside a server: {stmt:?}");
                    servers.last_mut().unwrap().1.push(stmt[1..].to_vec());
                }
                depth += 1;
                stmt.clear();
            }
            "}" => {
                assert!(stmt.is_empty(), "unterminated statement {stmt:?}");
                depth -= 1;
                assert!(depth >= 0);
            }
            ";" => {
                if stmt.first().map(String::as_str) == Some("server_name") && depth == 2 {
                    servers.last_mut().unwrap().0 = stmt[1..].join(" ");
                }
                if stmt.first().map(String::as_str) == Some("return") {
                    assert!(
                        stmt[1] == "404" || stmt[1] == "503" || stmt[1] == "308",
                        "{stmt:?}"
                    );
                }
                stmt.clear();
            }
            _ => stmt.push(t),
        }
    }
    assert_eq!(depth, 0, "braces do not balance");
    servers
}

fn rendered(host: &str, path: &str, path_type: &str) -> String {
    let mut objects = ClusterObjects::new(vec!["n1".into()]);
    let ing: Ingress = serde_json::from_value(json!({
        "metadata": {"name": "i", "namespace": "default"},
        "spec": {"rules": [{"host": host, "http": {"paths": [{
            "path": path, "pathType": path_type,
            "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]},
    }))
    .unwrap();
    objects.apply(Object::Ingress(ing));
    render(
        &IngressModel::new(&objects),
        &RenderOptions {
            dir: "/run/knetlab/kltest00/ingress".into(),
            ips: true,
        },
    )
}

#[test]
fn hostile_values_render_inertly() {
    for path_type in ["Exact", "Prefix"] {
        for p in hostile() {
            let conf = rendered("foo.bar.com", &p, path_type);
            assert!(!conf.contains('\0'), "a NUL reached nginx.conf");
            let servers = locations(&conf);
            assert_eq!(servers.len(), 2, "{conf}");
            assert_eq!(servers[0].0, "_");
            assert_eq!(servers[0].1, vec![vec!["/".to_string()]], "{conf}");
            assert_eq!(servers[1].0, "foo.bar.com");
            let quoted = |s: &str| s.to_string();
            let trimmed = p.trim_end_matches('/');
            let mut expected = vec![vec!["=".to_string(), quoted(trimmed)]];
            if path_type == "Prefix" {
                expected.push(vec![quoted(&format!("{trimmed}/"))]);
            } else {
                expected[0][1] = quoted(&p);
            }
            expected.push(vec!["/".to_string()]);
            // Whether a value was quoted does not matter here, only that it is one argument.
            let got: Vec<Vec<String>> = servers[1]
                .1
                .iter()
                .map(|l| {
                    l.iter()
                        .map(|a| a.trim_start_matches('\u{1}').to_string())
                        .collect()
                })
                .collect();
            // NUL becomes U+FFFD; compare with that substitution.
            let expected: Vec<Vec<String>> = expected
                .into_iter()
                .map(|l| l.into_iter().map(|a| a.replace('\0', "\u{FFFD}")).collect())
                .collect();
            assert_eq!(got, expected, "{p:?}\n{conf}");
        }
    }
    // A hostile host is one quoted server_name.
    let conf = rendered("foo.bar.com; } server { listen 80", "/", "Prefix");
    let servers = locations(&conf);
    assert_eq!(servers.len(), 2, "{conf}");
    assert_eq!(servers[1].0, "\u{1}foo.bar.com; } server { listen 80");
}
