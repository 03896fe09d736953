//! The workshop side of the command line, run with the real binary: the HTML report in a
//! real browser (Debian's headless Chromium lays the page out and runs its script: the
//! picture and the grid have a size, and a scripted click on a cell shows that cell's
//! explanation), a cluster kept with `--keep` entered with `exec` and `shell` and removed
//! with `down`, and `--pause` waiting for Enter before each step. Needs root (the runs
//! build clusters) and, for the browser test, Chromium: ignored unless run with
//! `--include-ignored` (see `common`).

#[path = "../../harness/tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const XTASK: &str = env!("CARGO_BIN_EXE_xtask");

fn xtask(args: &[&str]) -> Output {
    Command::new(XTASK)
        .args(args)
        .env("CI", "true")
        .output()
        .expect("run xtask")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("knetlab-lab-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Sweeps a run whatever happens to the test.
struct Sweep(String);

impl Drop for Sweep {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = harness::sweep::clean_prefix(&self.0);
        }
    }
}

/// The run prefix the CLI announces on stderr (`..., run prefix klXXXXXX)`).
fn prefix_of(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr);
    err.split("run prefix ")
        .nth(1)
        .map(|s| {
            s.chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect()
        })
        .unwrap_or_else(|| panic!("no run prefix in\n{}", text(o)))
}

/// Headless Chromium with a fresh profile and nothing that reaches the network.
fn chromium(profile: &Path) -> Command {
    let mut c = Command::new(harness::prereq::CHROMIUM);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,2000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .stdin(Stdio::null());
    c
}

/// The value of `attr="..."` on the `<html>` element of a dumped DOM.
fn html_attr(dom: &str, attr: &str) -> Option<String> {
    let start = dom.find("<html")?;
    let tag = &dom[start..start + dom[start..].find('>')?];
    let at = tag.find(&format!("{attr}=\""))? + attr.len() + 2;
    Some(tag[at..at + tag[at..].find('"')?].to_string())
}

#[test]
#[ignore = "needs root: builds clusters with the real binary"]
fn the_report_renders_in_chromium_and_a_clicked_cell_explains_itself() {
    common::require_root(&[common::CHROMIUM]);
    let dir = scratch("report");
    let out = xtask(&[
        "scenario",
        "default-deny",
        "--report",
        dir.to_str().unwrap(),
        "--trace",
        "y/a",
        "x/b:80/TCP",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let page = dir.join("index.html");
    let html = std::fs::read_to_string(&page).unwrap();
    // The --trace story is part of each step's section.
    assert_eq!(html.matches("Trace of one probe (--trace)").count(), 2);
    assert!(
        html.contains("rejected here"),
        "the first step's trace ends at the REJECT"
    );
    // Cell 1-2 of the first step: which cell it is, read from the page itself.
    let cell = html
        .find("id=\"c-1-2\"")
        .map(|i| &html[html[..i].rfind("<td").unwrap()..i + html[i..].find('>').unwrap()])
        .expect("cell 1-2 in the page");
    let from = cell
        .split("data-from=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let url = format!("file://{}#cell=1-2", page.display());
    let profile = dir.join("profile");
    let dump = chromium(&profile)
        .args(["--virtual-time-budget=2000", "--dump-dom", &url])
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.status.success() && dom.contains("</html>"),
        "{}",
        text(&dump)
    );

    // The browser laid out the picture and the grid (sizes measured by the page's script).
    let rendered = html_attr(&dom, "data-rendered").expect("the page's script ran");
    let nums: Vec<u32> = rendered
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect();
    // svg WxH grid WxH pods N cells M
    assert_eq!(nums.len(), 6, "{rendered}");
    assert!(
        nums[0] > 300 && nums[1] > 200,
        "picture too small: {rendered}"
    );
    assert!(nums[2] > 100 && nums[3] > 100, "grid too small: {rendered}");
    assert_eq!(nums[4], 9, "default-deny has 9 pods: {rendered}");
    assert_eq!(
        nums[5], 486,
        "default-deny probes 486 cells per step: {rendered}"
    );

    // The click showed that cell's explanation, and only it.
    assert_eq!(html_attr(&dom, "data-shown-cell").as_deref(), Some("1-2"));
    let shown = dom
        .find("id=\"d-1-2\"")
        .map(|i| &dom[dom[..i].rfind('<').unwrap()..i + dom[i..].find('>').unwrap()])
        .unwrap();
    assert!(!shown.contains("hidden"), "{shown}");
    assert!(
        dom.contains("id=\"d-1-1\" hidden"),
        "other cells stay hidden"
    );
    let detail = &dom[dom.find("id=\"d-1-2\"").unwrap()..];
    let detail = &detail[..detail.find("</div>").unwrap()];
    assert!(detail.contains(&format!("<h4>{from} →")), "{detail}");
    for what in [
        "<dt>oracle</dt>",
        "<dt>why</dt>",
        "<dt>measured</dt>",
        "<dt>time</dt>",
    ] {
        assert!(detail.contains(what), "{what} missing in {detail}");
    }
    // The clicked cell's two ends are highlighted in the picture.
    assert!(
        dom.contains(&format!("class=\"pod end\" data-pod=\"{from}\"")),
        "no highlight of {from}"
    );

    // A screenshot is a real picture: a PNG of the window's size with more than a few colours.
    let png = dir.join("shot.png");
    let shot = chromium(&dir.join("profile2"))
        .arg(format!("--screenshot={}", png.display()))
        .arg(&url)
        .output()
        .expect("run chromium");
    assert!(shot.status.success(), "{}", text(&shot));
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
    assert_eq!(u32::from_be_bytes(bytes[16..20].try_into().unwrap()), 1400);
    assert!(
        bytes.len() > 50_000,
        "a near-empty screenshot: {} bytes",
        bytes.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs root: builds clusters with the real binary"]
fn a_kept_cluster_is_entered_with_exec_and_shell_and_removed_with_down() {
    common::require_root(&[]);
    let out = xtask(&["scenario", "pod-network", "--keep"]);
    let mut sweep = Sweep(prefix_of(&out));
    let prefix = sweep.0.clone();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let kept = harness::sweep::kept_runs()
        .into_iter()
        .find(|r| r.prefix == prefix)
        .expect("the kept run is findable");
    assert_eq!(kept.scenario, "pod-network");
    let (_, ip) = kept.pods["frontend/web-1"].clone();

    // exec: the command runs in the pod, and its exit code comes back.
    let o = xtask(&[
        "exec",
        "--prefix",
        &prefix,
        "frontend/web-1",
        "--",
        "ip",
        "-br",
        "-4",
        "addr",
        "show",
        "eth0",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("{ip}/24")),
        "{}",
        text(&o)
    );
    let o = xtask(&[
        "exec", "--prefix", &prefix, "node/n1", "--", "sh", "-c", "exit 7",
    ]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    let o = xtask(&["exec", "--prefix", &prefix, "nobody/here", "--", "true"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("frontend/web-1"),
        "{}",
        text(&o)
    );

    // shell: commands from a pipe run inside, under a prompt naming the pod.
    let mut child = Command::new(XTASK)
        .args(["shell", "--prefix", &prefix, "frontend/web-1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"ip -br -4 addr show eth0\nexit 3\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("{ip}/24")),
        "{}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("[knetlab pod-network frontend/web-1]"),
        "{}",
        text(&o)
    );

    // down: everything of the run goes, and it is no longer a kept run.
    let o = xtask(&["down", "--prefix", &prefix]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("removed 1 run(s) ({prefix})")),
        "{}",
        text(&o)
    );
    assert!(harness::netns::list_run(&prefix).unwrap().is_empty());
    assert!(!harness::sweep::state_dir(&prefix).exists());
    assert!(
        harness::sweep::kept_runs()
            .iter()
            .all(|r| r.prefix != prefix)
    );
    let o = xtask(&["exec", "--prefix", &prefix, "frontend/web-1", "--", "true"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    sweep.0.clear();
}

#[test]
#[ignore = "needs root: builds clusters with the real binary"]
fn pause_says_what_the_next_step_changes_and_waits_for_enter() {
    common::require_root(&[]);
    let mut child = Command::new(XTASK)
        .args(["scenario", "label-change", "--pause"])
        .env("CI", "true")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    // Drain stdout (the matrices), so a full pipe never stalls the run.
    let mut stdout = child.stdout.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0
                || tx
                    .send(String::from_utf8_lossy(&buf[..n]).to_string())
                    .is_err()
            {
                break;
            }
        }
    });
    let mut seen = String::new();
    let wait_for = |needle: &str, seen: &mut String| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !seen.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(s) => seen.push_str(&s),
                Err(_) => panic!("never saw {needle:?} in\n{seen}"),
            }
        }
    };
    wait_for("run prefix ", &mut seen);
    wait_for(")", &mut seen);
    let sweep = Sweep(
        seen.split("run prefix ")
            .nth(1)
            .unwrap()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect(),
    );
    wait_for("Press Enter", &mut seen);
    assert!(seen.contains("-- paused before step 2: "), "{seen}");
    assert!(
        seen.contains("This step will:\n  - apply NetworkPolicy x/allow-trusted-namespaces\n"),
        "{seen}"
    );
    // The matrix of step 1 came first.
    assert!(seen.contains("== step 1: "), "{seen}");
    // It waits: still running a while later, and no step-2 pause line yet.
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        child.try_wait().unwrap().is_none(),
        "did not wait for Enter"
    );
    let steps = seen.matches("paused before step").count();
    assert_eq!(steps, 1, "{seen}");
    let mut stdin = child.stdin.take().unwrap();
    // One Enter per remaining step.
    stdin.write_all(b"\n\n\n\n\n\n\n\n").unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    while let Ok(s) = rx.recv_timeout(Duration::from_millis(200)) {
        seen.push_str(&s);
    }
    let stdout = out_thread.join().unwrap();
    assert_eq!(status.code(), Some(0), "{seen}\n{stdout}");
    assert!(stdout.contains("PASS: label-change"), "{stdout}");
    // label-change has six steps: five pauses, the second before a relabelling.
    assert_eq!(seen.matches("paused before step").count(), 5, "{seen}");
    assert!(
        seen.contains("-- paused before step 3: trust namespace y --\nThis step will:\n  - relabel Namespace y: ns=y, trusted=yes\n"),
        "{seen}"
    );
    drop(sweep);
}
