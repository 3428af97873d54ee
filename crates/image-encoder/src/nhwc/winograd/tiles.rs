//! Winograd F(2×2, 3×3)'s transforms and the tiles of a group of images: the filter transform
//! `U = G g Gᵀ` and its gradient, the input tiles' `Bᵀ d B`, the output tiles' `Aᵀ M A`, the
//! output-gradient tiles' `A g Aᵀ` and the patch gradients' `B S Bᵀ`, each vectorised over the
//! channels (eight at a time, `lanes`) of a block of tiles laid out as 16 planes
//! `(tiles, channels)`.

use super::lanes::{by_lanes, gather, Lane};

/// Transform points of a tile: the 4×4 of F(2×2, 3×3).
pub(super) const XI: usize = 16;

/// Floats between two transform points' planes of a block beyond their `tiles × channels`: planes
/// a multiple of 4 KiB apart would map the 16 streams of a tile's transform onto the same cache
/// sets (measured: 45 ms against 29 ms for the small CNN's second layer at 64 tiles a block).
const PAD: usize = 16;

/// The distance between two transform points' planes in a block of `n` tiles of `width`
/// channels.
#[inline(always)]
pub(super) fn plane(n: usize, width: usize) -> usize {
    n * width + PAD
}

/// `G`, the filter transform (4×3): `U = G g Gᵀ`.
const G: [[f32; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// `Bᵀ x` for a 4-vector (the input transform, one dimension).
#[inline(always)]
fn bt<T: Lane>(x: [T; 4]) -> [T; 4] {
    [x[0] - x[2], x[1] + x[2], x[2] - x[1], x[1] - x[3]]
}

/// `B x` (the input transform's transpose: the patch gradient, one dimension).
#[inline(always)]
fn b<T: Lane>(x: [T; 4]) -> [T; 4] {
    [x[0], x[1] - x[2] + x[3], x[1] + x[2] - x[0], -x[3]]
}

/// `Aᵀ x` (the output transform, 4 → 2).
#[inline(always)]
fn at<T: Lane>(x: [T; 4]) -> [T; 2] {
    [x[0] + x[1] + x[2], x[1] - x[2] - x[3]]
}

/// `A x` (the output gradient's transform, 2 → 4).
#[inline(always)]
fn a<T: Lane>(x: [T; 2]) -> [T; 4] {
    [x[0], x[0] + x[1], x[0] - x[1], -x[1]]
}

/// A 4×4 (row-major) through a 1-D transform along both dimensions: `T X Tᵀ`.
#[inline(always)]
fn both_ways<T: Lane>(x: [T; 16], t: impl Fn([T; 4]) -> [T; 4]) -> [T; 16] {
    // Column j's transform, then row i's: the transform of (column 0's i-th, …, column 3's i-th).
    let col = |j: usize| t([x[j], x[4 + j], x[8 + j], x[12 + j]]);
    let c = [col(0), col(1), col(2), col(3)];
    let row = |i: usize| t([c[0][i], c[1][i], c[2][i], c[3][i]]);
    let r = [row(0), row(1), row(2), row(3)];
    [
        r[0][0], r[0][1], r[0][2], r[0][3], r[1][0], r[1][1], r[1][2], r[1][3], r[2][0], r[2][1],
        r[2][2], r[2][3], r[3][0], r[3][1], r[3][2], r[3][3],
    ]
}

/// The filters `w` `(9·C, M)` (rows `[ky][kx][c]`) transformed: `U` `(16, C, M)`, `G g Gᵀ` per
/// input and output channel.
pub(super) fn filter_transform(w: &[f32], cm: usize) -> Vec<f32> {
    let mut u = vec![0f32; XI * cm];
    for (xi, dst) in u.chunks_exact_mut(cm).enumerate() {
        let (i, j) = (xi / 4, xi % 4);
        for ky in 0..3 {
            for kx in 0..3 {
                let g = G[i][ky] * G[j][kx];
                if g != 0.0 {
                    let src = &w[(ky * 3 + kx) * cm..][..cm];
                    dst.iter_mut().zip(src).for_each(|(d, s)| *d += g * s);
                }
            }
        }
    }
    u
}

/// `dW = Gᵀ dU G`: the gradient of [`filter_transform`]'s input, `(9·C, M)`.
pub(super) fn filter_transform_grad(du: &[f32], cm: usize) -> Vec<f32> {
    let mut dw = vec![0f32; 9 * cm];
    for (tap, dst) in dw.chunks_exact_mut(cm).enumerate() {
        let (ky, kx) = (tap / 3, tap % 3);
        for xi in 0..XI {
            let g = G[xi / 4][ky] * G[xi % 4][kx];
            if g != 0.0 {
                let src = &du[xi * cm..][..cm];
                dst.iter_mut().zip(src).for_each(|(d, s)| *d += g * s);
            }
        }
    }
    dw
}

/// The tiles of a group of consecutive images: `th × tw` per image, tile `t` of the group in
/// image `t / (th·tw)`, covering its output rows `2·(t' / tw)..` and columns `2·(t' % tw)..`
/// with `t' = t % (th·tw)`. Pixel indices count from the group's first image.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tiles {
    pub(super) h: usize,
    pub(super) w: usize,
    th: usize,
    tw: usize,
}

impl Tiles {
    pub(super) fn new(h: usize, w: usize) -> Self {
        Self {
            h,
            w,
            th: h.div_ceil(2),
            tw: w.div_ceil(2),
        }
    }

    /// Tiles per image.
    pub(super) fn count(&self) -> usize {
        self.th * self.tw
    }

    /// Tile `t`'s first output row and column, and its image's first pixel.
    #[inline(always)]
    fn origin(&self, t: usize) -> (usize, usize, usize) {
        let (image, t) = (t / self.count(), t % self.count());
        (
            2 * (t / self.tw),
            2 * (t % self.tw),
            image * self.h * self.w,
        )
    }

    /// The pixel index of point `(i, j)` of tile `t`'s 4×4 input patch (offset −1: the
    /// padding), if inside the image.
    #[inline(always)]
    fn patch(&self, t: usize, i: usize, j: usize) -> Option<usize> {
        let (y, x, base) = self.origin(t);
        let (y, x) = ((y + i).checked_sub(1)?, (x + j).checked_sub(1)?);
        (y < self.h && x < self.w).then_some(base + y * self.w + x)
    }

    /// The pixel index of output `(i, j)` (each 0 or 1) of tile `t`, if inside the image.
    #[inline(always)]
    fn output(&self, t: usize, i: usize, j: usize) -> Option<usize> {
        let (y, x, base) = self.origin(t);
        let (y, x) = (y + i, x + j);
        (y < self.h && x < self.w).then_some(base + y * self.w + x)
    }

    /// Images per parallel group and tiles per block. A block holds about `target` tiles: an
    /// image's tiles split evenly, or whole small images grouped (so that the gemms get enough
    /// rows; a group owns its images' input gradient, so groups never write the same pixel).
    pub(super) fn blocking(&self) -> (usize, usize) {
        // Measured on the small CNN's layers (one thread): 256 tiles beat 64 and 128 by up to
        // 25 % on the wider layers, and 512 buys nothing more.
        let target = 256;
        let count = self.count();
        if count >= target {
            let blocks = count.div_ceil(target);
            (1, count.div_ceil(blocks))
        } else {
            let images = ((target + count / 2) / count).max(1);
            (images, images * count)
        }
    }
}

/// Row `r` (`width` floats) of each of the 16 planes of a block of `n` tiles: where one tile's
/// transform points are written. Slices of a known length keep the channel loops free of index
/// checks.
#[inline(always)]
fn plane_rows(buf: &mut [f32], n: usize, width: usize, r: usize) -> [&mut [f32]; XI] {
    let mut planes = buf.chunks_mut(plane(n, width));
    std::array::from_fn(|_| &mut planes.next().expect("16 planes")[r * width..][..width])
}

/// [`plane_rows`] to read.
#[inline(always)]
fn plane_rows_ref(buf: &[f32], n: usize, width: usize, r: usize) -> [&[f32]; XI] {
    std::array::from_fn(|xi| &buf[xi * plane(n, width) + r * width..][..width])
}

/// The `K` runs of `len` floats of `buf` that start at the increasing, non-overlapping offsets
/// `at`, as separate mutable slices.
#[inline(always)]
fn disjoint_rows<const K: usize>(buf: &mut [f32], at: [usize; K], len: usize) -> [&mut [f32]; K] {
    let (mut rest, mut offset) = (buf, 0);
    std::array::from_fn(|i| {
        let tail = std::mem::take(&mut rest).split_at_mut(at[i] - offset).1;
        let (row, tail) = tail.split_at_mut(len);
        (rest, offset) = (tail, at[i] + len);
        row
    })
}

avx2_dispatch!(pub(super) fn transform_input => transform_input_body(
    tiles: &Tiles, image: &[f32], c: usize, first: usize, n: usize, zero: &[f32], v: &mut [f32]
));

/// `V = Bᵀ d B` of tiles `first..first + n` of one image into `v` `(16, n, C)`.
#[inline(always)]
fn transform_input_body(
    tiles: &Tiles,
    image: &[f32],
    c: usize,
    first: usize,
    n: usize,
    zero: &[f32],
    v: &mut [f32],
) {
    for r in 0..n {
        let rows: [&[f32]; XI] =
            std::array::from_fn(|p| match tiles.patch(first + r, p / 4, p % 4) {
                Some(px) => &image[px * c..][..c],
                None => &zero[..c],
            });
        let mut dst = plane_rows(v, n, c, r);
        by_lanes!(c, |k, T| {
            let t = both_ways(gather::<T, XI>(&rows, k), bt);
            for (d, val) in dst.iter_mut().zip(t) {
                val.store(d, k);
            }
        });
    }
}

/// `Aᵀ X A` of one tile's 4×4 transform points: its 2×2 outputs, row-major.
#[inline(always)]
fn output_tile<T: Lane>(x: [T; XI]) -> [T; 4] {
    // Aᵀ along the columns (4 → 2 rows), then along the rows.
    let col = |j: usize| at([x[j], x[4 + j], x[8 + j], x[12 + j]]);
    let c = [col(0), col(1), col(2), col(3)];
    let top = at([c[0][0], c[1][0], c[2][0], c[3][0]]);
    let bottom = at([c[0][1], c[1][1], c[2][1], c[3][1]]);
    [top[0], top[1], bottom[0], bottom[1]]
}

avx2_dispatch!(pub(super) fn transform_output => transform_output_body(
    tiles: &Tiles, mb: &[f32], m: usize, first: usize, n: usize, out: &mut [f32]
));

/// `Y = Aᵀ M A` of tiles `first..first + n` from `mb` `(16, n, M)` into the image's output rows.
#[inline(always)]
fn transform_output_body(
    tiles: &Tiles,
    mb: &[f32],
    m: usize,
    first: usize,
    n: usize,
    out: &mut [f32],
) {
    for r in 0..n {
        let px: [Option<usize>; 4] = std::array::from_fn(|q| tiles.output(first + r, q / 2, q % 2));
        let src = plane_rows_ref(mb, n, m, r);
        if let [Some(p0), Some(_), Some(p2), Some(_)] = px {
            // A whole tile: two pairs of adjacent pixels, one pair per output row.
            let [top, bottom] = disjoint_rows(out, [p0 * m, p2 * m], 2 * m);
            let (t0, t1) = top.split_at_mut(m);
            let (b0, b1) = bottom.split_at_mut(m);
            by_lanes!(m, |k, T| {
                let y = output_tile(gather::<T, XI>(&src, k));
                y[0].store(t0, k);
                y[1].store(t1, k);
                y[2].store(b0, k);
                y[3].store(b1, k);
            });
            continue;
        }
        by_lanes!(m, |k, T| {
            let y = output_tile(gather::<T, XI>(&src, k));
            for (q, val) in y.into_iter().enumerate() {
                if let Some(p) = px[q] {
                    val.store(&mut out[p * m..][..m], k);
                }
            }
        });
    }
}

avx2_dispatch!(pub(super) fn transform_grad => transform_grad_body(
    tiles: &Tiles, gy: &[f32], m: usize, first: usize, n: usize, zero: &[f32], gh: &mut [f32]
));

/// `Ĝ = A g Aᵀ` of the output-gradient tiles `first..first + n` into `gh` `(16, n, M)`.
#[inline(always)]
fn transform_grad_body(
    tiles: &Tiles,
    gy: &[f32],
    m: usize,
    first: usize,
    n: usize,
    zero: &[f32],
    gh: &mut [f32],
) {
    for r in 0..n {
        let rows: [&[f32]; 4] =
            std::array::from_fn(|q| match tiles.output(first + r, q / 2, q % 2) {
                Some(p) => &gy[p * m..][..m],
                None => &zero[..m],
            });
        let dst = plane_rows(gh, n, m, r);
        by_lanes!(m, |k, T| {
            let g = gather::<T, 4>(&rows, k);
            let (c0, c1) = (a([g[0], g[2]]), a([g[1], g[3]]));
            for i in 0..4 {
                let row = a([c0[i], c1[i]]);
                for (j, val) in row.into_iter().enumerate() {
                    val.store(dst[i * 4 + j], k);
                }
            }
        });
    }
}

avx2_dispatch!(pub(super) fn scatter_patches => scatter_patches_body(
    tiles: &Tiles, sb: &[f32], c: usize, first: usize, n: usize, dx: &mut [f32]
));

/// The patch gradients `B S Bᵀ` of tiles `first..first + n` (`sb` `(16, n, C)`) added onto the
/// image's `dx` (neighbouring patches overlap by two pixels).
#[inline(always)]
fn scatter_patches_body(
    tiles: &Tiles,
    sb: &[f32],
    c: usize,
    first: usize,
    n: usize,
    dx: &mut [f32],
) {
    for r in 0..n {
        let px: [Option<usize>; XI] = std::array::from_fn(|p| tiles.patch(first + r, p / 4, p % 4));
        let src = plane_rows_ref(sb, n, c, r);
        if px.iter().all(Option::is_some) {
            // A whole patch: four lines of four adjacent pixels.
            let at: [usize; 4] = std::array::from_fn(|i| px[i * 4].unwrap_or(0) * c);
            let mut lines = disjoint_rows(dx, at, 4 * c);
            by_lanes!(c, |k, T| {
                let d = both_ways(gather::<T, XI>(&src, k), b);
                for (i, line) in lines.iter_mut().enumerate() {
                    for j in 0..4 {
                        d[i * 4 + j].add_to(line, j * c + k);
                    }
                }
            });
            continue;
        }
        by_lanes!(c, |k, T| {
            let d = both_ways(gather::<T, XI>(&src, k), b);
            for (p, val) in d.into_iter().enumerate() {
                if let Some(q) = px[p] {
                    val.add_to(&mut dx[q * c..][..c], k);
                }
            }
        });
    }
}
