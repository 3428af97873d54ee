//! Pictures of what a model does, as PNG or SVG bytes: training curves ([`curves`]),
//! attention heat-maps ([`heatmap`]) and captions' attention strips ([`caption_strip`], PNG). It knows
//! nothing of models, files or configs: callers hand it numbers and strings, and write the bytes
//! where they belong (atomically, in the pipeline).
//!
//! Text is set in DejaVu Sans (Bitstream Vera licence with public-domain changes, embedded
//! through the `dejavu` crate), registered with plotters' own rasteriser, so a PNG looks the same
//! on every machine whatever fonts it has installed. SVGs name the same family and fall back to
//! the viewer's sans-serif.

pub mod curves;
pub mod heatmap;
pub mod strip;

use std::sync::Once;

use plotters::style::FontStyle;

pub use curves::{curves, Figure, Panel, Series};
pub use heatmap::{heatmap, Heatmap};
pub use strip::{caption_strip, Strip};

/// The font family every picture uses.
pub(crate) const FONT: &str = "sans-serif";

/// What went wrong while drawing.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("drawing failed: {0}")]
    Draw(String),
    #[error("PNG encoding failed: {0}")]
    Encode(String),
    #[error("nothing to plot: {0}")]
    Empty(String),
}

pub type Result<T> = std::result::Result<T, PlotError>;

/// PNG (raster, the embedded font) or SVG (vector, text as text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Png,
    Svg,
}

impl Format {
    /// The format a file name asks for by its extension (`.png` or `.svg`).
    pub fn from_path(path: &std::path::Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "png" => Some(Format::Png),
            "svg" => Some(Format::Svg),
            _ => None,
        }
    }
}

/// Registers the embedded font with plotters once per process.
pub(crate) fn font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType font shipped by the `dejavu` crate; a failure here
        // would be a broken dependency, and plotters then draws no text rather than panicking.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

/// Encodes an RGB buffer as PNG.
pub(crate) fn png(rgb: Vec<u8>, width: u32, height: u32) -> Result<Vec<u8>> {
    let img = image::RgbImage::from_raw(width, height, rgb)
        .ok_or_else(|| PlotError::Encode("buffer size does not match the picture".into()))?;
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| PlotError::Encode(e.to_string()))?;
    Ok(out.into_inner())
}

pub(crate) fn draw_err<E: std::fmt::Debug>(e: E) -> PlotError {
    PlotError::Draw(format!("{e:?}"))
}
