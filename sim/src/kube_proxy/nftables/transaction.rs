//! The transactions `nft -f` is given for a sync: a full one (the whole table, stale
//! per-service chains and affinity sets flushed and deleted) and an incremental one
//! (only the services whose chains changed, and map and set elements diffed one by one,
//! as kube-proxy's `nftElementStorage` does).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;

use super::names::{is_affinity_set_name, is_service_chain_name};
use super::{Container, Element, NftRules, ServiceBlock, T};
use crate::protocol::Protocol;

/// The elements of a rendering, first writer wins (kube-proxy's `ensureElem` skips a key
/// it already holds, e.g. the cluster IP of a second port), keyed by container and key.
fn element_index(rules: &NftRules) -> HashMap<(Container, &str), &Element> {
    let mut out = HashMap::new();
    for b in &rules.services {
        for e in &b.elements {
            out.entry((e.container, e.key.as_str())).or_insert(e);
        }
    }
    out
}

impl NftRules {
    /// The transaction of a full sync on a node without kube-proxy's table (or one whose
    /// per-service chains are all still wanted): `setupNFTables`, then every service's
    /// chains, elements and rules.
    pub fn full_transaction(&self) -> String {
        self.full_transaction_replacing(std::iter::empty(), std::iter::empty())
    }

    /// A full sync on a node whose table already holds `existing_chains` and
    /// `existing_sets` (as [`listed_names`] reads them): per-service chains and affinity
    /// sets no longer wanted are flushed and deleted, as kube-proxy does.
    pub fn full_transaction_replacing<'a>(
        &self,
        existing_chains: impl IntoIterator<Item = &'a str>,
        existing_sets: impl IntoIterator<Item = &'a str>,
    ) -> String {
        let size: usize = self.base.len()
            + self
                .services
                .iter()
                .map(|b| b.decls.len() + b.body.len() + b.elements.len() * 120)
                .sum::<usize>();
        let mut out = String::with_capacity(size);
        out.push_str(&self.base);
        let mut written: HashSet<(Container, &str)> = HashSet::new();
        for b in &self.services {
            out.push_str(&b.decls);
            for e in &b.elements {
                if written.insert((e.container, e.key.as_str())) {
                    e.write_add(&mut out);
                }
            }
            out.push_str(&b.body);
        }
        let active = self.active_chains();
        let stale_chains: BTreeSet<&str> = existing_chains
            .into_iter()
            .filter(|c| is_service_chain_name(c) && !active.contains(c))
            .collect();
        let sets = self.affinity_sets();
        let stale_sets: BTreeSet<&str> = existing_sets
            .into_iter()
            .filter(|s| is_affinity_set_name(s) && !sets.contains(s))
            .collect();
        write_stale(&mut out, &stale_chains, &stale_sets);
        out
    }

    /// kube-proxy's partial sync from `previous` (what the node holds) to `self`: a
    /// Service's chains are rewritten (and its affinity sets declared) only if one of its
    /// ports changed, map and set elements are added, replaced or deleted one by one, and
    /// chains and sets no longer used are flushed and deleted. Adding one endpoint to one
    /// service writes that service's chains, one affinity set at most, and no element
    /// except the ones that changed.
    pub fn incremental_transaction(&self, previous: &NftRules) -> String {
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
            let same = before
                .get(&(b.spn.as_str(), b.protocol))
                .is_some_and(|p| p.decls == b.decls && p.body == b.body);
            if !same {
                changed.insert(b.service());
            }
        }
        for p in &previous.services {
            if !now.contains(&(p.spn.as_str(), p.protocol)) {
                changed.insert(p.service());
            }
        }
        let old_sets: HashMap<&str, &str> = previous
            .services
            .iter()
            .flat_map(|b| b.sets.iter().map(|(n, l)| (n.as_str(), l.as_str())))
            .collect();
        let old_elements = element_index(previous);
        let new_elements = element_index(self);

        let mut out = String::new();
        let mut written: HashSet<(Container, &str)> = HashSet::new();
        for b in &self.services {
            let rewrite = changed.contains(b.service());
            if rewrite {
                out.push_str(&b.decls);
                // An affinity set whose timeout changed cannot be re-added in place; its
                // users were just flushed, so it can go.
                for (name, line) in &b.sets {
                    if old_sets.get(name.as_str()).is_some_and(|old| old != line) {
                        let _ = writeln!(out, "delete set {T} {name}");
                    }
                }
            }
            for e in &b.elements {
                if !written.insert((e.container, e.key.as_str())) {
                    continue;
                }
                match old_elements.get(&(e.container, e.key.as_str())) {
                    Some(old) if old.value == e.value => {}
                    Some(old) => {
                        old.write_delete(&mut out);
                        e.write_add(&mut out);
                    }
                    None => e.write_add(&mut out),
                }
            }
            if rewrite {
                out.push_str(&b.body);
            }
        }
        // `cleanupLeftoverKeys`, in the order the previous rendering wrote them.
        let mut deleted: HashSet<(Container, &str)> = HashSet::new();
        for p in &previous.services {
            for e in &p.elements {
                let k = (e.container, e.key.as_str());
                if !new_elements.contains_key(&k) && deleted.insert(k) {
                    e.write_delete(&mut out);
                }
            }
        }
        let active = self.active_chains();
        let stale_chains: BTreeSet<&str> = previous
            .active_chains()
            .into_iter()
            .filter(|c| !active.contains(c))
            .collect();
        let sets = self.affinity_sets();
        let stale_sets: BTreeSet<&str> = previous
            .affinity_sets()
            .into_iter()
            .filter(|s| !sets.contains(s))
            .collect();
        write_stale(&mut out, &stale_chains, &stale_sets);
        out
    }

    /// The per-service chains this rendering uses (`service-`, `local-`, `external-`,
    /// `firewall-`, `endpoint-`).
    pub fn active_chains(&self) -> BTreeSet<&str> {
        self.services
            .iter()
            .flat_map(|b| b.chains.iter().map(String::as_str))
            .collect()
    }

    /// The affinity sets this rendering uses.
    pub fn affinity_sets(&self) -> BTreeSet<&str> {
        self.services
            .iter()
            .flat_map(|b| b.sets.iter().map(|(n, _)| n.as_str()))
            .collect()
    }

    /// The per-service chains of one service port (`ns/name:port`, protocol), in the
    /// order a sync declares them; empty for a headless port or one without endpoints.
    pub fn chains_of(&self, service_port_name: &str, protocol: Protocol) -> Vec<&str> {
        self.services
            .iter()
            .find(|b| b.spn == service_port_name && b.protocol == protocol)
            .map(|b| b.chains.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// Number of service ports rendered (headless ones excluded).
    pub fn service_ports(&self) -> usize {
        self.services.len()
    }
}

/// Flushes every stale chain first (they may refer to one another), then deletes them,
/// then the stale affinity sets (whose users are gone by then).
fn write_stale(out: &mut String, chains: &BTreeSet<&str>, sets: &BTreeSet<&str>) {
    for c in chains {
        let _ = writeln!(out, "flush chain {T} {c}");
    }
    for c in chains {
        let _ = writeln!(out, "delete chain {T} {c}");
    }
    for s in sets {
        let _ = writeln!(out, "delete set {T} {s}");
    }
}
