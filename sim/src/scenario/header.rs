//! The scenario document: header fields, sections, and the checks across them. (Stub.)

use std::path::Path;

use crate::error::ScenarioError;

use super::Scenario;

pub(super) fn load(_path: &Path) -> Result<Scenario, ScenarioError> {
    todo!()
}

pub(super) fn parse_str(_path: &Path, _text: &str) -> Result<Scenario, ScenarioError> {
    todo!()
}
