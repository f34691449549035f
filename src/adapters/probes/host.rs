//! The host probes: free disk, the Docker socket, IMDS and the clock, a TCP port.

use crate::adapters::aws::{with_cause, Imds, TokenAnswer, TokenError};
use crate::ports::{DiskSpace, PortAnswer, ProbeError};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use nix::errno::Errno;
use std::io::ErrorKind;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// Free space at `path`, or at its nearest existing ancestor: on a fresh node /var/lib/docker
/// does not exist yet, and what it will use is the filesystem of /var/lib (or /var, or /).
///
/// Counted as the blocks free to root (`f_bfree`), not to other users (`f_bavail`): install.sh,
/// dockerd and Replicated all run as root and may use the filesystem's reserve (5% on ext4 by
/// default, none on XFS). `df`'s "Avail" column is `f_bavail`, so it shows less by that reserve.
pub(super) fn disk_space(path: &Path) -> Result<DiskSpace, ProbeError> {
    for dir in path.ancestors().filter(|d| !d.as_os_str().is_empty()) {
        match nix::sys::statvfs::statvfs(dir) {
            Ok(fs) => {
                let free = fs.blocks_free().saturating_mul(fs.fragment_size());
                return Ok(DiskSpace {
                    measured: dir.to_path_buf(),
                    free_bytes: free,
                });
            }
            // Not there (yet), or a file on the way: the filesystem that would hold it is above.
            Err(Errno::ENOENT | Errno::ENOTDIR) => continue,
            Err(e) => {
                return Err(ProbeError::new(
                    dir.display().to_string(),
                    format!("cannot measure free space (statvfs): {}", e.desc()),
                ))
            }
        }
    }
    Err(ProbeError::new(
        path.display().to_string(),
        "cannot measure free space: neither the path nor any parent exists",
    ))
}

/// The most of an answer read from the Docker socket or a port: `/version` is under 1 KiB.
const MAX_DOCKER_ANSWER: usize = 64 * 1024;

/// `GET /version` on the Engine API socket: the engine's version, "24.0.7 (API 1.43)".
pub(super) async fn docker(socket: &Path) -> Result<String, ProbeError> {
    let error = |detail: String| ProbeError::new(socket.display().to_string(), detail);
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| error(docker_connect_error(&e)))?;
    let cut = |e: hyper::Error| {
        error(format!(
            "Docker accepted the connection but did not answer GET /version: {}",
            with_cause(&e)
        ))
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(cut)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    // The Docker CLI names its daemon "docker" (a unix socket has no host name).
    let request = Request::get("/version")
        .header(hyper::header::HOST, "docker")
        .body(Empty::<Bytes>::new())
        .map_err(|e| error(e.to_string()))?;
    let response = sender.send_request(request).await.map_err(cut)?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_DOCKER_ANSWER)
        .collect()
        .await
        .map_err(|e| error(format!("reading the answer to GET /version: {e}")))?
        .to_bytes();
    docker_version(status, &body).map_err(error)
}

/// The error an operator acts on when the socket cannot be connected to.
fn docker_connect_error(e: &std::io::Error) -> String {
    match e.kind() {
        // The error already names the socket (its address).
        ErrorKind::NotFound => "Docker is not installed or not running: no socket there (install.sh will not install it: no-docker or airgap in [install].extra_args)".into(),
        ErrorKind::PermissionDenied => {
            "permission denied on the Docker socket: run the agent as root".into()
        }
        // A socket file nobody listens on (a stopped dockerd leaves it) or not a socket at all.
        ErrorKind::ConnectionRefused => {
            "nothing listens on the socket: Docker is not running (systemctl start docker)".into()
        }
        _ => format!("connecting to the Docker socket: {e}"),
    }
}

/// The engine's version from `/version`'s answer, or what is wrong with the answer.
fn docker_version(status: u16, body: &[u8]) -> Result<String, String> {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    if status != 200 {
        // The Engine API's errors are {"message": "..."}.
        let message = json
            .as_ref()
            .and_then(|j| j["message"].as_str())
            .map(|m| format!(": {}", one_line(m, 200)))
            .unwrap_or_default();
        return Err(format!("GET /version answered HTTP {status}{message}"));
    }
    let field = |name: &str| {
        json.as_ref()
            .and_then(|j| j[name].as_str())
            .map(|v| one_line(v, 40))
    };
    match (field("Version"), field("ApiVersion")) {
        (Some(version), Some(api)) => Ok(format!("{version} (API {api})")),
        (Some(version), None) => Ok(version),
        _ => Err(
            "GET /version did not answer the Engine API's JSON (no \"Version\"): is this Docker's socket?"
                .into(),
        ),
    }
}

/// What an error may quote of a peer's text: one line, bounded.
fn one_line(text: &str, max: usize) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    line.trim().to_string()
}

/// The token asked for by the clock check: it is never used, so it may as well end soon.
const PROBE_TOKEN_TTL: Duration = Duration::from_secs(60);

const TOKEN_HINT: &str = "IMDSv2 disabled or the hop limit too low for a container";

/// A fresh IMDSv2 session at the agent's IMDS endpoint, and how far this node's clock is ahead of
/// the `Date` its answer carries (milliseconds; negative: behind).
///
/// The real IMDS dates its answers, the token's included: a published `curl -v` of
/// `PUT /latest/api/token` on an EC2 node (blog post "EKS Hardening: Blocking Pod-Level Access to
/// IMDS", 2025-08-04) shows `Date: Wed, 30 Jul 2025 23:22:04 GMT` beside `Server: EC2ws`, and
/// transcripts of metadata GETs (2022, 2023) show it too; AWS's documentation does not list the
/// headers. Were it ever missing, the check says so rather than passing.
pub(super) async fn imds_clock(imds: &Imds) -> Result<i64, ProbeError> {
    let error = |detail: String| ProbeError::new(imds.address(), detail);
    let sent = SystemTime::now();
    let answer = imds.fresh_token(PROBE_TOKEN_TTL).await;
    let received = SystemTime::now();
    let date = match answer {
        Ok(TokenAnswer {
            status: 200,
            date: Some(date),
        }) => date,
        Ok(TokenAnswer {
            status: 200,
            date: None,
        }) => {
            return Err(error(
                "the IMDSv2 token answer has no Date header: the clock cannot be compared".into(),
            ))
        }
        Ok(TokenAnswer { status, .. }) => {
            return Err(error(format!(
                "PUT /latest/api/token refused (HTTP {status}) — {TOKEN_HINT}"
            )))
        }
        Err(TokenError::Connect(e)) => return Err(error(format!("unreachable: {e}"))),
        // With the PUT response hop limit at 1, a container's token answer is dropped on the way
        // (a timeout) or its connection reset: the same hint fits both.
        Err(e @ (TokenError::Exchange(_) | TokenError::NoAnswer(_))) => {
            return Err(error(format!("PUT /latest/api/token: {e} — {TOKEN_HINT}")))
        }
    };
    let reference = httpdate::parse_http_date(&date).map_err(|_| {
        error(format!(
            "the IMDSv2 token answer's Date {:?} is not an HTTP date",
            one_line(&date, 64)
        ))
    })?;
    Ok(clock_ahead_ms(sent, received, reference))
}

/// How far the local clock is ahead of a peer whose whole-second `Date` was stamped somewhere
/// between `sent` and `received`: the local midpoint against the middle of that second (`Date`
/// is truncated, so the peer's clock read `date + 0..1 s`).
fn clock_ahead_ms(sent: SystemTime, received: SystemTime, date: SystemTime) -> i64 {
    let ms = |t: SystemTime| match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    };
    let local = ms(sent) + (ms(received) - ms(sent)) / 2;
    local - (ms(date) + 500)
}

/// How long a listening port has to send its status line, and how much of it is read.
const PORT_ANSWER_WAIT: Duration = Duration::from_millis(500);
const PORT_ANSWER_MAX: usize = 1024;

/// Connect to `address`; when something listens, `GET / HTTP/1.0` and read its status line.
pub(super) async fn port(address: &str) -> Result<PortAnswer, ProbeError> {
    let mut stream = match TcpStream::connect(address).await {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Ok(PortAnswer::Refused),
        Err(e) => return Err(ProbeError::new(address, format!("connecting: {e}"))),
    };
    let request = format!("GET / HTTP/1.0\r\nHost: {address}\r\n\r\n");
    let read = async {
        // A listener that closes or resets at once still listens: the write's error is its answer.
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = Vec::with_capacity(PORT_ANSWER_MAX);
        let mut chunk = [0u8; 256];
        while head.len() < PORT_ANSWER_MAX && !head.contains(&b'\n') {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&chunk[..n.min(PORT_ANSWER_MAX - head.len())]);
        }
        http_status(&head)
    };
    let http_status = tokio::time::timeout(PORT_ANSWER_WAIT, read)
        .await
        .ok()
        .flatten();
    Ok(PortAnswer::Open { http_status })
}

/// The status of an HTTP status line ("HTTP/1.1 200 OK"), if `head` starts with one.
fn http_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let code = parts.next()?;
    (code.len() == 3).then(|| code.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(http_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(http_status(b"HTTP/1.0 400 Bad Request\r\nx"), Some(400));
        assert_eq!(http_status(b"HTTP/1.1 404"), Some(404));
        assert_eq!(http_status(b"\x15\x03\x01\x00\x02\x02\x0a"), None);
        assert_eq!(http_status(b"SSH-2.0-OpenSSH_9.2\r\n"), None);
        assert_eq!(http_status(b"HTTP/1.1 2000 X\r\n"), None);
        assert_eq!(http_status(b""), None);
    }

    #[test]
    fn clock_arithmetic() {
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        // Stamped "…:10" (10.000–10.999 s) while the local clock read 10.4–10.6 s: in step.
        assert_eq!(clock_ahead_ms(at(10_400), at(10_600), at(10_000)), 0);
        // The local clock 30 s behind.
        assert_eq!(clock_ahead_ms(at(10_400), at(10_600), at(40_000)), -30_000);
        assert_eq!(
            clock_ahead_ms(at(610_500), at(610_500), at(10_000)),
            600_000
        );
    }

    #[test]
    fn docker_answers() {
        let version = br#"{"Platform":{"Name":"Docker Engine - Community"},"Version":"24.0.7","ApiVersion":"1.43","MinAPIVersion":"1.12"}"#;
        assert_eq!(docker_version(200, version).unwrap(), "24.0.7 (API 1.43)");
        assert_eq!(
            docker_version(500, br#"{"message":"Something went wrong\nreally"}"#).unwrap_err(),
            "GET /version answered HTTP 500: Something went wrong really"
        );
        assert_eq!(
            docker_version(404, b"404 page not found").unwrap_err(),
            "GET /version answered HTTP 404"
        );
        assert!(docker_version(200, b"<html>")
            .unwrap_err()
            .contains("is this Docker's socket?"));
    }

    /// Running as root (the tests do), a socket's mode never refuses: the words are checked here.
    #[test]
    fn docker_connect_errors() {
        let e = std::io::Error::from(ErrorKind::PermissionDenied);
        assert_eq!(
            docker_connect_error(&e),
            "permission denied on the Docker socket: run the agent as root"
        );
        let e = std::io::Error::from(ErrorKind::NotFound);
        assert!(docker_connect_error(&e)
            .starts_with("Docker is not installed or not running: no socket there"));
    }
}
