//! The userspace proxy's data path: per service port a listener (a socket bound inside
//! the node's namespace, served by tokio tasks of this process) with its endpoints; for
//! each connection it picks a ready endpoint round-robin (`LoadBalancerRR`, keeping a
//! client on its endpoint with `sessionAffinity: ClientIP`), dials it, trying the next
//! endpoint when a dial fails, then copies bytes both ways; UDP is relayed per client
//! session. [`sync_listeners`] brings a node's listeners in line with the service ports.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use sim::kube_proxy::model::cluster_ip_backends;
use sim::kube_proxy::model::{ServicePort, SessionAffinity};
use sim::protocol::Protocol;
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::task::{AbortHandle, JoinSet};

use super::portals::{PROXY_PORT_BASE, Portal};
use crate::netns::Netns;
use crate::system::NsRef;

/// `EndpointDialTimeouts`: one dial per entry, each to the next endpoint.
pub const DIAL_TIMEOUTS: [Duration; 4] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];
/// `--udp-timeout`'s default: a UDP session idle this long is dropped.
pub const UDP_SESSION_TIMEOUT: Duration = Duration::from_millis(250);

/// The endpoints a port's proxy picks from, updated by every sync.
#[derive(Debug, Default)]
pub(super) struct Balancer {
    /// Ready endpoints, sorted (kube-proxy's order).
    pub(super) endpoints: Vec<SocketAddrV4>,
    next: usize,
    /// `sessionAffinity: ClientIP`: the timeout and each client's endpoint.
    pub(super) affinity: Option<Duration>,
    sticky: HashMap<Ipv4Addr, (SocketAddrV4, Instant)>,
}

impl Balancer {
    /// `NextEndpoint`: the client's sticky endpoint if it still exists (unless the last
    /// dial failed), else the next one round-robin.
    fn pick(&mut self, client: Ipv4Addr, reset_affinity: bool) -> Option<SocketAddrV4> {
        if self.endpoints.is_empty() {
            return None;
        }
        let now = Instant::now();
        if let Some(timeout) = self.affinity
            && !reset_affinity
            && let Some((ep, last)) = self.sticky.get(&client).copied()
            && now.duration_since(last) < timeout
            && self.endpoints.contains(&ep)
        {
            self.sticky.insert(client, (ep, now));
            return Some(ep);
        }
        let ep = self.endpoints[self.next % self.endpoints.len()];
        self.next = (self.next + 1) % self.endpoints.len();
        if self.affinity.is_some() {
            self.sticky.insert(client, (ep, now));
        }
        Some(ep)
    }
}

pub(super) type Shared = Arc<Mutex<Balancer>>;

/// One port proxy: its portal, its endpoints and, while it has endpoints, the task
/// serving its socket.
pub(super) struct Listener {
    pub(super) portal: Portal,
    pub(super) balancer: Shared,
    pub(super) task: Option<AbortHandle>,
}

impl Listener {
    /// Opens the socket and serves it (when not already), or closes it when there is no
    /// endpoint: kube-proxy accepted and at once closed such connections; knetlab
    /// refuses them (the kernel answers the redirected connection with a reset, or an
    /// ICMP port unreachable for UDP), so a probe sees a refusal, as REJECT gives in the
    /// other modes, rather than an accepted connection that dies.
    fn serve(&mut self, ns: &NsRef, rt: &tokio::runtime::Handle) -> Result<()> {
        let has_endpoints = !self
            .balancer
            .lock()
            .map_err(|_| anyhow!("a proxy lock was poisoned"))?
            .endpoints
            .is_empty();
        match (&self.task, has_endpoints) {
            (Some(task), false) => {
                task.abort();
                self.task = None;
            }
            (None, true) => {
                let ns = ns.netns()?;
                let port = self.portal.proxy_port;
                let b = self.balancer.clone();
                self.task = Some(match self.portal.protocol {
                    Protocol::Tcp => {
                        let listener = crate::probe::server::tcp_listener(ns, port)?;
                        rt.spawn(serve_tcp(listener, ns.clone(), b)).abort_handle()
                    }
                    Protocol::Udp => {
                        let sock = crate::probe::server::udp_socket(ns, port)?;
                        rt.spawn(serve_udp(sock, ns.clone(), b)).abort_handle()
                    }
                    Protocol::Sctp => bail!("no userspace proxy for SCTP"),
                });
            }
            _ => {}
        }
        Ok(())
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// One node: its listeners and the rule text last written.
#[derive(Default)]
pub(super) struct NodeState {
    pub(super) listeners: BTreeMap<(String, Protocol), Listener>,
    pub(super) rules: Option<String>,
}

/// Starts listeners for new service ports, stops those of ports that went away, and
/// hands every listener its current endpoints.
pub(super) fn sync_listeners(
    state: &mut NodeState,
    node: &str,
    ns: &NsRef,
    ports: &[ServicePort],
    rt: &tokio::runtime::Handle,
) -> Result<()> {
    let wanted: BTreeMap<(String, Protocol), &ServicePort> = ports
        .iter()
        .map(|p| ((p.port_name_string(), p.protocol), p))
        .collect();
    state.listeners.retain(|k, l| {
        wanted
            .get(k)
            .is_some_and(|p| p.cluster_ip == Some(l.portal.cluster_ip) && p.port == l.portal.port)
    });
    for (key, sp) in &wanted {
        let endpoints: Vec<SocketAddrV4> = cluster_ip_backends(sp, node)
            .into_iter()
            .map(|e| SocketAddrV4::new(e.ip, e.port))
            .collect();
        let affinity = match sp.session_affinity {
            SessionAffinity::ClientIp { timeout_seconds } => {
                Some(Duration::from_secs(timeout_seconds.into()))
            }
            SessionAffinity::None => None,
        };
        if let Some(l) = state.listeners.get_mut(key) {
            {
                let mut b = l
                    .balancer
                    .lock()
                    .map_err(|_| anyhow!("a proxy lock was poisoned"))?;
                if b.endpoints != endpoints {
                    b.endpoints = endpoints;
                    b.next = 0;
                    b.sticky.clear();
                }
                b.affinity = affinity;
            }
            l.serve(ns, rt)?;
            continue;
        }
        let used: Vec<u16> = state
            .listeners
            .values()
            .map(|l| l.portal.proxy_port)
            .collect();
        let proxy_port = (PROXY_PORT_BASE..=u16::MAX)
            .find(|p| !used.contains(p))
            .ok_or_else(|| anyhow!("no proxy port left"))?;
        let Some(cluster_ip) = sp.cluster_ip else {
            continue;
        };
        let portal = Portal {
            service: key.0.clone(),
            protocol: sp.protocol,
            cluster_ip,
            port: sp.port,
            proxy_port,
        };
        let balancer: Shared = Arc::new(Mutex::new(Balancer {
            endpoints,
            affinity,
            ..Balancer::default()
        }));
        let mut listener = Listener {
            portal,
            balancer,
            task: None,
        };
        listener.serve(ns, rt)?;
        state.listeners.insert(key.clone(), listener);
    }
    Ok(())
}

fn client_v4(addr: SocketAddr) -> Ipv4Addr {
    match addr {
        SocketAddr::V4(a) => *a.ip(),
        SocketAddr::V6(a) => a.ip().to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    }
}

/// Accepts connections; each is served by a task this one owns.
async fn serve_tcp(listener: TcpListener, ns: Netns, balancer: Shared) {
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        match listener.accept().await {
            Ok((client, peer)) => {
                conns.spawn(proxy_tcp(
                    client,
                    client_v4(peer),
                    ns.clone(),
                    balancer.clone(),
                ));
            }
            Err(e) => {
                tracing::warn!("userspace proxy in {}: accept failed: {e}", ns.name());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

/// `TryConnectEndpoints`: one dial per timeout, each to the next endpoint.
async fn dial(ns: &Netns, balancer: &Shared, client: Ipv4Addr) -> Option<TcpStream> {
    let mut reset = false;
    for timeout in DIAL_TIMEOUTS {
        let ep = balancer.lock().ok()?.pick(client, reset)?;
        // The socket is made in the node, so the connection leaves from the node.
        let Ok(sock) = ns.enter(TcpSocket::new_v4) else {
            return None;
        };
        match tokio::time::timeout(timeout, sock.connect(SocketAddr::V4(ep))).await {
            Ok(Ok(stream)) => return Some(stream),
            Ok(Err(e)) => tracing::debug!("userspace proxy: dial {ep} failed: {e}"),
            Err(_) => tracing::debug!("userspace proxy: dial {ep} timed out after {timeout:?}"),
        }
        reset = true;
    }
    None
}

async fn proxy_tcp(mut client: TcpStream, peer: Ipv4Addr, ns: Netns, balancer: Shared) {
    match dial(&ns, &balancer, peer).await {
        Some(mut backend) => {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
        }
        None => {
            // No endpoint (or none answered): close with a reset, so the client is
            // refused rather than told the service said nothing.
            let _ = client.set_zero_linger();
        }
    }
}

/// Relays datagrams: one session (a socket in the node, connected to one endpoint)
/// per client address, dropped after [`UDP_SESSION_TIMEOUT`] without replies.
async fn serve_udp(sock: UdpSocket, ns: Netns, balancer: Shared) {
    let sock = Arc::new(sock);
    let sessions: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; 65535];
    loop {
        while tasks.try_join_next().is_some() {}
        let (n, client) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("userspace proxy in {}: UDP receive failed: {e}", ns.name());
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let existing = sessions.lock().ok().and_then(|s| s.get(&client).cloned());
        let upstream = match existing {
            Some(u) => u,
            None => {
                let Some(ep) = balancer
                    .lock()
                    .ok()
                    .and_then(|mut b| b.pick(client_v4(client), false))
                else {
                    continue;
                };
                let made = ns
                    .enter(|| std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
                    .and_then(|s| {
                        s.set_nonblocking(true)?;
                        s.connect(ep)?;
                        UdpSocket::from_std(s)
                    });
                let Ok(up) = made else {
                    tracing::debug!("userspace proxy: no UDP session towards {ep}");
                    continue;
                };
                let up = Arc::new(up);
                if let Ok(mut s) = sessions.lock() {
                    s.insert(client, up.clone());
                }
                tasks.spawn(udp_replies(
                    up.clone(),
                    sock.clone(),
                    client,
                    sessions.clone(),
                ));
                up
            }
        };
        let _ = upstream.send(&buf[..n]).await;
    }
}

/// Sends an endpoint's replies back to the client until the session goes idle.
async fn udp_replies(
    up: Arc<UdpSocket>,
    listener: Arc<UdpSocket>,
    client: SocketAddr,
    sessions: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>,
) {
    let mut buf = vec![0u8; 65535];
    while let Ok(Ok(n)) = tokio::time::timeout(UDP_SESSION_TIMEOUT, up.recv(&mut buf)).await {
        let _ = listener.send_to(&buf[..n], client).await;
    }
    if let Ok(mut s) = sessions.lock() {
        s.remove(&client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn round_robin_with_and_without_affinity() {
        let a: SocketAddrV4 = "10.244.1.2:80".parse().unwrap();
        let b: SocketAddrV4 = "10.244.2.2:80".parse().unwrap();
        let c1: Ipv4Addr = "10.244.1.9".parse().unwrap();
        let mut bal = Balancer {
            endpoints: vec![a, b],
            ..Balancer::default()
        };
        let picks: Vec<SocketAddrV4> = (0..4).filter_map(|_| bal.pick(c1, false)).collect();
        assert_eq!(picks, [a, b, a, b]);
        bal.affinity = Some(Duration::from_secs(10));
        let first = bal.pick(c1, false).unwrap();
        assert_eq!(bal.pick(c1, false), Some(first));
        // A failed dial resets the affinity: the next endpoint is tried.
        assert_ne!(bal.pick(c1, true), Some(first));
        bal.endpoints.clear();
        assert_eq!(bal.pick(c1, false), None);
    }

    /// Against the kernel (root): the proxy's dial skips an endpoint that refuses and
    /// reaches the next, a connection through a proxy listener reaches the backend from
    /// the node's address, and dropping the listener closes its port.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_dial_moves_on_and_dropping_a_listener_closes_it() {
        use tokio::io::AsyncReadExt;
        if !crate::netns::have_privileges() {
            eprintln!("skipping: needs root (a network namespace)");
            return;
        }
        let name = format!("{}-us", crate::run::new_prefix());
        let ns = Netns::create_many(std::slice::from_ref(&name))
            .unwrap()
            .remove(0);
        let outcome = async {
            crate::system::netlink::blocking(
                &NsRef::from(&ns),
                "set lo up".into(),
                |nl| async move { nl.set_up("lo").await },
            )
            .unwrap();
            let backend = crate::probe::server::tcp_listener(&ns, 18080).unwrap();
            let server = tokio::spawn(crate::probe::server::serve_tcp(backend, "b".into()));
            let refused: SocketAddrV4 = "127.0.0.1:1".parse().unwrap();
            let good: SocketAddrV4 = "127.0.0.1:18080".parse().unwrap();
            let balancer: Shared = Arc::new(Mutex::new(Balancer {
                endpoints: vec![refused, good],
                ..Balancer::default()
            }));
            let stream = dial(&ns, &balancer, Ipv4Addr::LOCALHOST).await.unwrap();
            assert_eq!(stream.peer_addr().unwrap(), SocketAddr::V4(good));
            drop(stream);

            let port = PROXY_PORT_BASE;
            let l = crate::probe::server::tcp_listener(&ns, port).unwrap();
            let task =
                Some(tokio::spawn(serve_tcp(l, ns.clone(), balancer.clone())).abort_handle());
            let listener = Listener {
                portal: Portal {
                    service: "t/t".into(),
                    protocol: Protocol::Tcp,
                    cluster_ip: Ipv4Addr::new(10, 96, 0, 1),
                    port: 80,
                    proxy_port: port,
                },
                balancer,
                task,
            };
            let sock = ns.enter(TcpSocket::new_v4).unwrap();
            let mut c = sock
                .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                .await
                .unwrap();
            let mut line = String::new();
            tokio::time::timeout(Duration::from_secs(3), c.read_to_string(&mut line))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(line, "b 127.0.0.1\n");
            drop(listener);
            tokio::time::sleep(Duration::from_millis(50)).await;
            // The port is free again: the listener's socket was closed.
            crate::probe::server::tcp_listener(&ns, port).unwrap();
            server.abort();
        };
        let result = std::panic::AssertUnwindSafe(outcome).catch_unwind().await;
        drop(ns);
        crate::netns::delete(&name).unwrap();
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
    }
}
