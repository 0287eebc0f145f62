//! What a model path holds, decided in one place for every command.

use std::path::Path;

/// The kinds of model Frugal runs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// A GGUF file (a decoder language model).
    LanguageModel,
    /// A folder with `model.safetensors`, `config.json` and `tokenizer.json` (a BERT sentence
    /// encoder).
    Encoder,
    /// A Frugal CNN classifier: safetensors with its config in the metadata.
    Classifier,
    /// Any other file (another safetensors file, or not a model: the command that opens it
    /// says why).
    Other,
}

impl ModelKind {
    /// Looks at `path`: a folder, the GGUF magic, a CNN's metadata key. Reads at most the
    /// header; a path that cannot be read is [`ModelKind::Other`] (opening it names the error).
    pub fn detect(path: &Path) -> ModelKind {
        use frugal_formats::inspect::{sniff_format, ModelFormat};
        if path.is_dir() {
            // A decoder's checkpoint folder is read as the GGUF model it converts to.
            return if frugal_compress::hf::view::is_decoder_folder(path) {
                ModelKind::LanguageModel
            } else {
                ModelKind::Encoder
            };
        }
        match sniff_format(path) {
            Ok(ModelFormat::Gguf) => ModelKind::LanguageModel,
            Ok(ModelFormat::Safetensors)
                if frugal_formats::safetensors::SafetensorsFile::open(path).is_ok_and(|f| {
                    f.header
                        .metadata
                        .contains_key(frugal_models::cnn::CONFIG_KEY)
                }) =>
            {
                ModelKind::Classifier
            }
            _ => ModelKind::Other,
        }
    }

    /// In words, for messages and reports.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::LanguageModel => "language model",
            ModelKind::Encoder => "encoder",
            ModelKind::Classifier => "classifier",
            ModelKind::Other => "other",
        }
    }
}
