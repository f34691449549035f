//! Fault injection for binary-level tests: rules armed on the emulator's Auto Scaling API and IMDS
//! and on the Secrets Manager fault proxy (tests/emulator/README.md, "Faults"), the requests they
//! saw read back with their arrival times, and a node whose Secrets Manager endpoint is the proxy.

use super::{spawn_on_any_port, Emulator, Hooks, Moto, Node, Proc};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

/// One request as a fault layer recorded it.
#[derive(Debug, Clone)]
pub struct Call {
    /// The event's index in its recorder (emulator or proxy).
    pub seq: u64,
    /// Seconds since the recording process started (comparable within one process only).
    pub t: f64,
    /// The API action, or the IMDS path (`/latest/…`).
    pub op: String,
    /// None when nothing was answered (reset, hang).
    pub status: Option<u64>,
    pub error_code: Option<String>,
    /// The fault kind that spoiled it, if any.
    pub fault: Option<String>,
    /// Query API form parameters (empty for IMDS and the proxy).
    pub params: Value,
}

impl Call {
    fn from_event(e: &Value, op_key: &str) -> Call {
        Call {
            seq: e["seq"].as_u64().unwrap_or_default(),
            t: e["t"].as_f64().unwrap_or_default(),
            op: e[op_key].as_str().unwrap_or_default().to_string(),
            status: e["status"].as_u64(),
            error_code: e["error_code"].as_str().map(str::to_string),
            fault: e["fault"].as_str().map(str::to_string),
            params: e.get("params").cloned().unwrap_or(Value::Null),
        }
    }

    pub fn faulted(&self) -> bool {
        self.fault.is_some()
    }
}

/// The pauses between consecutive calls, in seconds.
pub fn gaps(calls: &[Call]) -> Vec<f64> {
    calls.windows(2).map(|w| w[1].t - w[0].t).collect()
}

impl Emulator {
    /// Arms rules (a JSON list of RULEs); returns what is armed now.
    pub fn arm(&self, rules: Value) -> Value {
        self.post("/_emulator/faults", json!({ "add": rules }))
    }

    pub fn clear_faults(&self) {
        self.post("/_emulator/faults", json!({"clear": true}));
    }

    /// The rules still armed.
    pub fn armed(&self) -> Vec<Value> {
        self.get("/_emulator/faults")["rules"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The index the next event will have: calls from here on came after this moment.
    pub fn next_seq(&self) -> u64 {
        self.get("/_emulator/events?kind=none")["next"]
            .as_u64()
            .unwrap()
    }

    /// Every Query API request of `action`, in arrival order.
    pub fn calls(&self, action: &str) -> Vec<Call> {
        self.events("api")
            .iter()
            .filter(|e| e["action"] == action)
            .map(|e| Call::from_event(e, "action"))
            .collect()
    }

    /// Every IMDS request whose path (after `/latest/`) is `path`, in arrival order.
    pub fn imds_calls(&self, path: &str) -> Vec<Call> {
        let full = format!("/latest/{}", path.trim_start_matches('/'));
        self.events("imds")
            .iter()
            .filter(|e| e["path"] == full.as_str())
            .map(|e| Call::from_event(e, "path"))
            .collect()
    }
}

/// tests/emulator/fault_proxy.py in front of a Secrets Manager endpoint (moto): its control API.
/// The process belongs to whoever holds the [`Proc`] that `start` returns with it.
pub struct FaultProxy {
    pub url: String,
}

impl FaultProxy {
    pub fn start(upstream: &str) -> (Self, Proc) {
        let mut cmd = Command::new("python3");
        cmd.arg(super::repo().join("tests/emulator/fault_proxy.py"))
            .args(["--upstream", upstream, "--port", "0"]);
        let (proc, port) = spawn_on_any_port(
            cmd,
            "fault-proxy listening on 127.0.0.1:",
            Duration::from_secs(20),
        );
        let url = format!("http://127.0.0.1:{port}");
        (FaultProxy { url }, proc)
    }

    fn control(&self, body: Value) -> Value {
        ureq::post(&format!("{}/_faults", self.url))
            .send_json(body)
            .unwrap_or_else(|e| panic!("POST /_faults: {e}"))
            .into_json()
            .unwrap()
    }

    fn events(&self) -> Value {
        ureq::get(&format!("{}/_faults/events", self.url))
            .call()
            .unwrap()
            .into_json()
            .unwrap()
    }

    /// Arms rules (a JSON list of RULEs; the action is the X-Amz-Target operation).
    pub fn arm(&self, rules: Value) -> Value {
        self.control(json!({ "add": rules }))
    }

    pub fn clear(&self) {
        self.control(json!({"clear": true}));
    }

    pub fn armed(&self) -> Vec<Value> {
        let reply: Value = ureq::get(&format!("{}/_faults", self.url))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        reply["rules"].as_array().cloned().unwrap_or_default()
    }

    /// The index the next proxied request will have.
    pub fn next_seq(&self) -> u64 {
        self.events()["next"].as_u64().unwrap()
    }

    /// Every proxied request of `action` (e.g. "BatchGetSecretValue"), in arrival order.
    pub fn calls(&self, action: &str) -> Vec<Call> {
        self.events()["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == action)
            .map(|e| Call::from_event(e, "action"))
            .collect()
    }
}

/// A [`Node`] whose Secrets Manager endpoint is a [`FaultProxy`] in front of a moto that holds
/// its secrets: `node.moto` is the proxy (its process too), so the node's agent goes through it.
pub struct FaultNode {
    pub node: Node,
    pub proxy: FaultProxy,
}

impl std::ops::Deref for FaultNode {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl FaultNode {
    /// A node whose proxy forwards to `moto`, which may serve many nodes (it must hold the
    /// node's secrets, see [`Moto::with_secrets`]): one moto is much cheaper than one per node.
    pub fn behind(moto: &Moto, hooks: Hooks) -> Self {
        let (proxy, proc) = FaultProxy::start(&moto.url);
        let front = Moto {
            url: proxy.url.clone(),
            _proc: proc,
        };
        FaultNode {
            node: Node::with_moto(hooks, front),
            proxy,
        }
    }
}
