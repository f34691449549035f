//! The agent's settings as the flows use them: agent.toml after every rule that needs nothing but
//! the file itself. Parsing (`file.rs`) checks types and keys; this checks values — the release
//! sequence, the TLS bootstrap type, the Replicated log level, the install.sh digest pin and the
//! types of `[settings]` values — so a wrong agent.toml is reported before any AWS call. Rules
//! that need the secrets too live in `crate::tfe_files::validate`.

use super::file::{
    AgentConfig, AwsSection, ClusterSection, DrainSection, DriftSection, InstallSection,
    LifecycleSection, PathsSection, PreflightSection, ReadinessSection, SecretsSection,
    TerminationSection, ToolsSection,
};
use crate::model::problem::{Origin, Problem};
use std::collections::BTreeMap;
use std::num::NonZeroU64;

/// agent.toml, checked. Field names follow the file's sections.
#[derive(Debug, Clone)]
pub struct Settings {
    pub aws: AwsSection,
    pub secrets: SecretsSection,
    pub replicated: Replicated,
    /// The non-secret ptfe settings of `[settings]`, as the text TFE gets (integers as decimal,
    /// booleans as "1"/"0").
    pub settings: BTreeMap<String, String>,
    pub install: InstallSection,
    pub tools: ToolsSection,
    pub readiness: ReadinessSection,
    pub lifecycle: LifecycleSection,
    pub termination: TerminationSection,
    pub drain: DrainSection,
    pub paths: PathsSection,
    /// Where the HTTP API listens; empty: `"off"`.
    pub listen: Vec<Endpoint>,
    pub cluster: ClusterSection,
    pub preflight: PreflightSection,
    pub drift: DriftSection,
}

/// One place the HTTP API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Read-only endpoints only.
    Tcp(std::net::SocketAddr),
    /// Root only (mode 0660); the only place that may ever serve what changes the node.
    Unix(std::path::PathBuf),
}

impl Endpoint {
    /// `"ADDR:PORT"` or `"unix:/ABSOLUTE/PATH"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            let path = std::path::PathBuf::from(path);
            return if path.is_absolute() && path.file_name().is_some() {
                Ok(Endpoint::Unix(path))
            } else {
                Err(format!("{text:?}: a unix socket needs an absolute file path, e.g. unix:/run/tfe-node-agent/agent.sock"))
            };
        }
        text.parse().map(Endpoint::Tcp).map_err(|_| {
            format!("{text:?} is neither ADDR:PORT (e.g. 127.0.0.1:18800, [::1]:18800), unix:/PATH nor off")
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "http://{a}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// `[replicated]`, checked.
#[derive(Debug, Clone)]
pub struct Replicated {
    /// Pins the TFE release (ReleaseSequence); Active/Active requires a pin.
    pub release_sequence: NonZeroU64,
    pub tls_bootstrap_type: TlsBootstrapType,
    pub tls_bootstrap_hostname: Option<String>,
    pub bypass_preflight_checks: bool,
    pub log_level: Option<ReplicatedLogLevel>,
}

/// replicated.conf `TlsBootstrapType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsBootstrapType {
    SelfSigned,
    /// Certificate and key written as files, named by path.
    ServerPath,
    /// Certificate and key inlined in replicated.conf.
    KeyCert,
}

impl TlsBootstrapType {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "self-signed" => Some(TlsBootstrapType::SelfSigned),
            "server-path" => Some(TlsBootstrapType::ServerPath),
            "key-cert" => Some(TlsBootstrapType::KeyCert),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TlsBootstrapType::SelfSigned => "self-signed",
            TlsBootstrapType::ServerPath => "server-path",
            TlsBootstrapType::KeyCert => "key-cert",
        }
    }

    /// Whether it needs the TLS certificate and key secrets.
    pub fn needs_certificate(self) -> bool {
        self != TlsBootstrapType::SelfSigned
    }
}

/// replicated.conf `LogLevel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicatedLogLevel {
    Debug,
    Info,
    Error,
}

impl ReplicatedLogLevel {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "debug" => Some(ReplicatedLogLevel::Debug),
            "info" => Some(ReplicatedLogLevel::Info),
            "error" => Some(ReplicatedLogLevel::Error),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReplicatedLogLevel::Debug => "debug",
            ReplicatedLogLevel::Info => "info",
            ReplicatedLogLevel::Error => "error",
        }
    }
}

impl Settings {
    /// Checks the parsed file; every problem is reported at once, each naming its key.
    pub fn from_file(file: AgentConfig) -> Result<Settings, Vec<Problem>> {
        let mut problems = Vec::new();

        let mut settings = BTreeMap::new();
        for (key, value) in file.settings {
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => if b { "1" } else { "0" }.to_string(),
                other => {
                    problems.push(Problem::new(
                        &key,
                        Origin::config(format!("settings.{key}")),
                        format!(
                            "must be a string, integer or boolean, found a {}",
                            other.type_str()
                        ),
                    ));
                    continue;
                }
            };
            settings.insert(key, text);
        }

        let release_sequence = match file.replicated.release_sequence {
            toml::Value::Integer(n) => u64::try_from(n).ok().and_then(NonZeroU64::new),
            _ => None,
        };
        if release_sequence.is_none() {
            problems.push(Problem::new(
                "",
                Origin::config("replicated.release_sequence"),
                "must be a positive integer (a TFE release sequence, e.g. 504 for v202101-1)",
            ));
        }

        // A malformed pin is an invalid config, found before anything is written — not a
        // script that failed its check after the files were.
        if let Some(pin) = &file.install.sha256 {
            let pin = pin.trim();
            if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
                problems.push(Problem::new(
                    "",
                    Origin::config("install.sha256"),
                    "must be a SHA-256 digest: 64 hex digits",
                ));
            }
        }

        let tls_bootstrap_type = TlsBootstrapType::parse(&file.replicated.tls_bootstrap_type);
        if tls_bootstrap_type.is_none() {
            problems.push(Problem::new(
                "",
                Origin::config("replicated.tls_bootstrap_type"),
                "must be one of self-signed, server-path, key-cert",
            ));
        }
        let log_level = match &file.replicated.log_level {
            None => Some(None),
            Some(text) => ReplicatedLogLevel::parse(text).map(Some),
        };
        if log_level.is_none() {
            problems.push(Problem::new(
                "",
                Origin::config("replicated.log_level"),
                "must be one of debug, info, error",
            ));
        }

        if file.drift.interval.is_zero() {
            problems.push(Problem::new(
                "",
                Origin::config("drift.interval"),
                "must be above zero (turn drift detection off with drift.enabled = false)",
            ));
        }
        let c = &file.cluster;
        if c.heartbeat_interval.is_zero() || c.node_ttl < c.heartbeat_interval * 2 {
            problems.push(Problem::new(
                "",
                Origin::config("cluster.node_ttl"),
                "must be at least twice cluster.heartbeat_interval (and that above zero): one lost heartbeat must not make a node stale",
            ));
        }
        if c.key_prefix.is_empty() {
            problems.push(Problem::new(
                "",
                Origin::config("cluster.key_prefix"),
                "must not be empty: the agent's keys must never collide with TFE's own",
            ));
        }

        let p = &file.preflight;
        if p.check_timeout.is_zero() || p.timeout.is_zero() {
            problems.push(Problem::new(
                "",
                Origin::config("preflight.check_timeout"),
                "preflight.check_timeout and preflight.timeout must be above zero (to turn preflight off: preflight.enabled = false)",
            ));
        }

        let addresses = file.observe.listen.addresses();
        let mut listen = Vec::new();
        if addresses != ["off"] {
            for address in addresses {
                match Endpoint::parse(address) {
                    Ok(e) if listen.contains(&e) => problems.push(Problem::new(
                        "",
                        Origin::config("observe.listen"),
                        format!("{address:?} is listed twice"),
                    )),
                    Ok(e) => listen.push(e),
                    Err(why) => {
                        problems.push(Problem::new("", Origin::config("observe.listen"), why));
                    }
                }
            }
        }

        let (Some(release_sequence), Some(tls_bootstrap_type), Some(log_level), true) = (
            release_sequence,
            tls_bootstrap_type,
            log_level,
            problems.is_empty(),
        ) else {
            return Err(problems);
        };
        Ok(Settings {
            aws: file.aws,
            secrets: file.secrets,
            replicated: Replicated {
                release_sequence,
                tls_bootstrap_type,
                tls_bootstrap_hostname: file.replicated.tls_bootstrap_hostname,
                bypass_preflight_checks: file.replicated.bypass_preflight_checks,
                log_level,
            },
            settings,
            install: file.install,
            tools: file.tools,
            readiness: file.readiness,
            lifecycle: file.lifecycle,
            termination: file.termination,
            drain: file.drain,
            paths: file.paths,
            listen,
            cluster: file.cluster,
            preflight: file.preflight,
            drift: file.drift,
        })
    }
}
