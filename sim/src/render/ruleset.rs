//! The enforcer's state in one node as data: the jumps from the built-in chains, our
//! filter-table chains with their rules, and our ipsets. The same type describes what the
//! renderer wants ([`crate::render::NodeRules`]) and what the kernel holds (parsed from
//! `iptables-save` and `ipset save` by [`Ruleset::from_saved`]), so the two can be
//! compared, printed in one normalised form for snapshots, and turned into the scripts
//! that take a node from one to the other ([`apply_scripts`]).
//!
//! Rule lines are kept exactly as `iptables-save` prints them (the renderer writes them in
//! that canonical form), which is what makes "installed == rendered" a plain string test.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::names;

/// The hash type of an ipset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetKind {
    /// Single addresses (pods).
    HashIp,
    /// Networks, with `nomatch` entries carving holes (ipBlocks with `except`).
    HashNet,
}

impl SetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SetKind::HashIp => "hash:ip",
            SetKind::HashNet => "hash:net",
        }
    }

    fn parse(s: &str) -> Option<SetKind> {
        match s {
            "hash:ip" => Some(SetKind::HashIp),
            "hash:net" => Some(SetKind::HashNet),
            _ => None,
        }
    }
}

/// One member of a set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SetEntry {
    /// A /32 for `hash:ip` sets.
    pub net: Ipv4Net,
    /// `nomatch`: addresses in this net do not match even though a larger entry covers
    /// them (how `except` is done).
    pub nomatch: bool,
    /// What the entry stands for (`x/a`, `ipBlock 10.0.0.0/8`, `except 10.1.0.0/16`):
    /// `ipset list` shows it, so a student can tell which pod an address is.
    pub comment: String,
}

impl SetEntry {
    pub fn host(ip: Ipv4Addr, comment: impl Into<String>) -> Self {
        Self {
            net: Ipv4Net::from(ip),
            nomatch: false,
            comment: comment.into(),
        }
    }

    /// The member as `ipset` prints it: a bare address for hosts, else the CIDR.
    fn member(&self) -> String {
        if self.net.prefix_len() == 32 {
            self.net.addr().to_string()
        } else {
            self.net.to_string()
        }
    }

    /// `ADDR [nomatch] comment "TEXT"`, as `ipset save` prints it and `ipset restore`
    /// reads it.
    fn text(&self) -> String {
        let mut s = self.member();
        if self.nomatch {
            s.push_str(" nomatch");
        }
        let _ = write!(s, " comment \"{}\"", ipset_comment(&self.comment));
        s
    }
}

/// An ipset: its type and its members, sorted by address then prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSet {
    pub kind: SetKind,
    pub entries: Vec<SetEntry>,
}

impl IpSet {
    /// A set with `entries` sorted and one entry per net (the first comment wins).
    pub fn new(kind: SetKind, entries: impl IntoIterator<Item = SetEntry>) -> Self {
        let mut by_net: BTreeMap<Ipv4Net, SetEntry> = BTreeMap::new();
        for e in entries {
            by_net.entry(e.net).or_insert(e);
        }
        Self {
            kind,
            entries: by_net.into_values().collect(),
        }
    }
}

/// A jump from a built-in chain (`INPUT`, `FORWARD`, `OUTPUT`) to one of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub builtin: String,
    pub target: String,
    /// The rule without the `-A BUILTIN` part (`-m comment --comment ... -j TARGET`).
    pub spec: String,
}

/// What the enforcer has (or wants) in one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// In INPUT, FORWARD, OUTPUT order.
    pub hooks: Vec<Hook>,
    /// Chain name → its rule lines (`-A NAME ...`), in order.
    pub chains: BTreeMap<String, Vec<String>>,
    pub sets: BTreeMap<String, IpSet>,
}

/// The built-in filter chains, in the order `iptables-save` prints them.
const BUILTINS: [&str; 3] = ["INPUT", "FORWARD", "OUTPUT"];

/// The order chains are printed in: the top-level chains in hook order, the pod chains,
/// the policy chains, then the shared COMMON and DEFAULT chains; by name within a group.
/// Readers start at the hook and go down.
pub fn chain_order_key(name: &str) -> (u8, &str) {
    let group = match name {
        names::ROUTER_INPUT => 0,
        names::ROUTER_FORWARD => 1,
        names::ROUTER_OUTPUT => 2,
        names::COMMON_CHAIN => 6,
        names::DEFAULT_CHAIN => 7,
        n if n.starts_with("KUBE-POD-FW-") => 3,
        n if n.starts_with("KUBE-NWPLCY-") => 4,
        _ => 5,
    };
    (group, name)
}

impl Ruleset {
    /// Our chain names in print order.
    pub fn ordered_chains(&self) -> Vec<(&String, &Vec<String>)> {
        let mut v: Vec<_> = self.chains.iter().collect();
        v.sort_by(|a, b| chain_order_key(a.0).cmp(&chain_order_key(b.0)));
        v
    }

    pub fn rule_count(&self) -> usize {
        self.hooks.len() + self.chains.values().map(Vec::len).sum::<usize>()
    }

    /// The normalised text used in snapshots and to compare a node with its rendering:
    /// the sets (sorted, members sorted, no hash seeds or sizes), then the filter rules
    /// (hooks, then our chains in [`chain_order_key`] order), no counters.
    pub fn normalised(&self) -> String {
        let mut out = String::from("*ipset\n");
        for (name, set) in &self.sets {
            let _ = writeln!(out, "create {name} {}", set.kind.as_str());
            for e in &set.entries {
                let _ = writeln!(out, "add {name} {}", e.text());
            }
        }
        out.push_str("*filter\n");
        for (name, _) in self.ordered_chains() {
            let _ = writeln!(out, ":{name} - [0:0]");
        }
        for h in &self.hooks {
            let _ = writeln!(out, "-A {} {}", h.builtin, h.spec);
        }
        for (_, rules) in self.ordered_chains() {
            for r in rules {
                out.push_str(r);
                out.push('\n');
            }
        }
        out
    }

    /// Reads what the enforcer owns out of `iptables-save` (filter table; other tables
    /// and chains are ignored) and `ipset save` output. Counters, hash seeds and sizes
    /// are dropped; anything that is not ours is left out.
    pub fn from_saved(iptables_save: &str, ipset_save: &str) -> Ruleset {
        let mut rs = Ruleset::default();
        let mut table = "";
        let mut hooks: Vec<Hook> = Vec::new();
        for line in iptables_save.lines() {
            if let Some(t) = line.strip_prefix('*') {
                table = t.trim();
                continue;
            }
            if table != "filter" {
                continue;
            }
            if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().unwrap_or_default();
                if names::is_owned_chain(name) {
                    rs.chains.entry(name.to_string()).or_default();
                }
            } else if let Some(rest) = line.strip_prefix("-A ") {
                let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
                if names::is_owned_chain(chain) {
                    rs.chains
                        .entry(chain.to_string())
                        .or_default()
                        .push(line.to_string());
                } else if BUILTINS.contains(&chain)
                    && let Some(target) = jump_target(spec).filter(|t| names::is_owned_chain(t))
                {
                    hooks.push(Hook {
                        builtin: chain.to_string(),
                        target: target.to_string(),
                        spec: spec.to_string(),
                    });
                }
            }
        }
        // iptables-save prints INPUT, FORWARD, OUTPUT in that order; keep that order
        // whatever the input was.
        hooks.sort_by_key(|h| BUILTINS.iter().position(|b| *b == h.builtin));
        rs.hooks = hooks;

        let mut kinds: BTreeMap<String, SetKind> = BTreeMap::new();
        let mut entries: BTreeMap<String, Vec<SetEntry>> = BTreeMap::new();
        for line in ipset_save.lines() {
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("create"), Some(name), Some(kind)) if names::is_owned_set(name) => {
                    if let Some(k) = SetKind::parse(kind) {
                        kinds.insert(name.to_string(), k);
                        entries.entry(name.to_string()).or_default();
                    }
                }
                (Some("add"), Some(name), Some(member)) if names::is_owned_set(name) => {
                    let net = member
                        .parse::<Ipv4Net>()
                        .ok()
                        .or_else(|| member.parse::<Ipv4Addr>().ok().map(Ipv4Net::from));
                    let Some(net) = net else { continue };
                    let nomatch = line.split_whitespace().any(|w| w == "nomatch");
                    let comment = line
                        .split_once(" comment \"")
                        .map(|(_, c)| c.strip_suffix('"').unwrap_or(c).replace("\\\"", "\""))
                        .unwrap_or_default();
                    entries.entry(name.to_string()).or_default().push(SetEntry {
                        net,
                        nomatch,
                        comment,
                    });
                }
                _ => {}
            }
        }
        for (name, kind) in kinds {
            let list = entries.remove(&name).unwrap_or_default();
            rs.sets.insert(name, IpSet::new(kind, list));
        }
        rs
    }
}

/// The `-j TARGET` of a rule spec (the last one, so a comment mentioning `-j` is skipped).
fn jump_target(spec: &str) -> Option<&str> {
    let (_, after) = spec.rsplit_once("-j ")?;
    after.split_whitespace().next()
}

/// ipset comments: at most 255 bytes, no double quotes (they end the string in `ipset
/// restore` and nothing we write needs them).
fn ipset_comment(s: &str) -> String {
    let cleaned: String = s.chars().map(|c| if c == '"' { '\'' } else { c }).collect();
    truncate_bytes(&cleaned, 255).to_string()
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub(crate) fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The commands that take a node from `installed` to `wanted`, in the order they must
/// run: fill the new sets, refill the changed ones (each atomically, through a temporary
/// twin and `swap`), then one `iptables-restore --noflush` transaction that rewrites the new or
/// changed chains, inserts missing hooks at position 1 and deletes the chains no longer
/// wanted, then destroy the sets nothing references any more. Empty strings mean nothing
/// to do for that step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyScripts {
    /// For `ipset restore`.
    pub ipset_refill: String,
    /// For `iptables-restore --noflush`.
    pub iptables: String,
    /// For `ipset restore`, after the iptables transaction.
    pub ipset_destroy: String,
}

impl ApplyScripts {
    pub fn is_empty(&self) -> bool {
        self.ipset_refill.is_empty() && self.iptables.is_empty() && self.ipset_destroy.is_empty()
    }
}

/// Works out [`ApplyScripts`]. `header` (comment lines, each starting with `#`) opens the
/// iptables transaction, for whoever reads it in a log.
pub fn apply_scripts(wanted: &Ruleset, installed: &Ruleset, header: &str) -> ApplyScripts {
    let mut out = ApplyScripts::default();

    for (name, set) in &wanted.sets {
        if installed.sets.get(name) == Some(set) {
            continue;
        }
        let kind = set.kind.as_str();
        let s = &mut out.ipset_refill;
        if !installed.sets.contains_key(name) {
            // A new set: no rule uses it yet, so it is filled in place (a node with
            // thousands of peers would pay four more commands a set for the twin).
            let _ = writeln!(s, "create {name} {kind} family inet comment -exist");
            let _ = writeln!(s, "flush {name}");
            for e in &set.entries {
                let _ = writeln!(s, "add {name} {}", e.text());
            }
            continue;
        }
        let tmp = names::temp_set(name);
        let _ = writeln!(s, "create {name} {kind} family inet comment -exist");
        let _ = writeln!(s, "create {tmp} {kind} family inet comment -exist");
        let _ = writeln!(s, "flush {tmp}");
        for e in &set.entries {
            let _ = writeln!(s, "add {tmp} {}", e.text());
        }
        let _ = writeln!(s, "swap {tmp} {name}");
        let _ = writeln!(s, "destroy {tmp}");
    }

    let changed: Vec<(&String, &Vec<String>)> = wanted
        .ordered_chains()
        .into_iter()
        .filter(|(name, rules)| installed.chains.get(*name) != Some(*rules))
        .collect();
    let stale: Vec<&String> = installed
        .chains
        .keys()
        .filter(|n| !wanted.chains.contains_key(*n))
        .collect();
    let missing_hooks: Vec<&Hook> = wanted
        .hooks
        .iter()
        .filter(|h| {
            !installed
                .hooks
                .iter()
                .any(|i| i.builtin == h.builtin && i.target == h.target)
        })
        .collect();
    if !changed.is_empty() || !stale.is_empty() || !missing_hooks.is_empty() {
        let s = &mut out.iptables;
        s.push_str(header);
        s.push_str("*filter\n");
        // Declaring a chain creates it, or flushes it if it exists.
        for (name, _) in &changed {
            let _ = writeln!(s, ":{name} - [0:0]");
        }
        for name in &stale {
            let _ = writeln!(s, ":{name} - [0:0]");
        }
        for h in &missing_hooks {
            let _ = writeln!(s, "-I {} 1 {}", h.builtin, h.spec);
        }
        for (_, rules) in &changed {
            for r in *rules {
                s.push_str(r);
                s.push('\n');
            }
        }
        // Every rule that jumped to a stale chain was in a chain rewritten above, so
        // nothing references it by now.
        for name in &stale {
            let _ = writeln!(s, "-X {name}");
        }
        s.push_str("COMMIT\n");
    }

    let stale_sets: BTreeSet<&String> = installed
        .sets
        .keys()
        .filter(|n| !wanted.sets.contains_key(*n))
        .collect();
    for name in stale_sets {
        let _ = writeln!(out.ipset_destroy, "destroy {name}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVED: &str = r#"# Generated by iptables-save v1.8.9 (nf_tables) on Sun Nov 22 10:31:24 2026
*nat
:PREROUTING ACCEPT [0:0]
-A PREROUTING -j KUBE-ROUTER-INPUT
COMMIT
*filter
:INPUT ACCEPT [12:3456]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-NWPLCY-COMMON - [0:0]
:KUBE-ROUTER-INPUT - [0:0]
:OTHER - [0:0]
-A INPUT -j OTHER
-A INPUT -m comment --comment "kube-router netpol - ABC" -j KUBE-ROUTER-INPUT
-A KUBE-NWPLCY-COMMON -m conntrack --ctstate INVALID -j DROP
-A OTHER -j ACCEPT
COMMIT
"#;

    const IPSET: &str = r#"create KUBE-SRC-X hash:net family inet hashsize 1024 maxelem 65536 comment bucketsize 12 initval 0x8b8f9248
add KUBE-SRC-X 10.0.0.1 comment "a b"
add KUBE-SRC-X 172.17.1.0/24 nomatch comment "except"
add KUBE-SRC-X 172.17.0.0/16 comment "ipBlock"
create OTHER hash:ip family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x4068592d
add OTHER 10.244.1.2
"#;

    #[test]
    fn reads_only_what_is_ours() {
        let rs = Ruleset::from_saved(SAVED, IPSET);
        assert_eq!(rs.hooks.len(), 1);
        assert_eq!(rs.hooks[0].target, "KUBE-ROUTER-INPUT");
        assert_eq!(
            rs.chains.keys().collect::<Vec<_>>(),
            ["KUBE-NWPLCY-COMMON", "KUBE-ROUTER-INPUT"]
        );
        assert!(rs.chains["KUBE-ROUTER-INPUT"].is_empty());
        assert_eq!(rs.sets.len(), 1);
        let set = &rs.sets["KUBE-SRC-X"];
        assert_eq!(set.kind, SetKind::HashNet);
        let members: Vec<String> = set.entries.iter().map(SetEntry::text).collect();
        assert_eq!(
            members,
            [
                "10.0.0.1 comment \"a b\"",
                "172.17.0.0/16 comment \"ipBlock\"",
                "172.17.1.0/24 nomatch comment \"except\"",
            ]
        );
    }

    #[test]
    fn normalised_round_trips_through_saved_form() {
        let rs = Ruleset::from_saved(SAVED, IPSET);
        let text = rs.normalised();
        // The normalised text is itself restore/save syntax: reading it back changes nothing.
        let (ipt, ips) = text.split_once("*filter\n").unwrap();
        let again = Ruleset::from_saved(&format!("*filter\n{ips}"), ipt);
        assert_eq!(again, rs);
    }

    #[test]
    fn nothing_to_do_when_equal() {
        let rs = Ruleset::from_saved(SAVED, IPSET);
        assert!(apply_scripts(&rs, &rs, "").is_empty());
    }

    #[test]
    fn stale_chains_are_flushed_then_deleted_and_stale_sets_destroyed_last() {
        let installed = Ruleset::from_saved(SAVED, IPSET);
        let wanted = Ruleset {
            hooks: installed.hooks.clone(),
            chains: BTreeMap::from([(
                "KUBE-ROUTER-INPUT".to_string(),
                vec!["-A KUBE-ROUTER-INPUT -j RETURN".to_string()],
            )]),
            sets: BTreeMap::new(),
        };
        let s = apply_scripts(&wanted, &installed, "# test\n");
        assert_eq!(s.ipset_refill, "");
        assert_eq!(
            s.iptables,
            "# test\n*filter\n:KUBE-ROUTER-INPUT - [0:0]\n:KUBE-NWPLCY-COMMON - [0:0]\n\
             -A KUBE-ROUTER-INPUT -j RETURN\n-X KUBE-NWPLCY-COMMON\nCOMMIT\n"
        );
        assert_eq!(s.ipset_destroy, "destroy KUBE-SRC-X\n");
    }
}
