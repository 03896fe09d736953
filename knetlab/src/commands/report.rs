//! What `knetlab scenario` does with `--report DIR` (a static HTML page), `--dot`
//! (Graphviz on stdout) and `--pause` (say what the next step changes, wait for Enter).
//! The rendering is in `sim::report`; the data comes from `harness::run::report_data`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use harness::run::{RunReport, StepAhead, StepHook};
use sim::scenario::Scenario;

/// Writes `DIR/index.html` and returns its path.
pub fn write_html(dir: &Path, scenario: &Scenario, report: &RunReport) -> Result<PathBuf> {
    let data = harness::run::report_data(scenario, report)?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join("index.html");
    std::fs::write(&path, sim::report::html::render(&data))
        .with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// The topology of the first step (the cluster as built) as Graphviz.
pub fn dot(scenario: &Scenario, report: &RunReport) -> Result<String> {
    let t = harness::run::topology(scenario, report, 0)?;
    Ok(sim::report::dot::dot(&scenario.name, &t))
}

/// `--pause`: before every step after the first, shows the matrix so far and what the
/// step will change on stderr, then waits for a line on stdin (Enter; end of input goes
/// on at once, so a closed stdin never hangs a run).
pub fn pause_hook() -> StepHook {
    StepHook(Arc::new(|ahead: StepAhead| {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "{}", pause_text(&ahead));
        let _ = err.flush();
        drop(err);
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
    }))
}

/// What `--pause` prints before a step.
pub fn pause_text(ahead: &StepAhead) -> String {
    let mut s = String::new();
    if let Some(prev) = &ahead.previous {
        s += &format!("\n== step {}: {} ==\n\n", ahead.index, prev.name);
        s += &sim::matrix::render_step(prev);
    }
    s += &format!(
        "\n-- paused before step {}: {} --\nThis step will:\n",
        ahead.index + 1,
        ahead.name
    );
    for c in &ahead.changes {
        s += &format!("  - {c}\n");
    }
    s += "What will the matrix be now? Press Enter to run the step. ";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_names_the_step_and_its_changes() {
        let t = pause_text(&StepAhead {
            index: 1,
            name: "deny all".into(),
            changes: vec!["apply NetworkPolicy y/deny-all".into()],
            previous: None,
        });
        assert!(t.contains("paused before step 2: deny all"), "{t}");
        assert!(t.contains("  - apply NetworkPolicy y/deny-all\n"), "{t}");
    }
}
