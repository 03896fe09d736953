//! The processes a run started, found again from `/proc` once the run's own process is
//! gone, so a sweep ends them by their ids instead of taking them for somebody else using
//! the run's namespaces. A process is the run's when
//! - it is an nginx started with a configuration under the run's state directory (the
//!   ingress controller's master, found by its command line even before it wrote its
//!   pid file); or
//! - it runs inside one of the run's namespaces and belongs to the process group
//!   the run's owner recorded (see [`super::write_owner`]): everything the harness
//!   starts (nginx and its workers, CNI plugins and `nft` in flight, `xtables-monitor`)
//!   inherits that group, because none of it calls `setsid` or `setpgid`; or
//! - it descends from one of those (an nginx worker forked a moment ago).
//!
//! Anyone else inside the namespaces (`ip netns exec` from another shell, `cargo xtask
//! shell`) runs in a group of their own and is left alone, so `clean` still treats them
//! as live users of the run. The DNS server and userspace proxies are tasks inside the
//! run's own process and end with it.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::netns::{self, NETNS_DIR};

/// The ingress controller's nginx binary (Debian's `nginx` package).
pub const NGINX: &str = crate::system::Tool::Nginx.binary();
/// The directory (under a run's state directory) holding the controller's files.
pub const INGRESS_DIR: &str = "ingress";
/// How long ending a run's processes may take, from the first kill until they are gone.
/// Generous: on a loaded machine a SIGKILLed `conntrack -F` took over 2 s to go (seen
/// in a 1000-run soak at load 12), and it only costs time when something lingers.
const END_TIMEOUT: Duration = Duration::from_secs(10);

/// One line of `/proc/PID/stat`, the fields this module needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// `R`, `S`, `Z` and so on.
    pub state: char,
    pub ppid: u32,
    pub pgrp: u32,
    /// Clock ticks since boot (a recycled pid has another).
    pub start: u64,
}

/// The stat of a process, if it exists.
pub fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    Some(Stat {
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        pgrp: rest.get(2)?.parse().ok()?,
        start: rest.get(19)?.parse().ok()?,
    })
}

/// Whether a process runs (exists and is not a zombie waiting for its parent).
pub fn running(pid: u32) -> bool {
    stat(pid).is_some_and(|s| s.state != 'Z')
}

/// The children of a process (nginx's workers), from /proc.
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Every pid in /proc, sorted.
pub fn all() -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    pids.sort();
    pids
}

/// nginx processes started with a file under `dir` on their command line (`-c
/// dir/nginx.conf`), sorted. Only nginx: a user's `tail -f dir/access.log` is not ours.
pub fn nginx_using(dir: &Path) -> Vec<u32> {
    all()
        .into_iter()
        .filter(|pid| is_nginx_using(*pid, dir))
        .collect()
}

fn is_nginx_using(pid: u32, dir: &Path) -> bool {
    let needle = dir.display().to_string();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    exe.is_some_and(|e| e == Path::new(NGINX))
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
}

/// The (device, inode) of each namespace of a run: what an open handle or a thread's
/// `ns/net` link resolves to.
pub fn namespace_ids(prefix: &str) -> BTreeSet<(u64, u64)> {
    netns::list_run(prefix)
        .unwrap_or_default()
        .iter()
        .filter_map(|n| file_id(&Path::new(NETNS_DIR).join(n)))
        .collect()
}

fn file_id(p: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// Whether a process has a thread inside one of the namespaces `ids`. (Not an open file:
/// a child of a process that runs several clusters at once, as the test binaries do,
/// holds all of its parent's handles between fork and exec, those of other runs too.)
pub fn lives_in(pid: u32, ids: &BTreeSet<(u64, u64)>) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .any(|t| file_id(&t.path().join("ns/net")).is_some_and(|x| ids.contains(&x)))
        })
        .unwrap_or(false)
}

/// Whether a process has a thread in, or a file open on, one of the namespaces `ids`.
pub fn uses_namespaces(pid: u32, ids: &BTreeSet<(u64, u64)>) -> bool {
    if ids.is_empty() {
        return false;
    }
    let holds = |p: &Path| file_id(p).is_some_and(|x| ids.contains(&x));
    let entries = |dir: PathBuf| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    };
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    entries(proc_dir.join("task"))
        .iter()
        .any(|t| holds(&t.join("ns/net")))
        || entries(proc_dir.join("fd")).iter().any(|fd| holds(fd))
}

/// What marks a run's processes: its namespaces, its state directory and the process
/// group its owner recorded (none for a run recorded before groups were).
#[derive(Debug, Clone)]
pub struct RunMarks {
    pub namespaces: BTreeSet<(u64, u64)>,
    pub state_dir: PathBuf,
    pub owner_group: Option<u32>,
}

impl RunMarks {
    /// The running processes the run started, sorted; never this process.
    pub fn processes(&self) -> Vec<u32> {
        let me = std::process::id();
        let ingress = self.state_dir.join(INGRESS_DIR);
        let stats: Vec<(u32, Stat)> = all()
            .into_iter()
            .filter(|pid| *pid != me)
            .filter_map(|pid| stat(pid).map(|s| (pid, s)))
            .filter(|(_, s)| s.state != 'Z')
            .collect();
        let mut ours: BTreeSet<u32> = stats
            .iter()
            .filter(|(pid, s)| {
                is_nginx_using(*pid, &ingress)
                    || (Some(s.pgrp) == self.owner_group && lives_in(*pid, &self.namespaces))
            })
            .map(|(pid, _)| *pid)
            .collect();
        // Descendants (a worker whose command line no longer names the directory).
        loop {
            let more: Vec<u32> = stats
                .iter()
                .filter(|(pid, s)| !ours.contains(pid) && ours.contains(&s.ppid))
                .map(|(pid, _)| *pid)
                .collect();
            if more.is_empty() {
                break;
            }
            ours.extend(more);
        }
        ours.remove(&me);
        ours.into_iter().collect()
    }

    /// Ends every process the run started (SIGKILL, by pid, again until none is left:
    /// a master may fork a worker between two looks) and waits until they are gone or
    /// zombies. Returns the pids ended, sorted.
    pub fn end_processes(&self) -> Vec<u32> {
        let mut ended = BTreeSet::new();
        let deadline = Instant::now() + END_TIMEOUT;
        loop {
            let found = self.processes();
            if found.is_empty() || Instant::now() >= deadline {
                break;
            }
            for pid in found {
                if kill(Pid::from_raw(pid as i32), Signal::SIGKILL).is_ok() {
                    ended.insert(pid);
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        while ended.iter().any(|p| running(*p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        ended.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_stat_reads() {
        let s = stat(std::process::id()).unwrap();
        assert_ne!(s.state, 'Z');
        assert_eq!(s.ppid, std::os::unix::process::parent_id());
        assert_eq!(s.pgrp, nix::unistd::getpgrp().as_raw() as u32);
        assert!(running(std::process::id()));
        assert!(!running(u32::MAX));
    }

    #[test]
    fn a_run_never_lists_this_process() {
        let marks = RunMarks {
            namespaces: file_id(Path::new("/proc/self/ns/net"))
                .into_iter()
                .collect(),
            state_dir: PathBuf::from("/nonexistent"),
            owner_group: Some(nix::unistd::getpgrp().as_raw() as u32),
        };
        assert!(!marks.processes().contains(&std::process::id()));
    }
}
