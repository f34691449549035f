//! `repave`: HashiCorp's manual repave of an Active/Active cluster as one resumable command —
//! drain every node, scale to zero, one node on the new launch template version, validate it,
//! then the rest — run from an operator's machine, CI or a node. The pure record and its rules
//! are `crate::model::repave`; this room plans (`plan.rs`), runs each step (`steps.rs`), watches
//! the group and the cluster view (`watch.rs`) and shows progress (`progress.rs`). One
//! orchestrator at a time: the repave lease in the cluster store, renewed every poll, fences
//! every write of the record.

mod plan;
pub mod progress;
mod steps;
mod validate;
mod watch;

use crate::model::repave::{Next, OnFailure, Repave, RepaveState};
use crate::model::rollout::LeaseAnswer;
use crate::ports::cluster::{ClusterStore, RepaveStore, RolloutStore, StoreError};
use crate::ports::{AsgError, Clock, World};
use crate::sys::retry::Backoff;
use progress::Progress;
use std::future::Future;
use std::time::Duration;

/// What the operator asked for.
#[derive(Debug, Clone)]
pub struct Request {
    pub group: String,
    /// The target launch template version: a number, `$Latest` or `$Default`.
    pub version: String,
    /// The capacity to come back to (default: the group's desired capacity before).
    pub capacity: Option<u32>,
    pub validate_cmd: Option<String>,
    pub validate_timeout: Duration,
    pub on_failure: OnFailure,
    pub dry_run: bool,
    pub resume: bool,
    /// Repave although the cluster view is not consistent.
    pub force: bool,
    /// How often the group and the cluster view are read (the notice latency).
    pub poll: Duration,
    pub lease_ttl: Duration,
    /// `[cluster]`: who is live, and the node count bound, as the nodes judge them.
    pub node_ttl: Duration,
    pub max_nodes: Option<u32>,
    /// Who runs it (user and host), for the lease and the record.
    pub owner: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RepaveError {
    /// A check before anything changed, or a state that forbids starting: nothing was changed.
    #[error("repave refused: {0}")]
    Refused(String),
    #[error("{op} for {target} failed")]
    Aws {
        op: &'static str,
        target: String,
        #[source]
        source: AsgError,
    },
    #[error("the cluster store failed")]
    Store(#[source] StoreError),
    #[error("repave refused: the repave lease is held by {owner} (token {token}, since {since}): another repave runs; wait for it to end, or once its orchestrator is gone (the lease lapses {ttl_s} s after its last renewal) continue it with `repave --resume`")]
    LeaseHeld {
        owner: String,
        token: u64,
        since: u64,
        ttl_s: u64,
    },
    /// Another orchestrator took over (this one was paused or cut off past the lease's TTL).
    #[error("the repave lease (token {token}) was lost to another orchestrator: this one stops and changes nothing more")]
    LeaseLost { token: u64 },
}

/// One Auto Scaling or EC2 call with bounded, backed-off retries of what may pass (throttling,
/// 5xx, timeouts): at most five tries over about 30 s, on top of the SDK's own.
pub(crate) async fn aws<T, F, Fut>(
    op: &'static str,
    target: &str,
    mut call: F,
) -> Result<T, RepaveError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AsgError>>,
{
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(16));
    let mut tries = 0;
    loop {
        tries += 1;
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && tries < 5 => {
                let wait = backoff.next_delay();
                log::warn!(
                    "{op} for {target} failed ({}); trying again in {:.1} s",
                    crate::error_chain(&e),
                    wait.as_secs_f64()
                );
                tokio::time::sleep(wait).await;
            }
            Err(source) => {
                return Err(RepaveError::Aws {
                    op,
                    target: target.to_string(),
                    source,
                })
            }
        }
    }
}

/// Runs the repave (or, with `dry_run`, prints its plan): `None` for a dry run, else the record
/// as it ended. An error means the repave did not start, or its orchestrator lost the lease.
/// `confirm` is asked once the plan is shown, before anything changes (not for a dry run or a
/// resume): false refuses.
pub async fn run<W: World, S: ClusterStore + RolloutStore + RepaveStore>(
    w: &W,
    store: &S,
    req: &Request,
    progress: &mut Progress,
    confirm: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Option<Repave>, RepaveError> {
    let status = store.read_repave().await.map_err(RepaveError::Store)?;
    let running = status.repave.filter(|r| r.state == RepaveState::Running);
    let mut repave = match (running, req.resume) {
        (Some(r), false) => {
            return Err(RepaveError::Refused(format!(
                "repave {} of group {} (by {}) has not ended: it is at {}; continue it with `repave --resume`",
                r.id,
                r.plan.group,
                r.requested_by,
                match r.next() {
                    Next::Run { step, pass, .. } => format!("step {} ({} pass)", step.as_str(), pass.as_str()),
                    Next::Ended(s) => s.as_str().to_string(),
                }
            )))
        }
        (None, true) => {
            return Err(RepaveError::Refused(
                "there is no repave to resume: none has been started, or the last one ended (`tfe-node-agent repave` starts one)".into(),
            ))
        }
        (Some(r), true) => {
            if r.plan.group != req.group {
                return Err(RepaveError::Refused(format!(
                    "the repave to resume ({}) is of group {}, not {}",
                    r.id, r.plan.group, req.group
                )));
            }
            r
        }
        (None, false) => {
            let planned = plan::make(w, store, req).await?;
            let now = w.clock().unix_now_ms();
            let id = format!("repave-{now}");
            let repave = Repave::new(id, req.owner.clone(), now, planned.plan);
            progress.plan(&planned.text, &repave);
            if req.dry_run {
                return Ok(None);
            }
            if !confirm(&req.group) {
                return Err(RepaveError::Refused(
                    "not confirmed: nothing changed (pass --yes where no one can answer)".into(),
                ));
            }
            repave
        }
    };
    let token = take_lease(w, store, req, progress).await?;
    if req.resume {
        // Authoritative once the lease is held: the last holder may have written after our read.
        if let Some(r) = store
            .read_repave()
            .await
            .map_err(RepaveError::Store)?
            .repave
        {
            repave = r;
        }
        if repave.state != RepaveState::Running {
            // The orchestrator it waited for finished it meanwhile.
            let _ = store.release_repave_lease(token).await;
            return Err(RepaveError::Refused(format!(
                "repave {} ended ({}) while this one waited for its lease: nothing to resume",
                repave.id,
                repave.state.as_str()
            )));
        }
        progress.note(&format!(
            "resuming repave {} (requested by {}) under lease token {token}",
            repave.id, repave.requested_by
        ));
    }
    let mut ctx = steps::Ctx::new(w, store, req, token);
    let ended = drive(&mut ctx, &mut repave, progress).await;
    if let Err(e) = store.release_repave_lease(token).await {
        log::warn!(
            "releasing the repave lease failed ({}); it lapses in {} s",
            crate::error_chain(&e),
            req.lease_ttl.as_secs()
        );
    }
    ended?;
    progress.report(&repave);
    Ok(Some(repave))
}

/// Takes the repave lease; `--resume` waits (bounded by the TTL and a poll) for the lease of an
/// orchestrator that is gone to lapse.
async fn take_lease<W: World, S: RepaveStore>(
    w: &W,
    store: &S,
    req: &Request,
    progress: &mut Progress,
) -> Result<u64, RepaveError> {
    let deadline = w.clock().now() + req.lease_ttl + req.poll * 2;
    let mut said = false;
    loop {
        match store
            .acquire_repave_lease(&req.owner, req.lease_ttl)
            .await
            .map_err(RepaveError::Store)?
        {
            LeaseAnswer::Acquired(lease) => return Ok(lease.token),
            LeaseAnswer::Held(lease) => {
                if !req.resume || w.clock().now() >= deadline {
                    return Err(RepaveError::LeaseHeld {
                        owner: lease.owner,
                        token: lease.token,
                        since: lease.since,
                        ttl_s: req.lease_ttl.as_secs(),
                    });
                }
                if !said {
                    progress.note(&format!(
                        "the repave lease is held by {} (token {}): waiting up to {} s for it to lapse",
                        lease.owner,
                        lease.token,
                        req.lease_ttl.as_secs()
                    ));
                    said = true;
                }
                w.clock().sleep(req.poll).await;
            }
        }
    }
}

/// Runs the steps from the first one that did not end, recording each before it starts and when
/// it ends.
async fn drive<W: World, S: ClusterStore + RolloutStore + RepaveStore>(
    ctx: &mut steps::Ctx<'_, W, S>,
    repave: &mut Repave,
    progress: &mut Progress,
) -> Result<(), RepaveError> {
    loop {
        let Next::Run {
            step,
            pass,
            resumed,
        } = repave.next()
        else {
            return Ok(());
        };
        repave.start(step, ctx.now_ms());
        ctx.save(repave).await?;
        progress.step_started(step, pass, resumed);
        let outcome = steps::run(ctx, repave, step, pass, progress).await;
        let now = ctx.now_ms();
        match outcome {
            Ok(detail) => repave.finish(step, now, detail),
            Err(steps::StepError::Lease(e)) => return Err(e),
            Err(steps::StepError::Failed(why)) => repave.fail(step, now, why),
        }
        ctx.save(repave).await?;
        if let Some(record) = repave.record(step, pass) {
            progress.step_ended(record);
        }
    }
}

#[cfg(test)]
mod tests;
