//! kube-proxy's iptables mode as a pure function: from the service ports and endpoints a
//! node knows ([`ProxyInput`]) to the exact `iptables-restore --noflush` text kube-proxy
//! writes for a sync ([`ProxyRules::full_restore`], [`ProxyRules::incremental_restore`]),
//! plus the jumps it inserts into the built-in chains ([`JUMP_CHAINS`],
//! [`bootstrap_restore`]) and what `iptables-save` prints afterwards
//! ([`ProxyRules::saved`], [`normalise_rule`], [`IptablesState`], [`kube_proxy_view`]).
//!
//! Fidelity is the point: a student who runs `iptables-save -t nat` in a simulated node
//! must see what a real node shows. So this module follows `pkg/proxy/iptables/
//! proxier.go` (`syncProxyRules`, `writeServiceToEndpointRules`) and `pkg/proxy/
//! topology.go` (`CategorizeEndpoints`) line by line: the same chains, the same rules in
//! the same order, the same argument order (`-m comment` first, `-m tcp -p tcp` before
//! `-d`), the same quoting (comments with spaces are passed already double-quoted,
//! single-word comments bare), the mark written `%#08x` (`0x00004000`), probabilities
//! written `%0.10f`, `--random-fully` on MASQUERADE. The reference
//! (`kube-proxy-and-policy-internals.md`, §1 and §4) lists every template.
//!
//! Choices where kube-proxy has a knob or is not deterministic:
//! - Behaviour is that of kube-proxy v1.30 with the defaults of a kubeadm node: local
//!   traffic detected by the cluster's pod CIDR (`--detect-local-mode=ClusterCIDR`;
//!   without a CIDR no `! -s`/`-s` rules are written, as kube-proxy does when no detector
//!   is configured), `nodePortAddresses` empty (NodePorts on every local address), no
//!   nfacct counters, `nf_conntrack_tcp_be_liberal=0`, masquerade bit 14, iptables with
//!   `--random-fully`. Each is a field of [`ProxyConfig`].
//! - **Localhost NodePorts are on** (kube-proxy's default for IPv4): the nat tail rule
//!   has no `! -d 127.0.0.0/8` and filter `KUBE-FIREWALL` carries the "block incoming
//!   localnet connections" rule. A node namespace that wants `127.0.0.1:<nodePort>` to
//!   work must set `net.ipv4.conf.all.route_localnet=1`, as kube-proxy does. Setting
//!   [`ProxyConfig::localhost_nodeports`] to false gives the other variant of §1.11.
//! - kube-proxy walks its service map in Go's random map order; we walk service ports
//!   sorted by namespace, name, port name and protocol, so the output is deterministic.
//!   Endpoints are sorted as kube-proxy sorts them (by the `ip:port` string), and the
//!   union of Cluster and Local endpoints (random order in kube-proxy) is sorted the same
//!   way.
//! - Stale chains: kube-proxy finds them with `iptables-save`; here the caller passes the
//!   chains it knows exist ([`ProxyRules::full_restore_replacing`]) or the previous
//!   rendering ([`ProxyRules::incremental_restore`]).
//! - The partial sync rewrites a service's chains when their rendered text changed
//!   (kube-proxy: when the Service or its EndpointSlices changed); as in kube-proxy the
//!   unit is the whole Service (`namespace/name`), all its ports together. In large
//!   cluster mode kube-proxy skips the stale-chain search unless a sync period passed;
//!   we always delete stale chains.
//! - IPv4 only; no topology hints; no `--nodeport-addresses`.
//!
//! One correction to the reference's worked example (§1.17(a)): kube-proxy declares a
//! service's `KUBE-EXT-` chain before its `KUBE-SVC-` chain (the EXT block of
//! `syncProxyRules` comes first), so that is the order written here. The kernel state,
//! and so `iptables-save`, is the same either way.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::net::Ipv4Addr;
use std::ops::Range;

use ipnet::Ipv4Net;

use super::names::save_quote;
use super::proxy_names::{
    self as pn, KUBE_EXTERNAL_SERVICES, KUBE_FIREWALL, KUBE_FORWARD, KUBE_MARK_MASQ,
    KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_PROXY_CANARY, KUBE_PROXY_FIREWALL, KUBE_SERVICES,
};
use crate::protocol::Protocol;

/// kube-proxy's default `--iptables-masquerade-bit`.
pub const DEFAULT_MASQUERADE_BIT: u8 = 14;
/// `DefaultClientIPServiceAffinitySeconds` (3 hours).
pub const DEFAULT_CLIENT_IP_TIMEOUT_SECONDS: u32 = 10800;
/// `MaxClientIPServiceAffinitySeconds` (1 day), the API's upper bound.
pub const MAX_CLIENT_IP_TIMEOUT_SECONDS: u32 = 86400;
/// Above this many endpoints in total, kube-proxy drops the comments of SVC→SEP and SEP
/// rules ("large cluster mode").
pub const LARGE_CLUSTER_ENDPOINTS_THRESHOLD: usize = 1000;

// ---------------------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------------------

/// kube-proxy's command-line knobs that change the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyConfig {
    /// `--iptables-masquerade-bit` (0-31): the mark is `1 << bit`.
    pub masquerade_bit: u8,
    /// `--masquerade-all`: masquerade every ClusterIP connection.
    pub masquerade_all: bool,
    /// `--iptables-localhost-nodeports` (default true): NodePorts answer on 127.0.0.1.
    pub localhost_nodeports: bool,
    /// Whether the iptables binary supports `--random-fully` (1.6.2 and later do).
    pub random_fully: bool,
    /// `net.netfilter.nf_conntrack_tcp_be_liberal` is non-zero: no INVALID drop rule.
    pub conntrack_tcp_be_liberal: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            masquerade_bit: DEFAULT_MASQUERADE_BIT,
            masquerade_all: false,
            localhost_nodeports: true,
            random_fully: true,
            conntrack_tcp_be_liberal: false,
        }
    }
}

/// Everything one node's kube-proxy knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyInput {
    /// This node's name: endpoints whose `node` equals it are local.
    pub node: String,
    /// The node's address (kube-proxy `nodeIP`): a `loadBalancerSourceRanges` entry that
    /// contains it also admits traffic from the load-balancer IPs themselves.
    pub node_ip: Ipv4Addr,
    /// The cluster-wide pod CIDR used to tell pod traffic from the rest
    /// (`--cluster-cidr`, detect-local-mode ClusterCIDR). `None`: no local detector.
    pub cluster_cidr: Option<Ipv4Net>,
    pub config: ProxyConfig,
    /// One entry per service port (a Service with two ports gives two entries).
    pub services: Vec<ServicePort>,
}

/// `spec.sessionAffinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionAffinity {
    #[default]
    None,
    /// `ClientIP` with `sessionAffinityConfig.clientIP.timeoutSeconds`
    /// ([`DEFAULT_CLIENT_IP_TIMEOUT_SECONDS`] when the Service does not say).
    ClientIp { timeout_seconds: u32 },
}

/// One port of one Service, as kube-proxy's service map holds it (already filtered to
/// IPv4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub namespace: String,
    pub name: String,
    /// `ports[].name`; `None` (or empty) for an unnamed port.
    pub port_name: Option<String>,
    pub protocol: Protocol,
    /// `None` for a headless Service (`clusterIP: None`): no rules at all.
    pub cluster_ip: Option<Ipv4Addr>,
    pub port: u16,
    pub node_port: Option<u16>,
    pub external_ips: Vec<Ipv4Addr>,
    /// `status.loadBalancer.ingress[].ip` (VIP mode).
    pub load_balancer_ips: Vec<Ipv4Addr>,
    pub load_balancer_source_ranges: Vec<Ipv4Net>,
    pub session_affinity: SessionAffinity,
    /// `externalTrafficPolicy: Local` (only matters if the port is reachable from
    /// outside: NodePort, external IPs or load-balancer IPs).
    pub external_policy_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_policy_local: bool,
    /// `spec.healthCheckNodePort` (LoadBalancer with `externalTrafficPolicy: Local`).
    pub health_check_node_port: Option<u16>,
    /// The endpoints of this port from the EndpointSlices, any order.
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// A plain ClusterIP service port with no endpoints yet.
    pub fn cluster_ip(
        namespace: &str,
        name: &str,
        port_name: Option<&str>,
        protocol: Protocol,
        cluster_ip: Ipv4Addr,
        port: u16,
    ) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
            port_name: port_name.map(str::to_string),
            protocol,
            cluster_ip: Some(cluster_ip),
            port,
            node_port: None,
            external_ips: Vec::new(),
            load_balancer_ips: Vec::new(),
            load_balancer_source_ranges: Vec::new(),
            session_affinity: SessionAffinity::None,
            external_policy_local: false,
            internal_policy_local: false,
            health_check_node_port: None,
            endpoints: Vec::new(),
        }
    }

    /// `ns/name:port` (or `ns/name`), the string in every comment and hash.
    pub fn port_name_string(&self) -> String {
        pn::service_port_name(&self.namespace, &self.name, self.port_name.as_deref())
    }

    /// Reachable through a NodePort, an external IP or a load-balancer IP
    /// (`ExternallyAccessible`).
    pub fn externally_accessible(&self) -> bool {
        self.node_port.is_some_and(|p| p != 0)
            || !self.load_balancer_ips.is_empty()
            || !self.external_ips.is_empty()
    }
}

/// One endpoint of a service port with its EndpointSlice conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// `nodeName`; `None` for hand-written endpoints outside the cluster (never local).
    pub node: Option<String>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

impl Endpoint {
    /// A ready (and serving, not terminating) endpoint.
    pub fn ready(ip: Ipv4Addr, port: u16, node: Option<&str>) -> Self {
        Self {
            ip,
            port,
            node: node.map(str::to_string),
            ready: true,
            serving: true,
            terminating: false,
        }
    }

    /// The endpoint of a pod that is being deleted: not ready, terminating, and serving
    /// as long as its readiness probe still passes.
    pub fn terminating(ip: Ipv4Addr, port: u16, node: Option<&str>, serving: bool) -> Self {
        Self {
            ip,
            port,
            node: node.map(str::to_string),
            ready: false,
            serving,
            terminating: true,
        }
    }
}

/// Input kube-proxy itself would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("masquerade bit {0} is out of range (0-31)")]
    MasqueradeBit(u8),
    #[error("service port {0} ({1}) is listed twice")]
    DuplicatePort(String, Protocol),
}

// ---------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------

/// The netfilter tables kube-proxy touches, in the order `iptables-save` (nft backend)
/// prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Mangle,
    Raw,
    Filter,
    Nat,
}

impl Table {
    pub fn as_str(self) -> &'static str {
        match self {
            Table::Mangle => "mangle",
            Table::Raw => "raw",
            Table::Filter => "filter",
            Table::Nat => "nat",
        }
    }

    pub fn parse(s: &str) -> Option<Table> {
        match s {
            "mangle" => Some(Table::Mangle),
            "raw" => Some(Table::Raw),
            "filter" => Some(Table::Filter),
            "nat" => Some(Table::Nat),
            _ => None,
        }
    }

    /// The built-in chains, in the order `iptables-save` lists them.
    pub fn builtin_chains(self) -> &'static [&'static str] {
        match self {
            Table::Mangle => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
            Table::Raw => &["PREROUTING", "OUTPUT"],
            Table::Filter => &["INPUT", "FORWARD", "OUTPUT"],
            Table::Nat => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// kube-proxy's filter-table chains written on every sync, in its order.
const FILTER_TOP_CHAINS: [&str; 5] = [
    KUBE_SERVICES,
    KUBE_EXTERNAL_SERVICES,
    KUBE_FORWARD,
    KUBE_NODEPORTS,
    KUBE_PROXY_FIREWALL,
];
/// kube-proxy's nat-table chains written on every sync, in its order.
const NAT_TOP_CHAINS: [&str; 4] = [
    KUBE_SERVICES,
    KUBE_NODEPORTS,
    KUBE_POSTROUTING,
    KUBE_MARK_MASQ,
];

/// The rendered rules of one service port, split the way a sync writes them: byte
/// ranges into the shared buffers of [`ProxyRules`] (one buffer per part rather than
/// strings per service keeps rendering 10 000 services fast).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServiceBlock {
    /// `ns/name:port` (or `ns/name`): with the protocol, identifies the port across
    /// renderings.
    spn: String,
    /// The length of the `ns/name` prefix of `spn`: the unit a partial sync rewrites.
    service_len: usize,
    protocol: Protocol,
    /// Rules in filter KUBE-SERVICES, KUBE-EXTERNAL-SERVICES, KUBE-PROXY-FIREWALL and
    /// KUBE-NODEPORTS (always written).
    filter: Range<usize>,
    /// Rules in nat KUBE-SERVICES and KUBE-NODEPORTS (always written).
    nat_top: Range<usize>,
    /// Chain lines (`:NAME - [0:0]`) of the per-service nat chains (EXT, FW, SVC, SVL,
    /// SEP…), in the order declared.
    decls: Range<usize>,
    /// Their rules (written only in a full sync or when the service changed).
    rules: Range<usize>,
}

impl ServiceBlock {
    fn service(&self) -> &str {
        &self.spn[..self.service_len]
    }
}

/// Where [`render_service`] writes.
#[derive(Default)]
struct Buffers {
    filter: String,
    nat_top: String,
    decls: String,
    rules: String,
}

/// One node's kube-proxy rules, ready to be written as a full or a partial sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRules {
    pub config: ProxyConfig,
    /// Endpoints over all service ports (what kube-proxy compares with the threshold).
    pub total_endpoints: usize,
    /// More than [`LARGE_CLUSTER_ENDPOINTS_THRESHOLD`] endpoints: comments were dropped.
    pub large_cluster: bool,
    filter_chains: Vec<&'static str>,
    filter_head: String,
    filter_tail: String,
    nat_head: String,
    nat_tail: String,
    filter_buf: String,
    nat_top_buf: String,
    decl_buf: String,
    rules_buf: String,
    services: Vec<ServiceBlock>,
}

/// `fmt.Sprintf("%#08x", 1<<bit)`: Go pads the digits, not the prefix, to 8.
pub fn masquerade_mark(bit: u8) -> String {
    format!("{:#010x}", 1u32 << bit)
}

/// `computeProbability`: `1/n` with 10 decimals, as kube-proxy writes it.
pub fn probability(n: usize) -> String {
    format!("{:.10}", 1.0 / n as f64)
}

/// Renders one node's kube-proxy rules.
pub fn render(input: &ProxyInput) -> Result<ProxyRules, ProxyError> {
    let cfg = input.config;
    if cfg.masquerade_bit > 31 {
        return Err(ProxyError::MasqueradeBit(cfg.masquerade_bit));
    }
    let mark = masquerade_mark(cfg.masquerade_bit);

    // kube-proxy's service map holds only ports with a cluster IP; headless services
    // and their endpoints get no rules and do not count towards the large-cluster limit.
    let mut ports: Vec<&ServicePort> = input
        .services
        .iter()
        .filter(|s| s.cluster_ip.is_some())
        .collect();
    ports.sort_by(|a, b| {
        (&a.namespace, &a.name, &a.port_name, a.protocol).cmp(&(
            &b.namespace,
            &b.name,
            &b.port_name,
            b.protocol,
        ))
    });
    let mut prepared = Vec::with_capacity(ports.len());
    let mut seen: HashSet<(String, Protocol)> = HashSet::with_capacity(ports.len());
    for sp in ports {
        let spn = sp.port_name_string();
        if !seen.insert((spn.clone(), sp.protocol)) {
            return Err(ProxyError::DuplicatePort(spn, sp.protocol));
        }
        let eps = endpoint_list(sp, &input.node);
        prepared.push((spn, sp, eps));
    }
    let total_endpoints: usize = prepared.iter().map(|(_, _, e)| e.len()).sum();
    let large_cluster = total_endpoints > LARGE_CLUSTER_ENDPOINTS_THRESHOLD;

    let most = prepared.iter().map(|(_, _, e)| e.len()).max().unwrap_or(0);
    let ctx = Ctx {
        cfg,
        probabilities: (0..=most).map(|n| probability(n.max(1))).collect(),
        node_ip: input.node_ip,
        cluster_cidr: input.cluster_cidr.map(|c| c.trunc().to_string()),
        large_cluster,
    };
    // About 130 bytes per rule; SVC/SEP rules are most of them.
    let mut bufs = Buffers {
        rules: String::with_capacity(total_endpoints * 420 + prepared.len() * 260),
        decls: String::with_capacity(total_endpoints * 40 + prepared.len() * 80),
        nat_top: String::with_capacity(prepared.len() * 150),
        filter: String::new(),
    };
    let mut scratch = Scratch::default();
    let services = prepared
        .into_iter()
        .map(|(spn, sp, eps)| render_service(&ctx, sp, spn, &eps, &mut bufs, &mut scratch))
        .collect();

    let mut filter_chains = FILTER_TOP_CHAINS.to_vec();
    let mut filter_head = String::new();
    if cfg.localhost_nodeports {
        // kube-proxy duplicates kubelet's rule that closes the hole route_localnet opens.
        filter_chains.push(KUBE_FIREWALL);
        filter_head.push_str(
            "-A KUBE-FIREWALL -m comment --comment \"block incoming localnet connections\" \
             -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP\n",
        );
    }
    let mut filter_tail = String::new();
    if !cfg.conntrack_tcp_be_liberal {
        filter_tail.push_str("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n");
    }
    let _ = writeln!(
        filter_tail,
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {mark}/{mark} -j ACCEPT"
    );
    filter_tail.push_str(
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n",
    );

    let mut nat_head = String::new();
    let _ = writeln!(
        nat_head,
        "-A KUBE-POSTROUTING -m mark ! --mark {mark}/{mark} -j RETURN"
    );
    let _ = writeln!(nat_head, "-A KUBE-POSTROUTING -j MARK --xor-mark {mark}");
    let _ = writeln!(
        nat_head,
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE{}",
        if cfg.random_fully {
            " --random-fully"
        } else {
            ""
        }
    );
    let _ = writeln!(nat_head, "-A KUBE-MARK-MASQ -j MARK --or-mark {mark}");

    let nat_tail = format!(
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL{} -j KUBE-NODEPORTS\n",
        if cfg.localhost_nodeports {
            ""
        } else {
            " ! -d 127.0.0.0/8"
        }
    );

    Ok(ProxyRules {
        config: cfg,
        total_endpoints,
        large_cluster,
        filter_chains,
        filter_head,
        filter_tail,
        nat_head,
        nat_tail,
        filter_buf: bufs.filter,
        nat_top_buf: bufs.nat_top,
        decl_buf: bufs.decls,
        rules_buf: bufs.rules,
        services,
    })
}

/// `ip:port` as Go's `net.JoinHostPort` writes an IPv4 endpoint, kept on the stack
/// (at most `255.255.255.255:65535`, 21 bytes).
#[derive(Clone, Copy)]
struct HostPort {
    buf: [u8; 21],
    len: u8,
    /// Length of the address part.
    ip_len: u8,
}

impl HostPort {
    fn new(ip: Ipv4Addr, port: u16) -> Self {
        let mut hp = HostPort {
            buf: [0; 21],
            len: 0,
            ip_len: 0,
        };
        for (k, octet) in ip.octets().into_iter().enumerate() {
            if k > 0 {
                hp.push(b'.');
            }
            hp.push_decimal(u32::from(octet));
        }
        hp.ip_len = hp.len;
        hp.push(b':');
        hp.push_decimal(u32::from(port));
        hp
    }

    fn push(&mut self, b: u8) {
        self.buf[usize::from(self.len)] = b;
        self.len += 1;
    }

    fn push_decimal(&mut self, n: u32) {
        let mut digits = [0u8; 5];
        let mut count = 0;
        let mut n = n;
        loop {
            digits[count] = b'0' + (n % 10) as u8;
            count += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for k in (0..count).rev() {
            self.push(digits[k]);
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or_default()
    }

    fn ip(&self) -> &str {
        std::str::from_utf8(&self.buf[..usize::from(self.ip_len)]).unwrap_or_default()
    }
}

/// An endpoint as kube-proxy's endpoints map holds it.
struct Ep<'a> {
    src: &'a Endpoint,
    /// `ip:port` (`BaseEndpointInfo.String()`).
    text: HostPort,
    local: bool,
}

impl Ep<'_> {
    fn ready(&self) -> bool {
        self.src.ready
    }
    fn serving_terminating(&self) -> bool {
        self.src.serving && self.src.terminating
    }
}

/// One entry per `ip:port` (a local copy wins, as in kube-proxy's slice cache), sorted
/// by that string (kube-proxy's `byEndpoint`).
fn endpoint_list<'a>(sp: &'a ServicePort, node: &str) -> Vec<Ep<'a>> {
    let mut eps: Vec<Ep<'a>> = sp
        .endpoints
        .iter()
        .map(|e| Ep {
            src: e,
            text: HostPort::new(e.ip, e.port),
            local: e.node.as_deref() == Some(node),
        })
        .collect();
    eps.sort_by(|a, b| {
        a.text
            .as_str()
            .cmp(b.text.as_str())
            .then(b.local.cmp(&a.local))
    });
    eps.dedup_by(|later, kept| later.text.as_str() == kept.text.as_str());
    eps
}

/// Vectors reused from one service port to the next.
#[derive(Default)]
struct Scratch {
    /// Indexes into the endpoint list: used with the Cluster policy, with the Local
    /// policy, and reachable from this node (the union).
    cluster: Vec<usize>,
    local: Vec<usize>,
    reachable: Vec<usize>,
    /// SEP chain names, indexed like the endpoint list (empty when not reachable).
    seps: Vec<String>,
}

/// `CategorizeEndpoints` (no topology hints): fills the cluster, local and reachable
/// lists of `scratch` and says whether the service has usable endpoints anywhere.
fn categorize(eps: &[Ep<'_>], uses_cluster: bool, uses_local: bool, scratch: &mut Scratch) -> bool {
    let pick = |out: &mut Vec<usize>, f: &dyn Fn(&Ep<'_>) -> bool| {
        out.clear();
        out.extend(eps.iter().enumerate().filter(|(_, e)| f(e)).map(|(i, _)| i));
    };
    let Scratch {
        cluster,
        local,
        reachable,
        ..
    } = scratch;
    cluster.clear();
    local.clear();
    let mut has_any = false;
    if uses_cluster {
        pick(cluster, &|e| e.ready());
        // No ready endpoint anywhere: fall back to serving, terminating ones so that
        // connections drain during a rollout.
        if cluster.is_empty() {
            pick(cluster, &|e| e.serving_terminating());
        }
        has_any = !cluster.is_empty();
    }
    if !uses_local {
        reachable.clone_from(cluster);
        return has_any;
    }
    let mut local_ready = false;
    let mut local_serving_terminating = false;
    for e in eps {
        if e.ready() {
            has_any = true;
            local_ready |= e.local;
        } else if e.serving_terminating() {
            has_any = true;
            local_serving_terminating |= e.local;
        }
    }
    let mut use_serving_terminating = false;
    if local_ready {
        pick(local, &|e| e.local && e.ready());
    } else if local_serving_terminating {
        use_serving_terminating = true;
        pick(local, &|e| e.local && e.serving_terminating());
    }
    if !uses_cluster {
        reachable.clone_from(local);
    } else if !use_serving_terminating {
        // Every ready endpoint is in `cluster`, so it contains all of `local`.
        reachable.clone_from(cluster);
    } else {
        let set: BTreeSet<usize> = cluster.iter().chain(local.iter()).copied().collect();
        reachable.clear();
        reachable.extend(set);
    }
    has_any
}

/// [`categorize_endpoints`]'s answer: kube-proxy's `CategorizeEndpoints` for one
/// service port, shared with the other proxy renderers (nftables) so that every mode
/// picks the same endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategorizedEndpoints<'a> {
    /// One per `ip:port` (a local copy wins), sorted by that string: kube-proxy's order.
    pub endpoints: Vec<&'a Endpoint>,
    /// Indexes into `endpoints`: used with the Cluster policy, with the Local policy,
    /// and reachable from this node (the union, what gets an endpoint chain).
    pub cluster: Vec<usize>,
    pub local: Vec<usize>,
    pub reachable: Vec<usize>,
    /// The service has usable endpoints somewhere (not necessarily on this node).
    pub has_endpoints: bool,
}

/// `CategorizeEndpoints` for `sp` as node `node`'s kube-proxy sees it, with the
/// traffic-policy flags worked out as `syncProxyRules` does.
pub fn categorize_endpoints<'a>(sp: &'a ServicePort, node: &str) -> CategorizedEndpoints<'a> {
    let eps = endpoint_list(sp, node);
    let externally_accessible = sp.externally_accessible();
    let etp_local = sp.external_policy_local && externally_accessible;
    let itp_local = sp.internal_policy_local;
    let mut scratch = Scratch::default();
    let has_endpoints = categorize(
        &eps,
        !itp_local || externally_accessible,
        itp_local || etp_local,
        &mut scratch,
    );
    CategorizedEndpoints {
        endpoints: eps.iter().map(|e| e.src).collect(),
        cluster: scratch.cluster,
        local: scratch.local,
        reachable: scratch.reachable,
        has_endpoints,
    }
}

/// The chain names of `:NAME - [0:0]` lines.
fn declared_names(decls: &str) -> impl Iterator<Item = &str> {
    decls
        .lines()
        .filter_map(|l| l.strip_prefix(':')?.split(' ').next())
}

/// Appends the chain line that declares (and flushes) `chain`.
fn push_decl(out: &mut String, chain: &str) {
    out.push(':');
    out.push_str(chain);
    out.push_str(" - [0:0]\n");
}

/// What every service port's rendering shares.
struct Ctx {
    cfg: ProxyConfig,
    /// `probability(n)` for n up to the largest endpoint count (kube-proxy caches them
    /// too: formatting floats is slow).
    probabilities: Vec<String>,
    node_ip: Ipv4Addr,
    cluster_cidr: Option<String>,
    large_cluster: bool,
}

impl Ctx {
    fn probability(&self, n: usize) -> &str {
        self.probabilities
            .get(n)
            .map(String::as_str)
            .unwrap_or("1.0000000000")
    }
}

/// The body of kube-proxy's per-service loop in `syncProxyRules`.
fn render_service(
    ctx: &Ctx,
    sp: &ServicePort,
    spn_owned: String,
    eps: &[Ep<'_>],
    bufs: &mut Buffers,
    scratch: &mut Scratch,
) -> ServiceBlock {
    let spn = spn_owned.as_str();
    let starts = (
        bufs.filter.len(),
        bufs.nat_top.len(),
        bufs.decls.len(),
        bufs.rules.len(),
    );
    let Buffers {
        filter,
        nat_top,
        decls,
        rules,
    } = bufs;
    let p = sp.protocol.lower();
    let cip = sp.cluster_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
    let port = sp.port;
    let hash = pn::port_proto_hash(spn, sp.protocol);
    let svc_chain = format!("{}{hash}", pn::SVC_PREFIX);
    let svl_chain = format!("{}{hash}", pn::SVL_PREFIX);
    let ext_chain = format!("{}{hash}", pn::EXT_PREFIX);
    let fw_chain = format!("{}{hash}", pn::FW_PREFIX);

    let externally_accessible = sp.externally_accessible();
    let etp_local = sp.external_policy_local && externally_accessible;
    let itp_local = sp.internal_policy_local;
    let uses_cluster_eps = !itp_local || externally_accessible;
    let uses_local_eps = itp_local || etp_local;
    let has_endpoints = categorize(eps, uses_cluster_eps, uses_local_eps, scratch);
    let has_local = !scratch.local.is_empty();
    let uses_cluster_chain = !scratch.cluster.is_empty() && uses_cluster_eps;
    let uses_local_chain = has_local && uses_local_eps;
    let (internal_chain, has_internal) = if itp_local {
        (&svl_chain, has_endpoints && has_local)
    } else {
        (&svc_chain, has_endpoints)
    };
    let (external_policy_chain, has_external) = if etp_local {
        (&svl_chain, has_endpoints && has_local)
    } else {
        (&svc_chain, has_endpoints)
    };
    let uses_ext_chain = has_endpoints && externally_accessible;
    let uses_fw_chain = has_endpoints
        && !sp.load_balancer_ips.is_empty()
        && !sp.load_balancer_source_ranges.is_empty();
    let lb_chain = if uses_fw_chain { &fw_chain } else { &ext_chain };

    let (int_target, int_comment, ext_target, ext_comment) = if !has_endpoints {
        let c = format!("\"{spn} has no endpoints\"");
        ("REJECT", c.clone(), "REJECT", c)
    } else {
        let c = format!("\"{spn} has no local endpoints\"");
        ("DROP", c.clone(), "DROP", c)
    };

    // Capture the cluster IP.
    if has_internal {
        let _ = writeln!(
            nat_top,
            "-A KUBE-SERVICES -m comment --comment \"{spn} cluster IP\" -m {p} -p {p} -d {cip} --dport {port} -j {internal_chain}"
        );
    } else {
        let _ = writeln!(
            filter,
            "-A KUBE-SERVICES -m comment --comment {int_comment} -m {p} -p {p} -d {cip} --dport {port} -j {int_target}"
        );
    }
    // External IPs.
    for eip in &sp.external_ips {
        if has_endpoints {
            let _ = writeln!(
                nat_top,
                "-A KUBE-SERVICES -m comment --comment \"{spn} external IP\" -m {p} -p {p} -d {eip} --dport {port} -j {ext_chain}"
            );
        }
        if !has_external {
            let _ = writeln!(
                filter,
                "-A KUBE-EXTERNAL-SERVICES -m comment --comment {ext_comment} -m {p} -p {p} -d {eip} --dport {port} -j {ext_target}"
            );
        }
    }
    // Load-balancer ingress IPs.
    for lb in &sp.load_balancer_ips {
        if has_endpoints {
            let _ = writeln!(
                nat_top,
                "-A KUBE-SERVICES -m comment --comment \"{spn} loadbalancer IP\" -m {p} -p {p} -d {lb} --dport {port} -j {lb_chain}"
            );
        }
        if uses_fw_chain {
            let _ = writeln!(
                filter,
                "-A KUBE-PROXY-FIREWALL -m comment --comment \"{spn} traffic not accepted by {fw_chain}\" -m {p} -p {p} -d {lb} --dport {port} -j DROP"
            );
        }
    }
    if !has_external {
        for lb in &sp.load_balancer_ips {
            let _ = writeln!(
                filter,
                "-A KUBE-EXTERNAL-SERVICES -m comment --comment {ext_comment} -m {p} -p {p} -d {lb} --dport {port} -j {ext_target}"
            );
        }
    }
    // NodePort.
    if let Some(np) = sp.node_port.filter(|p| *p != 0) {
        if has_endpoints {
            let _ = writeln!(
                nat_top,
                "-A KUBE-NODEPORTS -m comment --comment {spn} -m {p} -p {p} --dport {np} -j {ext_chain}"
            );
        }
        if !has_external {
            let _ = writeln!(
                filter,
                "-A KUBE-EXTERNAL-SERVICES -m comment --comment {ext_comment} -m addrtype --dst-type LOCAL -m {p} -p {p} --dport {np} -j {ext_target}"
            );
        }
    }
    // Health-check node port: accepted whether or not this node has local endpoints.
    if let Some(hc) = sp.health_check_node_port.filter(|p| *p != 0) {
        let _ = writeln!(
            filter,
            "-A KUBE-NODEPORTS -m comment --comment \"{spn} health check node port\" -m tcp -p tcp --dport {hc} -j ACCEPT"
        );
    }

    // The per-service chains.
    if has_internal {
        let args = format!(
            "-m comment --comment \"{spn} cluster IP\" -m {p} -p {p} -d {cip} --dport {port}"
        );
        if ctx.cfg.masquerade_all {
            let _ = writeln!(rules, "-A {internal_chain} {args} -j KUBE-MARK-MASQ");
        } else if let Some(cidr) = &ctx.cluster_cidr {
            // Off-cluster clients of a cluster IP (a route to the service range via a
            // node) are masqueraded, since the backend may be on another node.
            let _ = writeln!(
                rules,
                "-A {internal_chain} {args} ! -s {cidr} -j KUBE-MARK-MASQ"
            );
        }
    }
    if uses_ext_chain {
        push_decl(decls, &ext_chain);
        if !etp_local {
            let _ = writeln!(
                rules,
                "-A {ext_chain} -m comment --comment \"masquerade traffic for {spn} external destinations\" -j KUBE-MARK-MASQ"
            );
        } else {
            if let Some(cidr) = &ctx.cluster_cidr {
                // Pods reaching an external address are sent to the Cluster chain "as if
                // they went out to the load balancer and came back".
                let _ = writeln!(
                    rules,
                    "-A {ext_chain} -m comment --comment \"pod traffic for {spn} external destinations\" -s {cidr} -j {svc_chain}"
                );
            }
            let _ = writeln!(
                rules,
                "-A {ext_chain} -m comment --comment \"masquerade LOCAL traffic for {spn} external destinations\" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ"
            );
            let _ = writeln!(
                rules,
                "-A {ext_chain} -m comment --comment \"route LOCAL traffic for {spn} external destinations\" -m addrtype --src-type LOCAL -j {svc_chain}"
            );
        }
        if has_external {
            let _ = writeln!(rules, "-A {ext_chain} -j {external_policy_chain}");
        }
    }
    if uses_fw_chain {
        push_decl(decls, &fw_chain);
        let args = format!("-A {fw_chain} -m comment --comment \"{spn} loadbalancer IP\"");
        let mut allow_from_node = false;
        for cidr in &sp.load_balancer_source_ranges {
            let cidr = cidr.trunc();
            let _ = writeln!(rules, "{args} -s {cidr} -j {ext_chain}");
            allow_from_node |= cidr.contains(&ctx.node_ip);
        }
        if allow_from_node {
            // A VIP bound on the node loops back with the VIP as source.
            for lb in &sp.load_balancer_ips {
                let _ = writeln!(rules, "{args} -s {lb} -j {ext_chain}");
            }
        }
        let _ = writeln!(
            rules,
            "-A {fw_chain} -m comment --comment \"other traffic to {spn} will be dropped by KUBE-PROXY-FIREWALL\""
        );
    }

    // SEP names, indexed like `eps` (only reachable endpoints get one).
    let Scratch {
        cluster,
        local,
        reachable,
        seps,
    } = scratch;
    if seps.len() < eps.len() {
        seps.resize(eps.len(), String::new());
    }
    for &i in reachable.iter() {
        seps[i].clear();
        seps[i].push_str(&pn::endpoint_chain(spn, sp.protocol, eps[i].text.as_str()));
    }
    if uses_cluster_chain {
        push_decl(decls, &svc_chain);
        write_service_to_endpoint_rules(rules, ctx, sp, spn, &svc_chain, eps, cluster, seps);
    }
    if uses_local_chain {
        push_decl(decls, &svl_chain);
        write_service_to_endpoint_rules(rules, ctx, sp, spn, &svl_chain, eps, local, seps);
    }
    // The endpoint chains are most of the lines of a big node, so they are written with
    // plain pushes rather than the formatting machinery (see the 10 000-service test).
    let affinity = matches!(sp.session_affinity, SessionAffinity::ClientIp { .. });
    for &i in reachable.iter() {
        let ep = &eps[i];
        let sep = seps[i].as_str();
        push_decl(decls, sep);
        let start = rules.len();
        rules.push_str("-A ");
        rules.push_str(sep);
        if !ctx.large_cluster {
            rules.push_str(" -m comment --comment ");
            rules.push_str(spn);
        }
        let prefix_end = rules.len();
        // Hairpin: a pod reaching itself through the service must be masqueraded, or
        // it would answer itself directly.
        rules.push_str(" -s ");
        rules.push_str(ep.text.ip());
        rules.push_str(" -j KUBE-MARK-MASQ\n");
        rules.extend_from_within(start..prefix_end);
        if affinity {
            rules.push_str(" -m recent --name ");
            rules.push_str(sep);
            rules.push_str(" --set");
        }
        push_words(
            rules,
            &[
                "",
                "-m",
                p,
                "-p",
                p,
                "-j DNAT --to-destination",
                ep.text.as_str(),
            ],
        );
        rules.push('\n');
    }

    let service_len = sp.namespace.len() + 1 + sp.name.len();
    ServiceBlock {
        spn: spn_owned,
        service_len,
        protocol: sp.protocol,
        filter: starts.0..filter.len(),
        nat_top: starts.1..nat_top.len(),
        decls: starts.2..decls.len(),
        rules: starts.3..rules.len(),
    }
}

/// `writeServiceToEndpointRules`: affinity checks first, then the probability cascade
/// (rule i of n matches with 1/(n-i), the last one always).
#[allow(clippy::too_many_arguments)]
fn write_service_to_endpoint_rules(
    out: &mut String,
    ctx: &Ctx,
    sp: &ServicePort,
    spn: &str,
    chain: &str,
    eps: &[Ep<'_>],
    chosen: &[usize],
    seps: &[String],
) {
    let start = |out: &mut String, ep: &Ep<'_>| {
        out.push_str("-A ");
        out.push_str(chain);
        if !ctx.large_cluster {
            push_words(out, &["", "-m comment --comment", "\""]);
            out.push_str(spn);
            out.push_str(" -> ");
            out.push_str(ep.text.as_str());
            out.push('"');
        }
    };
    let sep = |i: usize| seps[i].as_str();
    if let SessionAffinity::ClientIp { timeout_seconds } = sp.session_affinity {
        let seconds = timeout_seconds.to_string();
        for &i in chosen {
            start(out, &eps[i]);
            push_words(
                out,
                &[
                    "",
                    "-m recent --name",
                    sep(i),
                    "--rcheck --seconds",
                    &seconds,
                    "--reap -j",
                    sep(i),
                ],
            );
            out.push('\n');
        }
    }
    let n = chosen.len();
    for (k, &i) in chosen.iter().enumerate() {
        start(out, &eps[i]);
        if k + 1 < n {
            push_words(
                out,
                &[
                    "",
                    "-m statistic --mode random --probability",
                    ctx.probability(n - k),
                ],
            );
        }
        push_words(out, &["", "-j", sep(i)]);
        out.push('\n');
    }
}

/// Appends `words` joined by blanks (a leading "" gives a leading blank).
fn push_words(out: &mut String, words: &[&str]) {
    for (k, w) in words.iter().enumerate() {
        if k > 0 {
            out.push(' ');
        }
        out.push_str(w);
    }
}

impl ProxyRules {
    /// The restore text of a full sync, exactly as kube-proxy writes it (no stale-chain
    /// deletion: see [`Self::full_restore_replacing`]).
    pub fn full_restore(&self) -> String {
        self.assemble(&|_| true, &[])
    }

    /// A full sync on a node where `existing_nat_chains` exist (the names of
    /// `iptables-save -t nat`): per-service chains that are no longer wanted are flushed
    /// and deleted (`:NAME - [0:0]` then `-X NAME`), as kube-proxy does.
    pub fn full_restore_replacing<'a>(
        &self,
        existing_nat_chains: impl IntoIterator<Item = &'a str>,
    ) -> String {
        let active = self.active_service_chains();
        let stale: BTreeSet<&str> = existing_nat_chains
            .into_iter()
            .filter(|c| pn::is_service_chain_name(c) && !active.contains(c))
            .collect();
        let stale: Vec<String> = stale.into_iter().map(str::to_string).collect();
        self.assemble(&|_| true, &stale)
    }

    /// kube-proxy's partial sync from `previous` (what the node holds) to `self`: the
    /// top-level chains are rewritten whole, a Service's own chains only if one of its
    /// ports changed, and chains no longer used are deleted. Adding one endpoint to one
    /// service rewrites that service's chains and nothing else of the per-service state.
    pub fn incremental_restore(&self, previous: &ProxyRules) -> String {
        let before: HashMap<(&str, Protocol), &ServiceBlock> = previous
            .services
            .iter()
            .map(|b| ((b.spn.as_str(), b.protocol), b))
            .collect();
        let now: HashSet<(&str, Protocol)> = self
            .services
            .iter()
            .map(|b| (b.spn.as_str(), b.protocol))
            .collect();
        let mut changed: HashSet<&str> = HashSet::new();
        for b in &self.services {
            let same = before.get(&(b.spn.as_str(), b.protocol)).is_some_and(|p| {
                previous.decls_of(p) == self.decls_of(b) && previous.rules_of(p) == self.rules_of(b)
            });
            if !same {
                changed.insert(b.service());
            }
        }
        for p in &previous.services {
            if !now.contains(&(p.spn.as_str(), p.protocol)) {
                changed.insert(p.service());
            }
        }
        let active = self.active_service_chains();
        let stale: BTreeSet<&str> = previous
            .active_service_chains()
            .into_iter()
            .filter(|c| !active.contains(c))
            .collect();
        let stale: Vec<String> = stale.into_iter().map(str::to_string).collect();
        self.assemble(&|b| changed.contains(b.service()), &stale)
    }

    fn decls_of(&self, b: &ServiceBlock) -> &str {
        &self.decl_buf[b.decls.clone()]
    }

    fn rules_of(&self, b: &ServiceBlock) -> &str {
        &self.rules_buf[b.rules.clone()]
    }

    /// `*filter` then `*nat`, in kube-proxy's buffer order: chain lines first, then the
    /// rules; per-service chains only where `rewrite` says so; stale chains flushed by
    /// their chain line and deleted just before the final KUBE-NODEPORTS tail-call.
    fn assemble(&self, rewrite: &dyn Fn(&ServiceBlock) -> bool, stale: &[String]) -> String {
        let written: Vec<bool> = self.services.iter().map(rewrite).collect();
        let mut size = self.filter_buf.len() + self.nat_top_buf.len() + 4096;
        for (b, w) in self.services.iter().zip(&written) {
            if *w {
                size += b.decls.len() + b.rules.len();
            }
        }
        let mut out = String::with_capacity(size + stale.len() * 64);
        out.push_str("*filter\n");
        for c in &self.filter_chains {
            push_decl(&mut out, c);
        }
        out.push_str(&self.filter_head);
        // Filter rules are top-level only: always written whole, in service order.
        out.push_str(&self.filter_buf);
        out.push_str(&self.filter_tail);
        out.push_str("COMMIT\n*nat\n");
        for c in NAT_TOP_CHAINS {
            push_decl(&mut out, c);
        }
        for (b, w) in self.services.iter().zip(&written) {
            if *w {
                out.push_str(self.decls_of(b));
            }
        }
        for c in stale {
            push_decl(&mut out, c);
        }
        out.push_str(&self.nat_head);
        for (b, w) in self.services.iter().zip(&written) {
            out.push_str(&self.nat_top_buf[b.nat_top.clone()]);
            if *w {
                out.push_str(self.rules_of(b));
            }
        }
        for c in stale {
            out.push_str("-X ");
            out.push_str(c);
            out.push('\n');
        }
        out.push_str(&self.nat_tail);
        out.push_str("COMMIT\n");
        out
    }

    /// The per-service nat chains this rendering uses (SVC, SVL, EXT, FW, SEP).
    pub fn active_service_chains(&self) -> BTreeSet<&str> {
        self.services
            .iter()
            .flat_map(|b| declared_names(self.decls_of(b)))
            .collect()
    }

    /// Every chain kube-proxy owns on the node with these rules, per table: the
    /// top-level chains, the canaries and the per-service chains.
    pub fn owned_chains(&self) -> BTreeSet<(Table, String)> {
        let mut out: BTreeSet<(Table, String)> = BTreeSet::new();
        for t in [Table::Mangle, Table::Filter, Table::Nat] {
            out.insert((t, KUBE_PROXY_CANARY.to_string()));
        }
        for j in &JUMP_CHAINS {
            out.insert((j.table, j.target.to_string()));
        }
        for c in &self.filter_chains {
            out.insert((Table::Filter, c.to_string()));
        }
        for c in NAT_TOP_CHAINS {
            out.insert((Table::Nat, c.to_string()));
        }
        for c in self.active_service_chains() {
            out.insert((Table::Nat, c.to_string()));
        }
        out
    }

    /// The per-service nat chains of one service port (`ns/name:port`, protocol), in
    /// the order a sync declares them; empty for a headless port or one without
    /// endpoints.
    pub fn chains_of(&self, service_port_name: &str, protocol: Protocol) -> Vec<&str> {
        self.services
            .iter()
            .find(|b| b.spn == service_port_name && b.protocol == protocol)
            .map(|b| declared_names(self.decls_of(b)).collect())
            .unwrap_or_default()
    }

    /// What `iptables-save` prints on a fresh node after kube-proxy started (canaries and
    /// jumps, [`bootstrap_restore`]) and ran this full sync.
    pub fn saved(&self) -> Result<String, RestoreError> {
        let mut state = IptablesState::new();
        state.apply_restore(&bootstrap_restore(true))?;
        state.apply_restore(&self.full_restore())?;
        Ok(state.save())
    }
}

// ---------------------------------------------------------------------------------------
// Jumps from the built-in chains
// ---------------------------------------------------------------------------------------

/// One entry of kube-proxy's `iptablesJumpChains` (and `iptablesKubeletJumpChains`): on
/// every full sync it ensures the chain `target` exists and that `source` has this jump,
/// inserting it at position 1 (`iptables -I`) when missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JumpChain {
    pub table: Table,
    pub target: &'static str,
    pub source: &'static str,
    /// `None` for kubelet's KUBE-FIREWALL jumps.
    pub comment: Option<&'static str>,
    /// Preceded by `-m conntrack --ctstate NEW`.
    pub new_only: bool,
}

const fn jump(
    table: Table,
    target: &'static str,
    source: &'static str,
    comment: Option<&'static str>,
    new_only: bool,
) -> JumpChain {
    JumpChain {
        table,
        target,
        source,
        comment,
        new_only,
    }
}

const EXTERNALLY_VISIBLE: Option<&str> = Some("kubernetes externally-visible service portals");
const PORTALS: Option<&str> = Some("kubernetes service portals");
const LB_FIREWALL: Option<&str> = Some("kubernetes load balancer firewall");

/// kube-proxy's jump list in its order, then kubelet's two KUBE-FIREWALL duplicates.
pub const JUMP_CHAINS: [JumpChain; 14] = [
    jump(
        Table::Filter,
        KUBE_EXTERNAL_SERVICES,
        "INPUT",
        EXTERNALLY_VISIBLE,
        true,
    ),
    jump(
        Table::Filter,
        KUBE_EXTERNAL_SERVICES,
        "FORWARD",
        EXTERNALLY_VISIBLE,
        true,
    ),
    jump(
        Table::Filter,
        KUBE_NODEPORTS,
        "INPUT",
        Some("kubernetes health check service ports"),
        false,
    ),
    jump(Table::Filter, KUBE_SERVICES, "FORWARD", PORTALS, true),
    jump(Table::Filter, KUBE_SERVICES, "OUTPUT", PORTALS, true),
    jump(
        Table::Filter,
        KUBE_FORWARD,
        "FORWARD",
        Some("kubernetes forwarding rules"),
        false,
    ),
    jump(
        Table::Filter,
        KUBE_PROXY_FIREWALL,
        "INPUT",
        LB_FIREWALL,
        true,
    ),
    jump(
        Table::Filter,
        KUBE_PROXY_FIREWALL,
        "OUTPUT",
        LB_FIREWALL,
        true,
    ),
    jump(
        Table::Filter,
        KUBE_PROXY_FIREWALL,
        "FORWARD",
        LB_FIREWALL,
        true,
    ),
    jump(Table::Nat, KUBE_SERVICES, "OUTPUT", PORTALS, false),
    jump(Table::Nat, KUBE_SERVICES, "PREROUTING", PORTALS, false),
    jump(
        Table::Nat,
        KUBE_POSTROUTING,
        "POSTROUTING",
        Some("kubernetes postrouting rules"),
        false,
    ),
    jump(Table::Filter, KUBE_FIREWALL, "INPUT", None, false),
    jump(Table::Filter, KUBE_FIREWALL, "OUTPUT", None, false),
];

impl JumpChain {
    /// The arguments kube-proxy passes to `EnsureRule` (each a separate argv element, so
    /// the comment is not quoted): extra args, comment, `-j`.
    pub fn args(&self) -> Vec<&'static str> {
        let mut args = Vec::with_capacity(8);
        if self.new_only {
            args.extend(["-m", "conntrack", "--ctstate", "NEW"]);
        }
        if let Some(c) = self.comment {
            args.extend(["-m", "comment", "--comment", c]);
        }
        args.extend(["-j", self.target]);
        args
    }

    /// The same rule as an `iptables-restore` line inserting it at position 1.
    pub fn insert_line(&self) -> String {
        let spec: Vec<String> = self
            .args()
            .into_iter()
            .map(|a| {
                if a.contains(' ') {
                    format!("\"{a}\"")
                } else {
                    a.to_string()
                }
            })
            .collect();
        format!("-I {} {}", self.source, spec.join(" "))
    }
}

/// The jumps as they end up in the built-in chains of a fresh node: grouped by table and
/// built-in chain in `iptables-save` order, and within a chain the reverse of the list
/// order (each was inserted at position 1).
pub fn installed_jumps() -> Vec<&'static JumpChain> {
    let mut out: Vec<&'static JumpChain> = Vec::with_capacity(JUMP_CHAINS.len());
    for table in [Table::Filter, Table::Nat] {
        for builtin in table.builtin_chains() {
            out.extend(
                JUMP_CHAINS
                    .iter()
                    .rev()
                    .filter(|j| j.table == table && j.source == *builtin),
            );
        }
    }
    out
}

/// What kube-proxy does to a fresh node before its first sync, as one restore text: the
/// empty KUBE-PROXY-CANARY chains in mangle, nat and filter (`Monitor`, when `canary`),
/// the chains the jumps lead to, and the jumps inserted in kube-proxy's order (so they
/// end up in [`installed_jumps`] order). Chain lines flush, so run it on a fresh node or
/// after a flush, followed by a full sync.
pub fn bootstrap_restore(canary: bool) -> String {
    let mut out = String::new();
    if canary {
        let _ = writeln!(out, "*mangle\n:{KUBE_PROXY_CANARY} - [0:0]\nCOMMIT");
    }
    for table in [Table::Filter, Table::Nat] {
        let _ = writeln!(out, "*{table}");
        if canary {
            let _ = writeln!(out, ":{KUBE_PROXY_CANARY} - [0:0]");
        }
        let mut declared: Vec<&str> = Vec::new();
        for j in JUMP_CHAINS.iter().filter(|j| j.table == table) {
            if !declared.contains(&j.target) {
                declared.push(j.target);
                let _ = writeln!(out, ":{} - [0:0]", j.target);
            }
        }
        for j in JUMP_CHAINS.iter().filter(|j| j.table == table) {
            let _ = writeln!(out, "{}", j.insert_line());
        }
        out.push_str("COMMIT\n");
    }
    out
}

// ---------------------------------------------------------------------------------------
// How iptables prints rules back (`iptables-save`, nft backend, v1.8)
// ---------------------------------------------------------------------------------------

/// What `iptables-save` prints for a probability kube-proxy wrote: the kernel keeps
/// `lround(p * 2^31)` (31-bit fixed point) and iptables prints that back divided by 2^31
/// with 11 decimals (`0.3333333333` → `0.33333333349`).
pub fn saved_probability(written: &str) -> Option<String> {
    let p: f64 = written.trim().parse().ok()?;
    if !(0.0..=1.0).contains(&p) {
        return None;
    }
    const SCALE: f64 = 2_147_483_648.0;
    // `f64::round` rounds half away from zero, like C's lround.
    let fixed = (p * SCALE).round();
    Some(format!("{:.11}", fixed / SCALE))
}

/// A word of a rule line; `quoted` words came in double quotes and are never options.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Word {
    text: String,
    quoted: bool,
}

/// Splits a restore line into words the way iptables-restore does: on blanks, with
/// double quotes grouping (and `\"` escaping a quote inside them).
fn split_words(line: &str) -> Vec<Word> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if in_quotes && matches!(chars.peek(), Some('"') | Some('\\')) => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => {
                in_quotes = !in_quotes;
                quoted = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if !cur.is_empty() || quoted {
                    words.push(Word {
                        text: std::mem::take(&mut cur),
                        quoted,
                    });
                }
                quoted = false;
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() || quoted {
        words.push(Word { text: cur, quoted });
    }
    words
}

/// One `--option values…` of a match or target.
#[derive(Debug, Clone)]
struct Opt {
    inverted: bool,
    name: String,
    values: Vec<Word>,
}

impl Opt {
    fn value(&self) -> &str {
        self.values.first().map(|w| w.text.as_str()).unwrap_or("")
    }
}

/// A `-m NAME` match or the `-j NAME` target with its options.
#[derive(Debug, Clone)]
struct Module {
    name: String,
    opts: Vec<Opt>,
}

/// A rule spec (everything after `-A CHAIN`) taken apart.
#[derive(Debug, Clone, Default)]
struct Spec {
    source: Option<(bool, String)>,
    destination: Option<(bool, String)>,
    in_iface: Option<(bool, String)>,
    out_iface: Option<(bool, String)>,
    protocol: Option<(bool, String)>,
    matches: Vec<Module>,
    target: Option<Module>,
    goto: bool,
}

/// A bare `!` (it inverts what follows; a quoted "!" is a value).
fn is_negation(w: &Word) -> bool {
    !w.quoted && w.text == "!"
}

fn is_option(w: &Word) -> bool {
    !w.quoted && w.text.starts_with('-') && w.text.len() > 1
}

fn parse_spec(words: &[Word]) -> Spec {
    enum Cur {
        None,
        Match(usize),
        Target,
    }
    let mut spec = Spec::default();
    let mut cur = Cur::None;
    let mut inverted = false;
    let mut i = 0;
    let next = |i: usize| words.get(i + 1).map(|w| w.text.clone()).unwrap_or_default();
    while i < words.len() {
        let w = &words[i];
        if is_negation(w) {
            inverted = true;
            i += 1;
            continue;
        }
        let header = match (w.quoted, w.text.as_str()) {
            (false, "-s" | "--source" | "--src") => Some(&mut spec.source),
            (false, "-d" | "--destination" | "--dst") => Some(&mut spec.destination),
            (false, "-i" | "--in-interface") => Some(&mut spec.in_iface),
            (false, "-o" | "--out-interface") => Some(&mut spec.out_iface),
            (false, "-p" | "--protocol") => Some(&mut spec.protocol),
            _ => None,
        };
        if let Some(slot) = header {
            *slot = Some((inverted, next(i)));
            inverted = false;
            i += 2;
            continue;
        }
        match (w.quoted, w.text.as_str()) {
            (false, "-m" | "--match") => {
                spec.matches.push(Module {
                    name: next(i),
                    opts: Vec::new(),
                });
                cur = Cur::Match(spec.matches.len() - 1);
                i += 2;
            }
            (false, "-j" | "--jump" | "-g" | "--goto") => {
                spec.goto = matches!(w.text.as_str(), "-g" | "--goto");
                spec.target = Some(Module {
                    name: next(i),
                    opts: Vec::new(),
                });
                cur = Cur::Target;
                i += 2;
            }
            _ => {
                let mut j = i + 1;
                let mut values = Vec::new();
                while j < words.len() && !is_option(&words[j]) && !is_negation(&words[j]) {
                    values.push(words[j].clone());
                    j += 1;
                }
                let opt = Opt {
                    inverted,
                    name: w.text.clone(),
                    values,
                };
                inverted = false;
                match cur {
                    Cur::Match(m) => spec.matches[m].opts.push(opt),
                    Cur::Target => {
                        if let Some(t) = spec.target.as_mut() {
                            t.opts.push(opt)
                        }
                    }
                    Cur::None => {
                        // An option before any `-m`: iptables loads the protocol's match
                        // implicitly (`-p tcp --dport 80`).
                        let name = spec
                            .protocol
                            .as_ref()
                            .map(|(_, p)| p.to_ascii_lowercase())
                            .unwrap_or_default();
                        spec.matches.push(Module {
                            name,
                            opts: vec![opt],
                        });
                        cur = Cur::Match(spec.matches.len() - 1);
                    }
                }
                i = j;
            }
        }
    }
    spec
}

/// `-s`/`-d` as iptables prints them: address/prefix, the address masked.
fn saved_address(value: &str) -> String {
    if let Ok(net) = value.parse::<Ipv4Net>() {
        return net.trunc().to_string();
    }
    if let Ok(ip) = value.parse::<Ipv4Addr>() {
        return format!("{ip}/32");
    }
    if let Some((addr, mask)) = value.split_once('/')
        && let (Ok(addr), Ok(mask)) = (addr.parse::<Ipv4Addr>(), mask.parse::<Ipv4Addr>())
    {
        let bits = u32::from(mask);
        if bits.leading_ones() + bits.trailing_zeros() == 32
            && let Ok(net) = Ipv4Net::new(addr, bits.leading_ones() as u8)
        {
            return net.trunc().to_string();
        }
    }
    value.to_string()
}

fn parse_u32(s: &str) -> Option<u32> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// `VALUE[/MASK]` → (value, mask), mask defaulting to all ones.
fn parse_mark(s: &str) -> Option<(u32, u32)> {
    match s.split_once('/') {
        Some((v, m)) => Some((parse_u32(v)?, parse_u32(m)?)),
        None => Some((parse_u32(s)?, u32::MAX)),
    }
}

fn push_inv(out: &mut String, inverted: bool) {
    if inverted {
        out.push_str(" !");
    }
}

/// Options printed as given (modules we have no special knowledge of).
fn save_generic(out: &mut String, opts: &[Opt]) {
    for o in opts {
        push_inv(out, o.inverted);
        let _ = write!(out, " {}", o.name);
        for v in &o.values {
            if v.quoted {
                let _ = write!(out, " {}", save_quote(&v.text));
            } else {
                let _ = write!(out, " {}", v.text);
            }
        }
    }
}

/// Options in a fixed order (`order` lists option names with their aliases, the first
/// being the printed name); the rest follow as given.
fn save_ordered(out: &mut String, opts: &[Opt], order: &[&[&str]]) {
    let mut used = vec![false; opts.len()];
    for names in order {
        for (k, o) in opts.iter().enumerate() {
            if !used[k] && names.contains(&o.name.as_str()) {
                used[k] = true;
                push_inv(out, o.inverted);
                let _ = write!(out, " {}", names[0]);
                for v in &o.values {
                    let _ = write!(out, " {}", v.text);
                }
            }
        }
    }
    let rest: Vec<Opt> = opts
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(o, _)| o.clone())
        .collect();
    save_generic(out, &rest);
}

const CT_STATES: [&str; 7] = [
    "INVALID",
    "NEW",
    "RELATED",
    "ESTABLISHED",
    "UNTRACKED",
    "SNAT",
    "DNAT",
];

fn save_match(out: &mut String, m: &Module) {
    let _ = write!(out, " -m {}", m.name);
    match m.name.as_str() {
        "comment" => {
            for o in &m.opts {
                let _ = write!(out, " --comment {}", save_quote(o.value()));
            }
        }
        "tcp" | "udp" | "sctp" | "udplite" | "dccp" => save_ordered(
            out,
            &m.opts,
            &[
                &["--sport", "--source-port"],
                &["--dport", "--destination-port"],
            ],
        ),
        "mark" => {
            for o in &m.opts {
                push_inv(out, o.inverted);
                match parse_mark(o.value()) {
                    Some((v, mask)) if mask == u32::MAX => {
                        let _ = write!(out, " --mark {v:#x}");
                    }
                    Some((v, mask)) => {
                        let _ = write!(out, " --mark {v:#x}/{mask:#x}");
                    }
                    None => {
                        let _ = write!(out, " {} {}", o.name, o.value());
                    }
                }
            }
        }
        "conntrack" => {
            for o in &m.opts {
                push_inv(out, o.inverted);
                if o.name == "--ctstate" {
                    let given: Vec<String> = o
                        .value()
                        .split(',')
                        .map(|s| s.to_ascii_uppercase())
                        .collect();
                    let mut states: Vec<&str> = CT_STATES
                        .iter()
                        .copied()
                        .filter(|s| given.iter().any(|g| g == s))
                        .collect();
                    // Anything unknown is kept at the end rather than lost.
                    let unknown: Vec<&str> = given
                        .iter()
                        .map(String::as_str)
                        .filter(|g| !CT_STATES.contains(g))
                        .collect();
                    states.extend(unknown);
                    let _ = write!(out, " --ctstate {}", states.join(","));
                } else {
                    let _ = write!(out, " {}", o.name);
                    for v in &o.values {
                        let _ = write!(out, " {}", v.text);
                    }
                }
            }
        }
        "addrtype" => save_ordered(out, &m.opts, &[&["--src-type"], &["--dst-type"]]),
        "statistic" => {
            let mode = m.opts.iter().find(|o| o.name == "--mode").map(Opt::value);
            if mode == Some("random") {
                let _ = write!(out, " --mode random");
                for o in m.opts.iter().filter(|o| o.name == "--probability") {
                    push_inv(out, o.inverted);
                    let p = saved_probability(o.value()).unwrap_or_else(|| o.value().to_string());
                    let _ = write!(out, " --probability {p}");
                }
            } else {
                save_generic(out, &m.opts);
            }
        }
        "recent" => save_recent(out, &m.opts),
        _ => save_generic(out, &m.opts),
    }
}

/// libxt_recent's save order: the action, `--seconds`, `--reap`, `--hitcount`, `--rttl`,
/// `--name`, `--mask` (default all ones), `--rsource`/`--rdest` (default source).
fn save_recent(out: &mut String, opts: &[Opt]) {
    let find = |n: &str| opts.iter().find(|o| o.name == n);
    let has = |n: &str| find(n).is_some();
    if opts.iter().any(|o| o.inverted) {
        out.push_str(" !");
    }
    for action in ["--set", "--rcheck", "--update", "--remove"] {
        if has(action) {
            let _ = write!(out, " {action}");
        }
    }
    if let Some(o) = find("--seconds") {
        let _ = write!(out, " --seconds {}", o.value());
    }
    if has("--reap") {
        out.push_str(" --reap");
    }
    if let Some(o) = find("--hitcount") {
        let _ = write!(out, " --hitcount {}", o.value());
    }
    if has("--rttl") {
        out.push_str(" --rttl");
    }
    let name = find("--name").map(Opt::value).unwrap_or("DEFAULT");
    let mask = find("--mask").map(Opt::value).unwrap_or("255.255.255.255");
    let side = if has("--rdest") {
        "--rdest"
    } else {
        "--rsource"
    };
    let _ = write!(out, " --name {name} --mask {mask} {side}");
}

/// REJECT's `--reject-with` names as iptables prints them, with the aliases it accepts.
fn reject_name(with: &str) -> &str {
    match with {
        "icmp-net-unreachable" | "net-unreach" => "icmp-net-unreachable",
        "icmp-host-unreachable" | "host-unreach" => "icmp-host-unreachable",
        "icmp-proto-unreachable" | "proto-unreach" => "icmp-proto-unreachable",
        "icmp-port-unreachable" | "port-unreach" => "icmp-port-unreachable",
        "icmp-net-prohibited" | "net-prohib" => "icmp-net-prohibited",
        "icmp-host-prohibited" | "host-prohib" => "icmp-host-prohibited",
        "icmp-admin-prohibited" | "admin-prohib" => "icmp-admin-prohibited",
        "tcp-reset" | "tcp-rst" => "tcp-reset",
        other => other,
    }
}

fn save_target(out: &mut String, t: &Module, goto: bool) {
    let _ = write!(out, " {} {}", if goto { "-g" } else { "-j" }, t.name);
    match t.name.as_str() {
        "MARK" => {
            for o in &t.opts {
                let xmark = parse_mark(o.value()).map(|(v, m)| match o.name.as_str() {
                    "--or-mark" => (v, v),
                    "--xor-mark" => (v, 0),
                    "--and-mark" => (0, !v),
                    "--set-mark" => (v, if m == u32::MAX { u32::MAX } else { v | m }),
                    _ => (v, m),
                });
                match xmark {
                    Some((v, m)) => {
                        let _ = write!(out, " --set-xmark {v:#x}/{m:#x}");
                    }
                    None => save_generic(out, std::slice::from_ref(o)),
                }
            }
        }
        "REJECT" => {
            let with = t
                .opts
                .iter()
                .find(|o| o.name == "--reject-with")
                .map(Opt::value)
                .unwrap_or("icmp-port-unreachable");
            let _ = write!(out, " --reject-with {}", reject_name(with));
        }
        "MASQUERADE" => save_ordered(
            out,
            &t.opts,
            &[&["--to-ports"], &["--random"], &["--random-fully"]],
        ),
        _ => save_generic(out, &t.opts),
    }
}

/// The rule spec in `iptables-save` form, and its jump target.
fn saved_spec(words: &[Word]) -> (String, Option<String>) {
    let spec = parse_spec(words);
    let mut out = String::new();
    for (flag, field, addr) in [
        ("-s", &spec.source, true),
        ("-d", &spec.destination, true),
        ("-i", &spec.in_iface, false),
        ("-o", &spec.out_iface, false),
        ("-p", &spec.protocol, false),
    ] {
        if let Some((inv, value)) = field {
            let value = if addr {
                saved_address(value)
            } else if flag == "-p" {
                value.to_ascii_lowercase()
            } else {
                value.clone()
            };
            if addr && value == "0.0.0.0/0" && !inv {
                continue; // matches everything: iptables does not print it
            }
            push_inv(&mut out, *inv);
            let _ = write!(out, " {flag} {value}");
        }
    }
    for m in &spec.matches {
        save_match(&mut out, m);
    }
    let target = spec.target.as_ref().map(|t| t.name.clone());
    if let Some(t) = &spec.target {
        save_target(&mut out, t, spec.goto);
    }
    (out, target)
}

/// A rule line (`-A CHAIN …` as kube-proxy writes it for `iptables-restore`, or as
/// `iptables-save` printed it) in the form `iptables-save` prints: `-s`/`-d` first with a
/// prefix length, then `-p`, then the matches in their order with their options in the
/// module's order, comments quoted when not a bare word, marks in short hex with
/// `--set-xmark`, probabilities with 11 decimals, `recent` with its defaults spelled out,
/// REJECT with its `--reject-with`. Idempotent; lines that are not rules come back as
/// they were.
pub fn normalise_rule(line: &str) -> String {
    let words = split_words(line);
    match words.first().map(|w| w.text.as_str()) {
        Some("-A" | "--append") if words.len() >= 2 => {
            let (spec, _) = saved_spec(&words[2..]);
            format!("-A {}{spec}", words[1].text)
        }
        _ => line.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// A small model of netfilter tables, fed with restore text, printed like iptables-save
// ---------------------------------------------------------------------------------------

/// A restore text the kernel (iptables-nft 1.8) would refuse, with the line it stops at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct RestoreError {
    /// 1-based line of the restore text.
    pub line: usize,
    pub message: String,
}

/// Targets that are not chains.
const BUILTIN_TARGETS: [&str; 26] = [
    "ACCEPT",
    "DROP",
    "RETURN",
    "REJECT",
    "QUEUE",
    "NFQUEUE",
    "MARK",
    "CONNMARK",
    "MASQUERADE",
    "DNAT",
    "SNAT",
    "REDIRECT",
    "NETMAP",
    "LOG",
    "NFLOG",
    "TRACE",
    "CT",
    "NOTRACK",
    "TPROXY",
    "TCPMSS",
    "CHECKSUM",
    "CLASSIFY",
    "DSCP",
    "SET",
    "AUDIT",
    "TTL",
];

#[derive(Debug, Clone, PartialEq, Eq)]
struct SavedRule {
    /// The spec in saved form, starting with a blank unless empty.
    spec: String,
    target: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct TableState {
    /// Built-in chains in save order.
    builtins: Vec<(&'static str, Vec<SavedRule>)>,
    user: BTreeMap<String, Vec<SavedRule>>,
}

impl TableState {
    fn new(table: Table) -> Self {
        Self {
            builtins: table
                .builtin_chains()
                .iter()
                .map(|c| (*c, Vec::new()))
                .collect(),
            user: BTreeMap::new(),
        }
    }

    fn chain_mut(&mut self, name: &str) -> Option<&mut Vec<SavedRule>> {
        if let Some((_, rules)) = self.builtins.iter_mut().find(|(b, _)| *b == name) {
            return Some(rules);
        }
        self.user.get_mut(name)
    }

    fn references(&self, chain: &str) -> bool {
        self.builtins
            .iter()
            .map(|(_, r)| r)
            .chain(self.user.values())
            .flatten()
            .any(|r| r.target.as_deref() == Some(chain))
    }
}

/// The netfilter tables of one network namespace as far as restore text shapes them:
/// feed it what would be given to `iptables-restore --noflush`, read back what
/// `iptables-save` would print. It checks what the kernel checks (a rule's chain and its
/// jump target exist when the line is read, a deleted chain is empty and unreferenced)
/// and applies each table's section atomically at its `COMMIT`, so a rendering that would
/// fail on a node fails here. Rules are stored in [`normalise_rule`] form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IptablesState {
    tables: BTreeMap<Table, TableState>,
}

impl IptablesState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies restore text with `--noflush` semantics: a chain line creates or flushes a
    /// user chain (and leaves built-in chains alone); `-A`, `-I`, `-N`, `-F` and `-X` act
    /// on the table of the section. A section with an error is not applied (earlier
    /// sections stay applied, as with iptables-restore).
    pub fn apply_restore(&mut self, text: &str) -> Result<(), RestoreError> {
        let mut open: Option<(Table, TableState)> = None;
        for (no, raw) in text.lines().enumerate() {
            let line_no = no + 1;
            let err = |message: String| RestoreError {
                line: line_no,
                message,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('*') {
                if open.is_some() {
                    return Err(err("table section started before COMMIT".into()));
                }
                let table = Table::parse(name.trim())
                    .ok_or_else(|| err(format!("unknown table {name:?}")))?;
                let state = self
                    .tables
                    .get(&table)
                    .cloned()
                    .unwrap_or_else(|| TableState::new(table));
                open = Some((table, state));
                continue;
            }
            let Some((table, state)) = open.as_mut() else {
                return Err(err(format!("{line:?} outside a table section")));
            };
            if line == "COMMIT" {
                if let Some((t, s)) = open.take() {
                    self.tables.insert(t, s);
                }
                continue;
            }
            if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().unwrap_or_default();
                if name.is_empty() {
                    return Err(err("chain line without a name".into()));
                }
                if !table.builtin_chains().contains(&name) {
                    state.user.entry(name.to_string()).or_default().clear();
                }
                continue;
            }
            let words = split_words(line);
            let cmd = words.first().map(|w| w.text.as_str()).unwrap_or_default();
            let chain = words.get(1).map(|w| w.text.clone()).unwrap_or_default();
            match cmd {
                "-A" | "-I" => {
                    let mut rest = &words[2.min(words.len())..];
                    let mut position = 1usize;
                    if cmd == "-I"
                        && let Some(n) = rest.first().and_then(|w| w.text.parse::<usize>().ok())
                    {
                        position = n.max(1);
                        rest = &rest[1..];
                    }
                    let (spec, target) = saved_spec(rest);
                    if let Some(t) = &target
                        && !BUILTIN_TARGETS.contains(&t.as_str())
                        && !state.user.contains_key(t)
                    {
                        return Err(err(format!("Chain '{t}' does not exist")));
                    }
                    let rules = state
                        .chain_mut(&chain)
                        .ok_or_else(|| err(format!("Chain '{chain}' does not exist")))?;
                    let rule = SavedRule { spec, target };
                    if cmd == "-A" {
                        rules.push(rule);
                    } else {
                        let at = (position - 1).min(rules.len());
                        rules.insert(at, rule);
                    }
                }
                "-N" => {
                    if state.chain_mut(&chain).is_some() {
                        return Err(err(format!("Chain '{chain}' already exists")));
                    }
                    state.user.insert(chain, Vec::new());
                }
                "-F" => {
                    state
                        .chain_mut(&chain)
                        .ok_or_else(|| err(format!("Chain '{chain}' does not exist")))?
                        .clear();
                }
                "-X" => {
                    match state.user.get(&chain) {
                        None => return Err(err(format!("Chain '{chain}' does not exist"))),
                        Some(rules) if !rules.is_empty() => {
                            return Err(err(format!(
                                "CHAIN_DEL failed (Directory not empty): chain {chain}"
                            )));
                        }
                        Some(_) => {}
                    }
                    if state.references(&chain) {
                        return Err(err(format!(
                            "CHAIN_DEL failed (Device or resource busy): chain {chain}"
                        )));
                    }
                    state.user.remove(&chain);
                }
                _ => return Err(err(format!("unsupported restore line {line:?}"))),
            }
        }
        if open.is_some() {
            return Err(RestoreError {
                line: text.lines().count(),
                message: "missing COMMIT".into(),
            });
        }
        Ok(())
    }

    /// What `iptables-save` prints (without its `#` header and trailer lines): the tables
    /// in the nft backend's order, built-in chains with policy ACCEPT, user chains sorted
    /// by name, then the rules chain by chain in that same order.
    pub fn save(&self) -> String {
        let mut out = String::new();
        for (table, state) in &self.tables {
            let _ = writeln!(out, "*{table}");
            for (b, _) in &state.builtins {
                let _ = writeln!(out, ":{b} ACCEPT [0:0]");
            }
            for name in state.user.keys() {
                let _ = writeln!(out, ":{name} - [0:0]");
            }
            let builtins = state.builtins.iter().map(|(n, r)| (*n, r));
            let user = state.user.iter().map(|(n, r)| (n.as_str(), r));
            for (name, rules) in builtins.chain(user) {
                for r in rules {
                    let _ = writeln!(out, "-A {name}{}", r.spec);
                }
            }
            out.push_str("COMMIT\n");
        }
        out
    }

    /// The user chains of a table, sorted.
    pub fn chains(&self, table: Table) -> Vec<&str> {
        self.tables
            .get(&table)
            .map(|t| t.user.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }
}

/// Whether `chain` in `table` is one kube-proxy owns (or, for KUBE-FIREWALL, duplicates).
pub fn is_kube_proxy_chain(table: Table, chain: &str) -> bool {
    match table {
        Table::Mangle | Table::Raw => chain == KUBE_PROXY_CANARY,
        Table::Filter => {
            chain == KUBE_PROXY_CANARY
                || chain == KUBE_FIREWALL
                || FILTER_TOP_CHAINS.contains(&chain)
        }
        Table::Nat => {
            chain == KUBE_PROXY_CANARY
                || NAT_TOP_CHAINS.contains(&chain)
                || pn::is_service_chain_name(chain)
        }
    }
}

/// The kube-proxy part of an `iptables-save` dump, normalised so that a real node's dump
/// and [`ProxyRules::saved`] compare as plain strings: header and trailer comments
/// dropped, counters zeroed, tables without kube-proxy chains dropped, and in the others
/// the built-in chain lines, kube-proxy's chains and their rules, and the built-in
/// chains' jumps into kube-proxy's chains; every rule through [`normalise_rule`].
pub fn kube_proxy_view(iptables_save: &str) -> String {
    let mut out = String::new();
    let mut table: Option<Table> = None;
    let mut section = String::new();
    let mut keep = false;
    for raw in iptables_save.lines() {
        let line = raw.trim_end();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            table = Table::parse(name.trim());
            section.clear();
            let _ = writeln!(section, "{line}");
            keep = false;
            continue;
        }
        let Some(t) = table else { continue };
        if line == "COMMIT" {
            if keep {
                out.push_str(&section);
                out.push_str("COMMIT\n");
            }
            table = None;
            continue;
        }
        if let Some(decl) = line.strip_prefix(':') {
            let mut parts = decl.split_whitespace();
            let name = parts.next().unwrap_or_default();
            let policy = parts.next().unwrap_or("-");
            if t.builtin_chains().contains(&name) {
                let _ = writeln!(section, ":{name} {policy} [0:0]");
            } else if is_kube_proxy_chain(t, name) {
                let _ = writeln!(section, ":{name} - [0:0]");
                keep = true;
            }
            continue;
        }
        let words = split_words(line);
        if words.len() < 2 || words[0].text != "-A" {
            continue;
        }
        let chain = words[1].text.as_str();
        let (spec, target) = saved_spec(&words[2..]);
        let ours = is_kube_proxy_chain(t, chain)
            || (t.builtin_chains().contains(&chain)
                && target.as_deref().is_some_and(|x| is_kube_proxy_chain(t, x)));
        if ours {
            let _ = writeln!(section, "-A {chain}{spec}");
            keep = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn input(services: Vec<ServicePort>) -> ProxyInput {
        ProxyInput {
            node: "n1".into(),
            node_ip: ip("192.168.0.11"),
            cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
            config: ProxyConfig::default(),
            services,
        }
    }

    fn web(endpoints: Vec<Endpoint>) -> ServicePort {
        let mut sp = ServicePort::cluster_ip(
            "default",
            "web",
            Some("http"),
            Protocol::Tcp,
            ip("10.96.0.10"),
            80,
        );
        sp.endpoints = endpoints;
        sp
    }

    fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.contains(needle)).collect()
    }

    #[test]
    fn probabilities_are_written_and_read_back_like_kube_proxy_and_iptables() {
        assert_eq!(probability(2), "0.5000000000");
        assert_eq!(probability(3), "0.3333333333");
        assert_eq!(probability(4), "0.2500000000");
        assert_eq!(probability(7), "0.1428571429");
        // An exact tie at the 10th decimal rounds to even, as Go's %0.10f does.
        assert_eq!(probability(2048), "0.0004882812");
        // The reference's verified re-printings (§1.6), and one captured on this machine.
        for (written, saved) in [
            ("0.5000000000", "0.50000000000"),
            ("0.3333333333", "0.33333333349"),
            ("0.2000000000", "0.20000000019"),
            ("0.1428571429", "0.14285714272"),
            ("0.0010010010", "0.00100100087"),
            ("0.2500000000", "0.25000000000"),
        ] {
            assert_eq!(
                saved_probability(written).as_deref(),
                Some(saved),
                "{written}"
            );
            // Reading the saved form back gives it again.
            assert_eq!(saved_probability(saved).as_deref(), Some(saved));
        }
        assert_eq!(saved_probability("1.5"), None);
        assert_eq!(saved_probability("x"), None);
    }

    #[test]
    fn mark_is_formatted_like_go() {
        assert_eq!(masquerade_mark(14), "0x00004000");
        assert_eq!(masquerade_mark(0), "0x00000001");
        assert_eq!(masquerade_mark(31), "0x80000000");
        let mut i = input(vec![]);
        i.config.masquerade_bit = 32;
        assert_eq!(render(&i), Err(ProxyError::MasqueradeBit(32)));
    }

    #[test]
    fn jumps_end_up_in_the_reference_order() {
        let order: Vec<String> = installed_jumps()
            .iter()
            .map(|j| format!("{} {} {}", j.table, j.source, j.target))
            .collect();
        assert_eq!(
            order,
            [
                "filter INPUT KUBE-FIREWALL",
                "filter INPUT KUBE-PROXY-FIREWALL",
                "filter INPUT KUBE-NODEPORTS",
                "filter INPUT KUBE-EXTERNAL-SERVICES",
                "filter FORWARD KUBE-PROXY-FIREWALL",
                "filter FORWARD KUBE-FORWARD",
                "filter FORWARD KUBE-SERVICES",
                "filter FORWARD KUBE-EXTERNAL-SERVICES",
                "filter OUTPUT KUBE-FIREWALL",
                "filter OUTPUT KUBE-PROXY-FIREWALL",
                "filter OUTPUT KUBE-SERVICES",
                "nat PREROUTING KUBE-SERVICES",
                "nat OUTPUT KUBE-SERVICES",
                "nat POSTROUTING KUBE-POSTROUTING",
            ]
        );
        // Replaying the inserts gives the same order (the model inserts at position 1).
        let mut state = IptablesState::new();
        state.apply_restore(&bootstrap_restore(false)).unwrap();
        let saved = state.save();
        let filter = saved.split("*nat").next().unwrap_or_default();
        let jumps: Vec<&str> = filter
            .lines()
            .filter(|l| {
                l.starts_with("-A INPUT")
                    || l.starts_with("-A FORWARD")
                    || l.starts_with("-A OUTPUT")
            })
            .collect();
        assert_eq!(jumps.len(), 11);
        assert!(jumps[0].ends_with("-j KUBE-FIREWALL"));
        assert_eq!(
            JUMP_CHAINS[0].args(),
            [
                "-m",
                "conntrack",
                "--ctstate",
                "NEW",
                "-m",
                "comment",
                "--comment",
                "kubernetes externally-visible service portals",
                "-j",
                "KUBE-EXTERNAL-SERVICES"
            ]
        );
    }

    #[test]
    fn normalise_rule_follows_iptables_save() {
        let cases = [
            (
                "-A KUBE-SVC-X -m comment --comment \"ns/a:p cluster IP\" -m tcp -p tcp -d 10.96.0.50 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ",
                "-A KUBE-SVC-X ! -s 10.244.0.0/16 -d 10.96.0.50/32 -p tcp -m comment --comment \"ns/a:p cluster IP\" -m tcp --dport 80 -j KUBE-MARK-MASQ",
            ),
            (
                "-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000",
                "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
            ),
            (
                "-A KUBE-POSTROUTING -j MARK --xor-mark 0x00004000",
                "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
            ),
            (
                "-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN",
                "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
            ),
            (
                "-A KUBE-SEP-Y -m comment --comment ns/a:p -m recent --name KUBE-SEP-Y --set -m udp -p udp -j DNAT --to-destination 10.0.0.1:80",
                "-A KUBE-SEP-Y -p udp -m comment --comment \"ns/a:p\" -m recent --set --name KUBE-SEP-Y --mask 255.255.255.255 --rsource -m udp -j DNAT --to-destination 10.0.0.1:80",
            ),
            (
                "-A KUBE-SVC-X -m comment --comment \"ns/a:p -> 10.0.0.1:80\" -m recent --name KUBE-SEP-Y --rcheck --seconds 10800 --reap -j KUBE-SEP-Y",
                "-A KUBE-SVC-X -m comment --comment \"ns/a:p -> 10.0.0.1:80\" -m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-Y --mask 255.255.255.255 --rsource -j KUBE-SEP-Y",
            ),
            (
                "-A KUBE-SERVICES -m comment --comment \"ns/a:p has no endpoints\" -m tcp -p tcp -d 10.96.0.1 --dport 80 -j REJECT",
                "-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment \"ns/a:p has no endpoints\" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable",
            ),
            (
                "-A KUBE-FW-X -m comment --comment \"other traffic to ns/a:p will be dropped by KUBE-PROXY-FIREWALL\"",
                "-A KUBE-FW-X -m comment --comment \"other traffic to ns/a:p will be dropped by KUBE-PROXY-FIREWALL\"",
            ),
            (
                "-A KUBE-SERVICES -m comment --comment x -d 10.1.2.3/8 -j KUBE-NODEPORTS",
                "-A KUBE-SERVICES -d 10.0.0.0/8 -m comment --comment x -j KUBE-NODEPORTS",
            ),
            (
                "-A KUBE-SVC-X -m statistic --mode random --probability 0.0010010010 -j KUBE-SEP-Y",
                "-A KUBE-SVC-X -m statistic --mode random --probability 0.00100100087 -j KUBE-SEP-Y",
            ),
        ];
        for (written, saved) in cases {
            assert_eq!(normalise_rule(written), saved);
            assert_eq!(normalise_rule(saved), saved, "not idempotent");
        }
        assert_eq!(normalise_rule("COMMIT"), "COMMIT");
    }

    #[test]
    fn restore_model_refuses_what_the_kernel_refuses() {
        let mut s = IptablesState::new();
        // A jump to a chain declared later in the section fails (checked on this
        // machine with iptables-nft 1.8.9).
        let e = s
            .apply_restore("*nat\n:A - [0:0]\n-A A -j B\n:B - [0:0]\nCOMMIT\n")
            .unwrap_err();
        assert_eq!(e.line, 3);
        assert!(s.save().is_empty(), "a failed section must not be applied");
        s.apply_restore("*nat\n:A - [0:0]\n:B - [0:0]\n-A A -j B\nCOMMIT\n")
            .unwrap();
        // Deleting a referenced chain fails; flushing the referrer first works.
        assert!(s.apply_restore("*nat\n:B - [0:0]\n-X B\nCOMMIT\n").is_err());
        s.apply_restore("*nat\n:A - [0:0]\n:B - [0:0]\n-X B\nCOMMIT\n")
            .unwrap();
        assert_eq!(s.chains(Table::Nat), ["A"]);
        assert!(
            s.apply_restore("*nat\n-A NOPE -j ACCEPT\nCOMMIT\n")
                .is_err()
        );
        assert!(s.apply_restore("*nat\n:A - [0:0]\n").is_err());
    }

    #[test]
    fn endpoint_conditions_follow_categorize_endpoints() {
        let local_ready = Endpoint::ready(ip("10.244.1.2"), 80, Some("n1"));
        let remote_ready = Endpoint::ready(ip("10.244.2.2"), 80, Some("n2"));
        let local_term = Endpoint::terminating(ip("10.244.1.3"), 80, Some("n1"), true);
        let remote_term_not_serving =
            Endpoint::terminating(ip("10.244.2.3"), 80, Some("n2"), false);
        let mut not_ready = Endpoint::ready(ip("10.244.2.4"), 80, Some("n2"));
        not_ready.ready = false;
        not_ready.serving = false;

        // Ready endpoints win; terminating and not-ready ones are left out.
        let rules = render(&input(vec![web(vec![
            local_ready.clone(),
            remote_ready.clone(),
            local_term.clone(),
            not_ready.clone(),
        ])]))
        .unwrap();
        let text = rules.full_restore();
        assert_eq!(lines_with(&text, "-j DNAT").len(), 2);
        assert!(!text.contains("10.244.1.3"));
        // Not-ready endpoints still count for the large-cluster threshold.
        assert_eq!(rules.total_endpoints, 4);

        // No ready endpoint anywhere: serving + terminating ones take over.
        let text = render(&input(vec![web(vec![
            local_term.clone(),
            remote_term_not_serving.clone(),
            not_ready.clone(),
        ])]))
        .unwrap()
        .full_restore();
        assert_eq!(lines_with(&text, "-j DNAT").len(), 1);
        assert!(text.contains("--to-destination 10.244.1.3:80"));

        // Nothing usable: the service rejects.
        let text = render(&input(vec![web(vec![remote_term_not_serving, not_ready])]))
            .unwrap()
            .full_restore();
        assert!(
            text.contains("has no endpoints\" -m tcp -p tcp -d 10.96.0.10 --dport 80 -j REJECT")
        );
        assert!(!text.contains("KUBE-SVC-"));

        // internalTrafficPolicy Local: the local terminating endpoint is used when this
        // node has no ready local endpoint, even though a remote one is ready.
        let mut sp = web(vec![remote_ready, local_term]);
        sp.internal_policy_local = true;
        let text = render(&input(vec![sp])).unwrap().full_restore();
        assert!(text.contains("-j KUBE-SVL-"));
        assert!(!text.contains(":KUBE-SVC-"));
        assert_eq!(lines_with(&text, "-j DNAT").len(), 1);
        assert!(text.contains("--to-destination 10.244.1.3:80"));
    }

    #[test]
    fn endpoints_are_sorted_and_deduplicated_like_kube_proxy() {
        let eps = vec![
            Endpoint::ready(ip("10.244.1.10"), 80, Some("n2")),
            Endpoint::ready(ip("10.244.1.9"), 80, Some("n2")),
            Endpoint::ready(ip("10.244.1.10"), 80, Some("n1")),
        ];
        let sp = web(eps);
        let list = endpoint_list(&sp, "n1");
        // String order: "10.244.1.10:80" < "10.244.1.9:80"; the local copy is kept.
        assert_eq!(
            list.iter()
                .map(|e| (e.text.as_str(), e.local))
                .collect::<Vec<_>>(),
            [("10.244.1.10:80", true), ("10.244.1.9:80", false)]
        );
    }

    #[test]
    fn duplicate_ports_are_refused_and_headless_ports_ignored() {
        let a = web(vec![]);
        assert!(matches!(
            render(&input(vec![a.clone(), a.clone()])),
            Err(ProxyError::DuplicatePort(..))
        ));
        let mut udp = a.clone();
        udp.protocol = Protocol::Udp;
        assert!(render(&input(vec![a.clone(), udp])).is_ok());
        let mut headless = a;
        headless.cluster_ip = None;
        headless.endpoints = vec![Endpoint::ready(ip("10.244.1.2"), 80, Some("n1"))];
        let rules = render(&input(vec![headless.clone(), headless])).unwrap();
        assert_eq!(rules.total_endpoints, 0);
        assert!(!rules.full_restore().contains("default/web"));
    }

    #[test]
    fn masquerade_all_and_no_detector() {
        let sp = web(vec![Endpoint::ready(ip("10.244.1.2"), 80, Some("n1"))]);
        let mut i = input(vec![sp]);
        i.config.masquerade_all = true;
        let text = render(&i).unwrap().full_restore();
        assert!(text.contains("--dport 80 -j KUBE-MARK-MASQ"));
        assert!(!text.contains("! -s 10.244"));
        i.config.masquerade_all = false;
        i.cluster_cidr = None;
        let text = render(&i).unwrap().full_restore();
        assert!(!text.contains("--dport 80 -j KUBE-MARK-MASQ"));
        assert!(!text.contains("! -s 10.244"));
    }

    #[test]
    fn localhost_nodeports_off_and_liberal_conntrack() {
        let mut i = input(vec![]);
        i.config.localhost_nodeports = false;
        i.config.conntrack_tcp_be_liberal = true;
        i.config.random_fully = false;
        let text = render(&i).unwrap().full_restore();
        assert!(!text.contains("KUBE-FIREWALL"));
        assert!(text.contains("-m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS"));
        assert!(!text.contains("INVALID"));
        assert!(text.contains("-j MASQUERADE\n"));
    }

    #[test]
    fn large_cluster_mode_drops_endpoint_comments() {
        let make = |n: usize| {
            let eps = (0..n)
                .map(|k| Endpoint::ready(Ipv4Addr::from(0x0af4_0000u32 + k as u32), 80, Some("n2")))
                .collect();
            render(&input(vec![web(eps)])).unwrap()
        };
        let at = make(LARGE_CLUSTER_ENDPOINTS_THRESHOLD);
        assert!(!at.large_cluster);
        let text = at.full_restore();
        assert!(text.contains("-A KUBE-SEP-"));
        assert!(
            lines_with(&text, "-A KUBE-SEP-")
                .iter()
                .all(|l| l.contains("--comment"))
        );
        let over = make(LARGE_CLUSTER_ENDPOINTS_THRESHOLD + 1);
        assert!(over.large_cluster);
        let text = over.full_restore();
        assert!(
            lines_with(&text, "-A KUBE-SEP-")
                .iter()
                .all(|l| !l.contains("--comment"))
        );
        assert!(
            lines_with(&text, "-j KUBE-SEP-")
                .iter()
                .all(|l| !l.contains("--comment"))
        );
        // Service-level rules keep theirs.
        assert!(text.contains("\"default/web:http cluster IP\""));
        let mut state = IptablesState::new();
        state.apply_restore(&text).unwrap();
    }

    #[test]
    fn rendering_is_deterministic_whatever_the_input_order() {
        let eps = vec![
            Endpoint::ready(ip("10.244.2.7"), 80, Some("n2")),
            Endpoint::ready(ip("10.244.1.5"), 80, Some("n1")),
        ];
        let mut a = web(eps.clone());
        let mut b =
            ServicePort::cluster_ip("apps", "api", None, Protocol::Udp, ip("10.96.0.11"), 53);
        b.endpoints = eps.clone();
        let one = render(&input(vec![a.clone(), b.clone()]))
            .unwrap()
            .full_restore();
        a.endpoints.reverse();
        b.endpoints.reverse();
        let two = render(&input(vec![b, a])).unwrap().full_restore();
        assert_eq!(one, two);
        // apps/api sorts before default/web.
        assert!(one.find("apps/api").unwrap() < one.find("default/web").unwrap());
    }
}
