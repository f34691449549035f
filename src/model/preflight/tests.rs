use super::*;

#[test]
fn every_id_parses_back_and_only_two_wait_for_install() {
    for id in CheckId::ALL {
        assert_eq!(CheckId::parse(id.as_str()), Some(id));
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", id.as_str()));
    }
    assert_eq!(CheckId::parse("host"), None);
    let after: Vec<CheckId> = CheckId::ALL
        .into_iter()
        .filter(|c| !c.before_install())
        .collect();
    assert_eq!(after, [CheckId::AdminUi, CheckId::VaultPeers]);
}

#[test]
fn disk_thresholds_fail_warn_and_pass_at_their_edges() {
    let need = DISK_NEEDS[0];
    assert_eq!(judge_disk(&need, need.fail_below - 1).0, Verdict::Fail);
    assert_eq!(judge_disk(&need, need.fail_below).0, Verdict::Warn);
    assert_eq!(judge_disk(&need, need.warn_below - 1).0, Verdict::Warn);
    assert_eq!(judge_disk(&need, need.warn_below).0, Verdict::Pass);
    let (_, line) = judge_disk(&need, 3 << 30);
    assert_eq!(
        line,
        "/var/lib/docker has 3.0 GiB free, needs at least 10 GiB for Docker's images and containers (TFE's images take about 10 GiB)"
    );
}

#[test]
fn clock_skew_is_judged_either_way_with_a_second_of_noise_forgiven() {
    assert_eq!(judge_clock(0).0, Verdict::Pass);
    assert_eq!(judge_clock(-999).0, Verdict::Pass);
    assert_eq!(judge_clock(5_000).0, Verdict::Pass);
    assert_eq!(judge_clock(5_001).0, Verdict::Warn);
    assert_eq!(judge_clock(-60_001).0, Verdict::Fail);
    let (_, line) = judge_clock(-90_000);
    assert!(
        line.starts_with(
            "this node's clock is 90.0s behind the metadata service's (more than 60s fails)"
        ),
        "{line}"
    );
}

#[test]
fn a_report_tables_every_check_and_names_the_failed_ones() {
    let mut redis = CheckResult::new(
        CheckId::Redis,
        "10.0.0.9:6379",
        Verdict::Fail,
        "redis 10.0.0.9:6379: AUTH failed: WRONGPASS",
    );
    redis.duration = Duration::from_millis(12);
    let report = Report {
        checks: vec![
            redis,
            CheckResult::new(
                CheckId::Postgres,
                "db:5432",
                Verdict::Pass,
                "PostgreSQL 15.18",
            ),
            CheckResult::skipped(CheckId::License, "skipped by [preflight].skip"),
        ],
        duration: Duration::from_millis(15),
    };
    assert!(!report.passed());
    assert_eq!(report.failed_ids(), "redis");
    let table = report.table();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    assert!(lines[0].starts_with("CHECK"), "{table}");
    assert!(
        lines[1].starts_with("redis ")
            && lines[1].contains(" fail ")
            && lines[1].contains("0.012s"),
        "{table}"
    );
    assert!(lines[3].contains("skipped"), "{table}");
    assert_eq!(lines[4], "3 checks in 0.015s: failed: redis");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["checks"][0]["verdict"], "fail");
    assert_eq!(json["checks"][0]["duration"], 0.012);
}
