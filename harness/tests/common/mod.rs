//! What the tests that need root share, in one place for every test binary of the
//! workspace (`harness/tests/*.rs`, and `xtask/tests/*.rs` through a `#[path]` module).
//!
//! Such a test is marked `#[ignore = "needs root: …"]` (an ignored trial in the
//! libtest-mimic binaries), so a plain `cargo test` lists it as ignored instead of
//! counting it as passed; `cargo xtask test` runs it with `--include-ignored` when it
//! is root. Its first line is [`require_root`]: run without root, or without a tool it
//! needs, the test fails and says why. Nothing here skips quietly.

// Every test binary compiles this module and uses its own part of it.
#![allow(dead_code)]

/// The tools a test may need beyond knetlab's prerequisites come from the one tool
/// table, with the path Debian installs them at and their package.
pub use harness::system::Tool;

/// Packet tracing (`--trace`) reads the kernel's TRACE events with it.
pub const XTABLES_MONITOR: Tool = Tool::XtablesMonitor;

/// The HTML report's browser test lays the page out in headless Chromium.
pub const CHROMIUM: Tool = Tool::Chromium;

/// The one gate of every test that builds namespaces: fails (with the command that
/// fixes it) unless the process is root and knetlab's prerequisites and `extra` are
/// installed. `cargo xtask test` installs them before it runs the tests as root, so a
/// missing one there is a broken setup, not a reason to skip.
#[track_caller]
pub fn require_root(extra: &[Tool]) {
    assert!(
        harness::netns::have_privileges(),
        "needs root: this test builds network namespaces. Run `sudo cargo xtask test` \
         (it runs the ignored tests with --include-ignored)"
    );
    let mut missing: Vec<&str> = harness::prereq::missing_packages();
    missing.extend(extra.iter().filter(|t| !t.installed()).map(|t| t.package()));
    missing.sort_unstable();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "missing Debian packages: {}; `sudo cargo xtask test` installs them first, or: {}",
        missing.join(" "),
        harness::prereq::install_command(&missing)
    );
    harness::netns::init();
}
