//! A caption's attention strip (as in Show, Attend and Tell): the picture once per output word,
//! lit where that word's attention over the encoder's grid falls, the word beneath.

use image::imageops::{self, FilterType};
use image::{ImageBuffer, Luma, RgbImage};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::{draw_err, font, png, PlotError, Result, FONT};

/// Side of one picture in the strip, and the band under it for the word.
const TILE: u32 = 160;
const LABEL: u32 = 30;
const GAP: u32 = 8;
/// Pictures per row before the strip wraps.
const PER_ROW: usize = 6;
/// Brightness of the cells the word does not attend to (1 = the picture as it is).
const FLOOR: f32 = 0.25;

/// What to draw: `weights[i]` is word `i`'s attention over the `grid` (rows, columns) cells, in
/// row-major order.
pub struct Strip<'a> {
    pub title: &'a str,
    pub image: &'a RgbImage,
    pub words: &'a [String],
    pub weights: &'a [Vec<f32>],
    pub grid: (usize, usize),
}

/// Draws the strip as PNG bytes.
pub fn caption_strip(s: &Strip) -> Result<Vec<u8>> {
    let (gh, gw) = s.grid;
    if s.words.is_empty() || s.weights.len() < s.words.len() || gh * gw == 0 {
        return Err(PlotError::Empty(format!(
            "{}: {} words, {} attention rows",
            s.title,
            s.words.len(),
            s.weights.len()
        )));
    }
    if let Some(w) = s.weights.iter().find(|w| w.len() != gh * gw) {
        return Err(PlotError::Draw(format!(
            "{}: an attention row has {} weights for a {gh}×{gw} grid",
            s.title,
            w.len()
        )));
    }
    let picture = imageops::resize(s.image, TILE, TILE, FilterType::Triangle);
    let rows = s.words.len().div_ceil(PER_ROW) as u32;
    let cols = s.words.len().min(PER_ROW) as u32;
    let top = 34;
    let (width, height) = (GAP + cols * (TILE + GAP), top + rows * (TILE + LABEL + GAP));
    let mut canvas = RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    for (i, w) in s.weights.iter().take(s.words.len()).enumerate() {
        let (x, y) = tile_origin(i, top);
        let lit = spotlight(&picture, w, s.grid);
        imageops::replace(&mut canvas, &lit, x as i64, y as i64);
    }
    let mut rgb = canvas.into_raw();
    font();
    {
        let area = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        let text = |size: f64| (FONT, size).into_font().color(&BLACK);
        area.draw(&Text::new(s.title.to_string(), (GAP as i32, 8), text(16.0)))
            .map_err(draw_err)?;
        let centre = Pos::new(HPos::Center, VPos::Center);
        for (i, word) in s.words.iter().enumerate() {
            let (x, y) = tile_origin(i, top);
            let at = ((x + TILE / 2) as i32, (y + TILE + LABEL / 2) as i32);
            area.draw(&Text::new(word.clone(), at, text(15.0).pos(centre)))
                .map_err(draw_err)?;
        }
        area.present().map_err(draw_err)?;
    }
    png(rgb, width, height)
}

fn tile_origin(i: usize, top: u32) -> (u32, u32) {
    let (r, c) = ((i / PER_ROW) as u32, (i % PER_ROW) as u32);
    (GAP + c * (TILE + GAP), top + r * (TILE + LABEL + GAP))
}

/// The picture lit by one attention map: the grid upsampled smoothly to the picture's size,
/// scaled so that its strongest cell is 1, and every pixel dimmed towards `FLOOR` where the
/// weight is low.
fn spotlight(picture: &RgbImage, weights: &[f32], (gh, gw): (usize, usize)) -> RgbImage {
    let max = weights.iter().copied().fold(f32::MIN_POSITIVE, f32::max);
    let grid: ImageBuffer<Luma<f32>, Vec<f32>> =
        ImageBuffer::from_fn(gw as u32, gh as u32, |x, y| {
            Luma([weights[y as usize * gw + x as usize] / max])
        });
    let (w, h) = picture.dimensions();
    let map = imageops::resize(&grid, w, h, FilterType::Triangle);
    let mut out = picture.clone();
    for (p, a) in out.pixels_mut().zip(map.pixels()) {
        let light = FLOOR + (1.0 - FLOOR) * a.0[0].clamp(0.0, 1.0);
        for ch in p.0.iter_mut() {
            *ch = (*ch as f32 * light).round() as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tile_per_word_lit_where_its_attention_falls() {
        let img = RgbImage::from_pixel(64, 64, image::Rgb([200, 200, 200]));
        let words: Vec<String> = ["a", "red", "square", "</s>"].map(String::from).to_vec();
        // Word i attends to cell i of a 2×2 grid.
        let weights: Vec<Vec<f32>> = (0..4)
            .map(|i| (0..4).map(|c| if c == i { 1.0 } else { 0.0 }).collect())
            .collect();
        let s = Strip {
            title: "t",
            image: &img,
            words: &words,
            weights: &weights,
            grid: (2, 2),
        };
        let out = image::load_from_memory(&caption_strip(&s).unwrap())
            .unwrap()
            .to_rgb8();
        assert_eq!(out.width(), GAP + 4 * (TILE + GAP));
        assert_eq!(out.height(), 34 + TILE + LABEL + GAP);
        // Word 1 ("red") attends to the top-right cell: bright there, dim at the top left.
        let (x, y) = tile_origin(1, 34);
        let bright = out.get_pixel(x + TILE - 10, y + 10).0[0];
        let dim = out.get_pixel(x + 10, y + 10).0[0];
        assert!(bright > 180 && dim < 80, "{bright} {dim}");
        let wrong = Strip { grid: (3, 3), ..s };
        assert!(caption_strip(&wrong).is_err());
    }
}
