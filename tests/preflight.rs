//! Preflight in the boot, with real peers: the real binary on its emulated instance (IMDS, Auto
//! Scaling hooks), its secrets in moto, its Redis a real redis-server. A broken dependency ends
//! the boot within seconds with nothing written and the launch hook abandoned; a healthy set of
//! dependencies boots as before. Every wait is bounded; nothing asserts a speed beyond the
//! issue's own "well within 60 s" of a failing boot.

mod common;

use common::postgres::{Postgres, PostgresOptions};
use common::redis::{closed_port, Redis};
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// A boot with the fake TFE tools takes a few seconds.
const BOOT: Duration = Duration::from_secs(60);

fn http() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build()
}

fn get(url: &str) -> String {
    http()
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .into_string()
        .unwrap()
}

/// Polls `/status` (bounded) until `ready` holds; returns that document.
fn wait_status(base: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + BOOT;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Ok(doc) = serde_json::from_str::<Value>(&get(&format!("{base}/status"))) {
            if ready(&doc) {
                return doc;
            }
            last = doc;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{base}/status: not {what} within {BOOT:?}; last:\n{last:#}");
}

/// Writes `node`'s config: preflight on, skipping `skip`, its Redis settings pointing at `redis`
/// (no TLS); `extra`: more config replacements.
fn configure(node: &Node, redis: &Redis, password: bool, skip: &[&str], extra: &str) {
    let skip: Vec<String> = skip.iter().map(|s| format!("\"{s}\"")).collect();
    node.write_config(&format!(
        "enabled=false => enabled=true\\nskip = [{}]\\nadmin_ui = \"127.0.0.1:{}\"\n\
         redis_host = \"redis.internal\" => redis_host = \"127.0.0.1\"\n\
         redis_port = \"6379\" => redis_port = \"{}\"\n\
         redis_use_password_auth = \"1\" => redis_use_password_auth = \"{}\"\n\
         redis_use_tls = \"1\" => redis_use_tls = \"0\"\n{}",
        skip.join(", "),
        // Nothing listens there: the Admin UI of a node whose install.sh disabled it.
        closed_port(),
        redis.port,
        if password { "1" } else { "0" },
        extra,
    ));
}

fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"))
}

#[test]
fn a_boot_whose_redis_password_is_wrong_abandons_within_seconds_having_written_nothing() {
    let redis = Redis::with_password("not-the-password-the-node-has");
    let node = Node::new();
    configure(&node, &redis, true, &["postgres", "object_storage"], "");
    let started = Instant::now();
    let mut agent = node.start(&["run"]);
    let base = agent.api_url(Duration::from_secs(30));

    wait_for("the launch hook abandoned", BOOT, || {
        node.emulator.resolutions() == launch_resolved("ABANDON", "complete")
    });
    let took = started.elapsed();
    assert!(took < Duration::from_secs(60), "abandoned after {took:?}");
    eprintln!("the launch hook was abandoned {took:?} after the agent started");
    assert!(node.install_runs().is_empty(), "install.sh never ran");
    assert!(
        !node.path("etc/ptfe-settings.json").exists()
            && !node.path("etc/replicated.conf").exists()
            && !node.path("etc/ptfe-license.rli").exists(),
        "no TFE file written"
    );

    // The log: the milestone with the table, the failed check named with its address.
    let target = format!("redis (127.0.0.1:{})", redis.port);
    let log = agent.wait_line("preflight failed", Duration::from_secs(5));
    assert!(log.contains(&target), "{log}");
    assert!(log.contains("AUTH"), "{log}");

    // /status: the report, and the boot's error naming the check.
    let doc = wait_status(&base, "boot-failed", |s| {
        s["last_error"]["chain"]
            .as_str()
            .is_some_and(|c| c.contains("preflight failed before install.sh"))
    });
    let report = &doc["preflight"];
    assert_eq!(check(report, "redis")["verdict"], "fail", "{report:#}");
    assert_eq!(check(report, "postgres")["verdict"], "skipped");
    let failed: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["verdict"] == "fail")
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["redis"], "only Redis is broken: {report:#}");
    assert!(doc["last_error"]["chain"]
        .as_str()
        .unwrap()
        .contains(&target));

    // /metrics: one series a check, its last result.
    let metrics = get(&format!("{base}/metrics"));
    assert!(
        metrics.contains("tfe_node_agent_preflight_checks{check=\"redis\",result=\"fail\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tfe_node_agent_preflight_checks{check=\"license\",result=\"pass\"} 1")
    );
    assert!(metrics.contains("tfe_node_agent_preflight_duration_seconds "));

    // (`run` stays for the terminate hook of the abandoned instance, which the emulator ends
    // sooner or later: its exit code depends on that race. `boot` exits with the boot's own.)
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    agent.wait_exit(Duration::from_secs(30));
    let text = agent.stderr();
    for secret in SHARED_SECRET_VALUES {
        assert!(!text.contains(secret), "a secret value in the log");
    }

    // The same node under `boot`: exit 12, a preflight failure, saying which check.
    let again = Node::new();
    configure(&again, &redis, true, &["postgres", "object_storage"], "");
    let boot = again.run(&["boot"], BOOT);
    boot.assert_code(12);
    boot.assert_no_secrets();
    assert!(
        boot.stderr
            .contains("preflight failed before install.sh: redis"),
        "{}",
        boot.stderr
    );
    assert!(again.install_runs().is_empty(), "install.sh never ran");
}

#[test]
fn a_boot_whose_dependencies_all_answer_goes_into_service_as_before() {
    // Every dependency real: Redis with the node's password, PostgreSQL over TLS only
    // (sslmode=require), the bucket in moto (path-style through s3_endpoint), IMDS and the
    // clock from the emulator, this machine's disk.
    let redis = Redis::with_password("redis-SECRET-pass");
    let pg = Postgres::start(
        "tfe",
        "pg-SECRET-password",
        "tfe",
        PostgresOptions {
            tls: Some("IP:127.0.0.1".into()),
            tls_only: true,
        },
    );
    let node = Node::new();
    http()
        .put(&format!("{}/tfe-data", node.moto.url))
        .call()
        .expect("create the bucket in moto");
    configure(
        &node,
        &redis,
        true,
        &[],
        &format!(
            "pg_netloc = \"db.internal:5432\" => pg_netloc = \"127.0.0.1:{}\"\\npg_extra_params = \"sslmode=require\"\\ns3_endpoint = \"{}\"\n",
            pg.port, node.moto.url
        ),
    );
    let agent = node.start(&["run"]);
    let base = agent.api_url(Duration::from_secs(30));

    let doc = wait_status(&base, "in service", |s| s["phase"] == "in-service");
    let report = &doc["preflight"];
    for id in [
        "redis",
        "postgres",
        "object_storage",
        "license",
        "disk",
        "imds",
        "clock",
        "admin_ui",
    ] {
        let verdict = &check(report, id)["verdict"];
        assert!(verdict == "pass" || verdict == "warn", "{id}: {report:#}");
    }
    assert!(
        check(report, "postgres")["detail"]
            .as_str()
            .unwrap()
            .contains("sslmode require"),
        "{report:#}"
    );
    assert_eq!(
        check(report, "docker")["verdict"],
        "skipped",
        "install.sh installs Docker"
    );
    assert_eq!(
        check(report, "vault_peers")["verdict"],
        "skipped",
        "no cluster view"
    );
    assert_eq!(
        node.emulator.resolutions(),
        launch_resolved("CONTINUE", "complete")
    );
    assert_eq!(node.install_runs().len(), 1, "install.sh ran once");
    let log = agent.stderr();
    assert!(log.contains("preflight:"), "the table is logged: {log}");
    for secret in SHARED_SECRET_VALUES {
        assert!(!log.contains(secret), "a secret value in the log");
    }
    // Nothing left behind: no marker in the bucket, no key in Redis.
    let listing = get(&format!("{}/tfe-data?list-type=2", node.moto.url));
    assert!(!listing.contains("tfe-node-agent-preflight/"), "{listing}");
    assert_eq!(redis.cli(&["DBSIZE"]).trim(), "0");
}
