//! The one table of the command-line tools knetlab runs, the binary each one is, where
//! Debian installs it and which package ships it. Every other file names a tool through
//! [`Tool`], so what runs (and what `crate::prereq` installs) is decided here and only
//! here (the CNI plugins are files found by path, see `crate::cni`).

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
    /// iproute2: `ip netns exec` for `shell`/`exec`, and the host snapshot's listings.
    Ip,
    /// Sends ICMP echo requests (what users type inside a pod).
    Ping,
    /// The host's `iptables-save`, whichever back end its alternatives pick (the host
    /// snapshot reads it; knetlab's own rules always go through the `-nft` tools).
    HostIptablesSave,
    /// The legacy back end's `iptables-save` (the host snapshot reads it too).
    IptablesLegacySave,
    /// A POSIX shell, for the one apt-get command line.
    Shell,
    /// Headless Chromium, for the report's browser test.
    Chromium,
    /// iproute2's socket tool: the fault tests destroy a server's sockets with `ss -K`.
    Ss,
}

/// The tools every run needs on the machine (`crate::prereq` checks and installs them).
pub const REQUIRED: &[Tool] = &[
    Tool::Ip,
    Tool::IptablesRestore,
    Tool::IptablesSave,
    Tool::Ipset,
    Tool::Nft,
    Tool::Conntrack,
    Tool::Ping,
];

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
            Tool::Ip => "ip",
            Tool::Ping => "ping",
            Tool::HostIptablesSave => "iptables-save",
            Tool::IptablesLegacySave => "iptables-legacy-save",
            Tool::Shell => "sh",
            Tool::Chromium => "/usr/bin/chromium",
            Tool::Ss => "ss",
        }
    }

    /// Where Debian installs the binary: what `crate::prereq` checks before a run.
    pub const fn path(self) -> &'static str {
        match self {
            Tool::IptablesRestore => "/usr/sbin/iptables-nft-restore",
            Tool::IptablesSave => "/usr/sbin/iptables-nft-save",
            Tool::Iptables => "/usr/sbin/iptables-nft",
            Tool::Ipset => "/usr/sbin/ipset",
            Tool::Nft => "/usr/sbin/nft",
            Tool::Conntrack => "/usr/sbin/conntrack",
            Tool::Ipvsadm => "/usr/sbin/ipvsadm",
            Tool::Nginx => "/usr/sbin/nginx",
            Tool::Stdbuf => "/usr/bin/stdbuf",
            Tool::XtablesMonitor => "/usr/sbin/xtables-monitor",
            Tool::Ip => "/usr/sbin/ip",
            Tool::Ping => "/usr/bin/ping",
            Tool::HostIptablesSave => "/usr/sbin/iptables-save",
            Tool::IptablesLegacySave => "/usr/sbin/iptables-legacy-save",
            Tool::Shell => "/bin/sh",
            Tool::Chromium => "/usr/bin/chromium",
            Tool::Ss => "/usr/bin/ss",
        }
    }

    /// The Debian package that ships the binary.
    pub const fn package(self) -> &'static str {
        match self {
            Tool::IptablesRestore
            | Tool::IptablesSave
            | Tool::Iptables
            | Tool::XtablesMonitor
            | Tool::HostIptablesSave
            | Tool::IptablesLegacySave => "iptables",
            Tool::Ipset => "ipset",
            Tool::Nft => "nftables",
            Tool::Conntrack => "conntrack",
            Tool::Ipvsadm => "ipvsadm",
            Tool::Nginx => "nginx",
            Tool::Stdbuf => "coreutils",
            Tool::Ip | Tool::Ss => "iproute2",
            Tool::Ping => "iputils-ping",
            Tool::Shell => "dash",
            Tool::Chromium => "chromium",
        }
    }

    /// Whether the binary is installed where Debian puts it.
    pub fn installed(self) -> bool {
        std::path::Path::new(self.path()).exists()
    }
}

impl std::fmt::Display for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.binary())
    }
}
