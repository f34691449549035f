//! Secrets Manager as the flows see it: fetch every secret of a node at once, or fail.

use crate::sys::secret::{Secret, SecretBytes};
use std::collections::BTreeMap;
use std::future::Future;

/// What Secrets Manager returned for one id.
#[derive(Debug, Clone)]
pub enum SecretPayload {
    String(Secret),
    Binary(SecretBytes),
}

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("secret {id:?} was not found in Secrets Manager")]
    NotFound { id: String },
    #[error("access to secret {id:?} was denied: {detail}")]
    AccessDenied { id: String, detail: String },
    #[error("fetching secret {id:?} failed: {detail}")]
    Fetch { id: String, detail: String },
    /// A failure that may pass: throttling, a 5xx, a dropped connection, a timeout.
    #[error("fetching secret {id:?} failed for now: {detail}")]
    Unavailable { id: String, detail: String },
    #[error("secret {id:?} has neither SecretString nor SecretBinary")]
    Empty { id: String },
}

impl SecretsError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, SecretsError::Unavailable { .. })
    }
}

pub trait SecretSource: Sync {
    /// Fetches every id; the result maps each requested id to its payload. Any failure fails the
    /// whole fetch: a node must never be built from part of its secrets.
    fn fetch(
        &self,
        ids: &[String],
        version_stage: Option<&str>,
    ) -> impl Future<Output = Result<BTreeMap<String, SecretPayload>, SecretsError>> + Send;
}
