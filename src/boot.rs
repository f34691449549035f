//! The boot path of a node, start to finish: identity is known, the launch hook is found and held
//! with heartbeats while secrets are fetched, files rendered, install.sh run (once per instance)
//! and TFE becomes healthy; then the hook is released with CONTINUE, or with the configured failure
//! result after saying why.

use crate::config::{AgentConfig, FailureResult};
use crate::configure::{self, ConfigureError};
use crate::fsutil::FsError;
use crate::hook::{self, LaunchHook, Released};
use crate::lifecycle::{Event, IllegalTransition, NodeState};
use crate::notify;
use crate::ports::{
    AsgError, AutoScaling, Clock, HookResult, Identity, InstallPlan, InstanceMetadata,
    SecretSource, TfeTools, World,
};
use crate::readiness::{self, ReadinessError};
use crate::state::{StateError, StateStore};
use crate::tfe::{install, TfeError};

/// Attempts for CompleteLifecycleAction before giving up (backoff 1 s doubling to 30 s).
const RELEASE_ATTEMPTS: u32 = 8;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("looking up this instance's launch lifecycle hook failed")]
    DiscoverHook(#[source] AsgError),
    #[error(transparent)]
    Configure(#[from] ConfigureError),
    #[error("install.sh failed")]
    Install(#[source] TfeError),
    #[error("cannot take back the permissions install.sh loosened")]
    Restrict(#[source] FsError),
    #[error(transparent)]
    Readiness(#[from] ReadinessError),
    #[error("recording the node's progress failed")]
    State(#[from] StateError),
    #[error("the node's lifecycle refused a step")]
    Lifecycle(#[from] IllegalTransition),
    #[error("releasing the launch lifecycle hook with {result} failed")]
    Release {
        result: &'static str,
        #[source]
        source: AsgError,
    },
}

/// What a successful boot did about the launch hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootOutcome {
    pub hook: LaunchHook,
    pub released: Option<Released>,
}

pub async fn boot<S, A, M, T, C>(
    world: &World<S, A, M, T, C>,
    cfg: &AgentConfig,
    identity: &Identity,
    store: &StateStore,
) -> Result<BootOutcome, BootError>
where
    S: SecretSource,
    A: AutoScaling,
    M: InstanceMetadata,
    T: TfeTools,
    C: Clock,
{
    let mut state = store.load(&identity.instance_id)?;
    state.apply(Event::BootStarted)?;
    store.save(&state)?;
    let plan = state.plan();
    log::info!(
        "boot of instance {} (private address {}, phase {:?}, install {}needed)",
        identity.instance_id,
        identity.private_ipv4,
        state.phase,
        if plan.install { "" } else { "not " }
    );

    let hook = hook::discover_launch(
        &world.asg,
        &identity.instance_id,
        cfg.lifecycle.launch_hook.as_deref(),
    )
    .await
    .map_err(BootError::DiscoverHook)?;
    describe_hook(&hook);
    let active = match (&hook, plan.release_launch_hook) {
        (LaunchHook::Active(h), true) => Some(h.clone()),
        _ => None,
    };

    let work = prepare(world, cfg, identity, store, &mut state);
    let result = match &active {
        Some(h) => hook::hold_while(&world.asg, &world.clock, h, work).await,
        None => work.await,
    };

    let Err(error) = result else {
        let released = match &active {
            Some(h) => {
                notify::status("TFE ready; releasing the launch hook");
                let r = hook::release(
                    &world.asg,
                    &world.clock,
                    &h.action,
                    HookResult::Continue,
                    RELEASE_ATTEMPTS,
                )
                .await
                .map_err(|source| BootError::Release {
                    result: "CONTINUE",
                    source,
                })?;
                log_released(&h.action.hook, &r);
                // A warm-pool launch fires the hook again when the instance leaves the pool.
                if !h.warm_pool {
                    state.apply(Event::LaunchReleased(Some(HookResult::Continue)))?;
                }
                Some(r)
            }
            None if plan.release_launch_hook => {
                state.apply(Event::LaunchReleased(None))?;
                None
            }
            None => None,
        };
        store.save(&state)?;
        log::info!(
            "boot complete: instance {} is in service",
            identity.instance_id
        );
        return Ok(BootOutcome { hook, released });
    };

    log::error!("boot failed: {}", crate::error_chain(&error));
    notify::status("boot failed");
    if state.apply(Event::BootFailed).is_ok() {
        store.save(&state)?;
    }
    if let Some(h) = &active {
        let result = match cfg.lifecycle.on_failure {
            FailureResult::Abandon => HookResult::Abandon,
            FailureResult::Continue => HookResult::Continue,
        };
        log::warn!(
            "releasing launch hook {} with {} because the boot failed ([lifecycle].on_failure)",
            h.action.hook,
            result.as_str()
        );
        match hook::release(
            &world.asg,
            &world.clock,
            &h.action,
            result,
            RELEASE_ATTEMPTS,
        )
        .await
        {
            Ok(r) => {
                log_released(&h.action.hook, &r);
                state.apply(Event::LaunchReleased(Some(result)))?;
                store.save(&state)?;
            }
            Err(e) => log::error!("could not release launch hook {}: {e}", h.action.hook),
        }
    }
    Err(error)
}

/// Everything between finding the hook and releasing it.
async fn prepare<S, A, M, T, C>(
    world: &World<S, A, M, T, C>,
    cfg: &AgentConfig,
    identity: &Identity,
    store: &StateStore,
    state: &mut NodeState,
) -> Result<(), BootError>
where
    S: SecretSource,
    A: AutoScaling,
    M: InstanceMetadata,
    T: TfeTools,
    C: Clock,
{
    notify::status("fetching secrets");
    let node = configure::plan(&world.secrets, cfg).await?;
    notify::status("writing config files");
    let files = configure::write(cfg, &node)?;

    if state.plan().install {
        notify::status("running install.sh");
        let plan = InstallPlan {
            script: cfg.install.script.clone(),
            args: install::install_args(&cfg.install, &identity.private_ipv4),
            timeout: cfg.install.timeout,
        };
        log::info!("running {} {}", plan.script.display(), plan.args.join(" "));
        world.tfe.install(&plan).await.map_err(BootError::Install)?;
        log::info!("install.sh finished");
        configure::restrict_after_install(cfg, &files).map_err(BootError::Restrict)?;
        state.apply(Event::InstallSucceeded {
            release_sequence: node.release_sequence,
        })?;
        store.save(state)?;
    } else {
        log::info!(
            "install.sh already succeeded on this instance (release {}); not running it again",
            state.installed_release.unwrap_or_default()
        );
    }

    if state.restart_app {
        // A drain this instance survived (a reboot) left the app stopped: node-drain has no
        // reverse but starting the app again.
        log::info!("starting the app again after the earlier drain");
        if let Err(e) = world.tfe.app_start().await {
            log::warn!("replicatedctl app start failed: {e}; waiting for readiness anyway");
        }
    }
    notify::status("waiting for TFE to become ready");
    readiness::wait_until_ready(
        &world.tfe,
        &world.clock,
        cfg.readiness.timeout,
        cfg.readiness.poll_interval,
    )
    .await?;
    state.apply(Event::Healthy)?;
    store.save(state)?;
    Ok(())
}

fn describe_hook(hook: &LaunchHook) {
    match hook {
        LaunchHook::NotConfigured => log::info!("no [lifecycle].launch_hook configured; booting without a launch hook"),
        LaunchHook::NotInGroup => log::info!("this instance is not in an Auto Scaling group; booting without a launch hook"),
        LaunchHook::NotWaiting { group, state } => {
            log::info!("instance is {state} in group {group}, not waiting on a launch hook; booting without holding one")
        }
        LaunchHook::HookMissing { group, hook } => {
            log::warn!("group {group} has no launch hook named {hook}; booting without holding one")
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

fn log_released(hook: &str, released: &Released) {
    match released {
        Released::Completed(r) => log::info!("launch hook {hook} released with {}", r.as_str()),
        Released::AlreadyResolved { state } => log::warn!(
            "launch hook {hook} had no active action any more (timed out or resolved elsewhere); instance is now {}",
            state.as_deref().unwrap_or("unknown")
        ),
    }
}
