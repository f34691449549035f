//! The fake of Secrets Manager.

use crate::ports::{SecretPayload, SecretSource, SecretsError};
use crate::sys::secret::SecretBytes;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use tokio::time::Instant;

/// Secrets Manager holding payloads by id. A fetch fails whole: the next scripted error, or
/// `NotFound` for the first id it does not hold.
#[derive(Default)]
pub struct FakeSecrets {
    payloads: Mutex<BTreeMap<String, SecretPayload>>,
    errors: Mutex<VecDeque<SecretsError>>,
    fetches: Mutex<Vec<Fetch>>,
}

/// One GetSecretValue round: which ids, at which version stage.
#[derive(Debug, Clone)]
pub struct Fetch {
    pub at: Instant,
    pub ids: Vec<String>,
    pub version_stage: Option<String>,
}

impl FakeSecrets {
    /// The secrets of the example config: a valid `tfe/shared` and a `tfe/license`.
    pub fn valid() -> Self {
        let shared = serde_json::Value::Object(crate::testing::valid_shared()).to_string();
        Self::default()
            .with("tfe/shared", crate::testing::text(&shared))
            .with(
                "tfe/license",
                SecretPayload::Binary(SecretBytes::new(b"RLI".to_vec())),
            )
    }

    pub fn with(self, id: &str, payload: SecretPayload) -> Self {
        self.payloads.lock().unwrap().insert(id.into(), payload);
        self
    }

    /// The next fetches fail with these, in order.
    pub fn fail(&self, errors: impl IntoIterator<Item = SecretsError>) {
        self.errors.lock().unwrap().extend(errors);
    }

    /// The fetches made, in order.
    pub fn fetches(&self) -> Vec<Fetch> {
        self.fetches.lock().unwrap().clone()
    }
}

impl SecretSource for FakeSecrets {
    async fn fetch(
        &self,
        ids: &[String],
        version_stage: Option<&str>,
    ) -> Result<BTreeMap<String, SecretPayload>, SecretsError> {
        self.fetches.lock().unwrap().push(Fetch {
            at: Instant::now(),
            ids: ids.to_vec(),
            version_stage: version_stage.map(str::to_string),
        });
        if let Some(e) = self.errors.lock().unwrap().pop_front() {
            return Err(e);
        }
        let payloads = self.payloads.lock().unwrap();
        ids.iter()
            .map(|id| match payloads.get(id) {
                Some(p) => Ok((id.clone(), p.clone())),
                None => Err(SecretsError::NotFound { id: id.clone() }),
            })
            .collect()
    }
}
