//! Faults are never verdicts: each test breaks one piece of infrastructure during a real
//! run (between two steps, through the run's `before_step` hook, or in what the run is
//! given) and checks that the run reports an infrastructure error naming the fault (a
//! setup failure, or `error` cells whose text names it), never `deny`, `dropped`,
//! `rejected` or `refused` verdicts. One test per fault:
//! - a pod's veth deleted in its node's namespace;
//! - a node's route to another node's pod subnet removed;
//! - the cluster DNS server killed (it runs inside the harness: its sockets, found with
//!   `ss -e`, are closed under it, as its death would close them);
//! - the Ingress controller's nginx killed (SIGKILL to the master and its workers);
//! - a CNI plugin binary missing (from a private directory of links to the installed
//!   plugins that the run is pointed at; the machine's plugin directory is not touched);
//! - a conflist the bridge plugin rejects;
//! - a node's conntrack table full (`conntrack -R` inserts entries until the kernel says
//!   no: `nf_conntrack_max` cannot be written inside a namespace on this kernel, so the
//!   namespace's table is filled to the host's limit instead);
//! - a full `/run` (a small tmpfs holding a copy of this run's state directory, mounted
//!   over that directory alone, then filled; unmounted and swept afterwards).
//!
//! Every test sweeps its run's prefix at the end and checks that nothing of it is left.
//! Needs root: ignored unless run with `--include-ignored` (see `common`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use harness::run::{RunOptions, RunReport, StepAhead, StepHook, new_prefix};
use harness::system::Tool;
use sim::matrix::Outcome;
use sim::objects::PodRef;
use sim::plan::Plan;
use sim::scenario::{Peer, Scenario};

/// Two nodes, two namespaces of two pods, no policy; the second step only relabels a
/// namespace, so whatever breaks before it is the only thing that changed.
const TWO_NODES: &str = "\
name: fault
summary: A fault injected between two steps.
cluster: {nodes: 2, network: host-gw}
model: {namespaces: [x, y], pods: [a, b], ports: [80], protocols: [TCP, UDP]}
probe: {ports: [TCP/80, UDP/80]}
expect: {default: allow}
steps:
  - name: relabel y
    label:
      - {kind: Namespace, name: y, labels: {ns: y, touched: \"yes\"}}
";

/// [`TWO_NODES`] whose second step adds a pod (a CNI ADD).
const ADD_A_POD: &str = "\
name: fault
summary: A fault injected before a pod is added.
cluster: {nodes: 2, network: host-gw}
model: {namespaces: [x, y], pods: [a, b], ports: [80], protocols: [TCP]}
probe: {ports: [TCP/80]}
expect: {default: allow}
steps:
  - name: add x/c
    apply:
      - {apiVersion: v1, kind: Pod, metadata: {name: c, namespace: x, labels: {pod: c}},
         spec: {nodeName: n1, containers: [{name: c, image: x, ports: [{containerPort: 80}]}]}}
";

fn scenario(text: &str) -> Scenario {
    sim::scenario::parse_str(Path::new("fault.yaml"), text).unwrap_or_else(|e| panic!("{e}"))
}

fn repo_scenario(name: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(name);
    sim::scenario::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// What the injection did (or why it could not), set by the hook.
type Injected = Arc<Mutex<Option<Result<String, String>>>>;

/// Runs `scenario`, calling `inject` with the run's plan before its second step.
async fn run_with_fault(
    scenario: &Scenario,
    prefix: &str,
    plugin_dir: Option<PathBuf>,
    inject: impl Fn(&Plan) -> Result<String, String> + Send + Sync + 'static,
) -> (Result<RunReport>, Option<Result<String, String>>) {
    let plan = Plan::new(prefix, &scenario.cluster).expect("plan");
    let injected: Injected = Arc::default();
    let seen = injected.clone();
    let hook = StepHook(Arc::new(move |ahead: StepAhead| {
        if ahead.index == 1 {
            *seen.lock().unwrap() = Some(inject(&plan));
        }
    }));
    let opts = RunOptions {
        prefix: prefix.to_string(),
        before_step: Some(hook),
        cni_plugin_dir: plugin_dir,
        ..RunOptions::default()
    };
    let result = harness::run::run(scenario, &opts).await;
    let injected = injected.lock().unwrap().take();
    (result, injected)
}

/// Runs a tool and returns its stdout, or what went wrong.
fn tool(tool: Tool, args: &[&str]) -> Result<String, String> {
    let out = Command::new(tool.binary())
        .args(args)
        .output()
        .map_err(|e| format!("{tool}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{tool} {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The run must have failed with an error that says `words` (each, case-insensitive);
/// a report (verdicts) fails the test with the cells it measured.
fn assert_setup_failure(
    result: &Result<RunReport>,
    injected: Option<Result<String, String>>,
    words: &[&str],
) {
    let done = injected.expect("the hook ran before the second step");
    let done = done.unwrap_or_else(|e| panic!("could not inject the fault: {e}"));
    eprintln!("injected: {done}");
    match result {
        Ok(report) => {
            let verdicts: Vec<String> = report
                .steps
                .iter()
                .flat_map(|s| s.cells.iter().map(move |c| (s, c)))
                .filter(|(_, c)| c.measured.outcome != Outcome::Allowed)
                .map(|(s, c)| {
                    format!(
                        "{}: {} -> {} {} {} ({})",
                        s.name,
                        c.from,
                        c.to,
                        c.port,
                        c.measured.outcome.as_str(),
                        c.measured.detail
                    )
                })
                .take(10)
                .collect();
            panic!(
                "the fault ({done}) was reported as a result, not an error: {}",
                verdicts.join("; ")
            );
        }
        Err(e) => {
            let text = format!("{e:#}");
            eprintln!("the run said: {text}");
            let lower = text.to_lowercase();
            for w in words {
                assert!(
                    lower.contains(&w.to_lowercase()),
                    "the error does not say {w:?}: {text}"
                );
            }
        }
    }
}

/// Sweeps the run's prefix and checks that nothing of it is left.
fn assert_nothing_left(prefix: &str) {
    let report = harness::sweep::clean_prefix(prefix);
    assert!(report.is_ok(), "sweep {prefix}: {}", report.errors_text());
    let left = harness::netns::list_run(prefix).expect("list namespaces");
    assert!(left.is_empty(), "namespaces of {prefix} left: {left:?}");
    assert!(
        !harness::sweep::state_dir(prefix).exists(),
        "{} is left",
        harness::sweep::state_dir(prefix).display()
    );
}

/// The node-side end of `pod`'s veth: the link in some node whose index is the peer of
/// the pod's `eth0` and whose own peer is that `eth0` (`ip -o link` prints
/// `IDX: NAME@ifPEER: ...`), preferring the one that names the pod's namespace.
fn node_veth_of(plan: &Plan, pod: &PodRef) -> Result<(String, String), String> {
    let pod_ns = plan.pod_netns(pod);
    let eth0 = tool(Tool::Ip, &["-n", &pod_ns, "-o", "link", "show", "eth0"])?;
    let (own_index, rest) = eth0
        .split_once(": eth0@if")
        .ok_or_else(|| format!("no peer index in {eth0:?}"))?;
    let peer_index = rest.split(':').next().unwrap_or("").to_string();
    let mut found = Vec::new();
    for node in &plan.nodes {
        let links = tool(Tool::Ip, &["-n", &node.netns, "-o", "link"])?;
        for line in links.lines() {
            let (index, rest) = line.split_once(": ").unwrap_or(("", ""));
            if index == peer_index && rest.contains(&format!("@if{own_index}:")) {
                let name = rest.split(['@', ':']).next().unwrap_or("").to_string();
                let named = line.contains(&format!("link-netns {pod_ns}"));
                found.push((named, node.netns.clone(), name));
            }
        }
    }
    found.sort();
    match found.pop() {
        Some((named, ns, name)) if named || found.is_empty() => Ok((ns, name)),
        _ => Err(format!(
            "no single node holds the peer (index {peer_index}) of {pod}'s eth0"
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: breaks a live cluster"]
async fn a_deleted_pod_veth_is_an_infrastructure_fault() {
    common::require_root(&[]);
    let prefix = new_prefix();
    let (result, injected) = run_with_fault(&scenario(TWO_NODES), &prefix, None, |plan| {
        let (node_ns, veth) = node_veth_of(plan, &PodRef::new("x", "a"))?;
        tool(Tool::Ip, &["-n", &node_ns, "link", "del", &veth])?;
        Ok(format!("deleted {veth} in {node_ns}"))
    })
    .await;
    assert_setup_failure(
        &result,
        injected,
        &["infrastructure fault", "pod x/a", "eth0"],
    );
    assert_nothing_left(&prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: breaks a live cluster"]
async fn a_removed_node_route_is_an_infrastructure_fault() {
    common::require_root(&[]);
    let prefix = new_prefix();
    let (result, injected) = run_with_fault(&scenario(TWO_NODES), &prefix, None, |plan| {
        let (n1, n2) = (&plan.nodes[0], &plan.nodes[1]);
        let subnet = n2.pod_subnet.to_string();
        tool(Tool::Ip, &["-n", &n1.netns, "route", "del", &subnet])?;
        Ok(format!("removed {subnet} from {}", n1.netns))
    })
    .await;
    let plan = Plan::new(&prefix, &scenario(TWO_NODES).cluster).unwrap();
    let route = format!("node n1: no route {}", plan.nodes[1].pod_subnet);
    assert_setup_failure(&result, injected, &["infrastructure fault", &route]);
    assert_nothing_left(&prefix);
}

/// Kills sockets of this process (the DNS server runs inside the harness) by inode: each
/// descriptor is replaced with `/dev/null`, so the kernel closes the socket as it does
/// when its process dies. (`ss -K` is no substitute: it aborts a TCP listener, but a UDP
/// socket bound to its port stays bound.)
fn close_sockets(inodes: &[&str]) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let null = std::fs::File::open("/dev/null").map_err(|e| e.to_string())?;
    let mut closed = 0;
    for e in std::fs::read_dir("/proc/self/fd").map_err(|e| e.to_string())? {
        let e = e.map_err(|e| e.to_string())?;
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if inodes.iter().any(|i| target == format!("socket:[{i}]")) {
            // SAFETY: dup2 onto a descriptor this process owns; the server's next use of
            // it fails (not a socket), which is what a dead server's clients see anyway.
            if unsafe { nix::libc::dup2(null.as_raw_fd(), fd) } < 0 {
                return Err(format!(
                    "dup2 onto {fd}: {}",
                    std::io::Error::last_os_error()
                ));
            }
            closed += 1;
        }
    }
    if closed < inodes.len() {
        return Err(format!("found {closed} of the sockets {inodes:?}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: breaks a live cluster"]
async fn a_killed_dns_server_makes_error_cells() {
    common::require_root(&[Tool::Ss]);
    let prefix = new_prefix();
    let s = repo_scenario("dns.yaml");
    let (result, injected) = run_with_fault(&s, &prefix, None, |plan| {
        let ns = plan.pod_netns(&PodRef::new(sim::dns::NAMESPACE, sim::dns::POD_NAME));
        // Every socket on port 53 in the DNS pod: the UDP one and the TCP listener.
        let listed = tool(
            Tool::Ip,
            &[
                "netns",
                "exec",
                &ns,
                Tool::Ss.binary(),
                "-H",
                "-e",
                "-a",
                "-t",
                "-u",
                "sport = :53",
            ],
        )?;
        let inodes: Vec<&str> = listed
            .split_whitespace()
            .filter_map(|w| w.strip_prefix("ino:"))
            .collect();
        if inodes.len() < 2 {
            return Err(format!(
                "expected the UDP and TCP sockets on :53, found: {listed}"
            ));
        }
        close_sockets(&inodes)?;
        let left = tool(
            Tool::Ip,
            &[
                "netns",
                "exec",
                &ns,
                Tool::Ss.binary(),
                "-H",
                "-a",
                "-t",
                "-u",
                "sport = :53",
            ],
        )?;
        if !left.trim().is_empty() {
            return Err(format!("sockets on :53 survived: {left}"));
        }
        Ok(format!(
            "closed the DNS server's sockets {inodes:?} in {ns}"
        ))
    })
    .await;
    let done = injected
        .expect("the hook ran")
        .expect("the fault was injected");
    eprintln!("injected: {done}");
    let report = result.unwrap_or_else(|e| panic!("the run failed: {e:#}"));
    assert_nothing_left(&prefix);
    let before = &report.steps[0];
    let after = &report.steps[1];
    let dns_cells = |s: &sim::matrix::StepResult| {
        s.cells
            .iter()
            .filter(|c| matches!(c.to, Peer::Dns { .. }))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(
        dns_cells(before)
            .iter()
            .any(|c| c.measured.outcome == Outcome::Allowed),
        "before the fault some name resolved and answered"
    );
    let after = dns_cells(after);
    assert!(!after.is_empty(), "the second step probes dns/ cells");
    for c in &after {
        // A name resolved before the fault may be answered from nowhere now; none may
        // be a verdict.
        assert_eq!(
            c.measured.outcome,
            Outcome::Error,
            "{} -> {} {}: {:?}",
            c.from,
            c.to,
            c.port,
            c.measured
        );
        assert!(
            c.measured.detail.contains("cluster DNS server")
                && c.measured.detail.contains("does not answer"),
            "the error does not name the fault: {}",
            c.measured.detail
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: breaks a live cluster"]
async fn a_killed_nginx_is_an_infrastructure_fault() {
    common::require_root(&[Tool::Nginx]);
    let prefix = new_prefix();
    let s = repo_scenario("ingress-fanout.yaml");
    let (result, injected) = run_with_fault(&s, &prefix, None, |plan| {
        let pid_file = harness::sweep::state_dir(&plan.prefix)
            .join(harness::ingress::DIR)
            .join("nginx.pid");
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .map_err(|e| format!("{}: {e}", pid_file.display()))?
            .trim()
            .parse()
            .map_err(|e| format!("{}: {e}", pid_file.display()))?;
        let workers = harness::ingress::workers(pid);
        // The master first, so it cannot start new workers; then the workers, which
        // would otherwise go on serving.
        for p in std::iter::once(pid).chain(workers.iter().copied()) {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .map_err(|e| format!("kill {p}: {e}"))?;
        }
        Ok(format!("killed nginx {pid} and its workers {workers:?}"))
    })
    .await;
    assert_setup_failure(
        &result,
        injected,
        &["infrastructure fault", "nginx", "not running", "SIGKILL"],
    );
    assert_nothing_left(&prefix);
}

/// A directory of links to the installed CNI plugins, for a run to use and break.
struct PluginDir(PathBuf);

impl PluginDir {
    fn new(prefix: &str) -> PluginDir {
        let dir = std::env::temp_dir().join(format!("knetlab-faults-cni-{prefix}"));
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(harness::cni::CNI_PATH).unwrap() {
            let e = e.unwrap();
            std::os::unix::fs::symlink(e.path(), dir.join(e.file_name())).unwrap();
        }
        PluginDir(dir)
    }
}

impl Drop for PluginDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: breaks a live cluster"]
async fn a_missing_cni_plugin_is_a_setup_failure() {
    common::require_root(&[]);
    let prefix = new_prefix();
    let plugins = PluginDir::new(&prefix);
    let bridge = plugins.0.join("bridge");
    let (result, injected) = run_with_fault(
        &scenario(ADD_A_POD),
        &prefix,
        Some(plugins.0.clone()),
        move |_| {
            std::fs::remove_file(&bridge).map_err(|e| format!("{}: {e}", bridge.display()))?;
            Ok(format!("removed {}", bridge.display()))
        },
    )
    .await;
    assert!(
        Path::new(harness::cni::CNI_PATH).join("bridge").is_file(),
        "the installed plugin is untouched"
    );
    assert_setup_failure(
        &result,
        injected,
        &[
            "CNI ADD of plugin bridge for pod x/c",
            "plugin binary missing",
            &plugins.0.display().to_string(),
        ],
    );
    assert_nothing_left(&prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: builds a cluster"]
async fn a_conflist_the_plugin_rejects_is_a_setup_failure() {
    common::require_root(&[]);
    // Structurally a fine list (knetlab's checks pass it on); the bridge plugin cannot
    // read a string where it wants a boolean.
    let text = TWO_NODES.replace(
        "cluster: {nodes: 2, network: host-gw}",
        "cluster:\n  nodes: 2\n  network: host-gw\n  cni:\n    conflist:\n      \
         cniVersion: 1.0.0\n      name: broken\n      plugins:\n        \
         - {type: bridge, bridge: cni0, isGateway: true, hairpinMode: \"yes\", \
         ipam: {type: host-local, subnet: 10.244.0.0/16}}",
    );
    let prefix = new_prefix();
    let opts = RunOptions {
        prefix: prefix.clone(),
        ..RunOptions::default()
    };
    let result = harness::run::run(&scenario(&text), &opts).await;
    assert_setup_failure(
        &result,
        Some(Ok("a conflist with hairpinMode: \"yes\"".into())),
        &["CNI ADD of plugin bridge", "hairpinMode", "bool"],
    );
    assert_nothing_left(&prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: breaks a live cluster"]
async fn a_full_conntrack_table_is_an_infrastructure_fault() {
    common::require_root(&[]);
    let prefix = new_prefix();
    let (result, injected) = run_with_fault(&scenario(TWO_NODES), &prefix, None, |plan| {
        let node = &plan.nodes[0].netns;
        let limit: u64 = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max")
            .map_err(|e| e.to_string())?
            .trim()
            .parse()
            .map_err(|e| format!("nf_conntrack_max: {e}"))?;
        // One more than the limit, each a distinct assured flow (never evicted early),
        // from addresses no run uses; the last inserts fail once the table is full.
        let file = std::env::temp_dir().join(format!("knetlab-faults-ct-{}", plan.prefix));
        let mut lines = String::new();
        for i in 0..=limit {
            let (a, b, port) = ((i >> 16) & 0xff, (i >> 8) & 0xff, 1024 + (i & 0xff));
            lines.push_str(&format!(
                "-I -s 198.18.{a}.{b} -d 198.19.0.1 -p tcp --sport {port} --dport 80 \
                 --state ESTABLISHED -t 3600 -u ASSURED\n"
            ));
        }
        std::fs::write(&file, lines).map_err(|e| e.to_string())?;
        let filled = Command::new(Tool::Ip.binary())
            .args(["netns", "exec", node, Tool::Conntrack.binary(), "-R"])
            .arg(&file)
            .output();
        let _ = std::fs::remove_file(&file);
        filled.map_err(|e| e.to_string())?;
        let count = tool(
            Tool::Ip,
            &["netns", "exec", node, Tool::Conntrack.binary(), "-C"],
        )?;
        if count.trim().parse::<u64>().ok() != Some(limit) {
            return Err(format!("{node} holds {} of {limit} entries", count.trim()));
        }
        Ok(format!("filled {node}'s conntrack table ({limit} entries)"))
    })
    .await;
    assert_setup_failure(
        &result,
        injected,
        &["infrastructure fault", "node n1", "conntrack table full"],
    );
    assert_nothing_left(&prefix);
}

/// A small tmpfs over one run's state directory (with a copy of what it held), filled
/// to the last byte; unmounted when dropped.
struct FullRun {
    over: PathBuf,
}

impl FullRun {
    fn mount(state: &Path) -> Result<FullRun, String> {
        use nix::mount::{MntFlags, MsFlags, mount, umount2};
        let staging = std::env::temp_dir().join(format!(
            "knetlab-faults-run-{}",
            state.file_name().unwrap_or_default().to_string_lossy()
        ));
        std::fs::create_dir_all(&staging).map_err(|e| e.to_string())?;
        mount(
            Some("tmpfs"),
            &staging,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("size=4m,mode=0700"),
        )
        .map_err(|e| format!("mount a tmpfs on {}: {e}", staging.display()))?;
        let staged = (|| {
            copy_tree(state, &staging).map_err(|e| format!("copy {}: {e}", state.display()))?;
            fill(&staging.join("filler"))?;
            mount(
                Some(&staging),
                state,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| format!("bind it over {}: {e}", state.display()))
        })();
        let _ = umount2(&staging, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&staging);
        staged?;
        Ok(FullRun {
            over: state.to_path_buf(),
        })
    }
}

impl Drop for FullRun {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.over, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dst = to.join(e.file_name());
        let kind = e.file_type()?;
        if kind.is_dir() {
            std::fs::create_dir_all(&dst)?;
            copy_tree(&e.path(), &dst)?;
        } else if kind.is_file() {
            std::fs::copy(e.path(), &dst)?;
        }
    }
    Ok(())
}

/// Writes `path` until the filesystem has no room left.
fn fill(path: &Path) -> Result<(), String> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(|e| e.to_string())?;
    let chunk = vec![0u8; 4096];
    loop {
        match f.write(&chunk) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => return Ok(()),
            Err(e) => return Err(format!("fill {}: {e}", path.display())),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: breaks a live cluster"]
async fn a_full_run_directory_is_a_setup_failure() {
    common::require_root(&[]);
    let prefix = new_prefix();
    let mounted: Arc<Mutex<Option<FullRun>>> = Arc::default();
    let keep = mounted.clone();
    let (result, injected) = run_with_fault(&scenario(ADD_A_POD), &prefix, None, move |plan| {
        let full = FullRun::mount(&harness::sweep::state_dir(&plan.prefix))?;
        *keep.lock().unwrap() = Some(full);
        Ok("mounted a full tmpfs over the run's state directory".into())
    })
    .await;
    // Unmount before looking at anything, so the sweep below sees the real directory.
    drop(mounted.lock().unwrap().take());
    assert_setup_failure(&result, injected, &["no space left on device"]);
    assert_nothing_left(&prefix);
}
