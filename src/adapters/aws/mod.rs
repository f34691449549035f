//! Real adapters for the AWS ports. Endpoints come only from the SDK's standard variables
//! (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_SECRETS_MANAGER, AWS_ENDPOINT_URL_AUTO_SCALING,
//! AWS_ENDPOINT_URL_EC2, AWS_EC2_METADATA_SERVICE_ENDPOINT): there is no private override.

mod autoscaling;
mod ec2;
mod groups;
mod imds;
mod secrets_manager;

pub use autoscaling::AutoScalingClient;
pub use groups::GroupsClient;
pub use imds::{with_cause, Imds, TokenAnswer, TokenError};
pub use secrets_manager::SecretsManager;

use crate::telemetry::metrics::{metrics, AwsErrorCode, AwsOperation};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_autoscaling::config::http::HttpResponse;
use aws_sdk_autoscaling::error::{ProvideErrorMetadata, SdkError};
use std::time::Duration;

/// One SDK configuration for every client. The behavior version is pinned so an SDK upgrade never
/// silently changes retry or timeout defaults.
/// `attempt` bounds one try of a call and `connect` its TCP/TLS connect (`[aws]` in agent.toml); a
/// whole call (three tries with the SDK's backoff) is bounded by three attempts plus 10 s.
pub async fn sdk_config(region: &str, attempt: Duration, connect: Duration) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::v2026_01_12())
        .region(Region::new(region.to_string()))
        .app_name(aws_config::AppName::new("tfe-node-agent").expect("valid app name"))
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(connect)
                .operation_attempt_timeout(attempt)
                .operation_timeout(attempt * 3 + Duration::from_secs(10))
                .build(),
        )
        .load()
        .await
}

/// An SDK error on one line, built only from parts that cannot carry a response body: the
/// service's error code and message, the HTTP status, or the transport's own error text. The
/// SDK's `DisplayErrorContext` appends the error's Debug form, which for an answer that could not
/// be parsed holds the raw body — for Secrets Manager, secret values.
pub(crate) fn describe<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::ServiceError(e) => match (e.err().code(), e.err().message()) {
            (Some(code), message) => format!(
                "{code}: {} (HTTP {})",
                message.unwrap_or("no message"),
                e.raw().status().as_u16()
            ),
            // An error the SDK could not read (not in the service's own format, e.g. from a proxy):
            // an error status's body is an error page, never a secret payload, so a short excerpt
            // is the only way to say why. Any other body (a 200 cut short) may hold secrets.
            (None, _) if e.raw().status().as_u16() >= 400 => format!(
                "HTTP {}: {}",
                e.raw().status().as_u16(),
                excerpt(e.raw().body().bytes().unwrap_or_default())
            ),
            (None, _) => format!(
                "the answer (HTTP {}) could not be read: cut short or malformed",
                e.raw().status().as_u16()
            ),
        },
        SdkError::TimeoutError(_) => "no answer in time (the SDK's attempt timeout)".into(),
        SdkError::DispatchFailure(e) => match e.as_connector_error() {
            Some(c) => format!("the request could not be sent: {}", crate::error_chain(c)),
            None => "the request could not be sent".into(),
        },
        SdkError::ResponseError(e) => format!(
            "the answer (HTTP {}) could not be read: cut short or malformed",
            e.raw().status().as_u16()
        ),
        SdkError::ConstructionFailure(_) => "the request could not be built".into(),
        _ => "an unknown SDK failure".into(),
    }
}

/// Counts one call (after the SDK's own retries) in the metrics, with the class of its error.
pub(crate) fn count<T, E>(operation: AwsOperation, result: &Result<T, SdkError<E, HttpResponse>>)
where
    E: ProvideErrorMetadata,
{
    metrics().aws_request(operation, result.as_ref().map(drop).map_err(error_code));
}

/// The closed set of error classes a dashboard sees.
fn error_code<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> AwsErrorCode {
    match err {
        SdkError::ServiceError(e) => {
            let status = e.raw().status().as_u16();
            match e.err().code().unwrap_or_default() {
                c if c.contains("Throttl") || c == "RequestLimitExceeded" || status == 429 => {
                    AwsErrorCode::Throttling
                }
                c if c.contains("AccessDenied") || status == 403 => AwsErrorCode::AccessDenied,
                c if c.contains("NotFound") || status == 404 => AwsErrorCode::NotFound,
                _ if status >= 500 => AwsErrorCode::ServerError,
                _ if status >= 400 => AwsErrorCode::Rejected,
                _ => AwsErrorCode::Unreadable,
            }
        }
        SdkError::TimeoutError(_) => AwsErrorCode::Timeout,
        SdkError::DispatchFailure(e) if e.is_timeout() => AwsErrorCode::Timeout,
        SdkError::DispatchFailure(_) => AwsErrorCode::Connection,
        SdkError::ResponseError(_) => AwsErrorCode::Unreadable,
        _ => AwsErrorCode::Other,
    }
}

/// At most 300 characters of an error body, on one line.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None if line.is_empty() => "(empty body)".into(),
        None => line,
    }
}
