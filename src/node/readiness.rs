//! Waiting until TFE is really up: `replicatedctl system status` all ready, then `replicatedctl
//! app status` started, then `replicated admin health-check` passing (docs/design/tfe-tools.md
//! §0 step 5, §4, §5.3).

use crate::ports::{Clock, TfeTools};
use crate::telemetry::{loops, metrics, LoopName};
use std::time::Duration;

/// What the caller logs once it recorded that TFE is ready.
pub const READY: &str = "TFE is ready: system ready, app started, health-check passed";

#[derive(Debug, thiserror::Error)]
#[error("TFE was not ready after {}; last seen: {last}", humantime::format_duration(*waited))]
pub struct ReadinessError {
    pub waited: Duration,
    pub last: String,
}

/// Polls every `poll` until ready or `timeout`. Tool failures (e.g. the replicated container not
/// up yet) are part of not being ready, never fatal on their own. The deadline bounds everything
/// inside: a probe still running at the deadline is dropped, which kills the tool's process group
/// (a hung replicatedctl must not stretch the wait to its own per-call timeout).
pub async fn wait_until_ready<T: TfeTools, C: Clock>(
    tfe: &T,
    clock: &C,
    timeout: Duration,
    poll: Duration,
) -> Result<(), ReadinessError> {
    let start = clock.now();
    let mut last = String::from("nothing yet");
    let alive = loops().enter(LoopName::Readiness, poll);
    loop {
        alive.tick();
        let left = timeout.saturating_sub(clock.now() - start);
        let seen = tokio::select! {
            seen = probe(tfe) => seen,
            _ = clock.sleep(left) => Err(format!(
                "the deadline passed while a TFE tool was still running (it was killed); before that: {last}"
            )),
        };
        match seen {
            // The caller says so (`READY`) once it has recorded it.
            Ok(()) => return Ok(()),
            Err(now) => {
                if now != last {
                    log::info!("waiting for TFE: {now}");
                    last = now;
                }
            }
        }
        let waited = clock.now() - start;
        if waited >= timeout {
            return Err(ReadinessError { waited, last });
        }
        clock.sleep(poll.min(timeout - waited)).await;
    }
}

/// `Err` says what is not ready yet.
async fn probe<T: TfeTools>(tfe: &T) -> Result<(), String> {
    let system = tfe
        .system_status()
        .await
        .map_err(|e| format!("system status: {e}"))?;
    if !system.all_ready() {
        let parts: Vec<String> = system
            .statuses
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        return Err(format!("system status {}", parts.join(" ")));
    }
    let app = tfe
        .app_status()
        .await
        .map_err(|e| format!("app status: {e}"))?;
    if !app.is_started() {
        let error = if app.error.is_empty() {
            String::new()
        } else {
            format!(" error={:?}", app.error)
        };
        return Err(format!(
            "app State={} DesiredState={} IsTransitioning={}{error}",
            app.state, app.desired_state, app.is_transitioning
        ));
    }
    let health = tfe
        .health_check()
        .await
        .map_err(|e| format!("health-check: {e}"))?;
    metrics().health_check(health.passed, health.failed_checks.len());
    if !health.passed {
        return Err(format!(
            "health-check: {} failing: {}",
            health.summary,
            health.failed_checks.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tfe::{
        AppStatus, DrainState, HealthReport, SupportBundleRun, SystemStatus, TrackedProcess,
    };
    use crate::ports::{InstallCommand, TokioClock, ToolError};

    /// replicatedctl that never answers.
    struct Hung;

    impl TfeTools for Hung {
        async fn install(&self, _: &InstallCommand) -> Result<(), ToolError> {
            unreachable!()
        }
        async fn system_status(&self) -> Result<SystemStatus, ToolError> {
            std::future::pending().await
        }
        async fn app_status(&self) -> Result<AppStatus, ToolError> {
            unreachable!()
        }
        async fn health_check(&self) -> Result<HealthReport, ToolError> {
            unreachable!()
        }
        fn start_drain(&self) -> Result<TrackedProcess, ToolError> {
            unreachable!()
        }
        fn release_drain(&self, _: &TrackedProcess) -> Result<(), ToolError> {
            unreachable!()
        }
        fn drain_state(&self, _: &TrackedProcess) -> DrainState {
            unreachable!()
        }
        async fn stop_drain(&self, _: &TrackedProcess) {}
        async fn app_stop(&self) -> Result<(), ToolError> {
            unreachable!()
        }
        async fn app_start(&self) -> Result<(), ToolError> {
            unreachable!()
        }
        async fn app_config_set(&self, _: &str, _: &str) -> Result<(), ToolError> {
            unreachable!()
        }
        async fn support_bundle(&self) -> Result<SupportBundleRun, ToolError> {
            unreachable!()
        }
        async fn replicated_version(&self) -> Result<String, ToolError> {
            unreachable!()
        }
        async fn app_config_export(&self) -> Result<crate::model::drift::LiveSettings, ToolError> {
            unreachable!()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_tool_ends_at_the_deadline_not_at_its_own_timeout() {
        let start = tokio::time::Instant::now();
        let err = wait_until_ready(
            &Hung,
            &TokioClock,
            Duration::from_secs(6),
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert_eq!(tokio::time::Instant::now() - start, Duration::from_secs(6));
        assert!(err.last.contains("still running"), "{err}");
    }
}
