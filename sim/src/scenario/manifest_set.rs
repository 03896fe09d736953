//! Scenarios made of manifests alone, for `knetlab check` and `diff`: a scenario header
//! written by the caller (cluster options, `probe: {services: true}`) plus manifest
//! streams the caller read (files, a directory's files, stdin). Each stream is decoded
//! exactly as a `manifestFiles` entry is, so whatever kinds that path accepts, these do.

use std::path::{Path, PathBuf};

use crate::error::ScenarioError;

use super::{LoadOptions, Scenario};

/// One multi-document YAML (or JSON) text and the name errors give it (its file, or
/// `<stdin>`).
#[derive(Debug, Clone)]
pub struct ManifestStream {
    pub name: PathBuf,
    pub text: String,
}

/// Checks the scenario `header` (a scenario document, usually without manifests; `path`
/// names it and anchors its relative `manifestFiles`) with `streams` applied after its
/// own manifests. A stream with no manifest in it is an error naming it.
pub fn from_manifests(
    path: &Path,
    header: &str,
    streams: &[ManifestStream],
    opts: &LoadOptions,
) -> Result<Scenario, ScenarioError> {
    super::build::build_with(path, header, opts, streams)
}
