//! Auto Scaling as the flows see it: this instance's state, a hook's settings, heartbeats and the
//! completion of a lifecycle action.

use crate::model::asg::{HookResult, LifecycleState, Transition};
use std::future::Future;
use std::time::Duration;

/// This instance as DescribeAutoScalingInstances sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsgInstance {
    pub group: String,
    pub lifecycle_state: LifecycleState,
}

/// A lifecycle hook as DescribeLifecycleHooks reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookInfo {
    pub name: String,
    pub transition: Transition,
    pub heartbeat_timeout: Duration,
    pub global_timeout: Duration,
    pub default_result: String,
}

/// The lifecycle action to heartbeat or complete: by instance id, which needs no token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookAction {
    pub group: String,
    pub hook: String,
    pub instance_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AsgError {
    /// ValidationError "No active Lifecycle Action found ...": not (or no longer) in a wait state.
    #[error("{op}: no active lifecycle action: {message}")]
    NoActiveAction { op: &'static str, message: String },
    #[error("{op}: throttled by Auto Scaling")]
    Throttled { op: &'static str },
    /// A failure that may pass: HTTP 5xx, a dropped connection, a timeout.
    #[error("{op} failed: {detail}")]
    Call { op: &'static str, detail: String },
    /// Refused for good (access denied, a bad parameter): retrying cannot help.
    #[error("{op} was refused: {detail}")]
    Rejected { op: &'static str, detail: String },
}

impl AsgError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, AsgError::Throttled { .. } | AsgError::Call { .. })
    }
}

pub trait AutoScaling: Sync {
    fn describe_instance(
        &self,
        instance_id: &str,
    ) -> impl Future<Output = Result<Option<AsgInstance>, AsgError>> + Send;
    fn describe_hook(
        &self,
        group: &str,
        hook: &str,
    ) -> impl Future<Output = Result<Option<HookInfo>, AsgError>> + Send;
    fn heartbeat(&self, action: &HookAction) -> impl Future<Output = Result<(), AsgError>> + Send;
    fn complete(
        &self,
        action: &HookAction,
        result: HookResult,
    ) -> impl Future<Output = Result<(), AsgError>> + Send;
}
