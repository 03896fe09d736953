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
    ProxyConfig, ProxyError, ProxyInput, SessionAffinity, categorize_endpoints, checked_mark,
    proxied_ports,
};
use super::names::{
    KUBE_FORWARD, KUBE_MARK_MASQ, KUBE_POSTROUTING, KUBE_PROXY_FIREWALL, KUBE_SERVICES,
};
use crate::cluster::IpvsScheduler;
use crate::protocol::Protocol;

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

/// `ipsetWithIptablesChain`: sets whose non-emptiness writes one rule
/// `-A FROM [-p PROTO] -m comment --comment "SET COMMENT" -m set --match-set SET MATCH -j TO`,
/// in this order (a `-LOCAL` set before its plain one). The last three are filter rules.
const SET_RULES: [(&str, &str, &str, &str, Option<&str>); 12] = [
    (
        sets::LOOP_BACK,
        KUBE_POSTROUTING,
        "MASQUERADE",
        "dst,dst,src",
        None,
    ),
    (
        sets::LOAD_BALANCER,
        KUBE_SERVICES,
        KUBE_LOAD_BALANCER,
        "dst,dst",
        None,
    ),
    (
        sets::LOAD_BALANCER_LOCAL,
        KUBE_LOAD_BALANCER,
        "RETURN",
        "dst,dst",
        None,
    ),
    (
        sets::NODE_PORT_LOCAL_TCP,
        KUBE_NODE_PORT,
        "RETURN",
        "dst",
        Some("tcp"),
    ),
    (
        sets::NODE_PORT_TCP,
        KUBE_NODE_PORT,
        KUBE_MARK_MASQ,
        "dst",
        Some("tcp"),
    ),
    (
        sets::NODE_PORT_LOCAL_UDP,
        KUBE_NODE_PORT,
        "RETURN",
        "dst",
        Some("udp"),
    ),
    (
        sets::NODE_PORT_UDP,
        KUBE_NODE_PORT,
        KUBE_MARK_MASQ,
        "dst",
        Some("udp"),
    ),
    (
        sets::NODE_PORT_LOCAL_SCTP,
        KUBE_NODE_PORT,
        "RETURN",
        "dst,dst",
        Some("sctp"),
    ),
    (
        sets::NODE_PORT_SCTP,
        KUBE_NODE_PORT,
        KUBE_MARK_MASQ,
        "dst,dst",
        Some("sctp"),
    ),
    (
        sets::LOAD_BALANCER_FW,
        KUBE_PROXY_FIREWALL,
        KUBE_SOURCE_RANGES_FIREWALL,
        "dst,dst",
        None,
    ),
    (
        sets::LOAD_BALANCER_SOURCE_CIDR,
        KUBE_SOURCE_RANGES_FIREWALL,
        "RETURN",
        "dst,dst,src",
        None,
    ),
    (
        sets::LOAD_BALANCER_SOURCE_IP,
        KUBE_SOURCE_RANGES_FIREWALL,
        "RETURN",
        "dst,dst,src",
        None,
    ),
];
/// How many of [`SET_RULES`] (the first ones) go to the nat table.
const NAT_SET_RULES: usize = 9;

/// `iptablesChains`: (table, chain) in kube-proxy's order.
pub const IPTABLES_CHAINS: [(&str, &str); 11] = [
    ("nat", KUBE_SERVICES),
    ("nat", KUBE_POSTROUTING),
    ("nat", KUBE_NODE_PORT),
    ("nat", KUBE_LOAD_BALANCER),
    ("nat", KUBE_MARK_MASQ),
    ("filter", KUBE_FORWARD),
    ("filter", KUBE_NODE_PORT),
    ("filter", KUBE_PROXY_FIREWALL),
    ("filter", KUBE_SOURCE_RANGES_FIREWALL),
    ("filter", KUBE_IPVS_FILTER),
    ("filter", KUBE_IPVS_OUT_FILTER),
];

/// `iptablesJumpChain`: (table, built-in chain, target, comment), each prepended.
pub const JUMPS: [(&str, &str, &str, &str); 9] = [
    ("nat", "OUTPUT", KUBE_SERVICES, "kubernetes service portals"),
    (
        "nat",
        "PREROUTING",
        KUBE_SERVICES,
        "kubernetes service portals",
    ),
    (
        "nat",
        "POSTROUTING",
        KUBE_POSTROUTING,
        "kubernetes postrouting rules",
    ),
    (
        "filter",
        "FORWARD",
        KUBE_FORWARD,
        "kubernetes forwarding rules",
    ),
    (
        "filter",
        "INPUT",
        KUBE_NODE_PORT,
        "kubernetes health check rules",
    ),
    (
        "filter",
        "INPUT",
        KUBE_PROXY_FIREWALL,
        "kube-proxy firewall rules",
    ),
    (
        "filter",
        "FORWARD",
        KUBE_PROXY_FIREWALL,
        "kube-proxy firewall rules",
    ),
    (
        "filter",
        "INPUT",
        KUBE_IPVS_FILTER,
        "kubernetes ipvs access filter",
    ),
    (
        "filter",
        "OUTPUT",
        KUBE_IPVS_OUT_FILTER,
        "kubernetes ipvs access filter",
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

/// `writeIptablesRules` (plus the chain lines of `createAndLinkKubeChain`): the
/// restore text of one sync.
fn iptables_restore(
    input: &ProxyInput,
    cfg: &ProxyConfig,
    mark: &str,
    sets: &[IpvsSet],
    no_node_access: &[(Ipv4Addr, Protocol, u16)],
) -> String {
    let set = |name: &str| sets.iter().find(|s| s.name == name);
    let nonempty = |name: &str| set(name).is_some_and(|s| !s.entries.is_empty());
    let comment = |name: &str| set(name).map(IpvsSet::rule_comment).unwrap_or_default();

    let mut nat = String::new();
    let mut filter = String::new();
    let _ = writeln!(nat, "-A {KUBE_SERVICES} -s 127.0.0.0/8 -j RETURN");
    for (i, &(name, from, to, matching, proto)) in SET_RULES.iter().enumerate() {
        if !nonempty(name) {
            continue;
        }
        let out = if i < NAT_SET_RULES {
            &mut nat
        } else {
            &mut filter
        };
        let p = proto.map(|p| format!(" -p {p}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "-A {from}{p} -m comment --comment {} -m set --match-set {name} {matching} -j {to}",
            comment(name)
        );
    }
    if nonempty(sets::CLUSTER_IP) {
        let head = format!(
            "-A {KUBE_SERVICES} -m comment --comment {} -m set --match-set {}",
            comment(sets::CLUSTER_IP),
            sets::CLUSTER_IP
        );
        let _ = match (cfg.masquerade_all, input.cluster_cidr) {
            (true, _) => writeln!(nat, "{head} dst,dst -j {KUBE_MARK_MASQ}"),
            (false, Some(cidr)) => writeln!(
                nat,
                "{head} dst,dst ! -s {} -j {KUBE_MARK_MASQ}",
                cidr.trunc()
            ),
            // No local detector: masquerade the node's own connections from a VIP.
            (false, None) => writeln!(nat, "{head} src,dst -j {KUBE_MARK_MASQ}"),
        };
    }
    for (name, masquerade) in [(sets::EXTERNAL_IP, true), (sets::EXTERNAL_IP_LOCAL, false)] {
        if !nonempty(name) {
            continue;
        }
        let head = format!(
            "-A {KUBE_SERVICES} -m comment --comment {} -m set --match-set {name} dst,dst",
            comment(name)
        );
        if masquerade {
            let _ = writeln!(nat, "{head} -j {KUBE_MARK_MASQ}");
        }
        let _ = writeln!(
            nat,
            "{head} -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT"
        );
        let _ = writeln!(nat, "{head} -m addrtype --dst-type LOCAL -j ACCEPT");
    }
    let _ = writeln!(
        nat,
        "-A {KUBE_SERVICES} -m addrtype --dst-type LOCAL -j {KUBE_NODE_PORT}"
    );
    let _ = writeln!(nat, "-A {KUBE_LOAD_BALANCER} -j {KUBE_MARK_MASQ}");
    let _ = writeln!(filter, "-A {KUBE_SOURCE_RANGES_FIREWALL} -j DROP");
    for (lb, proto, port) in no_node_access {
        let _ = writeln!(
            filter,
            "-A {KUBE_IPVS_OUT_FILTER} -s {lb} -m ipvs --vaddr {lb} --vproto {} --vport {port} -j DROP",
            proto.as_str()
        );
    }
    // acceptIPVSTraffic: last in KUBE-SERVICES.
    for name in [sets::CLUSTER_IP, sets::LOAD_BALANCER] {
        if nonempty(name) {
            let _ = writeln!(
                nat,
                "-A {KUBE_SERVICES} -m set --match-set {name} dst,dst -j ACCEPT"
            );
        }
    }
    let _ = writeln!(
        filter,
        "-A {KUBE_FORWARD} -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {mark}/{mark} -j ACCEPT"
    );
    let _ = writeln!(
        filter,
        "-A {KUBE_FORWARD} -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    );
    let _ = writeln!(
        filter,
        "-A {KUBE_NODE_PORT} -m comment --comment {} -m set --match-set {} dst -j ACCEPT",
        comment(sets::HEALTH_CHECK_NODE_PORT),
        sets::HEALTH_CHECK_NODE_PORT
    );
    for (name, matching) in [
        (sets::LOAD_BALANCER, "dst,dst"),
        (sets::CLUSTER_IP, "dst,dst"),
        (sets::EXTERNAL_IP, "dst,dst"),
        (sets::EXTERNAL_IP_LOCAL, "dst,dst"),
        (sets::HEALTH_CHECK_NODE_PORT, "dst"),
    ] {
        let _ = writeln!(
            filter,
            "-A {KUBE_IPVS_FILTER} -m set --match-set {name} {matching} -j RETURN"
        );
    }
    let _ = writeln!(
        filter,
        "-A {KUBE_IPVS_FILTER} -m conntrack --ctstate NEW -m set --match-set {} dst -j REJECT",
        sets::IPVS_IPS
    );
    nat.push_str(&super::iptables::masquerade_rules(cfg, mark));

    let mut out = String::new();
    for (table, rules) in [("filter", filter), ("nat", nat)] {
        let _ = writeln!(out, "*{table}");
        for (t, chain) in IPTABLES_CHAINS {
            if t == table {
                let _ = writeln!(out, ":{chain} - [0:0]");
            }
        }
        out.push_str(&rules);
        out.push_str("COMMIT\n");
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube_proxy::model::{Endpoint, ServicePort};

    const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 200, 11);

    fn input(services: Vec<ServicePort>) -> ProxyInput {
        ProxyInput {
            node: "n1".into(),
            node_ip: NODE_IP,
            cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
            config: ProxyConfig::default(),
            services,
        }
    }

    fn nginx() -> ServicePort {
        let mut sp = ServicePort::cluster_ip(
            "default",
            "nginx",
            Some("http"),
            Protocol::Tcp,
            "10.96.0.10".parse().unwrap(),
            80,
        );
        sp.endpoints = vec![
            Endpoint::ready("10.244.2.2".parse().unwrap(), 8080, Some("n2")),
            Endpoint::ready("10.244.1.2".parse().unwrap(), 8080, Some("n1")),
        ];
        sp
    }

    fn render_one(sp: ServicePort) -> IpvsRules {
        render(&input(vec![sp]), IpvsScheduler::Rr, &[NODE_IP]).unwrap()
    }

    #[test]
    fn a_cluster_ip_is_one_virtual_server_with_a_real_server_per_endpoint() {
        let r = render_one(nginx());
        assert_eq!(
            r.ipvsadm(),
            "IP Virtual Server version 1.2.1 (size=4096)\n\
             Prot LocalAddress:Port Scheduler Flags\n  \
             -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
             TCP  10.96.0.10:80 rr\n  \
             -> 10.244.1.2:8080              Masq    1      0          0\n  \
             -> 10.244.2.2:8080              Masq    1      0          0\n"
        );
        assert_eq!(r.bound, ["10.96.0.10".parse::<Ipv4Addr>().unwrap()]);
        assert_eq!(
            r.dummy_device(),
            "kube-ipvs0       DOWN           10.96.0.10/32\n"
        );
        let cluster = r.set(sets::CLUSTER_IP).unwrap();
        assert_eq!(
            cluster.entries.iter().collect::<Vec<_>>(),
            ["10.96.0.10,tcp:80"]
        );
        // Only the endpoint on this node is a hairpin candidate.
        assert_eq!(
            r.set(sets::LOOP_BACK)
                .unwrap()
                .entries
                .iter()
                .collect::<Vec<_>>(),
            ["10.244.1.2,tcp:8080,10.244.1.2"]
        );
        assert_eq!(
            r.set(sets::IPVS_IPS)
                .unwrap()
                .entries
                .iter()
                .collect::<Vec<_>>(),
            ["10.96.0.10"]
        );
        // Every set exists, empty or not, in kube-proxy's order.
        let save = r.ipset_save();
        assert!(save.starts_with("create KUBE-LOOP-BACK hash:ip,port,ip family inet hashsize 1024 maxelem 65536 comment\nadd KUBE-LOOP-BACK 10.244.1.2,tcp:8080,10.244.1.2\n"), "{save}");
        assert!(save.contains("create KUBE-NODE-PORT-TCP bitmap:port range 0-65535 comment\n"));
        assert_eq!(save.matches("create ").count(), SET_INFO.len());
        let t = &r.restore;
        for line in [
            "-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN",
            "-A KUBE-POSTROUTING -m comment --comment \"Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose\" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE",
            "-A KUBE-SERVICES -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set KUBE-CLUSTER-IP dst,dst ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ",
            "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT",
            "-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT",
            "-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000",
            "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line}\n{t}");
        }
        // No NodePort, no load balancer: their set rules are not written.
        assert!(!t.contains("KUBE-NODE-PORT-TCP"), "{t}");
        assert!(!t.contains("-j KUBE-LOAD-BALANCER\n"), "{t}");
        // The ACCEPT comes after the NodePort jump: it must be last in KUBE-SERVICES.
        let pos = |s: &str| t.find(s).unwrap();
        assert!(
            pos("--dst-type LOCAL -j KUBE-NODE-PORT") < pos("KUBE-CLUSTER-IP dst,dst -j ACCEPT")
        );
        assert!(t.starts_with("*filter\n:KUBE-FORWARD - [0:0]\n"), "{t}");
        assert!(t.contains("COMMIT\n*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-NODE-PORT - [0:0]\n:KUBE-LOAD-BALANCER - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n"), "{t}");
    }

    #[test]
    fn schedulers_persistence_and_internal_traffic_policy() {
        let mut sp = nginx();
        sp.session_affinity = SessionAffinity::ClientIp {
            timeout_seconds: 600,
        };
        for sched in IpvsScheduler::ALL {
            let r = render(&input(vec![sp.clone()]), sched, &[NODE_IP]).unwrap();
            assert!(
                r.ipvsadm()
                    .contains(&format!("TCP  10.96.0.10:80 {sched} persistent 600\n")),
                "{}",
                r.ipvsadm()
            );
            assert_eq!(r.virtual_servers[0].persistence, Some(600));
        }
        sp.internal_policy_local = true;
        let r = render_one(sp);
        let reals: Vec<String> = r.virtual_servers[0]
            .real_servers
            .iter()
            .map(|s| s.address.to_string())
            .collect();
        assert_eq!(reals, ["10.244.1.2"]);
        assert_eq!("lc".parse::<IpvsScheduler>(), Ok(IpvsScheduler::Lc));
        assert!("wrr".parse::<IpvsScheduler>().is_err());
    }

    #[test]
    fn a_node_port_is_a_virtual_server_per_node_address_and_a_bitmap_entry() {
        let mut sp = nginx();
        sp.node_port = Some(30080);
        let gw: Ipv4Addr = "10.244.1.1".parse().unwrap();
        let r = render(
            &input(vec![sp.clone()]),
            IpvsScheduler::Rr,
            &[NODE_IP, gw, NODE_IP],
        )
        .unwrap();
        let vss: Vec<String> = r
            .virtual_servers
            .iter()
            .map(|v| {
                format!(
                    "{}:{} {:?} {}",
                    v.address,
                    v.port,
                    v.kind,
                    v.real_servers.len()
                )
            })
            .collect();
        assert_eq!(
            vss,
            [
                "10.96.0.10:80 ClusterIp 2",
                "10.244.1.1:30080 NodePort 2",
                "192.168.200.11:30080 NodePort 2"
            ]
        );
        // Node addresses are not bound to the dummy device.
        assert_eq!(r.bound.len(), 1);
        assert_eq!(
            r.set(sets::NODE_PORT_TCP)
                .unwrap()
                .entries
                .iter()
                .collect::<Vec<_>>(),
            ["30080"]
        );
        assert!(r.restore.contains("-A KUBE-NODE-PORT -p tcp -m comment --comment \"Kubernetes nodeport TCP port for masquerade purpose\" -m set --match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ\n"), "{}", r.restore);
        // externalTrafficPolicy Local: only local real servers, and the RETURN first.
        sp.external_policy_local = true;
        let r = render_one(sp);
        let np = r
            .virtual_servers
            .iter()
            .find(|v| v.kind == VirtualServerKind::NodePort)
            .unwrap();
        assert_eq!(np.real_servers.len(), 1);
        assert_eq!(r.virtual_servers[0].real_servers.len(), 2);
        let t = &r.restore;
        assert!(
            t.find("KUBE-NODE-PORT-LOCAL-TCP dst -j RETURN").unwrap()
                < t.find("KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ").unwrap(),
            "{t}"
        );
    }

    #[test]
    fn load_balancer_and_external_ips_are_bound_and_filtered() {
        let mut sp = nginx();
        let lb: Ipv4Addr = "203.0.113.10".parse().unwrap();
        let eip: Ipv4Addr = "198.51.100.7".parse().unwrap();
        sp.load_balancer_ips = vec![lb];
        sp.external_ips = vec![eip];
        sp.load_balancer_source_ranges = vec!["192.0.2.0/24".parse().unwrap()];
        sp.protocol = Protocol::Udp;
        let r = render_one(sp);
        assert_eq!(
            r.bound,
            ["10.96.0.10".parse::<Ipv4Addr>().unwrap(), eip, lb]
        );
        let text = r.ipvsadm();
        assert!(text.contains("UDP  198.51.100.7:80 rr\n"), "{text}");
        assert!(text.contains("UDP  203.0.113.10:80 rr\n"), "{text}");
        assert_eq!(
            r.set(sets::LOAD_BALANCER_SOURCE_CIDR)
                .unwrap()
                .entries
                .iter()
                .collect::<Vec<_>>(),
            ["203.0.113.10,udp:80,192.0.2.0/24"]
        );
        assert_eq!(
            r.set(sets::EXTERNAL_IP)
                .unwrap()
                .entries
                .iter()
                .collect::<Vec<_>>(),
            ["198.51.100.7,udp:80"]
        );
        let t = &r.restore;
        // The node is not in the source range: its own access is dropped.
        assert!(t.contains("-A KUBE-IPVS-OUT-FILTER -s 203.0.113.10 -m ipvs --vaddr 203.0.113.10 --vproto UDP --vport 80 -j DROP\n"), "{t}");
        assert!(t.contains("-A KUBE-SERVICES -m comment --comment \"Kubernetes service lb portal\" -m set --match-set KUBE-LOAD-BALANCER dst,dst -j KUBE-LOAD-BALANCER\n"), "{t}");
        assert!(t.contains("-A KUBE-PROXY-FIREWALL -m comment --comment \"Kubernetes service load balancer ip + port for load balancer with sourceRange\" -m set --match-set KUBE-LOAD-BALANCER-FW dst,dst -j KUBE-SOURCE-RANGES-FIREWALL\n"), "{t}");
        assert!(t.contains("-m set --match-set KUBE-EXTERNAL-IP dst,dst -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT\n"), "{t}");
        assert!(
            t.contains(
                "-A KUBE-SERVICES -m set --match-set KUBE-LOAD-BALANCER dst,dst -j ACCEPT\n"
            ),
            "{t}"
        );
    }

    #[test]
    fn headless_and_empty_services() {
        let mut headless = nginx();
        headless.name = "headless".into();
        headless.cluster_ip = None;
        let mut empty = nginx();
        empty.name = "empty".into();
        empty.cluster_ip = Some("10.96.0.11".parse().unwrap());
        empty.endpoints.clear();
        let r = render(&input(vec![headless, empty]), IpvsScheduler::Rr, &[NODE_IP]).unwrap();
        // No rule for the headless one; the empty one keeps a virtual server with no
        // real server (IPVS answers its connections with a port unreachable).
        assert_eq!(r.virtual_servers.len(), 1);
        assert!(r.virtual_servers[0].real_servers.is_empty());
        assert!(r.ipvsadm().ends_with("TCP  10.96.0.11:80 rr\n"));
        // Deterministic, and a duplicate port is refused as in iptables mode.
        assert!(matches!(
            render(&input(vec![nginx(), nginx()]), IpvsScheduler::Rr, &[]),
            Err(ProxyError::DuplicatePort(..))
        ));
        let text = render_one(nginx()).text();
        assert!(text.starts_with("# ipvsadm -Ln\n"), "{text}");
        assert!(text.contains("iptables -t nat -I PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n"), "{text}");
    }
}
