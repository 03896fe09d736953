//! JUnit XML for CI (`--junit FILE`): one `<testsuite>` per scenario, one `<testcase>`
//! per step, one `<failure>` per wrong cell with what was expected, what was measured and
//! the oracle's reason. CI systems (GitLab, Jenkins, GitHub test reporters) read this
//! shape; every text from a scenario or a measurement is escaped, since names, reasons
//! and error details come from user files and the network.

use std::fmt::Write as _;

use crate::matrix::{Cell, StepResult};

/// One scenario's run, as the JUnit file shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SuiteRun<'a> {
    pub name: &'a str,
    /// The scenario file, shown as the suite's `file` attribute.
    pub file: &'a str,
    pub seconds: f64,
    /// The steps measured; empty when the run failed before any.
    pub steps: &'a [StepResult],
    /// Why the run failed before it could measure (bad input, a setup failure): shown as
    /// an `<error>` test case.
    pub error: Option<&'a str>,
}

/// The whole JUnit document for `suites`.
pub fn render(suites: &[SuiteRun]) -> String {
    let mut tests = 0;
    let mut failures = 0;
    let mut errors = 0;
    for s in suites {
        let (t, f, e) = counts(s);
        tests += t;
        failures += f;
        errors += e;
    }
    let total: f64 = suites.iter().map(|s| s.seconds).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"knetlab\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{total:.3}\">"
    );
    for s in suites {
        suite(&mut out, s);
    }
    out.push_str("</testsuites>\n");
    out
}

/// Test cases, failing ones and erroring ones of a suite.
fn counts(s: &SuiteRun) -> (usize, usize, usize) {
    if s.error.is_some() {
        return (1, 0, 1);
    }
    let failures = s.steps.iter().filter(|st| !st.ok()).count();
    (s.steps.len(), failures, 0)
}

fn suite(out: &mut String, s: &SuiteRun) {
    let (tests, failures, errors) = counts(s);
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" file=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{:.3}\">",
        escape(s.name),
        escape(s.file),
        s.seconds
    );
    if let Some(e) = s.error {
        let _ = writeln!(
            out,
            "    <testcase classname=\"{}\" name=\"run\">\n      <error message=\"{}\">{}</error>\n    </testcase>",
            escape(s.name),
            escape(first_line(e)),
            escape(e)
        );
    }
    for (i, step) in s.steps.iter().enumerate() {
        let _ = write!(
            out,
            "    <testcase classname=\"{}\" name=\"step {}: {}\"",
            escape(s.name),
            i + 1,
            escape(&step.name)
        );
        let wrong: Vec<(&Cell, String)> = step.mismatches().collect();
        if wrong.is_empty() {
            out.push_str("/>\n");
            continue;
        }
        out.push_str(">\n");
        for (cell, problem) in wrong {
            let _ = writeln!(
                out,
                "      <failure type=\"mismatch\" message=\"{}\">{}</failure>",
                escape(&format!(
                    "{} -> {} {}: {problem}",
                    cell.from, cell.to, cell.port
                )),
                escape(&failure_text(cell, &problem))
            );
        }
        out.push_str("    </testcase>\n");
    }
    out.push_str("  </testsuite>\n");
}

/// The body of a failure: the cell, expected, measured, the oracle's word and reason.
fn failure_text(cell: &Cell, problem: &str) -> String {
    let word = |v: Option<crate::matrix::Verdict>| match v {
        Some(crate::matrix::Verdict::Allow) => "allow",
        Some(crate::matrix::Verdict::Deny) => "deny",
        None => "not asserted",
    };
    let mut measured = cell.measured.outcome.as_str().to_string();
    if let Some(by) = &cell.measured.answered_by {
        measured += &format!(" (answered by {by})");
    }
    if !cell.measured.detail.is_empty() {
        measured += &format!(" ({})", cell.measured.detail);
    }
    format!(
        "cell: {} -> {} {}\nexpected: {}\nmeasured: {measured}\noracle: {}\nreason: {}\nproblem: {problem}",
        cell.from,
        cell.to,
        cell.port,
        word(cell.expected),
        word(cell.oracle),
        cell.reason.as_deref().unwrap_or("(no oracle reason)"),
    )
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

/// Escapes text for an XML attribute or element. Characters XML 1.0 cannot carry at
/// all (most control characters) become U+FFFD, so a hostile name cannot break the file.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Kept as references so attribute values keep their line breaks and tabs.
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
