//! Helpers the unit tests share: Gram matrices and output errors computed the slow, obvious way.

/// H = Σ xxᵀ over the rows of `x` (`[T, cols]`), in f64.
pub fn gram(x: &[f32], cols: usize) -> Vec<f64> {
    let mut h = vec![0f64; cols * cols];
    for r in x.chunks_exact(cols) {
        for i in 0..cols {
            for j in 0..cols {
                h[i * cols + j] += f64::from(r[i]) * f64::from(r[j]);
            }
        }
    }
    h
}

/// Σ_t ‖(W − Ŵ) x_t‖² over the rows of `x`.
pub fn output_err(x: &[f32], w: &[f32], wq: &[f32], cols: usize) -> f64 {
    let rows = w.len() / cols;
    let mut e = 0f64;
    for xr in x.chunks_exact(cols) {
        for r in 0..rows {
            let d: f64 = (0..cols)
                .map(|j| f64::from(xr[j]) * f64::from(w[r * cols + j] - wq[r * cols + j]))
                .sum();
            e += d * d;
        }
    }
    e
}
