//! The node's life as a pure state machine: what has happened to this instance, what may happen
//! next, and what a (re)started agent still has to do. No I/O here; `state` persists it, `boot`
//! and `terminate` drive it. The termination half lives in `lifecycle/termination.rs`.

use crate::model::asg::HookResult;
use crate::model::tfe::TrackedProcess;
use serde::{Deserialize, Serialize};

mod termination;
pub use termination::*;

/// Where the node is. Shown in `STATUS=` and the state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Fetching secrets, rendering, installing.
    Booting,
    /// install.sh succeeded on this instance.
    Installed,
    /// TFE reported healthy.
    Ready,
    /// Ready and the launch hook released with CONTINUE (or there was none to release).
    InService,
    /// Boot failed; the launch hook (if any) got the failure result.
    BootFailed,
    /// The node is to go: draining, and holding the terminate hook.
    Draining,
    /// Drained, and the terminate hook (if any) released: waiting for the instance to stop.
    Drained,
}

impl Phase {
    pub const ALL: &'static [Phase] = &[
        Phase::Booting,
        Phase::Installed,
        Phase::Ready,
        Phase::InService,
        Phase::BootFailed,
        Phase::Draining,
        Phase::Drained,
    ];

    /// As `state.json`, `/status` and the metrics spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Booting => "booting",
            Phase::Installed => "installed",
            Phase::Ready => "ready",
            Phase::InService => "in-service",
            Phase::BootFailed => "boot-failed",
            Phase::Draining => "draining",
            Phase::Drained => "drained",
        }
    }
}

/// Something that happened, fed to [`NodeState::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A (re)started agent begins the boot path.
    BootStarted,
    InstallSucceeded {
        release_sequence: u64,
    },
    Healthy,
    /// The launch hook was released, or there was no hook to release (`None`).
    LaunchReleased(Option<HookResult>),
    /// The group waited on the launch hook again after it was released (a standby exit, a warm
    /// pool re-entry, a release whose answer was lost) and it was released again.
    LaunchReleasedAgain(HookResult),
    BootFailed,
    /// A termination notice (IMDS, spot, a system shutdown, …). Repeats are harmless.
    TerminationNoticed(Notice),
    /// node-drain was started as this process. Refused once a drain was started: at most one.
    DrainStarted(TrackedProcess),
    DrainFinished(DrainOutcome),
    /// The recorded node-drain never ran (the agent stopped between recording it and letting it
    /// run): it may be started again.
    DrainNeverRan,
    /// `replicatedctl app stop` reported the app stopped.
    AppStopped,
    /// DescribeAutoScalingInstances showed the terminate wait state (unix seconds); the hook's
    /// global budget counts from here.
    WaitStateSeen {
        at: u64,
    },
    /// The terminate hook was released, found resolved, or found not to apply. Once.
    TerminateHookDone(HookOutcome),
    /// The machine came back from a drain that did not end the instance (a reboot): serve again.
    Resumed,
    /// `app restart` made TFE healthy again after an operator's drain: in service again (node-drain
    /// has no reverse; restarting the app is the way back).
    Restored,
}

/// The persisted record of one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    pub instance_id: String,
    pub phase: Phase,
    /// Release sequence that install.sh installed, once it succeeded. Never installed twice.
    pub installed_release: Option<u64>,
    /// How the launch hook was answered; `None` while it has not been.
    pub launch_hook: Option<LaunchAnswer>,
    /// How often the launch hook was released again because the group waited on it again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub launch_released_again: u32,
    /// Set from the first termination notice on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination: Option<Termination>,
    /// A drain that the instance survived stopped the app: start it again on the next boot.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restart_app: bool,
}

/// How this instance's launch hook was answered, as `state.json` keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LaunchAnswer {
    #[serde(rename = "CONTINUE")]
    Continue,
    #[serde(rename = "ABANDON")]
    Abandon,
    /// There was no launch hook to answer.
    #[serde(rename = "none")]
    NoHook,
}

impl LaunchAnswer {
    pub fn as_str(self) -> &'static str {
        match self {
            LaunchAnswer::Continue => "CONTINUE",
            LaunchAnswer::Abandon => "ABANDON",
            LaunchAnswer::NoHook => "none",
        }
    }
}

impl From<HookResult> for LaunchAnswer {
    fn from(result: HookResult) -> Self {
        match result {
            HookResult::Continue => LaunchAnswer::Continue,
            HookResult::Abandon => LaunchAnswer::Abandon,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal transition: {event:?} in phase {phase:?} ({why})")]
pub struct IllegalTransition {
    pub phase: Phase,
    pub event: Event,
    pub why: &'static str,
}

/// What a boot still has to do, given what is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootSteps {
    pub install: bool,
    pub release_launch_hook: bool,
}

impl NodeState {
    pub fn new(instance_id: &str) -> Self {
        Self {
            instance_id: instance_id.to_string(),
            phase: Phase::Booting,
            installed_release: None,
            launch_hook: None,
            launch_released_again: 0,
            termination: None,
            restart_app: false,
        }
    }

    pub fn boot_steps(&self) -> BootSteps {
        BootSteps {
            install: self.installed_release.is_none(),
            release_launch_hook: self.launch_hook.is_none(),
        }
    }

    /// Applies `event`, or refuses it without changing anything.
    pub fn apply(&mut self, event: Event) -> Result<(), IllegalTransition> {
        use Phase::*;
        let illegal = |why| IllegalTransition {
            phase: self.phase,
            event: event.clone(),
            why,
        };
        if event.is_termination() {
            return self.apply_termination(event);
        }
        if self.termination.is_some() {
            // A termination during boot still abandons the launch hook it interrupted.
            if event == Event::LaunchReleased(Some(HookResult::Abandon))
                && self.launch_hook.is_none()
            {
                self.launch_hook = Some(LaunchAnswer::Abandon);
                return Ok(());
            }
            return Err(illegal(
                "the node is terminating; boot events no longer apply",
            ));
        }
        let next = match (&event, self.phase) {
            (_, Draining | Drained) => return Err(illegal("the node is terminating")),
            // A restart resumes: an in-service node stays in service while it re-checks itself.
            (Event::BootStarted, InService) => InService,
            (Event::BootStarted, _) => Booting,
            (Event::InstallSucceeded { .. }, _) if self.installed_release.is_some() => {
                return Err(illegal("install.sh already succeeded on this instance"))
            }
            (Event::InstallSucceeded { .. }, Booting | BootFailed) => Installed,
            (Event::InstallSucceeded { .. }, _) => {
                return Err(illegal("install only happens while booting"))
            }
            (Event::Healthy, _) if self.installed_release.is_none() => {
                return Err(illegal("TFE cannot be healthy before it is installed"))
            }
            (Event::Healthy, InService) => InService,
            // Healthy again with the launch hook answered before (a boot after a drain the node
            // survived, or after a failed boot whose hook got CONTINUE): back in service.
            (Event::Healthy, Booting | Installed | Ready)
                if matches!(
                    self.launch_hook,
                    Some(LaunchAnswer::Continue | LaunchAnswer::NoHook)
                ) =>
            {
                InService
            }
            (Event::Healthy, Booting | Installed | Ready) => Ready,
            (Event::Healthy, BootFailed) => return Err(illegal("boot already failed")),
            (Event::LaunchReleased(_), _) if self.launch_hook.is_some() => {
                return Err(illegal("the launch hook was already released"))
            }
            (Event::LaunchReleased(Some(HookResult::Abandon)), _) => BootFailed,
            (Event::LaunchReleased(_), Ready | InService) => InService,
            (Event::LaunchReleased(_), BootFailed) => BootFailed,
            (Event::LaunchReleased(_), _) => {
                return Err(illegal("CONTINUE is only sent once TFE is ready"))
            }
            (Event::LaunchReleasedAgain(_), _) if self.launch_hook.is_none() => {
                return Err(illegal("the launch hook was never released before"))
            }
            (Event::LaunchReleasedAgain(HookResult::Abandon), _) => BootFailed,
            (Event::LaunchReleasedAgain(HookResult::Continue), Ready | InService) => InService,
            (Event::LaunchReleasedAgain(HookResult::Continue), _) => {
                return Err(illegal("CONTINUE is only sent once TFE is ready"))
            }
            (Event::BootFailed, InService) => {
                return Err(illegal("an in-service node does not fail its boot"))
            }
            (Event::BootFailed, _) => BootFailed,
            _ => return Err(illegal("not a boot event")),
        };
        match event {
            Event::InstallSucceeded { release_sequence } => {
                self.installed_release = Some(release_sequence);
            }
            Event::LaunchReleased(result) => {
                self.launch_hook = Some(result.map_or(LaunchAnswer::NoHook, LaunchAnswer::from));
            }
            Event::LaunchReleasedAgain(result) => {
                self.launch_hook = Some(result.into());
                self.launch_released_again += 1;
            }
            Event::Healthy => self.restart_app = false,
            _ => {}
        }
        self.phase = next;
        Ok(())
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests;
