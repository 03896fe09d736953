//! kube-proxy's iptables mode as a pure function: from the service ports and endpoints a
//! node knows ([`ProxyInput`], kube-proxy's model in [`super::model`]) to the exact `iptables-restore --noflush` text kube-proxy
//! writes for a sync ([`ProxyRules::full_restore`], [`ProxyRules::incremental_restore`]),
//! plus the jumps it inserts into the built-in chains ([`JUMP_CHAINS`],
//! [`bootstrap_restore`]) and what `iptables-save` prints afterwards
//! ([`ProxyRules::saved`], [`normalise_rule`], [`IptablesState`], [`kube_proxy_view`]).
//!
//! Here: the renderer; `jumps.rs` the jumps from the built-in chains;
//! `save.rs` how `iptables-save` prints a rule back; `state.rs` a small model of the tables
//! that restore text is applied to.
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

use std::collections::HashSet;
use std::fmt::{self, Write as _};
use std::net::Ipv4Addr;
use std::ops::Range;

use super::model::endpoints::{Ep, Scratch, categorize, endpoint_list};
use super::model::{
    ProxyConfig, ProxyError, ProxyInput, ServicePort, SessionAffinity, TrafficPolicies,
    checked_mark, proxied_ports,
};
use super::names::{
    self as pn, KUBE_EXTERNAL_SERVICES, KUBE_FIREWALL, KUBE_FORWARD, KUBE_MARK_MASQ,
    KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_PROXY_FIREWALL, KUBE_SERVICES,
};
use crate::protocol::Protocol;

/// Above this many endpoints in total, kube-proxy drops the comments of SVC→SEP and SEP
/// rules ("large cluster mode").
pub const LARGE_CLUSTER_ENDPOINTS_THRESHOLD: usize = 1000;

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

/// `computeProbability`: `1/n` with 10 decimals, as kube-proxy writes it.
pub fn probability(n: usize) -> String {
    format!("{:.10}", 1.0 / n as f64)
}

/// KUBE-POSTROUTING's masquerade of marked traffic and KUBE-MARK-MASQ, as kube-proxy
/// writes them in both iptables and IPVS mode.
pub fn masquerade_rules(cfg: &ProxyConfig, mark: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "-A KUBE-POSTROUTING -m mark ! --mark {mark}/{mark} -j RETURN"
    );
    let _ = writeln!(out, "-A KUBE-POSTROUTING -j MARK --xor-mark {mark}");
    let _ = writeln!(
        out,
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE{}",
        if cfg.random_fully {
            " --random-fully"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "-A KUBE-MARK-MASQ -j MARK --or-mark {mark}");
    out
}

/// Renders one node's kube-proxy rules.
pub fn render(input: &ProxyInput) -> Result<ProxyRules, ProxyError> {
    let cfg = input.config;
    let mark = checked_mark(&cfg)?;
    let ports = proxied_ports(input);
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

    let nat_head = masquerade_rules(&cfg, &mark);

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

    let policies = TrafficPolicies::of(sp);
    let has_endpoints = categorize(
        eps,
        policies.uses_cluster_endpoints(),
        policies.uses_local_endpoints(),
        scratch,
    );
    let chains = policies.chains(
        has_endpoints,
        !scratch.cluster.is_empty(),
        !scratch.local.is_empty(),
    );
    let etp_local = chains.external_local;
    let (has_internal, has_external) = (chains.has_internal, chains.has_external);
    let (uses_cluster_chain, uses_local_chain, uses_ext_chain) = (
        chains.uses_cluster_chain,
        chains.uses_local_chain,
        chains.uses_ext_chain,
    );
    let internal_chain = if chains.internal_local {
        &svl_chain
    } else {
        &svc_chain
    };
    let external_policy_chain = if etp_local { &svl_chain } else { &svc_chain };
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

mod jumps;
mod restore;
mod save;
mod state;
#[cfg(test)]
mod tests;

pub use jumps::{JUMP_CHAINS, JumpChain, bootstrap_restore, installed_jumps};
pub use save::{normalise_rule, saved_probability};
pub use state::{IptablesState, RestoreError, is_kube_proxy_chain, kube_proxy_view};
