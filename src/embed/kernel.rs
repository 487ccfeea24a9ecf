//! The numeric kernels of the fast encoder: a matrix multiply against pre-packed weights, and the
//! row-wise functions BERT needs (layer norm, softmax, erf-GELU).
//!
//! Why our own multiply: a 32-token MiniLM forward is ≈ 0.7 GFLOP, so a general-purpose GEMM that
//! re-packs the weight matrix on every call (as candle's CPU backend does) spends a third of its
//! time moving weights instead of multiplying. Packing each weight once at load time into
//! column panels of [`NR`] floats lets a 6×16 FMA micro-tile stream them straight from memory.
//! On AVX2+FMA machines that tile runs on explicit intrinsics; elsewhere a portable loop computes
//! the same sums (slower, same results to rounding).

/// Columns per packed panel: two 8-float AVX registers.
pub const NR: usize = 16;
/// Rows per micro-tile: 6 × 2 accumulators + 2 panel registers + 1 broadcast = 15 of 16 ymm.
const MR: usize = 6;

/// What a packed panel can hold: f32, or f16 widened to f32 as it is loaded (exact, and half
/// the memory traffic: MiniLM's 42 MB of f32 encoder weights do not fit a 32 MB L3, its 21 MB of
/// f16 ones do, and the conversion runs on other ports than the FMAs).
pub trait Element: Copy + Default + Send + Sync + 'static {
    fn from_f32(v: f32) -> Self;
    fn to_f32(self) -> f32;
    /// Loads 8 consecutive values as f32.
    ///
    /// # Safety
    /// `p` must point to 8 readable values and the CPU must support AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
}

impl Element for f32 {
    fn from_f32(v: f32) -> Self {
        v
    }
    fn to_f32(self) -> f32 {
        self
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        std::arch::x86_64::_mm256_loadu_ps(p)
    }
}

impl Element for half::f16 {
    fn from_f32(v: f32) -> Self {
        half::f16::from_f32(v)
    }
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
}

/// A `[k, n]` right-hand matrix stored as `ceil(n / NR)` panels, each `k × NR` contiguous
/// (row `kk` of panel `p` holds columns `p*NR .. p*NR+NR`), zero padded past `n`.
#[derive(Debug, Clone, Default)]
pub struct Packed<T = f32> {
    k: usize,
    n: usize,
    /// Panels start at `data[offset]`, a 64-byte boundary, so panel rows do not straddle more
    /// cache lines than they must.
    data: Vec<T>,
    offset: usize,
}

impl<T: Element> Packed<T> {
    /// Packs `B[kk][j] = src[kk * rs + j * cs]` for `kk < k`, `j < n`.
    pub fn new(k: usize, n: usize, src: &[f32], rs: usize, cs: usize) -> Self {
        let mut p = Packed { k: 0, n: 0, data: Vec::new(), offset: 0 };
        p.repack(k, n, src, rs, cs);
        p
    }

    /// Like [`Packed::new`], reusing this buffer (attention repacks K and V per head).
    pub fn repack(&mut self, k: usize, n: usize, src: &[f32], rs: usize, cs: usize) {
        assert!(k > 0 && n > 0 && (k - 1) * rs + (n - 1) * cs < src.len(), "pack source out of bounds");
        let panels = n.div_ceil(NR);
        self.k = k;
        self.n = n;
        self.data.clear();
        self.data.resize(panels * k * NR + 64, T::default());
        self.offset = self.data.as_ptr().align_offset(64).min(64);
        for p in 0..panels {
            let cols = NR.min(n - p * NR);
            let panel = &mut self.data[self.offset + p * k * NR..self.offset + (p + 1) * k * NR];
            for kk in 0..k {
                let base = kk * rs + p * NR * cs;
                for (j, v) in panel[kk * NR..kk * NR + cols].iter_mut().enumerate() {
                    *v = T::from_f32(src[base + j * cs]);
                }
            }
        }
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn n(&self) -> usize {
        self.n
    }

    fn panel(&self, p: usize) -> &[T] {
        &self.data[self.offset + p * self.k * NR..self.offset + (p + 1) * self.k * NR]
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }
}

/// `out[i*ldc + j] = bias[j] + Σ_kk a[i*lda + kk] · B[kk][j]` for `i < m`, `j < b.n()`.
///
/// Panics if a slice is too short for the shapes given: the callers size every buffer from the
/// same model dimensions, so that can only be a bug.
pub fn matmul<T: Element>(
    a: &[f32],
    lda: usize,
    m: usize,
    b: &Packed<T>,
    bias: Option<&[f32]>,
    out: &mut [f32],
    ldc: usize,
) {
    if m == 0 {
        return;
    }
    let (k, n) = (b.k, b.n);
    assert!(lda >= k && ldc >= n, "leading dimensions too small");
    assert!(a.len() >= (m - 1) * lda + k, "lhs out of bounds");
    assert!(out.len() >= (m - 1) * ldc + n, "output out of bounds");
    assert!(bias.is_none_or(|bias| bias.len() >= n), "bias too short");
    #[cfg(target_arch = "x86_64")]
    if has_simd() {
        // SAFETY: the CPU supports AVX2, FMA and F16C (checked above), and the asserts above
        // guarantee every index the kernel touches is inside its slice.
        unsafe { avx2::matmul(a, lda, m, b, bias, out, ldc) };
        return;
    }
    portable_matmul(a, lda, m, b, bias, out, ldc);
}

/// Whether the fast kernel runs on this CPU (otherwise the portable loop does).
pub fn has_simd() -> bool {
    crate::simd::available()
}

fn portable_matmul<T: Element>(
    a: &[f32],
    lda: usize,
    m: usize,
    b: &Packed<T>,
    bias: Option<&[f32]>,
    out: &mut [f32],
    ldc: usize,
) {
    let (k, n) = (b.k, b.n);
    for i in 0..m {
        let row = &a[i * lda..i * lda + k];
        for p in 0..b.panels() {
            let cols = NR.min(n - p * NR);
            let mut acc = [0f32; NR];
            if let Some(bias) = bias {
                acc[..cols].copy_from_slice(&bias[p * NR..p * NR + cols]);
            }
            for (kk, &av) in row.iter().enumerate() {
                let brow = &b.panel(p)[kk * NR..kk * NR + NR];
                for (c, bv) in acc.iter_mut().zip(brow) {
                    *c += av * bv.to_f32();
                }
            }
            out[i * ldc + p * NR..i * ldc + p * NR + cols].copy_from_slice(&acc[..cols]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Element, Packed, MR, NR};
    use std::arch::x86_64::*;

    /// See [`super::matmul`]; the caller has checked bounds and CPU features.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn matmul<T: Element>(
        a: &[f32],
        lda: usize,
        m: usize,
        b: &Packed<T>,
        bias: Option<&[f32]>,
        out: &mut [f32],
        ldc: usize,
    ) {
        let (k, n) = (b.k, b.n);
        let a = a.as_ptr();
        let out = out.as_mut_ptr();
        for p in 0..b.panels() {
            let cols = NR.min(n - p * NR);
            let mut init = [0f32; NR];
            if let Some(bias) = bias {
                init[..cols].copy_from_slice(&bias[p * NR..p * NR + cols]);
            }
            let init = [_mm256_loadu_ps(init.as_ptr()), _mm256_loadu_ps(init.as_ptr().add(8))];
            let panel = b.panel(p).as_ptr();
            // The first pass over a panel waits on memory. While it runs, pull the next panel
            // in, so the passes for the other rows (and the next panel's first) hit cache.
            let next = if p + 1 < b.panels() { b.panel(p + 1).as_ptr() } else { std::ptr::null() };
            // Split the rows into tiles as even as possible (32 rows: 6,6,5,5,5,5, not 6×5 + 2):
            // a thin tile re-reads the whole panel for little work and has too few independent
            // accumulators to hide the FMA latency.
            let tiles = m.div_ceil(MR);
            let mut i = 0;
            for t in 0..tiles {
                let rows = m / tiles + usize::from(t < m % tiles);
                let pf = if t == 0 { next } else { std::ptr::null() };
                let (a, out) = (a.add(i * lda), out.add(i * ldc + p * NR));
                match rows {
                    6 => tile::<T, 6>(a, lda, k, panel, pf, init, out, ldc, cols),
                    5 => tile::<T, 5>(a, lda, k, panel, pf, init, out, ldc, cols),
                    4 => tile::<T, 4>(a, lda, k, panel, pf, init, out, ldc, cols),
                    3 => tile::<T, 3>(a, lda, k, panel, pf, init, out, ldc, cols),
                    2 => tile::<T, 2>(a, lda, k, panel, pf, init, out, ldc, cols),
                    _ => tile::<T, 1>(a, lda, k, panel, pf, init, out, ldc, cols),
                }
                i += rows;
            }
        }
    }

    /// `R` rows × 16 columns, accumulated over all of `k` in registers; prefetches the panel at
    /// `prefetch` (one panel row per step) unless it is null.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<T: Element, const R: usize>(
        a: *const f32,
        lda: usize,
        k: usize,
        panel: *const T,
        prefetch: *const T,
        init: [__m256; 2],
        out: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        let mut acc = [init; R];
        if !prefetch.is_null() {
            for kk in 0..k {
                _mm_prefetch::<_MM_HINT_T0>(prefetch.add(kk * NR) as *const i8);
                step(&mut acc, a, lda, kk, panel);
            }
        } else {
            for kk in 0..k {
                step(&mut acc, a, lda, kk, panel);
            }
        }
        store(&acc, out, ldc, cols);
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn step<T: Element, const R: usize>(
        acc: &mut [[__m256; 2]; R],
        a: *const f32,
        lda: usize,
        kk: usize,
        panel: *const T,
    ) {
        let b0 = T::load8(panel.add(kk * NR));
        let b1 = T::load8(panel.add(kk * NR + 8));
        for (r, acc) in acc.iter_mut().enumerate() {
            let av = _mm256_broadcast_ss(&*a.add(r * lda + kk));
            acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
            acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn store<const R: usize>(acc: &[[__m256; 2]; R], out: *mut f32, ldc: usize, cols: usize) {
        for (r, acc) in acc.iter().enumerate() {
            let dst = out.add(r * ldc);
            if cols == NR {
                _mm256_storeu_ps(dst, acc[0]);
                _mm256_storeu_ps(dst.add(8), acc[1]);
            } else {
                let mut tmp = [0f32; NR];
                _mm256_storeu_ps(tmp.as_mut_ptr(), acc[0]);
                _mm256_storeu_ps(tmp.as_mut_ptr().add(8), acc[1]);
                std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, cols);
            }
        }
    }
}

/// Defines a `pub fn` whose body is compiled twice, once for AVX2+FMA (used when the CPU has
/// them) and once for the baseline target, so the element-wise loops run eight lanes wide
/// without a `-C target-cpu` flag.
macro_rules! multiversion {
    ($(#[$m:meta])* pub fn $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        $(#[$m])*
        pub fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn wide($($arg: $ty),*) {
                    body($($arg),*)
                }
                if has_simd() {
                    // SAFETY: the CPU has the features `wide` is compiled for.
                    unsafe { wide($($arg),*) };
                    return;
                }
            }
            body($($arg),*)
        }
    };
}

/// Sum of a slice in eight independent lanes, so the compiler can vectorise it.
#[inline(always)]
fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = xs.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    for c in chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l += f(x);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

multiversion! {
    /// `x = LayerNorm(x + residual)` over one row (pass an empty `residual` for none).
    pub fn add_layer_norm(x: &mut [f32], residual: &[f32], gamma: &[f32], beta: &[f32], eps: f32) {
        if !residual.is_empty() {
            for (v, r) in x.iter_mut().zip(residual) {
                *v += r;
            }
        }
        let n = x.len() as f32;
        let mean = lane_sum(x, |v| v) / n;
        let var = lane_sum(x, |v| (v - mean) * (v - mean)) / n;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in x.iter_mut().zip(gamma).zip(beta) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

multiversion! {
    /// In-place softmax of `row * scale`.
    pub fn softmax_scaled(row: &mut [f32], scale: f32) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for v in row.iter_mut() {
            *v = exp((*v - max) * scale);
        }
        let inv = 1.0 / lane_sum(row, |v| v);
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

multiversion! {
    /// The exact (erf) GELU BERT was trained with, `x/2 · (1 + erf(x/√2))`, in place.
    pub fn gelu_erf(xs: &mut [f32]) {
        for x in xs.iter_mut() {
            *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

/// e^x for f32 (Cephes' `expf`: 2^n · a degree-6 polynomial on the remainder), within 2 ulp and
/// branch-free, so softmax vectorises instead of calling libm per element.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

/// erf for f32 as a branch-free rational function (the approximation Eigen and XLA use),
/// accurate to a few ulp and vectorisable, unlike a libm call per element.
#[inline]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_6e-3;
    p = x2 * p + -1.609_603_3e-2;
    p *= x;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329_3e-3;
    q = x2 * q + -1.426_474e-2;
    p / q
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator, so failures reproduce.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn naive(a: &[f32], lda: usize, m: usize, bt: &[f32], k: usize, n: usize, bias: Option<&[f32]>) -> Vec<f32> {
        // bt is B stored [n, k] (the PyTorch weight layout)
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = bias.map_or(0.0, |b| b[j]) as f64;
                for kk in 0..k {
                    s += a[i * lda + kk] as f64 * bt[j * k + kk] as f64;
                }
                out[i * n + j] = s as f32;
            }
        }
        out
    }

    #[test]
    fn matmul_matches_a_naive_product_for_awkward_shapes() {
        // rows not a multiple of 6, columns not a multiple of 16, strided lhs and output
        for (m, k, n) in [(1, 1, 1), (5, 7, 3), (6, 16, 16), (13, 33, 40), (32, 384, 48), (7, 64, 100)] {
            let lda = k + 3;
            let a = values(m * lda, (m * k) as u64);
            let bt = values(n * k, n as u64);
            let bias = values(n, 7);
            let packed: Packed<f32> = Packed::new(k, n, &bt, 1, k);
            for bias in [None, Some(&bias[..])] {
                let want = naive(&a, lda, m, &bt, k, n, bias);
                let ldc = n + 5;
                let mut got = vec![f32::NAN; m * ldc];
                matmul(&a, lda, m, &packed, bias, &mut got, ldc);
                let mut portable = vec![f32::NAN; m * ldc];
                portable_matmul(&a, lda, m, &packed, bias, &mut portable, ldc);
                for i in 0..m {
                    for j in 0..n {
                        let (w, g, p) = (want[i * n + j], got[i * ldc + j], portable[i * ldc + j]);
                        assert!((w - g).abs() < 1e-4 * (1.0 + k as f32).sqrt(), "{m}x{k}x{n} [{i},{j}]: {g} vs {w}");
                        assert!((w - p).abs() < 1e-4 * (1.0 + k as f32).sqrt(), "portable [{i},{j}]: {p} vs {w}");
                    }
                    // the padding between rows is left alone
                    assert!(got[i * ldc + n..(i + 1) * ldc].iter().all(|v| v.is_nan()));
                }
            }
        }
    }

    #[test]
    fn f16_panels_multiply_exactly_like_their_f32_values() {
        let (m, k, n) = (9, 40, 35);
        let a = values(m * k, 1);
        // weights that are exactly representable in f16, as in the vendored checkpoint
        let bt: Vec<f32> = values(n * k, 2).iter().map(|v| half::f16::from_f32(*v).to_f32()).collect();
        let (p16, p32): (Packed<half::f16>, Packed<f32>) = (Packed::new(k, n, &bt, 1, k), Packed::new(k, n, &bt, 1, k));
        let (mut o16, mut o32, mut portable) = (vec![0f32; m * n], vec![0f32; m * n], vec![0f32; m * n]);
        matmul(&a, k, m, &p16, None, &mut o16, n);
        matmul(&a, k, m, &p32, None, &mut o32, n);
        portable_matmul(&a, k, m, &p16, None, &mut portable, n);
        assert_eq!(o16, o32, "same products in the same order");
        let want = naive(&a, k, m, &bt, k, n, None);
        for (p, w) in portable.iter().zip(&want) {
            assert!((p - w).abs() < 1e-4);
        }
    }

    #[test]
    fn packing_reads_row_major_and_transposed_sources_alike() {
        let (k, n) = (5, 19);
        let rm = values(k * n, 3); // B row-major [k, n]
        let mut tr = vec![0f32; k * n]; // the same B stored [n, k]
        for kk in 0..k {
            for j in 0..n {
                tr[j * k + kk] = rm[kk * n + j];
            }
        }
        let (x, y): (Packed, Packed) = (Packed::new(k, n, &rm, n, 1), Packed::new(k, n, &tr, 1, k));
        assert_eq!(x.panels(), 2);
        for p in 0..2 {
            assert_eq!(x.panel(p), y.panel(p));
        }
        assert!(x.panel(1).chunks(NR).all(|row| row[n - NR..].iter().all(|v| *v == 0.0)), "zero padded");
    }

    #[test]
    fn erf_is_accurate_everywhere() {
        // against an f64 series; the bound is a few f32 ulp of 1.0
        let mut worst = 0f64;
        for i in -6000..=6000 {
            let x = i as f64 / 1000.0;
            let got = erf(x as f32) as f64;
            worst = worst.max((got - libm_erf(x)).abs());
        }
        assert!(worst < 1e-6, "max abs error {worst}");
    }

    /// erf by its Taylor series (|x| < 3) or the asymptotic continued fraction, in f64.
    fn libm_erf(x: f64) -> f64 {
        let ax = x.abs();
        let r = if ax < 3.0 {
            let (mut term, mut sum, mut n) = (ax, ax, 0.0);
            while term.abs() > 1e-17 {
                n += 1.0;
                term *= -ax * ax / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc continued fraction (Lentz), converges fast for x ≥ 3
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (ax + f);
            }
            1.0 - (-ax * ax).exp() / (std::f64::consts::PI.sqrt() * (ax + f))
        };
        r.copysign(x)
    }

    #[test]
    fn exp_is_accurate_where_softmax_uses_it() {
        let mut worst = 0f64;
        for i in -80_000..=80_000 {
            let x = (i as f64 / 1000.0) as f32;
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64) - want).abs() / want);
        }
        assert!(worst < 5e-7, "max relative error {worst}");
    }

    #[test]
    fn layer_norm_and_softmax_are_the_textbook_ones() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        let res = vec![1.0; 10];
        add_layer_norm(&mut x, &res, &[2.0; 10], &[0.5; 10], 1e-12);
        // (v - mean)/std with mean 6.5, var 8.25
        let want: Vec<f32> = (2..12).map(|v| (v as f32 - 6.5) / 8.25f32.sqrt() * 2.0 + 0.5).collect();
        for (g, w) in x.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{g} vs {w}");
        }
        let mut row = vec![1.0, 2.0, 3.0];
        softmax_scaled(&mut row, 0.5);
        let e: Vec<f32> = [0.5f32, 1.0, 1.5].iter().map(|v| v.exp()).collect();
        let s: f32 = e.iter().sum();
        for (g, w) in row.iter().zip(e.iter().map(|v| v / s)) {
            assert!((g - w).abs() < 1e-6);
        }
    }
}
