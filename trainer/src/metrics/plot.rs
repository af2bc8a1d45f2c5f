//! `loss.png`: two panels drawn with plotters' bitmap backend.
//! - top: train loss (raw, and smoothed) and val loss against the step;
//! - bottom: the two learning rates (Muon, AdamW; left axis) and the gradient norm before
//!   clipping (right axis) against the step.
//!
//! The font, legend and temporary-file writing are those of every chart ([`super::png`]).
//! Axis labels get as many decimals as the tick spacing needs (a loss range of 4.501–4.503 is not labelled 4.50, 4.50, 4.50), steps are
//! integers, learning rates are written 3.0e-03.
//!
//! Smoothing: a bias-corrected exponential moving average whose window grows with the run
//! (n / 50 points, at least 1), so a long run's curve is readable and a short one stays faithful.
//! Log scale plots log10(loss) on a linear axis whose labels show the loss itself.
//! The image is drawn to a temporary file and renamed, so a reader never sees half a PNG.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::png::{draw_legend, legend_line, write_png, PngError, AXIS_DESC_FONT, LABEL_FONT, PLOT_WIDTH};
use super::MetricsError;

/// Size of `loss.png` (loss panel + learning-rate / gradient-norm panel).
pub const LOSS_PLOT_HEIGHT: u32 = 1050;

/// Everything `loss.png` shows, as (step, value) points.
#[derive(Debug, Clone, Default)]
pub struct Curves {
    pub train: Vec<(u64, f64)>,
    pub val: Vec<(u64, f64)>,
    pub lr_muon: Vec<(u64, f64)>,
    pub lr_adamw: Vec<(u64, f64)>,
    pub grad_norm: Vec<(u64, f64)>,
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

/// Decimals that tell apart labels ~`span / 10` apart (0 to 6).
pub(crate) fn label_decimals(span: f64) -> usize {
    if !(span.is_finite() && span > 0.0) {
        return 2;
    }
    (-(span / 10.0).log10()).ceil().clamp(0.0, 6.0) as usize
}

/// Draws `curves` to `path`. Non-finite values are left out.
pub fn write_loss_png(path: &Path, curves: &Curves, log_scale: bool) -> Result<(), MetricsError> {
    write_png(path, |tmp| draw(tmp, curves, log_scale)).map_err(|e| match e {
        PngError::Draw(what) => MetricsError::Plot { path: path.into(), what },
        PngError::Io(e) => MetricsError::io(path, e),
    })
}

fn finite(pts: &[(u64, f64)], positive: bool) -> Vec<(u64, f64)> {
    pts.iter().copied().filter(|p| p.1.is_finite() && (!positive || p.1 > 0.0)).collect()
}

/// (min, max) of `ys` padded by 5% (at least `min_pad`); (0, 1) when empty.
fn padded_range(ys: impl Iterator<Item = f64>, min_pad: f64) -> (f64, f64) {
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| (a.min(y), b.max(y)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(min_pad);
    (lo - pad, hi + pad)
}

fn draw(path: &Path, c: &Curves, log_scale: bool) -> Result<(), String> {
    let (train, val) = (finite(&c.train, log_scale), finite(&c.val, log_scale));
    let (lr_muon, lr_adamw, gnorm) =
        (finite(&c.lr_muon, false), finite(&c.lr_adamw, false), finite(&c.grad_norm, false));
    // One step axis for both panels, never empty.
    let steps = train.iter().chain(&val).chain(&lr_muon).chain(&lr_adamw).chain(&gnorm).map(|p| p.0);
    let (x_min, x_max) = (steps.clone().min().unwrap_or(0), steps.max().unwrap_or(1));
    let x_range = x_min..x_max.max(x_min + 1);

    let root = BitMapBackend::new(path, (PLOT_WIDTH, LOSS_PLOT_HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| x.to_string())?;
    let (top, bottom) = root.split_vertically(LOSS_PLOT_HEIGHT * 62 / 100);
    draw_loss(&top, &train, &val, x_range.clone(), log_scale)?;
    draw_lr_and_grad_norm(&bottom, &lr_muon, &lr_adamw, &gnorm, x_range)?;
    root.present().map_err(|x| x.to_string())
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// A panel of `loss.png`: its caption and the label areas both panels share.
fn panel<'a, 'b>(area: &'a Area<'b>, title: String, caption_size: u32) -> ChartBuilder<'a, 'static, BitMapBackend<'b>> {
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, ("sans-serif", caption_size))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(95)
        .right_y_label_area_size(80);
    builder
}

fn draw_loss(
    area: &Area,
    train: &[(u64, f64)],
    val: &[(u64, f64)],
    x_range: std::ops::Range<u64>,
    log_scale: bool,
) -> Result<(), String> {
    let e = |err: &dyn std::fmt::Display| err.to_string();
    let y_of = |loss: f64| if log_scale { loss.log10() } else { loss };
    let smoothed = smooth(train);
    let (y_min, y_max) = padded_range(train.iter().chain(val).map(|p| y_of(p.1)), if log_scale { 0.005 } else { 0.05 });
    let title = match (train.last(), val.last()) {
        (Some(t), Some(v)) => format!("loss  (train {:.4} @ {}, val {:.4} @ {})", t.1, t.0, v.1, v.0),
        (Some(t), None) => format!("loss  (train {:.4} @ {})", t.1, t.0),
        (None, Some(v)) => format!("loss  (val {:.4} @ {})", v.1, v.0),
        (None, None) => "loss (no data yet)".to_string(),
    };
    let mut chart = panel(area, title, 24).build_cartesian_2d(x_range, y_min..y_max).map_err(|x| e(&x))?;
    let decimals = label_decimals(if log_scale { 10f64.powf(y_max) - 10f64.powf(y_min) } else { y_max - y_min });
    let y_label =
        |y: &f64| if log_scale { format!("{:.*}", decimals + 1, 10f64.powf(*y)) } else { format!("{y:.decimals$}") };
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(if log_scale { "loss (log scale)" } else { "loss" })
        .y_label_formatter(&y_label)
        .label_style(LABEL_FONT)
        .axis_desc_style(AXIS_DESC_FONT)
        .draw()
        .map_err(|x| e(&x))?;

    let raw_color = RGBColor(160, 190, 230);
    let pts = |v: &[(u64, f64)]| v.iter().map(|&(s, l)| (s, y_of(l))).collect::<Vec<_>>();
    if !train.is_empty() {
        chart
            .draw_series(LineSeries::new(pts(train), raw_color.stroke_width(1)))
            .map_err(|x| e(&x))?
            .label("train")
            .legend(legend_line(raw_color.stroke_width(2)));
        chart
            .draw_series(LineSeries::new(pts(&smoothed), BLUE.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label("train (smoothed)")
            .legend(legend_line(BLUE.stroke_width(2)));
    }
    if !val.is_empty() {
        chart
            .draw_series(LineSeries::new(pts(val), RED.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label("val")
            .legend(legend_line(RED.stroke_width(2)));
        chart.draw_series(pts(val).into_iter().map(|p| Circle::new(p, 4, RED.filled()))).map_err(|x| e(&x))?;
    }
    draw_legend(&mut chart, 16)
}

fn draw_lr_and_grad_norm(
    area: &Area,
    lr_muon: &[(u64, f64)],
    lr_adamw: &[(u64, f64)],
    gnorm: &[(u64, f64)],
    x_range: std::ops::Range<u64>,
) -> Result<(), String> {
    let e = |err: &dyn std::fmt::Display| err.to_string();
    let lr_max = lr_muon.iter().chain(lr_adamw).map(|p| p.1).fold(0.0f64, f64::max);
    let lr_top = if lr_max > 0.0 { lr_max * 1.08 } else { 1e-3 };
    let (_, g_max) = padded_range(gnorm.iter().map(|p| p.1), 0.05);
    let g_top = g_max.max(1e-3);
    let title = match gnorm.last() {
        Some(g) => format!("learning rates (left) and gradient norm (right; {:.3} @ {})", g.1, g.0),
        None => "learning rates (left) and gradient norm (right)".to_string(),
    };
    let mut chart = panel(area, title, 20)
        .build_cartesian_2d(x_range.clone(), 0.0..lr_top)
        .map_err(|x| e(&x))?
        .set_secondary_coord(x_range, 0.0..g_top);
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("learning rate")
        .y_label_formatter(&|y: &f64| super::sci(*y))
        .label_style(LABEL_FONT)
        .axis_desc_style(AXIS_DESC_FONT)
        .draw()
        .map_err(|x| e(&x))?;
    let g_decimals = label_decimals(g_top);
    chart
        .configure_secondary_axes()
        .y_desc("gradient norm (before clipping)")
        .y_label_formatter(&|y: &f64| format!("{y:.g_decimals$}"))
        .label_style(LABEL_FONT)
        .axis_desc_style(AXIS_DESC_FONT)
        .draw()
        .map_err(|x| e(&x))?;
    let (muon_color, adamw_color, g_color) = (RGBColor(200, 80, 0), RGBColor(0, 140, 70), RGBColor(90, 90, 90));
    if !lr_muon.is_empty() {
        chart
            .draw_series(LineSeries::new(lr_muon.to_vec(), muon_color.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label("lr Muon")
            .legend(legend_line(muon_color.stroke_width(2)));
    }
    if !lr_adamw.is_empty() {
        chart
            .draw_series(LineSeries::new(lr_adamw.to_vec(), adamw_color.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label("lr AdamW")
            .legend(legend_line(adamw_color.stroke_width(2)));
    }
    if !gnorm.is_empty() {
        chart
            .draw_secondary_series(LineSeries::new(gnorm.to_vec(), g_color.stroke_width(1)))
            .map_err(|x| e(&x))?
            .label("grad norm (right)")
            .legend(legend_line(g_color.stroke_width(2)));
    }
    draw_legend(&mut chart, 16)
}
