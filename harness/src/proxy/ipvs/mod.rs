//! The `ipvs` proxy: kube-proxy's IPVS mode. What a node holds in that mode is rendered
//! by `sim::kube_proxy::ipvs` (the IPVS table, the `kube-ipvs0` addresses, the ipsets
//! and the iptables rules IPVS mode still needs); this module decides whether the
//! kernel can have it and, if so, puts it there.
//!
//! **Detection.** IPVS is programmed through the generic netlink family `"IPVS"`: the
//! family exists when `ip_vs` is in the kernel. [`detect`] asks the kernel's generic
//! netlink controller for it (`CTRL_CMD_GETFAMILY`, in `crate::system::genl`); `ENOENT`
//! means no IPVS. On the
//! knetlab machines the kernel is built without `CONFIG_IP_VS` (and without the dummy
//! device `kube-ipvs0` needs), and modules cannot be loaded, so the family is absent.
//!
//! **Without IPVS** the scenario decides (`cluster.ipvs.fallback`): `fail` stops the run
//! before anything is built ([`missing_message`]), as kube-proxy since v1.26 refuses to
//! start ("can't use the IPVS proxier"); `iptables` runs [`super::iptables`] instead, as
//! kube-proxy before v1.26 fell back when IPVS was missing, and the run's notes say so
//! ([`fallback_note`]). Either way every sync renders the IPVS state of each node from
//! `sim`, and [`ServiceProxy::installed`] appends it to what is installed, marked as not
//! installed, so the `@proxy` snapshots and `--keep` readers see the IPVS table a real
//! node would hold.
//!
//! **With IPVS** (never exercised against a kernel: none at hand has it; its decisions
//! are unit-tested with `crate::system::fake`) a sync of a node ([`install`]): sets the `net.ipv4.vs.*` sysctls
//! kube-proxy sets, creates `kube-ipvs0` (a dummy link) and binds every service address
//! to it, loads the ipsets with `ipset restore -exist`, inserts the jumps and loads the
//! iptables rules with `iptables-restore --noflush`, then flushes the IPVS table and
//! adds every virtual server and real server over generic netlink. That is a full
//! rewrite per changed node, not kube-proxy's per-object diff; addresses and sets left
//! over from a previous sync are removed.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use sim::kube_proxy::ipvs::{self as proxy_ipvs, DUMMY_DEVICE, IpvsRules};
use sim::objects::ClusterObjects;
use sim::plan::Plan;
use sim::scenario::{IpvsConfig, IpvsFallback};

use super::iptables::IptablesProxy;
use super::{ProxyError, ProxySyncReport, ServiceProxy, apply_nodes, default_system, render_nodes};
use crate::netns::Netns;
use crate::system::{NsRef, Real, System, SystemError, Tool};

pub mod install;

pub use install::load_netfilter;

/// Why a run with `proxy: ipvs` and `fallback: fail` stops on this kernel.
pub fn missing_message() -> String {
    "this kernel has no IPVS (no 'IPVS' generic netlink family; on a real node: modprobe \
     ip_vs); set cluster.ipvs.fallback: iptables to run as kube-proxy did before v1.26 \
     when IPVS was missing"
        .to_string()
}

/// The run's note when IPVS is missing and the scenario falls back to iptables.
pub fn fallback_note() -> String {
    "proxy ipvs: this kernel has no IPVS (no 'IPVS' generic netlink family), so the \
     iptables proxy runs instead (cluster.ipvs.fallback: iptables, what kube-proxy did \
     before v1.26); the IPVS table, kube-ipvs0 addresses, ipsets and iptables rules a real \
     node would hold are rendered by sim and shown after the installed rules, marked \
     'not installed'"
        .to_string()
}

/// Whether the kernel has IPVS: the id of the `"IPVS"` generic netlink family, or
/// `None` when the controller does not know it (`ENOENT`). Generic netlink families are
/// the kernel's, so any namespace gives the same answer; nothing is changed.
pub fn detect() -> Result<Option<u16>, SystemError> {
    Real.ipvs_family()
}

/// kube-proxy in IPVS mode, or the iptables proxy standing in for it.
pub struct IpvsProxy {
    config: IpvsConfig,
    /// `Some` when the kernel has IPVS (the family id), checked once at creation.
    family: Option<u16>,
    /// The detection error, if asking failed (reported at the first sync).
    detect_error: Option<String>,
    /// Runs when IPVS is missing and the scenario falls back.
    fallback: Option<IptablesProxy>,
    /// The IPVS rendering of each node at the last sync, keyed by namespace name.
    rendered: BTreeMap<String, IpvsRules>,
    /// With IPVS: the rendering last installed in each node.
    applied: BTreeMap<String, IpvsRules>,
    system: Arc<dyn System>,
}

impl IpvsProxy {
    /// Detects IPVS now; without it, `config.fallback` decides what [`Self::sync`] does.
    pub fn new(config: IpvsConfig) -> Self {
        Self::with_system(config, default_system())
    }

    /// The proxy acting through `system` (the fake, in unit tests).
    pub fn with_system(config: IpvsConfig, system: Arc<dyn System>) -> Self {
        let (family, detect_error) = match system.ipvs_family() {
            Ok(f) => (f, None),
            Err(e) => (None, Some(format!("{:#}", anyhow::Error::new(e)))),
        };
        let fallback = (family.is_none() && config.fallback == IpvsFallback::Iptables)
            .then(|| IptablesProxy::with_system(system.clone()));
        Self {
            config,
            family,
            detect_error,
            fallback,
            rendered: BTreeMap::new(),
            applied: BTreeMap::new(),
            system,
        }
    }

    /// Whether the kernel has IPVS.
    pub fn available(&self) -> bool {
        self.family.is_some()
    }

    /// The IPVS state rendered for a node at the last sync.
    pub fn rendered(&self, node: &Netns) -> Option<&IpvsRules> {
        self.rendered.get(node.name())
    }
}

/// The node's own addresses kube-proxy makes NodePort virtual servers on: its underlay
/// address, its bridge address and (in vxlan mode) its tunnel address.
pub fn node_addresses(plan: &Plan, node: &str) -> Vec<Ipv4Addr> {
    let Some(n) = plan.node(node) else {
        return Vec::new();
    };
    let mut v = vec![n.underlay_ip, n.gateway];
    if let Some(vtep) = plan.vtep(n) {
        v.push(vtep.address);
    }
    v
}

impl ServiceProxy for IpvsProxy {
    fn name(&self) -> &'static str {
        if self.fallback.is_some() {
            "ipvs (fallen back to iptables)"
        } else {
            "ipvs"
        }
    }

    fn sync_refs(
        &mut self,
        plan: &Plan,
        nodes: &[(String, NsRef)],
        objects: &ClusterObjects,
    ) -> Result<ProxySyncReport, ProxyError> {
        let start = Instant::now();
        let scheduler = self.config.scheduler;
        let work = render_nodes(plan, nodes, objects, |node, input| {
            proxy_ipvs::render(&input, scheduler, &node_addresses(plan, node)).map_err(|e| {
                ProxyError::Render(format!("render the IPVS state of node {node}: {e}"))
            })
        })?;
        let render = start.elapsed();
        self.rendered = work
            .iter()
            .map(|w| (w.ns.name().to_string(), w.want.clone()))
            .collect();
        if let Some(fallback) = self.fallback.as_mut() {
            return fallback.sync_refs(plan, nodes, objects);
        }
        if self.family.is_none() {
            return Err(ProxyError::IpvsMissing {
                message: missing_message(),
                detect_error: self.detect_error.clone(),
            });
        }
        let system = &*self.system;
        let nodes = apply_nodes(work, &mut self.applied, "IPVS proxy", |w, before| {
            install::apply_node(system, plan, &w.node, &w.ns, &w.want, before)
        })?;
        Ok(ProxySyncReport {
            nodes,
            render,
            elapsed: start.elapsed(),
        })
    }

    fn installed_in(&self, node: &NsRef) -> Result<String, ProxyError> {
        match &self.fallback {
            Some(fallback) => {
                let mut text = fallback.installed_in(node)?;
                if let Some(r) = self.rendered.get(node.name()) {
                    text.push_str(
                        "# IPVS mode, rendered by sim and NOT installed (this kernel has no IPVS; \
                         the iptables proxy above runs instead):\n",
                    );
                    text.push_str(&r.text());
                }
                Ok(text)
            }
            None => {
                let system = &*self.system;
                let ipvsadm = system.run(node, Tool::Ipvsadm, &["-Ln"], None)?;
                let addrs: Vec<String> = system
                    .addresses(node, DUMMY_DEVICE)?
                    .iter()
                    .map(|a| a.to_string())
                    .collect();
                let sets = system.run(node, Tool::Ipset, &["save"], None)?;
                let saved = system.run(node, Tool::IptablesSave, &[], None)?;
                Ok(format!(
                    "# ipvsadm -Ln\n{ipvsadm}# addresses on {DUMMY_DEVICE}\n{}\n# ipset save\n{sets}# iptables-save\n{saved}",
                    addrs.join(" ")
                ))
            }
        }
    }
}
