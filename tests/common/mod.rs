//! Harness for binary-level tests: real peers on loopback (moto's server for Secrets Manager, the
//! project's Auto Scaling + IMDSv2 emulator, the fake TFE tools) and the real agent binary.
//! Every process started here is killed when its handle drops; every wait is bounded.
//!
//! One file per peer: `processes` (spawning, bounded waits, files and pids), `moto`, `emulator`,
//! `redis` (redis-server for the cluster store; not re-exported, its tests say `common::redis`),
//! and `node` (one node's world and the agent run in it). Everything is re-exported here, so a
//! test says `common::Node` or `use common::*` (all but `redis` and `group`, the repave's capacity-managed group of real nodes).
#![allow(dead_code)]

pub mod e2e;
pub mod emulator;
pub mod faults;
pub mod group;
pub mod hygiene;
pub mod moto;
pub mod node;
pub mod packages;
pub mod postgres;
pub mod processes;
pub mod redis;
pub mod template;

pub use emulator::*;
pub use moto::*;
pub use node::*;
pub use processes::*;
