//! Reachability matrices: what each probe measured, what was expected, what the oracle
//! predicted, and the Cyclonus-style truth tables (`.` reachable, `X` not) and diffs that
//! show them. Pure data and text; the harness fills the measurements in.

use std::net::Ipv4Addr;

use serde::Serialize;

use crate::protocol::PortProto;
use crate::scenario::Peer;

mod table;

pub use table::{LEGEND, Tally, render_step, render_tables, tally};

/// What one probe observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The right pod answered.
    Allowed,
    /// Delivered, but nothing listened: a TCP RST or ICMP port unreachable from the pod.
    Refused,
    /// No answer by the deadline.
    Dropped,
    /// An ICMP error from a filter on the way (admin-prohibited).
    Rejected,
    /// The harness failed to measure (never a verdict).
    Error,
}

impl Outcome {
    /// allow / deny, or `None` when nothing was measured.
    pub fn verdict(self) -> Option<Verdict> {
        match self {
            Outcome::Allowed => Some(Verdict::Allow),
            Outcome::Refused | Outcome::Dropped | Outcome::Rejected => Some(Verdict::Deny),
            Outcome::Error => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Refused => "refused",
            Outcome::Dropped => "dropped",
            Outcome::Rejected => "rejected",
            Outcome::Error => "error",
        }
    }
}

/// Reachable or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Deny,
}

impl Verdict {
    pub fn from_allowed(allowed: bool) -> Self {
        if allowed {
            Verdict::Allow
        } else {
            Verdict::Deny
        }
    }
}

/// The measurement of one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Measurement {
    pub outcome: Outcome,
    /// Who answered (`ns/name` as the server said it), if anyone did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<String>,
    /// The client address the server saw, if it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seen_source: Option<Ipv4Addr>,
    /// Extra words: the error, or what arrived instead of an answer.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Time from the first packet to the outcome, in microseconds.
    pub elapsed_us: u64,
}

/// One cell of a step's matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub from: Peer,
    /// The server: a pod or an external host.
    pub to: Peer,
    pub port: PortProto,
    /// The client's own address (the pod's IP, or the node's underlay address).
    pub client_ip: Option<Ipv4Addr>,
    /// From the scenario's `expect`; `None` when not asserted (e.g. self cells).
    pub expected: Option<Verdict>,
    /// Whether this cell is checked against `expected` (self cells only with `loopback: check`).
    pub asserted: bool,
    pub measured: Measurement,
    /// The oracle's prediction and its reasoning, when an oracle ran.
    pub oracle: Option<Verdict>,
    pub reason: Option<String>,
}

impl Cell {
    pub fn is_self(&self) -> bool {
        matches!(&self.from, Peer::Pod(_)) && self.from == self.to
    }

    /// Whether the server saw another source address than the client's own (NAT).
    pub fn translated_source(&self) -> Option<Ipv4Addr> {
        match (self.client_ip, self.measured.seen_source) {
            (Some(own), Some(seen)) if own != seen => Some(seen),
            _ => None,
        }
    }

    /// A problem with this cell, if any: measured against expected, measured against
    /// oracle, or a measurement error.
    pub fn mismatch(&self) -> Option<String> {
        let verdict = self.measured.outcome.verdict();
        if self.measured.outcome == Outcome::Error {
            return Some(format!("measurement error: {}", self.measured.detail));
        }
        if self.asserted {
            if let Some(exp) = self.expected
                && Some(exp) != verdict {
                    return Some(format!(
                        "expected {}, measured {}",
                        verdict_word(exp),
                        self.measured.outcome.as_str()
                    ));
                }
            if let Some(or) = self.oracle
                && Some(or) != verdict {
                    return Some(format!(
                        "oracle says {}, measured {}",
                        verdict_word(or),
                        self.measured.outcome.as_str()
                    ));
                }
        }
        None
    }
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "allow",
        Verdict::Deny => "deny",
    }
}

/// The result of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepResult {
    pub name: String,
    pub cells: Vec<Cell>,
}

impl StepResult {
    pub fn ok(&self) -> bool {
        self.cells.iter().all(|c| c.mismatch().is_none())
    }

    pub fn mismatches(&self) -> impl Iterator<Item = (&Cell, String)> {
        self.cells
            .iter()
            .filter_map(|c| c.mismatch().map(|m| (c, m)))
    }
}
