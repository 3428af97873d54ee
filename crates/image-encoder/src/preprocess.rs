//! Image decoding and preprocessing: size limits against decompression bombs, aspect-preserving
//! resize then centre crop, optional augmentation (horizontal flip, crop jitter) and per-backbone
//! normalisation into a `(3, S, S)` tensor.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::imageops::FilterType;
use image::{ImageReader, Limits, RgbImage};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Why an image could not be used; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read image {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("image {path} is {bytes} bytes, over the limit of {max} bytes")]
    FileTooBig { path: PathBuf, bytes: u64, max: u64 },
    #[error(
        "image {path} is {width}x{height} pixels, over the limit of {max_width}x{max_height} (data.max_image_side)"
    )]
    TooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
        max_width: u32,
        max_height: u32,
    },
    #[error("image {path} cannot be decoded: {msg}")]
    Decode { path: PathBuf, msg: String },
    #[error("tensor: {0}")]
    Candle(#[from] candle_core::Error),
}

/// How pixels are normalised for a backbone.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Normalization {
    /// `(x - 127) / 128` on 0..255 pixels (the EfficientNet-Lite reference).
    Lite,
    /// ImageNet mean and standard deviation on 0..1 pixels (torchvision's convention).
    ImageNet,
}

/// Limits applied before any pixel is allocated.
#[derive(Clone, Copy, Debug)]
pub struct ImageLimits {
    pub max_file_bytes: u64,
    pub max_width: u32,
    pub max_height: u32,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self {
            max_file_bytes: 50 << 20,
            max_width: 10_000,
            max_height: 10_000,
        }
    }
}

/// Decodes a JPEG or PNG file into RGB, refusing oversized files and dimensions.
pub fn load_rgb(path: &Path, limits: &ImageLimits) -> Result<RgbImage, ImageError> {
    let io = |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = std::fs::metadata(path).map_err(io)?.len();
    if bytes > limits.max_file_bytes {
        return Err(ImageError::FileTooBig {
            path: path.to_path_buf(),
            bytes,
            max: limits.max_file_bytes,
        });
    }
    decode_rgb(&std::fs::read(path).map_err(io)?, path, limits)
}

/// Decodes JPEG or PNG bytes into RGB within the limits; `name` (a path, or what stands for one,
/// such as an upload's field) labels the errors.
pub fn decode_rgb(data: &[u8], name: &Path, limits: &ImageLimits) -> Result<RgbImage, ImageError> {
    if data.len() as u64 > limits.max_file_bytes {
        return Err(ImageError::FileTooBig {
            path: name.to_path_buf(),
            bytes: data.len() as u64,
            max: limits.max_file_bytes,
        });
    }
    let decode = |msg: String| ImageError::Decode {
        path: name.to_path_buf(),
        msg,
    };
    let mut reader = ImageReader::new(std::io::Cursor::new(data))
        .with_guessed_format()
        .map_err(|source| ImageError::Io {
            path: name.to_path_buf(),
            source,
        })?;
    // The header alone says the size: refuse an oversized picture before decoding it, by name.
    if let Ok(Ok((width, height))) = reader_of(data).map(ImageReader::into_dimensions) {
        if width > limits.max_width || height > limits.max_height {
            return Err(ImageError::TooLarge {
                path: name.to_path_buf(),
                width,
                height,
                max_width: limits.max_width,
                max_height: limits.max_height,
            });
        }
    }
    let mut l = Limits::default();
    l.max_image_width = Some(limits.max_width);
    l.max_image_height = Some(limits.max_height);
    l.max_alloc = Some(512 << 20);
    reader.limits(l);
    let is_jpeg = reader.format() == Some(image::ImageFormat::Jpeg);
    let img = reader.decode().map_err(|e| decode(e.to_string()))?;
    // The JPEG decoder fills whatever a cut file lacks with grey and reports nothing, so a
    // truncated photo would be captioned (and trained on) as if it were whole.
    if is_jpeg {
        jpeg_complete(data).map_err(|m| decode(m.to_string()))?;
    }
    Ok(img.to_rgb8())
}

fn reader_of(data: &[u8]) -> std::io::Result<ImageReader<std::io::Cursor<&[u8]>>> {
    ImageReader::new(std::io::Cursor::new(data)).with_guessed_format()
}

/// Walks a JPEG's markers, over every scan's entropy-coded data, to its end-of-image marker: a
/// file cut short has none. (A thumbnail's own end marker inside APP1 is skipped with its segment.)
pub fn jpeg_complete(d: &[u8]) -> Result<(), &'static str> {
    const CUT: &str = "the JPEG data is truncated (no end-of-image marker)";
    if d.len() < 4 || d[0] != 0xFF || d[1] != 0xD8 {
        return Err("not a JPEG stream");
    }
    let mut i = 2;
    loop {
        // Fill bytes (0xFF runs) may precede a marker.
        while i < d.len() && d[i] == 0xFF && d.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        if i + 1 >= d.len() {
            return Err(CUT);
        }
        if d[i] != 0xFF {
            return Err("the JPEG data is corrupt (a segment does not start with a marker)");
        }
        let marker = d[i + 1];
        i += 2;
        match marker {
            0xD9 => return Ok(()),
            0x01 | 0xD0..=0xD7 => continue, // TEM and restart markers carry no length
            _ => {}
        }
        let len = match d.get(i..i + 2) {
            Some(b) => usize::from(u16::from_be_bytes([b[0], b[1]])),
            None => return Err(CUT),
        };
        if len < 2 {
            return Err("the JPEG data is corrupt (a segment length below 2)");
        }
        i += len;
        if marker == 0xDA {
            // Entropy-coded data runs to the next marker that is not a stuffed 0xFF00 or a restart.
            loop {
                match d.get(i..i + 2) {
                    None => return Err(CUT),
                    Some([0xFF, 0x00]) | Some([0xFF, 0xD0..=0xD7]) => i += 2,
                    Some([0xFF, _]) => break,
                    Some(_) => i += 1,
                }
            }
        }
    }
}

/// Resizes the shorter side to `size` (keeping the aspect ratio) and crops a `size`×`size`
/// square: centred, or at a random offset with a random horizontal flip when `augment` is given.
pub fn resize_crop(img: &RgbImage, size: u32, augment: Option<&mut ChaCha8Rng>) -> RgbImage {
    crop(&resize_shorter(img, size), size, augment, true)
}

/// Resizes the shorter side to `side`, keeping the aspect ratio.
pub fn resize_shorter(img: &RgbImage, side: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let scale = side as f64 / w.min(h).max(1) as f64;
    let (nw, nh) = (
        ((w as f64 * scale).round() as u32).max(side),
        ((h as f64 * scale).round() as u32).max(side),
    );
    if (nw, nh) == (w, h) {
        return img.clone();
    }
    image::imageops::resize(img, nw, nh, FilterType::Triangle)
}

/// A `size`×`size` crop of an image whose shorter side is at least `size`: centred, or at a
/// random offset with `rng`; flipped horizontally at random with `rng` and `hflip`.
pub fn crop(img: &RgbImage, size: u32, rng: Option<&mut ChaCha8Rng>, hflip: bool) -> RgbImage {
    let (w, h) = img.dimensions();
    let (size_w, size_h) = (size.min(w), size.min(h));
    let (mut x, mut y) = ((w - size_w) / 2, (h - size_h) / 2);
    let mut flip = false;
    if let Some(rng) = rng {
        x = rng.random_range(0..=w - size_w);
        y = rng.random_range(0..=h - size_h);
        flip = hflip && rng.random_bool(0.5);
    }
    let mut out = image::imageops::crop_imm(img, x, y, size_w, size_h).to_image();
    if flip {
        image::imageops::flip_horizontal_in_place(&mut out);
    }
    out
}

/// An RGB image as a normalised `(3, H, W)` f32 tensor.
pub fn to_tensor(img: &RgbImage, norm: Normalization, dev: &Device) -> candle_core::Result<Tensor> {
    let (w, h) = img.dimensions();
    let (w, h) = (w as usize, h as usize);
    let mut data = vec![0f32; 3 * w * h];
    const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
    const STD: [f32; 3] = [0.229, 0.224, 0.225];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            let v = p.0[c] as f32;
            data[c * w * h + i] = match norm {
                Normalization::Lite => (v - 127.0) / 128.0,
                Normalization::ImageNet => (v / 255.0 - MEAN[c]) / STD[c],
            };
        }
    }
    Tensor::from_vec(data, (3, h, w), dev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn resize_keeps_aspect_and_crops_square() {
        let mut img = RgbImage::new(300, 100);
        for (x, _, p) in img.enumerate_pixels_mut() {
            p.0 = [if x < 150 { 255 } else { 0 }, 0, 0];
        }
        let out = resize_crop(&img, 50, None);
        assert_eq!(out.dimensions(), (50, 50));
        // Centre crop of a 150x50 resize: the red/black edge sits in the middle.
        assert!(out.get_pixel(10, 25).0[0] > 200 && out.get_pixel(40, 25).0[0] < 50);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let a = resize_crop(&img, 50, Some(&mut rng));
        assert_eq!(a.dimensions(), (50, 50));
        let t = to_tensor(&out, Normalization::Lite, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[3, 50, 50]);
        let v: Vec<Vec<Vec<f32>>> = t.to_vec3().unwrap();
        assert!((v[0][25][10] - (255.0 - 127.0) / 128.0).abs() < 0.05);
    }

    #[test]
    fn bad_files_are_named_and_bombs_refused() {
        let dir = std::env::temp_dir().join(format!("s2s-img-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let txt = dir.join("notes.jpg");
        std::fs::write(&txt, b"this is not an image").unwrap();
        let e = load_rgb(&txt, &ImageLimits::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("notes.jpg") && e.contains("cannot be decoded"),
            "{e}"
        );
        let big = dir.join("big.png");
        RgbImage::new(300, 20).save(&big).unwrap();
        let tight = ImageLimits {
            max_width: 256,
            ..ImageLimits::default()
        };
        let e = load_rgb(&big, &tight).unwrap_err().to_string();
        assert!(e.contains("big.png"), "{e}");
        let e = load_rgb(
            &big,
            &ImageLimits {
                max_file_bytes: 10,
                ..ImageLimits::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("over the limit"), "{e}");
        assert_eq!(
            load_rgb(&big, &ImageLimits::default())
                .unwrap()
                .dimensions(),
            (300, 20)
        );
        let e = load_rgb(&dir.join("missing.png"), &ImageLimits::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.png"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod truncation {
    use super::*;

    /// A 64×48 photo-like JPEG (a gradient with noise), with an EXIF-style thumbnail segment whose
    /// own end marker must not count as the image's.
    fn photo() -> Vec<u8> {
        let img = RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x * y) % 251) as u8])
        });
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(&img)
            .unwrap();
        let thumb = [0xFF, 0xD8, 0xFF, 0xD9];
        let len = (2 + thumb.len()) as u16;
        let mut app1 = vec![0xFF, 0xE1];
        app1.extend_from_slice(&len.to_be_bytes());
        app1.extend_from_slice(&thumb);
        [&jpeg[..2], &app1[..], &jpeg[2..]].concat()
    }

    #[test]
    fn a_cut_jpeg_is_an_error_naming_the_file_and_a_whole_one_loads() {
        let dir = std::env::temp_dir().join(format!("s2s-cut-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let whole = photo();
        assert_eq!(jpeg_complete(&whole), Ok(()));
        let ok = dir.join("whole.jpg");
        std::fs::write(&ok, &whole).unwrap();
        assert_eq!(
            load_rgb(&ok, &ImageLimits::default()).unwrap().dimensions(),
            (64, 48)
        );
        for keep in [whole.len() * 3 / 10, whole.len() - 2, whole.len() - 1] {
            let cut = dir.join(format!("cut{keep}.jpg"));
            std::fs::write(&cut, &whole[..keep]).unwrap();
            let e = load_rgb(&cut, &ImageLimits::default())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("cut{keep}.jpg")) && e.contains("truncated"),
                "{e}"
            );
        }
        // A cut PNG was already refused by its decoder; keep it so.
        let png = dir.join("p.png");
        RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8, y as u8, 7]))
            .save(&png)
            .unwrap();
        let bytes = std::fs::read(&png).unwrap();
        std::fs::write(&png, &bytes[..bytes.len() * 3 / 10]).unwrap();
        assert!(load_rgb(&png, &ImageLimits::default()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
