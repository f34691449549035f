//! The termination path, start to finish: the node is to go, so node-drain runs (at most once,
//! adopted after an agent restart), the app is stopped, and meanwhile the terminate hook is found
//! — only once DescribeAutoScalingInstances shows the wait state — kept alive with heartbeats
//! within its global budget, and released once with the result the drain earned.

use crate::config::Settings;
use crate::model::asg::{HookResult, LifecycleState, Transition};
use crate::model::lifecycle::{
    hook_result, DrainOutcome, DrainRecord, DrainStep, Event, HookOutcome, IllegalTransition,
    LaunchAnswer, Source,
};
use crate::model::tfe::AppState;
use crate::model::tfe::{DrainState, TrackedProcess};
use crate::node::hook::{self, ActiveHook};
use crate::node::recorder::{RecordError, Recorder};
use crate::node::state::StateError;
use crate::node::view::HookState;
use crate::ports::{AutoScaling, Clock, HookAction, TfeTools, World};
use crate::telemetry::metrics::{metrics, Completion, HookKind};
use crate::telemetry::{loops, LoopName, Milestone};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How often the drain's state (and its new output) is looked at.
const DRAIN_POLL: Duration = Duration::from_millis(500);
/// How often DescribeAutoScalingInstances is asked while waiting for the wait state.
const WAIT_STATE_POLL: Duration = Duration::from_secs(2);
/// A spot notice without a parsable time: the documented two minutes, less a margin.
const SPOT_BUDGET: Duration = Duration::from_secs(110);

#[derive(Debug, thiserror::Error)]
pub enum TerminateError {
    #[error("recording the termination's progress failed")]
    State(#[source] StateError),
    #[error("the node's lifecycle refused a step")]
    Lifecycle(#[source] IllegalTransition),
}

/// Records a step of the termination (see [`Recorder::record`]).
fn record(recorder: &Recorder, event: Event) -> Result<(), TerminateError> {
    Ok(recorder.record(event)?)
}

impl From<RecordError> for TerminateError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::Refused(e) => TerminateError::Lifecycle(e),
            RecordError::Save(e) => TerminateError::State(e),
        }
    }
}

/// Runs what is left of the recorded termination. The recorded state must hold a termination.
pub async fn terminate<W: World>(
    world: &W,
    cfg: &Settings,
    recorder: &Recorder,
) -> Result<(), TerminateError> {
    let state = recorder.snapshot();
    let steps = state
        .termination_steps()
        .expect("terminate() is called with a recorded termination");
    let t = state.termination.clone().expect("checked above");
    log::warn!(
        "node {} is to go: {} ({}); drain: {}, terminate hook: {}",
        state.instance_id,
        t.detail,
        t.source.as_str(),
        match &steps.drain {
            DrainStep::Start => "starting".to_string(),
            DrainStep::Adopt(p) => format!("already running as pid {}; waiting for it", p.pid),
            DrainStep::Done(o) => format!("done earlier ({})", o.describe()),
        },
        if steps.handle_hook {
            "to be released"
        } else {
            "already released"
        }
    );
    recorder.say(&format!("draining: {}", t.detail));
    // The hook side tells the drain side when the hook's budget forces a decision; the drain
    // side tells the hook side when it is done.
    let (budget_tx, budget_rx) = watch::channel(None::<Instant>);
    let (done_tx, done_rx) = watch::channel(false);
    let drain_side = async {
        let outcome =
            drain_node(world, cfg, recorder, steps.drain, steps.stop_app, budget_rx).await;
        let _ = done_tx.send(true);
        outcome
    };
    let hook_side = async {
        if steps.handle_hook {
            release_terminate_hook(world, cfg, recorder, budget_tx, done_rx).await
        } else {
            Ok(())
        }
    };
    let (drained, released) = tokio::join!(drain_side, hook_side);
    drained?;
    released?;
    let done = recorder
        .state()
        .termination
        .as_ref()
        .is_some_and(|t| t.is_done());
    recorder.say(if done {
        "drained; waiting for the instance to stop"
    } else {
        "drain ended; waiting for the ASG termination"
    });
    Ok(())
}

// ------------------------------------------------------------------------------------ drain side

async fn drain_node<W: World>(
    world: &W,
    cfg: &Settings,
    recorder: &Recorder,
    step: DrainStep,
    stop_app: bool,
    budget: watch::Receiver<Option<Instant>>,
) -> Result<(), TerminateError> {
    let (noticed_at, source, deadline_at, nothing_to_drain) = {
        let s = recorder.state();
        let t = s.termination.as_ref().expect("recorded");
        // A node whose launch was abandoned never took work: node-drain would only fail on it.
        let why = match (&s.installed_release, s.launch_hook) {
            (None, _) => Some("TFE was never installed on this instance"),
            (Some(_), Some(LaunchAnswer::Abandon)) => Some("the node never entered service"),
            _ => None,
        };
        (t.noticed_at, t.source, t.deadline_at, why)
    };
    // The drain's own limit counts from the notice, so a restarted agent keeps the same one.
    let elapsed = Duration::from_secs(world.clock().unix_now().saturating_sub(noticed_at));
    let (limit, why) = match (source, deadline_at) {
        (_, Some(at)) => (
            Duration::from_secs(at.saturating_sub(noticed_at)),
            format!("{} notice deadline", source.as_str()),
        ),
        (Source::Shutdown, None) => (
            cfg.termination.shutdown_drain_timeout,
            "[termination].shutdown_drain_timeout".to_string(),
        ),
        (Source::Spot, None) => (SPOT_BUDGET, "spot two-minute warning".to_string()),
        _ => (cfg.drain.timeout, "[drain].timeout".to_string()),
    };
    let deadline = world.clock().now() + limit.saturating_sub(elapsed);

    let step = match step {
        DrainStep::Adopt(process)
            if world.tfe().drain_state(&process) == DrainState::NeverStarted =>
        {
            log::warn!(
                "the node-drain recorded by the earlier agent (pid {}) never ran (that agent stopped before letting it run); starting it now",
                process.pid
            );
            record(recorder, Event::DrainNeverRan)?;
            DrainStep::Start
        }
        other => other,
    };
    // Whether the drain ended in this run (else an earlier agent's outcome is only repeated).
    let ended_now = !matches!(step, DrainStep::Done(_));
    let outcome = match step {
        DrainStep::Done(outcome) => outcome,
        DrainStep::Start if nothing_to_drain.is_some() => {
            let outcome = DrainOutcome::Skipped {
                why: nothing_to_drain.unwrap_or_default().into(),
            };
            record(recorder, Event::DrainFinished(outcome.clone()))?;
            outcome
        }
        DrainStep::Start => match world.tfe().start_drain() {
            Ok(process) => {
                // Recorded before node-drain may run: a restarted agent adopts it, never a second.
                // And recorded before it is said: whoever reads the log line may rely on the
                // state file.
                record(recorder, Event::DrainStarted(process.clone()))?;
                recorder.milestone(
                    Milestone::DrainStarted,
                    &format!(
                        "node-drain started (pid {}); limit {} ({why})",
                        process.pid,
                        humantime::format_duration(limit)
                    ),
                );
                recorder.say("draining: node-drain running");
                let outcome = match world.tfe().release_drain(&process) {
                    Ok(()) => wait_for_drain(world, &process, deadline, &why, budget.clone()).await,
                    Err(e) => DrainOutcome::CouldNotStart {
                        why: crate::error_chain(&e),
                    },
                };
                record(recorder, Event::DrainFinished(outcome.clone()))?;
                outcome
            }
            Err(e) => {
                let outcome = DrainOutcome::CouldNotStart {
                    why: crate::error_chain(&e),
                };
                record(recorder, Event::DrainFinished(outcome.clone()))?;
                outcome
            }
        },
        DrainStep::Adopt(process) => {
            log::info!("node-drain (pid {}) was started before this agent; waiting for it instead of starting another", process.pid);
            let outcome = wait_for_drain(world, &process, deadline, &why, budget.clone()).await;
            record(recorder, Event::DrainFinished(outcome.clone()))?;
            outcome
        }
    };
    let level = if outcome.succeeded() {
        log::Level::Info
    } else {
        log::Level::Error
    };
    if ended_now {
        recorder.milestone_at(level, Milestone::DrainFinished, &outcome.describe());
    } else {
        log::log!(level, "{}", outcome.describe());
    }
    if stop_app && cfg.drain.stop_app && outcome == DrainOutcome::Drained {
        stop_app_and_wait(world, cfg, recorder, budget).await?;
    }
    Ok(())
}

async fn wait_for_drain<W: World>(
    world: &W,
    process: &TrackedProcess,
    deadline: Instant,
    why: &str,
    budget: watch::Receiver<Option<Instant>>,
) -> DrainOutcome {
    let alive = loops().enter(LoopName::Drain, DRAIN_POLL);
    loop {
        alive.tick();
        match world.tfe().drain_state(process) {
            DrainState::Running => {}
            DrainState::Exited(0) => return DrainOutcome::Drained,
            DrainState::Exited(code) => return DrainOutcome::Failed { exit_code: code },
            DrainState::Vanished | DrainState::NeverStarted => return DrainOutcome::Interrupted,
        }
        let now = world.clock().now();
        let cut = if now >= deadline {
            Some(why.to_string())
        } else if budget.borrow().is_some_and(|b| now >= b) {
            Some("the terminate hook's global timeout is near".to_string())
        } else {
            None
        };
        if let Some(why) = cut {
            log::error!("node-drain is still running but must stop: {why}");
            world.tfe().stop_drain(process).await;
            return DrainOutcome::TimedOut { why };
        }
        world.clock().sleep(DRAIN_POLL).await;
    }
}

async fn stop_app_and_wait<W: World>(
    world: &W,
    cfg: &Settings,
    recorder: &Recorder,
    budget: watch::Receiver<Option<Instant>>,
) -> Result<(), TerminateError> {
    recorder.say("draining: stopping the app");
    if let Err(e) = world.tfe().app_stop().await {
        log::warn!(
            "replicatedctl app stop failed: {}; the drain itself succeeded",
            crate::error_chain(&e)
        );
        return Ok(());
    }
    let deadline = world.clock().now() + cfg.drain.app_stop_timeout;
    let alive = loops().enter(LoopName::Drain, DRAIN_POLL);
    loop {
        alive.tick();
        match world.tfe().app_status().await {
            Ok(s) if s.state == AppState::Stopped && !s.is_transitioning => {
                log::info!("the app reports stopped");
                return record(recorder, Event::AppStopped);
            }
            Ok(s) => log::debug!("app is {} (desired {})", s.state, s.desired_state),
            Err(e) => log::warn!("replicatedctl app status failed: {e}"),
        }
        let now = world.clock().now();
        if now >= deadline || budget.borrow().is_some_and(|b| now >= b) {
            log::warn!("the app did not report stopped in time; releasing the hook anyway (node-drain succeeded)");
            return Ok(());
        }
        world.clock().sleep(DRAIN_POLL).await;
    }
}

// ------------------------------------------------------------------------------------- hook side

async fn release_terminate_hook<W: World>(
    world: &W,
    cfg: &Settings,
    recorder: &Recorder,
    budget: watch::Sender<Option<Instant>>,
    mut done: watch::Receiver<bool>,
) -> Result<(), TerminateError> {
    let Some(hook_name) = cfg.lifecycle.terminate_hook.clone() else {
        return record(
            recorder,
            Event::TerminateHookDone(HookOutcome::NotApplicable {
                why: "no [lifecycle].terminate_hook configured".into(),
            }),
        );
    };
    let Some(hook) = find_terminate_action(world, cfg, recorder, &hook_name, &mut done).await?
    else {
        return Ok(());
    };
    // The global budget runs from the wait state's start; decide a margin before it ends.
    let seen_at = recorder
        .state()
        .termination
        .as_ref()
        .and_then(|t| t.wait_state_seen_at)
        .unwrap_or_else(|| world.clock().unix_now());
    let ends_in = Duration::from_secs(
        (seen_at + hook.info.global_timeout.as_secs()).saturating_sub(world.clock().unix_now()),
    );
    let margin = hook::heartbeat_interval(hook.info.heartbeat_timeout) + Duration::from_secs(15);
    let _ = budget.send(Some(world.clock().now() + ends_in.saturating_sub(margin)));
    log::info!(
        "holding terminate hook {} of group {} (HeartbeatTimeout {}s, DefaultResult {}, global budget ends in {}s)",
        hook.action.hook, hook.action.group, hook.info.heartbeat_timeout.as_secs(), hook.info.default_result, ends_in.as_secs()
    );
    hook::hold_while(world.asg(), world.clock(), &hook, done.wait_for(|d| *d))
        .await
        .ok();

    let outcome = {
        let s = recorder.state();
        match &s.termination.as_ref().expect("recorded").drain {
            DrainRecord::Finished { outcome } => outcome.clone(),
            _ => DrainOutcome::Interrupted,
        }
    };
    let on_failure = cfg.drain.on_failure.hook_result();
    let result = hook_result(&outcome, on_failure);
    if result == HookResult::Continue {
        recorder.say("drained; releasing the terminate hook");
    } else {
        log::warn!("releasing terminate hook {} with {} because {} ([drain].on_failure); with TerminateHookAbandon=retain the instance stays for an operator", hook.action.hook, result.as_str(), outcome.describe());
    }
    match hook::release(
        world.asg(),
        world.clock(),
        &hook.action,
        result,
        hook::release_deadline(world.clock(), &hook.info),
    )
    .await
    {
        Ok(hook::Released::Completed(r)) => {
            // Recorded first: whoever reads the log line may rely on the state file.
            record(
                recorder,
                Event::TerminateHookDone(HookOutcome::Released { result: r }),
            )?;
            recorder.milestone(
                Milestone::TerminateReleased,
                &format!(
                    "terminate hook {} released with {}",
                    hook.action.hook,
                    r.as_str()
                ),
            );
            Ok(())
        }
        Ok(hook::Released::AlreadyResolved { state }) => {
            log::warn!("terminate hook {} had no active action any more (timed out or resolved elsewhere); instance is now {}", hook.action.hook, state.as_ref().map_or("unknown".into(), ToString::to_string));
            record(
                recorder,
                Event::TerminateHookDone(HookOutcome::ResolvedElsewhere {
                    state: state.map(|s| s.to_string()),
                }),
            )
        }
        Err(e) => {
            metrics().hook_completed(HookKind::Terminate, Completion::Failed);
            recorder.failed(&e);
            // Not recorded: a restarted agent tries again; the hook's DefaultResult is the backstop.
            log::error!(
                "could not release terminate hook {}: {}",
                hook.action.hook,
                crate::error_chain(&e)
            );
            Ok(())
        }
    }
}

/// Waits for this instance's terminate wait state; `None` when there is no action to hold
/// (recorded, except for a non-ASG drain that ended without one: an ASG termination may follow).
async fn find_terminate_action<W: World>(
    world: &W,
    cfg: &Settings,
    recorder: &Recorder,
    hook_name: &str,
    done: &mut watch::Receiver<bool>,
) -> Result<Option<ActiveHook>, TerminateError> {
    let (instance_id, source, noticed_at, seen_waiting) = {
        let s = recorder.state();
        let t = s.termination.as_ref().expect("recorded");
        (
            s.instance_id.clone(),
            t.source,
            t.asg_noticed_at.unwrap_or(t.noticed_at),
            t.wait_state_seen_at.is_some(),
        )
    };
    let not_applicable = |why: String| {
        record(
            recorder,
            Event::TerminateHookDone(HookOutcome::NotApplicable { why }),
        )
        .map(|_| None)
    };
    let wait_limit = Duration::from_secs(noticed_at + cfg.termination.wait_state_timeout.as_secs())
        .saturating_sub(Duration::from_secs(world.clock().unix_now()));
    let give_up = world.clock().now() + wait_limit;
    let mut said = None;
    let mut backoff = crate::sys::retry::Backoff::new(WAIT_STATE_POLL, Duration::from_secs(30));
    let mut failing = false;
    let group = loop {
        match world.asg().describe_instance(&instance_id).await {
            // Seen waiting before, gone now: the hook was resolved (an earlier agent's release
            // whose answer was lost, or a timeout) and the instance left the group.
            Ok(None) if seen_waiting => {
                log::warn!("instance is no longer in its group: the terminate hook was resolved while no agent watched");
                return record(
                    recorder,
                    Event::TerminateHookDone(HookOutcome::ResolvedElsewhere {
                        state: Some("no longer in the group".into()),
                    }),
                )
                .map(|_| None);
            }
            Ok(None) if source.has_hook() => {
                return not_applicable("this instance is not in an Auto Scaling group".into())
            }
            Ok(None) => {}
            Ok(Some(i)) if i.lifecycle_state.is_terminate_wait() => break i.group,
            // A return to the warm pool waits on the terminate hook here.
            Ok(Some(i))
                if source == Source::WarmPool
                    && i.lifecycle_state == LifecycleState::WarmedPendingWait =>
            {
                break i.group
            }
            Ok(Some(i)) if i.lifecycle_state.is_past_terminate_wait() => {
                log::warn!(
                    "instance is already {}: the terminate hook was resolved elsewhere",
                    i.lifecycle_state
                );
                return record(
                    recorder,
                    Event::TerminateHookDone(HookOutcome::ResolvedElsewhere {
                        state: Some(i.lifecycle_state.to_string()),
                    }),
                )
                .map(|_| None);
            }
            Ok(Some(i)) => {
                if said.as_ref() != Some(&i.lifecycle_state) {
                    log::info!("instance is {}; waiting for Terminating:Wait before touching the terminate hook", i.lifecycle_state);
                    said = Some(i.lifecycle_state);
                }
            }
            Err(e) => {
                failing = true;
                log::warn!("DescribeAutoScalingInstances failed: {e}; retrying with backoff");
            }
        }
        let pause = if std::mem::take(&mut failing) {
            backoff.next_delay()
        } else {
            backoff.reset(WAIT_STATE_POLL);
            WAIT_STATE_POLL
        };
        if source.has_hook() && world.clock().now() >= give_up {
            log::error!("no Terminating:Wait within {} of the notice; the drain goes on, the hook is left to its DefaultResult", humantime::format_duration(cfg.termination.wait_state_timeout));
            return not_applicable("the wait state did not appear in time".into());
        }
        if !source.has_hook() && *done.borrow() {
            return Ok(None);
        }
        tokio::select! {
            _ = world.clock().sleep(pause) => {}
            _ = done.changed(), if !source.has_hook() => {}
        }
    };
    record(
        recorder,
        Event::WaitStateSeen {
            at: world.clock().unix_now(),
        },
    )?;
    recorder.hook_found(HookKind::Terminate, HookState::Held, Some(&group));
    match world.asg().describe_hook(&group, hook_name).await {
        Ok(Some(info)) if info.transition == Transition::Terminating => Ok(Some(ActiveHook {
            action: HookAction {
                group,
                hook: hook_name.to_string(),
                instance_id,
            },
            info,
            warm_pool: false,
        })),
        Ok(_) => not_applicable(format!(
            "group {group} has no terminate hook named {hook_name}"
        )),
        Err(e) => {
            // Without HeartbeatTimeout we can still complete by name; assume the shortest timeout.
            log::warn!("DescribeLifecycleHooks failed: {e}; holding the hook with the shortest allowed HeartbeatTimeout");
            Ok(Some(ActiveHook {
                action: HookAction {
                    group,
                    hook: hook_name.to_string(),
                    instance_id,
                },
                info: crate::ports::HookInfo {
                    name: hook_name.to_string(),
                    transition: Transition::Terminating,
                    heartbeat_timeout: Duration::from_secs(30),
                    global_timeout: Duration::from_secs(3000),
                    default_result: "unknown".into(),
                },
                warm_pool: false,
            }))
        }
    }
}

#[cfg(test)]
mod tests;
