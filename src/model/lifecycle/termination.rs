//! The termination half of the node's life: a notice arrives, node-drain runs at most once, the
//! terminate hook is released at most once — and a restarted agent reads from here what is left.

use super::{Event, IllegalTransition, LaunchAnswer, NodeState, Phase};
use crate::model::asg::HookResult;
use crate::model::tfe::TrackedProcess;
use serde::{Deserialize, Serialize};

/// What said the node is to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// IMDS `autoscaling/target-lifecycle-state` = Terminated: a terminate hook may be waiting.
    Asg,
    /// Spot `instance-action` (terminate, stop or hibernate).
    Spot,
    /// A rebalance recommendation, with `drain_on_rebalance`.
    Rebalance,
    /// A scheduled maintenance event, with `drain_on_maintenance`.
    Maintenance,
    /// The operating system is shutting down with no ASG termination in sight.
    Shutdown,
    /// IMDS `target-lifecycle-state` went from `InService` to a warm pool state: a scale-in
    /// returns the instance to the warm pool (instance reuse policy). The terminate hook waits at
    /// `Warmed:Pending:Wait`; the instance is stopped, not terminated, and serves again later.
    WarmPool,
    /// An operator asked for it (`tfe-node-agent drain` on the unix socket). There is no reverse
    /// of node-drain: `tfe-node-agent app restart` brings the node back ([`Event::Restored`]).
    Operator,
}

impl Source {
    pub const ALL: &'static [Source] = &[
        Source::Asg,
        Source::Spot,
        Source::Rebalance,
        Source::Maintenance,
        Source::Shutdown,
        Source::WarmPool,
        Source::Operator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Asg => "asg",
            Source::Spot => "spot",
            Source::Rebalance => "rebalance",
            Source::Maintenance => "maintenance",
            Source::Shutdown => "shutdown",
            Source::WarmPool => "warm-pool",
            Source::Operator => "operator",
        }
    }

    /// The group holds a terminate hook for this kind of departure.
    pub fn has_hook(self) -> bool {
        matches!(self, Source::Asg | Source::WarmPool)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub source: Source,
    /// What exactly was seen, for logs and `/status` ("target-lifecycle-state Terminated").
    pub detail: String,
    /// Unix seconds.
    pub at: u64,
    /// `/proc/sys/kernel/random/boot_id` when noticed: tells a reboot from an agent restart.
    pub boot_id: String,
    /// When the node goes regardless (spot: the announced time), unix seconds.
    pub deadline_at: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum DrainRecord {
    NotStarted,
    Running { process: TrackedProcess },
    Finished { outcome: DrainOutcome },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DrainOutcome {
    Drained,
    /// Nothing to drain (TFE was never installed on this instance).
    Skipped {
        why: String,
    },
    /// node-drain could not be started at all.
    CouldNotStart {
        why: String,
    },
    Failed {
        exit_code: i32,
    },
    TimedOut {
        why: String,
    },
    /// The drain process ended without leaving its exit status (killed with the machine or
    /// the agent's unit).
    Interrupted,
}

impl DrainOutcome {
    pub fn succeeded(&self) -> bool {
        matches!(self, DrainOutcome::Drained | DrainOutcome::Skipped { .. })
    }

    pub fn describe(&self) -> String {
        match self {
            DrainOutcome::Drained => "node-drain finished".into(),
            DrainOutcome::Skipped { why } => format!("no drain needed ({why})"),
            DrainOutcome::CouldNotStart { why } => {
                format!("node-drain could not be started ({why})")
            }
            DrainOutcome::Failed { exit_code } => {
                format!("node-drain failed with exit code {exit_code}")
            }
            DrainOutcome::TimedOut { why } => format!("node-drain ran out of time ({why})"),
            DrainOutcome::Interrupted => {
                "node-drain was interrupted and left no exit status".into()
            }
        }
    }
}

/// How the terminate hook ended, as far as this agent is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum HookOutcome {
    Released {
        result: HookResult,
    },
    /// "No active Lifecycle Action": timed out or resolved by someone else.
    ResolvedElsewhere {
        state: Option<String>,
    },
    /// No hook configured, not in a group, or no wait state appeared in time.
    NotApplicable {
        why: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Termination {
    pub source: Source,
    pub detail: String,
    pub noticed_at: u64,
    pub boot_id: String,
    #[serde(default)]
    pub deadline_at: Option<u64>,
    /// When the ASG termination was noticed (unix seconds), which may be after a drain for
    /// another reason: the wait for the terminate wait state counts from here.
    #[serde(default)]
    pub asg_noticed_at: Option<u64>,
    pub drain: DrainRecord,
    pub app_stopped: bool,
    /// First time the terminate wait state was seen (unix seconds).
    pub wait_state_seen_at: Option<u64>,
    pub hook: Option<HookOutcome>,
}

impl Termination {
    /// The agent's part is over: drained, and the hook released unless none is expected.
    pub fn is_done(&self) -> bool {
        matches!(self.drain, DrainRecord::Finished { .. })
            && (self.hook.is_some() || !self.source.has_hook())
    }
}

/// What a (re)started termination path still has to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminationSteps {
    pub drain: DrainStep,
    /// The drain succeeded and the app was not yet stopped.
    pub stop_app: bool,
    pub handle_hook: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainStep {
    Start,
    /// A drain started before a restart of the agent: wait for it, never start another.
    Adopt(TrackedProcess),
    Done(DrainOutcome),
}

/// The terminate hook's result for a drain outcome.
pub fn hook_result(outcome: &DrainOutcome, on_failure: HookResult) -> HookResult {
    if outcome.succeeded() {
        HookResult::Continue
    } else {
        on_failure
    }
}

impl NodeState {
    pub fn termination_steps(&self) -> Option<TerminationSteps> {
        let t = self.termination.as_ref()?;
        let drain = match &t.drain {
            DrainRecord::NotStarted => DrainStep::Start,
            DrainRecord::Running { process } => DrainStep::Adopt(process.clone()),
            DrainRecord::Finished { outcome } => DrainStep::Done(outcome.clone()),
        };
        let drained = matches!(
            &t.drain,
            DrainRecord::Finished {
                outcome: DrainOutcome::Drained
            }
        );
        Some(TerminationSteps {
            stop_app: !t.app_stopped
                && (drained || matches!(drain, DrainStep::Start | DrainStep::Adopt(_))),
            drain,
            handle_hook: t.hook.is_none(),
        })
    }

    /// A drain the instance survived (a reboot after a shutdown or spot-stop drain, no ASG
    /// termination): the node should serve again rather than stay drained forever. An operator's
    /// drain stays until the operator undoes it (`app restart`): a reboot is no answer to it.
    pub fn resumable(&self, boot_id: &str) -> bool {
        self.termination.as_ref().is_some_and(|t| {
            !matches!(t.source, Source::Asg | Source::Operator) && t.boot_id != boot_id
        })
    }

    /// Whether `app restart` may bring this node back: an operator's drain has ended (no ASG
    /// termination joined it since).
    pub fn restorable(&self) -> bool {
        self.termination
            .as_ref()
            .is_some_and(|t| t.source == Source::Operator && t.is_done())
    }

    pub(super) fn apply_termination(&mut self, event: Event) -> Result<(), IllegalTransition> {
        let illegal = |phase, why| IllegalTransition {
            phase,
            event: event.clone(),
            why,
        };
        let phase = self.phase;
        if let Event::TerminationNoticed(notice) = &event {
            match &mut self.termination {
                None => {
                    self.termination = Some(Termination {
                        source: notice.source,
                        detail: notice.detail.clone(),
                        noticed_at: notice.at,
                        boot_id: notice.boot_id.clone(),
                        deadline_at: notice.deadline_at,
                        asg_noticed_at: (notice.source == Source::Asg).then_some(notice.at),
                        drain: DrainRecord::NotStarted,
                        app_stopped: false,
                        wait_state_seen_at: None,
                        hook: None,
                    });
                }
                // An ASG termination after a drain for another reason: the hook is still to come.
                Some(t) if notice.source == Source::Asg && t.source != Source::Asg => {
                    t.source = Source::Asg;
                    t.detail = notice.detail.clone();
                    t.asg_noticed_at = Some(notice.at);
                }
                Some(_) => {}
            }
            self.update_phase();
            return Ok(());
        }
        let Some(t) = self.termination.as_mut() else {
            return Err(illegal(phase, "no termination was noticed"));
        };
        match &event {
            Event::DrainStarted(process) => {
                if t.drain != DrainRecord::NotStarted {
                    return Err(illegal(
                        phase,
                        "node-drain was already started for this termination",
                    ));
                }
                t.drain = DrainRecord::Running {
                    process: process.clone(),
                };
            }
            Event::DrainFinished(outcome) => match (&t.drain, outcome) {
                (DrainRecord::Running { .. }, _)
                | (
                    DrainRecord::NotStarted,
                    DrainOutcome::Skipped { .. } | DrainOutcome::CouldNotStart { .. },
                ) => {
                    t.drain = DrainRecord::Finished {
                        outcome: outcome.clone(),
                    }
                }
                _ => return Err(illegal(phase, "no drain is running")),
            },
            Event::DrainNeverRan => {
                if !matches!(t.drain, DrainRecord::Running { .. }) {
                    return Err(illegal(phase, "no recorded drain to forget"));
                }
                t.drain = DrainRecord::NotStarted;
            }
            Event::AppStopped => {
                if !matches!(t.drain, DrainRecord::Finished { .. }) {
                    return Err(illegal(phase, "the app is stopped only after the drain"));
                }
                t.app_stopped = true;
            }
            Event::WaitStateSeen { at } => {
                t.wait_state_seen_at.get_or_insert(*at);
            }
            Event::TerminateHookDone(outcome) => {
                if t.hook.is_some() {
                    return Err(illegal(phase, "the terminate hook was already released"));
                }
                t.hook = Some(outcome.clone());
            }
            Event::Resumed => {
                if t.source == Source::Asg {
                    return Err(illegal(phase, "an ASG termination is never undone"));
                }
                // Only a drain that ran quiesced the node; one that never started changed nothing.
                self.restart_app = match &t.drain {
                    DrainRecord::NotStarted => false,
                    DrainRecord::Running { .. } => true,
                    DrainRecord::Finished { outcome } => !matches!(
                        outcome,
                        DrainOutcome::Skipped { .. } | DrainOutcome::CouldNotStart { .. }
                    ),
                };
                self.termination = None;
                self.phase = Phase::Booting;
                return Ok(());
            }
            Event::Restored => {
                if t.source != Source::Operator {
                    return Err(illegal(
                        phase,
                        "only an operator's drain is undone by an app restart",
                    ));
                }
                if !t.is_done() {
                    return Err(illegal(phase, "the operator's drain has not ended yet"));
                }
                if self.installed_release.is_none() {
                    return Err(illegal(phase, "TFE was never installed on this instance"));
                }
                self.termination = None;
                self.restart_app = false;
                // Healthy again after the restart: where a healthy node with this launch answer is.
                self.phase = match self.launch_hook {
                    Some(LaunchAnswer::Continue | LaunchAnswer::NoHook) => Phase::InService,
                    _ => Phase::Ready,
                };
                return Ok(());
            }
            _ => unreachable!("only termination events reach apply_termination"),
        }
        self.update_phase();
        Ok(())
    }

    fn update_phase(&mut self) {
        if let Some(t) = &self.termination {
            self.phase = if t.is_done() {
                Phase::Drained
            } else {
                Phase::Draining
            };
        }
    }
}

impl Event {
    pub(super) fn is_termination(&self) -> bool {
        matches!(
            self,
            Event::TerminationNoticed(_)
                | Event::DrainStarted(_)
                | Event::DrainFinished(_)
                | Event::DrainNeverRan
                | Event::AppStopped
                | Event::WaitStateSeen { .. }
                | Event::TerminateHookDone(_)
                | Event::Resumed
                | Event::Restored
        )
    }
}
