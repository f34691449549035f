//! The host probes: free disk, the Docker socket, IMDS and the clock, a TCP port.

use crate::ports::{DiskSpace, PortAnswer, ProbeError};
use std::path::Path;

pub(super) fn disk_space(path: &Path) -> Result<DiskSpace, ProbeError> {
    Err(ProbeError::new(path.display().to_string(), "not built yet"))
}

pub(super) async fn docker(socket: &Path) -> Result<String, ProbeError> {
    Err(ProbeError::new(
        socket.display().to_string(),
        "not built yet",
    ))
}

pub(super) async fn imds_clock() -> Result<i64, ProbeError> {
    Err(ProbeError::new("imds", "not built yet"))
}

pub(super) async fn port(address: &str) -> Result<PortAnswer, ProbeError> {
    Err(ProbeError::new(address, "not built yet"))
}
