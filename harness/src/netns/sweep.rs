//! Sweeping what runs left behind, found by the run prefix only (`kl` + 6 characters):
//! namespaces named `<prefix>-*`, state directories `STATE_ROOT/<prefix>` and the
//! directories `/etc/netns/<prefix>-*` that hold the pods' resolv.conf (cluster DNS). Cached CNI
//! results are DELeted first (inside the node namespace they were made in, never the
//! root one), then the namespaces go, then the state directory. A run records its owner
//! in `<state dir>/pid`, so `clean` leaves runs that are still going alone unless forced.
//! Processes a run started inside its namespaces (the ingress controller's nginx) are
//! ended first, by the pid files under its state directory.
//! [`clean_prefix`] is also a run's fallback teardown on panic or Ctrl-C.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sim::plan::{STATE_ROOT, is_prefix, prefix_of};

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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanReport {
    /// Prefixes whose runs were removed.
    pub swept: Vec<String>,
    /// Runs left alone because they are still live.
    pub skipped: Vec<Skipped>,
    pub namespaces_removed: Vec<String>,
    /// CNI attachments DELeted from the cache.
    pub cni_deletes: usize,
    /// Every failure, in order; the sweep went on past each one.
    pub errors: Vec<String>,
}

impl CleanReport {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    fn merge(&mut self, other: CleanReport) {
        self.swept.extend(other.swept);
        self.skipped.extend(other.skipped);
        self.namespaces_removed.extend(other.namespaces_removed);
        self.cni_deletes += other.cni_deletes;
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
        Err(e) => report.errors.push(format!("{e:#}")),
    }
    match std::fs::read_dir(STATE_ROOT) {
        Ok(dir) => prefixes.extend(
            dir.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| is_prefix(n)),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => report.errors.push(format!("read {STATE_ROOT}: {e}")),
    }
    // A killed run with cluster DNS may have left only its pods' resolv.conf files.
    match std::fs::read_dir(ETC_NETNS) {
        Ok(dir) => prefixes.extend(
            dir.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter_map(|n| prefix_of(&n).map(str::to_string)),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => report.errors.push(format!("read {ETC_NETNS}: {e}")),
    }
    for prefix in prefixes {
        report.merge(clean_run(&prefix, force));
    }
    report
}

/// Sweeps one run unless it is still live: its owner (in `<state dir>/pid`) is alive, or
/// a live process holds one of its namespaces (an open handle or a thread inside). With
/// `force`, sweeps it regardless.
pub fn clean_run(prefix: &str, force: bool) -> CleanReport {
    if !force && state_dir(prefix).join(KEPT_FILE).exists() {
        return CleanReport {
            skipped: vec![Skipped {
                prefix: prefix.to_string(),
                pid: None,
                reason: KEPT_REASON,
            }],
            ..Default::default()
        };
    }
    if !force {
        let owner = live_owner(&state_dir(prefix));
        if owner.is_none() {
            // A dead run's ingress nginx still sits in its controller pod's namespace;
            // end it (by its pid file) so it is not taken for a live user of the run.
            crate::ingress::kill_leftover(&state_dir(prefix));
        }
        let live = owner
            .map(|pid| (pid, "owns it"))
            .or_else(|| namespace_user(prefix).map(|pid| (pid, "uses its namespaces")));
        if let Some((pid, reason)) = live {
            return CleanReport {
                skipped: vec![Skipped {
                    prefix: prefix.to_string(),
                    pid: Some(pid),
                    reason,
                }],
                ..Default::default()
            };
        }
    }
    clean_prefix(prefix)
}

/// Removes everything of one run: DELs its cached CNI attachments, deletes its
/// namespaces and its state directory. Goes on past every failure and reports all.
pub fn clean_prefix(prefix: &str) -> CleanReport {
    let mut report = CleanReport::default();
    if !is_prefix(prefix) {
        report.errors.push(format!(
            "{prefix:?} is not a knetlab run prefix; nothing removed"
        ));
        return report;
    }
    // Processes the run started inside its namespaces (the ingress controller's nginx),
    // by the pid files in its state directory, before the namespaces go.
    crate::ingress::kill_leftover(&state_dir(prefix));
    let (dels, errors) = del_cached_attachments(prefix);
    report.cni_deletes = dels;
    report.errors.extend(errors);
    report.merge(remove_run(prefix));
    report
}

/// Deletes the run's namespaces and state directory (no CNI calls), then waits until the
/// namespaces are gone from `ip netns list`. The caller has DELeted what it wanted and
/// holds no handle on the run's namespaces any more (an open handle keeps a namespace,
/// and its links, alive after the delete).
fn remove_run(prefix: &str) -> CleanReport {
    let mut report = CleanReport::default();
    let mut found = false;
    match netns::list_run(prefix) {
        Ok(names) => {
            for name in names {
                found = true;
                match netns::delete(&name) {
                    Ok(()) => report.namespaces_removed.push(name),
                    Err(e) => report.errors.push(format!("{e:#}")),
                }
            }
        }
        Err(e) => report.errors.push(format!("{e:#}")),
    }
    let dir = state_dir(prefix);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => found = true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            found = true;
            report.errors.push(format!("remove {}: {e}", dir.display()))
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
                if let Err(e) = removed {
                    report.errors.push(format!("remove {}: {e}", d.display()));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => report.errors.push(format!("read {ETC_NETNS}: {e}")),
    }
    if found {
        report.swept.push(prefix.to_string());
    }
    // Leave no empty /run/knetlab (or /etc/netns) behind; fails harmlessly while other
    // runs (or anyone else) use it.
    let _ = std::fs::remove_dir(STATE_ROOT);
    let _ = std::fs::remove_dir(ETC_NETNS);
    let deadline = Instant::now() + GONE_TIMEOUT;
    loop {
        let left = netns::list_run(prefix).unwrap_or_default();
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            report.errors.push(format!(
                "namespaces still listed after the sweep: {}",
                left.join(" ")
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    report
}

/// DELs every attachment cached under the run's state directory, in the node namespace
/// it was made in. Attachments whose node namespace is gone need no DEL (their links
/// went with it, and the IPAM state goes with the state directory).
fn del_cached_attachments(prefix: &str) -> (usize, Vec<String>) {
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
        Err(e) => {
            errors.push(format!("read {}: {e}", root.display()));
            vec![]
        }
    };
    for node_dir in nodes {
        let Some(node) = node_dir.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let cache_dir = cni::NodeDirs::new(&root, node).cache;
        let (entries, errs) = cni::cache::read_dir(&cache_dir);
        errors.extend(errs);
        for entry in entries {
            // Never run a plugin outside this run's own namespaces.
            if prefix_of(&entry.node_netns) != Some(prefix) {
                errors.push(format!(
                    "cache entry {} names namespace {}, which is not of run {prefix}; not DELeted",
                    entry.container_id, entry.node_netns
                ));
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
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    (done, errors)
}

/// The state directory of a run.
pub fn state_dir(prefix: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(prefix)
}

/// Records this process as the owner of the run whose state directory is `dir`: its pid
/// and its start time (so a recycled pid is not mistaken for the owner).
pub fn write_owner(dir: &Path) -> Result<()> {
    let pid = std::process::id();
    let start = start_time(pid).unwrap_or(0);
    let path = dir.join(OWNER_FILE);
    std::fs::write(&path, format!("{pid} {start}\n"))
        .with_context(|| format!("write {}", path.display()))
}

/// The pid of the run's owner if that process is still alive.
pub fn live_owner(dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(dir.join(OWNER_FILE)).ok()?;
    let mut it = text.split_whitespace();
    let pid: u32 = it.next()?.parse().ok()?;
    let recorded: u64 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let now = start_time(pid)?;
    (recorded == 0 || recorded == now).then_some(pid)
}

/// A live process that holds one of the run's namespaces open or has a thread inside
/// one. A namespace file is a bind mount of an nsfs inode; an open handle
/// (`/proc/PID/fd/*`) or a thread's namespace (`/proc/PID/task/*/ns/net`) resolves to
/// the same device and inode.
fn namespace_user(prefix: &str) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let ours: BTreeSet<(u64, u64)> = netns::list_run(prefix)
        .ok()?
        .iter()
        .filter_map(|n| id(&Path::new(netns::NETNS_DIR).join(n)))
        .collect();
    if ours.is_empty() {
        return None;
    }
    let holds = |p: &Path| id(p).is_some_and(|x| ours.contains(&x));
    let entries = |dir: PathBuf| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    };
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort();
    pids.into_iter().find(|pid| {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        entries(proc_dir.join("fd")).iter().any(|fd| holds(fd))
            || entries(proc_dir.join("task"))
                .iter()
                .any(|t| holds(&t.join("ns/net")))
    })
}

/// A process's start time in clock ticks since boot (field 22 of /proc/PID/stat).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
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
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
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
