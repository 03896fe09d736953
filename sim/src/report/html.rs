//! The HTML page of `--report DIR`: one `index.html` with its CSS, script and SVG inline,
//! so it opens from disk with no network. Without script every step is shown one under
//! the other; with it, buttons switch steps and a click (or Enter) on a matrix cell shows
//! the oracle's reason and what was measured, and highlights both ends in the picture.
//! `#step=N&cell=N-K` in the address opens step N and clicks cell K (used by the browser
//! test, and handy for linking to one cell). All text is escaped; output is
//! deterministic (no clock, no run prefix).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::matrix::{Cell, Outcome, Verdict};
use crate::peers::Peer;
use crate::protocol::PortProto;

use super::topology::svg;
use super::{ReportData, StepData, esc};

const CSS: &str = r#"
body { font-family: system-ui, sans-serif; margin: 0 1.5em 2em; color: #1d2430; background: #fbfbfd; }
h1 { margin-bottom: .2em; } h2 { margin-top: 1.4em; } h3 { margin: 1em 0 .4em; }
.verdict { display: inline-block; padding: .1em .6em; border-radius: 4px; color: white; font-weight: bold; }
.verdict.pass { background: #2e9d4f; } .verdict.fail { background: #d62728; }
nav { position: sticky; top: 0; background: #fbfbfd; padding: .5em 0; border-bottom: 1px solid #ccd; z-index: 1; }
nav button { margin: .1em; padding: .3em .8em; border: 1px solid #99a; border-radius: 4px; background: white; cursor: pointer; }
nav button.active { background: #1d4f91; color: white; border-color: #1d4f91; }
nav button.bad { border-color: #d62728; }
.topo { overflow-x: auto; border: 1px solid #dde; background: white; border-radius: 6px; }
svg.topology { max-width: 100%; height: auto; font-family: ui-monospace, monospace; font-size: 12px; }
svg .fabric rect { fill: #dde6f0; stroke: #7a8ca3; }
svg .router rect, svg .host rect { fill: #f3ecdf; stroke: #a38a5c; }
svg .node > rect { fill: #eef3fa; stroke: #5a7bb0; stroke-width: 1.5; }
svg .node.down > rect { fill: #f6e4e4; stroke: #d62728; stroke-dasharray: 6 4; }
svg .pod rect { fill: white; stroke: #6b8e6b; }
svg .pod.end rect, svg .service.end rect, svg .host.end rect, svg .node.end > rect { fill: #fff3b0; stroke: #c49000; stroke-width: 2.5; }
svg .service rect { fill: #f4eefb; stroke: #7a4fb0; stroke-dasharray: 5 3; }
svg .wire { stroke: #7a8ca3; stroke-width: 2; } svg .wire.cut { stroke: #d62728; stroke-dasharray: 4 4; }
svg .tunnel { fill: none; stroke: #7a4fb0; stroke-width: 2; stroke-dasharray: 7 4; }
svg .backend { stroke: #7a4fb0; stroke-width: 1; stroke-dasharray: 2 3; }
svg text.name { font-weight: bold; } svg text.labels { fill: #556; } svg text.tunnel-label { fill: #7a4fb0; }
.grid { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
table.matrix { border-collapse: collapse; font-family: ui-monospace, monospace; font-size: 12px; }
table.matrix caption { font-weight: bold; text-align: left; padding-bottom: .3em; }
table.matrix th { padding: 2px 6px; font-weight: normal; white-space: nowrap; }
table.matrix thead th { writing-mode: vertical-rl; transform: rotate(180deg); text-align: left; }
table.matrix td { width: 2.6em; height: 1.9em; text-align: center; border: 1px solid white; cursor: pointer; color: white; font-weight: bold; }
td.allowed { background: #2e9d4f; } td.denied { background: #e07b00; } td.refused { background: #c9a800; }
td.dropped { background: #5f6670; } td.error { background: #8c8cd9; } td.mixed { background: repeating-linear-gradient(45deg, #2e9d4f 0 5px, #5f6670 5px 10px); }
td.none { background: #eee; cursor: default; }
td.mismatch { outline: 3px solid #d62728; outline-offset: -3px; box-shadow: inset 0 0 0 5px #fff; }
td.sel { outline: 3px solid #1d2430; outline-offset: -1px; }
.legend span { display: inline-block; margin-right: 1em; font-size: 13px; }
.legend i { display: inline-block; width: 1em; height: 1em; vertical-align: middle; margin-right: .3em; }
.matrix-area { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
.panel { border: 1px solid #ccd; border-radius: 6px; background: white; padding: .6em 1em; min-height: 3em; flex: 1 1 22em; max-width: 48em; position: sticky; top: 3.5em; }
.cell-detail dl { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1em; margin: 0; }
.cell-detail dt { color: #556; } .cell-detail dd { margin: 0; font-family: ui-monospace, monospace; white-space: pre-wrap; }
.cell-detail .problem { color: #d62728; font-weight: bold; }
pre { background: #f3f4f7; padding: .6em; overflow-x: auto; font-size: 12px; }
details { margin: .3em 0; } summary { cursor: pointer; }
ul.changes li { font-family: ui-monospace, monospace; }
"#;

const SCRIPT: &str = r#"
(function () {
  function showStep(n) {
    document.querySelectorAll('section.step').forEach(function (s) { s.hidden = s.dataset.step !== String(n); });
    document.querySelectorAll('nav button').forEach(function (b) { b.classList.toggle('active', b.dataset.step === String(n)); });
  }
  function showCell(td) {
    var step = td.dataset.step, id = td.dataset.cell;
    var panel = document.getElementById('panel-' + step);
    panel.querySelectorAll('.cell-detail').forEach(function (d) { d.hidden = true; });
    panel.querySelector('.hint').hidden = true;
    var d = document.getElementById('d-' + id);
    d.hidden = false;
    document.querySelectorAll('td.sel').forEach(function (x) { x.classList.remove('sel'); });
    td.classList.add('sel');
    var sec = document.getElementById('step-' + step);
    // The cell's two ends in the picture: pods, nodes, hosts, and a Service's box.
    var ends = [td.dataset.from, td.dataset.to];
    sec.querySelectorAll('svg g[data-pod], svg g[data-node], svg g[data-host], svg g[data-service]').forEach(function (g) {
      var d = g.dataset, hit;
      if (d.pod) { hit = ends.indexOf(d.pod) >= 0; }
      else if (d.node) { hit = ends.indexOf('node/' + d.node) >= 0; }
      else if (d.host) { hit = ends.indexOf('host/' + d.host) >= 0; }
      else { hit = ends[1].indexOf('svc/' + d.service + ':') === 0; }
      g.classList.toggle('end', hit);
    });
    document.documentElement.dataset.shownCell = id;
  }
  document.addEventListener('click', function (e) {
    var td = e.target.closest('td.c');
    if (td) { showCell(td); return; }
    var b = e.target.closest('nav button');
    if (b) { showStep(b.dataset.step); }
  });
  document.addEventListener('keydown', function (e) {
    var td = e.target.closest && e.target.closest('td.c');
    if (td && (e.key === 'Enter' || e.key === ' ')) { e.preventDefault(); showCell(td); }
  });
  var args = {};
  location.hash.replace(/^#/, '').split('&').forEach(function (kv) {
    var p = kv.split('='); if (p[0]) { args[p[0]] = decodeURIComponent(p[1] || ''); }
  });
  showStep(args.step || 1);
  if (args.cell) {
    var td = document.getElementById('c-' + args.cell);
    if (td) { showStep(td.dataset.step); td.click(); }
  }
  // What the browser laid out, for the browser test: the visible picture's and grid's sizes.
  var sec = document.querySelector('section.step:not([hidden])');
  if (sec) {
    var box = sec.querySelector('svg.topology').getBBox();
    var grid = sec.querySelector('table.matrix');
    var r = grid ? grid.getBoundingClientRect() : { width: 0, height: 0 };
    document.documentElement.dataset.rendered = 'svg ' + Math.round(box.width) + 'x' + Math.round(box.height) +
      ' grid ' + Math.round(r.width) + 'x' + Math.round(r.height) +
      ' pods ' + sec.querySelectorAll('svg g.pod').length + ' cells ' + sec.querySelectorAll('td.c').length;
  }
})();
"#;

/// The cell's colour class: what happened, or `mismatch` on top when it is wrong.
fn outcome_class(c: &Cell) -> &'static str {
    if let Some(svc) = &c.service {
        let (reached, probes) = (svc.spread.reached(), svc.spread.probes());
        if reached > 0 && reached < probes {
            return "mixed";
        }
    }
    match c.measured.outcome {
        Outcome::Allowed => "allowed",
        Outcome::Rejected => "denied",
        Outcome::Refused => "refused",
        Outcome::Dropped => "dropped",
        Outcome::Error => "error",
    }
}

fn short(class: &str) -> &'static str {
    match class {
        "allowed" => "ok",
        "denied" => "rej",
        "refused" => "ref",
        "dropped" => "drop",
        "mixed" => "~",
        _ => "?",
    }
}

fn verdict_word(v: Option<Verdict>) -> &'static str {
    match v {
        Some(Verdict::Allow) => "allow",
        Some(Verdict::Deny) => "deny",
        None => "-",
    }
}

const LEGEND: &[(&str, &str)] = &[
    ("allowed", "allowed: the right pod answered"),
    (
        "denied",
        "denied by policy: a filter rejected it (ICMP admin-prohibited)",
    ),
    ("refused", "refused: delivered, nothing listens"),
    (
        "dropped",
        "dropped: no answer by the deadline (a DROP rule, a down node)",
    ),
    ("mixed", "some probes answered, some not (Service)"),
    ("error", "measurement error"),
];

/// The whole page.
pub fn render(r: &ReportData) -> String {
    let mut o = String::new();
    let title = format!("knetlab: {}", r.scenario);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        esc(&title)
    );
    let _ = writeln!(o, "<header>\n<h1>{}</h1>", esc(&r.scenario));
    let _ = writeln!(
        o,
        "<p><span class=\"verdict {}\">{}</span> {}</p>",
        if r.ok { "pass" } else { "fail" },
        if r.ok { "PASS" } else { "FAIL" },
        esc(&r.summary)
    );
    if !r.description.trim().is_empty() {
        let _ = writeln!(
            o,
            // Lessons are long: folded, so the picture and the grid are what one sees first.
            "<details class=\"description\"><summary>About this scenario</summary>\n<p>{}</p></details>",
            esc(r.description.trim())
        );
    }
    o.push_str("</header>\n<nav id=\"steps\">\n");
    for (i, s) in r.steps.iter().enumerate() {
        let _ = writeln!(
            o,
            "<button type=\"button\" data-step=\"{}\"{}>{}. {}</button>",
            i + 1,
            if s.result.ok() { "" } else { " class=\"bad\"" },
            i + 1,
            esc(&s.name)
        );
    }
    o.push_str("</nav>\n");
    for (i, s) in r.steps.iter().enumerate() {
        step(&mut o, i + 1, s);
    }
    if !r.notes.is_empty() {
        o.push_str("<h2>Notes</h2>\n<ul class=\"notes\">\n");
        for n in &r.notes {
            let _ = writeln!(o, "<li>{}</li>", esc(n));
        }
        o.push_str("</ul>\n");
    }
    let _ = write!(
        o,
        "<footer><p>Made by knetlab: real network namespaces, real CNI plugins, real packets.</p></footer>\n<script>{SCRIPT}</script>\n</body>\n</html>\n"
    );
    o
}

fn step(o: &mut String, n: usize, s: &StepData) {
    let _ = writeln!(
        o,
        "<section class=\"step\" id=\"step-{n}\" data-step=\"{n}\">\n<h2>Step {n}: {}</h2>",
        esc(&s.name)
    );
    o.push_str("<h3>What this step changes</h3>\n<ul class=\"changes\">\n");
    for c in &s.changes {
        let _ = writeln!(o, "<li>{}</li>", esc(c));
    }
    o.push_str("</ul>\n");
    if let Some(t) = &s.timing {
        let _ = writeln!(o, "<p class=\"timing\">{}</p>", esc(t));
    }
    o.push_str("<h3>Topology</h3>\n<div class=\"topo\">\n");
    o.push_str(&svg(&s.topology));
    o.push_str("</div>\n<h3>Matrix</h3>\n<p class=\"legend\">");
    for (class, words) in LEGEND {
        let _ = write!(
            o,
            "<span><i class=\"sw\" style=\"background:{}\"></i>{}</span>",
            swatch(class),
            esc(words)
        );
    }
    o.push_str("<span><i style=\"outline:3px solid #d62728;outline-offset:-3px\"></i>wrong against the expectation or the oracle</span></p>\n<div class=\"matrix-area\">\n<div class=\"grid\">\n");
    let mut by_port: BTreeMap<PortProto, Vec<(usize, &Cell)>> = BTreeMap::new();
    for (k, c) in s.result.cells.iter().enumerate() {
        by_port.entry(c.port).or_default().push((k + 1, c));
    }
    for (port, cells) in &by_port {
        let rows: BTreeSet<&Peer> = cells.iter().map(|(_, c)| &c.from).collect();
        let cols: BTreeSet<&Peer> = cells.iter().map(|(_, c)| &c.to).collect();
        let lookup: BTreeMap<(&Peer, &Peer), (usize, &Cell)> = cells
            .iter()
            .map(|(k, c)| ((&c.from, &c.to), (*k, *c)))
            .collect();
        let _ = writeln!(
            o,
            "<table class=\"matrix\">\n<caption>{}</caption>\n<thead><tr><th>from \\ to</th>",
            esc(&port.to_string())
        );
        for c in &cols {
            let _ = write!(o, "<th scope=\"col\">{}</th>", esc(&s.result.label(c)));
        }
        o.push_str("</tr></thead>\n<tbody>\n");
        for r in &rows {
            let _ = write!(o, "<tr><th scope=\"row\">{}</th>", esc(&s.result.label(r)));
            for c in &cols {
                match lookup.get(&(*r, *c)) {
                    Some((k, cell)) => {
                        let class = outcome_class(cell);
                        let wrong = cell.mismatch().is_some();
                        let _ = write!(
                            o,
                            "<td class=\"c {class}{}\" id=\"c-{n}-{k}\" data-step=\"{n}\" data-cell=\"{n}-{k}\" data-from=\"{}\" data-to=\"{}\" tabindex=\"0\" title=\"{}\">{}{}</td>",
                            if wrong { " mismatch" } else { "" },
                            esc(&cell.from.to_string()),
                            esc(&cell.to.to_string()),
                            esc(&format!(
                                "{} -> {} {}: {}{}",
                                cell.from,
                                cell.to,
                                cell.port,
                                class,
                                if wrong { " (WRONG)" } else { "" }
                            )),
                            short(class),
                            if wrong { "!" } else { "" }
                        );
                    }
                    None => o.push_str("<td class=\"none\" title=\"not probed\"></td>"),
                }
            }
            o.push_str("</tr>\n");
        }
        o.push_str("</tbody>\n</table>\n");
    }
    o.push_str("</div>\n");
    let _ = writeln!(
        o,
        "<div class=\"panel\" id=\"panel-{n}\">\n<p class=\"hint\">Click a cell to see why the oracle predicts what it does and what the probe measured.</p>"
    );
    for (k, c) in s.result.cells.iter().enumerate() {
        cell_detail(o, n, k + 1, c);
    }
    o.push_str("</div>\n</div>\n");
    for (title, text) in &s.extras {
        let _ = writeln!(
            o,
            "<h3>{}</h3>\n<details class=\"rules\" open><summary>{} line{}</summary>\n<pre>{}</pre></details>",
            esc(title),
            text.lines().count(),
            if text.lines().count() == 1 { "" } else { "s" },
            esc(text)
        );
    }
    listing(o, "Policies", "no NetworkPolicy", &s.policies);
    listing(o, "Services", "no Service", &s.services);
    o.push_str("<h3>Rules installed in the nodes</h3>\n");
    if s.rules.is_empty() && s.proxy_rules.is_empty() {
        o.push_str("<p>none recorded</p>\n");
    }
    for (node, text) in &s.rules {
        rules(o, &format!("node {node}: policy rules"), text);
    }
    for (node, text) in &s.proxy_rules {
        rules(o, &format!("node {node}: service proxy rules"), text);
    }
    o.push_str("</section>\n");
}

fn swatch(class: &str) -> &'static str {
    match class {
        "allowed" => "#2e9d4f",
        "denied" => "#e07b00",
        "refused" => "#c9a800",
        "dropped" => "#5f6670",
        "mixed" => "repeating-linear-gradient(45deg,#2e9d4f 0 3px,#5f6670 3px 6px)",
        _ => "#8c8cd9",
    }
}

fn rules(o: &mut String, summary: &str, text: &str) {
    let lines = text.lines().count();
    let _ = writeln!(
        o,
        "<details class=\"rules\"><summary>{} ({lines} line{})</summary>\n<pre>{}</pre></details>",
        esc(summary),
        if lines == 1 { "" } else { "s" },
        esc(text)
    );
}

fn listing(o: &mut String, title: &str, none: &str, items: &[(String, String)]) {
    let _ = writeln!(o, "<h3>{} ({})</h3>", esc(title), items.len());
    if items.is_empty() {
        let _ = writeln!(o, "<p>{}</p>", esc(none));
    }
    for (name, text) in items {
        let _ = writeln!(
            o,
            "<details><summary>{}</summary>\n<pre>{}</pre></details>",
            esc(name),
            esc(text)
        );
    }
}

fn cell_detail(o: &mut String, n: usize, k: usize, c: &Cell) {
    let _ = writeln!(
        o,
        "<div class=\"cell-detail\" id=\"d-{n}-{k}\" hidden>\n<h4>{} &rarr; {} {}</h4>\n<dl>",
        esc(&c.from.to_string()),
        esc(&c.to.to_string()),
        esc(&c.port.to_string())
    );
    let mut row = |dt: &str, dd: &str| {
        let _ = writeln!(o, "<dt>{}</dt><dd>{}</dd>", esc(dt), esc(dd));
    };
    row(
        "expected",
        &match (c.asserted, c.expected) {
            (true, Some(v)) => verdict_word(Some(v)).to_string(),
            (_, Some(v)) => format!("{} (not asserted)", verdict_word(Some(v))),
            (_, None) => "not asserted".to_string(),
        },
    );
    row(
        "oracle",
        &match c.oracle {
            Some(v) => verdict_word(Some(v)).to_string(),
            None if c.service.is_some() => "mixed: depends on the backend".to_string(),
            None => "-".to_string(),
        },
    );
    if let Some(reason) = &c.reason {
        row("why", reason);
    }
    let m = &c.measured;
    row("measured", m.outcome.as_str());
    if let Some(by) = &m.answered_by {
        row("answered by", by);
    }
    if let Some(ip) = c.client_ip {
        row("client address", &ip.to_string());
    }
    if let Some(seen) = m.seen_source {
        let mut s = seen.to_string();
        if c.translated_source().is_some() {
            s += " (translated: not the client's own address)";
        }
        row("source seen by the server", &s);
    }
    if !m.detail.is_empty() {
        row("detail", &m.detail);
    }
    row("time", &format!("{:.2} ms", m.elapsed_us as f64 / 1000.0));
    if let Some(svc) = &c.service {
        let backends: Vec<String> = svc
            .backends
            .iter()
            .map(|(b, v)| format!("{b} ({})", verdict_word(Some(*v))))
            .collect();
        row(
            "backends",
            &if backends.is_empty() {
                "none".to_string()
            } else {
                backends.join(", ")
            },
        );
        let mut spread: Vec<String> = svc
            .spread
            .answered
            .iter()
            .map(|(who, k)| format!("{who}: {k}"))
            .collect();
        spread.extend(
            svc.spread
                .unanswered
                .iter()
                .map(|(outcome, k)| format!("{}: {k}", outcome.as_str())),
        );
        row(
            "probes",
            &format!("{} ({})", svc.spread.probes(), spread.join(", ")),
        );
    }
    o.push_str("</dl>\n");
    if let Some(problem) = c.mismatch() {
        let _ = writeln!(o, "<p class=\"problem\">WRONG: {}</p>", esc(&problem));
    }
    o.push_str("</div>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::NetworkMode;
    use crate::matrix::{Measurement, StepResult};
    use crate::objects::PodRef;
    use crate::report::topology::{HostView, NodeView, PodView, ServiceView, Topology};

    fn cell(
        from: &str,
        to: &str,
        outcome: Outcome,
        oracle: Verdict,
        expected: Option<Verdict>,
    ) -> Cell {
        Cell {
            from: from.parse().unwrap(),
            to: to.parse().unwrap(),
            port: "TCP/80".parse().unwrap(),
            client_ip: Some("10.244.1.2".parse().unwrap()),
            expected,
            asserted: expected.is_some(),
            measured: Measurement {
                outcome,
                answered_by: (outcome == Outcome::Allowed).then(|| to.to_string()),
                seen_source: (outcome == Outcome::Allowed).then(|| "10.244.1.2".parse().unwrap()),
                detail: if outcome == Outcome::Rejected {
                    "ICMP admin-prohibited from 10.244.2.1".into()
                } else {
                    String::new()
                },
                elapsed_us: 420,
            },
            oracle: Some(oracle),
            reason: Some(format!("<policy> y/deny-all selects {to} & says \"no\"")),
            service: None,
        }
    }

    /// A fixture with every kind of thing the page draws, including text to escape.
    fn fixture() -> ReportData {
        let pod = |ns: &str, name: &str, ip: &str, app: &str| PodView {
            pod: PodRef::new(ns, name),
            ip: Some(ip.parse().unwrap()),
            labels: [("app".to_string(), app.to_string())].into(),
        };
        let topology = Topology {
            network: NetworkMode::Vxlan,
            fabric_bridge: "fabric0".into(),
            underlay: crate::plan::UNDERLAY,
            router: Some("192.168.200.1".parse().unwrap()),
            hosts: vec![HostView {
                name: "admin-pc".into(),
                address: "203.0.113.10".parse().unwrap(),
            }],
            nodes: vec![
                NodeView {
                    name: "n1".into(),
                    underlay_ip: "192.168.200.11".parse().unwrap(),
                    bridge: "cni0".into(),
                    gateway: "10.244.1.1".parse().unwrap(),
                    pod_subnet: "10.244.1.0/24".parse().unwrap(),
                    vtep: Some(("vxlan.1".into(), "10.244.1.0".parse().unwrap())),
                    down: false,
                    pods: vec![pod("x", "a", "10.244.1.2", "<script>alert(1)</script>")],
                },
                NodeView {
                    name: "n2".into(),
                    underlay_ip: "192.168.200.12".parse().unwrap(),
                    bridge: "cni0".into(),
                    gateway: "10.244.2.1".parse().unwrap(),
                    pod_subnet: "10.244.2.0/24".parse().unwrap(),
                    vtep: Some(("vxlan.1".into(), "10.244.2.0".parse().unwrap())),
                    down: true,
                    pods: vec![pod("y", "b", "10.244.2.2", "web")],
                },
            ],
            services: vec![ServiceView {
                namespace: "y".into(),
                name: "web".into(),
                kind: "ClusterIP".into(),
                cluster_ip: Some("10.96.0.10".parse().unwrap()),
                ports: vec!["80/TCP->8080".into()],
                backends: vec![PodRef::new("y", "b")],
                other_backends: vec![],
            }],
            tunnels: vec![("n1".into(), "n2".into())],
        };
        let cells = vec![
            cell(
                "x/a",
                "y/b",
                Outcome::Allowed,
                Verdict::Allow,
                Some(Verdict::Allow),
            ),
            cell(
                "y/b",
                "x/a",
                Outcome::Rejected,
                Verdict::Deny,
                Some(Verdict::Deny),
            ),
            cell("x/a", "x/a", Outcome::Allowed, Verdict::Allow, None),
            cell(
                "y/b",
                "y/b",
                Outcome::Dropped,
                Verdict::Allow,
                Some(Verdict::Allow),
            ),
        ];
        ReportData {
            scenario: "fixture & <friends>".into(),
            summary: "A fixture for the report's snapshot".into(),
            description: "Two nodes, one tunnel.".into(),
            ok: false,
            steps: vec![StepData {
                name: "first <step>".into(),
                changes: vec!["apply Pod x/a (labels app=web)".into()],
                topology,
                result: StepResult {
                    name: "first <step>".into(),
                    cells,
                    ..Default::default()
                },
                policies: vec![("y/deny-all".into(), "{\n  \"podSelector\": {}\n}".into())],
                services: vec![],
                rules: vec![("n1".into(), "-A KNETLAB-INGRESS -j REJECT\n".into())],
                proxy_rules: vec![],
                timing: Some("enforced 3.2 ms after the change".into()),
                extras: vec![("Trace of one probe".into(), "1. n1: TCP SYN <x/a>".into())],
            }],
            notes: vec!["a note with <angle> brackets".into()],
        }
    }

    #[test]
    fn the_page_is_deterministic_and_self_contained() {
        let a = render(&fixture());
        assert_eq!(a, render(&fixture()));
        // No network: nothing is fetched from anywhere.
        for bad in ["http://", "https://", "src=", "<link", "@import"] {
            let hits: Vec<&str> = a
                .lines()
                .filter(|l| l.contains(bad) && !l.contains("xmlns=\"http://www.w3.org/2000/svg\""))
                .collect();
            assert!(hits.is_empty(), "{bad}: {hits:?}");
        }
        insta::assert_snapshot!(a);
    }

    #[test]
    fn text_is_escaped() {
        let page = render(&fixture());
        assert!(!page.contains("<script>alert(1)"));
        assert!(page.contains("app=&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("fixture &amp; &lt;friends&gt;"));
        assert!(page.contains("&lt;policy&gt; y/deny-all selects y/b &amp; says &quot;no&quot;"));
        // Exactly one script element: ours.
        assert_eq!(page.matches("<script>").count(), 1);
    }

    #[test]
    fn cells_are_coloured_by_outcome_and_wrong_cells_marked() {
        let page = render(&fixture());
        assert!(page.contains("class=\"c allowed\" id=\"c-1-1\""));
        assert!(page.contains("class=\"c denied\" id=\"c-1-2\""));
        // Expected allow, dropped: wrong.
        assert!(page.contains("class=\"c dropped mismatch\" id=\"c-1-4\""));
        assert!(page.contains("WRONG: expected allow, measured dropped"));
        assert!(page.contains("id=\"d-1-2\" hidden"));
        assert!(page.contains("ICMP admin-prohibited from 10.244.2.1"));
    }

    #[test]
    fn the_picture_shows_tunnels_services_and_down_nodes() {
        let t = &fixture().steps[0].topology;
        let s = svg(t);
        assert_eq!(s.matches("class=\"tunnel\"").count(), 1);
        assert!(s.contains("vxlan.1 10.244.2.0 (VTEP)"));
        assert!(s.contains("class=\"node down\" data-node=\"n2\""));
        assert!(s.contains("VIP 10.96.0.10  80/TCP-&gt;8080"));
        assert!(s.contains("host/admin-pc"));
        assert_eq!(s.matches("class=\"backend\"").count(), 1);
        let d = crate::report::dot::dot("fixture", t);
        assert!(d.contains("\"node/n1\" -> \"node/n2\" [label=\"VXLAN VNI 1 UDP 4789\""));
        assert!(d.contains("\"svc/y/web\" -> \"y/b\""));
        assert!(d.contains("fabric -> \"node/n2\" [label=\"eth0\", style=dashed, color=red]"));
        insta::assert_snapshot!(d);
    }
}
