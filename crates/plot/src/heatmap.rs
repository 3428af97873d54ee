//! An attention heat-map: one row per output token, one column per memory position (source
//! tokens), each cell the weight the row's step gave the column, on the viridis scale.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::{draw_err, font, png, Format, PlotError, Result, FONT};

/// Side of one cell, in pixels.
const CELL: u32 = 26;
const LABEL_SIZE: f64 = 14.0;
const MARGIN: u32 = 12;
/// Width of the colour bar and its labels.
const BAR: u32 = 70;

/// What to draw: `weights[r][c]` is row `r`'s weight on column `c` (rows may be longer than
/// `columns`: the extra positions, padding, are not drawn).
pub struct Heatmap<'a> {
    pub title: &'a str,
    pub columns: &'a [String],
    pub rows: &'a [String],
    pub weights: &'a [Vec<f32>],
}

/// Draws the heat-map as PNG or SVG bytes.
pub fn heatmap(h: &Heatmap, format: Format) -> Result<Vec<u8>> {
    if h.columns.is_empty() || h.rows.is_empty() || h.weights.len() < h.rows.len() {
        return Err(PlotError::Empty(format!(
            "{}: {} columns, {} rows, {} weight rows",
            h.title,
            h.columns.len(),
            h.rows.len(),
            h.weights.len()
        )));
    }
    font();
    let label = |s: &String| text_width(s);
    let left = h.rows.iter().map(label).max().unwrap_or(0) + 2 * MARGIN;
    let top = h.columns.iter().map(label).max().unwrap_or(0) + 2 * MARGIN + 30;
    let (cols, rows) = (h.columns.len() as u32, h.rows.len() as u32);
    let size = (
        (left + cols * CELL + MARGIN + BAR).max(240),
        top + rows * CELL + MARGIN,
    );
    let layout = Layout { left, top };
    match format {
        Format::Svg => {
            let mut svg = String::new();
            draw(
                SVGBackend::with_string(&mut svg, size).into_drawing_area(),
                h,
                layout,
            )?;
            Ok(svg.into_bytes())
        }
        Format::Png => {
            let mut rgb = vec![255u8; (size.0 * size.1 * 3) as usize];
            draw(
                BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area(),
                h,
                layout,
            )?;
            png(rgb, size.0, size.1)
        }
    }
}

#[derive(Clone, Copy)]
struct Layout {
    left: u32,
    top: u32,
}

/// The width of a label in the embedded font (an estimate where it cannot be measured).
fn text_width(s: &str) -> u32 {
    let font = FontDesc::new(FontFamily::Name(FONT), LABEL_SIZE, FontStyle::Normal);
    font.box_size(s)
        .map(|(w, _)| w)
        .unwrap_or(8 * s.chars().count() as u32)
}

fn draw<DB: DrawingBackend>(area: DrawingArea<DB, Shift>, h: &Heatmap, l: Layout) -> Result<()> {
    area.fill(&WHITE).map_err(draw_err)?;
    let text = |size: f64| (FONT, size).into_font().color(&BLACK);
    area.draw(&Text::new(
        h.title.to_string(),
        (MARGIN as i32, MARGIN as i32),
        text(16.0),
    ))
    .map_err(draw_err)?;
    let (x0, y0) = (l.left as i32, l.top as i32);
    let cell = CELL as i32;
    for (r, row) in h.weights.iter().take(h.rows.len()).enumerate() {
        for (c, &w) in row.iter().take(h.columns.len()).enumerate() {
            let (x, y) = (x0 + c as i32 * cell, y0 + r as i32 * cell);
            let color = ViridisRGB::get_color(w.clamp(0.0, 1.0));
            area.draw(&Rectangle::new(
                [(x, y), (x + cell, y + cell)],
                color.filled(),
            ))
            .map_err(draw_err)?;
        }
    }
    // Output tokens down the left, right-aligned; source tokens across the top, read upwards.
    let right_mid = Pos::new(HPos::Right, VPos::Center);
    for (r, label) in h.rows.iter().enumerate() {
        let y = y0 + r as i32 * cell + cell / 2;
        area.draw(&Text::new(
            label.clone(),
            (x0 - 6, y),
            text(LABEL_SIZE).pos(right_mid),
        ))
        .map_err(draw_err)?;
    }
    let up = text(LABEL_SIZE)
        .transform(FontTransform::Rotate270)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (c, label) in h.columns.iter().enumerate() {
        let x = x0 + c as i32 * cell + cell / 2;
        area.draw(&Text::new(label.clone(), (x, y0 - 6), up.clone()))
            .map_err(draw_err)?;
    }
    colour_bar(
        &area,
        x0 + h.columns.len() as i32 * cell + MARGIN as i32,
        y0,
    )?;
    area.present().map_err(draw_err)
}

/// The scale: 0 at the bottom, 1 at the top, beside the cells.
fn colour_bar<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, x: i32, y: i32) -> Result<()> {
    let height = 4 * CELL as i32;
    for i in 0..height {
        let v = 1.0 - i as f32 / (height - 1) as f32;
        let color = ViridisRGB::get_color(v);
        area.draw(&Rectangle::new(
            [(x, y + i), (x + 14, y + i + 1)],
            color.filled(),
        ))
        .map_err(draw_err)?;
    }
    let style = (FONT, 12.0)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (v, label) in [(1.0, "1"), (0.5, "0.5"), (0.0, "0")] {
        let ly = y + ((1.0 - v) * (height - 1) as f64) as i32;
        area.draw(&Text::new(label, (x + 18, ly), style.clone()))
            .map_err(draw_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn one_cell_per_weight_and_sizes_follow_the_tokens() {
        let cols = strings("ein Hund läuft </s>");
        let rows = strings("a dog runs </s>");
        let weights: Vec<Vec<f32>> = (0..4)
            .map(|r| (0..6).map(|c| if c == r { 0.7 } else { 0.1 }).collect())
            .collect();
        let h = Heatmap {
            title: "test",
            columns: &cols,
            rows: &rows,
            weights: &weights,
        };
        let svg = String::from_utf8(heatmap(&h, Format::Svg).unwrap()).unwrap();
        // 16 cells (padding columns 5 and 6 left out), the bar's 104 one-pixel strips and the
        // background.
        assert_eq!(svg.matches("<rect").count(), 16 + 4 * CELL as usize + 1);
        assert!(svg.contains("läuft"));
        let png = heatmap(&h, Format::Png).unwrap();
        let img = image::load_from_memory(&png).unwrap();
        let wider = Heatmap {
            columns: &strings("ein Hund läuft schnell </s>"),
            ..h
        };
        let img2 = image::load_from_memory(&heatmap(&wider, Format::Png).unwrap()).unwrap();
        assert_eq!(img2.width() - img.width(), CELL);
        let widest = |c: &[String]| c.iter().map(|s| text_width(s)).max().unwrap();
        assert_eq!(
            img2.height() - img.height(),
            widest(wider.columns) - widest(&cols)
        );
    }

    #[test]
    fn missing_rows_are_an_error() {
        let cols = strings("a b");
        let rows = strings("x y");
        let h = Heatmap {
            title: "t",
            columns: &cols,
            rows: &rows,
            weights: &[vec![1.0, 0.0]],
        };
        assert!(matches!(heatmap(&h, Format::Png), Err(PlotError::Empty(_))));
    }
}
