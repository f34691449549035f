//! Preflight's redis and postgres probes against real servers on loopback: redis-server (plain,
//! password, TLS with a CA made here, a replica) and PostgreSQL 15 (initdb'd per test, scram, with
//! and without TLS). Each failure's message is checked for its words and its address, and for
//! never holding the secret. The probes are driven as the preflight run drives them: through the
//! `Probes` port, bounded by a check timeout of the caller's.

mod common;

use common::postgres::{Postgres, PostgresOptions};
use common::redis::{closed_port, make_ca, Redis, RedisOptions};
use std::net::TcpListener;
use std::time::{Duration, Instant};
use tfe_node_agent::adapters::probes::SystemProbes;
use tfe_node_agent::ports::{PostgresProbe, ProbeError, Probes, RedisProbe, SslMode};
use tfe_node_agent::sys::secret::Secret;

/// The caller's bound, as `[preflight].check_timeout` would give it.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

const REDIS_PASS: &str = "rp-Secret-7f3a9c";
const WRONG_PASS: &str = "wrong-Secret-41b2e8";
const PG_PASS: &str = "pg-Secret-c0ffee42";

fn redis_probe(port: u16) -> RedisProbe {
    RedisProbe {
        host: "127.0.0.1".into(),
        port,
        password: None,
        tls: false,
        ca_bundle: None,
    }
}

async fn redis(p: &RedisProbe) -> Result<String, ProbeError> {
    tokio::time::timeout(CHECK_TIMEOUT, SystemProbes::default().redis(p))
        .await
        .expect("the probe answered within the check timeout")
}

/// The failure's one line: names the address, holds none of `secrets`.
fn failed(result: Result<String, ProbeError>, address: &str, secrets: &[&str]) -> String {
    let e = result.expect_err("the probe should fail");
    let line = e.to_string();
    eprintln!("{line}");
    assert_eq!(e.address, address, "{line}");
    assert!(!line.contains('\n'), "one line: {line:?}");
    for s in secrets {
        assert!(!line.contains(s), "a secret in {line:?}");
    }
    line
}

#[tokio::test]
async fn redis_without_auth_passes_with_version_and_role() {
    let server = Redis::plain();
    let line = redis(&redis_probe(server.port)).await.unwrap();
    assert!(line.starts_with("redis 7."), "{line}");
    assert!(line.contains("role master"), "{line}");
    // Nothing written.
    assert!(server.dump(0).is_empty());
}

#[tokio::test]
async fn redis_password_right_wrong_and_missing() {
    let server = Redis::with_password(REDIS_PASS);
    let address = format!("127.0.0.1:{}", server.port);
    let mut p = redis_probe(server.port);
    p.password = Some(Secret::new(REDIS_PASS));
    let line = redis(&p).await.unwrap();
    assert!(
        line.contains("role master") && !line.contains("note"),
        "{line}"
    );

    p.password = Some(Secret::new(WRONG_PASS));
    let line = failed(redis(&p).await, &address, &[WRONG_PASS, REDIS_PASS]);
    assert!(line.contains("AUTH failed: wrong password"), "{line}");

    p.password = None;
    let line = failed(redis(&p).await, &address, &[REDIS_PASS]);
    assert!(
        line.contains("requires a password (NOAUTH)") && line.contains("redis_pass"),
        "{line}"
    );
    assert!(!server.log().contains(REDIS_PASS));
}

/// Redis refuses AUTH when it has no password; some clients shrug, some fail. Said, not failed.
#[tokio::test]
async fn redis_password_given_but_server_has_none_passes_with_a_note() {
    let server = Redis::plain();
    let mut p = redis_probe(server.port);
    p.password = Some(Secret::new(REDIS_PASS));
    let line = redis(&p).await.unwrap();
    assert!(line.contains("role master"), "{line}");
    assert!(
        line.contains("note: a password is configured but the server has none"),
        "{line}"
    );
    assert!(!line.contains(REDIS_PASS));
}

#[tokio::test]
async fn redis_tls_with_the_ca_passes_and_other_roots_fail() {
    let server = Redis::start(RedisOptions {
        tls: true,
        password: Some(REDIS_PASS.into()),
        ..Default::default()
    });
    let address = format!("127.0.0.1:{}", server.port);
    let mut p = redis_probe(server.port);
    p.tls = true;
    p.password = Some(Secret::new(REDIS_PASS));
    p.ca_bundle = server.ca_pem.clone();
    let line = redis(&p).await.unwrap();
    assert!(line.contains("role master, TLS"), "{line}");

    // Another CA.
    let other = tempfile::tempdir().unwrap();
    p.ca_bundle = Some(make_ca(other.path(), "other"));
    let line = failed(redis(&p).await, &address, &[REDIS_PASS]);
    assert!(
        line.contains("server certificate not trusted (unknown issuer)")
            && line.contains("not signed by the CA in ca_certs"),
        "{line}"
    );

    // The system roots.
    p.ca_bundle = None;
    let line = failed(redis(&p).await, &address, &[REDIS_PASS]);
    assert!(
        line.contains("not trusted (unknown issuer): set ca_certs"),
        "{line}"
    );

    // A plain client on the TLS port.
    p.tls = false;
    let line = failed(redis(&p).await, &address, &[REDIS_PASS]);
    assert!(
        line.contains("closed the connection: a TLS port? (redis_use_tls is off)"),
        "{line}"
    );
}

#[tokio::test]
async fn redis_tls_certificate_for_another_name_fails() {
    let server = Redis::start(RedisOptions {
        tls: true,
        tls_names: Some("DNS:redis.internal.example".into()),
        ..Default::default()
    });
    let mut p = redis_probe(server.port);
    p.tls = true;
    p.ca_bundle = server.ca_pem.clone();
    let line = failed(redis(&p).await, &format!("127.0.0.1:{}", server.port), &[]);
    assert!(
        line.contains("not valid for \"127.0.0.1\" (wrong host name)"),
        "{line}"
    );
}

/// A TLS client on a plain port: redis-server reads the ClientHello as the start of an inline
/// command and waits for the rest, so the handshake never ends and the caller's timeout ends the
/// probe, on time (nothing of the probe's own outlasts it).
#[tokio::test]
async fn redis_tls_client_on_a_plain_port_is_bounded_by_the_callers_timeout() {
    let server = Redis::plain();
    let mut p = redis_probe(server.port);
    p.tls = true;
    p.ca_bundle = Some(make_ca(tempfile::tempdir().unwrap().path(), "ca"));
    let started = Instant::now();
    let result =
        tokio::time::timeout(Duration::from_secs(1), SystemProbes::default().redis(&p)).await;
    match result {
        Err(_) => {}
        // Should a server answer the ClientHello after all, it must be told as not TLS.
        Ok(answer) => {
            let line = failed(answer, &format!("127.0.0.1:{}", server.port), &[]);
            assert!(line.contains("does not speak TLS on this port"), "{line}");
        }
    }
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn redis_replica_fails_naming_its_primary() {
    let primary = Redis::plain();
    let replica = Redis::start(RedisOptions {
        extra: Some(format!("replicaof 127.0.0.1 {}", primary.port)),
        ..Default::default()
    });
    let line = failed(
        redis(&redis_probe(replica.port)).await,
        &format!("127.0.0.1:{}", replica.port),
        &[],
    );
    assert!(
        line.contains(&format!(
            "role is replica (read-only) of 127.0.0.1:{}",
            primary.port
        )) && line.contains("point redis_host at the primary endpoint"),
        "{line}"
    );
}

/// Where ROLE is refused (renamed away, as some managed services do), INFO replication tells.
#[tokio::test]
async fn redis_replica_without_role_command_is_found_through_info() {
    let primary = Redis::plain();
    let replica = Redis::start(RedisOptions {
        extra: Some(format!(
            "replicaof 127.0.0.1 {}\nreplica-read-only no\nrename-command ROLE \"\"",
            primary.port
        )),
        ..Default::default()
    });
    assert!(replica.log().is_empty() || !replica.log().contains("Bad directive"));
    let line = failed(
        redis(&redis_probe(replica.port)).await,
        &format!("127.0.0.1:{}", replica.port),
        &[],
    );
    assert!(
        line.contains(&format!(
            "role is replica (writable) of 127.0.0.1:{}",
            primary.port
        )),
        "{line}"
    );
}

#[tokio::test]
async fn redis_closed_port_is_refused() {
    let port = closed_port();
    let line = failed(
        redis(&redis_probe(port)).await,
        &format!("127.0.0.1:{port}"),
        &[],
    );
    assert!(line.contains("connection refused"), "{line}");
}

/// A port that accepts and never answers: the caller's timeout ends the probe, on time.
#[tokio::test]
async fn redis_black_hole_is_bounded_by_the_callers_timeout() {
    let hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hole.local_addr().unwrap().port();
    let mut p = redis_probe(port);
    p.password = Some(Secret::new(REDIS_PASS));
    let started = Instant::now();
    let result =
        tokio::time::timeout(Duration::from_secs(1), SystemProbes::default().redis(&p)).await;
    assert!(result.is_err(), "the probe did not wait: {result:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

fn pg_probe(pg: &Postgres, sslmode: SslMode) -> PostgresProbe {
    PostgresProbe {
        host: "127.0.0.1".into(),
        port: pg.port,
        user: pg.user.clone(),
        password: Secret::new(pg.password.clone()),
        dbname: pg.dbname.clone(),
        sslmode,
        ca_bundle: None,
    }
}

async fn postgres(p: &PostgresProbe) -> Result<String, ProbeError> {
    tokio::time::timeout(CHECK_TIMEOUT, SystemProbes::default().postgres(p))
        .await
        .expect("the probe answered within the check timeout")
}

#[tokio::test]
async fn postgres_plain_right_wrong_and_missing() {
    let pg = Postgres::plain("tfe", PG_PASS, "tfe");
    let address = format!("127.0.0.1:{}", pg.port);
    let line = postgres(&pg_probe(&pg, SslMode::Disable)).await.unwrap();
    assert!(
        line.starts_with("PostgreSQL 15.") && line.ends_with(", database tfe, sslmode disable"),
        "{line}"
    );
    // prefer against a server without TLS: plain, as libpq does.
    let line = postgres(&pg_probe(&pg, SslMode::Prefer)).await.unwrap();
    assert!(line.ends_with("sslmode prefer"), "{line}");

    let mut p = pg_probe(&pg, SslMode::Disable);
    p.password = Secret::new(WRONG_PASS);
    let line = failed(postgres(&p).await, &address, &[WRONG_PASS, PG_PASS]);
    assert!(
        line.contains("password authentication failed for user \"tfe\""),
        "{line}"
    );

    let mut p = pg_probe(&pg, SslMode::Disable);
    p.dbname = "tfe_missing".into();
    let line = failed(postgres(&p).await, &address, &[PG_PASS]);
    assert!(
        line.contains("database \"tfe_missing\" does not exist"),
        "{line}"
    );

    let line = failed(
        postgres(&pg_probe(&pg, SslMode::Require)).await,
        &address,
        &[PG_PASS],
    );
    assert!(
        line.contains("does not support SSL but sslmode=require"),
        "{line}"
    );
    assert!(!pg.log().contains(PG_PASS) && !pg.log().contains(WRONG_PASS));
    // Nothing outlives the probes: only the psql asking is connected.
    let sessions = pg.psql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'tfe';");
    assert_eq!(sessions.trim(), "0");
}

#[tokio::test]
async fn postgres_closed_port_is_refused() {
    let port = closed_port();
    let p = PostgresProbe {
        host: "127.0.0.1".into(),
        port,
        user: "tfe".into(),
        password: Secret::new(PG_PASS),
        dbname: "tfe".into(),
        sslmode: SslMode::Require,
        ca_bundle: None,
    };
    let line = failed(postgres(&p).await, &format!("127.0.0.1:{port}"), &[PG_PASS]);
    assert!(line.contains("connection refused"), "{line}");
}

#[tokio::test]
async fn postgres_tls_modes() {
    let pg = Postgres::start(
        "tfe",
        PG_PASS,
        "tfe",
        PostgresOptions {
            tls: Some("IP:127.0.0.1".into()),
            tls_only: true,
        },
    );
    let address = format!("127.0.0.1:{}", pg.port);
    let ca = pg.ca_pem.clone();

    // require: any certificate.
    let line = postgres(&pg_probe(&pg, SslMode::Require)).await.unwrap();
    assert!(line.ends_with("sslmode require"), "{line}");

    // verify-full with the CA.
    let mut p = pg_probe(&pg, SslMode::VerifyFull);
    p.ca_bundle = ca.clone();
    postgres(&p).await.unwrap();

    // verify-full with another CA, and with the system roots.
    p.ca_bundle = Some(make_ca(tempfile::tempdir().unwrap().path(), "other"));
    let line = failed(postgres(&p).await, &address, &[PG_PASS]);
    assert!(
        line.contains("server certificate not trusted (unknown issuer)"),
        "{line}"
    );
    p.ca_bundle = None;
    let line = failed(postgres(&p).await, &address, &[PG_PASS]);
    assert!(
        line.contains("not trusted (unknown issuer): set ca_certs"),
        "{line}"
    );

    // A name the certificate does not carry: verify-ca passes, verify-full fails.
    let mut p = pg_probe(&pg, SslMode::VerifyCa);
    p.host = "localhost".into();
    p.ca_bundle = ca.clone();
    postgres(&p).await.unwrap();
    p.sslmode = SslMode::VerifyFull;
    let line = failed(
        postgres(&p).await,
        &format!("localhost:{}", pg.port),
        &[PG_PASS],
    );
    assert!(
        line.contains("not valid for \"localhost\" (wrong host name"),
        "{line}"
    );

    // The server admits only TLS clients.
    let line = failed(
        postgres(&pg_probe(&pg, SslMode::Disable)).await,
        &address,
        &[PG_PASS],
    );
    assert!(
        line.contains("no pg_hba.conf entry") && line.contains("pg_hba.conf does not admit"),
        "{line}"
    );
}

// Through the binary: `tfe-node-agent preflight --json` with the settings and secrets TFE would
// use (redis_pass and pg_password from the shared secret in moto).

const SKIP_OTHERS: &str =
    r#"skip = ["object_storage", "license", "disk", "docker", "imds", "clock"]"#;

/// Runs `preflight --json` for `node`: the exit code, the checks by id, and all output.
fn preflight(node: &common::Node) -> (i32, serde_json::Value, String) {
    let out = node.agent(&["preflight", "--json"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let all = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    for s in common::SHARED_SECRET_VALUES {
        assert!(!all.contains(s), "a secret value in the output: {all}");
    }
    let report: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {all}"));
    let checks = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap().to_string(), c.clone()))
        .collect();
    (out.status.code().unwrap(), checks, all)
}

fn settings(redis_port: u16, pg_port: u16, sslmode: &str, tls: &str) -> String {
    format!(
        "redis_host = \"redis.internal\" => redis_host = \"127.0.0.1\"\n\
         redis_port = \"6379\" => redis_port = \"{redis_port}\"\n\
         redis_use_tls = \"1\" => redis_use_tls = \"{tls}\"\n\
         pg_netloc = \"db.internal:5432\" => pg_netloc = \"127.0.0.1:{pg_port}\"\n\
         pg_user = \"tfe\" => pg_user = \"tfe\"\\npg_extra_params = \"sslmode={sslmode}\"\n\
         [preflight] => [preflight]\\ncheck_timeout = \"2s\"\\n{SKIP_OTHERS}\n"
    )
}

#[test]
fn binary_passes_with_the_right_settings() {
    let node = common::Node::new();
    let redis = Redis::with_password(common::SHARED_SECRET_VALUES[2]);
    let pg = Postgres::plain("tfe", common::SHARED_SECRET_VALUES[1], "tfe");
    node.write_config(&settings(redis.port, pg.port, "disable", "0"));
    let (code, checks, all) = preflight(&node);
    assert_eq!(code, 0, "{all}");
    assert_eq!(checks["redis"]["verdict"], "pass", "{all}");
    assert_eq!(checks["postgres"]["verdict"], "pass", "{all}");
    let pg_line = checks["postgres"]["detail"].as_str().unwrap();
    assert!(
        pg_line.ends_with("database tfe, sslmode disable"),
        "{pg_line}"
    );
    assert_eq!(checks["object_storage"]["verdict"], "skipped", "{all}");
}

#[test]
fn binary_fails_naming_each_dependency_and_its_problem() {
    let node = common::Node::new();
    let redis = Redis::with_password(WRONG_PASS);
    let pg = Postgres::plain("tfe", common::SHARED_SECRET_VALUES[1], "tfe");
    node.write_config(&settings(redis.port, pg.port, "require", "0"));
    let (code, checks, all) = preflight(&node);
    assert_eq!(code, 12, "{all}");
    let line = checks["redis"]["detail"].as_str().unwrap();
    assert_eq!(checks["redis"]["verdict"], "fail", "{all}");
    assert!(
        line.starts_with(&format!(
            "127.0.0.1:{}: AUTH failed: wrong password",
            redis.port
        )),
        "{line}"
    );
    let line = checks["postgres"]["detail"].as_str().unwrap();
    assert_eq!(checks["postgres"]["verdict"], "fail", "{all}");
    assert!(
        line.starts_with(&format!(
            "127.0.0.1:{}: the server does not support SSL but sslmode=require",
            pg.port
        )),
        "{line}"
    );
    assert!(!all.contains(WRONG_PASS));
}

/// A Redis that accepts and never answers: the check fails at check_timeout, and the run ends
/// within it plus a margin, not later.
#[test]
fn binary_black_holed_redis_is_bounded_by_check_timeout() {
    let node = common::Node::new();
    let hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hole.local_addr().unwrap().port();
    let pg = Postgres::plain("tfe", common::SHARED_SECRET_VALUES[1], "tfe");
    node.write_config(&settings(port, pg.port, "disable", "1"));
    let started = Instant::now();
    let (code, checks, all) = preflight(&node);
    let took = started.elapsed();
    assert_eq!(code, 12, "{all}");
    let line = checks["redis"]["detail"].as_str().unwrap();
    assert!(
        line.starts_with(&format!("127.0.0.1:{port}: no answer within 2s")),
        "{line}"
    );
    assert_eq!(checks["postgres"]["verdict"], "pass", "{all}");
    assert!(took < Duration::from_secs(2 + 3), "took {took:?}");
}
