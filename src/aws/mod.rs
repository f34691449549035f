//! Real adapters for the AWS ports. Endpoints come only from the SDK's standard variables
//! (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_SECRETS_MANAGER, AWS_ENDPOINT_URL_AUTO_SCALING,
//! AWS_EC2_METADATA_SERVICE_ENDPOINT): there is no private override.

mod autoscaling;
mod imds;
mod secrets;

pub use autoscaling::AutoScalingClient;
pub use imds::Imds;
pub use secrets::SecretsManager;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
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

/// The SDK error with its whole source chain on one line (the top level alone says "service error").
fn describe<E: std::error::Error>(err: &E) -> String {
    aws_sdk_autoscaling::error::DisplayErrorContext(err).to_string()
}
