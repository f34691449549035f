//! EC2 DescribeLaunchTemplateVersions, the repave's one EC2 call, against moto's EC2: the agent's
//! own signed Query request (`GroupsClient::describe_template_version`) through the project's
//! `sdk_config`, with templates and versions made through moto's EC2 Query API. By id and by
//! name; `$Latest`, `$Default` and a number; an unknown version or template is `None`; gzip'd user
//! data is decoded and a version without user data has none; a session token is signed into the
//! request (moto's recording of it); an endpoint that refuses or never answers is a transient
//! error naming the endpoint, within the bounded time. The project's Auto Scaling emulator, which
//! the repave's end-to-end tests use, answers the same client the same way.

mod common;

use aws_config::SdkConfig;
use aws_sdk_autoscaling::config::{Credentials, SharedCredentialsProvider};
use base64::Engine;
use common::{Emulator, Moto};
use flate2::write::GzEncoder;
use serde_json::Value;
use std::io::Write;
use std::time::{Duration, Instant};
use tfe_node_agent::adapters::{sdk_config, GroupsClient};
use tfe_node_agent::ports::{GroupControl, TemplateRef, TemplateVersion};

const REGION: &str = "us-east-1";
const SESSION_TOKEN: &str = "launch-templates-session-token-4f1c";
const CLOUD_INIT_V1: &str = "#cloud-config\nwrite_files:\n  - path: /etc/tfe-node-agent/agent.toml\n    content: |\n      # v1\n";
const CLOUD_INIT_V2: &str = "#cloud-config\nwrite_files:\n  - path: /etc/tfe-node-agent/agent.toml\n    content: |\n      # v2, gzip'd\n";

/// One EC2 Query call to moto (any signature is taken); the XML answer.
fn ec2_call(moto: &Moto, params: &[(&str, &str)]) -> String {
    let body = params
        .iter()
        .chain([("Version", "2016-11-15")].iter())
        .map(|(k, v)| format!("{k}={}", form(v)))
        .collect::<Vec<_>>()
        .join("&");
    ureq::post(&moto.url)
        .set("Content-Type", "application/x-www-form-urlencoded")
        .set("Authorization", "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=x")
        .send_string(&body)
        .unwrap_or_else(|e| panic!("EC2 {params:?}: {e}"))
        .into_string()
        .unwrap()
}

fn form(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn field(xml: &str, name: &str) -> String {
    let open = format!("<{name}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no {name} in {xml}"))
        + open.len();
    xml[start..start + xml[start..].find('<').unwrap()].to_string()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn gzip(text: &str) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(text.as_bytes()).unwrap();
    gz.finish().unwrap()
}

/// A template with three versions: 1 plain user data (the default), 2 gzip'd user data, 3 none.
/// Its id.
fn make_template(moto: &Moto, name: &str) -> String {
    let v1 = b64(CLOUD_INIT_V1.as_bytes());
    let xml = ec2_call(
        moto,
        &[
            ("Action", "CreateLaunchTemplate"),
            ("LaunchTemplateName", name),
            ("LaunchTemplateData.ImageId", "ami-12c6146b"),
            ("LaunchTemplateData.UserData", &v1),
        ],
    );
    let id = field(&xml, "launchTemplateId");
    let v2 = b64(&gzip(CLOUD_INIT_V2));
    ec2_call(
        moto,
        &[
            ("Action", "CreateLaunchTemplateVersion"),
            ("LaunchTemplateId", &id),
            ("LaunchTemplateData.ImageId", "ami-12c6146b"),
            ("LaunchTemplateData.UserData", &v2),
        ],
    );
    ec2_call(
        moto,
        &[
            ("Action", "CreateLaunchTemplateVersion"),
            ("LaunchTemplateId", &id),
            ("LaunchTemplateData.ImageId", "ami-12c6146b"),
        ],
    );
    id
}

/// The project's SDK configuration pointed at `endpoint`, with a session token.
async fn config(endpoint: &str, attempt: Duration) -> SdkConfig {
    sdk_config(REGION, attempt, Duration::from_secs(1))
        .await
        .into_builder()
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "AKIALAUNCHTEMPLATES",
            "launch-templates-secret-key",
            Some(SESSION_TOKEN.into()),
            None,
            "test",
        )))
        .build()
}

fn by_id(id: &str, version: &str) -> TemplateRef {
    TemplateRef {
        id: Some(id.into()),
        name: None,
        version: version.into(),
    }
}

fn by_name(name: &str, version: &str) -> TemplateRef {
    TemplateRef {
        id: None,
        name: Some(name.into()),
        version: version.into(),
    }
}

/// A recorded request's body (moto stores it base64 when `body_encoded`).
fn body(request: &Value) -> String {
    let raw = request["body"].as_str().unwrap_or_default();
    if request["body_encoded"] == true {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(raw)
            .unwrap();
        String::from_utf8_lossy(&bytes).into_owned()
    } else {
        raw.to_string()
    }
}

#[tokio::test]
async fn versions_by_id_and_name_with_user_data_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("requests.jsonl");
    let moto = Moto::start_with(&[
        ("MOTO_ENABLE_RECORDING", "1"),
        ("MOTO_RECORDER_FILEPATH", recording.to_str().unwrap()),
    ]);
    let id = make_template(&moto, "tfe-nodes");
    let groups = GroupsClient::new(&config(&moto.url, Duration::from_secs(5)).await);
    let get = |t: TemplateRef| {
        let groups = groups.clone();
        async move { groups.describe_template_version(&t).await }
    };

    let v1 = TemplateVersion {
        template_id: id.clone(),
        template_name: "tfe-nodes".into(),
        version: 1,
        default_version: true,
        user_data: Some(CLOUD_INIT_V1.into()),
    };
    let v2 = TemplateVersion {
        version: 2,
        default_version: false,
        user_data: Some(CLOUD_INIT_V2.into()),
        ..v1.clone()
    };
    let v3 = TemplateVersion {
        version: 3,
        default_version: false,
        user_data: None,
        ..v1.clone()
    };

    // A number, by id and by name.
    assert_eq!(get(by_id(&id, "1")).await.unwrap(), Some(v1.clone()));
    assert_eq!(
        get(by_name("tfe-nodes", "1")).await.unwrap(),
        Some(v1.clone())
    );
    // Gzip'd user data, decoded.
    assert_eq!(get(by_id(&id, "2")).await.unwrap(), Some(v2.clone()));
    // `$Latest` is version 3, which has no user data.
    assert_eq!(get(by_id(&id, "$Latest")).await.unwrap(), Some(v3.clone()));
    assert_eq!(
        get(by_name("tfe-nodes", "$Latest")).await.unwrap(),
        Some(v3)
    );
    // `$Default` is 1, until the default moves to 2.
    assert_eq!(get(by_id(&id, "$Default")).await.unwrap(), Some(v1.clone()));
    ec2_call(
        &moto,
        &[
            ("Action", "ModifyLaunchTemplate"),
            ("LaunchTemplateId", &id),
            ("SetDefaultVersion", "2"),
        ],
    );
    let v2_default = TemplateVersion {
        default_version: true,
        ..v2
    };
    assert_eq!(
        get(by_name("tfe-nodes", "$Default")).await.unwrap(),
        Some(v2_default)
    );

    // Unknown: a version, a template id, a template name.
    assert_eq!(get(by_id(&id, "9")).await.unwrap(), None);
    assert_eq!(get(by_name("tfe-nodes", "9")).await.unwrap(), None);
    assert_eq!(get(by_id("lt-0123456789abcdef0", "1")).await.unwrap(), None);
    assert_eq!(
        get(by_name("no-such-template", "$Latest")).await.unwrap(),
        None
    );

    // Every request of the agent was signed for ec2 with the session token in a signed header.
    let text = std::fs::read_to_string(&recording).unwrap();
    let ours: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| body(r).contains("Action=DescribeLaunchTemplateVersions"))
        .collect();
    assert_eq!(ours.len(), 11, "the agent's requests: {text}");
    for r in &ours {
        let headers = r["headers"].as_object().unwrap();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("no {name} header in {r}"))
                .to_string()
        };
        assert_eq!(header("X-Amz-Security-Token"), SESSION_TOKEN);
        let auth = header("Authorization");
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIALAUNCHTEMPLATES/")
                && auth.contains(&format!("/{REGION}/ec2/aws4_request"))
                && auth.contains("x-amz-security-token"),
            "{auth}"
        );
        assert!(!r.to_string().contains("launch-templates-secret-key"));
    }
}

#[tokio::test]
async fn the_emulator_answers_like_ec2() {
    let emulator = Emulator::start();
    let view = emulator.post(
        "/_emulator/launch-templates",
        serde_json::json!({"name": "tfe-nodes", "versions": [
            {"user_data": CLOUD_INIT_V1}, {"user_data": CLOUD_INIT_V2}, {}
        ]}),
    );
    let id = view["id"].as_str().unwrap().to_string();
    let groups = GroupsClient::new(&config(&emulator.url, Duration::from_secs(5)).await);
    let v1 = TemplateVersion {
        template_id: id.clone(),
        template_name: "tfe-nodes".into(),
        version: 1,
        default_version: true,
        user_data: Some(CLOUD_INIT_V1.into()),
    };
    let get = |t: TemplateRef| {
        let groups = groups.clone();
        async move { groups.describe_template_version(&t).await.unwrap() }
    };
    assert_eq!(get(by_id(&id, "$Default")).await, Some(v1.clone()));
    assert_eq!(
        get(by_name("tfe-nodes", "2")).await,
        Some(TemplateVersion {
            version: 2,
            default_version: false,
            user_data: Some(CLOUD_INIT_V2.into()),
            ..v1.clone()
        })
    );
    assert_eq!(
        get(by_id(&id, "$Latest")).await,
        Some(TemplateVersion {
            version: 3,
            default_version: false,
            user_data: None,
            ..v1
        })
    );
    assert_eq!(get(by_id(&id, "4")).await, None);
    assert_eq!(get(by_name("no-such-template", "1")).await, None);
    assert_eq!(get(by_id("lt-0123456789abcdef0", "1")).await, None);
    assert_eq!(emulator.api_calls("DescribeLaunchTemplateVersions"), 6);
}

#[tokio::test]
async fn a_refused_endpoint_is_a_transient_error_naming_it() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let groups = GroupsClient::new(&config(&endpoint, Duration::from_secs(2)).await);
    let started = Instant::now();
    let err = groups
        .describe_template_version(&by_id("lt-0123456789abcdef0", "$Latest"))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(err.is_transient(), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("DescribeLaunchTemplateVersions failed: ")
            && text.contains(&endpoint)
            && text.contains("lt-0123456789abcdef0")
            && text.contains("3 tries"),
        "{text}"
    );
    assert!(!text.contains("launch-templates-secret-key") && !text.contains(SESSION_TOKEN));
    // Three tries, with the SDK's backoff between them (at most 1 s, then 2 s).
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn a_silent_endpoint_is_bounded_by_the_attempt_timeout() {
    // Accepted by the kernel's backlog, never answered.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let groups = GroupsClient::new(&config(&endpoint, Duration::from_secs(1)).await);
    let started = Instant::now();
    let err = groups
        .describe_template_version(&by_name("tfe-nodes", "1"))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(err.is_transient(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&endpoint)
            && text.contains("'tfe-nodes'")
            && text.contains("attempt timeout"),
        "{text}"
    );
    // Three 1 s attempts and two backoffs (at most 1 s and 2 s).
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(8),
        "{took:?}"
    );
    drop(listener);
}
