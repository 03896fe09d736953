//! The JUnit document parsed back with a real XML parser (quick-xml): its structure,
//! its counts, and hostile names and reasons surviving the round trip unchanged.

use std::collections::BTreeMap;

use quick_xml::XmlVersion;
use quick_xml::events::Event;

use super::*;
use crate::matrix::{Measurement, Outcome, Verdict};

/// An element read back: name, attributes (unescaped), text (unescaped), children.
#[derive(Debug, Default)]
struct El {
    name: String,
    attrs: BTreeMap<String, String>,
    text: String,
    children: Vec<El>,
}

impl El {
    fn all(&self, name: &str) -> Vec<&El> {
        self.children.iter().filter(|c| c.name == name).collect()
    }
}

fn element(e: &quick_xml::events::BytesStart) -> El {
    let attrs = e
        .attributes()
        .map(|a| {
            let a = a.expect("a well-formed attribute");
            (
                a.key.as_ref().to_string(),
                a.normalized_value(XmlVersion::Implicit1_0)
                    .expect("an attribute value that unescapes")
                    .into_owned(),
            )
        })
        .collect();
    El {
        name: e.name().as_ref().to_string(),
        attrs,
        ..Default::default()
    }
}

/// Parses the whole document (panicking on anything malformed) into its root element.
fn parse(xml: &str) -> El {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut stack: Vec<El> = vec![El::default()];
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Start(e) => stack.push(element(&e)),
            Event::Empty(e) => {
                let el = element(&e);
                stack.last_mut().unwrap().children.push(el);
            }
            Event::End(e) => {
                let el = stack.pop().unwrap();
                assert_eq!(el.name, e.name().as_ref(), "tags nest");
                stack.last_mut().unwrap().children.push(el);
            }
            Event::Text(t) => stack.last_mut().unwrap().text += &t.xml10_content(),
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref().expect("a valid character reference") {
                    Some(c) => c.to_string(),
                    None => match r.xml10_content().as_ref() {
                        "amp" => "&".into(),
                        "lt" => "<".into(),
                        "gt" => ">".into(),
                        "quot" => "\"".into(),
                        "apos" => "'".into(),
                        other => panic!("undeclared entity &{other};"),
                    },
                };
                stack.last_mut().unwrap().text += &c;
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(stack.len(), 1, "every element closed");
    let mut doc = stack.pop().unwrap();
    assert_eq!(doc.children.len(), 1, "one root element");
    doc.children.pop().unwrap()
}

const HOSTILE: &str = "x/a\"<b>&'c]]>\u{1}\ttab\nline";

fn cell(from: &str, to: &str, outcome: Outcome, expected: Verdict) -> Cell {
    Cell {
        from: from.parse().unwrap(),
        to: to.parse().unwrap(),
        port: "TCP/80".parse().unwrap(),
        client_ip: None,
        expected: Some(expected),
        asserted: true,
        measured: Measurement {
            outcome,
            answered_by: None,
            seen_source: None,
            detail: "ICMP <admin-prohibited> & \"more\"".into(),
            elapsed_us: 7,
        },
        oracle: Some(expected),
        reason: Some(format!("deny: ingress denied (isolated by {HOSTILE})")),
        service: None,
    }
}

#[test]
fn the_document_parses_back_with_a_suite_per_scenario_a_case_per_step_and_a_failure_per_wrong_cell()
{
    let good = StepResult {
        name: "initial".into(),
        cells: vec![cell("x/a", "y/b", Outcome::Allowed, Verdict::Allow)],
        ..Default::default()
    };
    let bad = StepResult {
        name: format!("step {HOSTILE}"),
        cells: vec![
            cell("x/a", "y/b", Outcome::Allowed, Verdict::Deny),
            cell("x/b", "y/b", Outcome::Rejected, Verdict::Allow),
            cell("x/c", "y/b", Outcome::Rejected, Verdict::Deny),
        ],
        ..Default::default()
    };
    let steps = [good, bad];
    let name = format!("scenario {HOSTILE}");
    let suites = [
        SuiteRun {
            name: &name,
            file: "a & b.yaml",
            seconds: 1.5,
            steps: &steps,
            error: None,
        },
        SuiteRun {
            name: "broken",
            file: "broken.yaml",
            seconds: 0.0,
            steps: &[],
            error: Some("broken.yaml:3:1: field `kind`: <nope> & \"bad\"\nsecond line"),
        },
    ];
    let xml = render(&suites);
    let root = parse(&xml);
    assert_eq!(root.name, "testsuites");
    assert_eq!(root.attrs["tests"], "3");
    assert_eq!(root.attrs["failures"], "1");
    assert_eq!(root.attrs["errors"], "1");
    let s = root.all("testsuite");
    assert_eq!(s.len(), 2);
    // XML has no way to carry U+0001: it is replaced, everything else survives.
    let survived = HOSTILE.replace('\u{1}', "\u{FFFD}");
    assert_eq!(s[0].attrs["name"], format!("scenario {survived}"));
    assert_eq!(s[0].attrs["file"], "a & b.yaml");
    assert_eq!(s[0].attrs["tests"], "2");
    assert_eq!(s[0].attrs["failures"], "1");
    let cases = s[0].all("testcase");
    assert_eq!(cases.len(), 2);
    assert_eq!(cases[0].attrs["name"], "step 1: initial");
    assert!(cases[0].children.is_empty());
    assert_eq!(cases[1].attrs["name"], format!("step 2: step {survived}"));
    let failures = cases[1].all("failure");
    assert_eq!(failures.len(), 2, "one failure per wrong cell: {xml}");
    assert_eq!(
        failures[0].attrs["message"],
        "x/a -> y/b TCP/80: expected deny, measured allowed"
    );
    let body = &failures[0].text;
    for want in [
        "expected: deny",
        "measured: allowed (ICMP <admin-prohibited> & \"more\")",
        &format!("reason: deny: ingress denied (isolated by {survived})"),
    ] {
        assert!(body.contains(want), "{want:?} missing from {body:?}");
    }
    assert!(failures[1].text.contains("expected: allow"));
    let errors = s[1].all("testcase")[0].all("error");
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].attrs["message"],
        "broken.yaml:3:1: field `kind`: <nope> & \"bad\""
    );
    assert!(errors[0].text.ends_with("\nsecond line"));
}

#[test]
fn escaping_leaves_no_markup_and_no_control_characters() {
    let e = escape("<a href=\"x\">&'\u{0}\u{1b}\u{FFFF}</a>");
    assert!(!e.contains(['<', '>', '"', '\'']), "{e}");
    assert!(!e.chars().any(|c| (c as u32) < 0x20));
    assert_eq!(e.matches('&').count(), e.matches(';').count());
}
