//! The agent config file as written by operators (TOML), before any semantic validation.
//!
//! Structural rules live here: types, defaults, and "no unknown keys". Semantic rules that need the
//! secrets too (required ptfe settings, formats) live in `crate::tfe_files::validate`, so every problem can be
//! reported in one pass.

use crate::model::asg::HookResult;
use crate::model::cluster::TooManyPolicy;
use crate::model::preflight::CheckId;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The whole file. Every section is optional except `[secrets]`, `[replicated]` and `[install]`.
#[derive(Debug, Clone, Deserialize)]
pub struct AgentConfig {
    #[serde(default)]
    pub aws: AwsSection,
    pub secrets: SecretsSection,
    pub replicated: ReplicatedSection,
    /// Non-secret ptfe settings. TOML strings, integers and booleans are accepted; see `validate`.
    #[serde(default)]
    pub settings: BTreeMap<String, toml::Value>,
    pub install: InstallSection,
    #[serde(default)]
    pub tools: ToolsSection,
    #[serde(default)]
    pub readiness: ReadinessSection,
    #[serde(default)]
    pub lifecycle: LifecycleSection,
    #[serde(default)]
    pub termination: TerminationSection,
    #[serde(default)]
    pub drain: DrainSection,
    #[serde(default)]
    pub paths: PathsSection,
    #[serde(default)]
    pub observe: ObserveSection,
    #[serde(default)]
    pub cluster: ClusterSection,
    #[serde(default)]
    pub preflight: PreflightSection,
    #[serde(default)]
    pub drift: DriftSection,
}

/// `[drift]`: comparing the rendered settings with what TFE runs (docs/operate/drift.md).
#[derive(Debug, Clone, Deserialize)]
pub struct DriftSection {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How often `run` compares, after the first comparison right after the node is ready.
    #[serde(default = "default_drift_interval", with = "humantime_serde_compat")]
    pub interval: Duration,
    /// app-config items never reported (site- or node-specific ones), added to the built-in
    /// allowlist.
    #[serde(default)]
    pub ignore: Vec<String>,
}

fn default_drift_interval() -> Duration {
    Duration::from_secs(300)
}

impl Default for DriftSection {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: default_drift_interval(),
            ignore: Vec::new(),
        }
    }
}

/// `[preflight]`: the dependency checks run before install.sh (and by `tfe-node-agent preflight`).
#[derive(Debug, Clone, Deserialize)]
pub struct PreflightSection {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Each check's own time limit.
    #[serde(default = "default_check_timeout", with = "humantime_serde_compat")]
    pub check_timeout: Duration,
    /// All checks together (they run concurrently, so this binds only above `check_timeout`).
    #[serde(default = "default_preflight_timeout", with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// Checks not to run, by id. The join guard is not a check: it cannot be skipped.
    #[serde(default)]
    pub skip: Vec<CheckId>,
    /// The Docker Engine API socket, checked when install.sh is told not to install Docker.
    #[serde(default = "default_docker_socket")]
    pub docker_socket: PathBuf,
    /// Where the Admin UI would listen; after install it must not serve there.
    #[serde(default = "default_admin_ui")]
    pub admin_ui: String,
}

fn default_check_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_preflight_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_docker_socket() -> PathBuf {
    PathBuf::from("/var/run/docker.sock")
}
fn default_admin_ui() -> String {
    "127.0.0.1:8800".into()
}

impl Default for PreflightSection {
    fn default() -> Self {
        Self {
            enabled: true,
            check_timeout: default_check_timeout(),
            timeout: default_preflight_timeout(),
            skip: Vec::new(),
            docker_socket: default_docker_socket(),
            admin_ui: default_admin_ui(),
        }
    }
}

/// `[cluster]`: membership in TFE's own external Redis, and the join guard.
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterSection {
    /// Default: on when the settings name a Redis (`redis_host`), as Active/Active requires.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Every key the agent writes starts with this; TFE's own keys never do.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    #[serde(default)]
    pub database: u32,
    #[serde(default = "default_cluster_heartbeat", with = "humantime_serde_compat")]
    pub heartbeat_interval: Duration,
    /// A node not seen for this long is stale.
    #[serde(default = "default_node_ttl", with = "humantime_serde_compat")]
    pub node_ttl: Duration,
    /// More live nodes than this is a finding (or a refusal to join, with `on_too_many`).
    #[serde(default)]
    pub max_nodes: Option<u32>,
    #[serde(default)]
    pub on_too_many: TooManyPolicy,
    /// The settings that must match on every node (fingerprinted, never stored).
    #[serde(default = "default_must_match")]
    pub must_match: Vec<String>,
}

fn default_key_prefix() -> String {
    "tfe-node-agent:".into()
}
fn default_cluster_heartbeat() -> Duration {
    Duration::from_secs(10)
}
fn default_node_ttl() -> Duration {
    Duration::from_secs(30)
}
/// HashiCorp's list of the settings every Active/Active node must share (`[cluster].must_match`).
pub const MUST_MATCH: &[&str] = &[
    "enc_password",
    "install_id",
    "root_secret",
    "user_token",
    "archivist_token",
    "cookie_hash",
    "registry_session_encryption_key",
    "registry_session_secret_key",
    "internal_api_token",
];

fn default_must_match() -> Vec<String> {
    MUST_MATCH.iter().map(|k| k.to_string()).collect()
}

impl Default for ClusterSection {
    fn default() -> Self {
        Self {
            enabled: None,
            key_prefix: default_key_prefix(),
            database: 0,
            heartbeat_interval: default_cluster_heartbeat(),
            node_ttl: default_node_ttl(),
            max_nodes: None,
            on_too_many: TooManyPolicy::default(),
            must_match: default_must_match(),
        }
    }
}

/// `[observe]`: where the HTTP API (`/livez`, `/readyz`, `/status`, `/metrics`) listens.
#[derive(Debug, Clone, Deserialize)]
pub struct ObserveSection {
    /// `"127.0.0.1:PORT"`, any `"ADDR:PORT"`, `"unix:/PATH"`, `"off"`, or a list of them.
    #[serde(default = "default_listen")]
    pub listen: Listen,
}

/// One listen address or several.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Listen {
    One(String),
    Many(Vec<String>),
}

impl Listen {
    pub fn addresses(&self) -> Vec<&str> {
        match self {
            Listen::One(a) => vec![a.as_str()],
            Listen::Many(list) => list.iter().map(String::as_str).collect(),
        }
    }
}

/// The HTTP API's default port: outside the Prometheus exporters' 9100–9999 allocations, clear of
/// TFE's and Replicated's own ports (443, 8800, 8201, 9870–9880, 23000–23100) and below the
/// ephemeral range.
pub const DEFAULT_PORT: u16 = 18800;

fn default_listen() -> Listen {
    Listen::One(format!("127.0.0.1:{DEFAULT_PORT}"))
}

impl Default for ObserveSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct AwsSection {
    /// Region for Secrets Manager and Auto Scaling; default: the instance's region from IMDS.
    pub region: Option<String>,
    /// Longest one attempt of an AWS call may take (connect + answer) before the SDK retries it.
    #[serde(default = "default_attempt_timeout", with = "humantime_serde_compat")]
    pub attempt_timeout: Duration,
    /// Longest a TCP/TLS connect to an AWS endpoint may take.
    #[serde(default = "default_connect_timeout", with = "humantime_serde_compat")]
    pub connect_timeout: Duration,
    /// How long the agent keeps retrying a Secrets Manager fetch that fails for now (throttling,
    /// 5xx, dropped connections) beyond the SDK's own three attempts.
    #[serde(default = "default_retry_timeout", with = "humantime_serde_compat")]
    pub retry_timeout: Duration,
}

/// Secret ids (names or ARNs) in AWS Secrets Manager. Only ids live in the config, never values.
#[derive(Debug, Clone, Deserialize)]
pub struct SecretsSection {
    /// SecretString = JSON object of ptfe setting name -> string.
    pub shared: String,
    /// The .rli license: SecretBinary, or base64 in SecretString.
    pub license: Option<String>,
    /// Becomes DaemonAuthenticationPassword (and DaemonAuthenticationType = "password").
    pub console_password: Option<String>,
    /// PEM certificate and key for TlsBootstrapType = "server-path".
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    /// PEM bundle written into the `ca_certs` setting.
    pub ca_bundle: Option<String>,
    /// Staging label to read; default AWSCURRENT.
    pub version_stage: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReplicatedSection {
    /// Pins the TFE release (ReleaseSequence); Active/Active requires a pin.
    pub release_sequence: toml::Value,
    #[serde(default = "default_tls_bootstrap_type")]
    pub tls_bootstrap_type: String,
    /// Default: the `hostname` setting.
    pub tls_bootstrap_hostname: Option<String>,
    #[serde(default = "default_true")]
    pub bypass_preflight_checks: bool,
    /// Replicated daemon LogLevel: debug | info | error.
    pub log_level: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InstallSection {
    pub script: PathBuf,
    #[serde(default = "default_install_timeout", with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// Optional pin: the script is refused if its SHA-256 differs.
    pub sha256: Option<String>,
    pub http_proxy: Option<String>,
    #[serde(default)]
    pub additional_no_proxy: Vec<String>,
    #[serde(default)]
    pub extra_args: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ToolsSection {
    #[serde(default = "default_replicatedctl")]
    pub replicatedctl: PathBuf,
    #[serde(default = "default_replicated")]
    pub replicated: PathBuf,
    /// Asked on SIGTERM whether the whole system is going down (`is-system-running` = stopping).
    #[serde(default = "default_systemctl")]
    pub systemctl: PathBuf,
    /// Read by `support-bundle` for the unit's last journal entries; a missing one is noted.
    #[serde(default = "default_journalctl")]
    pub journalctl: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReadinessSection {
    #[serde(default = "default_readiness_timeout", with = "humantime_serde_compat")]
    pub timeout: Duration,
    #[serde(default = "default_poll_interval", with = "humantime_serde_compat")]
    pub poll_interval: Duration,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LifecycleSection {
    /// Name of the EC2_INSTANCE_LAUNCHING hook; unset = do not look for one.
    pub launch_hook: Option<String>,
    /// Name of the EC2_INSTANCE_TERMINATING hook.
    pub terminate_hook: Option<String>,
    /// Hook result sent when boot fails.
    #[serde(default)]
    pub on_failure: FailureResult,
    /// How long, counted from the boot's start, the agent keeps retrying to find its launch hook
    /// (DescribeAutoScalingInstances, DescribeLifecycleHooks) when Auto Scaling throttles or fails.
    /// The install and readiness work goes on meanwhile.
    #[serde(default = "default_discovery_timeout", with = "humantime_serde_compat")]
    pub discovery_timeout: Duration,
}

/// How the agent notices that its node is about to go.
#[derive(Debug, Clone, Deserialize)]
pub struct TerminationSection {
    /// IMDS `autoscaling/target-lifecycle-state`.
    #[serde(default = "default_termination_poll", with = "humantime_serde_compat")]
    pub poll_interval: Duration,
    /// `spot/instance-action` and rebalance recommendations (spot instances only).
    #[serde(default = "default_spot_poll", with = "humantime_serde_compat")]
    pub spot_poll_interval: Duration,
    /// `events/maintenance/scheduled`.
    #[serde(default = "default_events_poll", with = "humantime_serde_compat")]
    pub events_poll_interval: Duration,
    /// A rebalance recommendation starts a drain (otherwise it is logged and reported).
    #[serde(default)]
    pub drain_on_rebalance: bool,
    /// A scheduled stop/retirement/reboot starts a drain (otherwise logged and reported).
    #[serde(default)]
    pub drain_on_maintenance: bool,
    /// After IMDS says Terminated, how long to wait for `Terminating:Wait` before giving up on
    /// the hook (the drain goes on regardless).
    #[serde(
        default = "default_wait_state_timeout",
        with = "humantime_serde_compat"
    )]
    pub wait_state_timeout: Duration,
    /// Drain budget when the OS shuts down with no ASG termination (reboot, manual stop); must
    /// fit the unit's TimeoutStopSec.
    #[serde(default = "default_shutdown_drain", with = "humantime_serde_compat")]
    pub shutdown_drain_timeout: Duration,
}

/// How the node is drained once it is to go.
#[derive(Debug, Clone, Deserialize)]
pub struct DrainSection {
    /// Longest `replicated admin node-drain` may run (the hook's budget may cut it shorter).
    #[serde(default = "default_drain_timeout", with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// After a successful drain, `replicatedctl app stop` and wait until stopped.
    #[serde(default = "default_true")]
    pub stop_app: bool,
    #[serde(default = "default_app_stop_timeout", with = "humantime_serde_compat")]
    pub app_stop_timeout: Duration,
    /// Terminate-hook result when the drain fails or runs out of time. With ABANDON and the
    /// group's `TerminateHookAbandon = retain`, the node stays for an operator.
    #[serde(default)]
    pub on_failure: FailureResult,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureResult {
    #[default]
    Abandon,
    Continue,
}

impl FailureResult {
    /// The lifecycle action result it stands for.
    pub fn hook_result(self) -> HookResult {
        match self {
            FailureResult::Abandon => HookResult::Abandon,
            FailureResult::Continue => HookResult::Continue,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct PathsSection {
    #[serde(default = "default_replicated_conf")]
    pub replicated_conf: PathBuf,
    #[serde(default = "default_settings")]
    pub settings: PathBuf,
    #[serde(default = "default_license")]
    pub license: PathBuf,
    #[serde(default = "default_tls_cert")]
    pub tls_cert: PathBuf,
    #[serde(default = "default_tls_key")]
    pub tls_key: PathBuf,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Owner of the files that hold secrets. The Replicated daemon reads them as this user
    /// (docs/design/tfe-tools.md §2: "600 when owned by `replicated`"); when the user does not
    /// exist yet they stay root-owned.
    #[serde(default = "default_file_owner")]
    pub file_owner: String,
}

fn default_true() -> bool {
    true
}
fn default_tls_bootstrap_type() -> String {
    "self-signed".into()
}
fn default_install_timeout() -> Duration {
    Duration::from_secs(20 * 60)
}
fn default_readiness_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_replicatedctl() -> PathBuf {
    "/usr/local/bin/replicatedctl".into()
}
fn default_replicated() -> PathBuf {
    "/usr/local/bin/replicated".into()
}
fn default_systemctl() -> PathBuf {
    "/usr/bin/systemctl".into()
}
fn default_journalctl() -> PathBuf {
    "/usr/bin/journalctl".into()
}
fn default_attempt_timeout() -> Duration {
    Duration::from_secs(20)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_retry_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_discovery_timeout() -> Duration {
    Duration::from_secs(10 * 60)
}
fn default_termination_poll() -> Duration {
    Duration::from_secs(1)
}
fn default_spot_poll() -> Duration {
    Duration::from_secs(5)
}
fn default_events_poll() -> Duration {
    Duration::from_secs(60)
}
fn default_wait_state_timeout() -> Duration {
    Duration::from_secs(5 * 60)
}
fn default_shutdown_drain() -> Duration {
    Duration::from_secs(90)
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(60 * 60)
}
fn default_app_stop_timeout() -> Duration {
    Duration::from_secs(10 * 60)
}
fn default_replicated_conf() -> PathBuf {
    "/etc/replicated.conf".into()
}
fn default_settings() -> PathBuf {
    "/etc/ptfe-settings.json".into()
}
fn default_license() -> PathBuf {
    "/etc/ptfe-license.rli".into()
}
fn default_tls_cert() -> PathBuf {
    "/etc/tfe-node-agent/tls/cert.pem".into()
}
fn default_tls_key() -> PathBuf {
    "/etc/tfe-node-agent/tls/key.pem".into()
}
fn default_state_dir() -> PathBuf {
    "/var/lib/tfe-node-agent".into()
}
fn default_file_owner() -> String {
    "replicated".into()
}

impl Default for ToolsSection {
    fn default() -> Self {
        Self {
            replicatedctl: default_replicatedctl(),
            replicated: default_replicated(),
            systemctl: default_systemctl(),
            journalctl: default_journalctl(),
        }
    }
}

impl Default for TerminationSection {
    fn default() -> Self {
        Self {
            poll_interval: default_termination_poll(),
            spot_poll_interval: default_spot_poll(),
            events_poll_interval: default_events_poll(),
            drain_on_rebalance: false,
            drain_on_maintenance: false,
            wait_state_timeout: default_wait_state_timeout(),
            shutdown_drain_timeout: default_shutdown_drain(),
        }
    }
}

impl Default for DrainSection {
    fn default() -> Self {
        Self {
            timeout: default_drain_timeout(),
            stop_app: true,
            app_stop_timeout: default_app_stop_timeout(),
            on_failure: FailureResult::Abandon,
        }
    }
}

impl Default for ReadinessSection {
    fn default() -> Self {
        Self {
            timeout: default_readiness_timeout(),
            poll_interval: default_poll_interval(),
        }
    }
}

impl Default for LifecycleSection {
    fn default() -> Self {
        Self {
            launch_hook: None,
            terminate_hook: None,
            on_failure: FailureResult::Abandon,
            discovery_timeout: default_discovery_timeout(),
        }
    }
}

impl Default for AwsSection {
    fn default() -> Self {
        Self {
            region: None,
            attempt_timeout: default_attempt_timeout(),
            connect_timeout: default_connect_timeout(),
            retry_timeout: default_retry_timeout(),
        }
    }
}

impl Default for PathsSection {
    fn default() -> Self {
        Self {
            replicated_conf: default_replicated_conf(),
            settings: default_settings(),
            license: default_license(),
            tls_cert: default_tls_cert(),
            tls_key: default_tls_key(),
            state_dir: default_state_dir(),
            file_owner: default_file_owner(),
        }
    }
}

/// Durations are written the human way ("20m", "5s", "1h 30m").
mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        let parsed = humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?}: {e} (write e.g. \"90s\", \"20m\")"
            ))
        })?;
        if parsed.is_zero() {
            return Err(serde::de::Error::custom(
                "a duration must be greater than zero",
            ));
        }
        Ok(parsed)
    }
}
