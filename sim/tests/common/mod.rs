//! Helpers the parser tests share: parse a scenario given as text (named `t.yaml` in
//! errors), expect an error, find where a word stands in the text, and check that an
//! error points exactly there.
#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};

use sim::error::{Location, ScenarioError};
use sim::scenario::{self, Scenario};

pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
    scenario::parse_str(Path::new("t.yaml"), text)
}

pub fn parse_ok(text: &str) -> Scenario {
    parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

pub fn parse_err(text: &str) -> ScenarioError {
    match parse(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => {
            // Every message is printed so `cargo test -- --nocapture` shows how they read.
            println!("{e}");
            e
        }
    }
}

/// The 1-based position of the `nth` (0-based) occurrence of `needle` in `text`.
pub fn pos(text: &str, needle: &str, nth: usize) -> Location {
    let (byte, _) = text
        .match_indices(needle)
        .nth(nth)
        .unwrap_or_else(|| panic!("{needle:?} #{nth} not in the text"));
    let before = &text[..byte];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    Location { line, column }
}

#[track_caller]
pub fn assert_error(e: &ScenarioError, at: Location, path: &str, message_part: &str) {
    assert_eq!(e.file, PathBuf::from("t.yaml"), "{e}");
    assert_eq!(e.location, Some(at), "{e}");
    assert_eq!(e.path, path, "{e}");
    assert!(
        e.message.contains(message_part),
        "message {:?} lacks {message_part:?}",
        e.message
    );
}
