//! Small system helpers every folder may use: atomic files, secret-holding types, logging,
//! signals, sd_notify, backoff. Imports nothing from the rest of the crate.

pub mod fsutil;
pub mod logging;
pub mod notify;
pub mod retry;
pub mod secret;
pub mod shutdown;
