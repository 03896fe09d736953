//! The promise that knetlab never touches the host: after a whole run, and after a run that
//! was killed and then swept with `cargo xtask clean`, the root network namespace's links,
//! addresses, routes, rules, sysctls and netfilter tables are byte-for-byte what they were
//! (`harness::host::HostState`), and `ip netns list` shows nothing of ours. Needs root:
//! ignored unless run with `--include-ignored` (see `common`).

#[path = "../../harness/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use harness::host::HostState;

/// Both tests compare the whole host: run them one at a time.
static HOST: Mutex<()> = Mutex::new(());

fn ours() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/var/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.retain(|n| n.starts_with("kl") && n.len() > 9 && n.as_bytes()[8] == b'-');
    v.sort();
    v
}

fn xtask() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.env("CI", "true");
    c
}

fn assert_same(before: &HostState, after: &HostState) {
    if let Some(diff) = before.diff(after) {
        panic!("{diff}");
    }
}

/// The run prefix a `cargo xtask scenario` run announces on its first stderr line.
fn read_prefix(stderr: &mut impl std::io::BufRead) -> String {
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap_or(0) > 0 {
        if let Some(rest) = line.split("run prefix ").nth(1) {
            return rest.trim().trim_end_matches(')').to_string();
        }
        line.clear();
    }
    panic!("the run never announced its prefix");
}

/// Namespaces of one run (other runs may come and go meanwhile: two runs can go at once).
fn of_run(prefix: &str) -> Vec<String> {
    ours()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .collect()
}

#[test]
#[ignore = "needs root: runs knetlab against the host"]
fn a_whole_run_leaves_the_host_unchanged() {
    common::require_root(&[]);
    let _guard = HOST.lock().unwrap_or_else(|e| e.into_inner());
    let before = HostState::capture();
    let out = xtask()
        .args(["scenario", "test-network-policy"])
        .stdout(Stdio::null())
        .output()
        .expect("run xtask");
    assert!(
        out.status.success(),
        "the scenario failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let prefix = read_prefix(&mut std::io::BufReader::new(&out.stderr[..]));
    assert_same(&before, &HostState::capture());
    assert_eq!(
        of_run(&prefix),
        Vec::<String>::new(),
        "namespaces were left behind"
    );
    assert!(
        !Path::new("/run/knetlab").join(&prefix).exists(),
        "CNI state was left behind"
    );
}

#[test]
#[ignore = "needs root: runs knetlab against the host"]
fn a_killed_run_is_swept_by_clean() {
    common::require_root(&[]);
    let _guard = HOST.lock().unwrap_or_else(|e| e.into_inner());
    let before = HostState::capture();
    let mut child = xtask()
        .args(["scenario", "default-deny", "--keep"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start xtask");
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let prefix = read_prefix(&mut stderr);
    // Kill it once its pods exist (a --keep run would otherwise leave them on purpose).
    let deadline = Instant::now() + Duration::from_secs(30);
    while of_run(&prefix)
        .iter()
        .filter(|n| n.contains("-pod-"))
        .count()
        < 3
    {
        assert!(Instant::now() < deadline, "the run never created its pods");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("kill the run");
    let _ = child.wait();
    // A CNI plugin the run had started finishes on its own; a user runs clean later too.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !of_run(&prefix).is_empty(),
        "the killed run should have left namespaces"
    );
    let clean = xtask().arg("clean").output().expect("run xtask clean");
    assert!(
        clean.status.success(),
        "clean failed: {}{}",
        String::from_utf8_lossy(&clean.stdout),
        String::from_utf8_lossy(&clean.stderr)
    );
    assert_eq!(
        of_run(&prefix),
        Vec::<String>::new(),
        "clean left namespaces behind"
    );
    assert!(
        !Path::new("/run/knetlab").join(&prefix).exists(),
        "clean left CNI state behind"
    );
    assert_same(&before, &HostState::capture());
}
