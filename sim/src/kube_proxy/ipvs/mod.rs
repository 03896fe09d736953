//! kube-proxy's IPVS mode as a pure function: from what one node's kube-proxy knows
//! ([`ProxyInput`]) to everything IPVS mode installs in that node ([`IpvsRules`]): the
//! IPVS table (one virtual server per service address and port, real servers per
//! endpoint, printed as `ipvsadm -Ln` prints it), the addresses bound to the
//! `kube-ipvs0` dummy device, the ipsets, and the iptables rules IPVS mode still needs
//! (masquerading, NodePort marking, hairpin, the access filter).
//!
//! It follows `pkg/proxy/ipvs/proxier.go` (v1.30: `syncProxyRules`, `syncService`,
//! `syncEndpoint`, `writeIptablesRules`, `acceptIPVSTraffic`, the `iptablesChains`,
//! `iptablesJumpChain`, `ipsetInfo` and `ipsetWithIptablesChain` tables) and
//! `pkg/proxy/ipvs/ipset.go` (set names and comments); the reference
//! (`kube-proxy-and-policy-internals.md` §3) summarises them. Names shared with the
//! iptables mode come from [`super::names`]; endpoint choice is
//! [`categorize_endpoints`], the same function the other modes use.
//!
//! Choices where kube-proxy is not deterministic or depends on the machine:
//! - virtual servers are listed as `ipvsadm -Ln` lists them (sorted by protocol number,
//!   address, port; real servers by address, port), with the trailing blanks of its
//!   fixed-width columns trimmed; the connection counters are 0 (nothing is measured);
//! - NodePort virtual servers are made for the node addresses the caller passes (a real
//!   kube-proxy takes every address of every interface but `kube-ipvs0`);
//! - ipsets are printed in `ipset save` form, in kube-proxy's creation order, without
//!   `bucketsize`/`initval` (random per set); entries sorted;
//! - behaviour is that of the [`ProxyConfig`] defaults: ClusterCIDR local detector,
//!   masquerade bit 14, `--random-fully`; IPv4 only.
//!
//! This kernel has no IPVS (no `ip_vs`, no dummy device): the rendering is what a real
//! node would hold, shown so the lesson works without the kernel module.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::model::{
    ProxyError, ProxyInput, SessionAffinity, categorize_endpoints, checked_mark, proxied_ports,
};
use crate::cluster::IpvsScheduler;
use crate::protocol::Protocol;

mod netfilter;
#[cfg(test)]
mod tests;

use netfilter::iptables_restore;
pub use netfilter::{IPTABLES_CHAINS, JUMPS};

/// The dummy device every service address is bound to (`defaultDummyDevice`).
pub const DUMMY_DEVICE: &str = "kube-ipvs0";
/// nat: NodePort marking; filter: health-check node ports (no S, unlike iptables mode).
pub const KUBE_NODE_PORT: &str = "KUBE-NODE-PORT";
/// nat: load-balancer traffic (masquerade unless `externalTrafficPolicy: Local`).
pub const KUBE_LOAD_BALANCER: &str = "KUBE-LOAD-BALANCER";
/// filter: drops load-balancer traffic no `loadBalancerSourceRanges` entry admits.
pub const KUBE_SOURCE_RANGES_FIREWALL: &str = "KUBE-SOURCE-RANGES-FIREWALL";
/// filter (INPUT): rejects new connections to a service address on a port no service
/// has (kubernetes issue 72236).
pub const KUBE_IPVS_FILTER: &str = "KUBE-IPVS-FILTER";
/// filter (OUTPUT): the node's own access to load balancers it may not reach.
pub const KUBE_IPVS_OUT_FILTER: &str = "KUBE-IPVS-OUT-FILTER";

/// `ipvsadm -Ln`'s first line for the kernel's IPVS 1.2.1 with the default table size.
const IPVSADM_HEADER: &str = "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port Scheduler Flags\n  \
-> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n";

/// One real server (`-> ip:port Masq 1`): kube-proxy uses NAT forwarding ("Masq") and
/// weight 1 (0 only while a removed real server drains its open connections, which a
/// rendering of one sync never shows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RealServer {
    pub address: Ipv4Addr,
    pub port: u16,
    pub weight: u32,
}

/// What a virtual server stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VirtualServerKind {
    ClusterIp,
    ExternalIp,
    LoadBalancer,
    NodePort,
}

/// One IPVS virtual server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualServer {
    pub protocol: Protocol,
    pub address: Ipv4Addr,
    pub port: u16,
    pub scheduler: IpvsScheduler,
    /// `sessionAffinity: ClientIP`: the persistence timeout in seconds
    /// (`Flags |= FlagPersistent`, `Timeout = timeoutSeconds`).
    pub persistence: Option<u32>,
    /// Sorted by address and port.
    pub real_servers: Vec<RealServer>,
    /// The service port (`ns/name:port`) and what this address is of it.
    pub service: String,
    pub kind: VirtualServerKind,
}

/// `ipvsadm`'s sort key for a service: protocol number, address, port.
fn protocol_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

/// The type of an ipset as `ipset` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetType {
    HashIp,
    HashIpPort,
    HashIpPortIp,
    HashIpPortNet,
    BitmapPort,
}

impl SetType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HashIp => "hash:ip",
            Self::HashIpPort => "hash:ip,port",
            Self::HashIpPortIp => "hash:ip,port,ip",
            Self::HashIpPortNet => "hash:ip,port,net",
            Self::BitmapPort => "bitmap:port",
        }
    }
}

/// The sets IPVS mode uses (`ipset.go`); IPv6 names would replace `KUBE-` by `KUBE-6-`.
pub mod sets {
    pub const LOOP_BACK: &str = "KUBE-LOOP-BACK";
    pub const CLUSTER_IP: &str = "KUBE-CLUSTER-IP";
    pub const EXTERNAL_IP: &str = "KUBE-EXTERNAL-IP";
    pub const EXTERNAL_IP_LOCAL: &str = "KUBE-EXTERNAL-IP-LOCAL";
    pub const LOAD_BALANCER: &str = "KUBE-LOAD-BALANCER";
    pub const LOAD_BALANCER_FW: &str = "KUBE-LOAD-BALANCER-FW";
    pub const LOAD_BALANCER_LOCAL: &str = "KUBE-LOAD-BALANCER-LOCAL";
    pub const LOAD_BALANCER_SOURCE_IP: &str = "KUBE-LOAD-BALANCER-SOURCE-IP";
    pub const LOAD_BALANCER_SOURCE_CIDR: &str = "KUBE-LOAD-BALANCER-SOURCE-CIDR";
    pub const NODE_PORT_TCP: &str = "KUBE-NODE-PORT-TCP";
    pub const NODE_PORT_LOCAL_TCP: &str = "KUBE-NODE-PORT-LOCAL-TCP";
    pub const NODE_PORT_UDP: &str = "KUBE-NODE-PORT-UDP";
    pub const NODE_PORT_LOCAL_UDP: &str = "KUBE-NODE-PORT-LOCAL-UDP";
    pub const NODE_PORT_SCTP: &str = "KUBE-NODE-PORT-SCTP-HASH";
    pub const NODE_PORT_LOCAL_SCTP: &str = "KUBE-NODE-PORT-LOCAL-SCTP-HASH";
    pub const HEALTH_CHECK_NODE_PORT: &str = "KUBE-HEALTH-CHECK-NODE-PORT";
    pub const IPVS_IPS: &str = "KUBE-IPVS-IPS";
}

/// `ipsetInfo`: every set kube-proxy creates, in its order, with its type and comment.
pub const SET_INFO: [(&str, SetType, &str); 17] = [
    (
        sets::LOOP_BACK,
        SetType::HashIpPortIp,
        "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose",
    ),
    (
        sets::CLUSTER_IP,
        SetType::HashIpPort,
        "Kubernetes service cluster ip + port for masquerade purpose",
    ),
    (
        sets::EXTERNAL_IP,
        SetType::HashIpPort,
        "Kubernetes service external ip + port for masquerade and filter purpose",
    ),
    (
        sets::EXTERNAL_IP_LOCAL,
        SetType::HashIpPort,
        "Kubernetes service external ip + port with externalTrafficPolicy=local",
    ),
    (
        sets::LOAD_BALANCER,
        SetType::HashIpPort,
        "Kubernetes service lb portal",
    ),
    (
        sets::LOAD_BALANCER_FW,
        SetType::HashIpPort,
        "Kubernetes service load balancer ip + port for load balancer with sourceRange",
    ),
    (
        sets::LOAD_BALANCER_LOCAL,
        SetType::HashIpPort,
        "Kubernetes service load balancer ip + port with externalTrafficPolicy=local",
    ),
    (
        sets::LOAD_BALANCER_SOURCE_IP,
        SetType::HashIpPortIp,
        "Kubernetes service load balancer ip + port + source IP for packet filter purpose",
    ),
    (
        sets::LOAD_BALANCER_SOURCE_CIDR,
        SetType::HashIpPortNet,
        "Kubernetes service load balancer ip + port + source cidr for packet filter purpose",
    ),
    (
        sets::NODE_PORT_TCP,
        SetType::BitmapPort,
        "Kubernetes nodeport TCP port for masquerade purpose",
    ),
    (
        sets::NODE_PORT_LOCAL_TCP,
        SetType::BitmapPort,
        "Kubernetes nodeport TCP port with externalTrafficPolicy=local",
    ),
    (
        sets::NODE_PORT_UDP,
        SetType::BitmapPort,
        "Kubernetes nodeport UDP port for masquerade purpose",
    ),
    (
        sets::NODE_PORT_LOCAL_UDP,
        SetType::BitmapPort,
        "Kubernetes nodeport UDP port with externalTrafficPolicy=local",
    ),
    (
        sets::NODE_PORT_SCTP,
        SetType::HashIpPort,
        "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'",
    ),
    (
        sets::NODE_PORT_LOCAL_SCTP,
        SetType::HashIpPort,
        "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'",
    ),
    (
        sets::HEALTH_CHECK_NODE_PORT,
        SetType::BitmapPort,
        "Kubernetes health check node port",
    ),
    (
        sets::IPVS_IPS,
        SetType::HashIp,
        "Addresses on the ipvs interface",
    ),
];

/// One ipset and its entries (sorted, in `ipset`'s entry syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsSet {
    pub name: &'static str,
    pub set_type: SetType,
    pub comment: &'static str,
    pub entries: BTreeSet<String>,
}

impl IpvsSet {
    /// The `-m set` comment kube-proxy writes (`getComment`: the set's comment quoted).
    fn rule_comment(&self) -> String {
        format!("\"{}\"", self.comment)
    }
}

/// Everything IPVS mode installs in one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsRules {
    pub node: String,
    /// Sorted as `ipvsadm -Ln` lists them.
    pub virtual_servers: Vec<VirtualServer>,
    /// The addresses bound to `kube-ipvs0` (as /32), sorted.
    pub bound: Vec<Ipv4Addr>,
    /// Every set of [`SET_INFO`], in that order.
    pub sets: Vec<IpvsSet>,
    /// The `iptables-restore --noflush` text of a sync (filter, then nat).
    pub restore: String,
}

/// Renders what node `input.node`'s kube-proxy in IPVS mode installs, with `scheduler`
/// for every virtual server. `node_addresses` are the node's own addresses, on which
/// NodePorts get virtual servers (deduplicated and sorted here).
pub fn render(
    input: &ProxyInput,
    scheduler: IpvsScheduler,
    node_addresses: &[Ipv4Addr],
) -> Result<IpvsRules, ProxyError> {
    let cfg = input.config;
    let mark = checked_mark(&cfg)?;
    let node_addresses: BTreeSet<Ipv4Addr> = node_addresses.iter().copied().collect();
    let ports = proxied_ports(input);

    let mut entries: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    let mut add = |set: &'static str, entry: String| {
        entries.entry(set).or_default().insert(entry);
    };
    // Keyed by (protocol, address, port): ipvsadm's order.
    let mut servers: BTreeMap<(u8, Ipv4Addr, u16), VirtualServer> = BTreeMap::new();
    let mut bound: BTreeSet<Ipv4Addr> = BTreeSet::new();
    let mut no_node_access: Vec<(Ipv4Addr, Protocol, u16)> = Vec::new();
    let mut seen: BTreeSet<(String, Protocol)> = BTreeSet::new();

    for sp in ports {
        let spn = sp.port_name_string();
        if !seen.insert((spn.clone(), sp.protocol)) {
            return Err(ProxyError::DuplicatePort(spn, sp.protocol));
        }
        let Some(cluster_ip) = sp.cluster_ip else {
            continue;
        };
        let proto = sp.protocol.lower();
        let ip_port = |ip: Ipv4Addr| format!("{ip},{proto}:{}", sp.port);
        let cat = categorize_endpoints(sp, &input.node);
        let real = |idx: &[usize]| -> Vec<RealServer> {
            let mut v: Vec<RealServer> = idx
                .iter()
                .map(|&i| RealServer {
                    address: cat.endpoints[i].ip,
                    port: cat.endpoints[i].port,
                    weight: 1,
                })
                .collect();
            v.sort();
            v
        };
        let internal = real(if cat.policies.internal_local {
            &cat.local
        } else {
            &cat.cluster
        });
        let external = real(if cat.policies.external_local {
            &cat.local
        } else {
            &cat.cluster
        });
        let persistence = match sp.session_affinity {
            SessionAffinity::ClientIp { timeout_seconds } => Some(timeout_seconds),
            SessionAffinity::None => None,
        };
        let mut server = |address: Ipv4Addr, port: u16, kind, reals: &[RealServer]| {
            servers.insert(
                (protocol_number(sp.protocol), address, port),
                VirtualServer {
                    protocol: sp.protocol,
                    address,
                    port,
                    scheduler,
                    persistence,
                    real_servers: reals.to_vec(),
                    service: spn.clone(),
                    kind,
                },
            );
        };

        // Hairpin: every endpoint on this node, ready or not.
        for e in &cat.endpoints {
            if e.node.as_deref() == Some(input.node.as_str()) {
                add(
                    sets::LOOP_BACK,
                    format!("{},{proto}:{},{}", e.ip, e.port, e.ip),
                );
            }
        }

        add(sets::CLUSTER_IP, ip_port(cluster_ip));
        server(cluster_ip, sp.port, VirtualServerKind::ClusterIp, &internal);
        bound.insert(cluster_ip);

        for &eip in &sp.external_ips {
            let set = if sp.external_policy_local {
                sets::EXTERNAL_IP_LOCAL
            } else {
                sets::EXTERNAL_IP
            };
            add(set, ip_port(eip));
            server(eip, sp.port, VirtualServerKind::ExternalIp, &external);
            bound.insert(eip);
        }

        for &lb in &sp.load_balancer_ips {
            add(sets::LOAD_BALANCER, ip_port(lb));
            if sp.external_policy_local {
                add(sets::LOAD_BALANCER_LOCAL, ip_port(lb));
            }
            if !sp.load_balancer_source_ranges.is_empty() {
                add(sets::LOAD_BALANCER_FW, ip_port(lb));
                let mut from_node = false;
                for range in &sp.load_balancer_source_ranges {
                    add(
                        sets::LOAD_BALANCER_SOURCE_CIDR,
                        format!("{},{}", ip_port(lb), range.trunc()),
                    );
                    from_node |= range.contains(&input.node_ip);
                }
                if from_node {
                    add(
                        sets::LOAD_BALANCER_SOURCE_IP,
                        format!("{},{lb}", ip_port(lb)),
                    );
                } else {
                    no_node_access.push((lb, sp.protocol, sp.port));
                }
            }
            server(lb, sp.port, VirtualServerKind::LoadBalancer, &external);
            bound.insert(lb);
        }

        if let Some(np) = sp.node_port {
            let (plain, local) = match sp.protocol {
                Protocol::Tcp => (sets::NODE_PORT_TCP, sets::NODE_PORT_LOCAL_TCP),
                Protocol::Udp => (sets::NODE_PORT_UDP, sets::NODE_PORT_LOCAL_UDP),
                Protocol::Sctp => (sets::NODE_PORT_SCTP, sets::NODE_PORT_LOCAL_SCTP),
            };
            // SCTP NodePorts live in a hash:ip,port set, one entry per node address.
            let np_entries: Vec<String> = if sp.protocol == Protocol::Sctp {
                node_addresses
                    .iter()
                    .map(|a| format!("{a},{proto}:{np}"))
                    .collect()
            } else {
                vec![np.to_string()]
            };
            for e in np_entries {
                add(plain, e.clone());
                if sp.external_policy_local {
                    add(local, e);
                }
            }
            for &addr in &node_addresses {
                server(addr, np, VirtualServerKind::NodePort, &external);
            }
        }
        if let Some(hc) = sp.health_check_node_port {
            add(sets::HEALTH_CHECK_NODE_PORT, hc.to_string());
        }
    }
    for &a in &bound {
        add(sets::IPVS_IPS, a.to_string());
    }

    let sets: Vec<IpvsSet> = SET_INFO
        .iter()
        .map(|&(name, set_type, comment)| IpvsSet {
            name,
            set_type,
            comment,
            entries: entries.remove(name).unwrap_or_default(),
        })
        .collect();
    let restore = iptables_restore(input, &cfg, &mark, &sets, &no_node_access);
    Ok(IpvsRules {
        node: input.node.clone(),
        virtual_servers: servers.into_values().collect(),
        bound: bound.into_iter().collect(),
        sets,
        restore,
    })
}

impl IpvsRules {
    /// The IPVS table as `ipvsadm -Ln` prints it (trailing blanks trimmed).
    pub fn ipvsadm(&self) -> String {
        let mut out = String::from(IPVSADM_HEADER);
        for vs in &self.virtual_servers {
            let mut line = format!(
                "{}  {}:{} {}",
                vs.protocol.as_str(),
                vs.address,
                vs.port,
                vs.scheduler
            );
            if let Some(t) = vs.persistence {
                let _ = write!(line, " persistent {t}");
            }
            let _ = writeln!(out, "{line}");
            for rs in &vs.real_servers {
                let dest = format!("{}:{}", rs.address, rs.port);
                let line = format!(
                    "  -> {dest:<28} {:<7} {:<6} {:<10} {:<10}",
                    "Masq", rs.weight, 0, 0
                );
                let _ = writeln!(out, "{}", line.trim_end());
            }
        }
        out
    }

    /// The dummy device and its addresses, as `ip -4 -brief addr show dev kube-ipvs0`
    /// prints them (kube-proxy leaves the device down: the kernel answers for local
    /// addresses on any device).
    pub fn dummy_device(&self) -> String {
        let addrs: Vec<String> = self.bound.iter().map(|a| format!("{a}/32")).collect();
        let line = format!("{DUMMY_DEVICE:<16} {:<14} {}", "DOWN", addrs.join(" "));
        format!("{}\n", line.trim_end())
    }

    /// The sets in `ipset save` form (`bucketsize` and `initval` left out).
    pub fn ipset_save(&self) -> String {
        let mut out = String::new();
        for s in &self.sets {
            let options = match s.set_type {
                SetType::BitmapPort => "range 0-65535".to_string(),
                _ => "family inet hashsize 1024 maxelem 65536".to_string(),
            };
            let _ = writeln!(
                out,
                "create {} {} {options} comment",
                s.name,
                s.set_type.as_str()
            );
            for e in &s.entries {
                let _ = writeln!(out, "add {} {e}", s.name);
            }
        }
        out
    }

    /// The jumps kube-proxy prepends to the built-in chains (`iptablesJumpChain`),
    /// one `iptables -t TABLE -I CHAIN ...` command each, in its order.
    pub fn jumps() -> String {
        let mut out = String::new();
        for (table, from, to, comment) in JUMPS {
            let _ = writeln!(
                out,
                "iptables -t {table} -I {from} -m comment --comment \"{comment}\" -j {to}"
            );
        }
        out
    }

    /// Everything, one section per part, for snapshots and `--keep` readers.
    pub fn text(&self) -> String {
        format!(
            "# ipvsadm -Ln\n{}# ip -4 -brief addr show dev {DUMMY_DEVICE}\n{}# ipset save\n{}# iptables-restore --noflush\n{}# jumps into the built-in chains\n{}",
            self.ipvsadm(),
            self.dummy_device(),
            self.ipset_save(),
            self.restore,
            Self::jumps()
        )
    }

    /// The set called `name`.
    pub fn set(&self, name: &str) -> Option<&IpvsSet> {
        self.sets.iter().find(|s| s.name == name)
    }
}
