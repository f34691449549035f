//! The real preflight probes: Redis and PostgreSQL with their own clients, S3 through the AWS SDK,
//! the host through the kernel and the Docker socket, IMDS with a session of its own. Each probe
//! is bounded by the caller's timeout (`crate::node::preflight`), leaves nothing behind, and
//! scrubs what its client says so no secret reaches an error.

mod host;
mod object_storage;
mod postgres;
mod redis;

use crate::adapters::aws::Imds;
use crate::ports::{
    DiskSpace, ObjectStorageProbe, PortAnswer, PostgresProbe, ProbeError, Probes, RedisProbe,
};
use std::path::Path;

/// The probes of a real node.
#[derive(Debug, Default)]
pub struct SystemProbes {
    /// IMDS's endpoint (`http://host[:port]`); by default the agent's own, from
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT` or `http://169.254.169.254`, read at each check.
    imds_endpoint: Option<String>,
}

impl SystemProbes {
    /// The probes with IMDS at `endpoint` (`http://host[:port]`) instead of the agent's own.
    pub fn with_imds_endpoint(endpoint: impl Into<String>) -> Self {
        SystemProbes {
            imds_endpoint: Some(endpoint.into()),
        }
    }
}

impl Probes for SystemProbes {
    async fn redis(&self, p: &RedisProbe) -> Result<String, ProbeError> {
        redis::probe(p).await
    }
    async fn postgres(&self, p: &PostgresProbe) -> Result<String, ProbeError> {
        postgres::probe(p).await
    }
    async fn object_storage(&self, p: &ObjectStorageProbe) -> Result<String, ProbeError> {
        object_storage::probe(p).await
    }
    fn disk_space(&self, path: &Path) -> Result<DiskSpace, ProbeError> {
        host::disk_space(path)
    }
    async fn docker(&self, socket: &Path) -> Result<String, ProbeError> {
        host::docker(socket).await
    }
    async fn imds_clock(&self) -> Result<i64, ProbeError> {
        let imds = match &self.imds_endpoint {
            None => Imds::new(),
            Some(endpoint) => Imds::with_endpoint(endpoint).ok_or_else(|| {
                ProbeError::new(
                    endpoint.as_str(),
                    "not an IMDS endpoint (http://host[:port])",
                )
            })?,
        };
        host::imds_clock(&imds).await
    }
    async fn port(&self, address: &str) -> Result<PortAnswer, ProbeError> {
        host::port(address).await
    }
}
