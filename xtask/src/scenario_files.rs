//! Finding scenario files: a name means `scenarios/NAME.yaml`, anything else is a path.

use std::path::{Path, PathBuf};

use crate::workspace_root;

pub fn scenarios_dir() -> PathBuf {
    workspace_root().join("scenarios")
}

/// `default-deny` → `scenarios/default-deny.yaml`; a path (with `/` or `.yaml`) as given.
pub fn resolve(arg: &str) -> Result<PathBuf, String> {
    let p = Path::new(arg);
    if arg.contains('/') || arg.ends_with(".yaml") || arg.ends_with(".yml") {
        return if p.exists() {
            Ok(p.to_path_buf())
        } else {
            Err(format!("no such scenario file: {arg}"))
        };
    }
    let file = scenarios_dir().join(format!("{arg}.yaml"));
    if file.exists() {
        Ok(file)
    } else {
        let known: Vec<String> = all().iter().filter_map(|p| stem(p)).collect();
        Err(format!(
            "no scenario named {arg:?} (looked for {}); known: {}",
            file.display(),
            known.join(", ")
        ))
    }
}

/// Every scenario file, sorted by name.
pub fn all() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(scenarios_dir())
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

pub fn stem(p: &Path) -> Option<String> {
    p.file_stem().and_then(|s| s.to_str()).map(str::to_string)
}
