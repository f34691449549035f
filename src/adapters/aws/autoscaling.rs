//! [`AutoScaling`] over the EC2 Auto Scaling API: the two describes and the two hook calls the agent
//! makes, with the service's errors mapped to what the orchestration needs to decide.

use super::{count, describe};
use crate::model::asg::HookResult;
use crate::model::asg::{LifecycleState, Transition};
use crate::ports::{AsgError, AsgInstance, AutoScaling, HookAction, HookInfo};
use crate::telemetry::metrics::AwsOperation;
use aws_sdk_autoscaling::config::http::HttpResponse;
use aws_sdk_autoscaling::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_autoscaling::Client;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct AutoScalingClient {
    client: Client,
}

impl AutoScalingClient {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self {
            client: Client::new(config),
        }
    }
}

pub(super) fn map_err<E>(op: &'static str, err: SdkError<E, HttpResponse>) -> AsgError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let message = err.message().unwrap_or_default().to_string();
    let detail = describe(&err);
    match (&err, err.code()) {
        (_, Some("ValidationError")) if message.contains("No active Lifecycle Action") => {
            AsgError::NoActiveAction { op, message }
        }
        (_, Some("Throttling" | "ThrottlingException" | "RequestLimitExceeded")) => {
            AsgError::Throttled { op }
        }
        // A service answer other than a server-side failure is final: access denied, invalid
        // parameters, an unknown group.
        (SdkError::ServiceError(e), Some(_)) if e.raw().status().as_u16() < 500 => {
            AsgError::Rejected { op, detail }
        }
        (SdkError::ConstructionFailure(_), _) => AsgError::Rejected { op, detail },
        // 5xx, dropped connections, timeouts, unparsable answers: may pass.
        _ => AsgError::Call { op, detail },
    }
}

pub(super) fn seconds(value: Option<i32>) -> Duration {
    Duration::from_secs(value.unwrap_or(0).max(0) as u64)
}

impl AutoScaling for AutoScalingClient {
    async fn describe_instance(&self, instance_id: &str) -> Result<Option<AsgInstance>, AsgError> {
        const OP: &str = "DescribeAutoScalingInstances";
        let out = self
            .client
            .describe_auto_scaling_instances()
            .instance_ids(instance_id)
            .send()
            .await;
        count(AwsOperation::DescribeAutoScalingInstances, &out);
        let out = out.map_err(|e| map_err(OP, e))?;
        Ok(out
            .auto_scaling_instances()
            .iter()
            .find(|i| i.instance_id() == Some(instance_id))
            .map(|i| AsgInstance {
                group: i.auto_scaling_group_name().unwrap_or_default().to_string(),
                lifecycle_state: LifecycleState::parse(i.lifecycle_state().unwrap_or_default()),
            }))
    }

    async fn describe_hook(&self, group: &str, hook: &str) -> Result<Option<HookInfo>, AsgError> {
        const OP: &str = "DescribeLifecycleHooks";
        let out = self
            .client
            .describe_lifecycle_hooks()
            .auto_scaling_group_name(group)
            .lifecycle_hook_names(hook)
            .send()
            .await;
        count(AwsOperation::DescribeLifecycleHooks, &out);
        let out = out.map_err(|e| map_err(OP, e))?;
        Ok(out
            .lifecycle_hooks()
            .iter()
            .find(|h| h.lifecycle_hook_name() == Some(hook))
            .map(|h| HookInfo {
                name: hook.to_string(),
                transition: Transition::parse(h.lifecycle_transition().unwrap_or_default()),
                heartbeat_timeout: seconds(h.heartbeat_timeout()),
                global_timeout: seconds(h.global_timeout()),
                default_result: h.default_result().unwrap_or("ABANDON").to_string(),
            }))
    }

    async fn heartbeat(&self, action: &HookAction) -> Result<(), AsgError> {
        let out = self
            .client
            .record_lifecycle_action_heartbeat()
            .auto_scaling_group_name(&action.group)
            .lifecycle_hook_name(&action.hook)
            .instance_id(&action.instance_id)
            .send()
            .await;
        count(AwsOperation::RecordLifecycleActionHeartbeat, &out);
        out.map(|_| ())
            .map_err(|e| map_err("RecordLifecycleActionHeartbeat", e))
    }

    async fn complete(&self, action: &HookAction, result: HookResult) -> Result<(), AsgError> {
        let out = self
            .client
            .complete_lifecycle_action()
            .auto_scaling_group_name(&action.group)
            .lifecycle_hook_name(&action.hook)
            .instance_id(&action.instance_id)
            .lifecycle_action_result(result.as_str())
            .send()
            .await;
        count(AwsOperation::CompleteLifecycleAction, &out);
        out.map(|_| ())
            .map_err(|e| map_err("CompleteLifecycleAction", e))
    }
}
