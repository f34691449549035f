//! `app restart` on the fakes under tokio's paused clock.

use super::*;
use crate::model::lifecycle::{DrainOutcome, NodeState, Phase, Source};
use crate::testing::fakes::{self, FakeTfe, Recorded};
use crate::testing::states::{self, drain_process, in_service};

fn drained_by_operator() -> NodeState {
    let mut s = states::noticed(
        in_service(),
        states::notice(Source::Operator, states::now()),
    );
    s.apply(Event::DrainStarted(drain_process())).unwrap();
    s.apply(Event::DrainFinished(DrainOutcome::Drained))
        .unwrap();
    s.apply(Event::AppStopped).unwrap();
    s
}

#[tokio::test(start_paused = true)]
async fn after_an_operators_drain_the_restart_brings_the_node_back_in_service() {
    let w = fakes::world().tfe(FakeTfe::ready()).build();
    let rec = Recorded::new(drained_by_operator());
    let cfg = rec.settings();
    let view = rec.recorder.subscribe();
    restart_app(&w, &cfg, &rec.recorder, "alice (uid 0)".into())
        .await
        .unwrap();
    assert_eq!(w.tfe.app_stops().len(), 1, "the app is stopped first");
    assert_eq!(w.tfe.app_starts().len(), 1);
    assert!(w.tfe.app_stops()[0] < w.tfe.app_starts()[0]);
    let s = rec.recorder.snapshot();
    assert_eq!(s.phase, Phase::InService);
    assert_eq!(s.termination, None);
    assert_eq!(rec.on_disk(), s, "recorded");
    let v = view.borrow();
    assert!(v.is_ready(), "{:?}", v.readiness());
    assert_eq!(v.app_restart.as_ref().unwrap().step, RestartStep::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn a_restart_that_never_gets_ready_ends_at_the_readiness_timeout_and_keeps_readyz_503() {
    let w = fakes::world()
        .tfe(FakeTfe::ready().with_readiness(fakes::Readiness::Never))
        .build();
    let rec = Recorded::new(in_service());
    let cfg = rec.settings();
    let start = tokio::time::Instant::now();
    let err = restart_app(&w, &cfg, &rec.recorder, "bob (uid 0)".into())
        .await
        .unwrap_err();
    assert!(matches!(err, RestartError::Readiness(_)), "{err}");
    assert!(tokio::time::Instant::now() - start <= cfg.readiness.timeout + Duration::from_secs(10));
    let v = rec.recorder.subscribe().borrow().clone();
    assert_eq!(v.app_restart.as_ref().unwrap().step, RestartStep::NotReady);
    assert_eq!(rec.recorder.phase(), Phase::InService);
    assert!(v.last_error.is_some());
}
