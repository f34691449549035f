//! Finding the node's own secret values in text that is about to leave it (the support bundle):
//! raw, and in the encodings that leak in practice. Pure: the caller hands in the files and the
//! values; a finding names the file, the secret's name and the encoding, never the value.

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;
use std::fmt;

/// Values shorter than this are not looked for: a secret of a few bytes (`"1"`, a port, `"tfe"`)
/// occurs by chance in any log, so the scan would refuse every bundle, and such a value protects
/// nothing anyway. Every secret TFE uses (passwords, 32-hex tokens, keys, the license) is longer.
pub const MIN_SECRET_LEN: usize = 8;

/// How a secret value appears in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Raw,
    /// As in a JSON string: `\"`, `\\`, `\n`, `\u00XX` (serde's escaping).
    JsonEscaped,
    /// Go's `encoding/json` escaping, which also writes `<`, `>`, `&` as `\u003c` … (Replicated is Go).
    JsonEscapedGo,
    /// Standard alphabet; `offset` is the value's start modulo 3 inside the encoded bytes, so a
    /// value in the middle of a larger blob is found too. Padded or not.
    Base64 {
        offset: u8,
    },
    /// URL-safe alphabet (`-`, `_`), padded or not, at each offset.
    Base64Url {
        offset: u8,
    },
    HexLower,
    HexUpper,
    /// Percent-encoded (every byte but RFC 3986's unreserved ones), upper- or lower-case hex.
    UrlEncoded,
    UrlEncodedLower,
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Encoding::Raw => f.write_str("raw"),
            Encoding::JsonEscaped => f.write_str("JSON-escaped"),
            Encoding::JsonEscapedGo => f.write_str("JSON-escaped (Go)"),
            Encoding::Base64 { offset } => write!(f, "base64 (byte offset {offset} mod 3)"),
            Encoding::Base64Url { offset } => {
                write!(f, "URL-safe base64 (byte offset {offset} mod 3)")
            }
            Encoding::HexLower => f.write_str("hex (lower-case)"),
            Encoding::HexUpper => f.write_str("hex (upper-case)"),
            Encoding::UrlEncoded => f.write_str("URL-encoded"),
            Encoding::UrlEncodedLower => f.write_str("URL-encoded (lower-case hex)"),
        }
    }
}

/// A secret value to look for, and the name to report it by (`shared secret key enc_password`,
/// `the license`): never the value.
pub struct Needle<'a> {
    pub name: String,
    pub value: &'a [u8],
}

/// One secret found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: String,
    pub secret: String,
    pub encoding: Encoding,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({})", self.file, self.secret, self.encoding)
    }
}

/// What the scan looks for: every encoded form of every value long enough.
pub struct Scanner {
    patterns: Vec<(usize, Encoding, memchr::memmem::Finder<'static>)>,
    names: Vec<String>,
    /// How many values were too short to look for.
    pub skipped: usize,
}

impl Scanner {
    pub fn new(needles: &[Needle<'_>]) -> Self {
        let mut patterns = Vec::new();
        let mut names = Vec::new();
        let mut skipped = 0;
        for needle in needles {
            if needle.value.len() < MIN_SECRET_LEN {
                skipped += 1;
                continue;
            }
            let index = names.len();
            names.push(needle.name.clone());
            let mut seen: Vec<Vec<u8>> = Vec::new();
            for (encoding, form) in encodings(needle.value) {
                // One finder per distinct form: the first encoding that produces it names it.
                if form.is_empty() || seen.contains(&form) {
                    continue;
                }
                seen.push(form.clone());
                let finder = memchr::memmem::Finder::new(&form).into_owned();
                patterns.push((index, encoding, finder));
            }
        }
        Self {
            patterns,
            names,
            skipped,
        }
    }

    /// How many values are looked for.
    pub fn secrets(&self) -> usize {
        self.names.len()
    }

    /// Every (secret, encoding) found in `bytes`, at most one finding per secret (the first
    /// encoding in [`encodings`] order), reported against `file`.
    pub fn scan(&self, file: &str, bytes: &[u8]) -> Vec<Finding> {
        let mut found: Vec<Finding> = Vec::new();
        let mut hit = vec![false; self.names.len()];
        for (index, encoding, finder) in &self.patterns {
            if !hit[*index] && finder.find(bytes).is_some() {
                hit[*index] = true;
                found.push(Finding {
                    file: file.to_string(),
                    secret: self.names[*index].clone(),
                    encoding: *encoding,
                });
            }
        }
        found
    }
}

/// Every form of `value` looked for, raw first.
pub fn encodings(value: &[u8]) -> Vec<(Encoding, Vec<u8>)> {
    let mut out = vec![(Encoding::Raw, value.to_vec())];
    if let Ok(text) = std::str::from_utf8(value) {
        let json = serde_json::to_string(text).expect("a str serializes");
        let json = json[1..json.len() - 1].to_string();
        let go = json
            .replace('<', "\\u003c")
            .replace('>', "\\u003e")
            .replace('&', "\\u0026");
        out.push((Encoding::JsonEscaped, json.into_bytes()));
        out.push((Encoding::JsonEscapedGo, go.into_bytes()));
    }
    for offset in 0..3u8 {
        out.push((
            Encoding::Base64 { offset },
            base64_core(value, offset, false),
        ));
    }
    for offset in 0..3u8 {
        out.push((
            Encoding::Base64Url { offset },
            base64_core(value, offset, true),
        ));
    }
    let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
    out.push((Encoding::HexUpper, hex.to_uppercase().into_bytes()));
    out.push((Encoding::HexLower, hex.into_bytes()));
    out.push((Encoding::UrlEncoded, percent(value, false)));
    out.push((Encoding::UrlEncodedLower, percent(value, true)));
    out
}

/// The base64 characters that depend on `value` alone when it starts `offset` bytes (mod 3)
/// into the encoded data: the characters shared with the bytes before and after it are left out,
/// so the core is found whatever surrounds it, with or without padding.
fn base64_core(value: &[u8], offset: u8, url_safe: bool) -> Vec<u8> {
    let offset = usize::from(offset);
    let mut data = vec![0u8; offset];
    data.extend_from_slice(value);
    let engine = if url_safe {
        &URL_SAFE_NO_PAD
    } else {
        &STANDARD_NO_PAD
    };
    let encoded = engine.encode(&data).into_bytes();
    // Character i covers bits [6i, 6i+6): it is the value's alone when 6i >= 8*offset and
    // 6i+6 <= 8*(offset+len).
    let first = (8 * offset).div_ceil(6);
    let end = (8 * (offset + value.len())) / 6;
    encoded[first..end.min(encoded.len())].to_vec()
}

fn percent(value: &[u8], lower: bool) -> Vec<u8> {
    let mut out = String::new();
    for &b in value {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else if lower {
            out.push_str(&format!("%{b:02x}"));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests;
