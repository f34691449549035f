//! The redis probe.

use crate::ports::{ProbeError, RedisProbe};

pub(super) async fn probe(p: &RedisProbe) -> Result<String, ProbeError> {
    let _ = p;
    Err(ProbeError::new("-", "the redis probe is not built yet"))
}
