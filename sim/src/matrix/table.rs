//! Cyclonus-style truth tables: one table per `PROTO/port`, rows = clients, columns =
//! servers, `.` reachable and `X` not, the vocabulary users of Cyclonus and Policy
//! Assistant already read. Wrong cells carry a `*`, and are listed below the tables
//! with what was expected, what was measured and why.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::peers::Peer;
use crate::protocol::PortProto;

use super::{Cell, Outcome, StepResult};

/// The legend printed under every set of tables.
pub const LEGEND: &str =
    ". reachable   X not reachable   ? measurement error   - not probed   * wrong (see below)";

/// The extra legend line when some Service cell was reached by only some of its probes.
pub const LEGEND_MIXED: &str = "~ depends on the backend or path a connection takes (the oracle's word; every probe matched a backend or path it predicts, see the spread), or some probes reached a backend and some did not";

fn symbol(cell: &Cell) -> String {
    let s = match (&cell.service, cell.measured.outcome) {
        (Some(svc), _) if svc.spread.unanswered.contains_key(&Outcome::Error) => "?",
        // The oracle says the cell depends on the backend or path a connection takes, and
        // every probe matched one it predicts: `~` whatever way this run's probes happened
        // to split (all of them taking one path is rare, not wrong; the spread shows it),
        // so that a snapshot of the matrix does not depend on chance.
        (Some(svc), _)
            if cell.oracle.is_none() && svc.spread.probes() > 1 && cell.mismatch().is_none() =>
        {
            "~"
        }
        (Some(svc), _)
            if svc.spread.reached() > 0 && svc.spread.reached() < svc.spread.probes() =>
        {
            "~"
        }
        (Some(svc), _) if svc.spread.probes() > 0 => {
            if svc.spread.reached() > 0 {
                "."
            } else {
                "X"
            }
        }
        (_, Outcome::Allowed) => ".",
        (_, Outcome::Refused | Outcome::Dropped | Outcome::Rejected) => "X",
        (_, Outcome::Error) => "?",
    };
    if cell.mismatch().is_some() {
        format!("{s}*")
    } else {
        s.to_string()
    }
}

/// Every `PROTO/port` table of a step, rows = clients, columns = servers.
pub fn render_tables(step: &StepResult) -> String {
    let mut by_port: BTreeMap<PortProto, Vec<&Cell>> = BTreeMap::new();
    for c in &step.cells {
        by_port.entry(c.port).or_default().push(c);
    }
    let mut out = String::new();
    for (port, cells) in by_port {
        let rows: BTreeSet<&Peer> = cells.iter().map(|c| &c.from).collect();
        let cols: BTreeSet<&Peer> = cells.iter().map(|c| &c.to).collect();
        let lookup: BTreeMap<(&Peer, &Peer), &Cell> =
            cells.iter().map(|c| ((&c.from, &c.to), *c)).collect();
        let row_w = rows.iter().map(|r| step.label(r).len()).max().unwrap_or(0);
        let col_w: Vec<usize> = cols.iter().map(|c| step.label(c).len().max(2)).collect();
        let _ = writeln!(out, "{port}");
        let _ = write!(out, "{:row_w$}", "");
        for (c, w) in cols.iter().zip(&col_w) {
            let _ = write!(out, "  {:<w$}", step.label(c));
        }
        out.push('\n');
        for r in &rows {
            let _ = write!(out, "{:<row_w$}", step.label(r));
            for (c, w) in cols.iter().zip(&col_w) {
                let s = lookup
                    .get(&(*r, *c))
                    .map(|cell| symbol(cell))
                    .unwrap_or_else(|| "-".into());
                let _ = write!(out, "  {s:<w$}");
            }
            // Trailing spaces would make snapshots fragile.
            while out.ends_with(' ') {
                out.pop();
            }
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

/// Counts for a step's summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub probes: usize,
    pub correct: usize,
    pub wrong: usize,
    pub not_asserted: usize,
}

pub fn tally(step: &StepResult) -> Tally {
    let mut t = Tally::default();
    for c in &step.cells {
        t.probes += 1;
        if c.mismatch().is_some() {
            t.wrong += 1;
        } else if c.asserted && (c.expected.is_some() || c.oracle.is_some()) {
            t.correct += 1;
        } else {
            t.not_asserted += 1;
        }
    }
    t
}

/// Per Service cell probed more than once (`--repeat`): how the probes spread over the
/// backends, with the oracle's verdict for each, and how many got no answer.
pub fn render_spread(step: &StepResult) -> String {
    let mut out = String::new();
    for c in &step.cells {
        let Some(svc) = &c.service else { continue };
        let n = svc.spread.probes();
        if n < 2 {
            continue;
        }
        let oracle = match c.oracle {
            Some(super::Verdict::Allow) => "every backend allowed".to_string(),
            Some(super::Verdict::Deny) if svc.backends.is_empty() => "no backend".to_string(),
            Some(super::Verdict::Deny) => "every backend denied".to_string(),
            None => format!(
                "mixed: {} of {} backends allowed",
                svc.backends
                    .iter()
                    .filter(|(_, v)| *v == super::Verdict::Allow)
                    .count(),
                svc.backends.len()
            ),
        };
        let pinned = if svc.affinity {
            ", ClientIP affinity: one backend"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {} -> {} {} ({n} probes, oracle: {oracle}{pinned})",
            c.from, c.to, c.port
        );
        let mut rows: Vec<(String, usize, &str)> = svc
            .backends
            .iter()
            .map(|(b, v)| {
                let count = svc.spread.answered.get(b).copied().unwrap_or(0);
                let word = match v {
                    super::Verdict::Allow => "allow",
                    super::Verdict::Deny => "deny",
                };
                (b.clone(), count, word)
            })
            .collect();
        for (who, count) in &svc.spread.answered {
            if !svc.backends.iter().any(|(b, _)| b == who) {
                rows.push((who.clone(), *count, "not a backend"));
            }
        }
        for (outcome, count) in &svc.spread.unanswered {
            rows.push((format!("({})", outcome.as_str()), *count, "no answer"));
        }
        let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        for (who, count, word) in rows {
            let _ = writeln!(out, "    {who:<w$}  {count:>4}  {word}");
        }
    }
    out
}

/// The tables, the list of wrong cells, and a summary line.
pub fn render_step(step: &StepResult) -> String {
    let mut out = render_tables(step);
    let _ = writeln!(out, "{LEGEND}");
    if step.cells.iter().any(|c| symbol(c).starts_with('~')) {
        let _ = writeln!(out, "{LEGEND_MIXED}");
    }
    let spread = render_spread(step);
    if !spread.is_empty() {
        let _ = writeln!(out, "\nspread over backends:\n{}", spread.trim_end());
    }
    let wrong: Vec<_> = step.mismatches().collect();
    if !wrong.is_empty() {
        let _ = writeln!(out, "\nwrong cells:");
        for (c, why) in &wrong {
            let _ = write!(out, "  {} -> {} {}: {why}", c.from, c.to, c.port);
            if !c.measured.detail.is_empty() {
                let _ = write!(out, " ({})", c.measured.detail);
            }
            out.push('\n');
            if let Some(reason) = &c.reason {
                let _ = writeln!(out, "      oracle: {reason}");
            }
        }
    }
    let answered: Vec<&Cell> = step
        .cells
        .iter()
        .filter(|c| c.measured.seen_source.is_some() && c.client_ip.is_some())
        .collect();
    if !answered.is_empty() {
        let natted: Vec<&&Cell> = answered
            .iter()
            .filter(|c| c.translated_source().is_some())
            .collect();
        if natted.is_empty() {
            let _ = writeln!(
                out,
                "\nsource addresses: in all {} answers the server saw the client's own address (no NAT)",
                answered.len()
            );
        } else {
            let _ = writeln!(
                out,
                "\nsource addresses: {} of {} answers came from a translated address:",
                natted.len(),
                answered.len()
            );
            for c in natted.iter().take(10) {
                let _ = writeln!(
                    out,
                    "  {} -> {} {}: client {} seen as {}",
                    c.from,
                    c.to,
                    c.port,
                    c.client_ip.map(|i| i.to_string()).unwrap_or_default(),
                    c.measured
                        .seen_source
                        .map(|i| i.to_string())
                        .unwrap_or_default()
                );
            }
        }
    }
    let t = tally(step);
    let _ = writeln!(
        out,
        "\n{}: {} probes, {} correct, {} wrong, {} not asserted",
        step.name, t.probes, t.correct, t.wrong, t.not_asserted
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::{Measurement, Verdict};
    use crate::protocol::Protocol;

    fn cell(from: &str, to: &str, outcome: Outcome, expected: Option<Verdict>) -> Cell {
        Cell {
            from: from.parse().unwrap(),
            to: to.parse::<Peer>().unwrap(),
            port: PortProto::new(Protocol::Tcp, 80),
            client_ip: None,
            expected,
            asserted: from != to,
            measured: Measurement {
                outcome,
                answered_by: None,
                seen_source: None,
                detail: String::new(),
                elapsed_us: 0,
            },
            oracle: None,
            reason: None,
            service: None,
        }
    }

    #[test]
    fn table_marks_wrong_cells_and_counts_them() {
        let step = StepResult {
            name: "initial".into(),
            cells: vec![
                cell("x/a", "x/a", Outcome::Allowed, None),
                cell("x/a", "x/b", Outcome::Allowed, Some(Verdict::Allow)),
                cell("x/b", "x/a", Outcome::Dropped, Some(Verdict::Allow)),
                cell("node/n1", "x/a", Outcome::Rejected, Some(Verdict::Deny)),
            ],
            ..Default::default()
        };
        let text = render_step(&step);
        let expected = "\
TCP/80
         x/a  x/b
x/a      .    .
x/b      X*   -
node/n1  X    -

";
        assert!(text.starts_with(expected), "{text}");
        assert!(
            text.contains("x/b -> x/a TCP/80: expected allow, measured dropped"),
            "{text}"
        );
        assert!(
            text.contains("initial: 4 probes, 2 correct, 1 wrong, 1 not asserted"),
            "{text}"
        );
    }

    /// A Service cell from a list of probes (`Some(backend)` answered, `None` rejected).
    fn service_cell(
        backends: &[(&str, Verdict)],
        oracle: Option<Verdict>,
        probes: &[Option<&str>],
    ) -> Cell {
        let mut c = cell("x/a", "svc/x/web:80", Outcome::Allowed, None);
        let mut spread = crate::matrix::Spread::default();
        for p in probes {
            let m = Measurement {
                outcome: if p.is_some() {
                    Outcome::Allowed
                } else {
                    Outcome::Rejected
                },
                answered_by: p.map(str::to_string),
                ..c.measured.clone()
            };
            spread.add(&m);
        }
        c.oracle = oracle;
        c.service = Some(crate::matrix::ServiceCell {
            backends: backends.iter().map(|(b, v)| (b.to_string(), *v)).collect(),
            spread,
            affinity: false,
        });
        c
    }

    #[test]
    fn service_cells_are_checked_probe_by_probe_against_their_backends() {
        use Verdict::{Allow, Deny};
        let both = [("x/b", Allow), ("x/c", Allow)];
        let ok = service_cell(&both, Some(Allow), &[Some("x/b"), Some("x/c"), Some("x/b")]);
        assert_eq!(ok.mismatch(), None);
        assert!(ok.agrees_with_oracle());
        assert_eq!(symbol(&ok), ".");
        let lost = service_cell(&both, Some(Allow), &[Some("x/b"), None]);
        let why = lost.mismatch().unwrap();
        assert!(
            why.contains("1 of 2 probes got no answer (1 rejected)"),
            "{why}"
        );
        assert!(!lost.agrees_with_oracle());
        // Mixed: rejections are fine, an answer from the denied backend is not.
        let mixed = [("x/b", Allow), ("x/c", Deny)];
        let fine = service_cell(&mixed, None, &[Some("x/b"), None, Some("x/b")]);
        assert_eq!(fine.mismatch(), None);
        assert_eq!(symbol(&fine), "~");
        // All of a "depends" cell's probes may land on one backend by chance: still `~`
        // (the oracle's class), so snapshots do not depend on the draw.
        let one_way = service_cell(&mixed, None, &[Some("x/b"), Some("x/b")]);
        assert_eq!(one_way.mismatch(), None);
        assert_eq!(symbol(&one_way), "~");
        let all_denied = service_cell(&mixed, None, &[None, None]);
        assert_eq!(symbol(&all_denied), "~");
        let leak = service_cell(&mixed, None, &[Some("x/c")]);
        let why = leak.mismatch().unwrap();
        assert!(why.contains("x/c answered 1 of 1 probes"), "{why}");
        assert_eq!(symbol(&leak), ".*");
        // No endpoints: every probe must fail.
        let none = service_cell(&[], Some(Deny), &[None, None]);
        assert_eq!(none.mismatch(), None);
        assert_eq!(symbol(&none), "X");
        // The scenario's expectation is checked the same way.
        let mut expected = service_cell(&both, Some(Allow), &[Some("x/b")]);
        expected.expected = Some(Deny);
        assert!(
            expected
                .mismatch()
                .unwrap()
                .contains("the scenario says deny")
        );

        let step = StepResult {
            name: "s".into(),
            cells: vec![fine],
            ..Default::default()
        };
        let text = render_step(&step);
        assert!(text.contains(LEGEND_MIXED), "{text}");
        assert!(
            text.contains(
                "x/a -> svc/x/web:80 TCP/80 (3 probes, oracle: mixed: 1 of 2 backends allowed)"
            ),
            "{text}"
        );
        assert!(text.contains("    x/b            2  allow\n"), "{text}");
        assert!(text.contains("    x/c            0  deny\n"), "{text}");
        assert!(text.contains("    (rejected)     1  no answer\n"), "{text}");
    }

    #[test]
    fn client_ip_affinity_cells_must_be_answered_by_one_backend() {
        use Verdict::Allow;
        let both = [("x/b", Allow), ("x/c", Allow)];
        let mut pinned = service_cell(&both, Some(Allow), &[Some("x/c"), Some("x/c"), Some("x/c")]);
        pinned.service.as_mut().unwrap().affinity = true;
        assert_eq!(pinned.mismatch(), None);
        let step = StepResult {
            name: "s".into(),
            cells: vec![pinned.clone()],
            ..Default::default()
        };
        let text = render_spread(&step);
        assert!(
            text.contains(
                "(3 probes, oracle: every backend allowed, ClientIP affinity: one backend)"
            ),
            "{text}"
        );
        let mut spread = service_cell(&both, Some(Allow), &[Some("x/b"), Some("x/c")]);
        spread.service.as_mut().unwrap().affinity = true;
        let why = spread.mismatch().unwrap();
        assert!(
            why.contains(
                "should pin the client to one backend, but 2 answered its 2 probes (x/b 1, x/c 1)"
            ),
            "{why}"
        );
        assert!(!spread.agrees_with_oracle());
        // Without affinity the same spread is fine.
        spread.service.as_mut().unwrap().affinity = false;
        assert_eq!(spread.mismatch(), None);
    }
}
