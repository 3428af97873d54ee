//! Each fused op against its op-by-op twin, in values and gradients, and the twins against
//! candle's own NCHW `conv2d`: odd and even sizes, strides 1 and 2, kernels 1, 3 and 5, every
//! activation.

use candle_core::{Device, Result, Tensor, Var};

use super::{depthwise, im2col, pointwise, Act};

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

fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f32) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes");
    let d = max_diff(a, b);
    assert!(d <= tol, "{what}: max difference {d} > {tol}");
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
fn im2col_equals_its_twin_and_makes_candles_conv2d() -> Result<()> {
    for (k, stride, h, w) in [(3, 1, 7, 6), (3, 2, 9, 9), (5, 2, 8, 7), (1, 1, 4, 4)] {
        let x = var(&[2, h, w, 5], 9);
        let fused = im2col(&x, k, stride)?;
        let twin = super::im2col::twin(&x, k, stride)?;
        let what = format!("k{k} s{stride} {h}x{w}");
        assert_close(&what, &fused, &twin, 0.0);
        let gf = grads(&fused, &[&x])?;
        let gt = grads(&twin, &[&x])?;
        assert_close(&format!("{what} dx"), &gf[0], &gt[0], 1e-4);
        // A dense convolution: im2col then one gemm equals candle's NCHW conv2d.
        let filters = var(&[7, 5, k, k], 10);
        let w2 = filters.permute((2, 3, 1, 0))?.reshape((k * k * 5, 7))?;
        let (b, ho, wo, p) = fused.dims4()?;
        let zero = Tensor::zeros(7, candle_core::DType::F32, &Device::Cpu)?;
        let ours = pointwise(&fused.reshape((b * ho * wo, p))?, &w2, &zero, Act::None)?
            .reshape((b, ho, wo, 7))?;
        let reference = x
            .permute((0, 3, 1, 2))?
            .contiguous()?
            .conv2d(&filters, k / 2, stride, 1, 1)?
            .permute((0, 2, 3, 1))?;
        assert_close(&format!("{what} conv"), &ours, &reference, 1e-4);
    }
    Ok(())
}
