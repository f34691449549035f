//! An Auto Scaling group as the repave orchestrator sees it: the group itself (sizes, launch
//! template, instances, suspended processes), its hooks, the changes the repave makes, and the
//! launch template versions (EC2) it moves the group between. The node's own calls are in
//! [`super::AutoScaling`]; these run from an operator's machine or CI as well as from a node.

use super::autoscaling::{AsgError, HookInfo};
pub use crate::model::asg::TemplateRef;
use crate::model::asg::{LifecycleState, ScalingProcess};
use std::future::Future;

/// One instance of the group, as DescribeAutoScalingGroups lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInstance {
    pub instance_id: String,
    pub lifecycle_state: LifecycleState,
    /// `Healthy` or `Unhealthy`.
    pub health_status: String,
    pub availability_zone: String,
    /// The launch template version this instance was launched from, when the group uses one.
    pub template_version: Option<String>,
}

/// A group as DescribeAutoScalingGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub name: String,
    pub min_size: u32,
    pub max_size: u32,
    pub desired_capacity: u32,
    /// `None` when the group launches from a launch configuration or a mixed instances policy
    /// (the repave refuses those: it moves a launch template's version).
    pub launch_template: Option<TemplateRef>,
    pub instances: Vec<GroupInstance>,
    /// The processes suspended now, those this agent does not know as `Other`.
    pub suspended: Vec<ScalingProcess>,
}

/// One version of a launch template, as EC2 DescribeLaunchTemplateVersions reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateVersion {
    pub template_id: String,
    pub template_name: String,
    pub version: u64,
    pub default_version: bool,
    /// The version's user data, base64-decoded (and gunzipped when it was gzip): the cloud-init
    /// document that carries the node's agent.toml. `None` when the version has none.
    pub user_data: Option<String>,
}

/// What UpdateAutoScalingGroup changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupUpdate {
    pub min_size: Option<u32>,
    pub max_size: Option<u32>,
    pub desired_capacity: Option<u32>,
    pub launch_template: Option<TemplateRef>,
}

pub trait GroupControl: Sync {
    /// DescribeAutoScalingGroups for one group; `None` when it does not exist.
    fn describe_group(
        &self,
        group: &str,
    ) -> impl Future<Output = Result<Option<GroupInfo>, AsgError>> + Send;

    /// DescribeLifecycleHooks: every hook of the group.
    fn describe_hooks(
        &self,
        group: &str,
    ) -> impl Future<Output = Result<Vec<HookInfo>, AsgError>> + Send;

    /// UpdateAutoScalingGroup with the fields `update` sets.
    fn update_group(
        &self,
        group: &str,
        update: &GroupUpdate,
    ) -> impl Future<Output = Result<(), AsgError>> + Send;

    /// SuspendProcesses (an empty list would suspend all of them: never sent).
    fn suspend_processes(
        &self,
        group: &str,
        processes: &[ScalingProcess],
    ) -> impl Future<Output = Result<(), AsgError>> + Send;

    /// ResumeProcesses (an empty list would resume all of them: never sent).
    fn resume_processes(
        &self,
        group: &str,
        processes: &[ScalingProcess],
    ) -> impl Future<Output = Result<(), AsgError>> + Send;

    /// EC2 DescribeLaunchTemplateVersions for one version of the template `template` names (by
    /// id or name; `template.version` is a number, `$Latest` or `$Default`); `None` when the
    /// template or that version does not exist.
    fn describe_template_version(
        &self,
        template: &TemplateRef,
    ) -> impl Future<Output = Result<Option<TemplateVersion>, AsgError>> + Send;
}
