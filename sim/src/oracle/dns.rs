//! The oracle for a `dns/NAME:PORT` cell, in three questions: may the client's DNS
//! query reach the cluster DNS (kube-proxy and the policies on UDP 53 to the `kube-dns`
//! Service, [`crate::oracle::predict_service`])? Does the name exist, tried through the
//! client's resolv.conf search list ([`crate::dns::resolv`]) against the records
//! ([`crate::dns::zone`])? Then the verdict of whatever it resolves to: a Service's cluster IP
//! (`svc/...`, through kube-proxy) or a pod's own address.

use std::fmt;
use std::net::Ipv4Addr;

use super::{OracleContext, Prediction, ServicePrediction, predict, predict_service};
use crate::cluster::ClusterDns;
use crate::matrix::Verdict;
use crate::objects::pod_ip;
use crate::peers::Peer;
use crate::protocol::{PortProto, Protocol};

use crate::dns::resolv::ResolvConf;
use crate::dns::{CLUSTER_DOMAIN, Lookup, NAMESPACE, SERVICE_NAME, zone};

/// What a DNS name stands for once resolved.
#[derive(Debug, Clone)]
pub enum Resolved {
    /// The query itself cannot reach the cluster DNS (or gets no answer from it).
    Unreachable,
    /// Every candidate is NXDOMAIN, empty or outside the cluster domain.
    NotFound { tried: Vec<String> },
    /// Found as `fqdn`; its first address (sorted) is what a client connects to.
    Found {
        fqdn: String,
        addresses: Vec<Ipv4Addr>,
        /// The address's owner: `svc/NS/NAME:PORT` or a pod; `None` when it is neither.
        target: Option<Peer>,
    },
}

/// The oracle's word on a `dns/` cell.
#[derive(Debug, Clone)]
pub struct DnsPrediction {
    pub from: Peer,
    pub name: String,
    pub port: PortProto,
    /// The client's query to the `kube-dns` Service on UDP 53.
    pub query: ServicePrediction,
    pub resolved: Resolved,
    /// The resolved target's own verdict: through kube-proxy for a Service...
    pub service: Option<ServicePrediction>,
    /// ...or straight to a pod.
    pub direct: Option<Prediction>,
    /// `None`: mixed (a Service whose backends disagree).
    pub verdict: Option<Verdict>,
}

impl DnsPrediction {
    /// Who may answer the probe (`ns/pod`), for the probe engine.
    pub fn answer_from(&self) -> Vec<String> {
        match (&self.service, &self.resolved) {
            (Some(sp), _) => sp.backends.iter().map(|b| b.name.clone()).collect(),
            (
                None,
                Resolved::Found {
                    target: Some(t), ..
                },
            ) => vec![t.to_string()],
            _ => vec![],
        }
    }

    /// One line for the cell's `reason`.
    pub fn short(&self) -> String {
        match &self.resolved {
            Resolved::Unreachable => format!("deny: DNS query blocked ({})", self.query.short()),
            Resolved::NotFound { .. } => format!("deny: {} does not resolve (NXDOMAIN)", self.name),
            Resolved::Found { fqdn, target, .. } => {
                let then = match (&self.service, &self.direct) {
                    (Some(s), _) => s.short(),
                    (None, Some(d)) => d.short(),
                    _ => "deny: the address is neither a Service nor a pod".into(),
                };
                match target {
                    Some(t) => format!("{fqdn} is {t}; {then}"),
                    None => format!("{fqdn}; {then}"),
                }
            }
        }
    }
}

impl fmt::Display for DnsPrediction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} resolves {} through its resolv.conf and the cluster DNS, then connects on {}.",
            self.from, self.name, self.port
        )?;
        writeln!(
            f,
            "1. The DNS query (UDP 53 to Service {NAMESPACE}/{SERVICE_NAME}):"
        )?;
        writeln!(f, "{}", self.query)?;
        write!(f, "2. The name: ")?;
        match &self.resolved {
            Resolved::Unreachable => {
                writeln!(f, "never answered: the query does not get through.")?
            }
            Resolved::NotFound { tried } => writeln!(f, "not found; tried {}.", tried.join(", "))?,
            Resolved::Found {
                fqdn,
                addresses,
                target,
            } => {
                let ips: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
                writeln!(f, "found as {fqdn} -> {}.", ips.join(", "))?;
                if let Some(t) = target {
                    writeln!(f, "3. Connecting to {t}:")?;
                }
                if let Some(s) = &self.service {
                    writeln!(f, "{s}")?;
                } else if let Some(d) = &self.direct {
                    writeln!(f, "{}", d.reason)?;
                }
            }
        }
        let v = match self.verdict {
            Some(Verdict::Allow) => "allow",
            Some(Verdict::Deny) => "deny",
            None => "mixed",
        };
        write!(f, "Verdict: {v}.")
    }
}

/// The zone's answer for `name` asked from a pod in `namespace`: the first candidate
/// with A records, or the candidates tried.
pub fn resolve(
    z: &crate::dns::Zone,
    conf: &ResolvConf,
    name: &str,
) -> Result<(String, Vec<Ipv4Addr>), Vec<String>> {
    let candidates = conf.candidates(name);
    for c in &candidates {
        if let Lookup::Records(rs) = z.lookup(c, "A") {
            let mut ips: Vec<Ipv4Addr> = rs
                .iter()
                .filter_map(|r| match r {
                    crate::dns::RData::A(ip) => Some(*ip),
                    _ => None,
                })
                .collect();
            ips.sort();
            return Ok((c.clone(), ips));
        }
    }
    Err(candidates)
}

/// What an address is: a Service's cluster IP (as `svc/NS/NAME:port`) or a pod.
pub fn owner(ctx: &OracleContext, ip: Ipv4Addr, port: u16) -> Option<Peer> {
    let objects = ctx.objects;
    for ((ns, name), svc) in &objects.services {
        if crate::services::cluster_ip(svc) == Some(ip) {
            return Some(Peer::Service {
                namespace: ns.clone(),
                name: name.clone(),
                port,
            });
        }
    }
    objects
        .pods
        .iter()
        .find(|(_, p)| pod_ip(p) == Some(ip))
        .map(|(r, _)| Peer::Pod(r.clone()))
}

/// The resolv.conf of the client: a pod's namespace; a node or host has none of the
/// cluster's (they are refused as `dns/` clients by [`predict_dns`]).
fn client_namespace(from: &Peer) -> Option<&str> {
    match from {
        Peer::Pod(p) => Some(&p.namespace),
        _ => None,
    }
}

/// Predicts a `dns/NAME:PORT` cell from `from` on `port`.
pub fn predict_dns(
    ctx: &OracleContext,
    dns: &ClusterDns,
    from: &Peer,
    name: &str,
    port: PortProto,
) -> DnsPrediction {
    let dns_service = Peer::Service {
        namespace: NAMESPACE.into(),
        name: SERVICE_NAME.into(),
        port: 53,
    };
    let query = predict_service(ctx, from, &dns_service, PortProto::new(Protocol::Udp, 53));
    let mut out = DnsPrediction {
        from: from.clone(),
        name: name.to_string(),
        port,
        query,
        resolved: Resolved::Unreachable,
        service: None,
        direct: None,
        verdict: Some(Verdict::Deny),
    };
    let Some(namespace) = client_namespace(from) else {
        return out;
    };
    // A mixed query path (some DNS pods allowed) still resolves: resolvers retry.
    if out.query.verdict == Some(Verdict::Deny) {
        return out;
    }
    let conf = ResolvConf::for_pod(namespace, dns.cluster_ip, CLUSTER_DOMAIN);
    let z = zone(ctx.objects, CLUSTER_DOMAIN);
    match resolve(&z, &conf, name) {
        Err(tried) => out.resolved = Resolved::NotFound { tried },
        Ok((fqdn, addresses)) => {
            let target = addresses.first().and_then(|ip| owner(ctx, *ip, port.port));
            match &target {
                Some(t @ Peer::Service { .. }) => {
                    let sp = predict_service(ctx, from, t, port);
                    out.verdict = sp.verdict;
                    out.service = Some(sp);
                }
                Some(t) => {
                    let p = predict(ctx, from, t, port);
                    out.verdict = Some(p.verdict);
                    out.direct = Some(p);
                }
                None => {}
            }
            out.resolved = Resolved::Found {
                fqdn,
                addresses,
                target,
            };
        }
    }
    out
}

/// The ports a `dns/NAME:PORT` cell from `client` is probed on: the protocols the
/// name's target has on that number as the zone resolves it for that client (a
/// Service's ports, a pod's declared ports), else TCP.
pub fn probe_ports(
    objects: &crate::objects::ClusterObjects,
    dns: &ClusterDns,
    client: &Peer,
    name: &str,
    port: u16,
) -> Vec<PortProto> {
    let tcp = vec![PortProto::new(Protocol::Tcp, port)];
    let Some(namespace) = client_namespace(client) else {
        return tcp;
    };
    let conf = ResolvConf::for_pod(namespace, dns.cluster_ip, CLUSTER_DOMAIN);
    let z = zone(objects, CLUSTER_DOMAIN);
    let Some(ip) = resolve(&z, &conf, name)
        .ok()
        .and_then(|(_, ips)| ips.first().copied())
    else {
        return tcp;
    };
    let mut ports: Vec<PortProto> = objects
        .services
        .iter()
        .filter(|(_, svc)| crate::services::cluster_ip(svc) == Some(ip))
        .flat_map(|((ns, n), _)| crate::services::probe_ports(objects, ns, n, port))
        .collect();
    if ports.is_empty()
        && let Some((_, pod)) = objects.pods.iter().find(|(_, p)| pod_ip(p) == Some(ip))
    {
        ports = crate::objects::declared_ports(pod)
            .into_iter()
            .map(|d| d.port)
            .filter(|d| d.port == port)
            .collect();
    }
    ports.sort();
    ports.dedup();
    if ports.is_empty() { tcp } else { ports }
}
