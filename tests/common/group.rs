//! A capacity-managed Auto Scaling group of real nodes (issue 15): ONE emulator shared by every
//! node, one moto holding the secrets, one real redis-server as the cluster store, a launch
//! template whose versions carry the agent config as cloud-init user data
//! (`cloud-init/baked-ami.yaml` rendered; the versions differ only in `release_sequence`), and a
//! **launcher**: a thread that polls the emulator's instances (every 200 ms, for as long as the
//! group lives) and, for each instance the emulator launched, starts a real `tfe-node-agent run`
//! with its own temp dir, fake TFE tools state and IMDS port, the config built from the user data
//! of the instance's launch template version (so the release a node installs comes from its
//! version). When an instance is Terminated its agent gets SIGTERM (the instance shuts down) once
//! it has left the cluster, or a few seconds later. Everything is killed when the group drops.
//!
//! The operator's side (`repave`, `cluster`) runs with [`Group::operator`]: the version-1 config
//! with `[aws] region`, and the Auto Scaling, EC2 and Secrets Manager endpoints.

use super::emulator::Emulator;
use super::moto::{AwsKey, Moto};
use super::node::{shared_secret, Agent, Run, SHARED_SECRET_VALUES};
use super::processes::repo;
use super::redis::Redis;
use super::template;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const GROUP: &str = "tfe-asg";
pub const TEMPLATE: &str = "tfe";
/// The release of each launch template version: version 1 → 504, version 2 → 505.
pub const RELEASES: [u64; 2] = [504, 505];
/// The launcher starts at most this many agents over a group's life (a bound on a runaway of
/// replacement launches).
const MAX_NODES: usize = 16;

/// How the group and its nodes are made.
#[derive(Clone, Debug)]
pub struct GroupOptions {
    /// Desired capacity at creation (the emulator launches that many version-1 instances).
    pub capacity: u64,
    pub launch_hook: bool,
    pub terminate_hook: bool,
    pub launch_timeout: u64,
    pub terminate_timeout: u64,
    /// Nodes of these launch template versions have a failing install.sh (exit 1).
    pub install_fails_on: Vec<u64>,
    /// The fake TFE tools' durations (seconds): short but real.
    pub install_duration_s: f64,
    pub app_started_after_s: f64,
    pub drain_duration_s: f64,
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions {
            capacity: 2,
            launch_hook: true,
            terminate_hook: true,
            launch_timeout: 60,
            terminate_timeout: 60,
            install_fails_on: vec![],
            install_duration_s: 1.5,
            app_started_after_s: 1.0,
            drain_duration_s: 1.5,
        }
    }
}

/// One node the launcher started for an instance the emulator launched.
pub struct GroupNode {
    pub instance_id: String,
    pub template_version: u64,
    pub dir: tempfile::TempDir,
    pub agent: Agent,
    /// When the launcher sent SIGTERM (the instance was Terminated).
    pub stopped: Option<Instant>,
}

impl GroupNode {
    pub fn fake_state(&self) -> PathBuf {
        self.dir.path().join("fake-tfe")
    }

    /// The fake tools' call log.
    pub fn calls(&self) -> Vec<Value> {
        std::fs::read_to_string(self.fake_state().join("calls.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Start events of one fake tool command (e.g. "node-drain").
    pub fn tool_calls(&self, word: &str) -> Vec<Value> {
        super::node::tool_starts(self.calls(), word)
    }

    pub fn install_runs(&self) -> Vec<Value> {
        self.calls()
            .into_iter()
            .filter(|c| c["tool"] == "install.sh" && c["event"] == "start")
            .collect()
    }
}

type Nodes = Arc<Mutex<Vec<GroupNode>>>;

pub struct Group {
    pub dir: tempfile::TempDir,
    pub moto: Arc<Moto>,
    pub redis: Redis,
    pub emulator: Arc<Emulator>,
    pub options: GroupOptions,
    /// The launch template's id (`lt-…`).
    pub template_id: String,
    /// The operator's agent.toml (version 1's, with `[aws] region`).
    pub operator_config: PathBuf,
    pub nodes: Nodes,
    stop: Arc<AtomicBool>,
    launcher: Option<JoinHandle<()>>,
    /// What the launcher could not do (shown in [`Group::dump`]).
    launcher_errors: Arc<Mutex<Vec<String>>>,
}

/// The user data of a version: `cloud-init/baked-ami.yaml` rendered as Terraform would, with
/// this release.
pub fn user_data(release: u64) -> String {
    let name = "baked-ami.yaml";
    let text = std::fs::read_to_string(repo().join("cloud-init").join(name)).unwrap();
    template::render(name, &text, |v| {
        Some(match v {
            "secret_shared_id" => "tfe/shared".to_string(),
            "secret_license_id" => "tfe/license".to_string(),
            "release_sequence" => release.to_string(),
            "tfe_hostname" => "tfe.example.com".to_string(),
            "pg_netloc" => "db.internal:5432".to_string(),
            "pg_dbname" => "tfe".to_string(),
            "pg_user" => "tfe".to_string(),
            "s3_bucket" => "tfe-data".to_string(),
            "aws_region" => "us-east-1".to_string(),
            "redis_host" => "127.0.0.1".to_string(),
            "launch_hook" => "tfe-launch".to_string(),
            "terminate_hook" => "tfe-terminate".to_string(),
            _ => return None,
        })
    })
}

/// The agent.toml a cloud-config user data document writes (the `content: |` block of the
/// write_files entry for /etc/tfe-node-agent/agent.toml), as cloud-init would write it.
pub fn agent_toml_of(user_data: &str) -> String {
    let lines: Vec<&str> = user_data.lines().collect();
    let entry = lines
        .iter()
        .position(|l| l.trim_start() == "- path: /etc/tfe-node-agent/agent.toml")
        .expect("user data writes /etc/tfe-node-agent/agent.toml");
    let content = (entry..lines.len())
        .find(|&i| lines[i].trim_start() == "content: |")
        .expect("agent.toml's content is a literal block");
    let body = &lines[content + 1..];
    let indent = body
        .iter()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .expect("agent.toml's content is not empty");
    let mut out = String::new();
    for l in body {
        if l.trim().is_empty() {
            out.push('\n');
        } else if l.len() - l.trim_start().len() >= indent {
            out.push_str(&l[indent..]);
            out.push('\n');
        } else {
            break;
        }
    }
    out
}

fn table<'a>(doc: &'a mut toml::Table, name: &str) -> &'a mut toml::Table {
    doc.entry(name)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .unwrap()
}

fn set(doc: &mut toml::Table, section: &str, key: &str, value: impl Into<toml::Value>) {
    table(doc, section).insert(key.to_string(), value.into());
}

/// `agent_toml` (from user data) made runnable on this machine: the node's own paths under
/// `home`, the fake TFE tools, the test's redis-server (plain), short intervals, an HTTP API on a
/// port of its own, no preflight. Nothing else changes: the release stays the user data's.
pub fn localize(agent_toml: &str, home: &Path, redis_port: u16) -> String {
    let mut doc: toml::Table = toml::from_str(agent_toml).expect("agent.toml from user data");
    let tools = repo().join("tests/fake-tfe");
    let p = |s: &str| home.join(s).to_string_lossy().into_owned();
    let t = |s: &str| tools.join(s).to_string_lossy().into_owned();
    set(&mut doc, "settings", "redis_port", redis_port.to_string());
    set(&mut doc, "settings", "redis_use_password_auth", "0");
    set(&mut doc, "settings", "redis_use_tls", "0");
    set(&mut doc, "install", "script", t("install.sh"));
    set(&mut doc, "tools", "replicatedctl", t("replicatedctl"));
    set(&mut doc, "tools", "replicated", t("replicated"));
    set(&mut doc, "readiness", "poll_interval", "200ms");
    set(&mut doc, "termination", "poll_interval", "500ms");
    set(
        &mut doc,
        "paths",
        "replicated_conf",
        p("etc/replicated.conf"),
    );
    set(&mut doc, "paths", "settings", p("etc/ptfe-settings.json"));
    set(&mut doc, "paths", "license", p("etc/ptfe-license.rli"));
    set(&mut doc, "paths", "state_dir", p("state"));
    set(&mut doc, "paths", "file_owner", "nobody");
    set(&mut doc, "paths", "tls_cert", p("etc/cert.pem"));
    set(&mut doc, "paths", "tls_key", p("etc/key.pem"));
    set(&mut doc, "observe", "listen", "127.0.0.1:0");
    set(&mut doc, "cluster", "enabled", true);
    set(&mut doc, "cluster", "heartbeat_interval", "1s");
    set(&mut doc, "cluster", "node_ttl", "3s");
    set(&mut doc, "preflight", "enabled", false);
    toml::to_string(&doc).unwrap()
}

/// The release a config (TOML) installs.
pub fn release_of(agent_toml: &str) -> u64 {
    let doc: toml::Table = toml::from_str(agent_toml).unwrap();
    doc["replicated"]["release_sequence"]
        .as_integer()
        .expect("release_sequence is a number") as u64
}

impl Group {
    /// A group of `options.capacity` version-1 (504) nodes, launched by the emulator and booted
    /// by the launcher (not waited for: see [`Group::wait_in_service`]).
    pub fn start(options: GroupOptions) -> Group {
        let dir = tempfile::tempdir().unwrap();
        let moto = Arc::new(Moto::with_secrets(shared_secret()));
        let redis = Redis::plain();
        let emulator = Arc::new(Emulator::start());
        let template = emulator.post(
            "/_emulator/launch-templates",
            json!({"name": TEMPLATE, "versions": RELEASES.iter()
                .map(|r| json!({"user_data": user_data(*r)})).collect::<Vec<_>>()}),
        );
        let template_id = template["id"].as_str().unwrap().to_string();
        // The operator's config: version 1's, with a region (no IMDS on an operator's machine).
        let operator_config = dir.path().join("operator/agent.toml");
        std::fs::create_dir_all(operator_config.parent().unwrap()).unwrap();
        let mut text = localize(
            &agent_toml_of(&user_data(RELEASES[0])),
            &dir.path().join("operator"),
            redis.port,
        );
        text.push_str("\n[aws]\nregion = \"us-east-1\"\n");
        std::fs::write(&operator_config, text).unwrap();

        let mut group = Group {
            dir,
            moto,
            redis,
            emulator,
            options: options.clone(),
            template_id,
            operator_config,
            nodes: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
            launcher: None,
            launcher_errors: Arc::new(Mutex::new(Vec::new())),
        };
        group.launcher = Some(group.spawn_launcher());
        let mut hooks = vec![];
        if options.launch_hook {
            hooks.push(
                json!({"name": "tfe-launch", "transition": "autoscaling:EC2_INSTANCE_LAUNCHING",
                "heartbeat_timeout": options.launch_timeout, "default_result": "ABANDON"}),
            );
        }
        if options.terminate_hook {
            hooks.push(json!({"name": "tfe-terminate", "transition": "autoscaling:EC2_INSTANCE_TERMINATING",
                "heartbeat_timeout": options.terminate_timeout, "default_result": "CONTINUE"}));
        }
        group.emulator.post(
            "/_emulator/groups",
            json!({"name": GROUP, "hooks": hooks, "min_size": 0, "max_size": 4,
                   "desired_capacity": options.capacity,
                   "launch_template": {"name": TEMPLATE, "version": "1"}}),
        );
        group
    }

    fn spawn_launcher(&self) -> JoinHandle<()> {
        let emulator = self.emulator.clone();
        let nodes = self.nodes.clone();
        let stop = self.stop.clone();
        let errors = self.launcher_errors.clone();
        let moto_url = self.moto.url.clone();
        let redis_port = self.redis.port;
        let options = self.options.clone();
        let base = self.dir.path().to_path_buf();
        std::thread::spawn(move || {
            let http = ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(5))
                .build();
            let mut terminated_at: BTreeMap<String, Instant> = BTreeMap::new();
            // Bounded: the group's life, polled every 200 ms (a test's own timeouts end it).
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
                let Ok(resp) = http
                    .get(&format!("{}/_emulator/instances", emulator.url))
                    .call()
                else {
                    continue;
                };
                let Ok(doc) = resp.into_json::<Value>() else {
                    continue;
                };
                let instances = doc["instances"].as_array().cloned().unwrap_or_default();
                let mut nodes = nodes.lock().unwrap();
                for inst in &instances {
                    let id = inst["id"].as_str().unwrap_or_default().to_string();
                    let known = nodes.iter().any(|n| n.instance_id == id);
                    let Some(version) = inst["template_version"].as_u64() else {
                        continue;
                    };
                    if !known {
                        if inst["lifecycle_state"] == "Terminated" {
                            continue; // gone before it was seen: nothing to boot
                        }
                        if nodes.len() >= MAX_NODES {
                            errors
                                .lock()
                                .unwrap()
                                .push(format!("{id}: not started, {MAX_NODES} agents already"));
                            continue;
                        }
                        match launch(
                            &base,
                            inst,
                            version,
                            &moto_url,
                            &emulator.url,
                            redis_port,
                            &options,
                        ) {
                            Ok(node) => nodes.push(node),
                            Err(e) => errors.lock().unwrap().push(format!("{id}: {e}")),
                        }
                        continue;
                    }
                    // The instance is gone: shut its agent down (as the OS would) once it has
                    // left the cluster, or 5 s after.
                    if inst["lifecycle_state"] == "Terminated" {
                        let since = *terminated_at.entry(id.clone()).or_insert_with(Instant::now);
                        let node = nodes.iter_mut().find(|n| n.instance_id == id).unwrap();
                        let left = node.agent.stderr().contains("left the cluster");
                        if node.stopped.is_none()
                            && (left || since.elapsed() > Duration::from_secs(5))
                        {
                            if node.agent.is_running() {
                                node.agent.signal(nix::sys::signal::Signal::SIGTERM);
                            }
                            node.stopped = Some(Instant::now());
                        }
                    }
                }
            }
        })
    }

    /// Waits (bounded) until `count` instances of template `version` are InService in the
    /// emulator and no other instance is live; returns their ids.
    pub fn wait_in_service(&self, version: u64, count: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let instances = self.instances();
            let live: Vec<&Value> = instances
                .iter()
                .filter(|i| i["lifecycle_state"] != "Terminated")
                .collect();
            let ok: Vec<String> = live
                .iter()
                .filter(|i| {
                    i["lifecycle_state"] == "InService" && i["template_version"] == json!(version)
                })
                .map(|i| i["id"].as_str().unwrap().to_string())
                .collect();
            if ok.len() == count && live.len() == count {
                return ok;
            }
            assert!(
                Instant::now() < deadline,
                "not {count} version-{version} instances InService within {timeout:?}; instances:\n{:#}\n{}",
                json!(instances),
                self.dump()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn instances(&self) -> Vec<Value> {
        self.emulator.get("/_emulator/instances")["instances"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// A command with the operator's environment: the version-1 config, static credentials, and
    /// the Auto Scaling + EC2 (the emulator) and Secrets Manager (moto) endpoints.
    pub fn operator(&self, args: &[&str]) -> Command {
        let key = AwsKey::testing();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tfe-node-agent"));
        cmd.arg("--config")
            .arg(&self.operator_config)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_ACCESS_KEY_ID", &key.id)
            .env("AWS_SECRET_ACCESS_KEY", &key.secret)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", self.dir.path().join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.dir.path().join("no-aws-credentials"),
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", &self.moto.url)
            .env("AWS_ENDPOINT_URL_AUTO_SCALING", &self.emulator.url)
            .env("AWS_ENDPOINT_URL_EC2", &self.emulator.url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs an operator command to completion (bounded); asserts no secret value in its output.
    pub fn run(&self, args: &[&str], timeout: Duration) -> Run {
        let child = self.operator(args).spawn().expect("spawn the agent binary");
        let run = Run::wait(child, timeout);
        run.assert_no_secrets();
        run
    }

    /// `cluster --json`: its exit code and the view.
    pub fn cluster(&self) -> (Option<i32>, Value) {
        let run = self.run(&["cluster", "--json"], Duration::from_secs(30));
        (
            run.code,
            serde_json::from_str(&run.stdout).unwrap_or(Value::Null),
        )
    }

    /// Runs `cluster --json` (bounded) until `ready(code, view)`; returns the view.
    pub fn wait_view(
        &self,
        what: &str,
        timeout: Duration,
        ready: impl Fn(i32, &Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last = (None, Value::Null);
        while Instant::now() < deadline {
            let (code, view) = self.cluster();
            if code.is_some_and(|c| ready(c, &view)) {
                return view;
            }
            last = (code, view);
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!(
            "`cluster --json`: not {what} within {timeout:?}; last exit {:?}, view:\n{:#}\n{}",
            last.0,
            last.1,
            self.dump()
        );
    }

    /// The emulator's events of one kind.
    pub fn events(&self, kind: &str) -> Vec<Value> {
        self.emulator.events(kind)
    }

    /// Runs `f` on the node of `instance_id` (None: the launcher never started one).
    pub fn with_node<T>(&self, instance_id: &str, f: impl FnOnce(&GroupNode) -> T) -> Option<T> {
        let nodes = self.nodes.lock().unwrap();
        nodes.iter().find(|n| n.instance_id == instance_id).map(f)
    }

    /// (instance id, template version) of every node the launcher started, in launch order.
    pub fn node_ids(&self) -> Vec<(String, u64)> {
        self.nodes
            .lock()
            .unwrap()
            .iter()
            .map(|n| (n.instance_id.clone(), n.template_version))
            .collect()
    }

    /// Every node's id, version, whether its agent runs, and its last stderr lines; what the
    /// launcher could not do. For failure messages.
    pub fn dump(&self) -> String {
        let mut out = String::from("--- nodes of the group (launcher) ---\n");
        if let Ok(mut nodes) = self.nodes.try_lock() {
            for n in nodes.iter_mut() {
                let running = n.agent.is_running();
                let text = n.agent.stderr();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(25)..];
                out.push_str(&format!(
                    "{} (version {}, agent {}):\n  {}\n",
                    n.instance_id,
                    n.template_version,
                    if running { "running" } else { "exited" },
                    tail.join("\n  ")
                ));
            }
        }
        out.push_str("--- the emulator's launch, state, capacity and lifecycle events ---\n");
        let events = ureq::get(&format!("{}/_emulator/events", self.emulator.url))
            .call()
            .ok()
            .and_then(|r| r.into_json::<Value>().ok())
            .unwrap_or(Value::Null);
        for e in events["events"].as_array().into_iter().flatten() {
            let line = match e["kind"].as_str().unwrap_or_default() {
                "launch" => format!(
                    "launch {} version {} ({})",
                    e["instance"], e["template_version"], e["cause"]
                ),
                "state" if e.get("hook").is_none() => format!(
                    "state {} v{} {} -> {} ({})",
                    e["instance"],
                    e["template_version"],
                    e["from_state"],
                    e["to_state"],
                    e["cause"]
                ),
                "lifecycle" => format!(
                    "hook {} {} {} by {}",
                    e["instance"], e["hook"], e["result"], e["cause"]
                ),
                "capacity" => format!(
                    "capacity {}: min {} max {} desired {} template {}",
                    e["cause"],
                    e["min_size"],
                    e["max_size"],
                    e["desired_capacity"],
                    e["launch_template"]
                ),
                "processes" => format!("processes {} {}", e["action"], e["suspended"]),
                _ => continue,
            };
            out.push_str(&format!(
                "  t={:.2} {line}\n",
                e["t"].as_f64().unwrap_or_default()
            ));
        }
        for e in self.launcher_errors.lock().unwrap().iter() {
            out.push_str(&format!("launcher: {e}\n"));
        }
        for s in SHARED_SECRET_VALUES {
            out = out.replace(s, "<secret>");
        }
        out
    }
}

/// Starts the agent for a launched instance: its home, fake TFE state, and config from its user
/// data.
fn launch(
    base: &Path,
    inst: &Value,
    version: u64,
    moto_url: &str,
    emulator_url: &str,
    redis_port: u16,
    options: &GroupOptions,
) -> Result<GroupNode, String> {
    let id = inst["id"].as_str().ok_or("no id")?.to_string();
    let user_data = inst["user_data"].as_str().ok_or("no user data")?;
    let imds_port = inst["imds_port"].as_u64().ok_or("no imds port")?;
    let dir = tempfile::Builder::new()
        .prefix(&format!("{id}-"))
        .tempdir_in(base)
        .map_err(|e| e.to_string())?;
    let home = dir.path();
    let fake_state = home.join("fake-tfe");
    std::fs::create_dir_all(&fake_state).map_err(|e| e.to_string())?;
    let mut knobs = json!({
        "replicated_conf": home.join("etc/replicated.conf"),
        "replicated_user": "nobody",
        "install_duration_s": options.install_duration_s,
        "system_ready_after_s": 0.5,
        "app_started_after_s": options.app_started_after_s,
        "drain_duration_s": options.drain_duration_s,
        "app_stop_duration_s": 0.3,
    });
    if options.install_fails_on.contains(&version) {
        knobs["install_exit_code"] = json!(1);
    }
    std::fs::write(fake_state.join("behaviour.json"), knobs.to_string())
        .map_err(|e| e.to_string())?;
    let config = home.join("agent.toml");
    std::fs::write(
        &config,
        localize(&agent_toml_of(user_data), home, redis_port),
    )
    .map_err(|e| e.to_string())?;
    let key = AwsKey::testing();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tfe-node-agent"))
        .arg("run")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TFE_NODE_AGENT_CONFIG", &config)
        .env("AWS_ACCESS_KEY_ID", &key.id)
        .env("AWS_SECRET_ACCESS_KEY", &key.secret)
        .env("AWS_CONFIG_FILE", home.join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            home.join("no-aws-credentials"),
        )
        .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_url)
        .env("AWS_ENDPOINT_URL_AUTO_SCALING", emulator_url)
        .env(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            format!("http://127.0.0.1:{imds_port}"),
        )
        .env("FAKE_TFE_STATE", &fake_state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let err = child.stderr.take().unwrap();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    Ok(GroupNode {
        instance_id: id,
        template_version: version,
        dir,
        agent: Agent::from_parts(child, lines),
        stopped: None,
    })
}

impl Drop for Group {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.launcher.take() {
            let _ = t.join();
        }
        // Agents are killed as their handles drop.
        self.nodes.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}
