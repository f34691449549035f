//! The fake of the TFE tools.

use crate::model::drift::LiveSettings;
use crate::model::tfe::{
    AppStatus, DrainState, HealthReport, SupportBundleRun, SystemStatus, TrackedProcess,
};
use crate::ports::{InstallCommand, TfeTools, ToolError};
use crate::testing::states::{self};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

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
    /// `app-config -k -v` calls, in order.
    config_sets: Mutex<Vec<(String, String)>>,
    /// What `support-bundle` prints (Err: it fails with this detail).
    pub support_bundle_output: Mutex<Result<String, String>>,

    /// What `app-config export` shows (set with [`FakeTfe::set_live`]).
    live: Mutex<BTreeMap<String, String>>,
    export_results: Mutex<VecDeque<Result<LiveSettings, ToolError>>>,
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
            config_sets: Mutex::new(Vec::new()),
            support_bundle_output: Mutex::new(Ok(
                "Support bundle uploaded to support-bundles/2026-12-03T17:00:00Z/10.0.1.5/replicated-support1.tar.gz\n".into(),
            )),
            live: Mutex::default(),
            export_results: Mutex::default(),
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

    /// An app-config item as TFE runs it (`replicated admin app-config -k KEY -v VALUE`).
    pub fn set_live(&self, key: &str, value: &str) {
        self.live
            .lock()
            .unwrap()
            .insert(key.to_string(), value.to_string());
    }

    /// The next `app-config export` calls answer these, in order.
    pub fn script_export(
        &self,
        results: impl IntoIterator<Item = Result<LiveSettings, ToolError>>,
    ) {
        self.export_results.lock().unwrap().extend(results);
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

    /// The `app-config -k KEY -v VALUE` calls, in order.
    #[allow(dead_code)] // no unit test of the app-config flow yet (tests/operate.rs covers it)
    pub fn config_sets(&self) -> Vec<(String, String)> {
        self.config_sets.lock().unwrap().clone()
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
    async fn app_config_set(&self, key: &str, value: &str) -> Result<(), ToolError> {
        self.config_sets
            .lock()
            .unwrap()
            .push((key.to_string(), value.to_string()));
        // What TFE runs with from now on, as `app-config export` shows it.
        self.live
            .lock()
            .unwrap()
            .insert(key.to_string(), value.to_string());
        Ok(())
    }
    async fn support_bundle(&self) -> Result<SupportBundleRun, ToolError> {
        match &*self.support_bundle_output.lock().unwrap() {
            Ok(out) => Ok(SupportBundleRun::parse(out)),
            Err(detail) => Err(ToolError::Failed {
                command: "replicated admin --tty=0 support-bundle".into(),
                detail: detail.clone(),
            }),
        }
    }
    async fn replicated_version(&self) -> Result<String, ToolError> {
        Ok("replicatedctl version 2.53.7".into())
    }
    async fn app_config_export(&self) -> Result<LiveSettings, ToolError> {
        self.probe("app-config export");
        if let Some(r) = self.export_results.lock().unwrap().pop_front() {
            return r;
        }
        let values = self
            .live
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), crate::sys::secret::Secret::new(v.as_str())))
            .collect();
        Ok(LiveSettings { values })
    }
}
