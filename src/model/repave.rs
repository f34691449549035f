//! The repave, pure: HashiCorp's one supported way to change the release (or image) of an
//! Active/Active cluster — drain every node, scale to zero, one node on the new launch template
//! version, validate it, then the rest — as a plan and a record of steps. The record lives in
//! the cluster store under the repave lease (`crate::ports::cluster::RepaveStore`); each step is
//! recorded before it starts and when it ends, so a second run (`repave --resume`) continues at
//! the first step that did not end and never repeats one that did. The orchestrator that runs
//! the steps is `crate::node::repave`.

use crate::model::asg::{ScalingProcess, TemplateRef};
use serde::{Deserialize, Serialize};

/// One step of the procedure. Every step converges ("the group has min = desired = 0 and no
/// instance"), so running an interrupted one again is safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Suspend AZRebalance, ReplaceUnhealthy and ScheduledActions for the duration.
    Suspend,
    /// min = desired = 0; wait until every instance is gone, following each node's drain.
    Drain,
    /// Point the group at the launch template version of this pass.
    Point,
    /// desired = 1; wait until the new instance is InService (or was abandoned).
    First,
    /// The new node reports the release and in-service in the cluster view; `--validate-cmd`.
    Validate,
    /// min/desired back to the capacity; wait until all are InService and the view consistent.
    Scale,
    /// Resume the processes suspended by [`Step::Suspend`] (also after a failure).
    Resume,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Suspend => "suspend",
            Step::Drain => "drain",
            Step::Point => "point",
            Step::First => "first",
            Step::Validate => "validate",
            Step::Scale => "scale",
            Step::Resume => "resume",
        }
    }

    /// What the step does, for the plan and the progress display.
    pub fn title(self) -> &'static str {
        match self {
            Step::Suspend => "suspend AZRebalance, ReplaceUnhealthy, ScheduledActions",
            Step::Drain => "scale to 0: drain and terminate every node",
            Step::Point => "point the group at the launch template version",
            Step::First => "scale to 1: wait for the first node in service",
            Step::Validate => "validate the first node",
            Step::Scale => "scale back to the capacity",
            Step::Resume => "resume the suspended processes",
        }
    }
}

/// Which sequence of steps runs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pass {
    /// To the target version.
    Forward,
    /// `--on-failure rollback`: the same way back to the version the group had.
    Rollback,
    /// After a failure without rollback: only resume the suspended processes, then stop.
    Abort,
}

impl Pass {
    pub fn steps(self) -> &'static [Step] {
        match self {
            Pass::Forward => &[
                Step::Suspend,
                Step::Drain,
                Step::Point,
                Step::First,
                Step::Validate,
                Step::Scale,
                Step::Resume,
            ],
            Pass::Rollback => &[
                Step::Drain,
                Step::Point,
                Step::First,
                Step::Validate,
                Step::Scale,
                Step::Resume,
            ],
            Pass::Abort => &[Step::Resume],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Pass::Forward => "forward",
            Pass::Rollback => "rollback",
            Pass::Abort => "abort",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// Stop at a safe point and say where the group is.
    #[default]
    Stop,
    /// Back to the previous version the same way (safe only if no new node reached TFE start-up:
    /// it may have migrated the database).
    Rollback,
}

/// What the repave found and will do: fixed when it starts, kept in the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub group: String,
    /// What the group pointed at before (the rollback's target).
    pub from: TemplateRef,
    /// The target version (a number: `$Latest` is resolved when planning).
    pub to: TemplateRef,
    /// The release each version's user data names (`release_sequence` in its agent.toml), when
    /// it could be read.
    pub from_release: Option<u64>,
    pub to_release: Option<u64>,
    /// The group's sizes before, and the capacity to come back to.
    pub min_size: u32,
    pub max_size: u32,
    pub capacity: u32,
    /// Processes that were suspended before the repave: left suspended at the end.
    pub already_suspended: Vec<ScalingProcess>,
    pub launch_hook: String,
    pub terminate_hook: String,
    /// How long a drain may take (the terminate hook's global timeout) and a build (the launch
    /// hook's), in seconds: the waits' bounds.
    pub drain_budget_s: u64,
    pub build_budget_s: u64,
    pub validate_cmd: Option<String>,
    pub validate_timeout_s: u64,
    pub on_failure: OnFailure,
}

impl Plan {
    /// The template and the release a pass moves the group to.
    pub fn target(&self, pass: Pass) -> (&TemplateRef, Option<u64>) {
        match pass {
            Pass::Rollback => (&self.from, self.from_release),
            Pass::Forward | Pass::Abort => (&self.to, self.to_release),
        }
    }

    /// The processes the repave suspends and resumes: those it suspends that were not already.
    pub fn suspends(&self) -> Vec<ScalingProcess> {
        ScalingProcess::REPAVE
            .iter()
            .filter(|p| !self.already_suspended.contains(p))
            .cloned()
            .collect()
    }
}

/// One step as it ran. Times are the orchestrator's clock, unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: Step,
    pub pass: Pass,
    pub started_ms: u64,
    /// How many times it was started (more than once: resumed after an interruption).
    pub starts: u32,
    pub ended_ms: Option<u64>,
    /// What it found or did, one line.
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RepaveState {
    Running,
    /// Every node on the target version, in service; processes resumed.
    Done,
    /// A step failed and the rollback brought the previous version back.
    RolledBack,
    /// A step failed; the group was left at a safe point (see `failure`).
    Stopped,
}

impl RepaveState {
    pub fn as_str(self) -> &'static str {
        match self {
            RepaveState::Running => "running",
            RepaveState::Done => "done",
            RepaveState::RolledBack => "rolled-back",
            RepaveState::Stopped => "stopped",
        }
    }
}

/// Why a step failed, and where that left the group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub step: Step,
    pub pass: Pass,
    /// The whole error chain.
    pub why: String,
}

/// One instance the orchestrator saw, for the report. Unix milliseconds, its clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub instance_id: String,
    pub template_version: Option<String>,
    pub first_seen_ms: u64,
    pub in_service_ms: Option<u64>,
    pub left_service_ms: Option<u64>,
    pub gone_ms: Option<u64>,
    /// The node's phase in the cluster view, last seen.
    pub phase: Option<String>,
    /// The last error its agent published in the cluster view (a failed boot's whole chain).
    pub last_error: Option<String>,
}

/// The repave as kept in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repave {
    pub id: String,
    pub requested_by: String,
    pub requested_ms: u64,
    pub plan: Plan,
    pub pass: Pass,
    pub steps: Vec<StepRecord>,
    pub state: RepaveState,
    pub failure: Option<Failure>,
    pub instances: Vec<Seen>,
    /// When the last old node left service, and when the first new one entered it.
    pub last_old_out_ms: Option<u64>,
    pub first_new_in_ms: Option<u64>,
}

/// What runs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Run `step` of `pass`; `resumed` when an earlier run started it and did not end it.
    Run {
        step: Step,
        pass: Pass,
        resumed: bool,
    },
    /// Nothing: the repave ended in this state.
    Ended(RepaveState),
}

impl Repave {
    pub fn new(id: String, requested_by: String, requested_ms: u64, plan: Plan) -> Repave {
        Repave {
            id,
            requested_by,
            requested_ms,
            plan,
            pass: Pass::Forward,
            steps: Vec::new(),
            state: RepaveState::Running,
            failure: None,
            instances: Vec::new(),
            last_old_out_ms: None,
            first_new_in_ms: None,
        }
    }

    /// The record of `step` in `pass`.
    pub fn record(&self, step: Step, pass: Pass) -> Option<&StepRecord> {
        self.steps.iter().find(|r| r.step == step && r.pass == pass)
    }

    fn record_mut(&mut self, step: Step, pass: Pass) -> Option<&mut StepRecord> {
        self.steps
            .iter_mut()
            .find(|r| r.step == step && r.pass == pass)
    }

    /// The first step of the current pass that did not end.
    pub fn next(&self) -> Next {
        if self.state != RepaveState::Running {
            return Next::Ended(self.state);
        }
        for &step in self.pass.steps() {
            match self.record(step, self.pass) {
                Some(r) if r.ended_ms.is_some() => continue,
                Some(_) => {
                    return Next::Run {
                        step,
                        pass: self.pass,
                        resumed: true,
                    }
                }
                None => {
                    return Next::Run {
                        step,
                        pass: self.pass,
                        resumed: false,
                    }
                }
            }
        }
        Next::Ended(self.state)
    }

    /// Records that `step` of the current pass starts (again, when resumed).
    pub fn start(&mut self, step: Step, now_ms: u64) {
        let pass = self.pass;
        match self.record_mut(step, pass) {
            Some(r) => r.starts += 1,
            None => self.steps.push(StepRecord {
                step,
                pass,
                started_ms: now_ms,
                starts: 1,
                ended_ms: None,
                detail: None,
            }),
        }
    }

    /// Records that `step` of the current pass ended; the last step of a pass ends the repave.
    pub fn finish(&mut self, step: Step, now_ms: u64, detail: String) {
        let pass = self.pass;
        if let Some(r) = self.record_mut(step, pass) {
            r.ended_ms = Some(now_ms);
            r.detail = Some(detail);
        }
        if self.pass.steps().last() == Some(&step) {
            self.state = match self.pass {
                Pass::Forward => RepaveState::Done,
                Pass::Rollback => RepaveState::RolledBack,
                Pass::Abort => RepaveState::Stopped,
            };
        }
    }

    /// Records that `step` failed and chooses what follows: the rollback when asked for and the
    /// group was already changing version (a forward step after the drain), else resuming the
    /// processes and stopping. A failure of the rollback, or of resuming, stops at once.
    pub fn fail(&mut self, step: Step, now_ms: u64, why: String) {
        let pass = self.pass;
        if let Some(r) = self.record_mut(step, pass) {
            r.ended_ms = Some(now_ms);
            r.detail = Some(format!("failed: {why}"));
        }
        // The first failure is the one to report; a rollback's own failure is added to it.
        match &mut self.failure {
            None => {
                self.failure = Some(Failure {
                    step,
                    pass,
                    why: why.clone(),
                });
            }
            Some(first) => {
                first.why = format!(
                    "{}; then {} ({}) failed: {why}",
                    first.why,
                    step.as_str(),
                    pass.as_str()
                );
            }
        }
        let rollback = self.plan.on_failure == OnFailure::Rollback
            && pass == Pass::Forward
            && matches!(
                step,
                Step::Point | Step::First | Step::Validate | Step::Scale
            );
        self.pass = match (pass, step) {
            _ if rollback => Pass::Rollback,
            (_, Step::Resume) | (Pass::Abort, _) => {
                self.state = RepaveState::Stopped;
                Pass::Abort
            }
            _ => Pass::Abort,
        };
    }

    /// The instance the orchestrator follows, added when first seen.
    pub fn seen(
        &mut self,
        instance_id: &str,
        template_version: Option<&str>,
        now_ms: u64,
    ) -> &mut Seen {
        let at = match self
            .instances
            .iter()
            .position(|s| s.instance_id == instance_id)
        {
            Some(at) => at,
            None => {
                self.instances.push(Seen {
                    instance_id: instance_id.to_string(),
                    template_version: template_version.map(str::to_string),
                    first_seen_ms: now_ms,
                    in_service_ms: None,
                    left_service_ms: None,
                    gone_ms: None,
                    phase: None,
                    last_error: None,
                });
                self.instances.len() - 1
            }
        };
        &mut self.instances[at]
    }

    /// From the last old node leaving service to the first new one in service (milliseconds).
    pub fn downtime_ms(&self) -> Option<u64> {
        Some(self.first_new_in_ms?.saturating_sub(self.last_old_out_ms?))
    }

    /// The first new node's own build: from when the orchestrator first saw it to InService.
    pub fn first_build_ms(&self) -> Option<u64> {
        let first_in = self.first_new_in_ms?;
        self.instances
            .iter()
            .filter(|s| s.in_service_ms == Some(first_in))
            .map(|s| first_in.saturating_sub(s.first_seen_ms))
            .next()
    }

    /// One line per step with its times, then the downtime, for the report.
    pub fn report(&self) -> String {
        let mut out = format!(
            "repave {} of group {}: {} → {} ({})\n",
            self.id,
            self.plan.group,
            self.plan.from.label(),
            self.plan.to.label(),
            self.state.as_str()
        );
        for r in &self.steps {
            let took = r
                .ended_ms
                .map(|e| format!("{:.1} s", e.saturating_sub(r.started_ms) as f64 / 1000.0))
                .unwrap_or_else(|| "not ended".into());
            let resumed = if r.starts > 1 {
                format!(", started {} times", r.starts)
            } else {
                String::new()
            };
            out.push_str(&format!(
                "  {:<8} {:<8} at +{:.1} s, {took}{resumed}: {}\n",
                r.pass.as_str(),
                r.step.as_str(),
                r.started_ms.saturating_sub(self.requested_ms) as f64 / 1000.0,
                r.detail.as_deref().unwrap_or("-")
            ));
        }
        match (self.downtime_ms(), self.first_build_ms()) {
            (Some(down), Some(build)) => out.push_str(&format!(
                "downtime {:.1} s (last old node out of service → first new node in service); the new node's own build took {:.1} s, so the repave added {:.1} s\n",
                down as f64 / 1000.0,
                build as f64 / 1000.0,
                down.saturating_sub(build) as f64 / 1000.0
            )),
            (Some(down), None) => out.push_str(&format!("downtime {:.1} s\n", down as f64 / 1000.0)),
            _ => {}
        }
        if let Some(f) = &self.failure {
            out.push_str(&format!(
                "failed at {} ({} pass): {}\n",
                f.step.as_str(),
                f.pass.as_str(),
                f.why
            ));
        }
        out
    }
}

/// The release a launch template version's user data names: the `release_sequence = N` line of
/// the agent.toml the cloud-init document writes (the project's templates put it there).
pub fn release_in_user_data(user_data: &str) -> Option<u64> {
    user_data.lines().find_map(|line| {
        let (key, value) = line.trim().split_once('=')?;
        if key.trim() != "release_sequence" {
            return None;
        }
        value.trim().trim_matches('"').parse().ok()
    })
}

#[cfg(test)]
mod tests;
