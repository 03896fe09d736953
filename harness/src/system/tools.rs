//! The one table of the command-line tools knetlab runs inside namespaces, and the
//! binary each one is. Every other file names a tool through [`Tool`], so what runs is
//! decided here and only here (the CNI plugins are files found by path, see `crate::cni`).

/// A tool knetlab runs inside a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tool {
    /// Loads iptables rules in one transaction.
    IptablesRestore,
    /// Prints the iptables rules.
    IptablesSave,
    /// Changes one iptables rule.
    Iptables,
    /// Loads and prints ipsets.
    Ipset,
    /// Loads and lists nftables rulesets.
    Nft,
    /// Lists and flushes the connection tracking table.
    Conntrack,
    /// Lists the IPVS table.
    Ipvsadm,
    /// The ingress controller's web server.
    Nginx,
    /// Runs a command with its stdout line-buffered.
    Stdbuf,
    /// Prints netfilter events (`--trace`: the rules a packet met).
    XtablesMonitor,
}

impl Tool {
    /// The binary run for this tool. The iptables tools are named with their `-nft`
    /// suffix, Debian's default back end, so that rules never land in the legacy tables
    /// by accident.
    pub const fn binary(self) -> &'static str {
        match self {
            Tool::IptablesRestore => "iptables-nft-restore",
            Tool::IptablesSave => "iptables-nft-save",
            Tool::Iptables => "iptables-nft",
            Tool::Ipset => "ipset",
            Tool::Nft => "nft",
            Tool::Conntrack => "conntrack",
            Tool::Ipvsadm => "ipvsadm",
            Tool::Nginx => "/usr/sbin/nginx",
            Tool::Stdbuf => "stdbuf",
            Tool::XtablesMonitor => "xtables-monitor",
        }
    }
}

impl std::fmt::Display for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.binary())
    }
}
