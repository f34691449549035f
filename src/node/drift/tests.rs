//! The drift loop on the fake TFE tools under tokio's paused clock.

use super::*;
use crate::model::drift::DriftKind;
use crate::testing::fakes::{FakeTfe, Recorded};
use crate::testing::{self, states};
use std::time::Duration;

fn node() -> TfeConfig {
    testing::tfe_config(testing::EXAMPLE_CONFIG, testing::valid_shared(), vec![]).unwrap()
}

/// TFE runs exactly what was rendered.
fn live_as_rendered(tfe: &FakeTfe, node: &TfeConfig) {
    for (k, v) in &node.settings {
        tfe.set_live(k, v.expose());
    }
}

fn drift_of(rec: &Recorded) -> Option<DriftStatus> {
    let view = rec.recorder.subscribe().borrow().clone();
    view.drift.map(|d| serde_json::from_value(d).unwrap())
}

#[tokio::test(start_paused = true)]
async fn compares_once_at_once_then_once_per_interval_and_shows_the_report() {
    let rec = Recorded::new(states::in_service());
    let mut cfg = rec.settings();
    cfg.drift.interval = Duration::from_secs(300);
    let node = node();
    let tfe = FakeTfe::ready();
    live_as_rendered(&tfe, &node);
    let drift = run_drift(
        &tfe,
        &cfg,
        &node,
        rec.recorder.subscribe(),
        rec.recorder.publisher(),
    );
    tokio::pin!(drift);
    let run_for = |d: u64| tokio::time::sleep(Duration::from_secs(d));
    tokio::select! { _ = &mut drift => panic!("ended"), _ = run_for(1) => {} }
    assert_eq!(tfe.probes("app-config export"), 1, "once right away");
    let first = drift_of(&rec).expect("published");
    assert_eq!(first.report.as_ref().map(|r| r.drifted), Some(false));

    tfe.set_live("capacity_concurrency", "20");
    tokio::select! { _ = &mut drift => panic!("ended"), _ = run_for(298) => {} }
    assert_eq!(
        tfe.probes("app-config export"),
        1,
        "not before the interval"
    );
    tokio::select! { _ = &mut drift => panic!("ended"), _ = run_for(2) => {} }
    assert_eq!(tfe.probes("app-config export"), 2);
    let report = drift_of(&rec).unwrap().report.unwrap();
    assert!(report.drifted);
    // The example config does not render capacity_concurrency: TFE runs with one more key.
    assert_eq!(report.counts.of(DriftKind::Added), 1, "{report:?}");
    let key = &report.keys[0];
    assert_eq!(key.key, "capacity_concurrency");
    assert_eq!(key.live.as_deref(), Some("20"));
}

#[tokio::test(start_paused = true)]
async fn pauses_while_the_node_drains_and_goes_on_after_an_app_restart() {
    use crate::model::lifecycle::{DrainOutcome, Event, Source};
    let rec = Recorded::new(states::noticed(
        states::in_service(),
        states::notice(Source::Operator, states::now()),
    ));
    let mut cfg = rec.settings();
    cfg.drift.interval = Duration::from_secs(60);
    let node = node();
    let tfe = FakeTfe::ready();
    live_as_rendered(&tfe, &node);
    let drift = run_drift(
        &tfe,
        &cfg,
        &node,
        rec.recorder.subscribe(),
        rec.recorder.publisher(),
    );
    tokio::pin!(drift);
    let run_for = |d: u64| tokio::time::sleep(Duration::from_secs(d));
    tokio::select! { _ = &mut drift => panic!("ended"), _ = run_for(600) => {} }
    assert_eq!(tfe.probes("app-config export"), 0, "not while draining");

    // The operator's drain ended and `app restart` brought the node back: compared at once.
    for event in [
        Event::DrainStarted(states::drain_process()),
        Event::DrainFinished(DrainOutcome::Drained),
        Event::Restored,
    ] {
        rec.recorder.record(event).unwrap();
    }
    tokio::select! { _ = &mut drift => panic!("ended"), _ = run_for(1) => {} }
    assert_eq!(tfe.probes("app-config export"), 1);
    assert_eq!(
        drift_of(&rec).and_then(|d| d.report).map(|r| r.drifted),
        Some(false)
    );
    tokio::select! { _ = &mut drift => panic!("ended"), _ = run_for(60) => {} }
    assert_eq!(tfe.probes("app-config export"), 2, "every interval again");
}

#[tokio::test(start_paused = true)]
async fn is_off_when_disabled() {
    let node = node();
    let tfe = FakeTfe::ready();
    let rec = Recorded::new(states::in_service());
    let mut cfg = rec.settings();
    cfg.drift.enabled = false;
    testing::fakes::within(
        Duration::from_secs(1),
        run_drift(
            &tfe,
            &cfg,
            &node,
            rec.recorder.subscribe(),
            rec.recorder.publisher(),
        ),
    )
    .await;
    assert_eq!(tfe.probes("app-config export"), 0);
    assert!(drift_of(&rec).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_changed_secret_is_found_by_digest_and_never_shown() {
    let rec = Recorded::new(states::in_service());
    let cfg = rec.settings();
    let node = node();
    let tfe = FakeTfe::ready();
    live_as_rendered(&tfe, &node);
    tfe.set_live("enc_password", "a-new-enc-password-0123");
    let drift = run_drift(
        &tfe,
        &cfg,
        &node,
        rec.recorder.subscribe(),
        rec.recorder.publisher(),
    );
    tokio::select! { _ = drift => panic!("ended"), _ = tokio::time::sleep(Duration::from_secs(1)) => {} }
    let status = rec.recorder.subscribe().borrow().drift.clone().unwrap();
    let text = status.to_string();
    assert!(text.contains("enc_password"), "{text}");
    let old = node.settings["enc_password"].expose();
    for value in [old, "a-new-enc-password-0123"] {
        assert!(!text.contains(value), "{text}");
    }
    // The membership loop gets the live value, to fingerprint it.
    let live = rec.recorder.live_values().borrow().clone().unwrap();
    assert_eq!(live["enc_password"].expose(), "a-new-enc-password-0123");
}

#[tokio::test(start_paused = true)]
async fn a_failed_export_is_shown_beside_the_last_report() {
    let rec = Recorded::new(states::in_service());
    let cfg = rec.settings();
    let node = node();
    let tfe = FakeTfe::ready();
    live_as_rendered(&tfe, &node);
    tfe.script_export([
        Ok(LiveSettings::default()),
        Err(ToolError::Failed {
            command: "replicatedctl app-config export --hidden".into(),
            detail: "exited with 1: Error: daemon not running".into(),
        }),
    ]);
    let drift = run_drift(
        &tfe,
        &cfg,
        &node,
        rec.recorder.subscribe(),
        rec.recorder.publisher(),
    );
    tokio::select! { _ = drift => panic!("ended"), _ = tokio::time::sleep(cfg.drift.interval + Duration::from_secs(1)) => {} }
    let status = drift_of(&rec).unwrap();
    assert!(status.error.unwrap().contains("daemon not running"));
    let report = status.report.expect("the last report stays");
    assert!(report.counts.missing > 0, "nothing was live: {report:?}");
}

#[test]
fn the_log_says_each_change_once() {
    let mut tracker = Tracker::default();
    let clean = DriftReport::default();
    let mut drifted = clean.clone();
    drifted.drifted = true;
    drifted.counts.changed = 1;
    drifted.keys.push(drift::DriftedKey {
        key: "capacity_concurrency".into(),
        kind: DriftKind::Changed,
        secret: false,
        desired: Some("10".into()),
        live: Some("20".into()),
    });
    let said: Vec<_> = [
        Ok(&clean),
        Ok(&clean),
        Ok(&drifted),
        Ok(&drifted),
        Err("export failed"),
        Err("export failed"),
        Ok(&drifted),
        Ok(&clean),
        Ok(&clean),
    ]
    .into_iter()
    .map(|o| tracker.news(o).map(|(level, _)| level))
    .collect();
    use log::Level::{Info, Warn};
    assert_eq!(
        said,
        [
            Some(Info),
            None,
            Some(Warn),
            None,
            Some(Warn),
            None,
            Some(Info),
            Some(Info),
            None
        ]
    );
    assert_eq!(tracker.last(), Some(&clean));
}
