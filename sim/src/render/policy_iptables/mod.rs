//! The NetworkPolicy enforcer's rules for one node, laid out the kube-router way
//! (iptables filter table plus ipsets), rendered from [`crate::policy`]'s resolved
//! policies. Nothing here decides what a policy means: which pods a policy isolates,
//! which peers a rule admits and which ports it opens on a destination all come from
//! `policy`; this module only writes them down as netfilter rules.
//!
//! Layout (see the reference, "kube-router chain and set inventory"):
//! - `INPUT`, `FORWARD` and `OUTPUT` jump at position 1 to `KUBE-ROUTER-INPUT`,
//!   `-FORWARD` and `-OUTPUT` (comment `kube-router netpol - <hash>`).
//! - Each pod of this node that has an IP gets a `KUBE-POD-FW-<hash>` chain, reached for
//!   traffic TO it from KUBE-ROUTER-FORWARD (`-d POD`, and again with `-m physdev
//!   --physdev-is-bridged` for same-node traffic the bridge switches; a bridged packet
//!   matches both jumps and is judged twice with the same verdict, as in kube-router)
//!   and from KUBE-ROUTER-OUTPUT (the node's own traffic), and for traffic FROM it
//!   (`-s POD`) from all three top-level chains (+ the bridged variant).
//! - In the pod chain: KUBE-NWPLCY-COMMON (INVALID dropped; ESTABLISHED and RELATED
//!   accepted, which is what makes enforcement stateful: replies of an allowed
//!   connection pass; ICMP echo, unreachable and time-exceeded accepted as kube-router
//!   does), then "from local node" (`--src-type LOCAL`: the node always reaches its
//!   pods) and "to local node" (ours: the spec says traffic between a pod and its node
//!   is always allowed, either way), then KUBE-NWPLCY-DEFAULT (sets mark 0x10000) for a
//!   direction no policy isolates, then one jump per isolating policy, then NFLOG
//!   (group 100) and the denial of whatever no policy marked, then the mark is cleared
//!   and 0x20000 ("netpol-ok") set; the top-level chain ACCEPTs on 0x20000 at its end.
//! - Policy chains `KUBE-NWPLCY-<hash>` hold, per allowed peer and port, a MARK rule and
//!   a RETURN on the mark (kube-router's pair). Ingress rules match `src` = the peer's set
//!   and `dst` = the policy's target set `KUBE-DST-<hash>` (its selected pods here);
//!   egress rules match `src` = `KUBE-SRC-<hash>` and `dst` = the peer's set. A rule
//!   without peers matches only the target side; one without ports matches every
//!   protocol. Named ports are resolved by `policy` on each destination pod: the pods on
//!   which entry `ports[j]` resolves to the same port go into one `KUBE-DST-` set, and a
//!   rule per resolved port matches that set as destination.
//!
//! Where we differ from kube-router, on purpose:
//! - One chain per policy AND direction. kube-router's single chain is entered without
//!   an address match for a policy with both types, so on a node where both ends are
//!   local and selected by the same policy, an ingress rule of it could vouch for the
//!   egress of the client (or an egress rule for the server's ingress). Jumping with
//!   `-d POD` to the ingress chain and `-s POD` to the egress chain keeps the two apart.
//! - One set per peer (`from[k]` / `to[k]`), not one pod set and one net set per rule: each
//!   `ipBlock` keeps its own `except`s (an address one peer excepts is still allowed by
//!   another peer that covers it), and each rule's comment names exactly one peer.
//! - `except` entries are added `nomatch` into the ipBlock's `hash:net` set as kube-router
//!   does, but only when they lie strictly inside the block (an `except` covering the
//!   whole block removes it instead), so the set matches exactly what `policy` says; a
//!   `/0` block is split into two `/1` halves (hash:net cannot hold /0).
//! - Denial with `reject` is `REJECT --reject-with icmp-admin-prohibited`, not kube-router's
//!   plain REJECT (icmp-port-unreachable): the client then gets EHOSTUNREACH ("a filter
//!   said no"), which our probes tell apart from ECONNREFUSED ("nothing listens on the
//!   port"); port-unreachable would look exactly like a closed port. `drop` is `DROP`.
//! - Names carry no sync timestamp (see [`super::names`]), and the NodePort / external IP
//!   RETURNs at the top of KUBE-ROUTER-INPUT are left out (no NodePorts here, and
//!   "to local node" already covers traffic to the node).
//!
//! What the kernel does around these rules (and the oracle assumes): a pod reaching its
//! own IP goes through `lo` inside its own namespace and never reaches the node, so no
//! rule here sees it; a node reaching its own pods leaves through OUTPUT with a LOCAL
//! source and is accepted by "from local node"; another node's traffic arrives with that
//! node's underlay address as source and is judged like any outside address.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::cluster::DenyStyle;
use crate::cluster_policy::{ClusterPolicy, Tier};
use crate::policy::{
    Direction, Endpoint, PeerCheck, PeerKind, PodInfo, PortEntry, PortSpan, ResolvedPolicies,
    ResolvedPolicy, ResolvedRule,
};

mod rule;
mod sets;
mod tiers;

use super::names::{self, save_quote};
use super::ruleset::{self, ApplyScripts, Hook, IpSet, Ruleset, SetKind};
use rule::{Rule, deny_target, proto_name, with_span};
pub(crate) use sets::ip_block_entries;
use sets::pod_set;
pub use tiers::ClusterTiers;

/// Set by KUBE-NWPLCY-DEFAULT and by policy rules: "some policy (or no isolation)
/// allows this in the direction being judged".
const MARK_ALLOWED: &str = "0x10000/0x10000";
/// Set at the end of a pod chain: "passed this pod's firewall".
const MARK_NETPOL_OK: &str = "0x20000/0x20000";
/// The NFLOG group kube-router logs denied packets to (`tcpdump -i nflog:100` shows them).
const NFLOG_GROUP: u16 = 100;

/// What the rules of a node depend on besides the policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderContext {
    /// The cluster's pod CIDR (shown in the rules' header).
    pub pod_cidr: Ipv4Net,
    /// ClusterIPs: traffic to them is not judged on INPUT (it is judged once the proxy
    /// has rewritten it to a pod address).
    pub service_cidr: Ipv4Net,
    pub deny: DenyStyle,
    /// The node's underlay address (shown in the rules' header).
    pub node_ip: Ipv4Addr,
}

/// The enforcer's rules for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRules {
    pub node: String,
    pub ctx: RenderContext,
    pub ruleset: Ruleset,
}

impl NodeRules {
    /// The chains this node's rules own (our chains; not the built-ins the hooks are in).
    pub fn chain_names(&self) -> BTreeSet<String> {
        self.ruleset.chains.keys().cloned().collect()
    }

    /// The ipsets this node's rules own.
    pub fn set_names(&self) -> BTreeSet<String> {
        self.ruleset.sets.keys().cloned().collect()
    }

    /// Comment lines describing where and how these rules apply.
    pub fn header(&self) -> String {
        format!(
            "# knetlab NetworkPolicy enforcer (kube-router layout), node {} ({})\n\
             # pod CIDR {}, service CIDR {}, denied traffic: {}\n",
            self.node,
            self.ctx.node_ip,
            self.ctx.pod_cidr,
            self.ctx.service_cidr,
            deny_target(self.ctx.deny)
        )
    }

    /// The scripts that install these rules on a node that has none of ours yet.
    pub fn fresh_install(&self) -> ApplyScripts {
        self.apply_over(&Ruleset::default())
    }

    /// The scripts that take a node holding `installed` to these rules.
    pub fn apply_over(&self, installed: &Ruleset) -> ApplyScripts {
        ruleset::apply_scripts(&self.ruleset, installed, &self.header())
    }

    /// The `ipset restore` text creating and filling every set (fresh node).
    pub fn ipset_restore(&self) -> String {
        self.fresh_install().ipset_refill
    }

    /// The `iptables-restore --noflush` text for the filter table (fresh node).
    pub fn iptables_restore(&self) -> String {
        self.fresh_install().iptables
    }

    /// The normalised form (see [`Ruleset::normalised`]), what a node holding exactly
    /// these rules shows once its `iptables-save` and `ipset save` are normalised.
    pub fn normalised(&self) -> String {
        self.ruleset.normalised()
    }
}

/// Renders the enforcer's rules for `node` (NetworkPolicy alone).
pub fn render_node(resolved: &ResolvedPolicies, node: &str, ctx: &RenderContext) -> NodeRules {
    let view = crate::cluster_policy::ClusterView::default();
    render_node_tiered(resolved, &ClusterTiers::none(&view), node, ctx)
}

/// Renders the enforcer's rules for `node`, the cluster-wide policy tiers included.
pub fn render_node_tiered(
    resolved: &ResolvedPolicies,
    tiers: &ClusterTiers,
    node: &str,
    ctx: &RenderContext,
) -> NodeRules {
    let local: Vec<(&PodInfo, Ipv4Addr)> = resolved
        .pods()
        .values()
        // A hostNetwork pod is its node: no firewall chain of its own (its address is
        // the node's, which a `-s`/`-d` jump would catch all node traffic with).
        .filter(|p| p.node.as_deref() == Some(node) && !p.host_network)
        .filter_map(|p| p.ip.map(|ip| (p, ip)))
        .collect();
    let mut b = Builder::default();

    // The policies that isolate some local pod, per direction, in (namespace, name) order.
    let mut isolating: BTreeSet<(usize, Direction)> = BTreeSet::new();
    for (pod, _) in &local {
        for dir in [Direction::Ingress, Direction::Egress] {
            for (i, p) in resolved.policies.iter().enumerate() {
                if p.isolates(&pod.pod, dir) {
                    isolating.insert((i, dir));
                }
            }
        }
    }

    b.top_level(&local, ctx);
    let mut tier_chains = BTreeMap::new();
    for (pod, ip) in &local {
        b.pod_chain(resolved, tiers, &mut tier_chains, pod, *ip, ctx);
    }
    for (i, dir) in isolating {
        b.policy_chain(resolved, &resolved.policies[i], dir, &local);
    }
    tiers::policy_chains(&mut b, tiers, &tier_chains, &local, ctx.deny);
    b.shared_chains();

    NodeRules {
        node: node.to_string(),
        ctx: *ctx,
        ruleset: b.finish(),
    }
}

/// The other side of a policy rule, as the kernel will match it.
#[derive(Debug, Clone)]
struct PeerSide {
    /// `None` = any address (the rule has no `from` / `to`).
    set: Option<String>,
    /// `ingress[0].from[1]`, or `ingress[0]` for any peer.
    label: String,
}

#[derive(Default)]
struct Builder {
    hooks: Vec<Hook>,
    chains: BTreeMap<String, Vec<String>>,
    sets: BTreeMap<String, IpSet>,
}

impl Builder {
    fn push(&mut self, chain: &str, rule: Rule) {
        let line = rule.line(chain);
        // Looked up before inserting: thousands of rules go to a few hundred chains, and
        // `entry` would allocate the name for each.
        match self.chains.get_mut(chain) {
            Some(lines) => lines.push(line),
            None => {
                self.chains.insert(chain.to_string(), vec![line]);
            }
        }
    }

    fn ensure_chain(&mut self, chain: &str) {
        self.chains.entry(chain.to_string()).or_default();
    }

    fn add_set(&mut self, name: &str, set: IpSet) {
        self.sets.insert(name.to_string(), set);
    }

    fn top_level(&mut self, local: &[(&PodInfo, Ipv4Addr)], ctx: &RenderContext) {
        for (builtin, chain) in [
            ("INPUT", names::ROUTER_INPUT),
            ("FORWARD", names::ROUTER_FORWARD),
            ("OUTPUT", names::ROUTER_OUTPUT),
        ] {
            self.ensure_chain(chain);
            let spec = Rule::new()
                .comment(names::hook_comment(builtin, chain))
                .jump(chain)
                .spec();
            self.hooks.push(Hook {
                builtin: builtin.into(),
                target: chain.into(),
                spec,
            });
        }

        let svc = ctx.service_cidr.trunc().to_string();
        self.chains
            .entry(names::ROUTER_INPUT.into())
            .or_default()
            .push(format!(
                "-A {} -d {svc} -m comment --comment {} -j RETURN",
                names::ROUTER_INPUT,
                save_quote(&names::service_range_comment(&svc))
            ));

        for &(pod, ip) in local {
            let fw = names::pod_chain(&pod.pod.namespace, &pod.pod.name);
            let to = format!("{} ingress", pod.pod);
            let to_bridged = format!("{} ingress (bridged)", pod.pod);
            let from = format!("{} egress", pod.pod);
            let from_bridged = format!("{} egress (bridged)", pod.pod);
            let bridged = "-m physdev --physdev-is-bridged";

            self.push(
                names::ROUTER_INPUT,
                Rule::new().src(ip).comment(&from).jump(&fw),
            );

            self.push(
                names::ROUTER_FORWARD,
                Rule::new().dst(ip).comment(&to).jump(&fw),
            );
            self.push(
                names::ROUTER_FORWARD,
                Rule::new()
                    .dst(ip)
                    .comment(&to_bridged)
                    .m(bridged)
                    .jump(&fw),
            );
            self.push(
                names::ROUTER_FORWARD,
                Rule::new().src(ip).comment(&from).jump(&fw),
            );
            self.push(
                names::ROUTER_FORWARD,
                Rule::new()
                    .src(ip)
                    .comment(&from_bridged)
                    .m(bridged)
                    .jump(&fw),
            );

            self.push(
                names::ROUTER_OUTPUT,
                Rule::new().dst(ip).comment(&to).jump(&fw),
            );
            self.push(
                names::ROUTER_OUTPUT,
                Rule::new().src(ip).comment(&from).jump(&fw),
            );
        }

        for chain in [
            names::ROUTER_INPUT,
            names::ROUTER_FORWARD,
            names::ROUTER_OUTPUT,
        ] {
            self.push(
                chain,
                Rule::new()
                    .comment("rule to explicitly ACCEPT traffic that comply to network policies")
                    .m(format!("-m mark --mark {MARK_NETPOL_OK}"))
                    .jump("ACCEPT"),
            );
        }
    }

    fn pod_chain<'t>(
        &mut self,
        resolved: &ResolvedPolicies,
        tiers: &ClusterTiers<'t>,
        tier_chains: &mut BTreeMap<(String, Direction), &'t ClusterPolicy>,
        pod: &PodInfo,
        ip: Ipv4Addr,
        ctx: &RenderContext,
    ) {
        let fw = names::pod_chain(&pod.pod.namespace, &pod.pod.name);
        let who = &pod.pod;

        self.push(
            &fw,
            Rule::new()
                .comment("common netpol rules")
                .jump(names::COMMON_CHAIN),
        );
        self.push(
            &fw,
            Rule::new()
                .dst(ip)
                .comment("from local node")
                .m("-m addrtype --src-type LOCAL")
                .jump("ACCEPT"),
        );
        self.push(
            &fw,
            Rule::new()
                .src(ip)
                .comment("to local node")
                .m("-m addrtype --dst-type LOCAL")
                .jump("ACCEPT"),
        );
        let mut tiered = false;
        let mut tier_jumps = |b: &mut Self, tier: Tier, dir: Direction| {
            let selecting = tiers.selecting(tier, pod, dir);
            if tier == Tier::Baseline && !selecting.is_empty() {
                b.push(&fw, tiers::clear_pass(ip, dir));
            }
            for p in selecting {
                b.push(&fw, tiers::jump(p, tier, ip, dir));
                tier_chains.insert((p.id(), dir), p);
                tiered = true;
            }
        };
        tier_jumps(self, Tier::Admin, Direction::Egress);
        tier_jumps(self, Tier::Admin, Direction::Ingress);

        let ingress: Vec<&ResolvedPolicy> =
            resolved.isolating(&pod.pod, Direction::Ingress).collect();
        let egress: Vec<&ResolvedPolicy> =
            resolved.isolating(&pod.pod, Direction::Egress).collect();
        if egress.is_empty() {
            tier_jumps(self, Tier::Baseline, Direction::Egress);
            self.push(
                &fw,
                Rule::new()
                    .src(ip)
                    .comment(format!(
                        "default egress: no policy isolates {who} for egress"
                    ))
                    .jump(names::DEFAULT_CHAIN),
            );
        }
        if ingress.is_empty() {
            tier_jumps(self, Tier::Baseline, Direction::Ingress);
            self.push(
                &fw,
                Rule::new()
                    .dst(ip)
                    .comment(format!(
                        "default ingress: no policy isolates {who} for ingress"
                    ))
                    .jump(names::DEFAULT_CHAIN),
            );
        }
        for p in &ingress {
            let chain = names::policy_chain(&p.namespace, &p.name, Direction::Ingress);
            self.push(
                &fw,
                Rule::new()
                    .dst(ip)
                    .comment(format!("{} ingress", p.id()))
                    .jump(chain),
            );
        }
        for p in &egress {
            let chain = names::policy_chain(&p.namespace, &p.name, Direction::Egress);
            self.push(
                &fw,
                Rule::new()
                    .src(ip)
                    .comment(format!("{} egress", p.id()))
                    .jump(chain),
            );
        }

        let not_allowed = format!("-m mark ! --mark {MARK_ALLOWED}");
        self.push(
            &fw,
            Rule::new()
                .comment(format!("log what no policy allows for {who}"))
                .m(&not_allowed)
                .m("-m limit --limit 10/min --limit-burst 10")
                .jump(format!("NFLOG --nflog-group {NFLOG_GROUP}")),
        );
        self.push(
            &fw,
            Rule::new()
                .comment(format!("deny what no policy allows for {who}"))
                .m(&not_allowed)
                .jump(deny_target(ctx.deny)),
        );
        self.push(
            &fw,
            Rule::new()
                .comment("clear the policy mark for the next pod chain")
                .jump(if tiered {
                    tiers::CLEAR_TIER_MARKS
                } else {
                    "MARK --set-xmark 0x0/0x10000"
                }),
        );
        self.push(
            &fw,
            Rule::new()
                .comment("set netpol-ok mark")
                .jump(format!("MARK --set-xmark {MARK_NETPOL_OK}")),
        );
    }

    fn shared_chains(&mut self) {
        let c = names::COMMON_CHAIN;
        self.push(
            c,
            Rule::new()
                .comment("rule to drop invalid state for pod")
                .m("-m conntrack --ctstate INVALID")
                .jump("DROP"),
        );
        self.push(
            c,
            Rule::new()
                .comment("rule for stateful firewall for pod")
                .m("-m conntrack --ctstate RELATED,ESTABLISHED")
                .jump("ACCEPT"),
        );
        for (ty, what) in [
            (8, "echo-request"),
            (3, "destination-unreachable"),
            (11, "time-exceeded"),
        ] {
            self.push(
                c,
                Rule::new()
                    .proto("icmp")
                    .comment(format!("allow icmp {what} messages"))
                    .m(format!("-m icmp --icmp-type {ty}"))
                    .jump("ACCEPT"),
            );
        }
        self.push(
            names::DEFAULT_CHAIN,
            Rule::new()
                .comment("rule to mark traffic matching a network policy")
                .jump(format!("MARK --set-xmark {MARK_ALLOWED}")),
        );
    }

    /// The chain of one direction of a policy that isolates some local pod in it.
    fn policy_chain(
        &mut self,
        resolved: &ResolvedPolicies,
        policy: &ResolvedPolicy,
        dir: Direction,
        local: &[(&PodInfo, Ipv4Addr)],
    ) {
        let chain = names::policy_chain(&policy.namespace, &policy.name, dir);
        self.ensure_chain(&chain);
        let id = policy.id();

        // The policy's pods on this node: they are why the chain is here.
        let targets: Vec<&PodInfo> = local
            .iter()
            .map(|(p, _)| *p)
            .filter(|p| policy.selects(&p.pod))
            .collect();
        let target_set = names::target_set(&policy.namespace, &policy.name, dir);
        self.add_set(&target_set, pod_set(&targets));

        for rule in policy.effective_rules(dir) {
            let peers = self.peer_sides(resolved, policy, rule);
            // The ports that are the same on every destination (numbers, ranges, whole
            // protocols); `None` = every port and protocol.
            let uniform: Option<Vec<(String, PortSpan)>> = rule.ports.as_ref().map(|entries| {
                entries
                    .iter()
                    .filter(|e| !e.is_named())
                    .filter_map(|e| e.on(None).map(|s| (format!("ports[{}] {s}", e.index), s)))
                    .collect()
            });
            let specs: Vec<(String, Option<PortSpan>)> = match &uniform {
                None => vec![("all ports".into(), None)],
                Some(list) => list.iter().map(|(l, s)| (l.clone(), Some(*s))).collect(),
            };
            for peer in &peers {
                for (port_label, span) in &specs {
                    let comment = format!("{id} {} {port_label}", peer.label);
                    let (src, dst) = match dir {
                        Direction::Ingress => (peer.set.as_deref(), Some(target_set.as_str())),
                        Direction::Egress => (Some(target_set.as_str()), peer.set.as_deref()),
                    };
                    self.allow_pair(&chain, &comment, src, dst, span.as_ref());
                }
            }

            // Named ports: resolved by `policy` on each destination pod.
            for entry in rule.ports.iter().flatten().filter(|e| e.is_named()) {
                let groups = named_port_groups(resolved, rule, entry, dir, &targets);
                for (span, pods) in groups {
                    let (first, _) = span.range.unwrap_or((0, 0));
                    let set = names::named_port_set(
                        &policy.namespace,
                        &policy.name,
                        dir,
                        rule.index,
                        entry.index,
                        proto_name(span.protocol),
                        first,
                    );
                    self.add_set(&set, pod_set(&pods));
                    let port_label = format!("ports[{}] {entry} = {span}", entry.index);
                    match dir {
                        Direction::Ingress => {
                            for peer in &peers {
                                let comment = format!("{id} {} {port_label}", peer.label);
                                self.allow_pair(
                                    &chain,
                                    &comment,
                                    peer.set.as_deref(),
                                    Some(&set),
                                    Some(&span),
                                );
                            }
                        }
                        Direction::Egress => {
                            // The destination set already holds only pods the rule's
                            // peers admit.
                            let comment = format!("{id} {} {port_label}", rule.label());
                            self.allow_pair(
                                &chain,
                                &comment,
                                Some(&target_set),
                                Some(&set),
                                Some(&span),
                            );
                        }
                    }
                }
            }
        }
    }

    /// The sets standing for a rule's peers (creating them), one per peer; peers that
    /// match nothing get no set and no rule.
    fn peer_sides(
        &mut self,
        resolved: &ResolvedPolicies,
        policy: &ResolvedPolicy,
        rule: &ResolvedRule,
    ) -> Vec<PeerSide> {
        let Some(peers) = &rule.peers else {
            return vec![PeerSide {
                set: None,
                label: rule.label(),
            }];
        };
        let mut sides = Vec::new();
        for peer in peers {
            let (set, content) = match &peer.kind {
                PeerKind::Pods { pods, .. } => (
                    names::peer_set(
                        &policy.namespace,
                        &policy.name,
                        rule.direction,
                        rule.index,
                        peer.index,
                        false,
                    ),
                    pod_set(
                        &pods
                            .iter()
                            .filter_map(|p| resolved.pod(p))
                            .collect::<Vec<_>>(),
                    ),
                ),
                PeerKind::IpBlock(block) => (
                    names::peer_set(
                        &policy.namespace,
                        &policy.name,
                        rule.direction,
                        rule.index,
                        peer.index,
                        true,
                    ),
                    IpSet::new(SetKind::HashNet, ip_block_entries(block)),
                ),
                PeerKind::Nothing(_) => continue,
            };
            self.add_set(&set, content);
            sides.push(PeerSide {
                set: Some(set),
                label: rule.peer_label(peer.index),
            });
        }
        sides
    }

    /// kube-router's pair: mark what the rule allows, and return at once when marked.
    fn allow_pair(
        &mut self,
        chain: &str,
        comment: &str,
        src_set: Option<&str>,
        dst_set: Option<&str>,
        span: Option<&PortSpan>,
    ) {
        let mut base = Rule::new().comment(comment);
        if let Some(s) = src_set {
            base = base.m(format!("-m set --match-set {s} src"));
        }
        if let Some(s) = dst_set {
            base = base.m(format!("-m set --match-set {s} dst"));
        }
        let base = with_span(base, span);
        self.push(
            chain,
            base.clone()
                .jump(format!("MARK --set-xmark {MARK_ALLOWED}")),
        );
        self.push(
            chain,
            base.m(format!("-m mark --mark {MARK_ALLOWED}"))
                .jump("RETURN"),
        );
    }

    /// The rules and the sets they use: a set no rule matches on (say the target set of
    /// a policy whose only rules are named ports) is left out rather than shown idle.
    fn finish(mut self) -> Ruleset {
        let used: BTreeSet<&str> = self
            .chains
            .values()
            .flatten()
            .flat_map(|line| line.split("--match-set ").skip(1))
            .filter_map(|rest| rest.split_whitespace().next())
            .collect();
        self.sets.retain(|name, _| used.contains(name.as_str()));
        Ruleset {
            hooks: self.hooks,
            chains: self.chains,
            sets: self.sets,
        }
    }
}

/// The destination pods of one named port entry, grouped by the port it resolves to on
/// each: for ingress the policy's local pods, for egress every pod of the cluster the
/// rule's peers admit. Pods where the name resolves to nothing are left out.
fn named_port_groups<'a>(
    resolved: &'a ResolvedPolicies,
    rule: &ResolvedRule,
    entry: &PortEntry,
    dir: Direction,
    targets: &[&'a PodInfo],
) -> BTreeMap<PortSpan, Vec<&'a PodInfo>> {
    let candidates: Vec<&PodInfo> = match dir {
        Direction::Ingress => targets.to_vec(),
        Direction::Egress => resolved
            .pods()
            .values()
            .filter(|p| p.ip.is_some() && !p.host_network)
            .filter(|p| rule.check_peer(&Endpoint::Pod(p)) != PeerCheck::NoMatch)
            .collect(),
    };
    let mut groups: BTreeMap<PortSpan, Vec<&PodInfo>> = BTreeMap::new();
    for pod in candidates {
        if let Some(span) = entry.on(Some(&pod.ports)) {
            groups.entry(span).or_default().push(pod);
        }
    }
    groups
}
