//! The Brown corpus (Francis & Kučera, 1961/1979) in its tagged form: 500 files named `cXNN`,
//! where the letter X gives one of 15 genres, each file a sequence of sentences of `word/tag`
//! tokens. We turn them into plain text for language-model evaluation and into labelled
//! sentences for encoder evaluation.

use crate::error::{Error, ParseError, Result};
use std::path::Path;

/// The 15 genres, by the letter in the file name (`ca01` is press: reportage).
pub const GENRES: [(char, &str); 15] = [
    ('a', "press: reportage"),
    ('b', "press: editorial"),
    ('c', "press: reviews"),
    ('d', "religion"),
    ('e', "skill and hobbies"),
    ('f', "popular lore"),
    ('g', "belles-lettres"),
    ('h', "miscellaneous: government & house organs"),
    ('j', "learned"),
    ('k', "fiction: general"),
    ('l', "fiction: mystery"),
    ('m', "fiction: science"),
    ('n', "fiction: adventure"),
    ('p', "fiction: romance"),
    ('r', "humor"),
];

/// Largest corpus file accepted (the biggest real one is about 40 KB).
pub const MAX_FILE_LEN: u64 = 16 << 20;

/// One corpus file, detagged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrownDoc {
    /// File id, e.g. `cj01`.
    pub id: String,
    /// Index into [`GENRES`].
    pub genre: usize,
    /// Sentences as plain text.
    pub sentences: Vec<String>,
}

impl BrownDoc {
    /// The document as plain text: one sentence per line.
    pub fn text(&self) -> String {
        let mut s = self.sentences.join("\n");
        s.push('\n');
        s
    }
}

/// The genre index of a file id such as `cj01`.
pub fn genre_of(id: &str) -> Option<usize> {
    let mut ch = id.chars();
    if ch.next() != Some('c') {
        return None;
    }
    let g = ch.next()?;
    let digits: String = ch.collect();
    if digits.len() != 2 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    GENRES.iter().position(|&(c, _)| c == g)
}

/// Detags one file's text: every non-blank line is a sentence of `word/tag` tokens.
pub fn parse_tagged(text: &str) -> Result<Vec<String>, ParseError> {
    let mut sentences = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut words = Vec::new();
        for tok in line.split_whitespace() {
            let (word, tag) = tok.rsplit_once('/').ok_or_else(|| {
                ParseError::new(
                    format!("line {}", i + 1),
                    0,
                    format!("token {tok:?} has no /tag"),
                )
            })?;
            if word.is_empty() || tag.is_empty() {
                return Err(ParseError::new(
                    format!("line {}", i + 1),
                    0,
                    format!("token {tok:?} has an empty word or tag"),
                ));
            }
            words.push(word);
        }
        if !words.is_empty() {
            sentences.push(detokenize(&words));
        }
    }
    Ok(sentences)
}

/// Joins Brown tokens into ordinary text: `` and '' become double quotes, and punctuation
/// attaches to its neighbour (`word ,` → `word,`).
pub fn detokenize(words: &[&str]) -> String {
    let mut out = String::new();
    let mut glue_next = false;
    for &w in words {
        let (w, attach_left, attach_right) = match w {
            "``" => ("\"", false, true),
            "''" => ("\"", true, false),
            "(" | "[" => (w, false, true),
            "." | "," | ";" | ":" | "?" | "!" | ")" | "]" | "'s" | "'" | "n't" | "'re" | "'ll"
            | "'d" | "'ve" | "'m" => (w, true, false),
            _ => (w, false, false),
        };
        if !out.is_empty() && !attach_left && !glue_next {
            out.push(' ');
        }
        out.push_str(w);
        glue_next = attach_right;
    }
    out
}

/// Reads one corpus file, e.g. `…/brown/cj01`.
pub fn read_brown_file(path: &Path) -> Result<BrownDoc> {
    let id = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let genre = genre_of(&id).ok_or_else(|| {
        Error::malformed(
            path,
            "Brown corpus",
            ParseError::new(
                "file name",
                0,
                "expected a name like `cj01` (c, genre letter, two digits)",
            ),
        )
    })?;
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, "reading Brown corpus file", e))?
        .len();
    if len > MAX_FILE_LEN {
        return Err(Error::malformed(
            path,
            "Brown corpus",
            ParseError::new(
                "file",
                0,
                format!("{len} bytes exceeds the {MAX_FILE_LEN}-byte limit"),
            ),
        ));
    }
    let bytes = crate::guard::read_capped(path, "Brown corpus file", MAX_FILE_LEN)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::malformed(
            path,
            "Brown corpus",
            ParseError::new(
                "text",
                e.utf8_error().valid_up_to() as u64,
                "not valid UTF-8",
            ),
        )
    })?;
    let sentences = parse_tagged(&text).map_err(|e| Error::malformed(path, "Brown corpus", e))?;
    Ok(BrownDoc {
        id,
        genre,
        sentences,
    })
}

/// Reads every corpus file (`cXNN`) in `dir`, sorted by id.
pub fn read_brown_dir(dir: &Path) -> Result<Vec<BrownDoc>> {
    read_dir_ids(dir)?
        .iter()
        .map(|id| read_brown_file(&dir.join(id)))
        .collect()
}

/// Expands a file selection such as `cj01-cj12`, `ca01,cb02` or `cj` (the whole genre) into ids,
/// checked against the files present in `dir`.
pub fn select_ids(dir: &Path, selection: &str) -> Result<Vec<String>> {
    let present: Vec<String> = read_dir_ids(dir)?;
    if selection == MIX {
        return Ok(mix_ids(&present));
    }
    let bad = |reason: String| {
        Error::malformed(
            Path::new(selection),
            "Brown selection",
            ParseError::new("selection", 0, reason),
        )
    };
    let mut out = Vec::new();
    for part in selection
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        if let Some((a, b)) = part.split_once('-') {
            if genre_of(a).is_none() || genre_of(b).is_none() || a > b {
                return Err(bad(format!("`{part}` is not a range like cj01-cj12")));
            }
            out.extend(
                present
                    .iter()
                    .filter(|id| id.as_str() >= a && id.as_str() <= b)
                    .cloned(),
            );
        } else if part.len() == 2 && genre_of(&format!("{part}01")).is_some() {
            out.extend(present.iter().filter(|id| id.starts_with(part)).cloned());
        } else if present.iter().any(|id| id == part) {
            out.push(part.to_string());
        } else {
            return Err(bad(format!("`{part}` names no file in {}", dir.display())));
        }
    }
    if out.is_empty() {
        return Err(bad("selects no file".into()));
    }
    Ok(out)
}

fn read_dir_ids(dir: &Path) -> Result<Vec<String>> {
    let mut ids: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, "listing Brown corpus", e))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| genre_of(n).is_some())
        .collect();
    ids.sort();
    Ok(ids)
}

/// The plain text of the selected files, one sentence per line, files separated by a blank line.
/// The multi-genre calibration text's selection name: the last two files of each of the 15
/// genres (30 files; the first files of a genre are the ones evaluations default to, e.g.
/// cj01–cj12), their sentences interleaved one file at a time ([`selection_text`]) so that any
/// prefix of the text — a calibration budget takes the first tokens — holds every genre in
/// about equal parts. An importance matrix measured on one genre fits that genre; this one
/// fits none in particular.
pub const MIX: &str = "mix";

fn mix_ids(present: &[String]) -> Vec<String> {
    GENRES
        .iter()
        .flat_map(|&(g, _)| {
            let of: Vec<&String> = present
                .iter()
                .filter(|id| id.as_bytes().get(1) == Some(&(g as u8)))
                .collect();
            of.into_iter()
                .rev()
                .take(2)
                .rev()
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The text of a selection: its files' text in order, or for [`MIX`] one sentence from each
/// file in turn (round robin until every file is spent), one sentence a line.
pub fn selection_text(dir: &Path, selection: &str) -> Result<(Vec<String>, String)> {
    let ids = select_ids(dir, selection)?;
    if selection != MIX {
        let text = plain_text(dir, &ids)?;
        return Ok((ids, text));
    }
    let docs = ids
        .iter()
        .map(|id| read_brown_file(&dir.join(id)))
        .collect::<Result<Vec<_>>>()?;
    let longest = docs.iter().map(|d| d.sentences.len()).max().unwrap_or(0);
    let mut text = String::new();
    for k in 0..longest {
        for d in &docs {
            if let Some(s) = d.sentences.get(k) {
                text.push_str(s);
                text.push('\n');
            }
        }
    }
    Ok((ids, text))
}

pub fn plain_text(dir: &Path, ids: &[String]) -> Result<String> {
    let docs = ids
        .iter()
        .map(|id| read_brown_file(&dir.join(id)))
        .collect::<Result<Vec<_>>>()?;
    Ok(docs
        .iter()
        .map(BrownDoc::text)
        .collect::<Vec<_>>()
        .join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_takes_each_genres_last_two_files_and_interleaves_their_sentences() {
        let dir = tempfile::tempdir().unwrap();
        for (id, words) in [
            ("ca01", "A1/nn ./."),
            ("ca02", "A2/nn ./.\n\n\tA2b/nn ./."),
            ("ca03", "A3/nn ./."),
            ("cr01", "R1/nn ./.\n\n\tR1b/nn ./.\n\n\tR1c/nn ./."),
        ] {
            std::fs::write(dir.path().join(id), format!("\n\n\t{words}\n")).unwrap();
        }
        let (ids, text) = selection_text(dir.path(), MIX).unwrap();
        assert_eq!(ids, ["ca02", "ca03", "cr01"]);
        assert_eq!(text, "A2.\nA3.\nR1.\nA2b.\nR1b.\nR1c.\n");
        let (ids, text) = selection_text(dir.path(), "ca01-ca02").unwrap();
        assert_eq!(ids, ["ca01", "ca02"]);
        assert_eq!(text, "A1.\n\nA2.\nA2b.\n");
    }

    #[test]
    fn detags_and_detokenizes() {
        let text = "\n\n\tThe/at Fulton/np-tl said/vbd ``/`` no/at evidence/nn ''/'' ,/, that/cs it's/pps+bez done/vbn ./.\n\n\tHe/pps left/vbd ./.\n";
        let s = parse_tagged(text).unwrap();
        assert_eq!(
            s,
            vec![
                "The Fulton said \"no evidence\", that it's done.",
                "He left."
            ]
        );
    }

    #[test]
    fn genres_from_file_names() {
        assert_eq!(genre_of("ca01"), Some(0));
        assert_eq!(genre_of("cj12").map(|g| GENRES[g].1), Some("learned"));
        assert_eq!(genre_of("cr09"), Some(14));
        assert_eq!(genre_of("ci01"), None);
        assert_eq!(genre_of("README"), None);
        assert_eq!(genre_of("ca1"), None);
    }

    #[test]
    fn rejects_untagged_tokens() {
        let err = parse_tagged("ok/at\nbroken token/nn").unwrap_err();
        assert_eq!(err.field, "line 2");
    }
}
