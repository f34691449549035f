//! `app restart --rolling`: starts a rollout over the live in-service members (refused while
//! one runs) and follows it until it ends, printing each node's turn. The nodes' agents do the
//! work (`crate::node::rolling`); this command only writes the request and reads.

use crate::config::Settings;
use crate::model::rollout::{Rollout, RolloutRefusal, RolloutState};
use crate::node::exit::Exit;
use crate::node::rolling::LEASE_HEARTBEATS;
use crate::ports::cluster::{ClusterStore, RolloutStatus, RolloutStore, StoreError};
use crate::tfe_files::fingerprint;
use std::time::Duration;

/// How often the rollout is read while it is followed.
const POLL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RollingError {
    #[error("reading the cluster store failed")]
    Read(#[source] StoreError),
    #[error("starting the rollout failed")]
    Start(#[source] StoreError),
    #[error("the rolling restart was refused")]
    Refused(#[source] RolloutRefusal),
    #[error("creating the rollout's id failed: {0}")]
    Id(String),
}

impl RollingError {
    pub fn exit(&self) -> Exit {
        match self {
            RollingError::Read(_) | RollingError::Start(_) => Exit::ClusterStore,
            RollingError::Refused(_) => Exit::Refused,
            RollingError::Id(_) => Exit::Internal,
        }
    }
}

/// Writes a new rollout over the live in-service members.
pub async fn start<S: ClusterStore + RolloutStore>(
    store: &S,
    cfg: &Settings,
    by: String,
) -> Result<Rollout, RollingError> {
    let snapshot = store.read().await.map_err(RollingError::Read)?;
    let current = store.read_rollout().await.map_err(RollingError::Read)?;
    let id = fingerprint::new_salt().map_err(|e| RollingError::Id(e.to_string()))?;
    let id = format!("r-{}", &id[..12.min(id.len())]);
    let rollout = Rollout::plan(
        id,
        by,
        &snapshot,
        cfg.cluster.node_ttl,
        current.rollout.as_ref(),
    )
    .map_err(RollingError::Refused)?;
    // A running one that passed the plan waits only for nodes gone: it is replaced, and said.
    let replaces = current
        .rollout
        .as_ref()
        .filter(|r| r.state == RolloutState::Running);
    if let Some(old) = replaces {
        eprintln!(
            "rollout {} ({}) waits only for nodes no longer in service: replacing it",
            old.id,
            old.progress()
        );
    }
    match store
        .start_rollout(&rollout, replaces.map(|r| r.id.as_str()))
        .await
    {
        Ok(None) => Ok(rollout),
        Ok(Some(running)) => Err(RollingError::Refused(running.refusal())),
        Err(e) => Err(RollingError::Start(e)),
    }
}

/// How long following is worth it: every node's restart at its longest, and a lease hand-over
/// (an expiry) for each.
pub fn follow_bound(cfg: &Settings, nodes: usize) -> Duration {
    let turn = cfg.drain.app_stop_timeout
        + cfg.readiness.timeout
        + cfg.cluster.heartbeat_interval * (LEASE_HEARTBEATS + 2);
    turn * nodes.max(1) as u32 + Duration::from_secs(30)
}

/// Follows rollout `id` until it ends or `bound` passes, printing each change.
pub async fn follow<S: RolloutStore>(store: &S, id: &str, bound: Duration) -> Exit {
    let deadline = tokio::time::Instant::now() + bound;
    let mut said = String::new();
    loop {
        let status = match store.read_rollout().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("following the rollout: {}", crate::error_chain(&e));
                RolloutStatus::default()
            }
        };
        if let Some(r) = status.rollout.as_ref().filter(|r| r.id == id) {
            let holder = status
                .lease
                .as_ref()
                .map(|l| {
                    format!(
                        "; restarting: {} (lease token {}, {}s)",
                        l.owner,
                        l.token,
                        status.now.saturating_sub(l.since)
                    )
                })
                .unwrap_or_default();
            let line = format!(
                "{}{}",
                r.progress(),
                if r.state == RolloutState::Running {
                    holder.clone()
                } else {
                    String::new()
                }
            );
            // Seconds held change every poll: say a line when the rest changes.
            let key = format!(
                "{} {:?} {:?}",
                r.progress(),
                status.lease.as_ref().map(|l| l.token),
                r.state
            );
            if key != said {
                println!("rollout {id}: {line}");
                said = key;
            }
            match r.state {
                RolloutState::Done => return Exit::Ok,
                RolloutState::Stopped => return Exit::OperationFailed,
                RolloutState::Running => {}
            }
        } else if status.now != 0 {
            eprintln!("rollout {id} is no longer the cluster's current rollout");
            return Exit::OperationFailed;
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "rollout {id} still runs after {}: stopped following it (the nodes go on; `tfe-node-agent cluster` shows it)",
                humantime::format_duration(bound)
            );
            return Exit::OperationFailed;
        }
        tokio::time::sleep(POLL).await;
    }
}
