//! The agent's HTTP API, end to end: the real `run` against the Auto Scaling + IMDSv2 emulator,
//! moto and the fake TFE tools, asked with a real HTTP client. `/readyz` and `/status` follow the
//! node from boot to drain, `/livez` names a stalled loop, `/metrics` passes the Prometheus
//! project's own Python parser, the unix socket is root's only, bad clients cannot hold up the
//! agent's loops, `tfe-node-agent status` says what runs, and no secret value is ever served.

mod common;

use common::*;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(90);
const DRAIN: Duration = Duration::from_secs(60);
/// One request to the agent; it answers from memory in microseconds, so this only bounds a hang.
const REQUEST: Duration = Duration::from_secs(10);

/// Polls quickly so the tests do not wait on the defaults.
const FAST: &str = r#"poll_interval = "1s" => poll_interval = "200ms"
wait_state_timeout = "5m" => wait_state_timeout = "30s""#;

/// Knobs that hold the boot in the readiness wait (the app "starts" an hour after the daemon),
/// so the launch hook stays held with heartbeats until [`release`] lets the app start.
fn holding(mut knobs: Value) -> Value {
    knobs["app_started_after_s"] = json!(3600);
    knobs
}

/// The app starts now (knobs take effect at the next tool call): the boot goes on to in service.
fn release(node: &Node, mut knobs: Value) {
    knobs["app_started_after_s"] = json!(0.8);
    node.set_behaviour(knobs);
}

/// A launch hook with a 6 s HeartbeatTimeout: the agent beats every ~2 s.
fn beating() -> Hooks {
    Hooks {
        launch_timeout: 6,
        ..Hooks::default()
    }
}

// ----------------------------------------------------------------------------------- HTTP client

fn client() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(REQUEST).build()
}

/// `method url` with an optional Accept header: the status and the body, whatever the status.
fn request(method: &str, url: &str, accept: Option<&str>) -> (u16, String, Option<String>) {
    let mut req = client().request(method, url);
    if let Some(a) = accept {
        req = req.set("Accept", a);
    }
    let response = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let code = response.status();
    let content_type = response.header("content-type").map(str::to_string);
    (code, response.into_string().unwrap(), content_type)
}

fn get(url: &str) -> (u16, String) {
    let (code, body, _) = request("GET", url, None);
    (code, body)
}

fn status_doc(base: &str) -> Value {
    let (code, body) = get(&format!("{base}/status"));
    assert_eq!(code, 200, "/status: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status is not JSON ({e}): {body}"))
}

/// Polls `/status` (bounded) until `ok` holds; returns that document.
fn wait_status(base: &str, what: &str, timeout: Duration, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let doc = status_doc(base);
        if ok(&doc) {
            return doc;
        }
        assert!(
            Instant::now() < deadline,
            "/status: not {what} within {timeout:?}; last:\n{doc:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn phases(doc: &Value) -> Vec<String> {
    doc["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap().to_string())
        .collect()
}

/// Every phase span but the last has ended, no span ends before it began, and each one begins
/// where the one before ended.
fn assert_spans_consistent(doc: &Value) {
    let spans = doc["phases"].as_array().unwrap();
    for (i, s) in spans.iter().enumerate() {
        let began = s["began_at"].as_u64().unwrap();
        if i + 1 == spans.len() {
            assert!(
                s["ended_at"].is_null(),
                "the current phase is open: {doc:#}"
            );
            assert_eq!(s["phase"], doc["phase"], "{doc:#}");
        } else {
            let ended = s["ended_at"].as_u64().expect("an earlier phase has ended");
            assert!(began <= ended, "{doc:#}");
            assert_eq!(spans[i + 1]["began_at"].as_u64(), Some(ended), "{doc:#}");
        }
    }
}

/// What every `/status` holds whatever the phase.
fn assert_status_basics(doc: &Value, node: &Node) {
    assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"), "{doc:#}");
    assert_eq!(doc["instance_id"], node.instance_id.as_str(), "{doc:#}");
    assert_eq!(doc["release_sequence"], 504, "{doc:#}");
    assert!(doc["cluster"].is_null(), "{doc:#}");
    // Not compared yet, or compared once the node was ready: the fake runs the rendered settings.
    assert!(
        doc["drift"].is_null()
            || (doc["drift"]["drifted"] == false && doc["drift"]["error"].is_null()),
        "{doc:#}"
    );
    assert_eq!(doc["launch_hook"]["name"], "tfe-launch", "{doc:#}");
    assert_eq!(doc["terminate_hook"]["name"], "tfe-terminate", "{doc:#}");
    assert_spans_consistent(doc);
}

fn assert_fingerprint(doc: &Value) {
    let fp = doc["settings_fingerprint"]
        .as_str()
        .unwrap_or_else(|| panic!("{doc:#}"));
    assert!(
        fp.len() == 16 && fp.chars().all(|c| c.is_ascii_hexdigit()),
        "settings_fingerprint is 16 hex digits: {fp:?}"
    );
}

fn assert_no_secret(what: &str, text: &str) {
    for s in SHARED_SECRET_VALUES {
        assert!(!text.contains(s), "a secret value appeared in {what}");
    }
}

/// `listen` with a TCP port of the agent's choosing and a unix socket at `socket`.
fn listen_tcp_and_unix(socket: &Path) -> String {
    format!(
        "{TEST_LISTEN} => listen = [\"127.0.0.1:0\", \"unix:{}\"]",
        socket.display()
    )
}

/// A `replicated` that, when asked for node-drain, first records what the agent's `/readyz`
/// answers at that moment (into `readyz-at-drain`), then runs the fake tool as it was asked.
fn replicated_asking_readyz(node: &Node) -> PathBuf {
    let fake = repo().join("tests/fake-tfe/replicated");
    let wrapper = node.path("replicated");
    let script = format!(
        r#"#!/bin/sh
case " $* " in *" node-drain "*)
  curl -s -o /dev/null -m 5 -w '%{{http_code}}' "$(cat {dir}/api-url)/readyz" > {dir}/at-drain.tmp
  mv {dir}/at-drain.tmp {dir}/readyz-at-drain ;;
esac
exec {fake} "$@"
"#,
        dir = node.dir.path().display(),
        fake = fake.display()
    );
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

// ------------------------------------------------------------------ readyz and status, boot to end

#[test]
fn readyz_and_status_follow_the_node_from_boot_through_service_to_drain() {
    let node = Node::with(beating(), shared_secret());
    let knobs = json!({"install_duration_s": 3.0, "drain_duration_s": 3.0});
    node.set_behaviour(holding(knobs.clone()));
    let socket = node.path("run/agent.sock");
    let wrapper = replicated_asking_readyz(&node);
    let fake = repo().join("tests/fake-tfe/replicated");
    node.write_config(&format!(
        "{FAST}\n{}\n{}\" => {}\"",
        listen_tcp_and_unix(&socket),
        fake.display(),
        wrapper.display()
    ));
    let mut agent = node.start(&["run"]);
    let base = agent.api_url(BOOT);
    std::fs::write(node.path("api-url"), &base).unwrap();
    let mut served = String::new();

    // Boot: never ready. Seen at least booting, then installed with the launch hook held.
    let deadline = Instant::now() + BOOT;
    let mut seen = Vec::new();
    let doc = loop {
        let (code, body) = get(&format!("{base}/readyz"));
        let doc = status_doc(&base);
        assert_eq!(code, 503, "/readyz during boot: {body}\n{doc:#}");
        assert!(body.starts_with("not ready: "), "{body}");
        assert_eq!(doc["ready"], false, "{doc:#}");
        let phase = doc["phase"].as_str().unwrap().to_string();
        if seen.last() != Some(&phase) {
            seen.push(phase.clone());
        }
        if phase == "installed"
            && doc["launch_hook"]["state"] == "held"
            && doc["launch_hook"]["heartbeats_sent"].as_u64().unwrap() >= 1
        {
            break doc;
        }
        assert!(
            Instant::now() < deadline,
            "no held launch hook in phase installed; last:\n{doc:#}\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        seen.first().map(String::as_str),
        Some("booting"),
        "{seen:?}"
    );
    assert_status_basics(&doc, &node);
    assert_fingerprint(&doc);
    assert_eq!(phases(&doc), ["booting", "installed"], "{doc:#}");
    assert_eq!(doc["group"], "tfe-asg", "{doc:#}");
    assert_eq!(doc["installed_release"], 504, "{doc:#}");
    assert!(doc["launch_hook"]["result"].is_null(), "{doc:#}");
    assert_eq!(doc["launch_hook"]["heartbeats_failed"], 0, "{doc:#}");
    assert!(doc["termination"].is_null(), "{doc:#}");
    assert_eq!(doc["live"], true, "{doc:#}");
    served.push_str(&doc.to_string());
    let (code, verbose) = get(&format!("{base}/readyz?verbose"));
    assert_eq!(code, 503);
    for line in [
        "[-] in-service: phase installed",
        "[-] launch-hook-released: not answered yet",
        "[+] no-termination: none noticed",
    ] {
        assert!(verbose.contains(line), "{line:?} in:\n{verbose}");
    }
    // The status command: the agent runs, the node is not ready (8).
    let run = node.run(&["status"], REQUEST * 2);
    run.assert_code(8);
    assert!(
        run.stdout.contains("phase      installed"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("ready      no"), "{}", run.stdout);
    assert!(run.stdout.contains(&node.instance_id), "{}", run.stdout);
    let run = node.run(&["status", "--json"], REQUEST * 2);
    run.assert_code(8);
    let json: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["phase"], "installed", "{json:#}");

    // The launch hook released: ready.
    release(&node, knobs.clone());
    agent.wait_line("is in service", BOOT);
    let (code, body) = get(&format!("{base}/readyz"));
    assert_eq!((code, body.as_str()), (200, "ready\n"));
    let doc = status_doc(&base);
    assert_status_basics(&doc, &node);
    assert_fingerprint(&doc);
    assert_eq!(
        phases(&doc),
        ["booting", "installed", "ready", "in-service"],
        "{doc:#}"
    );
    assert_eq!(doc["ready"], true, "{doc:#}");
    assert_eq!(doc["launch_hook"]["state"], "released", "{doc:#}");
    assert_eq!(doc["launch_hook"]["result"], "CONTINUE", "{doc:#}");
    assert!(doc["termination"].is_null(), "{doc:#}");
    served.push_str(&doc.to_string());
    let run = node.run(&["status"], REQUEST * 2);
    run.assert_code(0);
    for line in [
        "phase      in-service",
        "ready      yes   live yes",
        "tfe-launch",
    ] {
        assert!(run.stdout.contains(line), "{line:?} in:\n{}", run.stdout);
    }
    served.push_str(&run.stdout);

    // Scale-in: not ready from the notice on, already when node-drain starts.
    node.scale_in(0.0);
    let deadline = Instant::now() + DRAIN;
    loop {
        let (code, body) = get(&format!("{base}/readyz"));
        if code == 503 {
            assert!(body.contains("no-termination: asg"), "{body}");
            break;
        }
        assert_eq!(code, 200, "{body}");
        assert!(
            Instant::now() < deadline,
            "/readyz stayed 200 after the scale-in"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let at_drain = node.path("readyz-at-drain");
    wait_for("node-drain's look at /readyz", DRAIN, || at_drain.exists());
    assert_eq!(
        std::fs::read_to_string(&at_drain).unwrap(),
        "503",
        "/readyz as node-drain started"
    );
    let doc = wait_status(&base, "draining with node-drain running", DRAIN, |d| {
        d["phase"] == "draining" && d["termination"]["drain"]["state"] == "running"
    });
    assert_status_basics(&doc, &node);
    assert_eq!(doc["ready"], false, "{doc:#}");
    assert_eq!(doc["termination"]["source"], "asg", "{doc:#}");
    assert!(doc["termination"]["noticed_at"].as_u64().unwrap() > 0);
    assert_eq!(phases(&doc).last().unwrap(), "draining", "{doc:#}");
    let notices = doc["notices"].as_array().unwrap();
    assert!(
        notices
            .iter()
            .any(|n| n["source"] == "asg" && n["drains"] == true),
        "{doc:#}"
    );
    served.push_str(&doc.to_string());

    // Drained and released: still not ready; the terminate hook's result is shown.
    agent.wait_line("terminate hook tfe-terminate released with CONTINUE", DRAIN);
    let doc = wait_status(&base, "drained", DRAIN, |d| d["phase"] == "drained");
    assert_status_basics(&doc, &node);
    assert_eq!(
        phases(&doc),
        [
            "booting",
            "installed",
            "ready",
            "in-service",
            "draining",
            "drained"
        ],
        "{doc:#}"
    );
    assert_eq!(doc["terminate_hook"]["state"], "released", "{doc:#}");
    assert_eq!(doc["terminate_hook"]["result"], "CONTINUE", "{doc:#}");
    assert!(
        doc["terminate_hook"]["heartbeats_sent"].as_u64().unwrap() >= 1,
        "{doc:#}"
    );
    assert_eq!(doc["termination"]["drain"]["state"], "finished", "{doc:#}");
    assert_eq!(get(&format!("{base}/readyz")).0, 503);
    served.push_str(&doc.to_string());
    let run = node.run(&["status"], REQUEST * 2);
    run.assert_code(8);
    assert!(run.stdout.contains("phase      drained"), "{}", run.stdout);
    assert!(run.stdout.contains("going      asg"), "{}", run.stdout);
    served.push_str(&run.stdout);
    let metrics = get(&format!("{base}/metrics")).1;
    let samples = check_exposition(&metrics, false);
    assert_eq!(
        value(
            &samples,
            "tfe_node_agent_termination_notices_total",
            &[("source", "asg")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "tfe_node_agent_hook_completions_total",
            &[("hook", "terminate"), ("result", "continue")]
        ),
        1.0
    );
    assert_eq!(
        value(&samples, "tfe_node_agent_phase", &[("phase", "drained")]),
        1.0
    );
    assert!(value(&samples, "tfe_node_agent_drain_duration_seconds", &[]) > 0.0);
    assert!(value(&samples, "tfe_node_agent_boot_duration_seconds", &[]) > 0.0);
    served.push_str(&metrics);
    assert_no_secret("/status, /metrics or the status command", &served);

    // No agent: status says so (9) and prints what state.json records.
    agent.signal(Signal::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(20)), Some(0));
    let run = node.run(&["status"], REQUEST * 2);
    run.assert_code(9);
    assert!(
        run.stderr.contains("no running agent answered"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("recorded in "), "{}", run.stdout);
    assert!(run.stdout.contains("phase      drained"), "{}", run.stdout);
    let run = node.run(&["status", "--json"], REQUEST * 2);
    run.assert_code(9);
    let recorded: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(recorded["phase"], "drained", "{recorded:#}");
    assert_eq!(recorded["instance_id"], node.instance_id.as_str());
}

// --------------------------------------------------------------------------------- livez, stalled

/// Kills the process group of every call the fake tools hung (the `hang` knob): the hung tool
/// fails, as one killed from outside would.
fn end_hung_calls(node: &Node) {
    let pids = std::fs::read_to_string(node.fake_state().join("hang-children.pids")).unwrap();
    for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let pid = nix::unistd::Pid::from_raw(pid);
        if let Ok(group) = nix::unistd::getpgid(Some(pid)) {
            let _ = nix::sys::signal::killpg(group, Signal::SIGKILL);
        }
    }
}

#[test]
fn livez_names_a_stalled_loop_and_recovers_when_it_ticks_again() {
    let node = Node::new();
    // The readiness poll (every 200 ms: stuck after the 10 s floor) hangs in its first probe.
    node.set_behaviour(json!({"hang": ["replicatedctl system status"]}));
    node.write_config(&format!(
        "{FAST}\n{}",
        listen_tcp_and_unix(&node.path("run/agent.sock"))
    ));
    let agent = node.start(&["run"]);
    let base = agent.api_url(BOOT);
    let pids = node.fake_state().join("hang-children.pids");
    wait_for("a hung replicatedctl", BOOT, || pids.exists());
    let hung_at = Instant::now();

    // Just hung: still alive (the stall is younger than the threshold).
    let (code, body) = get(&format!("{base}/livez"));
    assert_eq!(
        (code, body.as_str()),
        (200, "ok\n"),
        "right after the hang began"
    );
    let (code, verbose) = get(&format!("{base}/livez?verbose"));
    assert_eq!(code, 200);
    assert!(verbose.contains("[+] readiness: last tick"), "{verbose}");
    assert!(
        verbose.contains("[+] launch-heartbeat: last tick"),
        "{verbose}"
    );

    // Past max(3 × 200 ms, 10 s) without a tick: 503 naming the readiness loop, and only it.
    let deadline = hung_at + Duration::from_secs(40);
    let body = loop {
        let (code, body) = get(&format!("{base}/livez"));
        if code == 503 {
            break body;
        }
        assert_eq!(code, 200, "{body}");
        assert!(
            Instant::now() < deadline,
            "/livez stayed 200 with a hung readiness probe"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let stuck_after = hung_at.elapsed();
    assert!(
        stuck_after >= Duration::from_secs(9),
        "stuck only past the 10 s floor (saw 503 after {stuck_after:?})"
    );
    assert!(body.starts_with("stuck: readiness (no tick for "), "{body}");
    assert!(body.contains("stuck after 10s"), "{body}");
    assert!(!body.contains("heartbeat"), "the heartbeats go on: {body}");
    let (code, verbose) = get(&format!("{base}/livez?verbose"));
    assert_eq!(code, 503);
    assert!(verbose.contains("[-] readiness: last tick"), "{verbose}");
    assert!(verbose.contains("[+] launch-heartbeat"), "{verbose}");
    let doc = status_doc(&base);
    assert_eq!(doc["live"], false, "{doc:#}");
    let loops = doc["loops"].as_array().unwrap();
    assert!(
        loops
            .iter()
            .any(|l| l["name"] == "readiness" && l["stuck"] == true),
        "{doc:#}"
    );
    let run = node.run(&["status"], REQUEST * 2);
    run.assert_code(8);
    assert!(
        run.stdout.contains("live no") && run.stdout.contains("stuck      readiness"),
        "{}",
        run.stdout
    );

    // The hung call ends (killed from outside, about 15 s in): the loop ticks again, 200.
    node.set_behaviour(json!({}));
    let wait = Duration::from_secs(15).saturating_sub(hung_at.elapsed());
    std::thread::sleep(wait);
    end_hung_calls(&node);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = get(&format!("{base}/livez"));
        if code == 200 {
            assert_eq!(body, "ok\n");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/livez stayed 503 after the stall ended: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    agent.wait_line("is in service", BOOT);
    let (code, verbose) = get(&format!("{base}/livez?verbose"));
    assert_eq!(code, 200, "{verbose}");
    assert!(verbose.contains("[+] watcher: last tick"), "{verbose}");
    assert!(
        !verbose.contains("readiness"),
        "the readiness loop ended: {verbose}"
    );
}

// -------------------------------------------------------------------------------------- metrics

fn venv_python() -> PathBuf {
    std::env::var_os("TFE_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv"))
        .join("bin/python3")
}

/// The Prometheus project's Python parser over `text`: 0.0.4 text (`openmetrics` false) or
/// OpenMetrics. Each family as (name, type, samples as (name, labels, value)).
const PARSE: &str = r#"
import json, math, sys
text = sys.stdin.read()
if sys.argv[1] == "openmetrics":
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
else:
    from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(text):
    samples = [[s.name, s.labels, s.value if math.isfinite(s.value) else str(s.value)]
               for s in f.samples]
    out.append({"name": f.name, "type": f.type, "samples": samples})
print(json.dumps(out))
"#;

type Labels = BTreeMap<String, String>;
/// (sample name, labels) → (the family's type, value).
type Samples = BTreeMap<(String, Labels), (String, f64)>;

#[derive(Debug)]
struct Family {
    name: String,
    kind: String,
    /// (sample name, labels) → value.
    samples: BTreeMap<(String, Labels), f64>,
}

fn parse_exposition(text: &str, openmetrics: bool) -> Vec<Family> {
    let mut child = Command::new(venv_python())
        .args([
            "-c",
            PARSE,
            if openmetrics { "openmetrics" } else { "text" },
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the venv's python3 (tests/setup.sh installs prometheus-client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let run = Run::wait(child, Duration::from_secs(60));
    assert_eq!(
        run.code,
        Some(0),
        "prometheus_client refused the exposition:\n{}\n{text}",
        run.stderr
    );
    let parsed: Value = serde_json::from_str(&run.stdout).unwrap();
    parsed
        .as_array()
        .unwrap()
        .iter()
        .map(|f| Family {
            name: f["name"].as_str().unwrap().to_string(),
            kind: f["type"].as_str().unwrap().to_string(),
            samples: f["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let labels = serde_json::from_value(s[1].clone()).unwrap();
                    let value = s[2].as_f64().unwrap_or(f64::NAN);
                    ((s[0].as_str().unwrap().to_string(), labels), value)
                })
                .collect(),
        })
        .collect()
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label(name: &str) -> bool {
    valid_name(name) && !name.contains(':') && !name.starts_with("__")
}

/// What every exposition must be: parsed, every name valid, every family typed, under 150
/// series. Returns the samples by (name, labels).
fn check_exposition(text: &str, openmetrics: bool) -> Samples {
    let families = parse_exposition(text, openmetrics);
    let mut all = BTreeMap::new();
    for f in &families {
        assert!(valid_name(&f.name), "family name {:?}", f.name);
        assert!(
            f.kind != "unknown",
            "family {} has no TYPE:\n{text}",
            f.name
        );
        // The raw text declares it too (the parser would make up "unknown" otherwise).
        // (The parser names a counter's family without `_total`; the text may say either.)
        assert!(
            text.lines().any(|l| {
                l.starts_with(&format!("# TYPE {} ", f.name))
                    || l.starts_with(&format!("# TYPE {}_total counter", f.name))
            }),
            "no `# TYPE {}` line:\n{text}",
            f.name
        );
        for ((name, labels), value) in &f.samples {
            assert!(valid_name(name), "sample name {name:?}");
            for l in labels.keys() {
                assert!(valid_label(l), "label name {l:?} of {name}");
            }
            let fresh = all.insert((name.clone(), labels.clone()), (f.kind.clone(), *value));
            assert!(fresh.is_none(), "{name}{labels:?} twice");
        }
    }
    let series = all.len();
    assert!(series > 0 && series < 150, "{series} series:\n{text}");
    all
}

fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let labels: Labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .get(&(name.to_string(), labels.clone()))
        .unwrap_or_else(|| panic!("no series {name}{labels:?}"))
        .1
}

#[test]
fn metrics_parse_with_the_prometheus_parser_and_counters_only_grow() {
    let node = Node::with(beating(), shared_secret());
    node.set_behaviour(holding(json!({})));
    node.write_config(FAST);
    let agent = node.start(&["run"]);
    let base = agent.api_url(BOOT);
    wait_status(
        &base,
        "holding the launch hook with heartbeats",
        BOOT,
        |d| {
            d["launch_hook"]["state"] == "held"
                && d["launch_hook"]["heartbeats_sent"].as_u64().unwrap() >= 2
        },
    );

    let (code, first_text, content_type) = request("GET", &format!("{base}/metrics"), None);
    assert_eq!(code, 200);
    let content_type = content_type.unwrap();
    assert!(
        content_type.starts_with("text/plain") && content_type.contains("version=0.0.4"),
        "{content_type}"
    );
    let first = check_exposition(&first_text, false);
    for family in [
        "tfe_node_agent_info",
        "tfe_node_agent_phase",
        "tfe_node_agent_boot_duration_seconds",
        "tfe_node_agent_install_duration_seconds",
        "tfe_node_agent_drain_duration_seconds",
        "tfe_node_agent_live",
        "tfe_node_agent_ready",
        "tfe_node_agent_heartbeats_total",
        "tfe_node_agent_aws_requests_total",
        "tfe_node_agent_imds_requests_total",
        "tfe_node_agent_tfe_health_check_passing",
        "tfe_node_agent_tfe_health_checks_failing",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            first_text.contains(&format!("\n{family}")),
            "no {family} in:\n{first_text}"
        );
    }
    // (hook_completions_total, termination_notices_total and aws_errors_total have no series
    // before their first event: they are checked where one happened.)
    assert!(
        value(
            &first,
            "tfe_node_agent_heartbeats_total",
            &[("hook", "launch"), ("outcome", "ok")]
        ) > 0.0
    );
    assert_eq!(
        value(&first, "tfe_node_agent_phase", &[("phase", "installed")]),
        1.0
    );
    assert_eq!(
        value(&first, "tfe_node_agent_phase", &[("phase", "in-service")]),
        0.0
    );
    assert!(value(&first, "process_resident_memory_bytes", &[]) > 0.0);
    assert!(first_text.contains("tfe_node_agent_info{"), "{first_text}");
    assert_no_secret("/metrics", &first_text);
    // Every label value comes from a closed set: not this instance's id.
    assert!(!first_text.contains(&node.instance_id), "{first_text}");

    // In service: the phase moved, and no counter went down.
    release(&node, json!({}));
    agent.wait_line("is in service", BOOT);
    let second_text = get(&format!("{base}/metrics")).1;
    let second = check_exposition(&second_text, false);
    assert_eq!(
        value(&second, "tfe_node_agent_phase", &[("phase", "in-service")]),
        1.0
    );
    assert_eq!(
        value(&second, "tfe_node_agent_phase", &[("phase", "installed")]),
        0.0
    );
    assert_eq!(
        value(
            &second,
            "tfe_node_agent_hook_completions_total",
            &[("hook", "launch"), ("result", "continue")]
        ),
        1.0
    );
    let mut counters = 0;
    for (key, (kind, before)) in &first {
        if kind != "counter" {
            continue;
        }
        counters += 1;
        let after = second
            .get(key)
            .unwrap_or_else(|| panic!("counter {key:?} vanished"))
            .1;
        assert!(
            after >= *before,
            "counter {key:?} went from {before} to {after}"
        );
    }
    assert!(counters >= 5, "{counters} counter series");

    // OpenMetrics when the scraper asks for it.
    let (code, om_text, content_type) = request(
        "GET",
        &format!("{base}/metrics"),
        Some("application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert_eq!(code, 200);
    let content_type = content_type.unwrap();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(om_text.ends_with("# EOF\n"), "{om_text}");
    let om = check_exposition(&om_text, true);
    assert_eq!(
        value(&om, "tfe_node_agent_phase", &[("phase", "in-service")]),
        1.0
    );
    assert!(
        value(
            &om,
            "tfe_node_agent_heartbeats_total",
            &[("hook", "launch"), ("outcome", "ok")]
        ) > 0.0
    );
    assert_no_secret("/metrics", &(second_text + &om_text));
}

// ------------------------------------------------------------------- unix socket and bad clients

/// One raw HTTP/1.1 GET over the unix socket: the status line.
fn unix_get(socket: &Path, path: &str) -> String {
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(REQUEST)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.lines().next().unwrap_or_default().to_string()
}

/// Connecting to the unix socket as uid/gid `id` (python3 started with that uid): the error, or
/// None when it connected.
fn connect_as(id: u32, socket: &Path) -> Option<String> {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-c",
        "import socket, sys\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect(sys.argv[1])\nexcept OSError as e:\n    print(type(e).__name__, e.errno)\n    sys.exit(3)\nprint('connected')",
    ])
    .arg(socket)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if id != 0 {
        cmd.uid(id).gid(id);
    }
    let run = Run::wait(cmd.spawn().unwrap(), REQUEST);
    match run.code {
        Some(0) => None,
        Some(3) => Some(run.stdout.trim().to_string()),
        other => panic!(
            "python3 as uid {id}: {other:?}\n{}{}",
            run.stdout, run.stderr
        ),
    }
}

/// The agent's resident memory (VmRSS), in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Samples the agent's RSS every 100 ms until dropped; `max()` is the highest seen.
struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut max = 0;
            // Bounded: at most 10 minutes of samples.
            for _ in 0..6000 {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                max = max.max(rss(pid));
                std::thread::sleep(Duration::from_millis(100));
            }
            max
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn max(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// Whether the server has closed `s` (EOF or reset) within `timeout`, reading and discarding
/// whatever it sends first (a 4xx answer).
fn closed_within(s: &mut TcpStream, timeout: Duration) -> (bool, String) {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (true, String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return (true, String::from_utf8_lossy(&got).into_owned()),
        }
    }
    (false, String::from_utf8_lossy(&got).into_owned())
}

/// Opens `n` TCP connections to `addr` from a python3 child (its own fd limit raised to fit),
/// holds them `hold`, then closes them all. Returns the child; it prints `opened N failed M`
/// once all are open and `closed` at the end.
fn flood(addr: &str, n: u32, hold: Duration) -> std::process::Child {
    let (host, port) = addr.rsplit_once(':').unwrap();
    Command::new("python3")
        .args([
            "-c",
            r#"
import resource, socket, sys, time
host, port, n, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft != resource.RLIM_INFINITY and soft < n + 64:
    want = n + 64 if hard == resource.RLIM_INFINITY else min(hard, n + 64)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
socks, failed = [], 0
give_up = time.monotonic() + 60
for _ in range(n):
    if time.monotonic() > give_up:
        break
    try:
        socks.append(socket.create_connection((host, port), timeout=10))
    except OSError:
        failed += 1
print("opened %d failed %d" % (len(socks), failed), flush=True)
time.sleep(hold)
for s in socks:
    s.close()
print("closed", flush=True)
"#,
            host,
            port,
            &n.to_string(),
            &hold.as_secs_f64().to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

#[test]
fn the_unix_socket_is_root_only_and_bad_clients_do_not_hold_up_the_heartbeats() {
    let node = Node::with(beating(), shared_secret());
    node.set_behaviour(holding(json!({})));
    // A directory anyone may enter: only the socket's own mode keeps others out.
    let run_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(run_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = run_dir.path().join("agent.sock");
    node.write_config(&format!(
        "{FAST}\n{}\npoll_interval = \"200ms\" => poll_interval = \"1s\"",
        listen_tcp_and_unix(&socket)
    ));
    let agent = node.start(&["run"]);
    let base = agent.api_url(BOOT);
    wait_status(&base, "holding the launch hook", BOOT, |d| {
        d["launch_hook"]["state"] == "held"
    });

    // The socket: 0660, root's, and only root gets in.
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o7777, 0o660, "mode {:o}", meta.mode());
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    assert_eq!(connect_as(0, &socket), None, "root connects");
    let refused = connect_as(65534, &socket).expect("uid 65534 must not connect");
    assert!(refused.starts_with("PermissionError 13"), "{refused}");
    assert_eq!(
        unix_get(&socket, "/readyz"),
        "HTTP/1.1 503 Service Unavailable"
    );
    assert_eq!(unix_get(&socket, "/livez"), "HTTP/1.1 200 OK");

    // Unknown paths and other methods.
    let (code, body, _) = request("GET", &format!("{base}/nope"), None);
    assert_eq!(code, 404, "{body}");
    for path in ["/status", "/readyz", "/metrics", "/livez"] {
        let response = client().post(&format!("{base}{path}")).send_string("x");
        let Err(ureq::Error::Status(code, r)) = response else {
            panic!("POST {path}: {response:?}");
        };
        assert_eq!(code, 405, "POST {path}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"), "POST {path}");
    }
    let (code, _, _) = request("DELETE", &format!("{base}/status"), None);
    assert_eq!(code, 405);

    let addr = base.trim_start_matches("http://").to_string();
    let pid = agent.child.id();
    let rss_before = rss(pid);
    let sampler = RssSampler::start(pid);
    let since = node.emulator.events("api").len();
    let bad_start = Instant::now();

    // A request head over 8 KiB: 431 or a closed connection, never a hang.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_write_timeout(Some(REQUEST)).unwrap();
    let head = format!(
        "GET /status HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(16 * 1024)
    );
    let _ = s.write_all(head.as_bytes()); // the agent may close before all of it is sent
    let (closed, answer) = closed_within(&mut s, Duration::from_secs(15));
    assert!(
        closed,
        "a huge head left the connection open; got {answer:?}"
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    let huge_head = answer
        .lines()
        .next()
        .unwrap_or("closed, no answer")
        .to_string();
    drop(s);

    // A slowloris: one byte of the head a second. Closed at the 5 s header timeout (+ slack).
    let mut s = TcpStream::connect(&addr).unwrap();
    let trickle =
        b"GET /status HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let opened = Instant::now();
    let mut closed_after = None;
    for byte in trickle.iter().take(20) {
        if s.write_all(&[*byte]).is_err() {
            closed_after = Some(opened.elapsed());
            break;
        }
        if closed_within(&mut s, Duration::from_secs(1)).0 {
            closed_after = Some(opened.elapsed());
            break;
        }
    }
    let closed_after = closed_after.expect("a slowloris was served for 20 s");
    assert!(
        closed_after < Duration::from_secs(15),
        "slowloris closed after {closed_after:?}"
    );
    drop(s);

    // 1000 connections at once, held 10 s.
    let mut flooder = flood(&addr, 1000, Duration::from_secs(10));
    let mut out = BufReader::new(flooder.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("opened "), "{line}");
    let (opened, failed) = {
        let w: Vec<&str> = line.split_whitespace().collect();
        (w[1].parse::<u32>().unwrap(), w[3].parse::<u32>().unwrap())
    };
    assert_eq!(opened + failed, 1000, "{line}");
    assert!(
        opened >= 900,
        "the kernel refused most of the flood: {line}"
    );
    let mut closed = String::new();
    out.read_line(&mut closed).unwrap();
    assert_eq!(closed.trim(), "closed");
    wait_for("the flooder's exit", REQUEST, || {
        flooder.try_wait().unwrap().is_some()
    });

    // Answers again once they are gone (the held connections end at the header timeout).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client().get(&format!("{base}/readyz")).call() {
            Err(ureq::Error::Status(503, _)) => break,
            other => assert!(
                Instant::now() < deadline,
                "/readyz does not answer after the flood: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let bad_took = bad_start.elapsed();
    let max_rss = sampler.max();

    // The boot goes on, and the heartbeats kept their schedule throughout.
    release(&node, json!({}));
    agent.wait_line("is in service", BOOT);
    assert_eq!(get(&format!("{base}/readyz")).0, 200);
    assert_eq!(
        node.emulator.resolutions(),
        launch_resolved("CONTINUE", "complete")
    );
    let beats: Vec<f64> = node.emulator.events("api")[since..]
        .iter()
        .filter(|e| e["action"] == "RecordLifecycleActionHeartbeat")
        .map(|e| e["t"].as_f64().unwrap())
        .collect();
    // Every ~2 s (a third of the 6 s HeartbeatTimeout, ±10 %): never a gap of 2.5 intervals.
    let gaps: Vec<f64> = beats.windows(2).map(|w| w[1] - w[0]).collect();
    let longest = gaps.iter().cloned().fold(0.0, f64::max);
    eprintln!(
        "bad clients: {bad_took:?}; huge head: {huge_head}; slowloris closed after {closed_after:?}; {opened} of 1000 connections opened ({failed} failed); {} heartbeats, longest gap {longest:.2}s; RSS {} KiB before, {} KiB at most",
        beats.len(),
        rss_before / 1024,
        max_rss / 1024
    );
    assert!(
        beats.len() as f64 >= bad_took.as_secs_f64() / 2.2 - 1.0,
        "{} heartbeats in {bad_took:?}",
        beats.len()
    );
    assert!(longest < 5.0, "heartbeat gaps {gaps:?}");
    assert!(max_rss < 64 * 1024 * 1024, "RSS reached {max_rss} bytes");
}
