//! Putting IPVS mode into one node that has IPVS: on the first sync the service CIDR
//! route, the `net.ipv4.vs.*` sysctls kube-proxy sets and the `kube-ipvs0` dummy link;
//! then on every sync that changed something, the service addresses bound to
//! `kube-ipvs0` (stale ones unbound), the netfilter half ([`load_netfilter`]), and the
//! IPVS table itself over generic netlink (flushed, then every virtual server added).

use std::time::Instant;

use anyhow::Context as _;
use sim::kube_proxy::ipvs::{DUMMY_DEVICE, IpvsRules, JUMPS};
use sim::plan::Plan;

use super::super::{ProxyNodeSync, route_service_cidr};
use crate::netns::Netns;
use crate::system::{NsRef, Real, System, ToolError, host};

/// The sysctls kube-proxy sets in IPVS mode.
const SYSCTLS: [(&str, &str); 4] = [
    ("net/ipv4/vs/conntrack", "1"),
    ("net/ipv4/vs/expire_nodest_conn", "1"),
    ("net/ipv4/vs/expire_quiescent_template", "1"),
    ("net/ipv4/ip_forward", "1"),
];

/// Brings a node that has IPVS from `before` (a different rendering installed, or
/// nothing) to `rules`.
pub(super) fn apply_node(
    system: &dyn System,
    plan: &Plan,
    node: &str,
    ns: &NsRef,
    rules: &IpvsRules,
    before: Option<&IpvsRules>,
) -> anyhow::Result<ProxyNodeSync> {
    let start = Instant::now();
    if before.is_none() {
        route_service_cidr(system, plan, ns)?;
        for (key, value) in SYSCTLS {
            system.set_sysctl(ns, key, value)?;
        }
        system
            .ensure_dummy_link(ns, DUMMY_DEVICE)
            .with_context(|| format!("create {DUMMY_DEVICE} in node {node}"))?;
    }
    // Addresses on kube-ipvs0: bind the new, unbind the stale.
    for a in &rules.bound {
        system
            .replace_address(ns, DUMMY_DEVICE, host(*a))
            .with_context(|| format!("bind {a} to {DUMMY_DEVICE} in node {node}"))?;
    }
    for a in before.iter().flat_map(|b| &b.bound) {
        if !rules.bound.contains(a) {
            system
                .delete_address(ns, DUMMY_DEVICE, host(*a))
                .with_context(|| format!("unbind {a} from {DUMMY_DEVICE} in node {node}"))?;
        }
    }
    let (bytes, lines) = load_netfilter_in(system, ns, node, rules, before.is_none())?;
    system
        .program_ipvs(ns, &rules.virtual_servers)
        .with_context(|| format!("program IPVS in node {node}"))?;
    Ok(ProxyNodeSync::written(
        node,
        before.is_none(),
        bytes,
        lines,
        start,
    ))
}

/// The netfilter half of IPVS mode in one node: on the first sync the chains and
/// kube-proxy's jumps into them (`iptablesJumpChain`, each inserted once), then the
/// ipsets in one `ipset restore` (create what is missing, flush every set, refill) and
/// the rules in one `iptables-restore --noflush`. Needs no IPVS in the kernel (only
/// `-m ipvs`, written for load balancers the node may not reach, does). Returns the
/// bytes and lines written.
pub fn load_netfilter(
    ns: &Netns,
    node: &str,
    rules: &IpvsRules,
    first: bool,
) -> anyhow::Result<(usize, usize)> {
    load_netfilter_in(&Real, &NsRef::from(ns), node, rules, first)
}

/// [`load_netfilter`] through `system`.
pub(super) fn load_netfilter_in(
    system: &dyn System,
    ns: &NsRef,
    node: &str,
    rules: &IpvsRules,
    first: bool,
) -> anyhow::Result<(usize, usize)> {
    use crate::system::Tool::{Ipset, Iptables, IptablesRestore};
    if first {
        for (table, from, to, comment) in JUMPS {
            let rule = ["-m", "comment", "--comment", comment, "-j", to];
            let mut check = vec!["-t", table, "-C", from];
            check.extend(rule);
            if system.run(ns, Iptables, &check, None).is_err() {
                // The chain must exist before a jump to it (`-N` fails if it does).
                let _: Result<String, ToolError> =
                    system.run(ns, Iptables, &["-t", table, "-N", to], None);
                let mut insert = vec!["-t", table, "-I", from];
                insert.extend(rule);
                system.run(ns, Iptables, &insert, None).with_context(|| {
                    format!("insert kube-proxy's jump into {from} in node {node}")
                })?;
            }
        }
    }
    let saved = rules.ipset_save();
    let creates = saved.lines().filter(|l| l.starts_with("create "));
    let flushes = rules.sets.iter().map(|s| format!("flush {}", s.name));
    let adds = saved.lines().filter(|l| l.starts_with("add "));
    let script: String = creates
        .map(str::to_string)
        .chain(flushes)
        .chain(adds.map(str::to_string))
        .map(|l| l + "\n")
        .collect();
    system
        .run(ns, Ipset, &["restore", "-exist"], Some(&script))
        .with_context(|| format!("load kube-proxy's ipsets into node {node}"))?;
    system
        .run(ns, IptablesRestore, &["--noflush"], Some(&rules.restore))
        .with_context(|| format!("load kube-proxy's IPVS-mode iptables rules into node {node}"))?;
    Ok((
        script.len() + rules.restore.len(),
        script.lines().count() + rules.restore.lines().count(),
    ))
}
