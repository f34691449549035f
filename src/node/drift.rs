//! Drift detection (docs/operate/drift.md): the settings the agent rendered against what TFE runs
//! (`replicatedctl app-config export --hidden`). Once right after the node is ready, then every
//! `[drift].interval`; said in the log once per change, shown in `/status` and the metrics, and
//! never corrected. The live must-match values go to the membership loop, which publishes their
//! fingerprints so `cluster` shows nodes whose live settings disagree.

use crate::config::{DriftSection, Settings};
use crate::model::drift::{self, Allowlist, Desired, DriftReport, LiveSettings};
use crate::model::lifecycle::Phase;
use crate::node::recorder::ViewPublisher;
use crate::node::view::View;
use crate::ports::{TfeTools, ToolError};
use crate::sys::time::unix_now;
use crate::telemetry::metrics::metrics;
use crate::telemetry::{loops, LoopName};
use crate::tfe_files::TfeConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

/// `/status` `drift`: the last comparison, or why the last one could not run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftStatus {
    /// Unix seconds of the last attempt.
    pub checked_at: u64,
    /// Why the last attempt failed (the report, if any, is the one before).
    pub error: Option<String>,
    #[serde(flatten)]
    pub report: Option<DriftReport>,
}

/// The built-in allowlist plus `[drift].ignore`.
pub fn allowlist(cfg: &DriftSection) -> Allowlist {
    Allowlist {
        ignore: cfg.ignore.iter().cloned().collect(),
    }
}

/// One comparison: the export, then the rendered settings against it.
pub async fn check<T: TfeTools>(
    tools: &T,
    node: &TfeConfig,
    allow: &Allowlist,
) -> Result<(DriftReport, LiveSettings), ToolError> {
    let live = tools.app_config_export().await?;
    let desired = node.settings.iter().map(|(k, v)| {
        let d = Desired {
            value: v.expose(),
            secret: v.is_secret(),
        };
        (k.as_str(), d)
    });
    Ok((drift::compare(desired, &live, allow), live))
}

/// What the log says about a report (one line).
pub fn describe(report: &DriftReport) -> String {
    if !report.drifted {
        return "none: TFE runs the rendered settings".into();
    }
    let c = report.counts;
    let keys: Vec<String> = report.keys.iter().map(|k| k.describe()).collect();
    format!(
        "{} key(s) differ from the rendered settings (added {}, changed {}, missing {}): {}",
        report.keys.len(),
        c.added,
        c.changed,
        c.missing,
        keys.join("; ")
    )
}

/// The `drift` command's text: one line per drifted key, then what to do.
pub fn table(report: &DriftReport) -> String {
    if !report.drifted {
        return "no drift: TFE runs the rendered settings\n".into();
    }
    let mut out = String::new();
    for key in &report.keys {
        out.push_str(&format!("{:<8} {}\n", key.kind.as_str(), key.describe()));
    }
    let c = report.counts;
    out.push_str(&format!(
        "drift: {} added, {} changed, {} missing. Never corrected: make a change permanent in agent.toml [settings] or the secret (a repave renders only those), or revert it.\n",
        c.added, c.changed, c.missing
    ));
    out
}

fn going(phase: Phase) -> bool {
    matches!(phase, Phase::Draining | Phase::Drained)
}

/// What the log says, decided once per comparison: a line only when the outcome changed.
#[derive(Debug, Default)]
pub struct Tracker {
    last: Option<DriftReport>,
    last_error: Option<String>,
}

impl Tracker {
    /// The line to log about this outcome, if it is news.
    pub fn news(&mut self, outcome: Result<&DriftReport, &str>) -> Option<(log::Level, String)> {
        match outcome {
            Ok(report) => {
                let recovered = self.last_error.take().is_some();
                if self.last.as_ref() == Some(report) {
                    return recovered.then(|| {
                        (
                            log::Level::Info,
                            "config drift: app-config export answers again".into(),
                        )
                    });
                }
                self.last = Some(report.clone());
                Some(if report.drifted {
                    (log::Level::Warn, format!(
                        "config drift: {}. Never corrected by the agent: make the change permanent in agent.toml [settings] or the secret (the next repave renders only those), or revert it",
                        describe(report)
                    ))
                } else {
                    (
                        log::Level::Info,
                        format!("config drift: {}", describe(report)),
                    )
                })
            }
            Err(text) if self.last_error.as_deref() == Some(text) => None,
            Err(text) => {
                self.last_error = Some(text.to_string());
                Some((
                    log::Level::Warn,
                    format!("config drift: cannot compare: {text}"),
                ))
            }
        }
    }

    /// The last report, kept in `/status` while the export fails.
    pub fn last(&self) -> Option<&DriftReport> {
        self.last.as_ref()
    }
}

/// The loop, from right after the node is ready for the rest of `run`; paused while the node
/// drains (an operator's drain is undone by an app restart: the comparisons go on after it).
pub async fn run_drift<T: TfeTools>(
    tools: &T,
    cfg: &Settings,
    node: &TfeConfig,
    mut view: watch::Receiver<View>,
    publish: ViewPublisher,
) {
    if !cfg.drift.enabled {
        return;
    }
    let interval = cfg.drift.interval;
    let allow = allowlist(&cfg.drift);
    let mut alive = loops().enter(LoopName::Drift, interval);
    let mut tracker = Tracker::default();
    loop {
        alive.tick();
        if going(view.borrow_and_update().phase) {
            // Off /livez while paused: a drain may take longer than three intervals.
            drop(alive);
            if view.wait_for(|v| !going(v.phase)).await.is_err() {
                return; // the recorder is gone: the agent is ending
            }
            alive = loops().enter(LoopName::Drift, interval);
            continue;
        }
        let (said, status) = match check(tools, node, &allow).await {
            Ok((report, live)) => {
                let must_match: BTreeMap<_, _> = cfg
                    .cluster
                    .must_match
                    .iter()
                    .filter_map(|k| Some((k.clone(), live.values.get(k)?.clone())))
                    .collect();
                publish.live_values(Some(Arc::new(must_match)));
                metrics().drift(&report.counts);
                (tracker.news(Ok(&report)), status(None, Some(&report)))
            }
            Err(e) => {
                let text = crate::error_chain(&e);
                let said = tracker.news(Err(&text));
                (said, status(Some(text), tracker.last()))
            }
        };
        if let Some((level, line)) = said {
            log::log!(level, "{line}");
        }
        publish.drift(status);
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = view.wait_for(|v| going(v.phase)) => {}
        }
    }
}

fn status(error: Option<String>, report: Option<&DriftReport>) -> Option<serde_json::Value> {
    serde_json::to_value(DriftStatus {
        checked_at: unix_now(),
        error,
        report: report.cloned(),
    })
    .ok()
}

#[cfg(test)]
mod tests;
