//! The orchestrator over an in-memory group (capacity converges at once, see
//! `testing::fakes::groups`) and the fake cluster store, the nodes' part played by the test
//! (a launched node joins in service on its version's release, a removed one leaves), under
//! tokio's paused clock. The real moving parts are in tests/repave.rs.

use super::progress::{Progress, Style};
use super::{run, RepaveError, Request};
use crate::model::asg::{LifecycleState, TemplateRef, Transition};
use crate::model::cluster::{ClusterIdentity, MemberRecord};
use crate::model::lifecycle::Phase;
use crate::model::repave::{OnFailure, Pass, Plan, Repave, RepaveState, Step};
use crate::ports::cluster::{ClusterStores, RepaveStore, StoreTarget};
use crate::ports::{GroupInfo, GroupInstance, HookInfo, TemplateVersion};
use crate::testing::fakes::{self, FakeGroups, FakeStores, FakeWorld};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const GROUP: &str = "tfe-asg";

fn release_of(version: u64) -> u64 {
    503 + version
}

fn versions() -> Vec<TemplateVersion> {
    (1..=2)
        .map(|v| TemplateVersion {
            template_id: "lt-0abc".into(),
            template_name: "tfe".into(),
            version: v,
            default_version: v == 1,
            user_data: Some(format!(
                "#cloud-config\nwrite_files:\n  - content: |\n      release_sequence = {}\n",
                release_of(v)
            )),
        })
        .collect()
}

fn instance(id: &str, version: &str) -> GroupInstance {
    GroupInstance {
        instance_id: id.into(),
        lifecycle_state: LifecycleState::InService,
        health_status: "Healthy".into(),
        availability_zone: "us-east-1a".into(),
        template_version: Some(version.into()),
    }
}

fn group() -> GroupInfo {
    GroupInfo {
        name: GROUP.into(),
        min_size: 2,
        max_size: 4,
        desired_capacity: 2,
        launch_template: Some(TemplateRef {
            id: Some("lt-0abc".into()),
            name: None,
            version: "1".into(),
        }),
        instances: vec![instance("i-old-1", "1"), instance("i-old-2", "1")],
        suspended: vec![],
    }
}

fn hook(name: &str, transition: Transition) -> HookInfo {
    HookInfo {
        name: name.into(),
        transition,
        heartbeat_timeout: Duration::from_secs(300),
        global_timeout: Duration::from_secs(3600),
        default_result: "ABANDON".into(),
    }
}

fn hooks() -> Vec<HookInfo> {
    vec![
        hook("tfe-launch", Transition::Launching),
        hook("tfe-terminate", Transition::Terminating),
    ]
}

fn member(id: &str, release: u64) -> MemberRecord {
    MemberRecord {
        instance_id: id.into(),
        private_ip: "10.0.0.9".into(),
        availability_zone: "us-east-1a".into(),
        phase: Phase::InService,
        release_sequence: release,
        agent_version: "0.1.0".into(),
        launched_at: 1,
        last_seen: 0,
        fingerprints: [("enc_password".to_string(), "ff".to_string())].into(),
        live_fingerprints: BTreeMap::new(),
        last_error: None,
    }
}

/// A cluster of the two old nodes on release 504, and a group whose launched nodes join it.
fn cluster(groups: FakeGroups) -> (FakeWorld, FakeStores) {
    let stores = FakeStores::default();
    stores.data.lock().unwrap().identity = Some(ClusterIdentity {
        cluster_id: "c-1".into(),
        salt: "00".into(),
        enc_password: "ff".into(),
        release_sequence: 504,
        created_at: 1,
    });
    for id in ["i-old-1", "i-old-2"] {
        stores.add_member(member(id, 504), Duration::from_secs(3600));
    }
    let (joins, leaves) = (stores.clone(), stores.clone());
    let groups = groups.on_changes(
        Arc::new(move |id: &str, version: u64| {
            // The node boots, joins in service; the first of a release records it (a repave).
            joins.add_member(member(id, release_of(version)), Duration::from_secs(3600));
            if let Some(identity) = joins.data.lock().unwrap().identity.as_mut() {
                identity.release_sequence = release_of(version);
            }
        }),
        Arc::new(move |id: &str| {
            leaves.data.lock().unwrap().members.remove(id);
        }),
    );
    let w = fakes::world().groups(groups).stores(stores.clone()).build();
    (w, stores)
}

fn target() -> StoreTarget {
    StoreTarget {
        host: "redis.internal".into(),
        port: 6379,
        password: None,
        tls: false,
        ca_bundle: None,
        database: 0,
        key_prefix: "tfe-node-agent:".into(),
    }
}

fn request(version: &str) -> Request {
    Request {
        group: GROUP.into(),
        version: version.into(),
        capacity: None,
        validate_cmd: None,
        validate_timeout: Duration::from_secs(60),
        on_failure: OnFailure::Stop,
        dry_run: false,
        resume: false,
        force: false,
        poll: Duration::from_secs(1),
        lease_ttl: Duration::from_secs(15),
        node_ttl: Duration::from_secs(3600),
        max_nodes: None,
        owner: "ops on laptop".into(),
    }
}

async fn repave(w: &FakeWorld, req: &Request) -> Result<Option<Repave>, RepaveError> {
    let store = w.stores.open(target());
    run(
        w,
        &store,
        req,
        &mut Progress::new(Style::Lines),
        &|_: &str| true,
    )
    .await
}

const FORWARD_CALLS: [&str; 6] = [
    "suspend AZRebalance,ReplaceUnhealthy,ScheduledActions",
    "update min=0 desired=0",
    "update version=2",
    "update desired=1",
    "update min=2 max=4 desired=2",
    "resume AZRebalance,ReplaceUnhealthy,ScheduledActions",
];

#[tokio::test(start_paused = true)]
async fn a_repave_drains_to_zero_points_brings_one_validates_then_the_rest() {
    let (w, stores) = cluster(FakeGroups::new(group(), hooks(), versions()));
    let done = repave(&w, &request("2")).await.unwrap().unwrap();
    assert_eq!(done.state, RepaveState::Done, "{}", done.report());
    assert_eq!(w.groups.calls(), FORWARD_CALLS);
    let g = w.groups.group().unwrap();
    assert_eq!(g.launch_template.unwrap().version, "2");
    assert!(g
        .instances
        .iter()
        .all(|i| i.template_version.as_deref() == Some("2")));
    assert_eq!(g.instances.len(), 2);
    assert_eq!(done.plan.from_release, Some(504));
    assert_eq!(done.plan.to_release, Some(505));
    assert!(done.downtime_ms().is_some(), "{}", done.report());
    // The record says the same, and the lease is given back.
    let data = stores.data.lock().unwrap();
    assert_eq!(data.repave.as_ref().unwrap().state, RepaveState::Done);
    assert!(data.repave_lease.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_dry_run_changes_nothing_and_records_nothing() {
    let (w, stores) = cluster(FakeGroups::new(group(), hooks(), versions()));
    let req = Request {
        dry_run: true,
        ..request("$Latest")
    };
    assert!(repave(&w, &req).await.unwrap().is_none());
    assert!(w.groups.calls().is_empty());
    let data = stores.data.lock().unwrap();
    assert!(data.repave.is_none() && data.repave_lease.is_none());
}

async fn refusal(w: &FakeWorld, req: &Request) -> String {
    match repave(w, req).await {
        Err(e @ (RepaveError::Refused(_) | RepaveError::LeaseHeld { .. })) => {
            assert!(w.groups.calls().is_empty(), "a refusal changed the group");
            crate::error_chain(&e)
        }
        other => panic!("not refused: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn checks_refuse_before_anything_changes() {
    let (w, _) = cluster(FakeGroups::new(group(), hooks(), versions()));
    assert!(refusal(&w, &request("1"))
        .await
        .contains("already runs lt-0abc version 1"));
    assert!(refusal(&w, &request("$Default"))
        .await
        .contains("nothing to repave"));
    assert!(refusal(&w, &request("9"))
        .await
        .contains("version 9 does not exist"));
    let other = Request {
        group: "other".into(),
        ..request("2")
    };
    assert!(refusal(&w, &other)
        .await
        .contains("group other does not exist"));

    let mut one_hook = hooks();
    one_hook.pop();
    let (w, _) = cluster(FakeGroups::new(group(), one_hook, versions()));
    assert!(refusal(&w, &request("2"))
        .await
        .contains("needs both lifecycle hooks"));

    let mut no_template = group();
    no_template.launch_template = None;
    let (w, _) = cluster(FakeGroups::new(no_template, hooks(), versions()));
    assert!(refusal(&w, &request("2"))
        .await
        .contains("does not launch from a launch template"));

    // A live node on another release: the view is not consistent (unless --force).
    let (w, stores) = cluster(FakeGroups::new(group(), hooks(), versions()));
    stores.add_member(member("i-stray", 503), Duration::from_secs(3600));
    let why = refusal(&w, &request("2")).await;
    assert!(
        why.contains("the cluster view is not consistent") && why.contains("--force"),
        "{why}"
    );
}

#[tokio::test(start_paused = true)]
async fn one_repave_at_a_time_and_resume_only_what_exists() {
    let (w, stores) = cluster(FakeGroups::new(group(), hooks(), versions()));
    let store = w.stores.open(target());
    store
        .acquire_repave_lease("ops on other laptop (pid 7)", Duration::from_secs(15))
        .await
        .unwrap();
    let why = refusal(&w, &request("2")).await;
    assert!(why.contains("held by ops on other laptop (pid 7)"), "{why}");

    let resume = Request {
        resume: true,
        ..request("2")
    };
    stores.data.lock().unwrap().repave_lease = None;
    assert!(refusal(&w, &resume)
        .await
        .contains("there is no repave to resume"));
}

/// A record as an orchestrator killed during the drain leaves it.
fn interrupted(plan: Plan) -> Repave {
    let mut r = Repave::new("repave-1".into(), "ops".into(), 1, plan);
    r.start(Step::Suspend, 2);
    r.finish(Step::Suspend, 3, "suspended".into());
    r.start(Step::Drain, 4);
    r
}

#[tokio::test(start_paused = true)]
async fn resume_continues_the_interrupted_step_and_repeats_none_that_ended() {
    let (w, stores) = cluster(FakeGroups::new(group(), hooks(), versions()));
    // The plan the killed orchestrator made (a dry run makes the same).
    let planned = super::plan::make(&w, &w.stores.open(target()), &request("2"))
        .await
        .ok()
        .unwrap()
        .plan;
    stores.data.lock().unwrap().repave = Some(interrupted(planned));
    // A new repave is refused while it has not ended.
    assert!(refusal(&w, &request("2"))
        .await
        .contains("continue it with `repave --resume`"));

    let req = Request {
        resume: true,
        ..request("2")
    };
    let done = repave(&w, &req).await.unwrap().unwrap();
    assert_eq!(done.state, RepaveState::Done, "{}", done.report());
    assert_eq!(
        w.groups.calls(),
        FORWARD_CALLS[1..],
        "suspend is not repeated"
    );
    let drain = done.steps.iter().find(|s| s.step == Step::Drain).unwrap();
    assert_eq!((drain.starts, drain.started_ms), (2, 4));
    let suspend = done.steps.iter().find(|s| s.step == Step::Suspend).unwrap();
    assert_eq!(suspend.starts, 1);
}

#[tokio::test(start_paused = true)]
async fn a_new_node_that_fails_its_boot_stops_the_repave_at_desired_zero() {
    let (w, _) = cluster(FakeGroups::new(group(), hooks(), versions()).failing(2));
    let stopped = repave(&w, &request("2")).await.unwrap().unwrap();
    assert_eq!(stopped.state, RepaveState::Stopped);
    let failure = stopped.failure.as_ref().unwrap();
    assert_eq!((failure.step, failure.pass), (Step::First, Pass::Forward));
    assert!(
        failure
            .why
            .contains("i-fake-1 was abandoned before it entered service"),
        "{}",
        failure.why
    );
    assert_eq!(
        w.groups.calls(),
        [
            FORWARD_CALLS[0],
            FORWARD_CALLS[1],
            FORWARD_CALLS[2],
            FORWARD_CALLS[3],
            "update desired=0",
            FORWARD_CALLS[5],
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn with_rollback_the_previous_version_comes_back_the_same_way() {
    let (w, stores) = cluster(FakeGroups::new(group(), hooks(), versions()).failing(2));
    let req = Request {
        on_failure: OnFailure::Rollback,
        ..request("2")
    };
    let back = repave(&w, &req).await.unwrap().unwrap();
    assert_eq!(back.state, RepaveState::RolledBack, "{}", back.report());
    let g = w.groups.group().unwrap();
    assert_eq!(g.launch_template.unwrap().version, "1");
    assert_eq!(g.instances.len(), 2);
    assert!(g
        .instances
        .iter()
        .all(|i| i.template_version.as_deref() == Some("1")
            && i.lifecycle_state == LifecycleState::InService));
    let releases: Vec<u64> = stores
        .data
        .lock()
        .unwrap()
        .members
        .values()
        .map(|(m, _)| m.release_sequence)
        .collect();
    assert_eq!(releases, [504, 504]);
    assert!(w.groups.calls().contains(&"update version=1".to_string()));
}
