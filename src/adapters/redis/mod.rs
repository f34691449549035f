//! The cluster store on Redis (TFE's own external Redis, plain or TLS, with or without AUTH).
//!
//! Keys, all under the target's `key_prefix` (`tfe-node-agent:`):
//! - `{prefix}identity`: the [`ClusterIdentity`] as JSON, no TTL;
//! - `{prefix}node:{instance_id}`: a [`MemberRecord`] as JSON, kept `keep_for`;
//! - `{prefix}nodes`: sorted set, member = instance id, score = last_seen (the server's clock);
//! - the rolling restart's lease and rollout (`rollout.rs`), the repave's lease and record
//!   (`repave.rs`), both leases in `lease.rs`.
//!
//! Every operation is one round trip (a Lua script, `scripts.rs`, or one atomic pipeline) on one
//! multiplexed connection (`link.rs`).

pub(in crate::adapters) mod client;
mod lease;
mod link;
mod repave;
mod rollout;
mod scripts;

use crate::model::cluster::{ClusterIdentity, MemberRecord, Snapshot};
use crate::ports::cluster::{ClusterStore, ClusterStores, StoreError, StoreTarget};
use link::Link;
use std::time::Duration;

/// The time bounds of a store.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// TCP and TLS connect (AUTH and SELECT then take at most `command` more).
    pub connect: Duration,
    /// One command or script, answer included.
    pub command: Duration,
    /// A connection older than this is replaced before its next use: after a failover that
    /// raised no error on it, it would otherwise stay on the old primary forever.
    pub max_age: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect: Duration::from_secs(3),
            command: Duration::from_secs(2),
            max_age: Duration::from_secs(600),
        }
    }
}

/// The [`ClusterStores`] port on Redis.
#[derive(Debug, Clone, Copy, Default)]
pub struct RedisStores {
    pub limits: Limits,
}

impl ClusterStores for RedisStores {
    type Store = RedisStore;

    fn open(&self, target: StoreTarget) -> RedisStore {
        RedisStore::new(target, self.limits)
    }
}

/// The [`ClusterStore`] port on one Redis; connects on first use.
pub struct RedisStore {
    keys: Keys,
    link: Link,
}

struct Keys {
    identity: String,
    index: String,
    /// `{prefix}node:`; a record's key is this and the instance id.
    node: String,
    lease: String,
    lease_token: String,
    rollout: String,
    repave_lease: String,
    repave: String,
}

impl RedisStore {
    pub fn new(target: StoreTarget, limits: Limits) -> Self {
        let prefix = &target.key_prefix;
        let keys = Keys {
            identity: format!("{prefix}identity"),
            index: format!("{prefix}nodes"),
            node: format!("{prefix}node:"),
            lease: format!("{prefix}lease"),
            lease_token: format!("{prefix}lease-token"),
            rollout: format!("{prefix}rollout"),
            repave_lease: format!("{prefix}repave-lease"),
            repave: format!("{prefix}repave"),
        };
        RedisStore {
            keys,
            link: Link::new(target, limits),
        }
    }

    /// `host:port over TLS` or `host:port without TLS`, as errors name it.
    pub fn address(&self) -> &str {
        &self.link.address
    }

    fn unreadable(&self, what: &str, detail: String) -> StoreError {
        StoreError::Unreadable {
            address: self.link.address.clone(),
            what: what.to_string(),
            detail,
        }
    }

    /// The answer of the heartbeat and read scripts: `[time, identity, [records]]`.
    fn snapshot(&self, answer: ScriptSnapshot) -> Result<Snapshot, StoreError> {
        let (now, identity, records) = answer;
        let now = now
            .parse::<u64>()
            .map_err(|_| self.unreadable("server time", format!("{now:?} is not a number")))?;
        let identity = identity.map(|text| self.identity(&text)).transpose()?;
        let mut members = Vec::with_capacity(records.len());
        // A record that expired after the index was read comes back nil; one that does not parse
        // (another agent version, another program) is left out: neither stops the others.
        for text in records.into_iter().flatten() {
            match serde_json::from_str::<MemberRecord>(&text) {
                Ok(record) => members.push(record),
                Err(e) => log::debug!(
                    "cluster store {}: skipping a member record that does not parse: {}",
                    self.link.address,
                    json_problem(&e)
                ),
            }
        }
        Ok(Snapshot {
            identity,
            members,
            now,
        })
    }

    fn identity(&self, text: &str) -> Result<ClusterIdentity, StoreError> {
        serde_json::from_str(text).map_err(|e| self.unreadable("identity", json_problem(&e)))
    }
}

type ScriptSnapshot = (String, Option<String>, Vec<Option<String>>);

/// Where and what kind of JSON problem, without quoting the text (it is not ours).
fn json_problem(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let kind = match e.classify() {
        Category::Io => "an I/O error",
        Category::Syntax => "not JSON",
        Category::Data => "JSON of another shape",
        Category::Eof => "JSON cut short",
    };
    format!("{kind} (line {}, column {})", e.line(), e.column())
}

/// The record as JSON without `last_seen`, which the heartbeat script writes from the server's
/// clock.
fn record_without_last_seen(me: &MemberRecord) -> String {
    let mut value = serde_json::to_value(me).expect("a MemberRecord is plain JSON");
    if let Some(fields) = value.as_object_mut() {
        fields.remove("last_seen");
    }
    value.to_string()
}

impl ClusterStore for RedisStore {
    async fn heartbeat(
        &self,
        me: &MemberRecord,
        keep_for: Duration,
    ) -> Result<Snapshot, StoreError> {
        let record = record_without_last_seen(me);
        // EX 0 is an error; a record kept under a second would be gone before anyone read it.
        let keep = keep_for.as_secs().max(1);
        let mine = format!("{}{}", self.keys.node, me.instance_id);
        let answer: ScriptSnapshot = self
            .link
            .call(|mut connection| {
                let (record, mine) = (record.clone(), mine.clone());
                async move {
                    scripts::HEARTBEAT
                        .key(&self.keys.identity)
                        .key(&self.keys.index)
                        .key(&mine)
                        .arg(&record)
                        .arg(keep)
                        .arg(&me.instance_id)
                        .arg(&self.keys.node)
                        .invoke_async(&mut connection)
                        .await
                }
            })
            .await?;
        self.snapshot(answer)
    }

    async fn read(&self) -> Result<Snapshot, StoreError> {
        let answer: ScriptSnapshot = self
            .link
            .call(|mut connection| async move {
                scripts::READ
                    .key(&self.keys.identity)
                    .key(&self.keys.index)
                    .arg(&self.keys.node)
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        self.snapshot(answer)
    }

    async fn claim_identity(
        &self,
        identity: &ClusterIdentity,
    ) -> Result<ClusterIdentity, StoreError> {
        let candidate = serde_json::to_string(identity).expect("a ClusterIdentity is plain JSON");
        let winner: Option<String> = self
            .link
            .call(|mut connection| {
                let candidate = candidate.clone();
                async move {
                    scripts::CLAIM
                        .key(&self.keys.identity)
                        .arg(&candidate)
                        .invoke_async(&mut connection)
                        .await
                }
            })
            .await?;
        match winner {
            Some(text) => self.identity(&text),
            None => Err(self.unreadable("identity", "gone right after it was claimed".into())),
        }
    }

    async fn set_release(&self, cluster_id: &str, release_sequence: u64) -> Result<(), StoreError> {
        let outcome: i64 = self
            .link
            .call(|mut connection| async move {
                scripts::SET_RELEASE
                    .key(&self.keys.identity)
                    .arg(cluster_id)
                    .arg(release_sequence)
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        match outcome {
            1 => Ok(()),
            0 => {
                log::debug!(
                    "cluster store {}: release {release_sequence} not recorded: the identity is \
                     missing or no longer cluster {cluster_id}",
                    self.link.address
                );
                Ok(())
            }
            _ => Err(self.unreadable(
                "identity",
                "not JSON with a cluster_id and a release_sequence".into(),
            )),
        }
    }

    async fn leave(&self, instance_id: &str) -> Result<(), StoreError> {
        let record = format!("{}{}", self.keys.node, instance_id);
        self.link
            .call(|mut connection| {
                let record = record.clone();
                async move {
                    ::redis::pipe()
                        .atomic()
                        .del(&record)
                        .ignore()
                        .zrem(&self.keys.index, instance_id)
                        .ignore()
                        .query_async::<()>(&mut connection)
                        .await
                }
            })
            .await
    }

    async fn reset_identity(&self) -> Result<(), StoreError> {
        self.link
            .call(|mut connection| async move {
                ::redis::cmd("DEL")
                    .arg(&self.keys.identity)
                    .query_async::<()>(&mut connection)
                    .await
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::lifecycle::Phase;

    #[test]
    fn the_record_sent_has_no_last_seen_and_reads_back_with_one_in_front() {
        let me = MemberRecord {
            instance_id: "i-1".into(),
            private_ip: "10.0.0.1".into(),
            availability_zone: "eu-west-1a".into(),
            phase: Phase::Booting,
            release_sequence: 800,
            agent_version: "1.0.0".into(),
            launched_at: 1_700_000_000,
            last_seen: 42,
            fingerprints: [("enc_password".to_string(), "0123456789abcdef".to_string())].into(),
            live_fingerprints: [("enc_password".to_string(), "fedcba9876543210".to_string())]
                .into(),
            last_error: None,
        };
        let sent = record_without_last_seen(&me);
        assert!(!sent.contains("last_seen"), "{sent}");
        // What the heartbeat script stores: the server's time as the first field.
        let stored = format!("{{\"last_seen\":1800000000,{}", &sent[1..]);
        let back: MemberRecord = serde_json::from_str(&stored).unwrap();
        assert_eq!(back.last_seen, 1_800_000_000);
        assert_eq!(
            MemberRecord {
                last_seen: 42,
                ..back
            },
            me
        );
    }

    #[test]
    fn json_problems_say_where_and_never_quote_the_text() {
        let e =
            serde_json::from_str::<ClusterIdentity>("{\"cluster_id\": \"hunter2\"}").unwrap_err();
        let text = json_problem(&e);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("line 1"), "{text}");
    }
}
