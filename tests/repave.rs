//! `tfe-node-agent repave` (issue 15) with real peers: a capacity-managed group in one emulator,
//! real agents started by the launcher for every instance the emulator launches (their config
//! from the cloud-init user data of their launch template version: version 1 installs release
//! 504, version 2 release 505; tests/common/group.rs), one moto, one redis-server. The
//! orchestrator is the real binary, run as an operator would (`--json` events on stdout). Every
//! wait is bounded; nothing asserts a speed.

mod common;

use common::group::*;
use common::SHARED_SECRET_VALUES;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Two nodes' boot (fake TFE tools: a few seconds each; the first waits one node TTL).
const BOOT: Duration = Duration::from_secs(90);
/// A whole repave of two nodes (drain, one build, validation, a second build), with room for a
/// loaded machine.
const REPAVE: Duration = Duration::from_secs(240);
/// A refusal or a dry run: checks only.
const CHECKS: Duration = Duration::from_secs(60);

fn repave_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "repave",
        "--group",
        GROUP,
        "--launch-template-version",
        "2",
        "--poll-interval",
        "1s",
    ];
    args.extend_from_slice(extra);
    args
}

/// The `--json` events of a run's stdout (lines that are not JSON are a failure).
fn events_of(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}")))
        .collect()
}

/// The last event, which must be the report; returns its `repave` record.
fn report_of(events: &[Value], context: &str) -> Value {
    let last = events
        .last()
        .unwrap_or_else(|| panic!("no --json event at all\n{context}"));
    assert_eq!(
        last["event"], "report",
        "the last event is the report\n{context}"
    );
    last["repave"].clone()
}

type Lines = Arc<Mutex<Vec<String>>>;

/// The orchestrator run in the background (to be killed or raced), its stdout and stderr kept.
struct Orchestrator {
    child: Child,
    out: Lines,
    err: Lines,
}

impl Orchestrator {
    fn start(group: &Group, args: &[&str]) -> Self {
        let mut child = group.operator(args).spawn().expect("spawn repave");
        let out = Arc::new(Mutex::new(Vec::new()));
        let err = Arc::new(Mutex::new(Vec::new()));
        let streams: [(Box<dyn std::io::Read + Send>, Lines); 2] = [
            (Box::new(child.stdout.take().unwrap()), out.clone()),
            (Box::new(child.stderr.take().unwrap()), err.clone()),
        ];
        for (stream, sink) in streams {
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    sink.lock().unwrap().push(line);
                }
            });
        }
        Orchestrator { child, out, err }
    }

    fn text(&self) -> String {
        format!(
            "orchestrator stdout:\n{}\norchestrator stderr:\n{}",
            self.out.lock().unwrap().join("\n"),
            self.err.lock().unwrap().join("\n")
        )
    }

    /// Waits (bounded) for a `--json` event matching `pred`.
    fn wait_event(&mut self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self
                .out
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .any(|e| pred(&e));
            if seen {
                return;
            }
            let exited = self.child.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "no {what} event within {timeout:?} (exit: {exited:?})\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    /// Waits (bounded) for the exit; returns the code.
    fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100)); // the readers' last lines
                return s.code();
            }
            assert!(
                Instant::now() < deadline,
                "repave did not exit within {timeout:?}\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stdout(&self) -> String {
        self.out.lock().unwrap().join("\n")
    }
}

impl Drop for Orchestrator {
    fn drop(&mut self) {
        self.kill();
    }
}

fn started(step: &'static str) -> impl Fn(&Value) -> bool {
    move |e: &Value| e["event"] == "step-started" && e["step"] == step
}

/// Intervals of InService per template version, rebuilt from the emulator's `state` events:
/// panics if a version-1 and a version-2 instance were ever InService at the same time.
fn assert_never_mixed(group: &Group) {
    let mut in_service: BTreeMap<String, Value> = BTreeMap::new();
    for e in group.events("state") {
        let id = e["instance"].as_str().unwrap().to_string();
        if e["to_state"] == "InService" {
            in_service.insert(id, e["template_version"].clone());
        } else {
            in_service.remove(&id);
        }
        let versions: BTreeSet<String> = in_service.values().map(|v| v.to_string()).collect();
        assert!(
            versions.len() <= 1,
            "versions {versions:?} InService at once at event {e}\n{}",
            group.dump()
        );
    }
}

/// The processes the group has suspended now (the last `processes` event's list).
fn suspended_now(group: &Group) -> Vec<Value> {
    group
        .events("processes")
        .last()
        .map(|e| e["suspended"].as_array().unwrap().clone())
        .unwrap_or_default()
}

/// Every instance of `version` the emulator launched, in launch order, with the launch's time.
fn launches(group: &Group, version: u64) -> Vec<(String, f64)> {
    group
        .events("launch")
        .iter()
        .filter(|e| e["template_version"] == json!(version))
        .map(|e| {
            (
                e["instance"].as_str().unwrap().to_string(),
                e["time"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// The hook results of one instance: hook → [result…].
fn hook_results(group: &Group, id: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in group.events("lifecycle") {
        if e["instance"] == id {
            out.entry(e["hook"].as_str().unwrap().to_string())
                .or_default()
                .push(e["result"].as_str().unwrap().to_string());
        }
    }
    out
}

fn boot(options: GroupOptions) -> (Group, Vec<String>) {
    let group = Group::start(options);
    let ids = group.wait_in_service(1, 2, BOOT);
    group.wait_view("two live 504 nodes", Duration::from_secs(30), |code, v| {
        code == 0 && v["consistent"] == true && v["live"] == 2
    });
    (group, ids)
}

/// The end state of a completed repave: two version-2 (505) instances InService, a consistent
/// view of exactly them at release 505, nothing suspended, the old nodes drained once each with
/// their terminate hook CONTINUEd, never two versions in service together.
fn assert_repaved(group: &Group, old: &[String]) -> Vec<String> {
    let new = group.wait_in_service(2, 2, Duration::from_secs(30));
    let ids: BTreeSet<String> = new.iter().cloned().collect();
    let view = group.wait_view("two live 505 nodes", Duration::from_secs(30), |code, v| {
        let live: BTreeSet<String> = v["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["stale"] == false)
            .map(|n| n["instance_id"].as_str().unwrap().to_string())
            .collect();
        code == 0 && v["consistent"] == true && live == ids && v["live"] == 2
    });
    assert_eq!(view["release_sequence"], 505, "{view:#}");
    for n in view["nodes"].as_array().unwrap() {
        assert_eq!(n["release_sequence"], 505, "{view:#}");
    }
    for id in old {
        let drains = group
            .with_node(id, |n| n.tool_calls("node-drain").len())
            .unwrap();
        assert_eq!(drains, 1, "{id}: node-drain runs\n{}", group.dump());
        assert_eq!(
            hook_results(group, id).get("tfe-terminate"),
            Some(&vec!["CONTINUE".to_string()]),
            "{id}: terminate hook\n{}",
            group.dump()
        );
    }
    for id in &new {
        let release = group
            .with_node(id, |n| {
                n.install_runs()
                    .iter()
                    .map(|c| c["argv"].to_string())
                    .collect::<Vec<_>>()
            })
            .unwrap();
        assert_eq!(release.len(), 1, "{id}: install.sh runs {release:?}");
    }
    assert_never_mixed(group);
    assert_eq!(
        suspended_now(group),
        Vec::<Value>::new(),
        "processes resumed"
    );
    new
}

fn assert_no_secrets(text: &str) {
    for s in SHARED_SECRET_VALUES {
        assert!(
            !text.contains(s),
            "a secret value in the orchestrator's output"
        );
    }
}

#[test]
fn repave_two_504_nodes_to_505_one_at_a_time_and_a_concurrent_repave_is_refused() {
    let (group, old) = boot(GroupOptions::default());
    // A short lease (renewed every 1 s poll), so that a concurrent `--resume`, which waits up to
    // the holder's TTL for the lease to lapse, gives up while this one still runs (the drain).
    let mut first = Orchestrator::start(
        &group,
        &repave_args(&["--yes", "--json", "--lease-ttl", "3s"]),
    );
    first.wait_event("step-started drain", REPAVE, started("drain"));
    // A second repave while one runs is refused (15) naming the running one (its pid).
    let holder = format!("pid {}", first.child.id());
    let second = group.run(&repave_args(&["--yes", "--json"]), CHECKS);
    let said = format!("{}{}", second.stdout, second.stderr);
    assert_eq!(second.code, Some(15), "a concurrent repave: {said}");
    assert!(
        said.contains(&holder),
        "the refusal names the holder ({holder}): {said}"
    );
    let code = first.wait(REPAVE);
    let context = format!("{}\n{}", first.text(), group.dump());
    assert_eq!(code, Some(0), "repave exit\n{context}");
    assert_no_secrets(&context);
    let events = events_of(&first.stdout());
    let report = report_of(&events, &context);
    assert_eq!(report["state"], "done", "{report:#}");
    let new = assert_repaved(&group, &old);

    // One version-2 node InService (and validated) before the second launches.
    let v2 = launches(&group, 2);
    assert_eq!(v2.len(), 2, "two version-2 launches: {v2:?}\n{context}");
    let first_new = group
        .emulator
        .get(&format!("/_emulator/instances/{}", v2[0].0));
    let in_service_at = first_new["in_service_at"].as_f64().unwrap();
    assert!(
        in_service_at <= v2[1].1,
        "the second version-2 launch ({}) before the first was InService ({in_service_at})",
        v2[1].1
    );
    let validated = events
        .iter()
        .position(|e| e["event"] == "step-ended" && e["step"] == "validate")
        .unwrap_or_else(|| panic!("no step-ended validate\n{context}"));
    let scaled = events
        .iter()
        .position(|e| e["event"] == "step-started" && e["step"] == "scale")
        .unwrap_or_else(|| panic!("no step-started scale\n{context}"));
    assert!(
        validated < scaled,
        "validate ends before scale starts\n{context}"
    );
    // The record's clock is this machine's, like the emulator's: validation ended before the
    // second version-2 launch.
    let validate_end = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "validate")
        .and_then(|s| s["ended_ms"].as_u64())
        .unwrap_or_else(|| panic!("validate has no ended_ms: {report:#}"));
    assert!(
        validate_end as f64 <= v2[1].1 * 1000.0 + 1.0,
        "the second version-2 launch ({}) before validation ended ({validate_end})",
        v2[1].1
    );
    // Each step once, forward, in order.
    let steps: Vec<(String, String, u64)> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_string(),
                s["pass"].as_str().unwrap().to_string(),
                s["starts"].as_u64().unwrap(),
            )
        })
        .collect();
    let names: Vec<&str> = steps.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        names,
        ["suspend", "drain", "point", "first", "validate", "scale", "resume"],
        "{report:#}"
    );
    assert!(
        steps.iter().all(|s| s.1 == "forward" && s.2 == 1),
        "{report:#}"
    );
    // The downtime: from the last old node out to the first new one in.
    let out_ms = report["last_old_out_ms"].as_u64().expect("last_old_out_ms");
    let in_ms = report["first_new_in_ms"].as_u64().expect("first_new_in_ms");
    assert!(in_ms >= out_ms, "{report:#}");
    assert!(new.contains(&v2[0].0) && new.contains(&v2[1].0));
}

#[test]
fn dry_run_changes_nothing_and_a_bad_version_is_refused() {
    let (group, old) = boot(GroupOptions::default());
    let before = group.events("api").len();
    let run = group.run(&repave_args(&["--dry-run"]), CHECKS);
    run.assert_code(0);
    assert!(!run.stdout.trim().is_empty(), "the plan is printed");
    let json = group.run(&repave_args(&["--dry-run", "--json"]), CHECKS);
    json.assert_code(0);
    let events = events_of(&json.stdout);
    assert_eq!(events[0]["event"], "plan", "{}", json.stdout);
    for (version, what) in [("1", "the current version"), ("9", "an unknown version")] {
        let run = group.run(
            &[
                "repave",
                "--group",
                GROUP,
                "--launch-template-version",
                version,
                "--yes",
                "--json",
            ],
            CHECKS,
        );
        assert_eq!(
            run.code,
            Some(15),
            "{what}: stdout:\n{}\nstderr:\n{}",
            run.stdout,
            run.stderr
        );
    }
    let changes: Vec<Value> = group.events("api")[before..]
        .iter()
        .filter(|e| {
            let a = e["action"].as_str().unwrap_or_default();
            !(a.starts_with("Describe") || a == "RecordLifecycleActionHeartbeat")
        })
        .cloned()
        .collect();
    assert!(
        changes.is_empty(),
        "calls that change the group: {changes:#?}"
    );
    let mut now = group.wait_in_service(1, 2, CHECKS);
    let mut before_ids = old.clone();
    now.sort();
    before_ids.sort();
    assert_eq!(now, before_ids, "the same two instances");
    assert!(group.events("processes").is_empty());
}

#[test]
fn a_group_without_both_hooks_is_refused() {
    let group = Group::start(GroupOptions {
        capacity: 0,
        terminate_hook: false,
        ..GroupOptions::default()
    });
    let run = group.run(&repave_args(&["--yes", "--json"]), CHECKS);
    assert_eq!(
        run.code,
        Some(15),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        format!("{}{}", run.stdout, run.stderr).contains("hook"),
        "the refusal names the missing hook:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(group.events("processes").is_empty());
}

/// The first version-2 node's install fails: its launch hook is ABANDONed, the repave stops (18)
/// naming the step `first` and the instance.
#[test]
fn a_failing_new_node_stops_the_repave_at_first() {
    let (group, _old) = boot(GroupOptions {
        install_fails_on: vec![2],
        ..GroupOptions::default()
    });
    let run = group.run(&repave_args(&["--yes", "--json"]), REPAVE);
    let context = format!(
        "stdout:\n{}\nstderr:\n{}\n{}",
        run.stdout,
        run.stderr,
        group.dump()
    );
    assert_eq!(run.code, Some(18), "{context}");
    let report = report_of(&events_of(&run.stdout), &context);
    assert_eq!(report["state"], "stopped", "{report:#}");
    let v2 = launches(&group, 2);
    assert!(!v2.is_empty(), "a version-2 launch\n{context}");
    let failed = &v2[0].0;
    assert_eq!(
        hook_results(&group, failed).get("tfe-launch"),
        Some(&vec!["ABANDON".to_string()]),
        "{context}"
    );
    let failure = report["failure"].to_string();
    assert!(
        failure.contains("first") && failure.contains(failed.as_str()),
        "the failure names the step and the instance {failed}: {report:#}"
    );
    assert_never_mixed(&group);
    assert_eq!(
        suspended_now(&group),
        Vec::<Value>::new(),
        "processes resumed on failure"
    );
}

/// As above with `--on-failure rollback`: two version-1 (504) nodes InService again.
#[test]
fn a_failing_new_node_is_rolled_back_to_two_504_nodes() {
    let (group, _old) = boot(GroupOptions {
        install_fails_on: vec![2],
        ..GroupOptions::default()
    });
    let run = group.run(
        &repave_args(&["--yes", "--json", "--on-failure", "rollback"]),
        REPAVE,
    );
    let context = format!(
        "stdout:\n{}\nstderr:\n{}\n{}",
        run.stdout,
        run.stderr,
        group.dump()
    );
    assert_eq!(run.code, Some(18), "{context}");
    let report = report_of(&events_of(&run.stdout), &context);
    assert_eq!(report["state"], "rolled-back", "{report:#}");
    group.wait_in_service(1, 2, Duration::from_secs(60));
    group.wait_view("two live 504 nodes", Duration::from_secs(30), |code, v| {
        code == 0 && v["consistent"] == true && v["live"] == 2 && v["release_sequence"] == 504
    });
    assert_never_mixed(&group);
    assert_eq!(
        suspended_now(&group),
        Vec::<Value>::new(),
        "processes resumed"
    );
}

/// SIGKILL of the orchestrator once `step` has started, then `--resume` after the lease's TTL:
/// the same end state, the killed step started twice and no completed step re-run.
fn killed_mid_step_then_resumed(step: &'static str) {
    let (group, old) = boot(GroupOptions::default());
    let mut orch = Orchestrator::start(
        &group,
        &repave_args(&["--yes", "--json", "--lease-ttl", "3s"]),
    );
    orch.wait_event(&format!("step-started {step}"), REPAVE, started(step));
    orch.kill();
    let before = orch.text();
    drop(orch);
    // After the lease's TTL (3 s) the resume takes over; until then it may be refused (15).
    let deadline = Instant::now() + Duration::from_secs(30);
    let run = loop {
        let run = group.run(
            &repave_args(&["--resume", "--yes", "--json", "--lease-ttl", "3s"]),
            REPAVE,
        );
        if run.code != Some(15) || Instant::now() > deadline {
            break run;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let context = format!(
        "killed run:\n{before}\nresume stdout:\n{}\nresume stderr:\n{}\n{}",
        run.stdout,
        run.stderr,
        group.dump()
    );
    assert_eq!(run.code, Some(0), "{context}");
    let events = events_of(&run.stdout);
    let report = report_of(&events, &context);
    assert_eq!(report["state"], "done", "{report:#}");
    let resumed: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "step-started")
        .collect();
    assert_eq!(
        resumed.first().map(|e| e["step"].clone()),
        Some(json!(step)),
        "{context}"
    );
    assert_eq!(resumed[0]["resumed"], true, "{context}");
    let order = [
        "suspend", "drain", "point", "first", "validate", "scale", "resume",
    ];
    let killed = order.iter().position(|s| *s == step).unwrap();
    for s in report["steps"].as_array().unwrap() {
        let at = order
            .iter()
            .position(|o| *o == s["step"].as_str().unwrap())
            .unwrap();
        let want = if at == killed { 2 } else { 1 };
        assert_eq!(s["starts"], want, "{}: {report:#}", s["step"]);
        assert_eq!(s["pass"], "forward", "{report:#}");
    }
    assert_repaved(&group, &old);
}

#[test]
fn killed_mid_drain_then_resumed() {
    killed_mid_step_then_resumed("drain");
}

#[test]
fn killed_mid_first_then_resumed() {
    killed_mid_step_then_resumed("first");
}
