//! Cluster DNS as a function of the cluster's objects: the records a CoreDNS `kubernetes`
//! plugin would serve for `cluster.local` (Kubernetes DNS-SPEC 1.1.0, see
//! kube-proxy-and-policy-internals.md §6.1), the resolv.conf a kubelet writes into each
//! pod (§6.2, [`resolv`]) and the service environment variables it injects (§6.3,
//! [`env`]). Pure data: the harness serves [`Zone`] from a real DNS server inside the
//! `kube-system/kube-dns` pod and writes the resolv.conf files.
//!
//! Records (names lower-case, absolute, with the trailing dot):
//! - `dns-version.cluster.local. TXT "1.1.0"`;
//! - a Service with a cluster IP: `svc.ns.svc.cluster.local. A <clusterIP>`, and per
//!   named port `_port._proto.svc.ns.svc.cluster.local. SRV 0 100 <port> svc.ns.svc...`;
//! - a headless Service: one A per **ready** endpoint for `svc.ns.svc.cluster.local.`
//!   (none ready: NXDOMAIN), an A per endpoint for `<hostname>.svc.ns.svc.cluster.local.`
//!   (the endpoint's hostname: the pod's `spec.hostname` when its `spec.subdomain` names
//!   the Service, else the dashed IP as CoreDNS does), and SRV per named port and ready
//!   endpoint pointing at that name, with the endpoint's port;
//! - pod records `a-b-c-d.ns.pod.cluster.local. A a.b.c.d` for every pod that has that
//!   address in that namespace (CoreDNS `pods verified`: names are generated from pods,
//!   not echoed back from the question).
//!
//! Any other name under the zone is NXDOMAIN (or no data, when a longer name exists
//! below it); names outside the zone are not ours ([`Lookup::NotOurs`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::objects::{ClusterObjects, pod_ip};
use crate::services::{self, endpoints};

pub mod env;
pub mod resolv;

#[cfg(test)]
mod tests;

/// The cluster domain (kubelet `--cluster-domain`).
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// The cluster DNS Service's address unless the scenario says otherwise (kubeadm's).
pub const DEFAULT_CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// Where the cluster DNS runs: the `kube-system/kube-dns` pod behind the
/// `kube-system/kube-dns` Service, labelled `k8s-app: kube-dns` as kubeadm's CoreDNS is.
pub const NAMESPACE: &str = "kube-system";
pub const POD_NAME: &str = "kube-dns";
pub const SERVICE_NAME: &str = "kube-dns";
pub const APP_LABEL: (&str, &str) = ("k8s-app", "kube-dns");
/// The TTL of every record (the CoreDNS plugin's default).
pub const TTL: u32 = 5;
/// The DNS-SPEC schema version served in `dns-version.<zone>`.
pub const SCHEMA_VERSION: &str = "1.1.0";

/// What one record holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RData {
    A(Ipv4Addr),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        /// Absolute, with the trailing dot.
        target: String,
    },
    Txt(String),
}

impl RData {
    /// The record type's name (`A`, `SRV`, `TXT`).
    pub fn kind(&self) -> &'static str {
        match self {
            RData::A(_) => "A",
            RData::Srv { .. } => "SRV",
            RData::Txt(_) => "TXT",
        }
    }
}

impl std::fmt::Display for RData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RData::A(ip) => write!(f, "A {ip}"),
            RData::Srv {
                priority,
                weight,
                port,
                target,
            } => write!(f, "SRV {priority} {weight} {port} {target}"),
            RData::Txt(t) => write!(f, "TXT {t:?}"),
        }
    }
}

/// The zone a cluster DNS serves: every record by owner name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Zone {
    /// `cluster.local.` (absolute, lower-case).
    pub origin: String,
    /// Owner name (absolute, lower-case) → its records, sorted, without repeats.
    pub records: BTreeMap<String, BTreeSet<RData>>,
}

/// What the zone says about a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The records of that name and type (never empty).
    Records(Vec<RData>),
    /// The name exists (it has records of other types, or names below it), but has no
    /// record of that type: NOERROR with an empty answer.
    NoData,
    /// No such name in the zone.
    NxDomain,
    /// The name is outside the zone: a cluster DNS would forward it upstream.
    NotOurs,
}

/// Makes a name absolute and lower-case (`Web.Default` → `web.default.`).
pub fn absolute(name: &str) -> String {
    let mut n = name.to_ascii_lowercase();
    if !n.ends_with('.') {
        n.push('.');
    }
    n
}

impl Zone {
    /// The records of `name` (any case, with or without the trailing dot) of type
    /// `kind` (`A`, `SRV`, `TXT`; `ANY` gives all).
    pub fn lookup(&self, name: &str, kind: &str) -> Lookup {
        let name = absolute(name);
        if name != self.origin && !name.ends_with(&format!(".{}", self.origin)) {
            return Lookup::NotOurs;
        }
        if let Some(set) = self.records.get(&name) {
            let found: Vec<RData> = set
                .iter()
                .filter(|r| kind == "ANY" || r.kind() == kind)
                .cloned()
                .collect();
            return if found.is_empty() {
                Lookup::NoData
            } else {
                Lookup::Records(found)
            };
        }
        // An empty non-terminal (`svc.cluster.local.`, `ns.svc.cluster.local.`) exists.
        let below = format!(".{name}");
        if name == self.origin || self.records.keys().any(|k| k.ends_with(&below)) {
            Lookup::NoData
        } else {
            Lookup::NxDomain
        }
    }

    /// The zone as text, one record per line in name order, for snapshots and `--keep`
    /// explorers: `name TTL IN TYPE data`.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for (name, set) in &self.records {
            for r in set {
                let _ = writeln!(out, "{name} {TTL} IN {r}");
            }
        }
        out
    }

    fn add(&mut self, name: String, rdata: RData) {
        self.records.entry(name).or_default().insert(rdata);
    }
}

/// The dashed form of an address used in pod and endpoint names (`10-244-1-5`).
pub fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

/// The records of the cluster's objects under `domain` (normally [`CLUSTER_DOMAIN`]).
pub fn zone(objects: &ClusterObjects, domain: &str) -> Zone {
    let origin = absolute(domain);
    let mut z = Zone {
        origin: origin.clone(),
        records: BTreeMap::new(),
    };
    z.add(
        format!("dns-version.{origin}"),
        RData::Txt(SCHEMA_VERSION.into()),
    );
    for svc in objects.services.values() {
        let (ns, name) = services::service_key(svc);
        let fqdn = format!("{name}.{ns}.svc.{origin}");
        if let Some(ip) = services::cluster_ip(svc) {
            z.add(fqdn.clone(), RData::A(ip));
            for p in services::ports(svc) {
                let (Some(pname), Ok(port)) = (p.name.as_deref(), u16::try_from(p.port)) else {
                    continue;
                };
                if pname.is_empty() {
                    continue;
                }
                let proto = services::port_protocol(p).lower();
                z.add(
                    format!("_{pname}._{proto}.{fqdn}"),
                    RData::Srv {
                        priority: 0,
                        weight: 100,
                        port,
                        target: fqdn.clone(),
                    },
                );
            }
        } else if services::is_headless(svc) {
            let eps = endpoints::compute(objects, svc);
            for a in eps.addresses.iter().filter(|a| a.ready) {
                let host = a.hostname.clone().unwrap_or_else(|| dashed(a.ip));
                let target = format!("{host}.{fqdn}");
                z.add(fqdn.clone(), RData::A(a.ip));
                z.add(target.clone(), RData::A(a.ip));
                for p in a.ports.iter().filter(|p| !p.name.is_empty()) {
                    z.add(
                        format!("_{}._{}.{fqdn}", p.name, p.protocol.lower()),
                        RData::Srv {
                            priority: 0,
                            weight: 100,
                            port: p.port,
                            target: target.clone(),
                        },
                    );
                }
            }
        }
    }
    // CoreDNS divides the weight among the records of one SRV name.
    for set in z.records.values_mut() {
        let n = set
            .iter()
            .filter(|r| matches!(r, RData::Srv { .. }))
            .count();
        if n > 1 {
            let w = (100 / n) as u16;
            *set = std::mem::take(set)
                .into_iter()
                .map(|r| match r {
                    RData::Srv {
                        priority,
                        port,
                        target,
                        ..
                    } => RData::Srv {
                        priority,
                        weight: w,
                        port,
                        target,
                    },
                    other => other,
                })
                .collect();
        }
    }
    for (p, pod) in &objects.pods {
        if let Some(ip) = pod_ip(pod) {
            z.add(
                format!("{}.{}.pod.{origin}", dashed(ip), p.namespace),
                RData::A(ip),
            );
        }
    }
    z
}

/// Whether `pod` is the cluster DNS pod (`kube-system/kube-dns`), which serves DNS on
/// port 53 instead of the probe servers every other pod runs.
pub fn is_dns_pod(pod: &crate::objects::PodRef) -> bool {
    pod.namespace == NAMESPACE && pod.name == POD_NAME
}
