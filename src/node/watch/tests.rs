//! The watcher against the shared IMDS fake under tokio's paused clock: which notices start a drain,
//! and how many requests each poll costs.

use super::*;
use crate::ports::TokioClock;
use crate::testing::fakes::FakeImds;
use std::time::Duration;

fn cfg() -> TerminationSection {
    TerminationSection::default()
}

async fn within<T>(secs: u64, f: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .ok()
}

#[tokio::test(start_paused = true)]
async fn on_demand_idle_polls_cost_one_request_each() {
    let imds = FakeImds::default();
    imds.set(LIFE_CYCLE, "on-demand");
    imds.set(TARGET, "InService");
    imds.set(MAINTENANCE, "[]");
    let cfg = cfg();
    let mut w = Watcher::new(&imds, &TokioClock, &cfg);
    assert_eq!(within(120, w.next()).await, None);
    let target = imds.requests(TARGET);
    assert!(
        (119..=121).contains(&target),
        "{target} target polls in 120 s"
    );
    let life_cycle = imds.requests(LIFE_CYCLE);
    assert!(
        (24..=25).contains(&life_cycle),
        "{life_cycle}: once per spot interval (the real client caches it)"
    );
    assert_eq!(imds.requests(SPOT_ACTION), 0, "not a spot instance");
    let events = imds.requests(MAINTENANCE);
    assert!(
        (2..=3).contains(&events),
        "{events}: maintenance once a minute"
    );
}

#[tokio::test(start_paused = true)]
async fn target_terminated_fires_once_within_a_poll() {
    let imds = FakeImds::default();
    imds.set(LIFE_CYCLE, "on-demand");
    let cfg = cfg();
    let mut w = Watcher::new(&imds, &TokioClock, &cfg);
    assert_eq!(within(3, w.next()).await, None, "404 = no transition yet");
    imds.set(TARGET, "Terminated");
    let start = Instant::now();
    let seen = w.next().await;
    assert!(start.elapsed() <= Duration::from_secs(1));
    assert_eq!(seen.source, Source::Asg);
    assert_eq!(seen.detail, "IMDS target-lifecycle-state is Terminated");
    assert_eq!(
        within(5, w.next()).await,
        None,
        "the same source never fires twice"
    );
}

#[tokio::test(start_paused = true)]
async fn spot_interruption_carries_its_deadline() {
    let imds = FakeImds::default();
    imds.set(LIFE_CYCLE, "spot");
    imds.set(TARGET, "InService");
    imds.set(
        SPOT_ACTION,
        r#"{"action": "terminate", "time": "2026-11-22T10:02:00Z"}"#,
    );
    let cfg = cfg();
    let mut w = Watcher::new(&imds, &TokioClock, &cfg);
    let seen = w.next().await;
    assert_eq!(seen.source, Source::Spot);
    assert_eq!(
        seen.detail,
        "spot instance-action terminate at 2026-11-22T10:02:00Z"
    );
    assert_eq!(seen.deadline, Some(1_795_341_720));
}

#[tokio::test(start_paused = true)]
async fn rebalance_and_maintenance_drain_only_when_switched_on() {
    let imds = FakeImds::default();
    imds.set(LIFE_CYCLE, "spot");
    imds.set(REBALANCE, r#"{"noticeTime": "2026-11-22T10:00:00Z"}"#);
    imds.set(
        MAINTENANCE,
        r#"[{"Code": "instance-retirement", "EventId": "instance-event-1", "State": "active",
             "NotBefore": "21 Jan 2027 09:00:43 GMT", "Description": "retiring"}]"#,
    );
    let off = cfg();
    let mut w = Watcher::new(&imds, &TokioClock, &off);
    assert_eq!(within(130, w.next()).await, None, "reported, not drained");

    let on = TerminationSection {
        drain_on_rebalance: true,
        drain_on_maintenance: true,
        ..cfg()
    };
    let mut w = Watcher::new(&imds, &TokioClock, &on);
    assert_eq!(w.next().await.source, Source::Rebalance);
    let seen = w.next().await;
    assert_eq!(seen.source, Source::Maintenance);
    assert!(
        seen.detail.contains("instance-retirement"),
        "{}",
        seen.detail
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_maintenance_event_is_ignored() {
    let imds = FakeImds::default();
    imds.set(LIFE_CYCLE, "on-demand");
    imds.set(
        MAINTENANCE,
        r#"[{"Code": "system-reboot", "EventId": "e-2", "State": "canceled"}]"#,
    );
    let on = TerminationSection {
        drain_on_maintenance: true,
        ..cfg()
    };
    let mut w = Watcher::new(&imds, &TokioClock, &on);
    assert_eq!(within(130, w.next()).await, None);
}

#[tokio::test(start_paused = true)]
async fn imds_errors_are_survived() {
    let imds = FakeImds::default();
    imds.set(LIFE_CYCLE, "on-demand");
    imds.set_failing(true);
    let cfg = cfg();
    let mut w = Watcher::new(&imds, &TokioClock, &cfg);
    assert_eq!(within(10, w.next()).await, None);
    assert!(w.last_error.is_some());
    imds.set_failing(false);
    imds.set(TARGET, "Terminated");
    assert_eq!(
        within(2, w.next()).await.map(|s| s.source),
        Some(Source::Asg)
    );
    assert!(w.last_error.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_return_to_service_from_standby_is_handed_out_once() {
    let imds = FakeImds::default();
    imds.set(LIFE_CYCLE, "on-demand");
    imds.set(MAINTENANCE, "[]");
    imds.set(TARGET, "InService");
    let cfg = cfg();
    let mut w = Watcher::new(&imds, &TokioClock, &cfg);
    assert_eq!(
        within(5, w.next_change()).await,
        None,
        "InService from the start is no change"
    );
    imds.set(TARGET, "Standby");
    assert_eq!(
        within(5, w.next_change()).await,
        None,
        "standby drains nothing"
    );
    imds.set(TARGET, "InService");
    assert_eq!(
        within(5, w.next_change()).await,
        Some(Change::BackInService {
            from: "Standby".into()
        })
    );
    assert_eq!(within(5, w.next_change()).await, None, "once per return");
}

#[tokio::test(start_paused = true)]
async fn a_scale_in_back_into_the_warm_pool_starts_a_drain_but_a_warm_start_does_not() {
    let imds = FakeImds::default();
    imds.set(LIFE_CYCLE, "on-demand");
    imds.set(MAINTENANCE, "[]");
    // An instance launched into the pool sees a warm state first: nothing to drain.
    imds.set(TARGET, "Warmed:Stopped");
    let cfg = cfg();
    let mut w = Watcher::new(&imds, &TokioClock, &cfg);
    assert_eq!(within(5, w.next_change()).await, None);
    imds.set(TARGET, "InService");
    assert!(matches!(
        within(5, w.next_change()).await,
        Some(Change::BackInService { .. })
    ));
    imds.set(TARGET, "Warmed:Stopped");
    let Some(Change::Drain(seen)) = within(5, w.next_change()).await else {
        panic!("no drain on the return to the warm pool")
    };
    assert_eq!(seen.source, Source::WarmPool);
    assert!(seen.detail.contains("Warmed:Stopped"), "{}", seen.detail);
}
