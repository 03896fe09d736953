//! A small model of netfilter tables, fed with restore text (as `iptables-restore
//! --noflush` applies it) and printed like `iptables-save`; and kube-proxy's part of a
//! saved ruleset.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::save::{saved_spec, split_words};
use super::{FILTER_TOP_CHAINS, NAT_TOP_CHAINS, Table};
use crate::kube_proxy::names::{self as pn, KUBE_FIREWALL, KUBE_PROXY_CANARY};

/// A restore text the kernel (iptables-nft 1.8) would refuse, with the line it stops at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct RestoreError {
    /// 1-based line of the restore text.
    pub line: usize,
    pub message: String,
}

/// Targets that are not chains.
pub(super) const BUILTIN_TARGETS: [&str; 26] = [
    "ACCEPT",
    "DROP",
    "RETURN",
    "REJECT",
    "QUEUE",
    "NFQUEUE",
    "MARK",
    "CONNMARK",
    "MASQUERADE",
    "DNAT",
    "SNAT",
    "REDIRECT",
    "NETMAP",
    "LOG",
    "NFLOG",
    "TRACE",
    "CT",
    "NOTRACK",
    "TPROXY",
    "TCPMSS",
    "CHECKSUM",
    "CLASSIFY",
    "DSCP",
    "SET",
    "AUDIT",
    "TTL",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SavedRule {
    /// The spec in saved form, starting with a blank unless empty.
    spec: String,
    target: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TableState {
    /// Built-in chains in save order.
    builtins: Vec<(&'static str, Vec<SavedRule>)>,
    user: BTreeMap<String, Vec<SavedRule>>,
}

impl TableState {
    fn new(table: Table) -> Self {
        Self {
            builtins: table
                .builtin_chains()
                .iter()
                .map(|c| (*c, Vec::new()))
                .collect(),
            user: BTreeMap::new(),
        }
    }

    fn chain_mut(&mut self, name: &str) -> Option<&mut Vec<SavedRule>> {
        if let Some((_, rules)) = self.builtins.iter_mut().find(|(b, _)| *b == name) {
            return Some(rules);
        }
        self.user.get_mut(name)
    }

    fn references(&self, chain: &str) -> bool {
        self.builtins
            .iter()
            .map(|(_, r)| r)
            .chain(self.user.values())
            .flatten()
            .any(|r| r.target.as_deref() == Some(chain))
    }
}

/// The netfilter tables of one network namespace as far as restore text shapes them:
/// feed it what would be given to `iptables-restore --noflush`, read back what
/// `iptables-save` would print. It checks what the kernel checks (a rule's chain and its
/// jump target exist when the line is read, a deleted chain is empty and unreferenced)
/// and applies each table's section atomically at its `COMMIT`, so a rendering that would
/// fail on a node fails here. Rules are stored in [`normalise_rule`] form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IptablesState {
    tables: BTreeMap<Table, TableState>,
}

impl IptablesState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies restore text with `--noflush` semantics: a chain line creates or flushes a
    /// user chain (and leaves built-in chains alone); `-A`, `-I`, `-N`, `-F` and `-X` act
    /// on the table of the section. A section with an error is not applied (earlier
    /// sections stay applied, as with iptables-restore).
    pub fn apply_restore(&mut self, text: &str) -> Result<(), RestoreError> {
        let mut open: Option<(Table, TableState)> = None;
        for (no, raw) in text.lines().enumerate() {
            let line_no = no + 1;
            let err = |message: String| RestoreError {
                line: line_no,
                message,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('*') {
                if open.is_some() {
                    return Err(err("table section started before COMMIT".into()));
                }
                let table = Table::parse(name.trim())
                    .ok_or_else(|| err(format!("unknown table {name:?}")))?;
                let state = self
                    .tables
                    .get(&table)
                    .cloned()
                    .unwrap_or_else(|| TableState::new(table));
                open = Some((table, state));
                continue;
            }
            let Some((table, state)) = open.as_mut() else {
                return Err(err(format!("{line:?} outside a table section")));
            };
            if line == "COMMIT" {
                if let Some((t, s)) = open.take() {
                    self.tables.insert(t, s);
                }
                continue;
            }
            if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().unwrap_or_default();
                if name.is_empty() {
                    return Err(err("chain line without a name".into()));
                }
                if !table.builtin_chains().contains(&name) {
                    state.user.entry(name.to_string()).or_default().clear();
                }
                continue;
            }
            let words = split_words(line);
            let cmd = words.first().map(|w| w.text.as_str()).unwrap_or_default();
            let chain = words.get(1).map(|w| w.text.clone()).unwrap_or_default();
            match cmd {
                "-A" | "-I" => {
                    let mut rest = &words[2.min(words.len())..];
                    let mut position = 1usize;
                    if cmd == "-I"
                        && let Some(n) = rest.first().and_then(|w| w.text.parse::<usize>().ok())
                    {
                        position = n.max(1);
                        rest = &rest[1..];
                    }
                    let (spec, target) = saved_spec(rest);
                    if let Some(t) = &target
                        && !BUILTIN_TARGETS.contains(&t.as_str())
                        && !state.user.contains_key(t)
                    {
                        return Err(err(format!("Chain '{t}' does not exist")));
                    }
                    let rules = state
                        .chain_mut(&chain)
                        .ok_or_else(|| err(format!("Chain '{chain}' does not exist")))?;
                    let rule = SavedRule { spec, target };
                    if cmd == "-A" {
                        rules.push(rule);
                    } else {
                        let at = (position - 1).min(rules.len());
                        rules.insert(at, rule);
                    }
                }
                "-N" => {
                    if state.chain_mut(&chain).is_some() {
                        return Err(err(format!("Chain '{chain}' already exists")));
                    }
                    state.user.insert(chain, Vec::new());
                }
                "-F" => {
                    state
                        .chain_mut(&chain)
                        .ok_or_else(|| err(format!("Chain '{chain}' does not exist")))?
                        .clear();
                }
                "-X" => {
                    match state.user.get(&chain) {
                        None => return Err(err(format!("Chain '{chain}' does not exist"))),
                        Some(rules) if !rules.is_empty() => {
                            return Err(err(format!(
                                "CHAIN_DEL failed (Directory not empty): chain {chain}"
                            )));
                        }
                        Some(_) => {}
                    }
                    if state.references(&chain) {
                        return Err(err(format!(
                            "CHAIN_DEL failed (Device or resource busy): chain {chain}"
                        )));
                    }
                    state.user.remove(&chain);
                }
                _ => return Err(err(format!("unsupported restore line {line:?}"))),
            }
        }
        if open.is_some() {
            return Err(RestoreError {
                line: text.lines().count(),
                message: "missing COMMIT".into(),
            });
        }
        Ok(())
    }

    /// What `iptables-save` prints (without its `#` header and trailer lines): the tables
    /// in the nft backend's order, built-in chains with policy ACCEPT, user chains sorted
    /// by name, then the rules chain by chain in that same order.
    pub fn save(&self) -> String {
        let mut out = String::new();
        for (table, state) in &self.tables {
            let _ = writeln!(out, "*{table}");
            for (b, _) in &state.builtins {
                let _ = writeln!(out, ":{b} ACCEPT [0:0]");
            }
            for name in state.user.keys() {
                let _ = writeln!(out, ":{name} - [0:0]");
            }
            let builtins = state.builtins.iter().map(|(n, r)| (*n, r));
            let user = state.user.iter().map(|(n, r)| (n.as_str(), r));
            for (name, rules) in builtins.chain(user) {
                for r in rules {
                    let _ = writeln!(out, "-A {name}{}", r.spec);
                }
            }
            out.push_str("COMMIT\n");
        }
        out
    }

    /// The user chains of a table, sorted.
    pub fn chains(&self, table: Table) -> Vec<&str> {
        self.tables
            .get(&table)
            .map(|t| t.user.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }
}

/// Whether `chain` in `table` is one kube-proxy owns (or, for KUBE-FIREWALL, duplicates).
pub fn is_kube_proxy_chain(table: Table, chain: &str) -> bool {
    match table {
        Table::Mangle | Table::Raw => chain == KUBE_PROXY_CANARY,
        Table::Filter => {
            chain == KUBE_PROXY_CANARY
                || chain == KUBE_FIREWALL
                || FILTER_TOP_CHAINS.contains(&chain)
        }
        Table::Nat => {
            chain == KUBE_PROXY_CANARY
                || NAT_TOP_CHAINS.contains(&chain)
                || pn::is_service_chain_name(chain)
        }
    }
}

/// The kube-proxy part of an `iptables-save` dump, normalised so that a real node's dump
/// and [`ProxyRules::saved`] compare as plain strings: header and trailer comments
/// dropped, counters zeroed, tables without kube-proxy chains dropped, and in the others
/// the built-in chain lines, kube-proxy's chains and their rules, and the built-in
/// chains' jumps into kube-proxy's chains; every rule through [`normalise_rule`].
pub fn kube_proxy_view(iptables_save: &str) -> String {
    let mut out = String::new();
    let mut table: Option<Table> = None;
    let mut section = String::new();
    let mut keep = false;
    for raw in iptables_save.lines() {
        let line = raw.trim_end();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            table = Table::parse(name.trim());
            section.clear();
            let _ = writeln!(section, "{line}");
            keep = false;
            continue;
        }
        let Some(t) = table else { continue };
        if line == "COMMIT" {
            if keep {
                out.push_str(&section);
                out.push_str("COMMIT\n");
            }
            table = None;
            continue;
        }
        if let Some(decl) = line.strip_prefix(':') {
            let mut parts = decl.split_whitespace();
            let name = parts.next().unwrap_or_default();
            let policy = parts.next().unwrap_or("-");
            if t.builtin_chains().contains(&name) {
                let _ = writeln!(section, ":{name} {policy} [0:0]");
            } else if is_kube_proxy_chain(t, name) {
                let _ = writeln!(section, ":{name} - [0:0]");
                keep = true;
            }
            continue;
        }
        let words = split_words(line);
        if words.len() < 2 || words[0].text != "-A" {
            continue;
        }
        let chain = words[1].text.as_str();
        let (spec, target) = saved_spec(&words[2..]);
        let ours = is_kube_proxy_chain(t, chain)
            || (t.builtin_chains().contains(&chain)
                && target.as_deref().is_some_and(|x| is_kube_proxy_chain(t, x)));
        if ours {
            let _ = writeln!(section, "-A {chain}{spec}");
            keep = true;
        }
    }
    out
}
