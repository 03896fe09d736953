//! The workshop never goes stale: every `$ sudo cargo xtask ...` command in
//! `assets/workshop/*.md` (inside a ```console block) is run with the real binary, must
//! succeed (or exit with the code an `<!-- exit: N -->` note after the block names: a
//! lesson may show a CI gate failing), and every `<!-- expect: TEXT -->` note that
//! follows the block must appear in its output. Needs root (the commands build clusters): ignored unless run with
//! `--include-ignored` (see `common`).

#[path = "../../harness/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// One command of a lesson and what its output must contain.
#[derive(Debug)]
struct Check {
    lesson: String,
    args: Vec<String>,
    expect: Vec<String>,
    /// The exit code the lesson says the command ends with (0 unless noted).
    exit: i32,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Reads the commands and their expectations out of one lesson.
fn checks(lesson: &str, text: &str) -> Vec<Check> {
    let mut out: Vec<Check> = Vec::new();
    let mut in_console = false;
    let mut last_block_end: Option<usize> = None;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            in_console = !in_console && t == "```console";
            if !in_console {
                last_block_end = Some(out.len());
            }
            continue;
        }
        if in_console {
            let cmd = t.strip_prefix("$ ").unwrap_or(t);
            let cmd = cmd.strip_prefix("sudo ").unwrap_or(cmd);
            if let Some(rest) = cmd.strip_prefix("cargo xtask ") {
                out.push(Check {
                    lesson: lesson.to_string(),
                    args: rest.split_whitespace().map(String::from).collect(),
                    expect: vec![],
                    exit: 0,
                });
            }
            continue;
        }
        if let Some(e) = t
            .strip_prefix("<!-- expect:")
            .and_then(|r| r.strip_suffix("-->"))
            && last_block_end.is_some()
            && let Some(c) = out.last_mut()
        {
            c.expect.push(e.trim().to_string());
        } else if let Some(code) = t
            .strip_prefix("<!-- exit:")
            .and_then(|r| r.strip_suffix("-->"))
            && last_block_end.is_some()
            && let Some(c) = out.last_mut()
        {
            c.exit = code
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{lesson}: `<!-- exit: N -->` needs a number: {t}"));
        } else if !t.is_empty() {
            last_block_end = None;
        }
    }
    out
}

fn lessons() -> Vec<(String, String)> {
    let dir = root().join("assets/workshop");
    let mut v: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let text = std::fs::read_to_string(&p).unwrap();
            (name, text)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn every_lesson_has_a_command_with_expectations() {
    for (name, text) in lessons() {
        if name == "README.md" {
            continue;
        }
        let c = checks(&name, &text);
        assert!(!c.is_empty(), "{name}: no `$ sudo cargo xtask` command");
        assert!(
            c.iter().all(|c| !c.expect.is_empty()),
            "{name}: a command without an `<!-- expect: ... -->` note: {c:?}"
        );
        for check in &c {
            // A path (a baseline an earlier command wrote) is not a built-in scenario.
            if check.args.first().map(String::as_str) == Some("scenario")
                && !check.args[1].contains('/')
            {
                let scenario = &check.args[1];
                assert!(
                    root()
                        .join("scenarios")
                        .join(format!("{scenario}.yaml"))
                        .exists(),
                    "{name}: scenario {scenario} does not exist"
                );
            }
        }
    }
}

#[test]
#[ignore = "needs root: runs the workshop's commands, which build clusters"]
fn every_workshop_command_runs_and_says_what_the_lesson_claims() {
    common::require_root(&[]);
    let mut failures = Vec::new();
    let mut ran = 0;
    for (name, text) in lessons() {
        for c in checks(&name, &text) {
            let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
                .args(&c.args)
                .current_dir(root())
                .env("CI", "true")
                .output()
                .expect("run xtask");
            ran += 1;
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if out.status.code() != Some(c.exit) {
                failures.push(format!(
                    "{}: `cargo xtask {}` exited with {:?}, not {}:\n{}",
                    c.lesson,
                    c.args.join(" "),
                    out.status.code(),
                    c.exit,
                    tail(&all)
                ));
                continue;
            }
            for e in &c.expect {
                if !all.contains(e.as_str()) {
                    failures.push(format!(
                        "{}: `cargo xtask {}` did not print {e:?}:\n{}",
                        c.lesson,
                        c.args.join(" "),
                        tail(&all)
                    ));
                }
            }
        }
    }
    eprintln!("ran {ran} workshop commands");
    assert!(ran > 10, "the workshop has commands");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[test]
fn the_parser_reads_commands_and_expectations() {
    let text = "intro\n```console\n$ sudo cargo xtask scenario a --explain x/a y/b:80/TCP\n```\n<!-- expect: PASS: a -->\n<!-- expect: deny -->\n\ntext\n<!-- expect: not mine -->\n```sh\n$ cargo xtask scenario b\n```\n";
    let c = checks("l.md", text);
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(
        c[0].args,
        ["scenario", "a", "--explain", "x/a", "y/b:80/TCP"]
    );
    assert_eq!(c[0].expect, ["PASS: a", "deny"]);
    assert_eq!(c[0].exit, 0);
    let gate = "```console\n$ sudo cargo xtask diff a/ b/ --fail-on-change\n```\n<!-- exit: 1 -->\n<!-- expect: closes -->\n";
    let c = checks("l.md", gate);
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(
        (c[0].exit, c[0].expect.clone()),
        (1, vec!["closes".to_string()])
    );
}
