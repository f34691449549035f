//! Small system helpers every folder may use: atomic files, secret-holding types, logging,
//! signals, sd_notify, backoff, wall-clock time. Imports nothing from the rest of the crate.

pub(crate) mod fsutil;
pub mod logging;
pub(crate) mod notify;
pub(crate) mod retry;
pub mod secret;
pub(crate) mod shutdown;
pub(crate) mod time;
