//! The repave's lease and record on Redis. Keys, under the target's prefix:
//! - `{prefix}repave-lease`: the [`Lease`](crate::model::rollout::Lease) (`lease.rs`);
//! - `{prefix}repave`: the current (or last) [`Repave`] as JSON, no TTL: it outlives the
//!   orchestrator, so `repave --resume` finds it; every write is fenced by the lease's token.

use super::{json_problem, scripts, RedisStore};
use crate::model::repave::Repave;
use crate::model::rollout::LeaseAnswer;
use crate::ports::cluster::{RepaveStatus, RepaveStore, StoreError};
use std::time::Duration;

impl RepaveStore for RedisStore {
    async fn acquire_repave_lease(
        &self,
        owner: &str,
        ttl: Duration,
    ) -> Result<LeaseAnswer, StoreError> {
        self.acquire(&self.keys.repave_lease, owner, ttl).await
    }

    async fn renew_repave_lease(&self, token: u64, ttl: Duration) -> Result<bool, StoreError> {
        self.renew(&self.keys.repave_lease, token, ttl).await
    }

    async fn release_repave_lease(&self, token: u64) -> Result<bool, StoreError> {
        self.release(&self.keys.repave_lease, token).await
    }

    async fn read_repave(&self) -> Result<RepaveStatus, StoreError> {
        let (now, repave, lease) = self
            .read_with_lease(&self.keys.repave, &self.keys.repave_lease)
            .await?;
        let repave = repave
            .as_deref()
            .map(|t| {
                serde_json::from_str::<Repave>(t)
                    .map_err(|e| self.unreadable("repave", json_problem(&e)))
            })
            .transpose()?;
        Ok(RepaveStatus { repave, lease, now })
    }

    async fn write_repave(&self, token: u64, repave: &Repave) -> Result<bool, StoreError> {
        let text = serde_json::to_string(repave).expect("a Repave is plain JSON");
        let written: i64 = self
            .link
            .call(|mut connection| {
                let text = text.clone();
                async move {
                    scripts::WRITE_FENCED
                        .key(&self.keys.repave_lease)
                        .key(&self.keys.repave)
                        .arg(token.to_string())
                        .arg(&text)
                        .invoke_async(&mut connection)
                        .await
                }
            })
            .await?;
        Ok(written == 1)
    }
}
