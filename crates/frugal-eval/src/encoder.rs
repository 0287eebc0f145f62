//! Evaluation of sentence encoders: cosine similarity of each sentence's embedding to a
//! reference model's (mean, min), and leave-one-out 1-nearest-neighbour genre accuracy on Brown
//! corpus sentences (neighbours from the same document excluded, so the score measures genre,
//! not document identity), with a 95 % Wilson interval.

use crate::Result;
use frugal_formats::brown::{BrownDoc, GENRES};
use frugal_models::bert::{cosine, Bert};
use serde::Serialize;

/// A labelled sentence.
#[derive(Debug, Clone)]
pub struct LabelledSentence {
    pub text: String,
    pub genre: usize,
    pub doc: String,
}

/// Picks up to `per_genre` sentences of at least `min_words` words from each genre, taking them
/// round-robin over the genre's documents in id order (deterministic, spread over documents).
pub fn brown_sentences(
    docs: &[BrownDoc],
    per_genre: usize,
    min_words: usize,
) -> Vec<LabelledSentence> {
    let mut out = Vec::new();
    for g in 0..GENRES.len() {
        let gdocs: Vec<&BrownDoc> = docs.iter().filter(|d| d.genre == g).collect();
        let mut cursors = vec![0usize; gdocs.len()];
        let mut taken = 0;
        while taken < per_genre {
            let mut progressed = false;
            for (d, cur) in gdocs.iter().zip(cursors.iter_mut()) {
                while *cur < d.sentences.len()
                    && d.sentences[*cur].split_whitespace().count() < min_words
                {
                    *cur += 1;
                }
                if *cur < d.sentences.len() && taken < per_genre {
                    out.push(LabelledSentence {
                        text: d.sentences[*cur].clone(),
                        genre: g,
                        doc: d.id.clone(),
                    });
                    *cur += 1;
                    taken += 1;
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
    }
    out
}

/// The 95 % Wilson score interval of a proportion `k / n`.
pub fn wilson95(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (z, n_f, p) = (1.959_963_984_540_054, n as f64, k as f64 / n as f64);
    let denom = 1.0 + z * z / n_f;
    let centre = (p + z * z / (2.0 * n_f)) / denom;
    let half = z * (p * (1.0 - p) / n_f + z * z / (4.0 * n_f * n_f)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Results of an encoder evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct EncoderEvalResult {
    pub n_sentences: usize,
    pub n_genres: usize,
    /// Leave-one-out 1-NN genre accuracy, percent, with its 95 % interval.
    pub knn_accuracy_pct: f64,
    pub knn_ci95_pct: (f64, f64),
    /// Cosine similarity to the reference's embeddings (when a reference is given).
    pub cosine_mean: Option<f64>,
    pub cosine_min: Option<f64>,
    pub reference_knn_accuracy_pct: Option<f64>,
}

/// Leave-one-out 1-NN genre accuracy, excluding neighbours from the same document.
pub fn knn_accuracy(emb: &[Vec<f32>], sents: &[LabelledSentence]) -> usize {
    use rayon::prelude::*;
    (0..emb.len())
        .into_par_iter()
        .filter(|&i| {
            let mut best = (f64::NEG_INFINITY, usize::MAX);
            for j in 0..emb.len() {
                if sents[j].doc != sents[i].doc {
                    let c = cosine(&emb[i], &emb[j]);
                    if c > best.0 {
                        best = (c, j);
                    }
                }
            }
            best.1 != usize::MAX && sents[best.1].genre == sents[i].genre
        })
        .count()
}

/// Evaluates `model` (and compares with `reference`) on labelled sentences.
pub fn eval_encoder(
    model: &Bert,
    reference: Option<&Bert>,
    sents: &[LabelledSentence],
    batch: usize,
) -> Result<EncoderEvalResult> {
    let texts: Vec<&str> = sents.iter().map(|s| s.text.as_str()).collect();
    let emb = model.embed(&texts, batch)?;
    let k = knn_accuracy(&emb, sents);
    let (lo, hi) = wilson95(k, sents.len());
    let mut r = EncoderEvalResult {
        n_sentences: sents.len(),
        n_genres: sents
            .iter()
            .map(|s| s.genre)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        knn_accuracy_pct: 100.0 * k as f64 / sents.len().max(1) as f64,
        knn_ci95_pct: (100.0 * lo, 100.0 * hi),
        cosine_mean: None,
        cosine_min: None,
        reference_knn_accuracy_pct: None,
    };
    if let Some(rm) = reference {
        let remb = rm.embed(&texts, batch)?;
        let cos: Vec<f64> = emb.iter().zip(&remb).map(|(a, b)| cosine(a, b)).collect();
        r.cosine_mean = Some(cos.iter().sum::<f64>() / cos.len().max(1) as f64);
        r.cosine_min = cos.iter().copied().reduce(f64::min);
        r.reference_knn_accuracy_pct =
            Some(100.0 * knn_accuracy(&remb, sents) as f64 / sents.len().max(1) as f64);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_interval_known_values() {
        // 50/100: centre 0.5, half-width ≈ 0.0962.
        let (lo, hi) = wilson95(50, 100);
        assert!(
            (lo - 0.4038).abs() < 1e-3 && (hi - 0.5962).abs() < 1e-3,
            "{lo} {hi}"
        );
        let (lo, hi) = wilson95(0, 10);
        assert_eq!(lo, 0.0);
        assert!((hi - 0.2775).abs() < 1e-3);
    }

    #[test]
    fn knn_ignores_same_document_neighbours() {
        let s = |g, d: &str| LabelledSentence {
            text: String::new(),
            genre: g,
            doc: d.into(),
        };
        let sents = vec![s(0, "a"), s(1, "a"), s(0, "b"), s(1, "c")];
        // 0's nearest is 1 (same document, so ignored), then 2: same genre, a hit. Every other
        // sentence's nearest allowed neighbour has the other genre. Counting same-document
        // neighbours would make 0 miss too (its nearest, 1, has genre 1), giving 0 hits.
        let emb = vec![
            vec![1.0, 0.0],
            vec![1.0, 0.01],
            vec![0.9, 0.1],
            vec![0.0, 1.0],
        ];
        assert_eq!(knn_accuracy(&emb, &sents), 1);
    }
}

/// `frugal eval` on a sentence-encoder folder: Brown sentences, optional reference.
#[derive(Debug, Clone, Serialize)]
pub struct EncoderEvalReport {
    pub model: String,
    pub reference: Option<String>,
    pub per_genre: usize,
    #[serde(flatten)]
    pub result: EncoderEvalResult,
    pub eval_seconds: f64,
    pub sentences_per_second: f64,
}

/// Loads the encoder(s) and evaluates them on `per_genre` Brown sentences from each genre.
pub fn eval_encoder_dirs(
    model: &std::path::Path,
    reference: Option<&std::path::Path>,
    brown_dir: &std::path::Path,
    per_genre: usize,
) -> Result<EncoderEvalReport> {
    let dev = candle_core::Device::Cpu;
    let m = Bert::load(model, &dev)?;
    let r = reference.map(|p| Bert::load(p, &dev)).transpose()?;
    let docs =
        frugal_formats::brown::read_brown_dir(brown_dir).map_err(frugal_models::Error::from)?;
    let sents = brown_sentences(&docs, per_genre, 8);
    let t0 = std::time::Instant::now();
    let result = eval_encoder(&m, r.as_ref(), &sents, 32)?;
    let secs = t0.elapsed().as_secs_f64();
    let passes = if r.is_some() { 2.0 } else { 1.0 };
    Ok(EncoderEvalReport {
        model: model.display().to_string(),
        reference: reference.map(|p| p.display().to_string()),
        per_genre,
        sentences_per_second: passes * sents.len() as f64 / secs,
        result,
        eval_seconds: secs,
    })
}

impl EncoderEvalReport {
    pub fn to_text(&self) -> String {
        let r = &self.result;
        let mut s = format!(
            "model      {}\nsentences  {} from the Brown corpus ({} genres, {} per genre, ≥ 8 words)\n1-NN genre {:.2} % (95 % CI {:.2}–{:.2} %; chance {:.1} %)\n",
            self.model, r.n_sentences, r.n_genres, self.per_genre, r.knn_accuracy_pct, r.knn_ci95_pct.0, r.knn_ci95_pct.1, 100.0 / r.n_genres.max(1) as f64
        );
        if let (Some(rp), Some(m), Some(mn), Some(ra)) = (
            &self.reference,
            r.cosine_mean,
            r.cosine_min,
            r.reference_knn_accuracy_pct,
        ) {
            s += &format!(
                "reference  {rp}: 1-NN genre {ra:.2} %\ncosine     mean {m:.6}, min {mn:.6}\n"
            );
        }
        s += &format!(
            "speed      {:.1} sentences/s ({:.1} s)\n",
            self.sentences_per_second, self.eval_seconds
        );
        s
    }
}
