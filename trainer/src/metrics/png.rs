//! What every chart of the trainer shares (`loss.png` in [`super::plot`], the charts of
//! `trainer compare`): the bundled font, the fonts of labels and legends, a legend line, the
//! legend box, and writing through a temporary file so that a reader never sees half a PNG.
//!
//! Text needs a font and the machine may have none, so DejaVu Sans (free to redistribute,
//! license in `trainer/assets/DejaVuSans-LICENSE.txt`) is compiled into the binary and
//! registered with plotters' `ab_glyph` renderer. A proportional font: plotters places each glyph
//! by its ink, not its advance box, which in a monospace font opened gaps after narrow glyphs
//! ("2. 50e- 03").

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::CoordTranslate;
use plotters::prelude::*;
use plotters::style::register_font;

static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// Size of the charts of `trainer compare`.
pub const PLOT_WIDTH: u32 = 1200;
pub const PLOT_HEIGHT: u32 = 700;

/// Tick labels and axis descriptions.
pub(crate) const LABEL_FONT: (&str, u32) = ("sans-serif", 15);
pub(crate) const AXIS_DESC_FONT: (&str, u32) = ("sans-serif", 17);

/// Why a PNG could not be written.
pub(crate) enum PngError {
    /// Drawing failed (font, plotters); the message.
    Draw(String),
    /// Renaming the finished temporary file into place failed.
    Io(std::io::Error),
}

/// Registers the bundled font as "sans-serif", once per process.
pub(crate) fn ensure_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            register_font("sans-serif", FontStyle::Normal, DEJAVU_SANS)
                .map_err(|_| "the bundled DejaVu Sans font does not parse".to_string())
        })
        .clone()
}

/// Registers the font, has `draw` draw into `.NAME.tmp.png` beside `path` and renames it to
/// `path`; the temporary file is removed when drawing fails.
pub(crate) fn write_png(path: &Path, draw: impl FnOnce(&Path) -> Result<(), String>) -> Result<(), PngError> {
    ensure_font().map_err(PngError::Draw)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp: PathBuf = path.with_file_name(format!(".{name}.tmp.png"));
    draw(&tmp).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        PngError::Draw(e)
    })?;
    std::fs::rename(&tmp, path).map_err(PngError::Io)
}

/// The legend's sample of a series: a 20-pixel line in `style`.
pub(crate) fn legend_line(style: impl Into<ShapeStyle>) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    let style = style.into();
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style)
}

/// The legend box of every chart: upper right, on a translucent white background, framed.
pub(crate) fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    font_size: u32,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", font_size))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| x.to_string())
}
