//! The cluster view and the join guard with real peers: agents (the real binary, each with its
//! own emulated instance and IMDS, their secrets in one moto) sharing one real redis-server
//! (tests/common/redis.rs). Short intervals (`heartbeat_interval = "1s"`, `node_ttl = "3s"`), so
//! every wait here is a few heartbeats, bounded; nothing asserts a speed.

mod common;

use common::redis::{make_ca, Redis, RedisOptions};
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A boot with the fake TFE tools takes a few seconds; the first node also waits one node TTL.
const BOOT: Duration = Duration::from_secs(60);
/// A few heartbeats (1 s) and node TTLs (3 s): what recovering, going stale or being dropped
/// (record kept 2 × TTL) may take, with room for a loaded machine.
const FEW_BEATS: Duration = Duration::from_secs(25);
/// One `cluster` command (secrets from moto, one Redis read).
const COMMAND: Duration = Duration::from_secs(30);

const OTHER_ENC_PASSWORD: &str = "enc-OTHER-SECRET-3c1d0e9a77";

/// How a node reaches the test's redis-server.
struct Store<'a> {
    redis: &'a Redis,
    password: bool,
    /// The PEM put into the node's `ca_bundle` secret (TLS only).
    ca: Option<String>,
}

impl<'a> Store<'a> {
    fn plain(redis: &'a Redis) -> Self {
        Store {
            redis,
            password: false,
            ca: None,
        }
    }
}

/// A node on `moto` whose agent joins the cluster in `store`; `extra`: more config replacements.
fn cluster_node(moto: &Arc<Moto>, store: &Store, extra: &str) -> Node {
    let node = Node::on_moto(moto);
    let on = |b: bool| if b { "1" } else { "0" };
    let mut edits = format!(
        "enabled = false => enabled = true\\nheartbeat_interval = \"1s\"\\nnode_ttl = \"3s\"\\nmax_nodes = 3\n\
         redis_host = \"redis.internal\" => redis_host = \"127.0.0.1\"\n\
         redis_port = \"6379\" => redis_port = \"{}\"\n\
         redis_use_password_auth = \"1\" => redis_use_password_auth = \"{}\"\n\
         redis_use_tls = \"1\" => redis_use_tls = \"{}\"\n",
        store.redis.port,
        on(store.password),
        on(store.ca.is_some()),
    );
    if let Some(pem) = &store.ca {
        node.put_secret("tfe/ca", SecretValue::String(pem.clone()));
        edits.push_str("# tls_cert = \"tfe/tls-cert\"  tls_key = \"tfe/tls-key\"  ca_bundle = \"tfe/ca\" => ca_bundle = \"tfe/ca\"\n");
    }
    edits.push_str(extra);
    node.write_config(&edits);
    node
}

/// Replaces the node's shared secret with one whose enc_password is [`OTHER_ENC_PASSWORD`].
fn with_other_enc_password(node: &Node) {
    let mut shared = shared_secret();
    shared["enc_password"] = json!(OTHER_ENC_PASSWORD);
    node.moto.secrets_call(
        node.account.as_deref(),
        "PutSecretValue",
        &json!({"SecretId": "tfe/shared", "SecretString": shared.to_string()}),
    );
}

fn http() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build()
}

fn status(base: &str) -> Option<Value> {
    http()
        .get(&format!("{base}/status"))
        .call()
        .ok()
        .and_then(|r| r.into_json().ok())
}

/// Polls `/status` (bounded) until `ready` holds; returns that document.
fn wait_status(base: &str, what: &str, timeout: Duration, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Some(doc) = status(base) {
            if ready(&doc) {
                return doc;
            }
            last = doc;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{base}/status: not {what} within {timeout:?}; last:\n{last:#}");
}

fn in_service(base: &str) {
    wait_status(base, "in service", BOOT, |s| s["phase"] == "in-service");
}

/// `tfe-node-agent cluster --json` with `node`'s config: its exit code and the view.
fn cluster_json(node: &Node) -> (Option<i32>, Value, String) {
    let run = node.run(&["cluster", "--json"], COMMAND);
    let view = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
    (run.code, view, run.stderr)
}

/// Runs `cluster --json` (bounded in time and count) until `ready(code, view)`; returns the view.
fn wait_view(
    node: &Node,
    what: &str,
    timeout: Duration,
    ready: impl Fn(i32, &Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    let mut last = (None, Value::Null, String::new());
    while Instant::now() < deadline {
        let (code, view, stderr) = cluster_json(node);
        if code.is_some_and(|c| ready(c, &view)) {
            return view;
        }
        last = (code, view, stderr);
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!(
        "`cluster --json`: not {what} within {timeout:?}; last exit {:?}, view:\n{:#}\nstderr:\n{}",
        last.0, last.1, last.2
    );
}

/// The instance ids a view (of `cluster --json` or `/status.cluster`) shows live.
fn live_ids(view: &Value) -> BTreeSet<String> {
    view["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["stale"] == false)
        .map(|n| n["instance_id"].as_str().unwrap().to_string())
        .collect()
}

fn all_ids(view: &Value) -> BTreeSet<String> {
    view["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| n["instance_id"].as_str().unwrap().to_string())
        .collect()
}

fn ids_of<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> BTreeSet<String> {
    nodes.into_iter().map(|n| n.instance_id.clone()).collect()
}

/// `view` lists exactly `ids`, all live, with no finding.
fn consistent_with(view: &Value, ids: &BTreeSet<String>) -> bool {
    view["consistent"] == true && all_ids(view) == *ids && live_ids(view) == *ids
}

/// Starts every node's `run` at once; returns the agents and their API URLs once all are in
/// service.
fn start_all(nodes: &[Node]) -> (Vec<Agent>, Vec<String>) {
    let agents: Vec<Agent> = nodes.iter().map(|n| n.start(&["run"])).collect();
    let urls: Vec<String> = agents
        .iter()
        .map(|a| a.api_url(Duration::from_secs(30)))
        .collect();
    for url in &urls {
        in_service(url);
    }
    (agents, urls)
}

/// The `last_seen` of `instance_id`'s record as stored (None: no record).
fn last_seen(redis: &Redis, instance_id: &str) -> Option<u64> {
    let text = redis.cli(&["GET", &format!("tfe-node-agent:node:{instance_id}")]);
    let record: Value = serde_json::from_str(text.trim()).ok()?;
    record["last_seen"].as_u64()
}

fn identity(redis: &Redis) -> Option<Value> {
    serde_json::from_str(redis.cli(&["GET", "tfe-node-agent:identity"]).trim()).ok()
}

/// No key or value in `redis` holds a secret value of the nodes (`extra`: more of them), as it
/// is, base64 (standard or URL-safe, with or without padding) or hex (either case). Returns how
/// many keys were scanned.
fn assert_no_secret_in(redis: &Redis, extra: &[&str]) -> usize {
    use base64::Engine;
    let engines = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let mut forms = Vec::new();
    for secret in SHARED_SECRET_VALUES.iter().chain(extra) {
        forms.push(secret.to_string());
        for engine in &engines {
            forms.push(engine.encode(secret));
        }
        let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        forms.push(hex.to_uppercase());
        forms.push(hex);
    }
    let dump = redis.dump(0);
    assert!(!dump.is_empty(), "the agents wrote nothing to scan");
    for (key, value) in &dump {
        assert!(
            key.starts_with("tfe-node-agent:"),
            "a key outside the prefix: {key}"
        );
        assert!(
            !value.starts_with('<'),
            "{key} has a type the scan cannot read: {value}"
        );
        for form in &forms {
            assert!(
                !key.contains(form.as_str()) && !value.contains(form.as_str()),
                "a secret value (or an encoding of one) in Redis at {key}"
            );
        }
    }
    dump.len()
}

#[test]
fn three_first_nodes_make_one_cluster_see_each_other_and_a_killed_one_goes_stale_then_is_dropped() {
    let moto = Arc::new(Moto::start());
    let redis = Redis::plain();
    let nodes: Vec<Node> = (0..3)
        .map(|_| cluster_node(&moto, &Store::plain(&redis), ""))
        .collect();
    // Three first nodes started together: each waits one node TTL, then one claim wins.
    let (mut agents, urls) = start_all(&nodes);
    let ids = ids_of(&nodes);
    let created = agents
        .iter()
        .filter(|a| a.stderr().contains("this node created cluster"))
        .count();
    assert_eq!(
        created, 1,
        "one node creates the cluster, the others join it"
    );

    let view = wait_view(&nodes[0], "all three live", FEW_BEATS, |code, v| {
        code == 0 && consistent_with(v, &ids)
    });
    let cluster_id = view["cluster_id"]
        .as_str()
        .expect("a cluster id")
        .to_string();
    assert_eq!(view["release_sequence"], 504);
    assert_eq!(view["findings"], json!([]));
    for n in view["nodes"].as_array().unwrap() {
        assert_eq!(n["phase"], "in-service", "{n}");
        assert_eq!(n["release_sequence"], 504, "{n}");
        assert_eq!(n["private_ip"], "10.0.1.5", "{n}");
        assert!(
            n["fingerprints"]["enc_password"]
                .as_str()
                .is_some_and(|f| f.len() == 16),
            "{n}"
        );
    }
    // The same cluster, with the others, in every node's /status.
    for url in &urls {
        wait_status(url, "showing the whole cluster", FEW_BEATS, |s| {
            s["cluster"]["cluster_id"] == cluster_id.as_str()
                && consistent_with(&s["cluster"], &ids)
        });
    }
    let scanned = assert_no_secret_in(&redis, &[]);
    assert_eq!(scanned, 2 + 3, "identity, index and one record per node");

    // SIGKILL: no leave, no more heartbeats.
    let killed = nodes[2].instance_id.clone();
    agents[2].signal(nix::sys::signal::Signal::SIGKILL);
    let view = wait_view(
        &nodes[0],
        "showing the killed node stale",
        FEW_BEATS,
        |code, v| code == 10 && !live_ids(v).contains(&killed) && all_ids(v).contains(&killed),
    );
    assert_eq!(
        view["findings"].as_array().unwrap().len(),
        1,
        "only the stale node: {view:#}"
    );
    assert_eq!(view["findings"][0]["kind"], "stale");
    assert_eq!(view["findings"][0]["instance_id"], killed.as_str());
    assert_eq!(view["stale"], 1);
    // Then dropped (its record expires after 2 × node_ttl): consistent again with the two left.
    let left = ids_of(&nodes[..2]);
    wait_view(
        &nodes[0],
        "with the killed node dropped",
        FEW_BEATS,
        |code, v| code == 0 && consistent_with(v, &left),
    );
    wait_status(&urls[0], "without the killed node", FEW_BEATS, |s| {
        consistent_with(&s["cluster"], &left)
    });
    for agent in &mut agents[..2] {
        assert!(agent.is_running());
    }
}

#[test]
fn two_nodes_keep_their_records_and_identity_through_client_kill_flushall_and_a_restart() {
    let moto = Arc::new(Moto::start());
    let mut redis = Redis::plain();
    let nodes: Vec<Node> = (0..2)
        .map(|_| cluster_node(&moto, &Store::plain(&redis), ""))
        .collect();
    let (agents, urls) = start_all(&nodes);
    let ids = ids_of(&nodes);
    let view = wait_view(&nodes[0], "both live", FEW_BEATS, |code, v| {
        code == 0 && consistent_with(v, &ids)
    });
    let cluster_id = view["cluster_id"].as_str().unwrap().to_string();
    assert_eq!(
        agents
            .iter()
            .filter(|a| a.stderr().contains("this node created cluster"))
            .count(),
        1,
        "two first nodes started together: one creates the cluster"
    );
    for url in &urls {
        wait_status(url, "showing both nodes", FEW_BEATS, |s| {
            s["cluster"]["cluster_id"] == cluster_id.as_str()
                && consistent_with(&s["cluster"], &ids)
        });
    }

    // CLIENT KILL of every agent connection: each reconnects and its record keeps being refreshed.
    let before: BTreeSet<String> = redis.clients().into_iter().collect();
    assert!(before.len() >= 2, "one connection per agent: {before:?}");
    for id in &before {
        redis.cli(&["CLIENT", "KILL", "ID", id]);
    }
    let killed_at = redis.server_time();
    wait_for("records refreshed after CLIENT KILL", FEW_BEATS, || {
        nodes
            .iter()
            .all(|n| last_seen(&redis, &n.instance_id).is_some_and(|t| t > killed_at))
    });
    let after: BTreeSet<String> = redis.clients().into_iter().collect();
    assert!(
        after.is_disjoint(&before) && after.len() >= 2,
        "new connections: before {before:?}, after {after:?}"
    );

    // FLUSHALL: the members restore the identity they joined and rewrite their records.
    // (No check that the identity is gone: a heartbeat may restore it within the same instant.)
    redis.cli(&["FLUSHALL"]);
    recovered(&redis, &nodes, &cluster_id, "recovered after FLUSHALL");
    assert!(
        agents.iter().any(|a| a.stderr().contains("restored it")),
        "a node says it restored the identity"
    );

    // A restart of redis-server (nothing persisted): connections cut and every key gone.
    redis.restart();
    recovered(
        &redis,
        &nodes,
        &cluster_id,
        "recovered after a restart of redis-server",
    );
    assert_no_secret_in(&redis, &[]);
}

/// Both nodes live again in cluster `cluster_id`, whose identity is back in `redis` without TTL.
fn recovered(redis: &Redis, nodes: &[Node], cluster_id: &str, what: &str) {
    let ids = ids_of(nodes);
    wait_view(&nodes[1], what, FEW_BEATS, |code, v| {
        code == 0 && v["cluster_id"] == cluster_id && consistent_with(v, &ids)
    });
    let id = identity(redis).expect("the identity is back");
    assert_eq!(id["cluster_id"], cluster_id);
    assert_eq!(id["release_sequence"], 504);
    assert_eq!(redis.cli(&["TTL", "tfe-node-agent:identity"]).trim(), "-1");
}

#[test]
fn a_node_with_another_enc_password_is_refused_before_install_sh() {
    let moto = Arc::new(Moto::start());
    let redis = Redis::plain();
    let good = cluster_node(&moto, &Store::plain(&redis), "");
    let (_agents, _urls) = start_all(std::slice::from_ref(&good));
    wait_view(&good, "one live node", FEW_BEATS, |code, v| {
        code == 0 && consistent_with(v, &ids_of([&good]))
    });

    // Two newcomers with another enc_password: one under `boot`, one under `run` (for /status).
    let booted = cluster_node(&moto, &Store::plain(&redis), "");
    with_other_enc_password(&booted);
    let served = cluster_node(&moto, &Store::plain(&redis), "");
    with_other_enc_password(&served);
    let why = "enc_password differs from the cluster's";

    let run_agent = served.start(&["run"]);
    let boot = booted.run(&["boot"], BOOT);
    boot.assert_code(10);
    assert!(boot.stderr.contains(why), "{}", boot.stderr);
    assert!(
        boot.stderr.contains("could not decrypt existing data"),
        "{}",
        boot.stderr
    );

    let url = run_agent.api_url(Duration::from_secs(30));
    // Then the emulator ends the abandoned instance: the agent goes on to `drained`, keeping
    // the error.
    let doc = wait_status(&url, "refused", BOOT, |s| {
        s["launch_hook"]["result"] == "ABANDON"
            && s["last_error"]["chain"]
                .as_str()
                .is_some_and(|c| c.contains(why))
    });
    assert!(
        doc["phases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["phase"] == "boot-failed"),
        "{doc:#}"
    );
    assert!(run_agent.stderr().contains(why), "{}", run_agent.stderr());

    for node in [&booted, &served] {
        assert!(node.install_runs().is_empty(), "install.sh never ran");
        assert!(
            !node.path("etc/ptfe-settings.json").exists()
                && !node.path("etc/replicated.conf").exists(),
            "no TFE file written"
        );
        wait_for("the launch hook abandoned", Duration::from_secs(10), || {
            node.emulator.resolutions() == launch_resolved("ABANDON", "complete")
        });
    }
    // A refused node never wrote a record: the cluster is still the one good node.
    let view = wait_view(&good, "still the good node alone", FEW_BEATS, |code, v| {
        code == 0 && consistent_with(v, &ids_of([&good]))
    });
    assert_eq!(view["release_sequence"], 504);
    assert_no_secret_in(&redis, &[OTHER_ENC_PASSWORD]);
}

#[test]
fn another_release_is_refused_while_the_others_are_live_and_accepted_after_they_drain() {
    let moto = Arc::new(Moto::start());
    let redis = Redis::plain();
    let old: Vec<Node> = (0..2)
        .map(|_| cluster_node(&moto, &Store::plain(&redis), ""))
        .collect();
    let (agents, _urls) = start_all(&old);
    let view = wait_view(&old[0], "both live", FEW_BEATS, |code, v| {
        code == 0 && consistent_with(v, &ids_of(&old))
    });
    let cluster_id = view["cluster_id"].as_str().unwrap().to_string();
    let newer = "release_sequence = 504 => release_sequence = 505\n";

    let early = cluster_node(&moto, &Store::plain(&redis), newer);
    let refused = early.run(&["boot"], BOOT);
    refused.assert_code(10);
    assert!(
        refused.stderr.contains("release 505 while live node i-")
            && refused.stderr.contains("runs 504")
            && refused.stderr.contains("finish the repave first"),
        "{}",
        refused.stderr
    );
    assert!(early.install_runs().is_empty());
    assert_eq!(
        early.emulator.resolutions(),
        launch_resolved("ABANDON", "complete")
    );

    // The repave: both old nodes scaled in; each drains, says so, and leaves the cluster.
    for node in &old {
        node.scale_in(0.2);
    }
    // (Drained, an agent waits for its instance to stop: it does not exit.)
    for agent in &agents {
        agent.wait_line("left the cluster", BOOT);
    }
    for node in &old {
        assert_eq!(node.drains()["drains_started"], 1);
    }
    assert_eq!(
        redis
            .cli(&["ZRANGE", "tfe-node-agent:nodes", "0", "-1"])
            .trim(),
        "",
        "drained nodes left the index"
    );

    let late = cluster_node(&moto, &Store::plain(&redis), newer);
    let accepted = late.run(&["boot"], BOOT);
    accepted.assert_code(0);
    assert!(
        accepted
            .stderr
            .contains("release 505 becomes the cluster's"),
        "{}",
        accepted.stderr
    );
    assert_eq!(late.install_runs().len(), 1);
    let id = identity(&redis).unwrap();
    assert_eq!(id["cluster_id"], cluster_id.as_str(), "the same cluster");
    assert_eq!(
        id["release_sequence"], 505,
        "the identity records the new release"
    );
    let (_, view, _) = cluster_json(&late);
    assert_eq!(view["release_sequence"], 505, "{view:#}");
}

/// `cluster` against a store the node cannot use: exit 11, `host:port` and the problem named,
/// no secret; and a `boot` against it still boots (Redis never blocks a node).
fn unusable_store_fails_cluster_but_not_boot(node: &Node, redis: &Redis, problem: &str) {
    let run = node.run(&["cluster"], COMMAND);
    run.assert_code(11);
    assert!(
        run.stderr.contains(&format!("127.0.0.1:{}", redis.port)) && run.stderr.contains(problem),
        "names the store and {problem:?}: {}",
        run.stderr
    );
    if let Some(p) = &redis.password {
        assert!(!run.stderr.contains(p.as_str()) && !run.stdout.contains(p.as_str()));
    }
    let boot = node.run(&["boot"], BOOT);
    boot.assert_code(0);
    assert_eq!(node.install_runs().len(), 1);
    assert!(
        boot.stderr.contains("the boot goes on unguarded"),
        "{}",
        boot.stderr
    );
}

#[test]
fn a_password_protected_redis_works_with_the_right_password_and_a_wrong_one_is_named() {
    let moto = Arc::new(Moto::start());
    let redis = Redis::with_password(SHARED_SECRET_VALUES[2]);
    let store = Store {
        redis: &redis,
        password: true,
        ca: None,
    };
    let node = cluster_node(&moto, &store, "");
    let (_agents, urls) = start_all(std::slice::from_ref(&node));
    wait_view(&node, "the node live", FEW_BEATS, |code, v| {
        code == 0 && consistent_with(v, &ids_of([&node]))
    });
    wait_status(&urls[0], "showing the cluster", FEW_BEATS, |s| {
        consistent_with(&s["cluster"], &ids_of([&node]))
    });
    // The password the agents authenticate with is nowhere in what they wrote.
    assert_no_secret_in(&redis, &[]);

    let other = Redis::with_password("another-redis-password-71c2");
    let wrong = cluster_node(
        &moto,
        &Store {
            redis: &other,
            password: true,
            ca: None,
        },
        "",
    );
    unusable_store_fails_cluster_but_not_boot(&wrong, &other, "authentication failed");
}

#[test]
fn a_tls_redis_works_with_the_right_ca_and_another_ca_is_named() {
    let moto = Arc::new(Moto::start());
    let redis = Redis::start(RedisOptions {
        tls: true,
        ..Default::default()
    });
    let store = Store {
        redis: &redis,
        password: false,
        ca: redis.ca_pem.clone(),
    };
    let node = cluster_node(&moto, &store, "");
    let (_agents, _urls) = start_all(std::slice::from_ref(&node));
    wait_view(&node, "the node live", FEW_BEATS, |code, v| {
        code == 0 && consistent_with(v, &ids_of([&node]))
    });
    assert_no_secret_in(&redis, &[]);

    let other_ca = tempfile::tempdir().unwrap();
    let wrong = cluster_node(
        &moto,
        &Store {
            redis: &redis,
            password: false,
            ca: Some(make_ca(other_ca.path(), "other-ca")),
        },
        "",
    );
    unusable_store_fails_cluster_but_not_boot(&wrong, &redis, "unknown issuer");
}

#[test]
fn a_must_match_setting_changed_live_on_one_node_is_a_live_mismatch_until_set_back() {
    const LIVE_ENC: &str = "enc-LIVE-on-one-node-91c4e07b";
    let moto = Arc::new(Moto::start());
    let redis = Redis::plain();
    // A drift comparison every second: the live values reach the records within a few beats.
    let drift = "[preflight] => [drift]\\ninterval = \"1s\"\\n\\n[preflight]\n";
    let nodes: Vec<Node> = (0..2)
        .map(|_| cluster_node(&moto, &Store::plain(&redis), drift))
        .collect();
    let (agents, urls) = start_all(&nodes);
    let ids = ids_of(&nodes);
    let compared = |v: &Value| {
        v["nodes"].as_array().is_some_and(|nodes| {
            nodes.iter().all(|n| {
                n["live_fingerprints"]["enc_password"].as_str().is_some()
                    && n["live_fingerprints"] == n["fingerprints"]
            })
        })
    };
    wait_view(
        &nodes[0],
        "both compared, consistent",
        FEW_BEATS,
        |code, v| code == 0 && consistent_with(v, &ids) && compared(v),
    );

    nodes[1].set_live("enc_password", LIVE_ENC);
    let changed = nodes[1].instance_id.clone();
    let view = wait_view(
        &nodes[0],
        "showing the live mismatch",
        FEW_BEATS,
        |code, v| code == 10 && v["findings"].as_array().is_some_and(|f| !f.is_empty()),
    );
    let mut groups = vec![
        vec![nodes[0].instance_id.clone()],
        vec![nodes[1].instance_id.clone()],
    ];
    groups.sort();
    assert_eq!(
        view["findings"],
        json!([{"kind": "live-mismatch", "setting": "enc_password", "groups": groups}]),
        "only the live mismatch (the rendered fingerprints agree): {view:#}"
    );
    let node = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["instance_id"] == changed.as_str())
        .unwrap();
    assert_ne!(
        node["live_fingerprints"]["enc_password"], node["fingerprints"]["enc_password"],
        "{node}"
    );
    let run = nodes[0].run(&["cluster"], COMMAND);
    run.assert_code(10);
    assert!(
        run.stdout
            .contains("enc_password as TFE runs it differs between live nodes"),
        "{}",
        run.stdout
    );
    wait_status(&urls[0], "showing the live mismatch", FEW_BEATS, |s| {
        s["cluster"]["findings"] == view["findings"]
    });
    assert!(agents[0]
        .stderr()
        .contains("enc_password as TFE runs it differs"));
    assert_no_secret_in(&redis, &[LIVE_ENC]);

    // Set back: consistent again.
    nodes[1].set_live("enc_password", SHARED_SECRET_VALUES[0]);
    wait_view(&nodes[0], "consistent again", FEW_BEATS, |code, v| {
        code == 0 && consistent_with(v, &ids) && compared(v)
    });
    for agent in &agents {
        let log = agent.stderr();
        assert!(
            !log.contains(LIVE_ENC) && !log.contains(SHARED_SECRET_VALUES[0]),
            "a value of enc_password in the agent's log"
        );
    }
}
