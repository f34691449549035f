//! Two policies, each granting exactly what its code calls: every SDK operation (and EC2 Query
//! action) found in the source has its IAM actions in the policy, and the policy grants nothing the
//! code does not need (apart from the extras listed below with their reason).
//!
//! - `packaging/iam-policy.json`, the node's: the AWS adapters in `src/adapters/aws/` but the
//!   repave's own (`groups.rs`, `ec2.rs`), and the preflight probes in `src/adapters/probes/`.
//! - `packaging/iam-repave-policy.json`, the machine or CI that runs `repave`: `groups.rs`, `ec2.rs`
//!   and `secrets_manager.rs` (the orchestrator reads the cluster store's password from the shared
//!   secret, through the node's own adapter). A node never changes its group: none of the repave's
//!   calls may be in the node's policy.
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
    // The repave (groups.rs).
    (
        "describe_auto_scaling_groups",
        &["autoscaling:DescribeAutoScalingGroups"],
    ),
    // Changing a group's launch template needs the caller to be allowed to launch from it
    // (ec2:RunInstances), to tag what it launches when the template has tag specifications
    // (ec2:CreateTags) and to pass its instance profile's role (iam:PassRole): the nodes' template
    // has both. AWS checks them at UpdateAutoScalingGroup, not at each launch.
    (
        "update_auto_scaling_group",
        &[
            "autoscaling:UpdateAutoScalingGroup",
            "ec2:RunInstances",
            "ec2:CreateTags",
            "iam:PassRole",
        ],
    ),
    ("suspend_processes", &["autoscaling:SuspendProcesses"]),
    ("resume_processes", &["autoscaling:ResumeProcesses"]),
    // The object_storage probe: s3:ListBucket, s3:PutObject, s3:GetObject, s3:DeleteObject (and
    // KMS for SSE-KMS) are TFE's grants, see TFE_GRANTS; the version delete is this policy's.
    ("head_bucket", &[]),
    ("put_object", &[]),
    ("get_object", &[]),
    ("delete_object", &["s3:DeleteObjectVersion"]),
];

/// EC2 Query actions (ec2.rs signs its own request: `const ACTION: &str = "…";`) → IAM actions.
const QUERY_ACTIONS: &[(&str, &[&str])] = &[(
    "DescribeLaunchTemplateVersions",
    &["ec2:DescribeLaunchTemplateVersions"],
)];

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

/// The statement actions that must never be on Resource "*" (ec2:RunInstances may, under its
/// launch template condition: checked on its own).
const SCOPED_ACTIONS: &[&str] = &[
    "autoscaling:CompleteLifecycleAction",
    "autoscaling:RecordLifecycleActionHeartbeat",
    "autoscaling:UpdateAutoScalingGroup",
    "autoscaling:SuspendProcesses",
    "autoscaling:ResumeProcesses",
    "secretsmanager:GetSecretValue",
    "kms:Decrypt",
    "s3:DeleteObjectVersion",
    "ec2:CreateTags",
    "iam:PassRole",
];

/// What has no resource-level permissions and so may be on "*" without a condition.
const UNSCOPED_ACTIONS: &[&str] = &[
    "secretsmanager:BatchGetSecretValue",
    "autoscaling:DescribeAutoScalingInstances",
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeLifecycleHooks",
    "ec2:DescribeLaunchTemplateVersions",
];

/// The repave's own adapter files: never the node's calls.
const REPAVE_FILES: &[&str] = &["src/adapters/aws/groups.rs", "src/adapters/aws/ec2.rs"];
/// Node adapter files the repave calls too.
const SHARED_FILES: &[&str] = &["src/adapters/aws/secrets_manager.rs"];

/// Which code a policy is for.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Node,
    Repave,
}

impl Who {
    fn file(self) -> &'static str {
        match self {
            Who::Node => "packaging/iam-policy.json",
            Who::Repave => "packaging/iam-repave-policy.json",
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn policy(who: Who) -> Value {
    let path = root().join(who.file());
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", who.file()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", who.file()))
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

fn all_aws_sources() -> Vec<(PathBuf, String)> {
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

/// The files whose calls `who`'s policy must grant.
fn aws_sources(who: Who) -> Vec<(PathBuf, String)> {
    let is = |p: &Path, list: &[&str]| list.iter().any(|f| p == root().join(f));
    all_aws_sources()
        .into_iter()
        .filter(|(p, _)| match who {
            Who::Node => !is(p, REPAVE_FILES),
            Who::Repave => is(p, REPAVE_FILES) || is(p, SHARED_FILES),
        })
        .collect()
}

fn rel(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The EC2 Query actions a file declares (`const ACTION: &str = "…";`).
fn query_actions(source: &str) -> Vec<String> {
    let code = normalize(source);
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(pos) = code[from..].find("const ACTION: &str = \"") {
        let start = from + pos + "const ACTION: &str = \"".len();
        let end = start + code[start..].find('"').expect("closing quote");
        found.push(code[start..end].to_string());
        from = end;
    }
    found
}

/// The SDK operations (by method name) and Query actions `who`'s code calls, with the files
/// calling them.
fn called_operations(who: Who) -> BTreeMap<String, BTreeSet<String>> {
    let table: BTreeSet<&str> = OPERATIONS.iter().map(|(m, _)| *m).collect();
    let queries: BTreeSet<&str> = QUERY_ACTIONS.iter().map(|(a, _)| *a).collect();
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut unknown = Vec::new();
    for (path, text) in aws_sources(who) {
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
        // A file that builds a Query request names its action in the constant the scan reads.
        let actions = query_actions(&text);
        if text.contains("\"Action={") || text.contains("\"Action=") {
            assert!(
                !actions.is_empty(),
                "{} builds a Query request but declares no `const ACTION: &str`: fix the scanner",
                rel(&path)
            );
        }
        for action in actions {
            if !queries.contains(action.as_str()) {
                unknown.push(format!("{}: Query action {action}", rel(&path)));
                continue;
            }
            found.entry(action).or_default().insert(rel(&path));
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
        "AWS calls with no IAM mapping in tests/iam_policy.rs OPERATIONS or QUERY_ACTIONS \
         (add them there and to the policy): {unknown:#?}"
    );
    found
}

fn required_actions(called: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    OPERATIONS
        .iter()
        .chain(QUERY_ACTIONS)
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
fn scanner_sees_query_actions() {
    let src = "/// doc\npub(crate) const ACTION: &str = \"DescribeLaunchTemplateVersions\";\n\
               // const ACTION: &str = \"InComment\";\nlet b = format!(\"Action={ACTION}\");";
    assert_eq!(query_actions(src), ["DescribeLaunchTemplateVersions"]);
}

#[test]
fn code_calls_every_known_operation_once_at_least() {
    let node = called_operations(Who::Node);
    let names: Vec<&str> = node.keys().map(String::as_str).collect();
    // Today's node adapters call all ten; a removed call must also leave the policy (see no_extra).
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
        "operations found in the node's adapters: {node:#?}"
    );
    let repave = called_operations(Who::Repave);
    let names: Vec<&str> = repave.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "DescribeLaunchTemplateVersions",
            "batch_get_secret_value",
            "describe_auto_scaling_groups",
            "describe_lifecycle_hooks",
            "get_secret_value",
            "resume_processes",
            "suspend_processes",
            "update_auto_scaling_group",
        ],
        "operations found in the repave's adapters: {repave:#?}"
    );
}

/// Actions the policy may grant although no call maps to them, each with its reason.
fn allowed_extras(_who: Who) -> &'static [(&'static str, &'static str)] {
    ALLOWED_EXTRAS
}

#[test]
fn policies_grant_every_action_the_code_needs() {
    for who in [Who::Node, Who::Repave] {
        let granted = policy_actions(&policy(who));
        let required = required_actions(&called_operations(who));
        let missing: Vec<_> = required.difference(&granted).collect();
        assert!(missing.is_empty(), "{} lacks {missing:?}", who.file());
    }
}

#[test]
fn policies_grant_nothing_extra() {
    for who in [Who::Node, Who::Repave] {
        let policy = policy(who);
        let granted = policy_actions(&policy);
        let required = required_actions(&called_operations(who));
        for action in &granted {
            assert!(
                !action.contains('*'),
                "wildcard action {action} in {}",
                who.file()
            );
        }
        let extra: Vec<_> = granted
            .iter()
            .filter(|a| !required.contains(*a) && !allowed_extras(who).iter().any(|(x, _)| x == a))
            .collect();
        assert!(
            extra.is_empty(),
            "{} grants actions no code needs: {extra:?}",
            who.file()
        );
    }
}

#[test]
fn a_node_is_never_allowed_to_change_its_group() {
    let node = policy_actions(&policy(Who::Node));
    let repave_only: BTreeSet<String> = required_actions(&called_operations(Who::Repave))
        .difference(&required_actions(&called_operations(Who::Node)))
        .cloned()
        .collect();
    assert!(repave_only.contains("autoscaling:UpdateAutoScalingGroup"));
    let leaked: Vec<_> = repave_only.intersection(&node).collect();
    assert!(
        leaked.is_empty(),
        "packaging/iam-policy.json grants the repave's {leaked:?}"
    );
}

#[test]
fn policy_shape() {
    for who in [Who::Node, Who::Repave] {
        let policy = policy(who);
        assert_eq!(policy["Version"], "2012-10-17");
        let mut sids = BTreeSet::new();
        for s in statements(&policy) {
            let sid = s["Sid"].as_str().expect("every statement has a Sid");
            assert!(sids.insert(sid.to_string()), "duplicate Sid {sid}");
            assert_eq!(s["Effect"], "Allow", "{sid}: only Allow statements");
            assert!(s.get("NotAction").is_none() && s.get("NotResource").is_none());
        }
    }
}

#[test]
fn scoped_actions_are_not_on_every_resource() {
    for who in [Who::Node, Who::Repave] {
        let policy = policy(who);
        for s in statements(&policy) {
            check_scope(who, s);
        }
    }
}

fn check_scope(who: Who, s: &Value) {
    let file = who.file();
    let actions = strings(&s["Action"]);
    let resources = strings(&s["Resource"]);
    for action in actions
        .iter()
        .filter(|a| SCOPED_ACTIONS.contains(&a.as_str()))
    {
        assert!(
            resources.iter().all(|r| r != "*"),
            "{file}: {action} must be scoped, not on Resource \"*\""
        );
        if action.starts_with("autoscaling:") {
            assert!(
                resources
                    .iter()
                    .all(|r| r.starts_with("arn:aws:autoscaling:")
                        && r.ends_with(":autoScalingGroupName/${asg_name}")),
                "{file}: {action} must be scoped to the group ARN: {resources:?}"
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
                "{file}: {action} must be scoped to secret ARNs: {resources:?}"
            );
            // The repave reads the cluster store's password from the shared secret and its CA
            // from the CA bundle, nothing else (no license, no TLS key).
            if who == Who::Repave {
                assert_eq!(
                    resources,
                    [
                        "arn:aws:secretsmanager:${region}:${account_id}:secret:tfe/shared-??????",
                        "arn:aws:secretsmanager:${region}:${account_id}:secret:tfe/ca-??????"
                    ],
                    "{file}: {action}"
                );
            }
        }
        if action == "ec2:CreateTags" {
            assert_eq!(resources, ["arn:aws:ec2:${region}:${account_id}:*/*"]);
            assert_eq!(
                s["Condition"],
                serde_json::json!({"StringEquals": {"ec2:CreateAction": "RunInstances"}}),
                "{file}: tags only on what is being launched"
            );
        }
        if action == "iam:PassRole" {
            assert_eq!(
                resources,
                ["arn:aws:iam::${account_id}:role/${node_role_name}"]
            );
            assert_eq!(
                s["Condition"],
                serde_json::json!({"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}),
                "{file}: the nodes' role, to EC2 only"
            );
        }
    }
    if actions.iter().any(|a| a == "ec2:RunInstances") {
        assert_eq!(
            actions,
            ["ec2:RunInstances"],
            "{file}: RunInstances on its own"
        );
        assert_eq!(
            s["Condition"],
            serde_json::json!({"ArnLike": {"ec2:LaunchTemplate":
                "arn:aws:ec2:${region}:${account_id}:launch-template/${launch_template_id}"}}),
            "{file}: RunInstances only from the nodes' launch template"
        );
    }
    // Only what has no resource-level permissions may be on "*" unconditionally.
    if resources.iter().any(|r| r == "*") && s.get("Condition").is_none() {
        for action in &actions {
            assert!(
                UNSCOPED_ACTIONS.contains(&action.as_str()),
                "{file}: {action} on Resource \"*\""
            );
        }
    }
}

#[test]
fn placeholders_are_the_documented_ones() {
    let placeholders = |who: Who| -> BTreeSet<String> {
        let text = std::fs::read_to_string(root().join(who.file())).unwrap();
        text.split("${")
            .skip(1)
            .map(|rest| rest[..rest.find('}').expect("closing brace")].to_string())
            .collect()
    };
    let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        placeholders(Who::Node),
        set(&[
            "account_id",
            "asg_name",
            "kms_key_id",
            "region",
            "s3_bucket"
        ])
    );
    assert_eq!(
        placeholders(Who::Repave),
        set(&[
            "account_id",
            "asg_name",
            "kms_key_id",
            "launch_template_id",
            "node_role_name",
            "region"
        ])
    );
}

#[test]
fn kms_decrypt_only_through_secrets_manager() {
    for who in [Who::Node, Who::Repave] {
        let policy = policy(who);
        let kms: Vec<&Value> = statements(&policy)
            .iter()
            .filter(|s| strings(&s["Action"]).iter().any(|a| a.starts_with("kms:")))
            .collect();
        assert_eq!(kms.len(), 1, "{}: one KMS statement", who.file());
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
}

#[test]
fn tfe_grants_stay_out_of_the_agent_policies() {
    for who in [Who::Node, Who::Repave] {
        let granted = policy_actions(&policy(who));
        for action in TFE_GRANTS {
            assert!(
                !granted.contains(*action),
                "{action} is TFE's grant: in {} it would let the object_storage probe pass \
                 where TFE fails",
                who.file()
            );
        }
    }
}
