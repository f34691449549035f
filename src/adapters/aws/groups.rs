//! [`GroupControl`] over the EC2 Auto Scaling API (the group, its hooks, its sizes, template and
//! processes) and EC2's DescribeLaunchTemplateVersions (`ec2.rs`): what `repave` calls, from an
//! operator's machine or a node. Not counted in the node's metrics: `repave` is a command.

use super::autoscaling::{map_err, seconds};
use super::ec2::Ec2Client;
use crate::model::asg::{LifecycleState, ScalingProcess, Transition};
use crate::ports::{
    AsgError, GroupControl, GroupInfo, GroupInstance, GroupUpdate, HookInfo, TemplateRef,
    TemplateVersion,
};
use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
use aws_sdk_autoscaling::Client;

#[derive(Debug, Clone)]
pub struct GroupsClient {
    client: Client,
    ec2: Ec2Client,
}

impl GroupsClient {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self {
            client: Client::new(config),
            ec2: Ec2Client::new(config),
        }
    }
}

fn size(value: Option<i32>) -> u32 {
    value.unwrap_or(0).max(0) as u32
}

fn template_ref(spec: &LaunchTemplateSpecification) -> TemplateRef {
    TemplateRef {
        id: spec.launch_template_id().map(str::to_string),
        name: spec.launch_template_name().map(str::to_string),
        version: spec.version().unwrap_or("$Default").to_string(),
    }
}

fn names(processes: &[ScalingProcess]) -> Vec<String> {
    processes
        .iter()
        .filter(|p| !matches!(p, ScalingProcess::Other(_)))
        .map(|p| p.as_str().to_string())
        .collect()
}

impl GroupControl for GroupsClient {
    async fn describe_group(&self, group: &str) -> Result<Option<GroupInfo>, AsgError> {
        const OP: &str = "DescribeAutoScalingGroups";
        let out = self
            .client
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(group)
            .send()
            .await
            .map_err(|e| map_err(OP, e))?;
        let Some(g) = out
            .auto_scaling_groups()
            .iter()
            .find(|g| g.auto_scaling_group_name() == Some(group))
        else {
            return Ok(None);
        };
        Ok(Some(GroupInfo {
            name: group.to_string(),
            min_size: size(g.min_size()),
            max_size: size(g.max_size()),
            desired_capacity: size(g.desired_capacity()),
            launch_template: g.launch_template().map(template_ref),
            instances: g
                .instances()
                .iter()
                .map(|i| GroupInstance {
                    instance_id: i.instance_id().unwrap_or_default().to_string(),
                    lifecycle_state: LifecycleState::parse(
                        i.lifecycle_state().map(|s| s.as_str()).unwrap_or_default(),
                    ),
                    health_status: i.health_status().unwrap_or_default().to_string(),
                    availability_zone: i.availability_zone().unwrap_or_default().to_string(),
                    template_version: i
                        .launch_template()
                        .and_then(|t| t.version())
                        .map(str::to_string),
                })
                .collect(),
            suspended: g
                .suspended_processes()
                .iter()
                .filter_map(|p| p.process_name())
                .map(ScalingProcess::parse)
                .collect(),
        }))
    }

    async fn describe_hooks(&self, group: &str) -> Result<Vec<HookInfo>, AsgError> {
        const OP: &str = "DescribeLifecycleHooks";
        let out = self
            .client
            .describe_lifecycle_hooks()
            .auto_scaling_group_name(group)
            .send()
            .await
            .map_err(|e| map_err(OP, e))?;
        Ok(out
            .lifecycle_hooks()
            .iter()
            .map(|h| HookInfo {
                name: h.lifecycle_hook_name().unwrap_or_default().to_string(),
                transition: Transition::parse(h.lifecycle_transition().unwrap_or_default()),
                heartbeat_timeout: seconds(h.heartbeat_timeout()),
                global_timeout: seconds(h.global_timeout()),
                default_result: h.default_result().unwrap_or("ABANDON").to_string(),
            })
            .collect())
    }

    async fn update_group(&self, group: &str, update: &GroupUpdate) -> Result<(), AsgError> {
        let mut call = self
            .client
            .update_auto_scaling_group()
            .auto_scaling_group_name(group);
        if let Some(min) = update.min_size {
            call = call.min_size(min as i32);
        }
        if let Some(max) = update.max_size {
            call = call.max_size(max as i32);
        }
        if let Some(desired) = update.desired_capacity {
            call = call.desired_capacity(desired as i32);
        }
        if let Some(t) = &update.launch_template {
            // Either the id or the name, never both: Auto Scaling refuses a specification with
            // both ("Either a LaunchTemplateId or a LaunchTemplateName must be specified, not
            // both"), though DescribeAutoScalingGroups reports both.
            let spec = match (&t.id, &t.name) {
                (Some(id), _) => LaunchTemplateSpecification::builder().launch_template_id(id),
                (None, name) => {
                    LaunchTemplateSpecification::builder().set_launch_template_name(name.clone())
                }
            };
            call = call.launch_template(spec.version(&t.version).build());
        }
        call.send()
            .await
            .map(drop)
            .map_err(|e| map_err("UpdateAutoScalingGroup", e))
    }

    async fn suspend_processes(
        &self,
        group: &str,
        processes: &[ScalingProcess],
    ) -> Result<(), AsgError> {
        let names = names(processes);
        if names.is_empty() {
            return Ok(());
        }
        self.client
            .suspend_processes()
            .auto_scaling_group_name(group)
            .set_scaling_processes(Some(names))
            .send()
            .await
            .map(drop)
            .map_err(|e| map_err("SuspendProcesses", e))
    }

    async fn resume_processes(
        &self,
        group: &str,
        processes: &[ScalingProcess],
    ) -> Result<(), AsgError> {
        let names = names(processes);
        if names.is_empty() {
            return Ok(());
        }
        self.client
            .resume_processes()
            .auto_scaling_group_name(group)
            .set_scaling_processes(Some(names))
            .send()
            .await
            .map(drop)
            .map_err(|e| map_err("ResumeProcesses", e))
    }

    async fn describe_template_version(
        &self,
        template: &TemplateRef,
    ) -> Result<Option<TemplateVersion>, AsgError> {
        self.ec2.describe_template_version(template).await
    }
}
