//! The rolling restart's lease and rollout record on Redis. Keys, under the target's prefix:
//! - `{prefix}lease`: the [`Lease`] as JSON, with a TTL (PX);
//! - `{prefix}lease-token`: the counter tokens come from (INCR; never reset, so tokens only grow);
//! - `{prefix}rollout`: the current (or last) [`Rollout`] as JSON, no TTL.
//!
//! Each operation is one Lua script (`scripts.rs`). A turn is recorded by compare-and-set: the
//! agent applies the pure rules (`crate::model::rollout`) to the record it read, and the script
//! writes the result only if the lease is still held under the turn's token and the record is
//! unchanged.

use super::{json_problem, scripts, RedisStore};
use crate::model::rollout::{LeaseAnswer, Rollout, RolloutRefusal, TurnOutcome};
use crate::ports::cluster::{RolloutStatus, RolloutStore, StoreError};
use std::time::Duration;

/// How often a turn is tried again when the record changed between its read and its write.
const CAS_TRIES: usize = 5;

impl RedisStore {
    fn rollout_of(&self, text: &str) -> Result<Rollout, StoreError> {
        serde_json::from_str(text).map_err(|e| self.unreadable("rollout", json_problem(&e)))
    }

    /// The rollout's raw JSON (for the compare-and-set) and the status.
    async fn read_raw(&self) -> Result<(Option<String>, RolloutStatus), StoreError> {
        let (now, rollout, lease) = self
            .read_with_lease(&self.keys.rollout, &self.keys.lease)
            .await?;
        let status = RolloutStatus {
            rollout: rollout.as_deref().map(|t| self.rollout_of(t)).transpose()?,
            lease,
            now,
        };
        Ok((rollout, status))
    }
}

impl RolloutStore for RedisStore {
    async fn acquire_lease(&self, owner: &str, ttl: Duration) -> Result<LeaseAnswer, StoreError> {
        self.acquire(&self.keys.lease, owner, ttl).await
    }

    async fn renew_lease(&self, token: u64, ttl: Duration) -> Result<bool, StoreError> {
        self.renew(&self.keys.lease, token, ttl).await
    }

    async fn release_lease(&self, token: u64) -> Result<bool, StoreError> {
        self.release(&self.keys.lease, token).await
    }

    async fn start_rollout(
        &self,
        rollout: &Rollout,
        replaces: Option<&str>,
    ) -> Result<Option<Rollout>, StoreError> {
        let text = serde_json::to_string(rollout).expect("a Rollout is plain JSON");
        let running: Option<String> = self
            .link
            .call(|mut connection| {
                let text = text.clone();
                async move {
                    scripts::START_ROLLOUT
                        .key(&self.keys.rollout)
                        .arg(&text)
                        .arg(replaces.unwrap_or(""))
                        .invoke_async(&mut connection)
                        .await
                }
            })
            .await?;
        running.as_deref().map(|t| self.rollout_of(t)).transpose()
    }

    async fn read_rollout(&self) -> Result<RolloutStatus, StoreError> {
        Ok(self.read_raw().await?.1)
    }

    async fn finish_turn(
        &self,
        rollout_id: &str,
        instance: &str,
        token: u64,
        outcome: &TurnOutcome,
    ) -> Result<Result<Rollout, RolloutRefusal>, StoreError> {
        for _ in 0..CAS_TRIES {
            let (raw, status) = self.read_raw().await?;
            let (Some(raw), Some(mut rollout)) = (raw, status.rollout) else {
                return Ok(Err(RolloutRefusal::Missing {
                    id: rollout_id.to_string(),
                }));
            };
            if rollout.id != rollout_id {
                return Ok(Err(RolloutRefusal::Replaced {
                    id: rollout_id.to_string(),
                    current: rollout.id,
                }));
            }
            if let Err(refusal) = rollout.finish(instance, outcome) {
                return Ok(Err(refusal));
            }
            let after = serde_json::to_string(&rollout).expect("a Rollout is plain JSON");
            let written: i64 = self
                .link
                .call(|mut connection| {
                    let (raw, after) = (raw.clone(), after.clone());
                    async move {
                        scripts::FINISH_TURN
                            .key(&self.keys.lease)
                            .key(&self.keys.rollout)
                            .arg(token.to_string())
                            .arg(&raw)
                            .arg(&after)
                            .invoke_async(&mut connection)
                            .await
                    }
                })
                .await?;
            match written {
                1 => return Ok(Ok(rollout)),
                0 => {
                    return Ok(Err(RolloutRefusal::Fenced {
                        instance: instance.to_string(),
                        token,
                    }))
                }
                _ => continue,
            }
        }
        Err(self.unreadable(
            "rollout",
            format!("it changed under every one of {CAS_TRIES} attempts to record a turn"),
        ))
    }
}
