//! The userspace proxy's nat rules: `KUBE-PORTALS-CONTAINER` (from PREROUTING, for pods:
//! `REDIRECT --to-ports`) and `KUBE-PORTALS-HOST` (from OUTPUT, for the node itself:
//! `DNAT` to the node's address and the proxy port), rendered as restore text, and the
//! proxy's part of `iptables-save` read back. Text in, text out: nothing here touches a
//! node.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use sim::kube_proxy::iptables::normalise_rule;
use sim::protocol::Protocol;

/// nat chain jumped to from PREROUTING: pods' connections to cluster IPs.
pub const PORTALS_CONTAINER: &str = "KUBE-PORTALS-CONTAINER";
/// nat chain jumped to from OUTPUT: the node's own connections to cluster IPs.
pub const PORTALS_HOST: &str = "KUBE-PORTALS-HOST";
/// The first proxy port; service ports get the next free one in their order.
pub const PROXY_PORT_BASE: u16 = 20000;
/// The comment of both jumps (kube-proxy's `iptablesInit`).
const JUMP_COMMENT: &str = "handle ClusterIPs; NOTE: this must be before the NodePort rules";

/// One proxied service port, as the rules and the listener see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Portal {
    /// `ns/name:port`.
    pub service: String,
    pub protocol: Protocol,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    /// Where the proxy listens on the node.
    pub proxy_port: u16,
}

/// The nat restore text for `portals` on a node whose address is `node_ip` (chain lines
/// flush both chains, so it is a full rewrite), as kube-proxy's
/// `iptablesContainerPortalArgs` / `iptablesHostPortalArgs` wrote them for a proxy bound
/// to 0.0.0.0.
pub fn portal_restore(portals: &[Portal], node_ip: Ipv4Addr) -> String {
    let mut out = format!("*nat\n:{PORTALS_CONTAINER} - [0:0]\n:{PORTALS_HOST} - [0:0]\n");
    for p in portals {
        let args = format!(
            "-m comment --comment \"{}\" -p {proto} -m {proto} --dport {} -d {}/32",
            p.service,
            p.port,
            p.cluster_ip,
            proto = p.protocol.lower()
        );
        let _ = writeln!(
            out,
            "-A {PORTALS_CONTAINER} {args} -j REDIRECT --to-ports {}",
            p.proxy_port
        );
        let _ = writeln!(
            out,
            "-A {PORTALS_HOST} {args} -j DNAT --to-destination {node_ip}:{}",
            p.proxy_port
        );
    }
    out.push_str("COMMIT\n");
    out
}

/// The jumps from the built-in chains, inserted once at a node's first sync.
pub fn jump_restore() -> String {
    format!(
        "*nat\n:{PORTALS_CONTAINER} - [0:0]\n:{PORTALS_HOST} - [0:0]\n\
         -I PREROUTING -m comment --comment \"{JUMP_COMMENT}\" -j {PORTALS_CONTAINER}\n\
         -I OUTPUT -m comment --comment \"{JUMP_COMMENT}\" -j {PORTALS_HOST}\nCOMMIT\n"
    )
}

/// The userspace proxy's part of `iptables-save`: the nat table's built-in chain lines,
/// its two chains with their rules, and the jumps into them (normalised).
pub fn portal_view(iptables_save: &str) -> String {
    let ours = |c: &str| c == PORTALS_CONTAINER || c == PORTALS_HOST;
    let mut out = String::new();
    let mut in_nat = false;
    for line in iptables_save.lines().map(str::trim_end) {
        if let Some(t) = line.strip_prefix('*') {
            in_nat = t == "nat";
            if in_nat {
                out.push_str("*nat\n");
            }
            continue;
        }
        if !in_nat || line.starts_with('#') {
            continue;
        }
        if line == "COMMIT" {
            out.push_str("COMMIT\n");
            in_nat = false;
        } else if let Some(decl) = line.strip_prefix(':') {
            let mut parts = decl.split_whitespace();
            let name = parts.next().unwrap_or_default();
            let policy = parts.next().unwrap_or("-");
            if policy != "-" || ours(name) {
                let _ = writeln!(out, ":{name} {policy} [0:0]");
            }
        } else {
            let mut words = line.split_whitespace();
            let chain = words.nth(1).unwrap_or_default();
            let target = line.rsplit_once(" -j ").map(|(_, t)| t.trim());
            if ours(chain) || target.is_some_and(ours) {
                let _ = writeln!(out, "{}", normalise_rule(line));
            }
        }
    }
    out
}

/// Whether `iptables-save -t nat` output already holds the jumps [`jump_restore`]
/// inserts (a node started before, whose proxy state was forgotten after a failure).
pub fn has_jumps(iptables_save: &str) -> bool {
    iptables_save.contains(&format!("-j {PORTALS_CONTAINER}"))
        && iptables_save.contains(&format!("-j {PORTALS_HOST}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portals_redirect_pods_and_dnat_the_node() {
        let p = Portal {
            service: "default/web:http".into(),
            protocol: Protocol::Tcp,
            cluster_ip: "10.96.0.10".parse().unwrap(),
            port: 80,
            proxy_port: 20000,
        };
        let text = portal_restore(&[p], "192.168.200.11".parse().unwrap());
        assert_eq!(
            text,
            "*nat\n:KUBE-PORTALS-CONTAINER - [0:0]\n:KUBE-PORTALS-HOST - [0:0]\n\
             -A KUBE-PORTALS-CONTAINER -m comment --comment \"default/web:http\" -p tcp -m tcp --dport 80 -d 10.96.0.10/32 -j REDIRECT --to-ports 20000\n\
             -A KUBE-PORTALS-HOST -m comment --comment \"default/web:http\" -p tcp -m tcp --dport 80 -d 10.96.0.10/32 -j DNAT --to-destination 192.168.200.11:20000\n\
             COMMIT\n"
        );
        let saved = "# Generated\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n*nat\n:PREROUTING ACCEPT [1:2]\n:KUBE-PORTALS-HOST - [0:0]\n:KUBE-SERVICES - [0:0]\n-A PREROUTING -m comment --comment \"x y\" -j KUBE-PORTALS-CONTAINER\n-A PREROUTING -j KUBE-SERVICES\n-A KUBE-PORTALS-HOST -d 10.96.0.10/32 -p tcp -j DNAT --to-destination 1.2.3.4:5\nCOMMIT\n";
        let view = portal_view(saved);
        assert_eq!(
            view,
            "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-PORTALS-HOST - [0:0]\n-A PREROUTING -m comment --comment \"x y\" -j KUBE-PORTALS-CONTAINER\n-A KUBE-PORTALS-HOST -d 10.96.0.10/32 -p tcp -j DNAT --to-destination 1.2.3.4:5\nCOMMIT\n"
        );
        assert!(!has_jumps(saved), "only one of the two jumps is there");
        assert!(has_jumps(&jump_restore()));
    }
}
