//! The boot path on the shared fakes under tokio's paused clock: what Auto Scaling and the TFE
//! tools were asked, what the recorder holds, and what state.json says, for the boots a node
//! goes through.

use super::*;
use crate::model::lifecycle::{LaunchAnswer, Phase};
use crate::model::tfe::{AppStatus, HealthReport};
use crate::node::exit::Exit;
use crate::ports::SecretsError;
use crate::testing::fakes::{
    self, AsgOp, FakeAsg, FakeSecrets, FakeTfe, FakeWorld, Readiness, Recorded, LAUNCH_HOOK,
};
use crate::testing::states::{self, INSTANCE, RELEASE};
use tokio::time::Instant;

/// Runs the boot; returns its result, after checking that state.json holds what the recorder
/// holds.
async fn run(world: &FakeWorld, cfg: &Settings, rec: &Recorded) -> Result<BootOutcome, BootError> {
    let result = fakes::within(
        Duration::from_secs(3600),
        boot(world, cfg, &fakes::identity(), &rec.recorder),
    )
    .await;
    assert_eq!(
        rec.on_disk(),
        rec.recorder.snapshot(),
        "state.json holds what the recorder holds"
    );
    result
}

/// Seconds from `start` to `at`.
fn secs(start: Instant, at: Instant) -> f64 {
    at.saturating_duration_since(start).as_secs_f64()
}

/// Heartbeats from the first to the last never more than a jittered third of the launch hook's
/// HeartbeatTimeout (30 s) apart.
fn assert_held(beats: &[Instant]) {
    assert!(!beats.is_empty(), "the hook was never held");
    for pair in beats.windows(2) {
        let gap = secs(pair[0], pair[1]);
        assert!((9.0..=11.0).contains(&gap), "heartbeat gap {gap}s");
    }
}

#[tokio::test(start_paused = true)]
async fn a_healthy_boot_releases_the_launch_hook_with_continue_once_and_records_in_service() {
    let start = Instant::now();
    let w = fakes::world()
        .tfe(FakeTfe::ready().install_takes(Duration::from_secs(45)))
        .build();
    let rec = Recorded::new(states::fresh());
    let cfg = rec.settings();

    let outcome = run(&w, &cfg, &rec).await.expect("the boot succeeds");
    let end = Instant::now();

    assert_eq!(
        outcome.released,
        Some(Released::Completed(HookResult::Continue))
    );
    let LaunchHook::Active(h) = &outcome.hook else {
        panic!("the launch hook was not held: {:?}", outcome.hook)
    };
    assert_eq!(h.action.hook, LAUNCH_HOOK);
    assert!(!h.warm_pool);

    // Auto Scaling: held from the start, released once with CONTINUE when TFE was ready.
    let completions = w.asg.completions();
    assert_eq!(completions.len(), 1, "released once");
    assert_eq!(w.asg.calls(AsgOp::Complete).len(), 1, "one try was enough");
    let (released_at, result) = completions[0];
    assert_eq!(result, HookResult::Continue);
    assert_eq!(released_at, end, "boot() returns once released");
    let beats = w.asg.beats();
    assert_eq!(beats[0], start, "held from the moment it was found");
    assert_held(&beats);
    assert!(beats.iter().all(|b| *b < released_at));
    assert!(released_at - *beats.last().unwrap() <= Duration::from_secs(11));

    // The TFE tools: secrets fetched and files written, install.sh once, then readiness.
    assert_eq!(w.secrets.fetches().len(), 1);
    assert!(cfg.paths.replicated_conf.exists());
    assert!(cfg.paths.settings.exists());
    let installs = w.tfe.installs();
    assert_eq!(installs.len(), 1, "install.sh ran once");
    assert_eq!(installs[0].0, start);
    assert_eq!(installs[0].1.instance_id, INSTANCE);
    assert!(installs[0]
        .1
        .args
        .contains(&"private-address=10.0.0.5".to_string()));
    assert_eq!(w.tfe.installs_finished(), 1);
    assert!(w.tfe.probes("health-check") >= 1);
    assert!(
        secs(start, released_at) >= 45.0,
        "released after install.sh"
    );

    // The record.
    let s = rec.recorder.snapshot();
    assert_eq!(s.phase, Phase::InService);
    assert_eq!(s.installed_release, Some(RELEASE));
    assert_eq!(s.launch_hook, Some(LaunchAnswer::Continue));
    assert_eq!(s.launch_released_again, 0);
    assert!(s.termination.is_none());

    let n = w.asg.beats().len();
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(w.asg.beats().len(), n, "no heartbeat after the release");
}

#[tokio::test(start_paused = true)]
async fn install_sh_is_not_run_again_when_the_record_says_it_succeeded() {
    // An agent restarted after install.sh succeeded and before TFE was healthy.
    let w = fakes::world().build();
    let rec = Recorded::new(states::installed());
    let cfg = rec.settings();

    let outcome = run(&w, &cfg, &rec).await.expect("the boot succeeds");

    assert!(w.tfe.installs().is_empty(), "install.sh was not run again");
    assert_eq!(w.secrets.fetches().len(), 1, "the files are written again");
    assert!(cfg.paths.replicated_conf.exists());
    assert_eq!(
        outcome.released,
        Some(Released::Completed(HookResult::Continue))
    );
    assert_eq!(
        w.asg
            .completions_of(LAUNCH_HOOK)
            .iter()
            .map(|c| c.1)
            .collect::<Vec<_>>(),
        [HookResult::Continue]
    );
    let s = rec.recorder.snapshot();
    assert_eq!(s.installed_release, Some(RELEASE));
    assert_eq!(s.phase, Phase::InService);
    assert_eq!(s.launch_hook, Some(LaunchAnswer::Continue));
}

#[tokio::test(start_paused = true)]
async fn a_failed_readiness_releases_with_on_failure_and_records_boot_failed() {
    let start = Instant::now();
    let w = fakes::world()
        .tfe(FakeTfe::ready().with_readiness(Readiness::Never))
        .build();
    let rec = Recorded::new(states::fresh());
    let mut cfg = rec.settings();
    cfg.readiness.timeout = Duration::from_secs(120);
    assert_eq!(
        cfg.lifecycle.on_failure.hook_result(),
        HookResult::Abandon,
        "the example config's [lifecycle].on_failure"
    );

    let error = run(&w, &cfg, &rec).await.expect_err("the boot fails");

    assert!(matches!(error, BootError::Readiness(_)), "{error:?}");
    assert_eq!(Exit::of_boot(&error), Exit::ReadinessTimeout);
    let completions = w.asg.completions();
    assert_eq!(completions.len(), 1, "released once");
    let (released_at, result) = completions[0];
    assert_eq!(result, HookResult::Abandon, "[lifecycle].on_failure");
    let waited = secs(start, released_at);
    assert!(
        (120.0..121.0).contains(&waited),
        "released when [readiness].timeout ran out: {waited}"
    );
    let beats = w.asg.beats();
    assert_held(&beats);
    assert!(
        secs(*beats.last().unwrap(), released_at) <= 11.0,
        "held while readiness was awaited"
    );
    assert!(beats.iter().all(|b| *b < released_at));
    assert_eq!(w.tfe.installs().len(), 1);

    let s = rec.recorder.snapshot();
    assert_eq!(s.phase, Phase::BootFailed);
    assert_eq!(s.launch_hook, Some(LaunchAnswer::Abandon));
    assert_eq!(
        s.installed_release,
        Some(RELEASE),
        "install.sh succeeded; only readiness failed"
    );
}

#[tokio::test(start_paused = true)]
async fn a_throttled_hook_lookup_is_retried_beside_the_work() {
    let start = Instant::now();
    let asg = FakeAsg::launching();
    asg.fail(
        AsgOp::DescribeInstance,
        (0..4).map(|_| AsgError::Throttled {
            op: "DescribeAutoScalingInstances",
        }),
    );
    let w = fakes::world()
        .asg(asg)
        .tfe(FakeTfe::ready().install_takes(Duration::from_secs(60)))
        .build();
    let rec = Recorded::new(states::fresh());
    let cfg = rec.settings();

    let outcome = run(&w, &cfg, &rec).await.expect("the boot succeeds");

    // The work did not wait for the lookup.
    let installs = w.tfe.installs();
    assert_eq!(installs.len(), 1);
    assert_eq!(installs[0].0, start, "install.sh started at once");
    // The lookup was retried with backoff meanwhile, and found the hook.
    let describes = w.asg.describes();
    assert_eq!(describes[0], start);
    let gaps: Vec<f64> = describes.windows(2).map(|p| secs(p[0], p[1])).collect();
    crate::sys::retry::assert_backoff_gaps(&gaps, &[1.0, 2.0, 4.0, 8.0]);
    let found_at = describes[4];
    assert!(secs(start, found_at) < 60.0, "found while install.sh ran");
    // Held from the moment it was found, released once when the work was done.
    let beats = w.asg.beats();
    assert_eq!(beats[0], found_at, "the first beat as soon as it was found");
    assert_held(&beats);
    assert!(matches!(outcome.hook, LaunchHook::Active(_)));
    let completions = w.asg.completions();
    assert_eq!(completions.len(), 1);
    assert_eq!(completions[0].1, HookResult::Continue);
    assert_eq!(secs(start, completions[0].0), 60.0, "not delayed either");

    let s = rec.recorder.snapshot();
    assert_eq!(s.phase, Phase::InService);
    assert_eq!(s.launch_hook, Some(LaunchAnswer::Continue));
}

#[tokio::test(start_paused = true)]
async fn a_boot_with_no_launch_hook_configured_releases_nothing_and_records_none() {
    let w = fakes::world().build();
    let rec = Recorded::new(states::fresh());
    let mut cfg = rec.settings();
    cfg.lifecycle.launch_hook = None;

    let outcome = run(&w, &cfg, &rec).await.expect("the boot succeeds");

    assert_eq!(outcome.hook, LaunchHook::NotConfigured);
    assert_eq!(outcome.released, None);
    assert!(
        w.asg.all_calls().is_empty(),
        "Auto Scaling is not even asked: {:?}",
        w.asg.all_calls()
    );
    assert_eq!(w.tfe.installs().len(), 1);
    let s = rec.recorder.snapshot();
    assert_eq!(s.phase, Phase::InService);
    assert_eq!(s.launch_hook, Some(LaunchAnswer::NoHook));
}

#[tokio::test(start_paused = true)]
async fn a_launch_hook_the_group_waits_on_again_is_released_again_once() {
    // The record says the launch hook was released; the group waits on it again (a standby
    // exit, a warm pool re-entry, an earlier release whose answer was lost).
    let w = fakes::world().asg(FakeAsg::launching()).build();
    let rec = Recorded::new(states::in_service());
    let cfg = rec.settings();

    let outcome = run(&w, &cfg, &rec).await.expect("the boot succeeds");

    assert_eq!(
        outcome.released,
        Some(Released::Completed(HookResult::Continue))
    );
    assert_eq!(
        w.asg
            .completions_of(LAUNCH_HOOK)
            .iter()
            .map(|c| c.1)
            .collect::<Vec<_>>(),
        [HookResult::Continue],
        "released again, once"
    );
    assert_eq!(w.asg.calls(AsgOp::Complete).len(), 1);
    assert!(w.tfe.installs().is_empty(), "not installed again");
    assert!(w.tfe.probes("health-check") >= 1, "TFE checked first");
    let s = rec.recorder.snapshot();
    assert_eq!(s.launch_released_again, 1);
    assert_eq!(s.launch_hook, Some(LaunchAnswer::Continue));
    assert_eq!(s.phase, Phase::InService);
}

#[tokio::test(start_paused = true)]
async fn secrets_that_cannot_be_fetched_fail_the_boot_before_anything_is_written() {
    let start = Instant::now();
    let secrets = FakeSecrets::valid();
    secrets.fail([SecretsError::AccessDenied {
        id: "tfe/shared".into(),
        detail: "AccessDeniedException".into(),
    }]);
    let w = fakes::world().secrets(secrets).build();
    let rec = Recorded::new(states::fresh());
    let cfg = rec.settings();

    let error = run(&w, &cfg, &rec).await.expect_err("the boot fails");

    assert!(
        matches!(
            error,
            BootError::Configure(ConfigureError::FetchSecrets(
                SecretsError::AccessDenied { .. }
            ))
        ),
        "{error:?}"
    );
    assert_eq!(Exit::of_boot(&error), Exit::Aws);
    let fetches = w.secrets.fetches();
    assert_eq!(fetches.len(), 1, "a refusal is not retried");
    assert_eq!(fetches[0].at, start);
    assert_eq!(fetches[0].ids, ["tfe/shared", "tfe/license"]);
    assert_eq!(fetches[0].version_stage, None);
    assert!(!cfg.paths.replicated_conf.exists(), "nothing was written");
    assert!(w.tfe.installs().is_empty());
    assert_eq!(
        w.asg
            .completions_of(LAUNCH_HOOK)
            .iter()
            .map(|c| c.1)
            .collect::<Vec<_>>(),
        [HookResult::Abandon]
    );
    let s = rec.recorder.snapshot();
    assert_eq!(s.phase, Phase::BootFailed);
    assert_eq!(s.launch_hook, Some(LaunchAnswer::Abandon));
    assert_eq!(s.installed_release, None);
}

#[tokio::test(start_paused = true)]
async fn a_failed_install_releases_with_on_failure_and_records_no_install() {
    let w = fakes::world()
        .tfe(FakeTfe::ready().install_takes(Duration::from_secs(30)))
        .build();
    w.tfe.fail_install(ToolError::Failed {
        command: "install.sh".into(),
        detail: "install.sh exited with status 1".into(),
    });
    let rec = Recorded::new(states::fresh());
    let cfg = rec.settings();

    let error = run(&w, &cfg, &rec).await.expect_err("the boot fails");

    assert!(matches!(error, BootError::Install(_)), "{error:?}");
    assert_eq!(Exit::of_boot(&error), Exit::Install);
    assert_eq!(w.tfe.installs().len(), 1);
    assert_eq!(w.tfe.probes("system status"), 0, "no readiness wait");
    assert_held(&w.asg.beats());
    assert_eq!(
        w.asg
            .completions_of(LAUNCH_HOOK)
            .iter()
            .map(|c| c.1)
            .collect::<Vec<_>>(),
        [HookResult::Abandon]
    );
    let s = rec.recorder.snapshot();
    assert_eq!(s.phase, Phase::BootFailed);
    assert_eq!(s.installed_release, None, "the next boot runs it again");
    assert_eq!(s.launch_hook, Some(LaunchAnswer::Abandon));
}

#[tokio::test(start_paused = true)]
async fn tfe_that_becomes_ready_late_is_waited_for_with_the_hook_held() {
    let start = Instant::now();
    // replicatedctl fails at first, the system is ready at 200 s; then the app still starts for
    // one poll and the health-check fails once: each must pass in turn.
    let tfe = FakeTfe::ready().ready_after(Duration::from_secs(200));
    tfe.script_system([Err(ToolError::Failed {
        command: "replicatedctl system status".into(),
        detail: "connection refused".into(),
    })]);
    tfe.script_app([Ok(AppStatus {
        state: "starting".into(),
        desired_state: "started".into(),
        is_transitioning: true,
        error: String::new(),
    })]);
    tfe.script_health([Ok(HealthReport {
        passed: false,
        failed_checks: vec!["Vault".into()],
        summary: "1 check failed".into(),
    })]);
    let w = fakes::world().tfe(tfe).build();
    let rec = Recorded::new(states::fresh());
    let cfg = rec.settings();
    assert_eq!(cfg.readiness.poll_interval, Duration::from_secs(5));

    run(&w, &cfg, &rec).await.expect("the boot succeeds");

    // Polled every 5 s: system ready at 200 s, the app at 205 s, the health-check at 210 s.
    assert_eq!(w.tfe.probes("system status"), 43);
    assert_eq!(w.tfe.probes("app status"), 3);
    assert_eq!(w.tfe.probes("health-check"), 2);
    let completions = w.asg.completions();
    assert_eq!(completions.len(), 1);
    assert_eq!(completions[0].1, HookResult::Continue);
    assert_eq!(secs(start, completions[0].0), 210.0);
    let beats = w.asg.beats();
    assert_held(&beats);
    assert!(secs(*beats.last().unwrap(), completions[0].0) <= 11.0);
    assert_eq!(rec.recorder.phase(), Phase::InService);
}
