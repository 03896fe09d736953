//! Cluster DNS for a run with `cluster.dns`: a real DNS server ([`server`], hickory) in
//! the `kube-system/kube-dns` pod, which the CNI plugins wired like any other pod and the
//! `kube-system/kube-dns` Service fronts, so every question crosses kube-proxy's DNAT and
//! the NetworkPolicies for real; its records ([`sim::dns::zone`]) are swapped in after
//! every step. Pods resolve names with [`client::resolve`] from inside their namespace.
//!
//! **Written outside our namespaces:** each pod's resolv.conf, the one a kubelet writes,
//! goes to `/etc/netns/<pod namespace>/resolv.conf`, which `ip netns exec` bind-mounts
//! over `/etc/resolv.conf`, so `ip netns exec <pod> getent hosts my-svc` resolves through
//! the cluster DNS while the run is up. Issue 6 asks for it; the files are removed when
//! their pod goes and at teardown, and `cargo xtask clean` sweeps the
//! `/etc/netns/<prefix>-*` directories a killed run left
//! ([`crate::sweep::ETC_NETNS`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use sim::dns::env::EnvVar;
use sim::dns::resolv::ResolvConf;
use sim::dns::{CLUSTER_DOMAIN, Zone};
use sim::objects::{ClusterObjects, PodRef};

use crate::cluster::Cluster;
use crate::sweep::ETC_NETNS;

pub mod client;
pub mod server;

pub use client::{Answer, Resolution, resolve};
pub use server::{DnsServer, NO_UPSTREAM};

/// Where `ip netns exec NAME` finds the namespace's resolv.conf.
pub fn resolv_conf_path(netns_name: &str) -> PathBuf {
    PathBuf::from(ETC_NETNS)
        .join(netns_name)
        .join("resolv.conf")
}

/// Writes a namespace's resolv.conf (and its `/etc/netns/NAME` directory).
pub fn write_resolv_conf(netns_name: &str, conf: &ResolvConf) -> Result<()> {
    let path = resolv_conf_path(netns_name);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::write(&path, conf.render()).with_context(|| format!("write {}", path.display()))
}

/// Removes a namespace's `/etc/netns/NAME` directory; gone already is fine.
pub fn remove_resolv_conf(netns_name: &str) -> Result<()> {
    let dir = PathBuf::from(ETC_NETNS).join(netns_name);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("remove {}", dir.display())),
    }
}

/// A run's cluster DNS: the server (once its pod exists) and the resolv.conf files
/// written, by pod.
pub struct ClusterDns {
    pub config: sim::scenario::ClusterDns,
    server: Option<DnsServer>,
    files: BTreeMap<PodRef, String>,
    /// The latest resolution of each `dns/` cell (client, target), for the step report.
    resolutions: std::sync::Mutex<BTreeMap<(String, String), Resolution>>,
}

impl ClusterDns {
    pub fn new(config: sim::scenario::ClusterDns) -> Self {
        ClusterDns {
            config,
            server: None,
            files: BTreeMap::new(),
            resolutions: Default::default(),
        }
    }

    /// The resolv.conf of a pod in `namespace`.
    pub fn conf_for(&self, namespace: &str) -> ResolvConf {
        ResolvConf::for_pod(namespace, self.config.cluster_ip, CLUSTER_DOMAIN)
    }

    /// Brings everything in line with the cluster after a step: starts the server in
    /// the DNS pod when it is there (stops it when it is gone), serves the new records,
    /// writes the resolv.conf of new pods and removes those of deleted ones.
    pub fn refresh(&mut self, cluster: &Cluster, objects: &ClusterObjects) -> Result<()> {
        let zone = sim::dns::zone(objects, CLUSTER_DOMAIN);
        let dns_pod = PodRef::new(sim::dns::NAMESPACE, sim::dns::POD_NAME);
        match (cluster.pod(&dns_pod), &self.server) {
            (Some(_), Some(s)) => s.set_zone(zone),
            (Some(h), None) => {
                self.server = Some(
                    DnsServer::start(&h.netns, zone)
                        .with_context(|| format!("start the cluster DNS in pod {dns_pod}"))?,
                )
            }
            // The pod was deleted: its namespace, and so the sockets' network, are gone.
            (None, _) => self.server = None,
        }
        let gone: Vec<PodRef> = self
            .files
            .keys()
            .filter(|p| cluster.pod(p).is_none())
            .cloned()
            .collect();
        for p in gone {
            if let Some(name) = self.files.remove(&p) {
                remove_resolv_conf(&name)?;
            }
        }
        for (p, h) in cluster.pods() {
            if !self.files.contains_key(p) {
                write_resolv_conf(h.netns.name(), &self.conf_for(&p.namespace))?;
                self.files.insert(p.clone(), h.netns.name().to_string());
            }
        }
        Ok(())
    }

    /// Remembers what a `dns/` cell's client got (a later probe round replaces it).
    pub fn record(&self, from: String, to: String, r: Resolution) {
        self.resolutions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((from, to), r);
    }

    /// The resolutions recorded since the last call, sorted by client and target.
    pub fn take_resolutions(&self) -> Vec<(String, String, Resolution)> {
        std::mem::take(&mut *self.resolutions.lock().unwrap_or_else(|e| e.into_inner()))
            .into_iter()
            .map(|((f, t), r)| (f, t, r))
            .collect()
    }

    /// The zone served now (`None` before the DNS pod exists).
    pub fn zone(&self) -> Option<Arc<Zone>> {
        self.server.as_ref().map(DnsServer::zone)
    }

    /// The server, when it runs.
    pub fn server(&self) -> Option<&DnsServer> {
        self.server.as_ref()
    }

    /// Whether the server still answers, asked from inside its own pod on `127.0.0.1`
    /// (no policy or Service rule on that path): any answer, NXDOMAIN included, means
    /// it serves. A question to a dead server times out or is refused, which a `dns/`
    /// cell would otherwise report as a policy's drop or a refusal.
    pub async fn health(&self, cluster: &Cluster, deadline: Duration) -> Result<(), DnsDown> {
        if self.server.is_none() {
            return Ok(());
        }
        let dns_pod = PodRef::new(sim::dns::NAMESPACE, sim::dns::POD_NAME);
        let Some(h) = cluster.pod(&dns_pod) else {
            return Ok(());
        };
        let conf = ResolvConf::for_pod(sim::dns::NAMESPACE, Ipv4Addr::LOCALHOST, CLUSTER_DOMAIN);
        let r = resolve(&h.netns, &conf, HEALTH_NAME, deadline).await;
        match r.answer {
            Answer::Addresses | Answer::NotFound => Ok(()),
            _ => Err(DnsDown {
                pod: dns_pod.to_string(),
                seen: r.summary(),
            }),
        }
    }

    /// For `--keep`: leaves the files (the sweep of `cargo xtask clean` removes them)
    /// and hands the server to [`kept_server`], so that it goes on answering while the
    /// caller's runtime lives (`cargo xtask scenario --keep` waits for Ctrl-C then).
    pub fn keep(mut self) {
        self.files.clear();
        if let Some(s) = self.server.take() {
            *KEPT.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
        }
    }

    /// Stops the server and removes every file written. Goes on past failures and
    /// reports them all.
    pub async fn shutdown(mut self) -> Vec<String> {
        let mut errors = Vec::new();
        if let Some(s) = self.server.take()
            && let Err(e) = s.shutdown().await
        {
            errors.push(format!("{e:#}"));
        }
        for name in std::mem::take(&mut self.files).into_values() {
            if let Err(e) = remove_resolv_conf(&name) {
                errors.push(format!("{e:#}"));
            }
        }
        errors
    }
}

/// The name [`ClusterDns::health`] asks for (the API server's Service, which every
/// cluster's DNS knows; NXDOMAIN is as good an answer).
const HEALTH_NAME: &str = "kubernetes.default.svc.cluster.local.";

/// The cluster DNS server does not answer even on its own pod's loopback: an
/// infrastructure fault, never a policy verdict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "infrastructure fault: the cluster DNS server in pod {pod} does not answer on 127.0.0.1:53 \
     (killed or its sockets gone): {seen}"
)]
pub struct DnsDown {
    pub pod: String,
    /// What the question from inside the pod got.
    pub seen: String,
}

/// The server of a run kept up with `--keep`, if any.
static KEPT: std::sync::Mutex<Option<DnsServer>> = std::sync::Mutex::new(None);

/// Takes the server a `--keep` run left answering (see [`ClusterDns::keep`]): the caller
/// keeps its runtime alive while people explore, then shuts it down.
pub fn kept_server() -> Option<DnsServer> {
    KEPT.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// What the cluster DNS showed in one step, for reports and snapshots.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DnsStep {
    pub step: String,
    /// [`Zone::dump`] after the step.
    pub zone: String,
    /// Every `dns/` cell's resolution: client, target, what it got.
    pub resolutions: Vec<(String, String, Resolution)>,
    /// The service environment variables of every pod then (see [`sim::dns::env`]).
    pub env: BTreeMap<PodRef, Vec<EnvVar>>,
}

impl DnsStep {
    /// Stable text (no timings): the zone (or that it did not change since `previous`),
    /// the resolutions, and the variables of the pods that started in this step (a pod's
    /// variables never change).
    pub fn render(&self, index: usize, previous: Option<&DnsStep>) -> String {
        let mut out = format!("== step {index}: {} ==\n", self.step);
        match previous {
            Some(p) if p.zone == self.zone => out.push_str("-- zone: unchanged --\n"),
            _ => out.push_str(&format!("-- zone --\n{}", self.zone)),
        }
        if !self.resolutions.is_empty() {
            out.push_str("-- resolved from the pods --\n");
            for (from, to, r) in &self.resolutions {
                out.push_str(&format!("{from} -> {to}: {}\n", r.summary()));
            }
        }
        let started: Vec<(&PodRef, &Vec<EnvVar>)> = self
            .env
            .iter()
            .filter(|(p, _)| previous.is_none_or(|prev| !prev.env.contains_key(*p)))
            .collect();
        if started.is_empty() {
            return out;
        }
        out.push_str("-- service environment variables of the pods started in this step --\n");
        for (pod, vars) in started {
            if vars.is_empty() {
                out.push_str(&format!("{pod}: (none)\n"));
            } else {
                out.push_str(&format!("{pod}:\n"));
                for v in vars {
                    out.push_str(&format!("  {v}\n"));
                }
            }
        }
        out
    }
}
