//! The fake of the preflight probes: every dependency answers at once and well unless a test
//! says otherwise; every probe is recorded, so a test asserts on what was (not) probed.

use crate::ports::{
    DiskSpace, ObjectStorageProbe, PortAnswer, PostgresProbe, ProbeError, Probes, RedisProbe,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// One probe's scripted answer: after `delay` (tokio time), `answer`.
#[derive(Debug, Clone)]
struct Scripted {
    delay: Duration,
    answer: Result<String, ProbeError>,
}

#[derive(Default)]
pub struct FakeProbes {
    scripted: Mutex<HashMap<&'static str, Scripted>>,
    calls: Mutex<Vec<String>>,
    /// Free bytes every path reports (default 100 GiB).
    free: Mutex<Option<u64>>,
    clock_ahead_ms: Mutex<i64>,
    ports: Mutex<HashMap<String, PortAnswer>>,
}

impl FakeProbes {
    /// `probe` ("redis", "postgres", "object_storage", "docker", "imds") fails with `detail`.
    pub fn failing(self, probe: &'static str, detail: &str) -> Self {
        self.script(
            probe,
            Duration::ZERO,
            Err(ProbeError::new("fake:1", detail)),
        )
    }

    /// `probe` answers only after `delay`.
    pub fn slow(self, probe: &'static str, delay: Duration) -> Self {
        self.script(probe, delay, Ok(format!("{probe} ok")))
    }

    fn script(
        self,
        probe: &'static str,
        delay: Duration,
        answer: Result<String, ProbeError>,
    ) -> Self {
        self.scripted
            .lock()
            .unwrap()
            .insert(probe, Scripted { delay, answer });
        self
    }

    pub fn free_bytes(self, free: u64) -> Self {
        *self.free.lock().unwrap() = Some(free);
        self
    }

    pub fn clock_ahead_ms(self, ms: i64) -> Self {
        *self.clock_ahead_ms.lock().unwrap() = ms;
        self
    }

    /// `address` answers `answer` (unlisted addresses: refused).
    pub fn port_answers(self, address: &str, answer: PortAnswer) -> Self {
        self.ports.lock().unwrap().insert(address.into(), answer);
        self
    }

    /// The probes sent, in order: "redis host:port", "postgres host:port", …
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    async fn answer(&self, probe: &'static str, call: String) -> Result<String, ProbeError> {
        self.calls.lock().unwrap().push(call);
        let scripted = self.scripted.lock().unwrap().get(probe).cloned();
        match scripted {
            Some(s) => {
                tokio::time::sleep(s.delay).await;
                s.answer
            }
            None => Ok(format!("{probe} ok")),
        }
    }
}

impl Probes for FakeProbes {
    async fn redis(&self, p: &RedisProbe) -> Result<String, ProbeError> {
        self.answer("redis", format!("redis {}:{}", p.host, p.port))
            .await
    }
    async fn postgres(&self, p: &PostgresProbe) -> Result<String, ProbeError> {
        self.answer("postgres", format!("postgres {}:{}", p.host, p.port))
            .await
    }
    async fn object_storage(&self, p: &ObjectStorageProbe) -> Result<String, ProbeError> {
        self.answer("object_storage", format!("object_storage {}", p.bucket))
            .await
    }
    fn disk_space(&self, path: &Path) -> Result<DiskSpace, ProbeError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("disk {}", path.display()));
        Ok(DiskSpace {
            measured: PathBuf::from(path),
            free_bytes: self.free.lock().unwrap().unwrap_or(100 << 30),
        })
    }
    async fn docker(&self, socket: &Path) -> Result<String, ProbeError> {
        self.answer("docker", format!("docker {}", socket.display()))
            .await
    }
    async fn imds_clock(&self) -> Result<i64, ProbeError> {
        self.answer("imds", "imds".into()).await?;
        Ok(*self.clock_ahead_ms.lock().unwrap())
    }
    async fn port(&self, address: &str) -> Result<PortAnswer, ProbeError> {
        self.calls.lock().unwrap().push(format!("port {address}"));
        Ok(self
            .ports
            .lock()
            .unwrap()
            .get(address)
            .cloned()
            .unwrap_or(PortAnswer::Refused))
    }
}
