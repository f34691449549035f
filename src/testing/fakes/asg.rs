//! The fake of Auto Scaling.

use super::*;
use crate::model::asg::{HookResult, LifecycleState, Transition};
use crate::ports::{AsgError, AsgInstance, AutoScaling, HookAction, HookInfo};
use crate::testing::states::INSTANCE;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// An Auto Scaling call, as [`FakeAsg`] records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsgOp {
    DescribeInstance,
    DescribeHook,
    Heartbeat,
    Complete,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AsgCall {
    pub at: Instant,
    pub op: AsgOp,
    /// The hook of a heartbeat, completion or hook description.
    pub hook: Option<String>,
    /// The result a completion was sent with.
    pub result: Option<HookResult>,
    /// What a DescribeAutoScalingInstances answered (`None`: not in a group, or it failed).
    pub state: Option<LifecycleState>,
    pub ok: bool,
}

/// Auto Scaling as one instance in one group sees it.
///
/// DescribeAutoScalingInstances answers with the scripted lifecycle states in order (the last
/// one repeats; `None` = not in a group). A lifecycle action of a hook exists while the instance
/// is in a wait state of the hook's transition (`Pending:Wait`, `Warmed:Pending:Wait` for a
/// launch hook; `Terminating:Wait`, `Warmed:Terminating:Wait` and — a return to the warm pool —
/// `Warmed:Pending:Wait` for a terminate hook). Completing it (or its expiry, or
/// [`FakeAsg::resolve_elsewhere`]) moves the instance on (`Pending:Wait` → `InService` with
/// CONTINUE, `Terminating` with ABANDON; `Terminating:Wait` → `Terminating:Proceed`; …), and from
/// then on heartbeats and completions get "No active Lifecycle Action". Asking about another
/// instance or group, or acting on a hook the group does not have, is a bug in the flow: it
/// panics. Scripted errors are returned per operation before anything else.
pub struct FakeAsg {
    instance_id: String,
    group: String,
    hooks: Vec<HookInfo>,
    inner: Mutex<AsgInner>,
}

struct AsgInner {
    /// What the next describes answer; the front is next, the last repeats.
    script: VecDeque<Option<LifecycleState>>,
    /// Where the instance is: the last answer, or the first scripted state before any describe.
    current: Option<LifecycleState>,
    errors: [VecDeque<AsgError>; 4],
    calls: Vec<AsgCall>,
    /// How each lifecycle action ended, in order.
    resolved: Vec<HookResult>,
    /// The current action times out on its own at this instant (its DefaultResult applies).
    expires_at: Option<Instant>,
}

fn hook_info(name: &str, transition: Transition, heartbeat: u64, global: u64) -> HookInfo {
    HookInfo {
        name: name.into(),
        transition,
        heartbeat_timeout: Duration::from_secs(heartbeat),
        global_timeout: Duration::from_secs(global),
        default_result: "ABANDON".into(),
    }
}

impl FakeAsg {
    /// An instance of group [`GROUP`] answering `states` in order; both hooks exist, with
    /// HeartbeatTimeout 30 s, a 3000 s global timeout and DefaultResult ABANDON.
    pub fn new(states: &[Option<&str>]) -> Self {
        assert!(!states.is_empty());
        let script: VecDeque<_> = states
            .iter()
            .map(|s| s.map(LifecycleState::parse))
            .collect();
        Self {
            instance_id: INSTANCE.into(),
            group: GROUP.into(),
            hooks: vec![
                hook_info(LAUNCH_HOOK, Transition::Launching, 30, 3000),
                hook_info(TERMINATE_HOOK, Transition::Terminating, 30, 3000),
            ],
            inner: Mutex::new(AsgInner {
                current: script[0].clone(),
                script,
                errors: Default::default(),
                calls: Vec::new(),
                resolved: Vec::new(),
                expires_at: None,
            }),
        }
    }

    /// Waiting on the launch hook (`Pending:Wait`).
    pub fn launching() -> Self {
        Self::new(&[Some("Pending:Wait")])
    }

    /// Waiting on the terminate hook (`Terminating:Wait`).
    pub fn terminating() -> Self {
        Self::new(&[Some("Terminating:Wait")])
    }

    pub fn in_group(mut self, group: &str) -> Self {
        self.group = group.into();
        self
    }

    /// The terminate hook's HeartbeatTimeout and global timeout, in seconds.
    pub fn terminate_hook_timeouts(self, heartbeat: u64, global: u64) -> Self {
        self.hook_timeouts(TERMINATE_HOOK, heartbeat, global)
    }

    pub fn hook_timeouts(mut self, hook: &str, heartbeat: u64, global: u64) -> Self {
        let h = self
            .hooks
            .iter_mut()
            .find(|h| h.name == hook)
            .expect("a hook of the group");
        h.heartbeat_timeout = Duration::from_secs(heartbeat);
        h.global_timeout = Duration::from_secs(global);
        self
    }

    /// The group has no hook of this name.
    pub fn without_hook(mut self, hook: &str) -> Self {
        self.hooks.retain(|h| h.name != hook);
        self
    }

    /// The action the instance waits on at `at` expires then (its DefaultResult applies).
    pub fn expiring_at(self, at: Instant) -> Self {
        self.inner.lock().unwrap().expires_at = Some(at);
        self
    }

    /// The next calls of `op` fail with these, in order.
    pub fn fail(&self, op: AsgOp, errors: impl IntoIterator<Item = AsgError>) {
        self.inner.lock().unwrap().errors[op as usize].extend(errors);
    }

    pub fn clear_failures(&self, op: AsgOp) {
        self.inner.lock().unwrap().errors[op as usize].clear();
    }

    /// The instance is now in `state` (and stays there until told otherwise).
    pub fn set_state(&self, state: &str) {
        let mut inner = self.inner.lock().unwrap();
        let state = Some(LifecycleState::parse(state));
        inner.current.clone_from(&state);
        inner.script = VecDeque::from([state]);
    }

    /// Someone else (an operator, a timeout) completes the action the instance waits on.
    pub fn resolve_elsewhere(&self, result: HookResult) {
        let mut inner = self.inner.lock().unwrap();
        let state = inner.current.clone().expect("in a group");
        let transition = self
            .waiting_on(&state)
            .next()
            .expect("the instance waits on a lifecycle action")
            .transition
            .clone();
        inner.resolve(&state, &transition, result);
    }

    /// How the last lifecycle action ended (by this agent or elsewhere).
    pub fn completed(&self) -> Option<HookResult> {
        self.inner.lock().unwrap().resolved.last().copied()
    }

    pub fn calls(&self, op: AsgOp) -> Vec<AsgCall> {
        self.all_calls()
            .into_iter()
            .filter(|c| c.op == op)
            .collect()
    }

    pub fn all_calls(&self) -> Vec<AsgCall> {
        self.inner.lock().unwrap().calls.clone()
    }

    /// Heartbeats and completions, answered or not.
    pub fn action_calls(&self) -> Vec<AsgCall> {
        self.all_calls()
            .into_iter()
            .filter(|c| matches!(c.op, AsgOp::Heartbeat | AsgOp::Complete))
            .collect()
    }

    /// When heartbeats were sent (answered or not).
    pub fn beats(&self) -> Vec<Instant> {
        self.calls(AsgOp::Heartbeat).iter().map(|c| c.at).collect()
    }

    /// Heartbeats of one hook.
    pub fn beats_of(&self, hook: &str) -> Vec<Instant> {
        self.calls(AsgOp::Heartbeat)
            .iter()
            .filter(|c| c.hook.as_deref() == Some(hook))
            .map(|c| c.at)
            .collect()
    }

    /// The successful completions.
    pub fn completions(&self) -> Vec<(Instant, HookResult)> {
        self.calls(AsgOp::Complete)
            .iter()
            .filter(|c| c.ok)
            .map(|c| (c.at, c.result.expect("a completion has a result")))
            .collect()
    }

    /// The successful completions of one hook.
    pub fn completions_of(&self, hook: &str) -> Vec<(Instant, HookResult)> {
        self.calls(AsgOp::Complete)
            .iter()
            .filter(|c| c.ok && c.hook.as_deref() == Some(hook))
            .map(|c| (c.at, c.result.expect("a completion has a result")))
            .collect()
    }

    /// When DescribeAutoScalingInstances was called.
    pub fn describes(&self) -> Vec<Instant> {
        self.calls(AsgOp::DescribeInstance)
            .iter()
            .map(|c| c.at)
            .collect()
    }

    /// When DescribeLifecycleHooks was called.
    pub fn describe_hooks(&self) -> Vec<Instant> {
        self.calls(AsgOp::DescribeHook)
            .iter()
            .map(|c| c.at)
            .collect()
    }

    /// When a describe first showed a terminate wait state.
    pub fn wait_seen(&self) -> Option<Instant> {
        self.calls(AsgOp::DescribeInstance)
            .iter()
            .find(|c| c.state.as_ref().is_some_and(|s| s.is_terminate_wait()))
            .map(|c| c.at)
    }

    /// The hooks whose action exists while the instance is in `state`.
    fn waiting_on<'a>(&'a self, state: &'a LifecycleState) -> impl Iterator<Item = &'a HookInfo> {
        self.hooks
            .iter()
            .filter(move |h| waits_on(state, &h.transition))
    }

    fn hook(&self, name: &str) -> &HookInfo {
        self.hooks
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "a lifecycle action of hook {name:?}, which group {} does not have",
                    self.group
                )
            })
    }

    fn check_action(&self, action: &HookAction) -> &HookInfo {
        assert_eq!(action.group, self.group, "an action of another group");
        assert_eq!(
            action.instance_id, self.instance_id,
            "an action of another instance"
        );
        self.hook(&action.hook)
    }

    /// The action the instance waits on times out if its expiry has come: its DefaultResult
    /// applies and the instance moves on.
    fn expire_if_due(&self, inner: &mut AsgInner) {
        let Some(at) = inner.expires_at else { return };
        if Instant::now() < at {
            return;
        }
        inner.expires_at = None;
        let Some(state) = inner.current.clone() else {
            return;
        };
        let Some(hook) = self.waiting_on(&state).next() else {
            return;
        };
        let result = match hook.default_result.as_str() {
            "CONTINUE" => HookResult::Continue,
            _ => HookResult::Abandon,
        };
        let transition = hook.transition.clone();
        inner.resolve(&state, &transition, result);
    }

    /// A heartbeat or completion: a scripted error, or "No active Lifecycle Action" unless the
    /// instance waits on `hook`'s transition now.
    fn act(
        &self,
        op: AsgOp,
        action: &HookAction,
        result: Option<HookResult>,
    ) -> Result<(), AsgError> {
        let info = self.check_action(action);
        let mut inner = self.inner.lock().unwrap();
        self.expire_if_due(&mut inner);
        let state = inner.current.clone();
        let outcome = if let Some(e) = inner.errors[op as usize].pop_front() {
            Err(e)
        } else if state
            .as_ref()
            .is_some_and(|s| waits_on(s, &info.transition))
        {
            Ok(())
        } else {
            Err(AsgError::NoActiveAction {
                op: match op {
                    AsgOp::Heartbeat => "RecordLifecycleActionHeartbeat",
                    _ => "CompleteLifecycleAction",
                },
                message: format!(
                    "No active Lifecycle Action found with instance ID {}",
                    self.instance_id
                ),
            })
        };
        inner.calls.push(AsgCall {
            at: Instant::now(),
            op,
            hook: Some(action.hook.clone()),
            result,
            state: None,
            ok: outcome.is_ok(),
        });
        if let (Ok(()), Some(result), Some(state)) = (&outcome, result, state) {
            inner.resolve(&state, &info.transition, result);
        }
        outcome
    }
}

/// Whether an instance in `state` waits on a hook of `transition`.
fn waits_on(state: &LifecycleState, transition: &Transition) -> bool {
    use LifecycleState::*;
    match transition {
        Transition::Launching => matches!(state, PendingWait | WarmedPendingWait),
        Transition::Terminating => matches!(
            state,
            TerminatingWait | WarmedTerminatingWait | WarmedPendingWait
        ),
        Transition::Other(_) => false,
    }
}

impl AsgInner {
    /// The action the instance waits on in `state` ended with `result`: the instance moves on.
    fn resolve(&mut self, state: &LifecycleState, transition: &Transition, result: HookResult) {
        use LifecycleState::*;
        let next = match (state, transition, result) {
            (PendingWait, _, HookResult::Continue) => InService,
            (PendingWait, _, HookResult::Abandon) => Terminating,
            (WarmedPendingWait, Transition::Launching, HookResult::Abandon) => WarmedTerminating,
            (WarmedPendingWait, _, _) => WarmedPendingProceed,
            (TerminatingWait, _, _) => TerminatingProceed,
            (WarmedTerminatingWait, _, _) => WarmedTerminatingProceed,
            (other, _, _) => other.clone(),
        };
        self.resolved.push(result);
        self.current = Some(next.clone());
        self.script = VecDeque::from([Some(next)]);
    }
}

impl AutoScaling for FakeAsg {
    async fn describe_instance(&self, instance_id: &str) -> Result<Option<AsgInstance>, AsgError> {
        assert_eq!(instance_id, self.instance_id, "another instance described");
        let mut inner = self.inner.lock().unwrap();
        self.expire_if_due(&mut inner);
        let outcome = match inner.errors[AsgOp::DescribeInstance as usize].pop_front() {
            Some(e) => Err(e),
            None => {
                let state = if inner.script.len() > 1 {
                    inner.script.pop_front().expect("not empty")
                } else {
                    inner.script[0].clone()
                };
                inner.current.clone_from(&state);
                Ok(state)
            }
        };
        inner.calls.push(AsgCall {
            at: Instant::now(),
            op: AsgOp::DescribeInstance,
            hook: None,
            result: None,
            state: outcome.as_ref().ok().cloned().flatten(),
            ok: outcome.is_ok(),
        });
        let group = self.group.clone();
        outcome.map(|state| {
            state.map(|lifecycle_state| AsgInstance {
                group,
                lifecycle_state,
            })
        })
    }

    async fn describe_hook(&self, group: &str, hook: &str) -> Result<Option<HookInfo>, AsgError> {
        assert_eq!(group, self.group, "another group's hook described");
        let mut inner = self.inner.lock().unwrap();
        let outcome = match inner.errors[AsgOp::DescribeHook as usize].pop_front() {
            Some(e) => Err(e),
            None => Ok(self.hooks.iter().find(|h| h.name == hook).cloned()),
        };
        inner.calls.push(AsgCall {
            at: Instant::now(),
            op: AsgOp::DescribeHook,
            hook: Some(hook.into()),
            result: None,
            state: None,
            ok: outcome.is_ok(),
        });
        outcome
    }

    async fn heartbeat(&self, action: &HookAction) -> Result<(), AsgError> {
        self.act(AsgOp::Heartbeat, action, None)
    }

    async fn complete(&self, action: &HookAction, result: HookResult) -> Result<(), AsgError> {
        self.act(AsgOp::Complete, action, Some(result))
    }
}
