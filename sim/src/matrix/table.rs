//! Cyclonus-style truth tables and diffs. (Stub: being written.)

use super::StepResult;

/// Every `PROTO/port` table of a step, rows = clients, columns = servers.
pub fn render_tables(_step: &StepResult) -> String {
    todo!()
}

/// The tables plus the list of wrong cells and a summary line.
pub fn render_step(_step: &StepResult) -> String {
    todo!()
}
