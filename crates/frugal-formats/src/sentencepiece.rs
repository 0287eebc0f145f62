//! SentencePiece's `tokenizer.model`: the protobuf `ModelProto` of
//! `sentencepiece_model.proto`, read and written without a protobuf library.
//!
//! Read: the pieces (text, score, type), the trainer fields a converter consults (model type,
//! byte fallback, special ids) and the normalizer's flags; every other field is skipped by its
//! wire type. Every length is checked against what is left and against a cap
//! ([`MAX_PIECES`], [`MAX_PIECE_BYTES`]), so a corrupt or hostile file is refused with the
//! field and byte offset, never a panic or an unbounded allocation. What SentencePiece itself
//! refuses at load (an empty or repeated piece, no or two unknown pieces, byte pieces without
//! byte fallback) is refused here too, so a converter never accepts a file llama.cpp's cannot
//! read.
//!
//! Written: the same subset, enough for `sentencepiece` and `transformers` to load the model
//! and for llama.cpp's converter to read back the same pieces, scores and types.

use crate::error::ParseError;

/// The most pieces read (Gemma 3 has 262,144).
pub const MAX_PIECES: usize = 4 << 20;
/// The longest piece read, in bytes.
pub const MAX_PIECE_BYTES: usize = 64 << 10;
/// The largest `tokenizer.model` read.
pub const MAX_MODEL_BYTES: u64 = 256 << 20;

/// A piece's type (`SentencePiece.Type`); the numbers are also llama.cpp's token types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceType {
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

impl PieceType {
    fn from_i64(v: i64) -> Option<Self> {
        Some(match v {
            1 => PieceType::Normal,
            2 => PieceType::Unknown,
            3 => PieceType::Control,
            4 => PieceType::UserDefined,
            5 => PieceType::Unused,
            6 => PieceType::Byte,
            _ => return None,
        })
    }

    /// From a GGUF token type (the same numbers).
    pub fn from_token_type(t: i32) -> Option<Self> {
        Self::from_i64(t as i64)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub piece: String,
    pub score: f32,
    pub kind: PieceType,
}

/// `TrainerSpec.model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelType {
    Unigram = 1,
    Bpe = 2,
    Word = 3,
    Char = 4,
}

/// The `TrainerSpec` fields read and written (field numbers of `sentencepiece_model.proto`).
#[derive(Debug, Clone, PartialEq)]
pub struct Trainer {
    pub model_type: ModelType,
    pub vocab_size: i32,
    pub byte_fallback: bool,
    pub unk_id: i32,
    pub bos_id: i32,
    pub eos_id: i32,
    pub pad_id: i32,
}

impl Default for Trainer {
    /// The proto's defaults.
    fn default() -> Self {
        Trainer {
            model_type: ModelType::Unigram,
            vocab_size: 8000,
            byte_fallback: false,
            unk_id: 0,
            bos_id: 1,
            eos_id: 2,
            pad_id: -1,
        }
    }
}

/// The `NormalizerSpec` fields read and written.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalizer {
    pub name: String,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
}

impl Default for Normalizer {
    fn default() -> Self {
        Normalizer {
            name: String::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SpModel {
    pub pieces: Vec<Piece>,
    pub trainer: Trainer,
    pub normalizer: Normalizer,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf[0]` in the file.
    base: u64,
}

impl<'a> Reader<'a> {
    fn err(&self, field: &str, reason: impl Into<String>) -> ParseError {
        ParseError::new(field, self.base + self.pos as u64, reason)
    }

    fn varint(&mut self, field: &str) -> Result<u64, ParseError> {
        let mut v = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.err(field, "truncated varint"));
            };
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err(field, "varint longer than 10 bytes"))
    }

    fn take(&mut self, field: &str, n: u64) -> Result<Reader<'a>, ParseError> {
        let left = (self.buf.len() - self.pos) as u64;
        if n > left {
            return Err(self.err(field, format!("length {n} runs past the end ({left} left)")));
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(Reader {
            buf: &self.buf[start..self.pos],
            pos: 0,
            base: self.base + start as u64,
        })
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The next field's number and wire type.
    fn key(&mut self, field: &str) -> Result<(u64, u8), ParseError> {
        let k = self.varint(field)?;
        let (num, wire) = (k >> 3, (k & 7) as u8);
        if num == 0 {
            return Err(self.err(field, "field number 0"));
        }
        Ok((num, wire))
    }

    /// Skips a field of wire type `wire` (groups are refused: proto2 groups are not used here).
    fn skip(&mut self, field: &str, wire: u8) -> Result<(), ParseError> {
        match wire {
            0 => {
                self.varint(field)?;
            }
            1 => {
                self.take(field, 8)?;
            }
            2 => {
                let n = self.varint(field)?;
                self.take(field, n)?;
            }
            5 => {
                self.take(field, 4)?;
            }
            w => return Err(self.err(field, format!("wire type {w} is not read"))),
        }
        Ok(())
    }

    fn expect_wire(&self, field: &str, wire: u8, want: u8) -> Result<(), ParseError> {
        if wire != want {
            return Err(self.err(field, format!("wire type {wire}, expected {want}")));
        }
        Ok(())
    }

    fn len_delimited(&mut self, field: &str, wire: u8) -> Result<Reader<'a>, ParseError> {
        self.expect_wire(field, wire, 2)?;
        let n = self.varint(field)?;
        self.take(field, n)
    }

    fn int(&mut self, field: &str, wire: u8) -> Result<i64, ParseError> {
        self.expect_wire(field, wire, 0)?;
        // int32 and enums: the low 32 bits, sign-extended (negative ones take ten bytes).
        Ok(self.varint(field)? as u32 as i32 as i64)
    }
}

fn parse_piece(mut r: Reader, at: usize) -> Result<Piece, ParseError> {
    let field = format!("pieces[{at}]");
    let mut p = Piece {
        piece: String::new(),
        score: 0.0,
        kind: PieceType::Normal,
    };
    while !r.done() {
        let (num, wire) = r.key(&field)?;
        match num {
            1 => {
                let s = r.len_delimited(&format!("{field}.piece"), wire)?;
                if s.buf.len() > MAX_PIECE_BYTES {
                    return Err(s.err(
                        &format!("{field}.piece"),
                        format!("{} bytes, more than {MAX_PIECE_BYTES}", s.buf.len()),
                    ));
                }
                p.piece = std::str::from_utf8(s.buf)
                    .map_err(|_| s.err(&format!("{field}.piece"), "is not UTF-8"))?
                    .to_string();
            }
            2 => {
                r.expect_wire(&format!("{field}.score"), wire, 5)?;
                let b = r.take(&format!("{field}.score"), 4)?;
                p.score = f32::from_le_bytes([b.buf[0], b.buf[1], b.buf[2], b.buf[3]]);
            }
            3 => {
                let f = format!("{field}.type");
                let v = r.int(&f, wire)?;
                p.kind = PieceType::from_i64(v)
                    .ok_or_else(|| r.err(&f, format!("unknown piece type {v}")))?;
            }
            _ => r.skip(&field, wire)?,
        }
    }
    Ok(p)
}

fn parse_trainer(mut r: Reader) -> Result<Trainer, ParseError> {
    let mut t = Trainer::default();
    while !r.done() {
        let (num, wire) = r.key("trainer_spec")?;
        let f = |n: &str| format!("trainer_spec.{n}");
        match num {
            3 => {
                let v = r.int(&f("model_type"), wire)?;
                t.model_type = match v {
                    1 => ModelType::Unigram,
                    2 => ModelType::Bpe,
                    3 => ModelType::Word,
                    4 => ModelType::Char,
                    _ => return Err(r.err(&f("model_type"), format!("unknown model type {v}"))),
                };
            }
            4 => t.vocab_size = r.int(&f("vocab_size"), wire)? as i32,
            35 => t.byte_fallback = r.int(&f("byte_fallback"), wire)? != 0,
            40 => t.unk_id = r.int(&f("unk_id"), wire)? as i32,
            41 => t.bos_id = r.int(&f("bos_id"), wire)? as i32,
            42 => t.eos_id = r.int(&f("eos_id"), wire)? as i32,
            43 => t.pad_id = r.int(&f("pad_id"), wire)? as i32,
            _ => r.skip("trainer_spec", wire)?,
        }
    }
    Ok(t)
}

fn parse_normalizer(mut r: Reader) -> Result<Normalizer, ParseError> {
    let mut n = Normalizer::default();
    while !r.done() {
        let (num, wire) = r.key("normalizer_spec")?;
        let f = |s: &str| format!("normalizer_spec.{s}");
        match num {
            1 => {
                let s = r.len_delimited(&f("name"), wire)?;
                n.name = String::from_utf8_lossy(&s.buf[..s.buf.len().min(256)]).into_owned();
            }
            3 => n.add_dummy_prefix = r.int(&f("add_dummy_prefix"), wire)? != 0,
            4 => n.remove_extra_whitespaces = r.int(&f("remove_extra_whitespaces"), wire)? != 0,
            5 => n.escape_whitespaces = r.int(&f("escape_whitespaces"), wire)? != 0,
            _ => r.skip("normalizer_spec", wire)?,
        }
    }
    Ok(n)
}

/// Parses a `tokenizer.model` (see the module's documentation).
pub fn parse(bytes: &[u8]) -> Result<SpModel, ParseError> {
    let mut r = Reader {
        buf: bytes,
        pos: 0,
        base: 0,
    };
    let mut m = SpModel::default();
    while !r.done() {
        let (num, wire) = r.key("model")?;
        match num {
            1 => {
                if m.pieces.len() >= MAX_PIECES {
                    return Err(r.err("pieces", format!("more than {MAX_PIECES} pieces")));
                }
                let at = m.pieces.len();
                let sub = r.len_delimited(&format!("pieces[{at}]"), wire)?;
                m.pieces.push(parse_piece(sub, at)?);
            }
            2 => m.trainer = parse_trainer(r.len_delimited("trainer_spec", wire)?)?,
            3 => m.normalizer = parse_normalizer(r.len_delimited("normalizer_spec", wire)?)?,
            _ => r.skip("model", wire)?,
        }
    }
    m.validate()?;
    Ok(m)
}

impl SpModel {
    /// SentencePiece's own load-time checks (`ModelInterface::InitializePieces`).
    pub fn validate(&self) -> Result<(), ParseError> {
        let err = |i: usize, reason: String| ParseError::new(format!("pieces[{i}]"), 0, reason);
        if self.pieces.is_empty() {
            return Err(ParseError::new("pieces", 0, "no pieces"));
        }
        let mut seen = std::collections::HashSet::with_capacity(self.pieces.len());
        let mut unk = None;
        for (i, p) in self.pieces.iter().enumerate() {
            if p.piece.is_empty() {
                return Err(err(i, "the piece is empty".into()));
            }
            if !seen.insert(p.piece.as_str()) {
                return Err(err(i, format!("`{}` is already defined", p.piece)));
            }
            match p.kind {
                PieceType::Unknown => {
                    if let Some(u) = unk {
                        return Err(err(i, format!("a second unknown piece (the first is {u})")));
                    }
                    unk = Some(i);
                }
                PieceType::Byte => {
                    if !self.trainer.byte_fallback {
                        return Err(err(
                            i,
                            format!("byte piece `{}` without byte_fallback", p.piece),
                        ));
                    }
                    if byte_value(&p.piece).is_none() {
                        return Err(err(i, format!("byte piece `{}` is not <0xXX>", p.piece)));
                    }
                }
                _ => {}
            }
        }
        if unk.is_none() {
            return Err(ParseError::new("pieces", 0, "no unknown piece"));
        }
        Ok(())
    }

    /// The protobuf bytes of the model (pieces, then the trainer and normalizer fields kept).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &self.pieces {
            let mut b = Vec::with_capacity(p.piece.len() + 12);
            put_bytes(&mut b, 1, p.piece.as_bytes());
            put_key(&mut b, 2, 5);
            b.extend_from_slice(&p.score.to_le_bytes());
            if p.kind != PieceType::Normal {
                put_int(&mut b, 3, p.kind as i64);
            }
            put_bytes(&mut out, 1, &b);
        }
        let t = &self.trainer;
        let mut b = Vec::new();
        put_int(&mut b, 3, t.model_type as i64);
        put_int(&mut b, 4, t.vocab_size as i64);
        put_int(&mut b, 35, t.byte_fallback as i64);
        put_int(&mut b, 40, t.unk_id as i64);
        put_int(&mut b, 41, t.bos_id as i64);
        put_int(&mut b, 42, t.eos_id as i64);
        put_int(&mut b, 43, t.pad_id as i64);
        put_bytes(&mut out, 2, &b);
        let n = &self.normalizer;
        let mut b = Vec::new();
        put_bytes(&mut b, 1, n.name.as_bytes());
        put_int(&mut b, 3, n.add_dummy_prefix as i64);
        put_int(&mut b, 4, n.remove_extra_whitespaces as i64);
        put_int(&mut b, 5, n.escape_whitespaces as i64);
        put_bytes(&mut out, 3, &b);
        out
    }
}

/// The byte of a `<0xXX>` piece.
pub fn byte_value(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, num: u64, wire: u8) {
    put_varint(out, (num << 3) | wire as u64);
}

/// An int32/enum/bool field (negative values sign-extended to ten bytes, as protobuf does).
fn put_int(out: &mut Vec<u8>, num: u64, v: i64) {
    put_key(out, num, 0);
    put_varint(out, v as u64);
}

fn put_bytes(out: &mut Vec<u8>, num: u64, b: &[u8]) {
    put_key(out, num, 2);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> SpModel {
        let mut pieces = vec![
            Piece {
                piece: "<pad>".into(),
                score: -1000.0,
                kind: PieceType::Control,
            },
            Piece {
                piece: "<unk>".into(),
                score: 0.0,
                kind: PieceType::Unknown,
            },
            Piece {
                piece: "\n\n".into(),
                score: -1000.0,
                kind: PieceType::UserDefined,
            },
        ];
        for b in 0..=255u8 {
            pieces.push(Piece {
                piece: format!("<0x{b:02X}>"),
                score: 0.0,
                kind: PieceType::Byte,
            });
        }
        pieces.push(Piece {
            piece: "\u{2581}the".into(),
            score: -3.25,
            kind: PieceType::Normal,
        });
        SpModel {
            pieces,
            trainer: Trainer {
                model_type: ModelType::Bpe,
                vocab_size: 260,
                byte_fallback: true,
                unk_id: 1,
                bos_id: -1,
                eos_id: 0,
                pad_id: 0,
            },
            normalizer: Normalizer {
                name: "identity".into(),
                add_dummy_prefix: false,
                remove_extra_whitespaces: false,
                escape_whitespaces: true,
            },
        }
    }

    #[test]
    fn round_trip() {
        let m = model();
        let b = m.to_bytes();
        assert_eq!(parse(&b).unwrap(), m);
    }

    #[test]
    fn refuses_what_sentencepiece_refuses() {
        let mut m = model();
        m.pieces[2].piece = "\u{2581}the".into();
        assert!(parse(&m.to_bytes()).unwrap_err().reason.contains("already"));
        let mut m = model();
        m.pieces[1].kind = PieceType::Normal;
        assert!(parse(&m.to_bytes()).unwrap_err().reason.contains("unknown"));
        let mut m = model();
        m.trainer.byte_fallback = false;
        assert!(parse(&m.to_bytes()).unwrap_err().reason.contains("byte"));
        let mut m = model();
        m.pieces[2].piece.clear();
        assert!(parse(&m.to_bytes()).unwrap_err().reason.contains("empty"));
    }

    #[test]
    fn corrupt_bytes_are_refused_without_panic() {
        let b = model().to_bytes();
        for cut in 0..b.len() {
            let _ = parse(&b[..cut]);
        }
        let mut rng = crate::rng::SplitMix64(7);
        for _ in 0..2000 {
            let mut c = b.clone();
            for _ in 0..4 {
                let i = (rng.next_u64() as usize) % c.len();
                c[i] = rng.next_u64() as u8;
            }
            let _ = parse(&c);
        }
        // A length that claims more than the file holds.
        assert!(parse(&[0x0a, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }
}
