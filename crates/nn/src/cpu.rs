//! CPU helpers the fused kernels share: reading a tensor's f32 data in place, and a gemm call on
//! strided views (the kernels run their matmuls on host slices, not on tensors).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, Tensor};
use gemm::Parallelism;

/// Whether the fused CPU kernels may run on `t`: f32 on the CPU, and not turned off by
/// `SEQ2SEQ_FUSED=0`.
pub(crate) fn on_cpu_f32(t: &Tensor) -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let enabled =
        *ENABLED.get_or_init(|| std::env::var("SEQ2SEQ_FUSED").map_or(true, |v| v != "0"));
    enabled && t.dtype() == DType::F32 && matches!(t.device(), candle_core::Device::Cpu)
}

pub(crate) fn parallelism() -> Parallelism {
    let n = candle_core::utils::get_num_threads();
    if n > 1 {
        Parallelism::Rayon(n)
    } else {
        Parallelism::None
    }
}

/// A row-major matrix view for [`matmul`]: element (i, j) is at `i * rs + j * cs`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

/// `dst (m, n) = [dst +] lhs (m, k) × rhs (k, n)`; `dst` is row-major with row stride `dst_rs`.
pub(crate) fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: View,
    rhs: View,
) {
    let last = |v: &View, r: usize, c: usize| (r - 1) * v.rs + (c - 1) * v.cs;
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        dst.len() > (m - 1) * dst_rs + n - 1,
        "matmul: dst too small"
    );
    if k > 0 {
        assert!(lhs.data.len() > last(&lhs, m, k), "matmul: lhs too small");
        assert!(rhs.data.len() > last(&rhs, k, n), "matmul: rhs too small");
    }
    // SAFETY: the assertions above keep every index gemm touches inside the three slices, and
    // `dst` is borrowed mutably, so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism(),
        )
    }
}

/// The f32 data of a contiguous tensor on the CPU, read in place.
pub(crate) fn with_data<R>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce(&[f32]) -> Result<R>,
) -> Result<R> {
    let (st, l) = t.storage_and_layout();
    match &*st {
        candle_core::Storage::Cpu(cs) => f(cpu_slice(cs, l, what)?),
        _ => candle_core::bail!("{what} must be on the CPU"),
    }
}

/// The f32 data of a contiguous CPU storage, from its layout's offset.
pub(crate) fn cpu_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        _ => candle_core::bail!("{what} must be f32, got {:?}", s.dtype()),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

/// Copies a tensor's data out (the backward pass reads its saved activations this way).
pub(crate) fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}
