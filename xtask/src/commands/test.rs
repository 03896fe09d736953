//! `cargo xtask test`: the whole test suite, as CI runs it. The tests that need root are
//! `#[ignore = "needs root: …"]`; as root this first installs missing system packages
//! and runs them too (`--include-ignored`), otherwise it says how many were left out and
//! which. Afterwards it checks that no run left a namespace behind.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

pub fn main(cargo_args: &[String]) -> u8 {
    let root = harness::netns::have_privileges();
    if root {
        let mut log = |m: &str| eprintln!("{m}");
        // The Ingress scenarios' nginx too, up front: apt-get in the middle
        // of the suite would race other test binaries for dpkg's lock.
        if let Err(e) = harness::prereq::ensure(&mut log)
            .and_then(|()| harness::prereq::ensure_ingress(&mut log))
        {
            eprintln!("error: {e:#}");
            return 2;
        }
        harness::prereq::ensure_test_tools(&mut log);
    } else {
        eprintln!(
            "note: not root: the tests that build clusters are ignored (listed at the end); \
             run `sudo cargo xtask test` for the full suite"
        );
    }
    let before = ours();
    let (mut code, tally) = match cargo_test(cargo_args, root) {
        Ok((success, tally)) => (u8::from(!success), tally),
        Err(e) => {
            eprintln!("error: cannot run cargo test: {e}");
            return 2;
        }
    };
    tally.report(root);
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

/// Runs `cargo test --workspace --no-fail-fast` with the caller's arguments (those after
/// a second `--` go to the test binaries), adding `--include-ignored` as root. The test
/// binaries' output is passed through as it comes and tallied on the way.
fn cargo_test(cargo_args: &[String], root: bool) -> std::io::Result<(bool, Tally)> {
    let (for_cargo, for_tests) = match cargo_args.iter().position(|a| a == "--") {
        Some(at) => (&cargo_args[..at], &cargo_args[at + 1..]),
        None => (cargo_args, &[][..]),
    };
    let mut test_args: Vec<&str> = for_tests.iter().map(String::as_str).collect();
    if root
        && !test_args
            .iter()
            .any(|a| *a == "--ignored" || *a == "--include-ignored")
    {
        test_args.push("--include-ignored");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new(cargo)
        .current_dir(crate::workspace_root())
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(for_cargo)
        .arg("--")
        .args(&test_args)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut tally = Tally::default();
    if let Some(mut out) = child.stdout.take() {
        let mut buf = [0u8; 8192];
        let mut stdout = std::io::stdout();
        loop {
            let n = out.read(&mut buf)?;
            if n == 0 {
                break;
            }
            // Passed on byte for byte: a test's "test x ... " shows before its "ok".
            stdout.write_all(&buf[..n])?;
            stdout.flush()?;
            tally.feed(&buf[..n]);
        }
    }
    Ok((child.wait()?.success(), tally))
}

/// What the test binaries reported as ignored, read from libtest's (and libtest-mimic's)
/// plain output: `test NAME ... ignored[, REASON]` per test and
/// `test result: … N ignored; …` per binary.
#[derive(Debug, Default)]
struct Tally {
    partial: Vec<u8>,
    /// Each ignored test's name and its reason, if it gives one.
    ignored: Vec<(String, String)>,
    /// The sum of the binaries' own ignored counts (the check on `ignored`).
    counted: usize,
}

impl Tally {
    fn feed(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            self.line(String::from_utf8_lossy(&line).trim_end());
        }
    }

    fn line(&mut self, line: &str) {
        if let Some(rest) = line.strip_prefix("test result: ") {
            self.counted += rest
                .split(';')
                .find_map(|part| part.trim().strip_suffix(" ignored"))
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or(0);
        } else if let Some(rest) = line.strip_prefix("test ")
            && let Some((name, outcome)) = rest.split_once(" ... ")
            && let Some(why) = outcome.strip_prefix("ignored")
        {
            let why = why.trim_start_matches(',').trim();
            // libtest-mimic pads the names to one width.
            self.ignored
                .push((name.trim_end().to_string(), why.to_string()));
        }
    }

    /// Says on stderr how many tests did not run and why, so that nobody reads a green
    /// run without root as the whole suite.
    fn report(&self, root: bool) {
        let total = self.counted.max(self.ignored.len());
        if total == 0 {
            return;
        }
        let mut text = format!("note: {total} tests were ignored (not run):");
        for (name, why) in &self.ignored {
            text.push_str(&format!("\n  {name}"));
            if !why.is_empty() {
                text.push_str(&format!(" ({why})"));
            }
        }
        if total > self.ignored.len() {
            text.push_str(&format!(
                "\n  and {} more not named in the output",
                total - self.ignored.len()
            ));
        }
        if !root {
            text.push_str("\nthey need root: run `sudo cargo xtask test` for the full suite");
        }
        eprintln!("{text}");
    }
}

fn ours() -> Vec<String> {
    harness::netns::list()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| sim::plan::prefix_of(n).is_some())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::Tally;

    #[test]
    fn ignored_tests_are_tallied_with_their_reasons() {
        let mut t = Tally::default();
        // Split mid-line, as a pipe may deliver it.
        t.feed(b"running 3 tests\ntest a::b ... ignored, needs root: builds clusters\ntest c ... ok\ntest scen");
        t.feed(b"ario::x    ... ignored\n\ntest result: ok. 1 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.00s\n");
        assert_eq!(
            t.ignored,
            vec![
                (
                    "a::b".to_string(),
                    "needs root: builds clusters".to_string()
                ),
                ("scenario::x".to_string(), String::new()),
            ]
        );
        assert_eq!(t.counted, 2);
    }
}
