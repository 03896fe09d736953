//! Tearing a cluster down: CNI DEL for every pod (several at once, across nodes), then
//! the prefix sweep ([`sweep::clean_prefix`]: any attachment still in the result cache,
//! every namespace of the run (fabric, nodes, pods, router and hosts), the state directory, and a short wait until `ip netns
//! list` no longer shows the run). It never stops at the first failure.

use std::fmt;
use std::time::{Duration, Instant};

use super::Cluster;
use crate::sweep;

/// One thing a teardown could not undo.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TeardownError {
    /// The CNI DEL of one pod's interface failed.
    #[error("{message}")]
    Del {
        node: String,
        pod: String,
        ifname: String,
        message: String,
    },
    /// A namespace of the run could not be removed.
    #[error("{message}")]
    Namespace { name: String, message: String },
    /// The prefix sweep reported a failure.
    #[error("{0}")]
    Sweep(String),
    /// The teardown's own task died (the sweep by prefix ran instead).
    #[error("teardown task failed: {0}")]
    Task(String),
}

/// Everything a teardown could not undo, in the order it happened. Printed only at the
/// edge (`join`, `Display`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TeardownErrors(pub Vec<TeardownError>);

impl TeardownErrors {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, TeardownError> {
        self.0.iter()
    }

    /// Each error's text, joined with `sep`.
    pub fn join(&self, sep: &str) -> String {
        self.to_strings().join(sep)
    }

    /// Each error's text.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

impl fmt::Display for TeardownErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.join("; "))
    }
}

impl<'a> IntoIterator for &'a TeardownErrors {
    type Item = &'a TeardownError;
    type IntoIter = std::slice::Iter<'a, TeardownError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// What a teardown did and what went wrong on the way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TeardownReport {
    pub errors: TeardownErrors,
    pub elapsed: Duration,
    /// Of `elapsed`, the CNI DELs.
    pub cni_del: Duration,
    pub namespaces_removed: usize,
}

impl TeardownReport {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

impl Cluster {
    pub async fn teardown(self) -> TeardownReport {
        let start = Instant::now();
        let del = self.deleter();
        let Cluster {
            plan,
            fabric,
            nodes,
            router,
            hosts,
            pods,
            mut guard,
            plugin_dir: _,
        } = self;
        // Teardown takes over from the guard; no handle may outlive the deletes (an open
        // namespace file keeps the namespace, and its links, alive).
        guard.armed = false;
        let prefix = plan.prefix.clone();
        let work = tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            let mut errors = del();
            let cni_del = t.elapsed();
            drop((fabric, nodes, router, hosts, pods));
            // The sweep DELs whatever the cache still holds (attachments whose DEL just
            // failed, or ADDs cut short by a cancelled add_pods), then removes the
            // namespaces and the state directory.
            let swept = sweep::clean_prefix(&prefix);
            errors.extend(
                swept
                    .errors
                    .iter()
                    .map(|e| TeardownError::Sweep(e.to_string())),
            );
            (errors, cni_del, swept.namespaces_removed.len())
        })
        .await;
        let (errors, cni_del, namespaces_removed) = match work {
            Ok(x) => x,
            Err(e) => {
                // The blocking task died: fall back to the sweep by prefix.
                let mut errors = vec![TeardownError::Task(e.to_string())];
                let r = sweep::clean_prefix(&plan.prefix);
                errors.extend(r.errors.iter().map(|e| TeardownError::Sweep(e.to_string())));
                (errors, Duration::ZERO, r.namespaces_removed.len())
            }
        };
        TeardownReport {
            errors: TeardownErrors(errors),
            elapsed: start.elapsed(),
            cni_del,
            namespaces_removed,
        }
    }
}
