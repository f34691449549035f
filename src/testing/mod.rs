//! Inputs shared by the unit tests: the documented example config, a valid shared secret, the
//! node's record at the usual starting points (`states`) and a fake of every port (`fakes`).

pub mod fakes;
pub mod states;

use crate::config::{self, Settings};
use crate::ports::SecretPayload;
use crate::sys::secret::{Secret, SecretBytes};
use crate::tfe_files::secret_bundle;
use crate::tfe_files::validate::{self, Problem, TfeConfig};
use std::collections::BTreeMap;
use std::path::Path;

pub const EXAMPLE_CONFIG: &str = include_str!("../../packaging/agent.toml.example");

/// The shared secret of a valid node (illustrative values from docs/design/tfe-tools.md §3.6).
pub fn valid_shared() -> serde_json::Map<String, serde_json::Value> {
    serde_json::from_str(
        r#"{
        "enc_password": "767fee4e6046de48943df2decc55f3cd",
        "pg_password": "pg-secret",
        "redis_pass": "redis-secret",
        "install_id": "28f5d86814893a45faafbff52ad1efc0",
        "root_secret": "e41028914bbe63f1bb6f3c6a59be7cd5",
        "user_token": "87c07f934a979d9e071dc30bdc570dd4",
        "archivist_token": "8975b57fb001517fe009b310da90afcd",
        "cookie_hash": "5ae19acaf6d4fdc75caa8fd9256c5576",
        "internal_api_token": "80fc62a320240b02e28da24c3554e1c4",
        "registry_session_encryption_key": "978a42cd38a567d7fb1456c8991cb541",
        "registry_session_secret_key": "99934b8d65bf743a324a42de4491fb95"
    }"#,
    )
    .unwrap()
}

/// The settings of a config text that parses and passes every agent.toml rule.
pub fn parse(config_text: &str) -> Settings {
    let file = config::parse(config_text, Path::new("agent.toml")).expect("config parses");
    let mut settings = Settings::from_file(file).expect("config is valid");
    // The example names a Redis: the flows' tests join no cluster unless the config (or the
    // test) turns it on explicitly.
    if settings.cluster.enabled.is_none() {
        settings.cluster.enabled = Some(false);
    }
    // Likewise no preflight (the fake license is three bytes); a test of it turns it on.
    settings.preflight.enabled = false;
    settings
}

pub fn text(s: &str) -> SecretPayload {
    SecretPayload::String(Secret::new(s))
}

/// Config + payloads through decode and validate, as the agent does. The shared secret is
/// `tfe/shared` and the license `tfe/license` (bytes "RLI") unless `extra` overrides them.
pub fn tfe_config(
    config_text: &str,
    shared: serde_json::Map<String, serde_json::Value>,
    extra: Vec<(&str, SecretPayload)>,
) -> Result<TfeConfig, Vec<Problem>> {
    let file = config::parse(config_text, Path::new("agent.toml")).expect("config parses");
    // agent.toml's own rules come first (the agent checks them before any AWS call).
    let cfg = Settings::from_file(file)?;
    let mut fetched = BTreeMap::new();
    fetched.insert(
        "tfe/shared".to_string(),
        text(&serde_json::Value::Object(shared).to_string()),
    );
    fetched.insert(
        "tfe/license".to_string(),
        SecretPayload::Binary(SecretBytes::new(b"RLI".to_vec())),
    );
    for (id, payload) in extra {
        fetched.insert(id.to_string(), payload);
    }
    let (bundle, problems) = secret_bundle::decode(&cfg.secrets, fetched);
    validate::validate(&cfg, bundle, problems)
}
