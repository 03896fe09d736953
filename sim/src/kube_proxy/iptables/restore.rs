//! The restore texts of a sync, from one rendering: the full sync (every table kube-proxy
//! touches, optionally deleting per-service chains no longer wanted), the partial sync
//! (only the services whose chains changed since the previous rendering), and what
//! `iptables-save` shows afterwards.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::jumps::{JUMP_CHAINS, bootstrap_restore};
use super::state::{IptablesState, RestoreError};
use super::{NAT_TOP_CHAINS, ProxyRules, ServiceBlock, Table, declared_names, push_decl};
use crate::kube_proxy::names::{self as pn, KUBE_PROXY_CANARY};
use crate::protocol::Protocol;

impl ProxyRules {
    /// The restore text of a full sync, exactly as kube-proxy writes it (no stale-chain
    /// deletion: see [`Self::full_restore_replacing`]).
    pub fn full_restore(&self) -> String {
        self.assemble(&|_| true, &[])
    }

    /// A full sync on a node where `existing_nat_chains` exist (the names of
    /// `iptables-save -t nat`): per-service chains that are no longer wanted are flushed
    /// and deleted (`:NAME - [0:0]` then `-X NAME`), as kube-proxy does.
    pub fn full_restore_replacing<'a>(
        &self,
        existing_nat_chains: impl IntoIterator<Item = &'a str>,
    ) -> String {
        let active = self.active_service_chains();
        let stale: BTreeSet<&str> = existing_nat_chains
            .into_iter()
            .filter(|c| pn::is_service_chain_name(c) && !active.contains(c))
            .collect();
        let stale: Vec<String> = stale.into_iter().map(str::to_string).collect();
        self.assemble(&|_| true, &stale)
    }

    /// kube-proxy's partial sync from `previous` (what the node holds) to `self`: the
    /// top-level chains are rewritten whole, a Service's own chains only if one of its
    /// ports changed, and chains no longer used are deleted. Adding one endpoint to one
    /// service rewrites that service's chains and nothing else of the per-service state.
    pub fn incremental_restore(&self, previous: &ProxyRules) -> String {
        let before: HashMap<(&str, Protocol), &ServiceBlock> = previous
            .services
            .iter()
            .map(|b| ((b.spn.as_str(), b.protocol), b))
            .collect();
        let now: HashSet<(&str, Protocol)> = self
            .services
            .iter()
            .map(|b| (b.spn.as_str(), b.protocol))
            .collect();
        let mut changed: HashSet<&str> = HashSet::new();
        for b in &self.services {
            let same = before.get(&(b.spn.as_str(), b.protocol)).is_some_and(|p| {
                previous.decls_of(p) == self.decls_of(b) && previous.rules_of(p) == self.rules_of(b)
            });
            if !same {
                changed.insert(b.service());
            }
        }
        for p in &previous.services {
            if !now.contains(&(p.spn.as_str(), p.protocol)) {
                changed.insert(p.service());
            }
        }
        let active = self.active_service_chains();
        let stale: BTreeSet<&str> = previous
            .active_service_chains()
            .into_iter()
            .filter(|c| !active.contains(c))
            .collect();
        let stale: Vec<String> = stale.into_iter().map(str::to_string).collect();
        self.assemble(&|b| changed.contains(b.service()), &stale)
    }

    fn decls_of(&self, b: &ServiceBlock) -> &str {
        &self.decl_buf[b.decls.clone()]
    }

    fn rules_of(&self, b: &ServiceBlock) -> &str {
        &self.rules_buf[b.rules.clone()]
    }

    /// `*filter` then `*nat`, in kube-proxy's buffer order: chain lines first, then the
    /// rules; per-service chains only where `rewrite` says so; stale chains flushed by
    /// their chain line and deleted just before the final KUBE-NODEPORTS tail-call.
    fn assemble(&self, rewrite: &dyn Fn(&ServiceBlock) -> bool, stale: &[String]) -> String {
        let written: Vec<bool> = self.services.iter().map(rewrite).collect();
        let mut size = self.filter_buf.len() + self.nat_top_buf.len() + 4096;
        for (b, w) in self.services.iter().zip(&written) {
            if *w {
                size += b.decls.len() + b.rules.len();
            }
        }
        let mut out = String::with_capacity(size + stale.len() * 64);
        out.push_str("*filter\n");
        for c in &self.filter_chains {
            push_decl(&mut out, c);
        }
        out.push_str(&self.filter_head);
        // Filter rules are top-level only: always written whole, in service order.
        out.push_str(&self.filter_buf);
        out.push_str(&self.filter_tail);
        out.push_str("COMMIT\n*nat\n");
        for c in NAT_TOP_CHAINS {
            push_decl(&mut out, c);
        }
        for (b, w) in self.services.iter().zip(&written) {
            if *w {
                out.push_str(self.decls_of(b));
            }
        }
        for c in stale {
            push_decl(&mut out, c);
        }
        out.push_str(&self.nat_head);
        for (b, w) in self.services.iter().zip(&written) {
            out.push_str(&self.nat_top_buf[b.nat_top.clone()]);
            if *w {
                out.push_str(self.rules_of(b));
            }
        }
        for c in stale {
            out.push_str("-X ");
            out.push_str(c);
            out.push('\n');
        }
        out.push_str(&self.nat_tail);
        out.push_str("COMMIT\n");
        out
    }

    /// The per-service nat chains this rendering uses (SVC, SVL, EXT, FW, SEP).
    pub fn active_service_chains(&self) -> BTreeSet<&str> {
        self.services
            .iter()
            .flat_map(|b| declared_names(self.decls_of(b)))
            .collect()
    }

    /// Every chain kube-proxy owns on the node with these rules, per table: the
    /// top-level chains, the canaries and the per-service chains.
    pub fn owned_chains(&self) -> BTreeSet<(Table, String)> {
        let mut out: BTreeSet<(Table, String)> = BTreeSet::new();
        for t in [Table::Mangle, Table::Filter, Table::Nat] {
            out.insert((t, KUBE_PROXY_CANARY.to_string()));
        }
        for j in &JUMP_CHAINS {
            out.insert((j.table, j.target.to_string()));
        }
        for c in &self.filter_chains {
            out.insert((Table::Filter, c.to_string()));
        }
        for c in NAT_TOP_CHAINS {
            out.insert((Table::Nat, c.to_string()));
        }
        for c in self.active_service_chains() {
            out.insert((Table::Nat, c.to_string()));
        }
        out
    }

    /// The per-service nat chains of one service port (`ns/name:port`, protocol), in
    /// the order a sync declares them; empty for a headless port or one without
    /// endpoints.
    pub fn chains_of(&self, service_port_name: &str, protocol: Protocol) -> Vec<&str> {
        self.services
            .iter()
            .find(|b| b.spn == service_port_name && b.protocol == protocol)
            .map(|b| declared_names(self.decls_of(b)).collect())
            .unwrap_or_default()
    }

    /// What `iptables-save` prints on a fresh node after kube-proxy started (canaries and
    /// jumps, [`bootstrap_restore`]) and ran this full sync.
    pub fn saved(&self) -> Result<String, RestoreError> {
        let mut state = IptablesState::new();
        state.apply_restore(&bootstrap_restore(true))?;
        state.apply_restore(&self.full_restore())?;
        Ok(state.save())
    }
}
