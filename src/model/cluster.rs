//! The cluster as the nodes see it through their shared store (TFE's own external Redis): one
//! record per node, the cluster's identity, and what a node concludes from them — who is live,
//! who is stale, what does not match, and whether a booting node may join. Pure: the store is a
//! port (`crate::ports::cluster`), the flows are in `crate::node::cluster`.

use crate::model::lifecycle::Phase;
use crate::model::rollout::RollingView;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

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
    /// The same, of the values TFE runs with (the drift loop's `app-config export`): a value
    /// changed live differs here while `fingerprints` still shows the rendered one. Empty until
    /// this node's first comparison, with drift off, and from agents that predate it.
    #[serde(default)]
    pub live_fingerprints: BTreeMap<String, String>,
    /// The last error the node met (its whole chain; errors never carry a secret value): what a
    /// repave reports when a new node fails its boot. Absent from agents that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
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

/// The cluster as one node sees it (`tfe-node-agent cluster --json`, `/status`'s `cluster`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// `None` when the store holds no identity (a new cluster, or the key was lost).
    pub cluster_id: Option<String>,
    /// The release the identity records.
    pub release_sequence: Option<u64>,
    /// Members seen within the node TTL (whatever their phase), and the others.
    pub live: usize,
    pub stale: usize,
    /// Every member the index still lists, live or stale, by instance id.
    pub nodes: Vec<NodeView>,
    /// Most serious first.
    pub findings: Vec<Finding>,
    /// No findings: `cluster` exits 0.
    pub consistent: bool,
    /// The rolling restart's lease and rollout; absent when not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling: Option<RollingView>,
}

/// One member: its record as it wrote it, and how long ago the store last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    #[serde(flatten)]
    pub record: MemberRecord,
    /// Not seen for longer than the node TTL: shown until the index forgets it, never counted
    /// as live (a dead node must not block a join, nor hide a mismatch of the live ones).
    pub stale: bool,
    pub seconds_since_seen: u64,
}

/// Something about the cluster an operator should know. Instance ids and setting names only,
/// never a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Finding {
    /// Live members exist but the identity does not (FLUSHALL, an eviction, a reset): the
    /// members restore it; until then no enc_password can be compared.
    IdentityMissing { live: usize },
    /// Live nodes run more than one release, or another release than the identity records.
    ReleaseMismatch {
        /// What the identity records (`None`: no identity).
        identity_release: Option<u64>,
        /// Each release the live nodes run, lowest first, and which nodes run it.
        releases: Vec<ReleaseGroup>,
    },
    /// The live nodes do not all carry the same value of `setting`.
    FingerprintMismatch {
        setting: String,
        /// Live nodes grouped by equal fingerprint (a node without the setting is a group of
        /// its own kind), largest group first.
        groups: Vec<Vec<String>>,
        /// enc_password only: the live nodes whose fingerprint is not the identity's — the
        /// ones that cannot decrypt the cluster's data.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        differs_from_identity: Vec<String>,
    },
    /// TFE on the live nodes runs different values of `setting`: changed live on some of them
    /// (`replicated admin app-config`), whatever they rendered. Only nodes that compared count.
    LiveMismatch {
        setting: String,
        /// Those nodes grouped by equal fingerprint (a node whose TFE runs without the setting
        /// is a group of its own kind), largest group first.
        groups: Vec<Vec<String>>,
    },
    /// More live nodes than `max_nodes`.
    TooMany { live: usize, max: u32 },
    /// A member that stopped heartbeating without leaving (killed, lost its network).
    Stale {
        instance_id: String,
        seconds_since_seen: u64,
    },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // One line for the log and `cluster`: instance ids and setting names, never a value.
        match self {
            Finding::IdentityMissing { live } => write!(
                f,
                "the cluster identity is missing while {live} node(s) are live"
            ),
            Finding::ReleaseMismatch {
                identity_release,
                releases,
            } => {
                f.write_str("live nodes on more than one release:")?;
                if let Some(release) = identity_release {
                    write!(f, " the cluster runs {release};")?;
                }
                let on: Vec<String> = releases
                    .iter()
                    .map(|g| format!("{} on {}", g.release_sequence, g.nodes.join(", ")))
                    .collect();
                write!(f, " {}", on.join("; "))?;
                Ok(())
            }
            Finding::FingerprintMismatch {
                setting,
                groups,
                differs_from_identity,
            } => {
                write!(f, "{setting} differs between live nodes:")?;
                let groups: Vec<String> = groups.iter().map(|g| g.join(", ")).collect();
                write!(f, " {}", groups.join(" | "))?;
                if !differs_from_identity.is_empty() {
                    write!(
                        f,
                        "; not the cluster's on {}",
                        differs_from_identity.join(", ")
                    )?;
                }
                Ok(())
            }
            Finding::LiveMismatch { setting, groups } => {
                let groups: Vec<String> = groups.iter().map(|g| g.join(", ")).collect();
                write!(
                    f,
                    "{setting} as TFE runs it differs between live nodes: {} (changed live: `tfe-node-agent drift` on each says which)",
                    groups.join(" | ")
                )
            }
            Finding::TooMany { live, max } => {
                write!(f, "{live} live nodes, max_nodes {max}")
            }
            Finding::Stale {
                instance_id,
                seconds_since_seen,
            } => write!(f, "{instance_id} not seen for {seconds_since_seen} s"),
        }
    }
}

/// The live nodes that run one release. A list rather than a map keyed by release: JSON keys
/// are strings, and serde cannot read a number back from one inside a tagged enum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseGroup {
    pub release_sequence: u64,
    pub nodes: Vec<String>,
}

impl Finding {
    /// The finding in one line (as `Display`).
    pub fn describe(&self) -> String {
        self.to_string()
    }
}

impl NodeView {
    fn at(record: &MemberRecord, now: u64, node_ttl: Duration) -> NodeView {
        // The store stamps `last_seen` and `now` with its own clock; a record stamped after the
        // read (a heartbeat racing it) is simply fresh.
        let seconds_since_seen = now.saturating_sub(record.last_seen);
        NodeView {
            record: record.clone(),
            stale: Duration::from_secs(seconds_since_seen) > node_ttl,
            seconds_since_seen,
        }
    }
}

/// Every member once, newest record first for any instance id listed twice, then by instance id.
fn node_views(snapshot: &Snapshot, node_ttl: Duration) -> Vec<NodeView> {
    let mut newest: BTreeMap<&str, &MemberRecord> = BTreeMap::new();
    for member in &snapshot.members {
        let slot = newest.entry(&member.instance_id).or_insert(member);
        if member.last_seen > slot.last_seen {
            *slot = member;
        }
    }
    newest
        .values()
        .map(|record| NodeView::at(record, snapshot.now, node_ttl))
        .collect()
}

impl ClusterView {
    /// Who is live, who is stale, and what does not match, as of `snapshot.now`. A member not
    /// seen for longer than `node_ttl` is stale; every other one is live whatever its phase (a
    /// draining or drained node still says so in its phase, and leaves when its hook is released).
    pub fn assess(snapshot: &Snapshot, node_ttl: Duration, max_nodes: Option<u32>) -> ClusterView {
        let nodes = node_views(snapshot, node_ttl);
        let live: Vec<&MemberRecord> = nodes
            .iter()
            .filter(|n| !n.stale)
            .map(|n| &n.record)
            .collect();
        let identity = snapshot.identity.as_ref();
        let mut findings = Vec::new();

        if identity.is_none() && !live.is_empty() {
            findings.push(Finding::IdentityMissing { live: live.len() });
        }

        let mut releases: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for node in &live {
            releases
                .entry(node.release_sequence)
                .or_default()
                .push(node.instance_id.clone());
        }
        let off_identity = identity.is_some_and(|id| {
            releases
                .keys()
                .any(|&release| release != id.release_sequence)
        });
        if releases.len() > 1 || off_identity {
            findings.push(Finding::ReleaseMismatch {
                identity_release: identity.map(|id| id.release_sequence),
                releases: releases
                    .into_iter()
                    .map(|(release_sequence, nodes)| ReleaseGroup {
                        release_sequence,
                        nodes,
                    })
                    .collect(),
            });
        }

        let mut settings: BTreeSet<&str> = live
            .iter()
            .flat_map(|node| node.fingerprints.keys().map(String::as_str))
            .collect();
        // The identity keeps an enc_password fingerprint: compared even if no live node sent one.
        if identity.is_some() && !live.is_empty() {
            settings.insert(ENC_PASSWORD);
        }
        for setting in settings {
            let groups = group_by_fingerprint(&live, setting, |n| &n.fingerprints);
            let differs_from_identity: Vec<String> = match identity {
                Some(id) if setting == ENC_PASSWORD => live
                    .iter()
                    .filter(|node| node.fingerprints.get(setting) != Some(&id.enc_password))
                    .map(|node| node.instance_id.clone())
                    .collect(),
                _ => Vec::new(),
            };
            if groups.len() > 1 || !differs_from_identity.is_empty() {
                findings.push(Finding::FingerprintMismatch {
                    setting: setting.to_string(),
                    groups,
                    differs_from_identity,
                });
            }
        }
        findings.extend(live_mismatches(&live));
        if let Some(max) = max_nodes {
            if live.len() > max as usize {
                findings.push(Finding::TooMany {
                    live: live.len(),
                    max,
                });
            }
        }

        for node in nodes.iter().filter(|n| n.stale) {
            findings.push(Finding::Stale {
                instance_id: node.record.instance_id.clone(),
                seconds_since_seen: node.seconds_since_seen,
            });
        }

        ClusterView {
            cluster_id: identity.map(|id| id.cluster_id.clone()),
            release_sequence: identity.map(|id| id.release_sequence),
            live: live.len(),
            stale: nodes.len() - live.len(),
            consistent: findings.is_empty(),
            nodes,
            findings,
            rolling: None,
        }
    }

    /// For `cluster_mismatches{kind}`: whether live nodes disagree on the release (0 or 1), on
    /// how many rendered settings they (or they and the identity's enc_password) disagree, and
    /// on how many settings as TFE runs them.
    pub fn mismatch_counts(&self) -> [(&'static str, usize); 3] {
        let count = |pred: fn(&Finding) -> bool| self.findings.iter().filter(|f| pred(f)).count();
        [
            (
                "release",
                count(|f| matches!(f, Finding::ReleaseMismatch { .. })),
            ),
            (
                "fingerprint",
                count(|f| matches!(f, Finding::FingerprintMismatch { .. })),
            ),
            ("live", count(|f| matches!(f, Finding::LiveMismatch { .. }))),
        ]
    }
}

/// The setting whose fingerprint the identity keeps.
pub const ENC_PASSWORD: &str = "enc_password";

/// The live nodes that compared their settings with TFE's (`live_fingerprints` set) and whose
/// TFE runs different values of a setting. A node that has not compared yet is left out: it
/// says nothing about its TFE, and the rendered fingerprints already cover what it renders.
fn live_mismatches(live: &[&MemberRecord]) -> Vec<Finding> {
    let compared: Vec<&MemberRecord> = live
        .iter()
        .copied()
        .filter(|n| !n.live_fingerprints.is_empty())
        .collect();
    let settings: BTreeSet<&str> = compared
        .iter()
        .flat_map(|n| n.live_fingerprints.keys().map(String::as_str))
        .collect();
    settings
        .into_iter()
        .filter_map(|setting| {
            let groups = group_by_fingerprint(&compared, setting, |n| &n.live_fingerprints);
            (groups.len() > 1).then(|| Finding::LiveMismatch {
                setting: setting.to_string(),
                groups,
            })
        })
        .collect()
}

/// Live nodes grouped by their fingerprint of `setting` in `of` (nodes without one form a group
/// too), largest group first, then by first instance id; ids sorted within each group.
fn group_by_fingerprint(
    live: &[&MemberRecord],
    setting: &str,
    of: fn(&MemberRecord) -> &BTreeMap<String, String>,
) -> Vec<Vec<String>> {
    let mut by_value: BTreeMap<Option<&String>, Vec<String>> = BTreeMap::new();
    for node in live {
        by_value
            .entry(of(node).get(setting))
            .or_default()
            .push(node.instance_id.clone());
    }
    let mut groups: Vec<Vec<String>> = by_value.into_values().collect();
    for group in &mut groups {
        group.sort();
    }
    groups.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    groups
}

/// A node about to join: what it would bring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub instance_id: String,
    /// agent.toml's `release_sequence`: what install.sh would install.
    pub release_sequence: u64,
    /// Its enc_password fingerprinted with the snapshot's identity's salt (unused when the
    /// snapshot has no identity: there is no salt to compare with).
    pub enc_password_fingerprint: String,
}

/// What the join guard concludes from one read of the store. Pure: the waiting, claiming and
/// re-reading are the boot flow's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The identity matches and no live member runs another release.
    Join,
    /// The repave: the identity records another release and no live member runs any release
    /// but this node's (usually: none is live). Join, and record `release_sequence` in the
    /// identity with `set_release` (the identity in the snapshot says what it was: say so,
    /// loudly if this is a downgrade — TFE's migrations only go forward).
    JoinAndRecordRelease {
        release_sequence: u64,
    },
    /// No identity and no live member: the first node of a new cluster. The caller waits one
    /// node TTL (a node that booted just before this one shows up by then), reads again, and
    /// only then claims; `claim_identity` returns whichever identity won a race, and the
    /// caller decides again against that one (its salt, its enc_password).
    ClaimIdentity,
    /// Live members but no identity (FLUSHALL, an eviction, a reset) and none of them runs
    /// another release. This node cannot check its enc_password: the salt went with the
    /// identity, so no member's fingerprint can be compared with its own. It must not claim an
    /// identity of its own at once — a node with a wrong enc_password would make itself the
    /// reference and the serving nodes the odd ones out. Every live member restores the
    /// identity it joined (same id, salt, fingerprint, release) on its next heartbeat; the
    /// caller reads again after one heartbeat interval and decides again. If the identity is
    /// still missing after the guard's wait (members that cannot restore it), claiming one with
    /// this node's values is the fallback: no live member disagrees on the release.
    NoIdentityButMembers {
        live: Vec<String>,
    },
    Refuse(Refusal),
}

/// Why a node refuses to join: it writes no TFE files, runs no install.sh, and ABANDONs its
/// launch hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Refusal {
    /// Its enc_password fingerprint is not the identity's.
    EncPassword,
    /// A live node runs another release.
    Release {
        mine: u64,
        instance_id: String,
        theirs: u64,
    },
    /// Joining would make more live nodes than `max_nodes`, with `on_too_many = "refuse"`.
    TooMany { live: usize, max: u32 },
}

impl Refusal {
    /// One line for the log and `/status`: which check, and why it matters.
    pub fn why(&self) -> String {
        match self {
            Refusal::EncPassword => {
                "enc_password differs from the cluster's: this node could not decrypt existing data"
                    .to_string()
            }
            Refusal::Release {
                mine,
                instance_id,
                theirs,
            } => format!(
                "release {mine} while live node {instance_id} runs {theirs}: nodes of two releases \
                 must not serve together — finish the repave first"
            ),
            Refusal::TooMany { live, max } => format!(
                "{live} live nodes with this one, max_nodes {max} (on_too_many = \"refuse\")"
            ),
        }
    }

    /// A closed label for the metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Refusal::EncPassword => "enc_password",
            Refusal::Release { .. } => "release",
            Refusal::TooMany { .. } => "too_many",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why())
    }
}

/// The join guard: may `me` join the cluster `snapshot` shows? Its own record (same instance
/// id: an earlier boot of this instance) is ignored, and stale members never count. Checked
/// in order: enc_password (even with no member live: the data outlives the nodes), a live
/// member on another release, the node count, then the repave.
///
/// The caller decides from `ClusterStore::read`, and heartbeats only once it joins: a refused
/// node that wrote its record would count as live and block the next good node until stale.
pub fn join_verdict(
    me: &Candidate,
    snapshot: &Snapshot,
    node_ttl: Duration,
    max_nodes: Option<u32>,
    on_too_many: TooManyPolicy,
) -> Verdict {
    let others: Vec<MemberRecord> = node_views(snapshot, node_ttl)
        .into_iter()
        .filter(|n| !n.stale && n.record.instance_id != me.instance_id)
        .map(|n| n.record)
        .collect();

    if let Some(identity) = &snapshot.identity {
        if me.enc_password_fingerprint != identity.enc_password {
            return Verdict::Refuse(Refusal::EncPassword);
        }
    }
    if let Some(other) = others
        .iter()
        .find(|o| o.release_sequence != me.release_sequence)
    {
        return Verdict::Refuse(Refusal::Release {
            mine: me.release_sequence,
            instance_id: other.instance_id.clone(),
            theirs: other.release_sequence,
        });
    }
    if let (Some(max), TooManyPolicy::Refuse) = (max_nodes, on_too_many) {
        let live = others.len() + 1;
        if live > max as usize {
            return Verdict::Refuse(Refusal::TooMany { live, max });
        }
    }
    match &snapshot.identity {
        Some(identity) if identity.release_sequence != me.release_sequence => {
            Verdict::JoinAndRecordRelease {
                release_sequence: me.release_sequence,
            }
        }
        Some(_) => Verdict::Join,
        None if others.is_empty() => Verdict::ClaimIdentity,
        None => Verdict::NoIdentityButMembers {
            live: others.into_iter().map(|o| o.instance_id).collect(),
        },
    }
}

#[cfg(test)]
mod tests;
