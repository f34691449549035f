//! The object_storage probe.

use crate::ports::{ObjectStorageProbe, ProbeError};

pub(super) async fn probe(p: &ObjectStorageProbe) -> Result<String, ProbeError> {
    let _ = p;
    Err(ProbeError::new(
        "-",
        "the object_storage probe is not built yet",
    ))
}
