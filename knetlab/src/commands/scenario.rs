//! `knetlab scenario NAME|PATH`: build the scenario's cluster, probe every step,
//! print the matrices (or one JSON document with `--json`), tear down. Teardown also
//! happens on error, on panic (the run's prefix is swept) and on Ctrl-C.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use harness::run::{RunOptions, RunReport};
use sim::protocol::PortProto;
use sim::scenario::{Peer, Scenario};

use crate::cli::program;
use crate::scenarios::Catalog;

#[derive(clap::Args)]
pub struct Args {
    /// A scenario name (see `list`) or a path to a scenario file.
    pub scenario: String,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// Print the service environment variables a kubelet gives pod NS/POD, after every
    /// step (the Services that existed when it started), and exit: nothing is built.
    #[arg(long, value_name = "NS/POD")]
    pub env: Option<String>,
    /// Leave the cluster up afterwards and print how to enter it.
    #[arg(long)]
    pub keep: bool,
    /// Per-probe deadline in milliseconds (default: the probe engine's measured figure,
    /// or the scenario's probe.timeoutMs).
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// CNI CHECK every pod after its ADD, whatever the scenario's `cluster.cni.check`
    /// says (off by default: it costs ~10 ms per pod).
    #[arg(long)]
    pub cni_check: bool,
    /// Explain one cell in every step, in words: `--explain x/a y/b:80/TCP`.
    #[arg(long, num_args = 2, value_names = ["FROM", "TO:PORT/PROTO"])]
    pub explain: Option<Vec<String>>,
    /// After every step, print the Services and their computed endpoints as kubectl shows
    /// them (`get services -o wide`, `get endpoints`) and the EndpointSlices with each
    /// endpoint's node and readiness.
    #[arg(long)]
    pub services: bool,
    /// Follow one probe through the kernel, hop by hop, in every step: each netfilter
    /// chain and rule it met with the verdict, the NAT applied, the device it left by
    /// (bridge, underlay, VXLAN tunnel), where it was dropped: `--trace x/a y/b:80/TCP`.
    #[arg(long, num_args = 2, value_names = ["FROM", "TO:PORT/PROTO"])]
    pub trace: Option<Vec<String>>,
    /// Capture every frame on the fabric (underlay) bridge into a pcap file for
    /// tcpdump/wireshark, and summarise the packets seen: `--capture fabric` writes
    /// `NAME-fabric.pcap` in the current directory, `--capture fabric=PATH` writes PATH.
    #[arg(long, value_name = "fabric[=PATH]")]
    pub capture: Option<String>,
    /// Probe every Service cell (`svc/`, `nodeport/`, `lb/`, `extip/`, `dns/`) N times and
    /// show how the answers spread over its backends and paths (pod, node and host cells
    /// are probed once); overrides the scenario's `probe.repeat`.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub repeat: Option<u16>,
    /// Write a self-contained HTML report to DIR/index.html: the topology as a picture,
    /// each step's matrix as a coloured grid whose cells explain themselves when clicked,
    /// the step's policies and services, each node's installed rules.
    #[arg(long, value_name = "DIR")]
    pub report: Option<std::path::PathBuf>,
    /// Print the topology (the cluster as built) as Graphviz instead of the matrices:
    /// `knetlab scenario NAME --dot | dot -Tsvg > topology.svg`.
    #[arg(long, conflicts_with_all = ["json", "explain"])]
    pub dot: bool,
    /// Also write the result as JUnit XML to FILE (a testsuite, a testcase per step, a
    /// failure per wrong cell), for CI.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<std::path::PathBuf>,
    /// Stop before each step after the first, show the matrix so far and what the step
    /// will change, and wait for Enter (for a room to predict the next matrix).
    #[arg(long)]
    pub pause: bool,
    /// Leave out kinds that change the network but that knetlab does not model
    /// (CiliumNetworkPolicy, Gateway API routes, ...) with a warning, instead of failing.
    #[arg(long)]
    pub ignore_unsupported: bool,
}

/// `fabric` or `fabric=PATH` into the pcap file's path.
fn parse_capture(arg: &str, scenario: &str) -> Result<std::path::PathBuf, String> {
    match arg.split_once('=') {
        None if arg == "fabric" => Ok(format!("{scenario}-fabric.pcap").into()),
        Some(("fabric", path)) if !path.is_empty() => Ok(path.into()),
        _ => Err(format!(
            "{arg:?}: only the fabric bridge can be captured: write `fabric` or `fabric=PATH`"
        )),
    }
}

/// `x/a` and `y/b:80/TCP` (or `y/b:TCP/80`) into a cell.
fn parse_cell(args: &[String]) -> Result<(Peer, Peer, PortProto), String> {
    let [from, to] = args else {
        return Err("--explain takes two values: FROM TO:PORT/PROTO".into());
    };
    let from: Peer = from.parse()?;
    let (to, port) = to
        .rsplit_once(':')
        .ok_or_else(|| format!("{to:?}: write the server as ns/pod:PORT/PROTO, e.g. y/b:80/TCP"))?;
    let port: PortProto = match port.split_once('/') {
        Some((a, b)) if a.chars().all(|c| c.is_ascii_digit()) => format!("{b}/{a}").parse()?,
        _ => port.parse()?,
    };
    // A Service-like target carries its port in its name (`svc/NS/NAME:80`): written
    // `svc/NS/NAME:80/TCP`, the port is both the name's and the cell's.
    let to: Peer = match to.parse() {
        Ok(p) => p,
        Err(e) => format!("{to}:{}", port.port)
            .parse()
            .map_err(|_: String| e)?,
    };
    Ok((from, to, port))
}

pub fn main(catalog: &Catalog, args: Args) -> u8 {
    let path = match catalog.resolve(&args.scenario) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let opts = sim::scenario::LoadOptions {
        ignore_unsupported: args.ignore_unsupported,
    };
    let mut scenario = match sim::scenario::load_with(&path, &opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    // Left-out kinds are said before anything runs, and again with the notes.
    for w in scenario.notes.iter().filter(|n| n.starts_with("WARNING")) {
        eprintln!("{w}");
    }
    if let Some(pod) = &args.env {
        return print_env(&scenario, pod);
    }
    if args.cni_check {
        scenario.cluster.cni.check = Some(true);
    }
    if !super::prerequisites_ready() {
        return 2;
    }
    let explain = match args.explain.as_deref().map(parse_cell).transpose() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: --explain: {e}");
            return 2;
        }
    };
    let trace = match args.trace.as_deref().map(parse_cell).transpose() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: --trace: {}", e.replace("--explain", "--trace"));
            return 2;
        }
    };
    let capture = match args
        .capture
        .as_deref()
        .map(|c| parse_capture(c, &scenario.name))
        .transpose()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: --capture: {e}");
            return 2;
        }
    };
    let opts = RunOptions {
        capture,
        explain,
        trace,
        repeat: args.repeat.map_or(0, usize::from),
        prefix: harness::run::new_prefix(),
        keep: args.keep,
        before_step: args.pause.then(crate::commands::report::pause_hook),
        // The installed plugins (`/usr/lib/cni`).
        cni_plugin_dir: None,
        // Quiet in CI and when nobody watches; --json output stays clean on stdout anyway.
        progress: !args.json
            && std::env::var_os("CI").is_none()
            && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        deadline: args
            .timeout_ms
            .or(scenario.probe.timeout_ms)
            .map(Duration::from_millis),
    };
    if !args.json {
        eprintln!(
            "{}: {} ({} node{}, run prefix {})",
            scenario.name,
            scenario.summary,
            scenario.cluster.nodes.len(),
            if scenario.cluster.nodes.len() == 1 {
                ""
            } else {
                "s"
            },
            opts.prefix
        );
    }
    let started = std::time::Instant::now();
    let (guarded, kept_dns) = run_guarded(&scenario, &opts);
    if let (Some(file), Guarded::Done(r)) = (&args.junit, &guarded) {
        let r: &anyhow::Result<RunReport> = r;
        let error = r.as_ref().err().map(|e| format!("{e:#}"));
        let suite = sim::report::junit::SuiteRun {
            name: &scenario.name,
            file: &path.display().to_string(),
            seconds: started.elapsed().as_secs_f64(),
            steps: r.as_ref().map(|rep| &rep.steps[..]).unwrap_or(&[]),
            error: error.as_deref(),
        };
        if let Err(e) = crate::commands::test::write_suites(file, &[suite]) {
            eprintln!("error: --junit: {e}");
        }
    }
    let code = match guarded {
        Guarded::Done(r) => match *r {
            Ok(report) => {
                if let Some(dir) = &args.report {
                    match crate::commands::report::write_html(dir, &scenario, &report) {
                        Ok(path) => eprintln!("report: {}", path.display()),
                        Err(e) => {
                            eprintln!("error: --report: {e:#}");
                            return 2;
                        }
                    }
                }
                if args.dot {
                    match crate::commands::report::dot(&scenario, &report) {
                        Ok(d) => print!("{d}"),
                        Err(e) => {
                            eprintln!("error: --dot: {e:#}");
                            return 2;
                        }
                    }
                } else if opts.explain.is_some() && !args.json {
                    print_explanations(&report);
                } else if args.json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&crate::commands::json::report(&report))
                            .unwrap_or_default()
                    );
                } else {
                    print_text(&scenario, &report, args.services);
                }
                for (i, t) in report.traces.iter().enumerate() {
                    // With --json the traces are in the document.
                    if !args.json {
                        println!("\n== trace, step {}: {} ==\n{}", i + 1, t.step, t.text);
                    }
                }
                if let Some(summary) = &report.capture_summary {
                    // With --json, stdout holds only the JSON document.
                    if args.json {
                        eprint!("{summary}");
                    } else {
                        print!("\n{summary}");
                    }
                }
                if report.ok() { 0 } else { 1 }
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                2
            }
        },
        Guarded::Interrupted => {
            eprintln!("interrupted: tearing down run {}", opts.prefix);
            print!("{}", harness::sweep::clean_prefix(&opts.prefix));
            130
        }
        Guarded::Panicked => {
            eprintln!("knetlab crashed: tearing down run {}", opts.prefix);
            print!("{}", harness::sweep::clean_prefix(&opts.prefix));
            2
        }
    };
    if let Some((rt, server)) = kept_dns {
        // With --keep the cluster DNS keeps answering, so that `ip netns exec POD
        // getent hosts NAME` works, for as long as this process waits.
        eprintln!(
            "\nThe cluster DNS in {} keeps answering until Ctrl-C (the cluster stays up; `{} clean` removes it and the pods' /etc/netns/*/resolv.conf).",
            server.netns_name,
            program()
        );
        rt.block_on(async {
            let _ = tokio::signal::ctrl_c().await;
            let _ = server.shutdown().await;
        });
        rt.shutdown_timeout(Duration::from_secs(2));
    }
    code
}

pub(crate) enum Guarded {
    Done(Box<anyhow::Result<RunReport>>),
    Interrupted,
    Panicked,
}

/// The runtime a `--keep` run's cluster DNS server lives on, with the server.
pub(crate) type KeptDns = Option<(tokio::runtime::Runtime, harness::dns::DnsServer)>;

/// Runs the scenario so that a panic or Ctrl-C still leads to teardown. With `--keep`
/// and a cluster DNS, also returns the runtime its server answers on, still running.
pub(crate) fn run_guarded(scenario: &Scenario, opts: &RunOptions) -> (Guarded, KeptDns) {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return (Guarded::Done(Box::new(Err(e.into()))), None),
    };
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        rt.block_on(async {
            tokio::select! {
                r = harness::run::run(scenario, opts) => Some(r),
                _ = tokio::signal::ctrl_c() => None,
            }
        })
    }));
    let kept = match (&result, opts.keep) {
        (Ok(Some(Ok(_))), true) => harness::dns::kept_server(),
        _ => None,
    };
    if let Some(server) = kept {
        return (
            Guarded::Done(Box::new(result.ok().flatten().unwrap_or_else(|| {
                Err(anyhow::anyhow!("the run ended without a report"))
            }))),
            Some((rt, server)),
        );
    }
    // Stop servers and in-flight work before any sweep.
    rt.shutdown_timeout(Duration::from_secs(2));
    let guarded = match result {
        Ok(Some(r)) => Guarded::Done(Box::new(r)),
        Ok(None) => Guarded::Interrupted,
        Err(_) => Guarded::Panicked,
    };
    (guarded, None)
}

fn print_explanations(report: &RunReport) {
    for (i, e) in report.explanations.iter().enumerate() {
        println!("== step {}: {} ==", i + 1, e.step);
        println!("{}", e.text);
        if let Some(c) = &e.cell {
            let m = &c.measured;
            let mut line = format!("measured: {}", m.outcome.as_str());
            if let Some(by) = &m.answered_by {
                line += &format!(" (answered by {by})");
            }
            if !m.detail.is_empty() {
                line += &format!(" ({})", m.detail);
            }
            line += &format!(" after {:.2} ms", m.elapsed_us as f64 / 1000.0);
            if let Some(problem) = c.mismatch() {
                line += &format!(" - MISMATCH: {problem}");
            }
            println!("{line}");
        }
        println!();
    }
}

fn print_text(scenario: &Scenario, report: &RunReport, show_services: bool) {
    for (i, step) in report.steps.iter().enumerate() {
        println!("== step {}: {} ==", i + 1, step.name);
        println!();
        print!("{}", sim::matrix::render_step(step));
        if let Some(t) = report.step_timings.get(i) {
            let enforce = match t.enforce_ms {
                Some(ms) => {
                    format!("every cell showed the predicted verdict {ms:.1} ms after the change")
                }
                None => "no probe round agreed with the oracle".to_string(),
            };
            println!(
                "time to enforce: {enforce} (apply {:.1} ms incl. rule sync {:.1} ms, {} probe round{} {:.1} ms)",
                t.apply_ms,
                t.sync_ms,
                t.rounds,
                if t.rounds == 1 { "" } else { "s" },
                t.probe_ms
            );
            if t.proxy_nodes_written > 0 {
                // What the proxy feeds the kernel its rules with.
                let tool = match scenario.cluster.proxy {
                    sim::scenario::ProxyKind::Nftables => "nft -f",
                    _ => "iptables-restore",
                };
                println!(
                    "service proxy: {:.1} ms, {} node{} written, {} bytes of {tool}",
                    t.proxy_sync_ms,
                    t.proxy_nodes_written,
                    if t.proxy_nodes_written == 1 { "" } else { "s" },
                    t.proxy_restore_bytes
                );
            }
        }
        for c in report.throughput.get(i).into_iter().flatten() {
            println!("throughput: {}", c.line());
        }
        if show_services
            && let Some(objects) = report.objects.get(i)
            && !objects.services.is_empty()
        {
            println!("services and endpoints:");
            for line in sim::services::render::render(objects).lines() {
                println!("  {line}");
            }
        }
        if let Some(d) = report.dns.iter().find(|d| d.step == step.name) {
            for (client, target, r) in &d.resolutions {
                println!("dns: {client} -> {target}: {}", r.summary());
            }
        }
        if let Some(s) = report.ingress.iter().find(|s| s.step == step.name) {
            println!(
                "ingress controller: nginx {} in {:.1} ms",
                s.controller, s.controller_ms
            );
            for c in &s.checks {
                println!("http: {} took {:.1} ms", c.url, c.ms);
            }
            print!("{}", harness::ingress::checks::render_step(s));
        }
        println!();
    }
    for n in report.cni.notes.iter().chain(&report.notes) {
        println!("note: {n}");
    }
    let t = &report.timings;
    println!(
        "timings: bring-up {:.1} ms, probing {:.1} ms, teardown {:.1} ms",
        t.bring_up_ms, t.probe_ms, t.teardown_ms
    );
    if report.cni.checked > 0 {
        println!(
            "CNI CHECK: {} attachments checked in {:.1} ms (part of bring-up and of each step that adds pods)",
            report.cni.checked, report.cni.check_ms
        );
    }
    for e in &report.teardown_errors {
        println!("teardown problem: {e}");
    }
    if let Some(kept) = &report.kept {
        println!("\nThe cluster is still up (--keep). Enter it with:");
        let mut rows: Vec<(String, String, String)> = Vec::new();
        for (node, ns) in &kept.nodes {
            rows.push((format!("node {node}"), ns.clone(), String::new()));
        }
        for (pod, ns, ip) in &kept.pods {
            rows.push((format!("pod {pod}"), ns.clone(), format!("    # {ip}")));
        }
        for (what, ns) in &kept.others {
            rows.push((what.clone(), ns.clone(), String::new()));
        }
        let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        for (what, ns, note) in rows {
            println!("  {what:w$}  sudo ip netns exec {ns} bash{note}");
        }
        println!(
            "Or: sudo {p} shell NODE|NS/POD, sudo {p} exec NS/POD -- CMD (add --prefix {} when several clusters are kept).\nThe probe servers stopped with this process. Remove the cluster with: sudo {p} down --prefix {}",
            report.prefix,
            report.prefix,
            p = program()
        );
    }
    let verdict = if report.ok() { "PASS" } else { "FAIL" };
    println!(
        "{verdict}: {} ({} steps)",
        scenario.name,
        report.steps.len()
    );
}

/// Runs a scenario with no `--keep`, tearing down on panic and Ctrl-C as [`main`] does,
/// for the commands that run scenarios as a means (`check`, `diff`, `test`): the report,
/// or the error in words (Ctrl-C says `interrupted`).
pub(crate) fn run_plain(scenario: &Scenario, opts: &RunOptions) -> Result<RunReport, String> {
    match run_guarded(scenario, opts).0 {
        Guarded::Done(r) => (*r).map_err(|e| format!("{e:#}")),
        Guarded::Interrupted => {
            eprint!("{}", harness::sweep::clean_prefix(&opts.prefix));
            Err(format!("interrupted: tore down run {}", opts.prefix))
        }
        Guarded::Panicked => {
            eprint!("{}", harness::sweep::clean_prefix(&opts.prefix));
            Err(format!("knetlab crashed: tore down run {}", opts.prefix))
        }
    }
}

/// `--env NS/POD`: the pod's service environment variables after every step, as
/// [`sim::scenario::env_timeline`] computes them from the scenario alone.
fn print_env(scenario: &Scenario, pod: &str) -> u8 {
    let pod = match pod.parse::<Peer>() {
        Ok(Peer::Pod(p)) => p,
        _ => {
            eprintln!("error: --env {pod:?}: write the pod as NAMESPACE/NAME, e.g. app/web-1");
            return 2;
        }
    };
    let timeline = sim::scenario::env_timeline(scenario);
    if !timeline.iter().any(|(_, pods)| pods.contains_key(&pod)) {
        eprintln!(
            "error: --env: pod {pod} does not exist at any step of {}",
            scenario.name
        );
        return 2;
    }
    for (i, (step, pods)) in timeline.iter().enumerate() {
        println!("== step {}: {step} ==", i + 1);
        match pods.get(&pod) {
            None => println!("(pod {pod} does not exist at this step)"),
            Some(vars) if vars.is_empty() => {
                println!(
                    "(no service variables: no Service with a cluster IP in namespace {} existed when {pod} started)",
                    pod.namespace
                )
            }
            Some(vars) => {
                for v in vars {
                    println!("{v}");
                }
            }
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(from: &str, to: &str) -> Result<(Peer, Peer, PortProto), String> {
        parse_cell(&[from.to_string(), to.to_string()])
    }

    #[test]
    fn cells_for_explain_and_trace() {
        let (from, to, port) = cell("x/a", "y/b:80/TCP").unwrap();
        assert_eq!(
            (from.to_string(), to.to_string()),
            ("x/a".into(), "y/b".into())
        );
        assert_eq!(port.to_string(), "TCP/80");
        assert_eq!(cell("x/a", "y/b:UDP/81").unwrap().2.to_string(), "UDP/81");
        // A Service's port is part of its name: written once, it serves both.
        let (_, to, port) = cell("x/a", "svc/default/nginx:80/TCP").unwrap();
        assert_eq!(to.to_string(), "svc/default/nginx:80");
        assert_eq!(port.to_string(), "TCP/80");
        assert!(cell("x/a", "y/b").is_err());
        assert!(cell("x/a", "svc/default/nginx:eighty/TCP").is_err());
    }
}
