//! NetworkPolicy engines: what enforces the cluster's policies inside the node
//! namespaces. An engine is told the current objects on every change and brings every
//! node in line; what the rules mean and look like is decided in `sim` (`sim::policy`,
//! `sim::render`), so an engine only applies text and reports how long it took.
//!
//! One engine per file: [`iptables`] (kube-router's layout with ipsets, the default) and
//! [`none`] (enforces nothing, like flannel or the plain bridge plugin). A new engine
//! (nftables, say) is a new file and a line in [`engine_for`].

use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sim::objects::ClusterObjects;
use sim::plan::Plan;
use sim::render::{RenderContext, Ruleset};
use sim::scenario::{DenyStyle, PolicyEngineKind};

use crate::netns::Netns;

pub mod iptables;
pub mod none;

/// The iptables front end we use: Debian's default, the nf_tables one. Named explicitly
/// so rules never land in the legacy tables by accident.
pub const IPTABLES_RESTORE: &str = "iptables-nft-restore";
pub const IPTABLES_SAVE: &str = "iptables-nft-save";
pub const IPSET: &str = "ipset";

/// Enforces NetworkPolicy in the nodes. Blocking: applying means running a few
/// short-lived tools inside each node namespace, nodes in parallel.
pub trait PolicyEngine: Send {
    /// `iptables`, `none`.
    fn name(&self) -> &'static str;

    /// Brings every node in `nodes` (name and namespace) in line with `objects`. `plan`
    /// gives the cluster's CIDRs and each node's underlay address. Call it after every
    /// change (policies, pods, labels); nodes whose rules did not change are not touched.
    fn sync(
        &mut self,
        plan: &Plan,
        nodes: &[(String, Netns)],
        objects: &ClusterObjects,
    ) -> Result<SyncReport>;

    /// What the enforcer's rules in a node are now, read from the kernel and normalised
    /// (our chains from `iptables-save`, our sets from `ipset save`; counters, hash
    /// seeds and sizes stripped). Comparable with `sim::render::NodeRules::normalised`.
    fn installed(&self, node: &Netns) -> Result<String> {
        read_installed(node).map(|r| r.normalised())
    }
}

/// The engine a scenario asks for.
pub fn engine_for(kind: PolicyEngineKind, deny: DenyStyle) -> Box<dyn PolicyEngine> {
    match kind {
        PolicyEngineKind::Iptables => Box::new(iptables::IptablesEngine::new(deny)),
        PolicyEngineKind::None => Box::new(none::NoneEngine),
    }
}

/// The engine a scenario asks for (`cluster.policy`, `cluster.deny`), told whether the
/// scenario turns br_netfilter off on purpose (`cluster.brNetfilter: false`: then nodes
/// whose bridge does not call iptables are synced rather than refused).
pub fn engine_for_scenario(scenario: &sim::scenario::Scenario) -> Box<dyn PolicyEngine> {
    let c = &scenario.cluster;
    match (c.policy, scenario.br_netfilter) {
        (PolicyEngineKind::Iptables, false) => {
            Box::new(iptables::IptablesEngine::new(c.deny).with_unfiltered_bridges())
        }
        (kind, _) => engine_for(kind, c.deny),
    }
}

/// What one sync did in one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSync {
    pub node: String,
    /// Whether anything was written to the node.
    pub changed: bool,
    /// Wall time for this node: rendering compared, tools run.
    pub elapsed: Duration,
    /// Rules (hooks included) and sets the node holds for us afterwards.
    pub rules: usize,
    pub sets: usize,
}

/// What one sync did, per node (in the order the nodes were given).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub nodes: Vec<NodeSync>,
    /// Of `elapsed`, resolving the policies and rendering every node's rules.
    pub render: Duration,
    /// Wall time of the whole sync (nodes run in parallel).
    pub elapsed: Duration,
}

impl SyncReport {
    /// Whether any node was written to.
    pub fn changed(&self) -> bool {
        self.nodes.iter().any(|n| n.changed)
    }

    /// The slowest node's time.
    pub fn slowest(&self) -> Duration {
        self.nodes
            .iter()
            .map(|n| n.elapsed)
            .max()
            .unwrap_or_default()
    }
}

/// The render context of one node of `plan`.
pub fn render_context(plan: &Plan, node: &str, deny: DenyStyle) -> Result<RenderContext> {
    let Some(np) = plan.nodes.iter().find(|n| n.name == node) else {
        bail!("node {node} is not in the cluster plan");
    };
    Ok(RenderContext {
        pod_cidr: plan.pod_cidr,
        service_cidr: plan.service_cidr,
        deny,
        node_ip: np.underlay_ip,
    })
}

/// Reads the enforcer's state in a node from the kernel.
pub fn read_installed(node: &Netns) -> Result<Ruleset> {
    let ipt = run_in(node, IPTABLES_SAVE, &["-t", "filter"], None)?;
    let sets = run_in(node, IPSET, &["save"], None)?;
    Ok(Ruleset::from_saved(&ipt, &sets))
}

/// Fails unless bridged traffic in the node goes through iptables: without
/// `net.bridge.bridge-nf-call-iptables=1`, same-node pod-to-pod traffic is switched by the
/// bridge without ever seeing a FORWARD rule, and every policy between two pods of one
/// node silently does nothing.
pub fn check_bridge_netfilter(node: &Netns) -> Result<()> {
    let key = "net/bridge/bridge-nf-call-iptables";
    let value = node.sysctl(key).with_context(|| {
        format!(
            "read {key} in namespace {} (is br_netfilter in the kernel?)",
            node.name()
        )
    })?;
    if value != "1" {
        bail!(
            "net.bridge.bridge-nf-call-iptables is {value} in namespace {}: bridged \
             same-node pod traffic would bypass every NetworkPolicy rule; it must be 1 \
             (the default in a new namespace)",
            node.name()
        );
    }
    Ok(())
}

/// Runs `program args` inside `ns`, feeding it `stdin`; returns its stdout. The error
/// names the namespace, the command, its exit status and stderr, and for a script the
/// line the tool complained about.
pub fn run_in(ns: &Netns, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let shown = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = ns
        .command(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start `{shown}` in namespace {}", ns.name()))?;
    if let Some(text) = stdin {
        // Our scripts are small and these tools print little while reading, so writing
        // all of stdin before reading stdout cannot deadlock.
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(text.as_bytes())
            .with_context(|| format!("write the script to `{shown}` in namespace {}", ns.name()))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("wait for `{shown}` in namespace {}", ns.name()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut msg = format!(
            "`{shown}` failed in namespace {} ({}): {}",
            ns.name(),
            out.status,
            stderr.trim()
        );
        if let (Some(script), Some(n)) = (stdin, complained_line(&stderr))
            && let Some(line) = script.lines().nth(n.saturating_sub(1))
        {
            msg.push_str(&format!("\n  line {n} of the script: {line}"));
        }
        bail!(msg);
    }
    String::from_utf8(out.stdout)
        .with_context(|| format!("`{shown}` in namespace {} printed non-UTF-8", ns.name()))
}

/// The script line number in an `ipset` / `iptables-restore` error (`Error in line 3:`,
/// `line 2: ...`, `Error occurred at line: 3`).
fn complained_line(stderr: &str) -> Option<usize> {
    let lower = stderr.to_ascii_lowercase();
    let at = lower.find("line")?;
    let digits: String = lower[at + 4..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// Forgets every tracked flow in the nodes (`conntrack -F` in each node namespace).
///
/// Why: enforcement is stateful, so a flow conntrack already knows passes as ESTABLISHED
/// whatever the new rules say, in a real cluster too. Probes are meant to be new
/// connections, but a UDP probe whose random source port repeats a flow an earlier step
/// allowed would ride on that entry (seen about once in a thousand probes). After rules
/// change, knetlab therefore starts every node from an empty flow table.
pub fn forget_flows(nodes: &[(String, Netns)]) -> Result<()> {
    for (node, ns) in nodes {
        run_in(ns, "conntrack", &["-F"], None)
            .with_context(|| format!("flush the conntrack table of node {node}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_line_tools_complain_about() {
        assert_eq!(
            complained_line(
                "ipset v7.17: Error in line 3: The set with the given name does not exist"
            ),
            Some(3)
        );
        assert_eq!(
            complained_line("iptables-restore v1.8.9 (nf_tables): \nline 2: CHAIN_DEL failed"),
            Some(2)
        );
        assert_eq!(complained_line("Error occurred at line: 14\nTry"), Some(14));
        assert_eq!(complained_line("no number here"), None);
    }
}
