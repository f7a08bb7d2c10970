//! The bench chart: for each workload, queries per second and CPU µs per query by target, as
//! plain SVG bars (no plotting library: a few rectangles and labels).
#![expect(clippy::cast_precision_loss, reason = "a handful of bars")]

use std::fmt::Write as _;

use crate::bench::{Report, Target};

const BAR_H: f64 = 18.0;
const GAP: f64 = 6.0;
const LABEL_W: f64 = 110.0;
const PANEL_W: f64 = 330.0;

fn panel(
    out: &mut String,
    x0: f64,
    y0: f64,
    title: &str,
    rows: &[(&str, f64)],
    unit: &str,
    color: &str,
) {
    let max = rows
        .iter()
        .map(|r| r.1)
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        .max(1e-9);
    let _ = writeln!(
        out,
        r#"<text x="{x0}" y="{}" font-weight="bold">{title}</text>"#,
        y0 - 6.0
    );
    for (i, (name, v)) in rows.iter().enumerate() {
        let y = y0 + i as f64 * (BAR_H + GAP);
        let w = if v.is_finite() {
            v / max * (PANEL_W - LABEL_W - 70.0)
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            r#"<text x="{x0}" y="{}">{name}</text>"#,
            y + BAR_H - 4.0
        );
        let _ = writeln!(
            out,
            r#"<rect x="{}" y="{y}" width="{w:.1}" height="{BAR_H}" fill="{color}"/>"#,
            x0 + LABEL_W
        );
        let label = if v.is_finite() {
            format!("{v:.2} {unit}")
        } else {
            "-".into()
        };
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}">{label}</text>"#,
            x0 + LABEL_W + w + 4.0,
            y + BAR_H - 4.0
        );
    }
}

/// The chart as an SVG document.
pub fn svg(r: &Report) -> String {
    let mut workloads: Vec<_> = r.medians.keys().map(|k| k.1).collect();
    workloads.sort();
    workloads.dedup();
    let panel_h = Target::ALL_FOR_CHART.len() as f64 * (BAR_H + GAP) + 40.0;
    let height = 40.0 + workloads.len() as f64 * panel_h;
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="20" font-size="14" font-weight="bold">cargo xtask bench: throughput and CPU per query (fixed rate {} q/s)</text>
"#,
        2.0 * PANEL_W + 30.0,
        r.rate
    );
    for (i, wl) in workloads.iter().enumerate() {
        let y0 = 60.0 + i as f64 * panel_h;
        let rows = |f: fn(&crate::bench::Sample) -> f64| -> Vec<(&'static str, f64)> {
            Target::ALL_FOR_CHART
                .iter()
                .filter_map(|t| r.medians.get(&(*t, *wl)).map(|s| (t.label(), f(s))))
                .collect()
        };
        panel(
            &mut out,
            10.0,
            y0,
            &format!("{}: kq/s at full load", wl.label()),
            &rows(|s| s.qps / 1000.0),
            "k",
            "#4878a8",
        );
        panel(
            &mut out,
            PANEL_W + 20.0,
            y0,
            &format!("{}: CPU µs per query", wl.label()),
            &rows(|s| s.cpu_us),
            "µs",
            "#c8783c",
        );
    }
    out.push_str("</svg>\n");
    out
}
