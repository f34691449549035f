//! Turns a validated [`TfeConfig`] into the exact bytes of the node's files. Pure and deterministic
//! (sorted keys, fixed formatting), so the same inputs always give the same files, golden tests can
//! pin them, and `render --dry-run` can show them with every secret value redacted.

use crate::config::PathsSection;
use crate::config::TlsBootstrapType;
use crate::tfe_files::validate::{SettingValue, TfeConfig};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use zeroize::Zeroizing;

/// What `--dry-run` prints instead of a secret value.
pub const REDACTED: &str = "<redacted>";

/// One file to write.
pub struct RenderedFile {
    pub path: PathBuf,
    pub bytes: Zeroizing<Vec<u8>>,
    pub mode: u32,
    /// True when the file holds secret values and must be owned by the daemon's user.
    pub secret: bool,
}

impl std::fmt::Debug for RenderedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RenderedFile({}, {} bytes, {:o})",
            self.path.display(),
            self.bytes.len(),
            self.mode
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redaction {
    /// The real bytes, for writing.
    None,
    /// Every secret value replaced by [`REDACTED`], for showing.
    Secrets,
}

/// All files of a node, in the order they are written (the daemon's config last, so it never
/// points at a file that is not there yet).
pub fn render(tfe: &TfeConfig, paths: &PathsSection, redaction: Redaction) -> Vec<RenderedFile> {
    let mut files = Vec::new();
    if let Some(license) = &tfe.license {
        let bytes = match redaction {
            Redaction::None => license.expose().to_vec(),
            Redaction::Secrets => REDACTED.as_bytes().to_vec(),
        };
        files.push(file(paths.license.clone(), bytes, 0o600, true));
    }
    if let (Some((cert, key)), TlsBootstrapType::ServerPath) = (&tfe.tls, tfe.tls_bootstrap_type) {
        // The certificate is public; the key is not.
        files.push(file(
            paths.tls_cert.clone(),
            cert.expose().as_bytes().to_vec(),
            0o644,
            false,
        ));
        let key_bytes = match redaction {
            Redaction::None => key.expose().as_bytes().to_vec(),
            Redaction::Secrets => REDACTED.as_bytes().to_vec(),
        };
        files.push(file(paths.tls_key.clone(), key_bytes, 0o600, true));
    }
    files.push(file(
        paths.settings.clone(),
        settings_json(tfe, redaction),
        0o600,
        true,
    ));
    files.push(file(
        paths.replicated_conf.clone(),
        replicated_conf_json(tfe, paths, redaction),
        0o600,
        true,
    ));
    files
}

fn file(path: PathBuf, bytes: Vec<u8>, mode: u32, secret: bool) -> RenderedFile {
    RenderedFile {
        path,
        bytes: Zeroizing::new(bytes),
        mode,
        secret,
    }
}

/// `/etc/ptfe-settings.json`: `{"key": {"value": "string"}}`, keys sorted.
pub fn settings_json(tfe: &TfeConfig, redaction: Redaction) -> Vec<u8> {
    let mut map = BTreeMap::new();
    for (key, value) in &tfe.settings {
        let shown = match (value, redaction) {
            (SettingValue::Secret(_), Redaction::Secrets) => REDACTED,
            _ => value.expose(),
        };
        map.insert(key.clone(), json!({ "value": shown }));
    }
    to_bytes(&map)
}

/// `/etc/replicated.conf`: the Replicated daemon's settings, with native JSON types.
pub fn replicated_conf_json(
    tfe: &TfeConfig,
    paths: &PathsSection,
    redaction: Redaction,
) -> Vec<u8> {
    let mut map = BTreeMap::new();
    let mut put = |k: &str, v: Value| {
        map.insert(k.to_string(), v);
    };
    put("BypassPreflightChecks", json!(tfe.bypass_preflight_checks));
    put(
        "ImportSettingsFrom",
        json!(paths.settings.to_string_lossy()),
    );
    put("ReleaseSequence", json!(tfe.release_sequence));
    put("TlsBootstrapType", json!(tfe.tls_bootstrap_type.as_str()));
    let hostname = match (&tfe.tls_bootstrap_hostname, redaction) {
        (SettingValue::Secret(_), Redaction::Secrets) => REDACTED,
        (value, _) => value.expose(),
    };
    put("TlsBootstrapHostname", json!(hostname));
    match &tfe.console_password {
        Some(password) => {
            put("DaemonAuthenticationType", json!("password"));
            let shown = match redaction {
                Redaction::None => password.expose(),
                Redaction::Secrets => REDACTED,
            };
            put("DaemonAuthenticationPassword", json!(shown));
        }
        None => put("DaemonAuthenticationType", json!("anonymous")),
    }
    if tfe.license.is_some() {
        put(
            "LicenseFileLocation",
            json!(paths.license.to_string_lossy()),
        );
    }
    if let Some(level) = &tfe.log_level {
        put("LogLevel", json!(level.as_str()));
    }
    match (tfe.tls_bootstrap_type, &tfe.tls) {
        (TlsBootstrapType::ServerPath, Some(_)) => {
            put("TlsBootstrapCert", json!(paths.tls_cert.to_string_lossy()));
            put("TlsBootstrapKey", json!(paths.tls_key.to_string_lossy()));
        }
        (TlsBootstrapType::KeyCert, Some((cert, key))) => {
            put("TlsBootstrapCert", json!(cert.expose()));
            let shown = match redaction {
                Redaction::None => key.expose(),
                Redaction::Secrets => REDACTED,
            };
            put("TlsBootstrapKey", json!(shown));
        }
        _ => {}
    }
    to_bytes(&map)
}

/// Pretty JSON with sorted keys (a BTreeMap, whatever serde_json's map features) and a final newline.
fn to_bytes(map: &BTreeMap<String, Value>) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(map).expect("a JSON map always serializes");
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
mod tests;
