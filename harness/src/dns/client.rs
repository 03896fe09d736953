//! Resolving a name as a pod would: the candidates of its resolv.conf (search list,
//! ndots, [`sim::dns::resolv::ResolvConf::candidates`]) asked one after the other, each an
//! A query over UDP to the nameserver from a socket opened inside the pod's namespace.
//! So the question crosses the pod's veth, the node's kube-proxy DNAT to the DNS pod and
//! every NetworkPolicy on the way, like a real pod's query.
//!
//! A candidate answered NXDOMAIN, NOERROR without data or REFUSED (outside the cluster
//! domain) moves on to the next, as glibc's `res_search` does; records end the search;
//! no answer by the deadline, or an ICMP error, ends it with that failure.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use serde::Serialize;
use sim::dns::resolv::ResolvConf;
use tokio::net::UdpSocket;

use crate::netns::Netns;

/// How a resolution ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Answer {
    /// A candidate had A records.
    Addresses,
    /// Every candidate was NXDOMAIN, empty or refused.
    NotFound,
    /// No answer by the deadline (a policy dropped the query, say).
    Timeout,
    /// An ICMP error came back: a filter rejected the query (host/admin unreachable).
    Rejected,
    /// ICMP port unreachable: nothing listens on port 53 there.
    Refused,
    /// The harness failed (socket, malformed answer).
    Error,
}

/// What one resolution saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolution {
    /// The name as the probe wrote it.
    pub name: String,
    pub answer: Answer,
    /// The candidate that had records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found_as: Option<String>,
    /// Sorted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<Ipv4Addr>,
    /// Each candidate asked with its response code (`NXDOMAIN`, `NOERROR`, `REFUSED`),
    /// in order.
    pub asked: Vec<(String, String)>,
    /// Extra words for failures.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// From the first question to the end, in microseconds.
    pub elapsed_us: u64,
}

impl Resolution {
    /// One line: `web → web.app.svc.cluster.local. 10.96.0.20` or why not.
    pub fn summary(&self) -> String {
        match self.answer {
            Answer::Addresses => {
                let ips: Vec<String> = self.addresses.iter().map(|i| i.to_string()).collect();
                format!(
                    "{} resolved as {} to {}",
                    self.name,
                    self.found_as.as_deref().unwrap_or("?"),
                    ips.join(",")
                )
            }
            Answer::NotFound => {
                let tried: Vec<String> =
                    self.asked.iter().map(|(n, c)| format!("{n} {c}")).collect();
                format!("{} not found ({})", self.name, tried.join(", "))
            }
            _ => format!("{} not resolved: {}", self.name, self.detail),
        }
    }
}

/// Resolves `name` from inside `ns` with `conf`, each question waiting at most
/// `deadline` for its answer.
pub async fn resolve(ns: &Netns, conf: &ResolvConf, name: &str, deadline: Duration) -> Resolution {
    let start = Instant::now();
    let mut r = Resolution {
        name: name.to_string(),
        answer: Answer::NotFound,
        found_as: None,
        addresses: vec![],
        asked: vec![],
        detail: String::new(),
        elapsed_us: 0,
    };
    let server = SocketAddr::from((conf.nameserver, 53));
    let sock = match socket(ns, server) {
        Ok(s) => s,
        Err(e) => {
            r.answer = Answer::Error;
            r.detail = e;
            return r;
        }
    };
    for (i, candidate) in conf.candidates(name).into_iter().enumerate() {
        match ask(&sock, &candidate, i as u16 + 1, deadline).await {
            Ok((code, addrs)) => {
                r.asked.push((candidate.clone(), rcode(code)));
                if !addrs.is_empty() {
                    r.answer = Answer::Addresses;
                    r.found_as = Some(candidate);
                    r.addresses = addrs;
                    break;
                }
            }
            Err((answer, detail)) => {
                r.asked.push((candidate, "-".into()));
                r.answer = answer;
                r.detail = format!("{detail} (asking {server})");
                break;
            }
        }
    }
    r.elapsed_us = start.elapsed().as_micros() as u64;
    r
}

/// A UDP socket inside `ns`, connected to the nameserver (so ICMP errors about it come
/// back as errors on receive).
fn socket(ns: &Netns, server: SocketAddr) -> Result<UdpSocket, String> {
    let std = ns
        .enter(|| {
            let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            s.connect(server)?;
            s.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(s)
        })
        .map_err(|e| format!("open a UDP socket to {server} in {}: {e}", ns.name()))?;
    UdpSocket::from_std(std).map_err(|e| format!("register the DNS client socket: {e}"))
}

type Asked = Result<(ResponseCode, Vec<Ipv4Addr>), (Answer, String)>;

/// One A question and its answer.
async fn ask(sock: &UdpSocket, candidate: &str, id: u16, deadline: Duration) -> Asked {
    let qname = Name::from_ascii(candidate)
        .map_err(|e| (Answer::Error, format!("bad name {candidate:?}: {e}")))?;
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(qname, RecordType::A));
    let bytes = msg
        .to_vec()
        .map_err(|e| (Answer::Error, format!("encode the question: {e}")))?;
    sock.send(&bytes).await.map_err(io_failure)?;
    let mut buf = vec![0u8; 4096];
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let n = match tokio::time::timeout_at(until, sock.recv(&mut buf)).await {
            Err(_) => {
                return Err((
                    Answer::Timeout,
                    format!("no answer in {} ms", deadline.as_millis()),
                ));
            }
            Ok(r) => r.map_err(io_failure)?,
        };
        let Ok(reply) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if reply.metadata.id != id || reply.metadata.message_type != MessageType::Response {
            // A late answer to an earlier question: not ours.
            continue;
        }
        let mut addrs: Vec<Ipv4Addr> = reply
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect();
        addrs.sort();
        return Ok((reply.metadata.response_code, addrs));
    }
}

/// The response code as dig prints it.
fn rcode(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        other => format!("{other:?}").to_uppercase(),
    }
}

fn io_failure(e: std::io::Error) -> (Answer, String) {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => (
            Answer::Refused,
            "refused (ICMP port unreachable: nothing listens on port 53)".into(),
        ),
        // What the kernel makes of an ICMP admin-prohibited (a REJECT rule) or a host
        // or network unreachable on the way.
        ErrorKind::HostUnreachable
        | ErrorKind::NetworkUnreachable
        | ErrorKind::PermissionDenied => (
            Answer::Rejected,
            "rejected on the way (ICMP unreachable or admin-prohibited)".into(),
        ),
        _ => (Answer::Error, e.to_string()),
    }
}
