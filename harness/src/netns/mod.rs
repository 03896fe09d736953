//! Named network namespaces, made the way `ip netns add` makes them (a bind mount of the
//! namespace onto `/var/run/netns/NAME`), so people can `ip netns exec` into them. This is
//! the one place that switches a thread's namespace: [`Netns::enter`] runs a closure
//! inside a namespace and always switches back; [`Netns::command`] starts a process there.
//!
//! Before the first mount, `/var/run/netns` is made a shared bind mount of itself, as
//! iproute2 does ([`prepare_dir`]): otherwise another tool's `ip netns add` makes it one
//! later, and the bind hides the mounts made before, which then cannot be removed.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result, bail};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::{CloneFlags, setns, unshare};

/// Where named namespaces live (what `ip netns list` reads).
pub const NETNS_DIR: &str = "/var/run/netns";

/// The process's own network namespace, opened once before any switching happens.
fn home() -> &'static File {
    static HOME: OnceLock<File> = OnceLock::new();
    HOME.get_or_init(|| File::open("/proc/self/ns/net").expect("cannot open /proc/self/ns/net"))
}

/// Call once at start-up, on the main thread, before any namespace is entered.
pub fn init() {
    let _ = home();
}

/// A handle on a named network namespace. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Netns {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    file: File,
}

impl Netns {
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.inner.name)
    }

    /// Opens an existing named namespace.
    pub fn open(name: &str) -> Result<Netns> {
        let path = Path::new(NETNS_DIR).join(name);
        let file = File::open(&path)
            .with_context(|| format!("open network namespace {}", path.display()))?;
        Ok(Netns {
            inner: Arc::new(Inner {
                name: name.to_string(),
                file,
            }),
        })
    }

    /// Creates named namespaces, all on one short-lived thread (cheaper than a thread
    /// each). In each new namespace IPv6 is disabled before any link exists (IPv6
    /// address autoconfiguration makes big bridges superlinearly slow) and `lo` is left
    /// to the CNI loopback plugin. Creates nothing if a name is taken.
    pub fn create_many(names: &[String]) -> Result<Vec<Netns>> {
        init();
        prepare_dir()?;
        for name in names {
            let path = Path::new(NETNS_DIR).join(name);
            if path.exists() {
                bail!("network namespace {name} already exists");
            }
        }
        let owned: Vec<String> = names.to_vec();
        // unshare() moves the calling thread; a throwaway thread keeps every other
        // thread (and the tokio runtime) where it was.
        std::thread::spawn(move || -> Result<()> {
            for name in &owned {
                create_here(name)?;
            }
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("namespace creation thread panicked"))??;
        names.iter().map(|n| Netns::open(n)).collect()
    }

    /// Runs `f` with the current thread inside this namespace, then switches back.
    /// Sockets created inside stay in this namespace for their whole life, which is how
    /// probes and netlink connections are made. `f` must not block on async work.
    pub fn enter<T>(&self, f: impl FnOnce() -> T) -> T {
        struct Back;
        impl Drop for Back {
            fn drop(&mut self) {
                // A thread left in the wrong namespace would put later sockets there.
                if let Err(e) = setns(home().as_fd(), CloneFlags::CLONE_NEWNET) {
                    eprintln!("fatal: cannot switch back to the home network namespace: {e}");
                    std::process::abort();
                }
            }
        }
        init();
        setns(self.inner.file.as_fd(), CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns into network namespace {}: {e}", self.inner.name));
        let _back = Back;
        f()
    }

    /// A command that runs inside this namespace (the child joins it before exec).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
        let mut cmd = std::process::Command::new(program);
        let fd: RawFd = self.inner.file.as_raw_fd();
        // Keep the file open for as long as the command may spawn.
        let keep = self.inner.clone();
        unsafe {
            cmd.pre_exec(move || {
                let _ = &keep;
                let borrowed = std::os::fd::BorrowedFd::borrow_raw(fd);
                setns(borrowed, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
            });
        }
        cmd
    }

    /// Same as [`Netns::command`], for tokio.
    pub fn tokio_command(&self, program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
        tokio::process::Command::from(self.command(program))
    }

    /// Writes a sysctl under `/proc/sys/net` of this namespace (`key` like
    /// `net/ipv4/ip_forward`).
    pub fn set_sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{key}");
        self.enter(|| std::fs::write(&path, value))
            .with_context(|| format!("write {value} to {path} in namespace {}", self.name()))
    }

    /// Reads a sysctl under `/proc/sys/net` of this namespace.
    pub fn sysctl(&self, key: &str) -> Result<String> {
        let path = format!("/proc/sys/{key}");
        self.enter(|| std::fs::read_to_string(&path))
            .map(|s| s.trim().to_string())
            .with_context(|| format!("read {path} in namespace {}", self.name()))
    }

    /// An rtnetlink handle whose socket lives in this namespace. Needs a tokio runtime.
    pub fn netlink(&self) -> Result<rtnetlink::Handle> {
        let (conn, handle, _) = self
            .enter(rtnetlink::new_connection)
            .with_context(|| format!("open a netlink socket in namespace {}", self.name()))?;
        tokio::spawn(conn);
        Ok(handle)
    }
}

/// How many mounts [`delete`] takes off one namespace file at most.
const MAX_STACKED_MOUNTS: usize = 8;

/// Makes [`NETNS_DIR`] a shared mount point, once per process and exactly as iproute2's
/// `netns_add` does: `mount --make-rshared` it, and if that fails with EINVAL (not a
/// mount point yet) bind-mount it onto itself (`MS_BIND | MS_REC`, keeping any namespace
/// mounted there) and try again. Namespace mounts made inside then propagate to every
/// mount namespace, and a later `ip netns add` by anyone finds the mount point and adds
/// no bind on top of ours. This changes the root mount namespace, as `ip netns add` does
/// on every machine.
pub fn prepare_dir() -> Result<()> {
    static DONE: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|p| p.into_inner());
    if *done {
        return Ok(());
    }
    std::fs::create_dir_all(NETNS_DIR).with_context(|| format!("create {NETNS_DIR}"))?;
    let mut bound = false;
    loop {
        let shared = nix::mount::mount(
            None::<&str>,
            NETNS_DIR,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        );
        match shared {
            Ok(()) => break,
            Err(nix::errno::Errno::EINVAL) if !bound => {
                nix::mount::mount(
                    Some(NETNS_DIR),
                    NETNS_DIR,
                    Some("none"),
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .with_context(|| format!("mount --rbind {NETNS_DIR} {NETNS_DIR}"))?;
                bound = true;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("mount --make-rshared {NETNS_DIR}"));
            }
        }
    }
    *done = true;
    Ok(())
}

/// What `ip netns add` does, on the calling thread (which ends up inside the namespace).
fn create_here(name: &str) -> Result<()> {
    let path = Path::new(NETNS_DIR).join(name);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("create {}", path.display()))?;
    let made = (|| -> Result<()> {
        unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("bind-mount the new namespace on {}", path.display()))?;
        for key in ["all", "default"] {
            std::fs::write(format!("/proc/sys/net/ipv6/conf/{key}/disable_ipv6"), "1")
                .with_context(|| format!("disable IPv6 in namespace {name}"))?;
        }
        Ok(())
    })();
    if made.is_err() {
        let _ = nix::mount::umount2(&path, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&path);
    }
    made
}

/// Removes a named namespace (the kernel frees it once nothing uses it). Missing is fine.
pub fn delete(name: &str) -> Result<()> {
    let path = Path::new(NETNS_DIR).join(name);
    if !path.exists() {
        return Ok(());
    }
    // EINVAL: not (or no longer) a mount point; a half-made namespace has none. A file
    // can carry more than one mount (stacked by propagation): unmount until none is left.
    for _ in 0..MAX_STACKED_MOUNTS {
        match nix::mount::umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => break,
            Err(e) => return Err(e).with_context(|| format!("unmount {}", path.display())),
        }
    }
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("remove {}", path.display())),
    }
}

/// Names of every named namespace (what `ip netns list` shows).
pub fn list() -> Result<Vec<String>> {
    let dir = match std::fs::read_dir(NETNS_DIR) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("read {NETNS_DIR}")),
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// Names of the namespaces of one run (`<prefix>-*`), sorted.
pub fn list_run(prefix: &str) -> Result<Vec<String>> {
    Ok(list()?
        .into_iter()
        .filter(|n| sim::plan::prefix_of(n) == Some(prefix))
        .collect())
}

/// Whether this process may create namespaces (root, or CAP_SYS_ADMIN).
pub fn have_privileges() -> bool {
    nix::unistd::geteuid().is_root()
}
