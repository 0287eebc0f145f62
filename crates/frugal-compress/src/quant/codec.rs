//! One table, [`CODECS`], of the block formats Frugal writes: how to quantize a row (optionally
//! weighted by an importance matrix), and, for the quantized formats, how to read a block's
//! sub-block scales and read or write its levels — what GPTQ needs to choose levels itself.
//!
//! A level `l ∈ 0..=lmax` of a sub-block with scale `d` and bias `b` decodes to
//! `d · (l − offset) + b` for the linear formats, and to `d · values[l] + b` for the formats
//! whose levels index a table of values (IQ4_NL, IQ4_XS).

use super::iq1;
use super::iq2;
use super::iq3;
use super::iquants;
use super::kquants::{self, nearest_int, QK_K};
use super::legacy::{self, QK};
use super::ternary;
use frugal_formats::gguf::GgmlType;

/// Quantizes one row (a whole number of blocks) into exactly its bytes.
pub type RowFn = fn(&[f32], Option<&[f32]>, &mut [u8]);

/// How one block format is written and read.
#[derive(Debug)]
pub struct Codec {
    pub ggml: GgmlType,
    /// Elements per block and bytes per block.
    pub block: usize,
    pub block_bytes: usize,
    /// Elements per sub-block scale.
    pub sub: usize,
    pub lmax: u8,
    pub offset: i32,
    /// The value each level stands for, for a format with a table of values (`None`: linear).
    pub values: Option<&'static [i8]>,
    pub row: RowFn,
    /// Present for the quantized formats whose values are set one by one (what GPTQ needs);
    /// absent for the floats and for the lattice types, whose values come four or eight at a
    /// time.
    pub levels: Option<LevelAccess>,
    /// For the lattice types whose values come as points of eight (or two points of four):
    /// what GPTQ needs to round them group by group ([`super::gptq::gptq_lattice`]).
    pub regroup: Option<Regroup>,
}

/// `(block bytes, group, target values, weights, decoded values out)`.
pub type RegroupFn = fn(&mut [u8], usize, &[f32], &[f32], &mut [f32]);

/// A lattice type's access for GPTQ.
#[derive(Debug, Clone, Copy)]
pub struct Regroup {
    /// Re-chooses group `g` (values `8g..8g+8`) of a block whose scales are fixed, for target
    /// values under weights, and returns the decoded values.
    pub group: RegroupFn,
    /// How many codes a sub-block's scale (of [`Codec::sub`] values) takes, and the setter of
    /// sub-block `s`'s code (the scale's bits, and for IQ1_S the shift's sign above them).
    pub codes: u8,
    pub set_scale: fn(&mut [u8], usize, u8),
}

/// Access to a quantized block's scales and levels.
#[derive(Debug, Clone, Copy)]
pub struct LevelAccess {
    pub scales: fn(&[u8], &mut [(f32, f32)]),
    pub get: fn(&[u8], &mut [u8]),
    pub set: fn(&mut [u8], &[u8]),
}

impl Codec {
    /// Bits per weight.
    pub fn bpw(&self) -> f64 {
        self.block_bytes as f64 * 8.0 / self.block as f64
    }

    /// Whether this is a quantized format (not F32 or F16).
    pub fn quantized(&self) -> bool {
        self.lmax > 0
    }

    /// Whether GPTQ can round to this format: it sets values one at a time (a grid of levels) or
    /// a lattice point's eight at a time (with each sub-block's scale, and IQ1_S's shift shared
    /// by 32 values, chosen when the sub-block is entered).
    pub fn gptq_rounds(&self) -> bool {
        self.quantized() && (self.levels.is_some() || self.regroup.is_some())
    }

    /// Whether rows of `ncols` values fit this format.
    pub fn fits(&self, ncols: usize) -> bool {
        ncols.is_multiple_of(self.block)
    }

    /// Decodes one row of this format (`q` holds whole blocks) into `out`.
    pub fn decode_row(&self, q: &[u8], out: &mut [f32]) {
        decode_row_dispatch(self, q, out)
    }

    fn decode_row_impl(&self, q: &[u8], out: &mut [f32]) {
        match (self.levels, self.ggml) {
            (Some(_), _) => {
                for (yb, ob) in q
                    .chunks_exact(self.block_bytes)
                    .zip(out.chunks_exact_mut(self.block))
                {
                    self.decode_block(yb, ob);
                }
            }
            (None, t) if frugal_models::iq::decodes(t) => {
                frugal_models::iq::decode_row(t, q, out).expect("whole blocks of the type")
            }
            (None, GgmlType::F16) => {
                for (b, o) in q.chunks_exact(2).zip(out.iter_mut()) {
                    *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            (None, _) => {
                for (b, o) in q.chunks_exact(4).zip(out.iter_mut()) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
        }
    }

    /// Decodes one block (through its scales and levels) into `out`.
    pub fn decode_block(&self, y: &[u8], out: &mut [f32]) {
        let acc = self.levels.expect("quantized format");
        let mut sc = [(0f32, 0f32); 16];
        let mut lv = [0u8; QK_K];
        let nsub = self.block / self.sub;
        (acc.scales)(y, &mut sc[..nsub]);
        (acc.get)(y, &mut lv[..self.block]);
        for ((o, l), &(d, b)) in out[..self.block]
            .chunks_exact_mut(self.sub)
            .zip(lv.chunks_exact(self.sub))
            .zip(&sc[..nsub])
        {
            for (o, &l) in o.iter_mut().zip(l) {
                *o = d * self.level_value(l) + b;
            }
        }
    }

    /// What level `l` stands for before its sub-block's scale and bias: `l − offset`, or the
    /// table's value.
    #[inline]
    pub fn level_value(&self, l: u8) -> f32 {
        match self.values {
            Some(v) => v[l as usize] as f32,
            None => (l as i32 - self.offset) as f32,
        }
    }

    /// The level nearest `x` in a sub-block of scale `d` and bias `b` (the format's own rounding:
    /// to nearest on the linear grid, clamped, or the nearest table value), and its value.
    #[inline]
    pub fn round_level(&self, x: f32, d: f32, b: f32) -> (u8, f32) {
        let l = match self.values {
            Some(v) => {
                if d == 0.0 {
                    iquants::best_index(v, 0.0) as u8
                } else {
                    iquants::best_index(v, (x - b) / d) as u8
                }
            }
            None => (nearest_int((x - b) / d) + self.offset).clamp(0, self.lmax as i32) as u8,
        };
        (l, d * self.level_value(l) + b)
    }
}

frugal_models::avx2_dispatch! {
    fn decode_row_dispatch(c: &Codec, q: &[u8], out: &mut [f32]) {
        c.decode_row_impl(q, out)
    }
}

fn legacy_row(
    f: fn(&[f32], &mut [u8]),
    w: fn(&[f32], &[f32], f32, &mut [u8]),
    bytes: usize,
) -> impl Fn(&[f32], Option<&[f32]>, &mut [u8]) {
    move |x, qw, y| match qw {
        None => x
            .chunks_exact(QK)
            .zip(y.chunks_exact_mut(bytes))
            .for_each(|(b, o)| f(b, o)),
        Some(qw) => {
            let sigma2 = legacy::row_sigma2(x);
            x.chunks_exact(QK)
                .zip(qw.chunks_exact(QK))
                .zip(y.chunks_exact_mut(bytes))
                .for_each(|((b, q), o)| w(b, q, sigma2, o))
        }
    }
}

fn k_row(
    f: fn(&[f32], Option<&[f32]>, &mut [u8]),
    bytes: usize,
) -> impl Fn(&[f32], Option<&[f32]>, &mut [u8]) {
    move |x, qw, y| {
        for (i, (b, o)) in x
            .chunks_exact(QK_K)
            .zip(y.chunks_exact_mut(bytes))
            .enumerate()
        {
            f(b, qw.map(|q| &q[i * QK_K..(i + 1) * QK_K]), o)
        }
    }
}

fn row_f32(x: &[f32], _: Option<&[f32]>, y: &mut [u8]) {
    for (o, v) in y.chunks_exact_mut(4).zip(x) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}
fn row_f16(x: &[f32], _: Option<&[f32]>, y: &mut [u8]) {
    for (o, &v) in y.chunks_exact_mut(2).zip(x) {
        o.copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
    }
}
frugal_models::avx2_dispatch! {
    fn row_q8_0(x: &[f32], _qw: Option<&[f32]>, y: &mut [u8]) {
        // ggml's Q8_0 ignores importance weights.
        x.chunks_exact(QK)
            .zip(y.chunks_exact_mut(34))
            .for_each(|(b, o)| legacy::q8_0_block(b, o))
    }
}
/// The legacy row quantizers: block function, weighted block function, block bytes.
macro_rules! legacy_rows {
    ($($name:ident => ($block:ident, $weighted:ident, $bytes:literal)),* $(,)?) => {$(
        frugal_models::avx2_dispatch! {
            fn $name(x: &[f32], q: Option<&[f32]>, y: &mut [u8]) {
                legacy_row(legacy::$block, legacy::$weighted, $bytes)(x, q, y)
            }
        }
    )*};
}
legacy_rows! {
    row_q4_0 => (q4_0_block, q4_0_weighted, 18),
    row_q4_1 => (q4_1_block, q4_1_weighted, 20),
    row_q5_0 => (q5_0_block, q5_0_weighted, 22),
    row_q5_1 => (q5_1_block, q5_1_weighted, 24),
}
/// Rows of a type quantized block by block, the importance weights cut per block.
fn iq_row(
    f: fn(&[f32], Option<&[f32]>, &mut [u8]),
    block: usize,
    bytes: usize,
) -> impl Fn(&[f32], Option<&[f32]>, &mut [u8]) {
    move |x, qw, y| {
        for (i, (b, o)) in x
            .chunks_exact(block)
            .zip(y.chunks_exact_mut(bytes))
            .enumerate()
        {
            f(b, qw.map(|q| &q[i * block..(i + 1) * block]), o)
        }
    }
}
frugal_models::avx2_dispatch! {
    fn row_iq4_nl(x: &[f32], q: Option<&[f32]>, y: &mut [u8]) {
        iq_row(iquants::iq4_nl_block, 32, iquants::IQ4_NL_BYTES)(x, q, y)
    }
}
frugal_models::avx2_dispatch! {
    fn row_iq4_xs(x: &[f32], q: Option<&[f32]>, y: &mut [u8]) {
        iq_row(iquants::iq4_xs_block, QK_K, iquants::IQ4_XS_BYTES)(x, q, y)
    }
}
fn row_iq3_xxs(x: &[f32], q: Option<&[f32]>, y: &mut [u8]) {
    iq_row(iq3::iq3_xxs_block, QK_K, iq3::IQ3_XXS_BYTES)(x, q, y)
}
fn row_iq3_s(x: &[f32], q: Option<&[f32]>, y: &mut [u8]) {
    iq_row(iq3::iq3_s_block, QK_K, iq3::IQ3_S_BYTES)(x, q, y)
}
fn row_iq2_xxs(x: &[f32], q: Option<&[f32]>, y: &mut [u8]) {
    iq_row(iq2::iq2_xxs_block, QK_K, iq2::IQ2_XXS_BYTES)(x, q, y)
}
fn row_iq2_xs(x: &[f32], q: Option<&[f32]>, y: &mut [u8]) {
    iq_row(iq2::iq2_xs_block, QK_K, iq2::IQ2_XS_BYTES)(x, q, y)
}
fn row_iq2_s(x: &[f32], q: Option<&[f32]>, y: &mut [u8]) {
    iq_row(iq2::iq2_s_block, QK_K, iq2::IQ2_S_BYTES)(x, q, y)
}
fn row_iq1_s(x: &[f32], q: Option<&[f32]>, y: &mut [u8]) {
    iq_row(iq1::iq1_s_block, QK_K, iq1::IQ1_S_BYTES)(x, q, y)
}
fn row_iq1_m(x: &[f32], q: Option<&[f32]>, y: &mut [u8]) {
    iq_row(iq1::iq1_m_block, QK_K, iq1::IQ1_M_BYTES)(x, q, y)
}
fn row_tq1_0(x: &[f32], q: Option<&[f32]>, y: &mut [u8]) {
    iq_row(ternary::tq1_0_block, QK_K, ternary::TQ1_0_BYTES)(x, q, y)
}
fn row_tq2_0(x: &[f32], q: Option<&[f32]>, y: &mut [u8]) {
    iq_row(ternary::tq2_0_block, QK_K, ternary::TQ2_0_BYTES)(x, q, y)
}
fn row_q2_k(x: &[f32], q: Option<&[f32]>, y: &mut [u8]) {
    k_row(kquants::q2_k_block, kquants::Q2K_BYTES)(x, q, y)
}
fn row_q3_k(x: &[f32], q: Option<&[f32]>, y: &mut [u8]) {
    k_row(kquants::q3_k_block, kquants::Q3K_BYTES)(x, q, y)
}
fn row_q4_k(x: &[f32], q: Option<&[f32]>, y: &mut [u8]) {
    k_row(kquants::q4_k_block, kquants::Q4K_BYTES)(x, q, y)
}
fn row_q5_k(x: &[f32], q: Option<&[f32]>, y: &mut [u8]) {
    k_row(kquants::q5_k_block, kquants::Q5K_BYTES)(x, q, y)
}
fn row_q6_k(x: &[f32], q: Option<&[f32]>, y: &mut [u8]) {
    k_row(kquants::q6_k_block, kquants::Q6K_BYTES)(x, q, y)
}

macro_rules! access {
    ($m:path, $s:ident, $g:ident, $t:ident) => {{
        use $m as a;
        Some(LevelAccess {
            scales: a::$s,
            get: a::$g,
            set: a::$t,
        })
    }};
}

/// Every format Frugal writes, from most to fewest bits.
pub static CODECS: &[Codec] = &[
    Codec {
        ggml: GgmlType::F32,
        block: 1,
        block_bytes: 4,
        sub: 1,
        lmax: 0,
        offset: 0,
        values: None,
        row: row_f32,
        levels: None,
        regroup: None,
    },
    Codec {
        ggml: GgmlType::F16,
        block: 1,
        block_bytes: 2,
        sub: 1,
        lmax: 0,
        offset: 0,
        values: None,
        row: row_f16,
        levels: None,
        regroup: None,
    },
    Codec {
        ggml: GgmlType::Q8_0,
        block: 32,
        block_bytes: 34,
        sub: 32,
        lmax: 255,
        offset: 128,
        values: None,
        row: row_q8_0,
        levels: access!(legacy::access, q8_0_scales, q8_0_levels, q8_0_set_levels),
        regroup: None,
    },
    Codec {
        ggml: GgmlType::Q6_K,
        block: 256,
        block_bytes: kquants::Q6K_BYTES,
        sub: 16,
        lmax: 63,
        offset: 32,
        values: None,
        row: row_q6_k,
        levels: access!(kquants::access, q6_k_scales, q6_k_levels, q6_k_set_levels),
        regroup: None,
    },
    Codec {
        ggml: GgmlType::Q5_1,
        block: 32,
        block_bytes: 24,
        sub: 32,
        lmax: 31,
        offset: 0,
        values: None,
        row: row_q5_1,
        levels: access!(legacy::access, q5_1_scales, q5_1_levels, q5_1_set_levels),
        regroup: None,
    },
    Codec {
        ggml: GgmlType::Q5_0,
        block: 32,
        block_bytes: 22,
        sub: 32,
        lmax: 31,
        offset: 16,
        values: None,
        row: row_q5_0,
        levels: access!(legacy::access, q5_0_scales, q5_0_levels, q5_0_set_levels),
        regroup: None,
    },
    Codec {
        ggml: GgmlType::Q5_K,
        block: 256,
        block_bytes: kquants::Q5K_BYTES,
        sub: 32,
        lmax: 31,
        offset: 0,
        values: None,
        row: row_q5_k,
        levels: access!(
            kquants::access,
            qk_scale_min_scales,
            q5_k_levels,
            q5_k_set_levels
        ),
        regroup: None,
    },
    Codec {
        ggml: GgmlType::Q4_1,
        block: 32,
        block_bytes: 20,
        sub: 32,
        lmax: 15,
        offset: 0,
        values: None,
        row: row_q4_1,
        levels: access!(legacy::access, q4_1_scales, q4_1_levels, q4_1_set_levels),
        regroup: None,
    },
    Codec {
        ggml: GgmlType::Q4_0,
        block: 32,
        block_bytes: 18,
        sub: 32,
        lmax: 15,
        offset: 8,
        values: None,
        row: row_q4_0,
        levels: access!(legacy::access, q4_0_scales, q4_0_levels, q4_0_set_levels),
        regroup: None,
    },
    Codec {
        ggml: GgmlType::IQ4_NL,
        block: 32,
        block_bytes: iquants::IQ4_NL_BYTES,
        sub: 32,
        lmax: 15,
        offset: 0,
        values: Some(&iquants::KVALUES_IQ4NL),
        row: row_iq4_nl,
        levels: access!(
            iquants::access,
            iq4_nl_scales,
            iq4_nl_levels,
            iq4_nl_set_levels
        ),
        regroup: None,
    },
    Codec {
        ggml: GgmlType::Q4_K,
        block: 256,
        block_bytes: kquants::Q4K_BYTES,
        sub: 32,
        lmax: 15,
        offset: 0,
        values: None,
        row: row_q4_k,
        levels: access!(
            kquants::access,
            qk_scale_min_scales,
            q4_k_levels,
            q4_k_set_levels
        ),
        regroup: None,
    },
    Codec {
        ggml: GgmlType::IQ4_XS,
        block: 256,
        block_bytes: iquants::IQ4_XS_BYTES,
        sub: 32,
        lmax: 15,
        offset: 0,
        values: Some(&iquants::KVALUES_IQ4NL),
        row: row_iq4_xs,
        levels: access!(
            iquants::access,
            iq4_xs_scales,
            iq4_xs_levels,
            iq4_xs_set_levels
        ),
        regroup: None,
    },
    Codec {
        ggml: GgmlType::IQ3_S,
        block: 256,
        block_bytes: iq3::IQ3_S_BYTES,
        sub: 32,
        lmax: 7,
        offset: 0,
        values: None,
        row: row_iq3_s,
        levels: None,
        regroup: Some(Regroup {
            group: iq3::regroup_iq3_s,
            codes: 16,
            set_scale: iq3::set_scale_iq3_s,
        }),
    },
    Codec {
        ggml: GgmlType::Q3_K,
        block: 256,
        block_bytes: kquants::Q3K_BYTES,
        sub: 16,
        lmax: 7,
        offset: 4,
        values: None,
        row: row_q3_k,
        levels: access!(kquants::access, q3_k_scales, q3_k_levels, q3_k_set_levels),
        regroup: None,
    },
    Codec {
        ggml: GgmlType::IQ3_XXS,
        block: 256,
        block_bytes: iq3::IQ3_XXS_BYTES,
        sub: 32,
        lmax: 7,
        offset: 0,
        values: None,
        row: row_iq3_xxs,
        levels: None,
        regroup: Some(Regroup {
            group: iq3::regroup_iq3_xxs,
            codes: 16,
            set_scale: iq3::set_scale_iq3_xxs,
        }),
    },
    Codec {
        ggml: GgmlType::Q2_K,
        block: 256,
        block_bytes: kquants::Q2K_BYTES,
        sub: 16,
        lmax: 3,
        offset: 0,
        values: None,
        row: row_q2_k,
        levels: access!(kquants::access, q2_k_scales, q2_k_levels, q2_k_set_levels),
        regroup: None,
    },
    Codec {
        ggml: GgmlType::IQ2_S,
        block: 256,
        block_bytes: iq2::IQ2_S_BYTES,
        sub: 16,
        lmax: 2,
        offset: 0,
        values: None,
        row: row_iq2_s,
        levels: None,
        regroup: Some(Regroup {
            group: iq2::regroup_iq2_s,
            codes: 16,
            set_scale: iq2::set_scale_iq2_s,
        }),
    },
    Codec {
        ggml: GgmlType::TQ2_0,
        block: 256,
        block_bytes: ternary::TQ2_0_BYTES,
        sub: 256,
        lmax: 2,
        offset: 1,
        values: None,
        row: row_tq2_0,
        levels: access!(
            ternary::access,
            tq2_0_scales,
            tq2_0_levels,
            tq2_0_set_levels
        ),
        regroup: None,
    },
    Codec {
        ggml: GgmlType::IQ2_XS,
        block: 256,
        block_bytes: iq2::IQ2_XS_BYTES,
        sub: 16,
        lmax: 2,
        offset: 0,
        values: None,
        row: row_iq2_xs,
        levels: None,
        regroup: Some(Regroup {
            group: iq2::regroup_iq2_xs,
            codes: 16,
            set_scale: iq2::set_scale_iq2_xs,
        }),
    },
    Codec {
        ggml: GgmlType::IQ2_XXS,
        block: 256,
        block_bytes: iq2::IQ2_XXS_BYTES,
        sub: 32,
        lmax: 2,
        offset: 0,
        values: None,
        row: row_iq2_xxs,
        levels: None,
        regroup: Some(Regroup {
            group: iq2::regroup_iq2_xxs,
            codes: 16,
            set_scale: iq2::set_scale_iq2_xxs,
        }),
    },
    Codec {
        ggml: GgmlType::TQ1_0,
        block: 256,
        block_bytes: ternary::TQ1_0_BYTES,
        sub: 256,
        lmax: 2,
        offset: 1,
        values: None,
        row: row_tq1_0,
        levels: access!(
            ternary::access,
            tq1_0_scales,
            tq1_0_levels,
            tq1_0_set_levels
        ),
        regroup: None,
    },
    Codec {
        ggml: GgmlType::IQ1_M,
        block: 256,
        block_bytes: iq1::IQ1_M_BYTES,
        sub: 16,
        lmax: 2,
        offset: 0,
        values: None,
        row: row_iq1_m,
        levels: None,
        regroup: Some(Regroup {
            group: iq1::regroup_iq1_m,
            codes: 8,
            set_scale: iq1::set_scale_iq1_m,
        }),
    },
    Codec {
        ggml: GgmlType::IQ1_S,
        block: 256,
        block_bytes: iq1::IQ1_S_BYTES,
        sub: 32,
        lmax: 2,
        offset: 0,
        values: None,
        row: row_iq1_s,
        levels: None,
        regroup: Some(Regroup {
            group: iq1::regroup_iq1_s,
            codes: 16,
            set_scale: iq1::set_scale_iq1_s,
        }),
    },
];

/// The codec of a ggml type, if Frugal writes it.
pub fn codec(t: GgmlType) -> Option<&'static Codec> {
    CODECS.iter().find(|c| c.ggml == t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use frugal_formats::rng::SplitMix64;

    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut r = SplitMix64(seed);
        // Heavy-ish tails, some all-zero and constant stretches, as real weights have.
        (0..n)
            .map(|i| {
                if (i / 64) % 17 == 5 {
                    0.0
                } else if (i / 64) % 19 == 7 {
                    0.25
                } else {
                    let u = r.next_f64() as f32 - 0.5;
                    u * u * u * 8.0 + u
                }
            })
            .collect()
    }

    /// GPTQ rounds every quantized type (a grid of levels, or a lattice re-chosen eight values
    /// at a time): the block-wise methods and their size budgets rely on it.
    #[test]
    fn gptq_rounds_every_quantized_type() {
        for c in CODECS {
            assert_eq!(c.gptq_rounds(), c.quantized(), "{}", c.ggml.name());
        }
    }

    /// Decoding through our scale/level access agrees with candle's independent dequantizer,
    /// level packing round-trips, and the relative error is within a per-type bound.
    #[test]
    fn every_codec_decodes_like_candle_and_round_trips_its_levels() {
        let n = 4096;
        let x = data(n, 7);
        let qw: Vec<f32> = (0..n).map(|i| 0.5 + (i % 13) as f32).collect();
        let dev = candle_core::Device::Cpu;
        for c in CODECS.iter().filter(|c| c.levels.is_some()) {
            for weighted in [false, true] {
                let mut y = vec![0u8; n / c.block * c.block_bytes];
                (c.row)(&x, weighted.then_some(&qw[..]), &mut y);
                // candle's dequantizer, or (IQ types, which candle does not read) the decoder
                // written from ggml's `dequantize_row_*`, independent of the level access.
                let theirs: Vec<f32> = match frugal_models::gguf_load::candle_dtype(c.ggml) {
                    Some(dtype) => candle_core::quantized::ggml_file::qtensor_from_ggml(
                        dtype,
                        &y,
                        vec![n],
                        &dev,
                    )
                    .unwrap()
                    .dequantize(&dev)
                    .unwrap()
                    .to_vec1()
                    .unwrap(),
                    None => {
                        let mut v = vec![0f32; n];
                        frugal_models::iq::decode_row(c.ggml, &y, &mut v).unwrap();
                        v
                    }
                };
                let mut ours = vec![0f32; n];
                let acc = c.levels.unwrap();
                let mut lv = vec![0u8; c.block];
                for (b, (yb, ob)) in y
                    .chunks_exact(c.block_bytes)
                    .zip(ours.chunks_exact_mut(c.block))
                    .enumerate()
                {
                    c.decode_block(yb, ob);
                    (acc.get)(yb, &mut lv);
                    assert!(lv.iter().all(|&l| l <= c.lmax), "{} level range", c.ggml);
                    let mut again = yb.to_vec();
                    (acc.set)(&mut again, &lv);
                    assert_eq!(again, yb, "{} block {b}: levels do not round-trip", c.ggml);
                }
                for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
                        "{} at {i}: ours {a} candle {b}",
                        c.ggml
                    );
                }
                let (num, den) = x.iter().zip(&ours).fold((0f64, 0f64), |(n, d), (&a, &b)| {
                    (n + ((a - b) as f64).powi(2), d + (a as f64).powi(2))
                });
                let rel = (num / den).sqrt();
                let bound = match c.lmax {
                    255 => 0.01,
                    63 => 0.03,
                    31 => 0.06,
                    15 => 0.13,
                    7 => 0.27,
                    3 => 0.55,
                    // Ternary: only the sign of values above half the block's largest survives.
                    _ => 0.9,
                };
                assert!(rel < bound, "{} weighted={weighted}: rel {rel}", c.ggml);
            }
        }
    }

    /// The lattice types (no level access): decoding agrees with ggml's decoder tables (the
    /// lattice written as ggml's `iq3xxs_grid`/`iq3s_grid` values: spot checks), rounding error
    /// is bounded, and importance weighting lowers the weighted error it is given.
    #[test]
    fn lattice_types_round_trip_within_bounds() {
        let n = 4096;
        let x = data(n, 11);
        let qw: Vec<f32> = (0..n)
            .map(|i| if i % 7 == 0 { 40.0 } else { 0.5 })
            .collect();
        for c in CODECS
            .iter()
            .filter(|c| c.quantized() && c.levels.is_none())
        {
            // The types whose quantizer needs weights get uniform ones as the plain case.
            let uniform = vec![1f32; n];
            let plain = crate::quant::mix::needs_weights(c.ggml).then_some(&uniform[..]);
            let err = |weighted: bool| {
                let mut y = vec![0u8; n / c.block * c.block_bytes];
                (c.row)(&x, if weighted { Some(&qw[..]) } else { plain }, &mut y);
                let mut back = vec![0f32; n];
                c.decode_row(&y, &mut back);
                let (mut num, mut den, mut wnum) = (0f64, 0f64, 0f64);
                for i in 0..n {
                    let e = (x[i] - back[i]) as f64;
                    num += e * e;
                    den += (x[i] as f64).powi(2);
                    wnum += qw[i] as f64 * e * e;
                }
                ((num / den).sqrt(), wnum)
            };
            let (rel, w_plain) = err(false);
            let (rel_w, w_weighted) = err(true);
            // Relative error bounds by bits per weight (measured on these data: 3-bit
            // 0.17–0.21, 2-bit 0.26–0.37, 1-bit 0.46–0.54, plain or weighted).
            let (b, bw) = match c.bpw() {
                b if b >= 3.0 => (0.3, 0.4),
                b if b >= 2.0 => (0.42, 0.45),
                _ => (0.62, 0.62),
            };
            assert!(rel < b && rel_w < bw, "{}: {rel} {rel_w}", c.ggml);
            assert!(w_weighted < w_plain, "{}: {w_weighted} ≥ {w_plain}", c.ggml);
        }
        // ggml's decoder tables, first entries: iq3xxs_grid[5] = 0x04040c3e, iq3s_grid[1] =
        // 0x01010103.
        use frugal_models::iq::{lattice_levels, IQ3XXS_DECODED, KGRID_IQ3S, KGRID_IQ3XXS};
        let xxs: u32 = lattice_levels(KGRID_IQ3XXS[5])
            .iter()
            .enumerate()
            .map(|(b, &l)| (IQ3XXS_DECODED[l as usize] as u32) << (8 * b))
            .sum();
        assert_eq!(xxs, 0x0404_0c3e);
        let s: u32 = lattice_levels(KGRID_IQ3S[1])
            .iter()
            .enumerate()
            .map(|(b, &l)| ((2 * l as u32) + 1) << (8 * b))
            .sum();
        assert_eq!(s, 0x0101_0103);
        // iq2xxs_grid[7] = 0x08080808082b0808, iq2s_grid[7] = 0x080808080819192b, iq1s_grid[1]
        // = 0xffffffffffffff01.
        use frugal_models::iq::{grid8_levels, IQ2_DECODED, KGRID_IQ1S, KGRID_IQ2S, KGRID_IQ2XXS};
        let bytes = |code: u16, f: &dyn Fn(u8) -> u8| -> u64 {
            grid8_levels(code)
                .iter()
                .enumerate()
                .map(|(b, &l)| (f(l) as u64) << (8 * b))
                .sum()
        };
        let iq2 = |l: u8| IQ2_DECODED[l as usize];
        assert_eq!(bytes(KGRID_IQ2XXS[7], &iq2), 0x0808_0808_082b_0808);
        assert_eq!(bytes(KGRID_IQ2S[7], &iq2), 0x0808_0808_0819_192b);
        assert_eq!(
            bytes(KGRID_IQ1S[1], &|l| (l as i8 - 1) as u8),
            0xffff_ffff_ffff_ff01
        );
    }

    /// No writer panics on what a file or an importance matrix can hold: huge, tiny, infinite
    /// and NaN values, and weights large enough that ggml's scale searches overflow to NaN
    /// (where llama.cpp aborts, "point not on grid"). Every block still decodes.
    #[test]
    fn no_writer_panics_on_extreme_values_or_weights() {
        let n = 512;
        let base = data(n, 11);
        let rows: Vec<Vec<f32>> = vec![
            base.clone(),
            base.iter().map(|v| v * 1e19).collect(),
            base.iter().map(|v| v * 1e-30).collect(),
            (0..n)
                .map(|i| if i % 2 == 0 { 3e38 } else { -3e38 })
                .collect(),
            (0..n)
                .map(|i| [f32::NAN, f32::INFINITY, -f32::INFINITY, 1.0][i % 4])
                .collect(),
            (0..n)
                .map(|i| if i % 37 == 0 { f32::NAN } else { base[i] })
                .collect(),
        ];
        let weights: Vec<Option<Vec<f32>>> = vec![
            None,
            Some(vec![1.0; n]),
            Some(vec![1e37; n]),
            Some(vec![f32::MAX; n]),
            Some(vec![0.0; n]),
            Some(
                (0..n)
                    .map(|i| if i % 3 == 0 { 1e30 } else { 1e-30 })
                    .collect(),
            ),
        ];
        let mut failed = Vec::new();
        for c in CODECS {
            let mut y = vec![0u8; n / c.block * c.block_bytes];
            let mut back = vec![0f32; n];
            for (i, x) in rows.iter().enumerate() {
                for (j, w) in weights.iter().enumerate() {
                    if w.is_none() && super::super::mix::needs_weights(c.ggml) {
                        continue;
                    }
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        (c.row)(x, w.as_deref(), &mut y);
                        c.decode_row(&y, &mut back);
                    }));
                    if r.is_err() {
                        failed.push(format!("{} (row {i}, weights {j})", c.ggml.name()));
                    }
                }
            }
        }
        assert!(failed.is_empty(), "panicked: {failed:?}");
    }

    #[test]
    fn table_sizes_match_ggml() {
        for c in CODECS {
            assert_eq!(
                c.ggml.bytes_for(c.block as u64),
                Some(c.block_bytes as u64),
                "{}",
                c.ggml
            );
        }
    }
}
