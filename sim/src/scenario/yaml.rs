//! YAML text to JSON values, keeping the line and column of every node by field path.
//! (Stub: being written.)

use std::collections::BTreeMap;

use crate::error::Location;

/// Line/column of every node of one YAML file, keyed by field path
/// (`manifests[2].spec.podSelector`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Positions {
    pub by_path: BTreeMap<String, Location>,
}
