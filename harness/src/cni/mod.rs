//! A small libcni: knetlab wires pods with the real CNI reference plugins
//! (`/usr/lib/cni/{bridge,host-local,loopback}`), invoked exactly as a container runtime
//! invokes them. [`conflist`] writes and loads the node's network configurations,
//! [`exec`] runs them (ADD, CHECK, DEL), [`result`] parses what plugins print, and
//! [`cache`] keeps each attachment's result on disk so a later process can DEL it.

use std::path::PathBuf;

use serde_json::{Map, Value};

pub mod cache;
pub mod capabilities;
pub mod conflist;
pub mod exec;
pub mod result;

pub use conflist::{ConfList, NodeDirs, NodeNetworks};
pub use exec::{CheckNote, CheckReport, add, check, del, del_cached};
pub use result::{CniResult, PluginError};

/// Where Debian's containernetworking-plugins live (CNI_PATH).
pub const CNI_PATH: &str = "/usr/lib/cni";

/// A CNI operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Check,
    Del,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Check => "CHECK",
            Command::Del => "DEL",
        }
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One attachment's runtime parameters: what goes into CNI_CONTAINERID, CNI_NETNS,
/// CNI_IFNAME and CNI_ARGS, plus where the plugin runs and names for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConf {
    pub container_id: String,
    /// The pod's namespace path (`/var/run/netns/<name>`).
    pub netns: PathBuf,
    pub ifname: String,
    /// `CNI_ARGS` pairs (containerd passes the pod's namespace and name this way).
    pub args: Vec<(String, String)>,
    /// libcni's `CapabilityArgs`: runtimeConfig values by capability name
    /// (`portMappings`, `bandwidth`), injected only into plugins that declare the
    /// capability, on every command.
    pub capability_args: Map<String, Value>,
    /// The node namespace the plugin runs in (its current namespace; `cni0` lives there).
    pub node_netns: String,
    /// `ns/name`, for messages.
    pub pod: String,
    /// The node's name, for messages.
    pub node: String,
    /// Where the plugin binaries are (libcni's `CNIConfig.Path`; [`CNI_PATH`] unless a
    /// run points elsewhere, as the fault tests do with a private copy).
    pub plugin_dir: PathBuf,
}

/// A failed CNI operation, naming the plugin, pod, interface and node.
#[derive(Debug, thiserror::Error)]
#[error("CNI {command} of plugin {plugin} for pod {pod} ({ifname}) on node {node}: {kind}")]
pub struct CniError {
    pub command: Command,
    pub plugin: String,
    pub pod: String,
    pub ifname: String,
    pub node: String,
    /// Boxed: keeps `Result<_, CniError>` small on the happy path.
    pub kind: Box<CniErrorKind>,
}

/// What went wrong in a CNI operation.
#[derive(Debug, thiserror::Error)]
pub enum CniErrorKind {
    /// The plugin failed and said why (`{"code","msg","details"}` on stdout).
    #[error("plugin error code {}: {}{}", .0.code, .0.msg,
        if .0.details.is_empty() { String::new() } else { format!(" ({})", .0.details) })]
    Plugin(PluginError),
    /// The plugin failed without a CNI error object.
    #[error("plugin exited with {status}: {output}")]
    Failed { status: String, output: String },
    /// The plugin could not be started or fed.
    #[error("{0}")]
    Exec(String),
    /// The plugin succeeded but printed something that is not a CNI result.
    #[error("unreadable result: {0}")]
    Output(String),
    /// The result cache could not be read or written.
    #[error("result cache: {0}")]
    Cache(String),
}

/// Maps `f` over `jobs` on up to `threads` OS threads and returns the results in job
/// order. CNI calls are process spawns that mostly wait (for exec, the plugin's Go
/// runtime, and the kernel's RCU grace periods on link deletion), so a few threads
/// overlap them well even on two cores.
pub fn parallel_map<J: Send, R: Send>(
    jobs: Vec<J>,
    threads: usize,
    f: impl Fn(J) -> R + Sync,
) -> Vec<R> {
    use std::sync::Mutex;
    let n = jobs.len();
    let threads = threads.clamp(1, n.max(1));
    let queue: Mutex<std::vec::IntoIter<(usize, J)>> =
        Mutex::new(jobs.into_iter().enumerate().collect::<Vec<_>>().into_iter());
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    // Take the lock only to pop, never across the job.
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                    let Some((i, job)) = next else { break };
                    let r = f(job);
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.expect("every job ran"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_map_keeps_job_order() {
        let out = parallel_map((0..50).collect(), 4, |i: u32| {
            std::thread::sleep(std::time::Duration::from_micros(u64::from(50 - i)));
            i * 2
        });
        assert_eq!(out, (0..50).map(|i| i * 2).collect::<Vec<_>>());
        assert!(parallel_map(Vec::<u8>::new(), 3, |x| x).is_empty());
    }

    #[test]
    fn plugin_errors_name_everything() {
        let e = CniError {
            command: Command::Add,
            plugin: "bridge".into(),
            pod: "x/a".into(),
            ifname: "eth0".into(),
            node: "n1".into(),
            kind: Box::new(CniErrorKind::Plugin(PluginError {
                code: 7,
                msg: "failed to set bridge addr".into(),
                details: "eexist".into(),
            })),
        };
        assert_eq!(
            e.to_string(),
            "CNI ADD of plugin bridge for pod x/a (eth0) on node n1: plugin error code 7: failed to set bridge addr (eexist)"
        );
    }
}
