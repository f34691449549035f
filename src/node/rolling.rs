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
