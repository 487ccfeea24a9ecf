//! Attention-masked mean pooling and L2 normalisation, as sentence-transformers does it.

use candle_core::{DType, Tensor, D};

/// `hidden`: [batch, tokens, dim]; `mask`: [batch, tokens] of 0/1 (u32). Returns [batch, dim],
/// each row the mean of the unmasked token vectors, scaled to unit length.
pub fn mean_pool_normalize(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // [b, t, 1]
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // [b, d]
    let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?; // [b, 1]
    let mean = summed.broadcast_div(&counts)?; // [b, d]
    let norm = mean.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?; // [b, 1]
    mean.broadcast_div(&norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn padding_does_not_change_the_mean() {
        let dev = Device::Cpu;
        // one sequence: two real tokens [1,0],[3,0] and one padded token [100,100]
        let hidden = Tensor::new(&[[[1f32, 0.], [3., 0.], [100., 100.]]], &dev).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 0]], &dev).unwrap();
        let v = mean_pool_normalize(&hidden, &mask).unwrap().to_vec2::<f32>().unwrap();
        assert!((v[0][0] - 1.0).abs() < 1e-6 && v[0][1].abs() < 1e-6);
    }
}
