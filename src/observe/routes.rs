//! What each path answers. Unknown paths are 404, methods other than GET and HEAD 405; nothing
//! here can print a secret value (the view holds none, the metrics' labels are closed sets).
//! The operator's requests (`POST /drain`, `POST /app/restart`) are served on the unix socket
//! only: 403 on TCP, 405 for any other method.

use super::listen::Scope;
use crate::node::operator::{self, Ask, Door, Verdict};
use crate::node::view::View;
use crate::telemetry::loops;
use crate::telemetry::loops::LoopReport;
use crate::telemetry::metrics::{metrics, Format};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

/// `/status`: the view, with what is read at the moment of the request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusDoc {
    #[serde(flatten)]
    pub view: View,
    /// Unix seconds.
    pub served_at: u64,
    pub live: bool,
    pub ready: bool,
    pub loops: Vec<LoopReport>,
}

impl StatusDoc {
    pub fn now(view: &View) -> Self {
        let mut view = view.clone();
        let m = metrics();
        use crate::telemetry::metrics::HookKind;
        (
            view.launch_hook.heartbeats_sent,
            view.launch_hook.heartbeats_failed,
        ) = m.heartbeats_of(HookKind::Launch);
        (
            view.terminate_hook.heartbeats_sent,
            view.terminate_hook.heartbeats_failed,
        ) = m.heartbeats_of(HookKind::Terminate);
        let loops = loops().check(tokio::time::Instant::now());
        Self {
            live: loops.iter().all(|l| !l.stuck),
            ready: view.is_ready(),
            served_at: crate::sys::time::unix_now(),
            view,
            loops,
        }
    }
}

/// The header a client names its operator in (see [`operator::who`]).
pub const OPERATOR_HEADER: &str = "x-tfe-operator";

/// The paths that change the node, and what each asks.
fn operator_path(path: &str) -> Option<Ask> {
    match path {
        "/drain" => Some(Ask::Drain),
        "/app/restart" => Some(Ask::AppRestart),
        _ => None,
    }
}

/// An operator's request this listener may take: it goes to the service loop ([`operate`]).
pub fn operator_request<B>(scope: Scope, request: &Request<B>) -> Option<Ask> {
    operator_path(request.uri().path())
        .filter(|_| scope == Scope::Operator && request.method() == Method::POST)
}

pub fn requested_by<B>(request: &Request<B>) -> String {
    operator::who(
        request
            .headers()
            .get(OPERATOR_HEADER)
            .and_then(|v| v.to_str().ok()),
    )
}

/// Hands `ask` to the service loop and says what became of it, as JSON ([`operator::Answer`]).
pub async fn operate(door: Option<&Door>, ask: Ask, by: &str) -> Response<Full<Bytes>> {
    let Some(door) = door else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "this listener takes no operator requests\n".into(),
        );
    };
    let Some(answer) = door.ask(ask, by).await else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the agent did not take the request within {}s (it may be answering the launch hook again); try again\n",
                operator::TAKE_WITHIN.as_secs()
            ),
        );
    };
    let status = match answer.verdict {
        Verdict::Accepted => StatusCode::ACCEPTED,
        Verdict::Running | Verdict::Done => StatusCode::OK,
        Verdict::Refused => StatusCode::CONFLICT,
    };
    let mut body = serde_json::to_vec(&answer).expect("an answer serializes");
    body.push(b'\n');
    respond(status, "application/json", body)
}

pub fn answer<B>(scope: Scope, request: &Request<B>, view: &View) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if operator_path(path).is_some() {
        if request.method() != Method::POST {
            let mut response = text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{path} takes POST\n"),
            );
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
        let why = match scope {
            Scope::ReadOnly => "operator requests are served on the agent's unix socket only ([observe].listen); TCP is read-only\n",
            Scope::Operator => "not taken here\n",
        };
        return text(StatusCode::FORBIDDEN, why.into());
    }
    let verbose = request.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "verbose" || p.starts_with("verbose="))
    });
    let known = matches!(path, "/livez" | "/readyz" | "/status" | "/metrics");
    if !known {
        return text(
            StatusCode::NOT_FOUND,
            format!("no such path: {path}; try /livez, /readyz, /status, /metrics (and POST /drain, /app/restart on the unix socket)\n"),
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} takes GET\n", path),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/livez" => livez(verbose),
        "/readyz" => readyz(view, verbose),
        "/status" => {
            let doc = StatusDoc::now(view);
            let mut body = serde_json::to_vec_pretty(&doc).expect("the status always serializes");
            body.push(b'\n');
            respond(StatusCode::OK, "application/json", body)
        }
        _ => {
            let accept = request
                .headers()
                .get(hyper::header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let format = Format::from_accept(accept);
            let m = metrics();
            m.set_live(loops().stuck(tokio::time::Instant::now()).is_empty());
            m.set_ready(view.is_ready());
            respond(
                StatusCode::OK,
                format.content_type(),
                m.encode(format).into_bytes(),
            )
        }
    }
}

fn livez(verbose: bool) -> Response<Full<Bytes>> {
    let reports = loops().check(tokio::time::Instant::now());
    let stuck: Vec<&LoopReport> = reports.iter().filter(|r| r.stuck).collect();
    let mut body = if stuck.is_empty() {
        "ok\n".to_string()
    } else {
        let names: Vec<String> = stuck
            .iter()
            .map(|r| {
                format!(
                    "{} (no tick for {:.0}s; stuck after {:.0}s)",
                    r.name.as_str(),
                    r.since_tick_seconds,
                    r.stuck_after_seconds
                )
            })
            .collect();
        format!("stuck: {}\n", names.join(", "))
    };
    if verbose {
        if reports.is_empty() {
            body.push_str("no control loop is running\n");
        }
        for r in &reports {
            body.push_str(&format!(
                "[{}] {}: last tick {:.1}s ago, every {:.1}s, stuck after {:.0}s\n",
                if r.stuck { "-" } else { "+" },
                r.name.as_str(),
                r.since_tick_seconds,
                r.interval_seconds,
                r.stuck_after_seconds
            ));
        }
    }
    let status = if stuck.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    text(status, body)
}

fn readyz(view: &View, verbose: bool) -> Response<Full<Bytes>> {
    let conditions = view.readiness();
    let failing: Vec<String> = conditions
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    let mut body = if failing.is_empty() {
        "ready\n".to_string()
    } else {
        format!("not ready: {}\n", failing.join("; "))
    };
    if verbose {
        for c in &conditions {
            body.push_str(&format!(
                "[{}] {}: {}\n",
                if c.ok { "+" } else { "-" },
                c.name,
                c.detail
            ));
        }
    }
    let status = if failing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    text(status, body)
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body.into_bytes())
}

fn respond(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::asg::HookResult;
    use crate::model::lifecycle::{Event, NodeState};
    use http_body_util::BodyExt;

    fn ask(method: &str, uri: &str, view: &View) -> (StatusCode, String) {
        let request = Request::builder().method(method).uri(uri).body(()).unwrap();
        let response = answer(Scope::ReadOnly, &request, view);
        let status = response.status();
        let body = body_of(response);
        (status, body)
    }

    fn body_of(response: Response<Full<Bytes>>) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = rt
            .block_on(response.into_body().collect())
            .unwrap()
            .to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn in_service() -> View {
        let mut state = NodeState::new("i-1");
        for event in [
            Event::InstallSucceeded {
                release_sequence: 504,
            },
            Event::Healthy,
            Event::LaunchReleased(Some(HookResult::Continue)),
        ] {
            state.apply(event).unwrap();
        }
        View::of_state(&state, 100, Some("launch"), Some("terminate"))
    }

    #[test]
    fn unknown_paths_are_404_and_other_methods_405() {
        let view = in_service();
        let (status, body) = ask("GET", "/admin", &view);
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("/admin"), "{body}");
        for method in ["POST", "PUT", "DELETE"] {
            assert_eq!(
                ask(method, "/readyz", &view).0,
                StatusCode::METHOD_NOT_ALLOWED
            );
        }
        assert_eq!(ask("HEAD", "/readyz", &view).0, StatusCode::OK);
    }

    #[test]
    fn operator_paths_are_post_on_the_unix_socket_only() {
        let view = in_service();
        for path in ["/drain", "/app/restart"] {
            let post = Request::builder()
                .method("POST")
                .uri(path)
                .body(())
                .unwrap();
            assert_eq!(operator_request(Scope::ReadOnly, &post), None);
            let response = answer(Scope::ReadOnly, &post, &view);
            assert_eq!(response.status(), StatusCode::FORBIDDEN);
            assert!(body_of(response).contains("unix socket only"));
            assert!(operator_request(Scope::Operator, &post).is_some());
            for scope in [Scope::ReadOnly, Scope::Operator] {
                let get = Request::builder().method("GET").uri(path).body(()).unwrap();
                assert_eq!(operator_request(scope, &get), None);
                let response = answer(scope, &get, &view);
                assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
                assert_eq!(response.headers()[ALLOW], "POST");
            }
        }
    }

    #[test]
    fn readyz_lists_each_condition_when_verbose() {
        let (status, body) = ask("GET", "/readyz?verbose", &in_service());
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            "ready\n[+] in-service: phase in-service\n[+] launch-hook-released: answered CONTINUE\n[+] no-termination: none noticed\n[+] no-app-restart: none running\n"
        );
        let booting = View::of_state(&NodeState::new("i-1"), 100, Some("launch"), None);
        let (status, body) = ask("GET", "/readyz", &booting);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            "not ready: in-service: phase booting; launch-hook-released: not answered yet\n"
        );
    }

    #[test]
    fn status_is_the_view_with_nulls_for_what_later_releases_fill() {
        let (status, body) = ask("GET", "/status", &in_service());
        assert_eq!(status, StatusCode::OK);
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(doc["phase"], "in-service");
        assert_eq!(doc["ready"], true);
        assert_eq!(doc["launch_hook"]["result"], "CONTINUE");
        assert!(doc["cluster"].is_null() && doc["drift"].is_null(), "{doc}");
        let parsed: StatusDoc = serde_json::from_str(&body).expect("status parses back");
        assert_eq!(parsed.view.instance_id, "i-1");
    }
}
