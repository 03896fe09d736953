//! The ipsets of the enforcer's rules: pods as `hash:ip`, ipBlocks as `hash:net` with
//! their `except`s as `nomatch` entries.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::policy::{IpBlockMatch, PodInfo};

use super::super::ruleset::{IpSet, SetEntry, SetKind};

/// A `hash:ip` set of pods (those with an IP), commented with their names.
pub(super) fn pod_set(pods: &[&PodInfo]) -> IpSet {
    IpSet::new(
        SetKind::HashIp,
        pods.iter()
            .filter_map(|p| p.ip.map(|ip| SetEntry::host(ip, p.pod.to_string()))),
    )
}

/// The `hash:net` entries of an ipBlock: the block (or its two /1 halves for /0) minus the
/// halves an `except` covers entirely, plus each `except` lying strictly inside a kept
/// entry as `nomatch`. ipset matches the most specific entry containing the address, so
/// the set contains exactly the addresses [`IpBlockMatch::contains`] accepts.
pub(crate) fn ip_block_entries(block: &IpBlockMatch) -> Vec<SetEntry> {
    let halves: Vec<Ipv4Net> = if block.cidr.prefix_len() == 0 {
        vec![
            Ipv4Net::new(Ipv4Addr::new(0, 0, 0, 0), 1).expect("valid /1"),
            Ipv4Net::new(Ipv4Addr::new(128, 0, 0, 0), 1).expect("valid /1"),
        ]
    } else {
        vec![block.cidr]
    };
    let kept: Vec<Ipv4Net> = halves
        .into_iter()
        .filter(|h| !block.except.iter().any(|e| e.contains(h)))
        .collect();
    let mut entries: Vec<SetEntry> = kept
        .iter()
        .map(|n| SetEntry {
            net: *n,
            nomatch: false,
            comment: format!("ipBlock {}", block.cidr),
        })
        .collect();
    for e in &block.except {
        if kept.iter().any(|k| k.contains(e) && k != e) {
            entries.push(SetEntry {
                net: *e,
                nomatch: true,
                comment: format!("except {e}"),
            });
        }
    }
    entries
}
