//! SentencePiece-style vocabularies as llama.cpp runs them (`tokenizer.ggml.model = "llama"`:
//! Gemma, Llama 2, Mistral, Phi-3): no merge list, only a score per piece. Reference:
//! llama.cpp's `llm_tokenizer_spm_session` and `llama_vocab::impl::tokenize` in
//! `src/llama-vocab.cpp`, reproduced step for step so that the ids equal `llama-tokenize`'s:
//!
//! 1. The user-defined pieces (token type 4; Gemma's `\n`, `\n\n`, runs of spaces, HTML tags)
//!    are cut out of the raw text first, longest first, each occurrence becoming its token.
//!    Control and unknown pieces are not (special tokens in the text are not parsed).
//! 2. Each remaining fragment gets a leading space when `add_space_prefix` says so and it
//!    follows a special piece or starts the text; spaces become `▁` (U+2581).
//! 3. The fragment is split into characters; the adjacent pair whose concatenation is a
//!    piece with the highest score is merged (ties: the leftmost), again and again.
//! 4. A final symbol that is not a piece (an unmerged character outside the vocabulary) is
//!    written as its UTF-8 bytes, each the `<0xXX>` byte piece.

use super::{bad, Built, Engine};
use crate::error::{Error, Result};
use frugal_formats::gguf::{Array, GgufFile, Value};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// GGUF token types (`tokenizer.ggml.token_type`), as llama.cpp numbers them.
const NORMAL: i32 = 1;
const USER_DEFINED: i32 = 4;
const BYTE: i32 = 6;

/// The longest vocabulary this reader accepts (Gemma 3 has 262,144 pieces).
const MAX_VOCAB: usize = 1 << 22;

/// A score-merging vocabulary read from GGUF metadata.
#[derive(Debug, Clone)]
pub struct Spm {
    pieces: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i32>,
    /// Piece text → id; where a text repeats, the last id (as llama.cpp's map fills).
    ids: HashMap<String, u32>,
    /// User-defined pieces, longest text first (cut out of the raw text before merging).
    user_defined: Vec<u32>,
    /// The `<0xXX>` piece of each byte (else the byte itself as a piece), if any.
    bytes: [Option<u32>; 256],
    /// `tokenizer.ggml.add_space_prefix` (llama.cpp's default for these vocabularies: true).
    add_space_prefix: bool,
}

/// A pair of adjacent symbols whose concatenation is a piece, in the merge queue.
#[derive(Debug, PartialEq)]
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    /// The concatenation's length in bytes when queued: a stale entry no longer matches.
    len: usize,
}

impl Eq for Bigram {}

impl Ord for Bigram {
    /// The highest score first; among equal scores the leftmost.
    fn cmp(&self, o: &Self) -> Ordering {
        self.score
            .total_cmp(&o.score)
            .then_with(|| o.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// A run of the fragment's bytes, linked to its neighbours (`usize::MAX`: none).
#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: usize,
    next: usize,
}

const NONE: usize = usize::MAX;

/// Builds the tokenizer of `f` (`tokenizer.ggml.model = "llama"`).
pub fn build(f: &GgufFile) -> Result<Built> {
    let h = &f.header;
    let pieces = match h.get("tokenizer.ggml.tokens") {
        Some(Value::Array(Array::String(t))) => t.clone(),
        _ => {
            return Err(bad(
                f,
                "tokenizer.ggml.tokens",
                "missing or not an array of strings",
            ))
        }
    };
    let n = pieces.len();
    if n == 0 || n > MAX_VOCAB {
        return Err(bad(
            f,
            "tokenizer.ggml.tokens",
            &format!("{n} pieces (1 to {MAX_VOCAB} accepted)"),
        ));
    }
    let scores = match h.get("tokenizer.ggml.scores") {
        Some(Value::Array(Array::F32(s))) if s.len() == n => s.clone(),
        None => vec![0.0; n],
        _ => {
            return Err(bad(
                f,
                "tokenizer.ggml.scores",
                &format!("not an array of {n} f32 values"),
            ))
        }
    };
    let types = match h.get("tokenizer.ggml.token_type") {
        Some(Value::Array(Array::I32(t))) if t.len() == n => t.clone(),
        None => vec![NORMAL; n],
        _ => {
            return Err(bad(
                f,
                "tokenizer.ggml.token_type",
                &format!("not an array of {n} i32 values"),
            ))
        }
    };
    let add_space_prefix = !matches!(
        h.get("tokenizer.ggml.add_space_prefix"),
        Some(Value::Bool(false))
    );
    let pre = h
        .get("tokenizer.ggml.pre")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    let spm = Spm::new(pieces, scores, types, add_space_prefix)?;
    Ok(Built {
        inner: Engine::Spm(Box::new(spm)),
        n_vocab: n,
        pre,
        add_bos_default: true,
    })
}

impl Spm {
    /// A vocabulary from its pieces, scores and token types (equal lengths).
    pub fn new(
        pieces: Vec<String>,
        scores: Vec<f32>,
        types: Vec<i32>,
        add_space_prefix: bool,
    ) -> Result<Spm> {
        let n = pieces.len();
        if scores.len() != n || types.len() != n || n > MAX_VOCAB {
            return Err(Error::Tokenizer(format!(
                "a vocabulary of {n} pieces needs as many scores and types ({}, {})",
                scores.len(),
                types.len()
            )));
        }
        let mut ids = HashMap::with_capacity(n);
        for (i, p) in pieces.iter().enumerate() {
            ids.insert(p.clone(), i as u32);
        }
        let mut user_defined: Vec<u32> = (0..n as u32)
            .filter(|&i| types[i as usize] == USER_DEFINED && !pieces[i as usize].is_empty())
            .collect();
        user_defined.sort_by_key(|&i| std::cmp::Reverse(pieces[i as usize].len()));
        let mut bytes = [None; 256];
        for (b, slot) in bytes.iter_mut().enumerate() {
            *slot = ids.get(&format!("<0x{b:02X}>")).copied().or_else(|| {
                std::str::from_utf8(&[b as u8])
                    .ok()
                    .and_then(|s| ids.get(s))
                    .copied()
            });
        }
        Ok(Spm {
            pieces,
            scores,
            types,
            ids,
            user_defined,
            bytes,
            add_space_prefix,
        })
    }

    /// Token ids of `text` (no BOS; see [`super::GgufTokenizer::encode`]).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let mut prev_special = true;
        for frag in self.partition(text) {
            match frag {
                Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text(s) => {
                    let mut t = String::with_capacity(s.len() + 3);
                    if self.add_space_prefix && prev_special {
                        t.push(' ');
                    }
                    t.push_str(s);
                    let t = t.replace(' ', "\u{2581}");
                    self.merge(&t, &mut out)?;
                    prev_special = false;
                }
            }
        }
        Ok(out)
    }

    /// The text cut at every occurrence of a user-defined piece, longest pieces first.
    fn partition<'t>(&self, text: &'t str) -> Vec<Fragment<'t>> {
        let mut frags = vec![Fragment::Text(text)];
        if text.is_empty() {
            return Vec::new();
        }
        for &id in &self.user_defined {
            let piece = self.pieces[id as usize].as_str();
            if !frags
                .iter()
                .any(|f| matches!(f, Fragment::Text(s) if s.contains(piece)))
            {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                let Fragment::Text(mut s) = f else {
                    next.push(f);
                    continue;
                };
                while let Some(at) = s.find(piece) {
                    if at > 0 {
                        next.push(Fragment::Text(&s[..at]));
                    }
                    next.push(Fragment::Token(id));
                    s = &s[at + piece.len()..];
                }
                if !s.is_empty() {
                    next.push(Fragment::Text(s));
                }
            }
            frags = next;
        }
        frags
    }

    /// The merges of one escaped fragment, its ids appended to `out`.
    fn merge(&self, t: &str, out: &mut Vec<u32>) -> Result<()> {
        let mut sym: Vec<Symbol> = Vec::with_capacity(t.len());
        for (start, c) in t.char_indices() {
            let i = sym.len();
            sym.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: if i == 0 { NONE } else { i - 1 },
                next: if start + c.len_utf8() == t.len() {
                    NONE
                } else {
                    i + 1
                },
            });
        }
        if sym.is_empty() {
            return Ok(());
        }
        let mut queue = BinaryHeap::new();
        let push = |queue: &mut BinaryHeap<Bigram>, sym: &[Symbol], l: usize, r: usize| {
            if l == NONE || r == NONE {
                return;
            }
            let (a, len) = (sym[l].start, sym[l].len + sym[r].len);
            if let Some(&id) = self.ids.get(&t[a..a + len]) {
                queue.push(Bigram {
                    score: self.scores[id as usize],
                    left: l,
                    right: r,
                    len,
                });
            }
        };
        for i in 1..sym.len() {
            push(&mut queue, &sym, i - 1, i);
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (sym[b.left], sym[b.right]);
            if l.len == 0 || r.len == 0 || l.len + r.len != b.len {
                continue;
            }
            sym[b.left].len += r.len;
            sym[b.right].len = 0;
            sym[b.left].next = r.next;
            if r.next != NONE {
                sym[r.next].prev = b.left;
            }
            push(&mut queue, &sym, l.prev, b.left);
            push(&mut queue, &sym, b.left, r.next);
        }
        let mut i = 0;
        while i != NONE {
            let s = sym[i];
            let text = &t[s.start..s.start + s.len];
            match self.ids.get(text) {
                Some(&id) => out.push(id),
                None => {
                    for &byte in text.as_bytes() {
                        out.push(self.bytes[byte as usize].ok_or_else(|| {
                            Error::Tokenizer(format!(
                                "byte 0x{byte:02X} of {text:?} has no <0x{byte:02X}> piece"
                            ))
                        })?);
                    }
                }
            }
            i = s.next;
        }
        Ok(())
    }

    /// The text of `ids`: pieces with `▁` as spaces, byte pieces as their bytes, control,
    /// unknown and unused pieces left out (as llama.cpp's detokenizer without specials).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut bytes = Vec::new();
        for &id in ids {
            let i = id as usize;
            let piece = self.pieces.get(i).ok_or_else(|| {
                Error::Tokenizer(format!(
                    "token {id} is outside the vocabulary of {}",
                    self.pieces.len()
                ))
            })?;
            match self.types[i] {
                NORMAL => bytes.extend_from_slice(piece.replace('\u{2581}', " ").as_bytes()),
                USER_DEFINED => bytes.extend_from_slice(piece.as_bytes()),
                BYTE => {
                    let hex = piece
                        .strip_prefix("<0x")
                        .and_then(|h| h.strip_suffix('>'))
                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                    bytes.push(hex.ok_or_else(|| {
                        Error::Tokenizer(format!("byte piece {id} is {piece:?}, not <0xXX>"))
                    })?);
                }
                _ => {}
            }
        }
        let mut s = String::from_utf8_lossy(&bytes).into_owned();
        if self.add_space_prefix && s.starts_with(' ') {
            s.remove(0);
        }
        Ok(s)
    }
}

/// A piece of the raw text: still to be merged, or a user-defined piece's id.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fragment<'t> {
    Text(&'t str),
    Token(u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(pieces: &[(&str, f32, i32)], prefix: bool) -> Spm {
        let mut p: Vec<String> = pieces.iter().map(|x| x.0.to_string()).collect();
        let mut s: Vec<f32> = pieces.iter().map(|x| x.1).collect();
        let mut t: Vec<i32> = pieces.iter().map(|x| x.2).collect();
        for b in 0..=255u8 {
            p.push(format!("<0x{b:02X}>"));
            s.push(0.0);
            t.push(BYTE);
        }
        Spm::new(p, s, t, prefix).unwrap()
    }

    #[test]
    fn merges_by_score_and_falls_back_to_bytes() {
        // "▁ab" can form by ▁a+b or ▁+ab: the higher-scored first merge decides.
        let v = vocab(
            &[
                ("▁", -1.0, NORMAL),
                ("a", -1.0, NORMAL),
                ("b", -1.0, NORMAL),
                ("▁a", -3.0, NORMAL),
                ("ab", -2.0, NORMAL),
                ("▁ab", -5.0, NORMAL),
                ("\n", 0.0, USER_DEFINED),
            ],
            true,
        );
        // ab (−2) merges before ▁a (−3); then ▁ + ab → ▁ab.
        assert_eq!(v.encode("ab").unwrap(), vec![5]);
        // "é" is not a piece: its two UTF-8 bytes.
        let e = v.encode("aé").unwrap();
        assert_eq!(e, vec![3, 7 + 0xC3, 7 + 0xA9]);
        // The user-defined newline is cut out first; the text after it gets the space prefix.
        assert_eq!(v.encode("a\nb").unwrap(), vec![3, 6, 0, 2]);
        // Decoding keeps the prefix space after a user-defined piece (as llama.cpp's).
        assert_eq!(v.decode(&v.encode("ab a\nb").unwrap()).unwrap(), "ab a\n b");
        assert_eq!(v.decode(&e).unwrap(), "aé");
        // Equal scores: the leftmost pair merges first.
        let w = vocab(
            &[
                ("x", 0.0, NORMAL),
                ("xx", -1.0, NORMAL),
                ("xxx", -0.5, NORMAL),
            ],
            false,
        );
        // xx at 0 (leftmost of two equal pairs), then xx+x → xxx.
        assert_eq!(w.encode("xxx").unwrap(), vec![2]);
        // xxxx: xx at 0, then xxx (−0.5) beats the stale xx at 2; the last x stays.
        assert_eq!(w.encode("xxxx").unwrap(), vec![2, 0]);
        assert!(v.decode(&[9999]).is_err());
    }
}
