//! The probe engine: servers in every pod, and probes that measure who can reach whom with
//! real packets. Every pod serves each declared port, and every external host its `serve`
//! ports (TCP listeners and UDP responders that answer with the server's name, `ns/name`
//! or `host/NAME`, and the client address they saw, and a user-space SCTP responder,
//! because this kernel has no SCTP sockets); probes run in parallel with a
//! per-probe deadline and turn what came back into a [`Measurement`]: allowed, refused,
//! dropped, rejected, or error.
//!
//! All sockets are created by this process inside the namespace they belong to
//! ([`Netns::enter`] around the `socket()` call only, never across an await), then handed
//! to the caller's tokio runtime. No process is spawned per pod or per probe.
//!
//! How an outcome is told apart (see [`outcome`] for the exact rules):
//! - allowed: the reply line (TCP, UDP) or the INIT-ACK's state cookie (SCTP) came back
//!   and names the expected pod;
//! - refused: a TCP RST, an SCTP ABORT, or an ICMP port/protocol unreachable sent by the
//!   destination itself;
//! - rejected: an ICMP error from someone else on the way (admin-prohibited from a
//!   `REJECT --reject-with icmp-admin-prohibited`, or a port unreachable that a router sent
//!   on the pod's behalf). Client sockets set `IP_RECVERR`, so the kernel's error queue
//!   gives the ICMP type, code and the offender's address;
//! - dropped: nothing by the deadline;
//! - error: the harness failed, the network could not route, or the wrong pod answered.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use sim::matrix::{Measurement, Outcome};
use sim::protocol::{PortProto, Protocol};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::netns::Netns;

pub mod outcome;
mod sctp;
pub(crate) mod server;
mod sock;
pub use sock::TRACE_TOS;
mod tcp;
pub mod throughput;
mod udp;

/// What one pod (or external host) serves.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// Who answers, as probes name it: a pod's `ns/name` (`PodRef::to_string`), or
    /// `host/NAME` for a host outside the cluster (`Peer::to_string`).
    pub name: String,
    /// The server's network namespace.
    pub netns: Netns,
    /// Declared ports; duplicates are served once.
    pub ports: Vec<PortProto>,
}

/// The running servers of every pod. Dropping it stops them (their sockets close as the
/// tasks are cancelled); [`Servers::shutdown`] also waits until they are gone.
pub struct Servers {
    tasks: JoinSet<()>,
    sockets: usize,
}

impl Servers {
    /// How many server sockets are open (listeners, UDP responders, SCTP responders).
    pub fn sockets(&self) -> usize {
        self.sockets
    }

    /// Stops every server and waits until all their sockets are closed.
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

/// Starts the servers of every pod (or host): per declared TCP port a listener, per UDP
/// port a responder, and per server one raw SCTP responder (INIT-ACK on declared SCTP
/// ports, ABORT on the others, as a kernel SCTP stack would answer). Also sets
/// `net.ipv4.icmp_ratemask=0` in each server's namespace: a server's own ICMP port
/// unreachable is what tells "refused" for UDP, and the default rate limit would turn
/// every sixth one into a 1 s silence (see floors.md §4d).
pub async fn start_servers(specs: Vec<ServerSpec>) -> Result<Servers> {
    let mut tasks = JoinSet::new();
    let mut sockets = 0;
    for spec in &specs {
        let name = spec.name.clone();
        crate::system::set_sysctl(&spec.netns, "net/ipv4/icmp_ratemask", "0")
            .with_context(|| format!("prepare {name} for probing"))?;
        let ports: BTreeSet<PortProto> = spec.ports.iter().copied().collect();
        let mut sctp_ports = BTreeSet::new();
        for p in &ports {
            match p.protocol {
                Protocol::Tcp => {
                    let l = server::tcp_listener(&spec.netns, p.port)
                        .with_context(|| format!("serve {p} for {name}"))?;
                    tasks.spawn(server::serve_tcp(l, name.clone()));
                }
                Protocol::Udp => {
                    let s = server::udp_socket(&spec.netns, p.port)
                        .with_context(|| format!("serve {p} for {name}"))?;
                    tasks.spawn(server::serve_udp(s, name.clone()));
                }
                Protocol::Sctp => {
                    sctp_ports.insert(p.port);
                    continue;
                }
            }
            sockets += 1;
        }
        let raw = sctp::responder_socket(&spec.netns)
            .with_context(|| format!("start the SCTP responder of {name}"))?;
        tasks.spawn(sctp::serve(raw, name, sctp_ports));
        sockets += 1;
    }
    Ok(Servers { tasks, sockets })
}

/// One probe: from a client namespace to `dst` on `port`.
#[derive(Debug, Clone)]
pub struct ProbeTask {
    pub client: Netns,
    pub dst: Ipv4Addr,
    pub port: PortProto,
    /// Who may answer for the probe to count as allowed (`ns/name`, `host/NAME`): the
    /// pod probed, or any endpoint of the Service probed; empty accepts any server. An
    /// answer from anyone else is an error (the cluster misrouted the probe).
    pub expect_answer_from: Vec<String>,
}

/// How probes run.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// How long a probe waits for an answer before it counts as dropped.
    pub deadline: Duration,
    /// How many probes are in flight at once.
    pub concurrency: usize,
}

impl Default for ProbeOptions {
    /// Deadline 100 ms, and all of a standard-model round (486 probes) in flight at once.
    ///
    /// Where 100 ms comes from: `harness/tests/probe.rs` measures the time to an answer
    /// (TCP connect + reply line, UDP and SCTP round trips, from the probe's first packet
    /// to its outcome) over whole 486-probe rounds of the standard model (9 pods,
    /// TCP/UDP/SCTP on 80 and 81, every probe of a round started at once) on this 2-core
    /// VM. With the machine otherwise idle: p99.9 20-28 ms, max 23-30 ms (~20k probes).
    /// With other builds keeping both cores busy (load 2.5-2.8): p99.9 43-70 ms, max
    /// 47-75 ms in most runs, once p99.9 101 ms and max 120 ms, debug and release builds
    /// alike (up to 97k probes); none of those answers was misread as dropped. The time
    /// is CPU queueing of a full round, not the network: floors.md section 4c found
    /// p99.9 7-9 ms for TCP connect + line at 81-way load. 100 ms is 4-5x the idle p99.9
    /// and above the usual contended p99.9, while a round in which every probe is
    /// dropped still ends after one deadline (~110-120 ms), inside the 0.2 s target.
    ///
    /// Two things keep a busy machine from faking "dropped": a TCP probe that has
    /// connected gets a second deadline for its reply line (the path is open by then),
    /// and every probe takes a last look at its socket when its deadline fires, so an
    /// answer that arrived while the task waited for a CPU still counts. Raise the
    /// deadline when probes share the machine with heavy work.
    fn default() -> Self {
        ProbeOptions {
            deadline: Duration::from_millis(100),
            concurrency: 512,
        }
    }
}

/// Runs every probe, at most `opts.concurrency` at once, each with its own deadline.
/// Returns one measurement per task, in the order of `tasks`. Never fails as a whole: a
/// probe the harness could not run is an [`Outcome::Error`] with the reason in `detail`.
pub async fn run_probes(tasks: &[ProbeTask], opts: &ProbeOptions) -> Vec<Measurement> {
    let permits = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let mut running = JoinSet::new();
    let mut index_of = HashMap::new();
    for (i, task) in tasks.iter().enumerate() {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("the probe semaphore is never closed");
        let task = task.clone();
        let deadline = opts.deadline;
        // A task per probe lets the runtime's workers share the work.
        let handle = running.spawn(async move {
            let m = probe_one(&task, deadline).await;
            drop(permit);
            m
        });
        index_of.insert(handle.id(), i);
    }
    let mut out: Vec<Option<Measurement>> = vec![None; tasks.len()];
    while let Some(done) = running.join_next_with_id().await {
        match done {
            Ok((id, m)) => out[index_of[&id]] = Some(m),
            Err(e) => {
                out[index_of[&e.id()]] = Some(outcome::measurement(
                    Outcome::Error,
                    format!("probe task failed: {e}"),
                    Duration::ZERO,
                ))
            }
        }
    }
    out.into_iter()
        .map(|m| {
            m.unwrap_or_else(|| {
                outcome::measurement(Outcome::Error, "probe never ran", Duration::ZERO)
            })
        })
        .collect()
}

/// Runs one probe to its outcome.
pub async fn probe_one(task: &ProbeTask, deadline: Duration) -> Measurement {
    match task.port.protocol {
        Protocol::Tcp => tcp::probe(task, deadline, None).await,
        Protocol::Udp => udp::probe(task, deadline, None).await,
        Protocol::Sctp => sctp::probe(task, deadline).await,
    }
}

/// Runs one TCP or UDP probe from a chosen source port (so its packets can be told
/// apart by rules: `--trace`). SCTP probes are crafted packets with ports of their own
/// choosing: `None` for them.
pub async fn probe_from_port(
    task: &ProbeTask,
    deadline: Duration,
    source_port: u16,
) -> Option<Measurement> {
    match task.port.protocol {
        Protocol::Tcp => Some(tcp::probe(task, deadline, Some(source_port)).await),
        Protocol::Udp => Some(udp::probe(task, deadline, Some(source_port)).await),
        Protocol::Sctp => None,
    }
}
