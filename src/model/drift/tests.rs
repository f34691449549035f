use super::*;

fn live(pairs: &[(&str, &str)]) -> LiveSettings {
    LiveSettings {
        values: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Secret::new(*v)))
            .collect(),
    }
}

fn plain(value: &str) -> Desired<'_> {
    Desired {
        value,
        secret: false,
    }
}

fn secret(value: &str) -> Desired<'_> {
    Desired {
        value,
        secret: true,
    }
}

#[test]
fn equal_settings_are_no_drift() {
    let desired = [
        ("capacity_concurrency", plain("10")),
        ("enc_password", secret("s3cr3t")),
    ];
    let report = compare(
        desired,
        &live(&[("capacity_concurrency", "10"), ("enc_password", "s3cr3t")]),
        &Allowlist::default(),
    );
    assert_eq!(report, DriftReport::default());
    assert!(!report.drifted);
}

#[test]
fn each_kind_is_found_and_counted_by_key() {
    let desired = [
        ("capacity_concurrency", plain("10")),
        ("hostname", plain("tfe.example.com")),
    ];
    let report = compare(
        desired,
        &live(&[("capacity_concurrency", "20"), ("force_tls", "1")]),
        &Allowlist::default(),
    );
    assert!(report.drifted);
    assert_eq!(
        report.counts,
        DriftCounts {
            added: 1,
            changed: 1,
            missing: 1
        }
    );
    let changed = &report.keys[0];
    assert_eq!(
        (changed.key.as_str(), changed.kind),
        ("capacity_concurrency", DriftKind::Changed)
    );
    assert_eq!(changed.desired.as_deref(), Some("10"));
    assert_eq!(changed.live.as_deref(), Some("20"));
    assert_eq!(report.keys[1].kind, DriftKind::Added);
    assert_eq!(report.keys[1].live.as_deref(), Some("1"));
    assert_eq!(report.keys[2].kind, DriftKind::Missing);
    assert_eq!(report.keys[2].desired.as_deref(), Some("tfe.example.com"));
}

#[test]
fn a_changed_secret_is_named_and_its_values_appear_nowhere() {
    let desired = [("enc_password", secret("old-value-1234"))];
    let report = compare(
        desired,
        &live(&[
            ("enc_password", "new-value-5678"),
            ("redis_pass", "added-9999"),
        ]),
        &Allowlist::default(),
    );
    assert_eq!(report.counts.changed, 1);
    assert_eq!(report.counts.added, 1);
    let text = format!(
        "{}{report:?}{}",
        serde_json::to_string(&report).unwrap(),
        report
            .keys
            .iter()
            .map(DriftedKey::describe)
            .collect::<String>()
    );
    for value in ["old-value-1234", "new-value-5678", "added-9999"] {
        assert!(!text.contains(value), "{value} leaked: {text}");
    }
    assert!(text.contains("enc_password") && text.contains("redis_pass"));
    assert!(report.keys.iter().all(|k| k.secret));
}

#[test]
fn empty_counts_as_unset_on_both_sides() {
    let report = compare(
        [
            ("s3_endpoint", plain("")),
            ("tbw_image", plain("default_image")),
        ],
        &live(&[("tls_ciphers", ""), ("tbw_image", "")]),
        &Allowlist::default(),
    );
    assert_eq!(report.counts.missing, 1, "{report:?}");
    assert_eq!(report.keys[0].key, "tbw_image");
    assert_eq!(report.keys.len(), 1);
}

#[test]
fn tfe_generated_items_are_allowed_only_when_the_settings_leave_them_out() {
    let report = compare(
        [("user_token", secret("aaaa"))],
        &live(&[("install_id", "generated"), ("user_token", "bbbb")]),
        &Allowlist::default(),
    );
    assert_eq!(report.ignored, ["install_id"]);
    assert_eq!(report.counts.changed, 1, "a rendered one is compared");
}

#[test]
fn the_configured_ignore_list_skips_any_kind() {
    let allow = Allowlist {
        ignore: ["capacity_concurrency".to_string(), "force_tls".to_string()].into(),
    };
    let report = compare(
        [("capacity_concurrency", plain("10"))],
        &live(&[("capacity_concurrency", "20"), ("force_tls", "1")]),
        &allow,
    );
    assert!(!report.drifted);
    assert_eq!(report.ignored, ["capacity_concurrency", "force_tls"]);
}
