//! moto's server (Secrets Manager, IAM for per-node accounts, S3 and KMS for preflight) and the
//! AWS keys the agent signs with.

use super::processes::{repo, spawn_on_any_port, Proc};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn venv() -> PathBuf {
    let v = std::env::var_os("TFE_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv"));
    assert!(
        v.join("bin/moto_server").exists(),
        "{}/bin/moto_server missing: run tests/setup.sh first (the README's test command does)",
        v.display()
    );
    v
}

/// moto's server.
pub struct Moto {
    pub url: String,
    pub(super) _proc: Proc,
}

impl Moto {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// With moto's own settings in its environment, e.g. `MOTO_ENABLE_RECORDING` +
    /// `MOTO_RECORDER_FILEPATH` (every request, headers included, appended to that file as JSON
    /// lines: what a test asks of a request once the object it made is gone).
    pub fn start_with(env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(venv().join("bin/moto_server"));
        cmd.args(["-H", "127.0.0.1", "-p", "0"]);
        cmd.envs(env.iter().copied());
        // Werkzeug prints this once the socket is bound.
        let (proc, port) =
            spawn_on_any_port(cmd, "Running on http://127.0.0.1:", Duration::from_secs(30));
        Moto {
            url: format!("http://127.0.0.1:{port}"),
            _proc: proc,
        }
    }

    /// CreateSecret over Secrets Manager's JSON protocol (SecretString or base64 SecretBinary).
    pub fn put_secret(&self, name: &str, value: SecretValue) {
        self.put_secret_in(None, name, value);
    }

    /// CreateSecret in moto account `account` (None: moto's default account).
    pub fn put_secret_in(&self, account: Option<&str>, name: &str, value: SecretValue) {
        let mut body = json!({ "Name": name });
        match value {
            SecretValue::String(s) => body["SecretString"] = json!(s),
            SecretValue::Binary(b64) => body["SecretBinary"] = json!(b64),
        }
        self.secrets_call(account, "CreateSecret", &body);
    }

    /// One Secrets Manager call (e.g. "DeleteSecret") in `account`; returns the response body.
    pub fn secrets_call(&self, account: Option<&str>, action: &str, body: &Value) -> String {
        let mut req = ureq::post(&self.url)
            .set("Content-Type", "application/x-amz-json-1.1")
            .set("X-Amz-Target", &format!("secretsmanager.{action}"))
            .set("Authorization", "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/secretsmanager/aws4_request, SignedHeaders=host, Signature=x");
        if let Some(account) = account {
            req = req.set("x-moto-account-id", account);
        }
        req.send_string(&body.to_string())
            .unwrap_or_else(|e| panic!("{action}: {e}"))
            .into_string()
            .unwrap()
    }

    /// One IAM Query call (form `params` without Version) in `account`; returns the XML body.
    pub fn iam_call(&self, account: Option<&str>, params: &str) -> String {
        let mut req = ureq::post(&self.url)
            .set("Content-Type", "application/x-www-form-urlencoded")
            .set("Authorization", "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=x");
        if let Some(account) = account {
            req = req.set("x-moto-account-id", account);
        }
        req.send_string(&format!("{params}&Version=2010-05-08"))
            .unwrap_or_else(|e| panic!("IAM {params}: {e}"))
            .into_string()
            .unwrap()
    }

    /// KMS CreateKey in moto's default account: the new key's id.
    pub fn kms_create_key(&self) -> String {
        let body = ureq::post(&self.url)
            .set("Content-Type", "application/x-amz-json-1.1")
            .set("X-Amz-Target", "TrentService.CreateKey")
            .set("Authorization", "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=x")
            .send_string("{}")
            .unwrap_or_else(|e| panic!("KMS CreateKey: {e}"))
            .into_string()
            .unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        v["KeyMetadata"]["KeyId"]
            .as_str()
            .unwrap_or_else(|| panic!("no KeyId in {body}"))
            .to_string()
    }

    /// An IAM user and its access key in `account`: moto serves a request signed with that key
    /// from that account, so nodes sharing one moto server each see only their own secrets.
    pub fn access_key_in(&self, account: Option<&str>, user: &str) -> AwsKey {
        self.iam_call(account, &format!("Action=CreateUser&UserName={user}"));
        let xml = self.iam_call(account, &format!("Action=CreateAccessKey&UserName={user}"));
        let field = |name: &str| -> String {
            let open = format!("<{name}>");
            let start = xml
                .find(&open)
                .unwrap_or_else(|| panic!("no {name} in {xml}"))
                + open.len();
            xml[start..start + xml[start..].find('<').unwrap()].to_string()
        };
        AwsKey {
            id: field("AccessKeyId"),
            secret: field("SecretAccessKey"),
        }
    }
}

/// Static AWS credentials for the agent.
#[derive(Debug, Clone)]
pub struct AwsKey {
    pub id: String,
    pub secret: String,
}

impl AwsKey {
    /// Any key: moto (with no IAM enforcement) and the emulator take it, in moto's default account.
    pub fn testing() -> Self {
        AwsKey {
            id: "testing".into(),
            secret: "testing".into(),
        }
    }
}

pub enum SecretValue {
    String(String),
    Binary(String),
}
