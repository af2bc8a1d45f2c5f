//! `loss.png`: train loss (raw, and smoothed) and val loss against the step, drawn with plotters'
//! bitmap backend. Text needs a font and the machine may have none, so DejaVu Sans Mono
//! (free to redistribute, license in `trainer/assets/DejaVuSansMono-LICENSE.txt`) is compiled
//! into the binary and registered with plotters' `ab_glyph` renderer.
//!
//! Smoothing: a bias-corrected exponential moving average whose window grows with the run
//! (n / 50 points, at least 1), so a long run's curve is readable and a short one stays faithful.
//! Log scale plots log10(loss) on a linear axis whose labels show the loss itself.
//! The image is drawn to a temporary file and renamed, so a reader never sees half a PNG.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::register_font;

use super::MetricsError;

static DEJAVU_SANS_MONO: &[u8] = include_bytes!("../../assets/DejaVuSansMono.ttf");

pub const PLOT_WIDTH: u32 = 1200;
pub const PLOT_HEIGHT: u32 = 700;

/// Registers the bundled font as "sans-serif", once per process.
pub(crate) fn ensure_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| register_font("sans-serif", FontStyle::Normal, DEJAVU_SANS_MONO).map_err(|_| "the bundled DejaVu Sans Mono font does not parse".to_string()))
        .clone()
}

/// Bias-corrected EMA of `points` with a window of max(1, n / 50) points.
pub(crate) fn smooth(points: &[(u64, f64)]) -> Vec<(u64, f64)> {
    let window = (points.len() / 50).max(1) as f64;
    let beta = 1.0 - 1.0 / window;
    let (mut avg, mut weight) = (0.0, 0.0);
    points
        .iter()
        .map(|&(step, y)| {
            avg = beta * avg + (1.0 - beta) * y;
            weight = beta * weight + (1.0 - beta);
            (step, avg / weight)
        })
        .collect()
}

/// Draws `train` and `val` (step, loss) to `path`. Non-finite values are left out.
pub fn write_loss_png(path: &Path, train: &[(u64, f64)], val: &[(u64, f64)], log_scale: bool) -> Result<(), MetricsError> {
    let plot_err = |what: String| MetricsError::Plot { path: path.into(), what };
    ensure_font().map_err(plot_err)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp: PathBuf = path.with_file_name(format!(".{name}.tmp.png"));
    draw(&tmp, train, val, log_scale).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        plot_err(e)
    })?;
    std::fs::rename(&tmp, path).map_err(|e| MetricsError::io(path, e))
}

fn draw(path: &Path, train: &[(u64, f64)], val: &[(u64, f64)], log_scale: bool) -> Result<(), String> {
    let finite = |pts: &[(u64, f64)]| -> Vec<(u64, f64)> { pts.iter().copied().filter(|p| p.1.is_finite() && (!log_scale || p.1 > 0.0)).collect() };
    let (train, val) = (finite(train), finite(val));
    let y_of = |loss: f64| if log_scale { loss.log10() } else { loss };
    let smoothed = smooth(&train);

    // Axis ranges over everything drawn, never empty.
    let steps = train.iter().chain(&val).map(|p| p.0);
    let (x_min, x_max) = (steps.clone().min().unwrap_or(0), steps.max().unwrap_or(1));
    let x_max = if x_max <= x_min { x_min + 1 } else { x_max };
    let ys: Vec<f64> = train.iter().chain(&val).map(|p| y_of(p.1)).collect();
    let (mut y_min, mut y_max) = ys.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &y| (a.min(y), b.max(y)));
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    let pad = ((y_max - y_min) * 0.05).max(0.05);
    let (y_min, y_max) = (y_min - pad, y_max + pad);

    let e = |err: &dyn std::fmt::Display| err.to_string();
    let root = BitMapBackend::new(path, (PLOT_WIDTH, PLOT_HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let title = match (train.last(), val.last()) {
        (Some(t), Some(v)) => format!("loss  (train {:.4} @ {}, val {:.4} @ {})", t.1, t.0, v.1, v.0),
        (Some(t), None) => format!("loss  (train {:.4} @ {})", t.1, t.0),
        (None, Some(v)) => format!("loss  (val {:.4} @ {})", v.1, v.0),
        (None, None) => "loss (no data yet)".to_string(),
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x_min as f64..x_max as f64, y_min..y_max)
        .map_err(|x| e(&x))?;
    let y_label = |y: &f64| if log_scale { format!("{:.3}", 10f64.powf(*y)) } else { format!("{y:.2}") };
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(if log_scale { "loss (log scale)" } else { "loss" })
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&y_label)
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()
        .map_err(|x| e(&x))?;

    let raw_color = RGBColor(160, 190, 230);
    let pts = |v: &[(u64, f64)]| v.iter().map(|&(s, l)| (s as f64, y_of(l))).collect::<Vec<_>>();
    if !train.is_empty() {
        chart
            .draw_series(LineSeries::new(pts(&train), raw_color.stroke_width(1)))
            .map_err(|x| e(&x))?
            .label("train")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], raw_color.stroke_width(2)));
        chart
            .draw_series(LineSeries::new(pts(&smoothed), BLUE.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label("train (smoothed)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    }
    if !val.is_empty() {
        chart
            .draw_series(LineSeries::new(pts(&val), RED.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label("val")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
        chart.draw_series(pts(&val).into_iter().map(|p| Circle::new(p, 4, RED.filled()))).map_err(|x| e(&x))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))
}
