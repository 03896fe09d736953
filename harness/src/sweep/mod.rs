//! Sweeping what runs left behind, found by the run prefix only (`kl` + 6 characters):
//! namespaces named `<prefix>-*`, state directories `STATE_ROOT/<prefix>` and the
//! directories `/etc/netns/<prefix>-*` that hold the pods' resolv.conf (cluster DNS). Cached CNI
//! results are DELeted first (inside the node namespace they were made in, never the
//! root one), then the namespaces go, then the state directory: a run's record stays
//! until its namespaces are gone, so `down` and `clean` can always find them again. A run
//! records its owner in `<state dir>/pid`, so `clean` leaves runs that are still going
//! alone unless forced. Processes a run started inside its namespaces (the ingress
//! controller's nginx and its workers, plugins in flight) are ended first, by their ids
//! ([`processes`]), and never taken for another live user of the run.
//! [`clean_prefix`] is also a run's fallback teardown on panic or Ctrl-C.

pub mod processes;

use std::collections::BTreeSet;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sim::plan::{STATE_ROOT, is_prefix, prefix_of};

use self::processes::RunMarks;
use crate::cni;
use crate::netns::{self, Netns};

/// The file in a run's state directory naming the process that owns the run.
pub const OWNER_FILE: &str = "pid";
/// How many CNI DELs run at once. DEL mostly waits (process start, then an RCU grace
/// period when the plugin deletes the pod's veth), so more threads than cores pay off.
pub const DEL_THREADS: usize = 8;
/// Where `ip netns exec NAME` finds files to bind-mount over `/etc` (`/etc/netns/NAME/`).
pub const ETC_NETNS: &str = "/etc/netns";
/// How long to wait for deleted namespaces to leave `ip netns list`.
const GONE_TIMEOUT: Duration = Duration::from_secs(2);
/// Mode of [`STATE_ROOT`] and of every run's state directory: root's alone (it holds
/// private keys, pid files the sweep trusts and CNI state).
pub const STATE_MODE: u32 = 0o700;

/// What went wrong in a sweep; it goes on past each one.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("{0:?} is not a knetlab run prefix; nothing removed")]
    NotAPrefix(String),
    #[error("list the network namespaces: {0:#}")]
    ListNamespaces(anyhow::Error),
    #[error("read {}: {source}", path.display())]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0:#}")]
    DeleteNamespace(anyhow::Error),
    #[error("remove {}: {source}", path.display())]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    CniCache(String),
    #[error(
        "cache entry {container_id} names namespace {netns}, which is not of run {prefix}; not DELeted"
    )]
    ForeignCacheEntry {
        container_id: String,
        netns: String,
        prefix: String,
    },
    #[error("{0:#}")]
    CniDel(anyhow::Error),
    /// The run's record (state directory) is kept so that `down` or `clean` find the
    /// namespaces again.
    #[error(
        "namespaces still listed after the sweep: {}; kept {} so `cargo xtask down --prefix {prefix}` or `clean` can retry",
        names.join(" "),
        state_dir(prefix).display()
    )]
    NamespacesLeft { prefix: String, names: Vec<String> },
    #[error("cleanup task failed: {0}")]
    Task(String),
}

/// A run a sweep left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub prefix: String,
    /// The live process that owns or uses the run (none for a kept run).
    pub pid: Option<u32>,
    /// Why: `owns it` or `uses its namespaces` (of the process), or [`KEPT_REASON`].
    pub reason: &'static str,
}

/// What a sweep did.
#[derive(Debug, Default)]
pub struct CleanReport {
    /// Prefixes whose runs were removed.
    pub swept: Vec<String>,
    /// Runs left alone because they are still live.
    pub skipped: Vec<Skipped>,
    pub namespaces_removed: Vec<String>,
    /// CNI attachments DELeted from the cache.
    pub cni_deletes: usize,
    /// Processes the runs had started, ended by their ids.
    pub processes_ended: Vec<u32>,
    /// Every failure, in order; the sweep went on past each one.
    pub errors: Vec<SweepError>,
}

impl CleanReport {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// The errors as text, joined with `; ` (for a one-line message).
    pub fn errors_text(&self) -> String {
        self.errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn merge(&mut self, other: CleanReport) {
        self.swept.extend(other.swept);
        self.skipped.extend(other.skipped);
        self.namespaces_removed.extend(other.namespaces_removed);
        self.cni_deletes += other.cni_deletes;
        self.processes_ended.extend(other.processes_ended);
        self.errors.extend(other.errors);
    }
}

impl std::fmt::Display for CleanReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.swept.is_empty() {
            write!(f, "nothing of knetlab's to remove")?;
        } else {
            write!(
                f,
                "removed {} run(s) ({}): {} namespace(s), {} CNI attachment(s)",
                self.swept.len(),
                self.swept.join(", "),
                self.namespaces_removed.len(),
                self.cni_deletes
            )?;
            if !self.processes_ended.is_empty() {
                write!(
                    f,
                    ", {} process(es) they had started",
                    self.processes_ended.len()
                )?;
            }
        }
        for k in &self.skipped {
            match k.pid {
                Some(pid) => write!(
                    f,
                    "\nleft {} alone: live process {pid} {} (force to remove it)",
                    k.prefix, k.reason
                )?,
                None => write!(f, "\nleft {} alone: {}", k.prefix, k.reason)?,
            }
        }
        for e in &self.errors {
            write!(f, "\nerror: {e}")?;
        }
        Ok(())
    }
}

/// Sweeps every run found: namespaces named `<prefix>-*` and state directories under
/// [`STATE_ROOT`]. A run whose owner (in `<state dir>/pid`) is alive is skipped unless
/// `force`.
pub fn clean(force: bool) -> CleanReport {
    let mut report = CleanReport::default();
    let mut prefixes = BTreeSet::new();
    match netns::list() {
        Ok(names) => prefixes.extend(
            names
                .iter()
                .filter_map(|n| prefix_of(n))
                .map(str::to_string),
        ),
        Err(e) => report.errors.push(SweepError::ListNamespaces(e)),
    }
    let mut names_in = |dir: &str, report: &mut CleanReport| match std::fs::read_dir(dir) {
        Ok(d) => prefixes.extend(
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter_map(|n| {
                    if is_prefix(&n) {
                        Some(n)
                    } else {
                        prefix_of(&n).map(str::to_string)
                    }
                }),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => report.errors.push(SweepError::ReadDir {
            path: dir.into(),
            source,
        }),
    };
    names_in(STATE_ROOT, &mut report);
    // A killed run with cluster DNS may have left only its pods' resolv.conf files.
    names_in(ETC_NETNS, &mut report);
    for prefix in prefixes {
        report.merge(clean_run(&prefix, force));
    }
    report
}

/// Sweeps one run unless it is still live: its owner (in `<state dir>/pid`) is alive, or
/// a live process that the run did not start holds one of its namespaces (an open
/// handle or a thread inside). With `force`, sweeps it regardless.
pub fn clean_run(prefix: &str, force: bool) -> CleanReport {
    let skip = |pid, reason| CleanReport {
        skipped: vec![Skipped {
            prefix: prefix.to_string(),
            pid,
            reason,
        }],
        ..Default::default()
    };
    if !force {
        if state_dir(prefix).join(KEPT_FILE).exists() {
            return skip(None, KEPT_REASON);
        }
        if let Some(pid) = live_owner(&state_dir(prefix)) {
            return skip(Some(pid), "owns it");
        }
        // The owner is gone: what it started (its nginx, a plugin in flight) is no live
        // user of the run; end it before looking for one.
        let marks = run_marks(prefix);
        let ended = marks.end_processes();
        if let Some(pid) = namespace_user(prefix, &marks) {
            let mut report = skip(Some(pid), "uses its namespaces");
            report.processes_ended = ended;
            return report;
        }
        let mut report = clean_prefix(prefix);
        report.processes_ended.extend(ended);
        return report;
    }
    clean_prefix(prefix)
}

/// Removes everything of one run: ends the processes it started, DELs its cached CNI
/// attachments, deletes its namespaces and then its state directory. Goes on past every
/// failure and reports all.
pub fn clean_prefix(prefix: &str) -> CleanReport {
    let mut report = CleanReport::default();
    if !is_prefix(prefix) {
        report
            .errors
            .push(SweepError::NotAPrefix(prefix.to_string()));
        return report;
    }
    report.processes_ended = run_marks(prefix).end_processes();
    let (dels, errors) = del_cached_attachments(prefix);
    report.cni_deletes = dels;
    report.errors.extend(errors);
    report.merge(remove_run(prefix));
    report
}

/// What marks the processes a run started (see [`processes`]).
pub fn run_marks(prefix: &str) -> RunMarks {
    let dir = state_dir(prefix);
    RunMarks {
        namespaces: processes::namespace_ids(prefix),
        owner_group: read_owner(&dir).and_then(|o| o.group),
        state_dir: dir,
    }
}

/// Deletes the run's namespaces, waits until they are gone from `ip netns list`, then
/// removes its state directory and `/etc/netns` files (no CNI calls). While a namespace
/// is left, the state directory (the run's record) stays. The caller has DELeted what it
/// wanted and holds no handle on the run's namespaces any more (an open handle keeps a
/// namespace, and its links, alive after the delete).
fn remove_run(prefix: &str) -> CleanReport {
    let mut report = CleanReport::default();
    let mut found = false;
    match netns::list_run(prefix) {
        Ok(names) => {
            for name in names {
                found = true;
                match netns::delete(&name) {
                    Ok(()) => report.namespaces_removed.push(name),
                    Err(e) => report.errors.push(SweepError::DeleteNamespace(e)),
                }
            }
        }
        Err(e) => report.errors.push(SweepError::ListNamespaces(e)),
    }
    let deadline = Instant::now() + GONE_TIMEOUT;
    loop {
        let left = match netns::list_run(prefix) {
            Ok(left) => left,
            Err(e) => {
                report.errors.push(SweepError::ListNamespaces(e));
                return report;
            }
        };
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            report.errors.push(SweepError::NamespacesLeft {
                prefix: prefix.to_string(),
                names: left,
            });
            return report;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let dir = state_dir(prefix);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => found = true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            found = true;
            report.errors.push(SweepError::Remove { path: dir, source })
        }
    }
    // The per-namespace files `ip netns exec` bind-mounts (the pods' resolv.conf, written
    // by crate::dns): directories `/etc/netns/<prefix>-*`.
    match std::fs::read_dir(ETC_NETNS) {
        Ok(dir) => {
            let mut dirs: Vec<PathBuf> = dir
                .filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| prefix_of(n) == Some(prefix))
                })
                .map(|e| e.path())
                .collect();
            dirs.sort();
            for d in dirs {
                found = true;
                let removed = if d.is_dir() {
                    std::fs::remove_dir_all(&d)
                } else {
                    std::fs::remove_file(&d)
                };
                if let Err(source) = removed {
                    report.errors.push(SweepError::Remove { path: d, source });
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => report.errors.push(SweepError::ReadDir {
            path: ETC_NETNS.into(),
            source,
        }),
    }
    if found {
        report.swept.push(prefix.to_string());
    }
    // Leave no empty /run/knetlab (or /etc/netns) behind; fails harmlessly while other
    // runs (or anyone else) use it.
    let _ = std::fs::remove_dir(STATE_ROOT);
    let _ = std::fs::remove_dir(ETC_NETNS);
    report
}

/// DELs every attachment cached under the run's state directory, in the node namespace
/// it was made in. Attachments whose node namespace is gone need no DEL (their links
/// went with it, and the IPAM state goes with the state directory).
fn del_cached_attachments(prefix: &str) -> (usize, Vec<SweepError>) {
    let mut errors = vec![];
    let mut jobs = vec![];
    let root = state_dir(prefix);
    let nodes = match std::fs::read_dir(&root) {
        Ok(d) => {
            let mut v: Vec<PathBuf> = d
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect();
            v.sort();
            v
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(source) => {
            errors.push(SweepError::ReadDir {
                path: root.clone(),
                source,
            });
            vec![]
        }
    };
    for node_dir in nodes {
        let Some(node) = node_dir.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let cache_dir = cni::NodeDirs::new(&root, node).cache;
        let (entries, errs) = cni::cache::read_dir(&cache_dir);
        errors.extend(errs.into_iter().map(SweepError::CniCache));
        for entry in entries {
            // Never run a plugin outside this run's own namespaces.
            if prefix_of(&entry.node_netns) != Some(prefix) {
                errors.push(SweepError::ForeignCacheEntry {
                    container_id: entry.container_id.clone(),
                    netns: entry.node_netns.clone(),
                    prefix: prefix.to_string(),
                });
                continue;
            }
            if !Path::new(netns::NETNS_DIR).join(&entry.node_netns).exists() {
                continue;
            }
            jobs.push((entry, cache_dir.clone()));
        }
    }
    let results = cni::parallel_map(jobs, DEL_THREADS, |(entry, cache_dir)| -> Result<()> {
        let node = Netns::open(&entry.node_netns)?;
        cni::del_cached(&node, &entry, &cache_dir)?;
        Ok(())
    });
    let mut done = 0;
    for r in results {
        match r {
            Ok(()) => done += 1,
            Err(e) => errors.push(SweepError::CniDel(e)),
        }
    }
    (done, errors)
}

/// The state directory of a run.
pub fn state_dir(prefix: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(prefix)
}

/// Makes a new run's state directory (and [`STATE_ROOT`]), both mode [`STATE_MODE`].
/// Fails if the prefix's directory exists: the prefix is in use.
pub fn create_state_dir(prefix: &str) -> Result<PathBuf> {
    if !is_prefix(prefix) {
        bail!("{prefix:?} is not a knetlab run prefix");
    }
    let dir = state_dir(prefix);
    let mut builder = std::fs::DirBuilder::new();
    builder.mode(STATE_MODE);
    // A concurrent sweep may remove an empty STATE_ROOT between the two calls: retry.
    let mut attempt = 0;
    loop {
        match builder.create(STATE_ROOT) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("create {STATE_ROOT}")),
        }
        match builder.create(&dir) {
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempt < 3 => attempt += 1,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                bail!(
                    "run prefix {prefix} is already in use ({} exists)",
                    dir.display()
                )
            }
            Err(e) => return Err(e).with_context(|| format!("create {}", dir.display())),
        }
    }
    // An older knetlab made STATE_ROOT world-readable; the umask may have too.
    for d in [Path::new(STATE_ROOT), dir.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(STATE_MODE))
            .with_context(|| format!("make {} mode {STATE_MODE:o}", d.display()))?;
    }
    Ok(dir)
}

/// Who owns a run: the process, its start time (so a recycled pid is not mistaken for
/// the owner) and its process group (which everything it starts inherits; see
/// [`processes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    /// Clock ticks since boot; 0 when not recorded.
    pub start: u64,
    /// None in records written before groups were.
    pub group: Option<u32>,
}

/// Records this process as the owner of the run whose state directory is `dir`.
pub fn write_owner(dir: &Path) -> Result<()> {
    let pid = std::process::id();
    let me = processes::stat(pid);
    let start = me.map_or(0, |s| s.start);
    let group = me.map_or(0, |s| s.pgrp);
    let path = dir.join(OWNER_FILE);
    std::fs::write(&path, format!("{pid} {start} {group}\n"))
        .with_context(|| format!("write {}", path.display()))
}

/// The run's owner as recorded, alive or not.
pub fn read_owner(dir: &Path) -> Option<Owner> {
    let text = std::fs::read_to_string(dir.join(OWNER_FILE)).ok()?;
    let mut it = text.split_whitespace();
    let pid: u32 = it.next()?.parse().ok()?;
    let start: u64 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let group = it.next().and_then(|s| s.parse().ok()).filter(|g| *g != 0);
    Some(Owner { pid, start, group })
}

/// The pid of the run's owner if that process is still running (a zombie is not).
pub fn live_owner(dir: &Path) -> Option<u32> {
    let owner = read_owner(dir)?;
    let now = processes::stat(owner.pid).filter(|s| s.state != 'Z')?;
    (owner.start == 0 || owner.start == now.start).then_some(owner.pid)
}

/// A running process that holds one of the run's namespaces open or has a thread inside
/// one, and that the run did not start (one of its own still dying under load is no
/// other user: `clean_prefix` ends it); this process too (a handle it still holds is a
/// user like any other).
fn namespace_user(prefix: &str, marks: &RunMarks) -> Option<u32> {
    let ids = processes::namespace_ids(prefix);
    if ids.is_empty() {
        return None;
    }
    let ours = marks.processes();
    processes::all()
        .into_iter()
        .filter(|pid| processes::running(*pid) && !ours.contains(pid))
        .find(|pid| processes::uses_namespaces(*pid, &ids))
}

/// The file in a kept run's state directory (`--keep`) that says what it left, so that
/// `cargo xtask shell|exec|down` find it later. It goes with the state directory.
pub const KEPT_FILE: &str = "kept.json";

/// Why `clean` leaves a kept run alone: somebody asked for it to stay up.
pub const KEPT_REASON: &str =
    "kept with --keep (remove it with `cargo xtask down`, or `cargo xtask clean --force`)";

/// What a kept run left up: names people type, and the namespaces behind them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeptRun {
    pub scenario: String,
    pub prefix: String,
    /// Node name -> namespace.
    pub nodes: std::collections::BTreeMap<String, String>,
    /// `ns/pod` -> (namespace, address).
    pub pods: std::collections::BTreeMap<String, (String, std::net::Ipv4Addr)>,
    /// `fabric`, `router`, `host/NAME` -> namespace.
    pub others: std::collections::BTreeMap<String, String>,
}

impl KeptRun {
    /// The namespace of `target`: a node name, `node/NAME`, `ns/pod`, `fabric`, `router`
    /// or `host/NAME`.
    pub fn namespace_of(&self, target: &str) -> Option<&str> {
        let node = target.strip_prefix("node/").unwrap_or(target);
        self.nodes
            .get(node)
            .or_else(|| self.pods.get(target).map(|(ns, _)| ns))
            .or_else(|| self.others.get(target))
            .map(String::as_str)
    }

    /// Every name [`KeptRun::namespace_of`] knows, for error messages.
    pub fn targets(&self) -> Vec<String> {
        self.nodes
            .keys()
            .chain(self.pods.keys())
            .chain(self.others.keys())
            .cloned()
            .collect()
    }
}

/// Records what a kept run left, in its state directory.
pub fn write_kept(run: &KeptRun) -> Result<()> {
    let dir = state_dir(&run.prefix);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(STATE_MODE)
        .create(&dir)
        .with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join(KEPT_FILE);
    let text = serde_json::to_string_pretty(run).context("render the kept-run file")?;
    std::fs::write(&path, text + "\n").with_context(|| format!("write {}", path.display()))
}

/// Every kept run whose namespaces are still there, by prefix.
pub fn kept_runs() -> Vec<KeptRun> {
    let Ok(dir) = std::fs::read_dir(STATE_ROOT) else {
        return vec![];
    };
    let mut prefixes: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| is_prefix(n))
        .collect();
    prefixes.sort();
    prefixes
        .into_iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(state_dir(&p).join(KEPT_FILE)).ok()?;
            let run: KeptRun = serde_json::from_str(&text).ok()?;
            (run.prefix == p && !netns::list_run(&p).unwrap_or_default().is_empty()).then_some(run)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_is_a_live_owner() {
        let dir = std::env::temp_dir().join(format!("knetlab-sweep-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_owner(&dir).unwrap();
        assert_eq!(live_owner(&dir), Some(std::process::id()));
        // A recycled pid (same number, other start time) is not the owner.
        std::fs::write(dir.join(OWNER_FILE), format!("{} 1\n", std::process::id())).unwrap();
        assert_eq!(live_owner(&dir), None);
        std::fs::write(dir.join(OWNER_FILE), "garbage").unwrap();
        assert_eq!(live_owner(&dir), None);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(live_owner(&dir), None);
    }

    #[test]
    fn a_non_prefix_is_refused() {
        let r = clean_prefix("root");
        assert!(r.swept.is_empty());
        assert_eq!(r.errors.len(), 1);
        let r = clean_prefix("kl");
        assert!(!r.is_ok());
    }
}
