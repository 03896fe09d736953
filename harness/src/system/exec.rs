//! Running a program inside a namespace and turning what it did into a [`ToolError`]
//! that names the namespace, the command, its exit status, its stderr and, for a script,
//! the line the tool complained about.

use std::io::Write as _;
use std::process::Stdio;

use super::ToolError;
use crate::netns::Netns;

/// The command line as shown in errors.
pub fn shown(program: &str, args: &[&str]) -> String {
    std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `program args` inside `ns`, feeding it `stdin`; returns its stdout. For tools of
/// the table go through [`super::System::run`]; this is for the few programs that are
/// not tools of their own (a shell in a test).
pub fn run_in(
    ns: &Netns,
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, ToolError> {
    let shown = shown(program, args);
    let name = || ns.name().to_string();
    let mut child = ns
        .command(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ToolError::Start {
            shown: shown.clone(),
            ns: name(),
            source,
        })?;
    if let Some(text) = stdin
        && let Some(mut pipe) = child.stdin.take()
    {
        // Our scripts are small and these tools print little while reading, so writing
        // all of stdin before reading stdout cannot deadlock.
        pipe.write_all(text.as_bytes())
            .map_err(|source| ToolError::Stdin {
                shown: shown.clone(),
                ns: name(),
                source,
            })?;
    }
    let out = child.wait_with_output().map_err(|source| ToolError::Wait {
        shown: shown.clone(),
        ns: name(),
        source,
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(failed(shown, name(), out.status.to_string(), stderr, stdin));
    }
    String::from_utf8(out.stdout).map_err(|_| ToolError::NotUtf8 { shown, ns: name() })
}

/// The error of a tool that exited with `status`, with the script line it complained
/// about when it named one.
pub fn failed(
    shown: String,
    ns: String,
    status: String,
    stderr: String,
    script: Option<&str>,
) -> ToolError {
    let line = script.zip(complained_line(&stderr)).and_then(|(s, n)| {
        s.lines()
            .nth(n.saturating_sub(1))
            .map(|l| Box::new((n, l.to_string())))
    });
    ToolError::Failed {
        shown,
        ns,
        status,
        stderr,
        line,
    }
}

/// The script line number in an `ipset` / `iptables-restore` error (`Error in line 3:`,
/// `line 2: ...`, `Error occurred at line: 3`).
fn complained_line(stderr: &str) -> Option<usize> {
    let lower = stderr.to_ascii_lowercase();
    let at = lower.find("line")?;
    let digits: String = lower[at + 4..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_line_tools_complain_about() {
        assert_eq!(
            complained_line(
                "ipset v7.17: Error in line 3: The set with the given name does not exist"
            ),
            Some(3)
        );
        assert_eq!(
            complained_line("iptables-restore v1.8.9 (nf_tables): \nline 2: CHAIN_DEL failed"),
            Some(2)
        );
        assert_eq!(complained_line("Error occurred at line: 14\nTry"), Some(14));
        assert_eq!(complained_line("no number here"), None);
    }

    #[test]
    fn a_failure_shows_the_script_line() {
        let e = failed(
            "ipset restore".into(),
            "x-n1".into(),
            "exit status: 1".into(),
            "ipset v7.17: Error in line 2: nope".into(),
            Some("create a\nadd a 1\n"),
        );
        assert_eq!(
            e.to_string(),
            "`ipset restore` failed in namespace x-n1 (exit status: 1): ipset v7.17: Error in \
             line 2: nope\n  line 2 of the script: add a 1"
        );
    }
}
