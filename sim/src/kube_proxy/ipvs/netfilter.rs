//! The netfilter side of kube-proxy's IPVS mode (`writeIptablesRules`): the iptables
//! chains it creates and jumps to, and the rules that match the ipsets (each written only
//! while its set is non-empty), as restore text.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::{
    IpvsSet, KUBE_IPVS_FILTER, KUBE_IPVS_OUT_FILTER, KUBE_LOAD_BALANCER, KUBE_NODE_PORT,
    KUBE_SOURCE_RANGES_FIREWALL, sets,
};
use crate::kube_proxy::iptables::masquerade_rules;
use crate::kube_proxy::model::{ProxyConfig, ProxyInput};
use crate::kube_proxy::names::{
    KUBE_FORWARD, KUBE_MARK_MASQ, KUBE_POSTROUTING, KUBE_PROXY_FIREWALL, KUBE_SERVICES,
};
use crate::protocol::Protocol;

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

/// `writeIptablesRules` (plus the chain lines of `createAndLinkKubeChain`): the
/// restore text of one sync.
pub(super) fn iptables_restore(
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
    nat.push_str(&masquerade_rules(cfg, mark));

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
