//! What the operator sees while the repave runs: on a terminal, a line per step and a live status
//! line (step, nodes and their phases, elapsed time) rewritten in place; otherwise plain lines,
//! one per change; with `--json`, one JSON event per line for CI.

use crate::model::repave::{Pass, Repave, Step, StepRecord};
use serde_json::json;
use std::io::Write;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A terminal: a live status line.
    Terminal,
    /// Plain lines (a pipe, a CI log).
    Lines,
    /// One JSON object per line.
    Json,
}

pub struct Progress {
    style: Style,
    started: Instant,
    /// A status line is on screen (terminal only) and must be cleared before the next line.
    status_shown: bool,
}

impl Progress {
    pub fn new(style: Style) -> Self {
        Progress {
            style,
            started: Instant::now(),
            status_shown: false,
        }
    }

    fn line(&mut self, text: &str) {
        let mut out = std::io::stdout().lock();
        if self.status_shown {
            let _ = write!(out, "\r\x1b[2K");
            self.status_shown = false;
        }
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }

    fn event(&mut self, value: serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{value}");
        let _ = out.flush();
    }

    fn elapsed(&self) -> String {
        let s = self.started.elapsed().as_secs();
        format!("{:02}:{:02}", s / 60, s % 60)
    }

    /// The plan, before anything changes (also the whole output of `--dry-run`).
    pub fn plan(&mut self, text: &str, repave: &Repave) {
        match self.style {
            Style::Json => {
                self.event(json!({"event": "plan", "plan": repave.plan, "id": repave.id}));
            }
            _ => self.line(text.trim_end()),
        }
    }

    pub fn note(&mut self, text: &str) {
        match self.style {
            Style::Json => self.event(json!({"event": "note", "text": text})),
            _ => {
                let line = format!("[{}] {text}", self.elapsed());
                self.line(&line);
            }
        }
    }

    pub fn step_started(&mut self, step: Step, pass: Pass, resumed: bool) {
        match self.style {
            Style::Json => self.event(json!({
                "event": "step-started", "step": step, "pass": pass, "resumed": resumed
            })),
            _ => {
                let again = if resumed { " (resumed)" } else { "" };
                let back = if pass == Pass::Forward {
                    String::new()
                } else {
                    format!(" [{}]", pass.as_str())
                };
                let line = format!(
                    "[{}] {}{back}: {}{again}",
                    self.elapsed(),
                    step.as_str(),
                    step.title()
                );
                self.line(&line);
            }
        }
    }

    pub fn step_ended(&mut self, record: &StepRecord) {
        let ms = record
            .ended_ms
            .map(|e| e.saturating_sub(record.started_ms))
            .unwrap_or(0);
        let detail = record.detail.clone().unwrap_or_default();
        match self.style {
            Style::Json => self.event(json!({
                "event": "step-ended", "step": record.step, "pass": record.pass,
                "detail": detail, "ms": ms
            })),
            _ => {
                let line = format!(
                    "[{}] {} ended after {:.1} s: {detail}",
                    self.elapsed(),
                    record.step.as_str(),
                    ms as f64 / 1000.0
                );
                self.line(&line);
            }
        }
    }

    /// An instance changed: its group state or its phase in the cluster view.
    pub fn instance(
        &mut self,
        instance_id: &str,
        lifecycle_state: &str,
        phase: Option<&str>,
        template_version: Option<&str>,
    ) {
        match self.style {
            Style::Json => self.event(json!({
                "event": "instance", "instance_id": instance_id,
                "lifecycle_state": lifecycle_state, "phase": phase,
                "template_version": template_version
            })),
            Style::Lines => {
                let line = format!(
                    "[{}] {instance_id} (version {}): {lifecycle_state}, {}",
                    self.elapsed(),
                    template_version.unwrap_or("?"),
                    phase.unwrap_or("not in the cluster view")
                );
                self.line(&line);
            }
            // The status line shows it.
            Style::Terminal => {}
        }
    }

    /// The live status line (terminal only): the step, each node and its phase, elapsed time.
    pub fn status(&mut self, step: Step, nodes: &[(String, String)]) {
        if self.style != Style::Terminal {
            return;
        }
        let nodes = if nodes.is_empty() {
            "no instance".to_string()
        } else {
            nodes
                .iter()
                .map(|(id, what)| format!("{id} {what}"))
                .collect::<Vec<_>>()
                .join(" · ")
        };
        let mut out = std::io::stdout().lock();
        let _ = write!(
            out,
            "\r\x1b[2K[{}] {}: {nodes}",
            self.elapsed(),
            step.as_str()
        );
        let _ = out.flush();
        self.status_shown = true;
    }

    pub fn report(&mut self, repave: &Repave) {
        match self.style {
            Style::Json => self.event(json!({"event": "report", "repave": repave})),
            _ => self.line(repave.report().trim_end()),
        }
    }
}
