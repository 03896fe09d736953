//! The resolv.conf a kubelet writes into a pod with `dnsPolicy: ClusterFirst` (the
//! default), and the order in which a stub resolver tries names under it (glibc's
//! `res_search`): the same function decides what the harness asks the cluster DNS and
//! what the oracle expects it to answer.

use std::net::Ipv4Addr;

/// `options ndots:5` (kubelet's `defaultDNSOptions`).
pub const NDOTS: usize = 5;

/// A pod's resolver configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameserver: Ipv4Addr,
    /// `ns.svc.<zone> svc.<zone> <zone>`, without trailing dots.
    pub search: Vec<String>,
    pub ndots: usize,
}

impl ResolvConf {
    /// What the kubelet writes for a pod in `namespace`: the cluster DNS as the only
    /// nameserver, the namespace's search list, `ndots:5`. (The node's own search
    /// domains would follow; knetlab's nodes have none.)
    pub fn for_pod(namespace: &str, nameserver: Ipv4Addr, domain: &str) -> Self {
        ResolvConf {
            nameserver,
            search: vec![
                format!("{namespace}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.to_string(),
            ],
            ndots: NDOTS,
        }
    }

    /// The file's text, in the kubelet's order: search, nameserver, options.
    pub fn render(&self) -> String {
        format!(
            "search {}\nnameserver {}\noptions ndots:{}\n",
            self.search.join(" "),
            self.nameserver,
            self.ndots
        )
    }

    /// The absolute names a stub resolver asks, in order, for `name`: an absolute name
    /// (trailing dot) only as is; a name with at least `ndots` dots as is first, then
    /// with each search domain; any other name with each search domain first, then as is.
    /// Each candidate ends with a dot.
    pub fn candidates(&self, name: &str) -> Vec<String> {
        if name.ends_with('.') {
            return vec![name.to_string()];
        }
        let as_is = format!("{name}.");
        let searched = self.search.iter().map(|d| format!("{name}.{d}."));
        if name.matches('.').count() >= self.ndots {
            std::iter::once(as_is).chain(searched).collect()
        } else {
            searched.chain(std::iter::once(as_is)).collect()
        }
    }
}
