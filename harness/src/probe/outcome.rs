//! How raw observations become outcomes: the reply line every server sends, and what an
//! ICMP error (as the kernel's `IP_RECVERR` error queue reports it) says about who stopped
//! a probe. Pure functions, so the rules are unit-tested without root.
//!
//! The rules for ICMP destination-unreachable errors:
//! - admin-prohibited (codes 9, 10, 13), from anyone: **rejected** (a filter said no; our
//!   policy enforcer uses `REJECT --reject-with icmp-admin-prohibited`, which the kernel
//!   turns into `EHOSTUNREACH` on the socket);
//! - port or protocol unreachable (codes 3, 2) sent by the destination itself:
//!   **refused** (delivered, nothing listening); sent by anyone else (a router or the node
//!   answering for the pod, which is what a plain `REJECT` does): **rejected**;
//! - anything else (net/host unreachable, fragmentation needed, time exceeded): **error**,
//!   because that is the network failing to deliver, not a policy verdict.

use std::net::Ipv4Addr;
use std::time::Duration;

use sim::matrix::{Measurement, Outcome};

/// The line a server answers with: `"<ns>/<name> <client-ip>\n"`.
pub fn reply_line(server: &str, client: Ipv4Addr) -> String {
    format!("{server} {client}\n")
}

/// A parsed reply line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub answered_by: String,
    pub seen_source: Ipv4Addr,
}

/// Parses a reply line (the trailing newline is optional).
pub fn parse_reply(bytes: &[u8]) -> Result<Reply, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| format!("reply is not text: {bytes:?}"))?;
    let line = text.strip_suffix('\n').unwrap_or(text);
    let (who, ip) = line
        .split_once(' ')
        .ok_or_else(|| format!("reply {line:?} is not \"ns/name client-ip\""))?;
    if who
        .split_once('/')
        .is_none_or(|(ns, n)| ns.is_empty() || n.is_empty())
    {
        return Err(format!("reply {line:?} does not name a pod as ns/name"));
    }
    let seen_source = ip
        .parse()
        .map_err(|_| format!("reply {line:?} does not end in an IPv4 address"))?;
    Ok(Reply {
        answered_by: who.to_string(),
        seen_source,
    })
}

/// A measurement with no answer attached.
pub fn measurement(outcome: Outcome, detail: impl Into<String>, elapsed: Duration) -> Measurement {
    Measurement {
        outcome,
        answered_by: None,
        seen_source: None,
        detail: detail.into(),
        elapsed_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
    }
}

/// The measurement for a reply that came back: allowed when one of the expected servers
/// (`expect`; empty = anyone) answered; an error when the reply is unreadable or another
/// server answered, since that is the cluster misrouting rather than a policy verdict.
/// A probe to a pod expects that pod; a probe to a Service's cluster IP expects any of
/// the Service's endpoints.
pub fn answered(bytes: &[u8], expect: &[String], elapsed: Duration) -> Measurement {
    match parse_reply(bytes) {
        Err(e) => measurement(Outcome::Error, e, elapsed),
        Ok(reply) => {
            let mut m = if expect.is_empty() || expect.contains(&reply.answered_by) {
                measurement(Outcome::Allowed, "", elapsed)
            } else {
                measurement(
                    Outcome::Error,
                    format!(
                        "answered by {}, expected {}",
                        reply.answered_by,
                        expected_words(expect)
                    ),
                    elapsed,
                )
            };
            m.answered_by = Some(reply.answered_by);
            m.seen_source = Some(reply.seen_source);
            m
        }
    }
}

/// `x/a`, or `one of x/a, x/b` for several.
pub fn expected_words(expect: &[String]) -> String {
    match expect {
        [one] => one.clone(),
        many => format!("one of {}", many.join(", ")),
    }
}

/// `SO_EE_ORIGIN_ICMP`: the error-queue entry came from an ICMP message.
pub const ORIGIN_ICMP: u8 = 2;

/// One entry of a socket's error queue (`struct sock_extended_err` plus the offender).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedError {
    /// `ee_errno`: the errno the kernel maps the error to.
    pub errno: i32,
    /// `ee_origin` (2 = ICMP, 1 = local).
    pub origin: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// Who sent the ICMP message (`SO_EE_OFFENDER`).
    pub offender: Option<Ipv4Addr>,
}

const DEST_UNREACH: u8 = 3;
const TIME_EXCEEDED: u8 = 11;

/// What an error-queue entry means for a probe to `dst`: the outcome and the words for
/// `detail`.
pub fn classify(e: &QueuedError, dst: Ipv4Addr) -> (Outcome, String) {
    let from = match e.offender {
        Some(ip) if ip == dst => format!("{ip} (the destination)"),
        Some(ip) => ip.to_string(),
        None => "an unknown sender".to_string(),
    };
    if e.origin != ORIGIN_ICMP {
        let err = nix::errno::Errno::from_raw(e.errno);
        return (
            Outcome::Error,
            format!("local error {err} (origin {})", e.origin),
        );
    }
    let by_destination = e.offender.is_none_or(|ip| ip == dst);
    match (e.icmp_type, e.icmp_code) {
        (DEST_UNREACH, 9 | 10 | 13) => (
            Outcome::Rejected,
            format!(
                "ICMP administratively prohibited (code {}) from {from}",
                e.icmp_code
            ),
        ),
        (DEST_UNREACH, code @ (2 | 3)) => {
            let what = if code == 3 { "port" } else { "protocol" };
            if by_destination {
                (
                    Outcome::Refused,
                    format!("ICMP {what} unreachable from {from}"),
                )
            } else {
                (
                    Outcome::Rejected,
                    format!("ICMP {what} unreachable from {from}, on the destination's behalf"),
                )
            }
        }
        (DEST_UNREACH, code) => (
            Outcome::Error,
            format!(
                "ICMP destination unreachable (code {code}: {}) from {from}: the network could not deliver",
                unreach_name(code)
            ),
        ),
        (TIME_EXCEEDED, _) => (
            Outcome::Error,
            format!("ICMP time exceeded from {from}: a routing loop?"),
        ),
        (t, c) => (
            Outcome::Error,
            format!("unexpected ICMP type {t} code {c} from {from}"),
        ),
    }
}

fn unreach_name(code: u8) -> &'static str {
    match code {
        0 => "net unreachable",
        1 => "host unreachable",
        4 => "fragmentation needed",
        5 => "source route failed",
        6 => "network unknown",
        7 => "host unknown",
        11 | 12 => "unreachable for this type of service",
        14 => "host precedence violation",
        15 => "precedence cutoff",
        _ => "unknown code",
    }
}

/// The measurement for an error the socket reported without an ICMP error in its queue
/// (a TCP RST, or something local such as "no route").
pub fn from_errno(errno: nix::errno::Errno, elapsed: Duration) -> Measurement {
    use nix::errno::Errno;
    match errno {
        Errno::ECONNREFUSED => measurement(Outcome::Refused, "connection refused", elapsed),
        other => measurement(
            Outcome::Error,
            format!("{} ({other:?})", other.desc()),
            elapsed,
        ),
    }
}

/// The measurement for an error-queue entry. The detail also names the errno the socket
/// got (admin-prohibited shows as `EHOSTUNREACH`, port unreachable as `ECONNREFUSED`).
pub fn from_queued(e: &QueuedError, dst: Ipv4Addr, elapsed: Duration) -> Measurement {
    let (outcome, mut detail) = classify(e, dst);
    if e.origin == ORIGIN_ICMP && e.errno != 0 {
        detail += &format!(" (socket error {:?})", nix::errno::Errno::from_raw(e.errno));
    }
    measurement(outcome, detail, elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 12);
    const NODE: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);

    fn icmp(code: u8, offender: Ipv4Addr) -> QueuedError {
        QueuedError {
            errno: 113,
            origin: ORIGIN_ICMP,
            icmp_type: 3,
            icmp_code: code,
            offender: Some(offender),
        }
    }

    #[test]
    fn reply_line_round_trips() {
        let line = reply_line("x/a", POD);
        assert_eq!(line, "x/a 10.244.1.12\n");
        assert_eq!(
            parse_reply(line.as_bytes()).unwrap(),
            Reply {
                answered_by: "x/a".into(),
                seen_source: POD
            }
        );
        assert!(parse_reply(b"x/a").is_err());
        assert!(parse_reply(b"xa 10.0.0.1\n").is_err());
        assert!(parse_reply(b"x/a not-an-ip\n").is_err());
        assert!(parse_reply(b"\xff\xfe").is_err());
    }

    #[test]
    fn the_right_pod_answering_is_allowed_and_another_is_an_error() {
        let line = reply_line("x/a", POD);
        let ok = answered(line.as_bytes(), &["x/a".into()], Duration::from_micros(90));
        assert_eq!(ok.outcome, Outcome::Allowed);
        assert_eq!(ok.seen_source, Some(POD));
        assert_eq!(ok.elapsed_us, 90);
        let any = answered(line.as_bytes(), &[], Duration::ZERO);
        assert_eq!(any.outcome, Outcome::Allowed);
        let wrong = answered(line.as_bytes(), &["y/b".into()], Duration::ZERO);
        assert_eq!(wrong.outcome, Outcome::Error);
        assert_eq!(wrong.answered_by.as_deref(), Some("x/a"));
        assert!(wrong.detail.contains("expected y/b"), "{}", wrong.detail);
        // A Service: any of its endpoints may answer, nobody else.
        let backends = ["x/b".to_string(), "x/a".to_string()];
        let svc = answered(line.as_bytes(), &backends, Duration::ZERO);
        assert_eq!(svc.outcome, Outcome::Allowed);
        let stray = answered(line.as_bytes(), &backends[..1], Duration::ZERO);
        assert_eq!(stray.outcome, Outcome::Error);
        let two = answered(
            line.as_bytes(),
            &["y/a".into(), "y/b".into()],
            Duration::ZERO,
        );
        assert!(
            two.detail.contains("expected one of y/a, y/b"),
            "{}",
            two.detail
        );
    }

    #[test]
    fn admin_prohibited_is_rejected() {
        for code in [9, 10, 13] {
            assert_eq!(classify(&icmp(code, NODE), POD).0, Outcome::Rejected);
        }
    }

    #[test]
    fn port_unreachable_from_the_pod_is_refused_from_a_router_rejected() {
        assert_eq!(classify(&icmp(3, POD), POD).0, Outcome::Refused);
        assert_eq!(classify(&icmp(2, POD), POD).0, Outcome::Refused);
        let (o, d) = classify(&icmp(3, NODE), POD);
        assert_eq!(o, Outcome::Rejected);
        assert!(d.contains("10.244.1.1"), "{d}");
    }

    #[test]
    fn delivery_failures_are_errors_not_verdicts() {
        for code in [0, 1, 4] {
            assert_eq!(classify(&icmp(code, NODE), POD).0, Outcome::Error);
        }
        let mut ttl = icmp(0, NODE);
        ttl.icmp_type = 11;
        assert_eq!(classify(&ttl, POD).0, Outcome::Error);
        let mut local = icmp(3, POD);
        local.origin = 1;
        assert_eq!(classify(&local, POD).0, Outcome::Error);
    }

    #[test]
    fn rst_is_refused_other_errnos_are_errors() {
        use nix::errno::Errno;
        let z = Duration::ZERO;
        assert_eq!(from_errno(Errno::ECONNREFUSED, z).outcome, Outcome::Refused);
        assert_eq!(from_errno(Errno::ENETUNREACH, z).outcome, Outcome::Error);
        assert_eq!(from_errno(Errno::EHOSTUNREACH, z).outcome, Outcome::Error);
    }
}
