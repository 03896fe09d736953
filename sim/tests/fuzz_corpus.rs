//! Replays the fuzzers' committed inputs on stable: every file under
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` goes through the same function
//! the cargo-fuzz target calls (`fuzz/src/lib.rs`, included here). A rejected input is
//! fine; a panic fails the test and names the file. Inputs that once crashed or hung a
//! target stay in `fuzz/regressions/` for good.

use std::path::{Path, PathBuf};

#[path = "../../fuzz/src/lib.rs"]
mod targets;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 4] = [
    ("scenario", targets::scenario),
    ("manifest", targets::manifest),
    ("expect", targets::expect),
    ("ingress", targets::ingress),
];

/// The files of `fuzz/<dir>/<target>/`, sorted; none when the folder does not exist.
fn inputs(dir: &str, target: &str) -> Vec<PathBuf> {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(dir)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&folder) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("reading a fuzz input folder").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_committed_fuzz_input_is_handled_without_panicking() {
    let mut failed = Vec::new();
    let mut total = 0;
    for (target, run) in TARGETS {
        let files: Vec<PathBuf> = ["corpus", "regressions"]
            .iter()
            .flat_map(|dir| inputs(dir, target))
            .collect();
        assert!(!files.is_empty(), "fuzz/corpus/{target}/ holds no inputs");
        for file in files {
            let data = std::fs::read(&file).expect("reading a fuzz input");
            total += 1;
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                failed.push(format!("{target}: {}", file.display()));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {total} fuzz inputs panicked:\n  {}",
        failed.len(),
        failed.join("\n  ")
    );
}
