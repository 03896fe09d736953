//! The seam between knetlab and the kernel. Everything the engines above (`policy`,
//! `proxy`) do to a node goes through one trait, [`System`]: run a tool from the one
//! table of tools ([`tools`]) inside a namespace, read or write a sysctl, change links,
//! addresses and routes over rtnetlink ([`netlink`]), and program IPVS over generic
//! netlink ([`genl`]). [`Real`] does it to the kernel, switching namespaces only through
//! `crate::netns` and never on a tokio worker thread; [`fake::Fake`] records every call
//! and answers from a script, so the engines' decisions are unit-tested without root.
//! [`fanout`] is the one way to do something on every node at once and gather each
//! node's error.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use sim::kube_proxy::ipvs::VirtualServer;

use crate::netns::Netns;

pub mod errors;
pub mod exec;
pub mod fake;
pub mod fanout;
pub mod genl;
pub mod netlink;
pub mod tools;

pub use errors::{SystemError, ToolError};
pub use tools::Tool;

/// The namespace a call is made in: its name (what errors and the fake go by) and, for
/// the real system, its handle.
#[derive(Debug, Clone)]
pub struct NsRef {
    name: String,
    netns: Option<Netns>,
}

impl NsRef {
    /// A namespace with only a name: what [`fake::Fake`] is called with.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            netns: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The real namespace, for the calls that need one.
    pub fn netns(&self) -> Result<&Netns, SystemError> {
        self.netns.as_ref().ok_or_else(|| SystemError::NoNamespace {
            ns: self.name.clone(),
        })
    }
}

impl From<&Netns> for NsRef {
    fn from(ns: &Netns) -> Self {
        Self {
            name: ns.name().to_string(),
            netns: Some(ns.clone()),
        }
    }
}

/// Nodes as the engines take them (node name, namespace), turned into references.
pub fn node_refs(nodes: &[(String, Netns)]) -> Vec<(String, NsRef)> {
    nodes
        .iter()
        .map(|(node, ns)| (node.clone(), NsRef::from(ns)))
        .collect()
}

/// What knetlab does to a node's kernel. Blocking; safe to call from any thread that is
/// not inside an async task (the real one makes its own threads to switch namespaces).
pub trait System: Send + Sync {
    /// Runs `tool args` inside `ns`, feeding it `stdin`; returns its stdout.
    fn run(
        &self,
        ns: &NsRef,
        tool: Tool,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, ToolError>;

    /// Reads a sysctl under `/proc/sys` (`key` like `net/ipv4/ip_forward`).
    fn sysctl(&self, ns: &NsRef, key: &str) -> Result<String, SystemError>;

    /// Writes a sysctl under `/proc/sys`.
    fn set_sysctl(&self, ns: &NsRef, key: &str, value: &str) -> Result<(), SystemError>;

    /// Routes `dest` out of the link `dev`, no gateway (`ip route replace DEST dev DEV`).
    fn replace_link_route(&self, ns: &NsRef, dest: Ipv4Net, dev: &str) -> Result<(), SystemError>;

    /// Creates a dummy link named `name`, unless a link of that name exists.
    fn ensure_dummy_link(&self, ns: &NsRef, name: &str) -> Result<(), SystemError>;

    /// The IPv4 addresses on the link `dev`, in the kernel's order.
    fn addresses(&self, ns: &NsRef, dev: &str) -> Result<Vec<Ipv4Net>, SystemError>;

    /// Puts `addr` on the link `dev` (`ip addr replace`).
    fn replace_address(&self, ns: &NsRef, dev: &str, addr: Ipv4Net) -> Result<(), SystemError>;

    /// Takes `addr` off the link `dev` (`ip addr del`).
    fn delete_address(&self, ns: &NsRef, dev: &str, addr: Ipv4Net) -> Result<(), SystemError>;

    /// The id of the IPVS generic netlink family, `None` when the kernel has no IPVS.
    fn ipvs_family(&self) -> Result<Option<u16>, SystemError>;

    /// Replaces the IPVS table of `ns` with `servers` (flush, then add each).
    fn program_ipvs(&self, ns: &NsRef, servers: &[VirtualServer]) -> Result<(), SystemError>;
}

/// The real kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct Real;

/// The real system, shared.
pub fn real() -> std::sync::Arc<dyn System> {
    std::sync::Arc::new(Real)
}

/// An address as a host prefix (`/32`).
pub fn host(a: Ipv4Addr) -> Ipv4Net {
    Ipv4Net::from(a)
}

impl System for Real {
    fn run(
        &self,
        ns: &NsRef,
        tool: Tool,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, ToolError> {
        let netns = ns.netns.as_ref().ok_or_else(|| ToolError::NoNamespace {
            shown: exec::shown(tool.binary(), args),
            ns: ns.name.clone(),
        })?;
        exec::run_in(netns, tool.binary(), args, stdin)
    }

    fn sysctl(&self, ns: &NsRef, key: &str) -> Result<String, SystemError> {
        let path = format!("/proc/sys/{key}");
        in_namespace(ns, || std::fs::read_to_string(&path))?
            .map(|s| s.trim().to_string())
            .map_err(|e| SystemError::kernel(ns, format!("read {path}"), e))
    }

    fn set_sysctl(&self, ns: &NsRef, key: &str, value: &str) -> Result<(), SystemError> {
        let path = format!("/proc/sys/{key}");
        in_namespace(ns, || std::fs::write(&path, value))?
            .map_err(|e| SystemError::kernel(ns, format!("write {value} to {path}"), e))
    }

    fn replace_link_route(&self, ns: &NsRef, dest: Ipv4Net, dev: &str) -> Result<(), SystemError> {
        netlink::blocking(
            ns,
            format!("route {dest} via link {dev}"),
            |nl| async move { nl.replace_link_route(dest, dev).await },
        )
    }

    fn ensure_dummy_link(&self, ns: &NsRef, name: &str) -> Result<(), SystemError> {
        netlink::blocking(
            ns,
            format!("create the dummy link {name}"),
            |nl| async move {
                if nl.link_index(name).await?.is_none() {
                    nl.add_dummy(name).await?;
                }
                Ok(())
            },
        )
    }

    fn addresses(&self, ns: &NsRef, dev: &str) -> Result<Vec<Ipv4Net>, SystemError> {
        netlink::blocking(
            ns,
            format!("list the addresses of {dev}"),
            |nl| async move { nl.addresses(dev).await },
        )
    }

    fn replace_address(&self, ns: &NsRef, dev: &str, addr: Ipv4Net) -> Result<(), SystemError> {
        netlink::blocking(ns, format!("put {addr} on {dev}"), |nl| async move {
            nl.replace_address(dev, addr).await
        })
    }

    fn delete_address(&self, ns: &NsRef, dev: &str, addr: Ipv4Net) -> Result<(), SystemError> {
        netlink::blocking(ns, format!("take {addr} off {dev}"), |nl| async move {
            nl.delete_address(dev, addr).await
        })
    }

    fn ipvs_family(&self) -> Result<Option<u16>, SystemError> {
        // Families are the kernel's, not a namespace's: ask where knetlab runs (a read).
        netlink::on_connection(
            &NsRef::named("(any)"),
            None,
            "ask the generic netlink controller for the IPVS family".into(),
            open_genl,
            |handle| async move {
                genl::ipvs_family(&handle)
                    .await
                    .map_err(|e| SystemError::Kernel {
                        ns: "(any)".into(),
                        what: "resolve IPVS".into(),
                        source: e.into(),
                    })
            },
        )
    }

    fn program_ipvs(&self, ns: &NsRef, servers: &[VirtualServer]) -> Result<(), SystemError> {
        netlink::on_connection(
            ns,
            Some(ns.netns()?),
            "program IPVS".into(),
            open_genl,
            |mut handle| async move {
                genl::program_ipvs(&mut handle, servers)
                    .await
                    .map_err(|e| SystemError::kernel(ns, "program IPVS".into(), e))
            },
        )
    }
}

/// A generic netlink connection (its driver and handle).
fn open_genl() -> std::io::Result<(
    impl std::future::Future<Output = ()> + Send + 'static,
    genetlink::GenetlinkHandle,
)> {
    genetlink::new_connection().map(|(conn, handle, _)| (conn, handle))
}

/// Reads a sysctl of a namespace (`key` like `net/ipv4/ip_forward`), on a thread of its
/// own: safe from async code.
pub fn sysctl(ns: &Netns, key: &str) -> Result<String, SystemError> {
    Real.sysctl(&NsRef::from(ns), key)
}

/// Writes a sysctl of a namespace, on a thread of its own: safe from async code.
pub fn set_sysctl(ns: &Netns, key: &str, value: &str) -> Result<(), SystemError> {
    Real.set_sysctl(&NsRef::from(ns), key, value)
}

/// Runs `f` inside `ns` on a short-lived thread of its own (through
/// `crate::netns::Netns::enter`, the one place that switches namespaces), so the
/// calling thread, which may be a tokio worker, never changes namespace.
pub fn in_namespace<T: Send>(ns: &NsRef, f: impl FnOnce() -> T + Send) -> Result<T, SystemError> {
    let netns = ns.netns()?;
    std::thread::scope(|s| s.spawn(|| netns.enter(f)).join()).map_err(|_| {
        SystemError::kernel(
            ns,
            "work inside the namespace".into(),
            "its thread panicked",
        )
    })
}
