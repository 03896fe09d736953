//! What a run leaves behind when something outside knetlab interferes: a killed run's
//! own processes still sitting in its namespaces (issue 13, item 1: `clean` must end
//! them, and only them, by their ids) and another tool's `ip netns add` while a cluster
//! is kept (item 2: `down` must still remove every namespace, and the run's record only
//! after them). Needs root; skips with a reason otherwise.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::cluster::Cluster;
use harness::netns::{self, Netns};
use harness::sweep::{self, processes};
use sim::plan::Plan;
use sim::scenario::ClusterConfig;

fn skip_unless_root(test: &str) -> bool {
    if !netns::have_privileges() {
        eprintln!("skipping {test}: needs root (network namespaces)");
        return true;
    }
    false
}

/// A pid that no process has any more (a child that exited and was reaped).
fn dead_pid() -> u32 {
    let mut c = Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

fn reap_later(mut c: Child) {
    std::thread::spawn(move || {
        let _ = c.wait();
    });
}

fn wait_gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while processes::running(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// A killed run: its owner is dead, and processes it started (a shell that forks
/// children, in the owner's process group) still sit in its namespace. Somebody else's
/// shell in the namespace (another process group) keeps the run live for `clean`; once
/// that one leaves, `clean` ends the run's own processes by id and removes the run.
#[test]
fn clean_ends_what_a_killed_run_started_but_not_other_users() {
    if skip_unless_root("clean_ends_what_a_killed_run_started_but_not_other_users") {
        return;
    }
    let prefix = harness::run::new_prefix();
    let dir = sweep::state_dir(&prefix);
    sweep::create_state_dir(&prefix).unwrap();
    let group = nix::unistd::getpgrp().as_raw();
    // The run's owner died; it had recorded this test's process group.
    std::fs::write(
        dir.join(sweep::OWNER_FILE),
        format!("{} 1 {group}\n", dead_pid()),
    )
    .unwrap();
    let ns = Netns::create_many(&[format!("{prefix}-node")])
        .unwrap()
        .remove(0);
    // The run's own: a process that keeps forking (like an nginx master starting its
    // workers) in the run's namespace and process group.
    let own = ns
        .command("sh")
        .args(["-c", "while :; do sleep 30 & sleep 0.01; done"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let own_pid = own.id();
    reap_later(own);
    // Somebody else's, in a process group of its own (`ip netns exec NAME sh`).
    // (The Command holds a handle on the namespace: it must go before the sweep looks.)
    let other = {
        let mut c = ns.command("sleep");
        c.arg("60").process_group(0);
        c.spawn().unwrap()
    };
    let other_pid = other.id();
    std::thread::sleep(Duration::from_millis(50));
    drop(ns);

    let report = sweep::clean_run(&prefix, false);
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.skipped.len(), 1, "{report}");
    assert_eq!(report.skipped[0].pid, Some(other_pid), "{report}");
    assert_eq!(report.skipped[0].reason, "uses its namespaces");
    assert!(
        report.processes_ended.contains(&own_pid),
        "the run's own shell was not ended: {report}"
    );
    assert!(wait_gone(own_pid));
    assert!(
        processes::running(other_pid),
        "another user's process was ended"
    );
    assert_eq!(netns::list_run(&prefix).unwrap().len(), 1);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(other_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    reap_later(other);
    assert!(wait_gone(other_pid));
    let report = sweep::clean_run(&prefix, false);
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.swept, vec![prefix.clone()], "{report}");
    assert!(netns::list_run(&prefix).unwrap().is_empty());
    assert!(!dir.exists());
}

/// Whether `/var/run/netns` is a mount point with shared propagation (as iproute2 leaves
/// it), from this process's mountinfo.
fn netns_dir_is_shared_mount() -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let optional = f.iter().skip(6).take_while(|x| **x != "-");
        f.get(4) == Some(&"/run/netns") && optional.clone().any(|x| x.starts_with("shared:"))
    })
}

/// Keep a cluster, let iproute2 add a namespace of its own (which bind-mounts
/// `/run/netns` onto itself if nothing did before), then `down` (what `cargo xtask
/// down` calls): every namespace of the run and its record are gone.
#[tokio::test(flavor = "multi_thread")]
async fn down_after_another_tools_ip_netns_add_removes_everything() {
    if skip_unless_root("down_after_another_tools_ip_netns_add_removes_everything") {
        return;
    }
    if !std::path::Path::new("/usr/lib/cni/bridge").exists() {
        eprintln!("skipping: the CNI plugins are not installed in /usr/lib/cni");
        return;
    }
    let cluster = ClusterConfig {
        nodes: vec!["n1".into()],
        pod_cidr: "10.244.0.0/16".parse().unwrap(),
        service_cidr: "10.96.0.0/12".parse().unwrap(),
        network: Default::default(),
        policy: Default::default(),
        deny: Default::default(),
        proxy: Default::default(),
        cni: Default::default(),
        external_hosts: vec![],
    };
    let plan = Plan::new(&harness::run::new_prefix(), &cluster).unwrap();
    let prefix = plan.prefix.clone();
    let kept = Cluster::create(plan).await.expect("create").keep();
    assert_eq!(kept.prefix, prefix);
    assert!(
        netns_dir_is_shared_mount(),
        "knetlab did not prepare /run/netns"
    );
    let ours = netns::list_run(&prefix).unwrap();
    assert!(ours.len() >= 2, "{ours:?}");

    let foo = format!("knetlab-test-foo-{}", std::process::id());
    let add = Command::new("ip")
        .args(["netns", "add", &foo])
        .output()
        .unwrap();
    assert!(add.status.success(), "{add:?}");

    let report = tokio::task::spawn_blocking({
        let prefix = prefix.clone();
        move || sweep::clean_prefix(&prefix)
    })
    .await
    .unwrap();
    let del = Command::new("ip")
        .args(["netns", "del", &foo])
        .output()
        .unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.swept, vec![prefix.clone()], "{report}");
    assert!(netns::list_run(&prefix).unwrap().is_empty());
    assert!(!sweep::state_dir(&prefix).exists());
    assert!(del.status.success(), "{del:?}");
}
