//! Each step of the repave: one change to the group, then a bounded wait, one read of the group
//! and the cluster view per poll, until the group is where the step wants it. Every step
//! converges on a state (min = desired = 0 and no instance; the template at a version; …), so
//! running an interrupted one again does no harm.

use super::progress::Progress;
pub use super::watch::{Ctx, StepError};
use super::{aws, RepaveError};
use crate::model::asg::LifecycleState;
use crate::model::lifecycle::Phase;
use crate::model::repave::{Pass, Repave, Step};
use crate::ports::cluster::{ClusterStore, RepaveStore, RolloutStore};
use crate::ports::{GroupControl, GroupUpdate, World};
use std::time::Duration;
use tokio::time::Instant;

/// Slack on top of a hook's budget: the instance's own launch or termination around it.
const SLACK: Duration = Duration::from_secs(300);

fn failed(why: impl Into<String>) -> StepError {
    StepError::Failed(why.into())
}

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

pub async fn run<W: World, S: ClusterStore + RolloutStore + RepaveStore>(
    ctx: &mut Ctx<'_, W, S>,
    repave: &mut Repave,
    step: Step,
    pass: Pass,
    progress: &mut Progress,
) -> Result<String, StepError> {
    match step {
        Step::Suspend => processes(ctx, repave, true).await,
        Step::Drain => drain(ctx, repave, progress).await,
        Step::Point => point(ctx, repave, pass).await,
        Step::First => first(ctx, repave, pass, progress).await,
        Step::Validate => super::validate::validate(ctx, repave, pass, progress).await,
        Step::Scale => scale(ctx, repave, pass, progress).await,
        Step::Resume => processes(ctx, repave, false).await,
    }
}

async fn update<W: World, S>(
    ctx: &Ctx<'_, W, S>,
    group: &str,
    update: GroupUpdate,
) -> Result<(), RepaveError> {
    let groups = ctx.w.groups();
    aws("UpdateAutoScalingGroup", group, || {
        groups.update_group(group, &update)
    })
    .await
}

/// Suspends (or resumes) the processes the plan holds for the repave's duration.
async fn processes<W: World, S>(
    ctx: &Ctx<'_, W, S>,
    repave: &Repave,
    suspend: bool,
) -> Result<String, StepError> {
    let processes = repave.plan.suspends();
    let groups = ctx.w.groups();
    let group = &repave.plan.group;
    if suspend {
        aws("SuspendProcesses", group, || {
            groups.suspend_processes(group, &processes)
        })
        .await?;
    } else {
        aws("ResumeProcesses", group, || {
            groups.resume_processes(group, &processes)
        })
        .await?;
    }
    let names: Vec<&str> = processes.iter().map(|p| p.as_str()).collect();
    Ok(match (names.is_empty(), suspend) {
        (true, true) => "nothing to suspend: all were suspended before".into(),
        (true, false) => "nothing to resume".into(),
        (false, true) => format!("suspended {}", names.join(", ")),
        (false, false) => format!("resumed {}", names.join(", ")),
    })
}

/// min = desired = 0, then every instance gone: each node drains behind its terminate hook.
async fn drain<W: World, S: ClusterStore + RolloutStore + RepaveStore>(
    ctx: &mut Ctx<'_, W, S>,
    repave: &mut Repave,
    progress: &mut Progress,
) -> Result<String, StepError> {
    let group = repave.plan.group.clone();
    let began = ctx.now_ms();
    // The nodes as they serve, so that each one's leaving service is seen.
    ctx.observe(repave, Step::Drain, progress).await?;
    update(
        ctx,
        &group,
        GroupUpdate {
            min_size: Some(0),
            desired_capacity: Some(0),
            ..GroupUpdate::default()
        },
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(repave.plan.drain_budget_s) + SLACK;
    loop {
        let seen = ctx.observe(repave, Step::Drain, progress).await?;
        let serving = seen
            .group
            .instances
            .iter()
            .filter(|i| i.lifecycle_state == LifecycleState::InService)
            .count();
        if serving == 0 && repave.last_old_out_ms.is_none() {
            // The last node out of service: when its drain began (or now, if none served).
            let last = repave
                .instances
                .iter()
                .filter_map(|s| s.left_service_ms)
                .max();
            repave.last_old_out_ms = Some(last.unwrap_or_else(|| ctx.now_ms()));
            ctx.save(repave).await?;
        }
        if seen.group.instances.is_empty() {
            let drained: Vec<String> = repave
                .instances
                .iter()
                .filter(|s| s.gone_ms.is_some_and(|g| g >= began))
                .map(|s| {
                    let took = s
                        .gone_ms
                        .unwrap_or(0)
                        .saturating_sub(s.left_service_ms.unwrap_or(began));
                    match &s.last_error {
                        Some(e) => format!(
                            "{} in {} (its agent's last error: {e})",
                            s.instance_id,
                            secs(took)
                        ),
                        None => format!("{} in {}", s.instance_id, secs(took)),
                    }
                })
                .collect();
            return Ok(if drained.is_empty() {
                "min = desired = 0; no instance was left".into()
            } else {
                format!(
                    "min = desired = 0; {} node(s) drained and gone: {}",
                    drained.len(),
                    drained.join(", ")
                )
            });
        }
        if Instant::now() >= deadline {
            let left: Vec<String> = seen
                .group
                .instances
                .iter()
                .map(|i| {
                    let phase = repave
                        .instances
                        .iter()
                        .find(|s| s.instance_id == i.instance_id)
                        .and_then(|s| s.phase.clone())
                        .unwrap_or_else(|| "not in the cluster view".into());
                    format!("{} {} ({phase})", i.instance_id, i.lifecycle_state.as_str())
                })
                .collect();
            return Err(failed(format!(
                "the drain did not end within the terminate hook's budget ({} s + {} s): still in the group: {}; the group is at min = desired = 0 on its old version",
                repave.plan.drain_budget_s,
                SLACK.as_secs(),
                left.join(", ")
            )));
        }
        ctx.sleep().await;
    }
}

/// The group at this pass's launch template version.
async fn point<W: World, S>(
    ctx: &Ctx<'_, W, S>,
    repave: &Repave,
    pass: Pass,
) -> Result<String, StepError> {
    let (target, _) = repave.plan.target(pass);
    let group = &repave.plan.group;
    update(
        ctx,
        group,
        GroupUpdate {
            launch_template: Some(target.clone()),
            ..GroupUpdate::default()
        },
    )
    .await?;
    let groups = ctx.w.groups();
    let now = aws("DescribeAutoScalingGroups", group, || {
        groups.describe_group(group)
    })
    .await?
    .and_then(|g| g.launch_template);
    match now {
        Some(t) if t.version == target.version => {
            Ok(format!("the group launches {}", target.label()))
        }
        other => Err(failed(format!(
            "UpdateAutoScalingGroup succeeded but the group names {} instead of {}",
            other.map_or("no launch template".into(), |t| t.label()),
            target.label()
        ))),
    }
}

/// desired = 1; the first instance of this pass's version in service, or its failure.
async fn first<W: World, S: ClusterStore + RolloutStore + RepaveStore>(
    ctx: &mut Ctx<'_, W, S>,
    repave: &mut Repave,
    pass: Pass,
    progress: &mut Progress,
) -> Result<String, StepError> {
    let group = repave.plan.group.clone();
    let version = repave.plan.target(pass).0.version.clone();
    // The first start of this step, kept across a resume.
    let began = repave
        .record(Step::First, pass)
        .map_or_else(|| ctx.now_ms(), |r| r.started_ms);
    update(
        ctx,
        &group,
        GroupUpdate {
            desired_capacity: Some(1),
            ..GroupUpdate::default()
        },
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(repave.plan.build_budget_s) + SLACK;
    loop {
        let seen = ctx.observe(repave, Step::First, progress).await?;
        let ours = |id: &str| {
            repave
                .instances
                .iter()
                .find(|s| s.instance_id == id)
                .cloned()
        };
        if let Some(i) = seen.group.instances.iter().find(|i| {
            i.lifecycle_state == LifecycleState::InService
                && i.template_version.as_deref() == Some(version.as_str())
        }) {
            let s = ours(&i.instance_id).expect("observed");
            let at = s.in_service_ms.unwrap_or_else(|| ctx.now_ms());
            if repave.first_new_in_ms.is_none() {
                repave.first_new_in_ms = Some(at);
                ctx.save(repave).await?;
            }
            return Ok(format!(
                "{} in service on version {version} after {} (first seen → InService)",
                i.instance_id,
                secs(at.saturating_sub(s.first_seen_ms))
            ));
        }
        // An instance of this version launched since the step began that left before it served
        // was abandoned (its launch hook answered ABANDON, or timed out): the boot failed. (Not
        // an old node of the same version seen leaving earlier: a rollback's first step.)
        let failed_node = repave.instances.iter().find(|s| {
            s.template_version.as_deref() == Some(version.as_str())
                && s.first_seen_ms >= began
                && s.in_service_ms.is_none()
                && (s.gone_ms.is_some()
                    || seen.group.instances.iter().any(|i| {
                        i.instance_id == s.instance_id
                            && matches!(
                                i.lifecycle_state,
                                LifecycleState::Terminating
                                    | LifecycleState::TerminatingWait
                                    | LifecycleState::TerminatingProceed
                                    | LifecycleState::Terminated
                            )
                    }))
        });
        let why = match failed_node {
            Some(s) => Some(format!(
                "{} was abandoned before it entered service (its launch hook was answered ABANDON or timed out); its last phase in the cluster view: {}; its last error: {}",
                s.instance_id,
                s.phase.as_deref().unwrap_or("never joined"),
                s.last_error.as_deref().unwrap_or("none published")
            )),
            None if Instant::now() >= deadline => Some(format!(
                "no instance of version {version} entered service within the launch hook's budget ({} s + {} s)",
                repave.plan.build_budget_s,
                SLACK.as_secs()
            )),
            None => None,
        };
        if let Some(why) = why {
            // A safe point: nothing new launches and fails again while the operator looks.
            update(
                ctx,
                &group,
                GroupUpdate {
                    desired_capacity: Some(0),
                    ..GroupUpdate::default()
                },
            )
            .await?;
            return Err(failed(format!(
                "{why}; the group was set to desired 0 on version {version}"
            )));
        }
        ctx.sleep().await;
    }
}

/// min/desired back to the capacity; every instance of this pass's version in service and the
/// cluster view consistent.
async fn scale<W: World, S: ClusterStore + RolloutStore + RepaveStore>(
    ctx: &mut Ctx<'_, W, S>,
    repave: &mut Repave,
    pass: Pass,
    progress: &mut Progress,
) -> Result<String, StepError> {
    let plan = repave.plan.clone();
    let (target, release) = plan.target(pass);
    update(
        ctx,
        &plan.group,
        GroupUpdate {
            min_size: Some(plan.min_size.min(plan.capacity)),
            max_size: Some(plan.max_size.max(plan.capacity)),
            desired_capacity: Some(plan.capacity),
            ..GroupUpdate::default()
        },
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(plan.build_budget_s) + SLACK;
    loop {
        let seen = ctx.observe(repave, Step::Scale, progress).await?;
        let serving = seen
            .group
            .instances
            .iter()
            .filter(|i| {
                i.lifecycle_state == LifecycleState::InService
                    && i.template_version.as_deref() == Some(target.version.as_str())
            })
            .count();
        let view = seen.view(ctx.req);
        let members_ready = view.as_ref().map_or(0, |v| {
            v.nodes
                .iter()
                .filter(|n| !n.stale && n.record.phase == Phase::InService)
                .filter(|n| release.is_none_or(|r| n.record.release_sequence == r))
                .count()
        });
        let consistent = view.as_ref().is_some_and(|v| v.consistent);
        if serving == plan.capacity as usize
            && seen.group.instances.len() == serving
            && members_ready >= serving
            && consistent
        {
            return Ok(format!(
                "{serving} node(s) in service on version {}, the cluster view consistent",
                target.version
            ));
        }
        // An instance of this version abandoned while scaling out: the group replaces it on
        // its own (the repave does not fail a node the first one proved can boot); its budget
        // bounds the wait.
        let why_not = format!(
            "{serving} of {} in service on version {}, {members_ready} in service in the cluster view, {}",
            plan.capacity,
            target.version,
            match &view {
                Some(v) if v.consistent => "consistent".to_string(),
                Some(v) => v
                    .findings
                    .iter()
                    .map(|f| f.describe())
                    .collect::<Vec<_>>()
                    .join("; "),
                None => "the cluster view unreadable".to_string(),
            }
        );
        if Instant::now() >= deadline {
            return Err(failed(format!(
                "the group did not come back to {} within the launch hook's budget ({} s + {} s): {why_not}",
                plan.capacity,
                plan.build_budget_s,
                SLACK.as_secs()
            )));
        }
        ctx.sleep().await;
    }
}
