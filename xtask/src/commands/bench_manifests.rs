//! `cargo xtask bench --manifests`: what issue 12's performance targets ask of big inputs.
//! First, reading a 2 MB multi-document install manifest (CRDs with large schemas, RBAC,
//! ConfigMaps, Deployments and Services, as an operator's `install.yaml` is): parse,
//! classify, expand into pods and decode every object, without building anything
//! (target < 0.5 s). Then
//! `knetlab check` end to end on a 200-pod app (20 Deployments of 10 replicas, 20
//! Services, 50 NetworkPolicies) on 4 nodes, run as its own process so that its peak RSS
//! is its own (targets < 10 s and < 100 MB). Both go to BENCHMARKS.md.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use knetlab::commands::manifests::{ClusterOpts, header};
use sim::scenario::{LoadOptions, ManifestStream};

use super::bench::{median, write_benchmarks};

/// The install manifest's size to reach, and the big app's shape.
const INSTALL_BYTES: usize = 2 * 1024 * 1024;
const APPS: usize = 20;
const REPLICAS: usize = 10;
const POLICIES: usize = 50;
const APP_NODES: u16 = 4;

/// One CustomResourceDefinition whose schema has `fields` documented properties, each an
/// object with a few typed children: the bulk of a real install manifest.
fn crd(i: usize, fields: usize) -> String {
    let mut props = String::new();
    for f in 0..fields {
        let _ = write!(
            props,
            "                field{f}:\n\
             \x20                 description: Field {f} of kind Widget{i}. Changing it restarts the managed pods; see the operator's documentation for the allowed values and defaults.\n\
             \x20                 type: object\n\
             \x20                 properties:\n\
             \x20                   enabled: {{type: boolean}}\n\
             \x20                   replicas: {{type: integer, format: int32, minimum: 0}}\n\
             \x20                   image: {{type: string, pattern: '^[a-z0-9./:-]+$'}}\n\
             \x20                   labels: {{type: object, additionalProperties: {{type: string}}}}\n"
        );
    }
    format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
         metadata:\n  name: widget{i}s.example.com\n  annotations: {{controller-gen.kubebuilder.io/version: v0.16.1}}\n\
         spec:\n  group: example.com\n  names: {{kind: Widget{i}, listKind: Widget{i}List, plural: widget{i}s, singular: widget{i}}}\n\
         \x20 scope: Namespaced\n  versions:\n  - name: v1\n    served: true\n    storage: true\n\
         \x20   schema:\n      openAPIV3Schema:\n        type: object\n        properties:\n\
         \x20         spec:\n            type: object\n            properties:\n{props}---\n"
    )
}

/// The objects an operator installs beside its CRDs: namespace, RBAC, configuration, its
/// Deployments and Services.
fn operator_objects(i: usize) -> String {
    format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: op{i}, namespace: operators}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: op{i}}}\n\
         rules:\n- apiGroups: [example.com]\n  resources: ['*']\n  verbs: [get, list, watch, create, update, patch, delete]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: op{i}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: op{i}}}\n\
         subjects: [{{kind: ServiceAccount, name: op{i}, namespace: operators}}]\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: op{i}-config, namespace: operators}}\n\
         data: {{config.yaml: \"leaderElection: true\\nmetrics: :8080\\n\"}}\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: op{i}, namespace: operators, labels: {{app: op{i}}}}}\n\
         spec:\n  replicas: 1\n  selector: {{matchLabels: {{app: op{i}}}}}\n  template:\n    metadata: {{labels: {{app: op{i}}}}}\n\
         \x20   spec:\n      serviceAccountName: op{i}\n      containers:\n      - name: manager\n        image: example.com/op{i}:v1\n\
         \x20       ports: [{{name: metrics, containerPort: 8080}}, {{name: webhook, containerPort: 9443}}]\n\
         \x20       readinessProbe: {{httpGet: {{path: /readyz, port: 8081}}}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: op{i}-webhook, namespace: operators}}\n\
         spec:\n  selector: {{app: op{i}}}\n  ports: [{{port: 443, targetPort: webhook}}]\n---\n"
    )
}

/// A multi-document install manifest of at least [`INSTALL_BYTES`], and how many
/// documents it has.
fn install_manifest() -> (String, usize) {
    let mut out =
        String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: operators}\n---\n");
    let mut docs = 1;
    let mut i = 0;
    while out.len() < INSTALL_BYTES {
        out.push_str(&crd(i, 120));
        out.push_str(&operator_objects(i));
        docs += 7;
        i += 1;
    }
    (out, docs)
}

/// 20 Deployments of 10 replicas, each with a Service, and 50 NetworkPolicies: a
/// default deny, each app open to the one before it and to itself, and egress rules for
/// the first few apps.
fn big_app() -> String {
    let mut out = String::from(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: default-deny}\n\
         spec: {podSelector: {}, policyTypes: [Ingress]}\n---\n",
    );
    let mut policies = 1;
    for a in 0..APPS {
        let prev = (a + APPS - 1) % APPS;
        let _ = write!(
            out,
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: app{a}}}\n\
             spec:\n  replicas: {REPLICAS}\n  selector: {{matchLabels: {{app: app{a}}}}}\n  template:\n\
             \x20   metadata: {{labels: {{app: app{a}, tier: t{}}}}}\n\
             \x20   spec: {{containers: [{{name: main, image: app, ports: [{{name: http, containerPort: 8080}}]}}]}}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {{name: app{a}}}\n\
             spec: {{selector: {{app: app{a}}}, ports: [{{port: 80, targetPort: http}}]}}\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: app{a}-from-app{prev}}}\n\
             spec:\n  podSelector: {{matchLabels: {{app: app{a}}}}}\n  policyTypes: [Ingress]\n\
             \x20 ingress: [{{from: [{{podSelector: {{matchLabels: {{app: app{prev}}}}}}}], ports: [{{port: http}}]}}]\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: app{a}-same-app}}\n\
             spec:\n  podSelector: {{matchLabels: {{app: app{a}}}}}\n  policyTypes: [Ingress]\n\
             \x20 ingress: [{{from: [{{podSelector: {{matchLabels: {{app: app{a}}}}}}}]}}]\n---\n",
            a % 3
        );
        policies += 2;
    }
    let mut a = 0;
    while policies < POLICIES {
        let _ = write!(
            out,
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: app{a}-egress}}\n\
             spec:\n  podSelector: {{matchLabels: {{app: app{a}}}}}\n  policyTypes: [Egress]\n\
             \x20 egress: [{{to: [{{podSelector: {{matchExpressions: [{{key: tier, operator: In, values: [t0, t1]}}]}}}}]}}]\n---\n"
        );
        policies += 1;
        a += 1;
    }
    out
}

fn cluster(nodes: u16) -> ClusterOpts {
    ClusterOpts {
        nodes: Some(nodes),
        ..Default::default()
    }
}

/// Median milliseconds to read and expand the install manifest, and the pods it gave.
fn measure_parse(runs: usize) -> Result<(f64, usize, usize, usize), String> {
    let (text, docs) = install_manifest();
    let bytes = text.len();
    let stream = [ManifestStream {
        name: "install.yaml".into(),
        text,
    }];
    let head = header("bench-parse", "an install manifest", &cluster(3));
    let mut samples = Vec::new();
    let mut pods = 0;
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let s = sim::scenario::from_manifests(
            Path::new("bench-parse"),
            &head,
            &stream,
            &LoadOptions::default(),
        )
        .map_err(|e| e.to_string())?;
        // Decoding into objects too, as a run does before it builds anything.
        let objects = sim::scenario::objects_per_step(&s);
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
        pods = objects.last().map_or(0, |(_, o)| o.pods.len());
    }
    Ok((median(samples).unwrap_or(0.0), bytes, docs, pods))
}

/// One `check` of the big app in a child process: wall time, exit code, its peak RSS
/// (VmHWM read every 20 ms while it runs; VmHWM only grows, so the last reading is the
/// peak up to the last 20 ms), and its last `error:` line if it failed.
fn measure_big_app(dir: &Path) -> Result<(f64, Option<i32>, f64, Option<String>), String> {
    let exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
    let start = Instant::now();
    let mut child = Command::new(exe)
        .arg("check")
        .arg(dir)
        .args(["--nodes", &APP_NODES.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("start check: {e}"))?;
    let status_path = format!("/proc/{}/status", child.id());
    // Read on a thread so that a chatty child never blocks on a full pipe.
    let stderr = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut e, &mut text);
            text
        })
    });
    let mut peak_kb = 0u64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_path)
            && let Some(kb) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak_kb = peak_kb.max(kb);
        }
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("wait for check: {e}")),
        }
    };
    let wall = start.elapsed().as_secs_f64() * 1000.0;
    let error = stderr.and_then(|t| t.join().ok()).and_then(|text| {
        text.lines()
            .rev()
            .find_map(|l| l.strip_prefix("error: ").map(str::to_string))
    });
    Ok((wall, status.code(), peak_kb as f64 / 1024.0, error))
}

pub fn main(runs: usize, no_write: bool) -> u8 {
    let (parse_ms, bytes, docs, pods) = match measure_parse(runs) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: the install manifest: {e}");
            return 2;
        }
    };
    eprintln!(
        "parse: {:.1} MB, {docs} documents, {pods} pods: {parse_ms:.1} ms (median of {runs})",
        bytes as f64 / 1048576.0
    );
    if !knetlab::commands::prerequisites_ready() {
        return 2;
    }
    let dir = std::env::temp_dir().join(format!("knetlab-bench-app-{}", std::process::id()));
    let app = dir.join("app.yaml");
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&app, big_app())) {
        eprintln!("error: write {}: {e}", app.display());
        return 2;
    }
    let mut walls = Vec::new();
    let mut peaks = Vec::new();
    // What stopped a run: a `check` that fails is measured all the same (its time and
    // memory up to the failure), and the table says that it failed and why.
    let mut failures: Vec<String> = Vec::new();
    // Fewer runs: each takes seconds.
    for i in 0..runs.clamp(1, 3) {
        match measure_big_app(&dir) {
            Ok((ms, code, mb, error)) => {
                eprintln!(
                    "200-pod check run {}: {ms:.0} ms, peak RSS {mb:.1} MB, exit {code:?}",
                    i + 1
                );
                if code != Some(0) {
                    let why = error.unwrap_or_else(|| "no error line".into());
                    eprintln!("  it failed: {why}");
                    failures.push(format!("exit {code:?}: {why}"));
                }
                walls.push(ms);
                peaks.push(mb);
            }
            Err(e) => {
                eprintln!("error: {e}");
                let _ = std::fs::remove_dir_all(&dir);
                return 2;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "unknown".into());
    let wall = median(walls.clone()).unwrap_or(0.0);
    let peak = peaks.iter().copied().fold(0.0, f64::max);
    let table = format!(
        "Reading a {:.1} MB install manifest ({docs} documents: CustomResourceDefinitions with 120-field schemas, ServiceAccounts, RBAC, ConfigMaps, Deployments and Services) into a checked scenario with {pods} pods, nothing built: the median of {runs} runs. Then `knetlab check` end to end (parse, bring-up, every pod port and Service port from every pod, teardown) of {} pods ({APPS} Deployments of {REPLICAS}), {APPS} Services and {POLICIES} NetworkPolicies on {APP_NODES} nodes, as its own process: wall time (median of {}) and peak RSS (the largest VmHWM, sampled every 20 ms).\n\n\
         | what | figure | target |\n|---|---|---|\n\
         | parse 2 MB install manifest | {parse_ms:.1} ms | < 500 ms |\n\
         | check, 200 pods, 50 policies | {wall:.0} ms | < 10 000 ms |\n\
         | peak RSS of that check | {peak:.1} MB | < 100 MB |\n\n\
         {}Load average (1 min) when measured: {load}; a debug build.\n",
        bytes as f64 / 1048576.0,
        APPS * REPLICAS,
        walls.len(),
        match failures.first() {
            None => String::new(),
            Some(why) => format!(
                "**{} of {} runs of `check` failed**, so its figures are the time and memory up to the failure: {}\n\n",
                failures.len(),
                walls.len(),
                why.replace('\n', " ")
            ),
        }
    );
    print!("{table}");
    if !no_write {
        if let Err(e) = write_benchmarks("manifests", &table) {
            eprintln!("error: cannot write BENCHMARKS.md: {e}");
            return 2;
        }
        eprintln!("wrote BENCHMARKS.md");
    }
    0
}
