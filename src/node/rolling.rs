//! This node's turn in a rolling app restart (`app restart --rolling`): when the current rollout
//! lists this node and it has not restarted yet, take the lease (an owner and a fencing token in
//! the cluster store), ask the service loop for the usual `app restart` (`/readyz` 503, stop,
//! start, readiness), renew the lease every heartbeat while it runs, record the turn under the
//! lease's token, and give the lease up. One node at a time: the others find the lease held and
//! keep serving. A holder that dies stops renewing: its lease expires and the next node goes.

use crate::model::rollout::{LeaseAnswer, Rollout, TurnOutcome};
use crate::node::operator::{Ask, Door, Verdict};
use crate::node::view::{RestartStep, View};
use crate::ports::cluster::{RolloutStore, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The lease is kept this many heartbeat intervals: a missed renewal or two is no hand-over.
pub const LEASE_HEARTBEATS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error("reading the rollout failed")]
    Read(#[source] StoreError),
    #[error("taking the rolling restart's lease failed")]
    Acquire(#[source] StoreError),
    #[error("recording this node's turn in rollout {id} failed")]
    Finish {
        id: String,
        #[source]
        source: StoreError,
    },
}

/// What the membership loop hands a turn.
pub struct Turn<S> {
    pub store: Arc<S>,
    pub door: Door,
    pub view: watch::Receiver<View>,
    pub instance_id: String,
    pub heartbeat: Duration,
}

/// Whether `rollout` waits for this node: the cheap check before a turn is spawned.
pub fn my_turn(rollout: Option<&Rollout>, instance_id: &str) -> bool {
    rollout.is_some_and(|r| r.waits_for(instance_id))
}

/// One attempt at this node's turn: nothing when the lease is held by another node (the next
/// heartbeat tries again) or the rollout no longer waits for this node.
pub async fn take_turn<S: RolloutStore>(turn: Turn<S>) -> Result<(), TurnError> {
    let ttl = turn.heartbeat * LEASE_HEARTBEATS;
    let me = turn.instance_id.as_str();
    let lease = match turn.store.acquire_lease(me, ttl).await {
        Ok(LeaseAnswer::Acquired(l)) => l,
        Ok(LeaseAnswer::Held(holder)) => {
            log::debug!(
                "rolling restart: waiting for the lease ({} holds it, token {})",
                holder.owner,
                holder.token
            );
            return Ok(());
        }
        Err(e) => return Err(TurnError::Acquire(e)),
    };
    // Read again under the lease: the rollout may have ended, or this node's turn been recorded,
    // since the membership loop looked.
    let rollout = match turn.store.read_rollout().await {
        Ok(status) => status.rollout.filter(|r| r.waits_for(me)),
        Err(e) => {
            release(&*turn.store, lease.token).await;
            return Err(TurnError::Read(e));
        }
    };
    let Some(rollout) = rollout else {
        release(&*turn.store, lease.token).await;
        return Ok(());
    };
    log::warn!(
        "rolling restart {} (requested by {}): this node's turn (lease token {}); {}",
        rollout.id,
        rollout.requested_by,
        lease.token,
        rollout.progress()
    );
    let outcome = restart_holding(&turn, &rollout.id, lease.token, ttl).await;
    let recorded = turn
        .store
        .finish_turn(&rollout.id, me, lease.token, &outcome)
        .await;
    release(&*turn.store, lease.token).await;
    match recorded {
        Ok(Ok(after)) => {
            log::warn!(
                "rolling restart {}: this node's turn recorded: {}",
                after.id,
                after.progress()
            );
            Ok(())
        }
        Ok(Err(refusal)) => {
            // A stale holder (its lease expired and was taken over): its answer changes nothing.
            log::error!("rolling restart {}: {refusal}", rollout.id);
            Ok(())
        }
        Err(source) => Err(TurnError::Finish {
            id: rollout.id,
            source,
        }),
    }
}

async fn release<S: RolloutStore>(store: &S, token: u64) {
    match store.release_lease(token).await {
        Ok(true) => {}
        Ok(false) => {
            log::warn!("rolling restart: the lease (token {token}) was no longer ours to release");
        }
        Err(e) => log::warn!(
            "rolling restart: releasing the lease failed: {}; it expires",
            crate::error_chain(&e)
        ),
    }
}

/// Asks the service loop for the app restart and waits for its end, renewing the lease every
/// heartbeat. The restart is bounded by its own timeouts (the app's stop, readiness).
async fn restart_holding<S: RolloutStore>(
    turn: &Turn<S>,
    rollout_id: &str,
    token: u64,
    ttl: Duration,
) -> TurnOutcome {
    let by = format!("rolling restart {rollout_id}");
    let answer = match turn.door.ask(Ask::AppRestart, &by).await {
        Some(a) => a,
        None => {
            return TurnOutcome::Failed(
                "the agent's service loop did not take the app restart".into(),
            )
        }
    };
    if answer.verdict != Verdict::Accepted {
        return TurnOutcome::Failed(format!(
            "the node refused the app restart: {}",
            answer.message
        ));
    }
    let mut view = turn.view.clone();
    let ended = |v: &View| {
        v.app_restart
            .as_ref()
            .is_some_and(|r| r.by == by && !r.step.running())
    };
    loop {
        tokio::select! {
            seen = async { view.wait_for(ended).await.map(|v| v.app_restart.clone()) } => {
                let Ok(Some(r)) = seen else {
                    return TurnOutcome::Failed("the agent is stopping".into());
                };
                let detail = r.detail.unwrap_or_default();
                return match r.step {
                    RestartStep::Succeeded => TurnOutcome::Restarted,
                    step => TurnOutcome::Failed(format!("app restart {}: {detail}", step_name(step))),
                };
            }
            () = tokio::time::sleep(turn.heartbeat) => match turn.store.renew_lease(token, ttl).await {
                Ok(true) => {}
                Ok(false) => log::error!("rolling restart {rollout_id}: the lease (token {token}) was lost; this turn will not be recorded"),
                Err(e) => log::warn!("rolling restart {rollout_id}: renewing the lease failed: {}", crate::error_chain(&e)),
            },
        }
    }
}

fn step_name(step: RestartStep) -> &'static str {
    match step {
        RestartStep::Stopping => "stopping",
        RestartStep::Starting => "starting",
        RestartStep::Succeeded => "succeeded",
        RestartStep::NotReady => "not ready",
        RestartStep::Failed => "failed",
        RestartStep::Interrupted => "interrupted",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rollout::{Rollout, RolloutState};
    use crate::node::operator;
    use crate::node::view::AppRestartView;
    use crate::ports::cluster::{ClusterStores, StoreTarget};
    use crate::testing::fakes::{FakeStore, FakeStores};
    use crate::testing::states::in_service;

    const BEAT: Duration = Duration::from_secs(1);

    fn store(stores: &FakeStores) -> Arc<FakeStore> {
        Arc::new(stores.open(StoreTarget {
            host: "fake".into(),
            port: 6379,
            password: None,
            tls: false,
            ca_bundle: None,
            database: 0,
            key_prefix: "p:".into(),
        }))
    }

    fn rollout(ids: &[&str]) -> Rollout {
        Rollout {
            id: "r1".into(),
            requested_by: "alice".into(),
            requested_at: 1,
            instances: ids.iter().map(|s| s.to_string()).collect(),
            done: vec![],
            state: RolloutState::Running,
            failure: None,
        }
    }

    /// A service loop that takes one app restart and ends it with `step` after `takes`.
    fn service(
        mut inbox: operator::Inbox,
        view: watch::Sender<View>,
        step: RestartStep,
        takes: Duration,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let request = inbox.next().await;
            let by = request.by.clone();
            request.answer(operator::Answer::accepted("ok"));
            tokio::time::sleep(takes).await;
            view.send_modify(|v| {
                v.app_restart = Some(AppRestartView {
                    by,
                    step,
                    started_at: 1,
                    ended_at: Some(2),
                    detail: Some("why".into()),
                });
            });
        })
    }

    fn turn(
        store: &Arc<FakeStore>,
        door: Door,
        view: &watch::Sender<View>,
        me: &str,
    ) -> Turn<FakeStore> {
        Turn {
            store: store.clone(),
            door,
            view: view.subscribe(),
            instance_id: me.into(),
            heartbeat: BEAT,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_turn_restarts_renews_the_lease_while_it_runs_records_and_releases() {
        let stores = FakeStores::default();
        let s = store(&stores);
        s.start_rollout(&rollout(&["i-1", "i-2"]), None)
            .await
            .unwrap();
        let (door, inbox) = operator::door();
        let (view, _) = watch::channel(View::of_state(&in_service(), 1, None, None));
        // Longer than the lease (3 beats): it must be renewed to be recorded.
        let svc = service(inbox, view.clone(), RestartStep::Succeeded, BEAT * 10);
        take_turn(turn(&s, door, &view, "i-1")).await.unwrap();
        svc.await.unwrap();
        let status = s.read_rollout().await.unwrap();
        assert_eq!(status.rollout.unwrap().done, ["i-1"]);
        assert_eq!(status.lease, None);
        let calls = stores.data.lock().unwrap().calls.clone();
        assert!(
            calls.iter().filter(|c| c.starts_with("renew")).count() >= 9,
            "{calls:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_lease_means_no_turn_and_a_failed_restart_stops_the_rollout() {
        let stores = FakeStores::default();
        let s = store(&stores);
        s.start_rollout(&rollout(&["i-1", "i-2"]), None)
            .await
            .unwrap();
        let other = s.acquire_lease("i-2", BEAT * 3).await.unwrap();
        let (door, inbox) = operator::door();
        let (view, _) = watch::channel(View::of_state(&in_service(), 1, None, None));
        take_turn(turn(&s, door.clone(), &view, "i-1"))
            .await
            .unwrap();
        assert!(s
            .read_rollout()
            .await
            .unwrap()
            .rollout
            .unwrap()
            .done
            .is_empty());
        // The holder dies: its lease expires and this node goes; its restart does not come back.
        tokio::time::sleep(BEAT * 4).await;
        let svc = service(inbox, view.clone(), RestartStep::NotReady, BEAT);
        take_turn(turn(&s, door, &view, "i-1")).await.unwrap();
        svc.await.unwrap();
        let r = s.read_rollout().await.unwrap().rollout.unwrap();
        assert_eq!(r.state, RolloutState::Stopped);
        assert_eq!(r.failure.unwrap().why, "app restart not ready: why");
        // The dead holder's late answer is fenced.
        let LeaseAnswer::Acquired(old) = other else {
            panic!()
        };
        let late = s
            .finish_turn("r1", "i-2", old.token, &TurnOutcome::Restarted)
            .await
            .unwrap();
        assert!(late.is_err());
        assert!(!s.release_lease(old.token).await.unwrap());
    }
}
