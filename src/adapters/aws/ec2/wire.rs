//! EC2's answers to DescribeLaunchTemplateVersions: the version set, EC2's error document mapped
//! to what the client does next, the user data decoded (base64, maybe gzip).

use crate::ports::TemplateVersion;
use aws_smithy_xml::decode::{try_data, Document, ScopedDecoder};
use base64::Engine;
use std::io::Read;

/// Answers larger than this are not read (one version's answer is a few KiB; user data is at
/// most 16 KiB before base64).
pub(super) const MAX_ANSWER: usize = 1 << 20;
/// Codes EC2 answers for a template or version that does not exist (or cannot, being malformed).
pub(super) const NOT_FOUND_CODES: &[&str] = &[
    "InvalidLaunchTemplateId.NotFound",
    "InvalidLaunchTemplateId.Malformed",
    "InvalidLaunchTemplateId.VersionNotFound",
    "InvalidLaunchTemplateName.NotFoundException",
    "InvalidLaunchTemplateName.MalformedException",
];
pub(super) const THROTTLING_CODES: &[&str] =
    &["RequestLimitExceeded", "Throttling", "ThrottlingException"];
/// Why one try failed; the detail never holds a credential or a response body that is not an
/// error document.
#[derive(Debug)]
pub(super) enum Failure {
    /// 5xx, a dropped connection, a timeout, credentials not there yet: may pass.
    Transient(String),
    /// RequestLimitExceeded and its kin.
    Throttled(String),
    /// Any other refusal (access denied, a bad parameter): final.
    Final(String),
}

/// What one answer means: a version, `None` for an unknown template or version, or a failure.
pub(super) fn answer(status: u16, text: &str) -> Result<Option<TemplateVersion>, Failure> {
    if (200..300).contains(&status) {
        return match parse_versions(text) {
            Ok(mut versions) => Ok(versions.drain(..).next()),
            Err(e) => Err(Failure::Transient(format!(
                "the answer (HTTP {status}) could not be read: {e}"
            ))),
        };
    }
    let (code, message) = match parse_error(text) {
        Some(found) => found,
        None if status >= 500 || status == 429 => {
            return Err(Failure::Transient(format!(
                "HTTP {status}: {}",
                excerpt(text)
            )))
        }
        None => return Err(Failure::Final(format!("HTTP {status}: {}", excerpt(text)))),
    };
    let detail = format!("{code}: {message} (HTTP {status})");
    if NOT_FOUND_CODES.contains(&code.as_str()) {
        Ok(None)
    } else if THROTTLING_CODES.contains(&code.as_str()) || status == 429 {
        Err(Failure::Throttled(detail))
    } else if status >= 500 {
        Err(Failure::Transient(detail))
    } else {
        Err(Failure::Final(detail))
    }
}

/// At most 300 characters of an error body, on one line.
pub(super) fn excerpt(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None if line.is_empty() => "(empty body)".into(),
        None => line,
    }
}

/// `<Response><Errors><Error><Code>…</Code><Message>…</Message></Error></Errors>…`: the first
/// error's code and message.
pub(super) fn parse_error(text: &str) -> Option<(String, String)> {
    let mut doc = Document::new(text);
    let mut root = doc.root_element().ok()?;
    while let Some(mut tag) = root.next_tag() {
        if !tag.start_el().matches("Errors") {
            continue;
        }
        while let Some(mut error) = tag.next_tag() {
            if !error.start_el().matches("Error") {
                continue;
            }
            let (mut code, mut message) = (None, String::new());
            while let Some(mut field) = error.next_tag() {
                if field.start_el().matches("Code") {
                    code = try_data(&mut field).ok().map(|c| c.trim().to_string());
                } else if field.start_el().matches("Message") {
                    message = try_data(&mut field)
                        .map(|m| m.trim().to_string())
                        .unwrap_or_default();
                }
            }
            return code.map(|c| (c, message));
        }
    }
    None
}

pub(super) fn text_of(tag: &mut ScopedDecoder<'_, '_>) -> Result<String, String> {
    try_data(tag)
        .map(|t| t.trim().to_string())
        .map_err(|e| e.to_string())
}

/// The versions of a DescribeLaunchTemplateVersions answer, in its order.
pub(super) fn parse_versions(text: &str) -> Result<Vec<TemplateVersion>, String> {
    let mut doc = Document::new(text);
    let mut root = doc.root_element().map_err(|e| e.to_string())?;
    if !root
        .start_el()
        .matches("DescribeLaunchTemplateVersionsResponse")
    {
        return Err(format!(
            "unexpected root element <{}>",
            root.start_el().local()
        ));
    }
    let mut versions = Vec::new();
    while let Some(mut set) = root.next_tag() {
        if !set.start_el().matches("launchTemplateVersionSet") {
            continue;
        }
        while let Some(mut item) = set.next_tag() {
            if item.start_el().matches("item") {
                versions.push(parse_version(&mut item)?);
            }
        }
    }
    Ok(versions)
}

pub(super) fn parse_version(item: &mut ScopedDecoder<'_, '_>) -> Result<TemplateVersion, String> {
    let mut version = TemplateVersion {
        template_id: String::new(),
        template_name: String::new(),
        version: 0,
        default_version: false,
        user_data: None,
    };
    let mut number = None;
    while let Some(mut field) = item.next_tag() {
        let name = field.start_el().local().to_string();
        match name.as_str() {
            "launchTemplateId" => version.template_id = text_of(&mut field)?,
            "launchTemplateName" => version.template_name = text_of(&mut field)?,
            "versionNumber" => {
                let text = text_of(&mut field)?;
                number = Some(
                    text.parse::<u64>()
                        .map_err(|_| format!("versionNumber {text:?} is not a number"))?,
                );
            }
            "defaultVersion" => version.default_version = text_of(&mut field)? == "true",
            "launchTemplateData" => {
                while let Some(mut data) = field.next_tag() {
                    if data.start_el().matches("userData") {
                        let encoded = text_of(&mut data)?;
                        version.user_data = decode_user_data(&encoded)?;
                    }
                }
            }
            _ => {}
        }
    }
    version.version = number.ok_or("a version without a versionNumber")?;
    Ok(version)
}

/// The user data as cloud-init reads it: base64, then gunzipped when it starts with gzip's magic
/// number; lossy UTF-8. Empty user data is none.
pub(super) fn decode_user_data(encoded: &str) -> Result<Option<String>, String> {
    let compact: String = encoded.split_whitespace().collect();
    if compact.is_empty() {
        return Ok(None);
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| format!("userData is not base64: {e}"))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .take(MAX_ANSWER as u64 * 16)
            .read_to_end(&mut out)
            .map_err(|e| format!("userData is gzip but does not decompress: {e}"))?;
        out
    } else {
        raw
    };
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}
