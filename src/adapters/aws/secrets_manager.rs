//! [`SecretSource`] over AWS Secrets Manager: one BatchGetSecretValue call for all ids when allowed,
//! one GetSecretValue per id when batch is refused or a version stage is pinned (batch has none).

use super::{count, describe};
use crate::ports::{SecretPayload, SecretSource, SecretsError};
use crate::sys::secret::{Secret, SecretBytes};
use crate::telemetry::metrics::AwsOperation;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::Client;
use std::collections::BTreeMap;

/// BatchGetSecretValue takes at most 20 ids per call.
const BATCH_LIMIT: usize = 20;

#[derive(Debug, Clone)]
pub struct SecretsManager {
    client: Client,
}

impl SecretsManager {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self {
            client: Client::new(config),
        }
    }

    /// `Ok(None)` when the service refused the batch call itself (no permission, not supported):
    /// the caller falls back to GetSecretValue.
    async fn batch(
        &self,
        ids: &[String],
    ) -> Result<Option<BTreeMap<String, SecretPayload>>, SecretsError> {
        let mut out = BTreeMap::new();
        for chunk in ids.chunks(BATCH_LIMIT) {
            let response = self
                .client
                .batch_get_secret_value()
                .set_secret_id_list(Some(chunk.to_vec()))
                .send()
                .await;
            count(AwsOperation::BatchGetSecretValue, &response);
            let response = match response {
                Ok(r) => r,
                Err(err) if err.as_service_error().is_some() => {
                    log::info!(
                        "BatchGetSecretValue refused ({}); falling back to GetSecretValue per secret",
                        err.code().unwrap_or("unknown error")
                    );
                    return Ok(None);
                }
                // No answer, or one that could not be read: may pass.
                Err(err) => {
                    return Err(SecretsError::Unavailable {
                        id: chunk.join(","),
                        detail: describe(&err),
                    })
                }
            };
            if let Some(e) = response.errors().first() {
                let id = e.secret_id().unwrap_or_default().to_string();
                let detail = format!(
                    "{}: {}",
                    e.error_code().unwrap_or("error"),
                    e.message().unwrap_or_default()
                );
                return Err(match e.error_code() {
                    Some("ResourceNotFoundException") => SecretsError::NotFound { id },
                    Some("AccessDeniedException") => SecretsError::AccessDenied { id, detail },
                    _ => SecretsError::Fetch { id, detail },
                });
            }
            for id in chunk {
                // Ids may be names, full ARNs or partial ARNs (without the random suffix).
                let entry = response.secret_values().iter().find(|v| {
                    v.name() == Some(id.as_str())
                        || v.arn() == Some(id.as_str())
                        || (id.starts_with("arn:")
                            && v.arn().is_some_and(|a| a.starts_with(id.as_str())))
                });
                let Some(entry) = entry else {
                    return Err(SecretsError::NotFound { id: id.clone() });
                };
                let payload = payload(
                    id,
                    entry.secret_string(),
                    entry.secret_binary().map(|b| b.as_ref()),
                )?;
                out.insert(id.clone(), payload);
            }
        }
        Ok(Some(out))
    }

    async fn one(
        &self,
        id: &str,
        version_stage: Option<&str>,
    ) -> Result<SecretPayload, SecretsError> {
        let response = self
            .client
            .get_secret_value()
            .secret_id(id)
            .set_version_stage(version_stage.map(str::to_string))
            .send()
            .await;
        count(AwsOperation::GetSecretValue, &response);
        let response = response.map_err(|err| {
            let id = id.to_string();
            let detail = describe(&err);
            // A 4xx is the service's final word; a 5xx, or a 2xx that could not be read (cut
            // short), may pass.
            let refused = err
                .raw_response()
                .is_some_and(|r| (400..500).contains(&r.status().as_u16()));
            match (&err, err.code()) {
                (_, Some("ResourceNotFoundException")) => SecretsError::NotFound { id },
                (_, Some("AccessDeniedException")) => SecretsError::AccessDenied { id, detail },
                (_, Some("ThrottlingException" | "InternalServiceError")) => {
                    SecretsError::Unavailable { id, detail }
                }
                (SdkError::ServiceError(_), _) if refused => SecretsError::Fetch { id, detail },
                (SdkError::ConstructionFailure(_), _) => SecretsError::Fetch { id, detail },
                // 5xx, dropped connections, timeouts, answers cut short.
                _ => SecretsError::Unavailable { id, detail },
            }
        })?;
        payload(
            id,
            response.secret_string(),
            response.secret_binary().map(|b| b.as_ref()),
        )
    }
}

fn payload(
    id: &str,
    string: Option<&str>,
    binary: Option<&[u8]>,
) -> Result<SecretPayload, SecretsError> {
    match (string, binary) {
        (Some(s), _) => Ok(SecretPayload::String(Secret::new(s))),
        (None, Some(b)) => Ok(SecretPayload::Binary(SecretBytes::new(b.to_vec()))),
        (None, None) => Err(SecretsError::Empty { id: id.to_string() }),
    }
}

impl SecretSource for SecretsManager {
    async fn fetch(
        &self,
        ids: &[String],
        version_stage: Option<&str>,
    ) -> Result<BTreeMap<String, SecretPayload>, SecretsError> {
        let current = version_stage.is_none_or(|s| s == "AWSCURRENT");
        if current {
            if let Some(all) = self.batch(ids).await? {
                log::debug!(
                    "fetched {} secret(s) with one BatchGetSecretValue call per 20 ids",
                    all.len()
                );
                return Ok(all);
            }
        }
        let mut out = BTreeMap::new();
        for id in ids {
            out.insert(id.clone(), self.one(id, version_stage).await?);
        }
        Ok(out)
    }
}
