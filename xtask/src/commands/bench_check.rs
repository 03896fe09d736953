//! `cargo xtask bench --check`: `knetlab check` end to end (parsing the manifests,
//! bring-up, the whole matrix including every Service port, teardown) on an app of 12
//! services on 3 nodes, each a Service over two replicas written as Pods, plus a
//! NetworkPolicy per service; the median wall time of several runs goes to BENCHMARKS.md.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use knetlab::commands::manifests::{ClusterOpts, header};
use sim::scenario::ManifestStream;

/// Services in the app, replicas per service, nodes.
const SERVICES: usize = 12;
const REPLICAS: usize = 2;
const NODES: u16 = 3;

/// The app as one multi-document stream, as `helm template` would print it.
fn app() -> String {
    let mut out = String::new();
    for s in 1..=SERVICES {
        for r in 1..=REPLICAS {
            let _ = write!(
                out,
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: svc{s}-{r}, labels: {{app: svc{s}}}}}\n\
                 spec:\n  containers: [{{name: main, image: app, ports: [{{name: http, containerPort: 8080}}]}}]\n---\n"
            );
        }
        // Each service is reached from the previous one only (a chain of calls).
        let _ = write!(
            out,
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc{s}}}\n\
             spec:\n  selector: {{app: svc{s}}}\n  ports: [{{port: 80, targetPort: http}}]\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: svc{s}-from-svc{}}}\n\
             spec:\n  podSelector: {{matchLabels: {{app: svc{s}}}}}\n  policyTypes: [Ingress]\n\
             \x20 ingress: [{{from: [{{podSelector: {{matchLabels: {{app: svc{}}}}}}}]}}]\n---\n",
            s.max(2) - 1,
            s.max(2) - 1
        );
    }
    out
}

pub fn main(runs: usize, no_write: bool) -> u8 {
    let cluster = ClusterOpts {
        nodes: Some(NODES),
        ..Default::default()
    };
    let stream = [ManifestStream {
        name: "app.yaml".into(),
        text: app(),
    }];
    let mut samples = Vec::new();
    let mut cells = 0;
    for i in 0..runs.max(1) {
        let start = Instant::now();
        let scenario = match sim::scenario::from_manifests(
            Path::new("bench-check"),
            &header("bench-check", "knetlab check, end to end", &cluster),
            &stream,
            &sim::scenario::LoadOptions::default(),
        ) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        };
        let report = match knetlab::commands::check::run(&scenario, None, false) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: run {}: {e}", i + 1);
                return 2;
            }
        };
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        if !report.ok() {
            eprintln!(
                "error: run {}: a cell differs from the oracle: the figure would not mean anything",
                i + 1
            );
            return 2;
        }
        cells = report.steps.first().map_or(0, |s| s.cells.len());
        eprintln!(
            "run {}: {ms:.1} ms (bring-up {:.1} ms, probing {:.1} ms, teardown {:.1} ms)",
            i + 1,
            report.timings.bring_up_ms,
            report.timings.probe_ms,
            report.timings.teardown_ms
        );
        samples.push(ms);
        // Let the kernel finish freeing the namespaces before the next run.
        std::thread::sleep(Duration::from_millis(300));
    }
    let n = samples.len();
    // Other work on the machine shows in the figure: say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "unknown".into());
    let med = super::bench::median(samples).unwrap_or(0.0);
    let table = format!(
        "`knetlab check` of {SERVICES} Services over {} Pods ({REPLICAS} replicas each, standing in for Deployments) and {SERVICES} NetworkPolicies on {NODES} nodes: parse, bring-up, {cells} cells (every pod port and Service port from every pod), teardown.\n\n\
         | runs | end to end (median) | target |\n|---|---|---|\n| {n} | {med:.1} ms | < 1000 ms |\n\nLoad average (1 min) when measured: {load}; a debug build.\n",
        SERVICES * REPLICAS
    );
    print!("{table}");
    if !no_write {
        if let Err(e) = super::bench::write_benchmarks("check", &table) {
            eprintln!("error: cannot write BENCHMARKS.md: {e}");
            return 2;
        }
        eprintln!("wrote BENCHMARKS.md");
    }
    0
}
