//! The bad-input matrix (issue 9, proof 3): every row is one bad input given to a real `boot`
//! (moto, the Auto Scaling + IMDS emulator, the fake TFE tools), with the documented exit code, a
//! message fragment that must be on stderr, and values that must appear nowhere the agent writes.
//! Beside each row's own expectations, every row checks the same invariants:
//! - a failure says so: a non-zero exit logs at least one ERROR line;
//! - no secret value (of the shared secret, the license, and the row's own planted values), in any
//!   encoding `common::hygiene` knows, in stdout, stderr, any file under the node's directories
//!   except the TFE config files (they hold secrets by design), or the fake tools' call log (argv
//!   and environment of every child);
//! - nothing half-written: no temp file in the config or state directories; each TFE file either
//!   absent or complete and valid; a state.json the agent wrote is valid JSON, and a bad one the
//!   row planted is left exactly as it was for the operator to inspect;
//! - the launch hook: released once with ABANDON by `complete` when the agent held it, or not
//!   touched at all when the agent failed before it could know which hook to hold (see `Hook`);
//! - install.sh: never run when the failure comes before it, run once when it is what failed;
//! - no fake TFE process (a hung call's, with its child) outlives the agent.
//!
//! Rows run in parallel on a bounded pool; all failures are collected and reported together.
//! They share one moto server, each in an account of its own (a row that changes moto server-wide
//! gets its own); each has its own emulator instance and temp dir.
//! `cargo test --test bad_inputs -- --nocapture` prints one line per row and the total.

mod common;

use base64::Engine;
use common::hygiene::{files_under, temp_files_under, Scanner};
use common::*;
use serde_json::{json, Value};
use std::io::Read;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest any single row's agent may run before it is killed and the row fails.
const AGENT_LIMIT: Duration = Duration::from_secs(100);
/// Rows run at once: each holds an emulator, an agent and the fake tools, mostly waiting.
const POOL: usize = 6;
/// readiness.timeout in the readiness rows, and the margin allowed past it (boot work before the
/// readiness phase, the ABANDON call, a loaded 2-core machine). 10 s lets the three probes of one
/// round (system status, app status, health-check; each a Python start) finish before the
/// deadline on a busy machine, so the message names what the last round saw. A hung tool call
/// that outlives the deadline (defect 4: each call's own 60 s) overshoots this by far.
const READINESS_TIMEOUT: &str = "10s";
const READINESS_WITHIN: Duration = Duration::from_secs(10 + 15);

/// What the launch hook must have seen when the row ends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Hook {
    /// Held, then released once with ABANDON ([lifecycle].on_failure's default) by the agent.
    Abandon,
    /// Released once with CONTINUE: the input is tolerated and the node comes up.
    Continue,
    /// Never touched: the agent failed before it could know which hook to hold (the config that
    /// names it could not be read). The group's DefaultResult applies at HeartbeatTimeout.
    Untouched,
}

/// What the TFE config files must look like when the row ends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tfe {
    /// None written (and no config directory created): the failure came before writing.
    NotWritten,
    /// replicated.conf, the settings file and the license all written, complete and valid.
    Written,
    /// Whichever exist are complete and valid (a write that failed part-way).
    AnyValid,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Install {
    Never,
    Once,
}

/// What a row's `prepare` step set up beyond config, secrets and knobs.
#[derive(Default)]
struct Prepared {
    /// Environment for the agent on top of the harness's.
    env: Vec<(String, String)>,
    /// Files the row planted that the agent must leave exactly as they are.
    untouched: Vec<PathBuf>,
    /// Kept alive for the agent's run (a proxy, say).
    _keep: Vec<Box<dyn std::any::Any + Send>>,
}

type Prepare = Box<dyn Fn(&Node) -> Prepared + Send + Sync>;

struct Case {
    name: &'static str,
    /// `old => new` edits of the documented example (see `Node::write_config`); `{fake}` stands for
    /// the fake TFE tools' directory, `{dir}` for the row's temp directory.
    config: Vec<String>,
    /// Secrets created in moto beside the valid `tfe/shared` and `tfe/license`.
    secrets: Vec<(String, Secret)>,
    knobs: Value,
    prepare: Option<Prepare>,
    code: i32,
    says: Vec<String>,
    /// Values that must not appear, besides every value of the valid shared secret and license.
    hidden: Vec<(String, Vec<u8>)>,
    hook: Hook,
    tfe: Tfe,
    install: Install,
    /// The whole run must end within this (the readiness deadline rows).
    within: Option<Duration>,
    /// A moto server of its own (the row changes server-wide state), instead of an account on the
    /// shared one.
    own_moto: bool,
}

#[derive(Clone)]
enum Secret {
    String(String),
    /// Raw bytes, sent base64-encoded as SecretBinary.
    Binary(Vec<u8>),
}

fn case(name: &'static str) -> Case {
    Case {
        name,
        config: Vec::new(),
        secrets: Vec::new(),
        knobs: json!({}),
        prepare: None,
        code: 3,
        says: Vec::new(),
        hidden: Vec::new(),
        hook: Hook::Abandon,
        tfe: Tfe::NotWritten,
        install: Install::Never,
        within: None,
        own_moto: false,
    }
}

impl Case {
    fn config(mut self, edit: &str) -> Self {
        self.config.push(edit.to_string());
        self
    }
    /// The shared secret replaced by `value` (a secret of its own, `tfe/bad-shared`).
    fn shared(self, value: Secret) -> Self {
        self.secret("tfe/bad-shared", value)
            .config("shared = \"tfe/shared\" => shared = \"tfe/bad-shared\"")
    }
    /// The valid shared secret JSON, changed by `edit`.
    fn shared_json(self, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Self {
        let mut v = shared_secret();
        edit(v.as_object_mut().unwrap());
        self.shared(Secret::String(v.to_string()))
    }
    fn secret(mut self, id: &str, value: Secret) -> Self {
        self.secrets.push((id.to_string(), value));
        self
    }
    fn knobs(mut self, knobs: Value) -> Self {
        self.knobs = knobs;
        self
    }
    fn prepare(mut self, f: impl Fn(&Node) -> Prepared + Send + Sync + 'static) -> Self {
        self.prepare = Some(Box::new(f));
        self
    }
    fn expect(mut self, code: i32, says: &[&str]) -> Self {
        self.code = code;
        self.says = says.iter().map(|s| s.to_string()).collect();
        self
    }
    fn hidden(mut self, label: &str, value: impl AsRef<[u8]>) -> Self {
        self.hidden
            .push((label.to_string(), value.as_ref().to_vec()));
        self
    }
    fn own_moto(mut self) -> Self {
        self.own_moto = true;
        self
    }
    fn hook(mut self, hook: Hook) -> Self {
        self.hook = hook;
        self
    }
    fn tfe(mut self, tfe: Tfe) -> Self {
        self.tfe = tfe;
        self
    }
    fn install(mut self, install: Install) -> Self {
        self.install = install;
        self
    }
    /// A readiness row: a short `[readiness].timeout`, exit 6 within the deadline and a margin,
    /// after one install and with all files written.
    fn readiness(self, says: &[&str]) -> Self {
        let mut c = self
            .config(&format!(
                "timeout = \"30m\" => timeout = \"{READINESS_TIMEOUT}\""
            ))
            .expect(6, says)
            .tfe(Tfe::Written)
            .install(Install::Once);
        c.within = Some(READINESS_WITHIN);
        c
    }
    /// An install row: exit 5 after the files were written and install.sh was tried.
    fn install_fails(self, says: &[&str]) -> Self {
        self.expect(5, says).tfe(Tfe::Written)
    }
}

fn fake_dir() -> PathBuf {
    repo().join("tests/fake-tfe")
}

/// The path the harness puts in `[install].script`.
fn fake_install() -> String {
    fake_dir().join("install.sh").display().to_string()
}

/// Marks planted in bad values, so a leak of the bad value itself would be found.
const MARK: &str = "PLANTED-SECRET-7f3a91";

fn big(prefix: &str, filler: u8, len: usize) -> String {
    let mut s = String::with_capacity(len);
    s.push_str(prefix);
    while s.len() < len {
        s.push(filler as char);
    }
    s
}

/// A state.json as the agent writes it for `instance_id` after a successful install.
fn state_json(instance_id: &str) -> String {
    serde_json::to_string_pretty(&json!({
        "instance_id": instance_id,
        "phase": "installed",
        "installed_release": 504,
        "launch_hook": null
    }))
    .unwrap()
}

fn plant(node: &Node, rel: &str, bytes: &[u8]) -> PathBuf {
    let path = node.path(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}

fn plant_state(node: &Node, bytes: &[u8]) -> Prepared {
    Prepared {
        untouched: vec![plant(node, "state/state.json", bytes)],
        ..Prepared::default()
    }
}

/// An executable script in the row's directory.
fn plant_script(node: &Node, name: &str, text: &[u8], mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = plant(node, name, text);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn use_script(node: &Node, path: &Path) {
    node.write_config(&format!(
        "script = \"{}\" => script = \"{}\"",
        fake_install(),
        path.display()
    ));
}

/// moto with IAM enforced (on a moto of the row's own: the switch is server-wide): a user with no
/// permissions and its access key, then every request signed and authorised
/// (`/moto-api/reset-auth` 0). The key becomes the agent's credentials.
fn access_denied(node: &Node) -> Prepared {
    let key = node.moto.access_key_in(None, "no-permissions");
    ureq::post(&format!("{}/moto-api/reset-auth", node.moto.url))
        .set("Content-Type", "text/plain")
        .send_string("0")
        .expect("moto reset-auth");
    Prepared {
        env: vec![
            ("AWS_ACCESS_KEY_ID".into(), key.id),
            ("AWS_SECRET_ACCESS_KEY".into(), key.secret),
        ],
        ..Prepared::default()
    }
}

/// What Secrets Manager answers when a secret's KMS key cannot decrypt it (key disabled, pending
/// deletion, or no kms:Decrypt for the caller), or when it refuses the caller in its own JSON shape.
/// moto never calls KMS for Secrets Manager and answers IAM denials in XML, so these come from a
/// small proxy in front of moto: every request is forwarded, and the answers for the named secret
/// are replaced by the error AWS gives, as AWS gives it: BatchGetSecretValue keeps the other
/// secrets and lists the failed one under `Errors`; GetSecretValue fails with HTTP 400 and
/// `{"__type", "Message"}`; `batch_refused` makes BatchGetSecretValue itself fail with
/// AccessDeniedException (a policy without it), so the agent falls back to GetSecretValue.
struct SecretError {
    id: &'static str,
    code: &'static str,
    message: &'static str,
    batch_refused: bool,
    /// Instead: every answer that carries secret values arrives cut in half (a well-framed 200
    /// whose JSON ends early), as through a proxy or load balancer that broke the stream.
    cut_short: bool,
}

const DECRYPTION_FAILURE: &str =
    "Secrets Manager can't decrypt the protected secret text using the provided KMS key.";

/// The proxy: a loopback listener, one thread per connection, stopped when dropped.
struct SecretsProxy {
    url: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
    port: u16,
}

impl SecretsProxy {
    fn start(upstream: String, fault: SecretError) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let fault = Arc::new(fault);
        let stopped = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (upstream, fault) = (upstream.clone(), fault.clone());
                std::thread::spawn(move || serve(conn, &upstream, &fault));
            }
        });
        SecretsProxy {
            url: format!("http://127.0.0.1:{port}"),
            stop,
            port,
        }
    }
}

impl Drop for SecretsProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port)); // wakes the accept loop
    }
}

/// Requests on one keep-alive connection, until it closes or idles for 10 s.
fn serve(conn: std::net::TcpStream, upstream: &str, fault: &SecretError) {
    use std::io::{BufRead, BufReader, Write};
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => head.push(line.trim_end().to_string()),
            }
        }
        let headers: Vec<(String, String)> = head
            .iter()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let mut body = vec![0u8; header("content-length").parse().unwrap_or(0)];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (status, answer) = answer(upstream, &headers, &body, fault);
        let reply = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n",
            answer.len()
        );
        if out.write_all(reply.as_bytes()).is_err() || out.write_all(&answer).is_err() {
            return;
        }
    }
}

fn answer(
    upstream: &str,
    headers: &[(String, String)],
    body: &[u8],
    fault: &SecretError,
) -> (u16, Vec<u8>) {
    let target = headers
        .iter()
        .find(|(k, _)| k == "x-amz-target")
        .map_or("", |(_, v)| v.as_str());
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let error = |code: &str, message: &str| {
        (
            400,
            json!({"__type": code, "Message": message})
                .to_string()
                .into_bytes(),
        )
    };
    if target.ends_with(".GetSecretValue") && request["SecretId"] == fault.id {
        return error(fault.code, fault.message);
    }
    if target.ends_with(".BatchGetSecretValue") && fault.batch_refused {
        return error(
            "AccessDeniedException",
            "User: arn:aws:sts::123456789012:assumed-role/tfe-node/i-0 is not authorized to perform: secretsmanager:BatchGetSecretValue because no identity-based policy allows the secretsmanager:BatchGetSecretValue action",
        );
    }
    let mut req = ureq::post(upstream);
    for (k, v) in headers {
        if !["host", "content-length", "connection"].contains(&k.as_str()) {
            req = req.set(k, v);
        }
    }
    let (status, text) = match req.send_bytes(body) {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => return (502, e.to_string().into_bytes()),
    };
    if status == 200 && fault.cut_short && text.contains("SecretString") {
        return (200, text.as_bytes()[..text.len() / 2].to_vec());
    }
    if status == 200 && target.ends_with(".BatchGetSecretValue") {
        let mut v: Value = serde_json::from_str(&text).unwrap();
        if let Some(values) = v["SecretValues"].as_array_mut() {
            let before = values.len();
            values.retain(|e| e["Name"] != fault.id);
            if values.len() < before {
                v["Errors"] = json!([{"SecretId": fault.id, "ErrorCode": fault.code, "Message": fault.message}]);
            }
        }
        return (200, v.to_string().into_bytes());
    }
    (status, text.into_bytes())
}

/// The agent's Secrets Manager endpoint becomes a proxy with `fault` in front of the node's moto.
fn secrets_fault(node: &Node, fault: SecretError) -> Prepared {
    let proxy = SecretsProxy::start(node.moto.url.clone(), fault);
    Prepared {
        env: vec![("AWS_ENDPOINT_URL_SECRETS_MANAGER".into(), proxy.url.clone())],
        _keep: vec![Box::new(proxy)],
        ..Prepared::default()
    }
}

/// The rows. Unless a row says otherwise it expects exit 3, the launch hook ABANDONed once (the
/// agent finds and holds the hook before it fetches secrets, so every later failure releases
/// it), no TFE file written and install.sh never run.
fn cases() -> Vec<Case> {
    let pem_cert =
        format!("-----BEGIN CERTIFICATE-----\nMIIB{MARK}certbody\n-----END CERTIFICATE-----\n");
    let pem_key =
        format!("-----BEGIN PRIVATE KEY-----\nMIIE{MARK}keybody\n-----END PRIVATE KEY-----\n");
    let huge_hex = big(&format!("{MARK}-huge-not-hex-"), b'g', 1 << 20);
    let huge_text = big(
        &format!("{{\"enc_password\": \"{MARK}-huge-"),
        b'x',
        1 << 20,
    );
    vec![
        // ---- the readiness deadline (defect 4) and what replicatedctl / health-check print ----
        // Slow rows first, so the pool overlaps them with the quick ones.
        case("replicatedctl hanging on every call is killed at the readiness deadline")
            .knobs(json!({"hang": ["replicatedctl"]}))
            .readiness(&["TFE was not ready after"]),
        case("health-check hanging is killed at the readiness deadline")
            .knobs(json!({"hang": ["replicated health-check"]}))
            .readiness(&["TFE was not ready after"]),
        case("replicatedctl app status hanging is killed at the readiness deadline")
            .knobs(json!({"hang": ["replicatedctl app status"]}))
            .readiness(&["TFE was not ready after"]),
        case("replicatedctl printing garbage never counts as ready")
            .knobs(json!({"stdout_override": {"replicatedctl": "Segmentation fault (core dumped) {{{\n"}}))
            .readiness(&["TFE was not ready after", "cannot understand the output of"]),
        case("replicatedctl printing nothing never counts as ready")
            .knobs(json!({"stdout_override": {"replicatedctl": ""}}))
            .readiness(&["TFE was not ready after", "no JSON object in output"]),
        case("replicatedctl printing bytes that are not UTF-8 never counts as ready")
            // JSON cannot carry the bytes: `run_case` swaps this placeholder for the
            // surrogateescape form the fake turns into raw bytes.
            .knobs(json!({"stdout_override": {"replicatedctl system status": "RAW-BYTES-PLACEHOLDER"}}))
            .readiness(&["TFE was not ready after", "system status"]),
        case("replicatedctl system status of the wrong JSON type never counts as ready")
            .knobs(json!({"stdout_override": {"replicatedctl system status": "{\"Replicated\": 1, \"Retraced\": null}\n"}}))
            .readiness(&["TFE was not ready after", "Replicated=1"]),
        case("replicatedctl app status with no application never counts as ready")
            .knobs(json!({"stdout_override": {"replicatedctl app status": "[]\n"}}))
            .readiness(&["TFE was not ready after", "no application installed yet"]),
        case("replicatedctl app status of an unknown shape never counts as ready")
            .knobs(json!({"stdout_override": {"replicatedctl app status": "[{\"Status\": \"started\"}]\n"}}))
            .readiness(&["TFE was not ready after", "unexpected app status shape"]),
        case("health-check output in an unknown format never counts as ready")
            .knobs(json!({"stdout_override": {"replicated health-check": "{\"healthy\": true}\nEverything is fine.\n"}}))
            .readiness(&["TFE was not ready after", "no summary line"]),
        case("health-check printing nothing never counts as ready")
            .knobs(json!({"stdout_override": {"replicated health-check": ""}}))
            .readiness(&["TFE was not ready after", "no summary line"]),
        case("health-check saying all passed beside a failed check never counts as ready")
            .knobs(json!({"stdout_override": {"replicated health-check": "checking: Vault Server Health Check...\n|- \u{2717} ERROR: down\n\n  All checks passed.\n"}}))
            .readiness(&["TFE was not ready after", "Vault Server Health Check"]),
        // ---- the shared secret: malformed, empty, huge, not UTF-8, SecretBinary ----
        case("a shared secret that is not JSON")
            .shared(Secret::String(format!("enc_password={MARK}-not-json")))
            .expect(3, &["secret \"tfe/bad-shared\"", "not valid JSON"])
            .hidden("the bad shared secret", format!("{MARK}-not-json")),
        case("a shared secret cut off in the middle")
            .shared(Secret::String(format!("{{\"enc_password\": \"{MARK}-truncated")))
            .expect(3, &["secret \"tfe/bad-shared\"", "not valid JSON"])
            .hidden("the truncated value", format!("{MARK}-truncated")),
        // Secrets Manager has no empty SecretString (its minimum length is 1): a secret created
        // without a value is the empty case, and reading it is an AWS error.
        case("a shared secret created without a value")
            .prepare(|node| {
                node.moto.secrets_call(node.account.as_deref(), "CreateSecret", &json!({"Name": "tfe/bad-shared"}));
                Prepared::default()
            })
            .config("shared = \"tfe/shared\" => shared = \"tfe/bad-shared\"")
            .expect(4, &["tfe/bad-shared"]),
        case("a shared secret of only whitespace")
            .shared(Secret::String(" \n\t ".into()))
            .expect(3, &["secret \"tfe/bad-shared\"", "not valid JSON"]),
        case("an empty JSON object as the shared secret names every required setting")
            .shared(Secret::String("{}".into()))
            .expect(3, &["setting \"enc_password\"", "setting \"pg_password\"", "setting \"redis_pass\"", "is required"]),
        case("a 1 MiB shared secret whose hex setting is not hex")
            .shared_json(|m| {
                m.insert("internal_api_token".into(), json!(huge_hex.clone()));
            })
            .expect(3, &["setting \"internal_api_token\"", "must be a hex value"])
            // Its head and a piece of its middle: any leak of the value, whole or cut, in any
            // encoding, holds the same encoding of one of them (and the whole 1 MiB in ~60 forms
            // would cost more than every other row together).
            .hidden("the 1 MiB value's head", &huge_hex[..64])
            .hidden("a piece of the 1 MiB value's middle", &huge_hex[1 << 19..(1 << 19) + 64]),
        case("a 1 MiB shared secret that is not JSON")
            .shared(Secret::String(huge_text.clone()))
            .expect(3, &["secret \"tfe/bad-shared\"", "not valid JSON"])
            .hidden("the 1 MiB text's head", &huge_text[..80]),
        case("a shared secret holding a lone UTF-16 surrogate")
            .shared(Secret::String(format!("{{\"enc_password\": \"{MARK}-\\ud800-lone\"}}")))
            .expect(3, &["secret \"tfe/bad-shared\"", "not valid JSON"])
            .hidden("the value around the surrogate", format!("{MARK}-")),
        case("a shared secret as SecretBinary that is not UTF-8")
            .shared(Secret::Binary([b"\xff\xfe\x00".as_slice(), MARK.as_bytes()].concat()))
            .expect(3, &["secret \"tfe/bad-shared\"", "must be a SecretString"]),
        case("a shared secret as SecretBinary holding valid JSON")
            .shared(Secret::Binary(shared_secret().to_string().into_bytes()))
            .expect(3, &["secret \"tfe/bad-shared\"", "must be a SecretString"]),
        // ---- wrong JSON types ----
        case("a shared secret that is a JSON number")
            .shared(Secret::String("504".into()))
            .expect(3, &["secret \"tfe/bad-shared\"", "must be a JSON object"]),
        case("a shared secret that is a JSON array")
            .shared(Secret::String(format!("[\"{MARK}-in-array\"]")))
            .expect(3, &["secret \"tfe/bad-shared\"", "must be a JSON object"])
            .hidden("the array's element", format!("{MARK}-in-array")),
        case("a shared secret that is JSON null")
            .shared(Secret::String("null".into()))
            .expect(3, &["secret \"tfe/bad-shared\"", "must be a JSON object"]),
        case("a shared secret that is a JSON string")
            .shared(Secret::String(format!("\"{MARK}-bare-string\"")))
            .expect(3, &["secret \"tfe/bad-shared\"", "must be a JSON object"])
            .hidden("the bare string", format!("{MARK}-bare-string")),
        case("a setting that is a JSON number where a string is needed")
            .shared_json(|m| {
                m.insert("pg_password".into(), json!(4815162342_u64));
            })
            .expect(3, &["setting \"pg_password\"", "must be a JSON string, found a number"]),
        case("a setting that is a JSON array where a string is needed")
            .shared_json(|m| {
                m.insert("pg_password".into(), json!([format!("{MARK}-array")]));
            })
            .expect(3, &["setting \"pg_password\"", "found an array"])
            .hidden("the array's element", format!("{MARK}-array")),
        case("a setting that is a JSON object where a string is needed")
            .shared_json(|m| {
                m.insert("enc_password".into(), json!({"value": format!("{MARK}-object")}));
            })
            .expect(3, &["setting \"enc_password\"", "found an object"])
            .hidden("the object's member", format!("{MARK}-object")),
        case("a setting that is JSON null where a string is needed")
            .shared_json(|m| {
                m.insert("redis_pass".into(), Value::Null);
            })
            .expect(3, &["setting \"redis_pass\"", "found null"]),
        case("a setting that is a JSON boolean where a string is needed")
            .shared_json(|m| {
                m.insert("internal_api_token".into(), json!(true));
            })
            .expect(3, &["setting \"internal_api_token\"", "found a boolean"]),
        // ---- missing and unknown keys ----
        case("a required setting missing from the shared secret")
            .shared_json(|m| {
                m.remove("pg_password");
            })
            .expect(3, &["setting \"pg_password\"", "is required"]),
        case("redis_pass missing while redis_use_password_auth is on")
            .shared_json(|m| {
                m.remove("redis_pass");
            })
            .expect(3, &["setting \"redis_pass\"", "because redis_use_password_auth"]),
        case("an unknown key in the shared secret that is no setting name")
            .shared_json(|m| {
                m.insert("PG-Password".into(), json!(format!("{MARK}-unknown-key")));
            })
            .expect(3, &["setting \"PG-Password\"", "is not a ptfe setting name"])
            .hidden("the unknown key's value", format!("{MARK}-unknown-key")),
        case("a setting given both in the config and in the shared secret")
            .shared_json(|m| {
                m.insert("hostname".into(), json!("tfe2.example.com"));
            })
            .expect(3, &["setting \"hostname\"", "set each setting in one place only"]),
        case("enable_active_active turned off in the shared secret")
            .shared_json(|m| {
                m.insert("enable_active_active".into(), json!("0"));
            })
            .expect(3, &["setting \"enable_active_active\"", "must be \"1\""]),
        // ---- hex where hex is required; lengths and ranges ----
        case("a hex setting that is not hex")
            .shared_json(|m| {
                m.insert("internal_api_token".into(), json!(format!("zz-{MARK}")));
            })
            .expect(3, &["setting \"internal_api_token\" (from secret \"tfe/bad-shared\"): must be a hex value"])
            .hidden("the bad token", format!("zz-{MARK}")),
        case("a hex setting with a 0x prefix")
            .shared_json(|m| {
                m.insert("registry_session_encryption_key".into(), json!("0x978a42cd38a567d7fb1456c8991cb541"));
            })
            .expect(3, &["setting \"registry_session_encryption_key\"", "must be a hex value"])
            .hidden("the 0x key", "0x978a42cd38a567d7fb1456c8991cb541"),
        case("an empty hex setting")
            .shared_json(|m| {
                m.insert("registry_session_secret_key".into(), json!(""));
            })
            .expect(3, &["setting \"registry_session_secret_key\"", "must be a hex value"]),
        case("an empty required secret setting")
            .shared_json(|m| {
                m.insert("enc_password".into(), json!(""));
            })
            .expect(3, &["setting \"enc_password\"", "must not be empty"]),
        case("a hostname label longer than 63 characters")
            .config(&format!("hostname = \"tfe.example.com\" => hostname = \"{}.example.com\"", "a".repeat(64)))
            .expect(3, &["setting \"hostname\" (from config settings.hostname)", "must be a DNS name"]),
        case("a redis_port past 65535")
            .config("redis_port = \"6379\" => redis_port = \"65536\"")
            .expect(3, &["setting \"redis_port\"", "must be a port number 1-65535"]),
        case("a pg_netloc without a port")
            .config("pg_netloc = \"db.internal:5432\" => pg_netloc = \"db.internal\"")
            .expect(3, &["setting \"pg_netloc\"", "must be host:port"]),
        // ---- the license and the optional secrets ----
        case("a license SecretString that is not base64")
            .secret("tfe/bad-license", Secret::String(format!("{MARK}-license-not-base64!")))
            .config("license = \"tfe/license\" => license = \"tfe/bad-license\"")
            .expect(3, &["secret \"tfe/bad-license\"", "must be base64 of the .rli file"])
            .hidden("the bad license", format!("{MARK}-license-not-base64!")),
        case("a license SecretString that is empty base64")
            .secret("tfe/bad-license", Secret::String("====".into()))
            .config("license = \"tfe/license\" => license = \"tfe/bad-license\"")
            .expect(3, &["secret \"tfe/bad-license\"", "must be base64 of the .rli file"]),
        case("a console password as SecretBinary that is not UTF-8")
            .secret("tfe/console", Secret::Binary([b"\xc3\x28".as_slice(), MARK.as_bytes()].concat()))
            .config("# console_password = \"tfe/console\" => console_password = \"tfe/console\"")
            .expect(3, &["secret \"tfe/console\"", "console password must be a non-empty SecretString"]),
        case("a TLS certificate that is not PEM")
            .secret("tfe/tls-cert", Secret::String(format!("{MARK}-not-a-certificate")))
            .secret("tfe/tls-key", Secret::String(pem_key.clone()))
            .config("# tls_cert = \"tfe/tls-cert\"  tls_key = \"tfe/tls-key\"  ca_bundle = \"tfe/ca\" => tls_cert = \"tfe/tls-cert\"\\ntls_key = \"tfe/tls-key\"")
            .config("tls_bootstrap_type = \"self-signed\" => tls_bootstrap_type = \"server-path\"")
            .expect(3, &["secret \"tfe/tls-cert\"", "must be PEM text"])
            .hidden("the bad certificate", format!("{MARK}-not-a-certificate"))
            .hidden("the TLS key", &pem_key),
        case("a TLS key as SecretBinary")
            .secret("tfe/tls-cert", Secret::String(pem_cert.clone()))
            .secret("tfe/tls-key", Secret::Binary(pem_key.clone().into_bytes()))
            .config("# tls_cert = \"tfe/tls-cert\"  tls_key = \"tfe/tls-key\"  ca_bundle = \"tfe/ca\" => tls_cert = \"tfe/tls-cert\"\\ntls_key = \"tfe/tls-key\"")
            .config("tls_bootstrap_type = \"self-signed\" => tls_bootstrap_type = \"server-path\"")
            .expect(3, &["secret \"tfe/tls-key\"", "must be PEM text in SecretString"])
            .hidden("the TLS certificate", &pem_cert)
            .hidden("the TLS key", &pem_key),
        case("a TLS certificate without its key")
            .secret("tfe/tls-cert", Secret::String(pem_cert.clone()))
            .config("# tls_cert = \"tfe/tls-cert\"  tls_key = \"tfe/tls-key\"  ca_bundle = \"tfe/ca\" => tls_cert = \"tfe/tls-cert\"")
            .config("tls_bootstrap_type = \"self-signed\" => tls_bootstrap_type = \"server-path\"")
            .expect(3, &["secrets.tls_cert and secrets.tls_key must be set together"])
            .hidden("the TLS certificate", &pem_cert),
        case("a CA bundle that is not PEM")
            .secret("tfe/ca", Secret::String(format!("{MARK}-not-a-bundle")))
            .config("# tls_cert = \"tfe/tls-cert\"  tls_key = \"tfe/tls-key\"  ca_bundle = \"tfe/ca\" => ca_bundle = \"tfe/ca\"")
            .expect(3, &["secret \"tfe/ca\"", "must be PEM text"])
            .hidden("the bad bundle", format!("{MARK}-not-a-bundle")),
        // ---- AWS: missing, deleted, denied, undecryptable ----
        case("a missing shared secret is an AWS error naming its id")
            .config("shared = \"tfe/shared\" => shared = \"tfe/no-such-shared\"")
            .expect(4, &["tfe/no-such-shared"]),
        case("a missing license secret is an AWS error naming its id")
            .config("license = \"tfe/license\" => license = \"tfe/no-such-license\"")
            .expect(4, &["tfe/no-such-license"]),
        case("a secret scheduled for deletion is an AWS error naming its id")
            .prepare(|node| {
                // DeleteSecret (with a recovery window): the secret exists but cannot be read.
                let body = json!({"SecretId": "tfe/license", "RecoveryWindowInDays": 7});
                node.moto.secrets_call(node.account.as_deref(), "DeleteSecret", &body);
                Prepared::default()
            })
            .expect(4, &["tfe/license"]),
        case("a version stage that does not exist is an AWS error")
            .config("# version_stage = \"AWSCURRENT\" => version_stage = \"AWSPENDING\"")
            .expect(4, &["tfe/shared"]),
        case("a secret its KMS key cannot decrypt, in a BatchGetSecretValue answer")
            .prepare(|node| secrets_fault(node, SecretError {
                id: "tfe/license",
                code: "DecryptionFailure",
                message: DECRYPTION_FAILURE,
                batch_refused: false,
                cut_short: false,
            }))
            .expect(4, &["tfe/license", "DecryptionFailure", "can't decrypt"]),
        case("a secret its KMS key cannot decrypt, in a GetSecretValue answer")
            .prepare(|node| secrets_fault(node, SecretError {
                id: "tfe/shared",
                code: "DecryptionFailure",
                message: DECRYPTION_FAILURE,
                batch_refused: true,
                cut_short: false,
            }))
            .expect(4, &["BatchGetSecretValue refused", "tfe/shared", "DecryptionFailure"]),
        case("AccessDeniedException as AWS sends it names the secret")
            .prepare(|node| secrets_fault(node, SecretError {
                id: "tfe/shared",
                code: "AccessDeniedException",
                message: "User: arn:aws:sts::123456789012:assumed-role/tfe-node/i-0 is not authorized to perform: secretsmanager:GetSecretValue on resource: tfe/shared because no identity-based policy allows the secretsmanager:GetSecretValue action",
                batch_refused: true,
                cut_short: false,
            }))
            .expect(4, &["tfe/shared", "not authorized to perform: secretsmanager:GetSecretValue"]),
        // The SDK keeps the raw answer of a response it cannot parse; an error message that
        // quoted it would quote the secrets in it.
        case("a Secrets Manager answer cut short is an AWS error that quotes no secret")
            .prepare(|node| secrets_fault(node, SecretError {
                id: "",
                code: "",
                message: "",
                batch_refused: false,
                cut_short: true,
            }))
            // An answer cut short may pass: retried for [aws].retry_timeout, kept short here.
            .config("[aws] => [aws]\\nretry_timeout = \"3s\"")
            .expect(4, &["tfe/shared"]),
        case("AccessDenied from Secrets Manager is an AWS error")
            .prepare(access_denied)
            .own_moto()
            .expect(4, &["tfe/shared", "not authorized to perform: secretsmanager:GetSecretValue"]),
        // ---- the agent config: invalid TOML, wrong types, unknown keys, bad values ----
        // Rows whose config cannot be parsed leave the hook alone: its name is in that config.
        case("config that is not valid TOML")
            .config("[replicated]                      # rendered into replicated.conf => [replicated")
            .expect(3, &["is not valid TOML"])
            .hook(Hook::Untouched),
        case("an empty config file")
            .prepare(|node| {
                std::fs::write(&node.config, "").unwrap();
                Prepared::default()
            })
            .expect(3, &["missing field `secrets`"])
            .hook(Hook::Untouched),
        case("a config file that is not UTF-8")
            .prepare(|node| {
                let mut text = std::fs::read(&node.config).unwrap();
                text.extend_from_slice(b"\n# caf\xe9\n");
                std::fs::write(&node.config, text).unwrap();
                Prepared::default()
            })
            .expect(3, &["cannot read config file", "agent.toml"])
            .hook(Hook::Untouched),
        case("a config path that is a directory")
            .prepare(|node| {
                std::fs::remove_file(&node.config).unwrap();
                std::fs::create_dir(&node.config).unwrap();
                Prepared::default()
            })
            .expect(3, &["cannot read config file", "agent.toml"])
            .hook(Hook::Untouched),
        case("a boolean written as a string")
            .config("bypass_preflight_checks = true => bypass_preflight_checks = \"yes\"")
            .expect(3, &["replicated.bypass_preflight_checks"])
            .hook(Hook::Untouched),
        case("a list written as a string")
            .config("# extra_args = [] => extra_args = \"bypass-firewalld-warning\"")
            .expect(3, &["install.extra_args"])
            .hook(Hook::Untouched),
        case("a duration written as a number")
            .config("timeout = \"20m\" => timeout = 1200")
            .expect(3, &["install.timeout"])
            .hook(Hook::Untouched),
        case("a duration in no known unit")
            .config("timeout = \"30m\" => timeout = \"30 fortnights\"")
            .expect(3, &["readiness.timeout", "invalid duration"])
            .hook(Hook::Untouched),
        case("a zero duration")
            .config("wait_state_timeout = \"5m\" => wait_state_timeout = \"0s\"")
            .expect(3, &["termination.wait_state_timeout", "greater than zero"])
            .hook(Hook::Untouched),
        case("a negative duration")
            .config("timeout = \"1h\" => timeout = \"-1h\"")
            .expect(3, &["drain.timeout", "invalid duration"])
            .hook(Hook::Untouched),
        case("an unknown on_failure result")
            .config("on_failure = \"abandon\"            # or \"continue\" => on_failure = \"retry\"")
            .expect(3, &["lifecycle.on_failure"])
            .hook(Hook::Untouched),
        case("an unknown key in a known section")
            .config("[install] => [install]\\nretries = 3")
            .expect(3, &["unknown key(s): install.retries"])
            .hook(Hook::Untouched),
        case("an unknown section")
            .config("[tools] => [proxy]\\nurl = \"http://proxy:3128\"\\n\\n[tools]")
            .expect(3, &["unknown key(s): proxy"])
            .hook(Hook::Untouched),
        case("a missing release_sequence")
            .config("release_sequence = 504 => # release_sequence unset")
            .expect(3, &["release_sequence"])
            .hook(Hook::Untouched),
        // These parse; agent.toml's own rules refuse them before any AWS call, and the held
        // launch hook then gets the failure result.
        case("release_sequence as a string")
            .config("release_sequence = 504 => release_sequence = \"504\"")
            .expect(3, &["config replicated.release_sequence", "must be a positive integer"]),
        case("release_sequence zero")
            .config("release_sequence = 504 => release_sequence = 0")
            .expect(3, &["config replicated.release_sequence", "must be a positive integer"]),
        case("release_sequence as a float")
            .config("release_sequence = 504 => release_sequence = 504.5")
            .expect(3, &["config replicated.release_sequence", "must be a positive integer"]),
        case("an unknown tls_bootstrap_type")
            .config("tls_bootstrap_type = \"self-signed\" => tls_bootstrap_type = \"letsencrypt\"")
            .expect(3, &["config replicated.tls_bootstrap_type", "must be one of self-signed, server-path, key-cert"]),
        case("tls_bootstrap_type server-path without TLS secrets")
            .config("tls_bootstrap_type = \"self-signed\" => tls_bootstrap_type = \"server-path\"")
            .expect(3, &["server-path and key-cert need secrets.tls_cert and secrets.tls_key"]),
        case("an unknown replicated log_level")
            .config("bypass_preflight_checks = true => bypass_preflight_checks = true\\nlog_level = \"verbose\"")
            .expect(3, &["config replicated.log_level", "must be one of debug, info, error"]),
        case("a float in [settings]")
            .config("redis_port = \"6379\" => redis_port = 6379.5")
            .expect(3, &["setting \"redis_port\" (from config settings.redis_port)", "found a float"]),
        case("a flag setting that is neither 0 nor 1")
            .config("redis_use_tls = \"1\" => redis_use_tls = \"yes\"")
            .expect(3, &["setting \"redis_use_tls\"", "must be \"0\" or \"1\""]),
        // A digest pin is a config value: a malformed one is an invalid config (exit 3, nothing
        // written), not a script that failed its check (exit 5 after the files were written).
        case("an install.sha256 pin that is not hex")
            .config("# sha256 = \"…\" => sha256 = \"not-a-sha256-digest-zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz\"")
            .expect(3, &["sha256"]),
        case("an install.sha256 pin one character short")
            .config(&format!("# sha256 = \"…\" => sha256 = \"{}\"", "a".repeat(63)))
            .expect(3, &["sha256"]),
        // ---- install.sh missing, not runnable, failing ----
        case("install.sh missing")
            .config(&format!("script = \"{}\" => script = \"{{dir}}/no-such-install.sh\"", fake_install()))
            .install_fails(&["install.sh failed", "no-such-install.sh"]),
        case("install.sh is a directory")
            .prepare(|node| {
                let dir = node.path("install-dir.sh");
                std::fs::create_dir(&dir).unwrap();
                use_script(node, &dir);
                Prepared::default()
            })
            .install_fails(&["install.sh failed"]),
        case("install.sh is a binary, not a script")
            .prepare(|node| {
                let path = plant_script(node, "install.sh", b"\x7fELF\x02\x01\x01\x00\x00\x00garbage\x00\xff", 0o755);
                use_script(node, &path);
                Prepared::default()
            })
            .install_fails(&["install.sh failed"]),
        case("install.sh with a syntax error")
            .prepare(|node| {
                let path = plant_script(node, "install.sh", b"#!/bin/bash\nif then fi (\n", 0o755);
                use_script(node, &path);
                Prepared::default()
            })
            .install_fails(&["install.sh failed"])
            .install(Install::Never),
        case("install.sh exiting non-zero")
            .knobs(json!({"install_exit_code": 3}))
            .install_fails(&["install.sh failed", "exit status: 3"])
            .install(Install::Once),
        // The agent runs install.sh through /bin/bash, so a script that lost its execute bit still
        // runs: tolerated, and the node comes up.
        case("install.sh without its execute bit still runs through bash")
            .prepare(|node| {
                let text = std::fs::read(fake_dir().join("install.sh")).unwrap();
                let path = plant_script(node, "install.sh", &text, 0o644);
                use_script(node, &path);
                Prepared {
                    env: vec![("FAKE_TFE_HOME".into(), fake_dir().display().to_string())],
                    ..Prepared::default()
                }
            })
            .expect(0, &["install.sh finished", "released with CONTINUE"])
            .hook(Hook::Continue)
            .tfe(Tfe::Written)
            .install(Install::Once),
        // ---- the state record (defect 2): exit 7, names the file, install.sh never runs, no TFE
        // file is written, and the held hook is abandoned ----
        case("a corrupt state.json")
            .prepare(|node| plant_state(node, format!("{{not json {MARK}").as_bytes()))
            .expect(7, &["state.json"]),
        case("a truncated state.json")
            .prepare(|node| {
                let full = state_json(&node.instance_id);
                plant_state(node, &full.as_bytes()[..full.len() / 2])
            })
            .expect(7, &["state.json"]),
        case("an empty state.json")
            .prepare(|node| plant_state(node, b""))
            .expect(7, &["state.json"]),
        case("a state.json of the wrong shape")
            .prepare(|node| plant_state(node, json!({"instance_id": 5, "phase": ["booting"]}).to_string().as_bytes()))
            .expect(7, &["state.json"]),
        case("a state.json that is not UTF-8")
            .prepare(|node| {
                let full = state_json(&node.instance_id);
                let (head, rest) = full.split_once("installed\"").unwrap();
                plant_state(node, &[head.as_bytes(), b"install\xe9d\"", rest.as_bytes()].concat())
            })
            .expect(7, &["state.json"]),
        case("a state.json that is a directory")
            .prepare(|node| {
                std::fs::create_dir_all(node.path("state/state.json")).unwrap();
                Prepared::default()
            })
            .expect(7, &["state.json"]),
        case("a state_dir that is a regular file")
            .prepare(|node| Prepared {
                untouched: vec![plant(node, "state", b"not a directory\n")],
                ..Prepared::default()
            })
            .expect(7, &["{dir}/state"]),
        // ---- writing the TFE files ----
        case("a replicated_conf path under a regular file cannot be written")
            .prepare(|node| {
                plant(node, "blocker", b"a file where a directory should be\n");
                node.write_config(&format!(
                    "replicated_conf = \"{0}\" => replicated_conf = \"{1}\"",
                    node.path("etc/replicated.conf").display(),
                    node.path("blocker/replicated.conf").display()
                ));
                Prepared::default()
            })
            .expect(7, &["{dir}/blocker"])
            .tfe(Tfe::AnyValid),
    ]
}

/// A finished agent: exit code, raw output, wall time.
struct Outcome {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    elapsed: Duration,
}

fn run_agent(mut child: Child) -> Outcome {
    let start = Instant::now();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > AGENT_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    let elapsed = start.elapsed();
    Outcome {
        code: status.and_then(|s| s.code()),
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
        elapsed,
    }
}

/// pids of fake tool processes of this row still alive (their environment names this row's fake
/// state dir, so no other process can match).
fn live_fake_tools(node: &Node) -> Vec<i32> {
    let marker = format!("FAKE_TFE_STATE={}", node.fake_state().display());
    let mut pids: Vec<i32> = node
        .calls()
        .iter()
        .filter_map(|c| c["pid"].as_i64())
        .map(|p| p as i32)
        .collect();
    if let Ok(text) = std::fs::read_to_string(node.fake_state().join("hang-children.pids")) {
        pids.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    pids.sort();
    pids.dedup();
    pids.into_iter()
        .filter(|pid| !process_gone(*pid, Duration::ZERO))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

fn check_tfe_files(node: &Node, expect: Tfe, problems: &mut Vec<String>) {
    let etc = node.path("etc");
    let conf = etc.join("replicated.conf");
    let settings = etc.join("ptfe-settings.json");
    let license = etc.join("ptfe-license.rli");
    if expect == Tfe::NotWritten {
        if etc.exists() {
            problems.push(format!(
                "TFE files were written though the boot failed before writing: {:?}",
                std::fs::read_dir(&etc)
                    .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
                    .unwrap_or_default()
            ));
        }
        return;
    }
    if expect == Tfe::Written {
        for p in [&conf, &settings, &license] {
            if !p.exists() {
                problems.push(format!("{} was not written", p.display()));
            }
        }
    }
    if let Ok(text) = std::fs::read(&conf) {
        match serde_json::from_slice::<Value>(&text) {
            Ok(v) if v["ReleaseSequence"].is_u64() && v["ImportSettingsFrom"].is_string() => {}
            _ => problems.push("replicated.conf is not complete, valid JSON".into()),
        }
    }
    if let Ok(text) = std::fs::read(&settings) {
        let ok = serde_json::from_slice::<Value>(&text).is_ok_and(|v| {
            v.as_object().is_some_and(|m| {
                m.contains_key("enable_active_active")
                    && m.values().all(|item| item["value"].is_string())
            })
        });
        if !ok {
            problems.push("the settings file is not complete, valid JSON".into());
        }
    }
    if let Ok(bytes) = std::fs::read(&license) {
        if bytes != SHARED_SECRET_VALUES[11].as_bytes() {
            problems.push("the license file is not the license, whole".into());
        }
    }
}

/// Runs one row; every broken expectation is a line of the result.
fn run_case(c: &Case, moto: &Arc<Moto>) -> Vec<String> {
    let mut problems = Vec::new();
    let node = if c.own_moto {
        Node::new()
    } else {
        Node::on_moto(moto)
    };
    for (id, value) in &c.secrets {
        match value {
            Secret::String(s) => node.put_secret(id, SecretValue::String(s.clone())),
            Secret::Binary(b) => node.put_secret(
                id,
                SecretValue::Binary(base64::engine::general_purpose::STANDARD.encode(b)),
            ),
        }
    }
    let edits = c
        .config
        .iter()
        .map(|e| {
            e.replace("{fake}", &fake_dir().display().to_string())
                .replace("{dir}", &node.dir.path().display().to_string())
        })
        .collect::<Vec<_>>()
        .join("\n");
    node.write_config(&edits);
    node.set_behaviour(c.knobs.clone());
    let behaviour = node.fake_state().join("behaviour.json");
    let knobs = std::fs::read_to_string(&behaviour).unwrap();
    if knobs.contains("RAW-BYTES-PLACEHOLDER") {
        // "\udcff\udcfe" is 0xff 0xfe on the fake's stdout (surrogateescape).
        std::fs::write(
            &behaviour,
            knobs.replace("RAW-BYTES-PLACEHOLDER", "\\udcff\\udcfe{\\u0000garbage"),
        )
        .unwrap();
    }
    let prepared = match &c.prepare {
        Some(f) => f(&node),
        None => Prepared::default(),
    };
    let planted: Vec<(PathBuf, Option<Vec<u8>>)> = prepared
        .untouched
        .iter()
        .map(|p| (p.clone(), std::fs::read(p).ok()))
        .collect();

    let mut cmd = node.agent(&["boot"]);
    for (k, v) in &prepared.env {
        cmd.env(k, v);
    }
    let outcome = run_agent(cmd.spawn().expect("spawn agent"));
    let stderr = String::from_utf8_lossy(&outcome.stderr).to_string();
    let mut show_stderr = false;

    // The exit code and the message.
    if outcome.code != Some(c.code) {
        problems.push(format!(
            "exit code {:?}, expected {} (after {:.1}s)",
            outcome.code,
            c.code,
            outcome.elapsed.as_secs_f64()
        ));
        show_stderr = true;
    }
    for fragment in &c.says {
        let fragment = fragment.replace("{dir}", &node.dir.path().display().to_string());
        if !stderr.contains(fragment.as_str()) {
            problems.push(format!("stderr lacks {fragment:?}"));
            show_stderr = true;
        }
    }
    if c.code != 0 && !stderr.lines().any(|l| l.contains(" ERROR ")) {
        problems.push("failed without an ERROR line".into());
        show_stderr = true;
    }
    if let Some(within) = c.within {
        if outcome.elapsed > within {
            problems.push(format!(
                "took {:.1}s, more than the {READINESS_TIMEOUT} deadline and margin ({}s)",
                outcome.elapsed.as_secs_f64(),
                within.as_secs()
            ));
        }
    }

    // The launch hook.
    let resolutions = node.emulator.resolutions();
    let completes = node.emulator.api_calls("CompleteLifecycleAction");
    match c.hook {
        Hook::Abandon | Hook::Continue => {
            let result = if c.hook == Hook::Abandon {
                "ABANDON"
            } else {
                "CONTINUE"
            };
            if resolutions != launch_resolved(result, "complete") || completes != 1 {
                problems.push(format!(
                    "launch hook: expected one {result} by complete, saw {resolutions:?} after {completes} CompleteLifecycleAction call(s)"
                ));
            }
        }
        Hook::Untouched => {
            if !resolutions.is_empty() || completes != 0 {
                problems.push(format!(
                    "launch hook: expected untouched, saw {resolutions:?}"
                ));
            }
        }
    }

    // install.sh.
    let installs = node.install_runs().len();
    let install_ok = match c.install {
        Install::Never => installs == 0,
        Install::Once => installs == 1,
    };
    if !install_ok {
        problems.push(format!(
            "install.sh ran {installs} time(s), expected {:?}",
            c.install
        ));
    }

    // Nothing half-written.
    check_tfe_files(&node, c.tfe, &mut problems);
    for dir in [node.path("etc"), node.path("state")] {
        let temps = temp_files_under(&dir);
        if !temps.is_empty() {
            problems.push(format!("temporary files left: {temps:?}"));
        }
    }
    for (path, before) in &planted {
        if std::fs::read(path).ok() != *before {
            problems.push(format!(
                "{} was changed or removed; it must stay for the operator",
                path.display()
            ));
        }
    }
    let state = node.path("state/state.json");
    if state.is_file() && !planted.iter().any(|(p, _)| p == &state) {
        if let Err(e) = serde_json::from_slice::<Value>(&std::fs::read(&state).unwrap()) {
            problems.push(format!("state.json written by the agent is not JSON: {e}"));
        }
    }

    // A hung tool call's process group is gone once the agent has ended.
    let stragglers = {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let live = live_fake_tools(&node);
            if live.is_empty() || Instant::now() > deadline {
                break live;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    if !stragglers.is_empty() {
        problems.push(format!(
            "fake TFE processes outlived the agent: {stragglers:?}"
        ));
        for pid in &stragglers {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    // No secret value anywhere the agent wrote or printed. The TFE config files hold secrets by
    // design; the fake tools' own files (their "daemon's database") are not the agent's output,
    // except calls.jsonl: every child's argv and environment as the agent handed them over.
    let mut secrets: Vec<(String, Vec<u8>)> = SHARED_SECRET_VALUES
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("valid secret value {i}"), v.as_bytes().to_vec()))
        .collect();
    secrets.extend(c.hidden.iter().cloned());
    let scanner = Scanner::new(&secrets);
    let by_design = [
        "replicated.conf",
        "ptfe-settings.json",
        "ptfe-license.rli",
        "cert.pem",
        "key.pem",
    ];
    let etc = node.path("etc");
    let fake = node.fake_state();
    let calls = fake.join("calls.jsonl");
    let skip = |p: &Path| {
        (p.parent() == Some(etc.as_path())
            && by_design
                .iter()
                .any(|n| p.file_name().is_some_and(|f| f == *n)))
            || (p.starts_with(&fake) && p != calls.as_path())
            || p == node.config.as_path()
    };
    let mut parts = vec![
        ("stdout".to_string(), outcome.stdout.clone()),
        ("stderr".to_string(), outcome.stderr.clone()),
    ];
    parts.extend(files_under(node.dir.path(), &skip));
    let leaks = scanner.leaks(&parts);
    if !leaks.is_empty() {
        problems.push(format!("secret values leaked: {leaks:?}"));
    }

    if std::env::var_os("BAD_INPUTS_VERBOSE").is_some() {
        println!(
            "---- {} (exit {:?}):\n{}",
            c.name,
            outcome.code,
            tail(&stderr, 12)
        );
    }
    if show_stderr {
        problems.push(format!("stderr was:\n{}", tail(&stderr, 25)));
    }
    drop(prepared);
    problems
}

/// A finished row: its index, its problems (none = passed), its wall time.
type RowResult = (usize, Vec<String>, Duration);

/// The last `n` lines of `text`, indented.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("      {}", l.chars().take(400).collect::<String>()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_bad_input_fails_with_its_documented_code_and_message_and_leaves_nothing_behind() {
    let started = Instant::now();
    // BAD_INPUTS_ONLY=text runs only the rows whose name contains it, BAD_INPUTS_VERBOSE=1 prints
    // every row's stderr (to look at rows closely).
    let only = std::env::var("BAD_INPUTS_ONLY").ok();
    let all = cases();
    let total = all.len();
    let names: std::collections::HashSet<_> = all.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), total, "row names must be unique");
    let cases: Vec<Case> = all
        .into_iter()
        .filter(|c| only.as_deref().is_none_or(|o| c.name.contains(o)))
        .collect();
    let cases = Arc::new(cases);
    assert!(total >= 45, "the matrix has {total} rows");

    // One moto for the table; each row gets an account of its own on it (see `Node::on_moto`).
    let moto = Arc::new(Moto::start());
    let next = Arc::new(AtomicUsize::new(0));
    let results: Arc<Mutex<Vec<RowResult>>> = Arc::default();
    let workers: Vec<_> = (0..POOL)
        .map(|_| {
            let (cases, next, results, moto) =
                (cases.clone(), next.clone(), results.clone(), moto.clone());
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(c) = cases.get(i) else { break };
                let t = Instant::now();
                let problems =
                    match std::panic::catch_unwind(AssertUnwindSafe(|| run_case(c, &moto))) {
                        Ok(p) => p,
                        Err(panic) => vec![format!(
                            "the row's harness panicked: {}",
                            panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_default()
                        )],
                    };
                let verdict = if problems.is_empty() { "ok  " } else { "FAIL" };
                println!("{verdict} {:>5.1}s  {}", t.elapsed().as_secs_f64(), c.name);
                results.lock().unwrap().push((i, problems, t.elapsed()));
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let mut results = std::mem::take(&mut *results.lock().unwrap());
    results.sort_by_key(|r| r.0);
    let passed = results.iter().filter(|r| r.1.is_empty()).count();
    let mut report = String::new();
    for (i, problems, took) in results.iter().filter(|r| !r.1.is_empty()) {
        report.push_str(&format!(
            "\n- {} ({:.1}s):\n    {}",
            cases[*i].name,
            took.as_secs_f64(),
            problems.join("\n    ")
        ));
    }
    println!(
        "bad inputs: {} cases, {passed} passed ({:.0}s wall, {POOL} at a time)",
        cases.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        report.is_empty(),
        "bad inputs: {} cases, {passed} passed; failures:{report}",
        cases.len()
    );
}
