//! The `expect:` section in its two forms.
//!
//! (a) One text table per `PROTO/port`, written as a literal block (`|`): the first line
//! names the server pods (`ns/pod`), each further line is a client (`ns/pod` or
//! `node/NAME`) and one cell per server: `.` reachable, `X` not reachable, `#` not
//! asserted (absent from the [`Expectation`]). Cells not in a table are not asserted.
//!
//! ```yaml
//! expect:
//!   TCP/80: |
//!         x/a x/b
//!     x/a  #   X
//!     x/b  .   #
//! ```
//!
//! (b) `default: allow|deny` plus `exceptions: [{from, to, port, protocol, allowed}]`
//! (`protocol` defaults to TCP): every cell not listed takes the default.
//!
//! A scenario uses one form per `expect`; mixing them is an error. Errors inside a table
//! point at the line and column of the offending word in the file.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Location, ScenarioError};

use crate::protocol::{PortProto, Protocol};

use super::fields;
use super::source::Source;
use super::yaml::{join_index, join_key};
use super::{Expectation, Peer};

/// Where an expectation names a peer, so that a peer that does not exist at that step
/// can be reported there.
#[derive(Debug, Clone)]
pub(crate) struct PeerUse {
    pub peer: Peer,
    pub path: String,
    pub location: Option<Location>,
}

/// A parsed `expect` and the peers it names.
#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    pub expectation: Expectation,
    pub peers: Vec<PeerUse>,
}

const FORM_B_KEYS: [&str; 2] = ["default", "exceptions"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExceptionsForm {
    default: Option<AllowDeny>,
    exceptions: Option<Vec<Exception>>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum AllowDeny {
    Allow,
    Deny,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Exception {
    from: String,
    to: String,
    port: u16,
    protocol: Option<Protocol>,
    allowed: bool,
}

/// Parses the `expect` value found at `path`.
pub(crate) fn parse(src: &Source, path: &str, value: &Value) -> Result<Parsed, ScenarioError> {
    let Some(map) = value.as_object() else {
        return Err(src.at_value(
            path,
            "expect must be a mapping: `PROTO/port` tables, or `default` and `exceptions`",
        ));
    };
    let form_b = map.keys().any(|k| FORM_B_KEYS.contains(&k.as_str()));
    let table_key = map.keys().find(|k| k.parse::<PortProto>().is_ok());
    if form_b {
        if let Some(k) = table_key {
            return Err(src.at_key(
                &join_key(path, k),
                "expect mixes its two forms: write either tables per PROTO/port, or `default` with `exceptions`",
            ));
        }
        return exceptions(src, path, value);
    }
    let mut parsed = Parsed {
        expectation: Expectation::default(),
        peers: Vec::new(),
    };
    let mut seen: BTreeMap<PortProto, &str> = BTreeMap::new();
    for (k, v) in map {
        let kp = join_key(path, k);
        let port = k.parse::<PortProto>().map_err(|e| {
            let hint = match fields::closest(k, FORM_B_KEYS) {
                Some(f) => format!("; did you mean `{f}`?"),
                None => String::new(),
            };
            src.at_key(&kp, format!("`{k}` is not a table name: {e}{hint}"))
        })?;
        if let Some(other) = seen.insert(port, k) {
            return Err(src.at_key(
                &kp,
                format!("a table for {port} is already given as `{other}`"),
            ));
        }
        let Value::String(text) = v else {
            return Err(src.at_value(
                &kp,
                "a table must be text: write it as a literal block (`|`)",
            ));
        };
        table(src, &kp, text, port, &mut parsed)?;
    }
    Ok(parsed)
}

fn exceptions(src: &Source, path: &str, value: &Value) -> Result<Parsed, ScenarioError> {
    let form: ExceptionsForm = src.deserialize(path, value)?;
    let mut parsed = Parsed {
        expectation: Expectation {
            default: form.default.map(|d| matches!(d, AllowDeny::Allow)),
            cells: BTreeMap::new(),
        },
        peers: Vec::new(),
    };
    let list = join_key(path, "exceptions");
    for (i, e) in form.exceptions.iter().flatten().enumerate() {
        let ep = join_index(&list, i);
        let from_path = join_key(&ep, "from");
        let to_path = join_key(&ep, "to");
        let from = client(&e.from).map_err(|m| src.at_value(&from_path, m))?;
        let to = server(&e.to).map_err(|m| src.at_value(&to_path, m))?;
        if e.port == 0 {
            return Err(src.at_value(&join_key(&ep, "port"), "0 is not a port number (1-65535)"));
        }
        let port = PortProto::new(e.protocol.unwrap_or(Protocol::Tcp), e.port);
        let key = (from.clone(), to.clone(), port);
        if parsed.expectation.cells.insert(key, e.allowed).is_some() {
            return Err(src.at_key(
                &ep,
                format!("the cell {from} -> {to} {port} is listed twice"),
            ));
        }
        for (peer, p) in [(from, from_path), (to, to_path)] {
            parsed.peers.push(PeerUse {
                location: src.positions.value(&p),
                peer,
                path: p,
            });
        }
    }
    Ok(parsed)
}

/// A client (row) is a pod, a node or an external host; a Service only answers.
pub(crate) fn client(s: &str) -> Result<Peer, String> {
    match s.parse::<Peer>()? {
        Peer::Service { .. } => Err(format!(
            "{s:?} is a Service: it can only be probed (a column, `to`), not probe"
        )),
        Peer::Dns { .. } => Err(format!(
            "{s:?} is a DNS name: it can only be probed (a column, `to`), not probe"
        )),
        p if p.is_external_service() => Err(format!(
            "{s:?} is a Service's outside address: it can only be probed (a column, `to`), not probe"
        )),
        other => Ok(other),
    }
}

/// A server (column) is a pod, an external host, a Service, or a node (reached on its
/// pods' hostPorts).
fn server(s: &str) -> Result<Peer, String> {
    s.parse::<Peer>()
}

/// The words of a line with their character columns (0-based).
fn words(line: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (chars, (byte, c)) in line.char_indices().enumerate() {
        if c.is_whitespace() {
            if let Some((col, b)) = start.take() {
                out.push((col, &line[b..byte]));
            }
        } else if start.is_none() {
            start = Some((chars, byte));
        }
    }
    if let Some((col, b)) = start {
        out.push((col, &line[b..]));
    }
    out
}

fn table(
    src: &Source,
    path: &str,
    text: &str,
    port: PortProto,
    parsed: &mut Parsed,
) -> Result<(), ScenarioError> {
    // In a literal block, line i of the text is file line start + i, and its column 0 is
    // the block's indentation; elsewhere we can only point at the value.
    let literal = src.positions.literal_blocks.contains(path);
    let start = src.positions.value(path);
    let at = |line: usize, col: usize| -> Option<Location> {
        match (literal, start) {
            (true, Some(s)) => Some(Location {
                line: s.line + line,
                column: s.column + col,
            }),
            _ => start,
        }
    };
    let err = |line: usize, col: usize, msg: String| {
        ScenarioError::new(&src.file, at(line, col), path, msg)
    };

    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i, words(l)))
        .filter(|(_, w)| !w.is_empty());
    let Some((header_line, header)) = lines.next() else {
        return Err(src.at_value(
            path,
            "the table is empty: its first line names the server pods",
        ));
    };
    let mut columns: Vec<Peer> = Vec::with_capacity(header.len());
    for (col, w) in &header {
        let pod = server(w).map_err(|m| err(header_line, *col, format!("column header: {m}")))?;
        if columns.contains(&pod) {
            return Err(err(
                header_line,
                *col,
                format!("column {pod} appears twice"),
            ));
        }
        parsed.peers.push(PeerUse {
            peer: pod.clone(),
            path: path.to_string(),
            location: at(header_line, *col),
        });
        columns.push(pod);
    }
    let mut rows = Vec::new();
    for (line, ws) in lines {
        let (col, first) = ws[0];
        let client = client(first).map_err(|m| err(line, col, format!("row header: {m}")))?;
        if rows.contains(&client) {
            return Err(err(line, col, format!("row {client} appears twice")));
        }
        parsed.peers.push(PeerUse {
            peer: client.clone(),
            path: path.to_string(),
            location: at(line, col),
        });
        let cells = &ws[1..];
        if cells.len() > columns.len() {
            let (c, _) = cells[columns.len()];
            return Err(err(
                line,
                c,
                format!(
                    "row {client} has {} cells but the table has {} columns",
                    cells.len(),
                    columns.len()
                ),
            ));
        }
        if cells.len() < columns.len() {
            let end = ws.last().map(|(c, w)| c + w.chars().count()).unwrap_or(col);
            return Err(err(
                line,
                end,
                format!(
                    "row {client} has {} cells but the table has {} columns (no cell for {})",
                    cells.len(),
                    columns.len(),
                    columns[cells.len()]
                ),
            ));
        }
        for ((c, cell), server) in cells.iter().zip(&columns) {
            let value = match *cell {
                "." => Some(true),
                "X" => Some(false),
                "#" => None,
                other => {
                    return Err(err(
                        line,
                        *c,
                        format!(
                            "`{other}` in row {client}, column {server} is not a cell: write `.` (reachable), `X` (not reachable) or `#` (not asserted)"
                        ),
                    ));
                }
            };
            if let Some(v) = value {
                parsed
                    .expectation
                    .cells
                    .insert((client.clone(), server.clone(), port), v);
            }
        }
        rows.push(client);
    }
    if rows.is_empty() {
        return Err(err(
            header_line,
            0,
            "the table has no rows: add one line per client".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_have_character_columns() {
        assert_eq!(words("  x/a  é b"), vec![(2, "x/a"), (7, "é"), (9, "b")]);
        assert!(words("   ").is_empty());
    }
}
