//! What one finished run (found by its prefix) left on the host: namespaces and their
//! mounts under `/run/netns`, pod files under `/etc/netns`, its state directory under
//! `/run/knetlab`, and live processes it started (an nginx using its state directory,
//! or anything still in the process group it ran in).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::netns;
use crate::sweep::{self, ETC_NETNS, processes};

/// One thing a finished run left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leftover {
    Namespace(String),
    /// A line of `/proc/self/mountinfo` naming one of the run's namespace files.
    Mount(String),
    EtcNetns(PathBuf),
    StateDir(PathBuf),
    Process {
        pid: u32,
        command: String,
    },
}

impl fmt::Display for Leftover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Leftover::Namespace(n) => write!(f, "namespace {n}"),
            Leftover::Mount(m) => write!(f, "mount {m}"),
            Leftover::EtcNetns(p) => write!(f, "pod files {}", p.display()),
            Leftover::StateDir(p) => write!(f, "state directory {}", p.display()),
            Leftover::Process { pid, command } => write!(f, "process {pid} ({command})"),
        }
    }
}

/// What the run `prefix` left; `group` is the process group it ran in, if it had one
/// of its own (a child started with `process_group(0)`), so that every process still in
/// it counts as left behind.
pub fn of_run(prefix: &str, group: Option<u32>) -> Vec<Leftover> {
    let mine = |name: &str| name.starts_with(&format!("{prefix}-"));
    let mut found: Vec<Leftover> = netns::list_run(prefix)
        .unwrap_or_default()
        .into_iter()
        .map(Leftover::Namespace)
        .collect();
    let netns_dirs = [netns::NETNS_DIR, "/run/netns"];
    found.extend(
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.split(' ').nth(4).is_some_and(|point| {
                    netns_dirs.iter().any(|d| {
                        Path::new(point)
                            .strip_prefix(d)
                            .is_ok_and(|rest| mine(&rest.to_string_lossy()))
                    })
                })
            })
            .map(|l| Leftover::Mount(l.to_string())),
    );
    found.extend(
        std::fs::read_dir(ETC_NETNS)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| mine(&e.file_name().to_string_lossy()))
                    .map(|e| Leftover::EtcNetns(e.path()))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default(),
    );
    let state = sweep::state_dir(prefix);
    if state.exists() {
        found.push(Leftover::StateDir(state.clone()));
    }
    let mut pids = processes::nginx_using(&state);
    pids.extend(group.into_iter().flat_map(group_members));
    pids.sort_unstable();
    pids.dedup();
    found.extend(pids.into_iter().map(process));
    found
}

/// The live processes of process group `group`: what a run whose prefix is not known
/// (killed before it announced it) may have left.
pub fn in_group(group: u32) -> Vec<Leftover> {
    group_members(group).into_iter().map(process).collect()
}

fn group_members(group: u32) -> Vec<u32> {
    processes::all()
        .into_iter()
        .filter(|p| processes::stat(*p).is_some_and(|s| s.pgrp == group && s.state != 'Z'))
        .collect()
}

fn process(pid: u32) -> Leftover {
    Leftover::Process {
        pid,
        command: command_line(pid),
    }
}

fn command_line(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}
