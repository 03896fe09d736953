//! `cargo xtask soak`: runs scenarios many times, some at once, kills some of them with
//! SIGKILL at a seeded random moment and sweeps with `clean`, and after every run and
//! every clean compares the host with what it was before the soak
//! ([`harness::host::HostState`]) and looks for what the finished run left
//! ([`harness::host::leftovers`]). The first difference stops the soak and is printed.
//! Every run is a child process of this executable (`scenario NAME`) in a process group
//! of its own, so anything still in that group after the run (and its clean) is a leak.
//!
//! A kill's phase is read by watching the run: the number of its namespaces at the
//! moment of the kill, against what this run had before and what unkilled runs of the
//! same scenario reached ("start": none yet; "build": fewer than a whole cluster;
//! "probe/steps": all of them; "teardown": fewer than this run had).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use harness::host::HostState;
use harness::host::leftovers::{self, Leftover};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Policies, Services in every proxy mode, VXLAN, DNS, Ingress, steps and node failure.
const DEFAULT_MIX: [&str; 11] = [
    "test-network-policy",
    "default-deny",
    "proxy-modes-iptables",
    "proxy-modes-ipvs",
    "proxy-modes-nftables",
    "proxy-modes-userspace",
    "overlay-vxlan",
    "dns",
    "ingress-tls",
    "label-change",
    "node-failure",
];
/// How long a scenario is taken to last before an unkilled run of it was measured (most
/// take well under two seconds on a laptop).
const UNMEASURED: Duration = Duration::from_secs(1);
/// How often a run is watched (its exit, its namespaces).
const POLL: Duration = Duration::from_millis(20);
/// The report `--write` appends to, at the workspace root.
const RELIABILITY_FILE: &str = "RELIABILITY.md";

#[derive(clap::Args)]
pub struct Args {
    /// How many scenario runs in all.
    #[arg(long, default_value_t = 40)]
    runs: usize,
    /// How many runs go at once.
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// Kill some runs with SIGKILL at a random moment, then run `clean`.
    #[arg(long)]
    kill: bool,
    /// With --kill: the share of runs killed, in percent.
    #[arg(long, default_value_t = 33, value_parser = clap::value_parser!(u8).range(0..=100))]
    kill_percent: u8,
    /// Seed of the choice of runs to kill and their moments (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Scenarios to cycle through, comma-separated (default: a mix of every feature).
    /// (`--scenarios DIR`, the global option, says where their files are.)
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    mix: Vec<String>,
    /// Append the report to RELIABILITY.md with the machine and the date.
    #[arg(long)]
    write: bool,
}

/// One planned run: which scenario, and when to kill it (as a share of its duration).
struct Planned {
    scenario: String,
    kill_at: Option<f64>,
}

/// What the soak saw, shared by the workers.
#[derive(Default)]
struct Tally {
    completed: usize,
    failed: Vec<String>,
    kills: BTreeMap<&'static str, usize>,
    /// Runs planned to be killed that ended before their moment came.
    outran: usize,
    /// Per scenario: duration and peak namespace count of its last unkilled run.
    measured: HashMap<String, (Duration, usize)>,
    leak: Option<String>,
}

pub fn main(args: Args) -> u8 {
    if !harness::netns::have_privileges() {
        eprintln!("error: soak builds network namespaces and needs root: run it with sudo");
        return 2;
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot find this executable: {e}");
            return 2;
        }
    };
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let mix: Vec<String> = if args.mix.is_empty() {
        DEFAULT_MIX.iter().map(|s| s.to_string()).collect()
    } else {
        args.mix.clone()
    };
    let mut rng = SplitMix(seed);
    let plan: Vec<Planned> = (0..args.runs)
        .map(|i| {
            let killed = args.kill && rng.below(100) < u64::from(args.kill_percent);
            let at = rng.unit();
            Planned {
                scenario: mix[i % mix.len()].clone(),
                kill_at: killed.then_some(at),
            }
        })
        .collect();
    let before = HostState::capture();
    let started = Instant::now();
    let next = Mutex::new(plan.into_iter().enumerate());
    let tally = Mutex::new(Tally::default());
    let stop = AtomicBool::new(false);
    let worker = Worker {
        exe: &exe,
        before: &before,
        tally: &tally,
        stop: &stop,
        cleaning: &Mutex::new(()),
        total: args.runs,
    };
    std::thread::scope(|s| {
        for _ in 0..args.concurrency.max(1) {
            s.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    let Some((i, run)) = next.lock().unwrap_or_else(|e| e.into_inner()).next()
                    else {
                        break;
                    };
                    worker.run(i, &run);
                }
            });
        }
    });
    let tally = tally.into_inner().unwrap_or_else(|e| e.into_inner());
    let report = report(&args, seed, &mix, &tally, started.elapsed());
    print!("{report}");
    if args.write
        && let Err(e) = write_reliability(&report)
    {
        eprintln!("error: --write: {e:#}");
        return 2;
    }
    if tally.leak.is_some() { 1 } else { 0 }
}

struct Worker<'a> {
    exe: &'a std::path::Path,
    before: &'a HostState,
    tally: &'a Mutex<Tally>,
    stop: &'a AtomicBool,
    cleaning: &'a Mutex<()>,
    total: usize,
}

impl Worker<'_> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self, i: usize, run: &Planned) {
        let name = &run.scenario;
        let mut child = match Command::new(self.exe)
            .args(["scenario", name])
            .env("CI", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => return self.leak(format!("run {i}: cannot start `scenario {name}`: {e}")),
        };
        let group = child.id();
        let (prefix_tx, prefix_rx) = mpsc::channel();
        let stderr = child.stderr.take().map(|e| read_stderr(e, prefix_tx));
        let wrong = child.stdout.take().map(read_wrong_cells);
        let measured = self.lock().measured.get(name).copied();
        let kill_at = run.kill_at.map(|f| {
            let d = measured.map_or(UNMEASURED, |(d, _)| d);
            d.mul_f64(f)
        });
        let outcome = watch(&mut child, &prefix_rx, kill_at, measured.map(|(_, n)| n));
        let text = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
        let prefix = prefix_of_stderr(&text);
        let label = format!(
            "run {}/{} {name} ({})",
            i + 1,
            self.total,
            prefix.as_deref().unwrap_or("no prefix yet")
        );
        match outcome {
            Outcome::Exited { code, took, peak } => {
                let mut t = self.lock();
                t.completed += 1;
                t.outran += usize::from(run.kill_at.is_some());
                if code == Some(0) || code == Some(1) {
                    t.measured.insert(name.clone(), (took, peak));
                }
                if code != Some(0) {
                    let last = text.lines().last().unwrap_or("").to_string();
                    let cells = wrong.and_then(|h| h.join().ok()).unwrap_or_default();
                    t.failed
                        .push(format!("{label}: exit {code:?}: {last}{cells}"));
                }
                drop(t);
                eprintln!("{label}: exit {code:?} after {:.1} s", took.as_secs_f64());
                self.check(&label, prefix.as_deref(), group, "after the run");
            }
            Outcome::Killed { phase, at } => {
                *self.lock().kills.entry(phase).or_default() += 1;
                eprintln!("{label}: killed at {:.2} s ({phase})", at.as_secs_f64());
                // One clean at a time: a clean that finds another one sweeping a run
                // leaves that run to it and returns first, and the check would see the
                // run half gone.
                let _one = self.cleaning.lock().unwrap_or_else(|e| e.into_inner());
                let clean = Command::new(self.exe)
                    .arg("clean")
                    .env("CI", "true")
                    .stdin(Stdio::null())
                    .output();
                let said = match clean {
                    Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).to_string(),
                    Ok(o) => {
                        return self.leak(format!(
                            "{label}: clean failed ({}): {}{}",
                            o.status,
                            String::from_utf8_lossy(&o.stdout),
                            String::from_utf8_lossy(&o.stderr)
                        ));
                    }
                    Err(e) => return self.leak(format!("{label}: cannot run clean: {e}")),
                };
                let when = format!("after the kill and clean, which said:\n{said}");
                self.check(&label, prefix.as_deref(), group, &when);
            }
            Outcome::Lost(e) => self.leak(format!("{label}: {e}")),
        }
    }

    /// Compares the host with the soak's start and looks for what the run left.
    fn check(&self, label: &str, prefix: Option<&str>, group: u32, when: &str) {
        let left: Vec<Leftover> = match prefix {
            Some(p) => leftovers::of_run(p, Some(group)),
            None => leftovers::in_group(group),
        };
        let mut found = String::new();
        for l in &left {
            let _ = writeln!(found, "  left: {l}");
        }
        if let Some(diff) = self.before.diff(&HostState::capture()) {
            let _ = write!(found, "{diff}");
        }
        if !found.is_empty() {
            self.leak(format!("{label}, {when}:\n{found}"));
        }
    }

    fn leak(&self, what: String) {
        eprintln!("LEAK: {what}");
        self.stop.store(true, Ordering::SeqCst);
        let mut t = self.lock();
        if t.leak.is_none() {
            t.leak = Some(what);
        }
    }
}

enum Outcome {
    Exited {
        code: Option<i32>,
        took: Duration,
        peak: usize,
    },
    Killed {
        phase: &'static str,
        at: Duration,
    },
    Lost(String),
}

/// Waits for the run to end, or kills it at `kill_at` and names the phase it was in.
fn watch(
    child: &mut Child,
    prefix_rx: &mpsc::Receiver<String>,
    kill_at: Option<Duration>,
    whole: Option<usize>,
) -> Outcome {
    let start = Instant::now();
    let mut prefix: Option<String> = None;
    let mut peak = 0;
    loop {
        if prefix.is_none() {
            prefix = prefix_rx.try_recv().ok();
        }
        let count = prefix.as_deref().map_or(0, namespaces_of);
        peak = peak.max(count);
        match child.try_wait() {
            Ok(Some(status)) => {
                return Outcome::Exited {
                    code: status.code(),
                    took: start.elapsed(),
                    peak,
                };
            }
            Ok(None) => {}
            Err(e) => return Outcome::Lost(format!("cannot wait for the run: {e}")),
        }
        if let Some(at) = kill_at
            && start.elapsed() >= at
        {
            let phase = match (count, whole) {
                (0, _) if peak == 0 => "start",
                (c, _) if c < peak => "teardown",
                (c, Some(n)) if c < n => "build",
                (_, Some(_)) => "probe/steps",
                (_, None) => "build/probe (not measured yet)",
            };
            let at = start.elapsed();
            if let Err(e) = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL) {
                return Outcome::Lost(format!("cannot kill the run: {e}"));
            }
            let _ = child.wait();
            return Outcome::Killed { phase, at };
        }
        std::thread::sleep(POLL);
    }
}

fn namespaces_of(prefix: &str) -> usize {
    harness::netns::list_run(prefix).map_or(0, |v| v.len())
}

/// Reads a run's stderr to the end, sending its prefix as soon as it is announced.
fn read_stderr(
    stderr: impl Read + Send + 'static,
    prefix_tx: mpsc::Sender<String>,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(p) = prefix_of_stderr(&line) {
                let _ = prefix_tx.send(p);
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    })
}

/// The first wrong cells a run printed on stdout ("  x/a -> y/b TCP/80: expected allow,
/// measured dropped ..."), each on a line of its own, so that a failed run says why.
fn read_wrong_cells(stdout: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    const KEPT: usize = 5;
    std::thread::spawn(move || {
        let mut kept = String::new();
        let mut n = 0;
        // Read to the end, so the run never blocks on a full pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(": expected ") && line.contains("measured") {
                n += 1;
                if n <= KEPT {
                    kept.push_str("\n    ");
                    kept.push_str(line.trim());
                }
            }
        }
        if n > KEPT {
            kept.push_str(&format!("\n    ... and {} more", n - KEPT));
        }
        kept
    })
}

/// The prefix in `scenario`'s first line: "NAME: summary (N nodes, run prefix klXXXXXX)".
fn prefix_of_stderr(text: &str) -> Option<String> {
    let rest = text.split("run prefix ").nth(1)?;
    let p: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    sim::plan::is_prefix(&p).then_some(p)
}

fn report(args: &Args, seed: u64, mix: &[String], t: &Tally, wall: Duration) -> String {
    let killed: usize = t.kills.values().sum();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "runs: {} of {} (completed {}, killed {}, failed {})",
        t.completed + killed,
        args.runs,
        t.completed,
        killed,
        t.failed.len()
    );
    let phases: Vec<String> = t.kills.iter().map(|(p, n)| format!("{p} {n}")).collect();
    let _ = writeln!(
        s,
        "kills by phase (the run's namespaces watched at the kill): {}; \
         {} more planned kills came after the run had ended",
        if phases.is_empty() {
            "none".to_string()
        } else {
            phases.join(", ")
        },
        t.outran
    );
    let _ = writeln!(
        s,
        "concurrency: {}; kill share: {}%; seed: {seed}",
        args.concurrency,
        if args.kill { args.kill_percent } else { 0 }
    );
    let _ = writeln!(s, "scenarios: {}", mix.join(", "));
    match &t.leak {
        None => {
            let _ = writeln!(s, "leaks: none");
        }
        Some(l) => {
            let _ = writeln!(s, "leaks: 1 (the soak stopped there)\n{l}");
        }
    }
    for f in &t.failed {
        let _ = writeln!(s, "failed: {f}");
    }
    let _ = writeln!(s, "wall time: {:.0} s", wall.as_secs_f64());
    s
}

/// Adds `report` to RELIABILITY.md with the machine, the date and the command, after
/// the soaks already there (whose headings are dates) and before the other sections.
fn write_reliability(report: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    let path = crate::workspace_root().join(RELIABILITY_FILE);
    let sh = |c: &str, a: &[&str]| {
        Command::new(c)
            .args(a)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let command: Vec<String> = std::env::args().skip(1).collect();
    let mut text = String::new();
    if !path.exists() {
        text += "# Reliability\n\nSoaks of `cargo xtask soak` (see its `--help`): many scenario runs, \
                 some killed with SIGKILL and swept with `clean`, the host compared with its \
                 state before the soak after every run and every clean.\n";
    }
    let _ = write!(
        text,
        "\n## {} on {} ({cores} cores, Linux {})\n\n`cargo xtask {}`\n\n```\n{report}```\n",
        sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        sh("hostname", &[]),
        sh("uname", &["-r"]),
        command.join(" ")
    );
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, insert_soak(&old, &text))
        .with_context(|| format!("write {}", path.display()))
}

/// `old` with the soak section `text` put before the first `## ` heading that is not a
/// soak's (a soak's heading starts with its date), or at the end.
fn insert_soak(old: &str, text: &str) -> String {
    let other = old.match_indices("\n## ").find(|(at, _)| {
        !old[at + 4..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    });
    match other {
        Some((at, _)) => format!("{}{text}{}", &old[..at], &old[at..]),
        None => format!("{old}{text}"),
    }
}

/// A small seeded generator (SplitMix64): the same seed gives the same soak plan.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A number in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_is_read_from_the_first_line() {
        let line = "dns: cluster DNS (2 nodes, run prefix kl1a2b3c)\n";
        assert_eq!(prefix_of_stderr(line).as_deref(), Some("kl1a2b3c"));
        assert_eq!(prefix_of_stderr("error: no such scenario"), None);
    }

    #[test]
    fn the_same_seed_gives_the_same_moments() {
        let (mut a, mut b) = (SplitMix(7), SplitMix(7));
        for _ in 0..5 {
            let x = a.unit();
            assert_eq!(x, b.unit());
            assert!((0.0..1.0).contains(&x));
        }
    }

    #[test]
    fn a_soak_goes_after_the_soaks_and_before_other_sections() {
        let old = "# R\n\n## 2026-01-01 soak\n\nx\n\n## Fuzzing\n\ny\n";
        let new = insert_soak(old, "\n## 2026-02-02 soak\n\nz\n");
        assert_eq!(
            new,
            "# R\n\n## 2026-01-01 soak\n\nx\n\n## 2026-02-02 soak\n\nz\n\n## Fuzzing\n\ny\n"
        );
        assert_eq!(insert_soak("# R\n", "\n## 2026 s\n"), "# R\n\n## 2026 s\n");
    }
}
