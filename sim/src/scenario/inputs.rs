//! Manifests as users have them: inline under `manifests`, or in `manifestFiles`
//! entries that are files or directories (every `*.yaml`, `*.yml` and `*.json` in it,
//! sorted by name, not recursive), as multi-document streams with `kind: List`
//! documents (`kubectl get -o yaml`) and typed lists (`ConfigMapList`, ...). Each manifest is sorted by what it becomes
//! ([`decode::classify`]): an object, a workload controller, a kind without network
//! effect (counted for one note), or an unsupported kind (an error, or a loud warning
//! with `--ignore-unsupported`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::LoadOptions;
use super::build::Pending;
use super::decode::{self, Manifest};
use super::source::Source;
use super::workload::PendingWorkload;
use super::yaml::{self, join_index, join_key};
use crate::error::ScenarioError;

/// The manifests read so far, sorted by what they become.
#[derive(Default)]
pub(super) struct Inputs {
    pub objects: Vec<Pending>,
    pub workloads: Vec<PendingWorkload>,
    /// Kinds without network effect, with how many manifests of each.
    pub ignored: BTreeMap<String, usize>,
    /// Unsupported kinds left out (`--ignore-unsupported`), one warning each.
    pub warnings: Vec<String>,
}

impl Inputs {
    /// Sorts one manifest (a `List` gives its items).
    pub(super) fn add(
        &mut self,
        src: &Source,
        path: &str,
        value: Value,
        opts: &LoadOptions,
    ) -> Result<(), ScenarioError> {
        if let Some(item_type) = list_item_type(&value) {
            let items = match value.get("items") {
                None | Some(Value::Null) => return Ok(()),
                Some(Value::Array(items)) => items.clone(),
                Some(_) => {
                    return Err(src.at_value(
                        &join_key(path, "items"),
                        "the items of a List are a list of manifests",
                    ));
                }
            };
            for (i, mut item) in items.into_iter().enumerate() {
                // As kubectl reads a typed list: an item that names neither its kind nor
                // its apiVersion is of the list's item type.
                if let (Some((kind, api_version)), Value::Object(fields)) = (&item_type, &mut item)
                    && !fields.contains_key("kind")
                    && !fields.contains_key("apiVersion")
                {
                    fields.insert("kind".into(), Value::from(kind.as_str()));
                    fields.insert("apiVersion".into(), Value::from(api_version.as_str()));
                }
                self.add(src, &join_index(&join_key(path, "items"), i), item, opts)?;
            }
            return Ok(());
        }
        match decode::classify(src, path, &value)? {
            Manifest::Object(kind) => self.objects.push(Pending {
                src: src.clone(),
                path: path.to_string(),
                value,
                kind,
            }),
            Manifest::Workload(kind) => self.workloads.push(PendingWorkload {
                src: src.clone(),
                path: path.to_string(),
                value,
                kind,
            }),
            Manifest::Ignored { kind } => *self.ignored.entry(kind).or_default() += 1,
            Manifest::Unsupported(e) if opts.ignore_unsupported => self.warnings.push(format!(
                "WARNING: left out (--ignore-unsupported), so the matrix does not show its effect: {e}"
            )),
            Manifest::Unsupported(e) => return Err(e),
        }
        Ok(())
    }

    /// One note listing the kinds that were accepted and left aside, then the warnings.
    pub(super) fn notes(&self) -> Vec<String> {
        let mut notes = self.warnings.clone();
        if !self.ignored.is_empty() {
            let kinds: Vec<String> = self
                .ignored
                .iter()
                .map(|(k, n)| {
                    if *n == 1 {
                        k.clone()
                    } else {
                        format!("{k} ({n})")
                    }
                })
                .collect();
            notes.push(format!(
                "accepted without effect on the pod network, so not modelled: {}",
                kinds.join(", ")
            ));
        }
        notes
    }

    /// Reads one of `manifestFiles` (relative to the scenario): a file, or a directory.
    pub(super) fn manifest_file(
        &mut self,
        src: &Source,
        path: &str,
        name: &str,
        opts: &LoadOptions,
    ) -> Result<(), ScenarioError> {
        let dir = src.file.parent().unwrap_or(Path::new("."));
        let file: PathBuf = dir.join(name);
        if file.is_dir() {
            let files = directory_files(&file).map_err(|e| {
                src.at_value(
                    path,
                    format!("cannot read directory {}: {e}", file.display()),
                )
            })?;
            if files.is_empty() {
                return Err(src.at_value(
                    path,
                    format!(
                        "directory {} holds no *.yaml, *.yml or *.json file",
                        file.display()
                    ),
                ));
            }
            for f in files {
                self.read_file(src, path, &f, opts)?;
            }
            return Ok(());
        }
        self.read_file(src, path, &file, opts)
    }

    fn read_file(
        &mut self,
        src: &Source,
        path: &str,
        file: &Path,
        opts: &LoadOptions,
    ) -> Result<(), ScenarioError> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            src.at_value(
                path,
                format!("cannot read manifest file {}: {e}", file.display()),
            )
        })?;
        self.stream(file, &text, opts).and_then(|n| {
            if n == 0 {
                Err(src.at_value(
                    path,
                    format!("manifest file {} holds no manifests", file.display()),
                ))
            } else {
                Ok(())
            }
        })
    }

    /// Reads a multi-document YAML (or JSON) stream; returns how many documents it held.
    pub(super) fn stream(
        &mut self,
        file: &Path,
        text: &str,
        opts: &LoadOptions,
    ) -> Result<usize, ScenarioError> {
        let (docs, positions) = yaml::parse(file, text, true)?;
        let fsrc = Source::new(file, positions);
        let mut n = 0;
        for (i, doc) in docs.into_iter().enumerate() {
            let Some(value) = doc else { continue };
            n += 1;
            self.add(&fsrc, &yaml::document_path(i), value, opts)?;
        }
        Ok(n)
    }
}

/// `Some` for a list of manifests, as kubectl tells one: `kind: List` (v1), or a typed
/// list (`ConfigMapList`, `DeploymentList`, ...: a kind ending in `List`, with `items`),
/// whose item type (kind and apiVersion) comes with it.
fn list_item_type(value: &Value) -> Option<Option<(String, String)>> {
    let kind = value.get("kind").and_then(Value::as_str)?;
    let api_version = value.get("apiVersion").and_then(Value::as_str)?;
    if kind == "List" {
        return (api_version == "v1").then_some(None);
    }
    let item = kind.strip_suffix("List").filter(|k| !k.is_empty())?;
    value
        .get("items")
        .is_some()
        .then(|| Some((item.to_string(), api_version.to_string())))
}

/// The manifest files of a directory, sorted by name; subdirectories are not read.
fn directory_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        let manifest = p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
        if manifest && p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}
