//! What the orchestrator holds while it runs: the lease (renewed at every poll and every write of
//! the record) and its view of the group and the cluster — each instance's Auto Scaling state and
//! its phase in the cluster view, recorded in the repave's `instances` when they change.

use super::progress::Progress;
use super::{aws, RepaveError, Request};
use crate::model::asg::LifecycleState;
use crate::model::cluster::{ClusterView, Finding, Snapshot};
use crate::model::repave::{Repave, Step};
use crate::ports::cluster::{ClusterStore, RepaveStore};
use crate::ports::{Clock, GroupControl, GroupInfo, World};
use crate::sys::retry::Backoff;
use std::collections::BTreeMap;
use std::time::Duration;

/// How a step ended badly: the step failed (recorded; the repave goes on to its rollback or
/// abort), or the lease was lost (nothing more may be written or changed).
#[derive(Debug)]
pub enum StepError {
    Failed(String),
    Lease(RepaveError),
}

impl From<RepaveError> for StepError {
    fn from(e: RepaveError) -> Self {
        match e {
            RepaveError::LeaseLost { .. } => StepError::Lease(e),
            other => StepError::Failed(crate::error_chain(&other)),
        }
    }
}

/// One read of the group and the cluster.
pub struct Observed {
    pub group: GroupInfo,
    /// `None` when the store could not be read this time (said once in the log).
    pub snapshot: Option<Snapshot>,
}

impl Observed {
    /// The cluster view, its stale members not counted as a finding: a node killed earlier is
    /// forgotten by the index only after a while, and must not hold the repave up.
    pub fn view(&self, req: &Request) -> Option<ClusterView> {
        let snapshot = self.snapshot.as_ref()?;
        let mut view = ClusterView::assess(snapshot, req.node_ttl, req.max_nodes);
        view.findings
            .retain(|f| !matches!(f, Finding::Stale { .. }));
        view.consistent = view.findings.is_empty();
        Some(view)
    }
}

pub struct Ctx<'a, W, S> {
    pub w: &'a W,
    pub store: &'a S,
    pub req: &'a Request,
    token: u64,
    /// What was last shown per instance: (lifecycle state, phase).
    shown: BTreeMap<String, (String, Option<String>)>,
    store_failing: bool,
}

impl<'a, W: World, S: ClusterStore + RepaveStore> Ctx<'a, W, S> {
    pub fn new(w: &'a W, store: &'a S, req: &'a Request, token: u64) -> Self {
        Ctx {
            w,
            store,
            req,
            token,
            shown: BTreeMap::new(),
            store_failing: false,
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.w.clock().unix_now_ms()
    }

    pub async fn sleep(&self) {
        self.w.clock().sleep(self.req.poll).await;
    }

    /// Writes the record under the lease (renewing it), trying a store that fails for about
    /// half the lease's TTL; a write the store refuses (the lease is another's) is [`LeaseLost`].
    ///
    /// [`LeaseLost`]: RepaveError::LeaseLost
    pub async fn save(&mut self, repave: &Repave) -> Result<(), RepaveError> {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(2));
        let deadline = self.w.clock().now() + self.req.lease_ttl / 2;
        loop {
            let attempt = async {
                if !self
                    .store
                    .renew_repave_lease(self.token, self.req.lease_ttl)
                    .await?
                {
                    return Ok(false);
                }
                self.store.write_repave(self.token, repave).await
            };
            match attempt.await {
                Ok(true) => return Ok(()),
                Ok(false) => return Err(RepaveError::LeaseLost { token: self.token }),
                Err(e) if self.w.clock().now() < deadline => {
                    log::warn!(
                        "writing the repave record failed ({}); trying again",
                        crate::error_chain(&e)
                    );
                    self.w.clock().sleep(backoff.next_delay()).await;
                }
                Err(e) => return Err(RepaveError::Store(e)),
            }
        }
    }

    /// Reads the group and the cluster, records what changed for each instance (saving the
    /// record when something did, else just renewing the lease) and shows it.
    pub async fn observe(
        &mut self,
        repave: &mut Repave,
        step: Step,
        progress: &mut Progress,
    ) -> Result<Observed, RepaveError> {
        let groups = self.w.groups();
        let name = repave.plan.group.clone();
        let group = aws("DescribeAutoScalingGroups", &name, || {
            groups.describe_group(&name)
        })
        .await?
        .ok_or_else(|| RepaveError::Refused(format!("group {name} is gone")))?;
        let snapshot = match self.store.read().await {
            Ok(s) => {
                self.store_failing = false;
                Some(s)
            }
            Err(e) => {
                if !self.store_failing {
                    log::warn!(
                        "reading the cluster view failed ({}); the group's own view goes on",
                        crate::error_chain(&e)
                    );
                }
                self.store_failing = true;
                None
            }
        };
        let now = self.now_ms();
        let mut changed = false;
        let mut status = Vec::new();
        for i in &group.instances {
            let member = snapshot
                .as_ref()
                .and_then(|s| s.members.iter().find(|m| m.instance_id == i.instance_id));
            let phase = member.map(|m| m.phase.as_str().to_string());
            let seen = repave.seen(&i.instance_id, i.template_version.as_deref(), now);
            let in_service = i.lifecycle_state == LifecycleState::InService;
            if in_service && seen.in_service_ms.is_none() {
                seen.in_service_ms = Some(now);
            }
            if !in_service && seen.in_service_ms.is_some() && seen.left_service_ms.is_none() {
                seen.left_service_ms = Some(now);
            }
            if let Some(m) = member {
                if m.last_error.is_some() && seen.last_error != m.last_error {
                    seen.last_error = m.last_error.clone();
                    changed = true;
                }
            }
            if phase.is_some() && seen.phase != phase {
                seen.phase = phase.clone();
                changed = true;
            }
            let state = i.lifecycle_state.as_str().to_string();
            status.push((
                i.instance_id.clone(),
                format!("{state}/{}", phase.as_deref().unwrap_or("-")),
            ));
            let now_shown = (state.clone(), phase.clone());
            if self.shown.get(&i.instance_id) != Some(&now_shown) {
                progress.instance(
                    &i.instance_id,
                    &state,
                    phase.as_deref(),
                    i.template_version.as_deref(),
                );
                self.shown.insert(i.instance_id.clone(), now_shown);
                changed = true;
            }
        }
        for seen in repave.instances.iter_mut() {
            if seen.gone_ms.is_none()
                && !group
                    .instances
                    .iter()
                    .any(|i| i.instance_id == seen.instance_id)
            {
                seen.gone_ms = Some(now);
                if seen.in_service_ms.is_some() && seen.left_service_ms.is_none() {
                    seen.left_service_ms = Some(now);
                }
                progress.instance(
                    &seen.instance_id,
                    "gone",
                    seen.phase.as_deref(),
                    seen.template_version.as_deref(),
                );
                self.shown.remove(&seen.instance_id);
                changed = true;
            }
        }
        progress.status(step, &status);
        if changed {
            self.save(repave).await?;
        } else if !self
            .store
            .renew_repave_lease(self.token, self.req.lease_ttl)
            .await
            .unwrap_or(true)
        {
            // A store that cannot be reached keeps the lease until the next write says.
            return Err(RepaveError::LeaseLost { token: self.token });
        }
        Ok(Observed { group, snapshot })
    }
}
