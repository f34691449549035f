//! Preflight on the fake probes under tokio's paused clock: what was probed with which settings,
//! that the checks run at once and each within its limit, the skips, and the boot's gate.

use super::*;
use crate::model::asg::HookResult;
use crate::model::lifecycle::Phase;
use crate::node::boot::{boot, BootError};
use crate::testing::fakes::{self, FakeProbes, FakeSecrets, FakeWorld, Recorded};
use crate::testing::states;

fn settings(rec: &Recorded) -> Settings {
    let mut cfg = rec.settings();
    cfg.preflight.enabled = true;
    // The fake license is a three-byte placeholder: judged in the model's own tests.
    cfg.preflight.skip = vec![CheckId::License];
    cfg
}

async fn before(w: &FakeWorld, cfg: &Settings) -> Report {
    let node = crate::tfe_files::load(w.secrets(), w.clock(), cfg)
        .await
        .expect("the fake secrets are valid");
    before_install(w, cfg, &node, states::INSTANCE).await
}

fn check(report: &Report, id: CheckId) -> &CheckResult {
    report
        .checks
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no {id} in {report:?}"))
}

#[tokio::test(start_paused = true)]
async fn every_dependency_is_probed_with_the_settings_tfe_uses_all_at_once() {
    let w = fakes::world()
        .probes(
            FakeProbes::default()
                .slow("redis", Duration::from_secs(3))
                .slow("postgres", Duration::from_secs(3))
                .slow("object_storage", Duration::from_secs(2)),
        )
        .build();
    let rec = Recorded::new(states::fresh());
    let cfg = settings(&rec);

    let report = before(&w, &cfg).await;

    let ids: Vec<CheckId> = report.checks.iter().map(|c| c.id).collect();
    assert_eq!(
        ids,
        &CheckId::ALL[..8],
        "every check before install, in order"
    );
    assert!(report.passed(), "{}", report.table());
    assert_eq!(
        report.duration,
        Duration::from_secs(3),
        "at once: the slowest, not the sum"
    );
    assert_eq!(check(&report, CheckId::Redis).target, "redis.internal:6379");
    assert_eq!(check(&report, CheckId::Postgres).target, "db.internal:5432");
    assert_eq!(
        check(&report, CheckId::ObjectStorage).target,
        "s3://tfe-data"
    );
    assert_eq!(check(&report, CheckId::License).verdict, Verdict::Skipped);
    // install.sh installs Docker unless told otherwise.
    assert_eq!(check(&report, CheckId::Docker).verdict, Verdict::Skipped);
    assert_eq!(check(&report, CheckId::Clock).verdict, Verdict::Pass);
    let calls = w.probes.calls();
    for probe in [
        "redis redis.internal:6379",
        "postgres db.internal:5432",
        "object_storage tfe-data",
        "disk /var/lib/docker",
        "imds",
    ] {
        assert!(calls.iter().any(|c| c == probe), "{probe} not in {calls:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_black_holed_dependency_fails_at_its_check_timeout_naming_it() {
    let w = fakes::world()
        .probes(FakeProbes::default().slow("postgres", Duration::from_secs(600)))
        .build();
    let rec = Recorded::new(states::fresh());
    let cfg = settings(&rec);

    let report = before(&w, &cfg).await;

    assert_eq!(report.duration, cfg.preflight.check_timeout);
    let pg = check(&report, CheckId::Postgres);
    assert_eq!(pg.verdict, Verdict::Fail);
    assert_eq!(
        pg.detail,
        "db.internal:5432: no answer within 5s ([preflight].check_timeout)"
    );
    assert_eq!(report.failed_ids(), "postgres");
}

#[tokio::test(start_paused = true)]
async fn skipped_checks_are_not_probed_and_the_whole_run_is_bounded_by_its_timeout() {
    let w = fakes::world()
        .probes(FakeProbes::default().slow("object_storage", Duration::from_secs(600)))
        .build();
    let rec = Recorded::new(states::fresh());
    let mut cfg = settings(&rec);
    cfg.preflight.skip = vec![
        CheckId::License,
        CheckId::Redis,
        CheckId::Imds,
        CheckId::Clock,
    ];
    cfg.preflight.check_timeout = Duration::from_secs(20);
    cfg.preflight.timeout = Duration::from_secs(8);

    let report = before(&w, &cfg).await;

    for id in [CheckId::Redis, CheckId::Imds, CheckId::Clock] {
        assert_eq!(check(&report, id).verdict, Verdict::Skipped);
        assert_eq!(check(&report, id).detail, "skipped by [preflight].skip");
    }
    let calls = w.probes.calls();
    assert!(
        !calls.iter().any(|c| c.starts_with("redis") || c == "imds"),
        "{calls:?}"
    );
    assert_eq!(
        report.duration,
        Duration::from_secs(8),
        "the run's timeout binds"
    );
    assert_eq!(
        check(&report, CheckId::ObjectStorage).verdict,
        Verdict::Fail
    );
}

#[tokio::test(start_paused = true)]
async fn disk_and_clock_are_judged_and_a_silent_imds_leaves_the_clock_unjudged() {
    let w = fakes::world()
        .probes(
            FakeProbes::default()
                .free_bytes(2 << 30)
                .clock_ahead_ms(-90_000),
        )
        .build();
    let rec = Recorded::new(states::fresh());
    let cfg = settings(&rec);
    let report = before(&w, &cfg).await;
    let disk = check(&report, CheckId::Disk);
    assert_eq!(disk.verdict, Verdict::Fail, "2 GiB under /var/lib/docker");
    assert!(
        disk.detail
            .starts_with("/var/lib/docker has 2.0 GiB free, needs at least 10 GiB"),
        "{}",
        disk.detail
    );
    assert_eq!(check(&report, CheckId::Clock).verdict, Verdict::Fail);

    let w = fakes::world()
        .probes(FakeProbes::default().failing("imds", "connection refused"))
        .build();
    let report = before(&w, &cfg).await;
    let imds = check(&report, CheckId::Imds);
    assert_eq!(imds.verdict, Verdict::Fail);
    assert_eq!(imds.detail, "instance metadata fake:1: connection refused");
    assert_eq!(check(&report, CheckId::Clock).verdict, Verdict::Skipped);
}

#[tokio::test(start_paused = true)]
async fn docker_is_checked_when_install_sh_is_told_not_to_install_it() {
    let w = fakes::world()
        .probes(FakeProbes::default().failing("docker", "no socket"))
        .build();
    let rec = Recorded::new(states::fresh());
    let mut cfg = settings(&rec);
    cfg.install.extra_args = vec!["no_docker".into()];
    let report = before(&w, &cfg).await;
    let docker = check(&report, CheckId::Docker);
    assert_eq!(docker.verdict, Verdict::Fail);
    assert_eq!(docker.target, "/var/run/docker.sock");
}

#[tokio::test(start_paused = true)]
async fn after_install_the_admin_ui_must_be_off_and_every_live_peer_reachable() {
    let ui = "127.0.0.1:8800";
    let rec = Recorded::new(states::fresh());
    let cfg = settings(&rec);
    let answers = [
        (None, Verdict::Pass),
        (
            Some(PortAnswer::Open {
                http_status: Some(502),
            }),
            Verdict::Pass,
        ),
        (
            Some(PortAnswer::Open {
                http_status: Some(200),
            }),
            Verdict::Fail,
        ),
        (Some(PortAnswer::Open { http_status: None }), Verdict::Fail),
    ];
    for (answer, want) in answers {
        let mut probes = FakeProbes::default();
        if let Some(a) = answer.clone() {
            probes = probes.port_answers(ui, a);
        }
        let w = fakes::world().probes(probes).build();
        let report = after_install(&w, &cfg, None).await;
        assert_eq!(check(&report, CheckId::AdminUi).verdict, want, "{answer:?}");
        assert_eq!(
            check(&report, CheckId::VaultPeers).detail,
            "no cluster view"
        );
    }

    let peers = ["10.0.0.6".to_string(), "10.0.0.7".to_string()];
    let w = fakes::world()
        .probes(
            FakeProbes::default()
                .port_answers("10.0.0.6:8201", PortAnswer::Open { http_status: None }),
        )
        .build();
    let report = after_install(&w, &cfg, Some(&peers)).await;
    let vault = check(&report, CheckId::VaultPeers);
    assert_eq!(vault.verdict, Verdict::Fail);
    assert_eq!(
        vault.detail,
        "Vault HA port 8201 not reachable: 10.0.0.7:8201 refused"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_preflight_stops_a_first_install_before_any_file_and_abandons_the_launch() {
    let w = fakes::world()
        .probes(FakeProbes::default().failing("redis", "AUTH failed: wrong password"))
        .build();
    let rec = Recorded::new(states::fresh());
    let cfg = settings(&rec);

    let result = fakes::within(
        Duration::from_secs(600),
        boot(&w, &cfg, &fakes::identity(), &rec.recorder),
    )
    .await;

    let Err(BootError::Preflight(failed)) = &result else {
        panic!("the boot must fail its preflight: {result:?}")
    };
    assert_eq!(failed.stage, Stage::BeforeInstall);
    assert_eq!(
        crate::error_chain(failed),
        "preflight failed before install.sh: redis (redis.internal:6379): fake:1: AUTH failed: wrong password"
    );
    assert!(w.tfe.installs().is_empty(), "install.sh never ran");
    assert!(!cfg.paths.replicated_conf.exists(), "no file written");
    assert!(!cfg.paths.settings.exists(), "no file written");
    let completions = w.asg.completions();
    assert_eq!(completions.len(), 1);
    assert_eq!(completions[0].1, cfg.lifecycle.on_failure.hook_result());
    assert_eq!(rec.recorder.phase(), Phase::BootFailed);
    let view = rec.recorder.subscribe().borrow().clone();
    let report = view.preflight.expect("the report is in /status");
    assert_eq!(report.failed_ids(), "redis");
    assert_eq!(HookResult::Abandon, cfg.lifecycle.on_failure.hook_result());
}

#[tokio::test(start_paused = true)]
async fn a_failed_preflight_only_warns_on_a_node_tfe_was_installed_on_before() {
    let w = fakes::world()
        .secrets(FakeSecrets::valid())
        .probes(FakeProbes::default().failing("redis", "connection refused"))
        .build();
    let rec = Recorded::new(states::installed());
    let cfg = settings(&rec);

    let result = fakes::within(
        Duration::from_secs(600),
        boot(&w, &cfg, &fakes::identity(), &rec.recorder),
    )
    .await;

    assert!(result.is_ok(), "{result:?}");
    assert!(w.tfe.installs().is_empty());
    let view = rec.recorder.subscribe().borrow().clone();
    let report = view.preflight.expect("the report is in /status");
    assert_eq!(report.failed_ids(), "redis");
    assert!(
        report.checks.iter().any(|c| c.id == CheckId::AdminUi),
        "the checks after install joined the report: {report:?}"
    );
}
