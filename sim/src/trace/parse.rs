//! Reading the kernel's packet trace as `xtables-monitor --trace` prints it (the nftables
//! trace events of rules marked with iptables' `TRACE` target). Each packet seen by a
//! traced hook gives a `PACKET:` line (interfaces, addresses, ports, TCP flags) followed
//! by `TRACE:` lines, one per rule or chain policy that decided something:
//!
//! ```text
//! PACKET: 2 16141401 IN=vb MACSRC=.. SRC=10.9.0.1 DST=10.9.0.2 LEN=60 .. SPORT=41999 DPORT=80 SYN
//!  TRACE: 2 16141401 nat:PREROUTING:rule:0x3:JUMP:KSVC  -4 -t nat -A PREROUTING -j KSVC
//!  TRACE: 2 16141401 nat:KSVC:rule:0x4:ACCEPT  -4 -t nat -A KSVC -d 10.9.0.2/32 .. -j DNAT ..
//!  TRACE: 2 16141401 filter:FW:rule:0x5:0xfffffffb  -4 -t filter -A FW -j RETURN
//!  TRACE: 2 16141401 filter:INPUT:policy:ACCEPT
//! ```
//!
//! The format was read off iptables 1.8.9 (nf_tables) on this machine; a line this parser
//! does not know is kept as [`Line::Other`] rather than dropped, so nothing the kernel
//! said is lost from a story.

use std::net::Ipv4Addr;

/// One packet as a traced hook saw it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Packet {
    /// The trace id (shared by the events of one packet at one hook, and sometimes
    /// reused by later packets of the flow).
    pub id: String,
    pub in_dev: Option<String>,
    pub out_dev: Option<String>,
    pub src: Option<Ipv4Addr>,
    pub dst: Option<Ipv4Addr>,
    /// `tcp`, `udp`, `icmp`, `sctp` when the line names it (TCP and UDP are told by
    /// their ports; ICMP by `TYPE=`).
    pub proto: Option<String>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// TCP flags as printed (`SYN`, `SYN ACK`, `RST ACK`, ...), or the ICMP type/code.
    pub flags: String,
    /// The IP TOS byte.
    pub tos: Option<u8>,
}

/// What a traced rule or chain decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Continue,
    Return,
    Jump(String),
    Goto(String),
    /// Anything else, as printed.
    Other(String),
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Accept => f.write_str("ACCEPT"),
            Verdict::Drop => f.write_str("DROP"),
            Verdict::Continue => f.write_str("continue"),
            Verdict::Return => f.write_str("RETURN"),
            Verdict::Jump(c) => write!(f, "jump {c}"),
            Verdict::Goto(c) => write!(f, "goto {c}"),
            Verdict::Other(s) => f.write_str(s),
        }
    }
}

/// One `TRACE:` line: a rule (with its text) or a chain's policy that decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub id: String,
    pub table: String,
    pub chain: String,
    /// `None` when the chain's policy decided.
    pub rule: Option<String>,
    pub verdict: Verdict,
}

/// One line of `xtables-monitor --trace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Packet(Packet),
    Step(Step),
    Other(String),
}

/// Parses the whole output, line by line (blank lines skipped).
pub fn parse(text: &str) -> Vec<Line> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_line)
        .collect()
}

/// Parses one line; unknown shapes become [`Line::Other`].
pub fn parse_line(line: &str) -> Line {
    let t = line.trim();
    if let Some(rest) = t.strip_prefix("PACKET:") {
        if let Some(p) = parse_packet(rest) {
            return Line::Packet(p);
        }
    } else if let Some(rest) = t.strip_prefix("TRACE:")
        && let Some(s) = parse_step(rest)
    {
        return Line::Step(s);
    }
    Line::Other(t.to_string())
}

fn parse_packet(rest: &str) -> Option<Packet> {
    let mut words = rest.split_whitespace();
    let _family = words.next()?;
    let mut p = Packet {
        id: words.next()?.to_string(),
        ..Packet::default()
    };
    let mut flags = Vec::new();
    for w in words {
        match w.split_once('=') {
            Some(("IN", v)) => p.in_dev = Some(v.to_string()),
            Some(("OUT", v)) => p.out_dev = Some(v.to_string()),
            Some(("SRC", v)) => p.src = v.parse().ok(),
            Some(("DST", v)) => p.dst = v.parse().ok(),
            Some(("SPORT", v)) => p.sport = v.parse().ok(),
            Some(("DPORT", v)) => p.dport = v.parse().ok(),
            Some(("PROTO", v)) => p.proto = Some(v.to_ascii_lowercase()),
            Some(("TOS", v)) => {
                p.tos = u8::from_str_radix(v.trim_start_matches("0x"), 16).ok();
            }
            Some(("TYPE", v)) => {
                p.proto = Some("icmp".into());
                flags.push(format!("type {v}"));
            }
            Some(("CODE", v)) => flags.push(format!("code {v}")),
            Some(_) => {}
            None if matches!(w, "SYN" | "ACK" | "FIN" | "RST" | "PSH" | "URG") => {
                flags.push(w.to_string())
            }
            None => {}
        }
    }
    if p.proto.is_none() {
        p.proto = Some(
            match (p.sport, flags.is_empty()) {
                (Some(_), true) => "udp",
                (Some(_), false) => "tcp",
                // xtables-monitor 1.8.9 prints no ICMP fields at all (seen here: a REJECT's
                // admin-prohibited error is `OUT=vb SRC=.. DST=.. LEN=57 TOS=0xc0 TTL=64 ID=..`);
                // the trace rules mark only TCP/UDP by port and ICMP destination-unreachable,
                // so a marked packet without ports is such an ICMP error.
                (None, _) => {
                    flags.push("destination unreachable".into());
                    "icmp"
                }
            }
            .into(),
        );
    }
    p.flags = flags.join(" ");
    Some(p)
}

fn parse_step(rest: &str) -> Option<Step> {
    let rest = rest.trim_start();
    let mut it = rest.splitn(3, char::is_whitespace);
    let _family = it.next()?;
    let id = it.next()?.to_string();
    let tail = it.next()?.trim_start();
    // `table:chain:kind:...` then, for rules, two spaces and the rule's text.
    let (head, text) = match tail.split_once("  ") {
        Some((h, t)) => (h.trim(), Some(t.trim())),
        None => (tail.trim(), None),
    };
    let parts: Vec<&str> = head.split(':').collect();
    let (table, chain, kind) = (parts.first()?, parts.get(1)?, parts.get(2)?);
    let (rule, verdict) = match *kind {
        "policy" => (None, verdict_of(&parts[3..])),
        // `rule:HANDLE:VERDICT[:TARGET]`
        "rule" => (
            Some(text.unwrap_or_default().to_string()),
            verdict_of(parts.get(4..).unwrap_or_default()),
        ),
        "return" => (None, Verdict::Return),
        _ => return None,
    };
    Some(Step {
        id,
        table: table.to_string(),
        chain: chain.to_string(),
        rule: rule.map(strip_rule_prefix),
        verdict,
    })
}

/// `-4 -t nat -A KSVC -d ...` into `-A KSVC -d ...` (the table is shown apart).
fn strip_rule_prefix(rule: String) -> String {
    let r = rule.trim_start_matches("-4 ").trim_start();
    match r.strip_prefix("-t ") {
        Some(after) => after
            .split_once(' ')
            .map_or(after.to_string(), |(_, x)| x.to_string()),
        None => r.to_string(),
    }
}

/// The verdict words after `policy:` or `rule:HANDLE:`. nftables' internal verdicts are
/// printed as numbers: NFT_CONTINUE -1, NFT_BREAK -2, NFT_JUMP -3, NFT_GOTO -4,
/// NFT_RETURN -5 (as u32).
fn verdict_of(parts: &[&str]) -> Verdict {
    match parts {
        ["ACCEPT", ..] => Verdict::Accept,
        ["DROP", ..] => Verdict::Drop,
        ["CONTINUE", ..] | ["0xffffffff", ..] => Verdict::Continue,
        ["RETURN", ..] | ["0xfffffffb", ..] => Verdict::Return,
        ["JUMP", target, ..] => Verdict::Jump(target.to_string()),
        ["GOTO", target, ..] => Verdict::Goto(target.to_string()),
        other => Verdict::Other(other.join(":")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured on this machine (iptables 1.8.9 nf_tables): a SYN DNATed by a user chain,
    /// then filtered through a chain that returns.
    const SAMPLE: &str = "\
PACKET: 2 16141401 IN=vb MACSRC=fa:21:36:fb:c3:99 MACDST=c2:d6:26:dc:48:e3 MACPROTO=0800 SRC=10.9.0.1 DST=10.9.0.2 LEN=60 TOS=0x0 TTL=64 ID=3942 DF SPORT=41999 DPORT=80 SYN 
 TRACE: 2 16141401 raw:PREROUTING:rule:0x2:CONTINUE  -4 -t raw -A PREROUTING -p tcp -m tcp --sport 41999 -j TRACE
 TRACE: 2 16141401 raw:PREROUTING:policy:ACCEPT 
 TRACE: 2 16141401 nat:PREROUTING:rule:0x3:JUMP:KSVC  -4 -t nat -A PREROUTING -j KSVC
 TRACE: 2 16141401 nat:KSVC:rule:0x4:ACCEPT  -4 -t nat -A KSVC -d 10.9.0.2/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.9.0.2:81
 TRACE: 2 16141401 filter:FW:rule:0x5:0xfffffffb  -4 -t filter -A FW -j RETURN
PACKET: 2 bbf25f70 OUT=vb SRC=10.9.0.2 DST=10.9.0.1 LEN=60 TOS=0x0 TTL=64 ID=0 DF SPORT=81 DPORT=41999 SYN ACK 
something new
";

    #[test]
    fn packets_rules_policies_and_unknown_lines() {
        let lines = parse(SAMPLE);
        assert_eq!(lines.len(), 8);
        let Line::Packet(p) = &lines[0] else {
            panic!("{:?}", lines[0])
        };
        assert_eq!(p.id, "16141401");
        assert_eq!(p.in_dev.as_deref(), Some("vb"));
        assert_eq!(p.src, Some(Ipv4Addr::new(10, 9, 0, 1)));
        assert_eq!((p.sport, p.dport), (Some(41999), Some(80)));
        assert_eq!(p.proto.as_deref(), Some("tcp"));
        assert_eq!(p.flags, "SYN");
        assert_eq!(p.tos, Some(0));
        let Line::Step(s) = &lines[1] else { panic!() };
        assert_eq!((s.table.as_str(), s.chain.as_str()), ("raw", "PREROUTING"));
        assert_eq!(s.verdict, Verdict::Continue);
        assert_eq!(
            s.rule.as_deref(),
            Some("-A PREROUTING -p tcp -m tcp --sport 41999 -j TRACE")
        );
        let Line::Step(s) = &lines[2] else { panic!() };
        assert_eq!((s.rule.as_deref(), &s.verdict), (None, &Verdict::Accept));
        let Line::Step(s) = &lines[3] else { panic!() };
        assert_eq!(s.verdict, Verdict::Jump("KSVC".into()));
        let Line::Step(s) = &lines[5] else { panic!() };
        assert_eq!(s.verdict, Verdict::Return);
        let Line::Packet(p) = &lines[6] else { panic!() };
        assert_eq!(p.out_dev.as_deref(), Some("vb"));
        assert_eq!(p.flags, "SYN ACK");
        assert_eq!(lines[7], Line::Other("something new".into()));
    }

    #[test]
    fn icmp_and_udp_packets() {
        // As printed here for a REJECT's ICMP error: no protocol, no ports.
        let Line::Packet(p) = parse_line(
            "PACKET: 2 ec217b93 OUT=vb SRC=10.9.0.2 DST=10.9.0.1 LEN=57 TOS=0xc0 TTL=64 ID=9933 ",
        ) else {
            panic!()
        };
        assert_eq!(p.proto.as_deref(), Some("icmp"));
        assert_eq!(p.flags, "destination unreachable");
        assert_eq!(p.tos, Some(0xc0));
        let Line::Packet(p) = parse_line(
            "PACKET: 2 1 IN=cni0 SRC=10.244.2.1 DST=10.244.1.2 LEN=88 PROTO=ICMP TYPE=3 CODE=13",
        ) else {
            panic!()
        };
        assert_eq!(p.proto.as_deref(), Some("icmp"));
        assert_eq!(p.flags, "type 3 code 13");
        let Line::Packet(p) = parse_line(
            "PACKET: 2 2 IN=cni0 SRC=10.244.1.2 DST=10.96.0.10 LEN=33 SPORT=40000 DPORT=53",
        ) else {
            panic!()
        };
        assert_eq!(p.proto.as_deref(), Some("udp"));
    }
}
