//! Facts about the machine the flows need: which boot this is, and whether the whole system is
//! going down (as opposed to only this unit being stopped).

use std::future::Future;

pub trait Host: Sync {
    /// Changes on every boot: tells "the machine rebooted" from "the agent restarted".
    fn boot_id(&self) -> String;
    /// Whether the whole system is shutting down (asked on SIGTERM).
    fn system_stopping(&self) -> impl Future<Output = bool> + Send;
}
