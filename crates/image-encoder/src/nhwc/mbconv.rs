//! A frozen MBConv block (expand 1×1 → depthwise k×k → project 1×1, skip) in one pass per band of
//! output lines: the expanded and filtered activations of a band live in a per-image scratch
//! buffer of ~1 MiB and never in memory as tensors.
//!
//! Op by op, Lite0's early blocks write and read back expanded maps of 32 × 112 × 112 × 96 floats
//! (150 MB) per batch; the layer-by-layer forward was bound by that traffic. A band reads the
//! input lines its output lines reach (a few lines of halo, expanded twice, at band edges), so
//! bands are as tall as the scratch budget allows: at Lite0's sizes the halo adds under 10 % to the
//! expansion of the 112- and 56-pixel blocks, and nothing to the later ones (one band per image).
//! Inference only (no backward pass): the frozen blocks whose output the feature cache keeps.

use std::mem::MaybeUninit;

use candle_core::{Result, Tensor};
use seq2seq_nn::cpu::{matmul_uninit, matmul_with, with_data, Parallelism, View};

use super::depthwise::{forward_row, Geometry};
use super::{bias_act, par_uninit, Act};

avx2_dispatch!(fn finish => bias_act(rows: &mut [f32], bias: &[f32], act: Act));

/// Floats of expanded input lines a band may hold (1 MiB).
const BUDGET: usize = 1 << 18;
#[cfg(test)]
pub(super) const BUDGET_FOR_TESTS: usize = BUDGET;

/// A block's folded weights: `expand` `(C_in, M)` + bias (none when the expansion ratio is 1),
/// `depthwise` `(k², M)` + bias, `project` `(M, C_out)` + bias; ReLU6 after the first two.
pub struct FrozenMbConv<'a> {
    pub expand: Option<(&'a Tensor, &'a Tensor)>,
    pub depthwise: (&'a Tensor, &'a Tensor),
    pub k: usize,
    pub stride: usize,
    pub project: (&'a Tensor, &'a Tensor),
    /// Adds the input to the output (stride 1, `C_in == C_out`).
    pub skip: bool,
}

impl FrozenMbConv<'_> {
    /// `x` `(B, H, W, C_in)` → `(B, Ho, Wo, C_out)`, images in parallel.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_in_bands(x, BUDGET)
    }

    pub(super) fn forward_in_bands(&self, x: &Tensor, budget: usize) -> Result<Tensor> {
        let x = x.contiguous()?;
        let (b, h, w, cin) = x.dims4()?;
        let mid = self.depthwise.1.dim(0)?;
        let cout = self.project.1.dim(0)?;
        let (k, s) = (self.k, self.stride);
        if self.expand.is_none() && mid != cin || self.skip && (cin != cout || s != 1) {
            candle_core::bail!(
                "mbconv: C_in {cin}, M {mid}, C_out {cout}, stride {s}, skip {}",
                self.skip
            );
        }
        let g = Geometry::of(b, h, w, mid, k, s);
        let (ho, wo) = g.out();
        let in_lines = (budget / (w * mid).max(1)).max(k);
        let band = ((in_lines - (k - 1)) / s).clamp(1, ho.max(1));
        let t = |t: &Tensor| t.contiguous();
        let (dw, db) = (t(self.depthwise.0)?, t(self.depthwise.1)?);
        let (pw, pb) = (t(self.project.0)?, t(self.project.1)?);
        let expand = match self.expand {
            Some((ew, eb)) => Some((t(ew)?, t(eb)?)),
            None => None,
        };
        let none = Tensor::zeros(0, x.dtype(), x.device())?;
        let (ew, eb) = expand.clone().unwrap_or((none.clone(), none));
        let out = with_data(&x, "x", |xd| {
            with_data(&dw, "depthwise", |dw| {
                with_data(&db, "depthwise bias", |db| {
                    with_data(&pw, "project", |pw| {
                        with_data(&pb, "project bias", |pb| {
                            with_data(&ew, "expand", |ew| {
                                with_data(&eb, "expand bias", |eb| {
                                    let e = expand.as_ref().map(|_| (ew, eb));
                                    let weights = Weights { e, dw, db, pw, pb };
                                    // SAFETY: `image` writes every element of its image's output.
                                    Ok(unsafe {
                                        par_uninit(b * ho * wo * cout, ho * wo * cout, |bi, dst| {
                                            let image = &xd[bi * h * w * cin..][..h * w * cin];
                                            self.image(&g, &weights, image, band, dst)
                                        })
                                    })
                                })
                            })
                        })
                    })
                })
            })
        })?;
        Tensor::from_vec(out, (b, ho, wo, cout), x.device())
    }

    /// One image's output `dst` `(Ho, Wo, C_out)`, band by band.
    fn image(
        &self,
        g: &Geometry,
        wt: &Weights,
        image: &[f32],
        band: usize,
        dst: &mut [MaybeUninit<f32>],
    ) {
        let (ho, wo) = g.out();
        let (h, w) = g.input_size();
        let (mid, cout) = (wt.db.len(), wt.pb.len());
        let cin = image.len() / (h * w);
        let lines_max = (band - 1) * self.stride + self.k;
        let mut expanded = vec![
            0f32;
            if wt.e.is_some() {
                lines_max * w * mid
            } else {
                0
            }
        ];
        let mut filtered = vec![0f32; band * wo * mid];
        for oy0 in (0..ho).step_by(band) {
            let oy1 = (oy0 + band).min(ho);
            let (lo, hi) = g.input_lines(oy0, oy1);
            let input = &image[lo * w * cin..hi * w * cin];
            let lines: &[f32] = match wt.e {
                Some((ew, eb)) => {
                    let e = &mut expanded[..(hi - lo) * w * mid];
                    let (lhs, rhs) = (
                        View {
                            data: input,
                            rs: cin,
                            cs: 1,
                        },
                        View {
                            data: ew,
                            rs: mid,
                            cs: 1,
                        },
                    );
                    matmul_with(
                        Parallelism::None,
                        ((hi - lo) * w, mid, cin),
                        e,
                        mid,
                        false,
                        lhs,
                        rhs,
                    );
                    finish(e, eb, Act::Relu6);
                    e
                }
                None => input,
            };
            let f = &mut filtered[..(oy1 - oy0) * wo * mid];
            for (oy, row) in (oy0..oy1).zip(f.chunks_exact_mut(wo * mid)) {
                // SAFETY: f32 has no invalid values; forward_row only writes initialised ones.
                let row = unsafe { &mut *(row as *mut [f32] as *mut [MaybeUninit<f32>]) };
                forward_row(g, lines, lo, wt.dw, wt.db, Act::Relu6, oy, row);
            }
            let out = &mut dst[oy0 * wo * cout..oy1 * wo * cout];
            let (lhs, rhs) = (
                View {
                    data: f,
                    rs: mid,
                    cs: 1,
                },
                View {
                    data: wt.pw,
                    rs: cout,
                    cs: 1,
                },
            );
            matmul_uninit(
                Parallelism::None,
                ((oy1 - oy0) * wo, cout, mid),
                out,
                cout,
                lhs,
                rhs,
            );
            // SAFETY: written whole by the product above.
            let out = unsafe { &mut *(out as *mut [MaybeUninit<f32>] as *mut [f32]) };
            if self.skip {
                let from = &image[oy0 * w * cin..];
                for (o, xr) in out.chunks_exact_mut(cout).zip(from.chunks_exact(cin)) {
                    for ((o, &x), &bias) in o.iter_mut().zip(xr).zip(wt.pb) {
                        *o += bias + x;
                    }
                }
            } else {
                finish(out, wt.pb, Act::None);
            }
        }
    }
}

/// The host slices of a block's weights.
struct Weights<'a> {
    e: Option<(&'a [f32], &'a [f32])>,
    dw: &'a [f32],
    db: &'a [f32],
    pw: &'a [f32],
    pb: &'a [f32],
}
