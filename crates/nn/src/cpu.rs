//! CPU helpers the fused kernels share: reading a tensor's f32 data in place, and a gemm call on
//! strided views (the kernels run their matmuls on host slices, not on tensors).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, Tensor};
pub use gemm::Parallelism;
use rayon::prelude::*;

/// Whether the fused CPU kernels may run on `t`: f32 on the CPU, and not turned off by
/// `SEQ2SEQ_FUSED=0`.
pub fn on_cpu_f32(t: &Tensor) -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let enabled =
        *ENABLED.get_or_init(|| std::env::var("SEQ2SEQ_FUSED").map_or(true, |v| v != "0"));
    enabled && t.dtype() == DType::F32 && matches!(t.device(), candle_core::Device::Cpu)
}

pub fn parallelism() -> Parallelism {
    let n = candle_core::utils::get_num_threads();
    if n > 1 {
        Parallelism::Rayon(n)
    } else {
        Parallelism::None
    }
}

/// A row-major matrix view for [`matmul`]: element (i, j) is at `i * rs + j * cs`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    /// A row-major `(rows, cols)` matrix as it is.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// A row-major `(rows, cols)` matrix `W` as its transpose `Wᵀ` `(cols, rows)`.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: 1,
            cs: cols,
        }
    }
}

/// `dst (m, n) = [dst +] lhs (m, k) × rhs (k, n)`; `dst` is row-major with row stride `dst_rs`.
pub fn matmul(
    dims: (usize, usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: View,
    rhs: View,
) {
    matmul_with(parallelism(), dims, dst, dst_rs, accumulate, lhs, rhs)
}

/// [`matmul`] on the given threads (`Parallelism::None` inside a kernel's own parallel loop).
pub fn matmul_with(
    par: Parallelism,
    dims: (usize, usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: View,
    rhs: View,
) {
    // SAFETY: f32 has no invalid values, so an initialised slice may be viewed as possibly
    // uninitialised; matmul_into only writes initialised values into it.
    let dst = unsafe { &mut *(dst as *mut [f32] as *mut [std::mem::MaybeUninit<f32>]) };
    matmul_into(par, dims, dst, dst_rs, accumulate, lhs, rhs)
}

/// `dst (m, n) = lhs × rhs` into memory not yet initialised (a new tensor's buffer): every
/// element `(i, j)` at `i * dst_rs + j` is written, none is read.
pub fn matmul_uninit(
    par: Parallelism,
    dims: (usize, usize, usize),
    dst: &mut [std::mem::MaybeUninit<f32>],
    dst_rs: usize,
    lhs: View,
    rhs: View,
) {
    let (m, n, k) = dims;
    if k == 0 {
        // gemm computes nothing for an empty product; its value is 0.
        for i in 0..m {
            dst[i * dst_rs..i * dst_rs + n].fill(std::mem::MaybeUninit::new(0.0));
        }
        return;
    }
    matmul_into(par, dims, dst, dst_rs, false, lhs, rhs)
}

/// Appends `lhs × rhs`, `(m, n)` row-major, to `dst`, writing it straight into the spare
/// capacity: no zero-fill of memory the product is about to overwrite.
pub fn matmul_extend(dims: (usize, usize, usize), dst: &mut Vec<f32>, lhs: View, rhs: View) {
    let (m, n, _) = dims;
    let len = dst.len();
    dst.reserve(m * n);
    matmul_uninit(
        parallelism(),
        dims,
        &mut dst.spare_capacity_mut()[..m * n],
        n,
        lhs,
        rhs,
    );
    // SAFETY: matmul_uninit wrote all m × n elements right after the `len` initialised ones.
    unsafe { dst.set_len(len + m * n) };
}

/// [`matmul_with`] on a destination that is read only when `accumulate` (and then must be
/// initialised, as `matmul_with`'s is).
fn matmul_into(
    par: Parallelism,
    (m, n, k): (usize, usize, usize),
    dst: &mut [std::mem::MaybeUninit<f32>],
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
    // `dst` is borrowed mutably, so it aliases neither operand. gemm reads `dst` only when
    // `accumulate` (beta = 0 and read_dst = false otherwise), so uninitialised memory is only
    // written.
    unsafe {
        if m <= SWAP_MAX_ROWS && rhs.cs == 1 {
            // Cᵀ = Bᵀ Aᵀ: gemm reads a column-major left operand in place, where it would
            // otherwise pack the small left operand again for every block of columns.
            let (lhs_t, rhs_t) = (
                View {
                    data: rhs.data,
                    rs: rhs.cs,
                    cs: rhs.rs,
                },
                View {
                    data: lhs.data,
                    rs: lhs.cs,
                    cs: lhs.rs,
                },
            );
            gemm_raw(
                par,
                (n, m, k),
                dst.as_mut_ptr().cast::<f32>(),
                (1, dst_rs),
                accumulate,
                lhs_t,
                rhs_t,
            )
        } else {
            gemm_raw(
                par,
                (m, n, k),
                dst.as_mut_ptr().cast::<f32>(),
                (dst_rs, 1),
                accumulate,
                lhs,
                rhs,
            )
        }
    }
}

/// Products with at most this many rows (a decoder step's batch) and a row-major right operand
/// run transposed: at 2 threads, `64 × 512 × 512` ran at 32 GFLOP/s as it is and 184 transposed
/// (docs/results.md, "The input-feeding decoder"). The fused kernels keep their weights in the
/// layout this wants.
const SWAP_MAX_ROWS: usize = 256;

/// gemm: `dst (m, n) = [dst +] lhs × rhs`, `dst` with strides `(rows, columns)`.
///
/// # Safety
/// Every element the product touches must lie inside `dst`'s allocation and the views' slices,
/// and `dst` must alias neither operand.
unsafe fn gemm_raw(
    par: Parallelism,
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    (dst_rs, dst_cs): (usize, usize),
    accumulate: bool,
    lhs: View,
    rhs: View,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        dst_cs as isize,
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
        par,
    )
}

/// The transpose `(cols, rows)` of a row-major `(rows, cols)` matrix, row-major: a weight `W` laid
/// out so that `x Wᵀ` takes [`matmul`]'s fast path for few rows.
pub fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    // Bands of output rows in parallel; a band reads TILE adjacent columns of each input row, so
    // every cache line read is used whole (a row-by-row scatter missed on every write).
    const TILE: usize = 32;
    let mut t = Vec::with_capacity(rows * cols);
    if rows > 0 {
        t.spare_capacity_mut()[..rows * cols]
            .par_chunks_mut(TILE * rows)
            .enumerate()
            .for_each(|(band, out)| {
                let (j0, nj) = (band * TILE, out.len() / rows);
                for (i, row) in w.chunks(cols).take(rows).enumerate() {
                    for (dj, x) in row[j0..j0 + nj].iter().enumerate() {
                        out[dj * rows + i].write(*x);
                    }
                }
            });
    }
    // SAFETY: the bands cover all `cols` output rows, and each band writes every element of its
    // rows (one per input row).
    unsafe { t.set_len(rows * cols) };
    t
}

/// `vec![0.0; n]` with the zeroing (and the page faults of a fresh allocation) spread over the
/// thread pool rather than on the calling thread.
pub fn zeros(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(1 << 16)
        .for_each(|c| c.fill(std::mem::MaybeUninit::new(0.0)));
    // SAFETY: all n elements were written above.
    unsafe { v.set_len(n) };
    v
}

/// The f32 data of a contiguous tensor on the CPU, read in place.
pub fn with_data<R>(t: &Tensor, what: &str, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let (st, l) = t.storage_and_layout();
    match &*st {
        candle_core::Storage::Cpu(cs) => f(cpu_slice(cs, l, what)?),
        _ => candle_core::bail!("{what} must be on the CPU"),
    }
}

/// The f32 data of a contiguous CPU storage, from its layout's offset.
pub fn cpu_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
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
pub fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The naive product of strided views, for reference.
    fn naive((m, n, k): (usize, usize, usize), lhs: View, rhs: View) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|p| lhs.data[i * lhs.rs + p * lhs.cs] * rhs.data[p * rhs.rs + j * rhs.cs])
                    .sum();
            }
        }
        out
    }

    #[test]
    fn transpose_and_zeros_match_their_definitions() {
        for (rows, cols) in [(0, 3), (3, 0), (1, 1), (37, 70), (70, 37)] {
            let w: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let t = transpose(&w, rows, cols);
            assert_eq!(t.len(), rows * cols);
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(
                        t[j * rows + i],
                        w[i * cols + j],
                        "({rows}, {cols}) at ({i}, {j})"
                    );
                }
            }
        }
        assert!(zeros(200_001).iter().all(|&x| x == 0.0));
        assert!(zeros(0).is_empty());
    }

    /// The product lands after what the vector held, and an empty product appends zeros.
    #[test]
    fn matmul_extend_appends_the_product() {
        let (m, n, k) = (70, 33, 9);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 11) as f32 - 5.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.25).collect();
        let (lhs, rhs) = (View::rows(&a, k), View::rows(&b, n));
        let mut dst = vec![7.0, 8.0];
        matmul_extend((m, n, k), &mut dst, lhs, rhs);
        assert_eq!(dst[..2], [7.0, 8.0]);
        assert_eq!(dst[2..], naive((m, n, k), lhs, rhs)[..]);
        matmul_extend((2, 3, 0), &mut dst, lhs, rhs);
        assert_eq!(dst.len(), 2 + m * n + 6);
        assert!(dst[2 + m * n..].iter().all(|&x| x == 0.0));
    }

    #[test]
    fn products_equal_the_naive_product_with_any_strides() {
        let (m, n, k) = (5, 301, 7);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 - 6.0).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i % 7) as f32 * 0.5 - 1.0).collect();
        let lhs = View {
            data: &a,
            rs: k,
            cs: 1,
        };
        // The right operand as a transposed row-major (n, k) matrix and as a row-major (k, n)
        // one (the transposed path), the left one row- and column-major.
        let wt: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
        let rhs = [
            View {
                data: &w,
                rs: 1,
                cs: k,
            },
            View {
                data: &wt,
                rs: n,
                cs: 1,
            },
        ];
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let lhs_t = View {
            data: &at,
            rs: 1,
            cs: m,
        };
        let want = naive((m, n, k), lhs, rhs[0]);
        for (l, r) in [
            (lhs, rhs[0]),
            (lhs, rhs[1]),
            (lhs_t, rhs[0]),
            (lhs_t, rhs[1]),
        ] {
            // A destination with a wider row stride, accumulated onto ones.
            let rs = n + 3;
            let mut dst = vec![1f32; m * rs];
            matmul((m, n, k), &mut dst, rs, true, l, r);
            for i in 0..m {
                for j in 0..n {
                    assert_eq!(dst[i * rs + j], want[i * n + j] + 1.0, "({i}, {j})");
                }
                assert_eq!(
                    &dst[i * rs + n..(i + 1) * rs],
                    &[1.0; 3],
                    "outside the columns"
                );
            }
        }
    }
}
