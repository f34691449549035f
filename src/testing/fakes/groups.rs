//! [`GroupControl`] in memory: one group, its hooks and its launch template versions, set up by
//! the test; every change the flow makes is applied to the group (sizes, template, suspended
//! processes) and recorded, so a test asserts on what the flow did. Capacity converges at once:
//! a change of desired capacity removes instances (other versions first) and launches
//! `i-fake-N` InService on the group's version — or, for a version the test marks as failing,
//! leaves it `Terminating:Wait` (abandoned). `on_launch`/`on_gone` let a test play the nodes'
//! part (join and leave the cluster store). The real moving parts (hooks, drains, boots) are
//! tested against the project's Auto Scaling emulator (tests/repave.rs).

use crate::model::asg::{LifecycleState, ScalingProcess};
use crate::ports::{
    AsgError, GroupControl, GroupInfo, GroupInstance, GroupUpdate, HookInfo, TemplateRef,
    TemplateVersion,
};
use std::sync::{Arc, Mutex};

/// What a test does when an instance launches (id, version number) or goes (id).
pub type OnLaunch = Arc<dyn Fn(&str, u64) + Send + Sync>;
pub type OnGone = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Default)]
pub struct FakeGroups {
    inner: Mutex<Inner>,
    on_launch: Option<OnLaunch>,
    on_gone: Option<OnGone>,
}

impl std::fmt::Debug for FakeGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGroups")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Inner {
    group: Option<GroupInfo>,
    hooks: Vec<HookInfo>,
    versions: Vec<TemplateVersion>,
    calls: Vec<String>,
    /// Versions whose instances are abandoned at launch.
    failing: Vec<u64>,
    launched: u32,
}

impl FakeGroups {
    pub fn new(group: GroupInfo, hooks: Vec<HookInfo>, versions: Vec<TemplateVersion>) -> Self {
        FakeGroups {
            inner: Mutex::new(Inner {
                group: Some(group),
                hooks,
                versions,
                ..Inner::default()
            }),
            on_launch: None,
            on_gone: None,
        }
    }

    /// Calls `launch` for each instance launched, `gone` for each removed.
    pub fn on_changes(mut self, launch: OnLaunch, gone: OnGone) -> Self {
        self.on_launch = Some(launch);
        self.on_gone = Some(gone);
        self
    }

    /// Instances of `version` are abandoned at launch (their boot fails).
    pub fn failing(self, version: u64) -> Self {
        self.inner.lock().unwrap().failing.push(version);
        self
    }

    /// Converges the instances on the desired capacity; answers who launched and who went.
    fn converge(inner: &mut Inner) -> (Vec<(String, u64)>, Vec<String>) {
        let versions = inner.versions.clone();
        let failing = inner.failing.clone();
        let Some(g) = inner.group.as_mut() else {
            return Default::default();
        };
        let current = g
            .launch_template
            .as_ref()
            .and_then(|t| resolve(&versions, t))
            .map(|v| v.version)
            .unwrap_or(0);
        let mut gone = Vec::new();
        // Abandoned instances go once the capacity changes; then other versions, then the oldest.
        g.instances.retain(|i| {
            let keep = i.lifecycle_state != LifecycleState::TerminatingWait;
            if !keep {
                gone.push(i.instance_id.clone());
            }
            keep
        });
        g.instances
            .sort_by_key(|i| i.template_version.as_deref() == Some(&current.to_string()));
        while g.instances.len() > g.desired_capacity as usize {
            gone.push(g.instances.remove(0).instance_id);
        }
        let mut launched = Vec::new();
        while g.instances.len() < g.desired_capacity as usize {
            inner.launched += 1;
            let id = format!("i-fake-{}", inner.launched);
            let abandoned = failing.contains(&current);
            g.instances.push(GroupInstance {
                instance_id: id.clone(),
                lifecycle_state: if abandoned {
                    LifecycleState::TerminatingWait
                } else {
                    LifecycleState::InService
                },
                health_status: "Healthy".into(),
                availability_zone: "us-east-1a".into(),
                template_version: Some(current.to_string()),
            });
            if !abandoned {
                launched.push((id, current));
            }
            if abandoned {
                break;
            }
        }
        (launched, gone)
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
        let (launched, gone) = if update.desired_capacity.is_some() {
            Self::converge(&mut inner)
        } else {
            Default::default()
        };
        drop(inner);
        for id in gone {
            if let Some(f) = &self.on_gone {
                f(&id);
            }
        }
        for (id, version) in launched {
            if let Some(f) = &self.on_launch {
                f(&id, version);
            }
        }
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
        Ok(resolve(&inner.versions, template))
    }
}

fn resolve(versions: &[TemplateVersion], template: &TemplateRef) -> Option<TemplateVersion> {
    let of_template = |v: &&TemplateVersion| {
        template.id.as_deref().is_none_or(|id| id == v.template_id)
            && template
                .name
                .as_deref()
                .is_none_or(|n| n == v.template_name)
    };
    let mut versions = versions.iter().filter(of_template);
    match template.version.as_str() {
        "$Latest" => versions.max_by_key(|v| v.version).cloned(),
        "$Default" => versions.find(|v| v.default_version).cloned(),
        number => versions.find(|v| v.version.to_string() == number).cloned(),
    }
}
