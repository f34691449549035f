use super::*;

const TTL: Duration = Duration::from_secs(30);
const NOW: u64 = 1_000_000;
const ENC: &str = "00112233aabbccdd";
const OTHER_ENC: &str = "ffeeddcc99887766";

fn identity(release_sequence: u64) -> ClusterIdentity {
    ClusterIdentity {
        cluster_id: "c-1".into(),
        salt: "000102030405060708090a0b0c0d0e0f".into(),
        enc_password: ENC.into(),
        release_sequence,
        created_at: NOW - 3600,
    }
}

/// A member on `release`, last seen `ago` seconds before NOW, with the cluster's enc_password.
fn member(id: &str, release: u64, ago: u64) -> MemberRecord {
    MemberRecord {
        instance_id: id.into(),
        private_ip: "10.0.0.1".into(),
        availability_zone: "eu-west-1a".into(),
        phase: Phase::InService,
        release_sequence: release,
        agent_version: "0.1.0".into(),
        launched_at: NOW - 600,
        last_seen: NOW - ago,
        fingerprints: [
            (ENC_PASSWORD.to_string(), ENC.to_string()),
            ("install_id".to_string(), "1111111111111111".to_string()),
        ]
        .into(),
        live_fingerprints: BTreeMap::new(),
        last_error: None,
    }
}

fn with_fp(mut m: MemberRecord, setting: &str, fp: &str) -> MemberRecord {
    m.fingerprints.insert(setting.into(), fp.into());
    m
}

fn snapshot(identity: Option<ClusterIdentity>, members: Vec<MemberRecord>) -> Snapshot {
    Snapshot {
        identity,
        members,
        now: NOW,
    }
}

fn me(release: u64, enc: &str) -> Candidate {
    Candidate {
        instance_id: "i-me".into(),
        release_sequence: release,
        enc_password_fingerprint: enc.into(),
    }
}

fn verdict(me: &Candidate, snap: &Snapshot) -> Verdict {
    join_verdict(me, snap, TTL, None, TooManyPolicy::Warn)
}

fn rg(release_sequence: u64, nodes: &[&str]) -> ReleaseGroup {
    ReleaseGroup {
        release_sequence,
        nodes: ids(nodes),
    }
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

// ---- the view ----

#[test]
fn an_agreeing_cluster_is_consistent() {
    let snap = snapshot(
        Some(identity(504)),
        vec![member("i-b", 504, 5), member("i-a", 504, 0)],
    );
    let view = ClusterView::assess(&snap, TTL, Some(2));
    assert!(view.consistent, "{:?}", view.findings);
    assert!(view.findings.is_empty());
    assert_eq!(view.cluster_id.as_deref(), Some("c-1"));
    assert_eq!(view.release_sequence, Some(504));
    let names: Vec<_> = view
        .nodes
        .iter()
        .map(|n| &n.record.instance_id[..])
        .collect();
    assert_eq!(names, ["i-a", "i-b"], "sorted by instance id");
    assert_eq!(view.nodes[1].seconds_since_seen, 5);
    assert_eq!((view.live, view.stale), (2, 0));
    assert_eq!(
        view.mismatch_counts(),
        [("release", 0), ("fingerprint", 0), ("live", 0)]
    );
}

#[test]
fn an_empty_store_is_consistent() {
    let view = ClusterView::assess(&Snapshot::default(), TTL, Some(2));
    assert!(view.consistent);
    assert_eq!(view.cluster_id, None);
    assert_eq!((view.live, view.stale), (0, 0));
    assert_eq!(
        view.mismatch_counts(),
        [("release", 0), ("fingerprint", 0), ("live", 0)]
    );
}

#[test]
fn a_node_not_seen_for_longer_than_the_ttl_is_stale() {
    let snap = snapshot(
        Some(identity(504)),
        vec![
            member("i-a", 504, 0),
            member("i-edge", 504, 30), // exactly the TTL: still live
            member("i-dead", 504, 31),
        ],
    );
    let view = ClusterView::assess(&snap, TTL, None);
    let stale: Vec<_> = view
        .nodes
        .iter()
        .map(|n| (&n.record.instance_id[..], n.stale))
        .collect();
    assert_eq!(stale, [("i-a", false), ("i-dead", true), ("i-edge", false)]);
    assert_eq!(
        view.findings,
        [Finding::Stale {
            instance_id: "i-dead".into(),
            seconds_since_seen: 31
        }]
    );
    assert!(!view.consistent);
    assert_eq!((view.live, view.stale), (2, 1));
}

#[test]
fn a_record_stamped_after_the_read_is_fresh() {
    let mut racing = member("i-a", 504, 0);
    racing.last_seen = NOW + 2;
    let view = ClusterView::assess(&snapshot(Some(identity(504)), vec![racing]), TTL, None);
    assert!(!view.nodes[0].stale);
    assert_eq!(view.nodes[0].seconds_since_seen, 0);
}

#[test]
fn live_nodes_on_two_releases_are_a_release_mismatch() {
    let snap = snapshot(
        Some(identity(504)),
        vec![
            member("i-a", 504, 0),
            member("i-c", 505, 0),
            member("i-b", 504, 0),
        ],
    );
    let view = ClusterView::assess(&snap, TTL, None);
    assert_eq!(
        view.findings,
        [Finding::ReleaseMismatch {
            identity_release: Some(504),
            releases: vec![rg(504, &["i-a", "i-b"]), rg(505, &["i-c"])],
        }]
    );
    assert_eq!(
        view.mismatch_counts(),
        [("release", 1), ("fingerprint", 0), ("live", 0)]
    );
    assert_eq!(
        view.findings[0].to_string(),
        "live nodes on more than one release: the cluster runs 504; 504 on i-a, i-b; 505 on i-c"
    );
}

#[test]
fn live_nodes_all_on_another_release_than_the_identity_are_a_mismatch() {
    let snap = snapshot(Some(identity(504)), vec![member("i-a", 505, 0)]);
    let view = ClusterView::assess(&snap, TTL, None);
    assert_eq!(
        view.findings,
        [Finding::ReleaseMismatch {
            identity_release: Some(504),
            releases: vec![rg(505, &["i-a"])],
        }]
    );
}

#[test]
fn a_stale_node_on_another_release_is_only_stale() {
    let snap = snapshot(
        Some(identity(505)),
        vec![member("i-old", 504, 120), member("i-new", 505, 0)],
    );
    let view = ClusterView::assess(&snap, TTL, None);
    assert_eq!(
        view.findings,
        [Finding::Stale {
            instance_id: "i-old".into(),
            seconds_since_seen: 120
        }]
    );
    assert_eq!(view.mismatch_counts()[0], ("release", 0));
}

#[test]
fn draining_and_drained_nodes_count_as_live_until_stale() {
    let mut draining = member("i-a", 504, 0);
    draining.phase = Phase::Draining;
    let mut drained = member("i-b", 504, 10);
    drained.phase = Phase::Drained;
    let snap = snapshot(
        Some(identity(505)),
        vec![draining, drained, member("i-c", 505, 0)],
    );
    let view = ClusterView::assess(&snap, TTL, Some(2));
    assert_eq!(view.live, 3);
    assert!(view
        .findings
        .contains(&Finding::TooMany { live: 3, max: 2 }));
    assert!(view.findings.contains(&Finding::ReleaseMismatch {
        identity_release: Some(505),
        releases: vec![rg(504, &["i-a", "i-b"]), rg(505, &["i-c"])],
    }));
    // And a joining node on the new release must wait for them to go.
    assert_eq!(
        verdict(&me(505, ENC), &snap),
        Verdict::Refuse(Refusal::Release {
            mine: 505,
            instance_id: "i-a".into(),
            theirs: 504
        })
    );
}

#[test]
fn a_setting_that_differs_between_live_nodes_is_a_fingerprint_mismatch() {
    let snap = snapshot(
        Some(identity(504)),
        vec![
            member("i-a", 504, 0),
            with_fp(member("i-b", 504, 0), "install_id", "2222222222222222"),
            member("i-c", 504, 0),
            // Stale: its value is not compared.
            with_fp(member("i-d", 504, 99), "install_id", "3333333333333333"),
        ],
    );
    let view = ClusterView::assess(&snap, TTL, None);
    let mismatches: Vec<_> = view
        .findings
        .iter()
        .filter(|f| matches!(f, Finding::FingerprintMismatch { .. }))
        .collect();
    assert_eq!(
        mismatches,
        [&Finding::FingerprintMismatch {
            setting: "install_id".into(),
            groups: vec![ids(&["i-a", "i-c"]), ids(&["i-b"])],
            differs_from_identity: vec![],
        }]
    );
    assert_eq!(
        view.mismatch_counts(),
        [("release", 0), ("fingerprint", 1), ("live", 0)]
    );
    assert_eq!(
        mismatches[0].describe(),
        "install_id differs between live nodes: i-a, i-c | i-b"
    );
}

/// `m` after a comparison with TFE: it runs `live` (setting, fingerprint) pairs.
fn running(mut m: MemberRecord, live: &[(&str, &str)]) -> MemberRecord {
    m.live_fingerprints = live
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    m
}

#[test]
fn a_setting_changed_live_on_one_node_is_a_live_mismatch_while_the_rendered_ones_agree() {
    let runs = [
        (ENC_PASSWORD, ENC),
        ("capacity_concurrency", "5555555555555555"),
    ];
    let changed = [
        (ENC_PASSWORD, ENC),
        ("capacity_concurrency", "6666666666666666"),
    ];
    let snap = snapshot(
        Some(identity(504)),
        vec![
            running(member("i-a", 504, 0), &runs),
            running(member("i-b", 504, 0), &changed),
            running(member("i-c", 504, 0), &runs),
            // Stale: what its TFE ran is not compared.
            running(member("i-d", 504, 99), &changed),
        ],
    );
    let view = ClusterView::assess(&snap, TTL, None);
    let finding = Finding::LiveMismatch {
        setting: "capacity_concurrency".into(),
        groups: vec![ids(&["i-a", "i-c"]), ids(&["i-b"])],
    };
    assert_eq!(
        view.findings,
        [
            finding.clone(),
            Finding::Stale {
                instance_id: "i-d".into(),
                seconds_since_seen: 99
            }
        ]
    );
    assert!(!view.consistent);
    assert_eq!(
        view.mismatch_counts(),
        [("release", 0), ("fingerprint", 0), ("live", 1)]
    );
    assert_eq!(
        finding.describe(),
        "capacity_concurrency as TFE runs it differs between live nodes: i-a, i-c | i-b \
         (changed live: `tfe-node-agent drift` on each says which)"
    );
    let json = serde_json::to_value(&finding).unwrap();
    assert_eq!(json["kind"], "live-mismatch", "{json}");
    assert_eq!(serde_json::from_value::<Finding>(json).unwrap(), finding);
}

#[test]
fn a_setting_unset_live_on_one_node_is_a_group_of_its_own() {
    let snap = snapshot(
        Some(identity(504)),
        vec![
            running(
                member("i-a", 504, 0),
                &[(ENC_PASSWORD, ENC), ("hostname", "7777777777777777")],
            ),
            running(member("i-b", 504, 0), &[(ENC_PASSWORD, ENC)]),
        ],
    );
    let view = ClusterView::assess(&snap, TTL, None);
    assert_eq!(
        view.findings,
        [Finding::LiveMismatch {
            setting: "hostname".into(),
            groups: vec![ids(&["i-a"]), ids(&["i-b"])],
        }]
    );
}

#[test]
fn nodes_that_have_not_compared_yet_are_left_out_of_the_live_comparison() {
    // i-b has drift off, or has not compared yet, or runs an older agent: no live fingerprints.
    let snap = snapshot(
        Some(identity(504)),
        vec![
            running(member("i-a", 504, 0), &[(ENC_PASSWORD, ENC)]),
            member("i-b", 504, 0),
            running(member("i-c", 504, 0), &[(ENC_PASSWORD, ENC)]),
        ],
    );
    let view = ClusterView::assess(&snap, TTL, None);
    assert!(view.consistent, "{:?}", view.findings);
    assert_eq!(view.mismatch_counts()[2], ("live", 0));
}

#[test]
fn a_record_without_live_fingerprints_reads_as_not_compared() {
    let mut json = serde_json::to_value(member("i-old", 504, 0)).unwrap();
    json.as_object_mut().unwrap().remove("live_fingerprints");
    let back: MemberRecord = serde_json::from_value(json).unwrap();
    assert!(back.live_fingerprints.is_empty());
    assert_eq!(back, member("i-old", 504, 0));
}

#[test]
fn a_setting_one_live_node_lacks_is_a_mismatch() {
    let snap = snapshot(
        Some(identity(504)),
        vec![
            with_fp(
                member("i-a", 504, 0),
                "internal_api_token",
                "4444444444444444",
            ),
            member("i-b", 504, 0),
        ],
    );
    let view = ClusterView::assess(&snap, TTL, None);
    assert_eq!(
        view.findings,
        [Finding::FingerprintMismatch {
            setting: "internal_api_token".into(),
            groups: vec![ids(&["i-a"]), ids(&["i-b"])],
            differs_from_identity: vec![],
        }]
    );
}

#[test]
fn an_enc_password_other_than_the_identity_is_a_mismatch_even_when_the_nodes_agree() {
    let snap = snapshot(
        Some(identity(504)),
        vec![
            with_fp(member("i-a", 504, 0), ENC_PASSWORD, OTHER_ENC),
            with_fp(member("i-b", 504, 0), ENC_PASSWORD, OTHER_ENC),
        ],
    );
    let view = ClusterView::assess(&snap, TTL, None);
    assert_eq!(
        view.findings,
        [Finding::FingerprintMismatch {
            setting: ENC_PASSWORD.into(),
            groups: vec![ids(&["i-a", "i-b"])],
            differs_from_identity: ids(&["i-a", "i-b"]),
        }]
    );
    assert!(view.findings[0]
        .to_string()
        .ends_with("not the cluster's on i-a, i-b"));
}

#[test]
fn an_enc_password_mismatch_names_the_nodes_the_identity_disagrees_with() {
    let mut no_enc = member("i-c", 504, 0);
    no_enc.fingerprints.remove(ENC_PASSWORD);
    let snap = snapshot(
        Some(identity(504)),
        vec![
            member("i-a", 504, 0),
            with_fp(member("i-b", 504, 0), ENC_PASSWORD, OTHER_ENC),
            no_enc,
        ],
    );
    let view = ClusterView::assess(&snap, TTL, None);
    assert_eq!(
        view.findings,
        [Finding::FingerprintMismatch {
            setting: ENC_PASSWORD.into(),
            groups: vec![ids(&["i-a"]), ids(&["i-b"]), ids(&["i-c"])],
            differs_from_identity: ids(&["i-b", "i-c"]),
        }]
    );
}

#[test]
fn no_live_node_reporting_enc_password_differs_from_the_identity() {
    let mut a = member("i-a", 504, 0);
    a.fingerprints.clear();
    let view = ClusterView::assess(&snapshot(Some(identity(504)), vec![a]), TTL, None);
    assert_eq!(
        view.findings,
        [Finding::FingerprintMismatch {
            setting: ENC_PASSWORD.into(),
            groups: vec![ids(&["i-a"])],
            differs_from_identity: ids(&["i-a"]),
        }]
    );
}

#[test]
fn more_live_nodes_than_max_nodes_is_too_many() {
    let members = vec![
        member("i-a", 504, 0),
        member("i-b", 504, 0),
        member("i-c", 504, 0),
        member("i-d", 504, 300), // stale: not counted
    ];
    let snap = snapshot(Some(identity(504)), members);
    let view = ClusterView::assess(&snap, TTL, Some(2));
    assert_eq!(view.findings[0], Finding::TooMany { live: 3, max: 2 });
    assert_eq!(view.findings[0].to_string(), "3 live nodes, max_nodes 2");
    assert!(ClusterView::assess(&snap, TTL, Some(3))
        .findings
        .iter()
        .all(|f| matches!(f, Finding::Stale { .. })));
    assert!(ClusterView::assess(&snap, TTL, None)
        .findings
        .iter()
        .all(|f| matches!(f, Finding::Stale { .. })));
}

#[test]
fn live_members_without_an_identity_are_a_finding() {
    let snap = snapshot(None, vec![member("i-a", 504, 0), member("i-b", 504, 0)]);
    let view = ClusterView::assess(&snap, TTL, None);
    assert_eq!(view.findings, [Finding::IdentityMissing { live: 2 }]);
    assert!(!view.consistent);
    // Only stale members: nothing live to worry about but the stale node itself.
    let snap = snapshot(None, vec![member("i-a", 504, 60)]);
    let view = ClusterView::assess(&snap, TTL, None);
    assert_eq!(
        view.findings,
        [Finding::Stale {
            instance_id: "i-a".into(),
            seconds_since_seen: 60
        }]
    );
}

#[test]
fn findings_come_most_serious_first() {
    let snap = snapshot(
        None,
        vec![
            member("i-a", 504, 0),
            with_fp(member("i-b", 505, 0), "install_id", "2222222222222222"),
            member("i-c", 504, 0),
            member("i-z", 504, 100),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, m)| running(m, &[("hostname", ["7", "8"][i % 2])]))
        .collect(),
    );
    let kinds: Vec<&str> = ClusterView::assess(&snap, TTL, Some(2))
        .findings
        .iter()
        .map(|f| match f {
            Finding::IdentityMissing { .. } => "identity",
            Finding::ReleaseMismatch { .. } => "release",
            Finding::FingerprintMismatch { .. } => "fingerprint",
            Finding::LiveMismatch { .. } => "live",
            Finding::TooMany { .. } => "too-many",
            Finding::Stale { .. } => "stale",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "identity",
            "release",
            "fingerprint",
            "live",
            "too-many",
            "stale"
        ]
    );
}

#[test]
fn an_instance_listed_twice_shows_once_with_its_newest_record() {
    let old = member("i-a", 504, 200);
    let new = member("i-a", 505, 1);
    let snap = snapshot(Some(identity(505)), vec![new.clone(), old]);
    let view = ClusterView::assess(&snap, TTL, None);
    assert_eq!(view.nodes.len(), 1);
    assert_eq!(view.nodes[0].record, new);
    assert!(view.consistent, "{:?}", view.findings);
}

#[test]
fn the_view_serializes_with_the_record_fields_flat_and_a_kind_per_finding() {
    let snap = snapshot(
        Some(identity(504)),
        vec![member("i-a", 504, 0), member("i-b", 505, 40)],
    );
    let view = ClusterView::assess(&snap, TTL, Some(1));
    let json = serde_json::to_value(&view).unwrap();
    assert_eq!(json["cluster_id"], "c-1");
    assert_eq!(json["release_sequence"], 504);
    assert_eq!(json["consistent"], false);
    assert_eq!((&json["live"], &json["stale"]), (&1.into(), &1.into()));
    let node = &json["nodes"][1];
    assert_eq!(node["instance_id"], "i-b");
    assert_eq!(node["phase"], "in-service");
    assert_eq!(node["stale"], true);
    assert_eq!(node["seconds_since_seen"], 40);
    assert_eq!(node["fingerprints"]["install_id"], "1111111111111111");
    assert_eq!(json["findings"][0]["kind"], "stale");
    assert_eq!(json["findings"][0]["instance_id"], "i-b");
    // Read back as written: the `cluster` command reads /status's copy.
    let back: ClusterView = serde_json::from_value(json).unwrap();
    assert_eq!(back, view);

    let mismatch = Finding::FingerprintMismatch {
        setting: "cookie_hash".into(),
        groups: vec![ids(&["i-a"]), ids(&["i-b"])],
        differs_from_identity: vec![],
    };
    let json = serde_json::to_value(&mismatch).unwrap();
    assert_eq!(json["kind"], "fingerprint-mismatch");
    assert!(json.get("differs_from_identity").is_none());
    let releases = serde_json::to_value(Finding::ReleaseMismatch {
        identity_release: None,
        releases: vec![rg(504, &["i-a"]), rg(505, &["i-b"])],
    })
    .unwrap();
    assert_eq!(releases["kind"], "release-mismatch");
    assert_eq!(
        releases["releases"][1],
        serde_json::json!({"release_sequence": 505, "nodes": ["i-b"]})
    );
    let back: Finding = serde_json::from_value(releases).unwrap();
    assert!(matches!(back, Finding::ReleaseMismatch { .. }));
}

// ---- the join guard ----

#[test]
fn the_first_node_claims_the_identity() {
    assert_eq!(
        verdict(&me(504, ENC), &Snapshot::default()),
        Verdict::ClaimIdentity
    );
}

#[test]
fn two_first_nodes_both_claim_and_the_loser_decides_again_against_the_winner() {
    // Both read an empty store before either wrote anything: both are told to claim (after the
    // flow's wait), the store's SET NX keeps one identity.
    let a = Candidate {
        instance_id: "i-a".into(),
        ..me(504, ENC)
    };
    let b = Candidate {
        instance_id: "i-b".into(),
        ..me(504, OTHER_ENC)
    };
    assert_eq!(verdict(&a, &Snapshot::default()), Verdict::ClaimIdentity);
    assert_eq!(verdict(&b, &Snapshot::default()), Verdict::ClaimIdentity);
    // a won; b reads a's identity (fingerprinting with a's salt) and is judged against it.
    let after = snapshot(Some(identity(504)), vec![member("i-a", 504, 0)]);
    assert_eq!(verdict(&a, &after), Verdict::Join);
    assert_eq!(
        verdict(&b, &after),
        Verdict::Refuse(Refusal::EncPassword),
        "same values would have joined; b's enc_password differs"
    );
    let b_same = Candidate {
        instance_id: "i-b".into(),
        ..me(504, ENC)
    };
    assert_eq!(verdict(&b_same, &after), Verdict::Join);
}

#[test]
fn a_node_of_the_cluster_joins() {
    let snap = snapshot(
        Some(identity(504)),
        vec![member("i-a", 504, 0), member("i-b", 504, 3)],
    );
    assert_eq!(verdict(&me(504, ENC), &snap), Verdict::Join);
}

#[test]
fn the_repave_joins_and_records_the_new_release() {
    // Every 504 node drained and left (or went stale); the first 505 node arrives.
    for members in [vec![], vec![member("i-old", 504, 31)]] {
        let snap = snapshot(Some(identity(504)), members);
        assert_eq!(
            verdict(&me(505, ENC), &snap),
            Verdict::JoinAndRecordRelease {
                release_sequence: 505
            }
        );
    }
}

#[test]
fn a_second_new_release_node_records_the_release_if_the_first_could_not() {
    // The first 505 node joined but its set_release failed: the live members agree with the
    // candidate, so recording again is safe.
    let snap = snapshot(Some(identity(504)), vec![member("i-new", 505, 0)]);
    assert_eq!(
        verdict(&me(505, ENC), &snap),
        Verdict::JoinAndRecordRelease {
            release_sequence: 505
        }
    );
}

#[test]
fn a_live_node_on_another_release_refuses_the_join() {
    let snap = snapshot(
        Some(identity(504)),
        vec![member("i-0abc", 504, 0), member("i-0abd", 504, 0)],
    );
    let v = verdict(&me(505, ENC), &snap);
    let Verdict::Refuse(refusal) = v else {
        panic!("joined: {v:?}")
    };
    assert_eq!(
        refusal,
        Refusal::Release {
            mine: 505,
            instance_id: "i-0abc".into(),
            theirs: 504
        }
    );
    assert_eq!(
        refusal.why(),
        "release 505 while live node i-0abc runs 504: nodes of two releases must not serve \
         together — finish the repave first"
    );
    assert_eq!(refusal.as_str(), "release");
    // An old node coming back into a repaved cluster is refused the same way.
    let snap = snapshot(Some(identity(505)), vec![member("i-new", 505, 0)]);
    assert!(matches!(
        verdict(&me(504, ENC), &snap),
        Verdict::Refuse(Refusal::Release { theirs: 505, .. })
    ));
}

#[test]
fn a_stale_node_on_another_release_does_not_block_the_join() {
    let snap = snapshot(
        Some(identity(505)),
        vec![member("i-old", 504, 45), member("i-new", 505, 2)],
    );
    assert_eq!(verdict(&me(505, ENC), &snap), Verdict::Join);
}

#[test]
fn an_enc_password_mismatch_refuses_even_with_no_member_live() {
    for members in [
        vec![],
        vec![member("i-a", 504, 0)],
        vec![member("i-a", 504, 90)],
    ] {
        let snap = snapshot(Some(identity(504)), members);
        assert_eq!(
            verdict(&me(504, OTHER_ENC), &snap),
            Verdict::Refuse(Refusal::EncPassword)
        );
        // Not even a repave lets a different enc_password in: the data outlives the nodes.
        assert_eq!(
            verdict(&me(505, OTHER_ENC), &snap),
            Verdict::Refuse(Refusal::EncPassword)
        );
    }
    let refusal = Refusal::EncPassword;
    assert_eq!(
        refusal.why(),
        "enc_password differs from the cluster's: this node could not decrypt existing data"
    );
    assert_eq!(refusal.to_string(), refusal.why());
    assert_eq!(refusal.as_str(), "enc_password");
}

#[test]
fn the_enc_password_is_checked_before_the_release() {
    let snap = snapshot(Some(identity(504)), vec![member("i-a", 504, 0)]);
    assert_eq!(
        verdict(&me(505, OTHER_ENC), &snap),
        Verdict::Refuse(Refusal::EncPassword)
    );
}

#[test]
fn a_node_ignores_its_own_old_record() {
    // This instance booted before on 504 (its record is still fresh), then rebooted with an
    // agent.toml saying 505, into a cluster where nobody else is live.
    let own_old = Candidate {
        instance_id: "i-a".into(),
        ..me(505, ENC)
    };
    let snap = snapshot(Some(identity(504)), vec![member("i-a", 504, 1)]);
    assert_eq!(
        verdict(&own_old, &snap),
        Verdict::JoinAndRecordRelease {
            release_sequence: 505
        }
    );
    // And it does not count itself against max_nodes.
    let snap = snapshot(
        Some(identity(504)),
        vec![member("i-a", 504, 1), member("i-b", 504, 1)],
    );
    let again = Candidate {
        instance_id: "i-a".into(),
        ..me(504, ENC)
    };
    assert_eq!(
        join_verdict(&again, &snap, TTL, Some(2), TooManyPolicy::Refuse),
        Verdict::Join
    );
}

#[test]
fn max_nodes_warns_or_refuses_as_configured() {
    let snap = snapshot(
        Some(identity(504)),
        vec![
            member("i-a", 504, 0),
            member("i-b", 504, 0),
            member("i-gone", 504, 31),
        ],
    );
    let candidate = me(504, ENC);
    // Two live plus this one: three.
    assert_eq!(
        join_verdict(&candidate, &snap, TTL, Some(2), TooManyPolicy::Warn),
        Verdict::Join
    );
    let refused = join_verdict(&candidate, &snap, TTL, Some(2), TooManyPolicy::Refuse);
    assert_eq!(
        refused,
        Verdict::Refuse(Refusal::TooMany { live: 3, max: 2 })
    );
    let Verdict::Refuse(refusal) = refused else {
        unreachable!()
    };
    assert_eq!(
        refusal.why(),
        "3 live nodes with this one, max_nodes 2 (on_too_many = \"refuse\")"
    );
    assert_eq!(refusal.as_str(), "too_many");
    // Exactly max_nodes with this one is fine; no max is no limit.
    assert_eq!(
        join_verdict(&candidate, &snap, TTL, Some(3), TooManyPolicy::Refuse),
        Verdict::Join
    );
    assert_eq!(
        join_verdict(&candidate, &snap, TTL, None, TooManyPolicy::Refuse),
        Verdict::Join
    );
    // With warn, the node joins and the view (with its record in) carries the finding.
    let mut joined = snap.clone();
    joined.members.push(member("i-me", 504, 0));
    assert!(ClusterView::assess(&joined, TTL, Some(2))
        .findings
        .contains(&Finding::TooMany { live: 3, max: 2 }));
}

#[test]
fn live_members_without_an_identity_do_not_let_a_node_claim_at_once() {
    let snap = snapshot(None, vec![member("i-b", 504, 0), member("i-a", 504, 2)]);
    assert_eq!(
        verdict(&me(504, ENC), &snap),
        Verdict::NoIdentityButMembers {
            live: ids(&["i-a", "i-b"])
        }
    );
    // Only stale members left: a new cluster.
    let snap = snapshot(None, vec![member("i-a", 504, 31)]);
    assert_eq!(verdict(&me(504, ENC), &snap), Verdict::ClaimIdentity);
}

#[test]
fn without_an_identity_a_live_member_on_another_release_still_refuses() {
    let snap = snapshot(None, vec![member("i-a", 504, 0)]);
    assert_eq!(
        verdict(&me(505, ENC), &snap),
        Verdict::Refuse(Refusal::Release {
            mine: 505,
            instance_id: "i-a".into(),
            theirs: 504
        })
    );
}

#[test]
fn without_an_identity_max_nodes_still_refuses() {
    let snap = snapshot(None, vec![member("i-a", 504, 0), member("i-b", 504, 0)]);
    assert_eq!(
        join_verdict(&me(504, ENC), &snap, TTL, Some(2), TooManyPolicy::Refuse),
        Verdict::Refuse(Refusal::TooMany { live: 3, max: 2 })
    );
}

#[test]
fn too_many_policy_reads_lowercase() {
    #[derive(Deserialize)]
    struct T {
        on_too_many: TooManyPolicy,
    }
    let read = |s: &str| toml_like(s).map(|t: T| t.on_too_many);
    assert_eq!(read("warn"), Ok(TooManyPolicy::Warn));
    assert_eq!(read("refuse"), Ok(TooManyPolicy::Refuse));
    assert!(read("Refuse").is_err());
    assert_eq!(TooManyPolicy::default(), TooManyPolicy::Warn);

    fn toml_like<T: serde::de::DeserializeOwned>(value: &str) -> Result<T, String> {
        serde_json::from_value(serde_json::json!({ "on_too_many": value }))
            .map_err(|e| e.to_string())
    }
}

#[test]
fn refusals_serialize_with_their_kind() {
    let json = serde_json::to_value(Refusal::Release {
        mine: 505,
        instance_id: "i-a".into(),
        theirs: 504,
    })
    .unwrap();
    assert_eq!(
        json,
        serde_json::json!({"kind": "release", "mine": 505, "instance_id": "i-a", "theirs": 504})
    );
    assert_eq!(
        serde_json::to_value(Refusal::EncPassword).unwrap(),
        serde_json::json!({"kind": "enc-password"})
    );
}
