//! The node's whole life (`run`) on the shared fakes under tokio's paused clock: a script beside
//! the service plays what happens to the node (an IMDS notice, the group moving the instance on,
//! a signal), then the test checks what Auto Scaling and the TFE tools were asked, what the
//! recorder holds and what state.json says.

use super::*;
use crate::model::lifecycle::{
    DrainOutcome, DrainRecord, HookOutcome, LaunchAnswer, NodeState, Phase, Termination,
};
use crate::testing::fakes::{
    self, FakeAsg, FakeHost, FakeImds, FakeTfe, FakeWorld, Recorded, LAUNCH_HOOK, TERMINATE_HOOK,
};
use crate::testing::states::{self, BOOT_A, BOOT_B, RELEASE};
use std::future::Future;
use tokio::sync::watch;
use tokio::time::Instant;

const SIGTERM: i32 = 15;

/// Runs the service beside `script`, which gets the sender of the signal channel; returns the
/// exit code and when `run` returned, after checking that state.json holds what the recorder
/// holds. The whole must end within an hour of (paused) time.
async fn serve<F>(
    w: &FakeWorld,
    cfg: &Settings,
    rec: &Recorded,
    script: impl FnOnce(watch::Sender<Option<i32>>) -> F,
) -> (Exit, Instant)
where
    F: Future<Output = ()>,
{
    let (tx, mut rx) = fakes::signals();
    // No listener: the door is gone, so the inbox never yields a request.
    let (_, mut inbox) = operator::door();
    let service = async {
        let exit = run(
            w,
            cfg,
            &fakes::identity(),
            &rec.recorder,
            &mut rx,
            &mut inbox,
        )
        .await;
        (exit, Instant::now())
    };
    let (ended, ()) = fakes::within(Duration::from_secs(3600), async {
        tokio::join!(service, script(tx))
    })
    .await;
    assert_eq!(
        rec.on_disk(),
        rec.recorder.snapshot(),
        "state.json holds what the recorder holds"
    );
    ended
}

/// Sleeps until `secs` after `start`.
async fn at(start: Instant, secs: u64) {
    tokio::time::sleep_until(start + Duration::from_secs(secs)).await;
}

fn secs(start: Instant, at: Instant) -> f64 {
    at.saturating_duration_since(start).as_secs_f64()
}

fn t(s: &NodeState) -> &Termination {
    s.termination.as_ref().expect("a termination is recorded")
}

fn results(completions: &[(Instant, HookResult)]) -> Vec<HookResult> {
    completions.iter().map(|c| c.1).collect()
}

#[tokio::test(start_paused = true)]
async fn an_imds_terminated_notice_during_boot_abandons_the_boot_and_drains() {
    let start = Instant::now();
    // install.sh would take ten minutes; the group terminates the instance at 30 s.
    let w = fakes::world()
        .tfe(FakeTfe::ready().install_takes(Duration::from_secs(600)))
        .build();
    let w = &w;
    let rec = &Recorded::new(states::fresh());
    let cfg = rec.settings();

    let (exit, ended) = serve(w, &cfg, rec, |tx| async move {
        at(start, 30).await;
        w.imds.set_target("Terminated");
        // The group moves the instance on once its launch action is answered, and waits on the
        // terminate hook.
        while w.asg.completions_of(LAUNCH_HOOK).is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        w.asg.set_state("Terminating:Wait");
        at(start, 300).await;
        tx.send(Some(SIGTERM)).unwrap();
    })
    .await;

    assert_eq!(exit, Exit::Ok);
    assert_eq!(secs(start, ended), 300.0, "it stayed until the signal");
    // The boot was cut short: install.sh started and was killed with the boot.
    assert_eq!(w.tfe.installs().len(), 1);
    assert_eq!(w.tfe.installs_finished(), 0, "install.sh was cut short");
    // The launch hook: ABANDON once, within a poll of the notice; no heartbeat after.
    let launch = w.asg.completions_of(LAUNCH_HOOK);
    assert_eq!(results(&launch), [HookResult::Abandon]);
    let abandoned_at = secs(start, launch[0].0);
    assert!((30.0..=31.0).contains(&abandoned_at), "{abandoned_at}");
    assert!(w.asg.beats_of(LAUNCH_HOOK).iter().all(|b| *b < launch[0].0));
    // The termination path: nothing to drain (never installed), the terminate hook once.
    assert_eq!(w.tfe.starts(), 0, "node-drain never started");
    let terminate = w.asg.completions_of(TERMINATE_HOOK);
    assert_eq!(results(&terminate), [HookResult::Continue]);
    assert!(terminate[0].0 < ended);

    let s = rec.recorder.snapshot();
    assert_eq!(s.launch_hook, Some(LaunchAnswer::Abandon));
    assert_eq!(s.installed_release, None);
    assert_eq!(t(&s).source, Source::Asg);
    assert_eq!(
        t(&s).drain,
        DrainRecord::Finished {
            outcome: DrainOutcome::Skipped {
                why: "TFE was never installed on this instance".into()
            }
        }
    );
    assert_eq!(
        t(&s).hook,
        Some(HookOutcome::Released {
            result: HookResult::Continue
        })
    );
    assert_eq!(s.phase, Phase::Drained);
}

#[tokio::test(start_paused = true)]
async fn in_service_a_terminated_notice_drains_once_releases_the_terminate_hook_once_and_runs_on_until_a_signal(
) {
    let start = Instant::now();
    // node-drain ends 100 s after the start.
    let imds = FakeImds::on_demand();
    imds.set_target("InService");
    let w = fakes::world()
        .imds(imds)
        .tfe(FakeTfe::draining_for(100))
        .build();
    let w = &w;
    let rec = &Recorded::new(states::fresh());
    let cfg = rec.settings();

    let (exit, ended) = serve(w, &cfg, rec, |tx| async move {
        at(start, 60).await;
        w.imds.set_target("Terminated");
        w.asg.set_state("Terminating:Wait");
        at(start, 600).await;
        // The termination is long done and the agent still runs.
        assert_eq!(rec.recorder.phase(), Phase::Drained);
        tx.send(Some(SIGTERM)).unwrap();
    })
    .await;

    assert_eq!(exit, Exit::Ok);
    assert_eq!(secs(start, ended), 600.0, "it ran on until the signal");
    // In service first.
    let launch = w.asg.completions_of(LAUNCH_HOOK);
    assert_eq!(results(&launch), [HookResult::Continue]);
    assert_eq!(launch[0].0, start);
    // node-drain once, then the app stopped, then the terminate hook once.
    assert_eq!(w.tfe.starts(), 1, "node-drain started once");
    assert_eq!(w.tfe.releases(), 1);
    assert_eq!(w.tfe.app_stops().len(), 1);
    let terminate = w.asg.completions_of(TERMINATE_HOOK);
    assert_eq!(results(&terminate), [HookResult::Continue], "released once");
    let released = secs(start, terminate[0].0);
    assert!(
        (103.0..105.0).contains(&released),
        "after the drain (100 s) and the app stop (3 s): {released}"
    );
    let beats = w.asg.beats_of(TERMINATE_HOOK);
    assert!(secs(start, beats[0]) >= 60.0 && secs(start, beats[0]) < 62.0);
    assert!(beats.iter().all(|b| *b < terminate[0].0));

    let s = rec.recorder.snapshot();
    assert_eq!(s.phase, Phase::Drained);
    assert_eq!(s.launch_hook, Some(LaunchAnswer::Continue));
    assert_eq!(t(&s).source, Source::Asg);
    assert_eq!(
        t(&s).drain,
        DrainRecord::Finished {
            outcome: DrainOutcome::Drained
        }
    );
    assert!(t(&s).app_stopped);
    assert_eq!(
        t(&s).hook,
        Some(HookOutcome::Released {
            result: HookResult::Continue
        })
    );
}

#[tokio::test(start_paused = true)]
async fn a_signal_when_the_system_is_not_stopping_exits_0_without_draining() {
    let start = Instant::now();
    let w = fakes::world().build();
    let w = &w;
    let rec = &Recorded::new(states::fresh());
    let cfg = rec.settings();

    let (exit, ended) = serve(w, &cfg, rec, |tx| async move {
        at(start, 30).await;
        tx.send(Some(SIGTERM)).unwrap();
    })
    .await;

    assert_eq!(exit, Exit::Ok);
    assert_eq!(secs(start, ended), 30.0, "stopped at the signal");
    assert_eq!(w.host.stopping_asked(), 1, "the host was asked once");
    assert_eq!(w.tfe.starts(), 0, "no drain");
    assert!(w.tfe.app_stops().is_empty());
    assert!(w.asg.completions_of(TERMINATE_HOOK).is_empty());
    assert_eq!(
        results(&w.asg.completions_of(LAUNCH_HOOK)),
        [HookResult::Continue]
    );
    let s = rec.recorder.snapshot();
    assert_eq!(s.phase, Phase::InService, "the node keeps serving");
    assert!(s.termination.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_signal_while_the_system_is_stopping_drains_within_the_shutdown_budget() {
    let start = Instant::now();
    // node-drain would run far longer than the budget.
    let w = fakes::world().tfe(FakeTfe::draining_for(1000)).build();
    let w = &w;
    let rec = &Recorded::new(states::fresh());
    let cfg = rec.settings();
    let budget = cfg.termination.shutdown_drain_timeout;
    assert_eq!(budget, Duration::from_secs(90), "the example config's");

    let (exit, ended) = serve(w, &cfg, rec, |tx| async move {
        at(start, 30).await;
        w.host.set_stopping(true);
        tx.send(Some(SIGTERM)).unwrap();
    })
    .await;

    assert_eq!(exit, Exit::Ok);
    assert_eq!(w.host.stopping_asked(), 1);
    assert_eq!(w.tfe.starts(), 1, "node-drain started once");
    let stops = w.tfe.stops();
    assert_eq!(stops.len(), 1, "and stopped once");
    // The budget counts from the notice in whole wall seconds: up to one less.
    let stopped = secs(start, stops[0]);
    assert!(
        (118.9..120.6).contains(&stopped),
        "stopped when the budget ran out: {stopped}"
    );
    assert!(
        ended <= start + Duration::from_secs(30) + budget + Duration::from_secs(5),
        "ended within the budget: {}",
        secs(start, ended)
    );
    assert!(w.tfe.app_stops().is_empty(), "the drain did not succeed");
    assert!(
        w.asg.completions_of(TERMINATE_HOOK).is_empty(),
        "no terminate hook for a shutdown"
    );

    let s = rec.recorder.snapshot();
    assert_eq!(t(&s).source, Source::Shutdown);
    assert!(
        matches!(
            &t(&s).drain,
            DrainRecord::Finished {
                outcome: DrainOutcome::TimedOut { .. }
            }
        ),
        "{:?}",
        t(&s).drain
    );
    assert_eq!(t(&s).boot_id, BOOT_A);
    assert_eq!(s.phase, Phase::Drained);
}

/// An in-service node that drained for a system shutdown (the app stopped) before a reboot.
fn drained_for_a_shutdown() -> NodeState {
    let now = states::now();
    states::apply(
        states::noticed(
            states::in_service(),
            states::notice(Source::Shutdown, now - 600),
        ),
        [
            Event::DrainStarted(states::drain_process()),
            Event::DrainFinished(DrainOutcome::Drained),
            Event::AppStopped,
        ],
    )
}

/// The world after the reboot: another boot id, the instance in service, the app stopped.
fn rebooted() -> FakeWorld {
    fakes::world()
        .asg(FakeAsg::new(&[Some("InService")]))
        .tfe(FakeTfe::ready().app_stopped())
        .host(FakeHost::booted_as(BOOT_B))
        .build()
}

#[tokio::test(start_paused = true)]
async fn a_resumable_record_after_a_reboot_records_resumed_and_serves_again() {
    let start = Instant::now();
    let before = drained_for_a_shutdown();
    assert_eq!(before.phase, Phase::Drained);
    assert!(before.resumable(BOOT_B));
    let w = rebooted();
    let w = &w;
    let rec = &Recorded::new(before);
    let cfg = rec.settings();

    let (exit, ended) = serve(w, &cfg, rec, |tx| async move {
        at(start, 60).await;
        tx.send(Some(SIGTERM)).unwrap();
    })
    .await;

    assert_eq!(exit, Exit::Ok);
    assert_eq!(secs(start, ended), 60.0, "it served until the signal");
    // The app the drain stopped was started again, and TFE checked before serving.
    assert_eq!(w.tfe.app_starts(), [start]);
    assert!(w.tfe.probes("health-check") >= 1);
    assert!(w.tfe.installs().is_empty(), "not installed again");
    assert_eq!(w.tfe.starts(), 0, "not drained again");
    assert!(
        w.asg.action_calls().is_empty(),
        "no hook to answer: the launch hook was released before the drain"
    );
    assert_eq!(w.host.stopping_asked(), 1);

    let s = rec.recorder.snapshot();
    assert!(s.termination.is_none(), "the drain is behind it");
    assert!(!s.restart_app, "the app was started again");
    assert_eq!(s.installed_release, Some(RELEASE));
    assert_eq!(s.launch_hook, Some(LaunchAnswer::Continue));
    assert_eq!(s.launch_released_again, 0);
    assert!(
        matches!(s.phase, Phase::Ready | Phase::InService),
        "serving again: {:?}",
        s.phase
    );
}

#[tokio::test(start_paused = true)]
async fn a_node_that_serves_again_after_a_reboot_is_recorded_in_service() {
    let start = Instant::now();
    let w = rebooted();
    let w = &w;
    let rec = &Recorded::new(drained_for_a_shutdown());
    let cfg = rec.settings();

    serve(w, &cfg, rec, |tx| async move {
        at(start, 60).await;
        tx.send(Some(SIGTERM)).unwrap();
    })
    .await;

    assert_eq!(rec.recorder.phase(), Phase::InService);
    assert_eq!(rec.on_disk().phase, Phase::InService);
}
