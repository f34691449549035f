//! The node's life as a pure state machine: what has happened to this instance, what may happen
//! next, and what a (re)started agent still has to do. No I/O here; `state` persists it and
//! `boot` drives it.

use crate::ports::HookResult;
use serde::{Deserialize, Serialize};

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
    BootFailed,
}

/// The persisted record of one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    pub instance_id: String,
    pub phase: Phase,
    /// Release sequence that install.sh installed, once it succeeded. Never installed twice.
    pub installed_release: Option<u64>,
    /// The result sent for the launch hook ("CONTINUE"/"ABANDON"), or "none" when there was no hook.
    pub launch_hook: Option<String>,
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
pub struct BootPlan {
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
        }
    }

    pub fn plan(&self) -> BootPlan {
        BootPlan {
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
        let next = match (&event, self.phase) {
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
            (Event::BootFailed, InService) => {
                return Err(illegal("an in-service node does not fail its boot"))
            }
            (Event::BootFailed, _) => BootFailed,
        };
        match event {
            Event::InstallSucceeded { release_sequence } => {
                self.installed_release = Some(release_sequence)
            }
            Event::LaunchReleased(result) => {
                self.launch_hook = Some(result.map_or("none", HookResult::as_str).to_string())
            }
            _ => {}
        }
        self.phase = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn booted() -> NodeState {
        let mut s = NodeState::new("i-1");
        s.apply(Event::BootStarted).unwrap();
        s
    }

    #[test]
    fn happy_path_installs_once_and_releases_once() {
        let mut s = booted();
        assert_eq!(
            s.plan(),
            BootPlan {
                install: true,
                release_launch_hook: true
            }
        );
        s.apply(Event::InstallSucceeded {
            release_sequence: 504,
        })
        .unwrap();
        assert_eq!(s.phase, Phase::Installed);
        s.apply(Event::Healthy).unwrap();
        assert_eq!(s.phase, Phase::Ready);
        s.apply(Event::LaunchReleased(Some(HookResult::Continue)))
            .unwrap();
        assert_eq!(s.phase, Phase::InService);
        assert_eq!(s.launch_hook.as_deref(), Some("CONTINUE"));
        assert_eq!(
            s.plan(),
            BootPlan {
                install: false,
                release_launch_hook: false
            }
        );
    }

    #[test]
    fn a_second_install_or_release_is_refused() {
        let mut s = booted();
        s.apply(Event::InstallSucceeded {
            release_sequence: 504,
        })
        .unwrap();
        let before = s.clone();
        let err = s
            .apply(Event::InstallSucceeded {
                release_sequence: 504,
            })
            .unwrap_err();
        assert_eq!(err.why, "install.sh already succeeded on this instance");
        assert_eq!(s, before, "a refused event changes nothing");
        s.apply(Event::Healthy).unwrap();
        s.apply(Event::LaunchReleased(None)).unwrap();
        assert_eq!(s.launch_hook.as_deref(), Some("none"));
        assert!(s
            .apply(Event::LaunchReleased(Some(HookResult::Continue)))
            .is_err());
    }

    #[test]
    fn continue_before_ready_is_refused() {
        let mut s = booted();
        assert!(s
            .apply(Event::LaunchReleased(Some(HookResult::Continue)))
            .is_err());
        assert!(
            s.apply(Event::Healthy).is_err(),
            "healthy needs an install first"
        );
    }

    #[test]
    fn failure_abandons_and_a_restart_retries_without_reinstalling() {
        let mut s = booted();
        s.apply(Event::InstallSucceeded {
            release_sequence: 504,
        })
        .unwrap();
        s.apply(Event::BootFailed).unwrap();
        s.apply(Event::LaunchReleased(Some(HookResult::Abandon)))
            .unwrap();
        assert_eq!(s.phase, Phase::BootFailed);
        s.apply(Event::BootStarted).unwrap();
        assert_eq!(s.phase, Phase::Booting);
        assert_eq!(
            s.plan(),
            BootPlan {
                install: false,
                release_launch_hook: false
            }
        );
        s.apply(Event::Healthy).unwrap();
        assert_eq!(s.phase, Phase::Ready);
    }

    #[test]
    fn failure_with_continue_policy_still_records_the_release() {
        let mut s = booted();
        s.apply(Event::BootFailed).unwrap();
        s.apply(Event::LaunchReleased(Some(HookResult::Continue)))
            .unwrap();
        assert_eq!(s.phase, Phase::BootFailed);
        assert_eq!(s.launch_hook.as_deref(), Some("CONTINUE"));
    }

    #[test]
    fn restart_of_an_in_service_node_stays_in_service() {
        let mut s = booted();
        s.apply(Event::InstallSucceeded {
            release_sequence: 504,
        })
        .unwrap();
        s.apply(Event::Healthy).unwrap();
        s.apply(Event::LaunchReleased(Some(HookResult::Continue)))
            .unwrap();
        s.apply(Event::BootStarted).unwrap();
        assert_eq!(s.phase, Phase::InService);
        s.apply(Event::Healthy).unwrap();
        assert_eq!(s.phase, Phase::InService);
        assert!(s.apply(Event::BootFailed).is_err());
    }
}
