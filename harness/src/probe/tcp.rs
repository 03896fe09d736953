//! TCP probes: a non-blocking connect from the client's namespace, then the server's
//! one-line answer. A RST gives `ECONNREFUSED` with nothing in the error queue (refused);
//! an ICMP error gives an errno *and* an error-queue entry that says who sent it, which
//! is what tells a filter's REJECT from the pod's own answer.
//!
//! The deadline covers the network's answer (the handshake). Once connected, the reply
//! line gets a fresh deadline of its own: the path is known to be open by then, and the
//! line only waits for the server task to be scheduled, which under a full round's load
//! can take a while on two cores.

use std::io;
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, SockType, SockaddrIn, getpeername, recv};
use sim::matrix::{Measurement, Outcome};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use super::outcome::{self, measurement};
use super::{ProbeTask, sock};

/// The longest reply we read; a real one is ~40 bytes.
const MAX_REPLY: usize = 512;

pub async fn probe(task: &ProbeTask, deadline: Duration, source_port: Option<u16>) -> Measurement {
    let dst = SocketAddrV4::new(task.dst, task.port.port);
    let start = Instant::now();
    let sock = match sock::connected(&task.client, SockType::Stream, None, source_port, dst) {
        Ok(s) => s,
        Err(e) => {
            return measurement(
                Outcome::Error,
                format!("TCP connect to {dst} from {}: {e}", task.client.name()),
                start.elapsed(),
            );
        }
    };
    let handshake = match tokio::time::timeout_at(start + deadline, wait_connected(&sock)).await {
        Ok(r) => r,
        // A last look: the answer may have arrived while this task waited for a CPU.
        Err(_) => match connected_now(&sock) {
            Ok(true) => Ok(()),
            Ok(false) => {
                return match sock::take_error(sock.get_ref()) {
                    // An ICMP error reaching a socket that is busy is only queued, and
                    // connect() would wait for a retransmit.
                    Some((e, _)) => outcome::from_queued(&e, task.dst, start.elapsed()),
                    None => measurement(
                        Outcome::Dropped,
                        format!("no answer within {} ms", deadline.as_millis()),
                        start.elapsed(),
                    ),
                };
            }
            Err(e) => Err(e),
        },
    };
    if let Err(errno) = handshake {
        let elapsed = start.elapsed();
        return match sock::take_error(sock.get_ref()) {
            Some((e, _)) => outcome::from_queued(&e, task.dst, elapsed),
            None if errno == Errno::ECONNREFUSED => {
                measurement(Outcome::Refused, "TCP RST", elapsed)
            }
            None => outcome::from_errno(errno, elapsed),
        };
    }
    let line = tokio::time::timeout(deadline, read_line(&sock)).await;
    let elapsed = start.elapsed();
    match line {
        Ok(Ok(line)) => outcome::answered(&line, &task.expect_answer_from, elapsed),
        Ok(Err(e)) => measurement(
            Outcome::Error,
            format!("connected, then reading the reply failed: {e}"),
            elapsed,
        ),
        Err(_) => measurement(
            Outcome::Error,
            format!(
                "connected, but no reply line within another {} ms",
                deadline.as_millis()
            ),
            elapsed,
        ),
    }
}

/// Whether the non-blocking connect has finished (an error if it failed).
fn connected_now(sock: &AsyncFd<OwnedFd>) -> Result<bool, Errno> {
    if let Some(e) = sock::take_so_error(sock.get_ref()) {
        return Err(e);
    }
    match getpeername::<SockaddrIn>(sock.as_raw_fd()) {
        Ok(_) => Ok(true),
        Err(Errno::ENOTCONN) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Waits for the non-blocking connect to finish.
async fn wait_connected(sock: &AsyncFd<OwnedFd>) -> Result<(), Errno> {
    loop {
        let mut ready = sock.writable().await.map_err(|e| errno_of(&e))?;
        if connected_now(sock)? {
            return Ok(());
        }
        ready.clear_ready();
    }
}

/// Reads until a newline, end of stream, or [`MAX_REPLY`] bytes.
async fn read_line(sock: &AsyncFd<OwnedFd>) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        let mut ready = sock.readable().await?;
        match ready
            .try_io(|s| recv(s.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(io::Error::from))
        {
            Ok(Ok(0)) => return Ok(line),
            Ok(Ok(n)) => {
                line.extend_from_slice(&buf[..n]);
                if line.contains(&b'\n') || line.len() >= MAX_REPLY {
                    return Ok(line);
                }
            }
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
}

fn errno_of(e: &io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(nix::libc::EIO))
}
