//! `cargo xtask test`: the whole test suite, as CI runs it. As root it first installs
//! missing system packages; afterwards it checks that no run left a namespace behind.

use std::process::Command;

pub fn main(cargo_args: &[String]) -> u8 {
    let root = harness::netns::have_privileges();
    if root {
        let mut log = |m: &str| eprintln!("{m}");
        // The Ingress scenarios' nginx and openssl too, up front: apt-get in the middle
        // of the suite would race other test binaries for dpkg's lock.
        if let Err(e) = harness::prereq::ensure(&mut log)
            .and_then(|()| harness::prereq::ensure_ingress(&mut log))
        {
            eprintln!("error: {e:#}");
            return 2;
        }
    } else {
        eprintln!(
            "note: not root: tests that build clusters will be skipped (each says why); \
             run `sudo cargo xtask test` for the full suite"
        );
    }
    harness::prereq::ensure_test_tools(&mut |m: &str| eprintln!("{m}"));
    let before = ours();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(crate::workspace_root())
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(cargo_args)
        .status();
    let mut code = match status {
        Ok(s) if s.success() => 0,
        Ok(_) => 1,
        Err(e) => {
            eprintln!("error: cannot run cargo test: {e}");
            2
        }
    };
    // Namespaces of runs that are still alive (another `cargo xtask scenario` at the same
    // time, a kept cluster) are theirs to remove; anything else new is a leak.
    let left: Vec<String> = ours()
        .into_iter()
        .filter(|n| !before.contains(n))
        .filter(|n| {
            sim::plan::prefix_of(n)
                .is_none_or(|p| harness::sweep::live_owner(&harness::sweep::state_dir(p)).is_none())
        })
        .collect();
    if !left.is_empty() {
        eprintln!(
            "error: the test suite left {} network namespaces behind: {}",
            left.len(),
            left.join(" ")
        );
        code = code.max(1);
    } else if root {
        eprintln!("no network namespaces left behind");
    }
    code
}

fn ours() -> Vec<String> {
    harness::netns::list()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| sim::plan::prefix_of(n).is_some())
        .collect()
}
