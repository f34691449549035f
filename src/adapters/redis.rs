//! PLACEHOLDER until the redis adapter lands (replaced at merge).
use crate::model::cluster::{ClusterIdentity, MemberRecord, Snapshot};
use crate::ports::cluster::{ClusterStore, ClusterStores, StoreError, StoreTarget};
use std::time::Duration;
#[derive(Debug, Clone, Default)]
pub struct RedisStores;
#[derive(Debug, Clone)]
pub struct RedisStore(String);
fn down(s: &RedisStore) -> StoreError {
    StoreError::Unavailable {
        address: s.0.clone(),
        detail: "not wired".into(),
    }
}
impl ClusterStores for RedisStores {
    type Store = RedisStore;
    fn open(&self, t: StoreTarget) -> RedisStore {
        RedisStore(format!("{}:{}", t.host, t.port))
    }
}
impl ClusterStore for RedisStore {
    async fn heartbeat(&self, _: &MemberRecord, _: Duration) -> Result<Snapshot, StoreError> {
        Err(down(self))
    }
    async fn read(&self) -> Result<Snapshot, StoreError> {
        Err(down(self))
    }
    async fn claim_identity(&self, _: &ClusterIdentity) -> Result<ClusterIdentity, StoreError> {
        Err(down(self))
    }
    async fn set_release(&self, _: &str, _: u64) -> Result<(), StoreError> {
        Err(down(self))
    }
    async fn leave(&self, _: &str) -> Result<(), StoreError> {
        Err(down(self))
    }
    async fn reset_identity(&self) -> Result<(), StoreError> {
        Err(down(self))
    }
}
