//! Tearing a cluster down: CNI DEL for every pod (several at once, across nodes), then
//! the prefix sweep ([`sweep::clean_prefix`]: any attachment still in the result cache,
//! every namespace of the run (fabric, nodes, pods, router and hosts), the state directory, and a short wait until `ip netns
//! list` no longer shows the run). It never stops at the first failure.

use std::time::{Duration, Instant};

use super::Cluster;
use crate::sweep;

/// What a teardown did and what went wrong on the way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TeardownReport {
    pub errors: Vec<String>,
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
            errors.extend(swept.errors.iter().map(ToString::to_string));
            (errors, cni_del, swept.namespaces_removed.len())
        })
        .await;
        let (errors, cni_del, namespaces_removed) = match work {
            Ok(x) => x,
            Err(e) => {
                // The blocking task died: fall back to the sweep by prefix.
                let mut errors = vec![format!("teardown task failed: {e}")];
                let r = sweep::clean_prefix(&plan.prefix);
                errors.extend(r.errors.iter().map(ToString::to_string));
                (errors, Duration::ZERO, r.namespaces_removed.len())
            }
        };
        TeardownReport {
            errors,
            elapsed: start.elapsed(),
            cni_del,
            namespaces_removed,
        }
    }
}
