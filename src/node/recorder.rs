//! The one owner of the node's state while the agent runs. Every flow records what happened
//! through it: the event is applied to the state machine, the new state is saved atomically, and
//! only then is the transition published — to systemd's `STATUS=`, to the metrics, and to the
//! [`View`] that the HTTP API serves. Nobody else writes `state.json`, and nobody reads it back
//! mid-run: the current state is here, in memory.
//!
//! The flows of one node run on one thread (the agent's runtime is single-threaded) and the two
//! sides of a termination run concurrently in one task, so the state sits in a `RefCell`: every
//! borrow is short and never held across an `.await`. The view is published through a `watch`
//! channel, so the HTTP API reads the latest one without ever borrowing the recorder.

use crate::config::Settings;
use crate::model::asg::HookResult;
use crate::model::lifecycle::{Event, HookOutcome, IllegalTransition, NodeState, Phase, Source};
use crate::model::preflight::Report;
use crate::node::operator::Door;
use crate::node::state::{StateError, StateStore};
use crate::node::view::{AppRestartView, HookState, LastError, NoticeView, View};
use crate::sys::notify;
use crate::sys::time::unix_now;
use crate::telemetry::metrics::{metrics, Completion, HookKind};
use crate::telemetry::Milestone;
use std::cell::{Cell, Ref, RefCell};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::Instant;

/// Notices kept in the view; older ones are dropped (the journal keeps them all).
const NOTICES_KEPT: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("the node's lifecycle refused a step")]
    Refused(#[from] IllegalTransition),
    #[error("recording the node's progress failed")]
    Save(#[from] StateError),
}

#[derive(Debug)]
pub struct Recorder {
    state: RefCell<NodeState>,
    store: StateStore,
    view: Arc<watch::Sender<View>>,
    /// The must-match settings as TFE runs them, from the drift loop to the membership loop
    /// (values: never in the view).
    live: Arc<watch::Sender<LiveValues>>,
    boot_started: Cell<Option<Instant>>,
    install_started: Cell<Option<Instant>>,
    drain_started: Cell<Option<Instant>>,
    /// The operator channel into the service loop (`run` only): a rolling restart's turn asks
    /// through it like an operator would.
    door: RefCell<Option<Door>>,
}

impl Recorder {
    /// The recorded state of `instance_id` (a fresh one when nothing, or another instance's
    /// record, is on disk); an unreadable record is an error naming the file.
    pub fn open(store: StateStore, instance_id: &str) -> Result<Self, StateError> {
        let state = store.load(instance_id)?;
        Ok(Self::with_state(store, state))
    }

    /// A recorder for a state already in hand (tests, and the flows' own unit tests).
    pub fn with_state(store: StateStore, state: NodeState) -> Self {
        let view = View::of_state(&state, unix_now(), None, None);
        metrics().set_phase(state.phase);
        Self {
            state: RefCell::new(state),
            store,
            view: Arc::new(watch::Sender::new(view)),
            live: Arc::new(watch::Sender::new(None)),
            boot_started: Cell::new(None),
            install_started: Cell::new(None),
            drain_started: Cell::new(None),
            door: RefCell::new(None),
        }
    }

    /// What agent.toml says that the view shows: the hooks' names, the release to install.
    pub fn configured(&self, cfg: &Settings) {
        let release = cfg.replicated.release_sequence.get();
        metrics().set_info(release);
        let state = self.state.borrow();
        self.view.send_modify(|v| {
            let fresh = View::of_state(
                &state,
                v.agent_started_at,
                cfg.lifecycle.launch_hook.as_deref(),
                cfg.lifecycle.terminate_hook.as_deref(),
            );
            v.launch_hook = fresh.launch_hook;
            v.terminate_hook = fresh.terminate_hook;
            v.release_sequence = Some(release);
        });
    }

    /// Lets a task of its own (the membership loop) publish its part of the view.
    /// Lets the membership loop ask the service loop for a rolling restart's turn.
    pub fn set_door(&self, door: Door) {
        *self.door.borrow_mut() = Some(door);
    }

    pub fn door(&self) -> Option<Door> {
        self.door.borrow().clone()
    }

    pub fn publisher(&self) -> ViewPublisher {
        ViewPublisher(self.view.clone(), self.live.clone())
    }

    /// The must-match settings as the drift loop last read them from TFE (`None` until then).
    pub fn live_values(&self) -> watch::Receiver<LiveValues> {
        self.live.subscribe()
    }

    /// When the agent started on this instance as far as this process knows (unix seconds).
    pub fn launched_at(&self) -> u64 {
        self.view.borrow().agent_started_at
    }

    /// The view the HTTP API serves, always the latest.
    pub fn subscribe(&self) -> watch::Receiver<View> {
        self.view.subscribe()
    }

    /// The current state. Do not hold it across an `.await`.
    pub fn state(&self) -> Ref<'_, NodeState> {
        self.state.borrow()
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> NodeState {
        self.state.borrow().clone()
    }

    pub fn phase(&self) -> Phase {
        self.state.borrow().phase
    }

    /// Applies `event`, saves the result, then publishes it. A refused event changes nothing; a
    /// failed save leaves the state in memory as it was before the event (what is on disk).
    pub fn record(&self, event: Event) -> Result<(), RecordError> {
        let mut next = self.state.borrow().clone();
        next.apply(event.clone())?;
        self.store.save(&next)?;
        self.measure(&event, &next);
        let now = unix_now();
        self.view.send_modify(|v| {
            v.follow(&next, now);
            if let Event::TerminationNoticed(n) = &event {
                push_notice(v, n.source, &n.detail, n.at, true);
            }
        });
        metrics().set_phase(next.phase);
        metrics().set_ready(self.view.borrow().is_ready());
        *self.state.borrow_mut() = next;
        Ok(())
    }

    /// What `event` tells the metrics: durations, hook completions, notices.
    fn measure(&self, event: &Event, next: &NodeState) {
        let m = metrics();
        let since = |cell: &Cell<Option<Instant>>| cell.take().map(|t| t.elapsed());
        match event {
            Event::BootStarted => self.boot_started.set(Some(Instant::now())),
            Event::InstallSucceeded { .. } => {
                if let Some(d) = since(&self.install_started) {
                    m.install_took(d);
                }
            }
            Event::LaunchReleased(Some(r)) => m.hook_completed(HookKind::Launch, completion(*r)),
            Event::LaunchReleasedAgain(r) => m.hook_completed(HookKind::Launch, completion(*r)),
            Event::TerminationNoticed(n) => m.termination_notice(n.source),
            Event::DrainStarted(_) => self.drain_started.set(Some(Instant::now())),
            Event::DrainFinished(_) => {
                if let Some(d) = since(&self.drain_started) {
                    m.drain_took(d);
                }
            }
            Event::TerminateHookDone(HookOutcome::Released { result }) => {
                m.hook_completed(HookKind::Terminate, completion(*result));
            }
            Event::TerminateHookDone(HookOutcome::ResolvedElsewhere { .. }) => {
                m.hook_completed(HookKind::Terminate, Completion::ResolvedElsewhere);
            }
            _ => {}
        }
        // A boot ends in service or failed.
        if matches!(next.phase, Phase::InService | Phase::BootFailed) {
            if let Some(d) = since(&self.boot_started) {
                m.boot_took(d);
            }
        }
    }

    /// Logs `message` as a milestone of the node's life: under systemd, the journal entry carries
    /// `MESSAGE_ID` (the milestone's stable id), `PHASE` (the recorded phase), `INSTANCE_ID`, and
    /// `ASG_NAME` / `HOOK_NAME` (the hook the milestone belongs to) once they are known. On stderr
    /// it is the plain line. Record the event first, then call this: whoever reads the line may
    /// rely on the state file. The entry's code location is the caller's.
    #[track_caller]
    pub fn milestone(&self, m: Milestone, message: &str) {
        self.milestone_at(m.level(), m, message);
    }

    /// [`Recorder::milestone`] at another level than the milestone's own: a drain that failed is
    /// still the end of the drain, and an error.
    #[track_caller]
    pub fn milestone_at(&self, level: log::Level, m: Milestone, message: &str) {
        if level > log::max_level() {
            return;
        }
        let phase = self.phase().as_str();
        let instance_id = self.state.borrow().instance_id.clone();
        let (group, hook) = {
            let v = self.view.borrow();
            let hook = match m.hook() {
                HookKind::Launch => &v.launch_hook,
                HookKind::Terminate => &v.terminate_hook,
            };
            (v.group.clone(), hook.name.clone())
        };
        let mut fields = vec![
            ("MESSAGE_ID", m.message_id()),
            ("PHASE", phase),
            ("INSTANCE_ID", instance_id.as_str()),
        ];
        if let Some(group) = &group {
            fields.push(("ASG_NAME", group));
        }
        if let Some(hook) = &hook {
            fields.push(("HOOK_NAME", hook));
        }
        let caller = std::panic::Location::caller();
        log::logger().log(
            &log::Record::builder()
                .args(format_args!("{message}"))
                .level(level)
                .target(module_path!())
                .module_path_static(Some(module_path!()))
                .file_static(Some(caller.file()))
                .line(Some(caller.line()))
                .key_values(&fields)
                .build(),
        );
    }

    /// install.sh starts now (its duration is measured to `InstallSucceeded`).
    pub fn installing(&self) {
        self.install_started.set(Some(Instant::now()));
    }

    /// Publishes what the node is doing now (systemd `STATUS=`, the view's `activity`).
    pub fn say(&self, activity: &str) {
        notify::status(activity);
        self.set_activity(activity);
    }

    /// The node is up (in service, or staying to watch after a failed boot): `READY=1`.
    pub fn ready(&self, activity: &str) {
        notify::ready(activity);
        self.set_activity(activity);
    }

    /// The agent is stopping: `STOPPING=1`.
    pub fn stopping(&self, activity: &str) {
        notify::stopping(activity);
        self.set_activity(activity);
    }

    fn set_activity(&self, activity: &str) {
        self.view.send_modify(|v| v.activity = activity.to_string());
    }

    /// The last error the node met (its whole chain; errors never carry a secret value).
    pub fn failed(&self, error: &dyn std::error::Error) {
        let chain = crate::error_chain(error);
        self.view.send_modify(|v| {
            v.last_error = Some(LastError {
                at: unix_now(),
                chain,
            });
        });
    }

    /// A notice that does not end the node (a rebalance recommendation, scheduled maintenance).
    pub fn notice(&self, source: Source, detail: &str) {
        metrics().termination_notice(source);
        self.view
            .send_modify(|v| push_notice(v, source, detail, unix_now(), false));
    }

    /// What a lookup found about a hook of this node (and the group it named, if any).
    pub fn hook_found(&self, kind: HookKind, state: HookState, group: Option<&str>) {
        self.view.send_modify(|v| {
            let hook = match kind {
                HookKind::Launch => &mut v.launch_hook,
                HookKind::Terminate => &mut v.terminate_hook,
            };
            // A recorded answer stays: a later lookup that finds nothing waiting does not undo it.
            if hook.state != HookState::Released || state == HookState::Held {
                hook.state = state;
            }
            if let Some(g) = group {
                v.group = Some(g.to_string());
            }
        });
    }

    /// Where an `app restart` stands: `/status.app_restart`, and `/readyz` 503 while it runs.
    pub fn app_restart(&self, change: impl FnOnce(&mut Option<AppRestartView>)) {
        self.view.send_modify(|v| change(&mut v.app_restart));
        metrics().set_ready(self.view.borrow().is_ready());
    }

    /// The fingerprint of the settings rendered for this node.
    pub fn rendered(&self, fingerprint: String) {
        self.view
            .send_modify(|v| v.settings_fingerprint = Some(fingerprint));
    }

    /// A preflight run: its table logged (a failure as a milestone), its report in `/status`
    /// and its results in the metrics.
    pub fn preflight(&self, report: &Report) {
        metrics().preflight(report);
        let table = report.table();
        if report.passed() {
            log::info!("preflight:\n{table}");
        } else {
            self.milestone(
                Milestone::PreflightFailed,
                &format!("preflight failed ({}):\n{table}", report.failed_ids()),
            );
        }
        // The checks after install join the ones before it in one report.
        self.view.send_modify(|v| {
            let merged = match v.preflight.take() {
                None => report.clone(),
                Some(mut earlier) => {
                    earlier
                        .checks
                        .retain(|c| report.checks.iter().all(|n| n.id != c.id));
                    earlier.checks.extend(report.checks.iter().cloned());
                    earlier.checks.sort_by_key(|c| c.id);
                    earlier.duration = report.duration;
                    earlier
                }
            };
            v.preflight = Some(merged);
        });
    }
}

/// What another task of the agent may publish into the view: only its own part.
#[derive(Debug, Clone)]
pub struct ViewPublisher(Arc<watch::Sender<View>>, Arc<watch::Sender<LiveValues>>);

/// Setting name → the value TFE runs with.
pub type LiveValues = Option<Arc<std::collections::BTreeMap<String, crate::sys::secret::Secret>>>;

impl ViewPublisher {
    /// The drift loop's last report (`/status` `drift`).
    pub fn drift(&self, drift: Option<serde_json::Value>) {
        self.0.send_modify(|v| v.drift = drift);
    }

    /// The must-match settings TFE runs with, when they changed.
    pub fn live_values(&self, values: LiveValues) {
        self.1.send_if_modified(|old| {
            let changed = *old != values;
            *old = values;
            changed
        });
    }

    /// The cluster as the membership loop last saw it.
    pub fn cluster(&self, cluster: Option<serde_json::Value>) {
        self.0.send_modify(|v| v.cluster = cluster);
    }
}

fn completion(result: HookResult) -> Completion {
    match result {
        HookResult::Continue => Completion::Continue,
        HookResult::Abandon => Completion::Abandon,
    }
}

fn push_notice(v: &mut View, source: Source, detail: &str, at: u64, drains: bool) {
    if v.notices.len() >= NOTICES_KEPT {
        v.notices.remove(0);
    }
    v.notices.push(NoticeView {
        source,
        detail: detail.to_string(),
        at,
        drains,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_saved_before_it_is_seen_and_a_refused_one_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(&dir.path().join("state"));
        let recorder = Recorder::open(store.clone(), "i-1").unwrap();
        let view = recorder.subscribe();
        recorder
            .record(Event::InstallSucceeded {
                release_sequence: 504,
            })
            .unwrap();
        assert_eq!(recorder.phase(), Phase::Installed);
        assert_eq!(store.load("i-1").unwrap(), recorder.snapshot());
        assert_eq!(view.borrow().phase, Phase::Installed);
        assert_eq!(view.borrow().installed_release, Some(504));

        let before = recorder.snapshot();
        let refused = recorder.record(Event::LaunchReleased(Some(HookResult::Continue)));
        assert!(
            matches!(refused, Err(RecordError::Refused(_))),
            "{refused:?}"
        );
        assert_eq!(recorder.snapshot(), before);
        assert_eq!(store.load("i-1").unwrap(), before);
        assert_eq!(view.borrow().phase, Phase::Installed);
    }

    /// The records that carry a `MESSAGE_ID`, with their key-values, as a journal logger sees them.
    struct Capture(std::sync::Mutex<Vec<Entry>>);

    /// Level, message, key-values.
    type Entry = (log::Level, String, Vec<(String, String)>);

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }

        fn log(&self, record: &log::Record) {
            struct Fields(Vec<(String, String)>);
            impl<'kvs> log::kv::VisitSource<'kvs> for Fields {
                fn visit_pair(
                    &mut self,
                    key: log::kv::Key<'kvs>,
                    value: log::kv::Value<'kvs>,
                ) -> Result<(), log::kv::Error> {
                    self.0.push((key.to_string(), value.to_string()));
                    Ok(())
                }
            }
            let mut fields = Fields(Vec::new());
            record.key_values().visit(&mut fields).unwrap();
            if fields.0.iter().any(|(k, _)| k == "MESSAGE_ID") {
                let entry = (record.level(), record.args().to_string(), fields.0);
                self.0.lock().unwrap().push(entry);
            }
        }

        fn flush(&self) {}
    }

    static CAPTURE: Capture = Capture(std::sync::Mutex::new(Vec::new()));

    #[test]
    fn a_milestone_carries_its_id_the_phase_and_what_is_known_of_the_node() {
        // The only logger the unit tests install (a process holds one).
        let _ = log::set_logger(&CAPTURE);
        log::set_max_level(log::LevelFilter::Info);
        let dir = tempfile::tempdir().unwrap();
        let recorder = Recorder::open(StateStore::new(&dir.path().join("state")), "i-kv").unwrap();
        recorder.configured(&crate::testing::parse(crate::testing::EXAMPLE_CONFIG));
        recorder.record(Event::BootStarted).unwrap();
        recorder.milestone(Milestone::BootStarted, "boot of instance i-kv");
        recorder.hook_found(HookKind::Launch, HookState::Held, Some("asg-kv"));
        recorder.milestone(Milestone::BootFailed, "boot failed: i-kv");

        let entries: Vec<_> = CAPTURE
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, f)| f.contains(&("INSTANCE_ID".into(), "i-kv".into())))
            .cloned()
            .collect();
        let field = |i: usize, key: &str| {
            entries[i]
                .2
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(entries.len(), 2, "{entries:?}");
        assert_eq!(entries[0].0, log::Level::Info);
        assert_eq!(entries[0].1, "boot of instance i-kv");
        assert_eq!(
            field(0, "MESSAGE_ID").as_deref(),
            Some(Milestone::BootStarted.message_id())
        );
        assert_eq!(field(0, "PHASE").as_deref(), Some("booting"));
        assert_eq!(field(0, "HOOK_NAME").as_deref(), Some("tfe-launch"));
        // Not known before the hook's lookup found the group.
        assert_eq!(field(0, "ASG_NAME"), None);

        assert_eq!(entries[1].0, log::Level::Error);
        assert_eq!(
            field(1, "MESSAGE_ID").as_deref(),
            Some(Milestone::BootFailed.message_id())
        );
        assert_eq!(field(1, "ASG_NAME").as_deref(), Some("asg-kv"));
        assert_eq!(field(1, "HOOK_NAME").as_deref(), Some("tfe-launch"));
    }

    #[test]
    fn a_failed_save_keeps_the_state_that_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        // The state dir's parent is a file: nothing can be written.
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "").unwrap();
        let recorder = Recorder::with_state(
            StateStore::new(&blocker.join("state")),
            NodeState::new("i-1"),
        );
        let failed = recorder.record(Event::InstallSucceeded {
            release_sequence: 504,
        });
        assert!(matches!(failed, Err(RecordError::Save(_))), "{failed:?}");
        assert_eq!(recorder.snapshot(), NodeState::new("i-1"));
        assert_eq!(recorder.subscribe().borrow().phase, Phase::Booting);
    }
}
