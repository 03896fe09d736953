//! SCTP probes without kernel SCTP (this kernel has `CONFIG_IP_SCTP` off, so there are no
//! SCTP sockets): crafted packets on raw `IPPROTO_SCTP` sockets.
//!
//! - The client sends an INIT from a raw socket created in its namespace and connected to
//!   the destination (so it only hears that address), with `IP_RECVERR` so ICMP errors
//!   about its packets land in its error queue with their sender.
//! - Each pod runs a user-space responder on a raw socket in its namespace (which also
//!   stops the kernel from answering "protocol unreachable"): an INIT to a served port
//!   gets an INIT-ACK whose state cookie carries the pod's reply line, an INIT to any other
//!   port gets an ABORT, as a real SCTP stack answers an out-of-the-blue INIT. Both carry
//!   the INIT's initiate tag as verification tag, so conntrack in the nodes accepts them
//!   as replies (it checks the tag and the CRC32c).
//! - INIT-ACK with the expected pod's line: allowed; ABORT: refused; an ICMP error:
//!   classified like TCP and UDP; nothing: dropped.
//!
//! Packets are laid out by hand (pnet 0.35 has no SCTP packet type); the IPv4 header that
//! raw sockets deliver is read with pnet's `Ipv4Packet`.

use std::collections::BTreeSet;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, recv, recvfrom, send,
    sendto,
};
use pnet_packet::Packet;
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv4::Ipv4Packet;
use sim::matrix::{Measurement, Outcome};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use super::outcome::{self, QueuedError, measurement, reply_line};
use super::{ProbeTask, sock};
use crate::netns::Netns;

/// SCTP's checksum (RFC 9260 appendix B), stored little-endian as Linux does.
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

const COMMON_HEADER: usize = 12;
const CHUNK_INIT: u8 = 1;
const CHUNK_INIT_ACK: u8 = 2;
const CHUNK_ABORT: u8 = 6;
/// ABORT flag: the verification tag is the sender's own ("reflected").
const FLAG_T: u8 = 1;
const PARAM_STATE_COOKIE: u16 = 7;
/// INIT and INIT-ACK: initiate tag, a_rwnd, outbound and inbound streams, initial TSN.
const INIT_FIXED: usize = 16;

/// The common header of an SCTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    src_port: u16,
    dst_port: u16,
    vtag: u32,
}

/// The first chunk of a packet (our packets carry one).
#[derive(Debug, PartialEq, Eq)]
struct Chunk<'a> {
    kind: u8,
    flags: u8,
    /// The chunk's value, after its 4-byte header, without padding.
    value: &'a [u8],
}

fn pad4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// A one-chunk packet with its checksum.
fn packet(h: Header, kind: u8, flags: u8, value: &[u8]) -> Vec<u8> {
    let chunk_len = 4 + value.len();
    let mut p = Vec::with_capacity(COMMON_HEADER + pad4(chunk_len));
    p.extend_from_slice(&h.src_port.to_be_bytes());
    p.extend_from_slice(&h.dst_port.to_be_bytes());
    p.extend_from_slice(&h.vtag.to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    p.push(kind);
    p.push(flags);
    p.extend_from_slice(&(chunk_len as u16).to_be_bytes());
    p.extend_from_slice(value);
    p.resize(COMMON_HEADER + pad4(chunk_len), 0);
    let crc = CRC32C.checksum(&p);
    p[8..12].copy_from_slice(&crc.to_le_bytes());
    p
}

/// The fixed part of INIT and INIT-ACK.
fn init_fixed(tag: u32, tsn: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(INIT_FIXED);
    v.extend_from_slice(&tag.to_be_bytes());
    v.extend_from_slice(&65535u32.to_be_bytes()); // a_rwnd
    v.extend_from_slice(&10u16.to_be_bytes()); // outbound streams
    v.extend_from_slice(&10u16.to_be_bytes()); // max inbound streams
    v.extend_from_slice(&tsn.to_be_bytes());
    v
}

/// An INIT (verification tag 0, as RFC 9260 requires).
fn init(src_port: u16, dst_port: u16, tag: u32) -> Vec<u8> {
    let h = Header {
        src_port,
        dst_port,
        vtag: 0,
    };
    packet(h, CHUNK_INIT, 0, &init_fixed(tag, tag))
}

/// An INIT-ACK answering an INIT with `peer_tag`, carrying `cookie` as its state cookie.
fn init_ack(src_port: u16, dst_port: u16, peer_tag: u32, own_tag: u32, cookie: &[u8]) -> Vec<u8> {
    let h = Header {
        src_port,
        dst_port,
        vtag: peer_tag,
    };
    let mut v = init_fixed(own_tag, own_tag);
    v.extend_from_slice(&PARAM_STATE_COOKIE.to_be_bytes());
    v.extend_from_slice(&((4 + cookie.len()) as u16).to_be_bytes());
    v.extend_from_slice(cookie);
    packet(h, CHUNK_INIT_ACK, 0, &v)
}

/// The ABORT an SCTP stack sends for an INIT to a port nobody listens on.
fn abort(src_port: u16, dst_port: u16, peer_tag: u32) -> Vec<u8> {
    let h = Header {
        src_port,
        dst_port,
        vtag: peer_tag,
    };
    packet(h, CHUNK_ABORT, 0, &[])
}

/// The header and first chunk of an SCTP packet whose checksum is right.
fn parse(p: &[u8]) -> Option<(Header, Chunk<'_>)> {
    if p.len() < COMMON_HEADER + 4 {
        return None;
    }
    let stored = u32::from_le_bytes(p[8..12].try_into().ok()?);
    let mut digest = CRC32C.digest();
    digest.update(&p[..8]);
    digest.update(&[0; 4]);
    digest.update(&p[12..]);
    if digest.finalize() != stored {
        return None;
    }
    let be16 = |i: usize| u16::from_be_bytes([p[i], p[i + 1]]);
    let header = Header {
        src_port: be16(0),
        dst_port: be16(2),
        vtag: u32::from_be_bytes(p[4..8].try_into().ok()?),
    };
    let len = usize::from(be16(14));
    if len < 4 || COMMON_HEADER + len > p.len() {
        return None;
    }
    let chunk = Chunk {
        kind: p[12],
        flags: p[13],
        value: &p[COMMON_HEADER + 4..COMMON_HEADER + len],
    };
    Some((header, chunk))
}

/// The state cookie of an INIT-ACK's value.
fn state_cookie(value: &[u8]) -> Option<&[u8]> {
    let mut rest = value.get(INIT_FIXED..)?;
    while rest.len() >= 4 {
        let kind = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        if len < 4 || len > rest.len() {
            return None;
        }
        if kind == PARAM_STATE_COOKIE {
            return Some(&rest[4..len]);
        }
        rest = rest.get(pad4(len)..).unwrap_or(&[]);
    }
    None
}

fn nonzero_tag() -> u32 {
    rand::random::<u32>().max(1)
}

/// A raw SCTP socket in `ns` for a pod's responder.
pub fn responder_socket(ns: &Netns) -> Result<AsyncFd<OwnedFd>> {
    let fd = ns
        .enter(|| {
            nix::sys::socket::socket(
                AddressFamily::Inet,
                SockType::Raw,
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
                SockProtocol::Sctp,
            )
        })
        .with_context(|| format!("create a raw SCTP socket in namespace {}", ns.name()))?;
    sock::register(fd).context("register the raw SCTP socket with tokio")
}

/// A pod's (or host's) SCTP responder: answers INITs to `ports` with an INIT-ACK naming
/// `name`, and INITs to other ports with an ABORT. Ignores everything else (including the
/// replies to the server's own probes, which the raw socket also sees).
pub async fn serve(sock: AsyncFd<OwnedFd>, name: String, ports: BTreeSet<u16>) {
    let mut buf = [0u8; 2048];
    loop {
        let mut ready = match sock.readable().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("server {name}: SCTP responder stopped: {e}");
                return;
            }
        };
        let got = ready
            .try_io(|s| recvfrom::<SockaddrIn>(s.as_raw_fd(), &mut buf).map_err(io::Error::from));
        match got {
            Ok(Ok((n, _))) => {
                if let Some((to, reply)) = answer(&buf[..n], &name, &ports)
                    && let Err(e) = send_to(&sock, &reply, to).await
                {
                    tracing::warn!("server {name}: SCTP reply to {to} failed: {e}");
                }
            }
            Ok(Err(e)) => {
                tracing::warn!("server {name}: SCTP receive failed: {e}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(_would_block) => {}
        }
    }
}

/// The reply to one packet a responder received (an IPv4 packet, header included).
fn answer(ip_packet: &[u8], name: &str, ports: &BTreeSet<u16>) -> Option<(Ipv4Addr, Vec<u8>)> {
    let ip = Ipv4Packet::new(ip_packet)?;
    if ip.get_next_level_protocol() != IpNextHeaderProtocols::Sctp {
        return None;
    }
    let (h, chunk) = parse(ip.payload())?;
    if chunk.kind != CHUNK_INIT || h.vtag != 0 || chunk.value.len() < INIT_FIXED {
        return None;
    }
    let peer_tag = u32::from_be_bytes(chunk.value[..4].try_into().ok()?);
    if peer_tag == 0 {
        return None;
    }
    let client = ip.get_source();
    let reply = if ports.contains(&h.dst_port) {
        let line = reply_line(name, client);
        init_ack(
            h.dst_port,
            h.src_port,
            peer_tag,
            nonzero_tag(),
            line.as_bytes(),
        )
    } else {
        abort(h.dst_port, h.src_port, peer_tag)
    };
    Some((client, reply))
}

async fn send_to(sock: &AsyncFd<OwnedFd>, p: &[u8], to: Ipv4Addr) -> io::Result<()> {
    let addr = SockaddrIn::from(SocketAddrV4::new(to, 0));
    loop {
        match sendto(sock.as_raw_fd(), p, &addr, MsgFlags::MSG_DONTWAIT) {
            Ok(_) => return Ok(()),
            Err(Errno::EAGAIN) => {
                let mut ready = sock.writable().await?;
                ready.clear_ready();
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Source ports for INITs, distinct across the probes in flight so replies and ICMP
/// errors can be matched to their probe (the ephemeral range, starting at a random spot).
fn source_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    const FIRST: u32 = 32768;
    const COUNT: u32 = 28232;
    let _ = NEXT.compare_exchange(
        u32::MAX,
        rand::random::<u32>() % COUNT,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    (FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % COUNT) as u16
}

enum Answer {
    /// An INIT-ACK; its state cookie, if it carries one.
    InitAck(Option<Vec<u8>>),
    Abort,
    Queued(QueuedError),
    /// Nothing by the deadline.
    Silence,
}

/// What the probe's INIT is known by.
#[derive(Clone, Copy)]
struct Probe {
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
    tag: u32,
}

pub async fn probe(task: &ProbeTask, deadline: Duration) -> Measurement {
    let p = Probe {
        dst: task.dst,
        src_port: source_port(),
        dst_port: task.port.port,
        tag: nonzero_tag(),
    };
    let start = Instant::now();
    // Port 0: raw sockets have no ports; connecting only filters on the address.
    let sock = match sock::connected(
        &task.client,
        SockType::Raw,
        Some(SockProtocol::Sctp),
        None,
        SocketAddrV4::new(p.dst, 0),
    ) {
        Ok(s) => s,
        Err(e) => {
            return measurement(
                Outcome::Error,
                format!(
                    "raw SCTP socket to {} in {}: {e}",
                    p.dst,
                    task.client.name()
                ),
                start.elapsed(),
            );
        }
    };
    let packet = init(p.src_port, p.dst_port, p.tag);
    if let Err(e) = send(sock.as_raw_fd(), &packet, MsgFlags::empty()) {
        return measurement(
            Outcome::Error,
            format!(
                "send an SCTP INIT to {} from {}: {}",
                p.dst,
                task.client.name(),
                e.desc()
            ),
            start.elapsed(),
        );
    }
    let answer = match tokio::time::timeout_at(start + deadline, wait_answer(&sock, p)).await {
        Ok(r) => r,
        // A last look: the answer may have arrived while this task waited for a CPU.
        Err(_) => poll_once(&sock, p).map(|a| a.unwrap_or(Answer::Silence)),
    };
    let elapsed = start.elapsed();
    match answer {
        Ok(Answer::InitAck(Some(cookie))) => {
            outcome::answered(&cookie, &task.expect_answer_from, elapsed)
        }
        Ok(Answer::InitAck(None)) => match task.expect_answer_from.as_slice() {
            [] => measurement(Outcome::Allowed, "INIT-ACK without a state cookie", elapsed),
            want => measurement(
                Outcome::Error,
                format!(
                    "INIT-ACK without a state cookie, expected {} to answer",
                    outcome::expected_words(want)
                ),
                elapsed,
            ),
        },
        Ok(Answer::Abort) => measurement(
            Outcome::Refused,
            format!("SCTP ABORT from {}", p.dst),
            elapsed,
        ),
        Ok(Answer::Queued(e)) => outcome::from_queued(&e, p.dst, elapsed),
        Ok(Answer::Silence) => measurement(
            Outcome::Dropped,
            format!("no answer within {} ms", deadline.as_millis()),
            elapsed,
        ),
        Err(e) => measurement(
            Outcome::Error,
            format!("waiting for {}: {e}", p.dst),
            elapsed,
        ),
    }
}

/// The first queued ICMP error about this probe's INIT. The socket hears about every
/// SCTP packet this namespace sent to the destination, so the INIT's ports (the first
/// bytes of the offending packet) tell ours apart.
fn matching_error(sock: &AsyncFd<OwnedFd>, p: Probe) -> Option<QueuedError> {
    while let Some((e, sent)) = sock::take_error(sock.get_ref()) {
        if sent.len() >= 4
            && u16::from_be_bytes([sent[0], sent[1]]) == p.src_port
            && u16::from_be_bytes([sent[2], sent[3]]) == p.dst_port
        {
            return Some(e);
        }
    }
    None
}

async fn wait_answer(sock: &AsyncFd<OwnedFd>, p: Probe) -> io::Result<Answer> {
    loop {
        // ERROR too: an ICMP error only raises EPOLLERR, which readers are not woken for.
        let mut ready = sock.ready(Interest::READABLE | Interest::ERROR).await?;
        if let Some(a) = poll_once(sock, p)? {
            return Ok(a);
        }
        ready.clear_ready();
    }
}

/// Our answer among what has arrived so far, without waiting. The socket also sees the
/// answers to other probes from this namespace to the same pod; those are skipped.
fn poll_once(sock: &AsyncFd<OwnedFd>, p: Probe) -> io::Result<Option<Answer>> {
    let mut buf = [0u8; 2048];
    let mut socket_errors = 0;
    loop {
        if let Some(e) = matching_error(sock, p) {
            return Ok(Some(Answer::Queued(e)));
        }
        match recv(sock.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => {
                if let Some(a) = match_reply(&buf[..n], p) {
                    return Ok(Some(a));
                }
            }
            Err(Errno::EAGAIN) => return Ok(None),
            // The socket error an ICMP message left (maybe about another probe's
            // packet); the error queue, checked above, says which.
            Err(e) => {
                socket_errors += 1;
                if socket_errors > 64 {
                    return Err(e.into());
                }
            }
        }
    }
}

/// The answer to our INIT in a packet the raw socket received (IPv4 header included).
fn match_reply(ip_packet: &[u8], p: Probe) -> Option<Answer> {
    let ip = Ipv4Packet::new(ip_packet)?;
    if ip.get_source() != p.dst || ip.get_next_level_protocol() != IpNextHeaderProtocols::Sctp {
        return None;
    }
    let (h, chunk) = parse(ip.payload())?;
    if h.src_port != p.dst_port || h.dst_port != p.src_port {
        return None;
    }
    match chunk.kind {
        CHUNK_INIT_ACK if h.vtag == p.tag => Some(Answer::InitAck(
            state_cookie(chunk.value).map(<[u8]>::to_vec),
        )),
        // With T set the tag is the sender's own, which we cannot know.
        CHUNK_ABORT if h.vtag == p.tag || chunk.flags & FLAG_T != 0 => Some(Answer::Abort),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pnet_packet::ipv4::{MutableIpv4Packet, checksum};

    const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 11);

    fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 20 + payload.len()];
        let mut ip = MutableIpv4Packet::new(&mut buf).unwrap();
        ip.set_version(4);
        ip.set_header_length(5);
        ip.set_total_length((20 + payload.len()) as u16);
        ip.set_ttl(64);
        ip.set_next_level_protocol(IpNextHeaderProtocols::Sctp);
        ip.set_source(src);
        ip.set_destination(dst);
        ip.set_payload(payload);
        let c = checksum(&ip.to_immutable());
        ip.set_checksum(c);
        buf
    }

    #[test]
    fn crc32c_is_the_iscsi_polynomial() {
        // RFC 3720 B.4: 32 bytes of zeros.
        assert_eq!(CRC32C.checksum(&[0u8; 32]), 0x8a91_36aa);
    }

    #[test]
    fn init_has_the_rfc_layout() {
        let p = init(40000, 80, 0x1234_5678);
        assert_eq!(p.len(), 32);
        assert_eq!(&p[0..4], &[0x9c, 0x40, 0, 80]);
        assert_eq!(&p[4..8], &[0; 4], "INIT carries verification tag 0");
        assert_eq!((p[12], p[14], p[15]), (CHUNK_INIT, 0, 20));
        assert_eq!(&p[16..20], &0x1234_5678u32.to_be_bytes());
        let (h, c) = parse(&p).expect("valid checksum");
        assert_eq!((h.src_port, h.dst_port, h.vtag), (40000, 80, 0));
        assert_eq!(c.value.len(), INIT_FIXED);
    }

    #[test]
    fn a_corrupted_packet_does_not_parse() {
        let mut p = init(40000, 80, 7);
        p[20] ^= 1;
        assert!(parse(&p).is_none());
    }

    #[test]
    fn served_port_gets_init_ack_with_the_pod_line() {
        let ports = BTreeSet::from([80]);
        let pkt = ipv4(CLIENT, SERVER, &init(40000, 80, 99));
        let (to, reply) = answer(&pkt, "x/b", &ports).expect("an answer");
        assert_eq!(to, CLIENT);
        let (h, c) = parse(&reply).expect("valid INIT-ACK");
        assert_eq!((h.src_port, h.dst_port, h.vtag), (80, 40000, 99));
        assert_eq!(c.kind, CHUNK_INIT_ACK);
        assert_eq!(reply.len() % 4, 0, "padded to 4 bytes");
        assert_eq!(state_cookie(c.value), Some(&b"x/b 10.244.1.10\n"[..]));
        // And the client recognises it as the answer to its INIT.
        let probe = Probe {
            dst: SERVER,
            src_port: 40000,
            dst_port: 80,
            tag: 99,
        };
        let back = ipv4(SERVER, CLIENT, &reply);
        match match_reply(&back, probe) {
            Some(Answer::InitAck(Some(cookie))) => assert_eq!(cookie, b"x/b 10.244.1.10\n"),
            _ => panic!("INIT-ACK not matched"),
        }
        // Another probe's reply (other tag, other port, other sender) is not ours.
        assert!(match_reply(&back, Probe { tag: 98, ..probe }).is_none());
        assert!(
            match_reply(
                &back,
                Probe {
                    src_port: 40001,
                    ..probe
                }
            )
            .is_none()
        );
        assert!(
            match_reply(
                &back,
                Probe {
                    dst: CLIENT,
                    ..probe
                }
            )
            .is_none()
        );
    }

    #[test]
    fn unserved_port_gets_abort() {
        let ports = BTreeSet::from([80]);
        let pkt = ipv4(CLIENT, SERVER, &init(40000, 81, 5));
        let (_, reply) = answer(&pkt, "x/b", &ports).expect("an answer");
        let (h, c) = parse(&reply).unwrap();
        assert_eq!((c.kind, c.flags, h.vtag), (CHUNK_ABORT, 0, 5));
        let probe = Probe {
            dst: SERVER,
            src_port: 40000,
            dst_port: 81,
            tag: 5,
        };
        assert!(matches!(
            match_reply(&ipv4(SERVER, CLIENT, &reply), probe),
            Some(Answer::Abort)
        ));
    }

    #[test]
    fn responders_ignore_everything_but_init() {
        let ports = BTreeSet::from([80]);
        let ack = init_ack(80, 40000, 1, 2, b"x/a 10.0.0.1\n");
        assert!(answer(&ipv4(CLIENT, SERVER, &ack), "x/b", &ports).is_none());
        assert!(answer(&ipv4(CLIENT, SERVER, &abort(80, 1, 1)), "x/b", &ports).is_none());
        assert!(answer(&[0u8; 10], "x/b", &ports).is_none());
    }

    #[test]
    fn source_ports_stay_in_the_ephemeral_range() {
        for _ in 0..70_000 {
            let p = source_port();
            assert!((32768..61000).contains(&p), "{p}");
        }
    }
}
