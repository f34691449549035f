//! An in-memory cluster store with Redis's semantics as the agent uses them: records kept for a
//! while and stamped with the store's clock, an identity created at most once, a store that can
//! be down. Every store opened from one [`FakeStores`] shares its data (the nodes of one cluster).

use crate::model::cluster::{ClusterIdentity, MemberRecord, Snapshot};
use crate::model::repave::Repave;
use crate::model::rollout::{
    Lease, LeaseAnswer, Rollout, RolloutRefusal, RolloutState, TurnOutcome,
};
use crate::ports::cluster::{
    ClusterStore, ClusterStores, RepaveStatus, RepaveStore, RolloutStatus, RolloutStore,
    StoreError, StoreTarget,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The store's clock at its creation (unix seconds); it runs with tokio's (paused) clock.
const EPOCH: u64 = 1_800_000_000;

#[derive(Debug, Default)]
pub struct FakeCluster {
    pub identity: Option<ClusterIdentity>,
    /// Record and the instant it expires.
    pub members: BTreeMap<String, (MemberRecord, Instant)>,
    pub down: bool,
    /// Every call, in order ("heartbeat i-1", "claim", …).
    pub calls: Vec<String>,
    /// The rolling restart's lease and the instant it expires; the last token given.
    pub lease: Option<(Lease, Instant)>,
    pub last_token: u64,
    pub rollout: Option<Rollout>,
    /// The repave's lease (tokens from the same counter) and record.
    pub repave_lease: Option<(Lease, Instant)>,
    pub repave: Option<Repave>,
}

#[derive(Debug, Clone)]
pub struct FakeStores {
    pub data: Arc<Mutex<FakeCluster>>,
    started: Instant,
}

impl Default for FakeStores {
    fn default() -> Self {
        Self {
            data: Arc::default(),
            started: Instant::now(),
        }
    }
}

impl FakeStores {
    /// A store that answers nothing (Redis down).
    pub fn down() -> Self {
        let stores = Self::default();
        stores.data.lock().unwrap().down = true;
        stores
    }

    /// Another node's record, as if it had just heartbeat.
    pub fn add_member(&self, mut record: MemberRecord, keep_for: Duration) {
        let store = self.open_store();
        record.last_seen = store.unix_now();
        self.data.lock().unwrap().members.insert(
            record.instance_id.clone(),
            (record, Instant::now() + keep_for),
        );
    }

    fn open_store(&self) -> FakeStore {
        FakeStore {
            data: self.data.clone(),
            started: self.started,
        }
    }
}

impl ClusterStores for FakeStores {
    type Store = FakeStore;
    fn open(&self, _target: StoreTarget) -> FakeStore {
        self.open_store()
    }
}

#[derive(Debug, Clone)]
pub struct FakeStore {
    data: Arc<Mutex<FakeCluster>>,
    started: Instant,
}

impl FakeStore {
    fn unix_now(&self) -> u64 {
        EPOCH + self.started.elapsed().as_secs()
    }

    fn call(&self, what: String) -> Result<std::sync::MutexGuard<'_, FakeCluster>, StoreError> {
        let mut data = self.data.lock().unwrap();
        data.calls.push(what);
        if data.down {
            return Err(StoreError::Unavailable {
                address: "fake:6379".into(),
                detail: "connection refused".into(),
            });
        }
        let now = Instant::now();
        data.members.retain(|_, (_, until)| *until > now);
        if data.lease.as_ref().is_some_and(|(_, until)| *until <= now) {
            data.lease = None;
        }
        if data
            .repave_lease
            .as_ref()
            .is_some_and(|(_, until)| *until <= now)
        {
            data.repave_lease = None;
        }
        Ok(data)
    }

    fn snapshot(&self, data: &FakeCluster) -> Snapshot {
        Snapshot {
            identity: data.identity.clone(),
            members: data.members.values().map(|(r, _)| r.clone()).collect(),
            now: self.unix_now(),
        }
    }
}

impl ClusterStore for FakeStore {
    async fn heartbeat(
        &self,
        me: &MemberRecord,
        keep_for: Duration,
    ) -> Result<Snapshot, StoreError> {
        let now = self.unix_now();
        let mut data = self.call(format!("heartbeat {} {:?}", me.instance_id, me.phase))?;
        let mut record = me.clone();
        record.last_seen = now;
        data.members.insert(
            record.instance_id.clone(),
            (record, Instant::now() + keep_for),
        );
        Ok(self.snapshot(&data))
    }

    async fn read(&self) -> Result<Snapshot, StoreError> {
        let data = self.call("read".into())?;
        Ok(self.snapshot(&data))
    }

    async fn claim_identity(
        &self,
        identity: &ClusterIdentity,
    ) -> Result<ClusterIdentity, StoreError> {
        let mut data = self.call(format!("claim {}", identity.cluster_id))?;
        Ok(data
            .identity
            .get_or_insert_with(|| identity.clone())
            .clone())
    }

    async fn set_release(&self, cluster_id: &str, release_sequence: u64) -> Result<(), StoreError> {
        let mut data = self.call(format!("set-release {release_sequence}"))?;
        if let Some(id) = data
            .identity
            .as_mut()
            .filter(|i| i.cluster_id == cluster_id)
        {
            id.release_sequence = release_sequence;
        }
        Ok(())
    }

    async fn leave(&self, instance_id: &str) -> Result<(), StoreError> {
        let mut data = self.call(format!("leave {instance_id}"))?;
        data.members.remove(instance_id);
        Ok(())
    }

    async fn reset_identity(&self) -> Result<(), StoreError> {
        let mut data = self.call("reset".into())?;
        data.identity = None;
        Ok(())
    }
}

fn held(data: &FakeCluster, token: u64) -> bool {
    is_held(&data.lease, token)
}

/// A lease slot (the rolling restart's or the repave's): the lease and when it lapses.
type Slot = Option<(Lease, Instant)>;

fn is_held(slot: &Slot, token: u64) -> bool {
    slot.as_ref().is_some_and(|(l, _)| l.token == token)
}

/// Takes the lease in `slot` unless it is held; tokens from the one counter.
fn take(
    slot: &mut Slot,
    last_token: &mut u64,
    owner: &str,
    since: u64,
    ttl: Duration,
) -> LeaseAnswer {
    if let Some((lease, _)) = slot {
        return LeaseAnswer::Held(lease.clone());
    }
    *last_token += 1;
    let lease = Lease {
        owner: owner.to_string(),
        token: *last_token,
        since,
    };
    *slot = Some((lease.clone(), Instant::now() + ttl));
    LeaseAnswer::Acquired(lease)
}

fn renew(slot: &mut Slot, token: u64, ttl: Duration) -> bool {
    match slot.as_mut().filter(|(l, _)| l.token == token) {
        Some((_, until)) => {
            *until = Instant::now() + ttl;
            true
        }
        None => false,
    }
}

fn release(slot: &mut Slot, token: u64) -> bool {
    let mine = is_held(slot, token);
    if mine {
        *slot = None;
    }
    mine
}

impl RolloutStore for FakeStore {
    async fn acquire_lease(&self, owner: &str, ttl: Duration) -> Result<LeaseAnswer, StoreError> {
        let since = self.unix_now();
        let mut data = self.call(format!("acquire {owner}"))?;
        let data = &mut *data;
        Ok(take(
            &mut data.lease,
            &mut data.last_token,
            owner,
            since,
            ttl,
        ))
    }

    async fn renew_lease(&self, token: u64, ttl: Duration) -> Result<bool, StoreError> {
        let mut data = self.call(format!("renew {token}"))?;
        Ok(renew(&mut data.lease, token, ttl))
    }

    async fn release_lease(&self, token: u64) -> Result<bool, StoreError> {
        let mut data = self.call(format!("release {token}"))?;
        Ok(release(&mut data.lease, token))
    }

    async fn start_rollout(
        &self,
        rollout: &Rollout,
        replaces: Option<&str>,
    ) -> Result<Option<Rollout>, StoreError> {
        let mut data = self.call(format!("start {}", rollout.id))?;
        if let Some(running) = data
            .rollout
            .as_ref()
            .filter(|r| r.state == RolloutState::Running && Some(r.id.as_str()) != replaces)
        {
            return Ok(Some(running.clone()));
        }
        data.rollout = Some(rollout.clone());
        Ok(None)
    }

    async fn read_rollout(&self) -> Result<RolloutStatus, StoreError> {
        let now = self.unix_now();
        let data = self.call("read-rollout".into())?;
        Ok(RolloutStatus {
            rollout: data.rollout.clone(),
            lease: data.lease.as_ref().map(|(l, _)| l.clone()),
            now,
        })
    }

    async fn finish_turn(
        &self,
        rollout_id: &str,
        instance: &str,
        token: u64,
        outcome: &TurnOutcome,
    ) -> Result<Result<Rollout, RolloutRefusal>, StoreError> {
        let mut data = self.call(format!("finish {instance} {token}"))?;
        if !held(&data, token) {
            return Ok(Err(RolloutRefusal::Fenced {
                instance: instance.to_string(),
                token,
            }));
        }
        let Some(rollout) = data.rollout.as_mut() else {
            return Ok(Err(RolloutRefusal::Missing {
                id: rollout_id.to_string(),
            }));
        };
        if rollout.id != rollout_id {
            return Ok(Err(RolloutRefusal::Replaced {
                id: rollout_id.to_string(),
                current: rollout.id.clone(),
            }));
        }
        Ok(rollout.finish(instance, outcome).map(|()| rollout.clone()))
    }
}

impl RepaveStore for FakeStore {
    async fn acquire_repave_lease(
        &self,
        owner: &str,
        ttl: Duration,
    ) -> Result<LeaseAnswer, StoreError> {
        let since = self.unix_now();
        let mut data = self.call(format!("acquire-repave {owner}"))?;
        let data = &mut *data;
        Ok(take(
            &mut data.repave_lease,
            &mut data.last_token,
            owner,
            since,
            ttl,
        ))
    }

    async fn renew_repave_lease(&self, token: u64, ttl: Duration) -> Result<bool, StoreError> {
        let mut data = self.call(format!("renew-repave {token}"))?;
        Ok(renew(&mut data.repave_lease, token, ttl))
    }

    async fn release_repave_lease(&self, token: u64) -> Result<bool, StoreError> {
        let mut data = self.call(format!("release-repave {token}"))?;
        Ok(release(&mut data.repave_lease, token))
    }

    async fn read_repave(&self) -> Result<RepaveStatus, StoreError> {
        let now = self.unix_now();
        let data = self.call("read-repave".into())?;
        Ok(RepaveStatus {
            repave: data.repave.clone(),
            lease: data.repave_lease.as_ref().map(|(l, _)| l.clone()),
            now,
        })
    }

    async fn write_repave(&self, token: u64, repave: &Repave) -> Result<bool, StoreError> {
        let mut data = self.call(format!("write-repave {token}"))?;
        let mine = is_held(&data.repave_lease, token);
        if mine {
            data.repave = Some(repave.clone());
        }
        Ok(mine)
    }
}
