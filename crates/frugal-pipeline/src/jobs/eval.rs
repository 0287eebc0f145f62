//! `frugal eval`: a language model's perplexity (and KL divergence, top-1 agreement against a
//! reference), an encoder's genre accuracy and similarity to its reference, a classifier's
//! test accuracy.

use super::{opt_input, Job, Progress, ToText};
use crate::data::Dataset;
use crate::kind::ModelKind;
use crate::Error;
use frugal_eval::classifier::ClassifierEvalResult;
use frugal_eval::encoder::{EncoderData, EncoderEvalReport};
use frugal_eval::{LmEvalFiles, LmEvalReport, RankSplit};
use frugal_formats::guard::{Expect, IoPlan};
use frugal_models::llama::LoadOptions;
use serde::Serialize;
use std::path::PathBuf;

/// What to evaluate, on what.
#[derive(Debug, Clone)]
pub struct Eval {
    /// A GGUF file, an encoder folder or a CNN classifier.
    pub model: PathBuf,
    /// The original the model is compared with.
    pub reference: Option<PathBuf>,
    /// Language models: the text scored.
    pub text: Option<PathBuf>,
    /// Language models: tokens per chunk (the second half is scored), at most this many chunks.
    pub ctx: usize,
    pub chunks: Option<usize>,
    /// Language models: how the weights are held and multiplied.
    pub load: LoadOptions,
    /// Encoders: Brown sentences or passages.
    pub encoder_data: EncoderData,
    /// Encoders: also write the items evaluated (token ids, genre, document) as JSON.
    pub dump_items: Option<PathBuf>,
    /// Classifiers: the test set (digits: the split of this seed).
    pub data: Option<Dataset>,
    pub seed: u64,
    /// Language models: the memory budget (`None`: what the machine has available).
    pub max_memory: Option<u64>,
    /// Language models under MPI: how the ranks share the work.
    pub split: RankSplit,
}

impl Eval {
    /// `model` on its kind's defaults (language models still need a text).
    pub fn new(model: PathBuf) -> Eval {
        Eval {
            model,
            reference: None,
            text: None,
            ctx: 512,
            chunks: None,
            load: LoadOptions::GGML,
            encoder_data: EncoderData::Sentences { per_genre: 40 },
            dump_items: None,
            data: None,
            seed: 0,
            max_memory: None,
            split: RankSplit::default(),
        }
    }
}

/// A classifier's accuracy on a data set's test images.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ClassifierEval {
    pub model: String,
    pub data: Dataset,
    #[serde(flatten)]
    pub result: ClassifierEvalResult,
}

/// What `frugal eval` measured, by model kind.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum EvalOutcome {
    LanguageModel(LmEvalReport),
    Encoder(EncoderEvalReport),
    Classifier(ClassifierEval),
}

impl Job for Eval {
    type Report = EvalOutcome;
    const KIND: &'static str = "eval";

    fn io_plan(&self) -> IoPlan {
        let mut p = IoPlan::new();
        p.add_input("model", &self.model, Expect::FileOrDir);
        if let Some(r) = &self.reference {
            p.add_input("--reference", r, Expect::FileOrDir);
        }
        opt_input(&mut p, "--text", self.text.as_deref());
        if let Some(d) = &self.dump_items {
            p.output("--dump-items", d);
        }
        p
    }

    fn run(&self, progress: Progress) -> Result<EvalOutcome, Error> {
        if let Some(data) = self.data {
            return self.classifier(data).map(EvalOutcome::Classifier);
        }
        if ModelKind::detect(&self.model) == ModelKind::Encoder {
            return self.encoder().map(EvalOutcome::Encoder);
        }
        let Some(text) = self.text.clone() else {
            return Err(Error::Usage(
                "--text is required for language models".into(),
            ));
        };
        let job = LmEvalFiles {
            model: self.model.clone(),
            reference: self.reference.clone(),
            text,
            opts_ctx: self.ctx,
            max_chunks: self.chunks,
            load: self.load,
            split: self.split,
        };
        super::check_memory(
            &job.memory_plan()?,
            self.max_memory,
            "the largest block and the output layer must fit in F32 (pass --max-memory if the machine has more)",
        )?;
        let r = frugal_eval::eval_lm_files(&job, &|done, total| {
            progress("block passes and chunks", done, total)
        })?;
        Ok(EvalOutcome::LanguageModel(r))
    }
}

impl Eval {
    fn classifier(&self, data: Dataset) -> Result<ClassifierEval, Error> {
        let m = frugal_models::cnn::Cnn::load(&self.model, &candle_core::Device::Cpu)
            .map_err(frugal_eval::Error::from)?;
        let split = data.load(self.seed)?;
        // Fashion-MNIST's test set is whole; digits' is the seeded split's test part.
        let idx = (data == Dataset::Digits).then_some(&split.test[..]);
        let result = frugal_eval::classifier::eval_classifier(&m, &split.test_set, idx)?;
        Ok(ClassifierEval {
            model: self.model.display().to_string(),
            data,
            result,
        })
    }

    fn encoder(&self) -> Result<EncoderEvalReport, Error> {
        let brown = frugal_formats::assets::brown_dir();
        if let Some(p) = &self.dump_items {
            let items =
                frugal_eval::encoder::encoder_items(&self.model, &brown, self.encoder_data)?;
            let bytes = serde_json::to_vec(&items).expect("items serialize");
            frugal_formats::output::write_atomic(p, &[&self.model], |f| {
                std::io::Write::write_all(f, &bytes)
            })?;
        }
        Ok(frugal_eval::encoder::eval_encoder_dirs(
            &self.model,
            self.reference.as_deref(),
            &brown,
            self.encoder_data,
        )?)
    }
}

impl ToText for EvalOutcome {
    fn to_text(&self) -> String {
        match self {
            EvalOutcome::LanguageModel(r) => r.to_text(),
            EvalOutcome::Encoder(r) => r.to_text(),
            EvalOutcome::Classifier(c) => format!(
                "model      {}\ndata       {} ({} test images)\naccuracy   {:.2} % (95 % CI {:.2}–{:.2} %)\n",
                c.model,
                c.data,
                c.result.n_images,
                c.result.accuracy_pct,
                c.result.ci95_pct.0,
                c.result.ci95_pct.1
            ),
        }
    }
}
