//! Turning the kernel's trace events into a walkthrough: for each place a packet was seen
//! (a node, the router), which packet it was, every chain and rule that decided something
//! with its verdict, the address rewrites between hooks (kube-proxy's DNAT, masquerade),
//! which device it left by and what that means (the bridge to a local pod, the underlay
//! to another node, the VXLAN tunnel and its outer header), and where it was dropped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::parse::{Line, Packet, Step, Verdict};
use crate::render::names::CLUSTER_POLICY_CHAIN_PREFIX;

/// What the story needs to know of the cluster to name things.
#[derive(Debug, Clone, Default)]
pub struct TraceContext {
    /// Addresses and what they are: `x/a`, `svc default/web`, `node-1`, `host/client`.
    pub names: BTreeMap<Ipv4Addr, String>,
    pub nodes: Vec<NodeInfo>,
    /// The bridge device pods hang off (`cni0`) and the node's underlay device (`eth0`).
    pub bridge: String,
    pub uplink: String,
    /// The IP TOS byte the traced probe's packets carry (they go forward; everything
    /// else traced, answers and ICMP errors, comes back). The source port would not do:
    /// kube-proxy masquerades with `--random-fully`.
    pub forward_tos: u8,
    /// The places in the order the probe meets them on its way out (the client's node,
    /// or the router for a host outside; then the rest). Hops are told in this order
    /// going out and in the reverse order coming back: each place has its own monitor,
    /// so the reading order across places says nothing.
    pub path: Vec<String>,
}

/// One node, as far as the story needs it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: String,
    pub underlay_ip: Ipv4Addr,
    pub pod_subnet: Ipv4Net,
    /// The VXLAN device, its VNI and UDP port, in vxlan mode.
    pub vxlan: Option<(String, u32, u16)>,
}

/// The trace as read: lines from each place (`node-1`, `router`) in the order they were
/// read across all places (so a packet's hops come out in time order).
pub type Events = Vec<(String, Line)>;

/// Tells the story. `title` heads it (which cell, which source port), `outcome` and
/// `oracle` end it (what the probe measured, what the oracle predicted and why).
pub fn tell(
    ctx: &TraceContext,
    title: &str,
    events: &Events,
    outcome: &str,
    oracle: &str,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{title}");
    let hops = hops(ctx, events);
    if hops.is_empty() {
        let _ = writeln!(
            out,
            "  no traced packet was seen in any node or the router (it never reached one: \
             look at the client's own routes, or the probe failed before sending)"
        );
    }
    for (n, hop) in hops.iter().enumerate() {
        let _ = writeln!(out);
        tell_hop(ctx, &mut out, n + 1, hop);
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "measured: {outcome}");
    let _ = writeln!(out, "oracle:   {oracle}");
    out
}

/// One packet at one place: its PACKET lines (one per traced hook) and the decisions.
#[derive(Debug)]
struct Hop<'a> {
    place: &'a str,
    packets: Vec<&'a Packet>,
    steps: Vec<&'a Step>,
}

/// Groups the events into hops: the PACKET lines of one packet at one place (one per
/// traced hook; the trace id may change between hooks, after NAT for instance) with the
/// decisions that follow them. Keeps only the packets that tell the story (a TCP
/// connection's SYN, SYN-ACK and RST, every UDP and ICMP packet), and orders them along
/// the path: out in [`TraceContext::path`] order, back in reverse.
fn hops<'a>(ctx: &TraceContext, events: &'a Events) -> Vec<Hop<'a>> {
    let mut hops: Vec<Hop<'a>> = Vec::new();
    // Per place: trace id -> hop, and the hop of the place's last PACKET line.
    let mut by_id: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut last: BTreeMap<&str, usize> = BTreeMap::new();
    for (place, line) in events {
        match line {
            Line::Packet(p) => {
                let same = last.get(place.as_str()).copied().filter(|&i| {
                    hops[i]
                        .packets
                        .first()
                        .is_some_and(|f| same_packet(ctx, f, p))
                });
                let i = match same {
                    Some(i) => {
                        hops[i].packets.push(p);
                        i
                    }
                    None => {
                        hops.push(Hop {
                            place,
                            packets: vec![p],
                            steps: vec![],
                        });
                        hops.len() - 1
                    }
                };
                by_id.insert((place.as_str(), p.id.as_str()), i);
                last.insert(place, i);
            }
            Line::Step(s) => {
                if let Some(&i) = by_id.get(&(place.as_str(), s.id.as_str())) {
                    hops[i].steps.push(s);
                }
            }
            Line::Other(_) => {}
        }
    }
    hops.retain(|h| h.packets.first().is_some_and(|p| tells(p)));
    let forward = |h: &Hop<'_>| {
        h.packets
            .first()
            .is_some_and(|p| p.tos == Some(ctx.forward_tos))
    };
    let (out, back): (Vec<Hop<'a>>, Vec<Hop<'a>>) = hops.into_iter().partition(|h| forward(h));
    let mut ordered = along_the_path(ctx, out);
    ordered.extend(along_the_path(ctx, back));
    ordered
}

/// Orders one direction's hops the way the packet went: each hop hands the packet to
/// the place that owns its (translated) destination; the first hop is the one no other
/// hop hands to (ties: [`TraceContext::path`] order). Hops that fit no chain follow in
/// path order.
fn along_the_path<'a>(ctx: &TraceContext, mut hops: Vec<Hop<'a>>) -> Vec<Hop<'a>> {
    let rank = |h: &Hop<'_>| {
        ctx.path
            .iter()
            .position(|p| p == h.place)
            .unwrap_or(ctx.path.len())
    };
    // Stable: within one place the monitor's own (true) order stays.
    hops.sort_by_key(|h| rank(h));
    let next: Vec<Option<String>> = hops
        .iter()
        .map(|h| h.packets.last().and_then(|p| owner_of(ctx, p.dst)))
        .collect();
    let mut used = vec![false; hops.len()];
    let mut order = Vec::with_capacity(hops.len());
    while order.len() < hops.len() {
        // A start: an unused hop no other unused hop hands to (else the first unused).
        let handed_to = |i: usize| {
            (0..hops.len()).any(|j| j != i && !used[j] && next[j].as_deref() == Some(hops[i].place))
        };
        let Some(mut at) = (0..hops.len())
            .find(|&i| !used[i] && !handed_to(i))
            .or_else(|| (0..hops.len()).find(|&i| !used[i]))
        else {
            break;
        };
        loop {
            used[at] = true;
            order.push(at);
            let Some(to) = next[at].as_deref() else { break };
            match (0..hops.len()).find(|&j| !used[j] && hops[j].place == to) {
                Some(j) => at = j,
                None => break,
            }
        }
    }
    let mut slots: Vec<Option<Hop<'a>>> = hops.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

/// The place that receives a packet for `ip`: the node owning the pod subnet or the
/// node address, the router for a host outside.
fn owner_of(ctx: &TraceContext, ip: Option<Ipv4Addr>) -> Option<String> {
    let ip = ip?;
    if let Some(n) = ctx
        .nodes
        .iter()
        .find(|n| n.pod_subnet.contains(&ip) || n.underlay_ip == ip)
    {
        return Some(n.name.clone());
    }
    match ctx.names.get(&ip) {
        Some(name) if name.starts_with("host/") => Some("router".into()),
        _ => None,
    }
}

/// Whether two PACKET lines are the same packet at successive hooks of one place: same
/// protocol, flags and direction (the trace id is reused by later packets of a flow and
/// may change after NAT; addresses change with NAT, the direction does not).
fn same_packet(ctx: &TraceContext, a: &Packet, b: &Packet) -> bool {
    let forward = |p: &Packet| p.tos == Some(ctx.forward_tos);
    a.flags == b.flags && a.proto == b.proto && forward(a) == forward(b)
}

fn tells(p: &Packet) -> bool {
    match p.proto.as_deref() {
        Some("tcp") => p.flags.contains("SYN") || p.flags.contains("RST"),
        _ => true,
    }
}

fn tell_hop(ctx: &TraceContext, out: &mut String, n: usize, hop: &Hop<'_>) {
    let Some(first) = hop.packets.first() else {
        return;
    };
    let _ = writeln!(
        out,
        "{n}. {}: {}{}",
        hop.place,
        what(first),
        arrival(ctx, first)
    );
    for s in &hop.steps {
        // Our own TRACE rules, and the raw table's empty policy, are how the story is
        // read, not part of it.
        // (The harness also adds do-nothing rules in mangle, commented `knetlab-trace`,
        // so that every hook reports the packet.)
        if s.rule
            .as_deref()
            .is_some_and(|r| r.contains("-j TRACE") || r.contains("knetlab-trace"))
            || (matches!(s.table.as_str(), "raw" | "mangle")
                && s.rule.is_none()
                && s.verdict == Verdict::Accept)
        {
            continue;
        }
        let rule = s.rule.as_deref().unwrap_or("(chain policy)");
        let _ = writeln!(
            out,
            "     {:<6} {:<28} {:<9} {}",
            s.table,
            s.chain,
            s.verdict.to_string(),
            rule
        );
    }
    // The kernel's side of the oracle's tier walk: the cluster-wide policy rules that
    // matched, by their comments (tier, policy, priority, rule, action).
    let mut told: Vec<&str> = Vec::new();
    for s in &hop.steps {
        let Some(c) = s
            .rule
            .as_deref()
            .filter(|_| s.chain.starts_with(CLUSTER_POLICY_CHAIN_PREFIX))
            .and_then(comment)
            // A policy's rule says what it decides; the chains Accept and Pass go to
            // (their mark) do not.
            .filter(|c| c.contains(" -> "))
        else {
            continue;
        };
        if !told.contains(&c) {
            let _ = writeln!(out, "     => cluster-wide policy rule matched: {c}");
            told.push(c);
        }
    }
    let reply = first.tos != Some(ctx.forward_tos);
    for pair in hop.packets.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if (a.dst, a.dport) != (b.dst, b.dport) {
            let what = if reply {
                "destination rewritten back by conntrack (undoing this node's NAT of the way out)"
            } else {
                "destination rewritten (DNAT)"
            };
            let _ = writeln!(
                out,
                "     => {what}: {} -> {}",
                addr(ctx, a.dst, a.dport),
                addr(ctx, b.dst, b.dport)
            );
        }
        if (a.src, a.sport) != (b.src, b.sport) {
            let _ = writeln!(
                out,
                "     => source rewritten (SNAT/masquerade): {} -> {}",
                addr(ctx, a.src, a.sport),
                addr(ctx, b.src, b.sport)
            );
        }
    }
    let dropped = hop.steps.iter().rev().find(|s| s.verdict == Verdict::Drop);
    if let Some(s) = dropped {
        let how = match s.rule.as_deref() {
            Some(r) if r.contains("-j REJECT") => {
                "rejected here (the REJECT target answers with an ICMP error and drops the packet)"
            }
            Some(_) => "dropped here",
            None => "dropped here by the chain's policy",
        };
        let _ = writeln!(out, "     => {how}: {} {}", s.table, s.chain);
        return;
    }
    // The trace shows a packet before POSTROUTING's NAT: a masquerade is told by the
    // rule that did it.
    if let Some(s) = hop.steps.iter().find(|s| {
        s.verdict == Verdict::Accept
            && s.rule
                .as_deref()
                .is_some_and(|r| r.contains("-j MASQUERADE") || r.contains("-j SNAT"))
    }) {
        let _ = writeln!(
            out,
            "     => source rewritten on the way out (masquerade, {} {}): to this place's \
             address on the outgoing device{}",
            s.table,
            s.chain,
            if s.rule
                .as_deref()
                .is_some_and(|r| r.contains("--random-fully"))
            {
                ", with a random source port"
            } else {
                ""
            }
        );
    }
    let own = |ip: Option<Ipv4Addr>| {
        name_of(ctx, ip)
            .is_some_and(|n| n == hop.place || n.starts_with(&format!("{} (", hop.place)))
    };
    if let Some(last) = hop.packets.iter().rev().find(|p| p.out_dev.is_some()) {
        let _ = writeln!(out, "     => {}", departure(ctx, hop.place, last));
    } else if hop
        .packets
        .last()
        .is_some_and(|p| p.in_dev.is_some() && own(p.dst))
    {
        let _ = writeln!(out, "     => delivered to this namespace's own sockets");
    } else if hop.packets.iter().any(|p| p.in_dev.is_some()) {
        let _ = writeln!(
            out,
            "     => routed on (no rule after PREROUTING here had anything to say about it)"
        );
    }
}

/// The `--comment "..."` of a rule as iptables prints it (quotes inside escaped), as
/// written: `\"` stays, the rule's own text is quoted that way too.
fn comment(rule: &str) -> Option<&str> {
    let (_, rest) = rule.split_once("--comment \"")?;
    let bytes = rest.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return rest.get(..i),
            _ => i += 1,
        }
    }
    None
}

fn what(p: &Packet) -> String {
    let proto = p.proto.as_deref().unwrap_or("ip").to_ascii_uppercase();
    let flags = if p.flags.is_empty() {
        String::new()
    } else {
        format!(" {}", p.flags)
    };
    format!(
        "{proto}{flags} {} -> {}",
        raw_addr(p.src, p.sport),
        raw_addr(p.dst, p.dport)
    )
}

fn arrival(ctx: &TraceContext, p: &Packet) -> String {
    let names = match (name_of(ctx, p.src), name_of(ctx, p.dst)) {
        (Some(s), Some(d)) => format!("({s} -> {d})"),
        (Some(s), None) => format!("(from {s})"),
        (None, Some(d)) => format!("(to {d})"),
        (None, None) => String::new(),
    };
    let names = if names.is_empty() {
        String::new()
    } else {
        format!(" {names}")
    };
    match &p.in_dev {
        Some(dev) => format!("{names}, in on {dev}"),
        None => format!("{names}, sent from this namespace"),
    }
}

/// What leaving by `p.out_dev` means here.
fn departure(ctx: &TraceContext, place: &str, p: &Packet) -> String {
    let dev = p.out_dev.as_deref().unwrap_or_default();
    let dst = p.dst;
    let owner = dst.and_then(|d| ctx.nodes.iter().find(|n| n.pod_subnet.contains(&d)));
    let here = ctx.nodes.iter().find(|n| n.name == place);
    if let Some(node) = here
        && let Some((vdev, vni, port)) = &node.vxlan
        && dev == vdev
    {
        let remote = owner
            .map(|o| format!("{} ({})", o.underlay_ip, o.name))
            .unwrap_or_else(|| "the node that owns it".into());
        return format!(
            "out on {dev}: encapsulated in VXLAN (VNI {vni}), outer UDP {} -> {remote} port \
             {port}, across the fabric",
            node.underlay_ip
        );
    }
    if dev == ctx.bridge {
        return format!(
            "out on {dev}: onto the node's bridge, to {}",
            name_of(ctx, dst).unwrap_or_else(|| raw_addr(dst, None))
        );
    }
    if dev == ctx.uplink {
        return match (owner, owner_of(ctx, dst)) {
            (Some(o), _) if here.is_some_and(|h| h.name != o.name) => format!(
                "out on {dev}: routed over the underlay to {} ({}), which owns {}",
                o.name, o.underlay_ip, o.pod_subnet
            ),
            (_, Some(place)) if place != place_name(here) => {
                format!("out on {dev}: over the underlay to {place}")
            }
            _ => format!("out on {dev}: onto the underlay"),
        };
    }
    match name_of(ctx, dst) {
        Some(name) => format!("out on {dev}, to {name}"),
        None => format!("out on {dev}"),
    }
}

fn place_name(node: Option<&NodeInfo>) -> String {
    node.map(|n| n.name.clone()).unwrap_or_default()
}

fn name_of(ctx: &TraceContext, ip: Option<Ipv4Addr>) -> Option<String> {
    ip.and_then(|i| ctx.names.get(&i).cloned())
}

fn raw_addr(ip: Option<Ipv4Addr>, port: Option<u16>) -> String {
    match (ip, port) {
        (Some(i), Some(p)) => format!("{i}:{p}"),
        (Some(i), None) => i.to_string(),
        (None, _) => "?".into(),
    }
}

fn addr(ctx: &TraceContext, ip: Option<Ipv4Addr>, port: Option<u16>) -> String {
    match name_of(ctx, ip) {
        Some(n) => format!("{} ({n})", raw_addr(ip, port)),
        None => raw_addr(ip, port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::parse::parse;

    fn ctx() -> TraceContext {
        TraceContext {
            names: [
                ("10.244.1.2".parse().unwrap(), "x/a".to_string()),
                ("10.244.2.3".parse().unwrap(), "y/b".to_string()),
                ("10.96.0.20".parse().unwrap(), "svc y/web".to_string()),
            ]
            .into_iter()
            .collect(),
            nodes: vec![
                NodeInfo {
                    name: "node-1".into(),
                    underlay_ip: "192.168.200.11".parse().unwrap(),
                    pod_subnet: "10.244.1.0/24".parse().unwrap(),
                    vxlan: Some(("vxlan.1".into(), 1, 4789)),
                },
                NodeInfo {
                    name: "node-2".into(),
                    underlay_ip: "192.168.200.12".parse().unwrap(),
                    pod_subnet: "10.244.2.0/24".parse().unwrap(),
                    vxlan: Some(("vxlan.1".into(), 1, 4789)),
                },
            ],
            bridge: "cni0".into(),
            uplink: "eth0".into(),
            forward_tos: 0x10,
            path: vec!["node-1".into(), "node-2".into()],
        }
    }

    fn events(place: &str, text: &str) -> Events {
        parse(text)
            .into_iter()
            .map(|l| (place.to_string(), l))
            .collect()
    }

    #[test]
    fn dnat_vxlan_and_a_reject_on_the_far_node() {
        // Each place has its own monitor: node-2's lines may well be read first.
        let mut ev = events(
            "node-2",
            "\
PACKET: 2 bb IN=vxlan.1 SRC=10.244.1.2 DST=10.244.2.3 TOS=0x10 SPORT=41999 DPORT=8080 SYN
 TRACE: 2 bb filter:KUBE-POD-FW-Y:rule:0x7:DROP  -4 -t filter -A KUBE-POD-FW-Y -j REJECT --reject-with icmp-admin-prohibited
PACKET: 2 dd OUT=vxlan.1 SRC=10.244.2.1 DST=10.244.1.2 LEN=88 TOS=0xc0
 TRACE: 2 dd raw:OUTPUT:policy:ACCEPT
PACKET: 2 cc IN=vxlan.1 SRC=10.244.1.2 DST=10.244.2.3 TOS=0x10 SPORT=41999 DPORT=8080 ACK
",
        );
        ev.extend(events(
            "node-1",
            "\
PACKET: 2 aa IN=cni0 SRC=10.244.1.2 DST=10.96.0.20 TOS=0x10 SPORT=41999 DPORT=80 SYN
 TRACE: 2 aa raw:PREROUTING:rule:0x9:CONTINUE  -4 -t raw -A PREROUTING -p tcp -m tcp --sport 41999 -j TRACE
 TRACE: 2 aa raw:PREROUTING:policy:ACCEPT
 TRACE: 2 aa nat:PREROUTING:rule:0x3:JUMP:KUBE-SERVICES  -4 -t nat -A PREROUTING -j KUBE-SERVICES
 TRACE: 2 aa nat:KUBE-SEP-X:rule:0x4:ACCEPT  -4 -t nat -A KUBE-SEP-X -p tcp -m tcp -j DNAT --to-destination 10.244.2.3:8080
PACKET: 2 ab IN=cni0 OUT=vxlan.1 SRC=10.244.1.2 DST=10.244.2.3 TOS=0x10 SPORT=41999 DPORT=8080 SYN
 TRACE: 2 ab filter:FORWARD:policy:ACCEPT
",
        ));
        let text = tell(
            &ctx(),
            "trace x/a -> svc/y/web:80/TCP",
            &ev,
            "rejected",
            "deny: ...",
        );
        assert!(text.contains("1. node-1: TCP SYN 10.244.1.2:41999 -> 10.96.0.20:80 (x/a -> svc y/web), in on cni0"), "{text}");
        assert!(!text.contains("-j TRACE"), "{text}");
        assert!(!text.contains("raw    PREROUTING"), "{text}");
        assert!(text.contains("jump KUBE-SERVICES"), "{text}");
        assert!(
            text.contains("filter FORWARD"),
            "the steps after the id changed: {text}"
        );
        assert!(
            text.contains(
                "destination rewritten (DNAT): 10.96.0.20:80 (svc y/web) -> 10.244.2.3:8080 (y/b)"
            ),
            "{text}"
        );
        assert!(text.contains("encapsulated in VXLAN (VNI 1), outer UDP 192.168.200.11 -> 192.168.200.12 (node-2) port 4789"), "{text}");
        assert!(text.contains("2. node-2: TCP SYN"), "{text}");
        assert!(text.contains("rejected here"), "{text}");
        assert!(
            text.contains("3. node-2: ICMP destination unreachable"),
            "{text}"
        );
        // The ACK is not part of the story.
        assert!(!text.contains("4. "), "{text}");
        assert!(
            text.ends_with("measured: rejected\noracle:   deny: ...\n"),
            "{text}"
        );
    }

    #[test]
    fn the_cluster_wide_policy_rule_that_matched_is_named_once() {
        let ev = events(
            "node-1",
            r#"PACKET: 2 aa IN=cni0 SRC=10.244.2.3 DST=10.244.1.2 TOS=0x10 SPORT=41999 DPORT=80 SYN
 TRACE: 2 aa filter:KUBE-POD-FW-X:rule:0x5:JUMP:KUBE-CNP-A  -4 -t filter -A KUBE-POD-FW-X -d 10.244.1.2/32 -m comment --comment "Admin: cnp/a priority 10 ingress" -m mark --mark 0x0/0x50000 -j KUBE-CNP-A
 TRACE: 2 aa filter:KUBE-CNP-A:rule:0x6:GOTO:KUBE-CNP-ACCEPT  -4 -t filter -A KUBE-CNP-A -m comment --comment "Admin: cnp/a priority 10 ingress rule \"accept-y\" from[0] -> Accept" -m set --match-set KUBE-SRC-Y src -g KUBE-CNP-ACCEPT
 TRACE: 2 aa filter:KUBE-CNP-ACCEPT:rule:0x2:CONTINUE  -4 -t filter -A KUBE-CNP-ACCEPT -m comment --comment "cluster-wide policy Accept: mark, back to the pod chain" -j MARK --set-xmark 0x10000/0x10000
PACKET: 2 ab IN=cni0 OUT=cni0 SRC=10.244.2.3 DST=10.244.1.2 TOS=0x10 SPORT=41999 DPORT=80 SYN
"#,
        );
        let text = tell(&ctx(), "trace", &ev, "allowed", "allow");
        let line = r#"=> cluster-wide policy rule matched: Admin: cnp/a priority 10 ingress rule \"accept-y\" from[0] -> Accept"#;
        assert_eq!(text.matches(line).count(), 1, "{text}");
        // The jump into the chain is not a rule of the policy.
        assert!(
            !text.contains("matched: Admin: cnp/a priority 10 ingress\n"),
            "{text}"
        );
        // Nor is the chain an Accept goes to.
        assert!(
            !text.contains("matched: cluster-wide policy Accept"),
            "{text}"
        );
    }

    #[test]
    fn a_node_port_path_is_told_in_the_order_the_packet_went() {
        let mut c = ctx();
        c.names
            .insert("172.17.0.10".parse().unwrap(), "host/laptop".into());
        c.path = vec!["router".into(), "node-1".into(), "node-2".into()];
        // Read in no useful order: node-1 (the backend's node) first, the router last.
        let mut ev = events(
            "node-1",
            "\
PACKET: 2 n1 IN=eth0 SRC=192.168.200.12 DST=10.244.1.3 TOS=0x10 SPORT=5555 DPORT=8080 SYN
PACKET: 2 n1r IN=cni0 OUT=eth0 SRC=10.244.1.3 DST=192.168.200.12 TOS=0x0 SPORT=8080 DPORT=5555 SYN ACK
",
        );
        ev.extend(events(
            "node-2",
            "\
PACKET: 2 n2 IN=eth0 SRC=172.17.0.10 DST=192.168.200.12 TOS=0x10 SPORT=31337 DPORT=30000 SYN
 TRACE: 2 n2 nat:KUBE-SEP-A:rule:0x9:ACCEPT  -4 -t nat -A KUBE-SEP-A -p tcp -m tcp -j DNAT --to-destination 10.244.1.3:8080
PACKET: 2 n2b IN=eth0 OUT=eth0 SRC=172.17.0.10 DST=10.244.1.3 TOS=0x10 SPORT=31337 DPORT=8080 SYN
 TRACE: 2 n2b nat:KUBE-POSTROUTING:rule:0x3:ACCEPT  -4 -t nat -A KUBE-POSTROUTING -j MASQUERADE --random-fully
PACKET: 2 n2r IN=eth0 SRC=10.244.1.3 DST=192.168.200.12 TOS=0x0 SPORT=8080 DPORT=5555 SYN ACK
PACKET: 2 n2r IN=eth0 OUT=eth0 SRC=10.244.1.3 DST=172.17.0.10 TOS=0x0 SPORT=8080 DPORT=31337 SYN ACK
",
        ));
        ev.extend(events(
            "router",
            "\
PACKET: 2 r1 IN=h1 SRC=172.17.0.10 DST=192.168.200.12 TOS=0x10 SPORT=31337 DPORT=30000 SYN
PACKET: 2 r2 IN=eth0 SRC=192.168.200.12 DST=172.17.0.10 TOS=0x0 SPORT=30000 DPORT=31337 SYN ACK
",
        ));
        let text = tell(&c, "t", &ev, "allowed", "allow");
        let order: Vec<&str> = text
            .lines()
            .filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_digit()))
            .map(|l| l.split(':').next().unwrap())
            .collect();
        assert_eq!(
            order,
            [
                "1. router",
                "2. node-2",
                "3. node-1",
                "4. node-1",
                "5. node-2",
                "6. router"
            ],
            "{text}"
        );
        assert!(text.contains("masquerade, nat KUBE-POSTROUTING"), "{text}");
        assert!(text.contains("with a random source port"), "{text}");
        assert!(text.contains("rewritten back by conntrack"), "{text}");
        assert!(
            text.contains("over the underlay to node-2"),
            "the SYN-ACK leaves node-1 for node-2: {text}"
        );
        assert!(
            text.contains("3. node-1: TCP SYN 192.168.200.12:5555 -> 10.244.1.3:8080, in on eth0"),
            "{text}"
        );
    }

    #[test]
    fn nothing_seen_is_said() {
        let text = tell(&ctx(), "t", &vec![], "dropped", "allow");
        assert!(text.contains("no traced packet was seen"), "{text}");
    }
}
