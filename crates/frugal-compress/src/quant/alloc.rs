//! Mixed precision under a size budget: each tensor's candidate types are measured (importance-
//! weighted squared error of the layer's output, Σ_j imatrix_j · Σ_rows (w − ŵ)², or plain
//! squared error without an importance matrix; times the tensor's gain where calibration
//! measured the gains, [`super::calibration::collect_gains`], which puts every tensor's error
//! in units of KL divergence) and a greedy walk along each tensor's lower convex hull of
//! (bytes, error) spends the budget where it buys the largest error reduction per byte —
//! optimal for the convexified problem.

use super::calibration::Gain;
use super::codec::{codec, CODECS};
use super::{quantize_matrix_measured, tensor_f32_borrowed, Choice, QuantizeOptions};
use crate::Result;
use frugal_formats::gguf::{GgmlType, GgufFile};

/// Which types a tensor may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidates {
    /// Every quantized type that tiles the rows; and F16 and F32 where the importance matrix
    /// measured what rounding each layer's input costs ([`super::InputRounding`]), since then
    /// a 16-bit weight's unrounded input can be worth its bytes.
    All,
    /// Only the 32-wide types (what a row that 256 cannot tile may use).
    Narrow,
    /// Every quantized type that tiles the rows, and F16 and F32 (for budgets in something
    /// other than bytes, where a wider type can cost less).
    WithFloat,
}

/// One tensor's measured options.
#[derive(Debug, Clone)]
pub struct Options {
    pub index: usize,
    /// (type, cost, error), by increasing cost: bytes as measured, or a price
    /// ([`super::BudgetPlan::priced`]).
    pub points: Vec<(GgmlType, u64, f64)>,
}

/// The candidate types of tensor `name` with rows of `ncols`; without importance weights for it,
/// not the types llama.cpp refuses to write without them, nor those that cannot quantize at all
/// without them. The same for every method: GPTQ rounds every quantized type and writes a float
/// one as it is.
fn candidate_types(which: Candidates, name: &str, ncols: usize, weighted: bool) -> Vec<GgmlType> {
    CODECS
        .iter()
        .filter(|c| c.fits(ncols))
        .filter(|c| {
            weighted
                || !(super::mix::requires_imatrix(name, c.ggml)
                    || super::mix::needs_weights(c.ggml))
        })
        .filter(|c| c.quantized() || which == Candidates::WithFloat)
        .filter(|c| which != Candidates::Narrow || c.block == 32)
        .map(|c| c.ggml)
        .collect()
}

/// Measures every candidate of tensor `index`.
pub fn measure(
    f: &GgufFile,
    opts: &QuantizeOptions,
    index: usize,
    which: Candidates,
) -> Result<Options> {
    let t = &f.header.tensors[index];
    let ncols = t.dims[0] as usize;
    let x = tensor_f32_borrowed(f, t)?;
    let qw = opts
        .imatrix
        .as_ref()
        .and_then(|m| m.entries.get(&t.name))
        .filter(|w| w.len() == ncols);
    // With the input's rounding measured (and importance weights, in the same units): each
    // column's Σ_rows w², the weight that error passes through.
    let rounding = opts
        .imatrix
        .as_ref()
        .and_then(|m| m.rounding.get(&t.name))
        .filter(|_| qw.is_some());
    let col_sq: Vec<f64> = match rounding {
        Some(_) => {
            let mut c = vec![0f64; ncols];
            for row in x.chunks_exact(ncols) {
                c.iter_mut()
                    .zip(row)
                    .for_each(|(c, &w)| *c += f64::from(w) * f64::from(w));
            }
            c
        }
        None => Vec::new(),
    };
    // What a unit of this tensor's error costs, where the gains were measured (a tensor
    // without one is taken to be as sensitive as the most sensitive).
    let gain = opts
        .imatrix
        .as_ref()
        .filter(|m| !m.gains.is_empty())
        .map_or(Gain::same(1.0), |m| {
            m.gains
                .get(&t.name)
                .copied()
                .unwrap_or_else(|| m.gains.values().fold(Gain::same(0.0), |a, &g| a.max(g)))
        });
    let mut points = Vec::new();
    for ty in candidate_types(which, &t.name, ncols, qw.is_some()) {
        let qw = qw.map(|w| w.as_slice());
        let (q, s) = quantize_matrix_measured(&x, ncols, ty, qw);
        let input_err: f64 = rounding.and_then(|r| r.of(ty)).map_or(0.0, |e| {
            e.iter().zip(&col_sq).map(|(&e, c)| f64::from(e) * c).sum()
        });
        points.push((
            ty,
            q.len() as u64,
            if qw.is_some() {
                gain.weight * s.wnum + gain.input * input_err
            } else {
                gain.weight * s.num
            },
        ));
    }
    points.sort_by_key(|p| p.1);
    Ok(Options { index, points })
}

/// The lower convex hull of a tensor's (bytes, error) points, by increasing bytes.
fn hull(points: &[(GgmlType, u64, f64)]) -> Vec<(GgmlType, u64, f64)> {
    let mut h: Vec<(GgmlType, u64, f64)> = Vec::new();
    for &p in points {
        if h.last().is_some_and(|l| p.2 >= l.2) {
            continue; // more bytes, no less error
        }
        if h.last().is_some_and(|l| l.1 == p.1) {
            h.pop();
        }
        while h.len() >= 2 {
            let (a, b) = (h[h.len() - 2], h[h.len() - 1]);
            // b is above the segment a→p: drop it.
            let lhs = (b.2 - a.2) * (p.1 - a.1) as f64;
            let rhs = (p.2 - a.2) * (b.1 - a.1) as f64;
            if lhs >= rhs {
                h.pop();
            } else {
                break;
            }
        }
        h.push(p);
    }
    h
}

/// Chooses one point per tensor with total bytes ≤ `budget`, greedily by error saved per byte,
/// then improved by pinning: a large step the greedy pass reached too late to fit (Gemma 3's
/// tied 262,144-row table from Q5_1 to Q8_0 is 52 MB, and blocks' smaller steps had spent the
/// budget) is taken first and the rest re-chosen around it, kept where the total error falls.
/// Returns the chosen type per tensor (in `opts` order); when even the smallest types exceed
/// the budget, the smallest.
pub fn choose(options: &[Options], budget: u64) -> Vec<GgmlType> {
    let hulls: Vec<_> = options.iter().map(|o| hull(&o.points)).collect();
    // Every upgrade step, steepest first; within a tensor the hull makes slopes decrease.
    let mut steps: Vec<(f64, usize, usize)> = Vec::new();
    for (t, h) in hulls.iter().enumerate() {
        for k in 1..h.len() {
            let slope = (h[k - 1].2 - h[k].2) / (h[k].1 - h[k - 1].1) as f64;
            steps.push((slope, t, k));
        }
    }
    steps.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let error = |at: &[usize]| -> f64 { hulls.iter().zip(at).map(|(h, &k)| h[k].2).sum() };
    let mut pins: Vec<Option<usize>> = vec![None; hulls.len()];
    let mut best = greedy(&hulls, &steps, budget, &pins);
    let mut best_err = error(&best);
    // Each round pins the one step that helps most; a handful of rounds reaches what matters
    // (a round costs one greedy pass per tensor and point above its choice).
    for _ in 0..PIN_ROUNDS {
        let mut improved: Option<(usize, usize, Vec<usize>, f64)> = None;
        for (t, h) in hulls.iter().enumerate() {
            if pins[t].is_some() {
                continue;
            }
            for k in best[t] + 1..h.len() {
                pins[t] = Some(k);
                let fixed: u64 = (0..hulls.len())
                    .map(|u| hulls[u][pins[u].unwrap_or(0)].1)
                    .sum();
                if fixed <= budget {
                    let at = greedy(&hulls, &steps, budget, &pins);
                    let e = error(&at);
                    if e < improved.as_ref().map_or(best_err, |i| i.3) {
                        improved = Some((t, k, at, e));
                    }
                }
                pins[t] = None;
            }
        }
        let Some((t, k, at, e)) = improved else { break };
        pins[t] = Some(k);
        (best, best_err) = (at, e);
    }
    hulls.iter().zip(&best).map(|(h, &k)| h[k].0).collect()
}

/// How many steps [`choose`] pins at most, one per round.
const PIN_ROUNDS: usize = 4;

/// The greedy pass: every tensor from its smallest point, or fixed at its pin, then the steps
/// in order, each taken where it fits.
fn greedy(
    hulls: &[Vec<(GgmlType, u64, f64)>],
    steps: &[(f64, usize, usize)],
    budget: u64,
    pins: &[Option<usize>],
) -> Vec<usize> {
    let mut at: Vec<usize> = pins.iter().map(|p| p.unwrap_or(0)).collect();
    let mut used: u64 = hulls.iter().zip(&at).map(|(h, &k)| h[k].1).sum();
    for &(_, t, k) in steps {
        if at[t] != k - 1 || pins[t].is_some() {
            continue; // an earlier step of this tensor did not fit, or the tensor is pinned
        }
        let extra = hulls[t][k].1 - hulls[t][k - 1].1;
        if used + extra <= budget {
            used += extra;
            at[t] = k;
        }
    }
    at
}

/// Measures the `members` tensors and assigns them types within `budget` bytes.
pub fn assign(
    f: &GgufFile,
    opts: &QuantizeOptions,
    members: &[usize],
    budget: u64,
    which: Candidates,
    choices: &mut [Option<Choice>],
) -> Result<()> {
    let mut options = Vec::with_capacity(members.len());
    for &i in members {
        options.push(measure(f, opts, i, which)?);
    }
    let chosen = choose(&options, budget);
    for (o, ty) in options.iter().zip(chosen) {
        debug_assert!(codec(ty).is_some());
        choices[o.index] = Some(Choice {
            ty,
            reason: super::Reason::Budget,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use GgmlType as G;

    #[test]
    fn hull_drops_dominated_and_concave_points() {
        let pts = vec![
            (G::Q2_K, 10, 100.0),
            (G::Q3_K, 20, 90.0), // above the segment Q2_K→Q4_K: not on the hull
            (G::Q4_0, 25, 95.0), // dominated
            (G::Q4_K, 30, 40.0),
            (G::Q8_0, 60, 1.0),
        ];
        let h: Vec<G> = hull(&pts).iter().map(|p| p.0).collect();
        assert_eq!(h, vec![G::Q2_K, G::Q4_K, G::Q8_0]);
    }

    /// A tensor whose candidates are Q4_0 and Q8_0 at these (bytes, error) points.
    fn two_points(index: usize, q4: (u64, f64), q8: (u64, f64)) -> Options {
        Options {
            index,
            points: vec![(G::Q4_0, q4.0, q4.1), (G::Q8_0, q8.0, q8.1)],
        }
    }

    #[test]
    fn greedy_spends_the_budget_where_it_saves_most() {
        let a = two_points(0, (10, 100.0), (20, 10.0));
        let b = two_points(1, (10, 20.0), (20, 1.0));
        assert_eq!(choose(&[a.clone(), b.clone()], 30), vec![G::Q8_0, G::Q4_0]);
        assert_eq!(choose(&[a.clone(), b.clone()], 40), vec![G::Q8_0, G::Q8_0]);
        assert_eq!(choose(&[a, b], 5), vec![G::Q4_0, G::Q4_0]);
    }

    /// A large step that saves most but comes later in slope order than a small one that
    /// takes the room it needs (Gemma 3's tied table, 52 MB from Q5_1 to Q8_0) is pinned and
    /// the rest chosen around it: the greedy pass alone keeps the error of 100.
    #[test]
    fn a_large_step_is_taken_when_it_saves_more_than_the_small_ones_it_displaces() {
        let big = two_points(0, (10, 100.0), (60, 0.0));
        let small = two_points(1, (10, 30.0), (20, 0.0));
        let hulls: Vec<_> = [&big, &small].iter().map(|o| hull(&o.points)).collect();
        let steps = vec![(3.0, 1, 1), (2.0, 0, 1)];
        assert_eq!(greedy(&hulls, &steps, 70, &[None, None]), vec![0, 1]);
        assert_eq!(
            choose(&[big.clone(), small.clone()], 70),
            vec![G::Q8_0, G::Q4_0]
        );
        assert_eq!(choose(&[big, small], 80), vec![G::Q8_0, G::Q8_0]);
    }

    /// A budget offers every quantized type (GPTQ rounds them all, the 1-bit lattices too) and,
    /// with floats, F16 and F32 (which GPTQ writes as they are); without weights, neither the
    /// types llama.cpp refuses without them nor those that need them.
    #[test]
    fn candidates_follow_the_weights() {
        let name = "blk.0.ffn_down.weight";
        let all = candidate_types(Candidates::WithFloat, name, 1536, true);
        for t in [
            G::IQ1_S,
            G::IQ1_M,
            G::IQ2_XXS,
            G::IQ3_S,
            G::IQ4_XS,
            G::Q2_K,
            G::Q4_K,
            G::Q8_0,
            G::F16,
            G::F32,
        ] {
            assert!(all.contains(&t), "{t:?}");
        }
        assert!(all.iter().all(|&t| {
            let c = codec(t).unwrap();
            c.gptq_rounds() == c.quantized()
        }));
        let plain = candidate_types(Candidates::All, name, 1536, false);
        for t in [G::IQ1_S, G::IQ2_XXS, G::IQ2_XS, G::IQ3_XXS] {
            assert!(!plain.contains(&t), "{t:?}");
        }
        assert!(plain.contains(&G::IQ4_NL) && plain.contains(&G::Q4_K));
    }

    /// With the input's rounding measured, a candidate's error is its weight's plus what its
    /// rounded input costs through it: an F16 weight (input rounded to f16) then beats Q8_0
    /// (input rounded to 8-bit blocks) where the weight is exact in both, and F16 is offered
    /// to a size budget; without the measurement, neither.
    #[test]
    fn measured_input_rounding_prices_each_types_input() {
        use frugal_formats::gguf::{write_gguf_file, TensorToWrite, Value};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        // Values on Q8_0's grid (d = 1/127 per block of 32, ±127 present): Q8_0's weight
        // error is only its f16 scale's rounding.
        let w: Vec<f32> = (0..64 * 8)
            .map(|i| {
                if i % 32 == 0 {
                    1.0
                } else {
                    ((i * 37 % 255) as f32 - 127.0) / 127.0
                }
            })
            .collect();
        let data: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
        write_gguf_file(
            &path,
            &[],
            &[(
                "general.architecture".to_string(),
                Value::String("llama".into()),
            )],
            &[TensorToWrite {
                name: "blk.0.ffn_down.weight",
                ggml_type: G::F32,
                dims: &[64, 8],
                data: &data,
            }],
        )
        .unwrap();
        let f = GgufFile::open(&path).unwrap();
        let name = "blk.0.ffn_down.weight".to_string();
        let mut opts = QuantizeOptions::new(crate::quant::quant_type("Q8_0").unwrap());
        let mut m = crate::quant::Imatrix {
            entries: [(name.clone(), vec![1.0; 64])].into(),
            n_tokens: 1,
            source: "t".into(),
            ..Default::default()
        };
        opts.imatrix = Some(m.clone());
        let plain = measure(&f, &opts, 0, Candidates::All).unwrap();
        let err = |o: &Options, t: G| o.points.iter().find(|p| p.0 == t).map(|p| p.2);
        let weight_only = err(&plain, G::Q8_0).unwrap();
        assert!(weight_only < 1e-5, "{weight_only}");
        assert_eq!(err(&plain, G::F16), None);
        m.rounding.insert(
            name,
            crate::quant::InputRounding {
                q8_0: vec![1e-4; 64],
                q8k: Vec::new(),
                f16: vec![1e-9; 64],
            },
        );
        opts.imatrix = Some(m);
        let priced = measure(&f, &opts, 0, Candidates::WithFloat).unwrap();
        let col_sq: f64 = w.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let q8 = err(&priced, G::Q8_0).unwrap();
        assert!((q8 - weight_only - 1e-4 * col_sq).abs() < 1e-6 * q8, "{q8}");
        let f16 = err(&priced, G::F16).unwrap();
        assert!(f16 < 1e-3 * q8, "F16 {f16} vs Q8_0 {q8}");
        assert_eq!(err(&priced, G::F32), Some(0.0));
        // The budget offers the float types once the rounding is measured.
        let plan = crate::quant::BudgetPlan::measure(&f, &opts, &|_, _| {}).unwrap();
        assert!(plan.candidates()[0].1.contains(&G::F16));
    }

    /// A size budget's bits per weight are over every tensor of the file, as `frugal inspect`
    /// counts them: the tensors outside the budget (a norm kept in F32) are paid first, so the
    /// written tensors never take more than the target.
    #[test]
    fn budget_bits_per_weight_count_every_tensor() {
        use frugal_formats::gguf::{write_gguf_file, TensorToWrite, Value};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let w: Vec<u8> = (0..256 * 16)
            .flat_map(|i| (((i * 7919) % 1000) as f32 / 500.0 - 1.0).to_le_bytes())
            .collect();
        let norm: Vec<u8> = (0..256).flat_map(|_| 1f32.to_le_bytes()).collect();
        let tensors = [
            TensorToWrite {
                name: "blk.0.ffn_down.weight",
                ggml_type: G::F32,
                dims: &[256, 16],
                data: &w,
            },
            TensorToWrite {
                name: "blk.0.ffn_up.weight",
                ggml_type: G::F32,
                dims: &[256, 16],
                data: &w,
            },
            TensorToWrite {
                name: "blk.0.ffn_norm.weight",
                ggml_type: G::F32,
                dims: &[256],
                data: &norm,
            },
        ];
        let meta = [(
            "general.architecture".to_string(),
            Value::String("llama".into()),
        )];
        write_gguf_file(&path, &[], &meta, &tensors).unwrap();
        let f = GgufFile::open(&path).unwrap();
        let opts = QuantizeOptions::new(crate::quant::quant_type("Q4_K_M").unwrap());
        let plan = crate::quant::BudgetPlan::measure(&f, &opts, &|_, _| {}).unwrap();
        assert_eq!(plan.n_elements, 2 * 256 * 16 + 256);
        let bits = |choices: &[Option<crate::quant::Choice>]| -> f64 {
            f.header
                .tensors
                .iter()
                .zip(choices)
                .map(|(t, c)| {
                    let ty = c.map_or(t.ggml_type, |c| c.ty);
                    8 * ty.bytes_for(t.n_elements()).unwrap()
                })
                .sum::<u64>() as f64
                / plan.n_elements as f64
        };
        let (least, most) = plan.budget_range();
        // The norm's 256 F32 values are in both ends of the range.
        let smallest: Vec<_> = plan.choices(0.0);
        assert!((bits(&smallest) - least).abs() < 1e-9, "{least}");
        assert!(most > least);
        for target in [least, 4.0, 5.5, 6.0, 8.5, most] {
            let b = bits(&plan.choices(target));
            assert!(
                b <= target + 1e-9,
                "{target}: the file takes {b} bits per weight"
            );
            assert!((plan.used_budget(target) - b).abs() < 1e-9, "{target}");
        }
        // With a budget between, something is bought beyond the smallest types.
        assert!(bits(&plan.choices(6.0)) > least + 0.5);
    }
}
