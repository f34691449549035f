//! The probes preflight sends to the node's dependencies, each with exactly the settings TFE will
//! use. The real ones are `crate::adapters::probes`. A probe changes nothing that outlives it.
//!
//! Every error is one line naming the dependency's address and what went wrong, never a secret
//! (an adapter scrubs what its client library says before it gets here).

use crate::sys::secret::Secret;
use std::future::Future;
use std::path::{Path, PathBuf};

/// Redis as TFE will use it (`redis_*` settings).
#[derive(Debug, Clone)]
pub struct RedisProbe {
    pub host: String,
    pub port: u16,
    /// AUTH with this when `redis_use_password_auth = "1"`.
    pub password: Option<Secret>,
    /// `redis_use_tls = "1"`: TLS 1.2+, verified against the system roots or `ca_bundle`.
    pub tls: bool,
    /// PEM (`ca_certs`); replaces the system roots when given.
    pub ca_bundle: Option<String>,
}

/// libpq's `sslmode` as TFE accepts it in `pg_extra_params`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// libpq's default when `pg_extra_params` names no sslmode: TLS when the server offers it
    /// (the certificate not verified), plain otherwise.
    Prefer,
    /// Encrypted, the certificate not verified (libpq's meaning).
    Require,
    /// Encrypted, the chain verified, the host name not.
    VerifyCa,
    /// Encrypted, the chain and the host name verified.
    VerifyFull,
}

impl SslMode {
    pub fn parse(text: &str) -> Option<SslMode> {
        match text {
            "disable" => Some(SslMode::Disable),
            "prefer" => Some(SslMode::Prefer),
            "require" => Some(SslMode::Require),
            "verify-ca" => Some(SslMode::VerifyCa),
            "verify-full" => Some(SslMode::VerifyFull),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// PostgreSQL as TFE will use it (`pg_*` settings).
#[derive(Debug, Clone)]
pub struct PostgresProbe {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    pub dbname: String,
    pub sslmode: SslMode,
    /// PEM (`ca_certs`) for verify-ca/verify-full; the system roots when absent.
    pub ca_bundle: Option<String>,
}

/// S3 (or an S3-compatible store) as TFE will use it (`s3_*` settings).
#[derive(Debug, Clone)]
pub struct ObjectStorageProbe {
    pub bucket: String,
    pub region: String,
    /// `s3_endpoint`: a host or a URL (VPC endpoint, S3-compatible store).
    pub endpoint: Option<String>,
    /// `aws_access_key_id` + `aws_secret_access_key`, unless `aws_instance_profile = "1"`:
    /// then the instance profile (the default credential chain).
    pub keys: Option<(String, Secret)>,
    /// `s3_sse = "aws:kms"`, with `s3_sse_kms_key_id` when given.
    pub sse_kms: Option<Option<String>>,
    /// The marker's key: under [`MARKER_PREFIX`], named after this instance, so an interrupted
    /// run's marker is found (and deleted) by the next run on the same instance.
    pub marker_key: String,
}

/// Where preflight's marker objects live in TFE's bucket (documented; TFE never uses it).
pub const MARKER_PREFIX: &str = "tfe-node-agent-preflight/";

/// Free space where a path is (or would be: the nearest existing ancestor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpace {
    /// The directory actually measured.
    pub measured: PathBuf,
    pub free_bytes: u64,
}

/// What a TCP port answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortAnswer {
    /// Connection refused: nothing listens.
    Refused,
    /// Something listens; the HTTP status line it sent to `GET /`, if any.
    Open { http_status: Option<u16> },
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{address}: {detail}")]
pub struct ProbeError {
    pub address: String,
    pub detail: String,
}

impl ProbeError {
    pub fn new(address: impl Into<String>, detail: impl Into<String>) -> Self {
        ProbeError {
            address: address.into(),
            detail: detail.into(),
        }
    }
}

pub trait Probes: Sync {
    /// Connect, TLS, AUTH, `PING`, `ROLE`: the server version and role on success; a replica or a
    /// read-only endpoint is an error. Writes nothing.
    fn redis(&self, p: &RedisProbe) -> impl Future<Output = Result<String, ProbeError>> + Send;

    /// Connect, TLS per `sslmode`, authenticate, `SELECT 1`: the server version on success.
    fn postgres(
        &self,
        p: &PostgresProbe,
    ) -> impl Future<Output = Result<String, ProbeError>> + Send;

    /// `HeadBucket`, then put (with the SSE settings), read back and delete the marker (a stale
    /// marker of an interrupted run is deleted too): what was done on success.
    fn object_storage(
        &self,
        p: &ObjectStorageProbe,
    ) -> impl Future<Output = Result<String, ProbeError>> + Send;

    /// Free space for `path`.
    fn disk_space(&self, path: &Path) -> Result<DiskSpace, ProbeError>;

    /// `GET /version` on the Docker Engine API socket: the engine's version.
    fn docker(&self, socket: &Path) -> impl Future<Output = Result<String, ProbeError>> + Send;

    /// A fresh IMDSv2 session, and how far this node's clock is ahead of the `Date` the
    /// service answered with (milliseconds; negative: behind).
    fn imds_clock(&self) -> impl Future<Output = Result<i64, ProbeError>> + Send;

    /// Connect to `address` ("host:port"); when something listens, `GET /` and read its status.
    fn port(&self, address: &str) -> impl Future<Output = Result<PortAnswer, ProbeError>> + Send;
}
