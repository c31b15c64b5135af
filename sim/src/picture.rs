//! Pictures of a simulator trace, as self-contained SVG text.
//!
//! What it does: reads the JSON-lines trace written by [`crate::trace`] (already parsed, see
//! [`parse_trace`]) and draws a space-time diagram of a time window ([`space_time_svg`]) and a
//! decided-height/throughput plot of the whole run ([`height_plot_svg`]). What it does not do:
//! read or write files, read the clock, or iterate hash maps; the same events give the same
//! bytes. Unknown event kinds and missing fields are skipped rather than rejected, so a newer
//! trace still draws.
//!
//! Elements carry `class` attributes so that tools and tests can find them: `lane` (and
//! `lane byzantine`), `msg <kind>`, `decided`, `timeout`, `partition`, `crashed`, `capped`,
//! `height-line` (and `height-line byzantine`), `throughput`, `heal`.

use serde_json::Value;
use std::fmt::Write as _;

/// A window of virtual time, in milliseconds, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub from_ms: u64,
    pub to_ms: u64,
}

/// Most message arrows drawn in one space-time diagram; beyond this the picture is unreadable
/// and the file huge. The earliest deliveries are kept and the picture says so.
pub const MAX_ARROWS: usize = 5_000;

const WIDTH: f64 = 1200.0;
const LEFT: f64 = 150.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 50.0;
const LANE_H: f64 = 60.0;
const NODE_COLOURS: [&str; 10] = [
    "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#ff7f0e", "#393b79",
];
const BYZANTINE_COLOUR: &str = "#d62728";
/// Message kinds with their own colour; every other kind is drawn as `other`.
const KIND_COLOURS: [(&str, &str); 4] = [
    ("proposal", "#1f77b4"),
    ("prevote", "#2ca02c"),
    ("precommit", "#ff7f0e"),
    ("other", "#888888"),
];

/// Parses trace lines (skips blank lines; error names the line number and what is wrong).
pub fn parse_trace(text: &str) -> Result<Vec<Value>, String> {
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).map_err(|e| format!("trace line {line_no}: not valid JSON ({e})"))?;
        if v.get("ev").and_then(Value::as_str).is_none() {
            return Err(format!(
                "trace line {line_no}: expected a JSON object with a string field `ev` \
                 (start, deliver, timeout, decided, fault)"
            ));
        }
        events.push(v);
    }
    Ok(events)
}

// ---------------------------------------------------------------------------------------------
// Reading events

fn ev(v: &Value) -> &str {
    v.get("ev").and_then(Value::as_str).unwrap_or("")
}

fn num(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

fn time(v: &Value) -> u64 {
    num(v, "t").unwrap_or(0)
}

/// One lane of the picture: a node and, if it is Byzantine, how.
#[derive(Clone, Debug)]
struct Lane {
    node: u64,
    byzantine: Option<String>,
}

/// Nodes from the `start` line; without one, every node index mentioned anywhere, honest.
fn lanes(events: &[Value]) -> Vec<Lane> {
    if let Some(start) = events.iter().find(|e| ev(e) == "start") {
        if let Some(nodes) = start.get("nodes").and_then(Value::as_array) {
            let mut out: Vec<Lane> = nodes
                .iter()
                .filter_map(|n| {
                    let node = num(n, "node")?;
                    let byzantine = match n.get("byzantine") {
                        None | Some(Value::Null) => None,
                        Some(Value::String(s)) => Some(s.clone()),
                        Some(other) => Some(other.to_string()),
                    };
                    Some(Lane { node, byzantine })
                })
                .collect();
            out.sort_by_key(|l| l.node);
            out.dedup_by_key(|l| l.node);
            return out;
        }
    }
    let mut nodes: Vec<u64> = events
        .iter()
        .flat_map(|e| ["from", "to", "node"].map(|k| num(e, k)))
        .flatten()
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes.into_iter().map(|node| Lane { node, byzantine: None }).collect()
}

/// A stretch of time `[from_ms, to_ms)`; `to_ms` is `None` while it has not ended.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Span {
    from_ms: u64,
    to_ms: Option<u64>,
    label: String,
}

/// Network faults (partition, one-way, isolate) from their start to the next heal. Several
/// faults before one heal give overlapping spans, all ended by it.
fn partition_spans(events: &[Value]) -> Vec<Span> {
    let mut spans: Vec<Span> = Vec::new();
    for e in events.iter().filter(|e| ev(e) == "fault") {
        let Some(fault) = e.get("fault") else {
            continue;
        };
        let kind = fault.get("kind").and_then(Value::as_str).unwrap_or("");
        let t = time(e);
        match kind {
            "partition" | "one_way" | "isolate" => spans.push(Span {
                from_ms: t,
                to_ms: None,
                label: fault_label(kind, fault),
            }),
            "heal" => {
                for s in spans.iter_mut().filter(|s| s.to_ms.is_none()) {
                    s.to_ms = Some(t);
                }
            }
            _ => {}
        }
    }
    spans
}

fn fault_label(kind: &str, fault: &Value) -> String {
    let compact = |k: &str| fault.get(k).map(Value::to_string).unwrap_or_default();
    match kind {
        "partition" => format!("partition {}", compact("groups")),
        "one_way" => format!("one-way {} \u{2192} {}", compact("from"), compact("to")),
        "isolate" => format!("isolate node {}", compact("node")),
        _ => kind.to_string(),
    }
}

/// Per node, the stretches between a crash and the next restart, in node order.
fn crash_spans(events: &[Value]) -> Vec<(u64, Span)> {
    let mut spans: Vec<(u64, Span)> = Vec::new();
    for e in events.iter().filter(|e| ev(e) == "fault") {
        let Some(fault) = e.get("fault") else {
            continue;
        };
        let Some(node) = num(fault, "node") else {
            continue;
        };
        let t = time(e);
        match fault.get("kind").and_then(Value::as_str) {
            Some("crash") => spans.push((
                node,
                Span {
                    from_ms: t,
                    to_ms: None,
                    label: format!("node {node} crashed"),
                },
            )),
            Some("restart") => {
                for (_, s) in spans.iter_mut().filter(|(n, s)| *n == node && s.to_ms.is_none()) {
                    s.to_ms = Some(t);
                }
            }
            _ => {}
        }
    }
    spans
}

fn kind_group(kind: &str) -> &'static str {
    match kind {
        "proposal" => "proposal",
        "prevote" => "prevote",
        "precommit" => "precommit",
        _ => "other",
    }
}

fn kind_colour(group: &str) -> &'static str {
    KIND_COLOURS
        .iter()
        .find(|(k, _)| *k == group)
        .map_or("#888888", |(_, c)| c)
}

/// A kind as a class name: only `[a-z0-9_-]`, so a strange kind cannot break the attribute.
fn class_token(kind: &str) -> String {
    let s: String = kind
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    if s.is_empty() {
        "unknown".to_string()
    } else {
        s
    }
}

/// Escapes text for SVG content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// A step of 1, 2 or 5 times a power of ten giving at most about `max_ticks` ticks over `span`.
fn nice_step(span: f64, max_ticks: f64) -> f64 {
    let raw = (span / max_ticks).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// Linear map from virtual ms to x pixels.
#[derive(Clone, Copy)]
struct XScale {
    from_ms: u64,
    to_ms: u64,
}

impl XScale {
    fn x(&self, t_ms: u64) -> f64 {
        let span = (self.to_ms - self.from_ms).max(1) as f64;
        let t = t_ms.clamp(self.from_ms, self.to_ms) - self.from_ms;
        LEFT + (WIDTH - LEFT - RIGHT) * t as f64 / span
    }
}

/// Time axis with ticks and labels along `y`, from `top` down.
fn time_axis(out: &mut String, xs: XScale, top: f64, y: f64) {
    let _ = writeln!(
        out,
        r##"<g class="axis"><line x1="{LEFT}" y1="{y}" x2="{:.1}" y2="{y}" stroke="#333"/>"##,
        WIDTH - RIGHT
    );
    let step = nice_step((xs.to_ms - xs.from_ms).max(1) as f64, 12.0).max(1.0) as u64;
    let mut t = xs.from_ms.div_ceil(step) * step;
    while t <= xs.to_ms {
        let x = xs.x(t);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{y}" stroke="#eee"/><line x1="{x:.1}" y1="{y}" x2="{x:.1}" y2="{:.1}" stroke="#333"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{t}</text>"##,
            y + 5.0,
            y + 18.0
        );
        t += step;
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">virtual time (ms)</text></g>"#,
        LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
        y + 34.0
    );
}

fn svg_open(out: &mut String, height: f64, title: &str) {
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, "<title>{}</title>", esc(title));
    let _ = writeln!(
        out,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{height:.0}" fill="white"/>"#
    );
}

// ---------------------------------------------------------------------------------------------
// Space-time diagram

/// Space-time diagram of a window: one lane per node, every delivery an arrow from (sent,
/// sender) to (delivered, receiver). A delivery is drawn when its delivery time is inside the
/// window; a send time before the window is clamped to its left edge.
pub fn space_time_svg(events: &[Value], window: &Window) -> String {
    let xs = XScale {
        from_ms: window.from_ms,
        to_ms: window.to_ms.max(window.from_ms),
    };
    let lanes = lanes(events);
    let lanes_bottom = TOP + LANE_H * lanes.len() as f64;
    let height = lanes_bottom + 90.0;
    let mut out = String::new();
    svg_open(
        &mut out,
        height,
        &format!("tendr space-time diagram, {}..{} ms", window.from_ms, window.to_ms),
    );
    defs(&mut out);
    draw_lanes(&mut out, &lanes, xs);
    draw_spans(&mut out, events, &lanes, xs);
    time_axis(&mut out, xs, TOP, lanes_bottom + 5.0);
    draw_timeouts(&mut out, events, &lanes, xs);
    let (drawn, total) = draw_arrows(&mut out, events, &lanes, xs);
    draw_decisions(&mut out, events, &lanes, xs);
    space_time_header(&mut out, window, drawn, total);
    out.push_str("</svg>\n");
    out
}

fn defs(out: &mut String) {
    out.push_str("<defs>\n");
    for (kind, colour) in KIND_COLOURS {
        let _ = writeln!(
            out,
            r#"<marker id="arrow-{kind}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>"#
        );
    }
    let _ = writeln!(
        out,
        r##"<pattern id="hatch" width="8" height="8" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="8" height="8" fill="#fdecec"/><line x1="0" y1="0" x2="0" y2="8" stroke="#f4b6b6" stroke-width="3"/></pattern>"##
    );
    out.push_str("</defs>\n");
}

fn lane_y(lanes: &[Lane], node: u64) -> Option<f64> {
    let i = lanes.iter().position(|l| l.node == node)?;
    Some(TOP + LANE_H * i as f64 + LANE_H / 2.0)
}

fn draw_lanes(out: &mut String, lanes: &[Lane], xs: XScale) {
    let plot_w = xs.x(xs.to_ms) - LEFT;
    for (i, lane) in lanes.iter().enumerate() {
        let y = TOP + LANE_H * i as f64;
        let (class, fill, colour, how) = match &lane.byzantine {
            None => ("lane", "#f7f7f7", "#222", String::new()),
            Some(how) => (
                "lane byzantine",
                "url(#hatch)",
                BYZANTINE_COLOUR,
                // A second, smaller line: long behaviour names would not fit left of the lane.
                format!(
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="{BYZANTINE_COLOUR}" font-size="10">byzantine: {}</text>"#,
                    LEFT - 8.0,
                    y + LANE_H / 2.0 + 17.0,
                    esc(how)
                ),
            ),
        };
        let _ = writeln!(
            out,
            r##"<g class="{class}" data-node="{node}"><rect x="{LEFT}" y="{y:.1}" width="{plot_w:.1}" height="{h:.1}" fill="{fill}" stroke="#ddd"/><line x1="{LEFT}" y1="{mid:.1}" x2="{x2:.1}" y2="{mid:.1}" stroke="{colour}" stroke-width="1"/><text x="{tx}" y="{ty:.1}" text-anchor="end" fill="{colour}" font-weight="bold">node {node}</text>{how}</g>"##,
            node = lane.node,
            h = LANE_H - 4.0,
            mid = y + LANE_H / 2.0,
            x2 = LEFT + plot_w,
            tx = LEFT - 8.0,
            ty = y + LANE_H / 2.0 + 4.0,
        );
    }
}

/// Partition bands across all lanes and grey crash segments on a lane, clipped to the window.
fn draw_spans(out: &mut String, events: &[Value], lanes: &[Lane], xs: XScale) {
    let clip = |s: &Span| -> Option<(f64, f64)> {
        let end = s.to_ms.unwrap_or(xs.to_ms);
        if end < xs.from_ms || s.from_ms > xs.to_ms {
            return None;
        }
        let (x1, x2) = (xs.x(s.from_ms), xs.x(end));
        Some((x1, (x2 - x1).max(1.0)))
    };
    let lanes_h = LANE_H * lanes.len() as f64;
    for s in partition_spans(events) {
        if let Some((x, w)) = clip(&s) {
            let _ = writeln!(
                out,
                r##"<g class="partition"><rect x="{x:.1}" y="{TOP}" width="{w:.1}" height="{lanes_h:.1}" fill="#ffd54f" fill-opacity="0.25" stroke="#e0a800" stroke-dasharray="4 3"/><text x="{tx:.1}" y="{ty:.1}" fill="#8a6d00">{label}</text></g>"##,
                tx = x + 3.0,
                ty = TOP - 4.0,
                label = esc(&s.label),
            );
        }
    }
    for (node, s) in crash_spans(events) {
        let (Some(mid), Some((x, w))) = (lane_y(lanes, node), clip(&s)) else {
            continue;
        };
        let _ = writeln!(
            out,
            r##"<rect class="crashed" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="#999" fill-opacity="0.6"><title>{label}</title></rect>"##,
            y = mid - LANE_H / 2.0 + 2.0,
            h = LANE_H - 8.0,
            label = esc(&s.label),
        );
    }
}

fn in_window(xs: XScale, t: u64) -> bool {
    xs.from_ms <= t && t <= xs.to_ms
}

fn draw_timeouts(out: &mut String, events: &[Value], lanes: &[Lane], xs: XScale) {
    for e in events.iter().filter(|e| ev(e) == "timeout") {
        let t = time(e);
        let (true, Some(node)) = (in_window(xs, t), num(e, "node")) else {
            continue;
        };
        let Some(mid) = lane_y(lanes, node) else {
            continue;
        };
        let kind = e.get("kind").and_then(Value::as_str).unwrap_or("?");
        let x = xs.x(t);
        let _ = writeln!(
            out,
            r##"<line class="timeout" x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#555" stroke-width="1.5"><title>timeout {} h={} r={} at {t} ms</title></line>"##,
            mid - 8.0,
            mid + 8.0,
            esc(kind),
            num(e, "h").unwrap_or(0),
            num(e, "r").unwrap_or(0),
        );
    }
}

/// Draws the earliest [`MAX_ARROWS`] deliveries in the window; returns (drawn, in window).
fn draw_arrows(out: &mut String, events: &[Value], lanes: &[Lane], xs: XScale) -> (usize, usize) {
    let mut deliveries: Vec<(u64, usize, &Value)> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| ev(e) == "deliver" && in_window(xs, time(e)))
        .map(|(i, e)| (time(e), i, e))
        .collect();
    // Stable by (delivery time, trace position): the cap keeps the same arrows every time.
    deliveries.sort_by_key(|(t, i, _)| (*t, *i));
    let total = deliveries.len();
    let mut drawn = 0;
    for (t, _, e) in deliveries.into_iter().take(MAX_ARROWS) {
        let (Some(from), Some(to)) = (num(e, "from"), num(e, "to")) else {
            continue;
        };
        let (Some(y1), Some(y2)) = (lane_y(lanes, from), lane_y(lanes, to)) else {
            continue;
        };
        let kind = e.get("kind").and_then(Value::as_str).unwrap_or("unknown");
        let group = kind_group(kind);
        let sent = num(e, "sent").unwrap_or(t).min(t);
        let _ = writeln!(
            out,
            r#"<line class="msg {class}" x1="{:.1}" y1="{y1:.1}" x2="{:.1}" y2="{y2:.1}" stroke="{colour}" stroke-width="1" stroke-opacity="0.8" marker-end="url(#arrow-{group})"><title>{kind} h={h} r={r} {from}&#8594;{to} sent {sent} ms, delivered {t} ms</title></line>"#,
            xs.x(sent),
            xs.x(t),
            class = class_token(kind),
            colour = kind_colour(group),
            kind = esc(kind),
            h = num(e, "h").unwrap_or(0),
            r = num(e, "r").unwrap_or(0),
        );
        drawn += 1;
    }
    (drawn, total)
}

fn draw_decisions(out: &mut String, events: &[Value], lanes: &[Lane], xs: XScale) {
    for e in events.iter().filter(|e| ev(e) == "decided") {
        let t = time(e);
        let (true, Some(node)) = (in_window(xs, t), num(e, "node")) else {
            continue;
        };
        let Some(y) = lane_y(lanes, node) else {
            continue;
        };
        let x = xs.x(t);
        let h = num(e, "h").unwrap_or(0);
        let value = e.get("value").and_then(Value::as_str).unwrap_or("");
        let _ = writeln!(
            out,
            r##"<g class="decided"><polygon points="{x:.1},{:.1} {:.1},{y:.1} {x:.1},{:.1} {:.1},{y:.1}" fill="#000" stroke="white"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="10">h={h}</text><title>node {node} decided h={h} at {t} ms: {}</title></g>"##,
            y - 7.0,
            x + 7.0,
            y + 7.0,
            x - 7.0,
            y - 10.0,
            esc(value),
        );
    }
}

fn space_time_header(out: &mut String, window: &Window, drawn: usize, total: usize) {
    let _ = writeln!(
        out,
        r#"<text x="10" y="18" font-size="14" font-weight="bold">space-time {}..{} ms: {total} deliveries</text>"#,
        window.from_ms, window.to_ms
    );
    if total > MAX_ARROWS {
        let _ = writeln!(
            out,
            r##"<text class="capped" x="10" y="36" fill="{BYZANTINE_COLOUR}">capped: showing the earliest {drawn} of {total} messages (at most {MAX_ARROWS}); narrow the window to see the rest</text>"##
        );
    }
    let mut x = WIDTH - RIGHT - 440.0;
    for (kind, colour) in KIND_COLOURS {
        let _ = writeln!(
            out,
            r#"<g class="legend"><line x1="{x:.1}" y1="14" x2="{:.1}" y2="14" stroke="{colour}" stroke-width="2" marker-end="url(#arrow-{kind})"/><text x="{:.1}" y="18">{kind}</text></g>"#,
            x + 24.0,
            x + 30.0
        );
        x += 100.0;
    }
}

// ---------------------------------------------------------------------------------------------
// Height plot

const PLOT_TOP: f64 = 50.0;
const PLOT_H: f64 = 300.0;
const THRU_TOP: f64 = PLOT_TOP + PLOT_H + 70.0;
const THRU_H: f64 = 180.0;

/// Decided height over virtual time, one step line per node (Byzantine ones red and dashed),
/// above a panel with throughput (heights decided per virtual second, bucketed); network faults
/// are shaded bands, heals dashed lines.
pub fn height_plot_svg(events: &[Value]) -> String {
    let lanes = lanes(events);
    let t_max = events.iter().map(time).max().unwrap_or(0).max(1);
    let xs = XScale {
        from_ms: 0,
        to_ms: t_max,
    };
    let h_max = decisions(events).map(|(_, _, h)| h).max().unwrap_or(0).max(1);
    let mut legend = String::new();
    // The legend wraps onto as many rows as it needs; the panels move down by the extra rows.
    let shift = legend_rows(&mut legend, &lanes) as f64 * LEGEND_ROW_H - LEGEND_ROW_H;
    let height = THRU_TOP + THRU_H + 60.0 + shift;
    let mut out = String::new();
    svg_open(&mut out, height, "tendr decided height and throughput");
    let _ = writeln!(
        out,
        r#"<text x="10" y="20" font-size="14" font-weight="bold">decided height per node over virtual time</text>"#
    );
    out.push_str(&legend);
    let _ = writeln!(out, r#"<g class="panels" transform="translate(0 {shift:.1})">"#);
    plot_fault_marks(&mut out, events, xs, PLOT_TOP, PLOT_H);
    plot_fault_marks(&mut out, events, xs, THRU_TOP, THRU_H);
    y_axis(&mut out, PLOT_TOP, PLOT_H, h_max as f64, "height");
    time_axis(&mut out, xs, PLOT_TOP, PLOT_TOP + PLOT_H);
    height_lines(&mut out, events, &lanes, xs, h_max);
    throughput_panel(&mut out, events, &lanes, xs);
    out.push_str("</g>\n</svg>\n");
    out
}

/// Height of one legend row, and a generous width per character of its 12 px text.
const LEGEND_ROW_H: f64 = 16.0;
const LEGEND_CHAR_W: f64 = 7.5;

/// The legend of [`height_plot_svg`]: one entry per node, laid out left to right by the width
/// of its label and wrapped before the right edge, so no two entries overlap. Returns the
/// number of rows (at least one).
fn legend_rows(out: &mut String, lanes: &[Lane]) -> usize {
    let (mut x, mut row) = (LEFT, 0usize);
    for (i, lane) in lanes.iter().enumerate() {
        let (colour, dash) = lane_style(i, lane);
        let label = match &lane.byzantine {
            None => format!("node {}", lane.node),
            Some(how) => format!("node {} (byzantine: {how})", lane.node),
        };
        let w = 24.0 + LEGEND_CHAR_W * label.chars().count() as f64 + 16.0;
        if x > LEFT && x + w > WIDTH - RIGHT {
            (x, row) = (LEFT, row + 1);
        }
        let y = 34.0 + LEGEND_ROW_H * row as f64;
        let _ = writeln!(
            out,
            r#"<g class="legend"><line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{colour}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}">{}</text></g>"#,
            x + 20.0,
            x + 24.0,
            y + 4.0,
            esc(&label),
        );
        x += w;
    }
    row + 1
}

/// Colour and dash of node lane `i` (Byzantine ones red and dashed).
fn lane_style(i: usize, lane: &Lane) -> (&'static str, &'static str) {
    match lane.byzantine {
        None => (NODE_COLOURS[i % NODE_COLOURS.len()], ""),
        Some(_) => (BYZANTINE_COLOUR, r#" stroke-dasharray="6 4""#),
    }
}

/// `(t, node, height)` of every decision, in trace order.
fn decisions(events: &[Value]) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
    events
        .iter()
        .filter(|e| ev(e) == "decided")
        .filter_map(|e| Some((time(e), num(e, "node")?, num(e, "h")?)))
}

fn y_axis(out: &mut String, top: f64, h: f64, max: f64, label: &str) {
    let bottom = top + h;
    let _ = writeln!(
        out,
        r##"<g class="axis"><line x1="{LEFT}" y1="{top}" x2="{LEFT}" y2="{bottom}" stroke="#333"/>"##
    );
    let step = nice_step(max, 6.0);
    let mut v = 0.0;
    while v <= max + 1e-9 {
        let y = bottom - h * v / max;
        let _ = writeln!(
            out,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{LEFT}" y2="{y:.1}" stroke="#333"/><line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT - 5.0,
            WIDTH - RIGHT,
            LEFT - 8.0,
            y + 4.0,
            fmt_num(v)
        );
        v += step;
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" transform="rotate(-90 {:.1} {:.1})">{}</text></g>"#,
        LEFT - 50.0,
        top + h / 2.0,
        LEFT - 50.0,
        top + h / 2.0,
        esc(label)
    );
}

/// Whole numbers without a fraction, others with one decimal.
fn fmt_num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.1}")
    }
}

fn plot_fault_marks(out: &mut String, events: &[Value], xs: XScale, top: f64, h: f64) {
    for s in partition_spans(events) {
        let x1 = xs.x(s.from_ms);
        let x2 = xs.x(s.to_ms.unwrap_or(xs.to_ms));
        let _ = writeln!(
            out,
            r##"<rect class="partition" x="{x1:.1}" y="{top}" width="{:.1}" height="{h}" fill="#ffd54f" fill-opacity="0.3"><title>{}</title></rect>"##,
            (x2 - x1).max(1.0),
            esc(&s.label)
        );
    }
    for e in events.iter().filter(|e| ev(e) == "fault") {
        let kind = e.pointer("/fault/kind").and_then(Value::as_str);
        if kind != Some("heal") {
            continue;
        }
        let x = xs.x(time(e));
        let _ = writeln!(
            out,
            r##"<line class="heal" x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#2e7d32" stroke-dasharray="5 3"><title>heal at {} ms</title></line>"##,
            top + h,
            time(e)
        );
    }
}

fn height_lines(out: &mut String, events: &[Value], lanes: &[Lane], xs: XScale, h_max: u64) {
    let y = |h: u64| PLOT_TOP + PLOT_H - PLOT_H * h as f64 / h_max as f64;
    for (i, lane) in lanes.iter().enumerate() {
        let mut points = format!("{:.1},{:.1}", xs.x(0), y(0));
        let mut height = 0;
        for (t, _, h) in decisions(events).filter(|(_, n, _)| *n == lane.node) {
            let x = xs.x(t);
            let _ = write!(points, " {x:.1},{:.1} {x:.1},{:.1}", y(height), y(h));
            height = h;
        }
        let _ = write!(points, " {:.1},{:.1}", xs.x(xs.to_ms), y(height));
        let (colour, dash) = lane_style(i, lane);
        let class = match lane.byzantine {
            None => "height-line",
            Some(_) => "height-line byzantine",
        };
        let _ = writeln!(
            out,
            r#"<polyline class="{class}" data-node="{}" points="{points}" fill="none" stroke="{colour}" stroke-width="1.5"{dash}/>"#,
            lane.node
        );
    }
}

/// Bars of heights decided per virtual second. A height counts once, when the first honest
/// node decides it (any node if none is honest), so the bars do not grow with the node count.
fn throughput_panel(out: &mut String, events: &[Value], lanes: &[Lane], xs: XScale) {
    let honest = |n: u64| lanes.iter().any(|l| l.node == n && l.byzantine.is_none());
    let any_honest = lanes.iter().any(|l| l.byzantine.is_none());
    let mut first: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
    for (t, _, h) in decisions(events).filter(|(_, n, _)| !any_honest || honest(*n)) {
        let e = first.entry(h).or_insert(t);
        *e = (*e).min(t);
    }
    let span = (xs.to_ms - xs.from_ms).max(1);
    let bucket_ms = (nice_step(span as f64, 60.0) as u64).max(1000);
    let buckets = span.div_ceil(bucket_ms).max(1) as usize;
    let mut counts = vec![0u64; buckets];
    for t in first.values() {
        let i = ((t - xs.from_ms) / bucket_ms) as usize;
        counts[i.min(buckets - 1)] += 1;
    }
    // The last bucket ends with the run and may cover only part of `bucket_ms`: its rate is
    // over the time it covers.
    let covered = |i: usize| (xs.to_ms - (xs.from_ms + i as u64 * bucket_ms)).clamp(1, bucket_ms);
    let rate = |i: usize| counts[i] as f64 * 1000.0 / covered(i) as f64;
    let max_rate = (0..buckets).map(rate).fold(1.0, f64::max);
    let _ = writeln!(
        out,
        r#"<text x="10" y="{:.1}" font-size="14" font-weight="bold">throughput: heights decided per virtual second ({bucket_ms} ms buckets)</text>"#,
        THRU_TOP - 25.0
    );
    y_axis(out, THRU_TOP, THRU_H, max_rate, "heights/s");
    time_axis(out, xs, THRU_TOP, THRU_TOP + THRU_H);
    for (i, c) in counts.iter().enumerate() {
        let t0 = xs.from_ms + i as u64 * bucket_ms;
        let t1 = t0 + covered(i);
        let (x1, x2) = (xs.x(t0), xs.x(t1));
        let bar_h = THRU_H * rate(i) / max_rate;
        let _ = writeln!(
            out,
            r##"<rect class="throughput" x="{x1:.1}" y="{:.1}" width="{:.1}" height="{bar_h:.1}" fill="#4e79a7"><title>{t0}..{t1} ms: {c} heights</title></rect>"##,
            THRU_TOP + THRU_H - bar_h,
            (x2 - x1 - 1.0).max(0.5),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four nodes, node 3 Byzantine; window 0..=100 holds five deliveries, two decisions, one
    /// timeout, a partition (50..80) and a crash of node 2 (60..90); the rest is later.
    const HAND_TRACE: &str = r#"
{"ev":"start","t":0,"nodes":[{"node":0,"validator":0,"byzantine":null},{"node":1,"validator":1,"byzantine":null},{"node":2,"validator":2,"byzantine":null},{"node":3,"validator":3,"byzantine":"equivocate"}]}
{"ev":"deliver","t":10,"sent":0,"from":1,"to":0,"kind":"proposal","h":1,"r":0,"value":null}
{"ev":"deliver","t":12,"sent":2,"from":0,"to":1,"kind":"prevote","h":1,"r":0,"value":"ab"}
{"ev":"deliver","t":14,"sent":3,"from":1,"to":2,"kind":"prevote","h":1,"r":0,"value":"ab"}
{"ev":"deliver","t":20,"sent":15,"from":2,"to":3,"kind":"precommit","h":1,"r":0,"value":"ab"}
{"ev":"deliver","t":25,"sent":20,"from":3,"to":0,"kind":"tx","h":0,"r":0,"value":null}
{"ev":"decided","t":30,"node":0,"h":1,"value":"ab"}
{"ev":"decided","t":32,"node":1,"h":1,"value":"ab"}
{"ev":"timeout","t":40,"node":2,"h":1,"r":0,"kind":"Propose"}

{"ev":"fault","t":50,"fault":{"kind":"partition","groups":[[0,1],[2,3]]}}
{"ev":"fault","t":60,"fault":{"kind":"crash","node":2}}
{"ev":"fault","t":80,"fault":{"kind":"heal"}}
{"ev":"fault","t":90,"fault":{"kind":"restart","node":2}}
{"ev":"deliver","t":150,"sent":140,"from":0,"to":1,"kind":"proposal","h":2,"r":0,"value":null}
{"ev":"deliver","t":160,"sent":150,"from":1,"to":0,"kind":"prevote","h":2,"r":0,"value":"cd"}
{"ev":"decided","t":200,"node":2,"h":1,"value":"ab"}
{"ev":"decided","t":1200,"node":3,"h":2,"value":"cd"}
"#;

    /// The first lines of a real `tendr-sim` trace, plus its partition and heal.
    const SAMPLE_TRACE: &str = r#"{"ev":"start","nodes":[{"byzantine":null,"node":0,"validator":0},{"byzantine":null,"node":1,"validator":1},{"byzantine":null,"node":2,"validator":2},{"byzantine":"equivocate","node":3,"validator":3}],"t":0}
{"ev":"deliver","from":1,"h":1,"kind":"proposal","r":0,"sent":0,"t":6,"to":3,"value":null}
{"ev":"deliver","from":1,"h":1,"kind":"prevote","r":0,"sent":0,"t":6,"to":3,"value":"4ccb8de56c6c25b9ebadbe5fa210c839667ba2b9120e228b709bd4afef9c0e20"}
{"ev":"deliver","from":0,"h":1,"kind":"precommit","r":0,"sent":19,"t":26,"to":1,"value":"4ccb8de56c6c25b9ebadbe5fa210c839667ba2b9120e228b709bd4afef9c0e20"}
{"ev":"decided","h":1,"node":3,"t":32,"value":"4ccb8de56c6c25b9ebadbe5fa210c839667ba2b9120e228b709bd4afef9c0e20"}
{"ev":"fault","fault":{"groups":[[0,1],[2,3]],"kind":"partition"},"t":500}
{"ev":"fault","fault":{"kind":"heal"},"t":1500}
{"ev":"deliver","from":2,"h":6,"kind":"decided","r":0,"sent":2296,"t":2304,"to":1,"value":null}
{"ev":"decided","h":6,"node":1,"t":2304,"value":"27b1aa5a438a09a0a4c12177387e2c3a95946250aba540176e2b4bda96cfe96a"}
"#;

    fn hand() -> Vec<Value> {
        parse_trace(HAND_TRACE).expect("hand trace parses")
    }

    fn with_class<'a>(doc: &'a roxmltree::Document<'a>, class: &str) -> Vec<roxmltree::Node<'a, 'a>> {
        doc.descendants()
            .filter(|n| n.attribute("class") == Some(class))
            .collect()
    }

    fn count(doc: &roxmltree::Document, class: &str) -> usize {
        with_class(doc, class).len()
    }

    #[test]
    fn parse_trace_skips_blank_lines_and_names_bad_lines() {
        assert_eq!(hand().len(), 17);
        let err = parse_trace("{\"ev\":\"start\",\"t\":0}\n\n{\"ev\":\"deliver\",").unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("not valid JSON"), "{err}");
        let err = parse_trace("{\"ev\":\"start\"}\n[1,2]").unwrap_err();
        assert!(err.contains("line 2") && err.contains("`ev`"), "{err}");
    }

    #[test]
    fn space_time_has_lanes_arrows_decisions_and_bands_in_window() {
        let svg = space_time_svg(&hand(), &Window { from_ms: 0, to_ms: 100 });
        let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
        assert_eq!(count(&doc, "lane"), 3);
        let byz = with_class(&doc, "lane byzantine");
        assert_eq!(byz.len(), 1);
        assert_eq!(byz[0].attribute("data-node"), Some("3"));
        assert!(byz[0].descendants().any(|n| n.text() == Some("byzantine: equivocate")));
        assert_eq!(count(&doc, "msg proposal"), 1);
        assert_eq!(count(&doc, "msg prevote"), 2);
        assert_eq!(count(&doc, "msg precommit"), 1);
        assert_eq!(count(&doc, "msg tx"), 1);
        let arrows = doc
            .descendants()
            .filter(|n| n.attribute("class").is_some_and(|c| c.starts_with("msg ")));
        assert!(arrows.clone().all(|n| n.attribute("marker-end").is_some()));
        assert_eq!(arrows.count(), 5);
        assert_eq!(count(&doc, "decided"), 2);
        assert!(svg.contains(">h=1<"));
        assert_eq!(count(&doc, "timeout"), 1);
        assert_eq!(count(&doc, "partition"), 1);
        assert_eq!(count(&doc, "crashed"), 1);
        assert_eq!(count(&doc, "capped"), 0);
    }

    #[test]
    fn space_time_window_excludes_events_outside_it() {
        let svg = space_time_svg(
            &hand(),
            &Window {
                from_ms: 100,
                to_ms: 300,
            },
        );
        let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
        assert_eq!(count(&doc, "msg proposal"), 1);
        assert_eq!(count(&doc, "msg prevote"), 1);
        assert_eq!(count(&doc, "msg precommit"), 0);
        assert_eq!(count(&doc, "msg tx"), 0);
        assert_eq!(count(&doc, "decided"), 1);
        assert_eq!(count(&doc, "timeout"), 0);
        assert_eq!(count(&doc, "partition"), 0, "partition healed at 80 ms");
        assert_eq!(count(&doc, "crashed"), 0, "node 2 restarted at 90 ms");
    }

    #[test]
    fn space_time_of_real_trace_lines() {
        let events = parse_trace(SAMPLE_TRACE).expect("sample parses");
        let svg = space_time_svg(
            &events,
            &Window {
                from_ms: 0,
                to_ms: 3000,
            },
        );
        let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
        assert_eq!(count(&doc, "lane"), 3);
        assert_eq!(count(&doc, "lane byzantine"), 1);
        assert_eq!(count(&doc, "msg proposal"), 1);
        assert_eq!(count(&doc, "msg prevote"), 1);
        assert_eq!(count(&doc, "msg precommit"), 1);
        assert_eq!(count(&doc, "msg decided"), 1);
        assert_eq!(count(&doc, "decided"), 2);
        assert_eq!(count(&doc, "partition"), 1);
        assert!(svg.contains(">h=6<"));
    }

    #[test]
    fn space_time_caps_arrows_and_says_so() {
        let mut text =
            String::from(r#"{"ev":"start","t":0,"nodes":[{"node":0,"byzantine":null},{"node":1,"byzantine":null}]}"#);
        for i in 0..(MAX_ARROWS as u64 + 3) {
            text.push_str(&format!(
                "\n{{\"ev\":\"deliver\",\"t\":{},\"sent\":{i},\"from\":0,\"to\":1,\"kind\":\"prevote\",\"h\":1,\"r\":0,\"value\":null}}",
                i + 1
            ));
        }
        let events = parse_trace(&text).expect("parses");
        let svg = space_time_svg(
            &events,
            &Window {
                from_ms: 0,
                to_ms: 10_000,
            },
        );
        let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
        assert_eq!(count(&doc, "msg prevote"), MAX_ARROWS);
        let capped = with_class(&doc, "capped");
        assert_eq!(capped.len(), 1);
        assert!(capped[0]
            .text()
            .unwrap_or("")
            .contains(&format!("of {}", MAX_ARROWS + 3)));
    }

    #[test]
    fn pictures_are_deterministic_and_escape_text() {
        let text = HAND_TRACE.replace("\"equivocate\"", "\"<evil & \\\"odd\\\">\"");
        let events = parse_trace(&text).expect("parses");
        let window = Window { from_ms: 0, to_ms: 100 };
        let a = space_time_svg(&events, &window);
        assert_eq!(a, space_time_svg(&events, &window));
        assert_eq!(height_plot_svg(&events), height_plot_svg(&events));
        let doc = roxmltree::Document::parse(&a).expect("well-formed despite markup in labels");
        assert!(doc
            .descendants()
            .any(|n| n.text() == Some("byzantine: <evil & \"odd\">")));
        roxmltree::Document::parse(&height_plot_svg(&events)).expect("plot well-formed");
    }

    #[test]
    fn height_plot_has_one_line_per_node_and_fault_marks() {
        let svg = height_plot_svg(&hand());
        let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
        assert_eq!(count(&doc, "height-line"), 3);
        let byz = with_class(&doc, "height-line byzantine");
        assert_eq!(byz.len(), 1);
        assert_eq!(byz[0].attribute("data-node"), Some("3"));
        // One band per panel, one heal line per panel.
        assert_eq!(count(&doc, "partition"), 2);
        assert_eq!(count(&doc, "heal"), 2);
        assert!(count(&doc, "throughput") >= 1);
        let sample = parse_trace(SAMPLE_TRACE).expect("sample parses");
        let doc2 = height_plot_svg(&sample);
        let doc2 = roxmltree::Document::parse(&doc2).expect("well-formed SVG");
        assert_eq!(count(&doc2, "height-line") + count(&doc2, "height-line byzantine"), 4);
    }

    fn attr(n: &roxmltree::Node, name: &str) -> f64 {
        n.attribute(name)
            .and_then(|v| v.parse().ok())
            .expect("numeric attribute")
    }

    /// Issue 18, item 10: seven nodes, node 6 Byzantine with a long label: no two legend
    /// entries overlap, all stay inside the picture, and the panels start below the legend.
    #[test]
    fn legend_entries_never_overlap() {
        let mut text = String::from(r#"{"ev":"start","t":0,"nodes":["#);
        for n in 0..7 {
            let byz = if n == 6 { r#""split-vote""# } else { "null" };
            text.push_str(&format!(
                r#"{}{{"node":{n},"byzantine":{byz}}}"#,
                if n > 0 { "," } else { "" }
            ));
        }
        text.push_str("]}\n{\"ev\":\"decided\",\"t\":5,\"node\":0,\"h\":1,\"value\":\"ab\"}");
        let svg = height_plot_svg(&parse_trace(&text).expect("parses"));
        let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
        let boxes: Vec<(f64, f64, f64)> = with_class(&doc, "legend")
            .iter()
            .map(|g| {
                let line = g.children().find(|c| c.has_tag_name("line")).unwrap();
                let label = g.children().find(|c| c.has_tag_name("text")).unwrap();
                let chars = label.text().unwrap_or("").chars().count() as f64;
                let x = attr(&line, "x1");
                // At most 7.5 px per character of 12 px sans-serif text.
                (x, x + 24.0 + 7.5 * chars, attr(&line, "y1"))
            })
            .collect();
        assert_eq!(boxes.len(), 7);
        for (i, a) in boxes.iter().enumerate() {
            assert!(a.1 <= WIDTH - RIGHT, "entry {i} runs off the picture: {a:?}");
            for b in &boxes[i + 1..] {
                let apart = a.2 != b.2 || a.1 <= b.0 || b.1 <= a.0;
                assert!(apart, "legend entries overlap: {a:?} and {b:?}");
            }
        }
        let bottom = boxes.iter().map(|b| b.2).fold(0.0, f64::max) + 6.0;
        let panels = with_class(&doc, "panels");
        let shift: f64 = panels[0].attribute("transform").unwrap()["translate(0 ".len()..]
            .trim_end_matches(')')
            .parse()
            .unwrap();
        assert!(
            bottom < PLOT_TOP + shift,
            "the legend reaches into the plot ({bottom} >= {})",
            PLOT_TOP + shift
        );
        assert!(svg.contains("(byzantine: split-vote)"));
    }

    /// Issue 18, item 10: a run ending at 1,450 ms with one height every 100 ms: the last
    /// bucket (1,000..1,450) shows the rate over its 450 ms, not its count per full second.
    #[test]
    fn the_last_partial_throughput_bucket_is_scaled_by_what_it_covers() {
        let mut text = String::from(r#"{"ev":"start","t":0,"nodes":[{"node":0,"byzantine":null}]}"#);
        for h in 0..15u64 {
            let t = 50 + 100 * h;
            text.push_str(&format!(
                "\n{{\"ev\":\"decided\",\"t\":{t},\"node\":0,\"h\":{},\"value\":\"ab\"}}",
                h + 1
            ));
        }
        text.push_str("\n{\"ev\":\"decided\",\"t\":1450,\"node\":0,\"h\":15,\"value\":\"ab\"}");
        let svg = height_plot_svg(&parse_trace(&text).expect("parses"));
        let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
        let bars = with_class(&doc, "throughput");
        assert_eq!(bars.len(), 2);
        let (full, last) = (&bars[0], &bars[1]);
        // 10 heights in 1 s, and 5 in 0.45 s: the last rate is the higher, not half.
        let ratio = attr(last, "height") / attr(full, "height");
        assert!(
            (ratio - (5.0 / 0.45) / 10.0).abs() < 0.01,
            "last/full bar height {ratio}"
        );
        let widths = (attr(last, "width") + 1.0) / (attr(full, "width") + 1.0);
        assert!(
            (widths - 0.45).abs() < 0.01,
            "the last bar covers 450 of 1000 ms: {widths}"
        );
        let title = last.children().find(|c| c.has_tag_name("title")).unwrap();
        assert_eq!(title.text(), Some("1000..1450 ms: 5 heights"));
    }

    #[test]
    fn height_plot_without_start_line_infers_nodes() {
        let events = parse_trace(
            "{\"ev\":\"decided\",\"t\":5,\"node\":0,\"h\":1,\"value\":\"ab\"}\n\
             {\"ev\":\"decided\",\"t\":7,\"node\":4,\"h\":1,\"value\":\"ab\"}",
        )
        .expect("parses");
        let doc = height_plot_svg(&events);
        let doc = roxmltree::Document::parse(&doc).expect("well-formed SVG");
        assert_eq!(count(&doc, "height-line"), 2);
        let empty = height_plot_svg(&[]);
        roxmltree::Document::parse(&empty).expect("empty trace still well-formed");
        roxmltree::Document::parse(&space_time_svg(&[], &Window { from_ms: 5, to_ms: 5 }))
            .expect("empty window still well-formed");
    }
}
