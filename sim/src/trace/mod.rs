//! Following one packet (`cargo xtask scenario NAME --trace FROM TO:PORT/PROTO`): the
//! harness marks one probe's packets with iptables' `TRACE` target in every node, reads
//! the kernel's trace events with `xtables-monitor --trace`, and this module turns them
//! into a walkthrough. [`parse`] reads the monitor's lines; [`story`] groups them into
//! hops and says what each chain, rule, rewrite and device meant.

pub mod parse;
pub mod story;

pub use parse::{Line, parse as parse_monitor};
pub use story::{Events, NodeInfo, TraceContext, tell};
