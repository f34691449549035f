//! The cluster store: the external Redis that every node of an Active/Active cluster already
//! shares with TFE. The real one is `crate::adapters::redis`.

use crate::model::cluster::{ClusterIdentity, MemberRecord, Snapshot};
use crate::model::repave::Repave;
use crate::model::rollout::{Lease, LeaseAnswer, Rollout, RolloutRefusal, TurnOutcome};
use crate::sys::secret::Secret;
use std::future::Future;
use std::time::Duration;

/// Where the store is: TFE's own `redis_*` settings, and `[cluster]`.
#[derive(Debug, Clone)]
pub struct StoreTarget {
    pub host: String,
    pub port: u16,
    /// AUTH with this when `redis_use_password_auth = "1"`.
    pub password: Option<Secret>,
    /// `redis_use_tls = "1"`: TLS 1.2+, verified against the system roots or `ca_bundle`.
    pub tls: bool,
    /// PEM; replaces the system roots when given.
    pub ca_bundle: Option<String>,
    pub database: u32,
    /// Every key the agent writes starts with this (`tfe-node-agent:`).
    pub key_prefix: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Cannot connect, TLS handshake, AUTH, or the connection broke: says which, naming the
    /// address, never the password.
    #[error("cluster store {address}: {detail}")]
    Unavailable { address: String, detail: String },
    /// The store answered something the agent cannot read (another program's keys?).
    #[error("cluster store {address}: unreadable {what}: {detail}")]
    Unreadable {
        address: String,
        what: String,
        detail: String,
    },
}

/// Opens stores: the target is known only once the secrets are (the password is one).
pub trait ClusterStores: Sync {
    type Store: ClusterStore + RolloutStore + RepaveStore + 'static;
    /// A store that connects on first use (and reconnects with backoff after that).
    fn open(&self, target: StoreTarget) -> Self::Store;
}

pub trait ClusterStore: Send + Sync {
    /// One round trip: writes `me` (kept `keep_for`, stamped with the store's clock), indexes
    /// it, forgets index entries older than `keep_for`, and reads the identity and every member.
    fn heartbeat(
        &self,
        me: &MemberRecord,
        keep_for: Duration,
    ) -> impl Future<Output = Result<Snapshot, StoreError>> + Send;

    /// The identity and every member, writing nothing.
    fn read(&self) -> impl Future<Output = Result<Snapshot, StoreError>> + Send;

    /// Creates `identity` unless one exists (atomically); returns the one that exists after.
    fn claim_identity(
        &self,
        identity: &ClusterIdentity,
    ) -> impl Future<Output = Result<ClusterIdentity, StoreError>> + Send;

    /// Records that the cluster now runs `release_sequence` (a repave: no member was live), if
    /// the identity is still `cluster_id`.
    fn set_release(
        &self,
        cluster_id: &str,
        release_sequence: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Takes `instance_id` out of the cluster (its terminate hook was released).
    fn leave(&self, instance_id: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes the identity (an operator's deliberate reset: new database, new enc_password).
    fn reset_identity(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The rolling restart as the store holds it, read in one round trip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolloutStatus {
    pub rollout: Option<Rollout>,
    pub lease: Option<Lease>,
    /// The store's clock (unix seconds).
    pub now: u64,
}

/// The rolling restart's lease and record (`app restart --rolling`): each operation atomic on
/// the store; every write of a turn is fenced by the lease's token.
pub trait RolloutStore: Send + Sync {
    /// Takes the lease for `owner` for `ttl` unless someone holds it; a new token each time.
    fn acquire_lease(
        &self,
        owner: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<LeaseAnswer, StoreError>> + Send;

    /// Keeps the lease `ttl` more if it is still held under `token`; false when it is not.
    fn renew_lease(
        &self,
        token: u64,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Gives the lease up if it is still held under `token`; false when it was not.
    fn release_lease(&self, token: u64) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Stores `rollout` unless one runs (other than `replaces`, a running one found abandoned):
    /// `Some(the running one)` when refused.
    fn start_rollout(
        &self,
        rollout: &Rollout,
        replaces: Option<&str>,
    ) -> impl Future<Output = Result<Option<Rollout>, StoreError>> + Send;

    /// The current rollout and lease, writing nothing.
    fn read_rollout(&self) -> impl Future<Output = Result<RolloutStatus, StoreError>> + Send;

    /// Records `instance`'s turn in rollout `rollout_id` if the lease is still held under
    /// `token` (a stale holder's late answer is refused); answers the rollout after it.
    fn finish_turn(
        &self,
        rollout_id: &str,
        instance: &str,
        token: u64,
        outcome: &TurnOutcome,
    ) -> impl Future<Output = Result<Result<Rollout, RolloutRefusal>, StoreError>> + Send;
}

/// The repave as the store holds it, read in one round trip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepaveStatus {
    /// The current (or last) repave.
    pub repave: Option<Repave>,
    pub lease: Option<Lease>,
    /// The store's clock (unix seconds).
    pub now: u64,
}

/// The repave's lease and record (`repave`): one orchestrator at a time, each write fenced by
/// the lease's token so an orchestrator that lost its lease (paused, cut off) cannot overwrite
/// the record of the one that took over. A lease of its own: a rolling restart and a repave
/// exclude each other through the record, not the lease.
pub trait RepaveStore: Send + Sync {
    /// Takes the repave lease for `owner` for `ttl` unless someone holds it; a new token each time.
    fn acquire_repave_lease(
        &self,
        owner: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<LeaseAnswer, StoreError>> + Send;

    /// Keeps the lease `ttl` more if it is still held under `token`; false when it is not.
    fn renew_repave_lease(
        &self,
        token: u64,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Gives the lease up if it is still held under `token`; false when it was not.
    fn release_repave_lease(
        &self,
        token: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The current (or last) repave and the lease, writing nothing.
    fn read_repave(&self) -> impl Future<Output = Result<RepaveStatus, StoreError>> + Send;

    /// Stores `repave` if the lease is still held under `token`; false (nothing written) when
    /// it is not.
    fn write_repave(
        &self,
        token: u64,
        repave: &Repave,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}
