//! `check --save-scenario FILE`: a scenario that references the same manifests by paths
//! relative to FILE's directory and expects every cell as it was measured, a baseline to
//! commit that `knetlab scenario FILE` fails on when connectivity changes. A directory
//! stays a directory (a manifest added to it later is read too), and what came on stdin
//! is saved beside FILE (`NAME.manifests.yaml`) so the baseline can be rerun.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sim::matrix::StepResult;
use sim::scenario::ManifestStream;

use super::manifests::{ClusterOpts, STDIN, header, relative, yaml_string};
use super::owners::reached;

/// Where FILE goes and its directory; checked before anything is built.
pub fn target(file: &Path) -> Result<PathBuf, String> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "--save-scenario {}: the directory {} does not exist",
            file.display(),
            dir.display()
        ));
    }
    if file.file_stem().is_none() || file.is_dir() {
        return Err(format!(
            "--save-scenario {}: name a file, e.g. baseline.yaml",
            file.display()
        ));
    }
    Ok(dir)
}

/// Writes the baseline and returns how many cells it asserts. `paths` are the manifest
/// paths as given on the command line (`-` for stdin, whose text is in `streams`). The
/// cells of `step` whose measurement is not one verdict (a Service whose backends
/// answered differently, a measurement error) and a pod's cells to itself are left
/// unasserted.
pub fn write(
    file: &Path,
    cluster: &ClusterOpts,
    paths: &[String],
    streams: &[ManifestStream],
    step: &StepResult,
) -> Result<usize, String> {
    let dir = target(file)?;
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "baseline".into());
    let mut files = Vec::new();
    for p in paths {
        if p != "-" {
            // A directory as a directory: the baseline reads what it holds when it runs.
            files.push(relative(&dir, Path::new(p))?);
            continue;
        }
        let stdin = streams
            .iter()
            .find(|s| s.name == Path::new(STDIN))
            .ok_or("the manifests read from stdin are missing")?;
        let name = format!("{stem}.manifests.yaml");
        let path = dir.join(&name);
        std::fs::write(&path, &stdin.text).map_err(|e| format!("{}: {e}", path.display()))?;
        files.push(PathBuf::from(name));
    }
    let mut text = String::from(
        "# A connectivity baseline written by `knetlab check --save-scenario`: every cell as\n\
         # it was measured. `knetlab scenario THIS-FILE` fails when one of them changes.\n",
    );
    text += &header(
        &stem,
        "Connectivity baseline: every measured cell, as it was",
        cluster,
    );
    text += "manifestFiles:\n";
    for f in &files {
        let _ = writeln!(text, "  - {}", yaml_string(&f.to_string_lossy()));
    }
    let mut asserted = 0;
    let mut cells = String::new();
    for c in step.cells.iter().filter(|c| !c.is_self()) {
        let Some(allowed) = reached(c) else { continue };
        asserted += 1;
        let _ = writeln!(
            cells,
            "    - {{from: {}, to: {}, port: {}, protocol: {}, allowed: {allowed}}}",
            yaml_string(&c.from.to_string()),
            yaml_string(&c.to.to_string()),
            c.port.port,
            c.port.protocol
        );
    }
    if asserted > 0 {
        text += "expect:\n  exceptions:\n";
        text += &cells;
    }
    std::fs::write(file, &text).map_err(|e| format!("{}: {e}", file.display()))?;
    // The baseline must read back: a file that fails to parse would be worse than none.
    sim::scenario::load(file)
        .map_err(|e| format!("the baseline written does not read back: {e}"))?;
    Ok(asserted)
}
