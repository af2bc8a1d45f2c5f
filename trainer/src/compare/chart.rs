//! The comparison charts: every run's validation loss against training tokens on one chart
//! (`val_loss_vs_tokens.png`), and the same zoomed to the last 50% of the tokens
//! (`val_loss_vs_tokens_zoom.png`) where the curves are close and the differences matter.
//!
//! Same setup as `loss.png` (`metrics::png`): plotters' bitmap backend, the bundled DejaVu Sans
//! font, the same legend box, drawn to a temporary file and renamed. Each run gets its own color
//! (dashed lines once the 12 colors are used up); baseline runs are drawn thicker, and the target
//! loss is a grey horizontal line.

use std::path::Path;

use plotters::prelude::*;

use super::target::Target;
use super::CompareError;
use crate::metrics::{
    draw_legend, legend_line, write_png as write_png_file, MetricsError, PngError, AXIS_DESC_FONT, LABEL_FONT,
    PLOT_HEIGHT, PLOT_WIDTH,
};

pub const FULL_PNG: &str = "val_loss_vs_tokens.png";
pub const ZOOM_PNG: &str = "val_loss_vs_tokens_zoom.png";

/// Distinct, strong colors (Tableau 10 plus two).
const PALETTE: [RGBColor; 12] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 0),
    RGBColor(0, 0, 160),
];

/// One curve to draw.
pub struct Series {
    pub label: String,
    /// (tokens, val loss) per eval, in step order.
    pub points: Vec<(f64, f64)>,
    pub baseline: bool,
}

/// Writes both charts into `out_dir`.
pub fn write_charts(
    out_dir: &Path,
    title: &str,
    series: &[Series],
    target: Option<&Target>,
) -> Result<(), CompareError> {
    let x_max = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).fold(0.0, f64::max);
    write_png(&out_dir.join(FULL_PNG), title, series, target, 0.0)?;
    write_png(&out_dir.join(ZOOM_PNG), &format!("{title} (last 50% of tokens)"), series, target, 0.5 * x_max)
}

/// `points` from `x_lo` on; the segment crossing `x_lo` is cut there (linear interpolation).
fn clip_from(points: &[(f64, f64)], x_lo: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for (i, &(x, y)) in points.iter().enumerate() {
        if x < x_lo {
            continue;
        }
        if out.is_empty() && i > 0 && x > x_lo {
            let (x0, y0) = points[i - 1];
            out.push((x_lo, y0 + (y - y0) * (x_lo - x0) / (x - x0)));
        }
        out.push((x, y));
    }
    out
}

fn write_png(
    path: &Path,
    title: &str,
    series: &[Series],
    target: Option<&Target>,
    x_lo: f64,
) -> Result<(), CompareError> {
    write_png_file(path, |tmp| draw(tmp, title, series, target, x_lo)).map_err(|e| match e {
        PngError::Draw(what) => CompareError::from(MetricsError::Plot { path: path.into(), what }),
        PngError::Io(e) => CompareError::io(path, e),
    })
}

/// Tick labels in tokens: 0, 512K, 1.5M, 2.25B.
fn token_label(x: f64) -> String {
    match x.abs() {
        v if v >= 1e9 => format!("{}B", trim(x / 1e9)),
        v if v >= 1e6 => format!("{}M", trim(x / 1e6)),
        v if v >= 1e3 => format!("{}K", trim(x / 1e3)),
        _ => format!("{x:.0}"),
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A series to draw: its index (→ color), itself, and its points inside the x range.
type Curve<'a> = (usize, &'a Series, Vec<(f64, f64)>);

fn draw(path: &Path, title: &str, series: &[Series], target: Option<&Target>, x_lo: f64) -> Result<(), String> {
    let e = |err: &dyn std::fmt::Display| err.to_string();
    let curves: Vec<Curve> = series
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                i,
                s,
                clip_from(&s.points, x_lo)
                    .into_iter()
                    .filter(|p| p.0.is_finite() && p.1.is_finite())
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|c| !c.2.is_empty())
        .collect();

    // Axis ranges over everything drawn (the target included), never empty.
    let xs = curves.iter().flat_map(|c| c.2.iter().map(|p| p.0));
    let x_max = xs.fold(x_lo, f64::max);
    let x_max = if x_max <= x_lo { x_lo + 1.0 } else { x_max };
    let ys = curves.iter().flat_map(|c| c.2.iter().map(|p| p.1)).chain(target.map(|t| t.loss));
    let (mut y_min, mut y_max) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| (a.min(y), b.max(y)));
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    let pad = ((y_max - y_min) * 0.05).max(0.01);
    let (y_min, y_max) = (y_min - pad, y_max + pad);
    let decimals = if y_max - y_min < 0.5 { 3 } else { 2 };

    let root = BitMapBackend::new(path, (PLOT_WIDTH, PLOT_HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x_lo..x_max, y_min..y_max)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("training tokens")
        .y_desc("validation loss")
        .x_label_formatter(&|x| token_label(*x))
        .y_label_formatter(&|y| format!("{y:.decimals$}"))
        .label_style(LABEL_FONT)
        .axis_desc_style(AXIS_DESC_FONT)
        .draw()
        .map_err(|x| e(&x))?;

    if let Some(t) = target {
        let grey = RGBColor(120, 120, 120);
        chart
            .draw_series(DashedLineSeries::new(vec![(x_lo, t.loss), (x_max, t.loss)], 8, 6, grey.stroke_width(1)))
            .map_err(|x| e(&x))?
            .label(format!("target {:.4} ({})", t.loss, t.baseline))
            .legend(legend_line(grey.stroke_width(1)));
    }
    for (i, s, pts) in &curves {
        let color = PALETTE[i % PALETTE.len()];
        let style = color.stroke_width(if s.baseline { 3 } else { 2 });
        let label = format!("{} ({:.4})", s.label, s.points.last().map_or(f64::NAN, |p| p.1));
        let legend = legend_line(style);
        if *i < PALETTE.len() {
            chart.draw_series(LineSeries::new(pts.clone(), style)).map_err(|x| e(&x))?.label(label).legend(legend);
        } else {
            chart
                .draw_series(DashedLineSeries::new(pts.clone(), 10, 5, style))
                .map_err(|x| e(&x))?
                .label(label)
                .legend(legend);
        }
        // Markers at the evals themselves (not at a cut made by the zoom).
        let evals =
            s.points.iter().filter(|p| p.0 >= x_lo && p.1.is_finite()).map(|&p| Circle::new(p, 3, color.filled()));
        chart.draw_series(evals).map_err(|x| e(&x))?;
    }
    draw_legend(&mut chart, 14)?;
    root.present().map_err(|x| e(&x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zoom_cuts_the_crossing_segment_at_the_edge() {
        let pts = [(0.0, 5.0), (100.0, 4.0), (200.0, 3.0), (300.0, 2.0)];
        assert_eq!(clip_from(&pts, 150.0), vec![(150.0, 3.5), (200.0, 3.0), (300.0, 2.0)]);
        assert_eq!(clip_from(&pts, 100.0), vec![(100.0, 4.0), (200.0, 3.0), (300.0, 2.0)]);
        assert_eq!(clip_from(&pts, 0.0), pts.to_vec());
        assert!(clip_from(&pts, 400.0).is_empty());
        assert_eq!(token_label(1_500_000.0), "1.5M");
        assert_eq!(token_label(524_288.0), "524.29K");
    }
}
