//! `app restart` on this node, as the running agent does it: `/readyz` 503 first, then TFE's
//! documented restart (`replicatedctl app stop`, `app status` until stopped, `app start`; there is
//! no `app restart` subcommand), then the readiness checks of boot within `[readiness].timeout`.
//! After an operator's drain this is the way back: once TFE is healthy the node is recorded in
//! service again ([`Event::Restored`]).

use crate::config::Settings;
use crate::model::lifecycle::Event;
use crate::model::tfe::AppState;
use crate::node::readiness::{self, ReadinessError};
use crate::node::recorder::{RecordError, Recorder};
use crate::node::view::{AppRestartView, RestartStep};
use crate::ports::{Clock, TfeTools, ToolError, World};
use crate::sys::time::unix_now;
use crate::telemetry::{loops, LoopName, Milestone};
use std::time::Duration;

/// How often `app status` is asked while the app stops.
const STOP_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    #[error("replicatedctl app stop failed")]
    Stop(#[source] ToolError),
    #[error("the app did not report stopped within {} ([drain].app_stop_timeout); last seen: {last}", humantime::format_duration(*waited))]
    NotStopped { waited: Duration, last: String },
    #[error("replicatedctl app start failed")]
    Start(#[source] ToolError),
    #[error("TFE did not become ready again after the restart")]
    Readiness(#[source] ReadinessError),
    #[error("recording that the node is in service again failed")]
    Record(#[source] RecordError),
}

/// Restarts the app and waits until TFE is ready; publishes each step in the view.
pub async fn restart_app<W: World>(
    world: &W,
    cfg: &Settings,
    recorder: &Recorder,
    by: String,
) -> Result<(), RestartError> {
    recorder.app_restart(|r| {
        *r = Some(AppRestartView {
            by: by.clone(),
            step: RestartStep::Stopping,
            started_at: unix_now(),
            ended_at: None,
            detail: None,
        });
    });
    let restored = recorder.state().restorable();
    log::warn!(
        "app restart requested by {by}: /readyz answers 503 until TFE is ready again{}",
        if restored {
            "; it ends the operator's drain"
        } else {
            ""
        }
    );
    recorder.say("app restart: stopping the app");
    let result = steps(world, cfg, recorder, restored).await;
    let step = match &result {
        Ok(()) => RestartStep::Succeeded,
        Err(RestartError::Readiness(_)) => RestartStep::NotReady,
        Err(_) => RestartStep::Failed,
    };
    let detail = match &result {
        Ok(()) => readiness::READY.to_string(),
        Err(e) => crate::error_chain(e),
    };
    recorder.app_restart(|r| {
        if let Some(r) = r {
            r.step = step;
            r.ended_at = Some(unix_now());
            r.detail = Some(detail.clone());
        }
    });
    match &result {
        Ok(()) => {
            recorder.milestone(Milestone::Ready, &format!("app restart: {detail}"));
            recorder.say(if restored {
                "in service again after the operator's drain (app restart)"
            } else {
                "in service (app restarted)"
            });
        }
        Err(e) => {
            recorder.failed(e);
            log::error!("app restart failed: {detail}");
            recorder.say("app restart failed; see /status.app_restart");
        }
    }
    result
}

/// A restart cut short (a termination was noticed, the agent stops): said in the view.
pub fn interrupted(recorder: &Recorder, why: &str) {
    recorder.app_restart(|r| {
        if let Some(r) = r.as_mut().filter(|r| r.step.running()) {
            r.step = RestartStep::Interrupted;
            r.ended_at = Some(unix_now());
            r.detail = Some(why.to_string());
        }
    });
    log::warn!("app restart cut short: {why}");
}

async fn steps<W: World>(
    world: &W,
    cfg: &Settings,
    recorder: &Recorder,
    restored: bool,
) -> Result<(), RestartError> {
    let tfe = world.tfe();
    // After a drain the app was stopped already: stopping it again is no step of its own.
    let stopped = matches!(tfe.app_status().await, Ok(s) if s.state == AppState::Stopped && !s.is_transitioning);
    if !stopped {
        tfe.app_stop().await.map_err(RestartError::Stop)?;
        wait_stopped(world, cfg.drain.app_stop_timeout).await?;
    }
    recorder.app_restart(|r| {
        if let Some(r) = r {
            r.step = RestartStep::Starting;
        }
    });
    recorder.say("app restart: starting the app");
    tfe.app_start().await.map_err(RestartError::Start)?;
    readiness::wait_until_ready(
        tfe,
        world.clock(),
        cfg.readiness.timeout,
        cfg.readiness.poll_interval,
    )
    .await
    .map_err(RestartError::Readiness)?;
    if restored {
        recorder
            .record(Event::Restored)
            .map_err(RestartError::Record)?;
    }
    Ok(())
}

async fn wait_stopped<W: World>(world: &W, timeout: Duration) -> Result<(), RestartError> {
    let start = world.clock().now();
    let alive = loops().enter(LoopName::Readiness, STOP_POLL);
    loop {
        alive.tick();
        let last = match world.tfe().app_status().await {
            Ok(s) if s.state == AppState::Stopped && !s.is_transitioning => return Ok(()),
            Ok(s) => format!("State={} DesiredState={}", s.state, s.desired_state),
            Err(e) => format!("app status: {e}"),
        };
        let waited = world.clock().now() - start;
        if waited >= timeout {
            return Err(RestartError::NotStopped { waited, last });
        }
        world.clock().sleep(STOP_POLL).await;
    }
}

#[cfg(test)]
mod tests;
