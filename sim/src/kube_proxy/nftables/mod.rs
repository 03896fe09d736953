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

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;

use super::model::{
    ProxyConfig, ProxyError, ProxyInput, ServicePort, SessionAffinity, categorize_endpoints,
    checked_mark, proxied_ports,
};
use crate::protocol::Protocol;

mod listing;
mod names;
#[cfg(test)]
mod tests;
mod transaction;

pub use listing::{listed_names, normalise_listing};
pub use names::{
    endpoint_chain_base, hash_and_truncate, is_affinity_set_name, is_service_chain_name,
    service_port_chain_base,
};

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
