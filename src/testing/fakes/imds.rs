//! The fake of IMDS.

use super::*;
use crate::ports::{Identity, ImdsError, InstanceMetadata};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// IMDS paths the flows ask (`crate::node::watch`).
pub const TARGET_LIFECYCLE_STATE: &str = "/latest/meta-data/autoscaling/target-lifecycle-state";
pub const INSTANCE_LIFE_CYCLE: &str = "/latest/meta-data/instance-life-cycle";

/// IMDS with a map of items (a missing one is a 404), a switch that makes every request fail,
/// and a count of requests per path.
pub struct FakeImds {
    identity: Identity,
    items: Mutex<HashMap<String, String>>,
    requests: Mutex<HashMap<String, u32>>,
    failing: AtomicBool,
}

impl Default for FakeImds {
    fn default() -> Self {
        Self {
            identity: identity(),
            items: Mutex::default(),
            requests: Mutex::default(),
            failing: AtomicBool::new(false),
        }
    }
}

impl FakeImds {
    /// An on-demand instance with nothing announced.
    pub fn on_demand() -> Self {
        let imds = Self::default();
        imds.set(INSTANCE_LIFE_CYCLE, "on-demand");
        imds
    }

    pub fn set(&self, path: &str, value: &str) {
        self.items.lock().unwrap().insert(path.into(), value.into());
    }

    /// `autoscaling/target-lifecycle-state`.
    pub fn set_target(&self, state: &str) {
        self.set(TARGET_LIFECYCLE_STATE, state);
    }

    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    pub fn requests(&self, path: &str) -> u32 {
        self.requests
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Every request, identity included.
    pub fn total_requests(&self) -> u32 {
        self.requests.lock().unwrap().values().sum()
    }

    fn request(&self, path: &str) -> Result<(), ImdsError> {
        *self
            .requests
            .lock()
            .unwrap()
            .entry(path.into())
            .or_default() += 1;
        if self.failing.load(Ordering::SeqCst) {
            return Err(ImdsError {
                path: path.into(),
                detail: "connection refused".into(),
            });
        }
        Ok(())
    }
}

impl InstanceMetadata for FakeImds {
    async fn identity(&self) -> Result<Identity, ImdsError> {
        self.request("identity")?;
        Ok(self.identity.clone())
    }
    async fn get(&self, path: &str) -> Result<Option<String>, ImdsError> {
        self.request(path)?;
        Ok(self.items.lock().unwrap().get(path).cloned())
    }
    async fn get_static(&self, path: &str) -> Result<String, ImdsError> {
        self.get(path).await?.ok_or_else(|| ImdsError {
            path: path.into(),
            detail: "404".into(),
        })
    }
}
