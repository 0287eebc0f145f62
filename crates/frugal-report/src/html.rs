//! The human-readable report: `report.md` and a self-contained `report.html` (inline SVG charts
//! drawn with plotters, no script, no external resource) — quality against size and against
//! energy per query for every variant with the Pareto front, the energy of one run by source,
//! the bits each variant stores per weight, tensor by tensor, and an efficiency label graded A–E
//! by absolute Wh-per-1,000-queries thresholds (a policy's `label_wh_per_1k_queries`, else
//! [`DEFAULT_LABEL_WH_PER_1K`]).

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

/// What the report shows.
#[derive(Debug, Clone)]
pub struct View {
    pub title: String,
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

/// A scatter chart of quality against `x` (log scale) with the Pareto front, as SVG text.
fn scatter(title: &str, x_desc: &str, v: &View, xs: &[(usize, f64)]) -> String {
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
        let root = SVGBackend::with_string(&mut s, (640, 360)).into_drawing_area();
        let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
            root.fill(&WHITE)?;
            let mut c = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(
                    (xmin / 1.5..xmax * 1.5).log_scale(),
                    (ymin - pad)..(ymax + pad),
                )?;
            c.configure_mesh()
                .x_desc(x_desc)
                .y_desc(v.quality_label.as_str())
                .x_labels(6)
                .x_label_formatter(&|x| format!("{x:.1e}"))
                .max_light_lines(2)
                .draw()?;
            let front: Vec<(f64, f64)> = pareto(&pts, v.higher_is_better)
                .into_iter()
                .map(|i| pts[i])
                .collect();
            c.draw_series(LineSeries::new(front, &RED))?
                .label("Pareto front")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
            c.draw_series(xs.iter().zip(&pts).map(|(&(i, _), &p)| {
                EmptyElement::at(p)
                    + Circle::new((0, 0), 4, BLUE.filled())
                    + Text::new(v.variants[i].name.clone(), (6, -12), ("sans-serif", 11))
            }))?;
            c.configure_series_labels().border_style(BLACK).draw()?;
            root.present()?;
            Ok(())
        };
        if draw().is_err() {
            return String::new();
        }
    }
    s
}

/// Bits per weight of every tensor (x: its index in the file), one line per variant.
fn bits_chart(v: &View) -> String {
    let mut s = String::new();
    let n = v.bits.iter().map(|b| b.1.len()).max().unwrap_or(0);
    if n == 0 {
        return s;
    }
    let ymax = v
        .bits
        .iter()
        .flat_map(|b| b.1.iter().map(|t| t.1))
        .fold(0.0, f64::max)
        .max(1.0);
    let colours = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    {
        let root = SVGBackend::with_string(&mut s, (640, 360)).into_drawing_area();
        let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
            root.fill(&WHITE)?;
            let mut c = ChartBuilder::on(&root)
                .caption("Bits per weight, tensor by tensor", ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(50)
                // Head room above the highest point for the legend.
                .build_cartesian_2d(-0.5..(n as f64 - 0.5), 0.0..ymax * 1.8)?;
            c.configure_mesh()
                .x_desc("tensor (file order)")
                .y_desc("bits per weight")
                .max_light_lines(2)
                .draw()?;
            for (k, (name, t)) in v.bits.iter().enumerate() {
                let colour = colours[k % colours.len()];
                let pts: Vec<(f64, f64)> =
                    t.iter().enumerate().map(|(i, x)| (i as f64, x.1)).collect();
                c.draw_series(LineSeries::new(pts.clone(), colour.stroke_width(1)))?
                    .label(name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour));
                c.draw_series(
                    pts.into_iter()
                        .map(move |p| Circle::new(p, 3, colour.filled())),
                )?;
            }
            c.configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .border_style(BLACK)
                .background_style(WHITE.mix(0.8))
                .draw()?;
            root.present()?;
            Ok(())
        };
        if draw().is_err() {
            return String::new();
        }
    }
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
    let mut m = format!("# {}\n\n| model | bytes | {} | Wh / 1,000 queries (95 % CI) | grade |\n|---|---:|---:|---:|:-:|\n", v.title, v.quality_label);
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
    let best = v
        .variants
        .iter()
        .filter_map(|x| x.wh_per_1k.map(|e| (x, e)))
        .min_by(|a, b| a.1 .0.total_cmp(&b.1 .0));
    let mut h = String::from("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str(&format!("<title>{}</title>", esc(&v.title)));
    h.push_str("<style>body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}th:first-child,td:first-child{text-align:left}figure{margin:1em 0}</style></head><body>");
    h.push_str(&format!("<h1>{}</h1>", esc(&v.title)));
    h.push_str(&format!("<table><tr><th>model</th><th>bytes</th><th>{}</th><th>Wh / 1,000 queries (95 % CI)</th><th>grade</th></tr>", esc(&v.quality_label)));
    for x in &v.variants {
        let (e, g) = energy_cells(x, &v.label_thresholds);
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{:.3}</td><td>{e}</td><td>{g}</td></tr>",
            esc(&x.name),
            x.bytes,
            x.quality
        ));
    }
    h.push_str("</table>");
    h.push_str(&format!(
        "<figure id=\"quality-size\">{}</figure>",
        scatter("Quality against size", "bytes (log)", v, &sizes)
    ));
    h.push_str(&format!(
        "<figure id=\"quality-energy\">{}</figure>",
        scatter(
            "Quality against energy per query",
            "Wh per 1,000 queries (log)",
            v,
            &energies
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
        "<h2>Energy of one run by source</h2><figure id=\"energy-breakdown\">{}</figure>",
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
        assert!(!h.contains("<script") && !h.contains("src=\"http") && !h.contains("href=\"http"));
        assert!(h.contains("t &lt;report&gt;"));
        assert!(h.contains("Pareto front"));
        let m = markdown(&view());
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
