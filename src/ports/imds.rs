//! The instance metadata service (IMDSv2) as the flows see it.

use std::future::Future;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub instance_id: String,
    pub region: String,
    pub private_ipv4: String,
    pub availability_zone: String,
}

#[derive(Debug, thiserror::Error)]
#[error("instance metadata {path}: {detail}")]
pub struct ImdsError {
    pub path: String,
    pub detail: String,
}

pub trait InstanceMetadata: Sync {
    fn identity(&self) -> impl Future<Output = Result<Identity, ImdsError>> + Send;
    /// One item; `None` when IMDS answers 404 (for notices: "nothing announced").
    fn get(&self, path: &str) -> impl Future<Output = Result<Option<String>, ImdsError>> + Send;
    /// An item that never changes on an instance, asked once and then cached.
    fn get_static(&self, path: &str) -> impl Future<Output = Result<String, ImdsError>> + Send;
}
