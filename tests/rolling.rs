//! The rolling app restart with real peers: three agents (the real `run`, each with its own
//! emulated instance and IMDS, secrets in one moto) sharing one real redis-server, with the fake
//! TFE tools making each restart take seconds. `app restart --rolling` restarts every node
//! exactly once and never two at once (the fake's timestamped call logs); a node whose TFE does
//! not come back (a failing health check, a short `[readiness].timeout`) stops the next rollout
//! with its reason, and the nodes after it are not restarted; a lease holder killed mid-turn lets
//! the next node go once its lease expires (a greater token), and once it is stale a new rollout
//! replaces the one still waiting for it. Waits are bounded; nothing asserts a speed.

mod common;

use common::redis::Redis;
use common::*;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(60);
/// `app restart --rolling` over three nodes whose restarts take ~4 s each, with room.
const ROLLOUT: Duration = Duration::from_secs(180);
const COMMAND: Duration = Duration::from_secs(30);
/// The fake's `app start` → started (s): the earliest a restart can end after its `app start`.
const STARTED_AFTER: f64 = 2.0;

fn rolling_node(moto: &Arc<Moto>, redis: &Redis) -> Node {
    let node = Node::on_moto(moto);
    node.set_behaviour(json!({"app_stop_duration_s": 2.0, "app_started_after_s": STARTED_AFTER}));
    node.write_config(&format!(
        "enabled = false => enabled = true\\nheartbeat_interval = \"1s\"\\nnode_ttl = \"3s\"\\nmax_nodes = 3\n\
         redis_host = \"redis.internal\" => redis_host = \"127.0.0.1\"\n\
         redis_port = \"6379\" => redis_port = \"{}\"\n\
         redis_use_password_auth = \"1\" => redis_use_password_auth = \"0\"\n\
         redis_use_tls = \"1\" => redis_use_tls = \"0\"\n\
         timeout = \"30m\" => timeout = \"15s\"\n",
        redis.port
    ));
    node
}

/// This node's app restarts from the fake's log: (app stop's start, app start's start + the
/// time the fake takes to report started), in seconds.
fn restarts(node: &Node) -> Vec<(f64, f64)> {
    let (stops, starts) = (app_calls(node, "stop"), app_calls(node, "start"));
    assert_eq!(
        stops.len(),
        starts.len(),
        "{}: stops {stops:?} starts {starts:?}",
        node.instance_id
    );
    stops
        .into_iter()
        .zip(starts)
        .map(|(stop, start)| (stop, start + STARTED_AFTER))
        .collect()
}

/// When `replicatedctl app WHAT` began, from the fake's log, in order.
fn app_calls(node: &Node, what: &str) -> Vec<f64> {
    node.calls()
        .iter()
        .filter(|c| {
            c["tool"] == "replicatedctl"
                && c["event"] == "start"
                && c["argv"] == json!(["app", what])
        })
        .map(|c| c["t"].as_f64().unwrap())
        .collect()
}

fn rollout(redis: &Redis) -> Value {
    serde_json::from_str(redis.cli(&["GET", "tfe-node-agent:rollout"]).trim())
        .unwrap_or(Value::Null)
}

/// Waits (bounded) until `n` nodes are seen live and in service by `node`'s `cluster`.
fn wait_serving(node: &Node, n: usize) {
    let deadline = Instant::now() + BOOT;
    loop {
        let run = node.run(&["cluster", "--json"], COMMAND);
        let view: Value = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
        let serving = view["nodes"].as_array().map_or(0, |nodes| {
            nodes
                .iter()
                .filter(|n| n["phase"] == "in-service" && n["stale"] == false)
                .count()
        });
        if serving == n {
            return;
        }
        assert!(Instant::now() < deadline, "not {n} in service: {view:#}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn lease(redis: &Redis) -> Value {
    serde_json::from_str(redis.cli(&["GET", "tfe-node-agent:lease"]).trim()).unwrap_or(Value::Null)
}

/// Polls (bounded) until `ready` holds for the value `read` returns.
fn wait_for(
    what: &str,
    timeout: Duration,
    read: impl Fn() -> Value,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let v = read();
        if ready(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "not {what} within {timeout:?}; last: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_killed_lease_holder_lets_the_next_node_go_after_its_lease_expires_and_a_new_rollout_replaces_the_stuck_one(
) {
    let moto = Arc::new(Moto::start());
    let redis = Redis::plain();
    let nodes: Vec<Node> = (0..2).map(|_| rolling_node(&moto, &redis)).collect();
    let mut agents: Vec<Agent> = nodes.iter().map(|n| n.start(&["run"])).collect();
    for a in &agents {
        a.wait_line("is in service", BOOT);
    }
    wait_serving(&nodes[0], 2);
    let mut follower = nodes[0].start(&["app", "restart", "--rolling"]);
    let first = wait_for(
        "a lease holder",
        ROLLOUT,
        || lease(&redis),
        |l| l.is_object(),
    );
    let holder = nodes
        .iter()
        .position(|n| first["owner"] == json!(n.instance_id))
        .expect("the holder is one of the nodes");
    let other = 1 - holder;
    agents[holder].child.kill().unwrap();
    agents[holder].child.wait().unwrap();
    // The lease expires (3 heartbeats) and the other node takes it under a greater token.
    let second = wait_for(
        "the other node holding the lease",
        ROLLOUT,
        || lease(&redis),
        |l| l["owner"] == json!(nodes[other].instance_id),
    );
    assert!(
        second["token"].as_u64() > first["token"].as_u64(),
        "{first} then {second}"
    );
    let r = wait_for(
        "the other node's turn recorded",
        ROLLOUT,
        || rollout(&redis),
        |r| {
            r["done"]
                .as_array()
                .is_some_and(|d| d.contains(&json!(nodes[other].instance_id)))
        },
    );
    // The dead holder's turn stays open: the rollout runs, waiting for it.
    assert_eq!(r["state"], "running", "{r:#}");
    assert_eq!(restarts(&nodes[other]).len(), 1);
    // The killed holder may have been killed before its `app stop`, or during its restart: the
    // other node's restart began after it either way.
    if let Some(killed_began) = app_calls(&nodes[holder], "stop").first() {
        assert!(restarts(&nodes[other])[0].0 > *killed_began);
    }
    let _ = follower.child.kill();
    let _ = follower.child.wait();

    wait_serving(&nodes[other], 1);
    // Once the dead node is stale, a new rollout is not blocked by the stuck one: it replaces it.
    let run = nodes[other].run(&["app", "restart", "--rolling"], ROLLOUT);
    run.assert_code(0);
    assert!(run.stderr.contains("replacing it"), "{}", run.stderr);
    assert!(
        run.stdout.contains("1/1 restarted (done)"),
        "{}",
        run.stdout
    );
    assert_eq!(restarts(&nodes[other]).len(), 2);
}

#[test]
fn a_rolling_restart_restarts_each_node_once_one_at_a_time_and_a_node_not_coming_back_stops_the_next(
) {
    let moto = Arc::new(Moto::start());
    let redis = Redis::plain();
    let nodes: Vec<Node> = (0..3).map(|_| rolling_node(&moto, &redis)).collect();
    let agents: Vec<Agent> = nodes.iter().map(|n| n.start(&["run"])).collect();
    for a in &agents {
        a.wait_line("is in service", BOOT);
    }
    // Every node must be seen live in service before the rollout lists it.
    let deadline = Instant::now() + BOOT;
    loop {
        let run = nodes[0].run(&["cluster", "--json"], COMMAND);
        let view: Value = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
        let serving = view["nodes"].as_array().map_or(0, |n| {
            n.iter()
                .filter(|n| n["phase"] == "in-service" && n["stale"] == false)
                .count()
        });
        if serving == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "not 3 in service: {view:#}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let before: Vec<usize> = nodes.iter().map(|n| restarts(n).len()).collect();
    assert_eq!(before, [0, 0, 0]);

    // A live change with its rolling restart (`app-config set … --restart rolling`), which is
    // `app restart --rolling` once the change is made and recorded.
    let run = nodes[1].run(
        &[
            "app-config",
            "set",
            "capacity_concurrency",
            "15",
            "--restart",
            "rolling",
        ],
        ROLLOUT,
    );
    run.assert_code(0);
    assert!(
        run.stdout.contains("3/3 restarted (done)"),
        "{}",
        run.stdout
    );
    let changes = std::fs::read_to_string(nodes[1].path("state/config-changes.jsonl"))
        .expect("the change is recorded");
    assert!(changes.contains("\"capacity_concurrency\""), "{changes}");
    let mut intervals: Vec<(f64, f64)> = Vec::new();
    for n in &nodes {
        let r = restarts(n);
        assert_eq!(r.len(), 1, "{} restarted {} times", n.instance_id, r.len());
        intervals.extend(r);
    }
    intervals.sort_by(|a, b| a.0.total_cmp(&b.0));
    for pair in intervals.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "two restarts overlap: {intervals:?}"
        );
    }
    let done = rollout(&redis);
    assert_eq!(done["state"], "done", "{done:#}");
    assert_eq!(done["done"].as_array().unwrap().len(), 3);
    // The lease was given back; `cluster` shows the rollout.
    assert_eq!(redis.cli(&["EXISTS", "tfe-node-agent:lease"]).trim(), "0");
    let shown = nodes[0].run(&["cluster"], COMMAND);
    assert!(
        shown.stdout.contains("3/3 restarted (done)"),
        "{}",
        shown.stdout
    );

    // A second rollout: the node whose turn comes second does not come back (TFE's health check
    // fails after its app start); the rollout stops with its reason and the third is not
    // restarted.
    let mut order: Vec<&Node> = nodes.iter().collect();
    order.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    order[1].set_behaviour(
        json!({"app_stop_duration_s": 2.0, "app_started_after_s": STARTED_AFTER,
        "health_failing_checks": ["Terraform Enterprise Health Check"]}),
    );
    // The lease decides only "one at a time", not the order: the failing node may go first,
    // second or last; either way the rollout stops at it.
    let run = nodes[0].run(&["app", "restart", "--rolling"], ROLLOUT);
    run.assert_code(16);
    assert!(run.stdout.contains("(stopped)"), "{}", run.stdout);
    assert!(run.stdout.contains(&order[1].instance_id), "{}", run.stdout);
    let stopped = rollout(&redis);
    assert_eq!(stopped["state"], "stopped", "{stopped:#}");
    assert_eq!(stopped["failure"]["instance"], json!(order[1].instance_id));
    assert!(
        stopped["failure"]["why"]
            .as_str()
            .unwrap()
            .contains("not ready"),
        "{stopped:#}"
    );
    // Nobody restarted after the failure: every other node restarted at most once more, and
    // none began after the failed node's restart began.
    let failed_began = restarts(order[1])[1].0;
    for n in nodes
        .iter()
        .filter(|n| n.instance_id != order[1].instance_id)
    {
        for (began, _) in restarts(n).into_iter().skip(1) {
            assert!(
                began < failed_began,
                "{} restarted after the failure",
                n.instance_id
            );
        }
    }
    drop(agents);
}
