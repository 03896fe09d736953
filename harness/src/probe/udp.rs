//! UDP probes: one datagram from a connected socket in the client's namespace, then the
//! responder's reply line. Silence is "dropped"; an ICMP error arrives in the socket's
//! error queue (`IP_RECVERR`) with its sender, which tells the pod's own port unreachable
//! (refused) from a filter's (rejected).

use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, SockType, recv, send};
use sim::matrix::{Measurement, Outcome};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use super::outcome::{self, QueuedError, measurement};
use super::{ProbeTask, sock};

/// What a UDP probe sends; responders ignore the content.
const PROBE: &[u8] = b"knetlab probe\n";

enum Answer {
    Reply(Vec<u8>),
    Queued(QueuedError),
    Errno(Errno),
    /// Nothing by the deadline.
    Silence,
}

pub async fn probe(task: &ProbeTask, deadline: Duration, source_port: Option<u16>) -> Measurement {
    let dst = SocketAddrV4::new(task.dst, task.port.port);
    let start = Instant::now();
    let sock = match sock::connected(&task.client, SockType::Datagram, None, source_port, dst) {
        Ok(s) => s,
        Err(e) => {
            return measurement(
                Outcome::Error,
                format!("UDP socket to {dst} in {}: {e}", task.client.name()),
                start.elapsed(),
            );
        }
    };
    if let Err(e) = send(sock.as_raw_fd(), PROBE, MsgFlags::empty()) {
        return measurement(
            Outcome::Error,
            format!("send to {dst} from {}: {}", task.client.name(), e.desc()),
            start.elapsed(),
        );
    }
    let answer = match tokio::time::timeout_at(start + deadline, wait_answer(&sock)).await {
        Ok(r) => r,
        // A last look: the answer may have arrived while this task waited for a CPU.
        Err(_) => Ok(poll_once(&sock).unwrap_or(Answer::Silence)),
    };
    let elapsed = start.elapsed();
    match answer {
        Ok(Answer::Reply(line)) => outcome::answered(&line, &task.expect_answer_from, elapsed),
        Ok(Answer::Queued(e)) => outcome::from_queued(&e, task.dst, elapsed),
        Ok(Answer::Errno(e)) => outcome::from_errno(e, elapsed),
        Ok(Answer::Silence) => measurement(
            Outcome::Dropped,
            format!("no answer within {} ms", deadline.as_millis()),
            elapsed,
        ),
        Err(e) => measurement(Outcome::Error, format!("waiting for {dst}: {e}"), elapsed),
    }
}

async fn wait_answer(sock: &AsyncFd<OwnedFd>) -> std::io::Result<Answer> {
    loop {
        // ERROR too: an ICMP error only raises EPOLLERR, which readers are not woken for.
        let mut ready = sock.ready(Interest::READABLE | Interest::ERROR).await?;
        if let Some(a) = poll_once(sock) {
            return Ok(a);
        }
        ready.clear_ready();
    }
}

/// What has arrived so far, without waiting.
fn poll_once(sock: &AsyncFd<OwnedFd>) -> Option<Answer> {
    if let Some((e, _)) = sock::take_error(sock.get_ref()) {
        return Some(Answer::Queued(e));
    }
    let mut buf = [0u8; 512];
    match recv(sock.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
        Ok(n) => Some(Answer::Reply(buf[..n].to_vec())),
        Err(Errno::EAGAIN) => None,
        // The socket error an ICMP message left; its queue entry says more.
        Err(e) => Some(match sock::take_error(sock.get_ref()) {
            Some((q, _)) => Answer::Queued(q),
            None => Answer::Errno(e),
        }),
    }
}
