//! Embeds the built-in scenarios (the workspace's `scenarios/` without its snapshots:
//! the YAML files and the CNI configurations and manifests they name) into the binary,
//! so that an installed `knetlab` runs them from any directory. Writes
//! `$OUT_DIR/embedded_scenarios.rs`: a table of (path relative to `scenarios/`, bytes).

use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let dir = manifest.join("../scenarios");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files = Vec::new();
    if dir.is_dir() {
        collect(&dir, &dir, &mut files);
    } else {
        println!(
            "cargo:warning=no scenarios/ beside the crate ({}): the binary embeds none",
            dir.display()
        );
    }
    files.sort();
    let mut out = String::from("pub const FILES: &[(&str, &[u8])] = &[\n");
    for (rel, abs) in &files {
        println!("cargo:rerun-if-changed={}", abs.display());
        out += &format!(
            "    ({rel:?}, include_bytes!({:?})),\n",
            abs.display().to_string()
        );
    }
    out += "];\n";
    let target = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"))
        .join("embedded_scenarios.rs");
    std::fs::write(&target, out).expect("write the embedded scenario table");
}

/// Every file under `dir` except the snapshots, as (relative path, absolute path).
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let entries = std::fs::read_dir(dir).expect("read the scenarios directory");
    for entry in entries {
        let path = entry.expect("read a scenarios directory entry").path();
        // Directories are watched too, so that an added file triggers a new embed.
        println!("cargo:rerun-if-changed={}", path.display());
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "snapshots") {
                continue;
            }
            collect(root, &path, files);
        } else {
            let abs = path.canonicalize().expect("canonical scenario path");
            let rel = path
                .strip_prefix(root)
                .expect("under scenarios/")
                .to_string_lossy()
                .into_owned();
            files.push((rel, abs));
        }
    }
}
