//! Doing one piece of blocking work on every node at once (rule loads, tool runs), each
//! on its own scoped thread, and gathering every node's failure into one node-keyed list
//! instead of stopping at the first. A thread that panics becomes an error for its node
//! instead of taking the whole run down.
//!
//! [`sync_each`] adds what every engine needs on top: what each node holds as far as the
//! engine knows, handed to the node's work, remembered when the work succeeded and
//! forgotten when it failed (so the next sync starts that node again from what the
//! kernel really holds).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use anyhow::{Result, anyhow};

use super::NsRef;

/// Runs `f` on every item in parallel; results come back in the items' order.
pub fn each<I: Sync, T: Send>(
    items: &[I],
    what: &str,
    f: impl Fn(&I) -> Result<T> + Sync,
) -> Vec<Result<T>> {
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = items.iter().map(|item| s.spawn(move || f(item))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a thread doing {what} panicked")))
            })
            .collect()
    })
}

/// What failed in one node.
#[derive(Debug)]
pub struct NodeError {
    pub node: String,
    pub error: anyhow::Error,
}

/// Every node that failed, in the nodes' order.
#[derive(Debug, Default)]
pub struct NodeErrors(pub Vec<NodeError>);

impl NodeErrors {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The nodes that failed.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|e| e.node.as_str())
    }
}

/// One line per node: `node NAME: what failed`, lines after the first indented.
impl fmt::Display for NodeErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n  ")?;
            }
            write!(f, "node {}: {:#}", e.node, e.error)?;
        }
        Ok(())
    }
}

impl std::error::Error for NodeErrors {}

/// Runs `f` for every node (name, namespace) in parallel; every value in the nodes'
/// order when all succeeded, else every failure.
pub fn each_node<T: Send>(
    nodes: &[(String, NsRef)],
    what: &str,
    f: impl Fn(&str, &NsRef) -> Result<T> + Sync,
) -> Result<Vec<T>, NodeErrors> {
    let results = each(nodes, what, |(node, ns)| f(node, ns));
    let mut done = Vec::new();
    let mut errors = NodeErrors::default();
    for ((node, _), result) in nodes.iter().zip(results) {
        match result {
            Ok(v) => done.push(v),
            Err(error) => errors.0.push(NodeError {
                node: node.clone(),
                error,
            }),
        }
    }
    if errors.is_empty() {
        Ok(done)
    } else {
        Err(errors)
    }
}

/// One node's share of a sync: its name, its namespace and what it should hold.
pub struct NodeWork<W> {
    pub node: String,
    pub ns: NsRef,
    pub want: W,
}

/// Brings every node in line at once. `apply` gets a node's work and what the node held
/// as far as `held` knows (keyed by namespace name; taken out of it), and returns its
/// report and what the node holds now, which `held` then remembers. A node whose apply
/// failed stays out of `held`: unknown, so the next sync starts it afresh. Reports come
/// back in the nodes' order when every node succeeded, else every failure.
pub fn sync_each<W: Sync, S: Send, T: Send>(
    work: Vec<NodeWork<W>>,
    held: &mut BTreeMap<String, S>,
    what: &str,
    apply: impl Fn(&NodeWork<W>, Option<S>) -> Result<(T, S)> + Sync,
) -> Result<Vec<T>, NodeErrors> {
    let items: Vec<(NodeWork<W>, Mutex<Option<S>>)> = work
        .into_iter()
        .map(|w| {
            let before = held.remove(w.ns.name());
            (w, Mutex::new(before))
        })
        .collect();
    let results = each(&items, what, |(w, before)| {
        let before = before
            .lock()
            .map_err(|_| anyhow!("a node's state lock was poisoned"))?
            .take();
        apply(w, before)
    });
    let mut reports = Vec::new();
    let mut errors = NodeErrors::default();
    for ((w, _), result) in items.into_iter().zip(results) {
        match result {
            Ok((report, now)) => {
                held.insert(w.ns.name().to_string(), now);
                reports.push(report);
            }
            Err(error) => errors.0.push(NodeError {
                node: w.node,
                error,
            }),
        }
    }
    if errors.is_empty() {
        Ok(reports)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_turns_panics_into_errors() {
        let out = each(&[1, 2, 3], "a test", |n| {
            if *n == 2 {
                panic!("boom");
            }
            Ok(n * 10)
        });
        assert_eq!(out[0].as_ref().unwrap(), &10);
        assert!(out[1].as_ref().unwrap_err().to_string().contains("a test"));
        assert_eq!(out[2].as_ref().unwrap(), &30);
    }

    fn work(names: &[&str]) -> Vec<NodeWork<u32>> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| NodeWork {
                node: n.to_string(),
                ns: NsRef::named(format!("x-{n}")),
                want: i as u32,
            })
            .collect()
    }

    #[test]
    fn gathers_every_failure_by_node_and_forgets_failed_nodes() {
        let mut held = BTreeMap::from([("x-a".to_string(), 7), ("x-b".to_string(), 8)]);
        let err = sync_each(work(&["a", "b", "c"]), &mut held, "a test", |w, before| {
            if w.node != "a" {
                anyhow::bail!("{} broke (held {before:?})", w.node);
            }
            Ok((before, w.want))
        })
        .unwrap_err();
        assert_eq!(err.nodes().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(
            err.to_string(),
            "node b: b broke (held Some(8))\n  node c: c broke (held None)"
        );
        // a is remembered with what it holds now; b and c are unknown.
        assert_eq!(held, BTreeMap::from([("x-a".to_string(), 0)]));

        let ok = sync_each(work(&["a", "b"]), &mut held, "a test", |w, before| {
            Ok((before, w.want + 10))
        })
        .unwrap();
        assert_eq!(ok, [Some(0), None]);
        assert_eq!(
            held,
            BTreeMap::from([("x-a".to_string(), 10), ("x-b".to_string(), 11)])
        );
    }
}
