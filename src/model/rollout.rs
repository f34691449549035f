//! The rolling app restart, pure: a rollout names the nodes to restart (the live in-service
//! members when it was requested) and records each turn; the lease (an owner and a fencing
//! token, kept in the cluster store) makes the turns one at a time. The store is a port
//! (`crate::ports::cluster`); the worker is in `crate::node::rolling`.

use crate::model::cluster::Snapshot;
use crate::model::lifecycle::Phase;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Who may restart now. The token grows with every acquisition (a counter in the store), so an
/// answer from a holder whose lease expired and was taken over is told apart and rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The holder's instance id.
    pub owner: String,
    pub token: u64,
    /// When it was acquired (the store's clock, unix seconds).
    pub since: u64,
}

/// What an attempt to take the lease met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAnswer {
    Acquired(Lease),
    /// Someone holds it (possibly this node under an older token: a restarted agent).
    Held(Lease),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutState {
    Running,
    /// Every listed node restarted.
    Done,
    /// A node did not come back; the remaining ones were not restarted.
    Stopped,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Done => "done",
            RolloutState::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnFailure {
    pub instance: String,
    pub why: String,
}

/// One rolling restart, as kept in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: String,
    pub requested_by: String,
    /// The store's clock (unix seconds).
    pub requested_at: u64,
    /// The nodes to restart: the live in-service members at request time.
    pub instances: Vec<String>,
    /// Those that restarted, in order.
    pub done: Vec<String>,
    pub state: RolloutState,
    pub failure: Option<TurnFailure>,
}

/// The rolling restart in the cluster view (`cluster`, `/status.cluster.rolling`): who holds the
/// lease and since when, and the current (or last) rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollingView {
    pub lease: Option<Lease>,
    pub rollout: Option<Rollout>,
    /// The store's clock at the read (unix seconds): the lease is held `now - since`.
    pub now: u64,
}

/// How one node's turn ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnOutcome {
    Restarted,
    /// The app did not come back (the whole error chain): the rollout stops.
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutRefusal {
    #[error("rollout {id} (requested by {by}) is still running: {progress}; wait for it to end (`tfe-node-agent cluster`)")]
    Running {
        id: String,
        by: String,
        progress: String,
    },
    #[error("no live in-service node to restart")]
    NoNodes,
    #[error("rollout {id} is {state}, not running: the turn of {instance} is not recorded")]
    NotRunning {
        id: String,
        state: &'static str,
        instance: String,
    },
    #[error("{instance} is not listed in rollout {id}")]
    NotListed { id: String, instance: String },
    #[error("{instance} restarted already in rollout {id}")]
    AlreadyDone { id: String, instance: String },
    #[error("the current rollout is {current}, not {id}")]
    Replaced { id: String, current: String },
    #[error("rollout {id} is gone from the store")]
    Missing { id: String },
    #[error("the turn of {instance} is not recorded: its lease (token {token}) expired or was taken over")]
    Fenced { instance: String, token: u64 },
}

impl Rollout {
    /// A rollout over the members of `snapshot` that are live (seen within `node_ttl`) and in
    /// service, in instance id order; refused while `current` runs and still waits for one of
    /// them (a running one waiting only for nodes gone is abandoned and replaced).
    pub fn plan(
        id: String,
        requested_by: String,
        snapshot: &Snapshot,
        node_ttl: Duration,
        current: Option<&Rollout>,
    ) -> Result<Rollout, RolloutRefusal> {
        let mut instances: Vec<String> = snapshot
            .members
            .iter()
            .filter(|m| m.phase == Phase::InService)
            .filter(|m| snapshot.now.saturating_sub(m.last_seen) <= node_ttl.as_secs())
            .map(|m| m.instance_id.clone())
            .collect();
        instances.sort();
        instances.dedup();
        // A running rollout blocks a new one while a node it waits for still serves (the lease
        // holder is one: it heartbeats in service while it restarts). One whose remaining nodes
        // are all gone (terminated, failed, stale) would block every rollout forever.
        if let Some(running) = current.filter(|r| {
            r.state == RolloutState::Running && instances.iter().any(|i| r.waits_for(i))
        }) {
            return Err(running.refusal());
        }
        if instances.is_empty() {
            return Err(RolloutRefusal::NoNodes);
        }
        Ok(Rollout {
            id,
            requested_by,
            requested_at: snapshot.now,
            instances,
            done: Vec::new(),
            state: RolloutState::Running,
            failure: None,
        })
    }

    /// Why a new rollout cannot start while this one runs.
    pub fn refusal(&self) -> RolloutRefusal {
        RolloutRefusal::Running {
            id: self.id.clone(),
            by: self.requested_by.clone(),
            progress: self.progress(),
        }
    }

    /// Whether `instance` still has a turn to take.
    pub fn waits_for(&self, instance: &str) -> bool {
        self.state == RolloutState::Running
            && self.instances.iter().any(|i| i == instance)
            && !self.done.iter().any(|i| i == instance)
    }

    /// Records `instance`'s turn: done, or failed (the rollout stops, the rest keep serving).
    pub fn finish(&mut self, instance: &str, outcome: &TurnOutcome) -> Result<(), RolloutRefusal> {
        if self.state != RolloutState::Running {
            return Err(RolloutRefusal::NotRunning {
                id: self.id.clone(),
                state: self.state.as_str(),
                instance: instance.to_string(),
            });
        }
        if !self.instances.iter().any(|i| i == instance) {
            return Err(RolloutRefusal::NotListed {
                id: self.id.clone(),
                instance: instance.to_string(),
            });
        }
        if self.done.iter().any(|i| i == instance) {
            return Err(RolloutRefusal::AlreadyDone {
                id: self.id.clone(),
                instance: instance.to_string(),
            });
        }
        match outcome {
            TurnOutcome::Restarted => {
                self.done.push(instance.to_string());
                if self.done.len() == self.instances.len() {
                    self.state = RolloutState::Done;
                }
            }
            TurnOutcome::Failed(why) => {
                self.state = RolloutState::Stopped;
                self.failure = Some(TurnFailure {
                    instance: instance.to_string(),
                    why: why.clone(),
                });
            }
        }
        Ok(())
    }

    /// `2/3 restarted (running)`, or with the failure.
    pub fn progress(&self) -> String {
        let mut text = format!(
            "{}/{} restarted ({})",
            self.done.len(),
            self.instances.len(),
            self.state.as_str()
        );
        if let Some(f) = &self.failure {
            text.push_str(&format!("; {} did not come back: {}", f.instance, f.why));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cluster::MemberRecord;

    fn member(id: &str, phase: Phase, last_seen: u64) -> MemberRecord {
        MemberRecord {
            instance_id: id.into(),
            private_ip: "10.0.0.1".into(),
            availability_zone: "eu-west-1a".into(),
            phase,
            release_sequence: 800,
            agent_version: "1.0.0".into(),
            launched_at: 1,
            last_seen,
            fingerprints: Default::default(),
            live_fingerprints: Default::default(),
            last_error: None,
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            identity: None,
            members: vec![
                member("i-3", Phase::InService, 1000),
                member("i-1", Phase::InService, 995),
                member("i-2", Phase::Booting, 1000),
                member("i-4", Phase::InService, 900),
            ],
            now: 1000,
        }
    }

    const TTL: Duration = Duration::from_secs(30);

    #[test]
    fn a_rollout_lists_the_live_in_service_members_only() {
        let r = Rollout::plan("r1".into(), "alice".into(), &snapshot(), TTL, None).unwrap();
        assert_eq!(r.instances, ["i-1", "i-3"]);
        assert_eq!(r.requested_at, 1000);
        assert_eq!(r.state, RolloutState::Running);
        assert!(r.waits_for("i-1") && !r.waits_for("i-2") && !r.waits_for("i-4"));
        let empty = Snapshot {
            members: vec![],
            ..snapshot()
        };
        assert_eq!(
            Rollout::plan("r".into(), "a".into(), &empty, TTL, None),
            Err(RolloutRefusal::NoNodes)
        );
    }

    #[test]
    fn a_second_rollout_is_refused_while_one_runs_and_taken_after_it_ended() {
        let mut r = Rollout::plan("r1".into(), "alice".into(), &snapshot(), TTL, None).unwrap();
        let refused = Rollout::plan("r2".into(), "bob".into(), &snapshot(), TTL, Some(&r));
        let text = refused.unwrap_err().to_string();
        assert!(
            text.contains("r1") && text.contains("alice") && text.contains("0/2"),
            "{text}"
        );
        r.finish("i-1", &TurnOutcome::Restarted).unwrap();
        r.finish("i-3", &TurnOutcome::Restarted).unwrap();
        assert_eq!(r.state, RolloutState::Done);
        assert!(Rollout::plan("r2".into(), "bob".into(), &snapshot(), TTL, Some(&r)).is_ok());
    }

    #[test]
    fn a_running_rollout_waiting_only_for_nodes_gone_is_replaced() {
        let mut r = Rollout::plan("r1".into(), "alice".into(), &snapshot(), TTL, None).unwrap();
        r.finish("i-1", &TurnOutcome::Restarted).unwrap();
        // i-3, the one left, went stale (terminated while waiting for its turn).
        let mut later = snapshot();
        later.now += 60;
        later.members[1].last_seen = later.now;
        let next = Rollout::plan("r2".into(), "bob".into(), &later, TTL, Some(&r)).unwrap();
        assert_eq!(next.instances, ["i-1"]);
        // While i-3 still serves, r1 blocks.
        assert!(Rollout::plan("r2".into(), "bob".into(), &snapshot(), TTL, Some(&r)).is_err());
    }

    #[test]
    fn each_node_finishes_once_and_a_failure_stops_the_rest() {
        let mut r = Rollout::plan("r1".into(), "alice".into(), &snapshot(), TTL, None).unwrap();
        r.finish("i-1", &TurnOutcome::Restarted).unwrap();
        assert!(!r.waits_for("i-1"));
        assert!(matches!(
            r.finish("i-1", &TurnOutcome::Restarted),
            Err(RolloutRefusal::AlreadyDone { .. })
        ));
        assert!(matches!(
            r.finish("i-2", &TurnOutcome::Restarted),
            Err(RolloutRefusal::NotListed { .. })
        ));
        r.finish("i-3", &TurnOutcome::Failed("app start failed".into()))
            .unwrap();
        assert_eq!(r.state, RolloutState::Stopped);
        assert!(!r.waits_for("i-3"));
        assert_eq!(
            r.progress(),
            "1/2 restarted (stopped); i-3 did not come back: app start failed"
        );
        assert!(matches!(
            r.finish("i-3", &TurnOutcome::Restarted),
            Err(RolloutRefusal::NotRunning { .. })
        ));
    }
}
