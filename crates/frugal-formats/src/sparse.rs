//! Compact storage of pruned (sparse) tensors, decoded exactly. Two layouts over a tensor's
//! elements in row-major order:
//!
//! - **bitmask**: one bit per element (bit `i % 8` of byte `i / 8`, least significant first) set
//!   where a value is stored, and the stored values in order. Any sparsity pattern; every
//!   non-zero element is stored (a zero of either sign is not, and decodes as `+0.0`: a pruned
//!   weight masked by multiplication is often `-0.0`).
//! - **N:M**: every group of `M` consecutive elements keeps `N` values, stored in position order,
//!   with their positions in the group as `ceil(log2 M)`-bit fields in one little-endian bit
//!   stream (2:4 takes 4 bits per group: the layout sparse tensor cores read). A group with fewer
//!   than `N` non-zero values stores zeros at unused positions, so decoding is still exact.
//!
//! Decoding checks every count against the element count it is told, and refuses a mask whose
//! set bits do not match the number of values, positions out of order or out of range, and
//! padding bits that are not zero: a crafted file gives an error, never a panic.

use std::fmt;

/// A sparse layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Bitmask,
    /// `n` of every `m` consecutive elements kept (`1 ≤ n < m ≤ 256`).
    NOfM {
        n: usize,
        m: usize,
    },
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layout::Bitmask => f.write_str("bitmask"),
            Layout::NOfM { n, m } => write!(f, "{n}:{m}"),
        }
    }
}

impl std::str::FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "bitmask" {
            return Ok(Layout::Bitmask);
        }
        let bad = || format!("sparse layout `{s}`: expected `bitmask` or `N:M` (e.g. 2:4)");
        let (n, m) = s.split_once(':').ok_or_else(bad)?;
        let (n, m) = (
            n.parse::<usize>().map_err(|_| bad())?,
            m.parse::<usize>().map_err(|_| bad())?,
        );
        if n == 0 || n >= m || m > 256 {
            return Err(format!("sparse layout {n}:{m}: need 1 ≤ N < M ≤ 256"));
        }
        Ok(Layout::NOfM { n, m })
    }
}

/// Bits per position in an N:M group of `m`.
pub fn index_bits(m: usize) -> usize {
    (usize::BITS - (m - 1).leading_zeros()) as usize
}

/// An encoded tensor: the stored values and the mask (bitmask) or position stream (N:M).
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub values: Vec<f32>,
    pub index: Vec<u8>,
}

impl Encoded {
    /// Bytes on disk (values as f32 plus the index).
    pub fn bytes(&self) -> usize {
        self.values.len() * 4 + self.index.len()
    }
}

fn stored(x: f32) -> bool {
    x != 0.0
}

/// Encodes `v` in `layout`. N:M needs `v.len()` to be a multiple of `m` and at most `n`
/// non-zero elements per group; otherwise the message says which group breaks it.
pub fn encode(v: &[f32], layout: Layout) -> Result<Encoded, String> {
    match layout {
        Layout::Bitmask => {
            let mut index = vec![0u8; v.len().div_ceil(8)];
            let mut values = Vec::new();
            for (i, &x) in v.iter().enumerate() {
                if stored(x) {
                    index[i / 8] |= 1 << (i % 8);
                    values.push(x);
                }
            }
            Ok(Encoded { values, index })
        }
        Layout::NOfM { n, m } => {
            check_nm(n, m)?;
            if !v.len().is_multiple_of(m) {
                return Err(format!("{} elements are not whole groups of {m}", v.len()));
            }
            let bits = index_bits(m);
            let groups = v.len() / m;
            let mut values = Vec::with_capacity(groups * n);
            let mut w = BitWriter::new(groups * n * bits);
            for (g, group) in v.chunks_exact(m).enumerate() {
                let nz: Vec<usize> = (0..m).filter(|&j| stored(group[j])).collect();
                if nz.len() > n {
                    return Err(format!(
                        "group {g} has {} non-zero values, more than {n} of {m}",
                        nz.len()
                    ));
                }
                // Pad with the first unused positions (their values are zero).
                let mut pos = nz;
                let mut j = 0;
                while pos.len() < n {
                    if !pos.contains(&j) {
                        pos.push(j);
                    }
                    j += 1;
                }
                pos.sort_unstable();
                for p in pos {
                    values.push(group[p]);
                    w.put(p as u64, bits);
                }
            }
            Ok(Encoded {
                values,
                index: w.finish(),
            })
        }
    }
}

/// The number of values and index bytes a tensor of `numel` elements must have in `layout`
/// (`None` for the bitmask's values, which depend on the mask).
pub fn expected_sizes(numel: usize, layout: Layout) -> Result<(Option<usize>, usize), String> {
    match layout {
        Layout::Bitmask => Ok((None, numel.div_ceil(8))),
        Layout::NOfM { n, m } => {
            check_nm(n, m)?;
            if !numel.is_multiple_of(m) {
                return Err(format!("{numel} elements are not whole groups of {m}"));
            }
            let k = numel / m * n;
            let bits = k
                .checked_mul(index_bits(m))
                .ok_or_else(|| format!("{numel} elements: index size overflows"))?;
            Ok((Some(k), bits.div_ceil(8)))
        }
    }
}

/// `1 ≤ n < m ≤ 256`, as [`Layout::from_str`] requires (the fields are public).
fn check_nm(n: usize, m: usize) -> Result<(), String> {
    if n == 0 || n >= m || m > 256 {
        return Err(format!("sparse layout {n}:{m}: need 1 ≤ N < M ≤ 256"));
    }
    Ok(())
}

/// Decodes `numel` elements from `values` and `index` in `layout`, checking every count.
pub fn decode(
    numel: usize,
    layout: Layout,
    values: &[f32],
    index: &[u8],
) -> Result<Vec<f32>, String> {
    let (want_values, want_index) = expected_sizes(numel, layout)?;
    if index.len() != want_index {
        return Err(format!(
            "index has {} bytes, {want_index} expected for {numel} elements",
            index.len()
        ));
    }
    if let Some(k) = want_values {
        if values.len() != k {
            return Err(format!(
                "{} values stored, {k} expected for {numel} elements at {layout}",
                values.len()
            ));
        }
    }
    let mut out = vec![0f32; numel];
    match layout {
        Layout::Bitmask => {
            if !numel.is_multiple_of(8) && index[numel / 8] >> (numel % 8) != 0 {
                return Err("mask has bits set past the last element".into());
            }
            let set: usize = index.iter().map(|b| b.count_ones() as usize).sum();
            if set != values.len() {
                return Err(format!(
                    "mask has {set} set bits but {} values are stored",
                    values.len()
                ));
            }
            let mut it = values.iter();
            for (i, o) in out.iter_mut().enumerate() {
                if index[i / 8] >> (i % 8) & 1 == 1 {
                    *o = *it.next().expect("counted above");
                }
            }
        }
        Layout::NOfM { n, m } => {
            let k = values.len();
            let bits = index_bits(m);
            let mut r = BitReader { data: index, at: 0 };
            for (g, chunk) in values.chunks_exact(n).enumerate() {
                let mut last = None;
                for &x in chunk {
                    let p = r.get(bits) as usize;
                    if p >= m || last.is_some_and(|l| p <= l) {
                        return Err(format!("group {g}: position {p} out of order or past {m}"));
                    }
                    last = Some(p);
                    out[g * m + p] = x;
                }
            }
            let used = k * bits;
            if !used.is_multiple_of(8) && index[used / 8] >> (used % 8) != 0 {
                return Err("index has bits set past the last position".into());
            }
        }
    }
    Ok(out)
}

struct BitWriter {
    out: Vec<u8>,
    at: usize,
}

impl BitWriter {
    fn new(bits: usize) -> Self {
        BitWriter {
            out: vec![0; bits.div_ceil(8)],
            at: 0,
        }
    }
    fn put(&mut self, v: u64, bits: usize) {
        for b in 0..bits {
            if v >> b & 1 == 1 {
                self.out[(self.at + b) / 8] |= 1 << ((self.at + b) % 8);
            }
        }
        self.at += bits;
    }
    fn finish(self) -> Vec<u8> {
        self.out
    }
}

struct BitReader<'a> {
    data: &'a [u8],
    at: usize,
}

impl BitReader<'_> {
    /// The next `bits` bits (the caller has checked the stream is long enough).
    fn get(&mut self, bits: usize) -> u64 {
        let mut v = 0;
        for b in 0..bits {
            let i = self.at + b;
            v |= u64::from(self.data[i / 8] >> (i % 8) & 1) << b;
        }
        self.at += bits;
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize, keep_every: usize) -> Vec<f32> {
        (0..len)
            .map(|i| {
                if i % keep_every == 0 {
                    (i as f32 * 0.37).sin()
                } else {
                    0.0
                }
            })
            .collect()
    }

    #[test]
    fn both_layouts_round_trip_exactly() {
        let mut v = sample(1003, 3);
        v[1] = -0.0; // a zero: not stored, decoded as +0.0
        let e = encode(&v, Layout::Bitmask).unwrap();
        assert_eq!(e.index.len(), 126);
        assert_eq!(e.values.len(), v.iter().filter(|&&x| x != 0.0).count());
        let d = decode(v.len(), Layout::Bitmask, &e.values, &e.index).unwrap();
        assert!(d
            .iter()
            .zip(&v)
            .all(|(a, b)| a.to_bits() == b.to_bits() || *b == 0.0 && a.to_bits() == 0));
        // 2:4 with one group holding a single non-zero value, and 3:8 (3-bit positions).
        let mut v = sample(1024, 2);
        v[2] = 0.0;
        for layout in [Layout::NOfM { n: 2, m: 4 }, Layout::NOfM { n: 4, m: 8 }] {
            let e = encode(&v, layout).unwrap();
            let d = decode(v.len(), layout, &e.values, &e.index).unwrap();
            assert_eq!(d, v, "{layout}");
        }
        let e = encode(&v, Layout::NOfM { n: 2, m: 4 }).unwrap();
        assert_eq!((e.values.len(), e.index.len()), (512, 128));
        let v3: Vec<f32> = (0..48)
            .map(|i| if i % 8 < 3 { i as f32 } else { 0.0 })
            .collect();
        let e = encode(&v3, Layout::NOfM { n: 3, m: 8 }).unwrap();
        assert_eq!(e.index.len(), (18 * 3usize).div_ceil(8));
        assert_eq!(
            decode(48, Layout::NOfM { n: 3, m: 8 }, &e.values, &e.index).unwrap(),
            v3
        );
    }

    #[test]
    fn bad_inputs_are_refused_without_panicking() {
        let v = sample(64, 2);
        assert!(encode(&v, Layout::NOfM { n: 1, m: 4 })
            .unwrap_err()
            .contains("group 1"));
        assert!(encode(&v[..6], Layout::NOfM { n: 2, m: 4 }).is_err());
        let e = encode(&v, Layout::Bitmask).unwrap();
        assert!(decode(64, Layout::Bitmask, &e.values[1..], &e.index).is_err());
        assert!(decode(72, Layout::Bitmask, &e.values, &e.index).is_err());
        let mut short = e.index.clone();
        short[0] = 0;
        assert!(decode(64, Layout::Bitmask, &e.values, &short).is_err());
        let e = encode(&sample(61, 2), Layout::Bitmask).unwrap();
        let mut tail = e.index.clone();
        *tail.last_mut().unwrap() |= 0x80;
        assert!(decode(61, Layout::Bitmask, &e.values, &tail)
            .unwrap_err()
            .contains("past"));
        let l = Layout::NOfM { n: 2, m: 4 };
        let e = encode(&v, l).unwrap();
        let mut swapped = e.index.clone();
        swapped[0] = 0b0001_0010; // positions 2 then 0 in the first group
        assert!(decode(64, l, &e.values, &swapped)
            .unwrap_err()
            .contains("order"));
        assert!(decode(66, l, &e.values, &e.index).is_err());
        assert!(decode(64, l, &e.values[..5], &e.index).is_err());
        // Every truncation and every single-byte corruption: an error or a decode, never a panic.
        for cut in 0..e.index.len() {
            assert!(decode(64, l, &e.values, &e.index[..cut]).is_err());
        }
        for i in 0..e.index.len() {
            for b in [0u8, 0xFF, 0x5A] {
                let mut x = e.index.clone();
                x[i] = b;
                let _ = decode(64, l, &e.values, &x);
            }
        }
        for s in ["", "bitmap", "4:4", "0:4", "2:300", "a:b", "2:"] {
            assert!(s.parse::<Layout>().is_err(), "{s}");
        }
        assert_eq!("2:4".parse::<Layout>().unwrap(), l);
        assert_eq!(index_bits(4), 2);
        assert_eq!(index_bits(8), 3);
        assert_eq!(index_bits(16), 4);
        assert_eq!(index_bits(5), 3);
        // Layouts built by hand with bad fields, and element counts whose index would overflow.
        for l in [
            Layout::NOfM { n: 0, m: 4 },
            Layout::NOfM { n: 2, m: 0 },
            Layout::NOfM { n: 5, m: 4 },
        ] {
            assert!(
                encode(&v, l).is_err() && decode(64, l, &[], &[]).is_err(),
                "{l:?}"
            );
        }
        assert!(decode(usize::MAX / 4 * 4, Layout::NOfM { n: 3, m: 4 }, &[], &[]).is_err());
    }
}
