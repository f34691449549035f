//! The node as the recorder publishes it while the agent runs: what `/status`, `/readyz` and the
//! `status` command show. Built from the recorded state plus what only this process knows (when
//! each phase began, the last error, the hooks as found, notices that did not end the node). It
//! never holds a secret value: errors are chains of our own messages, settings appear only as a
//! fingerprint.

use crate::model::lifecycle::{HookOutcome, LaunchAnswer, NodeState, Phase, Source, Termination};
use crate::model::preflight::Report;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct View {
    pub version: String,
    pub instance_id: String,
    /// The Auto Scaling group, once a lookup found it.
    pub group: Option<String>,
    pub phase: Phase,
    /// What the agent is doing now (the unit's `STATUS=`).
    pub activity: String,
    /// Unix seconds.
    pub agent_started_at: u64,
    /// The phases this agent process saw, oldest first; the first one may have begun before the
    /// process started (then `began_at` is when the process found it recorded).
    pub phases: Vec<PhaseSpan>,
    pub last_error: Option<LastError>,
    /// The release sequence agent.toml asks for.
    pub release_sequence: Option<u64>,
    /// The release install.sh installed on this instance.
    pub installed_release: Option<u64>,
    /// 16 hex digits over every rendered setting (never a value); changes when any setting does.
    pub settings_fingerprint: Option<String>,
    pub launch_hook: HookView,
    pub terminate_hook: HookView,
    pub termination: Option<Termination>,
    /// Notices seen by this process: the ones that end the node and the ones that only warn.
    pub notices: Vec<NoticeView>,
    /// The last preflight run's report (`null` until one ran in this process).
    pub preflight: Option<Report>,
    /// The cluster as the membership loop last saw it; `null` without a cluster view.
    pub cluster: Option<serde_json::Value>,
    /// Filled by drift detection (a later release); `null` until then.
    pub drift: Option<serde_json::Value>,
    /// The last `app restart` this process ran (`null` until one ran).
    #[serde(default)]
    pub app_restart: Option<AppRestartView>,
}

/// Where an `app restart` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartStep {
    /// `replicatedctl app stop`, then waiting for the app to report stopped.
    Stopping,
    /// `replicatedctl app start`, then waiting until TFE is ready.
    Starting,
    Succeeded,
    /// The app started, but TFE was not ready within `[readiness].timeout`.
    NotReady,
    /// A tool call failed, or the app did not stop in time.
    Failed,
    /// A termination (or the agent's stop) cut it short.
    Interrupted,
}

impl RestartStep {
    pub fn running(self) -> bool {
        matches!(self, RestartStep::Stopping | RestartStep::Starting)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppRestartView {
    pub by: String,
    pub step: RestartStep,
    /// Unix seconds.
    pub started_at: u64,
    pub ended_at: Option<u64>,
    /// Why it failed or was cut short; what it brought back.
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseSpan {
    pub phase: Phase,
    pub began_at: u64,
    pub ended_at: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastError {
    pub at: u64,
    /// The error and its causes on one line.
    pub chain: String,
}

/// Where a lifecycle hook stands, as far as this agent knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookState {
    /// Not looked up yet in this process.
    Unknown,
    /// No hook of this kind in agent.toml.
    NotConfigured,
    /// Looked up: the group does not wait on it for this instance (none held).
    NotWaiting,
    /// Held with heartbeats.
    Held,
    /// Answered (see `result`).
    Released,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookView {
    pub name: Option<String>,
    pub state: HookState,
    /// Filled from the metrics when served.
    pub heartbeats_sent: u64,
    pub heartbeats_failed: u64,
    pub result: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoticeView {
    pub source: Source,
    pub detail: String,
    pub at: u64,
    /// Whether this notice drains the node.
    pub drains: bool,
}

/// One condition of `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

impl HookView {
    fn new(name: Option<&str>) -> Self {
        Self {
            name: name.map(str::to_string),
            state: if name.is_some() {
                HookState::Unknown
            } else {
                HookState::NotConfigured
            },
            heartbeats_sent: 0,
            heartbeats_failed: 0,
            result: None,
        }
    }
}

impl View {
    /// What `state` records, seen at `now` by a process that started then.
    pub fn of_state(
        state: &NodeState,
        now: u64,
        launch_hook: Option<&str>,
        terminate_hook: Option<&str>,
    ) -> Self {
        let mut view = View {
            version: env!("CARGO_PKG_VERSION").to_string(),
            instance_id: state.instance_id.clone(),
            group: None,
            phase: state.phase,
            activity: "starting".into(),
            agent_started_at: now,
            phases: vec![PhaseSpan {
                phase: state.phase,
                began_at: now,
                ended_at: None,
            }],
            last_error: None,
            release_sequence: None,
            installed_release: None,
            settings_fingerprint: None,
            launch_hook: HookView::new(launch_hook),
            terminate_hook: HookView::new(terminate_hook),
            termination: None,
            notices: Vec::new(),
            preflight: None,
            cluster: None,
            drift: None,
            app_restart: None,
        };
        view.follow(state, now);
        view
    }

    /// Takes in what `state` records now (after an event was recorded at `now`).
    pub fn follow(&mut self, state: &NodeState, now: u64) {
        if state.phase != self.phase {
            if let Some(last) = self.phases.last_mut() {
                last.ended_at = Some(now);
            }
            self.phases.push(PhaseSpan {
                phase: state.phase,
                began_at: now,
                ended_at: None,
            });
            self.phase = state.phase;
        }
        self.installed_release = state.installed_release;
        if let Some(answer) = state.launch_hook {
            if answer != LaunchAnswer::NoHook {
                self.launch_hook.state = HookState::Released;
            }
            self.launch_hook.result = Some(answer.as_str().to_string());
        }
        if let Some(outcome) = state.termination.as_ref().and_then(|t| t.hook.as_ref()) {
            let result = match outcome {
                HookOutcome::Released { result } => {
                    self.terminate_hook.state = HookState::Released;
                    result.as_str()
                }
                HookOutcome::ResolvedElsewhere { .. } => {
                    self.terminate_hook.state = HookState::Released;
                    "resolved-elsewhere"
                }
                HookOutcome::NotApplicable { .. } => {
                    self.terminate_hook.state = HookState::NotWaiting;
                    "not-applicable"
                }
            };
            self.terminate_hook.result = Some(result.to_string());
        }
        self.termination = state.termination.clone();
    }

    /// The conditions of `/readyz`: the node takes traffic only when every one holds.
    pub fn readiness(&self) -> Vec<Condition> {
        let in_service = self.phase == Phase::InService;
        let going = self.termination.as_ref();
        vec![
            Condition {
                name: "in-service",
                ok: in_service,
                detail: format!("phase {}", self.phase.as_str()),
            },
            Condition {
                name: "launch-hook-released",
                ok: self
                    .launch_hook
                    .result
                    .as_deref()
                    .is_some_and(|r| r == "CONTINUE" || r == "none"),
                detail: match &self.launch_hook.result {
                    Some(r) => format!("answered {r}"),
                    None => "not answered yet".into(),
                },
            },
            Condition {
                name: "no-termination",
                ok: going.is_none(),
                detail: match going {
                    Some(t) => format!("{} ({})", t.source.as_str(), t.detail),
                    None => "none noticed".into(),
                },
            },
            Condition {
                name: "no-app-restart",
                ok: !self.app_restart.as_ref().is_some_and(|r| r.step.running()),
                detail: match &self.app_restart {
                    Some(r) if r.step.running() => {
                        format!("app restart by {} running ({:?})", r.by, r.step)
                    }
                    _ => "none running".into(),
                },
            },
        ]
    }

    pub fn is_ready(&self) -> bool {
        self.readiness().iter().all(|c| c.ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::asg::HookResult;
    use crate::model::lifecycle::{Event, Notice};

    #[test]
    fn ready_only_in_service_with_the_hook_answered_and_no_termination() {
        let mut state = NodeState::new("i-1");
        let mut view = View::of_state(&state, 100, Some("launch"), Some("terminate"));
        assert!(!view.is_ready());
        state
            .apply(Event::InstallSucceeded {
                release_sequence: 504,
            })
            .unwrap();
        view.follow(&state, 105);
        state.apply(Event::Healthy).unwrap();
        view.follow(&state, 110);
        assert!(!view.is_ready(), "TFE ready, launch hook still held");
        state
            .apply(Event::LaunchReleased(Some(HookResult::Continue)))
            .unwrap();
        view.follow(&state, 120);
        assert!(view.is_ready(), "{:?}", view.readiness());
        assert_eq!(view.launch_hook.state, HookState::Released);
        state
            .apply(Event::TerminationNoticed(Notice {
                source: Source::Asg,
                detail: "target-lifecycle-state Terminated".into(),
                at: 130,
                boot_id: "b".into(),
                deadline_at: None,
            }))
            .unwrap();
        view.follow(&state, 130);
        let conditions = view.readiness();
        assert!(!view.is_ready());
        assert!(!conditions[2].ok && conditions[2].detail.contains("asg"));
        let phases: Vec<_> = view.phases.iter().map(|s| s.phase).collect();
        assert_eq!(
            phases,
            [
                Phase::Booting,
                Phase::Installed,
                Phase::Ready,
                Phase::InService,
                Phase::Draining
            ]
        );
        assert_eq!(view.phases[3].began_at, 120);
        assert_eq!(view.phases[3].ended_at, Some(130));
    }
}
