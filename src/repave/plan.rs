//! Before anything changes: the group exists, launches from a launch template and has both
//! lifecycle hooks; the target version exists and is not the one the group runs; the cluster view
//! is reachable and consistent. What was found becomes the [`Plan`] (and `--dry-run`'s output).

use super::{aws, RepaveError, Request};
use crate::model::asg::{ScalingProcess, TemplateRef, Transition};
use crate::model::cluster::ClusterView;
use crate::model::repave::{release_in_user_data, Pass, Plan};
use crate::ports::{ClusterStore, GroupControl, GroupInfo, HookInfo, TemplateVersion, World};
use std::fmt::Write;

/// The plan, the cluster view it was made against, and the plan as text.
pub struct Planned {
    pub plan: Plan,
    pub text: String,
}

fn refused(why: String) -> RepaveError {
    RepaveError::Refused(why)
}

/// A version the group names (a number, `$Latest`, `$Default`), resolved to the version it is.
async fn version<G: GroupControl>(
    groups: &G,
    template: &TemplateRef,
) -> Result<Option<TemplateVersion>, RepaveError> {
    aws("DescribeLaunchTemplateVersions", &template.label(), || {
        groups.describe_template_version(template)
    })
    .await
}

fn hook(hooks: &[HookInfo], transition: Transition) -> Option<&HookInfo> {
    hooks.iter().find(|h| h.transition == transition)
}

pub async fn make<W: World, S: ClusterStore>(
    w: &W,
    store: &S,
    req: &Request,
) -> Result<Planned, RepaveError> {
    let groups = w.groups();
    let group: GroupInfo = aws("DescribeAutoScalingGroups", &req.group, || {
        groups.describe_group(&req.group)
    })
    .await?
    .ok_or_else(|| {
        refused(format!(
            "group {} does not exist (DescribeAutoScalingGroups does not list it)",
            req.group
        ))
    })?;
    let current = group.launch_template.clone().ok_or_else(|| {
        refused(format!(
            "group {} does not launch from a launch template (a launch configuration or a mixed instances policy): the repave moves a launch template's version",
            req.group
        ))
    })?;
    let hooks = aws("DescribeLifecycleHooks", &req.group, || {
        groups.describe_hooks(&req.group)
    })
    .await?;
    let (Some(launch), Some(terminate)) = (
        hook(&hooks, Transition::Launching),
        hook(&hooks, Transition::Terminating),
    ) else {
        return Err(refused(format!(
            "group {} needs both lifecycle hooks, a launching one (nodes enter service only when TFE is healthy) and a terminating one (nodes drain before they go); it has: {}",
            req.group,
            if hooks.is_empty() {
                "none".to_string()
            } else {
                hooks.iter().map(|h| h.name.as_str()).collect::<Vec<_>>().join(", ")
            }
        )));
    };
    let from = version(groups, &current).await?.ok_or_else(|| {
        refused(format!(
            "the group's launch template ({}) is not found",
            current.label()
        ))
    })?;
    let target = current.at(&req.version);
    let to = version(groups, &target).await?.ok_or_else(|| {
        refused(format!(
            "launch template {} does not exist: nothing to repave to",
            target.label()
        ))
    })?;
    if to.version == from.version {
        return Err(refused(format!(
            "group {} already runs {} (the group names {:?}): nothing to repave",
            req.group,
            current.at(&to.version.to_string()).label(),
            current.version
        )));
    }
    let snapshot = store.read().await.map_err(RepaveError::Store)?;
    let view = ClusterView::assess(&snapshot, req.node_ttl, req.max_nodes);
    if !view.consistent && !req.force {
        let findings: Vec<String> = view.findings.iter().map(|f| f.describe()).collect();
        return Err(refused(format!(
            "the cluster view is not consistent: {}; repair it first, or pass --force to repave anyway",
            findings.join("; ")
        )));
    }
    let capacity = req.capacity.unwrap_or(group.desired_capacity);
    if capacity == 0 {
        return Err(refused(format!(
            "group {} wants 0 instances: pass --capacity N for the size to come back to",
            req.group
        )));
    }
    let plan = Plan {
        group: req.group.clone(),
        from: current.at(&from.version.to_string()),
        to: current.at(&to.version.to_string()),
        from_release: from.user_data.as_deref().and_then(release_in_user_data),
        to_release: to.user_data.as_deref().and_then(release_in_user_data),
        min_size: group.min_size,
        max_size: group.max_size,
        capacity,
        already_suspended: group
            .suspended
            .iter()
            .filter(|p| ScalingProcess::REPAVE.contains(p))
            .cloned()
            .collect(),
        launch_hook: launch.name.clone(),
        terminate_hook: terminate.name.clone(),
        drain_budget_s: terminate.global_timeout.as_secs(),
        build_budget_s: launch.global_timeout.as_secs(),
        validate_cmd: req.validate_cmd.clone(),
        validate_timeout_s: req.validate_timeout.as_secs(),
        on_failure: req.on_failure,
    };
    let text = describe(&plan, &group, &[launch, terminate], &view);
    Ok(Planned { plan, text })
}

fn release(r: Option<u64>) -> String {
    r.map_or_else(
        || "release unknown: no release_sequence in its user data".into(),
        |r| format!("release {r}"),
    )
}

/// The plan as `--dry-run` prints it: what was found, then what will be done.
fn describe(plan: &Plan, group: &GroupInfo, hooks: &[&HookInfo], view: &ClusterView) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "repave plan for group {}", plan.group);
    let _ = writeln!(
        t,
        "  launch template: {} ({}) → version {} ({})",
        plan.from.label(),
        release(plan.from_release),
        plan.to.version,
        release(plan.to_release)
    );
    let _ = writeln!(
        t,
        "  capacity: desired {} (min {}, max {}); after the repave: {}",
        group.desired_capacity, plan.min_size, plan.max_size, plan.capacity
    );
    for h in hooks {
        let _ = writeln!(
            t,
            "  hook {}: heartbeat {} s, global timeout {} s, default {}",
            h.name,
            h.heartbeat_timeout.as_secs(),
            h.global_timeout.as_secs(),
            h.default_result
        );
    }
    for i in &group.instances {
        let _ = writeln!(
            t,
            "  instance {}: {} (version {}, {})",
            i.instance_id,
            i.lifecycle_state.as_str(),
            i.template_version.as_deref().unwrap_or("?"),
            i.availability_zone
        );
    }
    let _ = writeln!(
        t,
        "  cluster {}: release {}, {} live, {} stale, {}",
        view.cluster_id.as_deref().unwrap_or("(no identity)"),
        view.release_sequence
            .map_or_else(|| "?".to_string(), |r| r.to_string()),
        view.live,
        view.stale,
        if view.consistent {
            "consistent".to_string()
        } else {
            format!("{} finding(s)", view.findings.len())
        }
    );
    for n in view.nodes.iter().filter(|n| !n.stale) {
        let _ = writeln!(
            t,
            "    {} {} release {}",
            n.record.instance_id,
            n.record.phase.as_str(),
            n.record.release_sequence
        );
    }
    let suspends: Vec<String> = plan
        .suspends()
        .iter()
        .map(|p| p.as_str().to_string())
        .collect();
    let _ = writeln!(
        t,
        "  suspends {} for the duration{}",
        if suspends.is_empty() {
            "nothing".into()
        } else {
            suspends.join(", ")
        },
        if plan.already_suspended.is_empty() {
            String::new()
        } else {
            format!(
                " ({} already suspended: left so)",
                plan.already_suspended
                    .iter()
                    .map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    let _ = writeln!(t, "  steps:");
    for (n, step) in Pass::Forward.steps().iter().enumerate() {
        let _ = writeln!(t, "    {}. {}: {}", n + 1, step.as_str(), step.title());
    }
    let _ = writeln!(
        t,
        "  drain bound {} s (the terminate hook), build bound {} s (the launch hook); validate: {}; on failure: {}",
        plan.drain_budget_s,
        plan.build_budget_s,
        plan.validate_cmd.as_deref().map_or("the cluster view only".to_string(), |c| format!("the cluster view, then `{c}` (timeout {} s)", plan.validate_timeout_s)),
        match plan.on_failure {
            crate::model::repave::OnFailure::Stop => "stop at a safe point",
            crate::model::repave::OnFailure::Rollback => "roll back to the previous version",
        }
    );
    t
}
