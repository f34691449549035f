//! Every rule a node's configuration must pass before anything is written. Pure code: it takes the
//! parsed config and the decoded secrets and returns either a [`TfeConfig`] or *all* the problems,
//! each naming the key and where it came from, never the value.

use crate::config::{ReplicatedLogLevel, Settings, TlsBootstrapType};
pub use crate::model::problem::{Origin, Problem};
use crate::sys::secret::{Secret, SecretBytes};
use crate::tfe_files::secret_bundle::SecretBundle;
use std::collections::BTreeMap;

/// A ptfe setting value; secret ones stay wrapped until they are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingValue {
    Plain(String),
    Secret(Secret),
}

impl SettingValue {
    pub fn expose(&self) -> &str {
        match self {
            SettingValue::Plain(s) => s,
            SettingValue::Secret(s) => s.expose(),
        }
    }
    pub fn is_secret(&self) -> bool {
        matches!(self, SettingValue::Secret(_))
    }
}

/// Everything needed to render the node's files, validated.
#[derive(Debug, Clone)]
pub struct TfeConfig {
    pub settings: BTreeMap<String, SettingValue>,
    pub release_sequence: u64,
    pub tls_bootstrap_type: TlsBootstrapType,
    /// The `hostname` setting unless the config names another; secret when the hostname came
    /// from the shared secret, so `render --dry-run` redacts it like every other secret value.
    pub tls_bootstrap_hostname: SettingValue,
    pub bypass_preflight_checks: bool,
    pub log_level: Option<ReplicatedLogLevel>,
    pub console_password: Option<Secret>,
    pub license: Option<SecretBytes>,
    /// PEM cert and key, written as files for `server-path` and inlined for `key-cert`.
    pub tls: Option<(Secret, Secret)>,
}

impl TfeConfig {
    /// 16 hex digits that change when any rendered setting does (names and values, secret ones
    /// included), for `/status` and comparing nodes by eye. Never a value: SHA-256 over the whole
    /// set, which always holds several independent random secrets (enc_password, the tokens), so
    /// it can neither be inverted nor used to test a guess of one value without knowing all the
    /// others.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update(b"tfe-node-agent settings v1\0");
        for (key, value) in &self.settings {
            for part in [key.as_bytes(), value.expose().as_bytes()] {
                hash.update((part.len() as u64).to_be_bytes());
                hash.update(part);
            }
        }
        hash.update(self.release_sequence.to_be_bytes());
        hash.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Settings the agent always writes, whatever the sources say.
const ACTIVE_ACTIVE: (&str, &str) = ("enable_active_active", "1");
const PRODUCTION_TYPE: (&str, &str) = ("production_type", "external");

/// Required in every Active/Active node with external services.
const REQUIRED: &[&str] = &[
    "hostname",
    "enc_password",
    "pg_netloc",
    "pg_dbname",
    "pg_user",
    "pg_password",
    "placement",
    "redis_host",
    "redis_port",
];

/// Settings whose only values are "0" and "1" (docs/design/tfe-tools.md §3.2).
const FLAGS: &[&str] = &[
    "aws_instance_profile",
    "azure_use_msi",
    "consolidated_services",
    "enable_active_active",
    "extern_vault_enable",
    "force_tls",
    "hairpin_addressing",
    "log_forwarding_enabled",
    "metrics_endpoint_enabled",
    "redis_use_mtls",
    "redis_use_password_auth",
    "redis_use_tls",
    "restrict_worker_metadata_access",
    "vault_store_snapshot",
];

/// "Specific Format Required: Must be a hex value" (docs/design/tfe-tools.md §3.3).
const HEX: &[&str] = &[
    "internal_api_token",
    "registry_session_encryption_key",
    "registry_session_secret_key",
];

/// Validates config + secrets together. `problems` carries what decoding the secrets found already.
pub fn validate(
    cfg: &Settings,
    bundle: SecretBundle,
    mut problems: Vec<Problem>,
) -> Result<TfeConfig, Vec<Problem>> {
    let shared_id = bundle.shared_id.clone();
    let mut merged = Merged::default();

    for (key, value) in &cfg.settings {
        let origin = Origin::config(format!("settings.{key}"));
        merged.insert(key, SettingValue::Plain(value.clone()), origin);
    }
    for (key, value) in bundle.shared {
        merged.insert(
            &key,
            SettingValue::Secret(value),
            Origin::secret(&shared_id),
        );
    }
    if let Some((id, pem)) = bundle.ca_bundle {
        merged.insert("ca_certs", SettingValue::Secret(pem), Origin::secret(id));
    }
    problems.append(&mut merged.conflicts);

    for (key, fixed) in [ACTIVE_ACTIVE, PRODUCTION_TYPE] {
        match merged.get(key) {
            Some((v, origin)) if v.expose() != fixed => problems.push(Problem::new(
                key,
                origin.clone(),
                format!("must be \"{fixed}\" for an Active/Active node"),
            )),
            Some(_) => {}
            None => merged.insert(key, SettingValue::Plain(fixed.into()), Origin::Agent),
        }
    }

    check_settings(&merged, &shared_id, &mut problems);

    let tls_type = cfg.replicated.tls_bootstrap_type;
    let tls = match (bundle.tls_cert, bundle.tls_key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => {
            problems.push(Problem::new(
                "",
                Origin::config("secrets.tls_cert"),
                "secrets.tls_cert and secrets.tls_key must be set together",
            ));
            None
        }
    };
    let needs_tls = tls_type.needs_certificate();
    if needs_tls && tls.is_none() {
        problems.push(Problem::new(
            "",
            Origin::config("replicated.tls_bootstrap_type"),
            "server-path and key-cert need secrets.tls_cert and secrets.tls_key",
        ));
    }
    if !needs_tls && tls.is_some() {
        problems.push(Problem::new(
            "",
            Origin::config("secrets.tls_cert"),
            "is only used with tls_bootstrap_type server-path or key-cert",
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let hostname = merged.get("hostname").map(|(v, _)| v.clone());
    Ok(TfeConfig {
        tls_bootstrap_hostname: cfg
            .replicated
            .tls_bootstrap_hostname
            .clone()
            .map(SettingValue::Plain)
            .or(hostname)
            .unwrap_or(SettingValue::Plain(String::new())),
        settings: merged
            .values
            .into_iter()
            .map(|(k, (v, _))| (k, v))
            .collect(),
        release_sequence: cfg.replicated.release_sequence.get(),
        tls_bootstrap_type: tls_type,
        bypass_preflight_checks: cfg.replicated.bypass_preflight_checks,
        log_level: cfg.replicated.log_level,
        console_password: bundle.console_password,
        license: bundle.license,
        tls,
    })
}

/// Settings from all sources, remembering where each came from; a key set twice is a conflict.
#[derive(Default)]
struct Merged {
    values: BTreeMap<String, (SettingValue, Origin)>,
    conflicts: Vec<Problem>,
}

impl Merged {
    fn insert(&mut self, key: &str, value: SettingValue, origin: Origin) {
        if let Some((_, first)) = self.values.get(key) {
            self.conflicts.push(Problem::new(
                key,
                origin,
                format!("is also set in {first}; set each setting in one place only"),
            ));
            return;
        }
        self.values.insert(key.to_string(), (value, origin));
    }

    fn get(&self, key: &str) -> Option<&(SettingValue, Origin)> {
        self.values.get(key)
    }

    fn value(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|(v, _)| v.expose())
    }
}

fn check_settings(m: &Merged, shared_id: &str, problems: &mut Vec<Problem>) {
    let missing = || Origin::Missing {
        shared_secret: shared_id.to_string(),
    };
    let require = |key: &str, why: &str, problems: &mut Vec<Problem>| match m.value(key) {
        Some(v) if !v.is_empty() => {}
        Some(_) => problems.push(Problem::new(
            key,
            m.get(key).unwrap().1.clone(),
            "must not be empty",
        )),
        // Given, but refused already (e.g. a number where a string belongs): one problem is enough.
        None if problems.iter().any(|p| p.key == key) => {}
        None => problems.push(Problem::new(key, missing(), format!("is required{why}"))),
    };
    for key in REQUIRED {
        require(key, "", problems);
    }

    for (key, (value, origin)) in &m.values {
        let v = value.expose();
        let bad = |msg: &str| Problem::new(key, origin.clone(), msg);
        if !is_setting_name(key) {
            problems.push(bad(
                "is not a ptfe setting name (lowercase letters, digits, _)",
            ));
        }
        if FLAGS.contains(&key.as_str()) && v != "0" && v != "1" {
            problems.push(bad("is a flag and must be \"0\" or \"1\""));
        }
        if HEX.contains(&key.as_str())
            && (v.is_empty() || !v.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            problems.push(bad("must be a hex value (e.g. 32 hex characters)"));
        }
    }

    if let Some(port) = m.value("redis_port") {
        if parse_port(port).is_none() {
            problems.push(Problem::new(
                "redis_port",
                m.get("redis_port").unwrap().1.clone(),
                "must be a port number 1-65535",
            ));
        }
    }
    if m.value("redis_use_password_auth") == Some("1") {
        require(
            "redis_pass",
            " because redis_use_password_auth is \"1\"",
            problems,
        );
    }
    if let Some(netloc) = m.value("pg_netloc") {
        if !is_host_port(netloc) {
            problems.push(Problem::new(
                "pg_netloc",
                m.get("pg_netloc").unwrap().1.clone(),
                "must be host:port (port 1-65535)",
            ));
        }
    }
    if let Some(host) = m.value("hostname") {
        if !host.is_empty() && !is_hostname(host) {
            problems.push(Problem::new(
                "hostname",
                m.get("hostname").unwrap().1.clone(),
                "must be a DNS name such as tfe.example.com (no scheme, port or path)",
            ));
        }
    }
    match m.value("placement") {
        Some("placement_s3") => {
            require("s3_bucket", " for placement_s3", problems);
            require("s3_region", " for placement_s3", problems);
            if m.value("aws_instance_profile") != Some("1") {
                require(
                    "aws_access_key_id",
                    " for placement_s3 unless aws_instance_profile is \"1\"",
                    problems,
                );
                require(
                    "aws_secret_access_key",
                    " for placement_s3 unless aws_instance_profile is \"1\"",
                    problems,
                );
            }
            if let Some(sse) = m.value("s3_sse") {
                if !sse.is_empty() && sse != "aws:kms" {
                    problems.push(Problem::new(
                        "s3_sse",
                        m.get("s3_sse").unwrap().1.clone(),
                        "must be \"aws:kms\" when set",
                    ));
                }
            }
        }
        Some("placement_azure") => {
            require("azure_account_name", " for placement_azure", problems);
            require("azure_container", " for placement_azure", problems);
        }
        Some("placement_gcs") => {
            for key in ["gcs_project", "gcs_bucket", "gcs_credentials"] {
                require(key, " for placement_gcs", problems);
            }
        }
        Some("") | None => {}
        Some(_) => problems.push(Problem::new(
            "placement",
            m.get("placement").unwrap().1.clone(),
            "must be one of placement_s3, placement_azure, placement_gcs",
        )),
    }
}

fn is_setting_name(key: &str) -> bool {
    key.starts_with(|c: char| c.is_ascii_lowercase())
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn parse_port(text: &str) -> Option<u16> {
    // Digits only, no sign or leading zero: what TFE's own parsing would take as a port.
    let canonical =
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && !text.starts_with('0');
    text.parse::<u16>().ok().filter(|_| canonical)
}

/// `host:port`, where host may be a bracketed IPv6 address.
fn is_host_port(text: &str) -> bool {
    let Some((host, port)) = text.rsplit_once(':') else {
        return false;
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        is_hostname(host)
    };
    host_ok && parse_port(port).is_some()
}

fn is_hostname(text: &str) -> bool {
    text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests;
