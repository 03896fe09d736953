//! `knetlab test PATH...`: runs every scenario in the given files and directories, one
//! line per scenario (PASS/FAIL/ERROR and its time) and a summary; `--junit FILE` writes
//! the results as JUnit XML for CI ([`sim::report::junit`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use harness::run::{RunOptions, RunReport};
use sim::report::junit::{self, SuiteRun};

use crate::scenarios::Catalog;

pub const AFTER_HELP: &str = "\
Examples:
  sudo knetlab test scenarios/                      every *.yaml scenario in the directory
  sudo knetlab test ci/baseline.yaml default-deny   files and built-in names
  sudo knetlab test ci/ --junit report.xml          JUnit XML for the CI's test view

A directory stands for its *.yaml files (sorted, not recursive) that are scenarios (a
mapping with `name` and `summary`); manifest files beside them are skipped.

Exit codes: 0 every scenario passed, 1 some scenario failed (a wrong cell),
2 some scenario could not run (bad input or a setup failure).";

#[derive(clap::Args)]
pub struct Args {
    /// Scenario files, directories of them, or built-in scenario names (see `list`).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<String>,
    /// Write JUnit XML to FILE: a testsuite per scenario, a testcase per step, a
    /// failure per wrong cell (expected, measured, the oracle's reason).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

/// One scenario's outcome.
pub struct Ran {
    pub name: String,
    pub file: PathBuf,
    pub seconds: f64,
    pub result: Result<RunReport, String>,
}

/// Whether a file in a directory is a scenario rather than a manifest file beside one:
/// scenarios are mappings with a top-level `summary:` and no `kind:`.
fn looks_like_scenario(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| {
        t.lines().any(|l| l.starts_with("summary:")) && !t.lines().any(|l| l.starts_with("kind:"))
    })
}

/// The scenario files the arguments name.
fn files(catalog: &Catalog, args: &[String]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for arg in args {
        let p = Path::new(arg);
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("{arg}: {e}"))?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|f| {
                    f.extension().is_some_and(|e| e == "yaml" || e == "yml")
                        && f.is_file()
                        && looks_like_scenario(f)
                })
                .collect();
            if found.is_empty() {
                return Err(format!("{arg}: the directory holds no scenario file"));
            }
            found.sort();
            out.extend(found);
        } else {
            out.push(catalog.resolve(arg)?);
        }
    }
    Ok(out)
}

pub fn main(catalog: &Catalog, args: Args) -> u8 {
    let files = match files(catalog, &args.paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    if !super::prerequisites_ready() {
        return 2;
    }
    let start = Instant::now();
    let mut runs = Vec::new();
    for file in files {
        let ran = run_file(&file);
        println!("{}", line(&ran));
        runs.push(ran);
    }
    let passed = runs.iter().filter(|r| outcome(r) == "PASS").count();
    let failed = runs.iter().filter(|r| outcome(r) == "FAIL").count();
    let errors = runs.len() - passed - failed;
    println!(
        "\n{} scenario{}: {passed} passed, {failed} failed, {errors} could not run ({:.1} s)",
        runs.len(),
        if runs.len() == 1 { "" } else { "s" },
        start.elapsed().as_secs_f64()
    );
    if let Some(path) = &args.junit
        && let Err(e) = write_junit(path, &runs)
    {
        eprintln!("error: --junit: {e}");
        return 2;
    }
    if errors > 0 {
        2
    } else if failed > 0 {
        1
    } else {
        0
    }
}

/// Loads and runs one scenario file.
fn run_file(file: &Path) -> Ran {
    let start = Instant::now();
    let loaded = sim::scenario::load(file).map_err(|e| e.to_string());
    let name = loaded.as_ref().map_or_else(
        |_| crate::scenarios::stem(file).unwrap_or_else(|| file.display().to_string()),
        |s| s.name.clone(),
    );
    let result = loaded.and_then(|s| {
        let opts = RunOptions {
            prefix: harness::run::new_prefix(),
            deadline: s.probe.timeout_ms.map(std::time::Duration::from_millis),
            ..Default::default()
        };
        super::scenario::run_plain(&s, &opts)
    });
    Ran {
        name,
        file: file.to_path_buf(),
        seconds: start.elapsed().as_secs_f64(),
        result,
    }
}

fn outcome(r: &Ran) -> &'static str {
    match &r.result {
        Ok(report) if report.ok() => "PASS",
        Ok(_) => "FAIL",
        Err(_) => "ERROR",
    }
}

/// `PASS  name  (3 steps, 1.20 s)`, with the wrong cells counted or the error.
fn line(r: &Ran) -> String {
    let detail = match &r.result {
        Ok(report) => {
            let wrong: usize = report.steps.iter().map(|s| s.mismatches().count()).sum();
            let steps = report.steps.len();
            let mut d = format!("{steps} step{}", if steps == 1 { "" } else { "s" });
            if wrong > 0 {
                d += &format!(", {wrong} wrong cell{}", if wrong == 1 { "" } else { "s" });
            }
            d
        }
        Err(e) => e.lines().next().unwrap_or_default().to_string(),
    };
    format!(
        "{:5}  {}  ({detail}, {:.2} s)",
        outcome(r),
        r.name,
        r.seconds
    )
}

/// Writes the JUnit document for `runs` (also `scenario --junit`).
pub fn write_junit(path: &Path, runs: &[Ran]) -> Result<(), String> {
    let files: Vec<String> = runs.iter().map(|r| r.file.display().to_string()).collect();
    let suites: Vec<SuiteRun> = runs
        .iter()
        .zip(&files)
        .map(|(r, file)| SuiteRun {
            name: &r.name,
            file,
            seconds: r.seconds,
            steps: r.result.as_ref().map(|rep| &rep.steps[..]).unwrap_or(&[]),
            error: r.result.as_ref().err().map(String::as_str),
        })
        .collect();
    write_suites(path, &suites)
}

/// Writes a JUnit document.
pub fn write_suites(path: &Path, suites: &[SuiteRun]) -> Result<(), String> {
    std::fs::write(path, junit::render(suites)).map_err(|e| format!("{}: {e}", path.display()))
}
