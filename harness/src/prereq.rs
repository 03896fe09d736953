//! The system pieces knetlab needs (the CNI reference plugins, iproute2, iptables, ipset,
//! nftables), checked before anything is built. As root, missing Debian packages are
//! installed; otherwise the exact command to run is printed.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Where Debian's `containernetworking-plugins` puts the plugins.
pub const CNI_PATH: &str = "/usr/lib/cni";

/// A file we need and the Debian package that ships it.
struct Need {
    path: &'static str,
    package: &'static str,
}

const NEEDS: &[Need] = &[
    Need {
        path: "/usr/lib/cni/bridge",
        package: "containernetworking-plugins",
    },
    Need {
        path: "/usr/lib/cni/host-local",
        package: "containernetworking-plugins",
    },
    Need {
        path: "/usr/lib/cni/loopback",
        package: "containernetworking-plugins",
    },
    Need {
        path: "/usr/sbin/ip",
        package: "iproute2",
    },
    Need {
        path: "/usr/sbin/iptables-restore",
        package: "iptables",
    },
    Need {
        path: "/usr/sbin/iptables-save",
        package: "iptables",
    },
    Need {
        path: "/usr/sbin/ipset",
        package: "ipset",
    },
    Need {
        path: "/usr/sbin/nft",
        package: "nftables",
    },
    Need {
        path: "/usr/sbin/conntrack",
        package: "conntrack",
    },
    Need {
        path: "/usr/bin/ping",
        package: "iputils-ping",
    },
];

/// The Debian packages whose files are missing, sorted and without duplicates.
pub fn missing_packages() -> Vec<&'static str> {
    let mut pkgs: Vec<&'static str> = NEEDS
        .iter()
        .filter(|n| !Path::new(n.path).exists())
        .map(|n| n.package)
        .collect();
    pkgs.sort();
    pkgs.dedup();
    pkgs
}

/// The command that installs `packages`.
pub fn install_command(packages: &[&str]) -> String {
    format!(
        "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y {}",
        packages.join(" ")
    )
}

/// Makes sure everything is there: installs missing packages when root, otherwise fails
/// with the command to run. Also fails when not root, since namespaces need it.
pub fn ensure(log: &mut dyn FnMut(&str)) -> Result<()> {
    let root = nix::unistd::geteuid().is_root();
    let missing = missing_packages();
    if !missing.is_empty() {
        if !root {
            bail!(
                "knetlab needs these Debian packages: {}\n  install them with: sudo sh -c '{}'",
                missing.join(" "),
                install_command(&missing)
            );
        }
        log(&format!(
            "installing missing packages: {}",
            missing.join(" ")
        ));
        let status = Command::new("sh")
            .arg("-c")
            .arg(install_command(&missing))
            .status()
            .context("run apt-get")?;
        if !status.success() {
            bail!("apt-get failed ({status}) installing {}", missing.join(" "));
        }
        let still = missing_packages();
        if !still.is_empty() {
            bail!("still missing after apt-get: {}", still.join(" "));
        }
    }
    if !root {
        bail!(
            "knetlab builds network namespaces and needs root: run it with sudo \
             (nothing is ever changed in the host's own network namespace)"
        );
    }
    Ok(())
}
