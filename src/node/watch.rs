//! Watching IMDS for the end of this node: the ASG's target lifecycle state, spot interruption
//! notices, rebalance recommendations and scheduled maintenance. One request per poll in the
//! common case: the spot items are asked only on spot instances, maintenance once a minute, and
//! values that never change (the instance's life cycle) once.

use crate::config::TerminationSection;
use crate::model::asg::LifecycleState;
use crate::model::lifecycle::Source;
use crate::node::recorder::Recorder;
use crate::ports::{Clock, InstanceMetadata};
use crate::telemetry::{loops, LoopName};
use std::collections::BTreeSet;
use tokio::time::Instant;

const TARGET: &str = "/latest/meta-data/autoscaling/target-lifecycle-state";
const LIFE_CYCLE: &str = "/latest/meta-data/instance-life-cycle";
const SPOT_ACTION: &str = "/latest/meta-data/spot/instance-action";
const REBALANCE: &str = "/latest/meta-data/events/recommendations/rebalance";
const MAINTENANCE: &str = "/latest/meta-data/events/maintenance/scheduled";

/// Maintenance codes that take the instance away (reboots included: TFE goes down with it).
const DISRUPTIVE: &[&str] = &[
    "instance-stop",
    "instance-retirement",
    "instance-reboot",
    "system-reboot",
    "system-maintenance",
];

/// What the watcher saw that the service must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A reason to drain.
    Drain(Seen),
    /// IMDS target-lifecycle-state went back to `InService` from another value (`Standby`,
    /// `Detached`, a warm pool state): the group may wait on the launch hook again.
    BackInService { from: LifecycleState },
}

/// A reason to drain, as seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub source: Source,
    pub detail: String,
    /// For spot: the announced time (unix seconds), when it parses.
    pub deadline: Option<u64>,
}

pub struct Watcher<'a, M, C> {
    imds: &'a M,
    clock: &'a C,
    cfg: &'a TerminationSection,
    /// Where notices that do not end the node (rebalance, maintenance) are published.
    recorder: Option<&'a Recorder>,
    /// Sources already returned: each starts a drain once.
    fired: BTreeSet<&'static str>,
    /// Notices already logged (rebalance times, maintenance event ids), so each is said once.
    reported: BTreeSet<String>,
    next_spot: Instant,
    next_events: Instant,
    /// The last IMDS error, logged on change only: a broken IMDS must not flood the journal.
    last_error: Option<String>,
    /// The last target-lifecycle-state read (404 = none).
    last_target: Option<LifecycleState>,
    /// A return to service seen and not yet handed out.
    back_in_service: Option<LifecycleState>,
}

impl<'a, M: InstanceMetadata, C: Clock> Watcher<'a, M, C> {
    pub fn new(imds: &'a M, clock: &'a C, cfg: &'a TerminationSection) -> Self {
        let now = clock.now();
        Self {
            imds,
            clock,
            cfg,
            recorder: None,
            fired: BTreeSet::new(),
            reported: BTreeSet::new(),
            next_spot: now,
            next_events: now,
            last_error: None,
            last_target: None,
            back_in_service: None,
        }
    }

    /// Publishes the notices that do not end the node through `recorder` (as status).
    pub fn reporting_to(mut self, recorder: &'a Recorder) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// A notice that does not drain the node (one that does is recorded as a termination).
    fn publish(&self, source: Source, detail: &str) {
        if let Some(recorder) = self.recorder {
            recorder.notice(source, detail);
            recorder.say(&format!("in service; {detail}"));
        }
    }

    /// Waits for the next reason to drain; polls IMDS until there is one. Returns to service
    /// seen meanwhile are kept for [`Watcher::next_change`].
    pub async fn next(&mut self) -> Seen {
        let alive = loops().enter(LoopName::Watcher, self.cfg.poll_interval);
        loop {
            alive.tick();
            if let Some(seen) = self.poll().await {
                if self.fired.insert(seen.source.as_str()) {
                    return seen;
                }
            }
            self.clock.sleep(self.cfg.poll_interval).await;
        }
    }

    /// Waits for the next reason to drain or return to service.
    pub async fn next_change(&mut self) -> Change {
        let alive = loops().enter(LoopName::Watcher, self.cfg.poll_interval);
        loop {
            alive.tick();
            if let Some(from) = self.back_in_service.take() {
                return Change::BackInService { from };
            }
            if let Some(seen) = self.poll().await {
                if self.fired.insert(seen.source.as_str()) {
                    return Change::Drain(seen);
                }
            }
            if let Some(from) = self.back_in_service.take() {
                return Change::BackInService { from };
            }
            self.clock.sleep(self.cfg.poll_interval).await;
        }
    }

    async fn poll(&mut self) -> Option<Seen> {
        let target = self.ask(TARGET).await.map(|s| LifecycleState::parse(&s));
        if let Some(now) = &target {
            let before = self.last_target.replace(now.clone());
            match before {
                Some(b) if b != *now && *now == LifecycleState::InService => {
                    log::info!("IMDS target-lifecycle-state went from {b} to InService");
                    self.back_in_service = Some(b);
                }
                Some(LifecycleState::InService) if now.is_warm_pool_resting() => {
                    return Some(Seen {
                        source: Source::WarmPool,
                        detail: format!(
                            "IMDS target-lifecycle-state went from InService to {now}: a scale-in returns the instance to the warm pool"
                        ),
                        deadline: None,
                    });
                }
                _ => {}
            }
        }
        if let Some(t) = target.filter(LifecycleState::is_terminated) {
            return Some(Seen {
                source: Source::Asg,
                detail: format!("IMDS target-lifecycle-state is {t}"),
                deadline: None,
            });
        }
        let now = self.clock.now();
        if now >= self.next_spot {
            self.next_spot = now + self.cfg.spot_poll_interval;
            if let Some(seen) = self.poll_spot().await {
                return Some(seen);
            }
        }
        if now >= self.next_events {
            self.next_events = now + self.cfg.events_poll_interval;
            if let Some(seen) = self.poll_maintenance().await {
                return Some(seen);
            }
        }
        None
    }

    async fn poll_spot(&mut self) -> Option<Seen> {
        match self.imds.get_static(LIFE_CYCLE).await {
            Ok(kind) if kind == "spot" => {}
            Ok(_) => return None,
            Err(e) => {
                self.note_error(e.to_string());
                return None;
            }
        }
        if let Some(text) = self.ask(SPOT_ACTION).await {
            let notice: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let action = notice["action"].as_str().unwrap_or("unknown").to_string();
            let time = notice["time"].as_str().unwrap_or("unknown").to_string();
            return Some(Seen {
                source: Source::Spot,
                detail: format!("spot instance-action {action} at {time}"),
                deadline: humantime::parse_rfc3339_weak(&time)
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs()),
            });
        }
        if let Some(text) = self.ask(REBALANCE).await {
            let notice: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let at = notice["noticeTime"]
                .as_str()
                .unwrap_or("unknown")
                .to_string();
            let detail = format!("rebalance recommendation (noticeTime {at})");
            if self.reported.insert(format!("rebalance {at}")) {
                log::warn!(
                    "{detail}: {}",
                    if self.cfg.drain_on_rebalance {
                        "draining ([termination].drain_on_rebalance)"
                    } else {
                        "not draining (set [termination].drain_on_rebalance to drain early)"
                    }
                );
                if !self.cfg.drain_on_rebalance {
                    self.publish(Source::Rebalance, &detail);
                }
            }
            if self.cfg.drain_on_rebalance {
                return Some(Seen {
                    source: Source::Rebalance,
                    detail,
                    deadline: None,
                });
            }
        }
        None
    }

    async fn poll_maintenance(&mut self) -> Option<Seen> {
        let text = self.ask(MAINTENANCE).await?;
        let events: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap_or_default();
        let mut drain = None;
        for event in &events {
            let field = |k: &str| event[k].as_str().unwrap_or("").to_string();
            let (code, state) = (field("Code"), field("State"));
            if matches!(state.as_str(), "completed" | "canceled" | "cancelled") {
                continue;
            }
            let detail = format!(
                "scheduled maintenance {} {code} not before {}",
                field("EventId"),
                field("NotBefore")
            );
            let disruptive = DISRUPTIVE.contains(&code.as_str());
            if self.reported.insert(field("EventId") + &code) {
                log::warn!(
                    "{detail} ({}): {}",
                    field("Description"),
                    match (disruptive, self.cfg.drain_on_maintenance) {
                        (true, true) => "draining ([termination].drain_on_maintenance)",
                        (true, false) =>
                            "not draining (set [termination].drain_on_maintenance to drain early)",
                        (false, _) => "does not take the instance away",
                    }
                );
                if !(disruptive && self.cfg.drain_on_maintenance) {
                    self.publish(Source::Maintenance, &detail);
                }
            }
            if disruptive && self.cfg.drain_on_maintenance && drain.is_none() {
                drain = Some(Seen {
                    source: Source::Maintenance,
                    detail,
                    deadline: None,
                });
            }
        }
        drain
    }

    /// One IMDS item; errors are logged (once per distinct error) and read as "nothing".
    async fn ask(&mut self, path: &str) -> Option<String> {
        match self.imds.get(path).await {
            Ok(v) => {
                if self.last_error.take().is_some() {
                    log::info!("instance metadata answers again");
                }
                v.map(|s| s.trim().to_string())
            }
            Err(e) => {
                self.note_error(e.to_string());
                None
            }
        }
    }

    fn note_error(&mut self, error: String) {
        if self.last_error.as_ref() != Some(&error) {
            log::warn!("watching for termination: {error}; retrying");
            self.last_error = Some(error);
        }
    }
}

#[cfg(test)]
mod tests;
