//! Which secrets the agent needs, and how the payloads fetched through the
//! [`SecretSource`](crate::ports::SecretSource) port are decoded into a [`SecretBundle`]. Decoding
//! problems are collected, not thrown, so `validate` can report every problem at once.

use crate::config::SecretsSection;
use crate::model::problem::{Origin, Problem};
use crate::ports::SecretPayload;
use crate::sys::secret::{Secret, SecretBytes};
use base64::Engine;
use std::collections::BTreeMap;

/// Roles a secret id can play, in config order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Shared,
    License,
    ConsolePassword,
    TlsCert,
    TlsKey,
    CaBundle,
}

/// `(role, secret id)` for every configured secret.
pub fn requested(cfg: &SecretsSection) -> Vec<(Role, String)> {
    [
        (Role::Shared, Some(&cfg.shared)),
        (Role::License, cfg.license.as_ref()),
        (Role::ConsolePassword, cfg.console_password.as_ref()),
        (Role::TlsCert, cfg.tls_cert.as_ref()),
        (Role::TlsKey, cfg.tls_key.as_ref()),
        (Role::CaBundle, cfg.ca_bundle.as_ref()),
    ]
    .into_iter()
    .filter_map(|(role, id)| id.map(|id| (role, id.clone())))
    .collect()
}

/// The decoded secrets. Every value stays wrapped; ids are kept to name them in problems.
#[derive(Debug, Default, Clone)]
pub struct SecretBundle {
    pub shared_id: String,
    /// ptfe settings from the shared secret's JSON object.
    pub shared: BTreeMap<String, Secret>,
    pub license: Option<SecretBytes>,
    pub console_password: Option<Secret>,
    pub tls_cert: Option<Secret>,
    pub tls_key: Option<Secret>,
    pub ca_bundle: Option<(String, Secret)>,
}

/// Decodes fetched payloads by role. Problems name the secret id and key, never a value.
pub fn decode(
    cfg: &SecretsSection,
    mut fetched: BTreeMap<String, SecretPayload>,
) -> (SecretBundle, Vec<Problem>) {
    let mut bundle = SecretBundle {
        shared_id: cfg.shared.clone(),
        ..Default::default()
    };
    let mut problems = Vec::new();
    for (role, id) in requested(cfg) {
        let Some(payload) = fetched.remove(&id) else {
            problems.push(Problem::new(
                "",
                Origin::secret(&id),
                "was not returned by Secrets Manager",
            ));
            continue;
        };
        let mut problem = |msg: &str| problems.push(Problem::new("", Origin::secret(&id), msg));
        match (role, payload) {
            (Role::Shared, SecretPayload::String(s)) => match decode_shared(&id, &s) {
                Ok((map, mut ps)) => {
                    bundle.shared = map;
                    problems.append(&mut ps);
                }
                Err(msg) => problems.push(Problem::new("", Origin::secret(&id), msg)),
            },
            (Role::Shared, SecretPayload::Binary(_)) => {
                problem("must be a SecretString holding a JSON object of setting name -> string");
            }
            (Role::License, SecretPayload::Binary(b)) if !b.expose().is_empty() => {
                bundle.license = Some(b);
            }
            (Role::License, SecretPayload::String(s)) => {
                let text: String = s.expose().chars().filter(|c| !c.is_whitespace()).collect();
                match base64::engine::general_purpose::STANDARD.decode(text.as_bytes()) {
                    Ok(bytes) if !bytes.is_empty() => {
                        bundle.license = Some(SecretBytes::new(bytes));
                    }
                    _ => problem("license as SecretString must be base64 of the .rli file"),
                }
            }
            (Role::License, SecretPayload::Binary(_)) => problem("license SecretBinary is empty"),
            (Role::ConsolePassword, SecretPayload::String(s)) if !s.expose().is_empty() => {
                bundle.console_password = Some(s);
            }
            (Role::ConsolePassword, _) => {
                problem("console password must be a non-empty SecretString");
            }
            (Role::TlsCert | Role::TlsKey | Role::CaBundle, SecretPayload::String(s)) => {
                if !s.expose().contains("-----BEGIN ") {
                    problem("must be PEM text (-----BEGIN ...)");
                } else {
                    match role {
                        Role::TlsCert => bundle.tls_cert = Some(s),
                        Role::TlsKey => bundle.tls_key = Some(s),
                        _ => bundle.ca_bundle = Some((id.clone(), s)),
                    }
                }
            }
            (Role::TlsCert | Role::TlsKey | Role::CaBundle, SecretPayload::Binary(_)) => {
                problem("must be PEM text in SecretString");
            }
        }
    }
    (bundle, problems)
}

/// The shared secret: a JSON object of ptfe setting name -> string.
fn decode_shared(
    id: &str,
    text: &Secret,
) -> Result<(BTreeMap<String, Secret>, Vec<Problem>), &'static str> {
    // serde_json's error text can quote input; it is dropped on purpose.
    let value: serde_json::Value = serde_json::from_str(text.expose()).map_err(|_| {
        "SecretString is not valid JSON (expected an object of setting name -> string)"
    })?;
    let serde_json::Value::Object(map) = value else {
        return Err("SecretString must be a JSON object of setting name -> string");
    };
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    for (key, value) in map {
        match value {
            serde_json::Value::String(s) => {
                out.insert(key, Secret::new(s));
            }
            other => problems.push(Problem::new(
                &key,
                Origin::secret(id),
                format!("must be a JSON string, found {}", json_kind(&other)),
            )),
        }
    }
    Ok((out, problems))
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
