//! kube-proxy's nftables mode as a pure function: from the same per-node input the
//! iptables renderer takes ([`ProxyInput`]) to the text kube-proxy hands to `nft -f` for
//! a sync ([`NftRules::full_transaction`], [`NftRules::incremental_transaction`]), and
//! the normalised form of what `nft list table ip kube-proxy` prints back
//! ([`normalise_listing`]).
//!
//! Fidelity is the point, as for iptables: a student who runs
//! `nft list table ip kube-proxy` in a simulated node must see what a real node shows. So
//! this module follows `pkg/proxy/nftables/proxier.go` (`setupNFTables`,
//! `syncProxyRules`, `writeServiceToEndpointRules`) and its golden test
//! (`proxier_test.go`, `baseRules`, `TestOverallNFTablesRules`); the reference
//! (`kube-proxy-and-policy-internals.md`, §2) lists the layout:
//! - one table `ip kube-proxy`; base chains in the newest layout (`filter-prerouting-pre-dnat`
//!   and `filter-output-pre-dnat` at priority -110, `filter-forward/input/output` at 0,
//!   `nat-prerouting/output` at dstnat, `nat-postrouting` at srcnat);
//! - one verdict-map lookup replaces the iptables KUBE-SERVICES list: `services` does
//!   `ip daddr . meta l4proto . th dport vmap @service-ips` (ClusterIPs, external IPs and
//!   load-balancer IPs) and `ip daddr @nodeport-ips meta l4proto . th dport vmap
//!   @service-nodeports`; no endpoints → `@no-endpoint-services` / `@no-endpoint-nodeports`
//!   (`goto reject-chain`, or `drop` for a Local policy without local endpoints),
//!   `loadBalancerSourceRanges` → `@firewall-ips`;
//! - per service port `service-HASH-ns/name/proto/port` (Cluster policy), `local-…`,
//!   `external-…`, `firewall-…`; per endpoint `endpoint-HASH-ns/name/proto/port__ip/port`
//!   ([`service_port_chain_base`], [`endpoint_chain_base`]: 8 characters of the same
//!   sha256/base32 hash the iptables names use, then the readable name);
//! - the endpoint is chosen by `numgen random mod N vmap { 0 : goto …, 1 : goto … }`
//!   (uniform, no probability cascade); ClientIP affinity keeps one dynamic set with a
//!   timeout per endpoint (`affinity-…`), checked in the service chain and updated in the
//!   endpoint chain; the masquerade mark is set by `mark-for-masquerade` and acted on in
//!   `masquerading` (`masquerade fully-random`).
//!
//! Choices where kube-proxy has a knob, is not deterministic, or depends on the kernel:
//! - Endpoints are categorised exactly as the iptables renderer does
//!   ([`categorize_endpoints`], kube-proxy's `CategorizeEndpoints`); service ports are
//!   walked sorted by namespace, name, port name and protocol (kube-proxy: Go map order).
//! - `--nodeport-addresses` is nftables mode's default, `primary`: `nodeport-ips` holds
//!   the node's address ([`ProxyInput::node_ip`]). There are never localhost NodePorts
//!   in this mode, so [`ProxyConfig::localhost_nodeports`] is ignored.
//! - The masquerade mark is written as kube-proxy formats it (`%#08x`, `0x00004000`);
//!   kube-proxy's own golden test uses a fake proxier with `0x4000`.
//! - Within one service kube-proxy declares the firewall chain between its map
//!   elements; here all of a service's chains are declared first. The transaction's
//!   effect is the same.
//! - Stale chains: kube-proxy flushes them in one sync and deletes them in a later one,
//!   because kernels before 6.2 noticed late that a deleted map element no longer
//!   referred to a chain. This kernel (6.x ≥ 6.2) accepts the delete in the same
//!   transaction, so stale chains are flushed and deleted at once, and a snapshot never
//!   shows empty leftovers.
//! - A partial sync rewrites a service's chains when their text changed (kube-proxy: when
//!   the Service or its EndpointSlices changed); the unit is the Service (`ns/name`), all
//!   its ports together, as in kube-proxy. Map and set elements are diffed one by one
//!   (kube-proxy's `nftElementStorage`): only new, changed and removed elements are
//!   written.
//! - IPv4 only (`ip` family).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;

use super::model::{
    ProxyConfig, ProxyError, ProxyInput, ServicePort, SessionAffinity, categorize_endpoints,
    checked_mark, proxied_ports,
};
use crate::protocol::Protocol;
use crate::render::names::hash16;

/// The table, in the `ip` family.
pub const TABLE: &str = "kube-proxy";
/// What every statement names: family and table.
const T: &str = "ip kube-proxy";

/// Regular chains every sync owns.
pub const SERVICES: &str = "services";
pub const MARK_MASQ: &str = "mark-for-masquerade";
pub const MASQUERADING: &str = "masquerading";
pub const FIREWALL_CHECK: &str = "firewall-check";
pub const SERVICE_ENDPOINTS_CHECK: &str = "service-endpoints-check";
pub const NODEPORT_ENDPOINTS_CHECK: &str = "nodeport-endpoints-check";
pub const CLUSTER_IPS_CHECK: &str = "cluster-ips-check";
pub const REJECT_CHAIN: &str = "reject-chain";
/// The set of local addresses that accept NodePorts.
pub const NODEPORT_IPS: &str = "nodeport-ips";

/// Prefixes of the per-service chains and sets.
pub const SERVICE_PREFIX: &str = "service-";
pub const LOCAL_PREFIX: &str = "local-";
pub const EXTERNAL_PREFIX: &str = "external-";
pub const FIREWALL_PREFIX: &str = "firewall-";
pub const ENDPOINT_PREFIX: &str = "endpoint-";
pub const AFFINITY_PREFIX: &str = "affinity-";

/// knftables' `NameLengthMax` less the longest prefix (`chainNameBaseLengthMax`).
const CHAIN_NAME_BASE_MAX: usize = 256 - 16;

/// The base chains in the newest layout (K-NFT-T `baseRules`): name, type, hook,
/// priority.
const BASE_CHAINS: [(&str, &str, &str, &str); 8] = [
    ("filter-prerouting-pre-dnat", "filter", "prerouting", "-110"),
    ("filter-output-pre-dnat", "filter", "output", "-110"),
    ("filter-forward", "filter", "forward", "0"),
    ("filter-input", "filter", "input", "0"),
    ("filter-output", "filter", "output", "0"),
    ("nat-prerouting", "nat", "prerouting", "-100"),
    ("nat-output", "nat", "output", "-100"),
    ("nat-postrouting", "nat", "postrouting", "100"),
];

/// `nftablesJumpChains`: target, source base chain, extra match. Within one base chain
/// the order is the rule order.
const JUMPS: [(&str, &str, &str); 11] = [
    (NODEPORT_ENDPOINTS_CHECK, "filter-input", "ct state new"),
    (SERVICE_ENDPOINTS_CHECK, "filter-input", "ct state new"),
    (SERVICE_ENDPOINTS_CHECK, "filter-forward", "ct state new"),
    (SERVICE_ENDPOINTS_CHECK, "filter-output", "ct state new"),
    (FIREWALL_CHECK, "filter-prerouting-pre-dnat", "ct state new"),
    (FIREWALL_CHECK, "filter-output-pre-dnat", "ct state new"),
    (SERVICES, "nat-output", ""),
    (SERVICES, "nat-prerouting", ""),
    (MASQUERADING, "nat-postrouting", ""),
    (CLUSTER_IPS_CHECK, "filter-forward", "ct state new"),
    (CLUSTER_IPS_CHECK, "filter-output", "ct state new"),
];

/// The sets and verdict maps whose elements each sync maintains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Container {
    ClusterIps,
    ServiceIps,
    FirewallIps,
    NoEndpointServices,
    NoEndpointNodePorts,
    ServiceNodePorts,
}

impl Container {
    /// In kube-proxy's reset order.
    pub const ALL: [Container; 6] = [
        Container::ClusterIps,
        Container::ServiceIps,
        Container::FirewallIps,
        Container::NoEndpointServices,
        Container::NoEndpointNodePorts,
        Container::ServiceNodePorts,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Container::ClusterIps => "cluster-ips",
            Container::ServiceIps => "service-ips",
            Container::FirewallIps => "firewall-ips",
            Container::NoEndpointServices => "no-endpoint-services",
            Container::NoEndpointNodePorts => "no-endpoint-nodeports",
            Container::ServiceNodePorts => "service-nodeports",
        }
    }

    /// A set (no verdicts) rather than a map.
    pub fn is_set(self) -> bool {
        self == Container::ClusterIps
    }

    fn kind(self) -> &'static str {
        if self.is_set() { "set" } else { "map" }
    }
}

/// One set or map element.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Element {
    container: Container,
    /// `10.96.0.10 . tcp . 80` (parts joined by ` . `, as nft writes them).
    key: String,
    /// The verdict (`goto service-…`, `drop`); empty in a set.
    value: String,
    /// The service port name, on the no-endpoint maps' elements.
    comment: Option<String>,
}

impl Element {
    fn write_add(&self, out: &mut String) {
        let _ = write!(
            out,
            "add element {T} {} {{ {}",
            self.container.name(),
            self.key
        );
        if let Some(c) = &self.comment {
            let _ = write!(out, " comment \"{c}\"");
        }
        if !self.value.is_empty() {
            out.push_str(" : ");
            out.push_str(&self.value);
        }
        out.push_str(" }\n");
    }

    fn write_delete(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "delete element {T} {} {{ {} }}",
            self.container.name(),
            self.key
        );
    }
}

/// The rendered state of one service port, split the way a sync writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServiceBlock {
    /// `ns/name:port` (or `ns/name`): with the protocol, identifies the port across
    /// renderings; also the comment on its no-endpoint elements.
    spn: String,
    /// The length of the `ns/name` prefix of `spn`: the unit a partial sync rewrites.
    service_len: usize,
    protocol: Protocol,
    /// The chains this port uses, in the order declared.
    chains: Vec<String>,
    /// The affinity sets it uses with their `add set` line.
    sets: Vec<(String, String)>,
    /// `add chain` + `flush chain` for each chain (kube-proxy's `ensureChain`).
    decls: String,
    /// Rules and affinity-set declarations, in kube-proxy's order.
    body: String,
    elements: Vec<Element>,
}

impl ServiceBlock {
    fn service(&self) -> &str {
        &self.spn[..self.service_len]
    }
}

/// One node's kube-proxy state in nftables mode, ready to be written as a full or a
/// partial sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftRules {
    pub config: ProxyConfig,
    /// `setupNFTables`: table, base and top-level chains, sets and maps (flushed), fixed
    /// rules. Written on a full sync only.
    base: String,
    services: Vec<ServiceBlock>,
}

/// `hashAndTruncate`: the first 8 characters of base32(sha256(name)), a dash, the name
/// (cut to fit with `...` if it ever had to be).
pub fn hash_and_truncate(name: &str) -> String {
    let hash = hash16(&[name]);
    let mut out = format!("{}-{name}", &hash[..8]);
    if out.len() > CHAIN_NAME_BASE_MAX {
        let mut cut = CHAIN_NAME_BASE_MAX - 3;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

/// `servicePortChainNameBase`: `HASH-ns/name/proto/portName` (an unnamed port leaves
/// the last part empty). Prefix it with `service-`, `local-`, `external-`, `firewall-`.
pub fn service_port_chain_base(
    namespace: &str,
    name: &str,
    protocol: Protocol,
    port_name: Option<&str>,
) -> String {
    hash_and_truncate(&format!(
        "{namespace}/{name}/{}/{}",
        protocol.lower(),
        port_name.unwrap_or("")
    ))
}

/// `servicePortEndpointChainNameBase`: `HASH-ns/name/proto/portName__ip/port` (IPv6
/// colons become dots). Prefix it with `endpoint-` or `affinity-`.
pub fn endpoint_chain_base(
    namespace: &str,
    name: &str,
    protocol: Protocol,
    port_name: Option<&str>,
    ip: IpAddr,
    port: u16,
) -> String {
    let ip = ip.to_string().replace(':', ".");
    hash_and_truncate(&format!(
        "{namespace}/{name}/{}/{}__{ip}/{port}",
        protocol.lower(),
        port_name.unwrap_or("")
    ))
}

/// kube-proxy's `isServiceChainName`: per-service chains are the ones with a `/`.
pub fn is_service_chain_name(name: &str) -> bool {
    name.contains('/')
}

/// kube-proxy's `isAffinitySetName`.
pub fn is_affinity_set_name(name: &str) -> bool {
    name.starts_with(AFFINITY_PREFIX)
}

/// Appends kube-proxy's `ensureChain`: create the chain if missing, then empty it.
fn ensure_chain(out: &mut String, chain: &str) {
    let _ = writeln!(out, "add chain {T} {chain}\nflush chain {T} {chain}");
}

fn add_rule(out: &mut String, chain: &str, rule: &str) {
    let _ = writeln!(out, "add rule {T} {chain} {rule}");
}

fn add_rule_commented(out: &mut String, chain: &str, rule: &str, comment: &str) {
    let _ = writeln!(out, "add rule {T} {chain} {rule} comment \"{comment}\"");
}

/// Renders one node's kube-proxy state in nftables mode. `service_cidr` is the
/// cluster's service range (kube-proxy's ServiceCIDRs): traffic to an address in it that
/// no Service owns is dropped; `None` leaves that rule out, as kube-proxy does without
/// ServiceCIDRs.
pub fn render(input: &ProxyInput, service_cidr: Option<Ipv4Net>) -> Result<NftRules, ProxyError> {
    let cfg = input.config;
    let mark = checked_mark(&cfg)?;
    let ports = proxied_ports(input);
    let mut seen: HashSet<(String, Protocol)> = HashSet::with_capacity(ports.len());
    let ctx = Ctx {
        cfg,
        node: &input.node,
        node_ip: input.node_ip,
        cluster_cidr: input.cluster_cidr.map(|c| c.trunc().to_string()),
    };
    let mut services = Vec::with_capacity(ports.len());
    for sp in ports {
        let spn = sp.port_name_string();
        if !seen.insert((spn.clone(), sp.protocol)) {
            return Err(ProxyError::DuplicatePort(spn, sp.protocol));
        }
        services.push(render_service(&ctx, sp, spn));
    }
    Ok(NftRules {
        config: cfg,
        base: setup(&mark, input.node_ip, service_cidr),
        services,
    })
}

/// `setupNFTables` in the newest layout (K-NFT-T `baseRules`), with kube-proxy's
/// statement order: table, base chains, jump chains and jumps, top-level chains and their
/// rules, sets and maps, then every set and map emptied for the elements that follow.
fn setup(mark: &str, node_ip: Ipv4Addr, service_cidr: Option<Ipv4Net>) -> String {
    let mut out = String::with_capacity(6 * 1024);
    let _ = writeln!(
        out,
        "add table {T} {{ comment \"rules for kube-proxy\" ; }}"
    );
    for (name, kind, hook, priority) in BASE_CHAINS {
        let _ = writeln!(
            out,
            "add chain {T} {name} {{ type {kind} hook {hook} priority {priority} ; }}\nflush chain {T} {name}"
        );
    }
    let mut created: Vec<&str> = Vec::new();
    for (target, source, extra) in JUMPS {
        if !created.contains(&target) {
            created.push(target);
            ensure_chain(&mut out, target);
        }
        let rule = if extra.is_empty() {
            format!("jump {target}")
        } else {
            format!("{extra} jump {target}")
        };
        add_rule(&mut out, source, &rule);
    }
    for chain in [SERVICES, CLUSTER_IPS_CHECK, MASQUERADING, MARK_MASQ] {
        if !created.contains(&chain) {
            created.push(chain);
            ensure_chain(&mut out, chain);
        }
    }
    add_rule(&mut out, MARK_MASQ, &format!("mark set mark or {mark}"));
    add_rule(
        &mut out,
        MASQUERADING,
        &format!("mark and {mark} == 0 return"),
    );
    add_rule(&mut out, MASQUERADING, &format!("mark set mark xor {mark}"));
    add_rule(&mut out, MASQUERADING, "masquerade fully-random");

    let _ = writeln!(
        out,
        "add set {T} cluster-ips {{ type ipv4_addr ; comment \"Active ClusterIPs\" ; }}"
    );
    add_rule_commented(
        &mut out,
        CLUSTER_IPS_CHECK,
        "ip daddr @cluster-ips reject",
        "Reject traffic to invalid ports of ClusterIPs",
    );
    if let Some(cidr) = service_cidr {
        add_rule_commented(
            &mut out,
            CLUSTER_IPS_CHECK,
            &format!("ip daddr {{ {} }} drop", cidr.trunc()),
            "Drop traffic to unallocated ClusterIPs",
        );
    }
    let _ = writeln!(
        out,
        "add set {T} {NODEPORT_IPS} {{ type ipv4_addr ; comment \"IPs that accept NodePort traffic\" ; }}\nflush set {T} {NODEPORT_IPS}\nadd element {T} {NODEPORT_IPS} {{ {node_ip} }}"
    );
    let _ = writeln!(
        out,
        "add map {T} no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment \"vmap to drop or reject packets to services with no endpoints\" ; }}"
    );
    let _ = writeln!(
        out,
        "add map {T} no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; comment \"vmap to drop or reject packets to service nodeports with no endpoints\" ; }}"
    );
    let _ = writeln!(
        out,
        "add chain {T} {REJECT_CHAIN} {{ comment \"helper for @no-endpoint-services / @no-endpoint-nodeports\" ; }}\nflush chain {T} {REJECT_CHAIN}"
    );
    add_rule(&mut out, REJECT_CHAIN, "reject");
    add_rule(
        &mut out,
        SERVICE_ENDPOINTS_CHECK,
        "ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
    );
    add_rule(
        &mut out,
        NODEPORT_ENDPOINTS_CHECK,
        &format!("ip daddr @{NODEPORT_IPS} meta l4proto . th dport vmap @no-endpoint-nodeports"),
    );
    let _ = writeln!(
        out,
        "add map {T} firewall-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment \"destinations that are subject to LoadBalancerSourceRanges\" ; }}"
    );
    add_rule(
        &mut out,
        FIREWALL_CHECK,
        "ip daddr . meta l4proto . th dport vmap @firewall-ips",
    );
    let _ = writeln!(
        out,
        "add map {T} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }}"
    );
    let _ = writeln!(
        out,
        "add map {T} service-nodeports {{ type inet_proto . inet_service : verdict ; comment \"NodePort traffic\" ; }}"
    );
    add_rule(
        &mut out,
        SERVICES,
        "ip daddr . meta l4proto . th dport vmap @service-ips",
    );
    add_rule(
        &mut out,
        SERVICES,
        &format!("ip daddr @{NODEPORT_IPS} meta l4proto . th dport vmap @service-nodeports"),
    );
    for c in Container::ALL {
        let _ = writeln!(out, "flush {} {T} {}", c.kind(), c.name());
    }
    out
}

/// What every service port's rendering shares.
struct Ctx<'a> {
    cfg: ProxyConfig,
    node: &'a str,
    node_ip: Ipv4Addr,
    cluster_cidr: Option<String>,
}

/// The body of kube-proxy's per-service loop in `syncProxyRules`.
fn render_service(ctx: &Ctx<'_>, sp: &ServicePort, spn: String) -> ServiceBlock {
    let proto = sp.protocol.lower();
    let port = sp.port;
    let cip = sp.cluster_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
    let base = service_port_chain_base(
        &sp.namespace,
        &sp.name,
        sp.protocol,
        sp.port_name.as_deref(),
    );
    let cluster_chain = format!("{SERVICE_PREFIX}{base}");
    let local_chain = format!("{LOCAL_PREFIX}{base}");
    let ext_chain = format!("{EXTERNAL_PREFIX}{base}");
    let fw_chain = format!("{FIREWALL_PREFIX}{base}");

    let cat = categorize_endpoints(sp, ctx.node);
    let affinity = match sp.session_affinity {
        SessionAffinity::ClientIp { timeout_seconds } => Some(timeout_seconds),
        SessionAffinity::None => None,
    };
    // Endpoint chain (and affinity set) names, indexed like `cat.endpoints`; only the
    // reachable ones are used.
    let ep_base: Vec<String> = cat
        .endpoints
        .iter()
        .map(|e| {
            endpoint_chain_base(
                &sp.namespace,
                &sp.name,
                sp.protocol,
                sp.port_name.as_deref(),
                IpAddr::V4(e.ip),
                e.port,
            )
        })
        .collect();
    let ep_chain = |i: usize| format!("{ENDPOINT_PREFIX}{}", ep_base[i]);
    let ep_set = |i: usize| format!("{AFFINITY_PREFIX}{}", ep_base[i]);

    let chains = cat.chains();
    let etp_local = chains.external_local;
    let has_endpoints = chains.has_endpoints;
    let (has_internal, has_external) = (chains.has_internal, chains.has_external);
    let (uses_cluster_chain, uses_local_chain, uses_ext_chain) = (
        chains.uses_cluster_chain,
        chains.uses_local_chain,
        chains.uses_ext_chain,
    );
    let internal_chain = if chains.internal_local {
        &local_chain
    } else {
        &cluster_chain
    };
    let external_policy_chain = if etp_local {
        &local_chain
    } else {
        &cluster_chain
    };
    let uses_fw_chain =
        !sp.load_balancer_ips.is_empty() && !sp.load_balancer_source_ranges.is_empty();
    let (internal_verdict, external_verdict) = if !has_endpoints {
        let reject = format!("goto {REJECT_CHAIN}");
        (reject.clone(), reject)
    } else {
        ("drop".to_string(), "drop".to_string())
    };

    // Chains, in `ensureChain` order.
    let mut chains: Vec<String> = cat.reachable.iter().map(|&i| ep_chain(i)).collect();
    if uses_cluster_chain {
        chains.push(cluster_chain.clone());
    }
    if uses_local_chain {
        chains.push(local_chain.clone());
    }
    if uses_ext_chain {
        chains.push(ext_chain.clone());
    }
    if uses_fw_chain {
        chains.push(fw_chain.clone());
    }
    let mut decls = String::with_capacity(chains.iter().map(|c| 2 * c.len() + 40).sum());
    for c in &chains {
        ensure_chain(&mut decls, c);
    }

    // Elements.
    let mut elements = Vec::new();
    let key = |ip: Ipv4Addr| format!("{ip} . {proto} . {port}");
    let elem = |container, key: String, value: String, commented: bool| Element {
        container,
        key,
        value,
        comment: commented.then(|| spn.clone()),
    };
    elements.push(elem(
        Container::ClusterIps,
        cip.to_string(),
        String::new(),
        false,
    ));
    if has_internal {
        elements.push(elem(
            Container::ServiceIps,
            key(cip),
            format!("goto {internal_chain}"),
            false,
        ));
    } else {
        elements.push(elem(
            Container::NoEndpointServices,
            key(cip),
            internal_verdict.clone(),
            true,
        ));
    }
    for &eip in &sp.external_ips {
        if has_endpoints {
            elements.push(elem(
                Container::ServiceIps,
                key(eip),
                format!("goto {ext_chain}"),
                false,
            ));
        }
        if !has_external {
            elements.push(elem(
                Container::NoEndpointServices,
                key(eip),
                external_verdict.clone(),
                true,
            ));
        }
    }
    for &lb in &sp.load_balancer_ips {
        if has_endpoints {
            elements.push(elem(
                Container::ServiceIps,
                key(lb),
                format!("goto {ext_chain}"),
                false,
            ));
        }
        if uses_fw_chain {
            elements.push(elem(
                Container::FirewallIps,
                key(lb),
                format!("goto {fw_chain}"),
                false,
            ));
        }
    }
    if !has_external {
        for &lb in &sp.load_balancer_ips {
            elements.push(elem(
                Container::NoEndpointServices,
                key(lb),
                external_verdict.clone(),
                true,
            ));
        }
    }
    if let Some(np) = sp.node_port.filter(|p| *p != 0) {
        if has_endpoints {
            elements.push(elem(
                Container::ServiceNodePorts,
                format!("{proto} . {np}"),
                format!("goto {ext_chain}"),
                false,
            ));
        }
        if !has_external {
            elements.push(elem(
                Container::NoEndpointNodePorts,
                format!("{proto} . {np}"),
                external_verdict.clone(),
                true,
            ));
        }
    }

    // Rules.
    let mut body = String::with_capacity(256 + cat.reachable.len() * 400);
    if has_internal {
        if ctx.cfg.masquerade_all {
            add_rule(
                &mut body,
                internal_chain,
                &format!("ip daddr {cip} jump {MARK_MASQ}"),
            );
        } else if let Some(cidr) = &ctx.cluster_cidr {
            // Off-cluster clients of a cluster IP (a route to the service range via a
            // node) are masqueraded, since the backend may be on another node.
            add_rule(
                &mut body,
                internal_chain,
                &format!("ip daddr {cip} ip saddr != {cidr} jump {MARK_MASQ}"),
            );
        }
    }
    if uses_ext_chain {
        if !etp_local {
            add_rule(&mut body, &ext_chain, &format!("jump {MARK_MASQ}"));
        } else {
            if let Some(cidr) = &ctx.cluster_cidr {
                add_rule_commented(
                    &mut body,
                    &ext_chain,
                    &format!("ip saddr {cidr} goto {cluster_chain}"),
                    "short-circuit pod traffic",
                );
            }
            add_rule_commented(
                &mut body,
                &ext_chain,
                &format!("fib saddr type local jump {MARK_MASQ}"),
                "masquerade local traffic",
            );
            add_rule_commented(
                &mut body,
                &ext_chain,
                &format!("fib saddr type local goto {cluster_chain}"),
                "short-circuit local traffic",
            );
        }
        if has_external {
            add_rule(
                &mut body,
                &ext_chain,
                &format!("goto {external_policy_chain}"),
            );
        }
    }
    if uses_fw_chain {
        let mut sources: Vec<String> = Vec::new();
        let mut allow_from_node = false;
        for cidr in &sp.load_balancer_source_ranges {
            let cidr = cidr.trunc();
            sources.push(cidr.to_string());
            allow_from_node |= cidr.contains(&ctx.node_ip);
        }
        if allow_from_node {
            // A VIP bound on the node loops back with the VIP as source.
            sources.extend(sp.load_balancer_ips.iter().map(|ip| ip.to_string()));
        }
        add_rule(
            &mut body,
            &fw_chain,
            &format!("ip saddr != {{ {} }} drop", sources.join(" , ")),
        );
    }
    let mut sets = Vec::new();
    if let Some(timeout) = affinity {
        for &i in &cat.reachable {
            let name = ep_set(i);
            let line = format!(
                "add set {T} {name} {{ type ipv4_addr ; flags dynamic,timeout ; timeout {timeout}s ; }}\n"
            );
            body.push_str(&line);
            sets.push((name, line));
        }
    }
    let to_endpoints = |body: &mut String, chain: &str, chosen: &[usize]| {
        if affinity.is_some() {
            for &i in chosen {
                add_rule(
                    body,
                    chain,
                    &format!("ip saddr @{} goto {}", ep_set(i), ep_chain(i)),
                );
            }
        }
        let mut rule = format!("numgen random mod {} vmap {{ ", chosen.len());
        for (k, &i) in chosen.iter().enumerate() {
            if k > 0 {
                rule.push_str(" , ");
            }
            let _ = write!(rule, "{k} : goto {}", ep_chain(i));
        }
        rule.push_str(" }");
        add_rule(body, chain, &rule);
    };
    if uses_cluster_chain {
        to_endpoints(&mut body, &cluster_chain, &cat.cluster);
    }
    if uses_local_chain {
        to_endpoints(&mut body, &local_chain, &cat.local);
    }
    for &i in &cat.reachable {
        let ep = cat.endpoints[i];
        let chain = ep_chain(i);
        // Hairpin: a pod reaching itself through the service must be masqueraded, or it
        // would answer itself directly.
        add_rule(
            &mut body,
            &chain,
            &format!("ip saddr {} jump {MARK_MASQ}", ep.ip),
        );
        if affinity.is_some() {
            add_rule(
                &mut body,
                &chain,
                &format!("update @{} {{ ip saddr }}", ep_set(i)),
            );
        }
        add_rule(
            &mut body,
            &chain,
            &format!("meta l4proto {proto} dnat to {}:{}", ep.ip, ep.port),
        );
    }

    let service_len = sp.namespace.len() + 1 + sp.name.len();
    ServiceBlock {
        spn,
        service_len,
        protocol: sp.protocol,
        chains,
        sets,
        decls,
        body,
        elements,
    }
}

/// The elements of a rendering, first writer wins (kube-proxy's `ensureElem` skips a key
/// it already holds, e.g. the cluster IP of a second port), keyed by container and key.
fn element_index(rules: &NftRules) -> HashMap<(Container, &str), &Element> {
    let mut out = HashMap::new();
    for b in &rules.services {
        for e in &b.elements {
            out.entry((e.container, e.key.as_str())).or_insert(e);
        }
    }
    out
}

impl NftRules {
    /// The transaction of a full sync on a node without kube-proxy's table (or one whose
    /// per-service chains are all still wanted): `setupNFTables`, then every service's
    /// chains, elements and rules.
    pub fn full_transaction(&self) -> String {
        self.full_transaction_replacing(std::iter::empty(), std::iter::empty())
    }

    /// A full sync on a node whose table already holds `existing_chains` and
    /// `existing_sets` (as [`listed_names`] reads them): per-service chains and affinity
    /// sets no longer wanted are flushed and deleted, as kube-proxy does.
    pub fn full_transaction_replacing<'a>(
        &self,
        existing_chains: impl IntoIterator<Item = &'a str>,
        existing_sets: impl IntoIterator<Item = &'a str>,
    ) -> String {
        let size: usize = self.base.len()
            + self
                .services
                .iter()
                .map(|b| b.decls.len() + b.body.len() + b.elements.len() * 120)
                .sum::<usize>();
        let mut out = String::with_capacity(size);
        out.push_str(&self.base);
        let mut written: HashSet<(Container, &str)> = HashSet::new();
        for b in &self.services {
            out.push_str(&b.decls);
            for e in &b.elements {
                if written.insert((e.container, e.key.as_str())) {
                    e.write_add(&mut out);
                }
            }
            out.push_str(&b.body);
        }
        let active = self.active_chains();
        let stale_chains: BTreeSet<&str> = existing_chains
            .into_iter()
            .filter(|c| is_service_chain_name(c) && !active.contains(c))
            .collect();
        let sets = self.affinity_sets();
        let stale_sets: BTreeSet<&str> = existing_sets
            .into_iter()
            .filter(|s| is_affinity_set_name(s) && !sets.contains(s))
            .collect();
        write_stale(&mut out, &stale_chains, &stale_sets);
        out
    }

    /// kube-proxy's partial sync from `previous` (what the node holds) to `self`: a
    /// Service's chains are rewritten (and its affinity sets declared) only if one of its
    /// ports changed, map and set elements are added, replaced or deleted one by one, and
    /// chains and sets no longer used are flushed and deleted. Adding one endpoint to one
    /// service writes that service's chains, one affinity set at most, and no element
    /// except the ones that changed.
    pub fn incremental_transaction(&self, previous: &NftRules) -> String {
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
            let same = before
                .get(&(b.spn.as_str(), b.protocol))
                .is_some_and(|p| p.decls == b.decls && p.body == b.body);
            if !same {
                changed.insert(b.service());
            }
        }
        for p in &previous.services {
            if !now.contains(&(p.spn.as_str(), p.protocol)) {
                changed.insert(p.service());
            }
        }
        let old_sets: HashMap<&str, &str> = previous
            .services
            .iter()
            .flat_map(|b| b.sets.iter().map(|(n, l)| (n.as_str(), l.as_str())))
            .collect();
        let old_elements = element_index(previous);
        let new_elements = element_index(self);

        let mut out = String::new();
        let mut written: HashSet<(Container, &str)> = HashSet::new();
        for b in &self.services {
            let rewrite = changed.contains(b.service());
            if rewrite {
                out.push_str(&b.decls);
                // An affinity set whose timeout changed cannot be re-added in place; its
                // users were just flushed, so it can go.
                for (name, line) in &b.sets {
                    if old_sets.get(name.as_str()).is_some_and(|old| old != line) {
                        let _ = writeln!(out, "delete set {T} {name}");
                    }
                }
            }
            for e in &b.elements {
                if !written.insert((e.container, e.key.as_str())) {
                    continue;
                }
                match old_elements.get(&(e.container, e.key.as_str())) {
                    Some(old) if old.value == e.value => {}
                    Some(old) => {
                        old.write_delete(&mut out);
                        e.write_add(&mut out);
                    }
                    None => e.write_add(&mut out),
                }
            }
            if rewrite {
                out.push_str(&b.body);
            }
        }
        // `cleanupLeftoverKeys`, in the order the previous rendering wrote them.
        let mut deleted: HashSet<(Container, &str)> = HashSet::new();
        for p in &previous.services {
            for e in &p.elements {
                let k = (e.container, e.key.as_str());
                if !new_elements.contains_key(&k) && deleted.insert(k) {
                    e.write_delete(&mut out);
                }
            }
        }
        let active = self.active_chains();
        let stale_chains: BTreeSet<&str> = previous
            .active_chains()
            .into_iter()
            .filter(|c| !active.contains(c))
            .collect();
        let sets = self.affinity_sets();
        let stale_sets: BTreeSet<&str> = previous
            .affinity_sets()
            .into_iter()
            .filter(|s| !sets.contains(s))
            .collect();
        write_stale(&mut out, &stale_chains, &stale_sets);
        out
    }

    /// The per-service chains this rendering uses (`service-`, `local-`, `external-`,
    /// `firewall-`, `endpoint-`).
    pub fn active_chains(&self) -> BTreeSet<&str> {
        self.services
            .iter()
            .flat_map(|b| b.chains.iter().map(String::as_str))
            .collect()
    }

    /// The affinity sets this rendering uses.
    pub fn affinity_sets(&self) -> BTreeSet<&str> {
        self.services
            .iter()
            .flat_map(|b| b.sets.iter().map(|(n, _)| n.as_str()))
            .collect()
    }

    /// The per-service chains of one service port (`ns/name:port`, protocol), in the
    /// order a sync declares them; empty for a headless port or one without endpoints.
    pub fn chains_of(&self, service_port_name: &str, protocol: Protocol) -> Vec<&str> {
        self.services
            .iter()
            .find(|b| b.spn == service_port_name && b.protocol == protocol)
            .map(|b| b.chains.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// Number of service ports rendered (headless ones excluded).
    pub fn service_ports(&self) -> usize {
        self.services.len()
    }
}

/// Flushes every stale chain first (they may refer to one another), then deletes them,
/// then the stale affinity sets (whose users are gone by then).
fn write_stale(out: &mut String, chains: &BTreeSet<&str>, sets: &BTreeSet<&str>) {
    for c in chains {
        let _ = writeln!(out, "flush chain {T} {c}");
    }
    for c in chains {
        let _ = writeln!(out, "delete chain {T} {c}");
    }
    for s in sets {
        let _ = writeln!(out, "delete set {T} {s}");
    }
}

/// The chains and sets (maps excluded) named in an `nft list table ip kube-proxy`
/// listing, in listing order.
pub fn listed_names(listing: &str) -> (Vec<String>, Vec<String>) {
    let mut chains = Vec::new();
    let mut sets = Vec::new();
    for line in listing.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["chain", name, "{"] => chains.push(name.to_string()),
            ["set", name, "{"] => sets.push(name.to_string()),
            _ => {}
        }
    }
    (chains, sets)
}

/// `nft list table ip kube-proxy` normalised for snapshots: the listing as nft prints
/// it, except that each `elements = { … }` block is written one element per line, sorted
/// (the kernel lists hash-set elements in no stable order, and nft packs them by line
/// width), and the `expires …` countdown of dynamic (affinity) set elements is dropped.
/// There are no handles (nft prints them only with `-a`) and no counters (kube-proxy
/// writes none).
pub fn normalise_listing(listing: &str) -> String {
    let mut out = String::with_capacity(listing.len());
    let mut lines = listing.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let Some(rest) = trimmed.strip_prefix("elements = {") else {
            out.push_str(line.trim_end());
            out.push('\n');
            continue;
        };
        let indent = &line[..line.len() - trimmed.len()];
        let mut inner = rest.to_string();
        while !inner.trim_end().ends_with('}') {
            match lines.next() {
                Some(more) => {
                    inner.push(' ');
                    inner.push_str(more.trim());
                }
                None => break,
            }
        }
        let inner = inner.trim_end().trim_end_matches('}');
        let mut items: Vec<String> = inner
            .split(',')
            .map(drop_expiry)
            .filter(|s| !s.is_empty())
            .collect();
        items.sort();
        items.dedup();
        out.push_str(indent);
        out.push_str("elements = {");
        for (k, item) in items.iter().enumerate() {
            if k > 0 {
                out.push_str(",\n");
                out.push_str(indent);
                out.push_str("\t     ");
            } else {
                out.push(' ');
            }
            out.push_str(item);
        }
        out.push_str(" }\n");
    }
    out
}

/// One element's text without its `expires <time>` countdown, blanks collapsed.
fn drop_expiry(item: &str) -> String {
    let mut words = Vec::new();
    let mut it = item.split_whitespace();
    while let Some(w) = it.next() {
        if w == "expires" {
            it.next();
            continue;
        }
        words.push(w);
    }
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube_proxy::model::Endpoint;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// kube-proxy's fake proxier (K-NFT-T `NewFakeProxier`): node `test-node`
    /// 192.168.0.2, pods in 10.0.0.0/8, services in 172.30.0.0/16.
    fn fake_node(services: Vec<ServicePort>) -> ProxyInput {
        ProxyInput {
            node: "test-node".into(),
            node_ip: ip("192.168.0.2"),
            cluster_cidr: Some("10.0.0.0/8".parse().unwrap()),
            config: ProxyConfig::default(),
            services,
        }
    }

    fn svc(ns: &str, name: &str, cip: &str, eps: &[(&str, Option<&str>)]) -> ServicePort {
        let mut sp = ServicePort::cluster_ip(ns, name, Some("p80"), Protocol::Tcp, ip(cip), 80);
        sp.endpoints = eps
            .iter()
            .map(|(a, node)| Endpoint::ready(ip(a), 80, *node))
            .collect();
        sp
    }

    /// The six services of K-NFT-T `TestOverallNFTablesRules` (= the iptables golden's).
    fn six_services() -> Vec<ServicePort> {
        let svc1 = svc("ns1", "svc1", "172.30.0.41", &[("10.180.0.1", None)]);
        let mut svc2 = svc("ns2", "svc2", "172.30.0.42", &[("10.180.0.2", None)]);
        svc2.node_port = Some(3001);
        svc2.load_balancer_ips = vec![ip("1.2.3.4")];
        svc2.external_ips = vec![ip("192.168.99.22")];
        svc2.external_policy_local = true;
        svc2.health_check_node_port = Some(30000);
        let mut svc3 = svc("ns3", "svc3", "172.30.0.43", &[("10.180.0.3", None)]);
        svc3.node_port = Some(3003);
        let mut svc4 = svc(
            "ns4",
            "svc4",
            "172.30.0.44",
            &[("10.180.0.4", None), ("10.180.0.5", Some("test-node"))],
        );
        svc4.external_ips = vec![ip("192.168.99.33")];
        let mut svc5 = svc("ns5", "svc5", "172.30.0.45", &[("10.180.0.3", None)]);
        svc5.node_port = Some(3002);
        svc5.load_balancer_ips = vec![ip("5.6.7.8")];
        svc5.health_check_node_port = Some(30000);
        svc5.load_balancer_source_ranges = vec!["203.0.113.0/25".parse().unwrap()];
        svc5.session_affinity = SessionAffinity::ClientIp {
            timeout_seconds: 10800,
        };
        let svc6 = svc("ns6", "svc6", "172.30.0.46", &[]);
        vec![svc1, svc2, svc3, svc4, svc5, svc6]
    }

    fn lines(text: &str) -> BTreeSet<&str> {
        text.lines().collect()
    }

    fn assert_has(text: &str, expected: &str) {
        let have = lines(text);
        let missing: Vec<&str> = expected
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !have.contains(l))
            .collect();
        assert!(
            missing.is_empty(),
            "missing lines:\n{}\n--- in:\n{text}",
            missing.join("\n")
        );
    }

    /// Every name the reference verified (§2.3).
    #[test]
    fn chain_names_match_the_reference() {
        let tcp = Protocol::Tcp;
        let v4 = |s: &str| IpAddr::V4(ip(s));
        assert_eq!(
            service_port_chain_base("ns1", "svc1", tcp, Some("p80")),
            "ULMVA6XW-ns1/svc1/tcp/p80"
        );
        assert_eq!(
            endpoint_chain_base("ns1", "svc1", tcp, Some("p80"), v4("10.180.0.1"), 80),
            "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
        );
        assert!(
            endpoint_chain_base("ns5", "svc5", tcp, Some("p80"), v4("10.180.0.3"), 80)
                .starts_with("GTK6MW7G-")
        );
        assert!(
            service_port_chain_base("default", "nginx-service", tcp, Some("http"))
                .starts_with("PIOJ4VP5-")
        );
        for (addr, hash) in [("10.244.1.5", "7CJWOLVL"), ("10.244.2.7", "XRVHCYCJ")] {
            let b =
                endpoint_chain_base("default", "nginx-service", tcp, Some("http"), v4(addr), 80);
            assert_eq!(
                b,
                format!("{hash}-default/nginx-service/tcp/http__{addr}/80")
            );
        }
        // An unnamed port leaves the last part empty; IPv6 colons become dots.
        assert!(service_port_chain_base("a", "b", Protocol::Udp, None).ends_with("-a/b/udp/"));
        let v6 = endpoint_chain_base(
            "ns1",
            "svc1",
            tcp,
            Some("p80"),
            "fd00:10:180::2:1".parse().unwrap(),
            80,
        );
        assert!(v6.ends_with("__fd00.10.180..2.1/80"), "{v6}");
        assert!(is_service_chain_name("service-ULMVA6XW-ns1/svc1/tcp/p80"));
        assert!(!is_service_chain_name(SERVICES));
        // Long names are cut to knftables' limit with `...`, keeping the hash.
        let long = hash_and_truncate(&"x".repeat(300));
        assert_eq!(long.len(), 240);
        assert!(long.ends_with("..."));
    }

    /// The reference's small example (§2.6), which was loaded into nft on this machine:
    /// every line of the per-service transaction is in ours.
    #[test]
    fn the_reference_example_is_reproduced() {
        let mut sp = ServicePort::cluster_ip(
            "default",
            "nginx-service",
            Some("http"),
            Protocol::Tcp,
            ip("10.96.0.50"),
            80,
        );
        sp.node_port = Some(30080);
        sp.endpoints = vec![
            Endpoint::ready(ip("10.244.2.7"), 80, Some("n2")),
            Endpoint::ready(ip("10.244.1.5"), 80, Some("n1")),
        ];
        let input = ProxyInput {
            node: "n1".into(),
            node_ip: ip("192.168.0.2"),
            cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
            config: ProxyConfig::default(),
            services: vec![sp],
        };
        let rules = render(&input, Some("10.96.0.0/16".parse().unwrap())).unwrap();
        let text = rules.full_transaction();
        assert_has(
            &text,
            r#"
add chain ip kube-proxy service-PIOJ4VP5-default/nginx-service/tcp/http
add rule ip kube-proxy service-PIOJ4VP5-default/nginx-service/tcp/http ip daddr 10.96.0.50 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip kube-proxy service-PIOJ4VP5-default/nginx-service/tcp/http numgen random mod 2 vmap { 0 : goto endpoint-7CJWOLVL-default/nginx-service/tcp/http__10.244.1.5/80 , 1 : goto endpoint-XRVHCYCJ-default/nginx-service/tcp/http__10.244.2.7/80 }
add chain ip kube-proxy external-PIOJ4VP5-default/nginx-service/tcp/http
add rule ip kube-proxy external-PIOJ4VP5-default/nginx-service/tcp/http jump mark-for-masquerade
add rule ip kube-proxy external-PIOJ4VP5-default/nginx-service/tcp/http goto service-PIOJ4VP5-default/nginx-service/tcp/http
add chain ip kube-proxy endpoint-7CJWOLVL-default/nginx-service/tcp/http__10.244.1.5/80
add rule ip kube-proxy endpoint-7CJWOLVL-default/nginx-service/tcp/http__10.244.1.5/80 ip saddr 10.244.1.5 jump mark-for-masquerade
add rule ip kube-proxy endpoint-7CJWOLVL-default/nginx-service/tcp/http__10.244.1.5/80 meta l4proto tcp dnat to 10.244.1.5:80
add chain ip kube-proxy endpoint-XRVHCYCJ-default/nginx-service/tcp/http__10.244.2.7/80
add rule ip kube-proxy endpoint-XRVHCYCJ-default/nginx-service/tcp/http__10.244.2.7/80 ip saddr 10.244.2.7 jump mark-for-masquerade
add rule ip kube-proxy endpoint-XRVHCYCJ-default/nginx-service/tcp/http__10.244.2.7/80 meta l4proto tcp dnat to 10.244.2.7:80
add element ip kube-proxy cluster-ips { 10.96.0.50 }
add element ip kube-proxy service-ips { 10.96.0.50 . tcp . 80 : goto service-PIOJ4VP5-default/nginx-service/tcp/http }
add element ip kube-proxy service-nodeports { tcp . 30080 : goto external-PIOJ4VP5-default/nginx-service/tcp/http }
"#,
        );
        // Nothing but that: 3 + 2 + 2 + 2 per-service rules, 3 elements.
        let per_service_rules = text
            .lines()
            .filter(|l| l.starts_with("add rule") && l.contains("/nginx-service/"))
            .count();
        assert_eq!(per_service_rules, 8);
        let elements = text
            .lines()
            .filter(|l| l.starts_with("add element"))
            .count();
        assert_eq!(elements, 4, "3 + the node's nodeport-ips element");
    }

    /// K-NFT-T `baseRules` with kube-proxy's real mark (`0x00004000`; the fake proxier
    /// uses `0x4000`): every base line, and every base chain is created and flushed.
    #[test]
    fn base_rules_match_kube_proxy() {
        let rules = render(&fake_node(vec![]), Some("172.30.0.0/16".parse().unwrap())).unwrap();
        let text = rules.full_transaction();
        assert_has(
            &text,
            r#"
add table ip kube-proxy { comment "rules for kube-proxy" ; }
add set ip kube-proxy cluster-ips { type ipv4_addr ; comment "Active ClusterIPs" ; }
add set ip kube-proxy nodeport-ips { type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }
add map ip kube-proxy firewall-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "destinations that are subject to LoadBalancerSourceRanges" ; }
add map ip kube-proxy no-endpoint-nodeports { type inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }
add map ip kube-proxy no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }
add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }
add map ip kube-proxy service-nodeports { type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }
add chain ip kube-proxy cluster-ips-check
add chain ip kube-proxy filter-prerouting-pre-dnat { type filter hook prerouting priority -110 ; }
add chain ip kube-proxy filter-output-pre-dnat { type filter hook output priority -110 ; }
add chain ip kube-proxy filter-forward { type filter hook forward priority 0 ; }
add chain ip kube-proxy filter-input { type filter hook input priority 0 ; }
add chain ip kube-proxy filter-output { type filter hook output priority 0 ; }
add chain ip kube-proxy firewall-check
add chain ip kube-proxy mark-for-masquerade
add chain ip kube-proxy masquerading
add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }
add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority 100 ; }
add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }
add chain ip kube-proxy nodeport-endpoints-check
add chain ip kube-proxy reject-chain { comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }
add chain ip kube-proxy services
add chain ip kube-proxy service-endpoints-check
add rule ip kube-proxy cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"
add rule ip kube-proxy cluster-ips-check ip daddr { 172.30.0.0/16 } drop comment "Drop traffic to unallocated ClusterIPs"
add rule ip kube-proxy filter-prerouting-pre-dnat ct state new jump firewall-check
add rule ip kube-proxy filter-forward ct state new jump service-endpoints-check
add rule ip kube-proxy filter-forward ct state new jump cluster-ips-check
add rule ip kube-proxy filter-input ct state new jump nodeport-endpoints-check
add rule ip kube-proxy filter-input ct state new jump service-endpoints-check
add rule ip kube-proxy filter-output ct state new jump service-endpoints-check
add rule ip kube-proxy filter-output-pre-dnat ct state new jump firewall-check
add rule ip kube-proxy filter-output ct state new jump cluster-ips-check
add rule ip kube-proxy firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips
add rule ip kube-proxy mark-for-masquerade mark set mark or 0x00004000
add rule ip kube-proxy masquerading mark and 0x00004000 == 0 return
add rule ip kube-proxy masquerading mark set mark xor 0x00004000
add rule ip kube-proxy masquerading masquerade fully-random
add rule ip kube-proxy nat-output jump services
add rule ip kube-proxy nat-postrouting jump masquerading
add rule ip kube-proxy nat-prerouting jump services
add rule ip kube-proxy nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports
add rule ip kube-proxy reject-chain reject
add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips
add rule ip kube-proxy services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports
add element ip kube-proxy nodeport-ips { 192.168.0.2 }
add rule ip kube-proxy service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services
"#,
        );
        for (name, ..) in BASE_CHAINS {
            assert!(
                text.contains(&format!("flush chain ip kube-proxy {name}\n")),
                "{name}"
            );
        }
        // Rule order inside a base chain is kube-proxy's.
        let pos = |l: &str| text.find(l).unwrap();
        assert!(
            pos("filter-input ct state new jump nodeport-endpoints-check")
                < pos("filter-input ct state new jump service-endpoints-check")
        );
        assert!(
            pos("filter-output ct state new jump service-endpoints-check")
                < pos("filter-output ct state new jump cluster-ips-check")
        );
        // Without ServiceCIDRs there is no drop rule.
        let none = render(&fake_node(vec![]), None).unwrap().full_transaction();
        assert!(!none.contains("unallocated"));
    }

    /// K-NFT-T `TestOverallNFTablesRules`: the reference's verbatim highlights (§2.5),
    /// and the rest of each service's block, per service type.
    #[test]
    fn the_six_services_golden() {
        let rules = render(
            &fake_node(six_services()),
            Some("172.30.0.0/16".parse().unwrap()),
        )
        .unwrap();
        let text = rules.full_transaction();
        // §2.5, verbatim.
        assert_has(
            &text,
            r#"
add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 }
add chain ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80
add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 ip saddr 10.180.0.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 meta l4proto tcp dnat to 10.180.0.1:80
add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
add element ip kube-proxy no-endpoint-nodeports { tcp . 3001 comment "ns2/svc2:p80" : drop }
add element ip kube-proxy no-endpoint-services { 1.2.3.4 . tcp . 80 comment "ns2/svc2:p80" : drop }
add set ip kube-proxy affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }
add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 goto endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80
add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 update @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { ip saddr }
add rule ip kube-proxy firewall-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr != { 203.0.113.0/25 } drop
add element ip kube-proxy firewall-ips { 5.6.7.8 . tcp . 80 : goto firewall-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip kube-proxy no-endpoint-services { 172.30.0.46 . tcp . 80 comment "ns6/svc6:p80" : goto reject-chain }
"#,
        );
        // svc2: LoadBalancer + external IP, eTP Local, no local endpoint: the external
        // chain short-circuits pod and node traffic and nothing else; outside clients
        // are dropped by the no-endpoint maps.
        assert_has(
            &text,
            r#"
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 ip saddr 10.0.0.0/8 goto service-42NFTM6N-ns2/svc2/tcp/p80 comment "short-circuit pod traffic"
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local goto service-42NFTM6N-ns2/svc2/tcp/p80 comment "short-circuit local traffic"
add element ip kube-proxy service-ips { 192.168.99.22 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-ips { 1.2.3.4 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 3001 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy no-endpoint-services { 192.168.99.22 . tcp . 80 comment "ns2/svc2:p80" : drop }
"#,
        );
        assert!(
            rules
                .chains_of("ns2/svc2:p80", Protocol::Tcp)
                .iter()
                .all(|c| !c.starts_with("local-"))
        );
        // svc3: NodePort, Cluster policy.
        assert_has(
            &text,
            r#"
add rule ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80 jump mark-for-masquerade
add rule ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80 goto service-4AT6LBPK-ns3/svc3/tcp/p80
add element ip kube-proxy service-nodeports { tcp . 3003 : goto external-4AT6LBPK-ns3/svc3/tcp/p80 }
"#,
        );
        // svc4: external IP, two endpoints, uniform choice.
        assert_has(
            &text,
            r#"
add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 numgen random mod 2 vmap { 0 : goto endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 , 1 : goto endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 }
add element ip kube-proxy service-ips { 192.168.99.33 . tcp . 80 : goto external-LAUZTJTB-ns4/svc4/tcp/p80 }
"#,
        );
        // svc5: affinity rule before the numgen rule; the firewall chain exists.
        let svc5 = rules.chains_of("ns5/svc5:p80", Protocol::Tcp);
        assert!(
            svc5.contains(&"firewall-HVFWP5L3-ns5/svc5/tcp/p80"),
            "{svc5:?}"
        );
        let pos = |l: &str| text.find(l).unwrap_or_else(|| panic!("{l}"));
        assert!(
            pos("service-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr @affinity")
                < pos("service-HVFWP5L3-ns5/svc5/tcp/p80 numgen random mod 1")
        );
        assert!(
            pos("add set ip kube-proxy affinity-GTK6MW7G")
                < pos("service-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr @affinity")
        );
        // svc6: no endpoints: no chain at all, only the reject element.
        assert!(rules.chains_of("ns6/svc6:p80", Protocol::Tcp).is_empty());
        // Every chain a rule or element refers to is declared before it.
        let mut declared: HashSet<&str> = HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("add chain ip kube-proxy ") {
                declared.insert(rest.split(' ').next().unwrap());
            }
            let words: Vec<&str> = line.split(' ').collect();
            for w in words.windows(2).filter(|w| w[0] == "goto") {
                assert!(
                    declared.contains(w[1]),
                    "{} used before declared in: {line}",
                    w[1]
                );
            }
        }
    }

    #[test]
    fn internal_traffic_policy_local_and_etp_local_with_a_local_endpoint() {
        // iTP Local: ClusterIP traffic goes to the local chain; a node without a local
        // endpoint drops it.
        let mut itp = svc(
            "ns1",
            "itp",
            "172.30.0.50",
            &[("10.0.1.1", Some("test-node")), ("10.0.2.1", Some("other"))],
        );
        itp.internal_policy_local = true;
        let mut etp = svc(
            "ns1",
            "etp",
            "172.30.0.51",
            &[("10.0.1.2", Some("test-node")), ("10.0.2.2", Some("other"))],
        );
        etp.node_port = Some(30051);
        etp.external_policy_local = true;
        let text = render(&fake_node(vec![itp.clone(), etp]), None)
            .unwrap()
            .full_transaction();
        let itp_base = service_port_chain_base("ns1", "itp", Protocol::Tcp, Some("p80"));
        assert!(text.contains(&format!(
            "add element ip kube-proxy service-ips {{ 172.30.0.50 . tcp . 80 : goto local-{itp_base} }}"
        )));
        assert!(text.contains(&format!("add rule ip kube-proxy local-{itp_base} ip daddr 172.30.0.50 ip saddr != 10.0.0.0/8 jump mark-for-masquerade")));
        assert!(text.contains(&format!(
            "add rule ip kube-proxy local-{itp_base} numgen random mod 1 vmap"
        )));
        assert!(!text.contains(&format!("service-{itp_base}")), "{text}");
        let etp_base = service_port_chain_base("ns1", "etp", Protocol::Tcp, Some("p80"));
        assert_has(
            &text,
            &format!(
                "add rule ip kube-proxy external-{etp_base} goto local-{etp_base}\n\
                 add rule ip kube-proxy local-{etp_base} numgen random mod 1 vmap {{ 0 : goto endpoint-{} }}",
                endpoint_chain_base(
                    "ns1",
                    "etp",
                    Protocol::Tcp,
                    Some("p80"),
                    "10.0.1.2".parse().unwrap(),
                    80
                )
            ),
        );
        assert!(text.contains(&format!(
            "add rule ip kube-proxy service-{etp_base} numgen random mod 2 vmap"
        )));

        let mut away = fake_node(vec![itp]);
        away.node = "third".into();
        let text = render(&away, None).unwrap().full_transaction();
        assert!(text.contains("add element ip kube-proxy no-endpoint-services { 172.30.0.50 . tcp . 80 comment \"ns1/itp:p80\" : drop }"));
        assert!(!text.contains("add chain ip kube-proxy local-"));
    }

    #[test]
    fn masquerade_all_and_no_local_detector() {
        let mut input = fake_node(vec![svc("ns1", "a", "172.30.0.60", &[("10.0.0.9", None)])]);
        input.cluster_cidr = None;
        let text = render(&input, None).unwrap().full_transaction();
        assert!(!text.contains("ip saddr !="));
        input.config.masquerade_all = true;
        let text = render(&input, None).unwrap().full_transaction();
        assert!(text.contains("ip daddr 172.30.0.60 jump mark-for-masquerade"));
        input.config.masquerade_bit = 40;
        assert!(render(&input, None).is_err());
    }

    #[test]
    fn output_is_deterministic_and_duplicates_refused() {
        let mut a = six_services();
        let one = render(&fake_node(a.clone()), None).unwrap();
        a.reverse();
        for s in &mut a {
            s.endpoints.reverse();
        }
        assert_eq!(
            render(&fake_node(a.clone()), None)
                .unwrap()
                .full_transaction(),
            one.full_transaction()
        );
        a.push(a[0].clone());
        assert!(matches!(
            render(&fake_node(a), None),
            Err(ProxyError::DuplicatePort(..))
        ));
    }

    fn many(n: usize, eps: usize) -> Vec<ServicePort> {
        (0..n)
            .map(|i| {
                let mut s = ServicePort::cluster_ip(
                    "bench",
                    &format!("svc-{i}"),
                    Some("http"),
                    Protocol::Tcp,
                    Ipv4Addr::from(u32::from(ip("172.30.0.0")) + i as u32 + 1),
                    80,
                );
                s.endpoints = (0..eps)
                    .map(|k| {
                        Endpoint::ready(
                            Ipv4Addr::from(u32::from(ip("10.1.0.0")) + (i * 4 + k) as u32),
                            8080,
                            None,
                        )
                    })
                    .collect();
                s
            })
            .collect()
    }

    /// One endpoint added to one of 100 services: the partial sync rewrites that
    /// service's chains (the new endpoint chain among them) and writes no element.
    #[test]
    fn incremental_adds_one_endpoint_without_rewriting_the_world() {
        let before_input = fake_node(many(100, 2));
        let before = render(&before_input, None).unwrap();
        let mut after_input = before_input.clone();
        after_input.services[42]
            .endpoints
            .push(Endpoint::ready(ip("10.9.9.9"), 8080, None));
        let after = render(&after_input, None).unwrap();
        let inc = after.incremental_transaction(&before);
        let full = after.full_transaction();
        assert!(
            inc.len() * 20 < full.len(),
            "{} vs {}",
            inc.len(),
            full.len()
        );
        assert!(inc.contains("dnat to 10.9.9.9:8080"));
        assert!(inc.lines().all(|l| l.contains("/svc-42/")), "{inc}");
        assert!(!inc.contains("add element"));
        assert!(!inc.contains("flush map"));
        // Nothing changed: nothing written.
        assert_eq!(after.incremental_transaction(&after), "");
    }

    #[test]
    fn incremental_removes_services_endpoints_and_elements() {
        let mut services = many(3, 2);
        services[1].session_affinity = SessionAffinity::ClientIp {
            timeout_seconds: 60,
        };
        let before = render(&fake_node(services.clone()), None).unwrap();
        // svc-1 loses all its endpoints; svc-2 goes away.
        services[1].endpoints.clear();
        services.pop();
        let after = render(&fake_node(services), None).unwrap();
        let inc = after.incremental_transaction(&before);
        let b1 = service_port_chain_base("bench", "svc-1", Protocol::Tcp, Some("http"));
        let b2 = service_port_chain_base("bench", "svc-2", Protocol::Tcp, Some("http"));
        assert_has(
            &inc,
            &format!(
                "delete element ip kube-proxy service-ips {{ 172.30.0.2 . tcp . 80 }}\n\
                 add element ip kube-proxy no-endpoint-services {{ 172.30.0.2 . tcp . 80 comment \"bench/svc-1:http\" : goto reject-chain }}\n\
                 delete element ip kube-proxy cluster-ips {{ 172.30.0.3 }}\n\
                 delete element ip kube-proxy service-ips {{ 172.30.0.3 . tcp . 80 }}\n\
                 flush chain ip kube-proxy service-{b1}\n\
                 delete chain ip kube-proxy service-{b1}\n\
                 delete chain ip kube-proxy service-{b2}"
            ),
        );
        assert_eq!(inc.matches("delete set ip kube-proxy affinity-").count(), 2);
        // Flushes come before deletes, and element deletes before both.
        let pos = |l: &str| inc.find(l).unwrap();
        assert!(pos("delete element") < pos("flush chain"));
        assert!(inc.rfind("flush chain").unwrap() < pos("delete chain"));
        // A full sync on a node holding the old chains removes them too.
        let old_chains: Vec<String> = before
            .active_chains()
            .into_iter()
            .map(str::to_string)
            .collect();
        let old_sets: Vec<String> = before
            .affinity_sets()
            .into_iter()
            .map(str::to_string)
            .collect();
        let full = after.full_transaction_replacing(
            old_chains.iter().map(String::as_str),
            old_sets.iter().map(String::as_str),
        );
        assert!(full.contains(&format!("delete chain ip kube-proxy service-{b2}")));
        assert!(
            !full.contains("delete chain ip kube-proxy service-")
                || full.matches("delete chain").count() == 6
        );
    }

    #[test]
    fn listings_are_normalised() {
        let listing = "table ip kube-proxy {\n\tset cluster-ips {\n\t\ttype ipv4_addr\n\t\telements = { 10.96.0.7, 10.96.0.50,\n\t\t\t     10.96.0.200 }\n\t}\n\tset affinity-X {\n\t\ttype ipv4_addr\n\t\tflags dynamic,timeout\n\t\ttimeout 3h\n\t\telements = { 10.0.0.2 expires 2h59m58s }\n\t}\n\tchain a/b {   \n\t}\n}\n";
        let n = normalise_listing(listing);
        assert_eq!(
            n,
            "table ip kube-proxy {\n\tset cluster-ips {\n\t\ttype ipv4_addr\n\t\telements = { 10.96.0.200,\n\t\t\t     10.96.0.50,\n\t\t\t     10.96.0.7 }\n\t}\n\tset affinity-X {\n\t\ttype ipv4_addr\n\t\tflags dynamic,timeout\n\t\ttimeout 3h\n\t\telements = { 10.0.0.2 }\n\t}\n\tchain a/b {\n\t}\n}\n"
        );
        let (chains, sets) = listed_names(listing);
        assert_eq!(chains, ["a/b"]);
        assert_eq!(sets, ["cluster-ips", "affinity-X"]);
    }
}
