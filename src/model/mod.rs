//! The domain, pure: the node's lifecycle state machine and the problems a configuration can
//! have. No I/O and no imports from any other folder but `sys`.

pub mod lifecycle;
pub mod problem;
