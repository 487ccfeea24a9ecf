//! A minimal SVG line plot: enough for cost/quality and recall/false-hit curves, no dependency.

use std::fmt::Write;

pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Dashed lines for reference curves (random, oracle, baselines).
    pub dashed: bool,
}

const COLORS: &[&str] = &["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];

/// Renders `series` on shared axes. `x` and `y` are the axis ranges.
pub fn line_plot(title: &str, x_label: &str, y_label: &str, x: (f64, f64), y: (f64, f64), series: &[Series]) -> String {
    let (w, h, left, right, top, bottom) = (760.0, 520.0, 70.0, 200.0, 40.0, 60.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let sx = |v: f64| left + (v - x.0) / (x.1 - x.0).max(1e-12) * pw;
    let sy = |v: f64| top + ph - (v - y.0) / (y.1 - y.0).max(1e-12) * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ =
        write!(s, r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#, left + pw / 2.0, esc(title));
    for i in 0..=10 {
        let fx = x.0 + (x.1 - x.0) * i as f64 / 10.0;
        let fy = y.0 + (y.1 - y.0) * i as f64 / 10.0;
        let _ = write!(s, r##"<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" stroke="#eee"/>"##, sx(fx), top, top + ph);
        let _ = write!(s, r##"<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="#eee"/>"##, left, sy(fy), left + pw);
        let _ =
            write!(s, r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#, sx(fx), top + ph + 16.0, fmt_tick(fx));
        let _ = write!(s, r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#, left - 6.0, sy(fy) + 4.0, fmt_tick(fy));
    }
    let _ = write!(s, r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##);
    let _ = write!(s, r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#, left + pw / 2.0, h - 18.0, esc(x_label));
    let _ = write!(
        s,
        r#"<text transform="translate(18,{}) rotate(-90)" text-anchor="middle">{}</text>"#,
        top + ph / 2.0,
        esc(y_label)
    );
    for (i, ser) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<String> = ser
            .points
            .iter()
            .filter(|(a, b)| a.is_finite() && b.is_finite())
            .map(|(a, b)| format!("{:.2},{:.2}", sx(*a), sy(b.clamp(y.0, y.1))))
            .collect();
        let dash = if ser.dashed { r#" stroke-dasharray="6,4""# } else { "" };
        let _ =
            write!(s, r#"<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{}"/>"#, pts.join(" "));
        let ly = top + 16.0 + 20.0 * i as f64;
        let _ = write!(
            s,
            r#"<line x1="{0}" y1="{ly}" x2="{1}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/>"#,
            left + pw + 12.0,
            left + pw + 36.0
        );
        let _ = write!(s, r#"<text x="{}" y="{}">{}</text>"#, left + pw + 42.0, ly + 4.0, esc(&ser.name));
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_tick(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series_and_escapes_text() {
        let svg = line_plot(
            "a < b",
            "x",
            "y",
            (0.0, 1.0),
            (0.0, 1.0),
            &[
                Series { name: "ours".into(), points: vec![(0.0, 0.0), (1.0, 1.0)], dashed: false },
                Series { name: "random".into(), points: vec![(0.0, 0.0), (1.0, 0.5)], dashed: true },
            ],
        );
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("a &lt; b") && svg.contains("stroke-dasharray"));
    }
}
