//! The object_storage preflight probe against moto's S3 (and KMS): a bucket that works, one that
//! is absent, a bucket policy denying PutObject, SSE-KMS with a key of moto's KMS, a versioned
//! bucket and an interrupted run's marker. The marker prefix is empty after every run, and the
//! secret access key appears in no message.
//!
//! What moto 5.2 enforces (read in its source and tried): an explicit Deny in a bucket policy on
//! object requests (403, no error code in the body) without IAM auth; IAM user policies only
//! with IAM auth on (`INITIAL_NO_AUTH_ACTION_COUNT`); SSE-KMS is recorded with the key id asked
//! for and never checked against KMS (an unknown or disabled key is accepted), so a KMS refusal
//! is covered by the adapter's unit tests on S3's documented error shapes instead.

mod common;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use common::Moto;
use serde_json::Value;
use tfe_node_agent::adapters::probes::SystemProbes;
use tfe_node_agent::ports::{ObjectStorageProbe, Probes, MARKER_PREFIX};
use tfe_node_agent::sys::secret::Secret;

const REGION: &str = "us-east-1";
/// The static key's secret: must never appear in what the probe says.
const SECRET_KEY: &str = "pfS3-secret-access-key-7f3e9b1c0d";

/// A probe with static keys at moto's URL as `s3_endpoint`.
fn probe(moto: &Moto, bucket: &str) -> ObjectStorageProbe {
    ObjectStorageProbe {
        bucket: bucket.into(),
        region: REGION.into(),
        endpoint: Some(moto.url.clone()),
        keys: Some(("AKIAPREFLIGHTTEST".into(), Secret::new(SECRET_KEY))),
        sse_kms: None,
        marker_key: format!("{MARKER_PREFIX}i-0123456789abcdef0"),
    }
}

/// The test's own S3 client (moto accepts any key).
fn s3(moto: &Moto) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(&moto.url)
        .force_path_style(true)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

async fn create_bucket(s3: &aws_sdk_s3::Client, bucket: &str) {
    s3.create_bucket().bucket(bucket).send().await.unwrap();
}

/// Every object and version under the marker prefix (delete markers too).
async fn under_prefix(s3: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    let out = s3
        .list_object_versions()
        .bucket(bucket)
        .prefix(MARKER_PREFIX)
        .send()
        .await
        .unwrap();
    let versions = out.versions().iter().map(|v| {
        format!(
            "{} version {}",
            v.key().unwrap_or(""),
            v.version_id().unwrap_or("")
        )
    });
    let markers = out
        .delete_markers()
        .iter()
        .map(|m| format!("{} delete marker", m.key().unwrap_or("")));
    versions.chain(markers).collect()
}

fn assert_no_secret(text: &str) {
    assert!(!text.contains(SECRET_KEY), "the secret key leaked: {text}");
}

#[tokio::test]
async fn a_working_bucket_passes_and_keeps_no_marker() {
    let moto = Moto::start();
    let s3 = s3(&moto);
    let probes = SystemProbes::default();

    create_bucket(&s3, "tfe-data").await;
    let p = probe(&moto, "tfe-data");
    let detail = probes.object_storage(&p).await.expect("the probe passes");
    assert_eq!(detail, "bucket tfe-data: head, put, get, delete ok");
    assert_eq!(under_prefix(&s3, "tfe-data").await, Vec::<String>::new());

    // An interrupted run left its marker: the next run on the same instance removes it.
    s3.put_object()
        .bucket("tfe-data")
        .key(&p.marker_key)
        .body(ByteStream::from_static(b"left by an interrupted run"))
        .send()
        .await
        .unwrap();
    assert_eq!(under_prefix(&s3, "tfe-data").await.len(), 1);
    probes.object_storage(&p).await.expect("the probe passes");
    assert_eq!(under_prefix(&s3, "tfe-data").await, Vec::<String>::new());

    // A versioned bucket: the version the probe wrote is deleted, no delete marker stays.
    create_bucket(&s3, "tfe-versioned").await;
    s3.put_bucket_versioning()
        .bucket("tfe-versioned")
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let p = probe(&moto, "tfe-versioned");
    probes.object_storage(&p).await.expect("the probe passes");
    assert_eq!(
        under_prefix(&s3, "tfe-versioned").await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn failures_name_the_bucket_the_step_and_what_to_do() {
    let moto = Moto::start();
    let s3 = s3(&moto);
    let probes = SystemProbes::default();

    // Absent.
    let err = probes
        .object_storage(&probe(&moto, "tfe-absent"))
        .await
        .expect_err("no such bucket")
        .to_string();
    assert_eq!(
        err,
        format!(
            "{}/tfe-absent: HeadBucket tfe-absent: NoSuchBucket: the bucket does not exist in \
             us-east-1: check s3_bucket and s3_region (HTTP 404)",
            moto.url
        )
    );
    assert_no_secret(&err);

    // A bucket policy denying PutObject: HeadBucket passes, the put is refused, nothing stays.
    create_bucket(&s3, "tfe-denied").await;
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "NoWrites", "Effect": "Deny", "Principal": "*",
            "Action": "s3:PutObject", "Resource": "arn:aws:s3:::tfe-denied/*"
        }]
    });
    s3.put_bucket_policy()
        .bucket("tfe-denied")
        .policy(policy.to_string())
        .send()
        .await
        .unwrap();
    let err = probes
        .object_storage(&probe(&moto, "tfe-denied"))
        .await
        .expect_err("the put is denied")
        .to_string();
    assert_eq!(
        err,
        format!(
            "{}/tfe-denied: PutObject {MARKER_PREFIX}i-0123456789abcdef0: AccessDenied: the \
             node's role may not write to the bucket: allow s3:PutObject on \
             arn:aws:s3:::tfe-denied/{MARKER_PREFIX}* (and check the bucket policy) (HTTP 403)",
            moto.url
        )
    );
    assert_no_secret(&err);
    assert_eq!(under_prefix(&s3, "tfe-denied").await, Vec::<String>::new());

    // Nothing listens at the endpoint: the endpoint is named, a bare host means HTTPS.
    let mut p = probe(&moto, "tfe-data");
    p.endpoint = Some("127.0.0.1:9".into());
    let err = probes
        .object_storage(&p)
        .await
        .expect_err("nothing listens")
        .to_string();
    assert!(
        err.starts_with(
            "https://127.0.0.1:9/tfe-data: HeadBucket tfe-data: the request could not be sent: "
        ),
        "{err}"
    );
    assert_no_secret(&err);
}

#[tokio::test]
async fn sse_kms_writes_the_marker_with_the_configured_key() {
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("requests.jsonl");
    let moto = Moto::start_with(&[
        ("MOTO_ENABLE_RECORDING", "1"),
        ("MOTO_RECORDER_FILEPATH", recording.to_str().unwrap()),
    ]);
    let s3 = s3(&moto);
    create_bucket(&s3, "tfe-kms").await;
    let key = moto.kms_create_key();

    let mut p = probe(&moto, "tfe-kms");
    p.sse_kms = Some(Some(key.clone()));
    let detail = SystemProbes::default()
        .object_storage(&p)
        .await
        .expect("the probe passes");
    // The key is what the stored object said when read back (moto's record of it).
    assert_eq!(
        detail,
        format!("bucket tfe-kms: head, put (aws:kms key {key}), get, delete ok")
    );
    assert_eq!(under_prefix(&s3, "tfe-kms").await, Vec::<String>::new());

    // And the put asked for exactly that: moto's recording of the request.
    let text = std::fs::read_to_string(&recording).unwrap();
    let puts: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| {
            r["method"] == "PUT"
                && r["url"]
                    .as_str()
                    .unwrap_or("")
                    .contains("/tfe-kms/tfe-node-agent-preflight/")
        })
        .collect();
    assert_eq!(puts.len(), 1, "one marker put: {text}");
    let headers = &puts[0]["headers"];
    let header = |name: &str| {
        headers
            .as_object()
            .unwrap()
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_str())
            .map(str::to_string)
    };
    assert_eq!(
        header("x-amz-server-side-encryption").as_deref(),
        Some("aws:kms")
    );
    assert_eq!(
        header("x-amz-server-side-encryption-aws-kms-key-id").as_deref(),
        Some(key.as_str())
    );
    // Signed with the settings' static keys, not the environment's.
    assert!(
        header("authorization")
            .unwrap_or_default()
            .contains("Credential=AKIAPREFLIGHTTEST/"),
        "{headers}"
    );
    assert_no_secret(&text);
}

/// Every check but object_storage skipped (they have their own targets). The command runs the
/// checks whatever `[preflight].enabled` says (that is the boot's switch).
const SKIP_OTHERS: &str = "# skip = []                       # e.g. [\"license\", \"docker\"]: checks not to run (the join guard is not one) => skip = [\"redis\", \"postgres\", \"license\", \"disk\", \"docker\", \"imds\", \"clock\", \"admin_ui\", \"vault_peers\"]";

/// `tfe-node-agent preflight --json` in `node`: its exit code, the object_storage check, and
/// everything it printed.
fn preflight(node: &common::Node, env: &[(&str, &str)]) -> (Option<i32>, Value, String) {
    let out = node
        .agent(&["preflight", "--json"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {stderr}"));
    let check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "object_storage")
        .cloned()
        .unwrap_or_else(|| panic!("no object_storage check: {stdout}"));
    (out.status.code(), check, format!("{stdout}\n{stderr}"))
}

#[tokio::test]
async fn command_with_the_instance_profile_and_the_sdk_endpoint_variable_passes() {
    let node = common::Node::new();
    let s3 = s3(&node.moto);
    create_bucket(&s3, "tfe-data").await;
    node.write_config(SKIP_OTHERS);
    // The default chain reads the environment's keys here (an instance profile on EC2), and
    // the SDK's own variable points S3 at moto.
    let (code, check, output) = preflight(&node, &[("AWS_ENDPOINT_URL_S3", &node.moto.url)]);
    assert_eq!(code, Some(0), "{output}");
    assert_eq!(check["verdict"], "pass", "{output}");
    assert_eq!(check["target"], "s3://tfe-data");
    assert_eq!(
        check["detail"], "bucket tfe-data: head, put, get, delete ok",
        "{output}"
    );
    assert_eq!(under_prefix(&s3, "tfe-data").await, Vec::<String>::new());
}

#[tokio::test]
async fn command_with_static_keys_names_an_absent_bucket_and_never_the_secret_key() {
    let mut shared = common::shared_secret();
    shared["aws_secret_access_key"] = SECRET_KEY.into();
    let node = common::Node::with(common::Hooks::default(), shared);
    node.write_config(&format!(
        "aws_instance_profile = \"1\" => aws_instance_profile = \"0\"\\naws_access_key_id = \"AKIAPREFLIGHTTEST\"\\ns3_endpoint = \"{}\"\n{SKIP_OTHERS}",
        node.moto.url
    ));
    let (code, check, output) = preflight(&node, &[]);
    assert_eq!(code, Some(12), "{output}");
    assert_eq!(check["verdict"], "fail", "{output}");
    assert_eq!(
        check["detail"],
        format!(
            "{}/tfe-data: HeadBucket tfe-data: NoSuchBucket: the bucket does not exist in \
             us-east-1: check s3_bucket and s3_region (HTTP 404)",
            node.moto.url
        ),
        "{output}"
    );
    assert_no_secret(&output);
}
