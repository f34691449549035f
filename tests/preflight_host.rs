//! Preflight's host probes against real peers on this machine: the project's IMDS emulator (its
//! `Date` skewed), a small Docker Engine API served on a unix socket by the test, the kernel's
//! statvfs, TCP listeners of the test's own.

mod common;

use common::Emulator;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};
use tfe_node_agent::adapters::probes::SystemProbes;
use tfe_node_agent::model::preflight::{judge_clock, Verdict};
use tfe_node_agent::ports::{PortAnswer, Probes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};

/// The emulator with one instance; the probes pointed at that instance's IMDS.
fn emulated_imds() -> (Emulator, String, SystemProbes) {
    let emulator = Emulator::start();
    emulator.post("/_emulator/groups", json!({"name": "tfe-asg", "hooks": []}));
    let inst = emulator.post("/_emulator/instances", json!({"group": "tfe-asg"}));
    let endpoint = format!("http://127.0.0.1:{}", inst["imds_port"]);
    let id = inst["id"].as_str().unwrap().to_string();
    (emulator, id, SystemProbes::with_imds_endpoint(endpoint))
}

#[tokio::test]
async fn clock_passes_warns_and_fails_with_the_skew_of_imds_date() {
    let (emulator, id, probes) = emulated_imds();
    let ahead = probes.imds_clock().await.unwrap();
    // The emulator shares this clock: only Date's whole second and the round trip separate them.
    assert!(ahead.abs() <= 1000, "{ahead} ms");
    let (verdict, line) = judge_clock(ahead);
    assert_eq!(verdict, Verdict::Pass, "{line}");

    for (skew, verdict, words) in [
        (
            30.0,
            Verdict::Warn,
            "behind the metadata service's (more than 5s warns)",
        ),
        (
            -600.0,
            Verdict::Fail,
            "ahead of the metadata service's (more than 60s fails)",
        ),
        (
            600.0,
            Verdict::Fail,
            "behind the metadata service's (more than 60s fails)",
        ),
    ] {
        emulator.post(
            &format!("/_emulator/instances/{id}/imds"),
            json!({ "clock_skew_s": skew }),
        );
        let ahead = probes.imds_clock().await.unwrap();
        assert!(
            (ahead + (skew * 1000.0) as i64).abs() <= 1000,
            "skew {skew}: {ahead} ms"
        );
        let (got, line) = judge_clock(ahead);
        assert_eq!(got, verdict, "skew {skew}: {line}");
        assert!(line.contains(words), "skew {skew}: {line}");
        assert!(line.contains("check chrony/timesyncd"), "{line}");
    }
    // Each check opened a session of its own: one token PUT apiece.
    let puts = emulator
        .events("imds")
        .iter()
        .filter(|e| e["method"] == "PUT" && e["path"] == "/latest/api/token")
        .count();
    assert_eq!(puts, 4);
}

#[tokio::test]
async fn imds_unreachable_refused_cut_and_silent() {
    // A closed loopback port.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let probes = SystemProbes::with_imds_endpoint(format!("http://127.0.0.1:{closed}"));
    let e = probes.imds_clock().await.unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("127.0.0.1:{closed}: unreachable: ")) && e.contains("refused"),
        "{e}"
    );

    let (emulator, _id, probes) = emulated_imds();
    let hint = "IMDSv2 disabled or the hop limit too low for a container";
    // A token refused (IMDS's 403 for a proxied request is the same shape).
    emulator.arm(json!([{"target": "imds", "path": "api/token", "kind": "http404"}]));
    let e = probes.imds_clock().await.unwrap_err().to_string();
    assert!(
        e.ends_with(&format!(
            "PUT /latest/api/token refused (HTTP 404) — {hint}"
        )),
        "{e}"
    );
    // Reset as the answer would go out (what a container behind hop limit 1 sees, or a timeout).
    emulator.arm(json!([{"target": "imds", "path": "api/token", "kind": "reset"}]));
    let e = probes.imds_clock().await.unwrap_err().to_string();
    assert!(
        e.contains("PUT /latest/api/token: ") && e.contains("reset by peer") && e.ends_with(hint),
        "{e}"
    );
    emulator.arm(json!([{"target": "imds", "path": "api/token", "kind": "hang", "hang_s": 5}]));
    let started = Instant::now();
    let e = probes.imds_clock().await.unwrap_err().to_string();
    assert!(
        e.contains("PUT /latest/api/token: no answer within 2s — ") && e.ends_with(hint),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    emulator.clear_faults();
    probes.imds_clock().await.unwrap();
}

/// One connection's request head (bounded), then `answer` written back.
async fn answer_once<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    answer: &str,
) -> String {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
    String::from_utf8_lossy(&head).into_owned()
}

fn http(status: &str, extra_headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{extra_headers}\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn imds_token_answer_without_date() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        answer_once(stream, &http("200 OK", "", "a-token")).await
    });
    let probes = SystemProbes::with_imds_endpoint(format!("http://127.0.0.1:{port}"));
    let e = probes.imds_clock().await.unwrap_err().to_string();
    assert_eq!(
        e,
        format!("127.0.0.1:{port}: the IMDSv2 token answer has no Date header: the clock cannot be compared")
    );
    let head = server.await.unwrap();
    assert!(
        head.starts_with("PUT /latest/api/token HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("x-aws-ec2-metadata-token-ttl-seconds: 60\r\n"),
        "{head}"
    );
}

/// A Docker Engine API on a unix socket at `socket`: each connection gets `answer` once.
fn fake_engine(socket: &Path, answer: String) -> tokio::task::JoinHandle<Vec<String>> {
    let listener = UnixListener::bind(socket).unwrap();
    tokio::spawn(async move {
        let mut heads = Vec::new();
        // One connection per probe; the test makes at most one.
        if let Ok((stream, _)) = listener.accept().await {
            heads.push(answer_once(stream, &answer).await);
        }
        heads
    })
}

const VERSION: &str = r#"{"Platform":{"Name":"Docker Engine - Community"},"Components":[],"Version":"24.0.7","ApiVersion":"1.43","MinAPIVersion":"1.12","GitCommit":"311b9ff","GoVersion":"go1.20.10","Os":"linux","Arch":"amd64","KernelVersion":"6.1.0","BuildTime":"2023-10-26T09:08:02.000000000+00:00"}"#;

#[tokio::test]
async fn docker_answers_its_version_over_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let engine = fake_engine(&socket, http("200 OK", "api-version: 1.43\r\n", VERSION));
    let found = SystemProbes::default().docker(&socket).await.unwrap();
    assert_eq!(found, "24.0.7 (API 1.43)");
    let heads = engine.await.unwrap();
    assert!(
        heads[0].starts_with("GET /version HTTP/1.1\r\n"),
        "{heads:?}"
    );
}

#[tokio::test]
async fn docker_failures_name_the_socket_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let name = socket.display().to_string();
    let probes = SystemProbes::default();

    let e = probes.docker(&socket).await.unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "{name}: Docker is not installed or not running: no socket there"
        )),
        "{e}"
    );

    // The socket file a stopped daemon leaves behind.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let e = probes.docker(&socket).await.unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{name}: nothing listens on the socket: Docker is not running (systemctl start docker)"
        )
    );
    std::fs::remove_file(&socket).unwrap();

    let engine = fake_engine(
        &socket,
        http(
            "500 Internal Server Error",
            "",
            r#"{"message":"layer store is corrupt"}"#,
        ),
    );
    let e = probes.docker(&socket).await.unwrap_err().to_string();
    assert_eq!(
        e,
        format!("{name}: GET /version answered HTTP 500: layer store is corrupt")
    );
    engine.await.unwrap();
    std::fs::remove_file(&socket).unwrap();

    // Something else on the socket: it answers, but not the Engine API.
    let engine = fake_engine(&socket, http("200 OK", "", r#"{"status":"ok"}"#));
    let e = probes.docker(&socket).await.unwrap_err().to_string();
    assert!(e.ends_with("is this Docker's socket?"), "{e}");
    engine.await.unwrap();
    std::fs::remove_file(&socket).unwrap();

    // Accepts, then closes without a word.
    let engine = fake_engine(&socket, String::new());
    let e = probes.docker(&socket).await.unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "{name}: Docker accepted the connection but did not answer GET /version: "
        )),
        "{e}"
    );
    engine.await.unwrap();
}

/// Free blocks × fragment size as coreutils' `stat -f` reports them.
fn stat_free_bytes(dir: &Path) -> u64 {
    let out = std::process::Command::new("stat")
        .args(["-f", "-c", "%f %S"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut parts = text.split_whitespace().map(|p| p.parse::<u64>().unwrap());
    parts.next().unwrap() * parts.next().unwrap()
}

#[test]
fn disk_measures_the_path_or_its_nearest_existing_ancestor() {
    let dir = tempfile::tempdir().unwrap();
    let probes = SystemProbes::default();
    let here = probes.disk_space(dir.path()).unwrap();
    assert_eq!(here.measured, dir.path());
    let expected = stat_free_bytes(dir.path());
    // Other work on the machine writes meanwhile: agree within 256 MiB.
    assert!(
        here.free_bytes.abs_diff(expected) < 256 << 20,
        "statvfs {} vs stat -f {expected}",
        here.free_bytes
    );
    assert!(here.free_bytes > 0);

    // /var/lib/docker on a fresh node: not there yet, measured where it will be made.
    let missing = dir.path().join("var/lib/docker");
    let there = probes.disk_space(&missing).unwrap();
    assert_eq!(there.measured, dir.path());
    // A file on the way (ENOTDIR) is passed over too.
    std::fs::write(dir.path().join("file"), b"").unwrap();
    let under_file = probes.disk_space(&dir.path().join("file/below")).unwrap();
    assert_eq!(under_file.measured, dir.path().join("file"));
}

#[tokio::test]
async fn port_refused_http_and_silent() {
    let probes = SystemProbes::default();
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().to_string()
    };
    assert_eq!(probes.port(&closed).await.unwrap(), PortAnswer::Refused);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        answer_once(
            stream,
            "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
        )
        .await
    });
    assert_eq!(
        probes.port(&address).await.unwrap(),
        PortAnswer::Open {
            http_status: Some(400)
        }
    );
    let head = server.await.unwrap();
    assert_eq!(head, format!("GET / HTTP/1.0\r\nHost: {address}\r\n\r\n"));

    // Listens and says nothing: open, no status, within the probe's own short wait.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let started = Instant::now();
    assert_eq!(
        probes.port(&address).await.unwrap(),
        PortAnswer::Open { http_status: None }
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop(listener);

    let e = probes.port("no-such-host.invalid:8800").await.unwrap_err();
    assert_eq!(e.address, "no-such-host.invalid:8800");
    assert!(e.detail.starts_with("connecting: "), "{e}");
}

// ---- Through the binary: `tfe-node-agent preflight --json` on an emulated node.

/// Every check but the host ones is skipped: their peers are other tests' business.
const SKIP_OTHERS: &str = r#"skip = ["redis", "postgres", "object_storage", "license", "disk", "admin_ui", "vault_peers"]"#;

/// `[preflight]` keys added to the node's agent.toml (under the section if the example has one).
fn preflight_config(node: &common::Node, keys: &str, extra_args: &str) {
    node.write_config(&format!("# extra_args = [] => extra_args = [{extra_args}]"));
    let text = std::fs::read_to_string(&node.config).unwrap();
    let text = match text.find("\n[preflight]") {
        Some(at) => {
            let end = at + "\n[preflight]".len();
            let line_end = end + text[end..].find('\n').unwrap_or(text.len() - end);
            format!("{}\n{keys}{}", &text[..line_end], &text[line_end..])
        }
        None => format!("{text}\n[preflight]\n{keys}\n"),
    };
    std::fs::write(&node.config, text).unwrap();
}

/// Runs `preflight --json`: the exit code and each check's (verdict, detail) by id.
fn run_preflight(
    node: &common::Node,
) -> (
    Option<i32>,
    std::collections::BTreeMap<String, (String, String)>,
    common::Run,
) {
    let run = node.run(
        &[
            "--config",
            node.config.to_str().unwrap(),
            "preflight",
            "--json",
        ],
        Duration::from_secs(30),
    );
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: stdout {:?}; stderr:\n{}", run.stdout, run.stderr));
    let checks = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                (
                    c["verdict"].as_str().unwrap().to_string(),
                    c["detail"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect();
    (run.code, checks, run)
}

/// The fake Engine API on a thread of its own, for a test whose agent run blocks: one connection.
fn fake_engine_thread(socket: &Path, answer: String) -> std::thread::JoinHandle<String> {
    use std::io::{Read, Write};
    let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut head = Vec::new();
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = stream.write_all(answer.as_bytes());
        String::from_utf8_lossy(&head).into_owned()
    })
}

#[test]
fn binary_clock_and_docker_checks() {
    let node = common::Node::new();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    preflight_config(
        &node,
        &format!("{SKIP_OTHERS}\ndocker_socket = \"{}\"", socket.display()),
        r#""no-docker""#,
    );

    // No socket: docker fails (exit 12), IMDS and the clock pass.
    let (code, checks, run) = run_preflight(&node);
    assert_eq!(code, Some(12), "{}", run.stderr);
    let (verdict, detail) = &checks["docker"];
    assert_eq!(verdict, "fail");
    assert!(
        detail.starts_with(&format!(
            "{}: Docker is not installed or not running: no socket there",
            socket.display()
        )),
        "{detail}"
    );
    assert_eq!(checks["imds"].0, "pass", "{:?}", checks["imds"]);
    assert_eq!(checks["clock"].0, "pass", "{:?}", checks["clock"]);

    // The Engine API answers: everything run passes (exit 0).
    let engine = fake_engine_thread(&socket, http("200 OK", "", VERSION));
    let (code, checks, run) = run_preflight(&node);
    assert_eq!(code, Some(0), "{}", run.stderr);
    assert_eq!(checks["docker"].0, "pass", "{:?}", checks["docker"]);
    assert!(
        checks["docker"].1.contains("24.0.7"),
        "{:?}",
        checks["docker"]
    );
    assert!(engine
        .join()
        .unwrap()
        .starts_with("GET /version HTTP/1.1\r\n"));
}

#[test]
fn binary_docker_is_skipped_when_install_sh_installs_it() {
    let node = common::Node::new();
    preflight_config(&node, SKIP_OTHERS, "");
    let (code, checks, run) = run_preflight(&node);
    assert_eq!(code, Some(0), "{}", run.stderr);
    assert_eq!(checks["docker"].0, "skipped", "{:?}", checks["docker"]);
}

#[test]
fn binary_clock_warns_at_30s_and_fails_at_10_minutes() {
    let node = common::Node::new();
    preflight_config(&node, SKIP_OTHERS, "");
    let skew = |s: f64| {
        node.emulator.post(
            &format!("/_emulator/instances/{}/imds", node.instance_id),
            json!({ "clock_skew_s": s }),
        );
    };
    skew(30.0);
    let (code, checks, run) = run_preflight(&node);
    assert_eq!(code, Some(0), "a warning never fails: {}", run.stderr);
    let (verdict, detail) = &checks["clock"];
    assert_eq!(verdict, "warn", "{detail}");
    assert!(
        detail.contains("behind the metadata service's (more than 5s warns)"),
        "{detail}"
    );

    skew(600.0);
    let (code, checks, run) = run_preflight(&node);
    assert_eq!(code, Some(12), "{}", run.stderr);
    let (verdict, detail) = &checks["clock"];
    assert_eq!(verdict, "fail", "{detail}");
    assert!(
        detail.contains("behind the metadata service's (more than 60s fails)"),
        "{detail}"
    );
    assert_eq!(checks["imds"].0, "pass", "{:?}", checks["imds"]);
}

#[test]
fn binary_imds_fails_on_a_closed_port() {
    let node = common::Node::new();
    preflight_config(&node, SKIP_OTHERS, "");
    // The region from agent.toml: without IMDS the command cannot learn it (and exits 4).
    let text = std::fs::read_to_string(&node.config).unwrap();
    let text = text.replacen("# region = \"us-east-1\"", "region = \"us-east-1\"", 1);
    std::fs::write(&node.config, text).unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let run = common::Run::wait(
        node.agent(&[
            "--config",
            node.config.to_str().unwrap(),
            "preflight",
            "--json",
        ])
        .env(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            format!("http://127.0.0.1:{closed}"),
        )
        .spawn()
        .unwrap(),
        Duration::from_secs(30),
    );
    run.assert_no_secrets();
    assert_eq!(run.code, Some(12), "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let imds = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "imds")
        .unwrap();
    assert_eq!(imds["verdict"], "fail");
    let detail = imds["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("127.0.0.1:{closed}: unreachable: "))
            && detail.contains("refused"),
        "{detail}"
    );
}
