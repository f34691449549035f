//! The boot path of a node, start to finish: identity is known, the launch hook is found and held
//! with heartbeats while secrets are fetched, files rendered, install.sh run (once per instance)
//! and TFE becomes healthy; then the hook is released with CONTINUE, or with the configured failure
//! result after saying why.

use crate::config::{LifecycleSection, Settings};
use crate::model::asg::{HookResult, LifecycleState};
use crate::model::cluster::ClusterView;
use crate::model::lifecycle::{Event, IllegalTransition, LaunchAnswer, NodeState};
use crate::node::cluster::{self, JoinRefused};
use crate::node::hook::{self, ActiveHook, LaunchHook, Released};
use crate::node::preflight::{self, PreflightFailed, Stage};
use crate::node::readiness::{self, ReadinessError};
use crate::node::recorder::{RecordError, Recorder};
use crate::node::state::StateError;
use crate::node::view::HookState;
use crate::ports::{
    AsgError, AutoScaling, Clock, Identity, InstallCommand, TfeTools, ToolError, World,
};
use crate::sys::fsutil::FsError;
use crate::sys::notify;
use crate::telemetry::metrics::{metrics, Completion, HookKind};
use crate::telemetry::Milestone;
use crate::tfe_files::install_args::install_args;
use crate::tfe_files::{self, ConfigureError, TfeConfig};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("looking up this instance's launch lifecycle hook failed after {tries} tries ([lifecycle].discovery_timeout {}); the group applies the hook's DefaultResult when its HeartbeatTimeout passes", humantime::format_duration(*budget))]
    DiscoverHook {
        tries: u32,
        budget: Duration,
        #[source]
        source: AsgError,
    },
    #[error(transparent)]
    Configure(#[from] ConfigureError),
    #[error("install.sh failed")]
    Install(#[source] ToolError),
    #[error("cannot take back the permissions install.sh loosened")]
    Restrict(#[source] FsError),
    #[error(transparent)]
    Readiness(#[from] ReadinessError),
    #[error("recording the node's progress failed")]
    State(#[source] StateError),
    #[error("the node's lifecycle refused a step")]
    Lifecycle(#[source] IllegalTransition),
    #[error("launch hook {hook} was resolved without this agent (its HeartbeatTimeout passed, or someone else answered it) and the instance is {state}: it will not enter service")]
    LaunchHookLost { hook: String, state: String },
    #[error(transparent)]
    JoinRefused(#[from] JoinRefused),
    #[error(transparent)]
    Preflight(#[from] PreflightFailed),
    #[error("releasing the launch lifecycle hook with {result} failed")]
    Release {
        result: &'static str,
        #[source]
        source: AsgError,
    },
}

impl From<RecordError> for BootError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::Refused(e) => BootError::Lifecycle(e),
            RecordError::Save(e) => BootError::State(e),
        }
    }
}

/// What a successful boot did about the launch hook, and the settings it rendered (the desired
/// state drift detection compares TFE with).
#[derive(Debug, Clone)]
#[cfg_attr(
    not(test),
    allow(dead_code, reason = "the hook's outcome is read by the boot tests")
)]
pub struct BootOutcome {
    pub hook: LaunchHook,
    pub released: Option<Released>,
    pub node: Arc<TfeConfig>,
}

/// After the work ended, one more look for a launch hook that could not be found while it ran
/// (Auto Scaling may have recovered): this long at most (and no longer than the budget itself).
const LAST_LOOK: Duration = Duration::from_secs(60);

/// Boots the node. Every failure is logged with its whole chain before this returns.
pub async fn boot<W: World>(
    world: &W,
    cfg: &Settings,
    identity: &Identity,
    recorder: &Recorder,
) -> Result<BootOutcome, BootError> {
    let mut logged = false;
    let result = run_boot(world, cfg, identity, recorder, &mut logged).await;
    if let Err(error) = &result {
        recorder.failed(error);
        if !logged {
            let message = format!("boot failed: {}", crate::error_chain(error));
            recorder.milestone(Milestone::BootFailed, &message);
            recorder.say("boot failed");
        }
    }
    result
}

/// The state record could not be read: nothing recorded can be trusted, so nothing runs; but a
/// launch hook the group holds for this instance still gets its answer (the failure result)
/// instead of waiting out its timeout. Logs why and returns the error to exit with.
pub async fn refuse_to_boot<W: World>(
    world: &W,
    cfg: &Settings,
    identity: &Identity,
    unreadable: StateError,
) -> BootError {
    let error = BootError::State(unreadable);
    // No recorder (the record is what cannot be read), so no PHASE; the id still finds it.
    log::error!(
        MESSAGE_ID = Milestone::BootFailed.message_id(),
        INSTANCE_ID = identity.instance_id.as_str();
        "boot failed: {}",
        crate::error_chain(&error)
    );
    notify::status("boot failed: unreadable state record");
    refuse_held_launch(
        world.asg(),
        world.clock(),
        &identity.instance_id,
        &cfg.lifecycle,
        "because the boot cannot start ([lifecycle].on_failure)",
    )
    .await;
    error
}

async fn run_boot<W: World>(
    world: &W,
    cfg: &Settings,
    identity: &Identity,
    recorder: &Recorder,
    logged: &mut bool,
) -> Result<BootOutcome, BootError> {
    let give_up = world.clock().now() + cfg.lifecycle.discovery_timeout;
    let hook_name = cfg.lifecycle.launch_hook.as_deref();
    recorder.record(Event::BootStarted)?;
    let steps = recorder.state().boot_steps();
    recorder.milestone(
        Milestone::BootStarted,
        &format!(
            "boot of instance {} (private address {}, phase {:?}, install {}needed)",
            identity.instance_id,
            identity.private_ipv4,
            recorder.phase(),
            if steps.install { "" } else { "not " }
        ),
    );
    let released_before = recorder.state().launch_hook;

    // The work does not wait on Auto Scaling: the hook is looked up beside it (with retries),
    // and held with heartbeats from the moment it is found.
    let found = {
        let discovery = hook::discover_launch_until(
            world.asg(),
            world.clock(),
            &identity.instance_id,
            hook_name,
            give_up,
        );
        let work = prepare(world, cfg, identity, recorder);
        tokio::pin!(discovery);
        tokio::pin!(work);
        let mut found = None;
        // Whether the lookup gave up while the work still ran: then, with the work done, Auto
        // Scaling gets one more, later chance.
        let mut gave_up_early = false;
        let result = loop {
            tokio::select! {
                r = &mut work => break r,
                d = &mut discovery, if found.is_none() => {
                    let active = match &d {
                        Ok(LaunchHook::Active(h)) => Some(h.clone()),
                        _ => None,
                    };
                    describe_found(&d, released_before.map(LaunchAnswer::as_str), cfg, recorder);
                    gave_up_early = d.is_err();
                    found = Some(d);
                    if let Some(h) = active {
                        break hook::hold_while(world.asg(), world.clock(), &h, &mut work).await;
                    }
                }
            }
        };
        let found = match found {
            Some(f) => f,
            None => {
                let d = discovery.await;
                describe_found(&d, released_before.map(LaunchAnswer::as_str), cfg, recorder);
                d
            }
        };
        (found, result, gave_up_early)
    };
    let (found, result, gave_up_early) = found;
    let found = match found {
        Err((e, _)) if e.is_transient() && gave_up_early => {
            log::info!("the work is done; looking for the launch hook once more");
            let last = world.clock().now() + LAST_LOOK.min(cfg.lifecycle.discovery_timeout);
            let d = hook::discover_launch_until(
                world.asg(),
                world.clock(),
                &identity.instance_id,
                hook_name,
                last,
            )
            .await;
            describe_found(&d, released_before.map(LaunchAnswer::as_str), cfg, recorder);
            d
        }
        other => other,
    };
    let (hook, active) = match found {
        Ok(LaunchHook::Active(h)) => (LaunchHook::Active(h.clone()), Some(h)),
        Ok(other) => (other, None),
        Err((source, tries)) => {
            let error = BootError::DiscoverHook {
                tries,
                budget: cfg.lifecycle.discovery_timeout,
                source,
            };
            // The work's own failure, if any, is the one to report; say both.
            let error = match result {
                Err(work_error) => {
                    log::error!("{}", crate::error_chain(&error));
                    work_error
                }
                Ok(_) => error,
            };
            *logged = true;
            fail_boot(recorder, &error, "boot failed")?;
            return Err(error);
        }
    };

    let node = match result {
        Ok(node) => node,
        Err(error) => return fail_work(world, cfg, recorder, logged, active.as_ref(), error).await,
    };
    {
        let released = match &active {
            Some(h) => {
                recorder.say("TFE ready; releasing the launch hook");
                let r = hook::release(
                    world.asg(),
                    world.clock(),
                    &h.action,
                    HookResult::Continue,
                    hook::release_deadline(world.clock(), &h.info),
                )
                .await
                .map_err(|source| {
                    metrics().hook_completed(HookKind::Launch, Completion::Failed);
                    BootError::Release {
                        result: "CONTINUE",
                        source,
                    }
                })?;
                if let Released::AlreadyResolved { state: now } = &r {
                    if !launch_went_ahead(now.as_ref(), h.warm_pool) {
                        log_released(None, &h.action.hook, &r);
                        let error = BootError::LaunchHookLost {
                            hook: h.action.hook.clone(),
                            state: now.as_ref().map_or("unknown".into(), ToString::to_string),
                        };
                        *logged = true;
                        fail_boot(recorder, &error, "boot failed: the launch hook was lost")?;
                        return Err(error);
                    }
                }
                // A warm-pool launch fires the hook again when the instance leaves the pool.
                if !h.warm_pool {
                    let event = released_event(&recorder.state(), HookResult::Continue);
                    recorder.record(event)?;
                }
                log_released(Some(recorder), &h.action.hook, &r);
                Some(r)
            }
            None if steps.release_launch_hook => {
                recorder.record(Event::LaunchReleased(None))?;
                None
            }
            None => None,
        };
        log::info!(
            "boot complete: instance {} is in service",
            identity.instance_id
        );
        Ok(BootOutcome {
            hook,
            released,
            node: Arc::new(node),
        })
    }
}

/// The work failed: say so, and answer a held launch hook with the failure result.
async fn fail_work<W: World>(
    world: &W,
    cfg: &Settings,
    recorder: &Recorder,
    logged: &mut bool,
    active: Option<&ActiveHook>,
    error: BootError,
) -> Result<BootOutcome, BootError> {
    *logged = true;
    fail_boot(recorder, &error, "boot failed")?;
    if let Some(h) = active {
        // A node refused by its cluster never serves, whatever on_failure says.
        let (result, why) = match &error {
            BootError::JoinRefused(_) => (
                HookResult::Abandon,
                "because the cluster refused this node (the join guard)",
            ),
            _ => (
                cfg.lifecycle.on_failure.hook_result(),
                "because the boot failed ([lifecycle].on_failure)",
            ),
        };
        if let Some(r) = hook::release_saying_why(world.asg(), world.clock(), h, result, why).await
        {
            let event = released_event(&recorder.state(), result);
            let recorded = recorder.record(event);
            log_released(Some(recorder), &h.action.hook, &r);
            recorded?;
        }
    }
    Err(error)
}

/// Records a failed boot, then says so (with the error's whole chain) and publishes `status`. A
/// failed save is returned after the line is logged: the boot's own error must not go unsaid.
fn fail_boot(recorder: &Recorder, error: &BootError, status: &str) -> Result<(), BootError> {
    let recorded = record_failed(recorder);
    let message = format!("boot failed: {}", crate::error_chain(error));
    recorder.milestone(Milestone::BootFailed, &message);
    recorder.say(status);
    recorded
}

/// Records a failed boot; a phase that cannot fail (a boot of an in-service node that only
/// re-checked itself) stays as it is.
fn record_failed(recorder: &Recorder) -> Result<(), BootError> {
    match recorder.record(Event::BootFailed) {
        Err(RecordError::Save(e)) => Err(BootError::State(e)),
        _ => Ok(()),
    }
}

/// Whether an instance whose launch action was already resolved went on into service (or, for a
/// warm-pool launch, into the pool): a release whose answer was lost, not a lost hook.
fn launch_went_ahead(state: Option<&LifecycleState>, warm_pool: bool) -> bool {
    state.is_some_and(|s| s.launch_went_ahead(warm_pool))
}

/// The first release of the launch hook on this instance, or a later one (the group waits on
/// the hook again: a standby exit, a warm pool re-entry).
pub(crate) fn released_event(state: &NodeState, result: HookResult) -> Event {
    match state.launch_hook {
        None => Event::LaunchReleased(Some(result)),
        Some(_) => Event::LaunchReleasedAgain(result),
    }
}

/// A boot that cannot start (no trustworthy state record, an invalid agent.toml): a launch action
/// the group holds for this instance gets the failure result at once, saying `why`, instead of
/// waiting out its timeout — the node cannot say what it would install, so it must not enter
/// service.
pub async fn refuse_held_launch<A: AutoScaling, C: Clock>(
    asg: &A,
    clock: &C,
    instance_id: &str,
    lifecycle: &LifecycleSection,
    why: &str,
) {
    let give_up = clock.now() + lifecycle.discovery_timeout;
    let found = hook::discover_launch_until(
        asg,
        clock,
        instance_id,
        lifecycle.launch_hook.as_deref(),
        give_up,
    )
    .await;
    match found {
        Ok(LaunchHook::Active(h)) => {
            let result = lifecycle.on_failure.hook_result();
            if let Some(r) = hook::release_saying_why(asg, clock, &h, result, why).await {
                log_released(None, &h.action.hook, &r);
            }
        }
        Ok(other) => describe_hook(&other),
        Err((e, tries)) => log::error!(
            "looking up the launch hook failed after {tries} tries: {}",
            crate::error_chain(&e)
        ),
    }
}

/// Says what the lookup found, as soon as it is known.
fn describe_found(
    found: &Result<LaunchHook, (AsgError, u32)>,
    released_before: Option<&str>,
    cfg: &Settings,
    recorder: &Recorder,
) {
    let (state, group) = match found {
        Ok(LaunchHook::Active(h)) => (HookState::Held, Some(h.action.group.as_str())),
        Ok(LaunchHook::NotConfigured) => (HookState::NotConfigured, None),
        Ok(LaunchHook::NotWaiting { group, .. } | LaunchHook::HookMissing { group, .. }) => {
            (HookState::NotWaiting, Some(group.as_str()))
        }
        Ok(LaunchHook::NotInGroup) => (HookState::NotWaiting, None),
        Err(_) => (HookState::Unknown, None),
    };
    recorder.hook_found(HookKind::Launch, state, group);
    match found {
        Ok(hook @ LaunchHook::Active(h)) => {
            describe_hook(hook);
            if let Some(before) = released_before {
                log::warn!(
                    "the group waits on launch hook {} again although this instance released it before ({before}): a standby exit, a warm pool re-entry or an earlier release whose answer was lost; the group's view decides, so it is released again once TFE is healthy",
                    h.action.hook
                );
            }
        }
        Ok(hook) => describe_hook(hook),
        Err((e, tries)) => log::error!(
            "looking up the launch hook failed after {tries} tries within [lifecycle].discovery_timeout ({}): {}; the boot goes on",
            humantime::format_duration(cfg.lifecycle.discovery_timeout),
            crate::error_chain(e)
        ),
    }
}

/// Everything between finding the hook and releasing it.
async fn prepare<W: World>(
    world: &W,
    cfg: &Settings,
    identity: &Identity,
    recorder: &Recorder,
) -> Result<TfeConfig, BootError> {
    // Preflight gates a first install only: a node TFE already runs on (a reboot, an agent
    // restart) is not taken out of service by a dependency's bad minute.
    let first_install = recorder.state().boot_steps().install;
    recorder.say("fetching secrets");
    let node = tfe_files::load(world.secrets(), world.clock(), cfg).await?;
    recorder.rendered(node.fingerprint());
    if cfg.preflight.enabled {
        recorder.say("running preflight checks");
        let report = preflight::before_install(world, cfg, &node, &identity.instance_id).await;
        gate(recorder, &report, Stage::BeforeInstall, first_install)?;
    }
    // Before anything is written: a node that must not join its cluster writes nothing.
    if let Some(membership) = cluster::guard(world, cfg, &node, identity, recorder).await? {
        tokio::spawn(cluster::run_membership(
            membership,
            recorder.subscribe(),
            recorder.live_values(),
            recorder.publisher(),
            recorder.door(),
        ));
    }
    recorder.milestone(Milestone::SecretsFetched, "secrets fetched and valid");
    recorder.say("writing config files");
    let files = tfe_files::write(cfg, &node)?;
    recorder.milestone(
        Milestone::FilesWritten,
        &format!("config files written ({})", files.len()),
    );

    if recorder.state().boot_steps().install {
        recorder.say("running install.sh");
        let command = InstallCommand {
            instance_id: identity.instance_id.clone(),
            script: cfg.install.script.clone(),
            args: install_args(&cfg.install, &identity.private_ipv4),
            timeout: cfg.install.timeout,
        };
        recorder.milestone(
            Milestone::InstallStarted,
            &format!(
                "running {} {}",
                command.script.display(),
                command.args.join(" ")
            ),
        );
        recorder.installing();
        world
            .tfe()
            .install(&command)
            .await
            .map_err(BootError::Install)?;
        tfe_files::restrict_after_install(cfg, &files).map_err(BootError::Restrict)?;
        recorder.record(Event::InstallSucceeded {
            release_sequence: node.release_sequence,
        })?;
        recorder.milestone(Milestone::InstallFinished, "install.sh finished");
    } else {
        log::info!(
            "install.sh already succeeded on this instance (release {}); not running it again",
            recorder.state().installed_release.unwrap_or_default()
        );
    }

    let restart_app = recorder.state().restart_app;
    if restart_app {
        // A drain this instance survived (a reboot) left the app stopped: node-drain has no
        // reverse but starting the app again.
        log::info!("starting the app again after the earlier drain");
        if let Err(e) = world.tfe().app_start().await {
            log::warn!("replicatedctl app start failed: {e}; waiting for readiness anyway");
        }
    }
    recorder.say("waiting for TFE to become ready");
    readiness::wait_until_ready(
        world.tfe(),
        world.clock(),
        cfg.readiness.timeout,
        cfg.readiness.poll_interval,
    )
    .await?;
    if cfg.preflight.enabled {
        // The view as the membership loop last published it (`/status`'s `cluster`), if any.
        let cluster = recorder.subscribe().borrow().cluster.clone();
        let view = cluster.and_then(|v| serde_json::from_value::<ClusterView>(v).ok());
        let peers = view.map(|v| preflight::live_peers(&v, &identity.instance_id));
        let report = preflight::after_install(world, cfg, peers.as_deref()).await;
        gate(recorder, &report, Stage::AfterInstall, first_install)?;
    }
    recorder.record(Event::Healthy)?;
    recorder.milestone(Milestone::Ready, readiness::READY);
    Ok(node)
}

/// Records a preflight run; a failed one stops a first install, and only warns otherwise.
fn gate(
    recorder: &Recorder,
    report: &preflight::Report,
    stage: Stage,
    first_install: bool,
) -> Result<(), BootError> {
    recorder.preflight(report);
    if report.passed() {
        return Ok(());
    }
    if first_install {
        return Err(PreflightFailed::of(stage, report).into());
    }
    log::warn!(
        "preflight failed {stage} ({}), but TFE was installed on this instance before: the boot goes on (preflight stops only a first install)",
        report.failed_ids()
    );
    Ok(())
}

fn describe_hook(hook: &LaunchHook) {
    match hook {
        LaunchHook::NotConfigured => log::info!("no [lifecycle].launch_hook configured; booting without a launch hook"),
        LaunchHook::NotInGroup => log::info!("this instance is not in an Auto Scaling group; booting without a launch hook"),
        LaunchHook::NotWaiting { group, state } => {
            log::info!("instance is {state} in group {group}, not waiting on a launch hook; booting without holding one");
        }
        LaunchHook::HookMissing { group, hook } => {
            log::warn!("group {group} has no launch hook named {hook}; booting without holding one");
        }
        LaunchHook::Active(h) => log::info!(
            "holding launch hook {} of group {} (HeartbeatTimeout {}s, DefaultResult {}, heartbeat every ~{}s){}",
            h.action.hook,
            h.action.group,
            h.info.heartbeat_timeout.as_secs(),
            h.info.default_result,
            hook::heartbeat_interval(h.info.heartbeat_timeout).as_secs_f32(),
            if h.warm_pool { "; warm pool: preparing the node before it is stopped" } else { "" }
        ),
    }
}

/// Says how a release of the launch hook ended; a release that took effect is a milestone when
/// there is a `recorder` (record the release before calling this).
fn log_released(recorder: Option<&Recorder>, hook: &str, released: &Released) {
    let said = |message: String| match recorder {
        Some(r) => r.milestone(Milestone::LaunchReleased, &message),
        None => log::info!("{message}"),
    };
    match released {
        Released::Completed(r) => said(format!("launch hook {hook} released with {}", r.as_str())),
        Released::AlreadyResolved { state } if launch_went_ahead(state.as_ref(), true) => {
            said(format!(
                "launch hook {hook} was already resolved and the instance is {}: an earlier try of this release took effect (its answer was lost)",
                state.as_ref().map_or("unknown".into(), ToString::to_string)
            ));
        }
        Released::AlreadyResolved { state } => log::warn!(
            "launch hook {hook} had no active action any more (timed out or resolved elsewhere); instance is now {}",
            state.as_ref().map_or("unknown".into(), ToString::to_string)
        ),
    }
}

#[cfg(test)]
mod tests;
