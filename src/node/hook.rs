//! Lifecycle hooks: finding this instance's pending action, keeping it alive with heartbeats while
//! work runs, and releasing it exactly once.

use crate::model::asg::{HookResult, LifecycleState, Transition};
use crate::ports::{AsgError, AutoScaling, Clock, HookAction, HookInfo};
use crate::sys::retry::Backoff;
use crate::telemetry::metrics::{metrics, Completion, HookKind, Outcome};
use crate::telemetry::{loops, LoopName};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// What the agent found when it looked for a launch action to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchHook {
    /// No `[lifecycle].launch_hook` configured.
    NotConfigured,
    /// DescribeAutoScalingInstances does not know this instance.
    NotInGroup,
    /// In a group, but not in a launch wait state (e.g. already InService).
    NotWaiting {
        group: String,
        state: LifecycleState,
    },
    /// The group has no launch hook of that name.
    HookMissing { group: String, hook: String },
    /// Waiting on our hook: hold it, then release it.
    Active(ActiveHook),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveHook {
    pub action: HookAction,
    pub info: HookInfo,
    /// `Warmed:Pending:Wait`: being prepared for a warm pool, not entering service.
    pub warm_pool: bool,
}

/// Looks up this instance's state and, if it waits on a launch transition, our hook.
pub async fn discover_launch<A: AutoScaling>(
    asg: &A,
    instance_id: &str,
    hook: Option<&str>,
) -> Result<LaunchHook, AsgError> {
    let Some(hook) = hook else {
        return Ok(LaunchHook::NotConfigured);
    };
    let Some(instance) = asg.describe_instance(instance_id).await? else {
        return Ok(LaunchHook::NotInGroup);
    };
    let Some(warm_pool) = instance.lifecycle_state.launch_wait() else {
        return Ok(LaunchHook::NotWaiting {
            group: instance.group,
            state: instance.lifecycle_state,
        });
    };
    match asg.describe_hook(&instance.group, hook).await? {
        Some(info) if info.transition == Transition::Launching => {
            Ok(LaunchHook::Active(ActiveHook {
                action: HookAction {
                    group: instance.group,
                    hook: hook.to_string(),
                    instance_id: instance_id.to_string(),
                },
                info,
                warm_pool,
            }))
        }
        _ => Ok(LaunchHook::HookMissing {
            group: instance.group,
            hook: hook.to_string(),
        }),
    }
}

/// [`discover_launch`], retried on transient failures (throttling, 5xx, dropped connections,
/// timeouts) with backoff and jitter until `give_up`; a refusal (access denied, a bad name) ends
/// it at once. Each failure is logged; the last one is returned with the number of tries.
pub async fn discover_launch_until<A: AutoScaling, C: Clock>(
    asg: &A,
    clock: &C,
    instance_id: &str,
    hook: Option<&str>,
    give_up: Instant,
) -> Result<LaunchHook, (AsgError, u32)> {
    let mut backoff = Backoff::aws();
    let mut tries = 0;
    loop {
        tries += 1;
        match discover_launch(asg, instance_id, hook).await {
            Ok(found) => {
                if tries > 1 {
                    log::info!("found the launch hook's state after {tries} tries");
                }
                return Ok(found);
            }
            Err(e) if !e.is_transient() => return Err((e, tries)),
            Err(e) => {
                let delay = backoff.next_delay();
                if clock.now() + delay >= give_up {
                    return Err((e, tries));
                }
                log::warn!(
                    "looking up the launch hook failed (try {tries}): {e}; retrying in {:.1}s",
                    delay.as_secs_f32()
                );
                clock.sleep(delay).await;
            }
        }
    }
}

/// A third of HeartbeatTimeout leaves two more tries before the action would expire; bounded so
/// a 2-hour timeout still beats every 10 minutes and a tiny test timeout still has a floor.
pub fn heartbeat_interval(heartbeat_timeout: Duration) -> Duration {
    (heartbeat_timeout / 3).clamp(Duration::from_millis(500), Duration::from_secs(600))
}

/// ±10 % so a fleet started together does not beat in lockstep.
fn jittered(interval: Duration) -> Duration {
    let factor = 0.9 + 0.2 * fastrand::f64();
    interval.mul_f64(factor)
}

/// Runs `work` while heartbeating `action`; heartbeats stop the moment `work` finishes (or this
/// future is dropped). The first beat goes out at once: time has passed since the action began.
pub async fn hold_while<A, C, F, T>(asg: &A, clock: &C, hook: &ActiveHook, work: F) -> T
where
    A: AutoScaling,
    C: Clock,
    F: Future<Output = T>,
{
    let beats = heartbeat_loop(
        asg,
        clock,
        &hook.action,
        kind_of(&hook.info),
        heartbeat_interval(hook.info.heartbeat_timeout),
    );
    tokio::pin!(work);
    tokio::select! {
        biased;
        out = &mut work => out,
        never = beats => match never {},
    }
}

enum Never {}

/// Which hook `info` describes, for the metrics and the liveness of its heartbeats.
pub fn kind_of(info: &HookInfo) -> HookKind {
    match info.transition {
        Transition::Terminating => HookKind::Terminate,
        _ => HookKind::Launch,
    }
}

async fn heartbeat_loop<A: AutoScaling, C: Clock>(
    asg: &A,
    clock: &C,
    action: &HookAction,
    kind: HookKind,
    interval: Duration,
) -> Never {
    let first = Duration::from_secs(1).min(interval);
    let mut backoff = Backoff::new(first, interval);
    let name = match kind {
        HookKind::Launch => LoopName::LaunchHeartbeat,
        HookKind::Terminate => LoopName::TerminateHeartbeat,
    };
    // Jitter stretches a turn by up to 10 %; the liveness check allows three.
    let alive = loops().enter(name, interval.mul_f64(1.1));
    loop {
        alive.tick();
        let beat = asg.heartbeat(action).await;
        metrics().heartbeat(
            kind,
            if beat.is_ok() {
                Outcome::Ok
            } else {
                Outcome::Error
            },
        );
        match beat {
            Ok(()) => {
                log::debug!(
                    "heartbeat sent for hook {} (next in about {:?})",
                    action.hook,
                    interval
                );
                backoff.reset(first);
                clock.sleep(jittered(interval)).await;
            }
            Err(AsgError::NoActiveAction { message, .. }) => {
                // Resolved elsewhere or expired: beating again cannot help and only adds noise.
                log::warn!(
                    "lifecycle action {} is no longer active ({message}); heartbeats stopped",
                    action.hook
                );
                drop(alive);
                return std::future::pending().await;
            }
            Err(e) => {
                let delay = backoff.next_delay();
                log::warn!(
                    "heartbeat for hook {} failed: {e}; retrying in {:.1}s",
                    action.hook,
                    delay.as_secs_f32()
                );
                clock.sleep(delay).await;
            }
        }
    }
}

/// How a release ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    Completed(HookResult),
    /// "No active Lifecycle Action": it timed out or someone else resolved it; the instance's
    /// current state says which way.
    AlreadyResolved {
        state: Option<LifecycleState>,
    },
}

/// CompleteLifecycleAction, retried on transient failures with backoff and jitter until
/// `give_up` (callers pass the moment the action would expire without heartbeats: retrying past
/// it cannot help). "No active Lifecycle Action" ends it: the action was resolved — by this very
/// call when an earlier try's answer was lost, or by a timeout or someone else — and the
/// instance's state says which; no second Complete is sent.
pub async fn release<A: AutoScaling, C: Clock>(
    asg: &A,
    clock: &C,
    action: &HookAction,
    result: HookResult,
    give_up: Instant,
) -> Result<Released, AsgError> {
    let mut backoff = Backoff::aws();
    loop {
        match asg.complete(action, result).await {
            Ok(()) => return Ok(Released::Completed(result)),
            Err(AsgError::NoActiveAction { .. }) => {
                let state = asg
                    .describe_instance(&action.instance_id)
                    .await
                    .ok()
                    .flatten()
                    .map(|i| i.lifecycle_state);
                return Ok(Released::AlreadyResolved { state });
            }
            Err(e) if !e.is_transient() => return Err(e),
            Err(e) => {
                let delay = backoff.next_delay();
                if clock.now() + delay >= give_up {
                    return Err(e);
                }
                log::warn!(
                    "CompleteLifecycleAction {} for hook {} failed: {e}; retrying in {:.1}s",
                    result.as_str(),
                    action.hook,
                    delay.as_secs_f32()
                );
                clock.sleep(delay).await;
            }
        }
    }
}

/// [`release`] of a hook the agent answers with a result other than its plain success: says why
/// first, then releases within the hook's budget; a failure is logged with its chain (the
/// group's DefaultResult decides then) and gives `None`.
pub async fn release_saying_why<A: AutoScaling, C: Clock>(
    asg: &A,
    clock: &C,
    hook: &ActiveHook,
    result: HookResult,
    why: &str,
) -> Option<Released> {
    log::warn!(
        "releasing launch hook {} with {} {why}",
        hook.action.hook,
        result.as_str()
    );
    let deadline = release_deadline(clock, &hook.info);
    match release(asg, clock, &hook.action, result, deadline).await {
        Ok(r) => Some(r),
        Err(e) => {
            metrics().hook_completed(kind_of(&hook.info), Completion::Failed);
            log::error!(
                "could not release launch hook {}: {}",
                hook.action.hook,
                crate::error_chain(&e)
            );
            None
        }
    }
}

/// When to stop retrying a release: once heartbeats stop, the action expires after
/// HeartbeatTimeout; give up a little before.
pub fn release_deadline<C: Clock>(clock: &C, info: &HookInfo) -> Instant {
    clock.now() + info.heartbeat_timeout.mul_f64(0.9)
}

#[cfg(test)]
mod tests;
