//! Throughput: the TCP rate from one pod to another, measured over a few hundred
//! milliseconds. A sink listens in the receiving pod and a sender in the sending pod
//! (both sockets made by this process inside the pods' namespaces with [`Netns::enter`],
//! like the probe servers); the sender writes as fast as TCP lets it, and the sink counts
//! what arrives. The rate is what the sink received during a window that starts after a
//! short warm-up, so the connection's slow start and a token bucket's initial burst do
//! not count: it is the steady rate a shaper allows.
//!
//! What to expect on the 2-core VM (harness/tests/cni_chain.rs measures it): a pod shaped
//! to 10M with a small burst measures 9-11 Mbit/s; an unshaped pod several Gbit/s.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use sim::objects::PodRef;
use sim::scenario::ThroughputSpec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::time::Instant;

use super::server;
use crate::netns::Netns;

/// How a measurement runs.
#[derive(Debug, Clone, Copy)]
pub struct ThroughputOptions {
    /// Sent but not counted: slow start, and the first burst a token bucket allows.
    pub warmup: Duration,
    /// The counted window.
    pub window: Duration,
    /// How long the connection may take to open.
    pub connect_timeout: Duration,
}

impl Default for ThroughputOptions {
    /// 100 ms of warm-up, then a 300 ms window: 0.4 s per measurement. At 10 Mbit/s the
    /// window holds ~375 kB, hundreds of full-size packets, so one packet more or less
    /// moves the result by well under 1 %.
    fn default() -> Self {
        ThroughputOptions {
            warmup: Duration::from_millis(100),
            window: Duration::from_millis(300),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Throughput {
    /// Megabits (10^6 bits) per second over the window.
    pub mbps: f64,
    /// Bytes the sink received in the window.
    pub bytes: u64,
    /// The window as measured (a read may end a little after it was due).
    pub window_ms: f64,
    /// Bytes received in all, warm-up included.
    pub total_bytes: u64,
}

/// Measures the TCP rate from `from` to `dst:port`, where `to` is the namespace that owns
/// `dst` (the sink listens there on every address). Fails if the port is taken in `to`
/// or the connection does not open (a policy in the way, for example).
pub async fn measure(
    from: &Netns,
    to: &Netns,
    dst: Ipv4Addr,
    port: u16,
    opts: ThroughputOptions,
) -> Result<Throughput> {
    let listener = server::tcp_listener(to, port).with_context(|| {
        format!(
            "start the throughput sink on TCP {port} in {} (is the port served already?)",
            to.name()
        )
    })?;
    let sock = from
        .enter(TcpSocket::new_v4)
        .with_context(|| format!("create the sender's socket in {}", from.name()))?;
    let target = SocketAddr::V4(SocketAddrV4::new(dst, port));
    let sink = tokio::spawn(async move {
        let (mut stream, _) = listener
            .accept()
            .await
            .context("accept the sender's connection")?;
        count(&mut stream, opts).await
    });
    let mut stream = match tokio::time::timeout(opts.connect_timeout, sock.connect(target)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            sink.abort();
            bail!("connect from {} to {target}: {e}", from.name());
        }
        Err(_) => {
            sink.abort();
            bail!(
                "connect from {} to {target}: no answer within {} ms",
                from.name(),
                opts.connect_timeout.as_millis()
            );
        }
    };
    let sender = tokio::spawn(async move {
        let buf = vec![0x6b_u8; 128 * 1024];
        // Ends when the sink closes the connection (a reset or broken pipe).
        while stream.write_all(&buf).await.is_ok() {}
    });
    let result = sink.await;
    sender.abort();
    let _ = sender.await;
    result.map_err(|e| anyhow!("the throughput sink failed: {e}"))?
}

/// Reads until the window is over; returns what arrived in it.
async fn count(stream: &mut tokio::net::TcpStream, opts: ThroughputOptions) -> Result<Throughput> {
    let mut buf = vec![0u8; 256 * 1024];
    let begin = Instant::now();
    let window_from = begin + opts.warmup;
    let window_to = window_from + opts.window;
    let mut total: u64 = 0;
    let mut at_start: Option<(Instant, u64)> = None;
    loop {
        let deadline = if at_start.is_some() {
            window_to
        } else {
            window_from
        };
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) => bail!("the sender closed the connection after {total} bytes"),
            Ok(Ok(n)) => total += n as u64,
            Ok(Err(e)) => return Err(e).context("read from the sender"),
            // The deadline passed with nothing to read: that instant still counts.
            Err(_) => {}
        }
        let now = Instant::now();
        match at_start {
            None if now >= window_from => at_start = Some((now, total)),
            Some((t0, b0)) if now >= window_to => {
                let secs = (now - t0).as_secs_f64();
                let bytes = total - b0;
                return Ok(Throughput {
                    mbps: bytes as f64 * 8.0 / secs / 1e6,
                    bytes,
                    window_ms: secs * 1e3,
                    total_bytes: total,
                });
            }
            _ => {}
        }
    }
}

/// A scenario's `throughput:` entry checked in one step.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputCheck {
    pub from: PodRef,
    pub to: PodRef,
    pub port: u16,
    pub min_mbps: Option<f64>,
    pub max_mbps: Option<f64>,
    /// `None` when the measurement failed (see `error`).
    pub measured: Option<Throughput>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ThroughputCheck {
    pub fn new(spec: &ThroughputSpec, measured: Result<Throughput>) -> ThroughputCheck {
        let (measured, error) = match measured {
            Ok(m) => (Some(m), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        ThroughputCheck {
            from: spec.from.clone(),
            to: spec.to.clone(),
            port: spec.port,
            min_mbps: spec.min_mbps,
            max_mbps: spec.max_mbps,
            measured,
            error,
        }
    }

    /// Measured, and inside the expected range.
    pub fn ok(&self) -> bool {
        self.measured.is_some_and(|m| {
            self.min_mbps.is_none_or(|lo| m.mbps >= lo)
                && self.max_mbps.is_none_or(|hi| m.mbps <= hi)
        })
    }

    /// `x/a -> x/b TCP/5201: 9.8 Mbit/s (expected 6-12) ok`.
    pub fn line(&self) -> String {
        let range = match (self.min_mbps, self.max_mbps) {
            (Some(lo), Some(hi)) => format!(" (expected {lo}-{hi})"),
            (Some(lo), None) => format!(" (expected at least {lo})"),
            (None, Some(hi)) => format!(" (expected at most {hi})"),
            (None, None) => String::new(),
        };
        let what = match (&self.measured, &self.error) {
            (Some(m), _) => format!("{:.1} Mbit/s{range}", m.mbps),
            (None, Some(e)) => format!("failed{range}: {e}"),
            (None, None) => format!("not measured{range}"),
        };
        let verdict = if self.ok() { "ok" } else { "WRONG" };
        format!(
            "{} -> {} TCP/{}: {what} {verdict}",
            self.from, self.to, self.port
        )
    }
}
