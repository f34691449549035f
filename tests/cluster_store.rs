//! The cluster store's Redis adapter against a real redis-server (tests/common/redis.rs): one
//! round trip per heartbeat stamped with the server's clock, TTLs and pruning, the identity claim
//! race, release updates, leave and reset, AUTH and TLS failures that name the address and the
//! problem (never the password), and recovery from a killed connection, a flushed store and a
//! failover that leaves the connection on a read-only replica. Through the library API: the
//! `cluster` command that uses the adapter is wired elsewhere.

mod common;

use common::redis::{closed_port, make_ca, Redis, RedisOptions};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tfe_node_agent::adapters::redis::{Limits, RedisStore, RedisStores};
use tfe_node_agent::model::cluster::{ClusterIdentity, MemberRecord};
use tfe_node_agent::model::lifecycle::Phase;
use tfe_node_agent::ports::cluster::{ClusterStore, ClusterStores, StoreError, StoreTarget};
use tfe_node_agent::sys::secret::Secret;

const PREFIX: &str = "tfe-node-agent:";
const KEEP: Duration = Duration::from_secs(30);

fn target(redis: &Redis) -> StoreTarget {
    StoreTarget {
        host: "127.0.0.1".into(),
        port: redis.port,
        password: redis.password.as_deref().map(Secret::new),
        tls: redis.ca_pem.is_some(),
        ca_bundle: redis.ca_pem.clone(),
        database: 0,
        key_prefix: PREFIX.into(),
    }
}

fn open(target: StoreTarget) -> RedisStore {
    RedisStores::default().open(target)
}

fn record(id: &str) -> MemberRecord {
    MemberRecord {
        instance_id: id.into(),
        private_ip: "10.0.1.7".into(),
        availability_zone: "eu-west-1a".into(),
        phase: Phase::InService,
        release_sequence: 812,
        agent_version: "0.1.0".into(),
        launched_at: 1_700_000_000,
        // The store must replace this with its own clock.
        last_seen: 1,
        fingerprints: BTreeMap::from([("enc_password".into(), "0123456789abcdef".into())]),
        live_fingerprints: BTreeMap::new(),
        last_error: None,
    }
}

fn identity(cluster_id: &str) -> ClusterIdentity {
    ClusterIdentity {
        cluster_id: cluster_id.into(),
        salt: "00112233445566778899aabbccddeeff".into(),
        enc_password: "fedcba9876543210".into(),
        release_sequence: 812,
        created_at: 1_700_000_123,
    }
}

fn ids(members: &[MemberRecord]) -> Vec<&str> {
    let mut ids: Vec<&str> = members.iter().map(|m| m.instance_id.as_str()).collect();
    ids.sort();
    ids
}

/// Polls `done` every 50 ms for at most `limit`, letting the runtime (one thread: the test's)
/// run the connection's own task in between.
async fn eventually(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn heartbeats_are_stamped_by_the_server_and_read_back_by_everyone() {
    let redis = Redis::plain();
    let (a, b) = (open(target(&redis)), open(target(&redis)));
    let before = redis.server_time();
    let first = a.heartbeat(&record("i-a"), KEEP).await.unwrap();
    assert_eq!(ids(&first.members), ["i-a"]);
    let second = b.heartbeat(&record("i-b"), KEEP).await.unwrap();
    assert_eq!(ids(&second.members), ["i-a", "i-b"]);
    let after = redis.server_time();

    let snapshot = a.read().await.unwrap();
    assert_eq!(snapshot.identity, None);
    assert!((before..=after).contains(&snapshot.now), "{snapshot:?}");
    assert_eq!(ids(&snapshot.members), ["i-a", "i-b"]);
    for m in &snapshot.members {
        assert!(
            (before..=after).contains(&m.last_seen),
            "not the server's clock: {m:?}"
        );
        assert_eq!(
            MemberRecord {
                last_seen: 1,
                ..m.clone()
            },
            record(&m.instance_id)
        );
        let key = format!("{PREFIX}node:{}", m.instance_id);
        let ttl: u64 = redis.cli(&["TTL", &key]).trim().parse().unwrap();
        assert!(ttl > 0 && ttl <= KEEP.as_secs(), "TTL {ttl} of {key}");
        let score = redis.cli(&["ZSCORE", &format!("{PREFIX}nodes"), &m.instance_id]);
        assert_eq!(score.trim(), m.last_seen.to_string());
    }
    // Reading wrote nothing: the same keys, no more.
    let mut keys: Vec<String> = redis.dump(0).into_iter().map(|(k, _)| k).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "tfe-node-agent:node:i-a",
            "tfe-node-agent:node:i-b",
            "tfe-node-agent:nodes"
        ]
    );
}

#[tokio::test]
async fn records_expire_after_keep_for_and_old_index_entries_are_pruned() {
    let redis = Redis::plain();
    let store = open(target(&redis));
    // An index entry last seen an hour ago, its record long gone.
    let old = (redis.server_time() - 3600).to_string();
    redis.cli(&["ZADD", &format!("{PREFIX}nodes"), &old, "i-ghost"]);
    // A record the read cannot parse is skipped, not fatal.
    redis.cli(&["SET", &format!("{PREFIX}node:i-junk"), "{not json"]);
    let now = redis.server_time().to_string();
    redis.cli(&["ZADD", &format!("{PREFIX}nodes"), &now, "i-junk"]);

    let snapshot = store.heartbeat(&record("i-a"), KEEP).await.unwrap();
    assert_eq!(ids(&snapshot.members), ["i-a"]);
    let index = redis.cli(&["ZRANGE", &format!("{PREFIX}nodes"), "0", "-1"]);
    assert!(!index.contains("i-ghost"), "not pruned: {index}");
    assert!(index.contains("i-junk"), "pruned too early: {index}");

    // keep_for 1 s: the record is gone a second later (bounded wait), its index entry outlives
    // it until a heartbeat prunes it, and a read skips it meanwhile.
    store
        .heartbeat(&record("i-short"), Duration::from_secs(1))
        .await
        .unwrap();
    let key = format!("{PREFIX}node:i-short");
    eventually("record expired", Duration::from_secs(5), || {
        redis.cli(&["EXISTS", &key]).trim() == "0"
    })
    .await;
    let snapshot = store.read().await.unwrap();
    assert_eq!(ids(&snapshot.members), ["i-a"]);
}

#[tokio::test]
async fn two_concurrent_claims_have_one_winner_that_both_see() {
    let redis = Redis::plain();
    let (a, b) = (open(target(&redis)), open(target(&redis)));
    let (mine, theirs) = (identity("cluster-a"), identity("cluster-b"));
    let (got_a, got_b) = tokio::join!(a.claim_identity(&mine), b.claim_identity(&theirs));
    let (got_a, got_b) = (got_a.unwrap(), got_b.unwrap());
    assert_eq!(got_a, got_b);
    assert!(got_a == mine || got_a == theirs, "{got_a:?}");
    // A later claim changes nothing.
    assert_eq!(
        a.claim_identity(&identity("cluster-c")).await.unwrap(),
        got_a
    );
    let stored = redis.cli(&["GET", &format!("{PREFIX}identity")]);
    let stored: ClusterIdentity = serde_json::from_str(stored.trim()).unwrap();
    assert_eq!(stored, got_a);
    // No TTL on the identity.
    assert_eq!(
        redis.cli(&["TTL", &format!("{PREFIX}identity")]).trim(),
        "-1"
    );
    assert_eq!(b.read().await.unwrap().identity, Some(got_a));
}

#[tokio::test]
async fn set_release_changes_only_the_matching_cluster() {
    let redis = Redis::plain();
    let store = open(target(&redis));
    // Nothing to update yet: not an error.
    store.set_release("cluster-a", 900).await.unwrap();
    assert_eq!(store.read().await.unwrap().identity, None);

    let claimed = store.claim_identity(&identity("cluster-a")).await.unwrap();
    store.set_release("cluster-b", 900).await.unwrap();
    assert_eq!(store.read().await.unwrap().identity, Some(claimed.clone()));
    store.set_release("cluster-a", 900).await.unwrap();
    let after = store.read().await.unwrap().identity.unwrap();
    assert_eq!(
        after,
        ClusterIdentity {
            release_sequence: 900,
            ..claimed
        }
    );

    // An identity the agent cannot read is reported, not overwritten.
    redis.cli(&["SET", &format!("{PREFIX}identity"), "garbage"]);
    let err = store.set_release("cluster-a", 901).await.unwrap_err();
    assert!(matches!(err, StoreError::Unreadable { .. }), "{err}");
    let err = store.read().await.unwrap_err();
    assert!(matches!(err, StoreError::Unreadable { .. }), "{err}");
    assert!(err.to_string().contains("identity"), "{err}");
    assert_eq!(
        redis.cli(&["GET", &format!("{PREFIX}identity")]).trim(),
        "garbage"
    );
}

#[tokio::test]
async fn leave_and_reset_remove_exactly_their_keys() {
    let redis = Redis::plain();
    let store = open(target(&redis));
    store.heartbeat(&record("i-a"), KEEP).await.unwrap();
    store.heartbeat(&record("i-b"), KEEP).await.unwrap();
    store.claim_identity(&identity("cluster-a")).await.unwrap();

    store.leave("i-a").await.unwrap();
    let snapshot = store.read().await.unwrap();
    assert_eq!(ids(&snapshot.members), ["i-b"]);
    assert_eq!(
        redis.cli(&["EXISTS", &format!("{PREFIX}node:i-a")]).trim(),
        "0"
    );
    let index = redis.cli(&["ZRANGE", &format!("{PREFIX}nodes"), "0", "-1"]);
    assert_eq!(index.trim(), "i-b");
    // Leaving twice is harmless.
    store.leave("i-a").await.unwrap();

    store.reset_identity().await.unwrap();
    let snapshot = store.read().await.unwrap();
    assert_eq!(snapshot.identity, None);
    assert_eq!(ids(&snapshot.members), ["i-b"]);
    let fresh = identity("cluster-new");
    assert_eq!(store.claim_identity(&fresh).await.unwrap(), fresh);
}

#[tokio::test]
async fn the_database_and_key_prefix_are_honoured() {
    let redis = Redis::plain();
    let store = open(StoreTarget {
        database: 3,
        key_prefix: "elsewhere/".into(),
        ..target(&redis)
    });
    store.heartbeat(&record("i-a"), KEEP).await.unwrap();
    store.claim_identity(&identity("cluster-a")).await.unwrap();
    assert!(redis.dump(0).is_empty(), "{:?}", redis.dump(0));
    let mut keys: Vec<String> = redis.dump(3).into_iter().map(|(k, _)| k).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "elsewhere/identity",
            "elsewhere/node:i-a",
            "elsewhere/nodes"
        ]
    );
}

/// The password of the AUTH tests: unusual characters (a URL would need escaping) and long
/// enough to be found anywhere it leaks.
const PASSWORD: &str = "p@ss:w/rd%20#leak-canary-7f3a";

#[tokio::test]
async fn auth_with_the_right_password_works_and_a_wrong_or_missing_one_says_so() {
    let redis = Redis::with_password(PASSWORD);
    let right = open(target(&redis));
    right.heartbeat(&record("i-a"), KEEP).await.unwrap();
    right.claim_identity(&identity("cluster-a")).await.unwrap();
    right.set_release("cluster-a", 813).await.unwrap();
    right.heartbeat(&record("i-b"), KEEP).await.unwrap();
    right.leave("i-b").await.unwrap();
    assert_eq!(ids(&right.read().await.unwrap().members), ["i-a"]);

    let address = format!("127.0.0.1:{}", redis.port);
    for password in [Some("wrong-password-canary-91"), None] {
        let store = open(StoreTarget {
            password: password.map(Secret::new),
            ..target(&redis)
        });
        let err = store.read().await.unwrap_err().to_string();
        assert!(err.contains(&address), "{err}");
        assert!(err.contains("authentication failed"), "{err}");
        assert!(!err.contains(PASSWORD), "{err}");
        if let Some(p) = password {
            assert!(!err.contains(p), "{err}");
        }
        // During the backoff a call fails at once, saying so.
        let again = store
            .heartbeat(&record("i-x"), KEEP)
            .await
            .unwrap_err()
            .to_string();
        assert!(again.contains("next try in"), "{again}");
        assert!(again.contains("authentication failed"), "{again}");
        eprintln!(
            "password {:?}: {err}\n  then: {again}",
            password.map(|_| "wrong")
        );
    }

    // Nothing the store wrote holds the password.
    let dump = redis.dump(0);
    assert!(!dump.is_empty());
    for (key, value) in &dump {
        assert!(
            !key.contains(PASSWORD) && !value.contains(PASSWORD),
            "{key}: {value}"
        );
    }
}

#[tokio::test]
async fn tls_with_the_right_ca_works_and_every_wrong_setup_names_its_problem() {
    let redis = Redis::start(RedisOptions {
        password: Some(PASSWORD.into()),
        tls: true,
        ..Default::default()
    });
    let store = open(target(&redis));
    store.heartbeat(&record("i-a"), KEEP).await.unwrap();
    assert_eq!(ids(&store.read().await.unwrap().members), ["i-a"]);
    let address = format!("127.0.0.1:{} over TLS", redis.port);

    let other_ca = tempfile::tempdir().unwrap();
    let wrong_ca = make_ca(other_ca.path(), "other-ca");
    let cases = [
        ("another CA", Some(wrong_ca), "unknown issuer"),
        // The system's roots do not know the test CA either.
        ("system roots", None, "unknown issuer"),
    ];
    for (what, ca_bundle, problem) in cases {
        let store = open(StoreTarget {
            ca_bundle,
            ..target(&redis)
        });
        let err = store.read().await.unwrap_err().to_string();
        eprintln!("{what}: {err}");
        assert!(
            err.contains(&address) && err.contains("TLS") && err.contains(problem),
            "{what}: {err}"
        );
        assert!(!err.contains(PASSWORD), "{err}");
    }

    // A plain client on the TLS port.
    let plain = open(StoreTarget {
        tls: false,
        ca_bundle: None,
        ..target(&redis)
    });
    let err = plain.read().await.unwrap_err().to_string();
    eprintln!("plain on TLS: {err}");
    assert!(
        err.contains(&format!("127.0.0.1:{} without TLS", redis.port)),
        "{err}"
    );
    assert!(err.contains("TLS"), "{err}");

    // A TLS client on a plain port.
    let plain_server = Redis::plain();
    let tls_client = open(StoreTarget {
        port: plain_server.port,
        ..target(&redis)
    });
    let err = tls_client.read().await.unwrap_err().to_string();
    eprintln!("TLS on plain: {err}");
    assert!(err.contains("plain port"), "{err}");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_a_name_mismatch() {
    let redis = Redis::start(RedisOptions {
        tls: true,
        tls_names: Some("DNS:redis.elsewhere.test".into()),
        ..Default::default()
    });
    let err = open(target(&redis)).read().await.unwrap_err().to_string();
    eprintln!("name mismatch: {err}");
    assert!(
        err.contains("name mismatch") && err.contains("127.0.0.1"),
        "{err}"
    );
}

#[tokio::test]
async fn a_refused_connection_names_the_address_and_backs_off() {
    let port = closed_port();
    let store = open(StoreTarget {
        host: "127.0.0.1".into(),
        port,
        password: Some(Secret::new(PASSWORD)),
        tls: false,
        ca_bundle: None,
        database: 0,
        key_prefix: PREFIX.into(),
    });
    let err = store.read().await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("refused"),
        "{err}"
    );
    let started = Instant::now();
    let again = store.read().await.unwrap_err().to_string();
    assert!(
        again.contains("next try in") && again.contains("refused"),
        "{again}"
    );
    // Not a speed assertion: a call during the backoff must not wait out the backoff itself.
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_killed_connection_is_replaced() {
    let redis = Redis::plain();
    let store = open(target(&redis));
    store.heartbeat(&record("i-a"), KEEP).await.unwrap();
    let before = redis.clients();
    assert_eq!(before.len(), 1, "{before:?}");
    redis.cli(&["CLIENT", "KILL", "ID", &before[0]]);
    // The dead connection is noticed by the next call, which tries once more on a new one.
    let mut tries = 0;
    loop {
        tries += 1;
        match store.heartbeat(&record("i-a"), KEEP).await {
            Ok(_) => break,
            Err(e) if tries < 2 => eprintln!("after CLIENT KILL: {e}"),
            Err(e) => panic!("no recovery after CLIENT KILL: {e}"),
        }
    }
    eprintln!("after CLIENT KILL: recovered on call {tries}");
    let after = redis.clients();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after, before);
}

#[tokio::test]
async fn after_flushall_the_next_heartbeat_writes_the_record_again() {
    let redis = Redis::plain();
    let store = open(target(&redis));
    store.heartbeat(&record("i-a"), KEEP).await.unwrap();
    store.claim_identity(&identity("cluster-a")).await.unwrap();
    redis.cli(&["FLUSHALL"]);
    assert!(redis.dump(0).is_empty());
    let snapshot = store.heartbeat(&record("i-a"), KEEP).await.unwrap();
    assert_eq!(ids(&snapshot.members), ["i-a"]);
    assert_eq!(snapshot.identity, None);
    assert_eq!(
        redis.cli(&["EXISTS", &format!("{PREFIX}node:i-a")]).trim(),
        "1"
    );
}

#[tokio::test]
async fn readonly_drops_the_connection_and_the_store_recovers_after_failover() {
    let redis = Redis::plain();
    let store = open(target(&redis));
    store.heartbeat(&record("i-a"), KEEP).await.unwrap();
    let before = redis.clients();
    // A replica of a primary that is not there: it keeps its data and refuses writes, as a
    // demoted ElastiCache primary does.
    redis.cli(&["REPLICAOF", "127.0.0.1", &closed_port().to_string()]);
    let err = store
        .heartbeat(&record("i-a"), KEEP)
        .await
        .unwrap_err()
        .to_string();
    eprintln!("on a replica: {err}");
    assert!(err.contains("READONLY"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{}", redis.port)), "{err}");
    // The connection was dropped (the server sees it go).
    eventually("the connection closed", Duration::from_secs(5), || {
        redis.clients().is_empty()
    })
    .await;
    redis.cli(&["REPLICAOF", "NO", "ONE"]);
    store.heartbeat(&record("i-a"), KEEP).await.unwrap();
    let after = redis.clients();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after, before);
}

#[tokio::test]
async fn a_connection_past_its_maximum_age_is_replaced() {
    let redis = Redis::plain();
    let store = RedisStores {
        limits: Limits {
            max_age: Duration::ZERO,
            ..Limits::default()
        },
    }
    .open(target(&redis));
    store.read().await.unwrap();
    let first = redis.clients();
    store.read().await.unwrap();
    eventually("the old connection closed", Duration::from_secs(5), || {
        let now = redis.clients();
        now.len() == 1 && now != first
    })
    .await;
}
