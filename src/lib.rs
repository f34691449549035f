//! tfe-node-agent: makes a Terraform Enterprise (Replicated era) Active/Active node on an EC2 Auto
//! Scaling group run itself — secrets from Secrets Manager, config files, install.sh, readiness,
//! and the lifecycle hooks — and drains it before it goes.
//!
//! Where each part of a node's life lives (docs/development/architecture.md has the import rules):
//! - `node`: the flows — `service` (`run`, the whole life), `boot`, `watch`, `terminate`, `hook`,
//!   `readiness`, and `recorder`, the one owner of the node's state.
//! - `tfe_files`: the node's TFE files (secrets → validate → render → write).
//! - `config`: agent.toml, checked into `Settings`.
//! - `ports`: the `World` the flows are generic over; `adapters`: the real one.
//! - `observe`: the HTTP API (`/livez`, `/readyz`, `/status`, `/metrics`), the systemd watchdog,
//!   and `status`; `telemetry`: the metrics and the control loops' liveness they read.
//! - `repave`: the `repave` command's orchestrator (a whole group, drain → 0 → 1 → validate → N).
//! - `model`: the pure state machine and the domain's types; `sys`: small helpers.

pub mod adapters;
pub mod app;
pub mod cli;
pub mod config;
pub mod model;
pub(crate) mod node;
pub mod observe;
pub mod ports;
pub(crate) mod repave;
pub mod sys;
pub mod telemetry;
pub mod tfe_files;

#[cfg(test)]
mod testing;

/// An error and all its causes on one line: `top: cause: root cause`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
