//! The termination path against the shared fakes of Auto Scaling and the TFE tools, under
//! tokio's paused clock: node-drain at most once, heartbeats only once the wait state was seen,
//! the terminate hook released once with the result the drain earned, and every step on disk.
//!
//! Persisted timestamps are wall-clock seconds (`Clock::unix_now`) while tokio's clock is paused
//! and auto-advances: a test's whole run takes a blink of wall time, so budgets counted from
//! recorded timestamps start (almost) full.

use super::*;
use crate::config::{FailureResult, Settings};
use crate::model::lifecycle::{NodeState, Notice, Phase, Termination};
use crate::ports::AsgError;
use crate::testing::fakes::{self, AsgOp, FakeAsg, FakeTfe, FakeWorld, Recorded, TERMINATE_HOOK};
use crate::testing::states::{self, drain_process, in_service, BOOT_A};
use crate::testing::{parse, EXAMPLE_CONFIG};

// ------------------------------------------------------------------------------------ fixtures

/// Auto Scaling answering `states` in order, with the terminate hook's HeartbeatTimeout and
/// global timeout (seconds).
fn asg(states: &[Option<&'static str>], heartbeat_timeout: u64, global_timeout: u64) -> FakeAsg {
    FakeAsg::new(states).terminate_hook_timeouts(heartbeat_timeout, global_timeout)
}

fn world(asg: FakeAsg, tfe: FakeTfe) -> FakeWorld {
    fakes::world().asg(asg).tfe(tfe).build()
}

fn cfg() -> Settings {
    let cfg = parse(EXAMPLE_CONFIG);
    assert_eq!(
        cfg.lifecycle.terminate_hook.as_deref(),
        Some("tfe-terminate")
    );
    assert_eq!(cfg.drain.on_failure, FailureResult::Abandon, "the default");
    cfg
}

fn notice_at(source: Source, at: u64) -> Event {
    Event::TerminationNoticed(states::notice(source, at))
}

fn noticed(s: NodeState, source: Source) -> NodeState {
    states::noticed(s, states::notice(source, states::now()))
}

/// Runs the termination path with a fresh state dir; returns the state it ended in, after
/// checking that it is what it left on disk, and that the path kept to its ports.
async fn run(world: &FakeWorld, cfg: &Settings, state: NodeState) -> NodeState {
    let rec = Recorded::new(state);
    terminate(world, cfg, &rec.recorder)
        .await
        .expect("the termination path ends");
    let out = rec.recorder.snapshot();
    assert_eq!(
        rec.on_disk(),
        out,
        "state.json holds what terminate() ended in"
    );
    assert!(
        world.secrets.fetches().is_empty(),
        "the termination path reads no secrets"
    );
    assert_eq!(
        world.imds.total_requests(),
        0,
        "the termination path asks IMDS nothing"
    );
    assert!(
        world.tfe.installs().is_empty(),
        "nothing is installed while terminating"
    );
    assert_eq!(
        world.tfe.probes("system status") + world.tfe.probes("health-check"),
        0,
        "readiness is not checked while terminating"
    );
    assert!(
        world.tfe.app_starts().is_empty(),
        "the app is not started while terminating"
    );
    assert_eq!(
        world.host.stopping_asked(),
        0,
        "the termination path does not ask"
    );
    assert!(
        world
            .asg
            .action_calls()
            .iter()
            .all(|c| c.hook.as_deref() == Some(TERMINATE_HOOK)),
        "an action of another hook: {:?}",
        world.asg.action_calls()
    );
    out
}

fn t(s: &NodeState) -> &Termination {
    s.termination.as_ref().expect("a termination is recorded")
}

fn drain_outcome(s: &NodeState) -> DrainOutcome {
    match &t(s).drain {
        DrainRecord::Finished { outcome } => outcome.clone(),
        other => panic!("the drain did not finish: {other:?}"),
    }
}

fn released(result: HookResult) -> Option<HookOutcome> {
    Some(HookOutcome::Released { result })
}

/// Seconds from `start` to `at`.
fn secs(start: Instant, at: Instant) -> f64 {
    at.saturating_duration_since(start).as_secs_f64()
}

/// Beats never more than a jittered third of HeartbeatTimeout apart (±10 %).
fn assert_beat_spacing(beats: &[Instant], interval: f64) {
    for pair in beats.windows(2) {
        let gap = secs(pair[0], pair[1]);
        assert!(
            gap >= interval * 0.9 - 0.01 && gap <= interval * 1.1 + 0.01,
            "heartbeat gap {gap}s, expected {interval}s ±10%"
        );
    }
}

// ------------------------------------------------------------------------------------ tests

#[tokio::test(start_paused = true)]
async fn an_asg_termination_drains_once_heartbeats_and_continues_once() {
    let start = Instant::now();
    let w = world(FakeAsg::terminating(), FakeTfe::draining_for(60));
    let s = run(&w, &cfg(), noticed(in_service(), Source::Asg)).await;
    let end = Instant::now();

    assert_eq!(w.tfe.starts(), 1, "node-drain started once");
    assert_eq!(w.tfe.releases(), 1, "and let run once it was recorded");
    let app_stops = w.tfe.app_stops();
    assert_eq!(app_stops.len(), 1);
    assert!(
        (60.0..61.0).contains(&secs(start, app_stops[0])),
        "app stopped right after the drain"
    );

    let beats = w.asg.beats();
    assert_eq!(beats[0], start, "the first beat goes out at once");
    assert_beat_spacing(&beats, 10.0);
    assert!(
        beats.len() >= 6,
        "beats for the whole drain: {}",
        beats.len()
    );

    let completions = w.asg.completions();
    assert_eq!(completions.len(), 1, "completed once");
    assert_eq!(w.asg.calls(AsgOp::Complete).len(), 1);
    let (done_at, result) = completions[0];
    assert_eq!(result, HookResult::Continue);
    assert!(
        secs(start, done_at) >= secs(start, app_stops[0]) + 3.0,
        "released only after the app reported stopped"
    );
    assert!(
        secs(*beats.last().unwrap(), done_at) <= 11.0,
        "no gap longer than a beat before the release"
    );
    assert!(
        beats.iter().all(|b| *b < done_at),
        "no beat after the release"
    );
    assert_eq!(done_at, end, "terminate() returns once released");
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(w.asg.beats().len(), beats.len(), "and none later either");

    assert_eq!(s.phase, Phase::Drained);
    assert_eq!(drain_outcome(&s), DrainOutcome::Drained);
    assert!(t(&s).app_stopped);
    assert_eq!(t(&s).hook, released(HookResult::Continue));
    assert!(t(&s).wait_state_seen_at.is_some());
    assert!(t(&s).is_done());
}

#[tokio::test(start_paused = true)]
async fn nothing_touches_the_hook_before_the_wait_state_is_seen() {
    let start = Instant::now();
    let asg = asg(
        &[
            Some("InService"),
            Some("InService"),
            Some("Terminating"),
            Some("Terminating:Wait"),
        ],
        30,
        3000,
    );
    let w = world(asg, FakeTfe::draining_for(40));
    let s = run(&w, &cfg(), noticed(in_service(), Source::Asg)).await;

    let seen = w.asg.wait_seen().expect("the wait state was seen");
    assert!(
        (5.9..6.1).contains(&secs(start, seen)),
        "described every 2 s: {}",
        secs(start, seen)
    );
    assert!(w.asg.describe_hooks().iter().all(|t| *t >= seen));
    let calls = w.asg.action_calls();
    assert!(!calls.is_empty());
    assert!(
        calls.iter().all(|c| c.at >= seen),
        "a heartbeat or completion before the wait state: {calls:?}"
    );
    let beats = w.asg.beats();
    assert_eq!(
        beats[0], seen,
        "the first beat as soon as the wait state shows"
    );
    assert_beat_spacing(&beats, 10.0);
    assert_eq!(
        w.asg.completions().iter().map(|c| c.1).collect::<Vec<_>>(),
        [HookResult::Continue]
    );
    assert_eq!(
        w.tfe.starts(),
        1,
        "the drain did not wait for the wait state"
    );
    assert_eq!(s.phase, Phase::Drained);
    assert_eq!(t(&s).hook, released(HookResult::Continue));
}

#[tokio::test(start_paused = true)]
async fn a_drain_done_before_the_wait_state_releases_the_hook_when_it_shows() {
    let start = Instant::now();
    let mut states = vec![Some("Terminating"); 5];
    states.push(Some("Terminating:Wait"));
    let w = world(asg(&states, 30, 3000), FakeTfe::draining_for(3));
    let s = run(&w, &cfg(), noticed(in_service(), Source::Asg)).await;

    let seen = w.asg.wait_seen().unwrap();
    assert!((9.9..10.1).contains(&secs(start, seen)));
    assert!(
        secs(start, w.tfe.app_stops()[0]) < 4.0,
        "the drain ended long before"
    );
    assert!(w.asg.beats().is_empty(), "nothing left to keep alive");
    let completions = w.asg.completions();
    assert_eq!(completions, [(seen, HookResult::Continue)]);
    assert_eq!(s.phase, Phase::Drained);
}

#[tokio::test(start_paused = true)]
async fn no_wait_state_in_time_leaves_the_hook_alone_but_drains() {
    let start = Instant::now();
    let mut cfg = cfg();
    cfg.termination.wait_state_timeout = Duration::from_secs(20);
    let w = world(
        asg(&[Some("Terminating")], 30, 3000),
        FakeTfe::draining_for(60),
    );
    let s = run(&w, &cfg, noticed(in_service(), Source::Asg)).await;

    assert!(
        w.asg.action_calls().is_empty(),
        "no heartbeat, no completion"
    );
    assert!(w.asg.describe_hooks().is_empty());
    let last_describe = *w.asg.describes().last().unwrap();
    assert!(
        (19.9..22.1).contains(&secs(start, last_describe)),
        "gave up at wait_state_timeout: {}",
        secs(start, last_describe)
    );
    assert_eq!(
        t(&s).hook,
        Some(HookOutcome::NotApplicable {
            why: "the wait state did not appear in time".into()
        })
    );
    assert_eq!(t(&s).wait_state_seen_at, None);
    assert_eq!(w.tfe.starts(), 1);
    assert_eq!(drain_outcome(&s), DrainOutcome::Drained);
    assert!(t(&s).app_stopped);
    assert_eq!(s.phase, Phase::Drained);
}

#[tokio::test(start_paused = true)]
async fn an_action_resolved_elsewhere_is_recorded_and_not_completed() {
    for past in [
        "Terminating:Proceed",
        "Terminated",
        "Warmed:Terminating:Proceed",
    ] {
        let w = world(asg(&[Some(past)], 30, 3000), FakeTfe::draining_for(30));
        let s = run(&w, &cfg(), noticed(in_service(), Source::Asg)).await;
        assert!(w.asg.action_calls().is_empty(), "{past}");
        assert_eq!(
            t(&s).hook,
            Some(HookOutcome::ResolvedElsewhere {
                state: Some(past.into())
            }),
            "{past}"
        );
        assert_eq!(w.tfe.starts(), 1, "{past}: the drain still runs");
        assert_eq!(drain_outcome(&s), DrainOutcome::Drained, "{past}");
        assert_eq!(s.phase, Phase::Drained, "{past}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_instance_outside_any_group_or_hook_has_nothing_to_release() {
    // Not in a group.
    let w = world(asg(&[None], 30, 3000), FakeTfe::draining_for(10));
    let s = run(&w, &cfg(), noticed(in_service(), Source::Asg)).await;
    assert_eq!(
        t(&s).hook,
        Some(HookOutcome::NotApplicable {
            why: "this instance is not in an Auto Scaling group".into()
        })
    );
    assert_eq!(w.asg.describes().len(), 1);
    assert!(w.asg.action_calls().is_empty());
    assert_eq!(drain_outcome(&s), DrainOutcome::Drained);

    // The group has no terminate hook of that name.
    let asg = FakeAsg::terminating().without_hook(TERMINATE_HOOK);
    let w = world(asg, FakeTfe::draining_for(10));
    let s = run(&w, &cfg(), noticed(in_service(), Source::Asg)).await;
    assert_eq!(
        t(&s).hook,
        Some(HookOutcome::NotApplicable {
            why: "group tfe-asg has no terminate hook named tfe-terminate".into()
        })
    );
    assert!(w.asg.action_calls().is_empty());
    assert_eq!(s.phase, Phase::Drained);

    // No terminate hook configured: Auto Scaling is not even asked.
    let mut cfg = cfg();
    cfg.lifecycle.terminate_hook = None;
    let w = world(FakeAsg::terminating(), FakeTfe::draining_for(10));
    let s = run(&w, &cfg, noticed(in_service(), Source::Asg)).await;
    assert!(w.asg.describes().is_empty());
    assert!(w.asg.action_calls().is_empty());
    assert_eq!(
        t(&s).hook,
        Some(HookOutcome::NotApplicable {
            why: "no [lifecycle].terminate_hook configured".into()
        })
    );
    assert_eq!(w.tfe.starts(), 1);
    assert_eq!(s.phase, Phase::Drained);
}

#[tokio::test(start_paused = true)]
async fn a_failed_drain_gets_the_on_failure_result_and_leaves_the_app_alone() {
    for (on_failure, expected) in [
        (FailureResult::Abandon, HookResult::Abandon),
        (FailureResult::Continue, HookResult::Continue),
    ] {
        let mut cfg = cfg();
        cfg.drain.on_failure = on_failure;
        let w = world(FakeAsg::terminating(), FakeTfe::exiting_after(20, 3));
        let s = run(&w, &cfg, noticed(in_service(), Source::Asg)).await;
        assert_eq!(drain_outcome(&s), DrainOutcome::Failed { exit_code: 3 });
        assert!(
            w.tfe.app_stops().is_empty(),
            "no app stop after a failed drain"
        );
        assert!(!t(&s).app_stopped);
        assert!(w.tfe.stops().is_empty(), "it ended by itself");
        assert_eq!(
            w.asg.completions().iter().map(|c| c.1).collect::<Vec<_>>(),
            [expected],
            "{on_failure:?}"
        );
        assert_eq!(t(&s).hook, released(expected));
        assert_eq!(s.phase, Phase::Drained);
    }
}

#[tokio::test(start_paused = true)]
async fn a_drain_that_could_not_start_or_vanished_is_a_failure() {
    let tfe = FakeTfe::draining_for(20).drain_start_fails();
    let w = world(FakeAsg::terminating(), tfe);
    let s = run(&w, &cfg(), noticed(in_service(), Source::Asg)).await;
    assert_eq!(w.tfe.starts(), 1);
    assert!(matches!(
        drain_outcome(&s),
        DrainOutcome::CouldNotStart { why } if why.contains("node-drain")
    ));
    assert_eq!(t(&s).hook, released(HookResult::Abandon));
    assert!(w.tfe.app_stops().is_empty());

    let tfe = FakeTfe::draining_for(20).drain_exits_with(DrainState::Vanished);
    let w = world(FakeAsg::terminating(), tfe);
    let s = run(&w, &cfg(), noticed(in_service(), Source::Asg)).await;
    assert_eq!(drain_outcome(&s), DrainOutcome::Interrupted);
    assert_eq!(t(&s).hook, released(HookResult::Abandon));
    assert!(w.tfe.app_stops().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_drain_past_its_timeout_is_stopped_and_fails() {
    for (on_failure, expected) in [
        (FailureResult::Abandon, HookResult::Abandon),
        (FailureResult::Continue, HookResult::Continue),
    ] {
        let start = Instant::now();
        let mut cfg = cfg();
        cfg.drain.timeout = Duration::from_secs(60);
        cfg.drain.on_failure = on_failure;
        let w = world(FakeAsg::terminating(), FakeTfe::draining_for(1000));
        let s = run(&w, &cfg, noticed(in_service(), Source::Asg)).await;

        let stops = w.tfe.stops();
        assert_eq!(stops.len(), 1, "stopped once");
        // The limit counts from the notice in whole wall seconds: up to one less.
        assert!(
            (58.9..60.6).contains(&secs(start, stops[0])),
            "stopped at [drain].timeout: {}",
            secs(start, stops[0])
        );
        assert_eq!(
            drain_outcome(&s),
            DrainOutcome::TimedOut {
                why: "[drain].timeout".into()
            }
        );
        assert!(w.tfe.app_stops().is_empty());
        let completions = w.asg.completions();
        assert_eq!(completions.len(), 1);
        assert_eq!(completions[0].1, expected, "{on_failure:?}");
        assert!(
            completions[0].0 >= stops[0],
            "released after the drain was stopped"
        );
        assert!(secs(start, completions[0].0) < 65.0);
        assert_beat_spacing(&w.asg.beats(), 10.0);
        assert_eq!(s.phase, Phase::Drained);
    }
}

#[tokio::test(start_paused = true)]
async fn the_hooks_global_timeout_cuts_the_drain_short() {
    let start = Instant::now();
    // HeartbeatTimeout 30 s (beats every 10 s), global timeout 120 s: the margin is 10 + 15 s.
    let w = world(
        asg(&[Some("Terminating:Wait")], 30, 120),
        FakeTfe::draining_for(1000),
    );
    let s = run(&w, &cfg(), noticed(in_service(), Source::Asg)).await;

    let stops = w.tfe.stops();
    assert_eq!(stops.len(), 1);
    let stopped = secs(start, stops[0]);
    assert!(
        (93.9..95.6).contains(&stopped),
        "stopped at the global timeout less the margin: {stopped}"
    );
    let outcome = drain_outcome(&s);
    assert!(
        matches!(&outcome, DrainOutcome::TimedOut { why } if why.contains("global timeout")),
        "{outcome:?}"
    );
    let completions = w.asg.completions();
    assert_eq!(completions.len(), 1);
    let (done_at, result) = completions[0];
    assert_eq!(result, HookResult::Abandon);
    assert!(
        secs(w.asg.wait_seen().unwrap(), done_at) < 120.0,
        "released before the global timeout: {}",
        secs(start, done_at)
    );
    assert_beat_spacing(&w.asg.beats(), 10.0);
    assert_eq!(t(&s).hook, released(HookResult::Abandon));
    assert_eq!(s.phase, Phase::Drained);
}

#[tokio::test(start_paused = true)]
async fn a_restarted_agent_keeps_the_global_budget_from_the_first_sighting() {
    let start = Instant::now();
    // The wait state was seen 100 s (wall) before this agent started: 20 s of the 120 s budget
    // are left, less than the margin, so the drain is stopped at its first look.
    let now = states::now();
    let mut s = in_service();
    s.apply(notice_at(Source::Asg, now - 100)).unwrap();
    s.apply(Event::DrainStarted(drain_process())).unwrap();
    s.apply(Event::WaitStateSeen { at: now - 100 }).unwrap();
    let w = world(
        asg(&[Some("Terminating:Wait")], 30, 120),
        FakeTfe::draining_for(1000),
    );
    let s = run(&w, &cfg(), s).await;
    assert_eq!(w.tfe.starts(), 0);
    let stops = w.tfe.stops();
    assert_eq!(stops.len(), 1);
    assert!(secs(start, stops[0]) <= 1.0, "{}", secs(start, stops[0]));
    assert!(matches!(drain_outcome(&s), DrainOutcome::TimedOut { .. }));
    assert_eq!(
        t(&s).wait_state_seen_at,
        Some(now - 100),
        "the first sighting is kept"
    );
    assert_eq!(t(&s).hook, released(HookResult::Abandon));
    assert!(secs(start, w.asg.completions()[0].0) < 5.0);
}

#[tokio::test(start_paused = true)]
async fn a_restarted_agent_adopts_the_running_drain() {
    let mut s = noticed(in_service(), Source::Asg);
    s.apply(Event::DrainStarted(drain_process())).unwrap();
    s.apply(Event::WaitStateSeen { at: states::now() }).unwrap();
    let w = world(FakeAsg::terminating(), FakeTfe::draining_for(40));
    let s = run(&w, &cfg(), s).await;

    assert_eq!(w.tfe.starts(), 0, "never a second node-drain");
    assert!(w.tfe.polls() > 1, "it waited for the adopted one");
    assert_eq!(drain_outcome(&s), DrainOutcome::Drained);
    assert_eq!(w.tfe.app_stops().len(), 1);
    assert!(t(&s).app_stopped);
    assert_eq!(
        w.asg.completions().iter().map(|c| c.1).collect::<Vec<_>>(),
        [HookResult::Continue]
    );
    assert!(w.asg.beats().len() >= 4);
    assert_eq!(s.phase, Phase::Drained);
}

#[tokio::test(start_paused = true)]
async fn a_recorded_drain_that_never_ran_is_started_once_by_the_restarted_agent() {
    // The earlier agent recorded the drain and died before letting it run.
    let mut s = noticed(in_service(), Source::Asg);
    s.apply(Event::DrainStarted(drain_process())).unwrap();
    let tfe = FakeTfe::draining_for(10).drain_never_ran();
    let w = world(FakeAsg::terminating(), tfe);
    let s = run(&w, &cfg(), s).await;
    assert_eq!(w.tfe.starts(), 1, "started once, by this agent");
    assert_eq!(w.tfe.releases(), 1);
    assert_eq!(drain_outcome(&s), DrainOutcome::Drained);
    assert_eq!(t(&s).hook, released(HookResult::Continue));
}

#[tokio::test(start_paused = true)]
async fn a_restarted_agent_finishes_only_what_is_left() {
    // Drained before the restart, the app not yet stopped: stop it, then release the hook.
    let mut s = noticed(in_service(), Source::Asg);
    s.apply(Event::DrainStarted(drain_process())).unwrap();
    s.apply(Event::DrainFinished(DrainOutcome::Drained))
        .unwrap();
    let w = world(FakeAsg::terminating(), FakeTfe::draining_for(0));
    let s = run(&w, &cfg(), s).await;
    assert_eq!(w.tfe.starts(), 0);
    assert_eq!(w.tfe.polls(), 0);
    assert_eq!(w.tfe.app_stops().len(), 1);
    assert!(t(&s).app_stopped);
    assert_eq!(t(&s).hook, released(HookResult::Continue));

    // The hook already found resolved, the drain still running: wait for it, ask ASG nothing.
    let mut s = noticed(in_service(), Source::Asg);
    s.apply(Event::DrainStarted(drain_process())).unwrap();
    s.apply(Event::TerminateHookDone(HookOutcome::ResolvedElsewhere {
        state: Some("Terminating:Proceed".into()),
    }))
    .unwrap();
    let w = world(FakeAsg::terminating(), FakeTfe::draining_for(30));
    let s = run(&w, &cfg(), s).await;
    assert_eq!(w.tfe.starts(), 0);
    assert!(w.asg.describes().is_empty());
    assert!(w.asg.action_calls().is_empty());
    assert_eq!(drain_outcome(&s), DrainOutcome::Drained);
    assert_eq!(s.phase, Phase::Drained);
}

#[tokio::test(start_paused = true)]
async fn throttling_is_retried_with_backoff_and_the_hook_completed_once() {
    let asg = FakeAsg::terminating();
    asg.fail(
        AsgOp::Heartbeat,
        (0..4).map(|_| AsgError::Throttled {
            op: "RecordLifecycleActionHeartbeat",
        }),
    );
    asg.fail(
        AsgOp::Complete,
        [AsgError::Throttled {
            op: "CompleteLifecycleAction",
        }],
    );
    let w = world(asg, FakeTfe::draining_for(60));
    let s = run(&w, &cfg(), noticed(in_service(), Source::Asg)).await;

    let beats = w.asg.beats();
    let gaps: Vec<f64> = beats.windows(2).map(|p| secs(p[0], p[1])).collect();
    // Exponential backoff with jitter: each wait between half its step and the whole step.
    crate::sys::retry::assert_backoff_gaps(&gaps, &[1.0, 2.0, 4.0, 8.0]);
    assert!(
        gaps[4..].iter().all(|g| (9.0..=11.0).contains(g)),
        "back to the interval: {gaps:?}"
    );
    let attempts = w.asg.calls(AsgOp::Complete);
    assert_eq!(attempts.len(), 2, "one throttled attempt, one retry");
    assert!(!attempts[0].ok && attempts[1].ok);
    let retry_after = secs(attempts[0].at, attempts[1].at);
    assert!((0.5..=1.0).contains(&retry_after), "{retry_after}");
    assert_eq!(w.asg.completions().len(), 1);
    assert_eq!(t(&s).hook, released(HookResult::Continue));
}

#[tokio::test(start_paused = true)]
async fn an_action_that_expires_mid_drain_is_recorded_as_resolved_elsewhere() {
    let start = Instant::now();
    let asg = FakeAsg::terminating().expiring_at(start + Duration::from_secs(25));
    let w = world(asg, FakeTfe::draining_for(60));
    let s = run(&w, &cfg(), noticed(in_service(), Source::Asg)).await;
    let beats = w.asg.beats();
    assert!(
        beats.iter().all(|b| secs(start, *b) < 36.0),
        "heartbeats stop once the action is gone: {:?}",
        beats.iter().map(|b| secs(start, *b)).collect::<Vec<_>>()
    );
    assert!(w.asg.completions().is_empty());
    assert_eq!(
        w.asg.calls(AsgOp::Complete).len(),
        1,
        "tried once, found gone"
    );
    assert_eq!(
        t(&s).hook,
        Some(HookOutcome::ResolvedElsewhere {
            state: Some("Terminating:Proceed".into())
        })
    );
    assert_eq!(drain_outcome(&s), DrainOutcome::Drained);
    assert_eq!(s.phase, Phase::Drained);
}

#[tokio::test(start_paused = true)]
async fn a_node_where_tfe_was_never_installed_skips_the_drain() {
    let mut s = states::fresh();
    s.apply(Event::BootStarted).unwrap();
    let s = noticed(s, Source::Asg);
    let w = world(FakeAsg::terminating(), FakeTfe::draining_for(60));
    let s = run(&w, &cfg(), s).await;
    assert_eq!(w.tfe.starts(), 0, "node-drain never started");
    assert_eq!(w.tfe.polls(), 0);
    assert!(w.tfe.app_stops().is_empty());
    assert!(matches!(drain_outcome(&s), DrainOutcome::Skipped { .. }));
    assert_eq!(
        w.asg.completions().iter().map(|c| c.1).collect::<Vec<_>>(),
        [HookResult::Continue]
    );
    assert_eq!(t(&s).hook, released(HookResult::Continue));
    assert_eq!(s.phase, Phase::Drained);
}

#[tokio::test(start_paused = true)]
async fn a_node_whose_launch_was_abandoned_is_not_drained() {
    let mut s = states::fresh();
    s.apply(Event::BootStarted).unwrap();
    s.apply(Event::InstallSucceeded {
        release_sequence: 504,
    })
    .unwrap();
    s.apply(Event::BootFailed).unwrap();
    s.apply(Event::LaunchReleased(Some(HookResult::Abandon)))
        .unwrap();
    let s = noticed(s, Source::Asg);
    let w = world(FakeAsg::terminating(), FakeTfe::draining_for(60));
    let s = run(&w, &cfg(), s).await;
    assert_eq!(w.tfe.starts(), 0, "it never took work");
    assert_eq!(
        drain_outcome(&s),
        DrainOutcome::Skipped {
            why: "the node never entered service".into()
        }
    );
    assert_eq!(t(&s).hook, released(HookResult::Continue));
}

#[tokio::test(start_paused = true)]
async fn a_spot_drain_keeps_to_its_two_minutes_and_releases_no_hook() {
    let start = Instant::now();
    let w = world(
        asg(&[Some("InService")], 30, 3000),
        FakeTfe::draining_for(1000),
    );
    let s = run(&w, &cfg(), noticed(in_service(), Source::Spot)).await;
    let stops = w.tfe.stops();
    assert_eq!(stops.len(), 1);
    assert!(
        (108.9..110.6).contains(&secs(start, stops[0])),
        "{}",
        secs(start, stops[0])
    );
    assert!(matches!(drain_outcome(&s), DrainOutcome::TimedOut { .. }));
    assert!(w.asg.action_calls().is_empty());
    assert_eq!(t(&s).hook, None, "an ASG termination may still follow");
    assert_eq!(s.phase, Phase::Drained, "done as far as a spot notice goes");
    let last_describe = *w.asg.describes().last().unwrap();
    assert!(
        last_describe <= stops[0] + Duration::from_secs(3),
        "the hook side stops looking when the drain ends"
    );

    // With an announced time, that is the limit.
    let start = Instant::now();
    let now = states::now();
    let mut s = in_service();
    s.apply(Event::TerminationNoticed(Notice {
        source: Source::Spot,
        detail: "spot instance-action terminate".into(),
        at: now,
        boot_id: BOOT_A.into(),
        deadline_at: Some(now + 30),
    }))
    .unwrap();
    let w = world(
        asg(&[Some("InService")], 30, 3000),
        FakeTfe::draining_for(1000),
    );
    run(&w, &cfg(), s).await;
    let stopped = secs(start, w.tfe.stops()[0]);
    assert!((28.9..30.6).contains(&stopped), "{stopped}");
}

#[tokio::test(start_paused = true)]
async fn a_spot_drain_holds_a_terminate_action_that_shows_up_meanwhile() {
    let w = world(
        asg(&[Some("InService"), Some("Terminating:Wait")], 30, 3000),
        FakeTfe::draining_for(50),
    );
    let s = run(&w, &cfg(), noticed(in_service(), Source::Spot)).await;
    assert!(!w.asg.beats().is_empty());
    assert_eq!(
        w.asg.completions().iter().map(|c| c.1).collect::<Vec<_>>(),
        [HookResult::Continue]
    );
    assert_eq!(t(&s).hook, released(HookResult::Continue));
    assert_eq!(s.phase, Phase::Drained);
}

#[tokio::test(start_paused = true)]
async fn an_asg_termination_after_an_earlier_drain_still_waits_for_the_wait_state() {
    // A rebalance recommendation drained the node ten minutes ago; now the ASG terminates it.
    let now = states::now();
    let mut s = in_service();
    s.apply(notice_at(Source::Rebalance, now - 600)).unwrap();
    s.apply(Event::DrainStarted(drain_process())).unwrap();
    s.apply(Event::DrainFinished(DrainOutcome::Drained))
        .unwrap();
    s.apply(Event::AppStopped).unwrap();
    s.apply(notice_at(Source::Asg, now)).unwrap();
    assert_eq!(s.phase, Phase::Draining);

    // IMDS says Terminated a moment before DescribeAutoScalingInstances shows the wait state.
    let w = world(
        asg(&[Some("Terminating"), Some("Terminating:Wait")], 30, 3000),
        FakeTfe::draining_for(0),
    );
    let s = run(&w, &cfg(), s).await;
    assert_eq!(w.tfe.starts(), 0, "the node is not drained twice");
    assert_eq!(
        t(&s).hook,
        released(HookResult::Continue),
        "the terminate hook is released, not left to its DefaultResult"
    );
    assert_eq!(w.asg.completions().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_return_to_the_warm_pool_drains_and_releases_the_hook_at_warmed_pending_wait() {
    let asg = asg(&[Some("InService"), Some("Warmed:Pending:Wait")], 30, 3000);
    let w = world(asg, FakeTfe::draining_for(20));
    let s = run(&w, &cfg(), noticed(in_service(), Source::WarmPool)).await;
    assert_eq!(w.tfe.starts(), 1, "node-drain started once");
    let completions = w.asg.completions();
    assert_eq!(completions.len(), 1, "completed once");
    assert_eq!(completions[0].1, HookResult::Continue);
    assert_eq!(t(&s).hook, released(HookResult::Continue));
    assert!(t(&s).is_done());
    // The instance is stopped in the pool and started again later: a new boot serves again.
    assert!(s.resumable("another-boot"));
}
