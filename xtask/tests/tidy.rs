//! Tidy: the shape rules of CONTRIBUTING.md, checked on every source file under
//! `sim/src`, `harness/src`, `xtask/src` and `knetlab/src` without building them, in the
//! spirit of rust-analyzer's `tidy.rs`. Needs no root and takes well under a second.
//!
//! - every module file opens with a `//!` paragraph;
//! - external programs are named in one table (`harness/src/system/tools.rs`): no
//!   `Command::new("literal")` anywhere else, and no tool name as a string literal in
//!   `harness/src` outside it (`sim` only prints rule text, so it may say "iptables");
//! - no file has more than 800 lines outside its `#[cfg(test)]` sections;
//! - no glob imports (`use x::*`) but `use super::*` inside test code.
//!
//! Test code is exempt from all but the last rule: `#[cfg(test)]` items, and files that
//! are test modules (`#[cfg(test)] mod tests;`) with whatever they contain. Each check
//! prints every offender as `file:line: why` and fails. The layer rule of `sim` and
//! `harness` is `layers.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Exceptions to the checks: none. An entry would name the check, the file and why;
/// an entry whose file no longer offends fails its check, so the list can only shrink.
const ALLOWED: &[(Check, &str, &str)] = &[];

/// The one place that names external programs.
const TOOLS_TABLE: &str = "harness/src/system/tools.rs";
/// Longest a source file may be, not counting its test sections.
const MAX_LINES: usize = 800;
/// Where the source files are, from the workspace root (absent ones are skipped).
const SOURCE_DIRS: &[&str] = &["sim/src", "harness/src", "xtask/src", "knetlab/src"];

/// Program names that mean nothing else: any string literal equal to one is a tool.
const TOOLS: &[&str] = &[
    "apt-get",
    "chromium",
    "conntrack",
    "ethtool",
    "ip6tables-nft-restore",
    "ip6tables-nft-save",
    "ip6tables-restore",
    "ip6tables-save",
    "ipset",
    "iptables-legacy",
    "iptables-legacy-restore",
    "iptables-legacy-save",
    "iptables-nft",
    "iptables-nft-restore",
    "iptables-nft-save",
    "iptables-restore",
    "iptables-save",
    "ipvsadm",
    "modprobe",
    "nft",
    "nginx",
    "openssl",
    "sysctl",
    "tcpdump",
    "xtables-monitor",
];
/// Program names that are also ordinary words ("iptables" names an engine too): a tool
/// only where a call takes it as an argument that more arguments follow.
const TOOL_WORDS: &[&str] = &["ip", "ip6tables", "iptables", "ping", "tc"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    ModuleDoc,
    ToolNames,
    FileLength,
    GlobImports,
}

struct Offence {
    file: String,
    line: usize,
    why: String,
}

impl fmt::Display for Offence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.why)
    }
}

#[test]
fn every_module_opens_with_a_doc_paragraph() {
    verdict(Check::ModuleDoc, |file, offences| {
        let first = file.text.lines().find(|l| !l.trim().is_empty());
        if !first.is_some_and(|l| l.starts_with("//!")) {
            offences.push(file.offence(1, "does not open with a `//!` paragraph"));
        }
    });
}

#[test]
fn tool_names_live_in_the_one_table() {
    verdict(Check::ToolNames, |file, offences| {
        if file.path == TOOLS_TABLE {
            return;
        }
        let in_harness = file.path.starts_with("harness/src/");
        for s in &file.lexed.strings {
            if file.in_test(s.line) {
                continue;
            }
            let program = file.lexed.code[..s.start]
                .trim_end()
                .ends_with("Command::new(");
            if program {
                offences.push(file.offence(
                    s.line,
                    format!(
                        "runs \"{}\" by a literal name; name it in {TOOLS_TABLE}",
                        s.text
                    ),
                ));
            } else if in_harness && is_tool(&s.text, || file.lexed.is_leading_argument(s)) {
                offences.push(file.offence(
                    s.line,
                    format!("names the tool \"{}\"; take it from {TOOLS_TABLE}", s.text),
                ));
            }
        }
    });
}

#[test]
fn no_file_is_longer_than_800_lines_outside_its_tests() {
    verdict(Check::FileLength, |file, offences| {
        let total = file.text.lines().count();
        let tests: usize = file.tests.iter().map(|r| r.end() - r.start() + 1).sum();
        let lines = total - tests.min(total);
        if lines > MAX_LINES {
            offences.push(file.offence(
                total,
                format!("{lines} lines outside its tests (at most {MAX_LINES}): split it by job"),
            ));
        }
    });
}

#[test]
fn no_glob_imports_but_super_in_tests() {
    verdict(Check::GlobImports, |file, offences| {
        for (line, statement) in file.lexed.use_statements() {
            if !statement.contains('*') {
                continue;
            }
            if statement == "use super::*" && (file.test_only || file.in_test(line)) {
                continue;
            }
            offences.push(file.offence(line, format!("`{statement}`: import the names it uses")));
        }
    });
}

/// Runs `check` on every source file, prints what it found (allowed entries apart) and
/// fails on anything not allowed, or allowed but no longer there.
fn verdict(which: Check, check: impl Fn(&SourceFile, &mut Vec<Offence>)) {
    let mut offences = Vec::new();
    for file in source_files() {
        if file.test_only && which != Check::GlobImports {
            continue;
        }
        check(&file, &mut offences);
    }
    let allowed: BTreeMap<&str, &str> = ALLOWED
        .iter()
        .filter(|(c, _, _)| *c == which)
        .map(|(_, f, why)| (*f, *why))
        .collect();
    let mut failures: Vec<String> = Vec::new();
    let mut tolerated: Vec<String> = Vec::new();
    for o in &offences {
        match allowed.get(o.file.as_str()) {
            Some(why) => tolerated.push(format!("{o} [allowed for now: {why}]")),
            None => failures.push(o.to_string()),
        }
    }
    let offending: BTreeSet<&str> = offences.iter().map(|o| o.file.as_str()).collect();
    for file in allowed.keys().filter(|f| !offending.contains(*f)) {
        failures.push(format!(
            "{file}: listed in ALLOWED for {which:?} but no longer offends: remove the entry"
        ));
    }
    if !tolerated.is_empty() {
        // Straight to stderr, past the test harness's capture: a passing run says it too.
        let _ = writeln!(
            std::io::stderr(),
            "tidy {which:?}: {} offences in {} files tolerated by ALLOWED in xtask/tests/tidy.rs \
             (`cargo test -p xtask --test tidy -- --nocapture` lists them)",
            tolerated.len(),
            allowed.len()
        );
        eprintln!("  {}", tolerated.join("\n  "));
    }
    assert!(
        failures.is_empty(),
        "tidy {which:?}: {} offences:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

fn is_tool(text: &str, leading_argument: impl FnOnce() -> bool) -> bool {
    let path_tool = ["/usr/sbin/", "/usr/bin/", "/sbin/", "/bin/"]
        .iter()
        .any(|dir| {
            text.strip_prefix(dir)
                .is_some_and(|n| !n.is_empty() && !n.contains('/'))
        });
    path_tool || TOOLS.contains(&text) || (TOOL_WORDS.contains(&text) && leading_argument())
}

/// One source file, lexed, with its test sections.
struct SourceFile {
    /// From the workspace root, with `/`.
    path: String,
    text: String,
    lexed: Lexed,
    /// Line ranges (1-based, inclusive) of `#[cfg(test)]` items.
    tests: Vec<std::ops::RangeInclusive<usize>>,
    /// The whole file is a test module.
    test_only: bool,
}

impl SourceFile {
    fn in_test(&self, line: usize) -> bool {
        self.tests.iter().any(|r| r.contains(&line))
    }

    fn offence(&self, line: usize, why: impl Into<String>) -> Offence {
        Offence {
            file: self.path.clone(),
            line,
            why: why.into(),
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Every `.rs` file under the source directories, sorted, with the files of test
/// modules marked.
fn source_files() -> Vec<SourceFile> {
    let root = workspace_root();
    let mut paths = Vec::new();
    for dir in SOURCE_DIRS {
        collect(&root.join(dir), &mut paths);
    }
    paths.sort();
    let mut files: Vec<SourceFile> = paths
        .iter()
        .map(|p| {
            let text =
                std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            let lexed = Lexed::new(&text);
            let (tests, _) = lexed.test_sections();
            SourceFile {
                path: p
                    .strip_prefix(&root)
                    .unwrap_or(p)
                    .to_string_lossy()
                    .replace('\\', "/"),
                text,
                lexed,
                tests,
                test_only: false,
            }
        })
        .collect();
    // The directories whose files belong to a `#[cfg(test)] mod x;` (x.rs, x/mod.rs and
    // everything below x/).
    let mut test_modules: Vec<String> = Vec::new();
    for f in &files {
        let (_, modules) = f.lexed.test_sections();
        let dir = module_dir(&f.path);
        test_modules.extend(modules.into_iter().map(|m| format!("{dir}/{m}")));
    }
    for f in &mut files {
        let module = f.path.strip_suffix(".rs").unwrap_or(&f.path);
        let module = module.strip_suffix("/mod").unwrap_or(module);
        f.test_only = test_modules
            .iter()
            .any(|t| module == t || module.starts_with(&format!("{t}/")));
    }
    files
}

/// Where the child modules of the module in `path` live.
fn module_dir(path: &str) -> String {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    match name {
        "mod.rs" | "lib.rs" | "main.rs" => dir.to_string(),
        _ => format!("{dir}/{}", name.trim_end_matches(".rs")),
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A string literal's text (escapes left as written), where it starts and where the
/// code after it starts in [`Lexed::code`], and its line.
struct Literal {
    text: String,
    start: usize,
    after: usize,
    line: usize,
}

/// A file with comments and the insides of string and char literals blanked out (newlines
/// kept, so offsets and lines still match the source), and its string literals.
struct Lexed {
    code: String,
    strings: Vec<Literal>,
    /// Where each line starts.
    line_starts: Vec<usize>,
}

impl Lexed {
    fn new(text: &str) -> Lexed {
        let src = text.as_bytes();
        let mut code = src.to_vec();
        let mut strings = Vec::new();
        let blank = |code: &mut Vec<u8>, from: usize, to: usize| {
            for b in &mut code[from..to] {
                if *b != b'\n' {
                    *b = b' ';
                }
            }
        };
        let mut i = 0;
        while i < src.len() {
            let rest = &src[i..];
            if rest.starts_with(b"//") {
                let end = rest
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(src.len(), |n| i + n);
                blank(&mut code, i, end);
                i = end;
            } else if rest.starts_with(b"/*") {
                // Block comments nest in Rust.
                let (mut depth, mut j) = (0usize, i);
                while j < src.len() {
                    if src[j..].starts_with(b"/*") {
                        depth += 1;
                        j += 2;
                    } else if src[j..].starts_with(b"*/") {
                        depth -= 1;
                        j += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        j += 1;
                    }
                }
                blank(&mut code, i, j);
                i = j;
            } else if let Some((open, hashes)) = raw_string_start(src, i) {
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                let body = i + open;
                let end = src[body..]
                    .windows(close.len())
                    .position(|w| w == close.as_slice())
                    .map_or(src.len(), |n| body + n);
                strings.push(literal(text, i, body, end, end + close.len()));
                blank(&mut code, body, end);
                i = (end + close.len()).min(src.len());
            } else if src[i] == b'"' || (rest.starts_with(b"b\"") && !ident_before(src, i)) {
                let body = i + if src[i] == b'"' { 1 } else { 2 };
                let mut j = body;
                while j < src.len() && src[j] != b'"' {
                    j += if src[j] == b'\\' { 2 } else { 1 };
                }
                let end = j.min(src.len());
                strings.push(literal(text, i, body, end, end + 1));
                blank(&mut code, body, end);
                i = end + 1;
            } else if src[i] == b'\'' {
                // A char literal ('x', '\n', '\u{..}') or a lifetime ('a, 'static).
                let end = if rest.get(1) == Some(&b'\\') {
                    rest[2..]
                        .iter()
                        .position(|&b| b == b'\'')
                        .map(|n| i + 2 + n)
                } else {
                    let width = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                    (rest.get(1 + width) == Some(&b'\'')).then_some(i + 1 + width)
                };
                match end {
                    Some(end) => {
                        blank(&mut code, i + 1, end);
                        i = end + 1;
                    }
                    None => i += 1,
                }
            } else {
                i += 1;
            }
        }
        let line_starts = std::iter::once(0)
            .chain(
                src.iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b'\n')
                    .map(|(n, _)| n + 1),
            )
            .collect::<Vec<usize>>();
        for s in &mut strings {
            s.line = line_starts.partition_point(|&start| start <= s.start);
        }
        Lexed {
            code: String::from_utf8_lossy(&code).into_owned(),
            strings,
            line_starts,
        }
    }

    /// Whether `s` is a call's argument with more arguments after it: `f(ns, "ip", …`
    /// (not an element of an array: `&["list", "table", "ip", TABLE]`).
    fn is_leading_argument(&self, s: &Literal) -> bool {
        let after = self.code[s.after.min(self.code.len())..].trim_start();
        let mut depth = 0usize;
        let enclosing = self.code.as_bytes()[..s.start].iter().rev().find(|&&b| {
            match b {
                b')' | b']' | b'}' => depth += 1,
                b'(' | b'[' | b'{' if depth == 0 => return true,
                b'(' | b'[' | b'{' => depth -= 1,
                _ => {}
            }
            false
        });
        enclosing == Some(&b'(') && after.starts_with(',')
    }

    /// The line ranges of `#[cfg(test)]` items, and the names of the modules declared
    /// `#[cfg(test)] mod x;` (kept in their own files).
    fn test_sections(&self) -> (Vec<std::ops::RangeInclusive<usize>>, Vec<String>) {
        let code = self.code.as_bytes();
        let mut ranges = Vec::new();
        let mut modules = Vec::new();
        if self.code.contains("#![cfg(test)]") {
            ranges.push(1..=self.code.lines().count().max(1));
            return (ranges, modules);
        }
        let mut from = 0;
        while let Some(at) = self.code[from..].find("#[cfg(test)]").map(|n| from + n) {
            let mut i = at + "#[cfg(test)]".len();
            // Further attributes of the same item.
            loop {
                while i < code.len() && code[i].is_ascii_whitespace() {
                    i += 1;
                }
                if !self.code[i..].starts_with("#[") {
                    break;
                }
                i = matching(code, i + 1, b'[', b']');
            }
            let item = i;
            let mut end = i;
            while end < code.len() && code[end] != b';' && code[end] != b'{' {
                end += 1;
            }
            if end < code.len() && code[end] == b'{' {
                end = matching(code, end, b'{', b'}') - 1;
            } else if let Some(name) = self.code[item..end]
                .trim()
                .strip_prefix("mod ")
                .or_else(|| self.code[item..end].trim().strip_prefix("pub(crate) mod "))
                .or_else(|| self.code[item..end].trim().strip_prefix("pub mod "))
            {
                modules.push(name.trim().to_string());
            }
            ranges.push(self.line_of(at)..=self.line_of(end.min(code.len().saturating_sub(1))));
            from = end.max(at + 1);
        }
        (ranges, modules)
    }

    /// Every `use` statement, whitespace squeezed, `;` dropped, with its line.
    fn use_statements(&self) -> Vec<(usize, String)> {
        let code = self.code.as_bytes();
        let mut out = Vec::new();
        let mut from = 0;
        while let Some(at) = self.code[from..].find("use").map(|n| from + n) {
            from = at + 3;
            let word_start = at == 0 || !is_ident(code[at - 1]);
            let word_end = code.get(at + 3).is_some_and(|b| b.is_ascii_whitespace());
            if !(word_start && word_end) {
                continue;
            }
            let end = self.code[at..].find(';').map_or(code.len(), |n| at + n);
            let statement: Vec<&str> = self.code[at..end].split_whitespace().collect();
            out.push((self.line_of(at), statement.join(" ").replace(":: ", "::")));
            from = end;
        }
        out
    }

    fn line_of(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset)
    }
}

fn literal(text: &str, start: usize, body: usize, end: usize, after: usize) -> Literal {
    Literal {
        text: text[body..end].to_string(),
        start,
        after,
        // Set once the whole file is lexed.
        line: 0,
    }
}

/// `r"`, `r#"`, `br##"` … at `i`: how long the opening is and how many `#`s close it.
fn raw_string_start(src: &[u8], i: usize) -> Option<(usize, usize)> {
    if ident_before(src, i) {
        return None;
    }
    let mut j = i;
    if src.get(j) == Some(&b'b') {
        j += 1;
    }
    if src.get(j) != Some(&b'r') {
        return None;
    }
    j += 1;
    let hashes = src[j..].iter().take_while(|&&b| b == b'#').count();
    (src.get(j + hashes) == Some(&b'"')).then_some((j + hashes + 1 - i, hashes))
}

fn ident_before(src: &[u8], i: usize) -> bool {
    i > 0 && is_ident(src[i - 1])
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The offset just after the bracket that closes the one at `open_at`.
fn matching(code: &[u8], open_at: usize, open: u8, close: u8) -> usize {
    let mut depth = 0usize;
    for (n, &b) in code.iter().enumerate().skip(open_at) {
        if b == open {
            depth += 1;
        } else if b == close {
            depth -= 1;
            if depth == 0 {
                return n + 1;
            }
        }
    }
    code.len()
}

#[test]
fn the_lexer_sees_code_strings_and_test_sections() {
    let text = "//! Doc.\nuse a::b::*;\nfn f() { run(ns, \"ip\", &[\"{\", \"ip\", x]); let c = '}'; }\n\
                // \"nft\" in a comment\nfn g<'a>(x: &'a str) -> &'a str { r#\"ipset\"# }\n\
                #[cfg(test)]\n#[allow(dead_code)]\nmod tests {\n    use super::*;\n}\n\
                #[cfg(test)]\nmod more;\n";
    let lexed = Lexed::new(text);
    let strings: Vec<(&str, usize)> = lexed
        .strings
        .iter()
        .map(|s| (s.text.as_str(), s.line))
        .collect();
    assert_eq!(strings, [("ip", 3), ("{", 3), ("ip", 3), ("ipset", 5)]);
    assert!(lexed.is_leading_argument(&lexed.strings[0]));
    assert!(!lexed.is_leading_argument(&lexed.strings[2]));
    assert!(!lexed.is_leading_argument(&lexed.strings[3]));
    let (tests, modules) = lexed.test_sections();
    assert_eq!(tests, [6..=10, 11..=12]);
    assert_eq!(modules, ["more"]);
    assert_eq!(
        lexed.use_statements(),
        [
            (2, "use a::b::*".to_string()),
            (9, "use super::*".to_string())
        ]
    );
    assert_eq!(module_dir("sim/src/oracle/mod.rs"), "sim/src/oracle");
    assert_eq!(
        module_dir("sim/src/render/proxy.rs"),
        "sim/src/render/proxy"
    );
}
