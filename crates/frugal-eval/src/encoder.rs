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
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
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

/// One tokenized item to embed, with its label.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Item {
    pub ids: Vec<u32>,
    pub genre: usize,
    pub doc: String,
}

/// `n` passages of `tokens` tokens (`[CLS]`, `tokens − 2` word pieces, `[SEP]`): consecutive
/// windows of each document's text, taken round-robin over the documents, genres interleaved
/// (so 2,000 passages of the 500 Brown documents are the first 4 windows of each).
pub fn brown_passages(
    docs: &[BrownDoc],
    model: &Bert,
    n: usize,
    tokens: usize,
) -> Result<Vec<Item>> {
    brown_passages_from(docs, model, n, tokens, 0)
}

/// Calibration passages disjoint from any evaluation of up to 4,000 passages: windows from the
/// 9th of each document on (evaluations take the first windows of each document).
pub const CALIBRATION_FIRST_WINDOW: usize = 8;

/// [`brown_passages`] starting at each document's window `first` (0-based).
pub fn brown_passages_from(
    docs: &[BrownDoc],
    model: &Bert,
    n: usize,
    tokens: usize,
    first: usize,
) -> Result<Vec<Item>> {
    let body = tokens.saturating_sub(2).max(1);
    // Documents interleaved across genres (the k-th document of each genre in turn), so that a
    // small n still spans every genre.
    let mut order: Vec<(usize, usize, &BrownDoc)> = Vec::with_capacity(docs.len());
    let mut seen = vec![0usize; GENRES.len()];
    for d in docs {
        let k = seen.get(d.genre).copied().unwrap_or(0);
        if let Some(s) = seen.get_mut(d.genre) {
            *s += 1;
        }
        order.push((k, d.genre, d));
    }
    order.sort_by_key(|&(k, g, d)| (k, g, d.id.clone()));
    let docs: Vec<&BrownDoc> = order.into_iter().map(|(_, _, d)| d).collect();
    let mut windows: Vec<(Vec<Vec<u32>>, usize, &str)> = Vec::with_capacity(docs.len());
    for d in docs {
        let (ids, cls, sep) = model.tokenize_untruncated(&d.sentences.join(" "))?;
        let w = ids
            .chunks_exact(body)
            .map(|c| {
                let mut v = Vec::with_capacity(tokens);
                v.push(cls);
                v.extend_from_slice(c);
                v.push(sep);
                v
            })
            .collect();
        windows.push((w, d.genre, &d.id));
    }
    let mut out = Vec::with_capacity(n);
    let mut k = first;
    while out.len() < n {
        let before = out.len();
        for (w, genre, doc) in &windows {
            if out.len() < n && k < w.len() {
                out.push(Item {
                    ids: w[k].clone(),
                    genre: *genre,
                    doc: doc.to_string(),
                });
            }
        }
        if out.len() == before {
            break; // every document exhausted
        }
        k += 1;
    }
    Ok(out)
}

/// Evaluates `model` (and compares with `reference`) on labelled sentences.
pub fn eval_encoder(
    model: &Bert,
    reference: Option<&Bert>,
    sents: &[LabelledSentence],
    batch: usize,
) -> Result<EncoderEvalResult> {
    let items: Vec<Item> = sents
        .iter()
        .map(|s| {
            Ok(Item {
                ids: model.tokenize(&s.text)?,
                genre: s.genre,
                doc: s.doc.clone(),
            })
        })
        .collect::<Result<_>>()?;
    Ok(eval_encoder_items(model, reference, &items, batch)?.0)
}

/// Evaluates `model` (and compares with `reference`) on tokenized items. Also returns the
/// seconds `model` took to embed them (the reference's time is not counted).
pub fn eval_encoder_items(
    model: &Bert,
    reference: Option<&Bert>,
    items: &[Item],
    batch: usize,
) -> Result<(EncoderEvalResult, f64)> {
    let ids: Vec<Vec<u32>> = items.iter().map(|i| i.ids.clone()).collect();
    let labels: Vec<LabelledSentence> = items
        .iter()
        .map(|i| LabelledSentence {
            text: String::new(),
            genre: i.genre,
            doc: i.doc.clone(),
        })
        .collect();
    let t0 = std::time::Instant::now();
    let emb = model.embed_ids(&ids, batch)?;
    let secs = t0.elapsed().as_secs_f64();
    let k = knn_accuracy(&emb, &labels);
    let (lo, hi) = wilson95(k, items.len());
    let mut r = EncoderEvalResult {
        n_sentences: items.len(),
        n_genres: items
            .iter()
            .map(|s| s.genre)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        knn_accuracy_pct: 100.0 * k as f64 / items.len().max(1) as f64,
        knn_ci95_pct: (100.0 * lo, 100.0 * hi),
        cosine_mean: None,
        cosine_min: None,
        reference_knn_accuracy_pct: None,
    };
    if let Some(rm) = reference {
        let remb = rm.embed_ids(&ids, batch)?;
        let cos: Vec<f64> = emb.iter().zip(&remb).map(|(a, b)| cosine(a, b)).collect();
        r.cosine_mean = Some(cos.iter().sum::<f64>() / cos.len().max(1) as f64);
        r.cosine_min = cos.iter().copied().reduce(f64::min);
        r.reference_knn_accuracy_pct =
            Some(100.0 * knn_accuracy(&remb, &labels) as f64 / items.len().max(1) as f64);
    }
    Ok((r, secs))
}

/// What an encoder is evaluated on.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EncoderData {
    /// Sentences of at least 8 words, this many per genre.
    Sentences { per_genre: usize },
    /// This many passages of `tokens` tokens.
    Passages { n: usize, tokens: usize },
}

/// `frugal eval` on a sentence-encoder folder: Brown sentences or passages, optional reference.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct EncoderEvalReport {
    pub model: String,
    pub reference: Option<String>,
    pub data: EncoderData,
    #[serde(flatten)]
    pub result: EncoderEvalResult,
    /// Seconds the model (not the reference) took to embed the items, and items per second.
    pub eval_seconds: f64,
    pub items_per_second: f64,
}

/// The items an evaluation of `model` on `data` uses (for peers to run on the same input).
pub fn encoder_items(
    model: &std::path::Path,
    brown_dir: &std::path::Path,
    data: EncoderData,
) -> Result<Vec<Item>> {
    let m = Bert::load(model, &candle_core::Device::Cpu)?;
    let docs =
        frugal_formats::brown::read_brown_dir(brown_dir).map_err(frugal_models::Error::from)?;
    items_for(&m, &docs, data)
}

fn items_for(m: &Bert, docs: &[BrownDoc], data: EncoderData) -> Result<Vec<Item>> {
    Ok(match data {
        EncoderData::Sentences { per_genre } => brown_sentences(docs, per_genre, 8)
            .into_iter()
            .map(|s| {
                Ok(Item {
                    ids: m.tokenize(&s.text)?,
                    genre: s.genre,
                    doc: s.doc,
                })
            })
            .collect::<Result<Vec<_>>>()?,
        EncoderData::Passages { n, tokens } => brown_passages(docs, m, n, tokens)?,
    })
}

/// Loads the encoder(s) and evaluates them on Brown sentences or passages.
pub fn eval_encoder_dirs(
    model: &std::path::Path,
    reference: Option<&std::path::Path>,
    brown_dir: &std::path::Path,
    data: EncoderData,
) -> Result<EncoderEvalReport> {
    let dev = candle_core::Device::Cpu;
    let m = Bert::load(model, &dev)?;
    let r = reference.map(|p| Bert::load(p, &dev)).transpose()?;
    let docs =
        frugal_formats::brown::read_brown_dir(brown_dir).map_err(frugal_models::Error::from)?;
    let items = items_for(&m, &docs, data)?;
    let (result, secs) = eval_encoder_items(&m, r.as_ref(), &items, 32)?;
    Ok(EncoderEvalReport {
        model: model.display().to_string(),
        reference: reference.map(|p| p.display().to_string()),
        data,
        items_per_second: items.len() as f64 / secs.max(1e-9),
        result,
        eval_seconds: secs,
    })
}

impl EncoderEvalReport {
    pub fn to_text(&self) -> String {
        let r = &self.result;
        let what = match self.data {
            EncoderData::Sentences { per_genre } => {
                format!(
                    "{} Brown sentences ({per_genre} per genre, ≥ 8 words)",
                    r.n_sentences
                )
            }
            EncoderData::Passages { tokens, .. } => {
                format!("{} Brown passages of {tokens} tokens", r.n_sentences)
            }
        };
        let mut s = format!(
            "model      {}
data       {what}, {} genres
1-NN genre {:.2} % (95 % CI {:.2}–{:.2} %; chance {:.1} %; same-document neighbours excluded)
",
            self.model,
            r.n_genres,
            r.knn_accuracy_pct,
            r.knn_ci95_pct.0,
            r.knn_ci95_pct.1,
            100.0 / r.n_genres.max(1) as f64
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
            "speed      {:.1} items/s ({:.1} s, the model alone)\n",
            self.items_per_second, self.eval_seconds
        );
        s
    }
}

/// Passages of `tokens` tokens cut from a plain text file with the encoder's tokenizer (for
/// calibration), at most `n`.
pub fn text_passages(model: &Bert, text: &str, n: usize, tokens: usize) -> Result<Vec<Vec<u32>>> {
    let (ids, cls, sep) = model.tokenize_untruncated(text)?;
    Ok(ids
        .chunks_exact(tokens.saturating_sub(2).max(1))
        .take(n)
        .map(|c| {
            let mut v = Vec::with_capacity(tokens);
            v.push(cls);
            v.extend_from_slice(c);
            v.push(sep);
            v
        })
        .collect())
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
