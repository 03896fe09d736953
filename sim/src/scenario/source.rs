//! One YAML file's name and node positions, and the errors that point into it.
//!
//! Every check in the parser knows the field path of what it rejects; this turns the path
//! back into file, line and column. serde errors (through `serde_path_to_error`) are
//! turned into the same form, with their wording made readable for scenario authors.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

use crate::error::ScenarioError;

use super::Positions;
use super::fields::{self, Seg};
use super::yaml::{join_index, join_key};

/// A file and the positions of its nodes.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub file: PathBuf,
    pub positions: Arc<Positions>,
}

impl Source {
    pub fn new(file: &Path, positions: Positions) -> Self {
        Self {
            file: file.to_path_buf(),
            positions: Arc::new(positions),
        }
    }

    /// An error at the key naming `path` (for fields that should not be there).
    pub fn at_key(&self, path: &str, message: impl Into<String>) -> ScenarioError {
        ScenarioError::new(&self.file, self.positions.key(path), path, message)
    }

    /// An error at the value of `path` (for values that are wrong).
    pub fn at_value(&self, path: &str, message: impl Into<String>) -> ScenarioError {
        ScenarioError::new(&self.file, self.positions.value(path), path, message)
    }

    /// Deserializes the value found at `base` into `T`, reporting any error at the exact
    /// field, with a "did you mean" for unknown fields.
    pub fn deserialize<T: DeserializeOwned>(
        &self,
        base: &str,
        value: &serde_json::Value,
    ) -> Result<T, ScenarioError> {
        serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
            let segs: Vec<&Segment> = e.path().iter().collect();
            let mut path = base.to_string();
            let mut probe_path = Vec::new();
            for s in &segs {
                match s {
                    Segment::Seq { index } => {
                        path = join_index(&path, *index);
                        probe_path.push(Seg::Item);
                    }
                    Segment::Map { key } | Segment::Enum { variant: key } => {
                        path = join_key(&path, key);
                        probe_path.push(Seg::Key(key.clone()));
                    }
                    Segment::Unknown => break,
                }
            }
            let message = e.inner().to_string();
            if message.starts_with("unknown field `") {
                // serde_path_to_error's path ends with the unknown key itself.
                let field = match probe_path.pop() {
                    Some(Seg::Key(k)) => k,
                    _ => String::new(),
                };
                let known = fields::known_fields::<T>(&probe_path);
                return self.at_key(&path, fields::unknown_field_message(&field, known));
            }
            if let Some(rest) = message.strip_prefix("missing field `") {
                let field = rest.trim_end_matches('`');
                return self.at_key(&path, format!("the required field `{field}` is missing"));
            }
            self.at_value(&path, readable(&message))
        })
    }
}

/// Rewords serde's type names for people who write YAML.
pub(crate) fn readable(message: &str) -> String {
    let mut m = message.replace("unknown variant", "unknown value");
    for (rust, words) in [
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected u32", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected usize", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected a list"),
        ("expected a map", "expected a mapping"),
    ] {
        if let Some(stripped) = m.strip_suffix(rust) {
            m = format!("{stripped}{words}");
        }
    }
    m
}
