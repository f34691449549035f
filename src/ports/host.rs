//! Facts about the machine the flows need: which boot this is, and whether the whole system is
//! going down (as opposed to only this unit being stopped).

use std::future::Future;

pub trait Host: Sync {
    /// Changes on every boot: tells "the machine rebooted" from "the agent restarted".
    fn boot_id(&self) -> String;
    /// Whether the whole system is shutting down (asked on SIGTERM).
    fn system_stopping(&self) -> impl Future<Output = bool> + Send;
    /// The last `lines` entries of the agent's own unit in the journal (`journalctl -u
    /// tfe-node-agent -n N -o short-iso`), as printed.
    fn journal(&self, lines: u32) -> impl Future<Output = Result<Vec<u8>, JournalError>> + Send;
}

/// Why the journal could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{command} is not there ([tools].journalctl); no journal in the bundle")]
    Missing { command: String },
    #[error("{command} failed: {detail}")]
    Failed { command: String, detail: String },
}
