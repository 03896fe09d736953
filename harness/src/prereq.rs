//! The system pieces knetlab needs (the CNI reference plugins, iproute2, iptables, ipset,
//! nftables; nginx for scenarios with an Ingress), checked before anything is
//! built. As root, missing Debian packages are installed; otherwise the exact command to
//! run is printed.

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

/// What scenarios with an Ingress also need: the controller pod runs Debian's nginx
/// (the certificates a scenario does not give are made in-process, see
/// `ingress::certificate`).
const INGRESS_NEEDS: &[Need] = &[Need {
    path: "/usr/sbin/nginx",
    package: "nginx",
}];

/// The Debian packages the ingress controller needs that are missing.
pub fn missing_ingress_packages() -> Vec<&'static str> {
    let mut pkgs: Vec<&'static str> = INGRESS_NEEDS
        .iter()
        .filter(|n| !Path::new(n.path).exists())
        .map(|n| n.package)
        .collect();
    pkgs.sort();
    pkgs.dedup();
    pkgs
}

/// Makes sure nginx is there for a scenario with an Ingress: installs it
/// when root, otherwise fails with the command to run. Debian's nginx package would
/// start its own service in the host's namespaces where services may start (not in
/// containers with a `policy-rc.d` that forbids it, like this one); knetlab never uses
/// that service, only its own nginx inside the controller pod.
pub fn ensure_ingress(log: &mut dyn FnMut(&str)) -> Result<()> {
    // Scenario tests run in parallel threads: one apt-get at a time (dpkg's lock would
    // fail the second), and the others find the packages there once it is done.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let missing = missing_ingress_packages();
    if missing.is_empty() {
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "scenarios with an Ingress need these Debian packages: {}\n  install them with: sudo sh -c '{}'",
            missing.join(" "),
            install_command(&missing)
        );
    }
    log(&format!(
        "installing missing packages for the ingress controller: {}",
        missing.join(" ")
    ));
    apt_install(&missing, missing_ingress_packages)
}

/// Runs apt-get for `missing` (as root), then checks with `still_missing` that the
/// files are really there now.
fn apt_install(missing: &[&str], still_missing: fn() -> Vec<&'static str>) -> Result<()> {
    let status = Command::new("sh")
        .arg("-c")
        .arg(install_command(missing))
        .status()
        .context("run apt-get")?;
    if !status.success() {
        bail!("apt-get failed ({status}) installing {}", missing.join(" "));
    }
    let still = still_missing();
    if !still.is_empty() {
        bail!("still missing after apt-get: {}", still.join(" "));
    }
    Ok(())
}

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
        apt_install(&missing, missing_packages)?;
    }
    if !root {
        bail!(
            "knetlab builds network namespaces and needs root: run it with sudo \
             (nothing is ever changed in the host's own network namespace)"
        );
    }
    Ok(())
}

/// What only the test suite needs: headless Chromium for the report's browser test
/// (`xtask/tests/lab.rs`).
const TEST_NEEDS: &[Need] = &[Need {
    path: "/usr/bin/chromium",
    package: "chromium",
}];

/// Where the browser test finds Chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Installs what only the tests need (`cargo xtask test`), when root; otherwise says
/// which tests will skip. Never fails the run: a test without its tool skips with a reason.
pub fn ensure_test_tools(log: &mut dyn FnMut(&str)) {
    let mut missing: Vec<&str> = TEST_NEEDS
        .iter()
        .filter(|n| !Path::new(n.path).exists())
        .map(|n| n.package)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        log(&format!(
            "note: the browser test of the HTML report will skip: it needs {} (sudo sh -c '{}')",
            missing.join(" "),
            install_command(&missing)
        ));
        return;
    }
    log(&format!(
        "installing packages the tests need: {}",
        missing.join(" ")
    ));
    let ok = Command::new("sh")
        .arg("-c")
        .arg(install_command(&missing))
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        log(&format!(
            "note: could not install {}; the browser test will skip",
            missing.join(" ")
        ));
    }
}
