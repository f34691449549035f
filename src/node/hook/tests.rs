//! Heartbeat and release logic against the shared Auto Scaling fake, under tokio's paused clock.
//! The fake enforces what matters here: calls after completion get "No active Lifecycle Action",
//! and scripted throttling.

use super::*;
use crate::ports::TokioClock;
use crate::testing::fakes::{AsgOp, FakeAsg, LAUNCH_HOOK};
use tokio::time::Instant;

/// Waiting on the launch hook, in group "g".
fn waiting() -> FakeAsg {
    FakeAsg::launching().in_group("g")
}

fn info(hook: &str, timeout: u64) -> HookInfo {
    HookInfo {
        name: hook.into(),
        transition: Transition::Launching,
        heartbeat_timeout: Duration::from_secs(timeout),
        global_timeout: Duration::from_secs(timeout * 100),
        default_result: "ABANDON".into(),
    }
}

fn active(timeout: u64) -> ActiveHook {
    ActiveHook {
        action: HookAction {
            group: "g".into(),
            hook: LAUNCH_HOOK.into(),
            instance_id: "i-1".into(),
        },
        info: info(LAUNCH_HOOK, timeout),
        warm_pool: false,
    }
}

#[test]
fn interval_is_a_third_of_the_timeout_within_bounds() {
    assert_eq!(
        heartbeat_interval(Duration::from_secs(30)),
        Duration::from_secs(10)
    );
    assert_eq!(
        heartbeat_interval(Duration::from_secs(7200)),
        Duration::from_secs(600)
    );
    assert_eq!(
        heartbeat_interval(Duration::from_secs(1)),
        Duration::from_millis(500)
    );
}

#[tokio::test(start_paused = true)]
async fn heartbeats_keep_the_action_alive_for_as_long_as_the_work_runs() {
    let asg = waiting();
    let start = Instant::now();
    let out = hold_while(&asg, &TokioClock, &active(30), async {
        tokio::time::sleep(Duration::from_secs(95)).await;
        7
    })
    .await;
    assert_eq!(out, 7);
    let beats = asg.beats();
    assert_eq!(beats[0], start, "the first beat goes out at once");
    // Never more than HeartbeatTimeout between beats (or since the start), across the whole run.
    for pair in beats.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_secs(9) && gap <= Duration::from_secs(11),
            "{gap:?}"
        );
    }
    assert!(start + Duration::from_secs(95) - *beats.last().unwrap() < Duration::from_secs(30));
    let n = beats.len();
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(asg.beats().len(), n, "no heartbeat after the work finished");
}

#[tokio::test(start_paused = true)]
async fn throttled_heartbeats_back_off_and_recover() {
    let asg = waiting();
    asg.fail(
        AsgOp::Heartbeat,
        (0..3).map(|_| AsgError::Throttled {
            op: "RecordLifecycleActionHeartbeat",
        }),
    );
    hold_while(
        &asg,
        &TokioClock,
        &active(30),
        tokio::time::sleep(Duration::from_secs(20)),
    )
    .await;
    let beats = asg.beats();
    let gaps: Vec<_> = beats
        .windows(2)
        .map(|p| (p[1] - p[0]).as_secs_f64())
        .collect();
    // Exponential backoff with jitter: each wait between half its step and the whole step.
    crate::sys::retry::assert_backoff_gaps(&gaps, &[1.0, 2.0, 4.0]);
    assert!(
        gaps[3] >= 9.0,
        "back to the normal interval after a success: {gaps:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_action_that_is_gone_stops_the_heartbeats_but_not_the_work() {
    let asg = waiting();
    asg.resolve_elsewhere(HookResult::Abandon);
    let out = hold_while(&asg, &TokioClock, &active(30), async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        "done"
    })
    .await;
    assert_eq!(out, "done");
    assert_eq!(asg.beats().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn release_retries_transient_failures_then_completes_once() {
    let asg = waiting();
    asg.fail(
        AsgOp::Complete,
        [
            AsgError::Throttled {
                op: "CompleteLifecycleAction",
            },
            AsgError::Call {
                op: "CompleteLifecycleAction",
                detail: "503".into(),
            },
        ],
    );
    let r = release(
        &asg,
        &TokioClock,
        &active(30).action,
        HookResult::Continue,
        Instant::now() + Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(r, Released::Completed(HookResult::Continue));
    assert_eq!(asg.calls(AsgOp::Complete).len(), 3);
    assert_eq!(asg.completed(), Some(HookResult::Continue));
}

#[tokio::test(start_paused = true)]
async fn release_gives_up_at_its_deadline_and_reports_resolved_actions() {
    let asg = waiting();
    asg.fail(
        AsgOp::Complete,
        (0..20).map(|_| AsgError::Call {
            op: "CompleteLifecycleAction",
            detail: "503".into(),
        }),
    );
    let start = Instant::now();
    assert!(release(
        &asg,
        &TokioClock,
        &active(30).action,
        HookResult::Abandon,
        start + Duration::from_secs(10),
    )
    .await
    .is_err());
    let tries = asg.calls(AsgOp::Complete);
    assert!(
        tries.len() >= 3 && tries.len() <= 5,
        "{} tries within 10 s",
        tries.len()
    );
    assert!(Instant::now() - start <= Duration::from_secs(10));
    asg.clear_failures(AsgOp::Complete);
    asg.resolve_elsewhere(HookResult::Abandon);
    asg.set_state("Terminating:Wait");
    let r = release(
        &asg,
        &TokioClock,
        &active(30).action,
        HookResult::Continue,
        Instant::now() + Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(
        r,
        Released::AlreadyResolved {
            state: Some("Terminating:Wait".into())
        }
    );
}

#[tokio::test]
async fn discovery_distinguishes_wait_states() {
    let asg = waiting();
    assert_eq!(
        discover_launch(&asg, "i-1", None).await.unwrap(),
        LaunchHook::NotConfigured
    );
    let LaunchHook::Active(h) = discover_launch(&asg, "i-1", Some("tfe-launch"))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(!h.warm_pool);
    asg.set_state("Warmed:Pending:Wait");
    let LaunchHook::Active(h) = discover_launch(&asg, "i-1", Some("tfe-launch"))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(h.warm_pool);
    asg.set_state("InService");
    assert_eq!(
        discover_launch(&asg, "i-1", Some("tfe-launch"))
            .await
            .unwrap(),
        LaunchHook::NotWaiting {
            group: "g".into(),
            state: "InService".into()
        }
    );
}

#[tokio::test(start_paused = true)]
async fn discovery_retries_transient_failures_with_growing_waits_then_finds_the_hook() {
    let asg = waiting();
    asg.fail(
        AsgOp::DescribeInstance,
        (0..4).map(|_| AsgError::Throttled {
            op: "DescribeAutoScalingInstances",
        }),
    );
    let found = discover_launch_until(
        &asg,
        &TokioClock,
        "i-1",
        Some("tfe-launch"),
        Instant::now() + Duration::from_secs(600),
    )
    .await
    .unwrap();
    assert!(matches!(found, LaunchHook::Active(_)), "{found:?}");
    let tries = asg.describes();
    assert_eq!(tries.len(), 5);
    let gaps: Vec<_> = tries
        .windows(2)
        .map(|p| (p[1] - p[0]).as_secs_f64())
        .collect();
    crate::sys::retry::assert_backoff_gaps(&gaps, &[1.0, 2.0, 4.0, 8.0]);
}

#[tokio::test(start_paused = true)]
async fn discovery_gives_up_at_its_budget_and_a_refusal_at_once() {
    let asg = waiting();
    asg.fail(
        AsgOp::DescribeInstance,
        (0..100).map(|_| AsgError::Call {
            op: "DescribeAutoScalingInstances",
            detail: "dispatch failure: connection reset".into(),
        }),
    );
    let start = Instant::now();
    let (error, tries) = discover_launch_until(
        &asg,
        &TokioClock,
        "i-1",
        Some("tfe-launch"),
        start + Duration::from_secs(60),
    )
    .await
    .unwrap_err();
    assert!(error.is_transient());
    assert!(Instant::now() - start <= Duration::from_secs(60));
    // Steps 1, 2, 4, 8, 16, 30, 30 s, each wait between half and all of its step: with the
    // longest waits the sixth try is the last (31 s + 30 s would pass the minute), with the
    // shortest the eighth (45.5 s + 15 s would).
    assert!((6..=8).contains(&tries), "{tries} tries");

    asg.clear_failures(AsgOp::DescribeInstance);
    asg.fail(
        AsgOp::DescribeInstance,
        [AsgError::Rejected {
            op: "DescribeAutoScalingInstances",
            detail: "AccessDenied".into(),
        }],
    );
    let before = asg.describes().len();
    let (error, tries) = discover_launch_until(
        &asg,
        &TokioClock,
        "i-1",
        Some("tfe-launch"),
        Instant::now() + Duration::from_secs(60),
    )
    .await
    .unwrap_err();
    assert!(!error.is_transient());
    assert_eq!(tries, 1);
    assert_eq!(asg.describes().len(), before + 1);
}
