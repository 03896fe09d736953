//! The scenarios built into the binary (see build.rs), and writing them out to a fresh
//! private temporary directory that is removed when dropped.

use std::path::{Path, PathBuf};

include!(concat!(env!("OUT_DIR"), "/embedded_scenarios.rs"));

/// A written-out copy of the embedded scenarios.
pub struct Extracted {
    dir: PathBuf,
}

impl Extracted {
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Extracted {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes every embedded file under a new directory in the system's temporary directory.
pub fn extract() -> Result<Extracted, String> {
    if FILES.is_empty() {
        return Err(format!(
            "this knetlab was built without scenarios: point it at a scenarios directory with --scenarios DIR or ${}",
            super::ENV
        ));
    }
    let dir = fresh_dir()?;
    // From here on the directory goes away on any error.
    let extracted = Extracted { dir };
    for (rel, bytes) in FILES {
        let path = extracted.dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, bytes).map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    Ok(extracted)
}

/// A directory no one else has: created here (never reused), readable by us only.
fn fresh_dir() -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut last = None;
    for attempt in 0..16u32 {
        let dir = base.join(format!(
            "knetlab-scenarios-{}-{:x}",
            std::process::id(),
            nanos.wrapping_add(attempt)
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(format!("create {}: {e}", dir.display())),
        }
    }
    Err(format!(
        "create a directory for the built-in scenarios in {}: {}",
        base.display(),
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}
