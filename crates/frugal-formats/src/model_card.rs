//! The YAML front matter of a Hugging Face model card (`README.md` between two `---` lines), as
//! llama.cpp's converter reads it (`gguf-py`'s `Metadata.load_model_card`, which hands it to
//! PyYAML's `safe_load`, after two fixes of its own: `- no` is quoted, tabs become two spaces).
//!
//! Model cards use a small part of YAML: a top-level mapping of keys to plain or quoted scalars,
//! flow lists (`[a, b]`), block lists (`- item`), nested mappings and block scalars (`|`, `>`).
//! That part is parsed here, with PyYAML's (YAML 1.1) typing of plain scalars: `~`/`null` are
//! null, `yes`/`no`/`on`/`off`/`true`/`false` booleans, decimal integers and floats numbers.
//! Anything else (anchors, aliases, tags, multi-line plain scalars, flow mappings with content)
//! is refused with the line named, rather than read differently from PyYAML.

/// The most lines of front matter read.
pub const MAX_LINES: usize = 100_000;
/// The deepest nesting accepted.
pub const MAX_DEPTH: usize = 32;

/// A YAML value of the supported subset.
#[derive(Debug, Clone, PartialEq)]
pub enum Yaml {
    Null,
    Bool(bool),
    /// An integer or float, as written.
    Number(String),
    Str(String),
    List(Vec<Yaml>),
    Map(Vec<(String, Yaml)>),
}

impl Yaml {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Yaml::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Yaml> {
        match self {
            Yaml::Map(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// A front-matter parse error: the 1-based line of `README.md` and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardError {
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for CardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// The front matter of `readme` as a mapping; `Ok(None)` when the card has none (no `---` on
/// its first line), as llama.cpp treats it. A front matter that is not a mapping is `None`
/// too (llama.cpp logs an error and goes on without it).
pub fn front_matter(readme: &str) -> Result<Option<Vec<(String, Yaml)>>, CardError> {
    let mut lines = readme.lines();
    if lines.next() != Some("---") {
        return Ok(None);
    }
    let mut body: Vec<String> = Vec::new();
    for l in lines {
        if l == "---" {
            break;
        }
        if body.len() >= MAX_LINES {
            return Err(CardError {
                line: body.len() + 2,
                reason: format!("front matter longer than {MAX_LINES} lines"),
            });
        }
        body.push(l.to_string());
    }
    // llama.cpp's two fixes, applied to the joined text as it does.
    let mut text = body.join("\n") + "\n";
    text = text.replace("- no\n", "- \"no\"\n").replace('\t', "  ");
    let lines: Vec<Line> = text
        .lines()
        .enumerate()
        .filter_map(|(i, l)| Line::new(i + 2, l))
        .collect();
    if lines.is_empty() {
        return Ok(None);
    }
    let mut p = Parser { lines, at: 0 };
    let indent = p.lines[0].indent;
    let v = p.block(indent, 0)?;
    if p.at < p.lines.len() {
        return Err(p.err("unexpected indentation"));
    }
    Ok(match v {
        Yaml::Map(m) => Some(m),
        _ => None,
    })
}

struct Line {
    no: usize,
    indent: usize,
    text: String,
}

impl Line {
    /// `None` for blank and comment lines.
    fn new(no: usize, raw: &str) -> Option<Line> {
        let t = raw.trim_end();
        let body = t.trim_start_matches(' ');
        if body.is_empty() || body.starts_with('#') {
            return None;
        }
        Some(Line {
            no,
            indent: t.len() - body.len(),
            text: body.to_string(),
        })
    }
}

struct Parser {
    lines: Vec<Line>,
    at: usize,
}

impl Parser {
    fn err(&self, reason: impl Into<String>) -> CardError {
        CardError {
            line: self.lines.get(self.at).map_or(0, |l| l.no),
            reason: reason.into(),
        }
    }

    /// The block (mapping or list) whose lines start at `indent`.
    fn block(&mut self, indent: usize, depth: usize) -> Result<Yaml, CardError> {
        if depth > MAX_DEPTH {
            return Err(self.err(format!("nested deeper than {MAX_DEPTH}")));
        }
        let l = &self.lines[self.at];
        if is_item(&l.text) {
            self.list(indent, depth)
        } else {
            self.map(indent, depth)
        }
    }

    fn list(&mut self, indent: usize, depth: usize) -> Result<Yaml, CardError> {
        let mut items = Vec::new();
        while let Some(l) = self.lines.get(self.at) {
            if l.indent != indent || !is_item(&l.text) {
                break;
            }
            let rest = l.text[1..].trim_start_matches(' ').to_string();
            let inner = indent + (l.text.len() - rest.len());
            if rest.is_empty() {
                self.at += 1;
                items.push(self.nested(indent, depth)?);
            } else if split_key(&rest).is_some() && !rest.starts_with(['"', '\'', '[', '{']) {
                // A mapping that starts on the item's line: re-read it at its own indentation.
                self.lines[self.at].indent = inner;
                self.lines[self.at].text = rest;
                items.push(self.map(inner, depth + 1)?);
            } else {
                let no = l.no;
                self.at += 1;
                items.push(self.inline(&rest, no, inner, depth)?);
            }
        }
        Ok(Yaml::List(items))
    }

    fn map(&mut self, indent: usize, depth: usize) -> Result<Yaml, CardError> {
        let mut entries: Vec<(String, Yaml)> = Vec::new();
        while let Some(l) = self.lines.get(self.at) {
            if l.indent != indent || is_item(&l.text) {
                if l.indent > indent {
                    return Err(self.err("unexpected indentation"));
                }
                break;
            }
            let (key, rest) = split_key(&l.text).ok_or_else(|| {
                self.err("expected `key: value` (multi-line plain scalars are not read)")
            })?;
            let key = unquote_key(&key).map_err(|r| self.err(r))?;
            let no = l.no;
            self.at += 1;
            let v = if rest.is_empty() {
                // A nested block, or a list at the key's own indentation (`key:\n- a`).
                match self.lines.get(self.at) {
                    Some(n) if n.indent == indent && is_item(&n.text) => {
                        self.list(indent, depth + 1)?
                    }
                    _ => self.nested(indent, depth)?,
                }
            } else {
                self.inline(&rest, no, indent, depth)?
            };
            // PyYAML keeps the last of repeated keys.
            if let Some(e) = entries.iter_mut().find(|(k, _)| *k == key) {
                e.1 = v;
            } else {
                entries.push((key, v));
            }
        }
        Ok(Yaml::Map(entries))
    }

    /// The block under a line ending in `:` or `-`, or null when nothing is indented deeper.
    fn nested(&mut self, indent: usize, depth: usize) -> Result<Yaml, CardError> {
        match self.lines.get(self.at) {
            Some(n) if n.indent > indent => {
                let i = n.indent;
                self.block(i, depth + 1)
            }
            _ => Ok(Yaml::Null),
        }
    }

    /// A value written on its key's (or item's) line; block scalars take the lines below.
    fn inline(
        &mut self,
        s: &str,
        no: usize,
        indent: usize,
        _depth: usize,
    ) -> Result<Yaml, CardError> {
        let bad = |reason: String| CardError { line: no, reason };
        let s = strip_comment(s);
        if let Some(style) = s.strip_prefix(['|', '>']) {
            let folded = s.starts_with('>');
            let keep_last = !style.contains('-');
            if !style.is_empty() && style != "-" && style != "+" {
                return Err(bad(format!("block scalar header `{s}` is not read")));
            }
            let mut parts: Vec<String> = Vec::new();
            let mut base = None;
            while let Some(l) = self.lines.get(self.at) {
                if l.indent <= indent {
                    break;
                }
                let b = *base.get_or_insert(l.indent);
                parts.push(format!(
                    "{}{}",
                    " ".repeat(l.indent.saturating_sub(b)),
                    l.text
                ));
                self.at += 1;
            }
            let mut out = parts.join(if folded { " " } else { "\n" });
            if keep_last && !out.is_empty() {
                out.push('\n');
            }
            return Ok(Yaml::Str(out));
        }
        if s.starts_with(['&', '*', '!']) {
            return Err(bad(format!(
                "`{s}`: anchors, aliases and tags are not read"
            )));
        }
        if let Some(body) = s.strip_prefix('[') {
            let body = body
                .strip_suffix(']')
                .ok_or_else(|| bad(format!("flow list `{s}` does not close on its line")))?;
            let mut items = Vec::new();
            for part in split_flow(body).map_err(bad)? {
                let p = part.trim();
                if p.is_empty() {
                    continue;
                }
                if p.starts_with(['[', '{']) {
                    return Err(bad(format!("nested flow collection `{p}` is not read")));
                }
                items.push(scalar(p).map_err(bad)?);
            }
            return Ok(Yaml::List(items));
        }
        if s.starts_with('{') {
            if s.replace(' ', "") == "{}" {
                return Ok(Yaml::Map(Vec::new()));
            }
            return Err(bad(format!("flow mapping `{s}` is not read")));
        }
        let v = scalar(s).map_err(bad)?;
        // A plain scalar continued on the next, deeper line would be one multi-line scalar.
        if matches!(v, Yaml::Str(_)) && !s.starts_with(['"', '\'']) {
            if let Some(n) = self.lines.get(self.at) {
                if n.indent > indent {
                    return Err(CardError {
                        line: n.no,
                        reason: "multi-line plain scalars are not read".into(),
                    });
                }
            }
        }
        Ok(v)
    }
}

fn is_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

/// The first index where `hit` holds outside a quoted scalar opening the text (the only place
/// a quote opens one in these lines).
fn find_unquoted(text: &str, hit: impl Fn(&[u8], usize) -> bool) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut quote: Option<u8> = None;
    for (i, &b) in bytes.iter().enumerate() {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if (b == b'"' || b == b'\'') && i == 0 => quote = Some(b),
            None if hit(bytes, i) => return Some(i),
            None => {}
        }
    }
    None
}

/// A ` #` comment starts at `i`.
fn is_comment(bytes: &[u8], i: usize) -> bool {
    bytes[i] == b'#' && i > 0 && bytes[i - 1] == b' '
}

/// Splits `key: value` at the first `: ` (or a final `:`) outside quotes and before a comment.
fn split_key(text: &str) -> Option<(String, String)> {
    let i = find_unquoted(text, |b, i| {
        is_comment(b, i) || (b[i] == b':' && (i + 1 == b.len() || b[i + 1] == b' '))
    })?;
    if text.as_bytes()[i] == b'#' {
        return None;
    }
    Some((
        text[..i].trim_end().to_string(),
        text[i + 1..].trim().to_string(),
    ))
}

fn unquote_key(k: &str) -> Result<String, String> {
    match scalar(k)? {
        Yaml::Str(s) => Ok(s),
        Yaml::Number(n) => Ok(n),
        other => Err(format!(
            "key `{k}` is {other:?}, not a string (PyYAML would type it)"
        )),
    }
}

/// Drops a trailing ` # comment` outside quotes.
fn strip_comment(s: &str) -> &str {
    match find_unquoted(s, is_comment) {
        Some(i) => s[..i].trim_end(),
        None => s,
    }
}

/// Splits a flow list's body at commas outside quotes.
fn split_flow(body: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for c in body.chars() {
        match quote {
            Some(q) if c == q => {
                quote = None;
                cur.push(c)
            }
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                cur.push(c)
            }
            None if c == ',' => out.push(std::mem::take(&mut cur)),
            None => cur.push(c),
        }
    }
    if quote.is_some() {
        return Err(format!("unclosed quote in `[{body}]`"));
    }
    out.push(cur);
    Ok(out)
}

/// One scalar, typed as PyYAML's `safe_load` types it (YAML 1.1).
fn scalar(s: &str) -> Result<Yaml, String> {
    let s = s.trim();
    if let Some(body) = s.strip_prefix('\'') {
        let body = body
            .strip_suffix('\'')
            .ok_or_else(|| format!("unclosed quote in `{s}`"))?;
        return Ok(Yaml::Str(body.replace("''", "'")));
    }
    if let Some(body) = s.strip_prefix('"') {
        let body = body
            .strip_suffix('"')
            .ok_or_else(|| format!("unclosed quote in `{s}`"))?;
        return unescape(body).map(Yaml::Str);
    }
    Ok(match s {
        "" | "~" | "null" | "Null" | "NULL" => Yaml::Null,
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => Yaml::Bool(true),
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            Yaml::Bool(false)
        }
        _ if is_number(s) => Yaml::Number(s.to_string()),
        _ if s.starts_with(['&', '*', '!', '|', '>', '@', '`', '%']) => {
            return Err(format!("`{s}` is not read (YAML indicator)"))
        }
        _ => Yaml::Str(s.to_string()),
    })
}

/// YAML 1.1 decimal integers and floats (PyYAML's resolver), including `_` separators and
/// `.inf`/`.nan`; other bases are treated as numbers too when they look like one.
fn is_number(s: &str) -> bool {
    let t = s.strip_prefix(['-', '+']).unwrap_or(s);
    if matches!(t, ".inf" | ".Inf" | ".INF") || matches!(s, ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    if t.starts_with("0x") || t.starts_with("0b") {
        return t.len() > 2 && t[2..].chars().all(|c| c.is_ascii_hexdigit() || c == '_');
    }
    let mut digits = 0;
    let mut dot = false;
    let mut exp = false;
    let mut prev = ' ';
    for c in t.chars() {
        match c {
            '0'..='9' => digits += 1,
            '_' if digits > 0 && !dot && !exp => {}
            '.' if !dot && !exp => dot = true,
            'e' | 'E' if digits > 0 && dot && !exp => exp = true,
            '-' | '+' if prev == 'e' || prev == 'E' => {}
            _ => return false,
        }
        prev = c;
    }
    // PyYAML's float needs its sign after `e`; an integer needs no dot.
    digits > 0
        && (!exp || t.contains("e-") || t.contains("e+") || t.contains("E-") || t.contains("E+"))
}

fn unescape(body: &str) -> Result<String, String> {
    let mut out = String::with_capacity(body.len());
    let mut it = body.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('/') => out.push('/'),
            Some('0') => out.push('\0'),
            Some('u') => {
                let hex: String = it.by_ref().take(4).collect();
                let ch = u32::from_str_radix(&hex, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| format!("bad escape `\\u{hex}`"))?;
                out.push(ch);
            }
            other => return Err(format!("escape `\\{}` is not read", other.unwrap_or(' '))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(s: &str) -> Vec<(String, Yaml)> {
        front_matter(s).unwrap().unwrap()
    }

    #[test]
    fn minilm_style_card() {
        let m = card("---\nlanguage: en\nlicense: apache-2.0\ntags:\n- a\n- b\ndatasets:\n  - x/y\n  - 'q'\npipeline_tag: sentence-similarity\n---\n# body\n");
        assert_eq!(m[0], ("language".into(), Yaml::Str("en".into())));
        assert_eq!(
            m[2].1,
            Yaml::List(vec![Yaml::Str("a".into()), Yaml::Str("b".into())])
        );
        assert_eq!(
            m[3].1,
            Yaml::List(vec![Yaml::Str("x/y".into()), Yaml::Str("q".into())])
        );
        assert_eq!(m.len(), 5);
    }

    #[test]
    fn typing_nesting_and_norway() {
        let m = card("---\nlanguage:\n- no\n- en\nversion: 2\nok: yes\nn: ~\nl: [a, 'b c', 3]\nmodel-index:\n- name: x\n  results:\n  - task:\n      type: t\n    metrics: []\nd: |\n  one\n  two\nf: \"a\\\"b\" # c\n---\n");
        assert_eq!(
            m[0].1,
            Yaml::List(vec![Yaml::Str("no".into()), Yaml::Str("en".into())])
        );
        assert_eq!(m[1].1, Yaml::Number("2".into()));
        assert_eq!(m[2].1, Yaml::Bool(true));
        assert_eq!(m[3].1, Yaml::Null);
        assert_eq!(
            m[4].1,
            Yaml::List(vec![
                Yaml::Str("a".into()),
                Yaml::Str("b c".into()),
                Yaml::Number("3".into())
            ])
        );
        let mi = &m[5].1;
        let Yaml::List(items) = mi else { panic!() };
        assert_eq!(items[0].get("name"), Some(&Yaml::Str("x".into())));
        assert!(items[0].get("results").is_some());
        assert_eq!(m[6].1, Yaml::Str("one\ntwo\n".into()));
        assert_eq!(m[7].1, Yaml::Str("a\"b".into()));
    }

    /// Mutated cards (bytes flipped, lines cut, indentation changed) never panic or hang: each
    /// parses or is refused.
    #[test]
    fn mutated_cards_parse_or_are_refused() {
        let base = "---\nlanguage: en\nlicense: apache-2.0\ntags:\n- a\n- b: c\n  d: [x, 'y']\nmodel-index:\n- name: m\n  results:\n  - task:\n      type: t\nx: |\n  l1\n  l2\ny: \"q\\u00e9\"\n---\nbody\n";
        let mut rng = crate::rng::SplitMix64(7);
        let pieces = [
            " ", "-", ":", "'", "\"", "[", "]", "{", "|", ">", "#", "\n", "  ", "&", "é", "\t",
        ];
        for _ in 0..3000 {
            let mut s: Vec<char> = base.chars().collect();
            for _ in 0..1 + rng.next_u64() % 4 {
                if s.len() <= 5 {
                    break;
                }
                let at = 4 + (rng.next_u64() as usize) % (s.len() - 4);
                match rng.next_u64() % 3 {
                    0 => {
                        s.remove(at);
                    }
                    1 => {
                        let p = pieces[(rng.next_u64() as usize) % pieces.len()];
                        for (k, c) in p.chars().enumerate() {
                            s.insert(at + k, c);
                        }
                    }
                    _ => s.truncate(at),
                }
            }
            let text: String = s.into_iter().collect();
            let _ = front_matter(&text);
        }
    }

    #[test]
    fn refusals_name_the_line() {
        let e = front_matter("---\na: &x 1\n---\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = front_matter("---\na: one\n  two\n---\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(front_matter("no front matter\n").unwrap().is_none());
        assert!(front_matter("---\n- a\n---\n").unwrap().is_none());
    }
}
