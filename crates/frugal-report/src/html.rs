//! The human-readable report: `report.md` and a self-contained `report.html` (inline SVG, no
//! script, no external resource). First a verdict box — the model to ship, why, and what it
//! saves, or that none passes —; then every variant's figures, quality against size and against
//! energy per query with the Pareto front (point labels placed so that none overlaps another),
//! the tables, the bits each variant stores per weight as bars under the tensors' names, the
//! energy of one run by source, and an efficiency label graded A–E by absolute
//! Wh-per-1,000-queries thresholds (a policy's `label_wh_per_1k_queries`, else
//! [`DEFAULT_LABEL_WH_PER_1K`]). Every estimated energy says so where it is shown.

use plotters::prelude::*;

/// Grade boundaries, Wh per 1,000 queries: A up to the first, B up to the second, …, E beyond.
pub const DEFAULT_LABEL_WH_PER_1K: [f64; 4] = [0.01, 0.1, 1.0, 10.0];

/// One model of the report.
#[derive(Debug, Clone)]
pub struct Variant {
    pub name: String,
    pub bytes: u64,
    /// The quality figure (higher is better when [`View::higher_is_better`]).
    pub quality: f64,
    /// Energy per 1,000 queries (mean, 95 % interval), and whether it was measured.
    pub wh_per_1k: Option<(f64, (f64, f64), bool)>,
}

/// The verdict shown first: the model to ship (or none), and why in a few lines.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// `Some(model)` when one passes: the efficiency label grades it.
    pub ship: Option<String>,
    pub headline: String,
    pub reasons: Vec<String>,
}

/// What the report shows.
#[derive(Debug, Clone)]
pub struct View {
    pub title: String,
    pub verdict: Option<Verdict>,
    pub quality_label: String,
    pub higher_is_better: bool,
    pub variants: Vec<Variant>,
    /// One run's energy by source (name, joules, measured?).
    pub energy_sources: Vec<(String, f64, bool)>,
    pub label_thresholds: [f64; 4],
    /// Each variant's bits per weight, tensor by tensor in file order (variant, [(tensor,
    /// bits)]).
    pub bits: Vec<(String, Vec<(String, f64)>)>,
    /// Rows of a further table (header, rows), such as the break-even of each compression.
    pub tables: Vec<(String, Vec<String>, Vec<Vec<String>>)>,
    /// Notes printed under the tables (provenance, methods).
    pub notes: Vec<String>,
}

/// The grade of `wh` per 1,000 queries.
pub fn grade(wh: f64, t: &[f64; 4]) -> char {
    ['A', 'B', 'C', 'D']
        .into_iter()
        .zip(t)
        .find(|(_, &limit)| wh <= limit)
        .map_or('E', |(g, _)| g)
}

/// Indices of the variants no other beats on both axes (`x` lower is better; quality per
/// `higher`), in increasing `x`.
pub fn pareto(points: &[(f64, f64)], higher: bool) -> Vec<usize> {
    let better = |a: f64, b: f64| if higher { a > b } else { a < b };
    let mut idx: Vec<usize> = (0..points.len())
        .filter(|&i| {
            !points.iter().enumerate().any(|(j, p)| {
                j != i
                    && p.0 <= points[i].0
                    && !better(points[i].1, p.1)
                    && (p.0 < points[i].0 || better(p.1, points[i].1))
            })
        })
        .collect();
    idx.sort_by(|&a, &b| points[a].0.total_cmp(&points[b].0));
    idx
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Chart size in pixels (the page is 960 wide).
const CHART: (u32, u32) = (900, 440);
/// Point-label font size, and the width of one character at that size (an upper bound for
/// sans-serif), for placing labels.
const LABEL_PX: i32 = 13;
const CHAR_PX: i32 = 8;

/// A label's box in pixels: (left, top, right, bottom).
type Rect = (i32, i32, i32, i32);

fn overlaps(a: Rect, b: Rect) -> bool {
    a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3
}

/// Places one label per point (`(x, y, text)` in pixels) so that no label overlaps another
/// label or a point, trying positions right, left, above and below at growing distances, and
/// keeping inside `area`; returns each label's top-left corner and box.
pub fn place_labels(points: &[(i32, i32, String)], area: Rect) -> Vec<((i32, i32), Rect)> {
    let h = LABEL_PX + 3;
    let dots: Vec<Rect> = points
        .iter()
        .map(|&(x, y, _)| (x - 5, y - 5, x + 5, y + 5))
        .collect();
    let mut placed: Vec<Rect> = Vec::new();
    let mut out = Vec::new();
    for (x, y, text) in points {
        let w = CHAR_PX * text.chars().count() as i32;
        let mut best = None;
        'search: for step in 0..12 {
            let d = 8 + step * (h / 2 + 2);
            for (dx, dy) in [
                (8, -h / 2 - d + 8),
                (8, d - 8),
                (-w - 8, -h / 2 - d + 8),
                (-w - 8, d - 8),
                (-w / 2, -h - d),
                (-w / 2, d),
            ] {
                let (lx, ly) = (x + dx, y + dy);
                let r = (lx, ly, lx + w, ly + h);
                let inside = r.0 >= area.0 && r.1 >= area.1 && r.2 <= area.2 && r.3 <= area.3;
                if inside
                    && !placed.iter().any(|p| overlaps(*p, r))
                    && !dots.iter().any(|p| overlaps(*p, r))
                {
                    best = Some(((lx, ly), r));
                    break 'search;
                }
            }
        }
        // Nowhere free (a crowded chart): right of the point, as before.
        let chosen = best.unwrap_or(((x + 8, y - h), (x + 8, y - h, x + 8 + w, *y)));
        placed.push(chosen.1);
        out.push(chosen);
    }
    out
}

/// A scatter chart of quality against `x` (log scale) with the Pareto front, as SVG text;
/// hollow points are estimated energies (`estimated[i]`).
fn scatter(title: &str, x_desc: &str, v: &View, xs: &[(usize, f64)], estimated: &[bool]) -> String {
    let mut s = String::new();
    if xs.is_empty() {
        return s;
    }
    let pts: Vec<(f64, f64)> = xs
        .iter()
        .map(|&(i, x)| (x, v.variants[i].quality))
        .collect();
    let (xmin, xmax) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
    let (ymin, ymax) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.1), a.1.max(p.1)));
    let pad = ((ymax - ymin) * 0.15).max(ymax.abs() * 1e-3).max(1e-9);
    {
        let root = SVGBackend::with_string(&mut s, CHART).into_drawing_area();
        let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
            root.fill(&WHITE)?;
            let mut c = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 20))
                .margin(16)
                .x_label_area_size(48)
                .y_label_area_size(70)
                .build_cartesian_2d(
                    (xmin / 2.0..xmax * 2.0).log_scale(),
                    (ymin - pad)..(ymax + pad),
                )?;
            c.configure_mesh()
                .x_desc(x_desc)
                .y_desc(v.quality_label.as_str())
                .x_labels(6)
                .x_label_formatter(&|x| format!("{x:.1e}"))
                .label_style(("sans-serif", 13))
                .axis_desc_style(("sans-serif", 14))
                .max_light_lines(2)
                .draw()?;
            let front: Vec<(f64, f64)> = pareto(&pts, v.higher_is_better)
                .into_iter()
                .map(|i| pts[i])
                .collect();
            c.draw_series(LineSeries::new(front, RED.stroke_width(2)))?
                .label("Pareto front")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED.stroke_width(2)));
            c.draw_series(pts.iter().zip(estimated).map(|(&p, &est)| {
                if est {
                    Circle::new(p, 5, BLUE.stroke_width(2))
                } else {
                    Circle::new(p, 5, BLUE.filled())
                }
            }))?;
            c.configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .label_font(("sans-serif", 13))
                .border_style(BLACK)
                .background_style(WHITE.mix(0.9))
                .draw()?;
            // Point labels, placed where they overlap nothing, inside the plotting area.
            let (xr, yr) = (c.x_range(), c.y_range());
            let tl = c.backend_coord(&(xr.start, yr.end));
            let br = c.backend_coord(&(xr.end, yr.start));
            let at: Vec<(i32, i32, String)> = xs
                .iter()
                .zip(&pts)
                .map(|(&(i, _), p)| {
                    let (px, py) = c.backend_coord(p);
                    (px, py, v.variants[i].name.clone())
                })
                .collect();
            for ((pos, _), (_, _, text)) in place_labels(&at, (tl.0, tl.1, br.0, br.1))
                .into_iter()
                .zip(&at)
            {
                root.draw(&Text::new(
                    text.clone(),
                    pos,
                    ("sans-serif", LABEL_PX).into_font().color(&BLACK),
                ))?;
            }
            root.present()?;
            Ok(())
        };
        if draw().is_err() {
            return String::new();
        }
    }
    s
}

/// The colours of the variants in the bars (colour-blind-safe, Okabe–Ito).
const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
];

/// Bits per weight as grouped bars: one group per tensor (named under it), one bar per variant
/// (legend above), hand-drawn SVG.
fn bits_chart(v: &View) -> String {
    let tensors: Vec<&str> = v
        .bits
        .first()
        .map(|b| b.1.iter().map(|t| t.0.as_str()).collect())
        .unwrap_or_default();
    if tensors.is_empty() {
        return String::new();
    }
    let ymax = v
        .bits
        .iter()
        .flat_map(|b| b.1.iter().map(|t| t.1))
        .fold(0.0, f64::max)
        .max(1.0);
    let ymax = (ymax / 8.0).ceil() * 8.0;
    let (w, left, top, plot_h) = (CHART.0 as f64, 56.0, 70.0, 260.0);
    let group = (w - left - 10.0) / tensors.len() as f64;
    let nv = v.bits.len().max(1) as f64;
    let bar = (group * 0.8 / nv).max(1.0);
    let height = top + plot_h + 70.0;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" role="img" aria-label="bits per weight, tensor by tensor" font-family="sans-serif">"#
    );
    s += r#"<text x="450" y="22" font-size="20" text-anchor="middle">Bits per weight, tensor by tensor</text>"#;
    // Legend: one swatch per variant.
    let mut lx = left;
    for (k, (name, _)) in v.bits.iter().enumerate() {
        s += &format!(
            r#"<rect x="{lx:.1}" y="36" width="14" height="14" fill="{}"/><text x="{:.1}" y="48" font-size="13">{}</text>"#,
            PALETTE[k % PALETTE.len()],
            lx + 18.0,
            esc(name)
        );
        lx += 18.0 + (CHAR_PX as f64) * name.chars().count() as f64 + 14.0;
    }
    // Grid lines every 8 bits.
    let y_of = |b: f64| top + plot_h * (1.0 - b / ymax);
    let mut b = 0.0;
    while b <= ymax + 1e-9 {
        let y = y_of(b);
        s += &format!(
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="12" text-anchor="end">{b}</text>"##,
            w - 10.0,
            left - 6.0,
            y + 4.0
        );
        b += 8.0;
    }
    s += &format!(
        r#"<text x="14" y="{:.1}" font-size="13" transform="rotate(-90 14 {:.1})" text-anchor="middle">bits per weight</text>"#,
        top + plot_h / 2.0,
        top + plot_h / 2.0
    );
    for (t, name) in tensors.iter().enumerate() {
        let gx = left + group * t as f64 + group * 0.1;
        for (k, (_, bits)) in v.bits.iter().enumerate() {
            if let Some(&(_, b)) = bits.get(t) {
                let y = y_of(b);
                s += &format!(
                    r#"<rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {b:.2} bits</title></rect>"#,
                    gx + bar * k as f64,
                    (bar - 1.0).max(1.0),
                    top + plot_h - y,
                    PALETTE[k % PALETTE.len()],
                    esc(name)
                );
            }
        }
        s += &format!(
            r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
            left + group * (t as f64 + 0.5),
            top + plot_h + 18.0 + 14.0 * (t % 2) as f64,
            esc(name)
        );
    }
    s += &format!(
        r##"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>"##,
        top + plot_h,
        w - 10.0,
        top + plot_h
    );
    s.push_str("</svg>");
    s
}

/// Horizontal bars of one run's energy by source.
fn breakdown(v: &View) -> String {
    let n = v.energy_sources.len();
    if n == 0 {
        return String::new();
    }
    let max = v
        .energy_sources
        .iter()
        .map(|s| s.1)
        .fold(0.0, f64::max)
        .max(1e-12);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="640" height="{}" role="img" aria-label="energy by source">"#,
        30 * n + 10
    );
    for (k, (name, j, measured)) in v.energy_sources.iter().enumerate() {
        let w = 300.0 * j / max;
        let y = 10 + 30 * k;
        s.push_str(&format!(
            r##"<text x="0" y="{}" font-family="sans-serif" font-size="12">{}</text><rect x="130" y="{}" width="{w:.1}" height="18" fill="{}"/><text x="{:.1}" y="{}" font-family="sans-serif" font-size="12">{j:.4} J ({})</text>"##,
            y + 13,
            esc(name),
            y,
            if *measured { "#2b7a3d" } else { "#c77d1a" },
            140.0 + w,
            y + 13,
            if *measured { "measured" } else { "estimated" }
        ));
    }
    s.push_str("</svg>");
    s
}

/// The efficiency label of the best-graded variant.
pub fn label_svg(name: &str, wh: f64, measured: bool, t: &[f64; 4]) -> String {
    let g = grade(wh, t);
    let colours = [
        ("A", "#1a9641"),
        ("B", "#a6d96a"),
        ("C", "#ffffbf"),
        ("D", "#fdae61"),
        ("E", "#d7191c"),
    ];
    let mut s = String::from(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="320" height="230" role="img" aria-label="efficiency label">"#,
    );
    s.push_str(r##"<rect x="0" y="0" width="320" height="230" fill="#fff" stroke="#333"/>"##);
    for (k, (letter, colour)) in colours.iter().enumerate() {
        let y = 10 + 34 * k;
        let w = 120 + 30 * k;
        let bound = if k < 4 {
            format!("≤ {} Wh", t[k])
        } else {
            format!("> {} Wh", t[3])
        };
        s.push_str(&format!(
            r#"<rect x="10" y="{y}" width="{w}" height="28" fill="{colour}"/><text x="18" y="{}" font-family="sans-serif" font-size="18" font-weight="bold">{letter}</text><text x="44" y="{}" font-family="sans-serif" font-size="11">{bound}</text>"#,
            y + 21,
            y + 19
        ));
        if letter.starts_with(g) {
            s.push_str(&format!(
                r##"<polygon points="{},{} {},{} {},{}" fill="#333"/>"##,
                w + 20,
                y + 14,
                w + 34,
                y + 4,
                w + 34,
                y + 24
            ));
        }
    }
    s.push_str(&format!(
        r#"<text x="10" y="200" font-family="sans-serif" font-size="12">{}: {wh:.4} Wh / 1,000 queries</text><text x="10" y="218" font-family="sans-serif" font-size="11">{}</text></svg>"#,
        esc(name),
        if measured { "measured energy" } else { "estimated energy (no hardware counter)" }
    ));
    s
}

/// A variant's energy cell (mean, interval, "est." when estimated) and grade cell.
fn energy_cells(x: &Variant, t: &[f64; 4]) -> (String, String) {
    match x.wh_per_1k {
        Some((w, (lo, hi), measured)) => (
            format!(
                "{w:.5} ({lo:.5}–{hi:.5}){}",
                if measured { "" } else { " est." }
            ),
            grade(w, t).to_string(),
        ),
        None => ("-".into(), "-".into()),
    }
}

/// `report.md`.
pub fn markdown(v: &View) -> String {
    let mut m = format!("# {}\n\n", v.title);
    if let Some(d) = &v.verdict {
        m.push_str(&format!("> **{}**\n", d.headline));
        for r in &d.reasons {
            m.push_str(&format!(">\n> - {r}\n"));
        }
        m.push('\n');
    }
    m += &format!(
        "| model | bytes | {} | Wh / 1,000 queries (95 % CI) | grade |\n|---|---:|---:|---:|:-:|\n",
        v.quality_label
    );
    for x in &v.variants {
        let (e, g) = energy_cells(x, &v.label_thresholds);
        m.push_str(&format!(
            "| {} | {} | {:.3} | {e} | {g} |\n",
            x.name, x.bytes, x.quality
        ));
    }
    for (title, header, rows) in &v.tables {
        m.push_str(&format!(
            "\n## {title}\n\n| {} |\n|{}\n",
            header.join(" | "),
            "---|".repeat(header.len())
        ));
        for r in rows {
            let cells: Vec<String> = r.iter().map(|c| c.replace('|', "\\|")).collect();
            m.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
    }
    m.push('\n');
    for n in &v.notes {
        m.push_str(&format!("- {n}\n"));
    }
    m
}

/// `report.html`: one file, charts inline.
pub fn html(v: &View) -> String {
    let sizes: Vec<(usize, f64)> = v
        .variants
        .iter()
        .enumerate()
        .map(|(i, x)| (i, x.bytes as f64))
        .collect();
    let energies: Vec<(usize, f64)> = v
        .variants
        .iter()
        .enumerate()
        .filter_map(|(i, x)| x.wh_per_1k.map(|e| (i, e.0)))
        .filter(|(_, e)| *e > 0.0)
        .collect();
    // The label grades the model to ship, else the variant with the least energy per query.
    let shipped = v.verdict.as_ref().and_then(|d| d.ship.as_deref());
    let best = v
        .variants
        .iter()
        .filter_map(|x| x.wh_per_1k.map(|e| (x, e)))
        .filter(|(x, _)| shipped.is_none_or(|s| s == x.name))
        .min_by(|a, b| a.1 .0.total_cmp(&b.1 .0));
    let any_estimated = v.variants.iter().any(|x| x.wh_per_1k.is_some_and(|e| !e.2));
    let mut h = String::from("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str(&format!("<title>{}</title>", esc(&v.title)));
    h.push_str("<style>body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222;font-size:15px}table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}th:first-child,td:first-child{text-align:left}figure{margin:1em 0}.verdict{border:4px solid #1a7f37;background:#e6f4ea;padding:12px 18px;margin:1em 0 1.5em}.verdict.none{border-color:#b3261e;background:#fce8e6}.verdict h2{margin:0 0 .4em;font-size:1.35em}.verdict ul{margin:.2em 0 0 1.1em;padding:0}.est{color:#8a5a00;font-weight:bold}</style></head><body>");
    h.push_str(&format!("<h1>{}</h1>", esc(&v.title)));
    if let Some(d) = &v.verdict {
        h.push_str(&format!(
            "<section id=\"verdict\" class=\"verdict{}\"><h2>{}</h2><ul>",
            if d.ship.is_some() { "" } else { " none" },
            esc(&d.headline)
        ));
        for r in &d.reasons {
            h.push_str(&format!("<li>{}</li>", esc(r)));
        }
        h.push_str("</ul></section>");
    }
    h.push_str(&format!("<table><tr><th>model</th><th>bytes</th><th>{}</th><th>Wh / 1,000 queries (95 % CI)</th><th>grade</th></tr>", esc(&v.quality_label)));
    for x in &v.variants {
        let (e, g) = energy_cells(x, &v.label_thresholds);
        let e = esc(&e).replace(" est.", " <span class=\"est\">est.</span>");
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{:.3}</td><td>{e}</td><td>{g}</td></tr>",
            esc(&x.name),
            x.bytes,
            x.quality
        ));
    }
    h.push_str("</table>");
    let filled = vec![false; sizes.len()];
    h.push_str(&format!(
        "<figure id=\"quality-size\">{}</figure>",
        scatter("Quality against size", "bytes (log)", v, &sizes, &filled)
    ));
    let hollow: Vec<bool> = energies
        .iter()
        .map(|&(i, _)| v.variants[i].wh_per_1k.is_some_and(|e| !e.2))
        .collect();
    h.push_str(&format!(
        "<figure id=\"quality-energy\">{}</figure>",
        scatter(
            if any_estimated {
                "Quality against energy per query (ESTIMATED energy: hollow points)"
            } else {
                "Quality against energy per query (measured)"
            },
            if any_estimated {
                "Wh per 1,000 queries (log), estimated"
            } else {
                "Wh per 1,000 queries (log)"
            },
            v,
            &energies,
            &hollow
        )
    ));
    for (title, header, rows) in &v.tables {
        h.push_str(&format!("<h2>{}</h2><table><tr>", esc(title)));
        for c in header {
            h.push_str(&format!("<th>{}</th>", esc(c)));
        }
        h.push_str("</tr>");
        for r in rows {
            h.push_str("<tr>");
            for c in r {
                h.push_str(&format!("<td>{}</td>", esc(c)));
            }
            h.push_str("</tr>");
        }
        h.push_str("</table>");
    }
    if !v.bits.is_empty() {
        h.push_str(&format!(
            "<figure id=\"bits-per-tensor\">{}</figure>",
            bits_chart(v)
        ));
    }
    h.push_str(&format!(
        "<h2>Energy of one run by source{}</h2><figure id=\"energy-breakdown\">{}</figure>",
        if v.energy_sources.iter().any(|s| !s.2) {
            " <span class=\"est\">(estimated)</span>"
        } else {
            ""
        },
        breakdown(v)
    ));
    if let Some((x, e)) = best {
        h.push_str(&format!(
            "<h2>Efficiency label</h2><figure id=\"label\">{}</figure>",
            label_svg(&x.name, e.0, e.2, &v.label_thresholds)
        ));
    }
    h.push_str("<ul>");
    for n in &v.notes {
        h.push_str(&format!("<li>{}</li>", esc(n)));
    }
    h.push_str("</ul></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> View {
        let v = |name: &str, bytes, q, e: f64| Variant {
            name: name.into(),
            bytes,
            quality: q,
            wh_per_1k: Some((e, (e * 0.9, e * 1.1), false)),
        };
        View {
            title: "t <report>".into(),
            verdict: Some(Verdict {
                ship: Some("student".into()),
                headline: "Ship student".into(),
                reasons: vec!["passes".into()],
            }),
            quality_label: "accuracy %".into(),
            higher_is_better: true,
            variants: vec![
                v("teacher", 200_000, 98.0, 0.05),
                v("student", 15_000, 96.0, 0.004),
                v("bad", 20_000, 90.0, 0.006),
            ],
            energy_sources: vec![
                ("cpu-estimate".into(), 1.5, false),
                ("ram-estimate".into(), 0.01, false),
            ],
            label_thresholds: DEFAULT_LABEL_WH_PER_1K,
            bits: vec![
                (
                    "teacher".into(),
                    vec![("conv.weight".into(), 32.0), ("fc.weight".into(), 32.0)],
                ),
                (
                    "student".into(),
                    vec![("conv.weight".into(), 8.5), ("fc.weight".into(), 17.0)],
                ),
            ],
            tables: vec![(
                "Break-even".into(),
                vec!["model".into(), "queries".into()],
                vec![vec!["student".into(), "1,200".into()]],
            )],
            notes: vec!["estimated".into()],
        }
    }

    /// Labels of crowded points (two at the same place, a row of close ones) overlap neither
    /// each other nor a point, and stay inside the area.
    #[test]
    fn point_labels_never_overlap() {
        let pts: Vec<(i32, i32, String)> = [
            (100, 200, "student-labels"),
            (104, 200, "student-pruned"),
            (100, 200, "student-distilled"),
            (130, 210, "student-int8"),
            (600, 60, "teacher"),
            (590, 64, "teacher-int8"),
        ]
        .iter()
        .map(|&(x, y, n)| (x, y, n.to_string()))
        .collect();
        let area = (60, 40, 880, 400);
        let placed = place_labels(&pts, area);
        for (i, (_, a)) in placed.iter().enumerate() {
            assert!(
                a.0 >= area.0 && a.1 >= area.1 && a.2 <= area.2 && a.3 <= area.3,
                "{a:?}"
            );
            for (j, (_, b)) in placed.iter().enumerate().skip(i + 1) {
                assert!(
                    !overlaps(*a, *b),
                    "{} and {}: {a:?} {b:?}",
                    pts[i].2,
                    pts[j].2
                );
            }
            for p in &pts {
                assert!(
                    !overlaps(*a, (p.0 - 5, p.1 - 5, p.0 + 5, p.1 + 5)),
                    "{a:?} covers {p:?}"
                );
            }
        }
    }

    #[test]
    fn grades_fronts_and_a_self_contained_page() {
        assert_eq!(grade(0.005, &DEFAULT_LABEL_WH_PER_1K), 'A');
        assert_eq!(grade(0.5, &DEFAULT_LABEL_WH_PER_1K), 'C');
        assert_eq!(grade(50.0, &DEFAULT_LABEL_WH_PER_1K), 'E');
        // (size, quality): the 20 kB model at 90 % is beaten by the 15 kB one at 96 %.
        assert_eq!(
            pareto(&[(200.0, 98.0), (15.0, 96.0), (20.0, 90.0)], true),
            vec![1, 0]
        );
        assert_eq!(pareto(&[(1.0, 0.5), (2.0, 0.1)], false), vec![0, 1]);
        let h = html(&view());
        assert!(h.starts_with("<!DOCTYPE html>") && h.ends_with("</html>\n"));
        assert_eq!(
            h.matches("<svg").count(),
            5,
            "three charts, a breakdown and a label"
        );
        assert!(h.contains("bits-per-tensor") && h.contains("<td>1,200</td>"));
        // The verdict comes first, the bars carry the tensors' names, estimates say so.
        let verdict = h.find("id=\"verdict\"").unwrap();
        assert!(verdict < h.find("<table").unwrap() && h.contains("<h2>Ship student</h2>"));
        assert!(h.contains(">conv.weight</text>") && h.contains(">fc.weight</text>"));
        assert!(h.contains("ESTIMATED energy") && h.contains("<span class=\"est\">est.</span>"));
        assert!(
            h.contains("student: 0.0040 Wh"),
            "the label grades the shipped model"
        );
        assert!(!h.contains("<script") && !h.contains("src=\"http") && !h.contains("href=\"http"));
        assert!(h.contains("t &lt;report&gt;"));
        assert!(h.contains("Pareto front"));
        let m = markdown(&view());
        assert!(m.starts_with("# t <report>\n\n> **Ship student**\n"), "{m}");
        assert!(
            m.contains("| student | 15000 | 96.000 | 0.00400 (0.00360–0.00440) est. | A |"),
            "{m}"
        );
        assert!(
            m.contains("## Break-even\n\n| model | queries |\n|---|---|\n| student | 1,200 |"),
            "{m}"
        );
    }
}
