//! TCP and UDP servers for pods and external hosts: sockets created inside the server's
//! namespace by this process, served by tokio tasks. Each answers with one line,
//! `"<ns>/<name> <client-ip>\n"` (`host/<name>` for a host; a TCP listener per connection,
//! then closes; a UDP responder per datagram, to the sender), so the client learns who
//! answered and which source address the server saw.
//!
//! HTTP: a TCP server also answers an HTTP request (a request line starting `GET `) with
//! a minimal `HTTP/1.1 200` whose body is that same line, so an ingress controller can
//! proxy to pods and its clients learn which pod answered. Probes send nothing and get
//! their line at once; an HTTP client sends first, but its request may arrive just after
//! the accept. So only connections from addresses registered with [`expect_http_from`]
//! (the ingress controller pods) wait for their first bytes, at most [`HTTP_WAIT`],
//! before getting the plain line; every other connection is served exactly as before.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpSocket, UdpSocket};

use super::outcome::reply_line;
use crate::netns::Netns;

/// Big enough that a whole matrix round never overflows it: a lost SYN is only
/// retransmitted after 1 s, far past any probe deadline.
const BACKLOG: u32 = 4096;

/// How long a bind waits for a port that is still in use. A pod replaced under the same
/// name in a node's namespace (a hostNetwork DaemonSet's rollout) takes over its
/// predecessor's port, whose listener the runtime drops a moment after the deletion;
/// a kubelet likewise starts the new pod only once the old one is gone.
const PORT_RELEASE_WAIT: Duration = Duration::from_secs(1);

/// A listener on `0.0.0.0:port` inside `ns`.
pub fn tcp_listener(ns: &Netns, port: u16) -> Result<TcpListener> {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let started = std::time::Instant::now();
    let sock = loop {
        let sock = ns
            .enter(TcpSocket::new_v4)
            .with_context(|| format!("create a TCP socket in namespace {}", ns.name()))?;
        sock.set_reuseaddr(true).context("set SO_REUSEADDR")?;
        match sock.bind(addr) {
            Ok(()) => break sock,
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && started.elapsed() < PORT_RELEASE_WAIT =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("bind TCP {addr} in namespace {}", ns.name()));
            }
        }
    };
    sock.listen(BACKLOG)
        .with_context(|| format!("listen on TCP {addr} in namespace {}", ns.name()))
}

/// A UDP socket bound to `0.0.0.0:port` inside `ns`.
pub fn udp_socket(ns: &Netns, port: u16) -> Result<UdpSocket> {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let std = ns
        .enter(|| std::net::UdpSocket::bind(addr))
        .with_context(|| format!("bind UDP {addr} in namespace {}", ns.name()))?;
    std.set_nonblocking(true)
        .context("make the UDP socket non-blocking")?;
    UdpSocket::from_std(std).context("register the UDP socket with tokio")
}

/// How long a connection from an HTTP client address may take to send its request.
/// nginx sends it as soon as the connection is up (well under 1 ms here); a matrix probe
/// from the controller pod, which sends nothing, gets its line this much later, well
/// inside the probe deadline (100 ms).
pub const HTTP_WAIT: Duration = Duration::from_millis(30);

/// Client addresses whose connections may carry HTTP, with a count per registration
/// (two runs in one process may register the same pod address).
static HTTP_PEERS: std::sync::Mutex<std::collections::BTreeMap<Ipv4Addr, usize>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Registers an address that sends HTTP requests (an ingress controller pod); undo with
/// [`forget_http_from`].
pub fn expect_http_from(ip: Ipv4Addr) {
    if let Ok(mut m) = HTTP_PEERS.lock() {
        *m.entry(ip).or_default() += 1;
    }
}

/// Undoes one [`expect_http_from`].
pub fn forget_http_from(ip: Ipv4Addr) {
    if let Ok(mut m) = HTTP_PEERS.lock()
        && let Some(n) = m.get_mut(&ip)
    {
        *n -= 1;
        if *n == 0 {
            m.remove(&ip);
        }
    }
}

fn sends_http(ip: Ipv4Addr) -> bool {
    HTTP_PEERS.lock().is_ok_and(|m| m.contains_key(&ip))
}

/// The HTTP answer: `200 OK` with the reply line as the body.
pub fn http_response(line: &str) -> String {
    let backend = line.split_whitespace().next().unwrap_or_default();
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\nX-Knetlab-Backend: {backend}\r\n\r\n{line}",
        line.len()
    )
}

/// Serves one connection from an HTTP client address: waits for its first bytes; a
/// request (`GET ...`, read to the end of its headers) gets [`http_response`], anything
/// else (or silence) the plain line.
async fn serve_http_peer(mut stream: tokio::net::TcpStream, line: String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + HTTP_WAIT;
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                buf.extend_from_slice(&chunk[..n]);
                if !b"GET ".starts_with(&buf[..buf.len().min(4)]) {
                    break;
                }
                if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() > 16 * 1024 {
                    break;
                }
            }
            _ => break,
        }
    }
    let answer = if buf.starts_with(b"GET ") {
        http_response(&line)
    } else {
        line
    };
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}

pub async fn serve_tcp(listener: TcpListener, name: String) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let line = reply_line(&name, v4(peer.ip()));
                if sends_http(v4(peer.ip())) {
                    tokio::spawn(serve_http_peer(stream, line));
                    continue;
                }
                // A fresh socket's send buffer always takes ~40 bytes: no task needed.
                // Dropping the stream then sends the line and a FIN.
                match stream.try_write(line.as_bytes()) {
                    Ok(n) if n == line.len() => {}
                    _ => {
                        tokio::spawn(async move {
                            use tokio::io::AsyncWriteExt;
                            let mut stream = stream;
                            let _ = stream.write_all(line.as_bytes()).await;
                        });
                    }
                }
            }
            Err(e) => {
                // E.g. out of file descriptors: keep serving once it passes.
                tracing::warn!("server {name}: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

pub async fn serve_udp(sock: UdpSocket, name: String) {
    let mut buf = [0u8; 2048];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((_, peer)) => {
                let line = reply_line(&name, v4(peer.ip()));
                if let Err(e) = sock.send_to(line.as_bytes(), peer).await {
                    tracing::warn!("server {name}: UDP reply to {peer} failed: {e}");
                }
            }
            Err(e) => {
                tracing::warn!("server {name}: UDP receive failed: {e}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

fn v4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(v4) => v4,
        // Sockets are bound to IPv4 only; a mapped address is the only other form.
        IpAddr::V6(v6) => v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A probe (sends nothing) still gets the plain line; a registered HTTP client gets a
    /// 200 naming the server; an unregistered one that sends HTTP gets the line too.
    #[tokio::test]
    async fn http_answer_only_for_http_clients() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_tcp(listener, "x/a".into()));
        let mut probe = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut got = String::new();
        probe.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "x/a 127.0.0.1\n");

        expect_http_from(Ipv4Addr::LOCALHOST);
        let mut http = tokio::net::TcpStream::connect(addr).await.unwrap();
        http.write_all(b"GET /foo HTTP/1.1\r\nHost: foo.bar.com\r\n\r\n")
            .await
            .unwrap();
        let mut got = String::new();
        http.read_to_string(&mut got).await.unwrap();
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(got.ends_with("\r\n\r\nx/a 127.0.0.1\n"), "{got}");
        assert!(got.contains("Content-Length: 14\r\n"), "{got}");
        // A registered address that sends nothing still gets its line after the wait.
        let mut quiet = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut got = String::new();
        quiet.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "x/a 127.0.0.1\n");
        forget_http_from(Ipv4Addr::LOCALHOST);
        assert!(!sends_http(Ipv4Addr::LOCALHOST));
    }
}
