//! The ingress controller: Debian's nginx inside the `ingress-nginx/ingress-nginx-controller`
//! pod's network namespace, configured from the cluster's Ingress objects by
//! [`sim::ingress::render`], as ingress-nginx does. Its files (nginx.conf, certificates,
//! pid file, logs, temp paths) live in the run's state directory
//! (`/run/knetlab/<prefix>/ingress`), so `cargo xtask clean` finds a killed run's nginx by
//! its command line and process group ([`crate::sweep::processes`]) before the namespaces
//! go.
//!
//! [`Controller::sync`] renders the configuration; the first time it starts nginx (in the
//! foreground, `daemon off`, so the master is our child), later only when the text changed
//! it reloads it (`nginx -s reload`, which reads the pid file) and waits for a new worker.
//! [`Controller::stop`] ends the master by its pid (TERM, then KILL), which takes the
//! workers with it; dropping a controller stops it too.
//!
//! The HTTP(S) probes through it are in [`client`] (TLS settings in [`tls`]); the
//! self-signed certificates it serves for Secrets a scenario does not give are made by
//! [`certificate`].

pub mod certificate;
pub mod checks;
pub mod client;
pub mod tls;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sim::ingress::IngressModel;
use sim::ingress::render::{self, RenderOptions};

use crate::netns::Netns;
use crate::sweep::processes;

/// The directory under a run's state directory that holds the controller's files.
pub const DIR: &str = processes::INGRESS_DIR;
/// nginx's binary (Debian's `nginx` package).
pub const NGINX: &str = crate::system::Tool::Nginx.binary();
/// How long nginx may take to start or to load a new configuration.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stopped nginx may take to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// The controller's nginx is gone (see [`Controller::check_running`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "infrastructure fault: the ingress controller's nginx (pid {pid}) is not running ({status})"
)]
pub struct NginxDown {
    pub pid: u32,
    /// How it ended, as the kernel told its parent (`signal: 9 (SIGKILL)`).
    pub status: String,
}

/// What one [`Controller::sync`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncReport {
    /// `started`, `reloaded` or `unchanged`.
    pub action: &'static str,
    /// Time from writing the configuration until nginx served it.
    pub ms: f64,
    /// The configuration with endpoint IPs as `${ip:NS/POD}` and the directory as
    /// `$DIR` (for snapshots).
    pub config: String,
    /// Certificates generated for Secrets the scenario does not give: `ns/secret (hosts)`.
    pub generated_certificates: Vec<String>,
}

/// nginx running in the controller pod.
pub struct Controller {
    netns: Netns,
    pod_ip: Ipv4Addr,
    dir: PathBuf,
    child: Option<Child>,
    /// The configuration nginx runs now.
    running_config: Option<String>,
    /// Certificates already written: `(ns, secret)` → the hosts they were made for.
    certs: std::collections::BTreeMap<(String, String), Vec<String>>,
}

impl Controller {
    /// Prepares the controller's directory under `state_dir` (the run's); starts nothing.
    pub fn new(netns: Netns, pod_ip: Ipv4Addr, state_dir: &Path) -> Result<Self> {
        let dir = state_dir.join(DIR);
        for sub in ["", "certs", "tmp"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).with_context(|| format!("create {}", d.display()))?;
        }
        // Backends answer nginx's connections with HTTP (see probe::server).
        crate::probe::server::expect_http_from(pod_ip);
        Ok(Self {
            netns,
            pod_ip,
            dir,
            child: None,
            running_config: None,
            certs: Default::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The controller pod's address.
    pub fn pod_ip(&self) -> Ipv4Addr {
        self.pod_ip
    }

    /// The nginx master's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Writes certificates and the configuration for `model`, then starts or reloads
    /// nginx if the configuration changed, and waits until it serves it.
    pub fn sync(&mut self, model: &IngressModel) -> Result<SyncReport> {
        let generated = self.write_certificates(model)?;
        let dir = self.dir.display().to_string();
        let config = render::render(
            model,
            &RenderOptions {
                dir: dir.clone(),
                ips: true,
            },
        );
        let shown = render::render(
            model,
            &RenderOptions {
                dir: "$DIR".into(),
                ips: false,
            },
        );
        if self.running_config.as_deref() == Some(config.as_str()) && self.running() {
            return Ok(SyncReport {
                action: "unchanged",
                ms: 0.0,
                config: shown,
                generated_certificates: generated,
            });
        }
        let conf_path = self.dir.join("nginx.conf");
        std::fs::write(&conf_path, &config)
            .with_context(|| format!("write {}", conf_path.display()))?;
        let t = Instant::now();
        let action = if self.running() {
            self.reload(&conf_path)?;
            "reloaded"
        } else {
            self.start(&conf_path)?;
            "started"
        };
        self.running_config = Some(config);
        Ok(SyncReport {
            action,
            ms: (t.elapsed().as_secs_f64() * 1e5).round() / 100.0,
            config: shown,
            generated_certificates: generated,
        })
    }

    fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    fn start(&mut self, conf: &Path) -> Result<()> {
        let child = self
            .netns
            .command(NGINX)
            .arg("-c")
            .arg(conf)
            .arg("-e")
            .arg(self.dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "start {NGINX} -c {} in namespace {}",
                    conf.display(),
                    self.netns.name()
                )
            })?;
        let pid = child.id();
        self.child = Some(child);
        // Ready when the master wrote its pid and has a worker.
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if !self.running() {
                bail!(
                    "nginx exited at start in namespace {}: {}",
                    self.netns.name(),
                    self.log_tail()
                );
            }
            let pid_written = std::fs::read_to_string(self.dir.join("nginx.pid"))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                == Some(pid);
            if pid_written && !workers(pid).is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "nginx did not start within {} s in namespace {}: {}",
                    READY_TIMEOUT.as_secs(),
                    self.netns.name(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// `nginx -s reload`, then waits for a worker that did not exist before (nginx starts
    /// new workers only once the new configuration loaded) and for the old workers to be
    /// gone: until they leave, they still accept connections on the shared listening
    /// sockets and answer with the old configuration.
    fn reload(&mut self, conf: &Path) -> Result<()> {
        let pid = self.pid().ok_or_else(|| anyhow!("nginx is not running"))?;
        let before = workers(pid);
        let out = self
            .netns
            .command(NGINX)
            .arg("-c")
            .arg(conf)
            .arg("-e")
            .arg(self.dir.join("error.log"))
            .args(["-s", "reload"])
            .output()
            .with_context(|| format!("run {NGINX} -s reload in namespace {}", self.netns.name()))?;
        if !out.status.success() {
            bail!(
                "nginx -s reload failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let now = workers(pid);
            if now.iter().any(|w| !before.contains(w)) && !now.iter().any(|w| before.contains(w)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "nginx did not load the new configuration within {} s: {}",
                    READY_TIMEOUT.as_secs(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }

    /// Writes each certificate the model needs: the Secret's own, or a self-signed one
    /// made with rcgen for the hosts (once; again only if the hosts change), and
    /// the default certificate when some host is served over TLS. Returns what it
    /// generated in this call.
    fn write_certificates(&mut self, model: &IngressModel) -> Result<Vec<String>> {
        let mut generated = Vec::new();
        if !model.has_tls() {
            return Ok(generated);
        }
        let certs = self.dir.join("certs");
        let default = certs.join(format!("{}.crt", render::DEFAULT_CERT));
        if !default.exists() {
            self_signed(
                &certs,
                render::DEFAULT_CERT,
                "Kubernetes Ingress Controller Fake Certificate",
                &[],
            )?;
        }
        for c in &model.certificates {
            let key = (c.namespace.clone(), c.secret.clone());
            let name = render::cert_name(Some(&key));
            match &c.pem {
                Some((crt, k)) => {
                    write_private(&certs.join(format!("{name}.crt")), crt)?;
                    write_private(&certs.join(format!("{name}.key")), k)?;
                }
                None => {
                    if self.certs.get(&key) == Some(&c.hosts) {
                        continue;
                    }
                    let cn = c.hosts.first().cloned().unwrap_or_else(|| c.secret.clone());
                    self_signed(&certs, &name, &cn, &c.hosts)?;
                    generated.push(format!(
                        "{}/{} ({})",
                        c.namespace,
                        c.secret,
                        c.hosts.join(", ")
                    ));
                }
            }
            self.certs.insert(key, c.hosts.clone());
        }
        Ok(generated)
    }

    /// Whether the nginx master we started is still there. One that died (killed, or
    /// crashed) is an infrastructure fault: the `http:` checks would otherwise report
    /// its absence as refused connections.
    pub fn check_running(&mut self) -> Result<(), NginxDown> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        let pid = child.id();
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                // Reaped: forget it, so that stopping never signals a recycled pid.
                self.child = None;
                Err(NginxDown {
                    pid,
                    status: status.to_string(),
                })
            }
            Err(e) => Err(NginxDown {
                pid,
                status: format!("cannot be waited for: {e}"),
            }),
        }
    }

    /// Leaves nginx running (for `--keep`): `cargo xtask clean` ends it by its pid file.
    pub fn detach(mut self) {
        self.child = None;
    }

    /// Ends nginx by its pid: TERM (fast shutdown, workers included), KILL if it lingers.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = Pid::from_raw(child.id() as i32);
        let workers_before = workers(child.id());
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                _ => {
                    let _ = child.kill();
                    child
                        .wait()
                        .with_context(|| format!("wait for nginx (pid {pid}) to die"))?;
                    break;
                }
            }
        }
        // Workers leave with their master; make sure.
        for w in workers_before {
            if processes::running(w) {
                let _ = kill(Pid::from_raw(w as i32), Signal::SIGKILL);
            }
        }
        let _ = std::fs::remove_file(self.dir.join("nginx.pid"));
        Ok(())
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!("stopping nginx: {e:#}");
        }
        crate::probe::server::forget_http_from(self.pod_ip);
    }
}

/// Writes a certificate or key readable by root only (nginx's master reads them).
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("write {}", path.display()))
}

/// A self-signed certificate and key ([`certificate::self_signed`]) in `dir/NAME.crt|key`.
fn self_signed(dir: &Path, name: &str, cn: &str, hosts: &[String]) -> Result<()> {
    let (crt, key) = certificate::self_signed(cn, hosts)
        .with_context(|| format!("make the self-signed certificate {name} (CN {cn})"))?;
    write_private(&dir.join(format!("{name}.key")), &key)?;
    write_private(&dir.join(format!("{name}.crt")), &crt)
}

/// The children of a process (nginx's workers), from /proc.
pub fn workers(pid: u32) -> Vec<u32> {
    processes::children(pid)
}
