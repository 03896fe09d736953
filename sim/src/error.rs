//! Errors for bad scenario input. Every error names the file, and where it can, the line,
//! column and field path, so a user can go straight to the mistake.

use std::fmt;
use std::path::PathBuf;

/// Where in a YAML file something stands (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// One problem with a scenario file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ScenarioError {
    /// The file the problem is in (a manifest file may differ from the scenario file).
    pub file: PathBuf,
    /// Line and column, when the problem sits at a node of the YAML tree.
    pub location: Option<Location>,
    /// The field path, e.g. `manifests[2].spec.podSelecter`; empty for the whole document.
    pub path: String,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(loc) = self.location {
            write!(f, ":{}:{}", loc.line, loc.column)?;
        }
        if !self.path.is_empty() {
            write!(f, ": field `{}`", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl ScenarioError {
    pub fn new(
        file: impl Into<PathBuf>,
        location: Option<Location>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: file.into(),
            location,
            path: path.into(),
            message: message.into(),
        }
    }
}
