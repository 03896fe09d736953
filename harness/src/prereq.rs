//! The system pieces knetlab needs (the CNI reference plugins, iproute2, iptables, ipset,
//! nftables; nginx for scenarios with an Ingress), checked before anything is
//! built. As root, missing Debian packages are installed; otherwise the exact command to
//! run is printed.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::system::tools::{self, Tool};

/// Where Debian's `containernetworking-plugins` puts the plugins.
pub const CNI_PATH: &str = "/usr/lib/cni";

/// A file we need and the Debian package that ships it: a tool of the one table, or a
/// CNI plugin.
#[derive(Clone, Copy)]
enum Need {
    Tool(Tool),
    Plugin(&'static str),
}

impl Need {
    fn package(self) -> &'static str {
        match self {
            Need::Tool(t) => t.package(),
            Need::Plugin(_) => "containernetworking-plugins",
        }
    }

    fn missing(self) -> bool {
        match self {
            Need::Tool(t) => !t.installed(),
            Need::Plugin(name) => !Path::new(CNI_PATH).join(name).exists(),
        }
    }
}

/// The CNI plugins every scenario's default chain calls.
const PLUGINS: [&str; 3] = ["bridge", "host-local", "loopback"];

/// Everything a run needs: the plugins, then the tools of [`tools::REQUIRED`].
fn needs() -> impl Iterator<Item = Need> {
    PLUGINS
        .into_iter()
        .map(Need::Plugin)
        .chain(tools::REQUIRED.iter().copied().map(Need::Tool))
}

/// The packages of the `needs` that are missing, sorted and without duplicates.
fn missing_of(needs: impl Iterator<Item = Need>) -> Vec<&'static str> {
    let mut pkgs: Vec<&'static str> = needs.filter(|n| n.missing()).map(Need::package).collect();
    pkgs.sort();
    pkgs.dedup();
    pkgs
}

/// What scenarios with an Ingress also need: the controller pod runs Debian's nginx
/// (the certificates a scenario does not give are made in-process, see
/// `ingress::certificate`).
const INGRESS_NEEDS: [Need; 1] = [Need::Tool(Tool::Nginx)];

/// The Debian packages the ingress controller needs that are missing.
pub fn missing_ingress_packages() -> Vec<&'static str> {
    missing_of(INGRESS_NEEDS.into_iter())
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
    let status = Command::new(Tool::Shell.binary())
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
    missing_of(needs())
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
const TEST_NEEDS: [Need; 1] = [Need::Tool(Tool::Chromium)];

/// Where the browser test finds Chromium.
pub const CHROMIUM: &str = Tool::Chromium.binary();

/// Installs what only the tests need (`cargo xtask test`), when root; otherwise says
/// which tests will fail for want of it. Never fails the run itself.
pub fn ensure_test_tools(log: &mut dyn FnMut(&str)) {
    let missing = missing_of(TEST_NEEDS.into_iter());
    if missing.is_empty() {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        log(&format!(
            "note: the browser test of the HTML report will fail: it needs {} (sudo sh -c '{}')",
            missing.join(" "),
            install_command(&missing)
        ));
        return;
    }
    log(&format!(
        "installing packages the tests need: {}",
        missing.join(" ")
    ));
    let ok = Command::new(Tool::Shell.binary())
        .arg("-c")
        .arg(install_command(&missing))
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        log(&format!(
            "note: could not install {}; the browser test will fail",
            missing.join(" ")
        ));
    }
}
