//! The jumps kube-proxy inserts into the built-in chains on every full sync
//! (`iptablesJumpChains`), and the restore text that bootstraps a node with them.

use std::fmt::Write as _;

use crate::kube_proxy::names::{
    KUBE_EXTERNAL_SERVICES, KUBE_FIREWALL, KUBE_FORWARD, KUBE_NODEPORTS, KUBE_POSTROUTING,
    KUBE_PROXY_CANARY, KUBE_PROXY_FIREWALL, KUBE_SERVICES,
};

use super::Table;

/// One entry of kube-proxy's `iptablesJumpChains` (and `iptablesKubeletJumpChains`): on
/// every full sync it ensures the chain `target` exists and that `source` has this jump,
/// inserting it at position 1 (`iptables -I`) when missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JumpChain {
    pub table: Table,
    pub target: &'static str,
    pub source: &'static str,
    /// `None` for kubelet's KUBE-FIREWALL jumps.
    pub comment: Option<&'static str>,
    /// Preceded by `-m conntrack --ctstate NEW`.
    pub new_only: bool,
}

pub(super) const fn jump(
    table: Table,
    target: &'static str,
    source: &'static str,
    comment: Option<&'static str>,
    new_only: bool,
) -> JumpChain {
    JumpChain {
        table,
        target,
        source,
        comment,
        new_only,
    }
}

pub(super) const EXTERNALLY_VISIBLE: Option<&str> =
    Some("kubernetes externally-visible service portals");
pub(super) const PORTALS: Option<&str> = Some("kubernetes service portals");
pub(super) const LB_FIREWALL: Option<&str> = Some("kubernetes load balancer firewall");

/// kube-proxy's jump list in its order, then kubelet's two KUBE-FIREWALL duplicates.
pub const JUMP_CHAINS: [JumpChain; 14] = [
    jump(
        Table::Filter,
        KUBE_EXTERNAL_SERVICES,
        "INPUT",
        EXTERNALLY_VISIBLE,
        true,
    ),
    jump(
        Table::Filter,
        KUBE_EXTERNAL_SERVICES,
        "FORWARD",
        EXTERNALLY_VISIBLE,
        true,
    ),
    jump(
        Table::Filter,
        KUBE_NODEPORTS,
        "INPUT",
        Some("kubernetes health check service ports"),
        false,
    ),
    jump(Table::Filter, KUBE_SERVICES, "FORWARD", PORTALS, true),
    jump(Table::Filter, KUBE_SERVICES, "OUTPUT", PORTALS, true),
    jump(
        Table::Filter,
        KUBE_FORWARD,
        "FORWARD",
        Some("kubernetes forwarding rules"),
        false,
    ),
    jump(
        Table::Filter,
        KUBE_PROXY_FIREWALL,
        "INPUT",
        LB_FIREWALL,
        true,
    ),
    jump(
        Table::Filter,
        KUBE_PROXY_FIREWALL,
        "OUTPUT",
        LB_FIREWALL,
        true,
    ),
    jump(
        Table::Filter,
        KUBE_PROXY_FIREWALL,
        "FORWARD",
        LB_FIREWALL,
        true,
    ),
    jump(Table::Nat, KUBE_SERVICES, "OUTPUT", PORTALS, false),
    jump(Table::Nat, KUBE_SERVICES, "PREROUTING", PORTALS, false),
    jump(
        Table::Nat,
        KUBE_POSTROUTING,
        "POSTROUTING",
        Some("kubernetes postrouting rules"),
        false,
    ),
    jump(Table::Filter, KUBE_FIREWALL, "INPUT", None, false),
    jump(Table::Filter, KUBE_FIREWALL, "OUTPUT", None, false),
];

impl JumpChain {
    /// The arguments kube-proxy passes to `EnsureRule` (each a separate argv element, so
    /// the comment is not quoted): extra args, comment, `-j`.
    pub fn args(&self) -> Vec<&'static str> {
        let mut args = Vec::with_capacity(8);
        if self.new_only {
            args.extend(["-m", "conntrack", "--ctstate", "NEW"]);
        }
        if let Some(c) = self.comment {
            args.extend(["-m", "comment", "--comment", c]);
        }
        args.extend(["-j", self.target]);
        args
    }

    /// The same rule as an `iptables-restore` line inserting it at position 1.
    pub fn insert_line(&self) -> String {
        let spec: Vec<String> = self
            .args()
            .into_iter()
            .map(|a| {
                if a.contains(' ') {
                    format!("\"{a}\"")
                } else {
                    a.to_string()
                }
            })
            .collect();
        format!("-I {} {}", self.source, spec.join(" "))
    }
}

/// The jumps as they end up in the built-in chains of a fresh node: grouped by table and
/// built-in chain in `iptables-save` order, and within a chain the reverse of the list
/// order (each was inserted at position 1).
pub fn installed_jumps() -> Vec<&'static JumpChain> {
    let mut out: Vec<&'static JumpChain> = Vec::with_capacity(JUMP_CHAINS.len());
    for table in [Table::Filter, Table::Nat] {
        for builtin in table.builtin_chains() {
            out.extend(
                JUMP_CHAINS
                    .iter()
                    .rev()
                    .filter(|j| j.table == table && j.source == *builtin),
            );
        }
    }
    out
}

/// What kube-proxy does to a fresh node before its first sync, as one restore text: the
/// empty KUBE-PROXY-CANARY chains in mangle, nat and filter (`Monitor`, when `canary`),
/// the chains the jumps lead to, and the jumps inserted in kube-proxy's order (so they
/// end up in [`installed_jumps`] order). Chain lines flush, so run it on a fresh node or
/// after a flush, followed by a full sync.
pub fn bootstrap_restore(canary: bool) -> String {
    let mut out = String::new();
    if canary {
        let _ = writeln!(out, "*mangle\n:{KUBE_PROXY_CANARY} - [0:0]\nCOMMIT");
    }
    for table in [Table::Filter, Table::Nat] {
        let _ = writeln!(out, "*{table}");
        if canary {
            let _ = writeln!(out, ":{KUBE_PROXY_CANARY} - [0:0]");
        }
        let mut declared: Vec<&str> = Vec::new();
        for j in JUMP_CHAINS.iter().filter(|j| j.table == table) {
            if !declared.contains(&j.target) {
                declared.push(j.target);
                let _ = writeln!(out, ":{} - [0:0]", j.target);
            }
        }
        for j in JUMP_CHAINS.iter().filter(|j| j.table == table) {
            let _ = writeln!(out, "{}", j.insert_line());
        }
        out.push_str("COMMIT\n");
    }
    out
}
