//! tfe-node-agent: makes a Terraform Enterprise (Replicated era) Active/Active node on an EC2 Auto
//! Scaling group run itself — secrets from Secrets Manager, config files, install.sh, readiness,
//! and the lifecycle hooks — and drains it before it goes.
//!
//! Where each part of a node's life lives:
//! - `boot`: the boot path, start to finish (generic over the `ports`).
//! - `watch`: noticing the end (IMDS target state, spot, rebalance, maintenance).
//! - `terminate`: the termination path: node-drain once, the terminate hook released once.
//! - `service`: `run`, the whole life: boot, watch, terminate, signals.
//! - `lifecycle`: the pure state machine; `state` persists it.
//! - `configure` (`secrets` → `validate` → `render` → `fsutil`): the node's files.
//! - `hook`: lifecycle hook discovery, heartbeats, release.
//! - `readiness`: waiting for TFE to be healthy.
//! - `aws`, `tfe`: the real adapters behind `ports`.

pub mod adapters;
pub mod app;
pub mod cli;
pub mod config;
pub mod model;
pub(crate) mod node;
pub mod ports;
pub mod sys;
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
