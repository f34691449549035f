//! The postgres probe.

use crate::ports::{PostgresProbe, ProbeError};

pub(super) async fn probe(p: &PostgresProbe) -> Result<String, ProbeError> {
    let _ = p;
    Err(ProbeError::new("-", "the postgres probe is not built yet"))
}
