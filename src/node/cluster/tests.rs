//! The join guard and the membership loop on the fakes (an in-memory store shared by the nodes of
//! one test) under tokio's paused clock.

use super::*;
use crate::model::asg::HookResult;
use crate::model::lifecycle::Phase;
use crate::node::boot::{boot, BootError};
use crate::node::exit::Exit;
use crate::testing::fakes::{self, FakeStores, FakeWorld, Recorded, LAUNCH_HOOK};
use crate::testing::states::{self, INSTANCE};
use tokio::time::Instant;

fn clustered(rec: &Recorded) -> Settings {
    let mut cfg = rec.settings();
    cfg.cluster.enabled = Some(true);
    cfg
}

async fn run(world: &FakeWorld, cfg: &Settings, rec: &Recorded) -> Result<(), BootError> {
    fakes::within(
        Duration::from_secs(3600),
        boot(world, cfg, &fakes::identity(), &rec.recorder),
    )
    .await
    .map(drop)
}

/// A cluster's identity, created with `enc_password` and `release`.
fn identity_of(enc_password: &str, release: u64) -> ClusterIdentity {
    let salt = "00112233445566778899aabbccddeeff".to_string();
    ClusterIdentity {
        cluster_id: "c-1".into(),
        enc_password: fingerprint::fingerprint(&salt, "enc_password", enc_password),
        salt,
        release_sequence: release,
        created_at: 1,
    }
}

fn member(instance: &str, release: u64) -> MemberRecord {
    MemberRecord {
        instance_id: instance.into(),
        private_ip: "10.0.0.9".into(),
        availability_zone: "us-east-1b".into(),
        phase: Phase::InService,
        release_sequence: release,
        agent_version: "0.1.0".into(),
        launched_at: 1,
        last_seen: 0,
        fingerprints: BTreeMap::new(),
        live_fingerprints: BTreeMap::new(),
        last_error: None,
    }
}

/// The enc_password the fakes' shared secret holds.
fn our_enc_password() -> String {
    crate::testing::valid_shared()["enc_password"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(start_paused = true)]
async fn the_first_node_waits_one_ttl_then_creates_the_cluster_and_heartbeats() {
    let stores = FakeStores::default();
    let w = fakes::world().stores(stores.clone()).build();
    let rec = Recorded::new(states::fresh());
    let cfg = clustered(&rec);
    let start = Instant::now();

    run(&w, &cfg, &rec).await.expect("the boot succeeds");

    assert!(
        start.elapsed() >= cfg.cluster.node_ttl,
        "waited one node TTL"
    );
    let identity = stores
        .data
        .lock()
        .unwrap()
        .identity
        .clone()
        .expect("created");
    assert_eq!(identity.release_sequence, 504);
    assert_eq!(
        identity.enc_password,
        fingerprint::fingerprint(&identity.salt, "enc_password", &our_enc_password())
    );
    // The membership loop runs on: this node's record, in service, with every fingerprint.
    tokio::time::sleep(cfg.cluster.heartbeat_interval * 2).await;
    let data = stores.data.lock().unwrap();
    let (me, _) = data.members.get(INSTANCE).expect("this node's record");
    assert_eq!(me.phase, Phase::InService);
    assert_eq!(me.availability_zone, "us-east-1a");
    assert_eq!(me.fingerprints.len(), cfg.cluster.must_match.len());
    assert!(me.fingerprints.values().all(|f| f.len() == 16));
    let secret = our_enc_password();
    let text = serde_json::to_string(me).unwrap();
    assert!(!text.contains(&secret), "no value in the record");
}

#[tokio::test(start_paused = true)]
async fn a_node_with_another_enc_password_is_refused_before_anything_is_written() {
    let stores = FakeStores::default();
    let w = fakes::world().stores(stores.clone()).build();
    let rec = Recorded::new(states::fresh());
    let cfg = clustered(&rec);
    stores.data.lock().unwrap().identity = Some(identity_of("another-enc-password", 504));

    let error = run(&w, &cfg, &rec).await.expect_err("refused");

    assert!(matches!(error, BootError::JoinRefused(_)), "{error:?}");
    assert_eq!(Exit::of_boot(&error), Exit::Cluster);
    assert!(
        crate::error_chain(&error).contains("enc_password differs from the cluster's"),
        "{}",
        crate::error_chain(&error)
    );
    assert!(w.tfe.installs().is_empty(), "install.sh never ran");
    assert!(!cfg.paths.settings.exists(), "no TFE file written");
    assert_eq!(
        w.asg
            .completions_of(LAUNCH_HOOK)
            .iter()
            .map(|c| c.1)
            .collect::<Vec<_>>(),
        [HookResult::Abandon],
        "ABANDON whatever on_failure says"
    );
    assert_eq!(rec.recorder.phase(), Phase::BootFailed);
    let view = rec.recorder.subscribe();
    let last = view.borrow().last_error.clone().expect("shown in /status");
    assert!(
        last.chain.contains("enc_password differs"),
        "{}",
        last.chain
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        !stores.data.lock().unwrap().members.contains_key(INSTANCE),
        "a refused node never heartbeats"
    );
}

#[tokio::test(start_paused = true)]
async fn another_release_is_refused_while_a_member_runs_the_old_one_and_accepted_once_it_is_gone() {
    let stores = FakeStores::default();
    let rec = Recorded::new(states::fresh());
    let cfg = clustered(&rec);
    stores.data.lock().unwrap().identity = Some(identity_of(&our_enc_password(), 503));
    stores.add_member(member("i-old", 503), Duration::from_secs(60));

    let w = fakes::world().stores(stores.clone()).build();
    let error = run(&w, &cfg, &rec).await.expect_err("refused");
    let chain = crate::error_chain(&error);
    assert!(
        chain.contains("release 504") && chain.contains("i-old") && chain.contains("503"),
        "{chain}"
    );
    assert!(w.tfe.installs().is_empty());

    // The old node drained and went (its record expired): the repave's first new node joins
    // and the cluster now runs its release.
    tokio::time::sleep(Duration::from_secs(61)).await;
    let rec = Recorded::new(states::fresh());
    let w = fakes::world().stores(stores.clone()).build();
    run(&w, &cfg, &rec).await.expect("joins");
    assert_eq!(
        stores
            .data
            .lock()
            .unwrap()
            .identity
            .as_ref()
            .unwrap()
            .release_sequence,
        504
    );
}

#[tokio::test(start_paused = true)]
async fn a_store_that_is_down_degrades_the_view_and_never_stops_the_boot() {
    let stores = FakeStores::down();
    let w = fakes::world().stores(stores.clone()).build();
    let rec = Recorded::new(states::fresh());
    let cfg = clustered(&rec);
    let start = Instant::now();

    run(&w, &cfg, &rec).await.expect("the boot succeeds");

    assert!(
        start.elapsed() < Duration::from_secs(60),
        "no long wait on the store"
    );
    assert_eq!(rec.recorder.phase(), Phase::InService);
    assert_eq!(w.tfe.installs().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_values_tfe_runs_are_published_as_fingerprints_with_the_clusters_salt() {
    let stores = FakeStores::default();
    let w = fakes::world().stores(stores.clone()).build();
    let rec = Recorded::new(states::fresh());
    let cfg = clustered(&rec);
    run(&w, &cfg, &rec).await.expect("the boot succeeds");
    let record = || {
        stores
            .data
            .lock()
            .unwrap()
            .members
            .get(INSTANCE)
            .expect("this node's record")
            .0
            .clone()
    };
    tokio::time::sleep(cfg.cluster.heartbeat_interval * 2).await;
    assert!(
        record().live_fingerprints.is_empty(),
        "nothing compared yet: nothing said about TFE"
    );

    // The drift loop read TFE's values: the rendered ones, so the same fingerprints.
    let shared = crate::testing::valid_shared();
    let rendered: BTreeMap<String, Secret> = cfg
        .cluster
        .must_match
        .iter()
        .map(|k| (k.clone(), Secret::new(shared[k].as_str().unwrap())))
        .collect();
    let publish = rec.recorder.publisher();
    publish.live_values(Some(Arc::new(rendered.clone())));
    tokio::time::sleep(cfg.cluster.heartbeat_interval * 2).await;
    let me = record();
    assert_eq!(me.live_fingerprints, me.fingerprints);

    // enc_password changed live: its live fingerprint is the new value's, with the same salt.
    let mut changed = rendered;
    changed.insert("enc_password".into(), Secret::new("enc-changed-live-4b1d"));
    publish.live_values(Some(Arc::new(changed)));
    tokio::time::sleep(cfg.cluster.heartbeat_interval * 2).await;
    let me = record();
    let salt = stores.data.lock().unwrap().identity.clone().unwrap().salt;
    assert_eq!(
        me.live_fingerprints["enc_password"],
        fingerprint::fingerprint(&salt, "enc_password", "enc-changed-live-4b1d")
    );
    assert_ne!(
        me.live_fingerprints["enc_password"],
        me.fingerprints["enc_password"]
    );
    assert_eq!(
        me.live_fingerprints
            .iter()
            .filter(|(k, _)| *k != "enc_password")
            .collect::<Vec<_>>(),
        me.fingerprints
            .iter()
            .filter(|(k, _)| *k != "enc_password")
            .collect::<Vec<_>>()
    );
    let text = serde_json::to_string(&me).unwrap();
    assert!(!text.contains("enc-changed-live-4b1d") && !text.contains(&our_enc_password()));
}
