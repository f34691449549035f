//! `packaging/iam-policy.json` grants exactly what the AWS adapters in `src/adapters/aws/` and the
//! preflight probes in `src/adapters/probes/` call: every SDK operation found in the source has its
//! IAM action in the policy, and the policy grants nothing the code does not need (apart from the
//! extras listed below with their reason).
//!
//! The object_storage probe is the exception on purpose: it checks TFE's own S3 and KMS grants
//! (the role is TFE's too), so this policy must not grant what TFE needs — a grant here would make
//! the probe pass where TFE then fails. It grants only what TFE never needs: deleting the
//! marker's own version in a versioned bucket, under the marker prefix.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// SDK fluent method (snake_case) → the IAM actions the operation needs.
/// A new operation in `src/adapters/aws/` fails the scan until it is added here (and to the policy).
const OPERATIONS: &[(&str, &[&str])] = &[
    // BatchGetSecretValue needs its own action and GetSecretValue on every secret it reads.
    (
        "batch_get_secret_value",
        &[
            "secretsmanager:BatchGetSecretValue",
            "secretsmanager:GetSecretValue",
        ],
    ),
    ("get_secret_value", &["secretsmanager:GetSecretValue"]),
    (
        "describe_auto_scaling_instances",
        &["autoscaling:DescribeAutoScalingInstances"],
    ),
    (
        "describe_lifecycle_hooks",
        &["autoscaling:DescribeLifecycleHooks"],
    ),
    (
        "record_lifecycle_action_heartbeat",
        &["autoscaling:RecordLifecycleActionHeartbeat"],
    ),
    (
        "complete_lifecycle_action",
        &["autoscaling:CompleteLifecycleAction"],
    ),
    // The object_storage probe: s3:ListBucket, s3:PutObject, s3:GetObject, s3:DeleteObject (and
    // KMS for SSE-KMS) are TFE's grants, see TFE_GRANTS; the version delete is this policy's.
    ("head_bucket", &[]),
    ("put_object", &[]),
    ("get_object", &[]),
    ("delete_object", &["s3:DeleteObjectVersion"]),
];

/// What TFE's own object-storage grant gives the role and the probe relies on: never in this
/// policy (see the module's comment).
const TFE_GRANTS: &[&str] = &[
    "s3:ListBucket",
    "s3:PutObject",
    "s3:GetObject",
    "s3:DeleteObject",
    "kms:GenerateDataKey",
];

/// Where preflight's markers live (`ports::probes::MARKER_PREFIX`).
const MARKER_PREFIX: &str = "tfe-node-agent-preflight/";

/// Methods on an SDK client that are not AWS operations.
const NOT_OPERATIONS: &[&str] = &["clone", "config"];

/// Actions the policy may grant although no SDK call maps to them, each with its reason.
const ALLOWED_EXTRAS: &[(&str, &str)] = &[(
    "kms:Decrypt",
    "secrets encrypted with a customer-managed key need kms:Decrypt on that key; \
     restricted to calls made through Secrets Manager by kms:ViaService",
)];

/// The statement actions that must never be on Resource "*".
const SCOPED_ACTIONS: &[&str] = &[
    "autoscaling:CompleteLifecycleAction",
    "autoscaling:RecordLifecycleActionHeartbeat",
    "secretsmanager:GetSecretValue",
    "kms:Decrypt",
    "s3:DeleteObjectVersion",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn policy() -> Value {
    let path = root().join("packaging/iam-policy.json");
    let text = std::fs::read_to_string(&path).expect("read packaging/iam-policy.json");
    serde_json::from_str(&text).expect("packaging/iam-policy.json is valid JSON")
}

fn statements(policy: &Value) -> &Vec<Value> {
    policy["Statement"]
        .as_array()
        .expect("Statement is an array")
}

/// `Action` / `Resource` may be one string or an array of strings.
fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().expect("string element").to_string())
            .collect(),
        other => panic!("expected a string or an array of strings, got {other}"),
    }
}

fn policy_actions(policy: &Value) -> BTreeSet<String> {
    statements(policy)
        .iter()
        .flat_map(|s| strings(&s["Action"]))
        .collect()
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The source without `//` comments, whitespace runs collapsed to one space and none left around
/// `.` or before `(`, so a call split over lines (`self.client\n    .op()`) reads `self.client.op()`.
fn normalize(source: &str) -> String {
    let code: Vec<&str> = source
        .lines()
        .map(|line| line.find("//").map_or(line, |i| &line[..i]))
        .collect();
    let collapsed = code
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    collapsed
        .replace(" .", ".")
        .replace(". ", ".")
        .replace(" (", "(")
}

/// Every `<receiver>client.<method>(` call where the receiver is `client`, `self.client` or any
/// `<expr>.client`, with the file it is in.
fn client_calls(source: &str) -> Vec<String> {
    let code = normalize(source);
    let mut calls = Vec::new();
    let mut from = 0;
    while let Some(pos) = code[from..].find("client.") {
        let start = from + pos;
        from = start + "client.".len();
        // `client` must be a whole identifier (not `my_client`, `Client`).
        if code[..start].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        let rest = &code[from..];
        let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
        if !name.is_empty() && rest[name.len()..].starts_with('(') {
            calls.push(name);
        }
    }
    calls
}

/// The folders whose code calls AWS.
const AWS_CALLERS: &[&str] = &["src/adapters/aws", "src/adapters/probes"];

fn aws_sources() -> Vec<(PathBuf, String)> {
    let mut files: Vec<PathBuf> = AWS_CALLERS
        .iter()
        .flat_map(|dir| {
            std::fs::read_dir(root().join(dir))
                .unwrap_or_else(|e| panic!("read {dir}: {e}"))
                .map(|e| e.expect("dir entry").path())
        })
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read source");
            (p, text)
        })
        // Of the probes, the ones on an AWS SDK: Redis and PostgreSQL clients are no IAM calls.
        .filter(|(p, text)| {
            !p.starts_with(root().join("src/adapters/probes")) || text.contains("aws_sdk_")
        })
        .collect()
}

fn rel(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The SDK operations the code calls, by method name, with the files calling them.
fn called_operations() -> BTreeMap<String, BTreeSet<String>> {
    let table: BTreeSet<&str> = OPERATIONS.iter().map(|(m, _)| *m).collect();
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut unknown = Vec::new();
    for (path, text) in aws_sources() {
        let calls = client_calls(&text);
        // A file that imports an SDK client (`use aws_sdk_…::Client;`) must show calls on it.
        if text
            .lines()
            .any(|l| l.starts_with("use aws_sdk_") && l.ends_with("::Client;"))
        {
            assert!(
                !calls.is_empty(),
                "{} uses an SDK client but the scan found no call on it: fix the scanner",
                rel(&path)
            );
        }
        for name in calls {
            if NOT_OPERATIONS.contains(&name.as_str()) {
                continue;
            }
            if !table.contains(name.as_str()) {
                unknown.push(format!("{}: client.{name}()", rel(&path)));
                continue;
            }
            found.entry(name).or_default().insert(rel(&path));
        }
        // A table operation called through some other receiver still counts.
        let code = normalize(&text);
        for op in &table {
            if code.contains(&format!(".{op}(")) {
                found.entry(op.to_string()).or_default().insert(rel(&path));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "SDK calls with no IAM mapping in tests/iam_policy.rs OPERATIONS \
         (add them there and to packaging/iam-policy.json): {unknown:#?}"
    );
    found
}

fn required_actions(called: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    OPERATIONS
        .iter()
        .filter(|(m, _)| called.contains_key(*m))
        .flat_map(|(_, actions)| actions.iter().map(|a| a.to_string()))
        .collect()
}

#[test]
fn scanner_sees_calls_split_over_lines() {
    let src = "let out = self\n            .client\n            .describe_lifecycle_hooks()\n\
               .send();\nself.client\n  .get_secret_value ()\n// client.not_code()\n\
               let my_client = x; my_client.ignored(); Client::new(c); return client.batch_get_secret_value();";
    assert_eq!(
        client_calls(src),
        [
            "describe_lifecycle_hooks",
            "get_secret_value",
            "batch_get_secret_value"
        ]
    );
}

#[test]
fn code_calls_every_known_operation_once_at_least() {
    let called = called_operations();
    let names: Vec<&str> = called.keys().map(String::as_str).collect();
    // Today's adapters call all ten; a removed call must also leave the policy (see no_extra).
    assert_eq!(
        names,
        [
            "batch_get_secret_value",
            "complete_lifecycle_action",
            "delete_object",
            "describe_auto_scaling_instances",
            "describe_lifecycle_hooks",
            "get_object",
            "get_secret_value",
            "head_bucket",
            "put_object",
            "record_lifecycle_action_heartbeat",
        ],
        "operations found in src/adapters/aws: {called:#?}"
    );
}

#[test]
fn policy_grants_every_action_the_code_needs() {
    let granted = policy_actions(&policy());
    let required = required_actions(&called_operations());
    let missing: Vec<_> = required.difference(&granted).collect();
    assert!(
        missing.is_empty(),
        "packaging/iam-policy.json lacks {missing:?}"
    );
}

#[test]
fn policy_grants_nothing_extra() {
    let policy = policy();
    let granted = policy_actions(&policy);
    let required = required_actions(&called_operations());
    for action in &granted {
        assert!(
            !action.contains('*'),
            "wildcard action {action} in the policy"
        );
    }
    let extra: Vec<_> = granted
        .iter()
        .filter(|a| !required.contains(*a) && !ALLOWED_EXTRAS.iter().any(|(x, _)| x == a))
        .collect();
    assert!(
        extra.is_empty(),
        "packaging/iam-policy.json grants actions no code needs: {extra:?}"
    );
}

#[test]
fn policy_shape() {
    let policy = policy();
    assert_eq!(policy["Version"], "2012-10-17");
    let mut sids = BTreeSet::new();
    for s in statements(&policy) {
        let sid = s["Sid"].as_str().expect("every statement has a Sid");
        assert!(sids.insert(sid.to_string()), "duplicate Sid {sid}");
        assert_eq!(s["Effect"], "Allow", "{sid}: only Allow statements");
        assert!(s.get("NotAction").is_none() && s.get("NotResource").is_none());
    }
}

#[test]
fn scoped_actions_are_not_on_every_resource() {
    let policy = policy();
    for s in statements(&policy) {
        let actions = strings(&s["Action"]);
        let resources = strings(&s["Resource"]);
        for action in actions
            .iter()
            .filter(|a| SCOPED_ACTIONS.contains(&a.as_str()))
        {
            assert!(
                resources.iter().all(|r| r != "*"),
                "{action} must be scoped, not on Resource \"*\""
            );
            if action.starts_with("autoscaling:") {
                assert!(
                    resources
                        .iter()
                        .all(|r| r.starts_with("arn:aws:autoscaling:")
                            && r.contains(":autoScalingGroupName/")),
                    "{action} must be scoped to the group ARN: {resources:?}"
                );
            }
            if action.starts_with("s3:") {
                assert!(
                    resources
                        .iter()
                        .all(|r| r.starts_with("arn:aws:s3:::${s3_bucket}/")
                            && r.ends_with(&format!("/{MARKER_PREFIX}*"))),
                    "{action} must be scoped to the marker prefix of TFE's bucket: {resources:?}"
                );
            }
            if action.starts_with("secretsmanager:") {
                assert!(
                    resources
                        .iter()
                        .all(|r| r.starts_with("arn:aws:secretsmanager:") && r.ends_with("-??????")),
                    "{action} must be scoped to secret ARNs: {resources:?}"
                );
            }
        }
        // Only what has no resource-level permissions may be on "*".
        if resources.iter().any(|r| r == "*") {
            for action in &actions {
                assert!(
                    [
                        "secretsmanager:BatchGetSecretValue",
                        "autoscaling:DescribeAutoScalingInstances",
                        "autoscaling:DescribeLifecycleHooks",
                    ]
                    .contains(&action.as_str()),
                    "{action} on Resource \"*\""
                );
            }
        }
    }
}

#[test]
fn kms_decrypt_only_through_secrets_manager() {
    let policy = policy();
    let kms: Vec<&Value> = statements(&policy)
        .iter()
        .filter(|s| strings(&s["Action"]).iter().any(|a| a.starts_with("kms:")))
        .collect();
    assert_eq!(kms.len(), 1, "one KMS statement");
    let s = kms[0];
    assert_eq!(strings(&s["Action"]), ["kms:Decrypt"]);
    assert_eq!(
        s["Condition"]["StringEquals"]["kms:ViaService"],
        "secretsmanager.${region}.amazonaws.com"
    );
    for r in strings(&s["Resource"]) {
        assert!(r.starts_with("arn:aws:kms:") && r.contains(":key/"), "{r}");
    }
}

#[test]
fn tfe_grants_stay_out_of_the_agent_policy() {
    let granted = policy_actions(&policy());
    for action in TFE_GRANTS {
        assert!(
            !granted.contains(*action),
            "{action} is TFE's grant: in this policy it would let the object_storage probe pass \
             where TFE fails"
        );
    }
}
