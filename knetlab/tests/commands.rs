//! `check`, `diff`, `test` and `--save-scenario` through the real `knetlab` binary: a
//! multi-document stream on stdin, a baseline that passes and then fails once a policy
//! is added, a diff whose changed cells are written here by hand, JUnit from `test`.
//! The bad-input cases run as any user (they stop before anything is built); the rest
//! need root and are `#[ignore]`d: run them with `-- --include-ignored` as root.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_knetlab");

/// Two web pods behind a Service and a client, on two nodes.
const APP: &str = "\
apiVersion: v1
kind: Pod
metadata: {name: web-1, labels: {app: web}}
spec:
  nodeName: n1
  containers: [{name: nginx, image: nginx, ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, labels: {app: web}}
spec:
  nodeName: n2
  containers: [{name: nginx, image: nginx, ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {app: client}}
spec:
  containers: [{name: curl, image: curlimages/curl}]
---
# A comment between documents, as helm template prints them.
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
";

/// Only pods labelled app=client may reach the web pods, and only on 8080.
const ONLY_CLIENT: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-client}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress:
    - from: [{podSelector: {matchLabels: {app: client}}}]
      ports: [{port: 8080}]
";

/// Nobody may reach the web pods.
const DENY_WEB: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-web}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
";

fn knetlab(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env("CI", "1")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run knetlab");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().expect("knetlab finishes")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A fresh directory under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "knetlab-cmd-{tag}-{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    fn path(&self, rel: &str) -> String {
        self.0.join(rel).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
            .unwrap_or(false)
    })
}

/// Root tests return early (saying so) when not root, so that a plain
/// `--include-ignored` run does not fail for want of privileges.
fn root_or_skip(test: &str) -> bool {
    if !is_root() {
        eprintln!("skipped {test}: needs root");
    }
    is_root()
}

#[test]
fn stdin_that_is_not_yaml_and_an_empty_directory_are_errors_before_anything_is_built() {
    let o = knetlab(&["check", "-"], Some("kind: [unclosed\n  - : :\n"));
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    assert!(err.contains("<stdin>:"), "the error names stdin: {err}");
    assert!(out.is_empty(), "nothing on stdout: {out}");

    let o = knetlab(&["check", "-"], Some(""));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).1.contains("nothing came on stdin"),
        "{}",
        text(&o).1
    );

    let dir = TempDir::new("empty");
    dir.write("README.md", "not a manifest");
    let o = knetlab(&["check", &dir.path("")], None);
    let err = text(&o).1;
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("holds no *.yaml, *.yml or *.json file"),
        "{err}"
    );

    // A mistake inside a manifest is reported at its file, line and column.
    let f = dir.write(
        "bad.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  containerz: []\n",
    );
    let o = knetlab(&["check", &f.display().to_string()], None);
    let err = text(&o).1;
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.yaml:5:3"), "{err}");
}

#[test]
#[ignore = "needs root: builds clusters"]
fn a_multi_document_stream_on_stdin_is_checked_with_services_and_policy_reasons() {
    if !root_or_skip("check -") {
        return;
    }
    let stream = format!("{APP}---\n{ONLY_CLIENT}");
    let o = knetlab(&["check", "-", "--nodes", "2"], Some(&stream));
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    // The summary: nodes, the pods per owner and node.
    assert!(out.contains("nodes: 2 (n1, n2)"), "{out}");
    assert!(out.contains("pods: 3"), "{out}");
    // The 8080 table's columns are the pods serving it; the Service has its own port.
    let t8080 = out.split("TCP/8080\n").nth(1).expect("a TCP/8080 table");
    let header = t8080.lines().next().unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        vec!["default/web-1", "default/web-2"],
        "{out}"
    );
    let row = |table: &str, client: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| l.starts_with(client))
            .unwrap_or_else(|| panic!("no row {client} in {table}"))
            .split_whitespace()
            .skip(1)
            .map(String::from)
            .collect()
    };
    assert_eq!(row(t8080, "default/client"), vec![".", "."]);
    // A pod to itself (loopback, shown, not asserted), then to the other web pod.
    assert_eq!(row(t8080, "default/web-1"), vec![".", "X"]);
    let t80 = out.split("TCP/80\n").nth(1).expect("a TCP/80 table");
    assert!(
        t80.lines().next().unwrap().contains("svc/default/web:80"),
        "{out}"
    );
    assert_eq!(row(t80, "default/client"), vec!["."]);
    // The reasons name the policy.
    let denied = out
        .split("denied by policy:")
        .nth(1)
        .expect("a reasons section");
    assert!(
        denied.contains("default/web-1 -> default/web-2 TCP/8080")
            && denied.contains("default/web-from-client"),
        "{out}"
    );
}

/// A hostNetwork DaemonSet (a node exporter) next to the app.
const EXPORTER: &str = "\
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: node-exporter, namespace: kube-system}
spec:
  selector: {matchLabels: {app: node-exporter}}
  template:
    metadata: {labels: {app: node-exporter}}
    spec:
      hostNetwork: true
      containers: [{name: e, image: prom/node-exporter, ports: [{name: metrics, containerPort: 9100}]}]
";

#[test]
#[ignore = "needs root: builds clusters"]
fn host_network_pods_are_checked_on_their_nodes_addresses_and_labelled() {
    if !root_or_skip("check (hostNetwork)") {
        return;
    }
    let stream = format!("{APP}---\n{DENY_WEB}---\n{EXPORTER}");
    let o = knetlab(&["check", "-", "--nodes", "2", "--json"], Some(&stream));
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    let mut exporters: Vec<(String, String, bool)> = v["pods"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["namespace"] == "kube-system")
        .map(|p| {
            (
                p["node"].as_str().unwrap().to_string(),
                p["ip"].as_str().unwrap().to_string(),
                p["hostNetwork"].as_bool().unwrap(),
            )
        })
        .collect();
    exporters.sort();
    assert_eq!(
        exporters,
        [
            ("n1".to_string(), "192.168.200.11".to_string(), true),
            ("n2".to_string(), "192.168.200.12".to_string(), true)
        ]
    );
    // Their declared port is probed from every pod, and answered (no policy selects them).
    let cells = v["run"]["steps"][0]["cells"].as_array().expect("cells");
    let to_exporter: Vec<&serde_json::Value> = cells
        .iter()
        .filter(|c| c["port"] == 9100 && c["to"].as_str().unwrap().starts_with("kube-system/"))
        .collect();
    assert_eq!(to_exporter.len(), 5 * 2, "{out}");
    assert!(
        to_exporter.iter().all(|c| c["measured"] == "allowed"),
        "{out}"
    );
    // As clients they are their node: deny-web does not stop the web pod of their own
    // node, and does stop the other one.
    let from_exporter: Vec<(&str, &str)> = cells
        .iter()
        .filter(|c| c["port"] == 8080 && c["from"].as_str().unwrap().starts_with("kube-system/"))
        .map(|c| (c["to"].as_str().unwrap(), c["measured"].as_str().unwrap()))
        .collect();
    assert_eq!(from_exporter.len(), 4, "{out}");
    assert_eq!(
        from_exporter
            .iter()
            .filter(|(_, m)| *m == "allowed")
            .count(),
        2,
        "{from_exporter:?}"
    );
    // The text tables label them with their node.
    let o = knetlab(&["check", "-", "--nodes", "2"], Some(&stream));
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(
        out.contains("(host n1)") && out.contains("(host n2)"),
        "{out}"
    );
}

/// The changed cells of a `diff --json` as `(from, to, port, change)`.
fn changed(json: &str) -> Vec<(String, String, u64, String)> {
    let v: serde_json::Value = serde_json::from_str(json).expect("one JSON document");
    let mut out: Vec<(String, String, u64, String)> = v["changed"]
        .as_array()
        .expect("a changed list")
        .iter()
        .map(|c| {
            (
                c["from"].as_str().unwrap().to_string(),
                c["to"].as_str().unwrap().to_string(),
                c["port"].as_u64().unwrap(),
                c["change"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
#[ignore = "needs root: builds clusters"]
fn a_saved_baseline_passes_then_fails_once_connectivity_changes_and_diff_names_the_cells() {
    if !root_or_skip("baseline and diff") {
        return;
    }
    let dir = TempDir::new("baseline");
    dir.write("old/app.yaml", APP);
    dir.write("new/app.yaml", APP);
    dir.write("new/policy.yaml", DENY_WEB);
    let baseline = dir.path("ci/baseline.yaml");
    std::fs::create_dir_all(dir.0.join("ci")).unwrap();
    let o = knetlab(
        &[
            "check",
            &dir.path("old"),
            "--nodes",
            "2",
            "--save-scenario",
            &baseline,
        ],
        None,
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    let saved = std::fs::read_to_string(&baseline).unwrap();
    // Paths relative to the baseline's directory (a directory as a directory), the
    // cluster options kept.
    assert!(saved.contains("- \"../old\"\n"), "{saved}");
    assert!(saved.contains("cluster: {nodes: 2}"), "{saved}");
    assert!(saved.contains("probe: {services: true}"), "{saved}");

    let o = knetlab(&["scenario", &baseline], None);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", text(&o).0, text(&o).1);

    // `test` with JUnit over the baseline's directory: one suite, no failure.
    let junit = dir.path("junit.xml");
    let o = knetlab(&["test", &dir.path("ci"), "--junit", &junit], None);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(out.starts_with("PASS "), "{out}");
    assert!(
        out.contains("1 scenario: 1 passed, 0 failed, 0 could not run"),
        "{out}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<testsuite ").count(), 1, "{xml}");
    assert!(xml.contains("failures=\"0\""), "{xml}");

    // The diff, by hand: deny-web closes every way into web-1 and web-2 (from the
    // client, from each other, through the Service), and opens nothing. A web pod
    // reaching the Service still gets itself (hairpin: its own egress is open, and
    // either side allowing suffices), so that cell becomes split rather than closed.
    let o = knetlab(
        &[
            "diff",
            &dir.path("old"),
            &dir.path("new"),
            "--nodes",
            "2",
            "--json",
            "--fail-on-change",
        ],
        None,
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "--fail-on-change: {out}\n{err}");
    let want: Vec<(String, String, u64, String)> = [
        ("default/client", "default/web-1", 8080),
        ("default/client", "default/web-2", 8080),
        ("default/client", "svc/default/web:80", 80),
        ("default/web-1", "default/web-2", 8080),
        ("default/web-1", "svc/default/web:80", 80),
        ("default/web-2", "default/web-1", 8080),
        ("default/web-2", "svc/default/web:80", 80),
    ]
    .iter()
    .map(|(f, t, p)| {
        let change = if f.contains("web") && t.starts_with("svc/") {
            "changes"
        } else {
            "closes"
        };
        (f.to_string(), t.to_string(), *p, change.to_string())
    })
    .collect();
    assert_eq!(changed(&out), want, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for c in v["changed"].as_array().unwrap() {
        assert_eq!(
            c["behind"],
            serde_json::json!(["NetworkPolicy default/deny-web (added)"]),
            "{c}"
        );
        if !c["to"].as_str().unwrap().starts_with("svc/") {
            // A Service cell's reason names its backends; the pod cells name the policy.
            assert!(
                c["new"]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("default/deny-web"),
                "{c}"
            );
        }
    }

    // The same change made to the baseline's manifests, as a new file in its directory:
    // the baseline reads the directory as it is now, so it fails.
    dir.write("old/policy.yaml", DENY_WEB);
    let o = knetlab(&["scenario", &baseline], None);
    assert_eq!(o.status.code(), Some(1), "{}\n{}", text(&o).0, text(&o).1);
}
