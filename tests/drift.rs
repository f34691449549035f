//! Config drift, end to end: the real `run` against the Auto Scaling + IMDSv2 emulator, moto and
//! the fake TFE tools. An operator changes a setting live with `replicated admin app-config` (the
//! fake tool, run as the operator would); the agent sees it at its next comparison, says so in the
//! log once, shows it in `/status` and `/metrics`, and `tfe-node-agent drift` exits 13; set back,
//! all of that clears. A secret's change is found by digest and its values appear nowhere.

mod common;

use common::hygiene::{files_under, Scanner};
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(90);
/// One request to the agent or one run of the fake tool; only bounds a hang.
const REQUEST: Duration = Duration::from_secs(10);
/// Several comparisons at the test's `[drift].interval`.
const NOTICE: Duration = Duration::from_secs(30);

/// Fast polls, `capacity_concurrency` rendered as "10", and a comparison every second.
const CONFIG: &str = r#"poll_interval = "1s" => poll_interval = "200ms"
wait_state_timeout = "5m" => wait_state_timeout = "30s"
redis_use_tls = "1" => redis_use_tls = "1"\ncapacity_concurrency = "10"
[preflight] => [drift]\ninterval = "1s"\n\n[preflight]"#;

/// The rendered `enc_password` (from `tfe/shared` in Secrets Manager).
const ENC_RENDERED: &str = SHARED_SECRET_VALUES[0];
/// Two values an operator sets live in its place.
const ENC_LIVE: [&str; 2] = [
    "enc-LIVE-changed-0d6b2f9a41c87e35",
    "enc-LIVE-changed-again-7a13c05e9b2d",
];

fn client() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(REQUEST).build()
}

fn get(url: &str) -> String {
    let response = client()
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(response.status(), 200, "GET {url}");
    response.into_string().unwrap()
}

fn drift_of(base: &str) -> (Value, String) {
    let body = get(&format!("{base}/status"));
    let doc: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (doc["drift"].clone(), body)
}

/// Polls `/status` (bounded) until its `drift` satisfies `ok`; returns that `drift`.
fn wait_drift(base: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + NOTICE;
    loop {
        let (drift, _) = drift_of(base);
        if ok(&drift) {
            return drift;
        }
        assert!(
            Instant::now() < deadline,
            "/status drift: not {what} within {NOTICE:?}; last: {drift:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of one `tfe_node_agent_config_drift_keys` series.
fn drift_metric(metrics: &str, kind: &str) -> f64 {
    let series = format!("tfe_node_agent_config_drift_keys{{kind=\"{kind}\"}} ");
    let line = metrics
        .lines()
        .find(|l| l.starts_with(&series))
        .unwrap_or_else(|| panic!("no {series}in:\n{metrics}"));
    line[series.len()..].trim().parse().unwrap()
}

/// How many app-config exports the agent has run.
fn exports(node: &Node) -> usize {
    node.tool_calls("export").len()
}

/// Waits (bounded) until the agent has run `more` further comparisons.
fn wait_comparisons(node: &Node, more: usize) {
    let target = exports(node) + more;
    wait_for(&format!("{more} more comparisons"), NOTICE, || {
        exports(node) >= target
    });
}

/// The agent's log lines about drift.
fn drift_lines(agent: &Agent) -> Vec<String> {
    agent
        .stderr()
        .lines()
        .filter(|l| l.contains("config drift:"))
        .map(str::to_string)
        .collect()
}

/// A node in service with the agent running, its first comparison done (no drift).
fn in_service(node: &Node) -> (Agent, String) {
    node.write_config(CONFIG);
    let agent = node.start(&["run"]);
    let base = agent.api_url(BOOT);
    agent.wait_line("is in service", BOOT);
    let drift = wait_drift(&base, "compared", |d| !d.is_null());
    assert_eq!(drift["drifted"], false, "{drift:#}\n{}", agent.stderr());
    assert!(drift["error"].is_null(), "{drift:#}");
    (agent, base)
}

#[test]
fn a_live_change_is_seen_logged_once_shown_and_cleared_when_set_back() {
    let node = Node::new();
    let (mut agent, base) = in_service(&node);
    let metrics = get(&format!("{base}/metrics"));
    assert_eq!(drift_metric(&metrics, "changed"), 0.0);

    node.set_live("capacity_concurrency", "20");
    let drift = wait_drift(&base, "drifted", |d| d["drifted"] == true);
    assert_eq!(
        drift["counts"],
        serde_json::json!({"added": 0, "changed": 1, "missing": 0}),
        "{drift:#}"
    );
    assert_eq!(
        drift["keys"],
        serde_json::json!([{"key": "capacity_concurrency", "kind": "changed", "secret": false,
                            "desired": "10", "live": "20"}]),
        "{drift:#}"
    );
    assert!(drift["checked_at"].as_u64().unwrap() > 0, "{drift:#}");
    let metrics = get(&format!("{base}/metrics"));
    assert_eq!(drift_metric(&metrics, "changed"), 1.0, "{metrics}");
    assert_eq!(drift_metric(&metrics, "added"), 0.0);
    assert_eq!(drift_metric(&metrics, "missing"), 0.0);

    // The command: the same comparison, now; exit 13.
    let run = node.run(&["drift", "--json"], REQUEST * 3);
    run.assert_code(13);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["keys"], drift["keys"], "{}", run.stdout);
    let run = node.run(&["drift"], REQUEST * 3);
    run.assert_code(13);
    assert!(
        run.stdout
            .contains("capacity_concurrency: changed live: rendered \"10\", live \"20\""),
        "{}",
        run.stdout
    );

    // Said once, not at every comparison.
    wait_comparisons(&node, 3);
    let lines = drift_lines(&agent);
    let about: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("capacity_concurrency"))
        .collect();
    assert_eq!(about.len(), 1, "{lines:#?}");
    assert!(
        about[0].contains("rendered \"10\", live \"20\"") && about[0].contains("Never corrected"),
        "{}",
        about[0]
    );

    // Set back to the rendered value: no drift, said once.
    node.set_live("capacity_concurrency", "10");
    let drift = wait_drift(&base, "clear", |d| d["drifted"] == false);
    assert_eq!(drift["keys"], serde_json::json!([]), "{drift:#}");
    let metrics = get(&format!("{base}/metrics"));
    assert_eq!(drift_metric(&metrics, "changed"), 0.0, "{metrics}");
    node.run(&["drift", "--json"], REQUEST * 3).assert_code(0);
    wait_comparisons(&node, 2);
    let lines = drift_lines(&agent);
    assert_eq!(
        lines.iter().filter(|l| l.contains("none:")).count(),
        2,
        "the first comparison and the revert: {lines:#?}"
    );
    assert_eq!(lines.len(), 3, "{lines:#?}");

    agent.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(20)), Some(0));
}

#[test]
fn a_secret_changed_live_is_found_by_digest_and_its_values_appear_nowhere() {
    let node = Node::new();
    let (mut agent, base) = in_service(&node);
    let mut seen: Vec<(String, Vec<u8>)> = Vec::new();

    node.set_live("enc_password", ENC_LIVE[0]);
    let drift = wait_drift(&base, "drifted", |d| d["drifted"] == true);
    assert_eq!(
        drift["keys"],
        serde_json::json!([{"key": "enc_password", "kind": "changed", "secret": true}]),
        "{drift:#}"
    );
    seen.push(("/status".into(), drift_of(&base).1.into_bytes()));
    let metrics = get(&format!("{base}/metrics"));
    assert_eq!(drift_metric(&metrics, "changed"), 1.0, "{metrics}");
    seen.push(("/metrics".into(), metrics.into_bytes()));
    for args in [&["drift", "--json"][..], &["drift"]] {
        let run = node.run(args, REQUEST * 3);
        run.assert_code(13);
        assert!(run.stdout.contains("enc_password"), "{}", run.stdout);
        seen.push((format!("{args:?} stdout"), run.stdout.into_bytes()));
        seen.push((format!("{args:?} stderr"), run.stderr.into_bytes()));
    }

    // Changed again, to another value that still differs: the same outcome, not said again.
    node.set_live("enc_password", ENC_LIVE[1]);
    let at = exports(&node);
    wait_comparisons(&node, 3);
    assert!(exports(&node) >= at + 3);
    let lines = drift_lines(&agent);
    let about: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("enc_password"))
        .collect();
    assert_eq!(about.len(), 1, "{lines:#?}");
    assert!(
        about[0].contains("rendered <secret>, live <secret>"),
        "{}",
        about[0]
    );
    seen.push(("/status".into(), drift_of(&base).1.into_bytes()));

    // Set back: no drift, exit 0.
    node.set_live("enc_password", ENC_RENDERED);
    wait_drift(&base, "clear", |d| d["drifted"] == false);
    let run = node.run(&["drift", "--json"], REQUEST * 3);
    run.assert_code(0);
    seen.push(("drift --json stdout".into(), run.stdout.into_bytes()));
    seen.push(("/status".into(), drift_of(&base).1.into_bytes()));

    agent.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(20)), Some(0));
    seen.push(("the agent's log".into(), agent.stderr().into_bytes()));
    seen.extend(files_under(&node.path("state"), &|_| false));
    let scanner = Scanner::new(&[
        ("enc_password rendered", ENC_RENDERED),
        ("enc_password live", ENC_LIVE[0]),
        ("enc_password live again", ENC_LIVE[1]),
    ]);
    let leaks = scanner.leaks(&seen);
    assert!(leaks.is_empty(), "{leaks:#?}");
}
