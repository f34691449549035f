//! One in-memory fake per port, and [`FakeWorld`] made of them, for the flows' unit tests under
//! tokio's paused clock. The fakes keep the rules the real services keep — a lifecycle action
//! exists only while the instance waits on it and answers "No active Lifecycle Action" once it
//! was completed or expired, a failed fetch fails every secret, a drain is let run once — and
//! record every call with its (tokio) time, so a test asserts on what the flow did.

use crate::config::Settings;
use crate::model::asg::{HookResult, LifecycleState, Transition};
use crate::model::lifecycle::NodeState;
use crate::model::tfe::{AppStatus, DrainState, HealthReport, SystemStatus, TrackedProcess};
use crate::node::recorder::Recorder;
use crate::node::state::StateStore;
use crate::ports::{
    AsgError, AsgInstance, AutoScaling, HookAction, HookInfo, Host, Identity, ImdsError,
    InstallCommand, InstanceMetadata, Parts, SecretPayload, SecretSource, SecretsError, TfeTools,
    TokioClock, ToolError,
};
use crate::sys::secret::SecretBytes;
use crate::sys::shutdown::ShutdownRx;
use crate::testing::states::{self, BOOT_A, INSTANCE};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

pub const GROUP: &str = "tfe-asg";
pub const LAUNCH_HOOK: &str = "tfe-launch";
pub const TERMINATE_HOOK: &str = "tfe-terminate";

/// The world of the unit tests: every port faked, tokio's clock (paused in the tests).
pub type FakeWorld = Parts<FakeSecrets, FakeAsg, FakeImds, FakeTfe, TokioClock, FakeHost>;

/// A [`FakeWorld`] of default fakes: valid secrets, an instance waiting on its launch hook
/// (`Pending:Wait`), an on-demand instance IMDS has nothing to say about, TFE that installs at
/// once and is ready, a host that is not stopping. Replace the parts a test is about.
pub fn world() -> FakeWorldBuilder {
    FakeWorldBuilder {
        secrets: FakeSecrets::valid(),
        asg: FakeAsg::launching(),
        imds: FakeImds::on_demand(),
        tfe: FakeTfe::ready(),
        host: FakeHost::default(),
    }
}

pub struct FakeWorldBuilder {
    secrets: FakeSecrets,
    asg: FakeAsg,
    imds: FakeImds,
    tfe: FakeTfe,
    host: FakeHost,
}

impl FakeWorldBuilder {
    pub fn secrets(mut self, secrets: FakeSecrets) -> Self {
        self.secrets = secrets;
        self
    }
    pub fn asg(mut self, asg: FakeAsg) -> Self {
        self.asg = asg;
        self
    }
    pub fn imds(mut self, imds: FakeImds) -> Self {
        self.imds = imds;
        self
    }
    pub fn tfe(mut self, tfe: FakeTfe) -> Self {
        self.tfe = tfe;
        self
    }
    pub fn host(mut self, host: FakeHost) -> Self {
        self.host = host;
        self
    }
    pub fn build(self) -> FakeWorld {
        Parts {
            secrets: self.secrets,
            asg: self.asg,
            imds: self.imds,
            tfe: self.tfe,
            clock: TokioClock,
            host: self.host,
        }
    }
}

/// The identity IMDS reports for [`INSTANCE`].
pub fn identity() -> Identity {
    Identity {
        instance_id: INSTANCE.into(),
        region: "us-east-1".into(),
        private_ipv4: "10.0.0.5".into(),
    }
}

/// A signal channel as `crate::sys::shutdown::listen` gives one: send `Some(15)` for SIGTERM.
pub fn signals() -> (tokio::sync::watch::Sender<Option<i32>>, ShutdownRx) {
    tokio::sync::watch::channel(None)
}

/// Awaits `work`, which must end within `limit` of (tokio's, paused) time: a flow that would
/// run on forever fails the test instead of hanging it.
pub async fn within<T>(limit: Duration, work: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(limit, work).await {
        Ok(out) => out,
        Err(_) => panic!("did not end within {limit:?}"),
    }
}

// ------------------------------------------------------------------------------ the record

/// A [`Recorder`] whose state.json lives in a temporary directory of its own, with settings
/// whose every path (the rendered files, the state dir) is inside that directory.
pub struct Recorded {
    dir: tempfile::TempDir,
    store: StateStore,
    pub recorder: Recorder,
}

impl Recorded {
    pub fn new(state: NodeState) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = StateStore::new(&dir.path().join("state"));
        let recorder = Recorder::with_state(store.clone(), state);
        Self {
            dir,
            store,
            recorder,
        }
    }

    /// What state.json holds (it must exist: something was recorded).
    pub fn on_disk(&self) -> NodeState {
        assert!(self.store.path().exists(), "nothing was recorded on disk");
        self.store.load(INSTANCE).expect("state.json reads")
    }

    /// The example config with every path inside this directory.
    pub fn settings(&self) -> Settings {
        settings_in(self.dir.path())
    }
}

/// The example config with the rendered files and the state dir under `dir`, owned by whoever
/// runs the tests.
pub fn settings_in(dir: &Path) -> Settings {
    let mut cfg = crate::testing::parse(crate::testing::EXAMPLE_CONFIG);
    let paths = &mut cfg.paths;
    paths.replicated_conf = dir.join("etc/replicated.conf");
    paths.settings = dir.join("etc/ptfe-settings.json");
    paths.license = dir.join("etc/ptfe-license.rli");
    paths.tls_cert = dir.join("etc/tls/cert.pem");
    paths.tls_key = dir.join("etc/tls/key.pem");
    paths.state_dir = dir.join("state");
    // A user no machine has: the files stay the test's own (no chown, whoever runs the tests).
    paths.file_owner = "tfe-node-agent-test-no-such-user".into();
    cfg
}

// ------------------------------------------------------------------------------ Secrets Manager

/// Secrets Manager holding payloads by id. A fetch fails whole: the next scripted error, or
/// `NotFound` for the first id it does not hold.
#[derive(Default)]
pub struct FakeSecrets {
    payloads: Mutex<BTreeMap<String, SecretPayload>>,
    errors: Mutex<VecDeque<SecretsError>>,
    fetches: Mutex<Vec<Fetch>>,
}

/// One GetSecretValue round: which ids, at which version stage.
#[derive(Debug, Clone)]
pub struct Fetch {
    pub at: Instant,
    pub ids: Vec<String>,
    pub version_stage: Option<String>,
}

impl FakeSecrets {
    /// The secrets of the example config: a valid `tfe/shared` and a `tfe/license`.
    pub fn valid() -> Self {
        let shared = serde_json::Value::Object(crate::testing::valid_shared()).to_string();
        Self::default()
            .with("tfe/shared", crate::testing::text(&shared))
            .with(
                "tfe/license",
                SecretPayload::Binary(SecretBytes::new(b"RLI".to_vec())),
            )
    }

    pub fn with(self, id: &str, payload: SecretPayload) -> Self {
        self.payloads.lock().unwrap().insert(id.into(), payload);
        self
    }

    /// The next fetches fail with these, in order.
    pub fn fail(&self, errors: impl IntoIterator<Item = SecretsError>) {
        self.errors.lock().unwrap().extend(errors);
    }

    /// The fetches made, in order.
    pub fn fetches(&self) -> Vec<Fetch> {
        self.fetches.lock().unwrap().clone()
    }
}

impl SecretSource for FakeSecrets {
    async fn fetch(
        &self,
        ids: &[String],
        version_stage: Option<&str>,
    ) -> Result<BTreeMap<String, SecretPayload>, SecretsError> {
        self.fetches.lock().unwrap().push(Fetch {
            at: Instant::now(),
            ids: ids.to_vec(),
            version_stage: version_stage.map(str::to_string),
        });
        if let Some(e) = self.errors.lock().unwrap().pop_front() {
            return Err(e);
        }
        let payloads = self.payloads.lock().unwrap();
        ids.iter()
            .map(|id| match payloads.get(id) {
                Some(p) => Ok((id.clone(), p.clone())),
                None => Err(SecretsError::NotFound { id: id.clone() }),
            })
            .collect()
    }
}

// ------------------------------------------------------------------------------ Auto Scaling

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

// ------------------------------------------------------------------------------ IMDS

/// IMDS paths the flows ask (`crate::node::watch`).
pub const TARGET_LIFECYCLE_STATE: &str = "/latest/meta-data/autoscaling/target-lifecycle-state";
pub const INSTANCE_LIFE_CYCLE: &str = "/latest/meta-data/instance-life-cycle";

/// IMDS with a map of items (a missing one is a 404), a switch that makes every request fail,
/// and a count of requests per path.
pub struct FakeImds {
    identity: Identity,
    items: Mutex<HashMap<String, String>>,
    requests: Mutex<HashMap<String, u32>>,
    failing: AtomicBool,
}

impl Default for FakeImds {
    fn default() -> Self {
        Self {
            identity: identity(),
            items: Mutex::default(),
            requests: Mutex::default(),
            failing: AtomicBool::new(false),
        }
    }
}

impl FakeImds {
    /// An on-demand instance with nothing announced.
    pub fn on_demand() -> Self {
        let imds = Self::default();
        imds.set(INSTANCE_LIFE_CYCLE, "on-demand");
        imds
    }

    pub fn set(&self, path: &str, value: &str) {
        self.items.lock().unwrap().insert(path.into(), value.into());
    }

    /// `autoscaling/target-lifecycle-state`.
    pub fn set_target(&self, state: &str) {
        self.set(TARGET_LIFECYCLE_STATE, state);
    }

    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    pub fn requests(&self, path: &str) -> u32 {
        self.requests
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Every request, identity included.
    pub fn total_requests(&self) -> u32 {
        self.requests.lock().unwrap().values().sum()
    }

    fn request(&self, path: &str) -> Result<(), ImdsError> {
        *self
            .requests
            .lock()
            .unwrap()
            .entry(path.into())
            .or_default() += 1;
        if self.failing.load(Ordering::SeqCst) {
            return Err(ImdsError {
                path: path.into(),
                detail: "connection refused".into(),
            });
        }
        Ok(())
    }
}

impl InstanceMetadata for FakeImds {
    async fn identity(&self) -> Result<Identity, ImdsError> {
        self.request("identity")?;
        Ok(self.identity.clone())
    }
    async fn get(&self, path: &str) -> Result<Option<String>, ImdsError> {
        self.request(path)?;
        Ok(self.items.lock().unwrap().get(path).cloned())
    }
    async fn get_static(&self, path: &str) -> Result<String, ImdsError> {
        self.get(path).await?.ok_or_else(|| ImdsError {
            path: path.into(),
            detail: "404".into(),
        })
    }
}

// ------------------------------------------------------------------------------ TFE tools

/// When TFE reports ready (system status all ready, app started, health-check passing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// From this instant on.
    At(Instant),
    Never,
}

/// One install.sh run.
struct InstallRun {
    started: Instant,
    plan: InstallCommand,
    /// `None`: cut short (the boot future was dropped) or still running.
    finished: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AppCommand {
    Stop,
    Start,
}

/// The TFE tools. install.sh takes `install_takes` and succeeds unless an error is scripted;
/// readiness follows [`Readiness`] unless results are scripted per tool; node-drain runs until
/// its end instant and then exits as told; `app stop`/`app start` take a few seconds to show.
/// A drain is let run once, and only the process that was started; it is not looked at after it
/// was stopped.
pub struct FakeTfe {
    install_takes: Duration,
    install_errors: Mutex<VecDeque<ToolError>>,
    installs: Mutex<Vec<InstallRun>>,

    readiness: Mutex<Readiness>,
    system_results: Mutex<VecDeque<Result<SystemStatus, ToolError>>>,
    app_results: Mutex<VecDeque<Result<AppStatus, ToolError>>>,
    health_results: Mutex<VecDeque<Result<HealthReport, ToolError>>>,
    probes: Mutex<HashMap<&'static str, usize>>,

    drain_ends: Instant,
    drain_exit: DrainState,
    start_fails: bool,
    starts: AtomicUsize,
    releases: AtomicUsize,
    /// The recorded drain never ran (its starter died before releasing it) until started again.
    never_ran: AtomicBool,
    polls: AtomicUsize,
    stops: Mutex<Vec<Instant>>,

    app: Mutex<Vec<(Instant, AppCommand)>>,
    app_initially_stopped: bool,
    app_stop_takes: Duration,
    app_start_takes: Duration,
}

impl FakeTfe {
    /// Installs at once, ready at once; a drain would succeed at once.
    pub fn ready() -> Self {
        Self::draining_for(0)
    }

    /// A drain that succeeds `secs` seconds from now.
    pub fn draining_for(secs: u64) -> Self {
        Self::exiting_after(secs, 0)
    }

    /// A drain that exits with `code` `secs` seconds from now.
    pub fn exiting_after(secs: u64, code: i32) -> Self {
        Self {
            install_takes: Duration::ZERO,
            install_errors: Mutex::default(),
            installs: Mutex::default(),
            readiness: Mutex::new(Readiness::Ready),
            system_results: Mutex::default(),
            app_results: Mutex::default(),
            health_results: Mutex::default(),
            probes: Mutex::default(),
            drain_ends: Instant::now() + Duration::from_secs(secs),
            drain_exit: DrainState::Exited(code),
            start_fails: false,
            starts: AtomicUsize::new(0),
            releases: AtomicUsize::new(0),
            never_ran: AtomicBool::new(false),
            polls: AtomicUsize::new(0),
            stops: Mutex::default(),
            app: Mutex::default(),
            app_initially_stopped: false,
            app_stop_takes: Duration::from_secs(3),
            app_start_takes: Duration::from_secs(3),
        }
    }

    pub fn install_takes(mut self, duration: Duration) -> Self {
        self.install_takes = duration;
        self
    }

    pub fn fail_install(&self, error: ToolError) {
        self.install_errors.lock().unwrap().push_back(error);
    }

    pub fn with_readiness(self, readiness: Readiness) -> Self {
        *self.readiness.lock().unwrap() = readiness;
        self
    }

    /// Ready `after` from now.
    pub fn ready_after(self, after: Duration) -> Self {
        self.with_readiness(Readiness::At(Instant::now() + after))
    }

    /// The next `replicatedctl system status` calls answer these, in order.
    pub fn script_system(
        &self,
        results: impl IntoIterator<Item = Result<SystemStatus, ToolError>>,
    ) {
        self.system_results.lock().unwrap().extend(results);
    }

    /// The next `replicatedctl app status` calls answer these, in order.
    pub fn script_app(&self, results: impl IntoIterator<Item = Result<AppStatus, ToolError>>) {
        self.app_results.lock().unwrap().extend(results);
    }

    /// The next `replicated admin health-check` calls answer these, in order.
    pub fn script_health(
        &self,
        results: impl IntoIterator<Item = Result<HealthReport, ToolError>>,
    ) {
        self.health_results.lock().unwrap().extend(results);
    }

    /// node-drain ends by itself this way (an exit code, or it vanishes).
    pub fn drain_exits_with(mut self, end: DrainState) -> Self {
        self.drain_exit = end;
        self
    }

    /// node-drain cannot be started.
    pub fn drain_start_fails(mut self) -> Self {
        self.start_fails = true;
        self
    }

    /// The drain in the record never ran (its starter died before letting it run).
    pub fn drain_never_ran(self) -> Self {
        self.never_ran.store(true, Ordering::SeqCst);
        self
    }

    /// The app was stopped (by a drain before a reboot) and stays so until `app start`.
    pub fn app_stopped(mut self) -> Self {
        self.app_initially_stopped = true;
        self
    }

    /// install.sh runs started: when, and with which plan.
    pub fn installs(&self) -> Vec<(Instant, InstallCommand)> {
        self.installs
            .lock()
            .unwrap()
            .iter()
            .map(|run| (run.started, run.plan.clone()))
            .collect()
    }

    /// install.sh runs that ran to their end.
    pub fn installs_finished(&self) -> usize {
        self.installs
            .lock()
            .unwrap()
            .iter()
            .filter(|run| run.finished.is_some())
            .count()
    }

    /// How often `tool` ("system status", "app status", "health-check") was asked.
    pub fn probes(&self, tool: &str) -> usize {
        self.probes.lock().unwrap().get(tool).copied().unwrap_or(0)
    }

    /// node-drain starts.
    pub fn starts(&self) -> usize {
        self.starts.load(Ordering::SeqCst)
    }

    /// Started drains let run.
    pub fn releases(&self) -> usize {
        self.releases.load(Ordering::SeqCst)
    }

    /// Looks at a drain's state.
    pub fn polls(&self) -> usize {
        self.polls.load(Ordering::SeqCst)
    }

    /// When a drain was stopped (SIGTERM to its group).
    pub fn stops(&self) -> Vec<Instant> {
        self.stops.lock().unwrap().clone()
    }

    pub fn app_stops(&self) -> Vec<Instant> {
        self.app_commands(AppCommand::Stop)
    }

    pub fn app_starts(&self) -> Vec<Instant> {
        self.app_commands(AppCommand::Start)
    }

    fn app_commands(&self, which: AppCommand) -> Vec<Instant> {
        self.app
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, c)| *c == which)
            .map(|(t, _)| *t)
            .collect()
    }

    fn probe(&self, tool: &'static str) {
        *self.probes.lock().unwrap().entry(tool).or_default() += 1;
    }

    fn ready_now(&self) -> bool {
        match *self.readiness.lock().unwrap() {
            Readiness::Ready => true,
            Readiness::At(t) => Instant::now() >= t,
            Readiness::Never => false,
        }
    }

    /// What `app status` shows now: the last command decides, once it had time to take effect.
    fn app_now(&self) -> AppStatus {
        let now = Instant::now();
        let status = |state: &str, desired: &str| AppStatus {
            state: state.into(),
            desired_state: desired.into(),
            is_transitioning: state != desired,
            error: String::new(),
        };
        let last = self.app.lock().unwrap().last().copied();
        match last {
            None if self.app_initially_stopped => status("stopped", "stopped"),
            Some((at, AppCommand::Stop)) if now >= at + self.app_stop_takes => {
                status("stopped", "stopped")
            }
            Some((_, AppCommand::Stop)) => status("stopping", "stopped"),
            Some((at, AppCommand::Start)) if now < at + self.app_start_takes => {
                status("starting", "started")
            }
            _ if self.ready_now() => status("started", "started"),
            _ => status("starting", "started"),
        }
    }
}

impl TfeTools for FakeTfe {
    async fn install(&self, plan: &InstallCommand) -> Result<(), ToolError> {
        let index = {
            let mut installs = self.installs.lock().unwrap();
            installs.push(InstallRun {
                started: Instant::now(),
                plan: plan.clone(),
                finished: None,
            });
            installs.len() - 1
        };
        tokio::time::sleep(self.install_takes).await;
        self.installs.lock().unwrap()[index].finished = Some(Instant::now());
        match self.install_errors.lock().unwrap().pop_front() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
    async fn system_status(&self) -> Result<SystemStatus, ToolError> {
        self.probe("system status");
        if let Some(r) = self.system_results.lock().unwrap().pop_front() {
            return r;
        }
        let state = if self.ready_now() {
            "ready"
        } else {
            "not ready"
        };
        Ok(SystemStatus {
            statuses: BTreeMap::from([
                ("Replicated".to_string(), "ready".to_string()),
                ("Retraced".to_string(), state.to_string()),
            ]),
        })
    }
    async fn app_status(&self) -> Result<AppStatus, ToolError> {
        self.probe("app status");
        if let Some(r) = self.app_results.lock().unwrap().pop_front() {
            return r;
        }
        Ok(self.app_now())
    }
    async fn health_check(&self) -> Result<HealthReport, ToolError> {
        self.probe("health-check");
        if let Some(r) = self.health_results.lock().unwrap().pop_front() {
            return r;
        }
        let passed = self.ready_now() && self.app_now().is_started();
        Ok(HealthReport {
            passed,
            failed_checks: if passed {
                Vec::new()
            } else {
                vec!["Vault".into()]
            },
            summary: if passed {
                "All checks passed".into()
            } else {
                "1 check failed".into()
            },
        })
    }
    fn start_drain(&self) -> Result<TrackedProcess, ToolError> {
        self.starts.fetch_add(1, Ordering::SeqCst);
        if self.start_fails {
            return Err(ToolError::Failed {
                command: "replicated admin node-drain".into(),
                detail: "cannot start replicated admin node-drain: entity not found".into(),
            });
        }
        Ok(states::drain_process())
    }
    fn release_drain(&self, drain: &TrackedProcess) -> Result<(), ToolError> {
        assert_eq!(*drain, states::drain_process(), "released another process");
        assert_eq!(
            self.releases.fetch_add(1, Ordering::SeqCst),
            0,
            "released twice"
        );
        Ok(())
    }
    fn drain_state(&self, drain: &TrackedProcess) -> DrainState {
        assert_eq!(
            *drain,
            states::drain_process(),
            "asked about another process"
        );
        assert!(self.stops().is_empty(), "polled after it was stopped");
        self.polls.fetch_add(1, Ordering::SeqCst);
        if self.never_ran.load(Ordering::SeqCst) && self.starts() == 0 {
            return DrainState::NeverStarted;
        }
        if Instant::now() >= self.drain_ends {
            self.drain_exit
        } else {
            DrainState::Running
        }
    }
    async fn stop_drain(&self, drain: &TrackedProcess) {
        assert_eq!(*drain, states::drain_process());
        self.stops.lock().unwrap().push(Instant::now());
        // SIGTERM, and a moment for the group to go.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    async fn app_stop(&self) -> Result<(), ToolError> {
        self.app
            .lock()
            .unwrap()
            .push((Instant::now(), AppCommand::Stop));
        Ok(())
    }
    async fn app_start(&self) -> Result<(), ToolError> {
        self.app
            .lock()
            .unwrap()
            .push((Instant::now(), AppCommand::Start));
        Ok(())
    }
}

// ------------------------------------------------------------------------------ host

/// The machine: its boot id ([`BOOT_A`] unless told) and whether the system is stopping.
pub struct FakeHost {
    boot_id: String,
    stopping: AtomicBool,
    asked: AtomicUsize,
}

impl Default for FakeHost {
    fn default() -> Self {
        Self {
            boot_id: BOOT_A.into(),
            stopping: AtomicBool::new(false),
            asked: AtomicUsize::new(0),
        }
    }
}

impl FakeHost {
    /// A machine in another boot.
    pub fn booted_as(boot_id: &str) -> Self {
        Self {
            boot_id: boot_id.into(),
            ..Self::default()
        }
    }

    pub fn set_stopping(&self, stopping: bool) {
        self.stopping.store(stopping, Ordering::SeqCst);
    }

    /// How often "is the system stopping" was asked.
    pub fn stopping_asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }
}

impl Host for FakeHost {
    fn boot_id(&self) -> String {
        self.boot_id.clone()
    }
    async fn system_stopping(&self) -> bool {
        self.asked.fetch_add(1, Ordering::SeqCst);
        self.stopping.load(Ordering::SeqCst)
    }
}
