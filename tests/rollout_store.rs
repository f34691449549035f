//! The rolling restart's lease and rollout record on a real redis-server (tests/common/redis.rs):
//! tokens only grow, a second acquirer sees the holder, an expired lease can be taken, a stale
//! token can neither renew, release nor record a turn, a second rollout is refused while one
//! runs, and a failed turn stops the rollout. The repave's lease and record the same way: tokens
//! from the same counter, every write of the record fenced by the lease. Through the library API.

mod common;

use common::redis::Redis;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tfe_node_agent::adapters::redis::{RedisStore, RedisStores};
use tfe_node_agent::model::asg::TemplateRef;
use tfe_node_agent::model::cluster::{MemberRecord, Snapshot};
use tfe_node_agent::model::lifecycle::Phase;
use tfe_node_agent::model::repave::{OnFailure, Plan, Repave, Step};
use tfe_node_agent::model::rollout::{
    Lease, LeaseAnswer, Rollout, RolloutRefusal, RolloutState, TurnOutcome,
};
use tfe_node_agent::ports::cluster::{ClusterStores, RepaveStore, RolloutStore, StoreTarget};

const PREFIX: &str = "tfe-node-agent:";
const TTL: Duration = Duration::from_secs(30);

fn open(redis: &Redis) -> RedisStore {
    RedisStores::default().open(StoreTarget {
        host: "127.0.0.1".into(),
        port: redis.port,
        password: None,
        tls: false,
        ca_bundle: None,
        database: 0,
        key_prefix: PREFIX.into(),
    })
}

fn acquired(answer: LeaseAnswer) -> Lease {
    match answer {
        LeaseAnswer::Acquired(l) => l,
        LeaseAnswer::Held(l) => panic!("not acquired: held by {l:?}"),
    }
}

fn rollout(id: &str, instances: &[&str]) -> Rollout {
    let member = |id: &&str| MemberRecord {
        instance_id: id.to_string(),
        private_ip: "10.0.1.7".into(),
        availability_zone: "eu-west-1a".into(),
        phase: Phase::InService,
        release_sequence: 812,
        agent_version: "0.1.0".into(),
        launched_at: 1,
        last_seen: 1000,
        fingerprints: BTreeMap::new(),
        live_fingerprints: BTreeMap::new(),
        last_error: None,
    };
    let snapshot = Snapshot {
        identity: None,
        members: instances.iter().map(member).collect(),
        now: 1000,
    };
    Rollout::plan(id.into(), "alice".into(), &snapshot, TTL, None).unwrap()
}

#[tokio::test]
async fn the_lease_has_one_holder_and_its_token_grows_with_every_acquisition() {
    let redis = Redis::plain();
    let (a, b) = (open(&redis), open(&redis));
    let before = redis.server_time();
    let first = acquired(a.acquire_lease("i-a", TTL).await.unwrap());
    assert_eq!(first.owner, "i-a");
    assert!(first.since >= before && first.since <= redis.server_time());
    // A second acquirer sees the holder, and takes nothing.
    assert_eq!(
        b.acquire_lease("i-b", TTL).await.unwrap(),
        LeaseAnswer::Held(first.clone())
    );
    let pttl: i64 = redis
        .cli(&["PTTL", &format!("{PREFIX}lease")])
        .trim()
        .parse()
        .unwrap();
    assert!(pttl > 0 && pttl <= 30_000, "PTTL {pttl}");
    assert!(a.renew_lease(first.token, TTL).await.unwrap());
    assert!(!b.release_lease(first.token + 1).await.unwrap());
    assert!(a.release_lease(first.token).await.unwrap());
    let second = acquired(b.acquire_lease("i-b", TTL).await.unwrap());
    assert!(second.token > first.token, "{first:?} then {second:?}");
    assert_eq!(second.owner, "i-b");
}

#[tokio::test]
async fn an_expired_lease_is_taken_and_the_stale_token_can_do_nothing_more() {
    let redis = Redis::plain();
    let (a, b) = (open(&redis), open(&redis));
    assert_eq!(
        a.start_rollout(&rollout("r1", &["i-a", "i-b"]), None)
            .await
            .unwrap(),
        None
    );
    let stale = acquired(
        a.acquire_lease("i-a", Duration::from_millis(300))
            .await
            .unwrap(),
    );
    // The holder dies (no renewal): bounded wait for the lease to expire.
    let deadline = Instant::now() + Duration::from_secs(5);
    let taken = loop {
        match b.acquire_lease("i-b", TTL).await.unwrap() {
            LeaseAnswer::Acquired(l) => break l,
            LeaseAnswer::Held(l) => assert_eq!(l, stale),
        }
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(taken.token > stale.token);
    // The old holder's late answers are refused and change nothing.
    assert!(!a.renew_lease(stale.token, TTL).await.unwrap());
    assert!(!a.release_lease(stale.token).await.unwrap());
    let late = a
        .finish_turn("r1", "i-a", stale.token, &TurnOutcome::Restarted)
        .await
        .unwrap();
    assert!(
        matches!(late, Err(RolloutRefusal::Fenced { .. })),
        "{late:?}"
    );
    let status = b.read_rollout().await.unwrap();
    assert_eq!(status.lease, Some(taken.clone()));
    assert!(status.rollout.unwrap().done.is_empty());
    // The new holder's turn is recorded.
    let after = b
        .finish_turn("r1", "i-b", taken.token, &TurnOutcome::Restarted)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.done, ["i-b"]);
    assert!(b.release_lease(taken.token).await.unwrap());
    assert_eq!(b.read_rollout().await.unwrap().lease, None);
}

#[tokio::test]
async fn a_rollout_is_refused_while_one_runs_and_ends_done_or_stopped() {
    let redis = Redis::plain();
    let store = open(&redis);
    assert_eq!(store.read_rollout().await.unwrap().rollout, None);
    let r1 = rollout("r1", &["i-a", "i-b"]);
    assert_eq!(store.start_rollout(&r1, None).await.unwrap(), None);
    assert_eq!(
        store
            .start_rollout(&rollout("r2", &["i-a"]), None)
            .await
            .unwrap(),
        Some(r1.clone())
    );
    for instance in ["i-a", "i-b"] {
        let lease = acquired(store.acquire_lease(instance, TTL).await.unwrap());
        let wrong = store
            .finish_turn("r0", instance, lease.token, &TurnOutcome::Restarted)
            .await
            .unwrap();
        assert!(
            matches!(wrong, Err(RolloutRefusal::Replaced { .. })),
            "{wrong:?}"
        );
        store
            .finish_turn("r1", instance, lease.token, &TurnOutcome::Restarted)
            .await
            .unwrap()
            .unwrap();
        store.release_lease(lease.token).await.unwrap();
    }
    let done = store.read_rollout().await.unwrap().rollout.unwrap();
    assert_eq!(done.state, RolloutState::Done);
    assert_eq!(done.done, ["i-a", "i-b"]);

    // The next one may start; a failed turn stops it and the rest is not restarted.
    assert_eq!(
        store
            .start_rollout(&rollout("r2", &["i-a", "i-b"]), None)
            .await
            .unwrap(),
        None
    );
    let lease = acquired(store.acquire_lease("i-a", TTL).await.unwrap());
    let stopped = store
        .finish_turn(
            "r2",
            "i-a",
            lease.token,
            &TurnOutcome::Failed("app start failed".into()),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stopped.state, RolloutState::Stopped);
    assert_eq!(stopped.failure.unwrap().why, "app start failed");
    let refused = store
        .finish_turn("r2", "i-b", lease.token, &TurnOutcome::Restarted)
        .await
        .unwrap();
    assert!(
        matches!(refused, Err(RolloutRefusal::NotRunning { .. })),
        "{refused:?}"
    );
    // A running rollout is replaced only when named (found waiting for nodes gone).
    let r3 = rollout("r3", &["i-a"]);
    assert_eq!(store.start_rollout(&r3, None).await.unwrap(), None);
    let r4 = rollout("r4", &["i-b"]);
    assert_eq!(
        store.start_rollout(&r4, Some("r-other")).await.unwrap(),
        Some(r3)
    );
    assert_eq!(store.start_rollout(&r4, Some("r3")).await.unwrap(), None);
    assert_eq!(store.read_rollout().await.unwrap().rollout, Some(r4));
    let mut keys: Vec<String> = redis.dump(0).into_iter().map(|(k, _)| k).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "tfe-node-agent:lease",
            "tfe-node-agent:lease-token",
            "tfe-node-agent:rollout"
        ]
    );
}

fn repave(id: &str) -> Repave {
    let from = TemplateRef {
        id: Some("lt-0123456789abcdef0".into()),
        name: None,
        version: "6".into(),
    };
    let plan = Plan {
        group: "tfe-asg".into(),
        to: from.at("7"),
        from,
        from_release: Some(811),
        to_release: Some(812),
        min_size: 2,
        max_size: 4,
        capacity: 2,
        already_suspended: vec![],
        launch_hook: "tfe-launch".into(),
        terminate_hook: "tfe-terminate".into(),
        drain_budget_s: 3600,
        build_budget_s: 3600,
        validate_cmd: None,
        validate_timeout_s: 600,
        on_failure: OnFailure::Stop,
    };
    Repave::new(id.into(), "alice on laptop".into(), 1, plan)
}

#[tokio::test]
async fn the_repave_record_is_written_only_under_its_lease_whose_tokens_share_the_counter() {
    let redis = Redis::plain();
    let store = open(&redis);
    let rolling = acquired(store.acquire_lease("i-1", TTL).await.unwrap());
    let lease = acquired(
        store
            .acquire_repave_lease("alice on laptop", TTL)
            .await
            .unwrap(),
    );
    assert!(
        lease.token > rolling.token,
        "one counter: {lease:?} after {rolling:?}"
    );
    match store.acquire_repave_lease("bob in CI", TTL).await.unwrap() {
        LeaseAnswer::Held(l) => assert_eq!(l, lease),
        other => panic!("a second orchestrator got the lease: {other:?}"),
    }

    let mut record = repave("repave-1");
    record.start(Step::Suspend, 2);
    assert!(store.write_repave(lease.token, &record).await.unwrap());
    let status = store.read_repave().await.unwrap();
    assert_eq!(status.repave.as_ref(), Some(&record));
    assert_eq!(status.lease.as_ref(), Some(&lease));
    assert!(
        status.now > 1_600_000_000,
        "the server's clock: {}",
        status.now
    );

    // A stale token (the rolling restart's, an older holder's) writes nothing.
    let mut other = record.clone();
    other.finish(Step::Suspend, 3, "suspended".into());
    assert!(!store.write_repave(rolling.token, &other).await.unwrap());
    assert_eq!(
        store.read_repave().await.unwrap().repave,
        Some(record.clone())
    );

    // Released: the record stays (for --resume and the report), nobody may write it.
    assert!(store.release_repave_lease(lease.token).await.unwrap());
    assert!(!store.renew_repave_lease(lease.token, TTL).await.unwrap());
    assert!(!store.write_repave(lease.token, &other).await.unwrap());
    let keys: Vec<String> = redis.dump(0).into_iter().map(|(k, _)| k).collect();
    assert!(keys.contains(&format!("{PREFIX}repave")), "{keys:?}");
    assert!(!keys.contains(&format!("{PREFIX}repave-lease")), "{keys:?}");
    // The rolling restart's lease is untouched by the repave's.
    assert!(store.renew_lease(rolling.token, TTL).await.unwrap());
}
