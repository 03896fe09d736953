//! A recording stand-in for the kernel, as youki's `network/fake.rs` is: every call is
//! recorded in order, tools print what a test scripted (nothing by default), sysctls read
//! what was set (`1` by default), and a test can make the next matching call fail. It lets the engines' decisions
//! (what runs in which order, partial or full syncs, forgetting a node that failed) be
//! tested without root.

use std::collections::BTreeMap;
use std::sync::Mutex;

use ipnet::Ipv4Net;
use sim::kube_proxy::ipvs::VirtualServer;

use super::exec::{failed, shown};
use super::{NsRef, System, SystemError, Tool, ToolError};

/// One call made to the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Run {
        ns: String,
        tool: Tool,
        args: Vec<String>,
        stdin: Option<String>,
    },
    Sysctl {
        ns: String,
        key: String,
    },
    SetSysctl {
        ns: String,
        key: String,
        value: String,
    },
    LinkRoute {
        ns: String,
        dest: Ipv4Net,
        dev: String,
    },
    EnsureDummy {
        ns: String,
        name: String,
    },
    Addresses {
        ns: String,
        dev: String,
    },
    ReplaceAddress {
        ns: String,
        dev: String,
        addr: Ipv4Net,
    },
    DeleteAddress {
        ns: String,
        dev: String,
        addr: Ipv4Net,
    },
    IpvsFamily,
    ProgramIpvs {
        ns: String,
        servers: Vec<VirtualServer>,
    },
}

impl Call {
    /// The namespace the call was made in (`None` for the IPVS family question).
    pub fn ns(&self) -> Option<&str> {
        match self {
            Call::Run { ns, .. }
            | Call::Sysctl { ns, .. }
            | Call::SetSysctl { ns, .. }
            | Call::LinkRoute { ns, .. }
            | Call::EnsureDummy { ns, .. }
            | Call::Addresses { ns, .. }
            | Call::ReplaceAddress { ns, .. }
            | Call::DeleteAddress { ns, .. }
            | Call::ProgramIpvs { ns, .. } => Some(ns),
            Call::IpvsFamily => None,
        }
    }

    /// A one-line summary: `iptables-nft-restore --noflush`, `route 10.96.0.0/12 dev eth0`.
    pub fn summary(&self) -> String {
        match self {
            Call::Run { tool, args, .. } => {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                shown(tool.binary(), &args)
            }
            Call::Sysctl { key, .. } => format!("sysctl {key}"),
            Call::SetSysctl { key, value, .. } => format!("sysctl {key}={value}"),
            Call::LinkRoute { dest, dev, .. } => format!("route {dest} dev {dev}"),
            Call::EnsureDummy { name, .. } => format!("dummy {name}"),
            Call::Addresses { dev, .. } => format!("addresses of {dev}"),
            Call::ReplaceAddress { dev, addr, .. } => format!("address {addr} on {dev}"),
            Call::DeleteAddress { dev, addr, .. } => format!("address {addr} off {dev}"),
            Call::IpvsFamily => "ipvs family".to_string(),
            Call::ProgramIpvs { servers, .. } => format!("ipvs {} servers", servers.len()),
        }
    }

    /// Whether this is `tool` run in `ns`.
    pub fn is_run(&self, in_ns: &str, which: Tool) -> bool {
        matches!(self, Call::Run { ns, tool, .. } if ns == in_ns && *tool == which)
    }
}

type Matcher = Box<dyn Fn(&Call) -> bool + Send + Sync>;

/// What a tool prints: in this namespace, for this tool, when its arguments start so.
struct Scripted {
    ns: String,
    tool: Tool,
    args: Vec<String>,
    stdout: String,
}

/// The recording fake. See the module docs.
#[derive(Default)]
pub struct Fake {
    calls: Mutex<Vec<Call>>,
    /// Scripted stdout per (namespace, tool, first arguments).
    stdout: Mutex<Vec<Scripted>>,
    /// The next call matching fails with the message; each is used once.
    failures: Mutex<Vec<(Matcher, String)>>,
    ipvs: Option<u16>,
    /// Sysctl values per (namespace, key); `1` when not set.
    sysctls: Mutex<BTreeMap<(String, String), String>>,
    /// Addresses per (namespace, link), as the calls left them.
    addresses: Mutex<BTreeMap<(String, String), Vec<Ipv4Net>>>,
}

impl Fake {
    pub fn new() -> Self {
        Self::default()
    }

    /// A kernel that has IPVS, with this family id.
    pub fn with_ipvs(mut self, family: u16) -> Self {
        self.ipvs = Some(family);
        self
    }

    /// `tool` in `ns`, called with arguments starting with `args`, prints `out`.
    pub fn prints(&self, ns: &str, tool: Tool, args: &[&str], out: &str) {
        lock(&self.stdout).push(Scripted {
            ns: ns.to_string(),
            tool,
            args: args.iter().map(|a| a.to_string()).collect(),
            stdout: out.to_string(),
        });
    }

    /// The sysctl `key` of `ns` reads `value` (set by a test, or written by a call).
    pub fn set_sysctl_value(&self, ns: &str, key: &str, value: &str) {
        lock(&self.sysctls).insert((ns.to_string(), key.to_string()), value.to_string());
    }

    /// The next call for which `matches` holds fails with `message` (a tool exits 1
    /// with it on stderr; a kernel call returns it).
    pub fn fail_next(
        &self,
        matches: impl Fn(&Call) -> bool + Send + Sync + 'static,
        message: &str,
    ) {
        lock(&self.failures).push((Box::new(matches), message.to_string()));
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.calls).clone()
    }

    /// Every call so far, forgotten afterwards.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut *lock(&self.calls))
    }

    /// The summaries of the calls made in `ns`, in order, forgotten afterwards (the
    /// calls in other namespaces are kept).
    pub fn take_summaries(&self, ns: &str) -> Vec<String> {
        let mut calls = lock(&self.calls);
        let (mine, others): (Vec<Call>, Vec<Call>) =
            calls.drain(..).partition(|c| c.ns() == Some(ns));
        *calls = others;
        mine.iter().map(Call::summary).collect()
    }

    /// Records `call`; the scripted failure it meets, if any.
    fn record(&self, call: Call) -> Option<String> {
        let failure = {
            let mut failures = lock(&self.failures);
            let at = failures.iter().position(|(m, _)| m(&call));
            at.map(|i| failures.remove(i).1)
        };
        lock(&self.calls).push(call);
        failure
    }

    fn kernel(&self, call: Call) -> Result<(), SystemError> {
        let ns = call.ns().unwrap_or("(any)").to_string();
        let what = call.summary();
        match self.record(call) {
            Some(message) => Err(SystemError::Kernel {
                ns,
                what,
                source: message.into(),
            }),
            None => Ok(()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl System for Fake {
    fn run(
        &self,
        ns: &NsRef,
        tool: Tool,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, ToolError> {
        let call = Call::Run {
            ns: ns.name().to_string(),
            tool,
            args: args.iter().map(|a| a.to_string()).collect(),
            stdin: stdin.map(str::to_string),
        };
        if let Some(stderr) = self.record(call) {
            return Err(failed(
                shown(tool.binary(), args),
                ns.name().to_string(),
                "exit status: 1".into(),
                stderr,
                stdin,
            ));
        }
        let scripted = lock(&self.stdout);
        Ok(scripted
            .iter()
            .rev()
            .find(|s| {
                s.ns == ns.name()
                    && s.tool == tool
                    && s.args.len() <= args.len()
                    && s.args.iter().zip(args).all(|(p, a)| p == a)
            })
            .map(|s| s.stdout.clone())
            .unwrap_or_default())
    }

    fn sysctl(&self, ns: &NsRef, key: &str) -> Result<String, SystemError> {
        self.kernel(Call::Sysctl {
            ns: ns.name().to_string(),
            key: key.to_string(),
        })?;
        let key = (ns.name().to_string(), key.to_string());
        Ok(lock(&self.sysctls)
            .get(&key)
            .cloned()
            .unwrap_or_else(|| "1".to_string()))
    }

    fn set_sysctl(&self, ns: &NsRef, key: &str, value: &str) -> Result<(), SystemError> {
        self.kernel(Call::SetSysctl {
            ns: ns.name().to_string(),
            key: key.to_string(),
            value: value.to_string(),
        })?;
        self.set_sysctl_value(ns.name(), key, value);
        Ok(())
    }

    fn replace_link_route(&self, ns: &NsRef, dest: Ipv4Net, dev: &str) -> Result<(), SystemError> {
        self.kernel(Call::LinkRoute {
            ns: ns.name().to_string(),
            dest,
            dev: dev.to_string(),
        })
    }

    fn ensure_dummy_link(&self, ns: &NsRef, name: &str) -> Result<(), SystemError> {
        self.kernel(Call::EnsureDummy {
            ns: ns.name().to_string(),
            name: name.to_string(),
        })
    }

    fn addresses(&self, ns: &NsRef, dev: &str) -> Result<Vec<Ipv4Net>, SystemError> {
        self.kernel(Call::Addresses {
            ns: ns.name().to_string(),
            dev: dev.to_string(),
        })?;
        let key = (ns.name().to_string(), dev.to_string());
        Ok(lock(&self.addresses).get(&key).cloned().unwrap_or_default())
    }

    fn replace_address(&self, ns: &NsRef, dev: &str, addr: Ipv4Net) -> Result<(), SystemError> {
        self.kernel(Call::ReplaceAddress {
            ns: ns.name().to_string(),
            dev: dev.to_string(),
            addr,
        })?;
        let key = (ns.name().to_string(), dev.to_string());
        let mut all = lock(&self.addresses);
        let on = all.entry(key).or_default();
        if !on.contains(&addr) {
            on.push(addr);
        }
        Ok(())
    }

    fn delete_address(&self, ns: &NsRef, dev: &str, addr: Ipv4Net) -> Result<(), SystemError> {
        self.kernel(Call::DeleteAddress {
            ns: ns.name().to_string(),
            dev: dev.to_string(),
            addr,
        })?;
        let key = (ns.name().to_string(), dev.to_string());
        if let Some(on) = lock(&self.addresses).get_mut(&key) {
            on.retain(|a| *a != addr);
        }
        Ok(())
    }

    fn ipvs_family(&self) -> Result<Option<u16>, SystemError> {
        self.kernel(Call::IpvsFamily)?;
        Ok(self.ipvs)
    }

    fn program_ipvs(&self, ns: &NsRef, servers: &[VirtualServer]) -> Result<(), SystemError> {
        self.kernel(Call::ProgramIpvs {
            ns: ns.name().to_string(),
            servers: servers.to_vec(),
        })
    }
}
