//! CPU-specific vector arithmetic shared by the encoder and the cache index: which SIMD the CPU
//! has, and the f16 dot product the index scores with.

use half::f16;

/// Whether the CPU has AVX2, FMA and F16C (every x86-64 CPU since 2013 / Zen 1). The fast paths
/// need all three; without them the portable loops run, with the same results to rounding.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Dot product of two f16 vectors, accumulated in f32.
pub fn dot_f16(a: &[f16], b: &[f16]) -> f32 {
    let n = a.len().min(b.len());
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: the CPU has AVX2, FMA and F16C, and `n` is within both slices.
        return unsafe { avx2::dot_f16(&a[..n], &b[..n]) };
    }
    a[..n].iter().zip(&b[..n]).map(|(x, y)| x.to_f32() * y.to_f32()).sum()
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use half::f16;
    use std::arch::x86_64::*;

    /// `a` and `b` have the same length; the caller has checked CPU features.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f16(a: &[f16], b: &[f16]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr() as *const __m128i, b.as_ptr() as *const __m128i);
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // 32 at a time into four independent accumulators, then 8 at a time
        while i + 32 <= n {
            for (j, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_cvtph_ps(_mm_loadu_si128(pa.add(i / 8 + j)));
                let y = _mm256_cvtph_ps(_mm_loadu_si128(pb.add(i / 8 + j)));
                *acc = _mm256_fmadd_ps(x, y, *acc);
            }
            i += 32;
        }
        while i + 8 <= n {
            let x = _mm256_cvtph_ps(_mm_loadu_si128(pa.add(i / 8)));
            let y = _mm256_cvtph_ps(_mm_loadu_si128(pb.add(i / 8)));
            acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
            i += 8;
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
        let mut s: f32 = lanes.iter().sum();
        for k in i..n {
            s += a[k].to_f32() * b[k].to_f32();
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_dot_matches_the_widened_sum_for_every_length() {
        for n in [0, 1, 7, 8, 9, 31, 32, 33, 100, 384] {
            let a: Vec<f16> = (0..n).map(|i| f16::from_f32(((i * 37 % 19) as f32 - 9.0) / 10.0)).collect();
            let b: Vec<f16> = (0..n).map(|i| f16::from_f32(((i * 11 % 13) as f32 - 6.0) / 7.0)).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| x.to_f64() * y.to_f64()).sum();
            let got = dot_f16(&a, &b) as f64;
            assert!((got - want).abs() < 1e-4, "n={n}: {got} vs {want}");
        }
    }
}
