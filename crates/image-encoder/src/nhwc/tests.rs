//! Each fused op against its op-by-op twin, in values and gradients, and the twins against
//! candle's own NCHW `conv2d`: odd and even sizes, strides 1 and 2, kernels 1, 3 and 5, every
//! activation.

use candle_core::{Device, Result, Tensor, Var};

use super::{depthwise, pointwise, Act};

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn var(shape: &[usize], seed: u64) -> Var {
    // candle's CPU randn cannot be seeded; the values only need to differ between operands.
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| {
            let z = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ seed.wrapping_mul(0xD1B5_4A32_D192_ED03);
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect();
    Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap()).unwrap()
}

/// Gradients of `Σ out · r` with respect to each of `inputs`.
fn grads(out: &Tensor, inputs: &[&Var]) -> Result<Vec<Tensor>> {
    let r = var(out.dims(), 99);
    let g = (out * r.as_tensor())?.sum_all()?.backward()?;
    Ok(inputs.iter().map(|v| g.get(v).unwrap().clone()).collect())
}

/// `a` equals `b` within `tol`, relative to `b`'s largest magnitude when that exceeds 1 (sums
/// over thousands of rows differ in their last bits with the order of summation).
fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f32) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes");
    let scale = b
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .max(1.0);
    let d = max_diff(a, b);
    assert!(
        d <= tol * scale,
        "{what}: max difference {d} > {tol} × {scale}"
    );
}

const ACTS: [Act; 3] = [Act::None, Act::Relu, Act::Relu6];

#[test]
fn depthwise_equals_its_twin_in_values_and_gradients() -> Result<()> {
    for (k, stride, h, w) in [
        (3, 1, 7, 7),
        (3, 2, 8, 9),
        (5, 2, 7, 7),
        (5, 1, 6, 5),
        (3, 2, 1, 1),
    ] {
        for act in ACTS {
            let (x, wt, b) = (var(&[2, h, w, 12], 1), var(&[k * k, 12], 2), var(&[12], 3));
            let fused = depthwise(&x, &wt, &b, k, stride, act)?;
            let twin = super::depthwise::twin(&x, &wt, &b, k, stride, act)?;
            let what = format!("k{k} s{stride} {h}x{w} {act:?}");
            assert_close(&what, &fused, &twin, 1e-5);
            let gf = grads(&fused, &[&x, &wt, &b])?;
            let gt = grads(&twin, &[&x, &wt, &b])?;
            for (name, (a, b)) in ["x", "w", "b"].iter().zip(gf.iter().zip(&gt)) {
                assert_close(&format!("{what} d{name}"), a, b, 1e-4);
            }
        }
    }
    Ok(())
}

#[test]
fn depthwise_twin_equals_candles_grouped_conv2d() -> Result<()> {
    for (k, stride) in [(3, 1), (3, 2), (5, 2)] {
        let (x, wt) = (var(&[2, 9, 8, 6], 4), var(&[k * k, 6], 5));
        let b = Tensor::zeros(6, candle_core::DType::F32, &Device::Cpu)?;
        let ours = depthwise(&x, &wt, &b, k, stride, Act::None)?;
        let nchw = x.permute((0, 3, 1, 2))?.contiguous()?;
        let filters = wt.t()?.reshape((6, 1, k, k))?.contiguous()?;
        let reference = nchw
            .conv2d(&filters, k / 2, stride, 1, 6)?
            .permute((0, 2, 3, 1))?;
        assert_close(&format!("k{k} s{stride}"), &ours, &reference, 1e-5);
    }
    Ok(())
}

#[test]
fn pointwise_equals_its_twin_in_values_and_gradients() -> Result<()> {
    // 600 rows: more than one block of rows, the last one partial.
    for act in ACTS {
        let (x, w, b) = (var(&[600, 24], 6), var(&[24, 40], 7), var(&[40], 8));
        let fused = pointwise(&x, &w, &b, act)?;
        let twin = super::pointwise::twin(&x, &w, &b, act)?;
        assert_close(&format!("{act:?}"), &fused, &twin, 1e-4);
        let gf = grads(&fused, &[&x, &w, &b])?;
        let gt = grads(&twin, &[&x, &w, &b])?;
        for (name, (a, b)) in ["x", "w", "b"].iter().zip(gf.iter().zip(&gt)) {
            assert_close(&format!("{act:?} d{name}"), a, b, 1e-3);
        }
    }
    Ok(())
}

#[test]
fn conv2d_equals_its_twin_in_values_and_gradients_and_candles_conv2d() -> Result<()> {
    // 13x11 and 9x9 outputs: images whose last block of pixels is short; 16 channels at 3×3,
    // stride 1: Winograd.
    for (k, stride, h, w, c) in [
        (3, 1, 13, 11, 5),
        (3, 1, 10, 9, 16),
        (3, 2, 18, 18, 3),
        (5, 2, 8, 7, 4),
        (1, 1, 4, 4, 6),
    ] {
        for act in ACTS {
            let x = var(&[2, h, w, c], 9);
            let (wt, b) = (var(&[k * k * c, 7], 10), var(&[7], 11));
            let fused = super::conv2d(&x, &wt, &b, k, stride, act)?;
            let twin = super::conv::twin(&x, &wt, &b, k, stride, act)?;
            let what = format!("k{k} s{stride} {h}x{w}x{c} {act:?}");
            assert_close(&what, &fused, &twin, 1e-5);
            let gf = grads(&fused, &[&x, &wt, &b])?;
            let gt = grads(&twin, &[&x, &wt, &b])?;
            for (name, (a, b)) in ["x", "w", "b"].iter().zip(gf.iter().zip(&gt)) {
                assert_close(&format!("{what} d{name}"), a, b, 1e-4);
            }
        }
        // The twin against candle's NCHW conv2d, PyTorch's weight layout permuted to ours.
        let x = var(&[2, h, w, c], 12);
        let filters = var(&[7, c, k, k], 13);
        let wt = filters.permute((2, 3, 1, 0))?.reshape((k * k * c, 7))?;
        let zero = Tensor::zeros(7, candle_core::DType::F32, &Device::Cpu)?;
        let ours = super::conv2d(&x, &wt, &zero, k, stride, Act::None)?;
        let reference = x
            .permute((0, 3, 1, 2))?
            .contiguous()?
            .conv2d(&filters, k / 2, stride, 1, 1)?
            .permute((0, 2, 3, 1))?;
        assert_close(&format!("k{k} s{stride} candle"), &ours, &reference, 1e-4);
    }
    Ok(())
}

/// Without a gradient wanted for the input (pixels), none is computed; the weights' still is.
#[test]
fn conv2d_skips_the_input_gradient_of_constants() -> Result<()> {
    let x = var(&[1, 5, 5, 3], 14).as_tensor().detach();
    let (wt, b) = (var(&[27, 4], 15), var(&[4], 16));
    let y = super::conv2d(&x, &wt, &b, 3, 1, Act::None)?;
    let g = y.sum_all()?.backward()?;
    assert!(g.get(&x).is_none());
    let twin = super::conv::twin(&x, &wt, &b, 3, 1, Act::None)?;
    let gt = twin.sum_all()?.backward()?;
    assert_close("dw", g.get(&wt).unwrap(), gt.get(&wt).unwrap(), 1e-4);
    Ok(())
}

/// Winograd's F(2×2, 3×3) against the 3×3 twin: odd sizes (tiles past the image's edge), one
/// pixel, several blocks of tiles per image (48×48 with 40 + 24 channels), small images grouped
/// (12×12: groups of 3 images, the last one short), channel counts below, at and past a multiple
/// of the transforms' 8 lanes (19 → 13: two lanes and three channels in, one lane and five out),
/// every activation; the weights' gradient also without the input's.
#[test]
fn winograd_conv3x3_equals_the_twin_in_values_and_gradients() -> Result<()> {
    for (n, h, w, c, m) in [
        (2, 6, 6, 4, 5),
        (2, 7, 9, 3, 8),
        (2, 1, 1, 2, 3),
        (2, 48, 48, 40, 24),
        (5, 12, 12, 8, 8),
        (2, 7, 5, 19, 13),
    ] {
        for act in ACTS {
            let x = var(&[n, h, w, c], 21);
            let (wt, b) = (var(&[9 * c, m], 22), var(&[m], 23));
            let fast = super::winograd::conv3x3(&x, &wt, &b, act)?;
            let twin = super::conv::twin(&x, &wt, &b, 3, 1, act)?;
            let what = format!("winograd {n}x{h}x{w}x{c}→{m} {act:?}");
            assert_close(&what, &fast, &twin, 1e-5);
            let gf = grads(&fast, &[&x, &wt, &b])?;
            let gt = grads(&twin, &[&x, &wt, &b])?;
            for (name, (a, b)) in ["x", "w", "b"].iter().zip(gf.iter().zip(&gt)) {
                assert_close(&format!("{what} d{name}"), a, b, 1e-4);
            }
        }
    }
    let x = var(&[2, 5, 6, 3], 24).as_tensor().detach();
    let (wt, b) = (var(&[27, 4], 25), var(&[4], 26));
    let g = super::winograd::conv3x3(&x, &wt, &b, Act::Relu)?
        .sum_all()?
        .backward()?;
    assert!(g.get(&x).is_none());
    let gt = super::conv::twin(&x, &wt, &b, 3, 1, Act::Relu)?
        .sum_all()?
        .backward()?;
    assert_close(
        "winograd dw alone",
        g.get(&wt).unwrap(),
        gt.get(&wt).unwrap(),
        1e-4,
    );
    Ok(())
}

#[test]
fn batch_norm_train_equals_its_twin_in_values_gradients_and_statistics() -> Result<()> {
    // 2500 rows: several chunks of rows, the last one partial; a large mean (+3).
    for act in ACTS {
        let y = Var::from_tensor(&(var(&[2500, 6], 11).as_tensor() + 3.0)?)?;
        let (gamma, beta) = (var(&[6], 12), var(&[6], 13));
        let (fused, m1, v1) = super::batch_norm_train(&y, &gamma, &beta, 1e-5, act)?;
        let (twin, m2, v2) = super::norm::twin(&y, &gamma, &beta, 1e-5, act)?;
        assert_close(&format!("{act:?}"), &fused, &twin, 1e-4);
        assert_close("mean", &m1, &m2, 1e-5);
        assert_close("variance", &v1, &v2, 1e-4);
        let gf = grads(&fused, &[&y, &gamma, &beta])?;
        let gt = grads(&twin, &[&y, &gamma, &beta])?;
        for (name, (a, b)) in ["y", "gamma", "beta"].iter().zip(gf.iter().zip(&gt)) {
            assert_close(&format!("{act:?} d{name}"), a, b, 2e-3);
        }
    }
    Ok(())
}

#[test]
fn max_pool_equals_its_twin_in_values_and_gradients() -> Result<()> {
    for (h, w) in [(4, 6), (5, 7), (2, 2)] {
        let x = var(&[3, h, w, 5], 14);
        let fused = super::max_pool2(&x)?;
        let twin = super::pool::twin(&x)?;
        assert_close(&format!("{h}x{w}"), &fused, &twin, 0.0);
        let gf = grads(&fused, &[&x])?;
        let gt = grads(&twin, &[&x])?;
        assert_close(&format!("{h}x{w} dx"), &gf[0], &gt[0], 1e-6);
    }
    Ok(())
}

#[test]
fn batch_norm_act_max_pool_equals_its_twin_in_values_gradients_and_statistics() -> Result<()> {
    // Odd sides (a last row and column outside every window); a negative γ (the max of the
    // normalised map is then not at the max of y); 4 channels and 12 (the kernels' vectors of 8
    // and a remainder).
    for (h, w, c) in [(6, 8, 4), (7, 5, 4), (5, 7, 12)] {
        for act in ACTS {
            let y = Var::from_tensor(&(var(&[3, h, w, c], 17).as_tensor() + 1.5)?)?;
            let g: Vec<f32> = [1.2f32, -0.7, 0.3, 2.0]
                .into_iter()
                .cycle()
                .take(c)
                .collect();
            let gamma = Var::from_tensor(&Tensor::new(g, &Device::Cpu)?)?;
            let beta = var(&[c], 18);
            let (fused, m1, v1) = super::batch_norm_act_max_pool(&y, &gamma, &beta, 1e-5, act)?;
            let (twin, m2, v2) = super::bn_pool::twin(&y, &gamma, &beta, 1e-5, act)?;
            let what = format!("{h}x{w}x{c} {act:?}");
            assert_close(&what, &fused, &twin, 1e-5);
            assert_close("mean", &m1, &m2, 1e-5);
            assert_close("variance", &v1, &v2, 1e-5);
            let gf = grads(&fused, &[&y, &gamma, &beta])?;
            let gt = grads(&twin, &[&y, &gamma, &beta])?;
            for (name, (a, b)) in ["y", "gamma", "beta"].iter().zip(gf.iter().zip(&gt)) {
                assert_close(&format!("{what} d{name}"), a, b, 1e-4);
            }
        }
    }
    Ok(())
}

/// A frozen MBConv block, band by band, equals its three ops one after the other: with and
/// without expansion and skip, strides 1 and 2, kernels 3 and 5, one band per image and many.
#[test]
fn frozen_mbconv_equals_its_ops_one_by_one() -> Result<()> {
    let t = |v: Var| v.as_tensor().detach();
    for (cin, e, k, stride, cout, h, w) in [
        (8, 3, 3, 1, 8, 9, 7),
        (8, 1, 3, 1, 4, 8, 8),
        (6, 4, 5, 2, 10, 11, 9),
        (4, 6, 5, 1, 4, 7, 7),
    ] {
        let mid = cin * e;
        let x = t(var(&[3, h, w, cin], 20));
        let expand = (e != 1).then(|| (t(var(&[cin, mid], 21)) * 0.3, t(var(&[mid], 22))));
        let expand = match expand {
            Some((w, b)) => Some((w?, b)),
            None => None,
        };
        let (dw, db) = (t(var(&[k * k, mid], 23)), t(var(&[mid], 24)));
        let (pw, pb) = (t(var(&[mid, cout], 25)), t(var(&[cout], 26)));
        let skip = stride == 1 && cin == cout;
        let block = super::FrozenMbConv {
            expand: expand.as_ref().map(|(w, b)| (w, b)),
            depthwise: (&dw, &db),
            k,
            stride,
            project: (&pw, &pb),
            skip,
        };
        let (b, _, _, _) = x.dims4()?;
        let mut y = x.clone();
        if let Some((ew, eb)) = &expand {
            y = pointwise(&y.reshape((b * h * w, cin))?, ew, eb, Act::Relu6)?
                .reshape((b, h, w, mid))?;
        }
        y = depthwise(&y, &dw, &db, k, stride, Act::Relu6)?;
        let (_, ho, wo, _) = y.dims4()?;
        y = pointwise(&y.reshape((b * ho * wo, mid))?, &pw, &pb, Act::None)?
            .reshape((b, ho, wo, cout))?;
        if skip {
            y = (y + &x)?;
        }
        for budget in [super::mbconv::BUDGET_FOR_TESTS, 1] {
            let fused = block.forward_in_bands(&x, budget)?;
            assert_close(
                &format!("cin {cin} e {e} k {k} s {stride} budget {budget}"),
                &fused,
                &y,
                1e-4,
            );
        }
    }
    Ok(())
}
