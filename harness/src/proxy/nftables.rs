//! The `nftables` proxy: kube-proxy's nftables mode, rendered by
//! `sim::kube_proxy::nftables` from `sim::kube_proxy::model` (the same input as the
//! iptables proxy) and loaded into each node with one `nft -f -` transaction per sync,
//! nodes in parallel.
//!
//! As kube-proxy does:
//! - the **first sync** of a node is a full one: the `ip kube-proxy` table with its base
//!   chains, sets and maps, then every service's chains and elements, in one atomic
//!   transaction; plus the route for the service CIDR (see [`super::route_service_cidr`]).
//!   If the node already has the table (the engine lost track of it after a failure),
//!   the full sync also flushes and deletes the per-service chains and affinity sets it
//!   no longer wants;
//! - **later syncs** are partial: `NftRules::incremental_transaction` against the
//!   rendering last applied to that node rewrites only the chains of the Services that
//!   changed and adds, replaces or deletes only the map and set elements that changed. A
//!   node whose rendering did not change is not touched at all.
//!
//! Living next to the NetworkPolicy engine: kube-proxy's nftables mode keeps everything
//! in its own table, so the engine's iptables-nft rules (tables `ip filter`/`ip nat`)
//! are never touched, and the order between them is the kernel's hook priorities, as on
//! a real node: DNAT happens in `nat-prerouting` (priority dstnat, -100), before any
//! filter-type base chain at priority 0 (the engine's FORWARD, kube-proxy's
//! `filter-forward`) sees the packet, so policies judge the pod address a connection was
//! sent to, never the ClusterIP. kube-proxy's filter chains only drop or reject (no
//! ACCEPT that could skip the engine: in nftables an accept ends one base chain, not the
//! hook), and the masquerade mark bit (0x4000) is not one the engine uses.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use sim::kube_proxy::nftables::{NftRules, TABLE, listed_names, normalise_listing, render};
use sim::objects::ClusterObjects;
use sim::plan::Plan;

use super::{
    ProxyError, ProxyNodeSync, ProxySyncReport, ServiceProxy, default_system, route_service_cidr,
    sync_nodes,
};
use crate::netns::Netns;
use crate::system::{NsRef, Real, System, Tool, ToolError};

/// The nft binary (nftables 1.0.6 here; kube-proxy needs 1.0.1 or later), for callers
/// outside the proxy that run it themselves (benchmarks).
pub const NFT: &str = Tool::Nft.binary();

/// kube-proxy in nftables mode.
pub struct NftablesProxy {
    /// The rendering last applied to each node, keyed by namespace name; absent = the
    /// node was never synced (or its last sync failed): start it up.
    applied: BTreeMap<String, NftRules>,
    system: Arc<dyn System>,
}

impl Default for NftablesProxy {
    fn default() -> Self {
        Self::with_system(default_system())
    }
}

impl NftablesProxy {
    pub fn new() -> Self {
        Self::default()
    }

    /// The proxy acting through `system` (the fake, in unit tests).
    pub fn with_system(system: Arc<dyn System>) -> Self {
        Self {
            applied: BTreeMap::new(),
            system,
        }
    }
}

impl ServiceProxy for NftablesProxy {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn sync_refs(
        &mut self,
        plan: &Plan,
        nodes: &[(String, NsRef)],
        objects: &ClusterObjects,
    ) -> Result<ProxySyncReport, ProxyError> {
        let system = &*self.system;
        sync_nodes(
            plan,
            nodes,
            objects,
            &mut self.applied,
            |node, input| {
                render(&input, Some(plan.service_cidr)).map_err(|e| {
                    ProxyError::Render(format!("render kube-proxy's nftables for node {node}: {e}"))
                })
            },
            |w, before| apply_node(system, plan, &w.node, &w.ns, &w.want, before),
        )
    }

    fn installed_in(&self, node: &NsRef) -> Result<String, ProxyError> {
        let listing = list_table_in(&*self.system, node)?.unwrap_or_default();
        Ok(normalise_listing(&listing))
    }
}

/// Loads an `nft -f` transaction into a node (atomic: all or nothing).
pub fn load(ns: &Netns, transaction: &str) -> Result<(), ToolError> {
    load_in(&Real, &NsRef::from(ns), transaction)
}

fn load_in(system: &dyn System, ns: &NsRef, transaction: &str) -> Result<(), ToolError> {
    system.run(ns, Tool::Nft, &["-f", "-"], Some(transaction))?;
    Ok(())
}

/// `nft list table ip kube-proxy` in a node, or `None` if the node has no such table.
pub fn list_table(ns: &Netns) -> Result<Option<String>, ToolError> {
    list_table_in(&Real, &NsRef::from(ns))
}

fn list_table_in(system: &dyn System, ns: &NsRef) -> Result<Option<String>, ToolError> {
    let tables = system.run(ns, Tool::Nft, &["list", "tables", "ip"], None)?;
    let wanted = format!("table ip {TABLE}");
    if !tables.lines().any(|l| l.trim() == wanted) {
        return Ok(None);
    }
    system
        .run(ns, Tool::Nft, &["list", "table", "ip", TABLE], None)
        .map(Some)
}

/// Brings one node from `before` (a different rendering last applied, or nothing) to
/// `rules`.
fn apply_node(
    system: &dyn System,
    plan: &Plan,
    node: &str,
    ns: &NsRef,
    rules: &NftRules,
    before: Option<&NftRules>,
) -> anyhow::Result<ProxyNodeSync> {
    let start = Instant::now();
    let (text, full) = match before {
        Some(prev) => (rules.incremental_transaction(prev), false),
        None => (start_up(system, plan, ns, rules)?, true),
    };
    // Different renderings with the same kernel state (e.g. a Service reordered):
    // nothing to write.
    if text.is_empty() {
        return Ok(ProxyNodeSync::unchanged(node, start));
    }
    load_in(system, ns, &text)
        .with_context(|| format!("load kube-proxy's nftables into namespace {}", ns.name()))
        .with_context(|| format!("sync kube-proxy's nftables in node {node}"))?;
    Ok(ProxyNodeSync::written(
        node,
        full,
        text.len(),
        text.lines().count(),
        start,
    ))
}

/// The transaction of a node's first sync, after routing the service CIDR: a full sync,
/// which on a node that already has the table also removes what is no longer wanted.
fn start_up(
    system: &dyn System,
    plan: &Plan,
    ns: &NsRef,
    rules: &NftRules,
) -> Result<String, ProxyError> {
    route_service_cidr(system, plan, ns)?;
    Ok(match list_table_in(system, ns)? {
        None => rules.full_transaction(),
        Some(listing) => {
            let (chains, sets) = listed_names(&listing);
            rules.full_transaction_replacing(
                chains.iter().map(String::as_str),
                sets.iter().map(String::as_str),
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sim::kube_proxy::model::{Endpoint, ProxyConfig, ProxyInput, ServicePort, SessionAffinity};
    use sim::protocol::Protocol;

    fn ip(s: &str) -> std::net::Ipv4Addr {
        s.parse().unwrap()
    }

    /// Three services: plain, ClientIP affinity with a NodePort, and one without
    /// endpoints; then the next state: one endpoint more on the first, the second gone.
    fn states() -> (ProxyInput, ProxyInput) {
        let mut a = ServicePort::cluster_ip(
            "default",
            "a",
            Some("http"),
            Protocol::Tcp,
            ip("10.96.0.10"),
            80,
        );
        a.endpoints = vec![
            Endpoint::ready(ip("10.244.1.2"), 8080, Some("n1")),
            Endpoint::ready(ip("10.244.2.2"), 8080, Some("n2")),
        ];
        let mut b =
            ServicePort::cluster_ip("default", "b", None, Protocol::Udp, ip("10.96.0.11"), 53);
        b.node_port = Some(30053);
        b.session_affinity = SessionAffinity::ClientIp {
            timeout_seconds: 600,
        };
        b.endpoints = vec![Endpoint::ready(ip("10.244.1.3"), 5353, Some("n1"))];
        let c =
            ServicePort::cluster_ip("other", "c", Some("x"), Protocol::Tcp, ip("10.96.0.12"), 81);
        let before = ProxyInput {
            node: "n1".into(),
            node_ip: ip("192.168.200.11"),
            cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
            config: ProxyConfig::default(),
            services: vec![a, b, c],
        };
        let mut after = before.clone();
        after.services[0]
            .endpoints
            .push(Endpoint::ready(ip("10.244.2.9"), 8080, Some("n2")));
        after.services.remove(1);
        (before, after)
    }

    /// A listing as a set of blocks (a chain, set or map each), so that two tables
    /// holding the same things in a different creation order compare equal.
    fn blocks(listing: &str) -> Vec<String> {
        let inner = listing
            .trim()
            .strip_prefix("table ip kube-proxy {")
            .and_then(|l| l.strip_suffix('}'))
            .expect("a table listing");
        let mut out: Vec<String> = inner.split("\n\n").map(|b| b.trim().to_string()).collect();
        out.sort();
        out
    }

    /// In the kernel: a full load, then the partial sync, holds exactly what a fresh full
    /// load of the new state holds; so does a full sync over the old table (start-up on
    /// a node the engine lost track of); and the view is normalised.
    #[test]
    fn partial_and_replacing_syncs_reach_the_same_kernel_state() {
        if !crate::netns::have_privileges() {
            eprintln!("skipped: needs root to create network namespaces");
            return;
        }
        let seed = std::process::id() as u64 ^ 0x6e66_7461_626c_6573;
        let prefix = sim::plan::prefix_from_seed(seed);
        let names: Vec<String> = ["a", "b", "c"]
            .iter()
            .map(|s| format!("{prefix}-nft{s}"))
            .collect();
        // Deletes the namespaces however the test ends, panics included.
        struct Cleanup(Vec<String>);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                for n in &self.0 {
                    if let Err(e) = crate::netns::delete(n) {
                        eprintln!("could not delete namespace {n}: {e:#}");
                    }
                }
            }
        }
        let _cleanup = Cleanup(names.clone());
        let result = (|| -> anyhow::Result<()> {
            let ns = Netns::create_many(&names)?;
            let cidr = Some("10.96.0.0/12".parse().unwrap());
            let (before, after) = states();
            let old = render(&before, cidr).unwrap();
            let new = render(&after, cidr).unwrap();

            assert_eq!(list_table(&ns[0])?, None);
            load(&ns[0], &old.full_transaction())?;
            let inc = new.incremental_transaction(&old);
            load(&ns[0], &inc)?;
            load(&ns[1], &new.full_transaction())?;
            load(&ns[2], &old.full_transaction())?;
            let listing = list_table(&ns[2])?.unwrap();
            let (chains, sets) = listed_names(&listing);
            load(
                &ns[2],
                &new.full_transaction_replacing(
                    chains.iter().map(String::as_str),
                    sets.iter().map(String::as_str),
                ),
            )?;

            let fresh = list_table(&ns[1])?.unwrap();
            let partial = list_table(&ns[0])?.unwrap();
            let replaced = list_table(&ns[2])?.unwrap();
            assert_eq!(
                blocks(&normalise_listing(&partial)),
                blocks(&normalise_listing(&fresh))
            );
            assert_eq!(
                blocks(&normalise_listing(&replaced)),
                blocks(&normalise_listing(&fresh))
            );
            // The old state really differed, and the partial sync was small.
            assert!(fresh.contains("dnat to 10.244.2.9:8080"));
            assert!(!fresh.contains("affinity-"));
            assert!(!fresh.contains("default/b/"));
            assert!(
                !inc.contains("add table") && !inc.contains("flush map"),
                "{inc}"
            );
            // The view: what the proxy reports.
            let view = NftablesProxy::new().installed(&ns[1])?;
            assert!(
                view.contains("elements = { 10.96.0.10,\n\t\t\t     10.96.0.12 }"),
                "{view}"
            );
            assert!(
                view.contains("10.96.0.12 . tcp . 81 comment \"other/c:x\" : goto reject-chain"),
                "{view}"
            );
            Ok(())
        })();
        result.unwrap();
    }
}
