//! The agent's HTTP API: `/livez`, `/readyz`, `/status` and `/metrics` on the listeners of
//! `[observe].listen`, the systemd watchdog fed from the same liveness, and the client side that
//! `tfe-node-agent status` uses. Everything served is read from memory — the recorder's published
//! [`View`](crate::node::view::View), the loop registry and the metrics — never from files or by
//! running a TFE tool, so a request costs microseconds and cannot hold up the agent's own loops.

pub mod client;
mod listen;
pub mod operate;
pub(crate) mod routes;
pub mod server;
pub mod summary;
pub mod watchdog;

pub use listen::{bind, ListenError, Listener, Scope};
pub use routes::StatusDoc;
pub use server::serve;
