//! This node in its cluster: the join guard before anything is written, and the membership loop
//! that writes this node's record every heartbeat and reads everyone else's. The store is TFE's
//! own external Redis; a store that cannot be reached degrades the view, it never stops a boot or
//! a drain (TFE itself needs that Redis, so readiness finds a real outage anyway).

use crate::config::{ClusterSection, Settings};
use crate::model::cluster::{
    join_verdict, Candidate, ClusterIdentity, ClusterView, Finding, MemberRecord, Refusal,
    Snapshot, Verdict,
};
use crate::model::lifecycle::Phase;
use crate::model::rollout::RollingView;
use crate::node::operator::Door;
use crate::node::recorder::{LiveValues, Recorder, ViewPublisher};
use crate::node::rolling::{self, Turn};
use crate::ports::cluster::{ClusterStore, ClusterStores, RolloutStore, StoreError, StoreTarget};
use crate::ports::{Clock, Identity, World};
use crate::sys::secret::Secret;
use crate::telemetry::metrics::metrics;
use crate::telemetry::{loops, LoopName};
use crate::tfe_files::fingerprint;
use crate::tfe_files::{SettingValue, TfeConfig};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long the join guard waits for the store before it lets the boot go on without it.
const GUARD_READ: Duration = Duration::from_secs(2);

/// Where this node's cluster store is, from TFE's own `redis_*` settings; `None` when the
/// cluster view is off (`[cluster].enabled = false`, or no `redis_host` and not enabled).
pub fn store_target(cfg: &ClusterSection, node: &TfeConfig) -> Option<StoreTarget> {
    let setting = |k: &str| node.settings.get(k).map(SettingValue::expose);
    let host = match (cfg.enabled, setting("redis_host")) {
        (Some(false), _) => return None,
        (_, Some(h)) if !h.is_empty() => h.to_string(),
        (Some(true), _) => {
            log::warn!("[cluster].enabled is true but no redis_host setting names a Redis: no cluster view");
            return None;
        }
        (None, _) => return None,
    };
    let on = |k: &str| setting(k) == Some("1");
    Some(StoreTarget {
        host,
        port: setting("redis_port")
            .and_then(|p| p.parse().ok())
            .unwrap_or(6379),
        password: on("redis_use_password_auth")
            .then(|| setting("redis_pass").map(Secret::new))
            .flatten(),
        tls: on("redis_use_tls"),
        ca_bundle: setting("ca_certs").map(str::to_string),
        database: cfg.database,
        key_prefix: cfg.key_prefix.clone(),
    })
}

/// What the guard lets through: the store and this node's record, for [`run_membership`].
pub struct Membership<S> {
    /// Shared with a rolling restart's turn while one runs.
    store: Arc<S>,
    me: MemberRecord,
    /// The must-match values (fingerprinted again when the cluster's salt changes).
    values: BTreeMap<String, Secret>,
    salt: Option<String>,
    /// The live values (and the salt) `me.live_fingerprints` were computed from.
    live_of: Option<(String, LiveValues)>,
    /// The identity this node joined: restored if the store loses it.
    joined: Option<ClusterIdentity>,
    cfg: ClusterSection,
}

#[derive(Debug, thiserror::Error)]
#[error("this node must not join its cluster: {}", .0.why())]
pub struct JoinRefused(pub Refusal);

/// The join guard, right after the node's settings are validated and before any file is
/// written: a node whose enc_password differs from the cluster's, or whose release differs from
/// a live member's, is refused. `Ok(None)`: no cluster view (off, or no Redis named).
pub async fn guard<W: World>(
    world: &W,
    cfg: &Settings,
    node: &TfeConfig,
    identity: &Identity,
    recorder: &Recorder,
) -> Result<Option<Membership<<W::Stores as ClusterStores>::Store>>, JoinRefused> {
    let Some(target) = store_target(&cfg.cluster, node) else {
        return Ok(None);
    };
    let address = format!("{}:{}", target.host, target.port);
    let store = Arc::new(world.stores().open(target));
    let values: BTreeMap<String, Secret> = cfg
        .cluster
        .must_match
        .iter()
        .filter_map(|k| {
            node.settings
                .get(k)
                .map(|v| (k.clone(), Secret::new(v.expose())))
        })
        .collect();
    let mut membership = Membership {
        store,
        me: MemberRecord {
            instance_id: identity.instance_id.clone(),
            private_ip: identity.private_ipv4.clone(),
            availability_zone: identity.availability_zone.clone(),
            phase: recorder.phase(),
            release_sequence: node.release_sequence,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            launched_at: recorder.launched_at(),
            last_seen: 0,
            fingerprints: BTreeMap::new(),
            live_fingerprints: BTreeMap::new(),
            last_error: None,
        },
        values,
        salt: None,
        live_of: None,
        joined: None,
        cfg: cfg.cluster.clone(),
    };
    let snapshot = match read(world, &*membership.store).await {
        Ok(s) => s,
        Err(e) => {
            log::warn!(
                "the join guard cannot read the cluster store ({}): the boot goes on unguarded; TFE needs this Redis too",
                crate::error_chain(&e)
            );
            metrics().cluster_store_up(false);
            return Ok(Some(membership));
        }
    };
    let snapshot = claim_if_first(world, &mut membership, snapshot, &address).await;
    let Some(cluster) = snapshot.identity.clone() else {
        return Ok(Some(membership));
    };
    membership.fingerprint_with(&cluster.salt).await;
    membership.joined = Some(cluster.clone());
    let candidate = Candidate {
        instance_id: membership.me.instance_id.clone(),
        release_sequence: membership.me.release_sequence,
        enc_password_fingerprint: membership
            .me
            .fingerprints
            .get("enc_password")
            .cloned()
            .unwrap_or_default(),
    };
    match join_verdict(
        &candidate,
        &snapshot,
        cfg.cluster.node_ttl,
        cfg.cluster.max_nodes,
        cfg.cluster.on_too_many,
    ) {
        Verdict::Refuse(refusal) => {
            metrics().join_refused();
            Err(JoinRefused(refusal))
        }
        Verdict::JoinAndRecordRelease { release_sequence } => {
            log::warn!(
                "no member of cluster {} is live: release {release_sequence} becomes the cluster's (was {}) — a repave",
                cluster.cluster_id,
                cluster.release_sequence
            );
            if let Err(e) = membership
                .store
                .set_release(&cluster.cluster_id, release_sequence)
                .await
            {
                log::warn!(
                    "recording the cluster's new release failed: {}",
                    crate::error_chain(&e)
                );
            }
            Ok(Some(membership))
        }
        _ => Ok(Some(membership)),
    }
}

async fn read<W: World, S: ClusterStore>(world: &W, store: &S) -> Result<Snapshot, StoreError> {
    tokio::select! {
        r = store.read() => r,
        _ = world.clock().sleep(GUARD_READ) => Err(StoreError::Unavailable {
            address: "cluster store".into(),
            detail: format!("no answer within {GUARD_READ:?}"),
        }),
    }
}

/// The first node of a cluster (no identity, no live member) waits one node TTL — another first
/// node may be racing — then claims the identity atomically; both racers end with the winner's.
async fn claim_if_first<W: World, S: ClusterStore>(
    world: &W,
    membership: &mut Membership<S>,
    snapshot: Snapshot,
    address: &str,
) -> Snapshot {
    if snapshot.identity.is_some() {
        return snapshot;
    }
    let ttl = membership.cfg.node_ttl;
    let live = |s: &Snapshot| {
        s.members.iter().any(|m| {
            m.instance_id != membership.me.instance_id
                && s.now.saturating_sub(m.last_seen) <= ttl.as_secs()
        })
    };
    // Live members but no identity: the store lost it (a FLUSHALL, an eviction). Each live
    // member restores the identity it joined on its next heartbeat; wait for that. No member at
    // all: another first node may be starting; wait one node TTL for it.
    let (wait, why) = if live(&snapshot) {
        (
            membership.cfg.heartbeat_interval * 2,
            "has members but no cluster identity (flushed or evicted?): waiting for them to restore it",
        )
    } else {
        (
            ttl,
            "has no cluster yet: waiting one node TTL in case another first node is starting, then claiming it",
        )
    };
    log::info!(
        "cluster store {address} {why} ({})",
        humantime::format_duration(wait)
    );
    world.clock().sleep(wait).await;
    let snapshot = match read(world, &*membership.store).await {
        Ok(s) if s.identity.is_some() => return s,
        Ok(s) => s,
        Err(e) => {
            log::warn!(
                "re-reading the cluster store failed: {}",
                crate::error_chain(&e)
            );
            return snapshot;
        }
    };
    let (salt, cluster_id) = match (fingerprint::new_salt(), fingerprint::new_salt()) {
        (Ok(salt), Ok(id)) => (salt, id),
        (Err(e), _) | (_, Err(e)) => {
            log::warn!(
                "cannot create a cluster identity: {}; going on without one (the next node tries again)",
                crate::error_chain(&e)
            );
            return snapshot;
        }
    };
    membership.fingerprint_with(&salt).await;
    let mine = ClusterIdentity {
        cluster_id,
        salt,
        enc_password: membership
            .me
            .fingerprints
            .get("enc_password")
            .cloned()
            .unwrap_or_default(),
        release_sequence: membership.me.release_sequence,
        created_at: snapshot.now,
    };
    match membership.store.claim_identity(&mine).await {
        Ok(winner) => {
            if winner.cluster_id == mine.cluster_id {
                log::info!(
                    "this node created cluster {} (release {})",
                    winner.cluster_id,
                    winner.release_sequence
                );
            } else {
                log::info!(
                    "another node created cluster {} first; joining it",
                    winner.cluster_id
                );
            }
            Snapshot {
                identity: Some(winner),
                ..snapshot
            }
        }
        Err(e) => {
            log::warn!(
                "claiming the cluster identity failed: {}",
                crate::error_chain(&e)
            );
            snapshot
        }
    }
}

impl<S: ClusterStore> Membership<S> {
    /// Fingerprints of the must-match values with `salt`, computed off the runtime's thread (a
    /// deliberately slow KDF must not hold up the heartbeats and the watcher).
    async fn fingerprint_with(&mut self, salt: &str) {
        if self.salt.as_deref() == Some(salt) {
            return;
        }
        match kdf(salt, self.values.clone()).await {
            Ok(f) => {
                self.me.fingerprints = f;
                self.salt = Some(salt.to_string());
            }
            Err(e) => log::error!("computing the settings' fingerprints failed: {e}"),
        }
    }

    /// Fingerprints of the must-match values TFE runs (from the drift loop), with the salt of
    /// the rendered ones, when the values or the salt changed. A live value equal to the
    /// rendered one has its fingerprint already: only values changed live cost a KDF.
    async fn fingerprint_live(&mut self, live: LiveValues) {
        let (Some(values), Some(salt)) = (&live, self.salt.clone()) else {
            return;
        };
        if self.live_of.as_ref() == Some(&(salt.clone(), live.clone())) {
            return;
        }
        let mut known = BTreeMap::new();
        let mut changed = BTreeMap::new();
        for (key, value) in values.iter() {
            match (self.values.get(key), self.me.fingerprints.get(key)) {
                (Some(rendered), Some(f)) if rendered == value => {
                    known.insert(key.clone(), f.clone());
                }
                _ => {
                    changed.insert(key.clone(), value.clone());
                }
            }
        }
        match kdf(&salt, changed).await {
            Ok(f) => {
                known.extend(f);
                self.me.live_fingerprints = known;
                self.live_of = Some((salt, live));
            }
            Err(e) => log::error!("computing the live settings' fingerprints failed: {e}"),
        }
    }
}

/// `values` fingerprinted with `salt`, off the runtime's thread (a deliberately slow KDF must
/// not hold up the heartbeats and the watcher).
async fn kdf(
    salt: &str,
    values: BTreeMap<String, Secret>,
) -> Result<BTreeMap<String, String>, tokio::task::JoinError> {
    if values.is_empty() {
        return Ok(BTreeMap::new());
    }
    let salt = salt.to_string();
    let compute = move || {
        values
            .iter()
            .map(|(k, v)| (k.clone(), fingerprint::fingerprint(&salt, k, v.expose())))
            .collect::<BTreeMap<_, _>>()
    };
    // Under tokio's paused clock (the unit tests) a blocking task lets virtual time run on to
    // the next timer while it computes: there it is computed in place.
    if cfg!(test) {
        Ok(compute())
    } else {
        tokio::task::spawn_blocking(compute).await
    }
}

/// The membership loop, for the life of the agent: this node's record every heartbeat interval
/// (with its current phase), the cluster view into `/status` and the metrics, findings logged
/// when they change. `live`: the must-match values TFE runs, from the drift loop, published as
/// fingerprints so that a value changed live on one node shows. When the node is drained and its
/// terminate hook released it leaves the cluster and ends.
pub async fn run_membership<S: ClusterStore + RolloutStore + 'static>(
    mut membership: Membership<S>,
    mut view: watch::Receiver<crate::node::view::View>,
    live: watch::Receiver<LiveValues>,
    publish: ViewPublisher,
    door: Option<Door>,
) {
    let interval = membership.cfg.heartbeat_interval;
    let keep_for = membership.cfg.node_ttl * 2;
    let alive = loops().enter(LoopName::Cluster, interval);
    let mut last_findings = None;
    let mut last_error: Option<String> = None;
    let mut turn: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        alive.tick();
        let (phase, node_error) = {
            let v = view.borrow_and_update();
            (v.phase, v.last_error.as_ref().map(|e| e.chain.clone()))
        };
        membership.me.phase = phase;
        membership.me.last_error = node_error;
        if phase == Phase::Drained {
            match membership.store.leave(&membership.me.instance_id).await {
                Ok(()) => log::info!("left the cluster (drained, terminate hook released)"),
                Err(e) => log::warn!(
                    "leaving the cluster failed: {}; the record expires",
                    crate::error_chain(&e)
                ),
            }
            return;
        }
        match membership.store.heartbeat(&membership.me, keep_for).await {
            Ok(snapshot) => {
                metrics().cluster_store_up(true);
                if last_error.take().is_some() {
                    log::info!("the cluster store answers again");
                }
                match (&snapshot.identity, &membership.joined) {
                    (Some(identity), _) => {
                        // A new identity (an operator's reset): fingerprints with its salt.
                        let salt = identity.salt.clone();
                        membership.fingerprint_with(&salt).await;
                        let values = live.borrow().clone();
                        membership.fingerprint_live(values).await;
                    }
                    (None, Some(joined)) => {
                        // The store lost it (FLUSHALL, eviction): restore the one this node
                        // joined, unless another member did first.
                        match membership.store.claim_identity(joined).await {
                            Ok(_) => log::warn!(
                                "the cluster store had lost cluster identity {}: restored it",
                                joined.cluster_id
                            ),
                            Err(e) => log::warn!(
                                "restoring the cluster identity failed: {}",
                                crate::error_chain(&e)
                            ),
                        }
                    }
                    (None, None) => {}
                }
                let cluster = ClusterView::assess(
                    &snapshot,
                    membership.cfg.node_ttl,
                    membership.cfg.max_nodes,
                );
                let mut cluster = cluster;
                cluster.rolling =
                    rolling_turn(&membership, phase, door.as_ref(), &view, &mut turn).await;
                metrics().cluster(&cluster);
                // Said once per change: a stale node's age grows every heartbeat, not its finding.
                let findings = unaged(&cluster.findings);
                if last_findings.as_ref() != Some(&findings) {
                    for f in &cluster.findings {
                        log::warn!("cluster: {}", f.describe());
                    }
                    if cluster.findings.is_empty() && last_findings.is_some() {
                        log::info!("cluster: consistent again");
                    }
                    last_findings = Some(findings);
                }
                publish.cluster(serde_json::to_value(&cluster).ok());
            }
            Err(e) => {
                metrics().cluster_store_up(false);
                let text = crate::error_chain(&e);
                if last_error.as_ref() != Some(&text) {
                    log::warn!(
                        "cluster heartbeat failed: {text}; the node goes on (the view is stale)"
                    );
                    last_error = Some(text);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            // A phase change is told at once (draining, drained); the loop's own publishing
            // changes the view too, so only the phase wakes it.
            changed = view.wait_for(|v| v.phase != phase) => {
                if changed.is_err() {
                    return; // the recorder is gone: the agent is ending
                }
            }
        }
    }
}

/// The rolling restart as the store holds it (for the view), and this node's turn spawned when
/// the rollout waits for it, the node is in service and no turn of its own runs already.
async fn rolling_turn<S: ClusterStore + RolloutStore + 'static>(
    membership: &Membership<S>,
    phase: Phase,
    door: Option<&Door>,
    view: &watch::Receiver<crate::node::view::View>,
    turn: &mut Option<tokio::task::JoinHandle<()>>,
) -> Option<RollingView> {
    let status = match membership.store.read_rollout().await {
        Ok(s) => s,
        Err(e) => {
            log::debug!(
                "reading the rolling restart failed: {}",
                crate::error_chain(&e)
            );
            return None;
        }
    };
    let me = &membership.me.instance_id;
    let idle = turn.as_ref().is_none_or(|t| t.is_finished());
    if let Some(door) = door.filter(|_| {
        idle && phase == Phase::InService && rolling::my_turn(status.rollout.as_ref(), me)
    }) {
        let work = Turn {
            store: membership.store.clone(),
            door: door.clone(),
            view: view.clone(),
            instance_id: me.clone(),
            heartbeat: membership.cfg.heartbeat_interval,
        };
        *turn = Some(tokio::spawn(async move {
            if let Err(e) = rolling::take_turn(work).await {
                log::warn!("rolling restart: {}", crate::error_chain(&e));
            }
        }));
    }
    Some(RollingView {
        lease: status.lease,
        rollout: status.rollout,
        now: status.now,
    })
}

/// `findings` with the ages of stale nodes left out (what the log compares).
fn unaged(findings: &[Finding]) -> Vec<Finding> {
    findings
        .iter()
        .map(|f| match f {
            Finding::Stale { instance_id, .. } => Finding::Stale {
                instance_id: instance_id.clone(),
                seconds_since_seen: 0,
            },
            other => other.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests;
