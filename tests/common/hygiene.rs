//! Looking for secret values in what the agent emitted, in every form a leak could take: raw,
//! JSON-escaped (serde's escapes, and the ASCII-only `\uXXXX` ones Python and Go write), base64
//! (standard and URL-safe alphabets, padded or not, and at any byte alignment inside a longer
//! encoded stream), hex (both cases) and URL-encoded (percent-encoding in both cases, and form
//! encoding). A finding names the secret's label, the encoding and where it was found, never the
//! value.

use base64::Engine;
use std::collections::HashMap;
use std::path::Path;

/// Needles shorter than this would match by chance; every secret a test plants is longer.
const MIN_NEEDLE: usize = 8;

/// One form of one secret.
#[derive(Debug, Clone)]
pub struct Needle {
    pub secret: String,
    pub encoding: String,
    pub bytes: Vec<u8>,
}

/// Every form of `value` worth looking for, deduplicated, as `(encoding, bytes)`.
///
/// base64: the characters of an encoded stream that depend only on `value`'s bits, for each of
/// the three byte alignments `value` can have in the stream. Every padded or unpadded encoding of
/// `value` alone, or of anything that contains it, holds one of these three as a substring, so the
/// three cover "base64 of the value" and "base64 of a document holding the value" alike. Since a
/// value inside a JSON document is escaped first, the base64, hex and URL forms are made of each
/// JSON-escaped form too.
pub fn encodings(value: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = vec![("raw".into(), value.to_vec())];
    if let Ok(text) = std::str::from_utf8(value) {
        let serde = serde_json::to_string(text).unwrap();
        let serde = serde[1..serde.len() - 1].to_string();
        out.push(("JSON-escaped".into(), serde.clone().into_bytes()));
        out.push((
            "JSON-escaped, ASCII only".into(),
            json_ascii(text, false).into_bytes(),
        ));
        out.push((
            "JSON-escaped, ASCII only, upper-case hex".into(),
            json_ascii(text, true).into_bytes(),
        ));
        let go = serde
            .replace('<', "\\u003c")
            .replace('>', "\\u003e")
            .replace('&', "\\u0026");
        out.push(("JSON-escaped, Go HTML-safe".into(), go.into_bytes()));
        out.push((
            "JSON-escaped, slash escaped".into(),
            serde.replace('/', "\\/").into_bytes(),
        ));
        // A PEM's body lines, one by one: a leak of part of a certificate or key is still a leak.
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.len() >= 16 && !line.starts_with("-----") && line.len() < text.len() {
                out.push((format!("line {} alone", i + 1), line.as_bytes().to_vec()));
            }
        }
    }
    // A value inside an encoded document is JSON-escaped first: encode each text form.
    let texts: Vec<(String, Vec<u8>)> = out
        .iter()
        .filter(|(name, _)| name == "raw" || name.starts_with("JSON-escaped"))
        .cloned()
        .collect();
    let std = &base64::engine::general_purpose::STANDARD_NO_PAD;
    let url = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
    for (form, text) in &texts {
        let of = if form == "raw" {
            String::new()
        } else {
            format!(" of the {form} form")
        };
        for (name, engine) in [("base64", std), ("base64url", url)] {
            for offset in 0..3 {
                out.push((
                    format!("{name}{of} at byte alignment {offset}"),
                    base64_core(engine, text, offset),
                ));
            }
        }
        let hex: String = text.iter().map(|b| format!("{b:02x}")).collect();
        out.push((format!("hex{of}"), hex.clone().into_bytes()));
        out.push((
            format!("hex{of}, upper-case"),
            hex.to_uppercase().into_bytes(),
        ));
        out.push((
            format!("URL-encoded{of}"),
            percent(text, false, false).into_bytes(),
        ));
        out.push((
            format!("URL-encoded{of}, lower-case hex"),
            percent(text, true, false).into_bytes(),
        ));
        out.push((
            format!("form-encoded{of} (space as +)"),
            percent(text, false, true).into_bytes(),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|(_, bytes)| bytes.len() >= MIN_NEEDLE && seen.insert(bytes.clone()));
    out
}

/// Named full encodings of `value` (for the scanner's negative control): each must be found.
pub fn full_encodings(value: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    vec![
        ("base64, padded", STANDARD.encode(value).into_bytes()),
        (
            "base64, unpadded",
            STANDARD_NO_PAD.encode(value).into_bytes(),
        ),
        ("base64url, padded", URL_SAFE.encode(value).into_bytes()),
        (
            "base64url, unpadded",
            URL_SAFE_NO_PAD.encode(value).into_bytes(),
        ),
    ]
}

fn json_ascii(text: &str, upper: bool) -> String {
    let mut s = String::new();
    for c in text.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    if upper {
                        s.push_str(&format!("\\u{u:04X}"));
                    } else {
                        s.push_str(&format!("\\u{u:04x}"));
                    }
                }
            }
            c => s.push(c),
        }
    }
    s
}

/// The base64 characters fully determined by `value` when it starts `offset` bytes into a stream.
fn base64_core(engine: &impl Engine, value: &[u8], offset: usize) -> Vec<u8> {
    let mut stream = vec![0u8; offset];
    stream.extend_from_slice(value);
    let encoded = engine.encode(&stream).into_bytes();
    let (start_bit, end_bit) = (8 * offset, 8 * (offset + value.len()));
    // Character i covers bits [6i, 6i + 6).
    let first = start_bit.div_ceil(6);
    let last = end_bit / 6; // exclusive
    encoded[first..last.max(first)].to_vec()
}

fn percent(value: &[u8], lower: bool, form: bool) -> String {
    let mut s = String::new();
    for &b in value {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                s.push(b as char);
            }
            b' ' if form => s.push('+'),
            _ if lower => s.push_str(&format!("%{b:02x}")),
            _ => s.push_str(&format!("%{b:02X}")),
        }
    }
    s
}

/// Every form of every secret, indexed by its first bytes so a haystack is read once.
pub struct Scanner {
    needles: Vec<Needle>,
    index: HashMap<[u8; MIN_NEEDLE], Vec<usize>>,
}

impl Scanner {
    /// `secrets` as `(label, value)`; the label is what a finding shows.
    pub fn new<L: AsRef<str>, V: AsRef<[u8]>>(secrets: &[(L, V)]) -> Self {
        let mut needles = Vec::new();
        for (label, value) in secrets {
            let value = value.as_ref();
            assert!(
                value.len() >= MIN_NEEDLE,
                "secret {} is too short to look for reliably",
                label.as_ref()
            );
            for (encoding, bytes) in encodings(value) {
                needles.push(Needle {
                    secret: label.as_ref().to_string(),
                    encoding,
                    bytes,
                });
            }
        }
        let mut index: HashMap<[u8; MIN_NEEDLE], Vec<usize>> = HashMap::new();
        for (i, n) in needles.iter().enumerate() {
            let key: [u8; MIN_NEEDLE] = n.bytes[..MIN_NEEDLE].try_into().unwrap();
            index.entry(key).or_default().push(i);
        }
        Scanner { needles, index }
    }

    pub fn needles(&self) -> &[Needle] {
        &self.needles
    }

    /// The needles found in `haystack`, as "secret (encoding)".
    pub fn find(&self, haystack: &[u8]) -> Vec<String> {
        let mut found = Vec::new();
        let mut hit = vec![false; self.needles.len()];
        if haystack.len() < MIN_NEEDLE {
            return found;
        }
        for start in 0..=haystack.len() - MIN_NEEDLE {
            let key: [u8; MIN_NEEDLE] = haystack[start..start + MIN_NEEDLE].try_into().unwrap();
            let Some(candidates) = self.index.get(&key) else {
                continue;
            };
            for &i in candidates {
                let n = &self.needles[i];
                if !hit[i] && haystack[start..].starts_with(&n.bytes) {
                    hit[i] = true;
                    found.push(format!("{} ({})", n.secret, n.encoding));
                }
            }
        }
        found
    }

    /// Every finding in `parts` (`(where, bytes)`), as "secret (encoding) in where".
    pub fn leaks(&self, parts: &[(String, Vec<u8>)]) -> Vec<String> {
        parts
            .iter()
            .flat_map(|(place, bytes)| {
                self.find(bytes)
                    .into_iter()
                    .map(move |f| format!("{f} in {place}"))
            })
            .collect()
    }
}

/// Every regular file under `dir` (recursively, symlinks not followed) for which `skip` is false,
/// as `(path, bytes)`. A missing `dir` gives nothing.
pub fn files_under(dir: &Path, skip: &dyn Fn(&Path) -> bool) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() && !skip(&path) {
                if let Ok(bytes) = std::fs::read(&path) {
                    out.push((path.display().to_string(), bytes));
                }
            }
        }
    }
    out.sort();
    out
}

/// Every path under `dir` (recursively) whose file name marks a temporary or partial write.
pub fn temp_files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if name.contains(".tmp") || name.ends_with(".partial") || name.ends_with('~') {
                out.push(path.display().to_string());
            }
            if entry.file_type().is_ok_and(|k| k.is_dir()) {
                stack.push(path);
            }
        }
    }
    out
}
