//! [`GroupControl`] in memory: one group, its hooks and its launch template versions, set up by
//! the test; every change the flow makes is applied to the group (sizes, template, suspended
//! processes) and recorded, so a test asserts on what the flow did. Instances do not launch or
//! terminate on their own here: the repave's moving parts are tested against the project's
//! Auto Scaling emulator (tests/repave.rs).

use crate::model::asg::ScalingProcess;
use crate::ports::{
    AsgError, GroupControl, GroupInfo, GroupUpdate, HookInfo, TemplateRef, TemplateVersion,
};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct FakeGroups {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    group: Option<GroupInfo>,
    hooks: Vec<HookInfo>,
    versions: Vec<TemplateVersion>,
    calls: Vec<String>,
}

impl FakeGroups {
    pub fn new(group: GroupInfo, hooks: Vec<HookInfo>, versions: Vec<TemplateVersion>) -> Self {
        FakeGroups {
            inner: Mutex::new(Inner {
                group: Some(group),
                hooks,
                versions,
                calls: Vec::new(),
            }),
        }
    }

    /// The group as the flow left it.
    pub fn group(&self) -> Option<GroupInfo> {
        self.inner.lock().unwrap().group.clone()
    }

    /// The changes made, in order (`update min=0 desired=0`, `suspend AZRebalance,…`).
    pub fn calls(&self) -> Vec<String> {
        self.inner.lock().unwrap().calls.clone()
    }
}

fn joined(processes: &[ScalingProcess]) -> String {
    processes
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

impl GroupControl for FakeGroups {
    async fn describe_group(&self, group: &str) -> Result<Option<GroupInfo>, AsgError> {
        let inner = self.inner.lock().unwrap();
        Ok(inner.group.clone().filter(|g| g.name == group))
    }

    async fn describe_hooks(&self, group: &str) -> Result<Vec<HookInfo>, AsgError> {
        let inner = self.inner.lock().unwrap();
        match &inner.group {
            Some(g) if g.name == group => Ok(inner.hooks.clone()),
            _ => Err(AsgError::Rejected {
                op: "DescribeLifecycleHooks",
                detail: format!("ValidationError: Group {group} not found"),
            }),
        }
    }

    async fn update_group(&self, group: &str, update: &GroupUpdate) -> Result<(), AsgError> {
        let mut inner = self.inner.lock().unwrap();
        let mut text = vec!["update".to_string()];
        let Some(g) = inner.group.as_mut().filter(|g| g.name == group) else {
            return Err(AsgError::Rejected {
                op: "UpdateAutoScalingGroup",
                detail: format!("ValidationError: Group {group} not found"),
            });
        };
        if let Some(v) = update.min_size {
            g.min_size = v;
            text.push(format!("min={v}"));
        }
        if let Some(v) = update.max_size {
            g.max_size = v;
            text.push(format!("max={v}"));
        }
        if let Some(v) = update.desired_capacity {
            g.desired_capacity = v;
            text.push(format!("desired={v}"));
        }
        if let Some(t) = &update.launch_template {
            g.launch_template = Some(t.clone());
            text.push(format!("version={}", t.version));
        }
        inner.calls.push(text.join(" "));
        Ok(())
    }

    async fn suspend_processes(
        &self,
        group: &str,
        processes: &[ScalingProcess],
    ) -> Result<(), AsgError> {
        let mut inner = self.inner.lock().unwrap();
        if let Some(g) = inner.group.as_mut().filter(|g| g.name == group) {
            for p in processes {
                if !g.suspended.contains(p) {
                    g.suspended.push(p.clone());
                }
            }
        }
        inner.calls.push(format!("suspend {}", joined(processes)));
        Ok(())
    }

    async fn resume_processes(
        &self,
        group: &str,
        processes: &[ScalingProcess],
    ) -> Result<(), AsgError> {
        let mut inner = self.inner.lock().unwrap();
        if let Some(g) = inner.group.as_mut().filter(|g| g.name == group) {
            g.suspended.retain(|p| !processes.contains(p));
        }
        inner.calls.push(format!("resume {}", joined(processes)));
        Ok(())
    }

    async fn describe_template_version(
        &self,
        template: &TemplateRef,
    ) -> Result<Option<TemplateVersion>, AsgError> {
        let inner = self.inner.lock().unwrap();
        let of_template = |v: &&TemplateVersion| {
            template.id.as_deref().is_none_or(|id| id == v.template_id)
                && template
                    .name
                    .as_deref()
                    .is_none_or(|n| n == v.template_name)
        };
        let mut versions = inner.versions.iter().filter(of_template);
        Ok(match template.version.as_str() {
            "$Latest" => versions.max_by_key(|v| v.version).cloned(),
            "$Default" => versions.find(|v| v.default_version).cloned(),
            number => versions.find(|v| v.version.to_string() == number).cloned(),
        })
    }
}
