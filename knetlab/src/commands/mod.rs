//! One file per user command (`check`, `diff`, `test` share `manifests`, `owners` and
//! `baseline`), and the scenario command's output formats (`json`, `report`).

pub mod baseline;
pub mod check;
pub mod clean;
pub mod diff;
pub mod down;
pub mod exec;
pub mod json;
pub mod list;
pub mod manifests;
pub mod owners;
pub mod report;
pub mod scenario;
pub mod shell;
pub mod test;

/// Installs the Debian packages a run needs (as root), saying what it does on stderr.
/// `false` once it has said why it cannot: the command then exits 2.
pub fn prerequisites_ready() -> bool {
    let mut log = |m: &str| eprintln!("{m}");
    match harness::prereq::ensure(&mut log) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("error: {e:#}");
            false
        }
    }
}
