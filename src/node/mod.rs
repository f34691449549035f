//! The flows of one node's life, generic over the outside world (`crate::ports`): `service` runs
//! the whole life, `boot` and `terminate` its two ends, `watch` notices the end, `hook` holds and
//! releases lifecycle hooks, `readiness` waits for TFE, `state` persists what happened.

pub mod app_config;
pub mod boot;
pub mod cluster;
pub mod drift;
pub mod exit;
pub mod hook;
pub mod operator;
pub mod preflight;
pub mod readiness;
pub mod recorder;
pub mod restart;
pub mod rolling;
pub mod rolling_cli;
pub mod service;
pub mod state;
pub mod support_bundle;
pub mod terminate;
pub mod view;
pub mod watch;
