//! The cluster as the nodes see it through their shared store (TFE's own external Redis): one
//! record per node, the cluster's identity, and what a node concludes from them — who is live,
//! who is stale, what does not match, and whether a booting node may join. Pure: the store is a
//! port (`crate::ports::cluster`), the flows are in `crate::node::cluster`.

use crate::model::lifecycle::Phase;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What one node says about itself, every heartbeat. Never a secret value: the must-match
/// settings appear only as slow, salted fingerprints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub instance_id: String,
    pub private_ip: String,
    pub availability_zone: String,
    pub phase: Phase,
    /// The release this node installs (agent.toml's `release_sequence`).
    pub release_sequence: u64,
    pub agent_version: String,
    /// When the agent first booted on this instance (unix seconds).
    pub launched_at: u64,
    /// Set by the store from its own clock when the record is written (unix seconds), so that
    /// nodes with skewed clocks agree on who is stale.
    pub last_seen: u64,
    /// Setting name → 16 hex digits (the KDF of the value with the cluster's salt).
    pub fingerprints: BTreeMap<String, String>,
}

/// The cluster's identity: created once, atomically, by the first node; no TTL (a store that
/// evicts keys with a TTL first keeps it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdentity {
    pub cluster_id: String,
    /// Hex; the KDF salt of every fingerprint in this cluster.
    pub salt: String,
    /// The fingerprint of enc_password: a node whose own differs could not decrypt the data.
    pub enc_password: String,
    /// The release the cluster runs; replaced only when no member is live (a repave).
    pub release_sequence: u64,
    pub created_at: u64,
}

/// What one read of the store returned.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub identity: Option<ClusterIdentity>,
    /// Every indexed member, fresh or not.
    pub members: Vec<MemberRecord>,
    /// The store's clock at the read (unix seconds).
    pub now: u64,
}

/// What a node does when joining would make more than `max_nodes` live nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TooManyPolicy {
    #[default]
    Warn,
    Refuse,
}
