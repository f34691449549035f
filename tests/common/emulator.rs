//! The project's Auto Scaling + IMDSv2 emulator (tests/emulator/aws_emulator.py): started on a
//! port of its own, driven and read back through its `/_emulator` control API.

use super::processes::{repo, wait_for, Proc};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The Auto Scaling + IMDSv2 emulator (tests/emulator).
pub struct Emulator {
    pub url: String,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl Emulator {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let child = Command::new("python3")
            .arg(repo().join("tests/emulator/aws_emulator.py"))
            .args(["--port", "0", "--port-file"])
            .arg(&port_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the emulator");
        wait_for("emulator", Duration::from_secs(20), || port_file.exists());
        let port = std::fs::read_to_string(&port_file)
            .unwrap()
            .trim()
            .to_string();
        Emulator {
            url: format!("http://127.0.0.1:{port}"),
            _proc: Proc(child),
            _dir: dir,
        }
    }

    /// The emulator's process id (the crash matrix stops it with SIGSTOP to hold a request).
    pub fn pid(&self) -> i32 {
        self._proc.0.id() as i32
    }

    pub fn post(&self, path: &str, body: Value) -> Value {
        ureq::post(&format!("{}{path}", self.url))
            .send_json(body)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
            .into_json()
            .unwrap()
    }

    pub fn get(&self, path: &str) -> Value {
        ureq::get(&format!("{}{path}", self.url))
            .call()
            .unwrap()
            .into_json()
            .unwrap()
    }

    pub fn events(&self, kind: &str) -> Vec<Value> {
        self.get(&format!("/_emulator/events?kind={kind}"))["events"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Hook resolutions, as (hook, result, cause).
    pub fn resolutions(&self) -> Vec<(String, String, String)> {
        self.events("lifecycle")
            .iter()
            .map(|e| {
                (
                    e["hook"].as_str().unwrap().to_string(),
                    e["result"].as_str().unwrap().to_string(),
                    e["cause"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    pub fn api_calls(&self, action: &str) -> usize {
        self.events("api")
            .iter()
            .filter(|e| e["action"] == action)
            .count()
    }
}
