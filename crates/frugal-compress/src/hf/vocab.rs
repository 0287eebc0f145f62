//! The tokenizer half of a conversion, as llama.cpp's `convert_hf_to_gguf.py` writes it:
//! the vocabulary with token types ([`base_vocab`], its `get_vocab_base`), the pre-tokenizer's
//! name found by hashing the ids of a fixed text ([`pre_tokenizer`], its `get_vocab_base_pre`),
//! and the special tokens, `add_*_token` flags, merges, chat template and normalizer flags
//! ([`special_vocab`], gguf-py's `SpecialVocab`). The tokenizer itself is run by the
//! `tokenizers` crate on `tokenizer.json`, as `transformers`' fast tokenizers run it.

use super::HfError;
use frugal_formats::gguf::{Array, Value};
use frugal_formats::hf::{HfFolder, MAX_SMALL_JSON, MAX_TOKENIZER_JSON};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use std::path::Path;
use tokenizers::Tokenizer;

/// llama.cpp's token types.
pub const NORMAL: i32 = 1;
pub const UNKNOWN: i32 = 2;
pub const CONTROL: i32 = 3;
pub const USER_DEFINED: i32 = 4;
pub const UNUSED: i32 = 5;
pub const BYTE: i32 = 6;

/// The text llama.cpp tokenizes to recognise a pre-tokenizer (`chktxt`).
pub const CHECK_TEXT: &str = "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u{200d}🌫️ (multiple emojis concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL";

/// sha256 of the ids of [`CHECK_TEXT`] → pre-tokenizer name: the table of llama.cpp's
/// `get_vocab_base_pre` (pinned sdist llama-cpp-python 0.3.36), in its order; the last match
/// wins, as there (two hashes appear twice).
const PRE_HASHES: &[(&str, &str)] = &[
    (
        "b6e8e1518dc4305be2fe39c313ed643381c4da5db34a98f6a04c093f8afbe99b",
        "chatglm-bpe",
    ),
    (
        "81d72c7348a9f0ebe86f23298d37debe0a5e71149e29bd283904c02262b27516",
        "chatglm-bpe",
    ),
    (
        "a1336059768a55c99a734006ffb02203cd450fed003e9a71886c88acf24fdbc2",
        "glm4",
    ),
    (
        "9ca2dd618e8afaf09731a7cf6e2105b373ba6a1821559f258b272fe83e6eb902",
        "glm4",
    ),
    (
        "cdf5f35325780597efd76153d4d1c16778f766173908894c04afc20108536267",
        "glm4",
    ),
    (
        "1431a23e583c97432bc230bff598d103ddb5a1f89960c8f1d1051aaa944d0b35",
        "minerva-7b",
    ),
    (
        "7e57df22b1fe23a7b1e1c7f3dc4e3f96d43a4eb0836d0c6bdc3436d7b2f1c664",
        "hunyuan",
    ),
    (
        "bba3b3366b646dbdded5dbc42d59598b849371afc42f7beafa914afaa5b70aa6",
        "hunyuan-dense",
    ),
    (
        "e6ddf9c6686791c12d698d34c31ab9be1fea9af5a3d9a6909783ab382198ae1c",
        "hy_v4",
    ),
    (
        "a6b57017d60e6edb4d88ecc2845188e0eb333a70357e45dcc9b53964a73bbae6",
        "falcon-h1",
    ),
    (
        "60476e1243776c4fb1b993dbd7a5f15ac22f83c80afdf425fa5ae01c8d44ef86",
        "falcon-h1",
    ),
    (
        "3eda48b4c4dc7de733d1a8b3e3b4a85243dbbf704da2ee9d42c6beced8897896",
        "falcon-h1",
    ),
    (
        "48f8e02c0359c0bbdd82f26909171fac1c18a457bb47573ed1fe3bbb2c1cfd4b",
        "falcon-h1",
    ),
    (
        "81212dc7cdb7e0c1074ca62c5aeab0d43c9f52b8a737be7b12a777c953027890",
        "kimi-k2",
    ),
    (
        "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c",
        "qwen2",
    ),
    (
        "1444df51289cfa8063b96f0e62b1125440111bc79a52003ea14b6eac7016fd5f",
        "qwen35",
    ),
    (
        "66b8d4e19ab16c3bfd89bce5d785fb7e0155e8648708a1f42077cb9fe002c273",
        "grok-2",
    ),
    (
        "b3d1dd861f1d4c5c0d2569ce36baf3f90fe8a102db3de50dd71ff860d91be3df",
        "jina-v2-de",
    ),
    (
        "0fe1cf6eda062318a1af7270f3331a85c539a01778ff948e24388e949c5282f4",
        "gpt-2",
    ),
    (
        "9e454714343b69b99b71795c1d27a68c2a1d15dab111f4d353109f966af29da7",
        "lfm2",
    ),
    (
        "846deafc5b0fa786186fa4ae6c7b49903cf2f1d1895bdb80b9120d60be135252",
        "gemma4",
    ),
    (
        "0a766d034107bc736a3f2dc4968fd62e54a3570f1454443e0c5a4cc6bd7941ed",
        "spark2_5",
    ),
    (
        "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5",
        "llama-bpe",
    ),
    (
        "049ecf7629871e3041641907f3de7c733e4dbfdc736f57d882ba0b0845599754",
        "deepseek-llm",
    ),
    (
        "347715f544604f9118bb75ed199f68779f423cabb20db6de6f31b908d04d7821",
        "deepseek-coder",
    ),
    (
        "8aeee3860c56296a157a1fe2fad249ec40aa59b1bb5709f4ade11c4e6fe652ed",
        "falcon",
    ),
    (
        "0876d13b50744004aa9aeae05e7b0647eac9d801b5ba4668afc01e709c15e19f",
        "bert-bge",
    ),
    (
        "9d032fcbd5501f4a38150912590928bfb36091efb5df11b8e2124b0390e3fb1e",
        "falcon3",
    ),
    (
        "8e62295832751ca1e8f92f2226f403dea30dc5165e448b5bfa05af5340c64ec7",
        "bert-bge-large",
    ),
    (
        "b6dc8df998e1cfbdc4eac8243701a65afe638679230920b50d6f17d81c098166",
        "mpt",
    ),
    (
        "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34",
        "starcoder",
    ),
    (
        "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454",
        "gpt-2",
    ),
    (
        "32d85c31273f8019248f2559fed492d929ea28b17e51d81d3bb36fff23ca72b3",
        "stablelm2",
    ),
    (
        "6221ad2852e85ce96f791f476e0b390cf9b474c9e3d1362f53a24a06dc8220ff",
        "refact",
    ),
    (
        "9c2227e4dd922002fb81bde4fc02b0483ca4f12911410dee2255e4987644e3f8",
        "command-r",
    ),
    (
        "d772b220ace2baec124bed8cfafce0ead7d6c38a4b65ef11261cf9d5d62246d1",
        "tiny_aya",
    ),
    (
        "52df12b4c8d4176e7481aab4b6e8454d1fd0a210a04a574f6d4e067d10e23c3e",
        "cohere2moe",
    ),
    (
        "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea",
        "qwen2",
    ),
    (
        "b6dc8df998e1cfbdc4eac8243701a65afe638679230920b50d6f17d81c098166",
        "olmo",
    ),
    (
        "a8594e3edff7c29c003940395316294b2c623e09894deebbc65f33f1515df79e",
        "dbrx",
    ),
    (
        "c7699093ba4255a91e702aa38a596aa81669f3525dae06c2953267dde580f448",
        "jina-v1-en",
    ),
    (
        "0876d13b50744004aa9aeae05e7b0647eac9d801b5ba4668afc01e709c15e19f",
        "jina-v2-en",
    ),
    (
        "171aeeedd6fb548d418a7461d053f11b6f1f1fc9b387bd66640d28a4b9f5c643",
        "jina-v2-es",
    ),
    (
        "27949a2493fc4a9f53f5b9b029c82689cfbe5d3a1929bb25e043089e28466de6",
        "jina-v2-de",
    ),
    (
        "a023e9fdc5a11f034d3ef515b92350e56fb2af1f66c6b6811a4444ea9bf8763d",
        "jina-v5-nano",
    ),
    (
        "c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d",
        "smaug-bpe",
    ),
    (
        "c7ea5862a53e4272c035c8238367063e2b270d51faa48c0f09e9d5b54746c360",
        "poro-chat",
    ),
    (
        "7967bfa498ade6b757b064f31e964dddbb80f8f9a4d68d4ba7998fcf281c531a",
        "jina-v2-code",
    ),
    (
        "7fc505bd3104ca1083b150b17d088b59534ede9bde81f0dd2090967d7fe52cee",
        "viking",
    ),
    (
        "b53802fb28e26d645c3a310b34bfe07da813026ec7c7716883404d5e0f8b1901",
        "jais",
    ),
    (
        "bc5108ee1eb6a3d600cadd065f63190fbd0554dbc9e4bbd6a0d977970afc8d2a",
        "jais-2",
    ),
    (
        "7b3e7548e4308f52a76e8229e4e6cc831195d0d1df43aed21ac6c93da05fec5f",
        "codeshell",
    ),
    (
        "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e",
        "tekken",
    ),
    (
        "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249",
        "smollm",
    ),
    (
        "3c30d3ad1d6b64202cd222813e7736c2db6e1bd6d67197090fc1211fbc612ae7",
        "bloom",
    ),
    (
        "bc01ce58980e1db43859146dc51b1758b3b88729b217a74792e9f8d43e479d21",
        "gpt3-finnish",
    ),
    (
        "4e2b24cc4770243d65a2c9ec19770a72f08cffc161adbb73fcbb6b7dd45a0aae",
        "exaone",
    ),
    (
        "fcace8b9cac38ce847670c970cd5892031a753a1ef381abd1d9af00f713da085",
        "phi-2",
    ),
    (
        "60824e3c0d9401f89943cbb2fff727f0e2d4c545ba4df2d6e4f09a6db0f5b450",
        "chameleon",
    ),
    (
        "8b5a93ed704057481f240da0be7e7dca721d7f8f4755263b6807227a2cbeae65",
        "roberta-bpe",
    ),
    (
        "ad851be1dba641f2e3711822f816db2c265f788b37c63b4e1aeacb9ee92de8eb",
        "gigachat",
    ),
    (
        "d4c8f286ea6b520b3d495c4455483cfa2302c0cfcd4be05d781b6a8a0a7cdaf1",
        "megrez",
    ),
    (
        "877081d19cf6996e2c4ff0e1236341e9b7bde288f5311a56a937f0afbbb3aeb5",
        "deepseek-v3",
    ),
    (
        "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5",
        "deepseek-r1-qwen",
    ),
    (
        "ccc2ef013c104be7bae2965776d611e1d7a8a2a9c547dd93a682c9a9fc80352e",
        "gpt-4o",
    ),
    (
        "7dec86086fcc38b66b7bc1575a160ae21cf705be7718b9d5598190d7c12db76f",
        "superbpe",
    ),
    (
        "1994ffd01900cfb37395608534236ecd63f2bd5995d6cb1004dda1af50240f15",
        "trillion",
    ),
    (
        "96a5f08be6259352137b512d4157e333e21df7edd3fcd152990608735a65b224",
        "bailingmoe",
    ),
    (
        "d353350c764d8c3b39c763113960e4fb4919bea5fbf208a0e3b22e8469dc7406",
        "llama4",
    ),
    (
        "0e9433cbbb161f89e264eb32e8e64bfe69e834973ffca5d41d3948a604a3e2a3",
        "pixtral",
    ),
    (
        "d5f1dd6f980fec569fb218a81a7658ac45fc56b38c5a0adeb1c232fbe04ef5ec",
        "seed-coder",
    ),
    (
        "b0a6b1c0bd5998ebd9df08611efde34a4ff03faed45ae09c43e6b31ebd4b94cf",
        "a.x-4.0",
    ),
    (
        "f6791d196f87ce6b56a7d234be618e0d58f8cda3549416635b2bebcd22cd95c4",
        "midm-2.0",
    ),
    (
        "169bf0296a13c4d9b7672313f749eb36501d931022de052aad6e36f2bf34dd51",
        "lfm2",
    ),
    (
        "2085e1638f6c377a0aa4ead21b27bb4cb941bf800df86ed391011769c1758dfb",
        "exaone4",
    ),
    (
        "a1e163ecab2e718a4c829d1148b6e86824ec36163bb71941c3dca9cd5ac25756",
        "mellum",
    ),
    (
        "a0b64b4385f123663873756336c085744376d015ff328bb1d901598f63c44152",
        "modern-bert",
    ),
    (
        "49fc0303c9e0d2c2c565c510f64b2d9b271276acdcdadff733249eda9f7d59df",
        "afmoe",
    ),
    (
        "9b1be57e70d20d9501b2b3186e792d81181ae36ada3903c26f9fea418cf87206",
        "bailingmoe2",
    ),
    (
        "53e325976a6e142379c19b09afcae354f2f496f147afa8f9e189a33fe4e3024e",
        "granite-docling",
    ),
    (
        "f4f37b6c8eb9ea29b3eac6bb8c8487c5ab7885f8d8022e67edc1c68ce8403e95",
        "minimax-m2",
    ),
    (
        "4a2e2abae11ca2b86d570fc5b44be4d5eb5e72cc8f22dd136a94b37da83ab665",
        "kormo",
    ),
    (
        "9d70134b369a70e5735009b6de918f7581b5211f7c074d1f89f753aea8248af1",
        "youtu",
    ),
    (
        "16389f0a1f51ee53e562ffd51c371dc508639ab0e4261502071836e50e223e91",
        "solar-open",
    ),
    (
        "6c81ce329e0802883b22eabab0d3fa48357337ef1ecb45443828bf1f6254833f",
        "exaone-moe",
    ),
    (
        "d30d75d9059f1aa2c19359de71047b3ae408c70875e8a3ccf8c5fba56c9d8af4",
        "qwen35",
    ),
    (
        "b4b8ca1f9769494fbd956ebc4c249de6131fb277a4a3345a7a92c7dd7a55808d",
        "joyai-llm",
    ),
    (
        "e4d54df1ebc1f2b91acd986c5b51aa50837d5faf7c7398e73c1f9e9ee5d19869",
        "kanana2",
    ),
    (
        "862f827721df956049dff5ca81a57f29e575280bc622e290d3bf4e35eca29015",
        "f2llmv2",
    ),
    (
        "62f6fb0a6fd5098caeabb19b07a5c1099cafc8b9c40eab6ea89ece4ec02fbc57",
        "sarvam-moe",
    ),
    (
        "f728162c1315c26e40249849799b4ba3fe584c32084b4795b03eb295e63cb5af",
        "talkie",
    ),
    (
        "36f3066e97b7f3994b379aaacde306c1444c6ae84e81a5ae3cd2b7ed3b8c42d4",
        "minicpm5",
    ),
    (
        "f241072145675bf8322086f115aebad05e9f869557a238bf2150a2a417d1bf60",
        "granite-embed-multi-97m",
    ),
    (
        "789696f5946cc0fc59371f39f6097cafed196b3acded6140432f26bbb1ae1669",
        "granite-embed-multi-311m",
    ),
    (
        "9dcf830ee9990cdbf78cc523a5f7bd9ad8f3f9890c2d3581d2785ad10f07049d",
        "mellum2",
    ),
    (
        "972da7b59cec44d1f0a490a86c96df53859e486e481563e5dddac155013d87ac",
        "laguna",
    ),
    (
        "653660222fb704f61cbf2b618a8ae6502b7f8b20c980f9a5de07ed78e13319cd",
        "ufakzeka",
    ),
];

/// An entry of `tokenizer.json`'s `added_tokens` (read by the converter, written by export).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AddedToken {
    pub id: u32,
    pub content: String,
    #[serde(default)]
    pub single_word: bool,
    #[serde(default)]
    pub lstrip: bool,
    #[serde(default)]
    pub rstrip: bool,
    #[serde(default)]
    pub normalized: bool,
    #[serde(default)]
    pub special: bool,
}

/// The folder's `tokenizer.json`, parsed both as JSON (for the fields llama.cpp reads directly;
/// its post-processor templates are nested lists of variants, read where llama.cpp reads
/// them) and as a runnable tokenizer.
pub struct HfTokenizer {
    pub json: Json,
    /// `added_tokens`, typed.
    pub added: Vec<AddedToken>,
    pub tokenizer: Tokenizer,
    /// `tokenizer_config.json`, when present.
    pub config: Option<Json>,
}

fn tok_err(path: &Path, reason: impl Into<String>) -> HfError {
    HfError::Tokenizer {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl HfTokenizer {
    pub fn load(folder: &HfFolder) -> Result<Self, HfError> {
        let path = folder.dir().join("tokenizer.json");
        let text = folder
            .text("tokenizer.json", MAX_TOKENIZER_JSON)?
            .ok_or_else(|| {
                tok_err(
                    &path,
                    "is missing (a decoder's tokenizer.model is read when present; \
                     vocab.json/merges.txt are not read)",
                )
            })?;
        let (json, added) = parse_tokenizer_json(&path, &text)?;
        let mut tokenizer: Tokenizer = text
            .parse()
            .map_err(|e| tok_err(&path, format!("cannot be loaded as a tokenizer ({e})")))?;
        // transformers encodes without truncation or padding unless asked.
        tokenizer
            .with_truncation(None)
            .map_err(|e| tok_err(&path, e.to_string()))?;
        tokenizer.with_padding(None);
        let config = folder.json("tokenizer_config.json", MAX_SMALL_JSON)?;
        let t = HfTokenizer {
            json,
            added,
            tokenizer,
            config,
        };
        t.check_config(&path)?;
        Ok(t)
    }

    /// Refuses a `tokenizer_config.json` that would make `transformers` run a different
    /// tokenizer than `tokenizer.json` describes (its BERT tokenizer rebuilds the normalizer
    /// from `do_lower_case`; its Llama tokenizer rebuilds the post-processor from
    /// `add_bos_token`/`add_eos_token`).
    fn check_config(&self, path: &Path) -> Result<(), HfError> {
        let Some(cfg) = &self.config else {
            return Ok(());
        };
        let class = cfg
            .get("tokenizer_class")
            .and_then(Json::as_str)
            .unwrap_or("");
        if class.starts_with("Bert") {
            if let Some(lower) = cfg.get("do_lower_case").and_then(Json::as_bool) {
                let norm = self.json.get("normalizer");
                let have = norm
                    .and_then(|n| n.get("lowercase"))
                    .and_then(Json::as_bool)
                    .unwrap_or(true);
                if have != lower {
                    return Err(tok_err(
                        path,
                        format!("tokenizer_config.json's do_lower_case ({lower}) disagrees with the normalizer; transformers would rebuild it"),
                    ));
                }
            }
        }
        if class.starts_with("Llama") || class.starts_with("Gemma") {
            return Err(tok_err(
                path,
                format!("tokenizer_class {class} (transformers rebuilds its post-processor) is not converted yet"),
            ));
        }
        Ok(())
    }
}

/// llama.cpp's `does_token_look_special`.
fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<｜") && t.ends_with("｜>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

/// The pre-tokenizer's name, from the hash of `tok`'s ids for [`CHECK_TEXT`].
pub fn pre_tokenizer(tok: &HfTokenizer, path: &Path) -> Result<String, HfError> {
    let enc = tok
        .tokenizer
        .encode(CHECK_TEXT, true)
        .map_err(|e| tok_err(path, format!("cannot tokenize ({e})")))?;
    let ids: Vec<String> = enc.get_ids().iter().map(u32::to_string).collect();
    let repr = format!("[{}]", ids.join(", "));
    let hash = Sha256::digest(repr.as_bytes());
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    PRE_HASHES
        .iter()
        .rev()
        .find(|(h, _)| *h == hex)
        .map(|(_, n)| n.to_string())
        .ok_or_else(|| {
            tok_err(
                path,
                format!("its pre-tokenizer is not one llama.cpp recognises (chkhsh {hex})"),
            )
        })
}

/// Tokens, token types and pre-tokenizer name, as llama.cpp's `get_vocab_base`.
pub fn base_vocab(
    tok: &HfTokenizer,
    vocab_size: Option<usize>,
    path: &Path,
) -> Result<(Vec<String>, Vec<i32>, String), HfError> {
    let vocab = tok.tokenizer.get_vocab(true);
    let max_id = vocab.values().copied().max().unwrap_or(0) as usize;
    let n = vocab_size.unwrap_or(vocab.len());
    if max_id >= n {
        return Err(tok_err(
            path,
            format!("has token id {max_id}, outside config.json's vocab_size {n}"),
        ));
    }
    let pre = pre_tokenizer(tok, path)?;
    let mut reverse: Vec<Option<&str>> = vec![None; n];
    for (t, &id) in &vocab {
        reverse[id as usize] = Some(t);
    }
    let added: std::collections::HashMap<u32, &AddedToken> =
        tok.added.iter().map(|a| (a.id, a)).collect();
    let mut tokens = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    for (i, r) in reverse.iter().enumerate() {
        let Some(t) = r else {
            tokens.push(format!("[PAD{i}]"));
            types.push(UNUSED);
            continue;
        };
        let mut token = t.to_string();
        if let Some(a) = added.get(&(i as u32)) {
            if !a.normalized {
                // llama.cpp re-encodes and decodes such tokens; Frugal checks that this is
                // the identity rather than reproduce transformers' decode clean-ups.
                let ids = tok
                    .tokenizer
                    .encode(token.as_str(), false)
                    .map_err(|e| tok_err(path, e.to_string()))?;
                let back = tok
                    .tokenizer
                    .decode(ids.get_ids(), false)
                    .map_err(|e| tok_err(path, e.to_string()))?;
                if back != token {
                    return Err(tok_err(
                        path,
                        format!("added token {token:?} decodes back as {back:?}; llama.cpp would store the latter (not reproduced)"),
                    ));
                }
            }
            if a.special || looks_special(&token) {
                types.push(CONTROL);
            } else {
                token = token.replace('\u{2581}', " ");
                types.push(USER_DEFINED);
            }
        } else {
            types.push(NORMAL);
        }
        tokens.push(token);
    }
    Ok((tokens, types, pre))
}

/// A `tokenizer_config.json` entry as llama.cpp compares it: a string, or a dict's `content`.
fn content(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content").and_then(Json::as_str).map(str::to_string),
        _ => None,
    }
}

/// `tokenizer.json` as gguf-py's `SpecialVocab` reads it beside a SentencePiece model: raw
/// JSON and its typed `added_tokens` (`Null` and none when the folder has no such file).
pub fn raw_tokenizer_json(folder: &HfFolder) -> Result<(Json, Vec<AddedToken>), HfError> {
    let path = folder.dir().join("tokenizer.json");
    match folder.text("tokenizer.json", MAX_TOKENIZER_JSON)? {
        Some(text) => parse_tokenizer_json(&path, &text),
        None => Ok((Json::Null, Vec::new())),
    }
}

/// `tokenizer.json`'s text as JSON and its `added_tokens`, typed.
fn parse_tokenizer_json(path: &Path, text: &str) -> Result<(Json, Vec<AddedToken>), HfError> {
    let json: Json = serde_json::from_str(text)
        .map_err(|e| tok_err(path, format!("is not valid JSON ({e})")))?;
    let added: Vec<AddedToken> = match json.get("added_tokens") {
        None | Some(Json::Null) => Vec::new(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| tok_err(path, format!("added_tokens: {e}")))?,
    };
    Ok((json, added))
}

/// A SentencePiece vocabulary as llama.cpp's `_create_vocab_sentencepiece` reads it: the
/// pieces of `tokenizer.model` (user-defined pieces as normal ones, as there), padded with
/// `[PADi]` to the configured vocabulary size, then `added_tokens.json` and
/// `tokenizer_config.json`'s `added_tokens_decoder` written over them (score -1000; control
/// when special or looking special, else user-defined with `▁` read as a space).
pub struct SpVocab {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub types: Vec<i32>,
}

/// Which converter's reading of a SentencePiece vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpRules {
    /// `_create_vocab_sentencepiece` (Llama, Qwen, Gemma).
    Generic,
    /// `Phi3MiniModel.set_vocab`: no bounds, added tokens taken as written (no `▁` rewriting,
    /// no looking special), `tokenizer.json`'s added tokens applied too.
    Phi3,
}

/// See [`SpVocab`]; `vocab_size` is the configured size (the pieces' count when `None` or 0).
pub fn sentencepiece_vocab(
    folder: &HfFolder,
    vocab_size: Option<usize>,
    rules: SpRules,
) -> Result<SpVocab, HfError> {
    let phi3 = rules == SpRules::Phi3;
    use frugal_formats::sentencepiece::{self as sp, PieceType};
    let path = folder.dir().join("tokenizer.model");
    let bytes = folder
        .bytes("tokenizer.model", sp::MAX_MODEL_BYTES)?
        .ok_or_else(|| tok_err(&path, "is missing"))?;
    let model = sp::parse(&bytes).map_err(|e| tok_err(&path, e.to_string()))?;
    let n = vocab_size.filter(|&n| n > 0).unwrap_or(model.pieces.len());
    if n > sp::MAX_PIECES {
        return Err(tok_err(&path, format!("a vocabulary of {n} is too large")));
    }
    let mut v = SpVocab {
        tokens: (0..n).map(|i| format!("[PAD{i}]")).collect(),
        scores: vec![-10000.0; n],
        types: vec![UNUSED; n],
    };
    if phi3 && model.pieces.len() > n {
        // Phi-3's reader has no bound here (llama.cpp fails with an IndexError).
        return Err(tok_err(
            &path,
            format!("{} pieces for a vocabulary of {n}", model.pieces.len()),
        ));
    }
    for (i, p) in model.pieces.iter().enumerate().take(n) {
        v.tokens[i] = p.piece.clone();
        v.scores[i] = p.score;
        v.types[i] = match p.kind {
            PieceType::Unknown => UNKNOWN,
            PieceType::Control => CONTROL,
            PieceType::Unused => UNUSED,
            PieceType::Byte => BYTE,
            PieceType::Normal | PieceType::UserDefined => NORMAL,
        };
    }
    let added_path = folder.dir().join("added_tokens.json");
    if let Some(added) = folder.json("added_tokens.json", MAX_SMALL_JSON)? {
        let map = added
            .as_object()
            .ok_or_else(|| tok_err(&added_path, "is not an object"))?;
        for (content, id) in map {
            let id = id
                .as_u64()
                .ok_or_else(|| tok_err(&added_path, format!("`{content}`: {id} is not an id")))?
                as usize;
            if id < n {
                v.tokens[id] = content.clone();
                v.scores[id] = -1000.0;
                v.types[id] = USER_DEFINED;
            }
        }
    }
    let cfg_path = folder.dir().join("tokenizer_config.json");
    if let Some(cfg) = folder.json("tokenizer_config.json", MAX_SMALL_JSON)? {
        if let Some(dec) = cfg.get("added_tokens_decoder").filter(|d| !d.is_null()) {
            let dec = dec
                .as_object()
                .ok_or_else(|| tok_err(&cfg_path, "added_tokens_decoder is not an object"))?;
            for (key, data) in dec {
                let id: usize = key.parse().map_err(|_| {
                    tok_err(
                        &cfg_path,
                        format!("added_tokens_decoder: `{key}` is not an id"),
                    )
                })?;
                let content = data.get("content").and_then(Json::as_str).ok_or_else(|| {
                    tok_err(&cfg_path, format!("added_tokens_decoder.{key}: no content"))
                })?;
                if id >= n {
                    if phi3 {
                        return Err(tok_err(
                            &cfg_path,
                            format!("added_tokens_decoder.{key}: outside the vocabulary of {n}"),
                        ));
                    }
                    continue;
                }
                let special = match data.get("special") {
                    None | Some(Json::Null) | Some(Json::Bool(false)) => false,
                    Some(Json::Bool(true)) => true,
                    Some(other) => {
                        return Err(tok_err(
                            &cfg_path,
                            format!("added_tokens_decoder.{key}.special: {other} is not a boolean"),
                        ))
                    }
                };
                if phi3 {
                    v.tokens[id] = content.to_string();
                    v.types[id] = if special { CONTROL } else { USER_DEFINED };
                } else if special || looks_special(content) {
                    v.tokens[id] = content.to_string();
                    v.types[id] = CONTROL;
                } else {
                    v.tokens[id] = content.replace('\u{2581}', " ");
                    v.types[id] = USER_DEFINED;
                }
                v.scores[id] = -1000.0;
            }
        }
    }
    if phi3 {
        // Phi-3 also writes `tokenizer.json`'s added tokens over the vocabulary.
        let (_, added) = raw_tokenizer_json(folder)?;
        let tj = folder.dir().join("tokenizer.json");
        for a in added {
            let id = a.id as usize;
            if id >= n {
                return Err(tok_err(
                    &tj,
                    format!("added token {id} is outside the vocabulary of {n}"),
                ));
            }
            v.tokens[id] = a.content;
            v.scores[id] = -1000.0;
            v.types[id] = if a.special { CONTROL } else { USER_DEFINED };
        }
    }
    Ok(v)
}

/// gguf-py's `SpecialVocab`: the keys it adds, in its order, from `tokenizer.json` (`json`,
/// `Null` when the folder has none, and its `added` tokens) and `tokenizer_config.json`.
pub fn special_vocab(
    folder: &HfFolder,
    json: &Json,
    added: &[AddedToken],
    config: Option<&Json>,
    load_merges: bool,
    n_vocab: Option<usize>,
) -> Result<Vec<(String, Value)>, HfError> {
    let path = folder.dir().join("tokenizer.json");
    let mut types: Vec<&str> = vec!["bos", "eos", "unk", "sep", "pad", "cls", "mask"];
    let mut ids: Vec<(String, u32)> = Vec::new();
    let mut add: Vec<(String, bool)> = Vec::new();
    let set_add = |add: &mut Vec<(String, bool)>, k: &str, v: bool, overwrite: bool| {
        if let Some(e) = add.iter_mut().find(|(t, _)| t == k) {
            if overwrite {
                e.1 = v;
            }
        } else {
            add.push((k.to_string(), v));
        }
    };
    let set_id =
        |ids: &mut Vec<(String, u32)>, typ: &str, id: Option<i64>| -> Result<(), HfError> {
            let Some(id) = id else { return Ok(()) };
            if id < 0 {
                return Err(tok_err(&path, format!("special token {typ} has id {id}")));
            }
            if n_vocab.is_none_or(|n| (id as usize) < n) && !ids.iter().any(|(t, _)| t == typ) {
                ids.push((typ.to_string(), id as u32));
            }
            Ok(())
        };
    let mut merges: Vec<String> = Vec::new();
    if load_merges {
        if let Some(list) = json.pointer("/model/merges").and_then(Json::as_array) {
            for m in list {
                match m {
                    Json::String(s) => merges.push(s.clone()),
                    Json::Array(pair) if pair.len() == 2 => {
                        let part = |v: &Json| -> Result<String, HfError> {
                            v.as_str()
                                .map(|s| s.replace(' ', "\u{0120}"))
                                .ok_or_else(|| tok_err(&path, "a merge is not a pair of strings"))
                        };
                        merges.push(format!("{} {}", part(&pair[0])?, part(&pair[1])?));
                    }
                    _ => return Err(tok_err(&path, "unknown merges format")),
                }
            }
        }
    }
    let (mut lowercase, mut strip_accents) = (None, None);
    fn normalizer(n: &Json, lower: &mut Option<bool>, strip: &mut Option<Option<bool>>) {
        match n.get("type").and_then(Json::as_str) {
            Some("Lowercase") => *lower = Some(true),
            Some("StripAccents") => *strip = Some(Some(true)),
            Some("BertNormalizer") => {
                if let Some(v) = n.get("lowercase") {
                    *lower = v.as_bool();
                }
                if let Some(v) = n.get("strip_accents") {
                    *strip = Some(v.as_bool());
                }
            }
            Some("Sequence") => {
                for m in n
                    .get("normalizers")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                {
                    normalizer(m, lower, strip);
                }
            }
            _ => {}
        }
    }
    if let Some(n) = json.get("normalizer").filter(|n| !n.is_null()) {
        normalizer(n, &mut lowercase, &mut strip_accents);
    }
    let mut cfg: Option<serde_json::Map<String, Json>> = config
        .and_then(Json::as_object)
        .cloned()
        .filter(|m| !m.is_empty());
    // Compared as llama.cpp compares them: raw values (a dict never equals a string).
    let get = |cfg: &Option<serde_json::Map<String, Json>>, k: &str| {
        cfg.as_ref().and_then(|c| c.get(k)).cloned()
    };
    let is = |v: &Option<Json>, s: &str| matches!(v, Some(Json::String(x)) if x == s);
    let truthy = |v: &Option<Json>| match v {
        None | Some(Json::Null) | Some(Json::Bool(false)) => false,
        Some(Json::String(x)) => !x.is_empty(),
        Some(Json::Object(o)) => !o.is_empty(),
        Some(Json::Array(a)) => !a.is_empty(),
        Some(_) => true,
    };
    let mut bos = get(&cfg, "bos_token");
    let mut cls = get(&cfg, "cls_token");
    let mut eos = get(&cfg, "eos_token");
    let mut sep = get(&cfg, "sep_token");
    if let Some(c) = cfg.as_mut() {
        if !truthy(&bos) && truthy(&cls) {
            bos = cls.clone();
            c.insert("bos_token".into(), bos.clone().unwrap_or(Json::Null));
        }
        if !truthy(&eos) && truthy(&sep) {
            eos = sep.clone();
            c.insert("eos_token".into(), eos.clone().unwrap_or(Json::Null));
        }
    }
    if let Some(pp) = json.get("post_processor").filter(|p| !p.is_null()) {
        let procs: Vec<&Json> = match pp.get("processors").and_then(Json::as_array) {
            Some(l) => l.iter().collect(),
            None => vec![pp],
        };
        let sid = |v: Option<&Json>| {
            v.and_then(|x| x.pointer("/SpecialToken/id"))
                .and_then(Json::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        for p in procs {
            match p.get("type").and_then(Json::as_str) {
                Some("ByteLevel") => {
                    set_add(&mut add, "bos", false, false);
                    set_add(&mut add, "eos", false, false);
                }
                Some("RobertaProcessing") => {
                    set_add(&mut add, "bos", true, true);
                    set_add(&mut add, "eos", true, true);
                    set_add(&mut add, "sep", true, true);
                    if let Some(c) = cfg.as_mut() {
                        if !truthy(&cls) {
                            cls = p.pointer("/cls/0").cloned().or(bos.clone());
                            c.insert("cls_token".into(), cls.clone().unwrap_or(Json::Null));
                        }
                        if !truthy(&sep) {
                            sep = p.pointer("/sep/0").cloned().or(eos.clone());
                            c.insert("sep_token".into(), sep.clone().unwrap_or(Json::Null));
                        }
                    }
                }
                Some("TemplateProcessing") => {
                    let single: Vec<Json> = p
                        .get("single")
                        .and_then(Json::as_array)
                        .cloned()
                        .unwrap_or_default();
                    let pair: Vec<Json> = p
                        .get("pair")
                        .and_then(Json::as_array)
                        .cloned()
                        .unwrap_or_default();
                    let (mut first, mut last) = (None, None);
                    if single.len() > 1 {
                        first = sid(single.first());
                        if let Some(f) = &first {
                            match cfg.as_mut() {
                                None => bos = Some(Json::String(f.clone())),
                                Some(c) => {
                                    if !is(&bos, f) && !is(&cls, f) {
                                        if !truthy(&bos) {
                                            bos = Some(Json::String(f.clone()));
                                            c.insert("bos_token".into(), Json::String(f.clone()));
                                        }
                                        if !truthy(&cls) {
                                            cls = Some(Json::String(f.clone()));
                                            c.insert("cls_token".into(), Json::String(f.clone()));
                                        }
                                    }
                                }
                            }
                            let v = is(&bos, f) || is(&cls, f);
                            set_add(&mut add, "bos", v, true);
                        }
                        last = sid(single.last());
                        if let Some(l) = &last {
                            match cfg.as_mut() {
                                None => eos = Some(Json::String(l.clone())),
                                Some(c) => {
                                    if !is(&eos, l) {
                                        let old = eos.clone().unwrap_or(Json::Null);
                                        if !types.contains(&"eot") {
                                            types.push("eot");
                                            c.insert("eot_token".into(), old);
                                        } else if !types.contains(&"eom") {
                                            types.push("eom");
                                            c.insert("eom_token".into(), old);
                                        }
                                        eos = Some(Json::String(l.clone()));
                                        c.insert("eos_token".into(), Json::String(l.clone()));
                                    }
                                }
                            }
                            let v = is(&eos, l);
                            set_add(&mut add, "eos", v, true);
                        }
                    }
                    if !pair.is_empty() {
                        let start = usize::from(first.is_some() && sid(pair.first()) == first);
                        let stop = if last.is_some() && sid(pair.last()) == last {
                            pair.len() - 1
                        } else {
                            pair.len()
                        };
                        let mid: Vec<Json> = if start < stop {
                            pair[start..stop].to_vec()
                        } else {
                            Vec::new()
                        };
                        if !mid.is_empty() {
                            let seq = |v: &Json| {
                                v.pointer("/Sequence/id")
                                    .and_then(Json::as_str)
                                    .map(str::to_string)
                            };
                            let (a, b) = (seq(&mid[0]), seq(&mid[mid.len() - 1]));
                            if a.as_deref() == Some("A")
                                && b.as_deref() == Some("B")
                                && mid.len() > 2
                            {
                                let inner = &mid[1..mid.len() - 1];
                                let mut add_sep = false;
                                let is_sep = |e: &Option<String>| {
                                    e.as_deref().is_some_and(|e| is(&sep, e) || is(&eos, e))
                                };
                                if is_sep(&sid(inner.first())) && last.is_none() {
                                    add_sep = true;
                                }
                                if inner.len() == 2 && is_sep(&sid(inner.get(1))) {
                                    add_sep = true;
                                }
                                set_add(&mut add, "sep", add_sep, true);
                                if add_sep && !truthy(&sep) {
                                    if let Some(c) = cfg.as_mut() {
                                        c.insert(
                                            "sep_token".into(),
                                            eos.clone().unwrap_or(Json::Null),
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let mut chat_template: Option<String> = None;
    if let Some(c) = &cfg {
        let dir = folder.dir();
        if dir.join("additional_chat_templates").exists() {
            return Err(tok_err(
                &dir.join("additional_chat_templates"),
                "several chat templates are not converted",
            ));
        }
        let alt = if let Some(t) = folder.text("chat_template.jinja", MAX_SMALL_JSON)? {
            Some(Json::String(t))
        } else {
            folder
                .json("chat_template.json", MAX_SMALL_JSON)?
                .and_then(|j| j.get("chat_template").cloned())
        };
        match c.get("chat_template").cloned().or(alt) {
            None | Some(Json::Null) => {}
            Some(Json::String(s)) => chat_template = Some(s),
            Some(_) => {
                return Err(tok_err(
                    &dir.join("tokenizer_config.json"),
                    "a list of chat templates is not converted",
                ))
            }
        }
        for typ in &types {
            if let Some(v) = c.get(&format!("add_{typ}_token")).and_then(Json::as_bool) {
                set_add(&mut add, typ, v, false);
            }
            let Some(entry) = content(c.get(&format!("{typ}_token"))) else {
                continue;
            };
            let id = added
                .iter()
                .find(|a| a.content == entry)
                .map(|a| i64::from(a.id));
            set_id(&mut ids, typ, id)?;
        }
    }
    for typ in &types {
        let key = format!("{typ}_token_id");
        let id = folder
            .config
            .get(&key)
            .or_else(|| folder.config.get("text_config").and_then(|t| t.get(&key)));
        if let Some(id) = id.and_then(Json::as_i64) {
            set_id(&mut ids, typ, Some(id))?;
        }
    }
    let mut out: Vec<(String, Value)> = Vec::new();
    if !merges.is_empty() {
        out.push((
            "tokenizer.ggml.merges".into(),
            Value::Array(Array::String(merges)),
        ));
    } else if load_merges {
        return Err(tok_err(
            &path,
            "has no merges (llama.cpp's output would not tokenize)",
        ));
    }
    for (typ, id) in ids {
        let key = match typ.as_str() {
            "bos" => "bos_token_id",
            "eos" => "eos_token_id",
            "unk" => "unknown_token_id",
            "sep" => "seperator_token_id",
            "pad" => "padding_token_id",
            "mask" => "mask_token_id",
            "eot" => "eot_token_id",
            "eom" => "eom_token_id",
            _ => continue, // llama.cpp's writer has no key for `cls`
        };
        out.push((format!("tokenizer.ggml.{key}"), Value::U32(id)));
    }
    for (typ, v) in add {
        if matches!(typ.as_str(), "bos" | "eos" | "sep") {
            out.push((format!("tokenizer.ggml.add_{typ}_token"), Value::Bool(v)));
        }
    }
    if let Some(t) = chat_template {
        out.push(("tokenizer.chat_template".into(), Value::String(t)));
    }
    if let Some(v) = lowercase {
        out.push(("tokenizer.ggml.normalizer.lowercase".into(), Value::Bool(v)));
    }
    if let Some(Some(v)) = strip_accents {
        out.push((
            "tokenizer.ggml.normalizer.strip_accents".into(),
            Value::Bool(v),
        ));
    }
    Ok(out)
}
