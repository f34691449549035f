//! The leases on Redis: the rolling restart's (`{prefix}lease`) and the repave's
//! (`{prefix}repave-lease`), each a [`Lease`] as JSON with a TTL (PX); both draw their tokens
//! from one counter (`{prefix}lease-token`, INCR, never reset), so tokens only grow. One Lua
//! script per operation (`scripts.rs`).

use super::{json_problem, scripts, RedisStore};
use crate::model::rollout::{Lease, LeaseAnswer};
use crate::ports::cluster::StoreError;
use std::time::Duration;

/// PX takes whole milliseconds, at least one.
fn millis(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

impl RedisStore {
    pub(super) fn lease_of(&self, text: &str) -> Result<Lease, StoreError> {
        serde_json::from_str(text).map_err(|e| self.unreadable("lease", json_problem(&e)))
    }

    /// In one round trip: the server's clock (unix seconds), the record at `key` as it is stored,
    /// and the lease at `lease_key`.
    pub(super) async fn read_with_lease(
        &self,
        key: &str,
        lease_key: &str,
    ) -> Result<(u64, Option<String>, Option<Lease>), StoreError> {
        let (now, record, lease): (String, Option<String>, Option<String>) = self
            .link
            .call(|mut connection| async move {
                scripts::READ_WITH_LEASE
                    .key(key)
                    .key(lease_key)
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        let now = now
            .parse::<u64>()
            .map_err(|_| self.unreadable("server time", format!("{now:?} is not a number")))?;
        let lease = lease.as_deref().map(|t| self.lease_of(t)).transpose()?;
        Ok((now, record, lease))
    }

    /// Takes the lease at `key` for `owner` unless someone holds it.
    pub(super) async fn acquire(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<LeaseAnswer, StoreError> {
        let (taken, text): (i64, String) = self
            .link
            .call(|mut connection| async move {
                scripts::ACQUIRE_LEASE
                    .key(key)
                    .key(&self.keys.lease_token)
                    .arg(owner)
                    .arg(millis(ttl))
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        let lease = self.lease_of(&text)?;
        Ok(if taken == 1 {
            LeaseAnswer::Acquired(lease)
        } else {
            LeaseAnswer::Held(lease)
        })
    }

    pub(super) async fn renew(
        &self,
        key: &str,
        token: u64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let kept: i64 = self
            .link
            .call(|mut connection| async move {
                scripts::RENEW_LEASE
                    .key(key)
                    .arg(token.to_string())
                    .arg(millis(ttl))
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        Ok(kept == 1)
    }

    pub(super) async fn release(&self, key: &str, token: u64) -> Result<bool, StoreError> {
        let released: i64 = self
            .link
            .call(|mut connection| async move {
                scripts::RELEASE_LEASE
                    .key(key)
                    .arg(token.to_string())
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        Ok(released == 1)
    }
}
