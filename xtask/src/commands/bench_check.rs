//! `cargo xtask bench --check`: `knetlab check` end to end on a real app, Online Boutique
//! as published (`scenarios/apps/microservices-demo/`: 12 Deployments, 12 Services, 13
//! NetworkPolicies) on 3 nodes: parsing and expanding the manifests, bring-up, the whole
//! matrix including every Service port, teardown. Medians of several runs go to
//! BENCHMARKS.md, per phase, with the CPU time the run used (this process and the plugin
//! and iptables processes it waited for), which a busy machine inflates far less than
//! the wall time.

use std::path::Path;
use std::time::{Duration, Instant};

use knetlab::commands::manifests::{self, ClusterOpts, header};

/// The app, relative to the workspace root, and the nodes it runs on.
const APP: &str = "scenarios/apps/microservices-demo";
const NODES: u16 = 3;

/// One run's figures, in milliseconds.
struct Sample {
    total: f64,
    parse: f64,
    bring_up: f64,
    probing: f64,
    teardown: f64,
    /// CPU time of this process, and of the processes it ran.
    cpu_self: f64,
    cpu_children: f64,
}

/// CPU time used so far, in ms: by this process, and by the children it has waited for
/// (the CNI plugins, iptables-restore, ...), from /proc/self/stat (utime, stime, cutime,
/// cstime: fields 14 to 17, in USER_HZ ticks, which Linux fixes at 100 per second).
fn cpu_ms() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces: count fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field n is fields[n - 3].
    let ticks: Vec<u64> = fields
        .get(11..15)?
        .iter()
        .map(|f| f.parse::<u64>().ok())
        .collect::<Option<Vec<u64>>>()?;
    let ms = |a: u64, b: u64| (a + b) as f64 * 10.0;
    Some((ms(ticks[0], ticks[1]), ms(ticks[2], ticks[3])))
}

fn one_run(app: &Path, cluster: &ClusterOpts) -> Result<(Sample, usize), String> {
    let cpu_before = cpu_ms().unwrap_or_default();
    let start = Instant::now();
    let inputs = manifests::inputs(&[app.display().to_string()])?;
    let streams = manifests::read(&inputs)?;
    let scenario = sim::scenario::from_manifests(
        Path::new("bench-check"),
        &header("bench-check", "knetlab check, end to end", cluster),
        &streams,
        &sim::scenario::LoadOptions::default(),
    )
    .map_err(|e| e.to_string())?;
    let parse = start.elapsed().as_secs_f64() * 1000.0;
    let report = knetlab::commands::check::run(&scenario, None, false)?;
    let total = start.elapsed().as_secs_f64() * 1000.0;
    if !report.ok() {
        let wrong: Vec<String> = report
            .steps
            .iter()
            .flat_map(|s| s.mismatches())
            .map(|(c, problem)| format!("{} -> {} {}: {problem}", c.from, c.to, c.port))
            .collect();
        return Err(format!(
            "a cell differs from the oracle, so the figure would not mean anything: {}",
            wrong.join("; ")
        ));
    }
    let cpu_after = cpu_ms().unwrap_or_default();
    let t = &report.timings;
    let sample = Sample {
        total,
        parse,
        bring_up: t.bring_up_ms,
        probing: t.probe_ms,
        teardown: t.teardown_ms,
        cpu_self: cpu_after.0 - cpu_before.0,
        cpu_children: cpu_after.1 - cpu_before.1,
    };
    let cells = report.steps.first().map_or(0, |s| s.cells.len());
    Ok((sample, cells))
}

pub fn main(runs: usize, no_write: bool) -> u8 {
    let cluster = ClusterOpts {
        nodes: Some(NODES),
        ..Default::default()
    };
    let app = crate::workspace_root().join(APP);
    let mut samples = Vec::new();
    let mut cells = 0;
    for i in 0..runs.max(1) {
        let (s, n) = match one_run(&app, &cluster) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: run {}: {e}", i + 1);
                return 2;
            }
        };
        cells = n;
        eprintln!(
            "run {}: {:.1} ms (parse {:.1} ms, bring-up {:.1} ms, probing {:.1} ms, teardown {:.1} ms; CPU {:.0} ms here, {:.0} ms in the processes run)",
            i + 1,
            s.total,
            s.parse,
            s.bring_up,
            s.probing,
            s.teardown,
            s.cpu_self,
            s.cpu_children
        );
        samples.push(s);
        // Let the kernel finish freeing the namespaces before the next run.
        std::thread::sleep(Duration::from_millis(300));
    }
    let n = samples.len();
    let med = |f: fn(&Sample) -> f64| {
        super::bench::median(samples.iter().map(f).collect()).unwrap_or(0.0)
    };
    let (total, parse) = (med(|s| s.total), med(|s| s.parse));
    let (bring_up, probing, teardown) =
        (med(|s| s.bring_up), med(|s| s.probing), med(|s| s.teardown));
    // What the phases above leave out: the prerequisite check, reading back what was
    // built (the `@built` description every run makes), and assembling the report.
    let other = med(|s| s.total - s.parse - s.bring_up - s.probing - s.teardown);
    let (cpu_self, cpu_children) = (med(|s| s.cpu_self), med(|s| s.cpu_children));
    // Other work on the machine shows in the figure: say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "unknown".into());
    let table = format!(
        "`knetlab check {APP}/ --nodes {NODES}`: Online Boutique as published (12 Deployments, 12 Services, 13 NetworkPolicies, 11 ServiceAccounts), {cells} cells (every pod port and Service port from every pod), parse to teardown.\n\n\
         | runs | end to end (median) | parse | bring-up | probing | teardown | the rest | CPU: knetlab | CPU: processes run | target |\n\
         |---|---|---|---|---|---|---|---|---|---|\n\
         | {n} | {total:.1} ms | {parse:.1} ms | {bring_up:.1} ms | {probing:.1} ms | {teardown:.1} ms | {other:.1} ms | {cpu_self:.0} ms | {cpu_children:.0} ms | < 1000 ms |\n\n\
         Each column is a median of its own. The rest: checking the prerequisites, reading back what was built, the report. CPU: knetlab's own threads, and the CNI plugin, iptables and other processes it ran and waited for. Load average (1 min) when measured: {load}; a debug build.\n"
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
