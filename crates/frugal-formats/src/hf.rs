//! A Hugging Face checkpoint folder: `config.json`, the weights in one `model.safetensors` or in
//! shards named by `model.safetensors.index.json`, and the tokenizer and model-card files beside
//! them. [`HfFolder::open`] checks everything cheap before any tensor is read: every shard the
//! index names exists and parses, each holds exactly the tensors the index assigns to it, no
//! tensor appears twice. Tensors are listed in the order llama.cpp's `convert_hf_to_gguf.py`
//! visits them (shards in name order, each shard's tensors in name order), and each is read from
//! its memory-mapped shard and released after use, so a conversion streams one tensor at a time.
//!
//! `config.json` stays an untyped JSON object ([`HfFolder::config`]): its keys differ per
//! architecture and converters look each figure up under several alternative names, as
//! llama.cpp's `find_hparam` does; the architecture code types what it reads.

use crate::error::{Error, Result};
use crate::guard;
use crate::safetensors::{SafetensorsFile, StTensorInfo};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The most read of `config.json`, `tokenizer_config.json` and other small JSON files.
pub const MAX_SMALL_JSON: u64 = 16 << 20;
/// The most read of `tokenizer.json` (Gemma 3's 262k-entry vocabulary is 33 MB).
pub const MAX_TOKENIZER_JSON: u64 = 256 << 20;
/// The most read of `model.safetensors.index.json`.
pub const MAX_INDEX_JSON: u64 = 64 << 20;
/// The most shards accepted.
pub const MAX_SHARDS: usize = 4096;

/// The weight index's name.
pub const INDEX_NAME: &str = "model.safetensors.index.json";

/// One tensor of the checkpoint and the shard that holds it.
#[derive(Debug, Clone)]
pub struct HfTensor {
    pub shard: usize,
    pub info: StTensorInfo,
}

impl HfTensor {
    pub fn name(&self) -> &str {
        &self.info.name
    }
}

/// An opened Hugging Face checkpoint folder.
pub struct HfFolder {
    dir: PathBuf,
    /// `config.json` as parsed (an object).
    pub config: serde_json::Map<String, serde_json::Value>,
    shards: Vec<SafetensorsFile>,
    /// Every tensor, in llama.cpp's visiting order.
    pub tensors: Vec<HfTensor>,
}

/// Whether `path` is a folder holding a `config.json` (how commands tell a checkpoint folder
/// from a model file).
pub fn is_hf_folder(path: &Path) -> bool {
    path.is_dir() && path.join("config.json").is_file()
}

fn invalid(path: &Path, reason: impl Into<String>) -> Error {
    Error::InvalidInput {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads a small JSON file of the folder, or `None` when it is absent.
pub fn read_json(path: &Path, limit: u64) -> Result<Option<serde_json::Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = guard::read_text_capped(path, "JSON file", limit)?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| invalid(path, format!("is not valid JSON ({e})")))
}

impl HfFolder {
    /// Opens and checks the folder (see the module's documentation).
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(invalid(dir, "is not a folder"));
        }
        let config_path = dir.join("config.json");
        let config = match read_json(&config_path, MAX_SMALL_JSON)? {
            Some(serde_json::Value::Object(m)) => m,
            Some(_) => return Err(invalid(&config_path, "is not a JSON object")),
            None => {
                return Err(invalid(
                    &config_path,
                    "is missing (a Hugging Face checkpoint folder has one)",
                ))
            }
        };
        let index_path = dir.join(INDEX_NAME);
        let index = read_json(&index_path, MAX_INDEX_JSON)?;
        let (part_names, weight_map) = match index {
            Some(v) => {
                let map = v
                    .get("weight_map")
                    .and_then(|m| m.as_object())
                    .ok_or_else(|| invalid(&index_path, "has no `weight_map` object"))?;
                let mut wm: HashMap<String, String> = HashMap::new();
                for (k, v) in map {
                    let file = v.as_str().ok_or_else(|| {
                        invalid(&index_path, format!("weight_map[`{k}`] is not a file name"))
                    })?;
                    if file.contains('/') || file.contains('\\') || file.starts_with('.') {
                        return Err(invalid(
                            &index_path,
                            format!("weight_map[`{k}`] = `{file}` is not a file of this folder"),
                        ));
                    }
                    wm.insert(k.clone(), file.to_string());
                }
                let mut parts: Vec<String> = wm.values().cloned().collect();
                parts.sort();
                parts.dedup();
                (parts, Some(wm))
            }
            None => (Self::part_names(dir)?, None),
        };
        if part_names.is_empty() {
            return Err(invalid(
                dir,
                "holds no model.safetensors (nor shards model-*.safetensors); \
                 PyTorch .bin checkpoints are not read",
            ));
        }
        if part_names.len() > MAX_SHARDS {
            return Err(invalid(
                dir,
                format!("names {} shards (limit {MAX_SHARDS})", part_names.len()),
            ));
        }
        let mut shards = Vec::with_capacity(part_names.len());
        for name in &part_names {
            let p = dir.join(name);
            if !p.exists() {
                return Err(invalid(
                    &p,
                    format!("is missing (named by {INDEX_NAME}'s weight_map)"),
                ));
            }
            shards.push(SafetensorsFile::open(&p)?);
        }
        let mut tensors: Vec<HfTensor> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, f) in shards.iter().enumerate() {
            let mut infos = f.header.tensors.clone();
            infos.sort_by(|a, b| a.name.cmp(&b.name));
            for info in infos {
                if let Some(&j) = seen.get(&info.name) {
                    return Err(Error::InvalidTensor {
                        path: f.path().to_path_buf(),
                        tensor: info.name.clone(),
                        reason: format!("is also in {}", shards[j].path().display()),
                    });
                }
                if let Some(wm) = &weight_map {
                    match wm.get(&info.name) {
                        Some(file) if *file == part_names[i] => {}
                        Some(file) => {
                            return Err(Error::InvalidTensor {
                                path: f.path().to_path_buf(),
                                tensor: info.name.clone(),
                                reason: format!("{INDEX_NAME} places it in {file}"),
                            })
                        }
                        None => {
                            return Err(Error::InvalidTensor {
                                path: f.path().to_path_buf(),
                                tensor: info.name.clone(),
                                reason: format!("is not in {INDEX_NAME}'s weight_map"),
                            })
                        }
                    }
                }
                seen.insert(info.name.clone(), i);
                tensors.push(HfTensor { shard: i, info });
            }
        }
        if let Some(wm) = &weight_map {
            let mut missing: Vec<&String> = wm.keys().filter(|k| !seen.contains_key(*k)).collect();
            if !missing.is_empty() {
                missing.sort();
                let file = &wm[missing[0]];
                return Err(Error::InvalidTensor {
                    path: dir.join(file),
                    tensor: missing[0].clone(),
                    reason: format!(
                        "is named by {INDEX_NAME} but not in the shard ({} such tensors)",
                        missing.len()
                    ),
                });
            }
        }
        Ok(HfFolder {
            dir: dir.to_path_buf(),
            config,
            shards,
            tensors,
        })
    }

    /// `model.safetensors`, or the shards `model-*.safetensors`, sorted (llama.cpp's
    /// `get_model_part_names` without an index).
    fn part_names(dir: &Path) -> Result<Vec<String>> {
        let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, "listing", e))?;
        let mut names = Vec::new();
        for e in rd {
            let e = e.map_err(|e| Error::io(dir, "listing", e))?;
            if let Some(n) = e.file_name().to_str() {
                if n.starts_with("model") && n.ends_with(".safetensors") {
                    names.push(n.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The shard files, in order.
    pub fn shard_paths(&self) -> Vec<&Path> {
        self.shards.iter().map(|s| s.path()).collect()
    }

    /// The raw (little-endian) bytes of tensor `t`.
    pub fn tensor_data(&self, t: &HfTensor) -> &[u8] {
        self.shards[t.shard].tensor_data(&t.info)
    }

    /// Tensor `t`'s bytes as a handle sharing its shard's mapping.
    pub fn tensor_mapped(&self, t: &HfTensor) -> crate::gguf::MappedBytes {
        self.shards[t.shard].tensor_mapped(&t.info)
    }

    /// Drops the pages of bytes `[start, start + len)` of tensor `t` from the resident set (a
    /// hint; see `GgufFile::release`): streaming a tensor a slice at a time keeps memory near
    /// one slice.
    pub fn release(&self, t: &HfTensor, start: u64, len: u64) {
        self.shards[t.shard].release_range(&t.info, start, len);
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&HfTensor> {
        self.tensors.iter().find(|t| t.info.name == name)
    }

    /// A JSON file of the folder (`tokenizer.json`, `tokenizer_config.json`, …), `None` when
    /// absent.
    pub fn json(&self, name: &str, limit: u64) -> Result<Option<serde_json::Value>> {
        read_json(&self.dir.join(name), limit)
    }

    /// A text file of the folder, `None` when absent.
    pub fn text(&self, name: &str, limit: u64) -> Result<Option<String>> {
        let p = self.dir.join(name);
        if !p.exists() {
            return Ok(None);
        }
        guard::read_text_capped(&p, "text file", limit).map(Some)
    }

    /// A file of the folder as bytes (`None` when absent), at most `limit` bytes.
    pub fn bytes(&self, name: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        let p = self.dir.join(name);
        if !p.exists() {
            return Ok(None);
        }
        guard::read_capped(&p, "file", limit).map(Some)
    }

    /// Every file the folder's reading depends on (for refusing outputs over inputs).
    pub fn input_paths(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.shards.iter().map(|s| s.path().to_path_buf()).collect();
        for n in [
            "config.json",
            INDEX_NAME,
            "tokenizer.json",
            "tokenizer_config.json",
            "tokenizer.model",
            "added_tokens.json",
            "special_tokens_map.json",
            "generation_config.json",
            "modules.json",
            "README.md",
        ] {
            let p = self.dir.join(n);
            if p.exists() {
                v.push(p);
            }
        }
        v
    }
}
