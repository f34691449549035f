//! One set of checks for the parsers that read untrusted text, shared by two drivers: the property
//! tests (`tests/fuzz_parsers.rs`, bounded, in the test command) and the AFL targets (`fuzz/`, the
//! longer runs). Each check feeds one input to the agent's own parser and panics when an invariant
//! breaks, so a panic inside a parser and a broken invariant are both findings (AFL records a
//! panic as a crash).
//!
//! The invariant that matters most: whatever the secrets hold, no problem message, error text,
//! `Debug` output or redacted rendering shows a secret value.

#![allow(dead_code)] // each driver uses a part of it

use base64::Engine;
use std::collections::BTreeMap;
use std::path::Path;
use tfe_node_agent::adapters::tfe::parse;
use tfe_node_agent::config::{self, AgentConfig, Settings};
use tfe_node_agent::error_chain;
use tfe_node_agent::ports::SecretPayload;
use tfe_node_agent::sys::secret::{Secret, SecretBytes};
use tfe_node_agent::tfe_files::render::{self, Redaction};
use tfe_node_agent::tfe_files::{secret_bundle as secrets, validate};
use tfe_node_agent::tfe_files::{ConfigureError, Problems};

/// The documented example config (shared secret `tfe/shared`, license `tfe/license`).
pub const EXAMPLE_CONFIG: &str = include_str!("../../packaging/agent.toml.example");

pub const SHARED_ID: &str = "tfe/shared";
pub const LICENSE_ID: &str = "tfe/license";
pub const CONSOLE_ID: &str = "tfe/console";
pub const TLS_CERT_ID: &str = "tfe/tls-cert";
pub const TLS_KEY_ID: &str = "tfe/tls-key";
pub const CA_ID: &str = "tfe/ca";

/// The example config with an empty `[settings]` table: every ptfe setting must then come from the
/// shared secret, so the secret's values reach every rule (required, hex, port, host, placement).
pub fn config_without_settings() -> String {
    let mut out = String::new();
    let mut in_settings = false;
    for line in EXAMPLE_CONFIG.lines() {
        if line.starts_with('[') {
            in_settings = line.starts_with("[settings]");
            if in_settings {
                out.push_str("[settings]\n");
                continue;
            }
        }
        if !in_settings {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// [`config_without_settings`] that also asks for every optional secret (console password, TLS
/// pair, CA bundle) with `tls_bootstrap_type = "server-path"`, so the TLS and password paths run.
pub fn config_with_every_secret() -> String {
    config_without_settings()
        .replace(
            "license = \"tfe/license\"",
            &format!(
                "license = \"{LICENSE_ID}\"\nconsole_password = \"{CONSOLE_ID}\"\n\
                 tls_cert = \"{TLS_CERT_ID}\"\ntls_key = \"{TLS_KEY_ID}\"\nca_bundle = \"{CA_ID}\""
            ),
        )
        .replace(
            "tls_bootstrap_type = \"self-signed\"",
            "tls_bootstrap_type = \"server-path\"",
        )
}

/// The configs the secret checks run against (a fuzz input picks one with its first byte).
pub fn configs() -> Vec<String> {
    vec![
        EXAMPLE_CONFIG.to_string(),
        config_without_settings(),
        config_with_every_secret(),
    ]
}

pub fn parse_config(text: &str) -> Result<AgentConfig, config::ConfigError> {
    config::parse(text, Path::new("agent.toml"))
}

/// Parses and checks agent.toml into the settings the agent runs with.
pub fn settings(text: &str) -> Result<Settings, config::ConfigError> {
    config::settings(parse_config(text)?, Path::new("agent.toml"))
}

// ------------------------------------------------------------------ replicatedctl and replicated

/// `replicatedctl system status` output, as the agent reads it (lossy UTF-8).
pub fn system_status(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    match parse::system_status(&text) {
        Ok(status) => {
            assert!(
                text.contains('{'),
                "a status parsed from text with no object"
            );
            let ready =
                !status.statuses.is_empty() && status.statuses.values().all(|s| s == "ready");
            assert_eq!(status.all_ready(), ready);
        }
        Err(message) => assert!(!message.is_empty()),
    }
}

/// `replicatedctl app status` output, as the agent reads it (lossy UTF-8).
pub fn app_status(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    match parse::app_status(&text) {
        Ok(app) => {
            assert!(text.contains('['), "an app parsed from text with no array");
            if app.is_started() {
                assert_eq!(
                    (app.state.as_str(), app.is_transitioning),
                    ("started", false)
                );
            }
        }
        Err(message) => assert!(!message.is_empty()),
    }
}

/// `replicated admin health-check` output, as the agent reads it (lossy UTF-8).
pub fn health_check(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let Ok(report) = parse::health_check(&text) else {
        return;
    };
    // The verdict comes from a summary line that is really in the text, and only from it.
    assert!(
        text.lines().any(|l| l.trim() == report.summary),
        "summary {:?} is not a line of the output",
        report.summary
    );
    let failed_summary = report
        .summary
        .strip_suffix(" checks failed.")
        .or(report.summary.strip_suffix(" check failed."))
        .is_some_and(|n| n.parse::<u32>().is_ok());
    assert!(report.summary == "All checks passed." || failed_summary);
    if report.passed {
        assert_eq!(report.summary, "All checks passed.");
        assert!(report.failed_checks.is_empty());
    }
}

// ------------------------------------------------------------------ agent config

/// agent.toml text: parsed, and when it parses, validated against a shared secret of marked values
/// (which must not show in any output, whatever the config says).
pub fn agent_config(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        // The loader reads the file with read_to_string: non-UTF-8 is an I/O error before parsing.
        return;
    };
    let cfg = match settings(text) {
        Ok(cfg) => cfg,
        Err(e) => {
            let shown = e.to_string();
            assert!(
                shown.starts_with("config file agent.toml ")
                    || shown.starts_with("config file agent.toml: configuration is invalid"),
                "{shown}"
            );
            return;
        }
    };
    let mut payloads = BTreeMap::new();
    // Marked values share no 8 characters with a setting name or a message, so a hit is a leak.
    let marked = |key: &str| format!("Qz{:08x}K{:08x}", fxhash(key), fxhash(&format!("{key}!")));
    let shared: serde_json::Map<String, serde_json::Value> = [
        "enc_password",
        "pg_password",
        "redis_pass",
        "aws_secret_access_key",
        "user_token",
    ]
    .iter()
    .map(|k| (k.to_string(), serde_json::Value::String(marked(k))))
    .collect();
    payloads.insert(
        cfg.secrets.shared.clone(),
        text_payload(&serde_json::Value::Object(shared).to_string()),
    );
    for (_, id) in secrets::requested(&cfg.secrets).into_iter().skip(1) {
        payloads
            .entry(id.clone())
            .or_insert_with(|| text_payload(&marked(&id)));
    }
    no_secret_shown(&cfg, &payloads);
}

// ------------------------------------------------------------------ secrets → validated settings

pub fn text_payload(s: &str) -> SecretPayload {
    SecretPayload::String(Secret::new(s))
}

/// The shared secret's SecretString (any text) against one of [`configs`]; the other configured
/// secrets get valid values. Nothing panics, and no secret value shows in any output.
pub fn shared_secret(config_index: u8, bytes: &[u8]) {
    let configs = configs();
    let cfg = settings(&configs[config_index as usize % configs.len()]).expect("config is valid");
    let text = String::from_utf8_lossy(bytes);
    let mut payloads = valid_other_secrets();
    payloads.insert(SHARED_ID.to_string(), text_payload(&text));
    no_secret_shown(&cfg, &payloads);
}

/// Valid payloads for every secret but the shared one (a license in SecretBinary, a console
/// password, a PEM pair and a CA bundle).
pub fn valid_other_secrets() -> BTreeMap<String, SecretPayload> {
    let pem =
        |kind: &str, body: &str| format!("-----BEGIN {kind}-----\n{body}\n-----END {kind}-----\n");
    BTreeMap::from([
        (
            LICENSE_ID.to_string(),
            SecretPayload::Binary(SecretBytes::new(b"RLI\x00Qz7Lq2Wv9Xc4\x01".to_vec())),
        ),
        (CONSOLE_ID.to_string(), text_payload("Qz4Hn8Rt1Cp6Vw")),
        (
            TLS_CERT_ID.to_string(),
            text_payload(&pem("CERTIFICATE", "Y2VydA==")),
        ),
        (
            TLS_KEY_ID.to_string(),
            text_payload(&pem("PRIVATE KEY", "Qz9Jm3Kd5Ty2Bk")),
        ),
        (
            CA_ID.to_string(),
            text_payload(&pem("CERTIFICATE", "Qz2Fs6Gh8Lp0Nm")),
        ),
    ])
}

/// Everything the agent can show about a config and its secrets: decoding's bundle and problems
/// (Debug and Display), then either the plan's Debug and its redacted rendering (what
/// `render --dry-run` prints), or the error the agent logs (Display, chain and Debug).
pub fn shown(cfg: &Settings, payloads: &BTreeMap<String, SecretPayload>) -> String {
    let (bundle, problems) = secrets::decode(&cfg.secrets, payloads.clone());
    let mut out = format!("{bundle:?}\n{problems:?}\n");
    for p in &problems {
        out.push_str(&format!("{p}\n"));
    }
    match validate::validate(cfg, bundle, problems) {
        Ok(plan) => {
            out.push_str(&format!("{plan:?}\n"));
            for file in render::render(&plan, &cfg.paths, Redaction::Secrets) {
                out.push_str(&format!("{file:?}\n"));
                out.push_str(&String::from_utf8_lossy(&file.bytes));
            }
        }
        Err(problems) => {
            for p in &problems {
                out.push_str(&format!("{p}\n{p:?}\n"));
            }
            let error = ConfigureError::Invalid(Problems(problems));
            out.push_str(&format!("{error}\n{}\n{error:?}\n", error_chain(&error)));
        }
    }
    out
}

/// Panics when any secret value (see [`secret_values`]) shows in [`shown`]'s output.
///
/// A value that shows is a leak only if it shows *because of* the value: the check runs again with
/// every payload holding it rewritten (the value replaced by one of the same length made of a
/// character no message uses). If the text is still there, it came from elsewhere (a setting name,
/// a secret id, the config, a fixed message), not from the secret.
pub fn no_secret_shown(cfg: &Settings, payloads: &BTreeMap<String, SecretPayload>) {
    let out = shown(cfg, payloads);
    // The TLS certificate is public and shown; text it shares with a secret (PEM framing such as
    // `-----END CERTIFICATE-----`) gives nothing away.
    let certificate = cfg
        .secrets
        .tls_cert
        .as_ref()
        .and_then(|id| payloads.get(id))
        .map(|p| match p {
            SecretPayload::String(s) => s.expose().to_string(),
            SecretPayload::Binary(b) => String::from_utf8_lossy(b.expose()).into_owned(),
        })
        .unwrap_or_default();
    let windows = char_windows(&out);
    let shows = |needle: &str| match needle.chars().count() {
        MIN_NEEDLE_CHARS => windows.contains(needle),
        _ => out.contains(needle),
    };
    for (id, value) in secret_values(cfg, payloads) {
        for needle in needles(&value) {
            if !shows(&needle) || certificate.contains(&needle) {
                continue;
            }
            let masked = mask(payloads, &value);
            if shown(cfg, &masked).contains(&needle) {
                continue;
            }
            panic!(
                "a value of secret {id:?} shows in the agent's output: {needle:?} (value {value:?})\n\
                 --- output ---\n{out}"
            );
        }
    }
}

/// Every secret value in the payloads, by secret id: the whole payload, or for a JSON object every
/// string inside it (nested strings and nested keys too; its top-level keys are setting names,
/// which the agent names in its messages). The TLS certificate is public by design (written 0644, shown by
/// `render --dry-run`) and is left out.
pub fn secret_values(
    cfg: &Settings,
    payloads: &BTreeMap<String, SecretPayload>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (id, payload) in payloads {
        if cfg.secrets.tls_cert.as_deref() == Some(id.as_str()) {
            continue;
        }
        match payload {
            SecretPayload::String(s) => match serde_json::from_str(s.expose()) {
                // An object's text holds its setting names; its values are the secrets.
                Ok(serde_json::Value::Object(map)) => {
                    for value in map.values() {
                        strings_in(value, &mut |v| out.push((id.clone(), v.to_string())));
                    }
                }
                _ => out.push((id.clone(), s.expose().to_string())),
            },
            SecretPayload::Binary(b) => {
                out.push((id.clone(), String::from_utf8_lossy(b.expose()).into_owned()));
            }
        }
    }
    out
}

fn strings_in(value: &serde_json::Value, f: &mut dyn FnMut(&str)) {
    match value {
        serde_json::Value::String(s) => f(s),
        serde_json::Value::Array(items) => items.iter().for_each(|v| strings_in(v, f)),
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                f(k);
                strings_in(v, f);
            }
        }
        _ => {}
    }
}

/// Shortest text taken as identifying a value: shorter ones ("1", "tfe", a port) occur in any
/// output by chance, so only their absence from fixed places can be tested (see the tests).
pub const MIN_NEEDLE_CHARS: usize = 8;

/// The forms of a value that would give it away: raw, JSON-escaped, `Debug`-escaped, base64, and
/// every window of [`MIN_NEEDLE_CHARS`] characters (a truncated value is a leak too).
pub fn needles(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let chars: Vec<char> = value.chars().collect();
    if chars.len() < MIN_NEEDLE_CHARS {
        return out;
    }
    out.push(value.to_string());
    let json = serde_json::to_string(value).unwrap();
    out.push(json[1..json.len() - 1].to_string());
    let debug = format!("{value:?}");
    out.push(debug[1..debug.len() - 1].to_string());
    out.push(base64::engine::general_purpose::STANDARD.encode(value));
    // Windows of long values would cost more than they find; their start and end still count.
    let starts: Vec<usize> = if chars.len() <= 256 {
        (0..=chars.len() - MIN_NEEDLE_CHARS).collect()
    } else {
        vec![0, chars.len() - MIN_NEEDLE_CHARS]
    };
    for i in starts {
        out.push(chars[i..i + MIN_NEEDLE_CHARS].iter().collect());
    }
    out.sort();
    out.dedup();
    out
}

/// Every run of [`MIN_NEEDLE_CHARS`] characters in `text`: one lookup per window of a value instead
/// of a search through the whole output. Hashed with fixed keys: the default random ones would make
/// AFL see a different path for the same input.
fn char_windows(
    text: &str,
) -> std::collections::HashSet<&str, std::hash::BuildHasherDefault<std::hash::DefaultHasher>> {
    let starts: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect();
    starts
        .windows(MIN_NEEDLE_CHARS + 1)
        .map(|w| &text[w[0]..w[MIN_NEEDLE_CHARS]])
        .collect()
}

/// The payloads with every occurrence of `value` (in a whole payload or in a JSON string inside
/// one) replaced by a same-length run of '☃', a character no message of the agent contains.
fn mask(
    payloads: &BTreeMap<String, SecretPayload>,
    value: &str,
) -> BTreeMap<String, SecretPayload> {
    let snowmen: String = value.chars().map(|_| '☃').collect();
    payloads
        .iter()
        .map(|(id, payload)| {
            let masked = match payload {
                SecretPayload::String(s) => {
                    let text = s.expose();
                    let new = match serde_json::from_str::<serde_json::Value>(text) {
                        Ok(mut json @ serde_json::Value::Object(_)) if text != value => {
                            replace_strings(&mut json, value, &snowmen, true);
                            json.to_string()
                        }
                        _ => text.replace(value, &snowmen),
                    };
                    text_payload(&new)
                }
                SecretPayload::Binary(b) => {
                    let lossy = String::from_utf8_lossy(b.expose());
                    if lossy.contains(value) {
                        SecretPayload::Binary(SecretBytes::new(
                            lossy.replace(value, &snowmen).into_bytes(),
                        ))
                    } else {
                        payload.clone()
                    }
                }
            };
            (id.clone(), masked)
        })
        .collect()
}

/// Replaces `value` in every string of a JSON payload, and in every object key below the top level
/// (top-level keys are setting names and stay).
fn replace_strings(json: &mut serde_json::Value, value: &str, with: &str, top: bool) {
    match json {
        serde_json::Value::String(s) => *s = s.replace(value, with),
        serde_json::Value::Array(items) => items
            .iter_mut()
            .for_each(|v| replace_strings(v, value, with, false)),
        serde_json::Value::Object(map) => {
            for (k, mut v) in std::mem::take(map) {
                replace_strings(&mut v, value, with, false);
                let k = if top { k } else { k.replace(value, with) };
                map.insert(k, v);
            }
        }
        _ => {}
    }
}

/// A small stable hash, so marked values differ per key without a random source.
fn fxhash(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    })
}
