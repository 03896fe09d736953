//! `--trace`: one probe followed through the kernel. Every place that filters or routes
//! (the nodes, the router) gets `TRACE` rules in its `raw` table for the probe's protocol
//! and for ICMP errors, and an `xtables-monitor --trace` reading the kernel's nftables
//! trace events (iptables here is the nf_tables flavour, so TRACE sets `nftrace` and the
//! events come over netlink to the monitor in that namespace). The rules match every
//! packet of the protocol: the trace runs after the step's probes, when nothing else
//! talks in the cluster, and neither the source port (kube-proxy masquerades with
//! `--random-fully`) nor the probe's TOS mark (answers do not carry it) would follow
//! both directions. The probe runs from a fixed source port with a TOS mark of its own,
//! which tells the story which packets go out and which come back; the events, in the
//! order they were read, become a story in `sim::trace`.
//!
//! The trace mark does not survive a namespace crossing (the kernel scrubs it with the
//! rest of the packet's metadata on a veth), which is why every place marks the packet
//! again on arrival. The rules and the monitors are removed whatever happens, also on
//! error; the rules live only in our own namespaces.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sim::matrix::Measurement;
use sim::protocol::Protocol;
use sim::trace::{Events, Line};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

use crate::netns::Netns;
use crate::probe::{self, ProbeTask};
use crate::system::{NsRef, Real, System, Tool};

/// How long a monitor gets to subscribe before the probe is sent, and how long the
/// trace keeps listening after the probe ended (events are delivered asynchronously).
const SETTLE: Duration = Duration::from_millis(150);

/// The first source port of traced probes: below the kernel's ephemeral range
/// (32768-60999), so no other socket of the client shares it. Each trace of a run takes
/// the next one ([`source_port`]): a TCP client that closed keeps its port in TIME_WAIT
/// for a minute, and the next step may trace the same cell.
pub const TRACE_SOURCE_PORT: u16 = 31_337;

/// The source port of the `n`-th trace of a run.
pub fn source_port(n: usize) -> u16 {
    TRACE_SOURCE_PORT + (n % 1000) as u16
}

/// What one trace found: the events per place in reading order, and what the probe
/// measured.
pub struct Traced {
    pub events: Events,
    pub measured: Measurement,
}

/// Traces one probe through `places` (name and namespace: the nodes, the router).
pub async fn trace(
    places: &[(String, Netns)],
    task: &ProbeTask,
    deadline: Duration,
    source_port: u16,
) -> Result<Traced> {
    let proto = match task.port.protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => bail!(
            "--trace follows TCP and UDP probes; SCTP probes are crafted packets (this kernel \
             has no SCTP sockets), trace a TCP or UDP port instead"
        ),
    };
    let events: Arc<Mutex<Events>> = Arc::default();
    let mut monitors: Vec<Child> = Vec::new();
    let mut readers = Vec::new();
    let started = async {
        for (place, ns) in places {
            // Line-buffered: a pipe would otherwise hold the last events in stdio's
            // buffer, and they are lost when the monitor is killed.
            let mut child = ns
                .tokio_command(Tool::Stdbuf.binary())
                .args(["-oL", Tool::XtablesMonitor.binary(), "--trace"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("start xtables-monitor --trace in {}", ns.name()))?;
            let stdout = child
                .stdout
                .take()
                .context("xtables-monitor has no stdout")?;
            let (place, events) = (place.clone(), events.clone());
            readers.push(tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(mut ev) = events.lock() {
                        ev.push((place.clone(), sim::trace::parse::parse_line(&line)));
                    }
                }
            }));
            monitors.push(child);
        }
        anyhow::Ok(())
    }
    .await;
    let mut marked = Vec::new();
    let outcome = match started {
        Ok(()) => {
            tokio::time::sleep(SETTLE).await;
            let mut result = Ok(());
            for (_, ns) in places {
                match tokio::task::block_in_place(|| mark(ns, proto, true)) {
                    Ok(()) => marked.push(ns.clone()),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            match result {
                Ok(()) => {
                    let m = probe::probe_from_port(task, deadline, source_port).await;
                    tokio::time::sleep(SETTLE).await;
                    Ok(m)
                }
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    // Unmark and stop, whatever happened.
    let mut cleanup_errors = Vec::new();
    for ns in &marked {
        if let Err(e) = tokio::task::block_in_place(|| mark(ns, proto, false)) {
            cleanup_errors.push(format!("{e:#}"));
        }
    }
    for mut m in monitors {
        let _ = m.kill().await;
    }
    for r in readers {
        let _ = r.await;
    }
    let measured = outcome?.context("probe from the trace's source port")?;
    if !cleanup_errors.is_empty() {
        bail!("remove the trace rules: {}", cleanup_errors.join("; "));
    }
    let events = std::mem::take(
        &mut *events
            .lock()
            .map_err(|_| anyhow::anyhow!("trace lock poisoned"))?,
    );
    Ok(Traced {
        events: events
            .into_iter()
            .filter(|(_, l)| !matches!(l, Line::Other(o) if o.is_empty()))
            .collect(),
        measured,
    })
}

/// Marks a rule the trace adds only to be seen, so the story can leave it out.
pub const WATCH_COMMENT: &str = "knetlab-trace";

/// Adds (or removes) the trace's rules in one place: TRACE in the raw table for every
/// packet of the probe's protocol (see the module doc) and ICMP errors, and rules that
/// do nothing in mangle FORWARD, INPUT and POSTROUTING. The kernel reports a traced
/// packet only in the chains that exist, and a namespace without filter rules (a router,
/// a node without policies) would otherwise show where a packet came in but never where
/// it went out.
fn mark(ns: &Netns, proto: &str, add: bool) -> Result<()> {
    let op = if add { "-I" } else { "-D" };
    let traced: [&[&str]; 2] = [
        &["-p", proto],
        &["-p", "icmp", "--icmp-type", "destination-unreachable"],
    ];
    let mut rules: Vec<(&str, &str, Vec<&str>)> = Vec::new();
    for chain in ["PREROUTING", "OUTPUT"] {
        for m in traced {
            let mut args = m.to_vec();
            args.extend_from_slice(&["-j", "TRACE"]);
            rules.push(("raw", chain, args));
        }
    }
    for chain in ["FORWARD", "INPUT", "POSTROUTING"] {
        rules.push((
            "mangle",
            chain,
            vec!["-m", "comment", "--comment", WATCH_COMMENT],
        ));
    }
    for (table, chain, rule) in rules {
        let mut args = vec!["-w", "-t", table, op, chain];
        args.extend_from_slice(&rule);
        Real.run(&NsRef::from(ns), Tool::Iptables, &args, None)
            .with_context(|| {
                format!(
                    "{} a trace rule in {} {table} {chain}",
                    if add { "add" } else { "remove" },
                    ns.name()
                )
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_port_is_outside_the_ephemeral_range() {
        // The kernel's default ip_local_port_range is 32768-60999.
        assert!(source_port(999) < 32_768);
        assert_ne!(source_port(0), source_port(1));
    }
}
