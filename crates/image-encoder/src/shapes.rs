//! The synthetic captioning dataset of the no-download quickstart: one or two coloured shapes
//! at a few positions and sizes, with a caption describing them
//! ("a small red circle above a large blue square"); sizes and positions are jittered a little
//! so that held-out images are new images even where their captions occur in training.

use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const COLORS: [(&str, [u8; 3]); 4] = [
    ("red", [220, 30, 30]),
    ("green", [30, 180, 30]),
    ("blue", [30, 60, 220]),
    ("yellow", [230, 210, 20]),
];
const SHAPES: [&str; 3] = ["circle", "square", "triangle"];

#[derive(Clone, Copy, Debug)]
struct Shape {
    kind: usize,
    color: usize,
    large: bool,
}

fn inside(kind: usize, dx: f32, dy: f32, r: f32) -> bool {
    match kind {
        0 => dx * dx + dy * dy <= r * r,
        1 => dx.abs() <= r * 0.85 && dy.abs() <= r * 0.85,
        // upward triangle with its base at +r
        _ => dy <= r && dy >= -r && dx.abs() <= (dy + r) / 2.0,
    }
}

fn draw(img: &mut RgbImage, rng: &mut ChaCha8Rng, s: Shape, cx: f32, cy: f32, unit: f32) {
    // Jittered size and position, so that no two images are alike even when captions are.
    let r = if s.large { unit * 0.9 } else { unit * 0.5 } * rng.random_range(0.85..1.1);
    let cx = cx + unit * rng.random_range(-0.15..0.15);
    let cy = cy + unit * rng.random_range(-0.15..0.15);
    let (w, h) = img.dimensions();
    for y in 0..h {
        for x in 0..w {
            if inside(s.kind, x as f32 + 0.5 - cx, y as f32 + 0.5 - cy, r) {
                img.put_pixel(x, y, Rgb(COLORS[s.color].1));
            }
        }
    }
}

fn describe(s: Shape) -> String {
    format!(
        "a {} {} {}",
        if s.large { "large" } else { "small" },
        COLORS[s.color].0,
        SHAPES[s.kind]
    )
}

/// One image of side `size` and its caption.
pub fn shape_example(rng: &mut ChaCha8Rng, size: u32) -> (RgbImage, String) {
    let mut img = RgbImage::from_pixel(size, size, Rgb([245, 245, 245]));
    let pick = |rng: &mut ChaCha8Rng| Shape {
        kind: rng.random_range(0..3),
        color: rng.random_range(0..4),
        large: rng.random_bool(0.5),
    };
    let unit = size as f32 / 4.0;
    let c = size as f32 / 2.0;
    let a = pick(rng);
    if rng.random_bool(0.3) {
        draw(&mut img, rng, a, c, c, unit);
        return (img, describe(a));
    }
    let mut b = pick(rng);
    while b.kind == a.kind && b.color == a.color {
        b = pick(rng);
    }
    let caption = if rng.random_bool(0.5) {
        draw(&mut img, rng, a, c, unit, unit);
        draw(&mut img, rng, b, c, 3.0 * unit, unit);
        format!("{} above {}", describe(a), describe(b))
    } else {
        draw(&mut img, rng, a, unit, c, unit);
        draw(&mut img, rng, b, 3.0 * unit, c, unit);
        format!("{} left of {}", describe(a), describe(b))
    };
    (img, caption)
}

/// `n` examples from `seed`.
pub fn shapes(n: usize, seed: u64, size: u32) -> Vec<(RgbImage, String)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| shape_example(&mut rng, size)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_described() {
        let a = shapes(20, 3, 48);
        let b = shapes(20, 3, 48);
        assert!(a.iter().zip(&b).all(|(x, y)| x.0 == y.0 && x.1 == y.1));
        assert_ne!(
            a.iter().map(|x| x.1.clone()).collect::<Vec<_>>(),
            shapes(20, 4, 48)
                .iter()
                .map(|x| x.1.clone())
                .collect::<Vec<_>>()
        );
        for (img, cap) in &a {
            assert!(
                cap.starts_with("a small ") || cap.starts_with("a large "),
                "{cap}"
            );
            // Every named colour is actually drawn.
            for (name, rgb) in COLORS {
                if cap.contains(name) {
                    assert!(img.pixels().any(|p| p.0 == rgb), "{cap}: no {name} pixel");
                }
            }
        }
        let (img, cap) = &a.iter().find(|x| x.1.contains(" above ")).unwrap();
        // "X above Y": the first shape's colour appears in the top half.
        let first = COLORS
            .iter()
            .find(|c| cap.split(" above ").next().unwrap().contains(c.0))
            .unwrap()
            .1;
        assert!(img
            .enumerate_pixels()
            .any(|(_, y, p)| y < 24 && p.0 == first));
    }
}
