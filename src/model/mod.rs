//! The domain, pure: the node's lifecycle state machine, Auto Scaling's and the TFE tools'
//! vocabulary as types, and the problems a configuration can have. No I/O; imports nothing from
//! the other folders but `sys`.

pub mod asg;
pub mod cluster;
pub mod drift;
pub mod leak;
pub mod lifecycle;
pub mod preflight;
pub mod problem;
pub mod repave;
pub mod rollout;
pub mod tfe;
