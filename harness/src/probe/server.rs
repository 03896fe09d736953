//! TCP and UDP servers for pods and external hosts: sockets created inside the server's
//! namespace by this process, served by tokio tasks. Each answers with one line,
//! `"<ns>/<name> <client-ip>\n"` (`host/<name>` for a host; a TCP listener per connection,
//! then closes; a UDP responder per datagram, to the sender), so the client learns who
//! answered and which source address the server saw.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpSocket, UdpSocket};

use super::outcome::reply_line;
use crate::netns::Netns;

/// Big enough that a whole matrix round never overflows it: a lost SYN is only
/// retransmitted after 1 s, far past any probe deadline.
const BACKLOG: u32 = 4096;

/// A listener on `0.0.0.0:port` inside `ns`.
pub fn tcp_listener(ns: &Netns, port: u16) -> Result<TcpListener> {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let sock = ns
        .enter(TcpSocket::new_v4)
        .with_context(|| format!("create a TCP socket in namespace {}", ns.name()))?;
    sock.set_reuseaddr(true).context("set SO_REUSEADDR")?;
    sock.bind(addr)
        .with_context(|| format!("bind TCP {addr} in namespace {}", ns.name()))?;
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

pub async fn serve_tcp(listener: TcpListener, name: String) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let line = reply_line(&name, v4(peer.ip()));
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
