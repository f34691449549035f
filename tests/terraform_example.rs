//! `examples/terraform/`, parsed and format-checked by HashiCorp's own HCL code and read for what
//! the agent needs from the infrastructure.
//!
//! No `terraform` here (not installable, and `terraform validate` needs the providers from the
//! Terraform registry). `tests/terraform/check.mjs` runs hashicorp/hcl compiled to WebAssembly
//! (npm `@cdktf/hcl2json`, the native-syntax parser, and `@cdktf/hcl-tools`, `hclwrite.Format`,
//! which `terraform fmt` is built on); tests/setup.sh installs them with `npm ci`.
//!
//! What hcl2json gives (and so what these tests read): one JSON object per file; a block is a
//! list of objects (`resource.TYPE.NAME[0]`, `variable.NAME[0]`, `locals[i]`, nested blocks as
//! lists); a literal is its JSON value; any other expression is a string `"${<its source text>}"`
//! (`"${var.name}"`, `"${base64encode(local.user_data)}"`), a template string stays as written
//! (`"${var.name}-node"`); an object constructor whose keys are names becomes a JSON object.
//! Comments are gone. It does not evaluate: a reference to an undeclared variable, or a
//! templatefile() map that misses a placeholder, parses fine, hence the checks below.

#[path = "common/template.rs"]
mod template;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

const EXAMPLE_DIR: &str = "examples/terraform";
/// What templatefile() is given, relative to the example (`${path.module}`).
const BAKED_AMI: &str = "${path.module}/../../cloud-init/baked-ami.yaml";
const PACKAGE_FROM_URL: &str = "${path.module}/../../cloud-init/package-from-url.yaml";
const IAM_POLICY: &str = "${path.module}/../../packaging/iam-policy.json";
const REPAVE_POLICY: &str = "${path.module}/../../packaging/iam-repave-policy.json";
/// Auto Scaling's limits on a hook's HeartbeatTimeout, and the cap on its total budget
/// (GlobalTimeout = min(48 h, 100 x HeartbeatTimeout)).
const HEARTBEAT_RANGE: std::ops::RangeInclusive<u64> = 30..=7200;
const GLOBAL_TIMEOUT_CAP: Duration = Duration::from_secs(48 * 3600);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn checker_dir() -> PathBuf {
    repo().join("tests/terraform")
}

/// `node tests/terraform/check.mjs [files]`. Panics, saying what to do, when node or the npm
/// packages are missing: this test never skips.
fn run_check(files: &[&Path]) -> Output {
    let modules = checker_dir().join("node_modules");
    for package in ["@cdktf/hcl2json", "@cdktf/hcl-tools"] {
        assert!(
            modules.join(package).join("package.json").exists(),
            "{} is missing: run tests/setup.sh (it runs `npm ci` in tests/terraform)",
            modules.join(package).display()
        );
    }
    let mut cmd = Command::new("node");
    cmd.arg(checker_dir().join("check.mjs")).args(files);
    match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("node is not installed: run tests/setup.sh (it installs nodejs and npm)")
        }
        Err(e) => panic!("running {cmd:?}: {e}"),
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The example's files as check.mjs reports them: base name -> hcl2json's JSON. Run once.
fn example() -> &'static BTreeMap<String, Value> {
    static FILES: OnceLock<BTreeMap<String, Value>> = OnceLock::new();
    FILES.get_or_init(|| {
        let out = run_check(&[]);
        assert!(
            out.status.success(),
            "check.mjs failed on {EXAMPLE_DIR} ({}):\n{}",
            out.status,
            stderr(&out)
        );
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "check.mjs printed no JSON ({e}):\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        let files = doc["files"].as_object().expect("{\"files\": {...}}");
        files.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    })
}

/// The .tf files only (not terraform.tfvars.example).
fn tf_files() -> impl Iterator<Item = (&'static String, &'static Value)> {
    example().iter().filter(|(name, _)| name.ends_with(".tf"))
}

/// The one `resource "TYPE" "NAME"` block of the example, wherever it is.
fn resource(ty: &str, name: &str) -> &'static Value {
    block("resource", ty, name)
}

fn data(ty: &str, name: &str) -> &'static Value {
    block("data", ty, name)
}

fn block(kind: &str, ty: &str, name: &str) -> &'static Value {
    let found: Vec<&Value> = tf_files()
        .filter_map(|(_, f)| f[kind][ty][name].as_array())
        .flatten()
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {kind} \"{ty}\" \"{name}\" in {EXAMPLE_DIR}"
    );
    found[0]
}

/// Every `resource "TYPE" ...` block, by name.
fn resources_of(ty: &str) -> BTreeMap<String, &'static Value> {
    let mut out = BTreeMap::new();
    for (_, f) in tf_files() {
        if let Some(blocks) = f["resource"][ty].as_object() {
            for (name, list) in blocks {
                for b in list.as_array().expect("a block list") {
                    assert!(out.insert(name.clone(), b).is_none(), "{ty}.{name} twice");
                }
            }
        }
    }
    out
}

/// Every local value, from every `locals` block.
fn locals() -> BTreeMap<String, &'static Value> {
    let mut out = BTreeMap::new();
    for (file, f) in tf_files() {
        for block in f["locals"].as_array().into_iter().flatten() {
            for (k, v) in block.as_object().expect("locals is an object") {
                assert!(
                    out.insert(k.clone(), v).is_none(),
                    "local.{k} twice ({file})"
                );
            }
        }
    }
    out
}

fn local(name: &str) -> &'static Value {
    locals()
        .remove(name)
        .unwrap_or_else(|| panic!("no local.{name} in {EXAMPLE_DIR}"))
}

/// Every `variable` block, by name.
fn variables() -> BTreeMap<String, &'static Value> {
    let mut out = BTreeMap::new();
    for (file, f) in tf_files() {
        if let Some(vars) = f["variable"].as_object() {
            assert_eq!(file, "variables.tf", "variables belong in variables.tf");
            for (name, list) in vars {
                let list = list.as_array().expect("a block list");
                assert_eq!(list.len(), 1, "variable {name} declared once");
                out.insert(name.clone(), &list[0]);
            }
        }
    }
    out
}

/// A number given as a literal or as `var.X` with a literal default.
fn number(what: &str, value: &Value) -> u64 {
    if let Some(n) = value.as_u64() {
        return n;
    }
    let name = value
        .as_str()
        .and_then(|s| s.strip_prefix("${var."))
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or_else(|| panic!("{what}: a number or var.X, got {value}"));
    variables()
        .get(name)
        .and_then(|v| v["default"].as_u64())
        .unwrap_or_else(|| panic!("{what}: var.{name} has no number default"))
}

/// The `${name}` placeholders of a templatefile() template.
fn placeholders(relative: &str) -> BTreeSet<String> {
    let path = repo().join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{relative}: {e}"));
    let names = template::placeholders(relative, &text);
    assert!(!names.is_empty(), "{relative}: no placeholders found");
    names
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// The templatefile() calls in an expression: (template path, variables map). The map must be
/// written as `local.NAME` or `merge(local.A, local.B, ...)` with each local an object literal;
/// any other form fails here with that message (hcl2json gives expressions as source text).
fn templatefile_calls(expr: &str) -> Vec<(String, BTreeMap<String, Value>)> {
    let mut calls = Vec::new();
    let mut rest = expr;
    while let Some(pos) = rest.find("templatefile(") {
        let args = &rest[pos + "templatefile(".len()..];
        let args = args
            .strip_prefix('"')
            .unwrap_or_else(|| panic!("templatefile( without a literal path: {args:.80}"));
        let close = args.find('"').expect("the path's closing quote");
        let path = args[..close].to_owned();
        let after = args[close + 1..]
            .trim_start()
            .strip_prefix(',')
            .expect("templatefile(path, vars)")
            .trim_start();
        // The second argument runs to the `)` that closes templatefile(.
        let mut depth = 0;
        let end = after
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' if depth == 0 => return true,
                    ')' => depth -= 1,
                    _ => {}
                }
                false
            })
            .map(|(i, _)| i)
            .expect("templatefile( closed");
        let arg = after[..end].trim();
        let names: Vec<&str> = match arg.strip_prefix("merge(").and_then(|a| a.strip_suffix(')')) {
            Some(inner) => inner.split(',').map(str::trim).collect(),
            None => vec![arg],
        };
        let mut vars = BTreeMap::new();
        for name in names {
            let local_name = name
                .strip_prefix("local.")
                .filter(|n| n.chars().all(ident_char));
            let local_name = local_name.unwrap_or_else(|| {
                panic!(
                    "templatefile({path}, {arg}): write the map as local.NAME or \
                     merge(local.A, local.B) of object literals, so this test can read its keys"
                )
            });
            let object = local(local_name)
                .as_object()
                .unwrap_or_else(|| panic!("local.{local_name} is not an object literal"));
            for (k, v) in object {
                assert!(
                    vars.insert(k.clone(), v.clone()).is_none(),
                    "templatefile({path}): key {k} given twice"
                );
            }
        }
        calls.push((path, vars));
        rest = &after[end..];
    }
    calls
}

/// The one templatefile() call of `expr` on `path`.
fn templatefile_call(expr: &str, path: &str) -> BTreeMap<String, Value> {
    let mut calls: Vec<_> = templatefile_calls(expr)
        .into_iter()
        .filter(|(p, _)| p == path)
        .collect();
    assert_eq!(
        calls.len(),
        1,
        "one templatefile(\"{path}\", ...) in {expr}"
    );
    calls.remove(0).1
}

fn keys(map: &BTreeMap<String, Value>) -> BTreeSet<String> {
    map.keys().cloned().collect()
}

/// Every `var.NAME` in the strings of a JSON value.
fn var_refs(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::String(s) => {
            let mut from = 0;
            while let Some(pos) = s[from..].find("var.") {
                let start = from + pos;
                from = start + 4;
                let before = s[..start].chars().next_back();
                if before.is_some_and(|c| ident_char(c) || c == '.') {
                    continue;
                }
                let name: String = s[from..].chars().take_while(|&c| ident_char(c)).collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| var_refs(v, out)),
        Value::Object(map) => map.values().for_each(|v| var_refs(v, out)),
        _ => {}
    }
}

#[test]
fn check_parses_and_format_checks_every_file() {
    let expected: BTreeSet<String> = std::fs::read_dir(repo().join(EXAMPLE_DIR))
        .expect("examples/terraform")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".tf") || n.ends_with(".tfvars.example"))
        .collect();
    for name in [
        "versions.tf",
        "variables.tf",
        "outputs.tf",
        "terraform.tfvars.example",
    ] {
        assert!(expected.contains(name), "{EXAMPLE_DIR}/{name} is missing");
    }
    let got: BTreeSet<String> = example().keys().cloned().collect();
    assert_eq!(got, expected, "check.mjs checked every file of the example");
    for (name, doc) in example() {
        assert!(
            doc.as_object().is_some_and(|o| !o.is_empty()),
            "{name}: parsed to nothing: {doc}"
        );
    }
    assert!(repo().join(EXAMPLE_DIR).join("README.md").exists());

    let terraform = &example()["versions.tf"]["terraform"][0];
    assert_eq!(terraform["required_version"], ">= 1.3");
    let aws = &terraform["required_providers"][0]["aws"];
    assert_eq!(aws["source"], "hashicorp/aws");
    assert_eq!(aws["version"], ">= 5.0");
}

#[test]
fn group_has_launch_and_terminate_hooks_with_explicit_timeout_and_result() {
    let asg = resource("aws_autoscaling_group", "tfe");
    let hooks = asg["initial_lifecycle_hook"]
        .as_array()
        .expect("initial_lifecycle_hook blocks in the group");
    assert_eq!(hooks.len(), 2, "a launch and a terminate hook: {hooks:#?}");
    let hook = |transition: &str| -> &Value {
        let found: Vec<&Value> = hooks
            .iter()
            .filter(|h| h["lifecycle_transition"] == transition)
            .collect();
        assert_eq!(found.len(), 1, "one {transition} hook");
        found[0]
    };
    let launch = hook("autoscaling:EC2_INSTANCE_LAUNCHING");
    let terminate = hook("autoscaling:EC2_INSTANCE_TERMINATING");

    // Explicit results: launch ABANDON (a node whose agent never answers is never ready);
    // terminate CONTINUE (see the comment in asg.tf).
    assert_eq!(launch["default_result"], "ABANDON");
    assert_eq!(terminate["default_result"], "CONTINUE");
    let launch_hb = number("launch heartbeat_timeout", &launch["heartbeat_timeout"]);
    let terminate_hb = number(
        "terminate heartbeat_timeout",
        &terminate["heartbeat_timeout"],
    );
    assert_eq!((launch_hb, terminate_hb), (600, 300));
    for hb in [launch_hb, terminate_hb] {
        assert!(HEARTBEAT_RANGE.contains(&hb), "heartbeat_timeout {hb}");
    }

    // The names come from variables and are the ones written into agent.toml.
    assert_eq!(launch["name"], "${var.launch_hook_name}");
    assert_eq!(terminate["name"], "${var.terminate_hook_name}");
    let vars = local("user_data_vars");
    assert_eq!(vars["launch_hook"], launch["name"]);
    assert_eq!(vars["terminate_hook"], terminate["name"]);

    // The agent's own timeouts, as a node started from this user data has them (the example's
    // tfvars rendered into cloud-init's agent.toml, read by the agent's parser), fit each hook's
    // total budget: a boot is install + readiness, a drain its [drain].timeout.
    let config = agent_config_from_user_data();
    assert_eq!(
        config.lifecycle.launch_hook.as_deref(),
        Some("tfe-launch"),
        "agent.toml's launch_hook is the tfvars example's launch_hook_name"
    );
    assert_eq!(
        config.lifecycle.terminate_hook.as_deref(),
        Some("tfe-terminate")
    );
    let budget = |hb: u64| Duration::from_secs(100 * hb).min(GLOBAL_TIMEOUT_CAP);
    let boot = config.install.timeout + config.readiness.timeout;
    assert!(
        boot < budget(launch_hb),
        "a boot ({boot:?}) must fit the launch hook's budget ({:?})",
        budget(launch_hb)
    );
    assert!(
        config.drain.timeout < budget(terminate_hb),
        "a drain ({:?}) must fit the terminate hook's budget ({:?})",
        config.drain.timeout,
        budget(terminate_hb)
    );
}

/// agent.toml as cloud-init/baked-ami.yaml writes it, with each `${name}` set to what the example
/// passes for it: the tfvars example's value for `var.X`, a plausible value otherwise.
fn agent_config_from_user_data() -> tfe_node_agent::config::AgentConfig {
    let text = std::fs::read_to_string(repo().join("cloud-init/baked-ami.yaml")).expect("yaml");
    // The block scalar under `content: |` of the agent.toml entry.
    let start = text.find("content: |\n").expect("agent.toml content") + "content: |\n".len();
    let mut content = String::new();
    for line in text[start..].lines() {
        if !line.is_empty() && !line.starts_with("      ") {
            break;
        }
        content.push_str(line.strip_prefix("      ").unwrap_or(line));
        content.push('\n');
    }
    let tfvars = &example()["terraform.tfvars.example"];
    let vars = local("user_data_vars");
    for (name, expr) in vars.as_object().expect("user_data_vars") {
        let value = match expr.as_str().and_then(|s| s.strip_prefix("${var.")) {
            Some(var) => {
                let var = var.strip_suffix('}').expect("a whole ${var.X}");
                match &tfvars[var] {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    other => panic!("tfvars example: {var} = {other}"),
                }
            }
            None => match name.as_str() {
                "secret_shared_id" => {
                    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:tfe/shared-AbCdEf".into()
                }
                "secret_license_id" => {
                    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:tfe/license-AbCdEf".into()
                }
                "aws_region" => "eu-west-1".into(),
                other => panic!("user_data_vars.{other} = {expr}: no value for this test"),
            },
        };
        content = content.replace(&format!("${{{name}}}"), &value);
    }
    assert!(!content.contains("${"), "placeholders left:\n{content}");
    tfe_node_agent::config::parse(&content, Path::new("/etc/tfe-node-agent/agent.toml"))
        .unwrap_or_else(|e| panic!("the agent rejects agent.toml: {e}\n{content}"))
}

#[test]
fn group_is_elb_checked_repaved_by_instance_refresh_and_waits_for_its_policies() {
    let asg = resource("aws_autoscaling_group", "tfe");
    assert_eq!(asg["name"], "${var.name}");
    assert_eq!(asg["health_check_type"], "ELB");
    assert!(
        number(
            "health_check_grace_period",
            &asg["health_check_grace_period"]
        ) > 0,
        "a grace period"
    );
    assert_eq!(asg["vpc_zone_identifier"], "${var.subnet_ids}");
    assert_eq!(asg["target_group_arns"], "${var.target_group_arns}");
    // A first boot outlasts Terraform's default 10 minute wait for capacity.
    assert_eq!(asg["wait_for_capacity_timeout"], "0");
    let lt = &asg["launch_template"][0];
    assert_eq!(lt["id"], "${aws_launch_template.node.id}");
    assert_eq!(lt["version"], "${aws_launch_template.node.latest_version}");

    let refresh = &asg["instance_refresh"][0];
    assert_eq!(refresh["strategy"], "Rolling");
    let healthy = number(
        "min_healthy_percentage",
        &refresh["preferences"][0]["min_healthy_percentage"],
    );
    assert!(
        (1..=100).contains(&healthy),
        "min_healthy_percentage {healthy}"
    );

    // The agent calls Secrets Manager and Auto Scaling from its first second.
    let depends: Vec<&str> = asg["depends_on"]
        .as_array()
        .expect("depends_on")
        .iter()
        .map(|v| v.as_str().expect("a reference"))
        .collect();
    for policy in resources_of("aws_iam_role_policy").keys() {
        let reference = format!("${{aws_iam_role_policy.{policy}}}");
        assert!(
            depends.contains(&reference.as_str()),
            "the group depends on {reference}: {depends:?}"
        );
    }
}

#[test]
fn launch_template_requires_imdsv2_with_hop_limit_2_and_the_instance_profile() {
    let lt = resource("aws_launch_template", "node");
    let metadata = lt["metadata_options"]
        .as_array()
        .expect("a metadata_options block");
    assert_eq!(metadata.len(), 1);
    let m = &metadata[0];
    assert_eq!(m["http_endpoint"], "enabled");
    assert_eq!(m["http_tokens"], "required");
    assert_eq!(m["http_put_response_hop_limit"], 2);
    assert_eq!(
        lt["iam_instance_profile"][0]["arn"],
        "${aws_iam_instance_profile.node.arn}"
    );
    assert_eq!(lt["image_id"], "${var.ami_id}");
    assert_eq!(lt["user_data"], "${base64encode(local.user_data)}");
}

#[test]
fn user_data_maps_are_exactly_the_cloud_init_placeholders() {
    let expr = local("user_data")
        .as_str()
        .expect("local.user_data is an expression");
    let normalized = expr.split_whitespace().collect::<Vec<_>>().join(" ");
    // Baked AMI unless a package URL is given.
    let baked_first = format!("${{( var.package_url == \"\" ? templatefile(\"{BAKED_AMI}\"");
    assert!(normalized.starts_with(&baked_first), "{normalized}");
    let baked = templatefile_call(expr, BAKED_AMI);
    let from_url = templatefile_call(expr, PACKAGE_FROM_URL);
    assert_eq!(templatefile_calls(expr).len(), 2, "{expr}");
    assert_eq!(
        keys(&baked),
        placeholders("cloud-init/baked-ami.yaml"),
        "templatefile map for baked-ami.yaml vs the template's placeholders"
    );
    assert_eq!(
        keys(&from_url),
        placeholders("cloud-init/package-from-url.yaml"),
        "templatefile map for package-from-url.yaml vs the template's placeholders"
    );
    assert_eq!(from_url["package_url"], "${var.package_url}");
    // Secret ids only, from the secrets this example creates; the region is the provider's.
    assert_eq!(
        baked["secret_shared_id"],
        "${aws_secretsmanager_secret.shared.arn}"
    );
    assert_eq!(
        baked["secret_license_id"],
        "${aws_secretsmanager_secret.license.arn}"
    );
    assert_eq!(baked["aws_region"], "${data.aws_region.current.name}");
    assert_eq!(baked["s3_bucket"], "${var.s3_bucket}");
}

/// The reference `${TYPE.NAME.ATTR}` -> NAME, checking TYPE and ATTR.
fn referenced(value: &Value, ty: &str, attrs: &[&str]) -> String {
    let s = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a reference"));
    let inner = s
        .strip_prefix(&format!("${{{ty}."))
        .and_then(|r| r.strip_suffix('}'))
        .unwrap_or_else(|| panic!("{s} is not a reference to a {ty}"));
    let (name, attr) = inner.split_once('.').expect("NAME.ATTR");
    assert!(
        attrs.contains(&attr),
        "{s}: attribute {attr}, expected one of {attrs:?}"
    );
    name.to_owned()
}

#[test]
fn instance_profile_role_has_the_repo_policy_with_exactly_its_placeholders() {
    let profile = resource("aws_iam_instance_profile", "node");
    let role_name = referenced(&profile["role"], "aws_iam_role", &["name", "id"]);
    let role = resource("aws_iam_role", &role_name);

    // Assumed by EC2.
    let assume = referenced(
        &role["assume_role_policy"],
        "data.aws_iam_policy_document",
        &["json"],
    );
    let statement = &data("aws_iam_policy_document", &assume)["statement"];
    assert_eq!(statement.as_array().map(Vec::len), Some(1), "{statement}");
    assert_eq!(
        statement[0]["actions"],
        serde_json::json!(["sts:AssumeRole"])
    );
    let principal = &statement[0]["principals"][0];
    assert_eq!(principal["type"], "Service");
    assert_eq!(
        principal["identifiers"],
        serde_json::json!(["ec2.amazonaws.com"])
    );

    // Exactly one policy on the role is packaging/iam-policy.json.
    let on_role: BTreeMap<String, &Value> = resources_of("aws_iam_role_policy")
        .into_iter()
        .filter(|(_, p)| referenced(&p["role"], "aws_iam_role", &["id", "name"]) == role_name)
        .collect();
    let agent: Vec<(&String, &&Value)> = on_role
        .iter()
        .filter(|(_, p)| p["policy"].as_str().is_some_and(|s| s.contains(IAM_POLICY)))
        .collect();
    assert_eq!(agent.len(), 1, "one policy from {IAM_POLICY} on the role");
    let policy_expr = agent[0].1["policy"].as_str().unwrap();
    let vars = templatefile_call(policy_expr, IAM_POLICY);
    assert_eq!(
        format!("${{templatefile(\"{IAM_POLICY}\", local.agent_policy_vars)}}"),
        policy_expr,
        "the policy is the file as rendered, nothing around it"
    );
    assert_eq!(
        keys(&vars),
        placeholders("packaging/iam-policy.json"),
        "templatefile map for iam-policy.json vs the file's placeholders"
    );
    assert_eq!(vars["region"], "${data.aws_region.current.name}");
    assert_eq!(
        vars["account_id"],
        "${data.aws_caller_identity.current.account_id}"
    );
    // Scoped to this group, and to the key the secrets are encrypted with.
    assert_eq!(
        vars["asg_name"],
        resource("aws_autoscaling_group", "tfe")["name"]
    );
    let key = referenced(&vars["kms_key_id"], "aws_kms_key", &["key_id"]);
    for secret in resources_of("aws_secretsmanager_secret").values() {
        assert_eq!(
            referenced(
                &secret["kms_key_id"],
                "aws_kms_key",
                &["arn", "key_id", "id"]
            ),
            key,
            "every secret uses the key the policy lets the agent decrypt with"
        );
    }

    // TFE's object storage: a separate policy on the same role, S3 on var.s3_bucket only.
    let storage: Vec<&Value> = on_role
        .iter()
        .filter(|(n, _)| *n != agent[0].0)
        .filter_map(|(_, p)| {
            p["policy"]
                .as_str()?
                .strip_prefix("${data.aws_iam_policy_document.")?
                .strip_suffix(".json}")
        })
        .map(|doc| data("aws_iam_policy_document", doc))
        .filter(|doc| doc["statement"].to_string().contains("s3:"))
        .collect();
    assert_eq!(storage.len(), 1, "one S3 policy for TFE on the role");
    let mut actions = BTreeSet::new();
    for st in storage[0]["statement"].as_array().expect("statements") {
        for a in st["actions"].as_array().expect("actions") {
            actions.insert(a.as_str().expect("action").to_owned());
        }
        for r in st["resources"].as_array().expect("resources") {
            let r = r.as_str().expect("resource");
            assert!(
                r == "arn:aws:s3:::${var.s3_bucket}" || r == "arn:aws:s3:::${var.s3_bucket}/*",
                "S3 access only to the TFE bucket: {r}"
            );
        }
    }
    for needed in [
        "s3:ListBucket",
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
    ] {
        assert!(actions.contains(needed), "{needed} for TFE: {actions:?}");
    }
    assert!(
        actions
            .iter()
            .all(|a| a.starts_with("s3:") && !a.contains('*')),
        "{actions:?}"
    );
}

#[test]
fn repave_policy_is_the_repo_file_apart_from_the_nodes_role() {
    let policies: Vec<(String, &Value)> = resources_of("aws_iam_policy")
        .into_iter()
        .filter(|(_, p)| {
            p["policy"]
                .as_str()
                .is_some_and(|s| s.contains(REPAVE_POLICY))
        })
        .collect();
    assert_eq!(policies.len(), 1, "one policy from {REPAVE_POLICY}");
    let (name, policy) = &policies[0];
    let expr = policy["policy"].as_str().unwrap();
    assert_eq!(
        format!("${{templatefile(\"{REPAVE_POLICY}\", local.repave_policy_vars)}}"),
        expr,
        "the policy is the file as rendered, nothing around it"
    );
    let vars = templatefile_call(expr, REPAVE_POLICY);
    assert_eq!(
        keys(&vars),
        placeholders("packaging/iam-repave-policy.json"),
        "templatefile map for iam-repave-policy.json vs the file's placeholders"
    );
    assert_eq!(
        vars["asg_name"],
        resource("aws_autoscaling_group", "tfe")["name"]
    );
    assert_eq!(
        referenced(&vars["launch_template_id"], "aws_launch_template", &["id"]),
        "node"
    );
    assert_eq!(
        referenced(&vars["node_role_name"], "aws_iam_role", &["name"]),
        "node"
    );
    // Never on the nodes' role: neither inline nor attached.
    assert!(resources_of("aws_iam_role_policy")
        .values()
        .all(|p| !p["policy"].to_string().contains(REPAVE_POLICY)));
    for attachment in resources_of("aws_iam_role_policy_attachment").values() {
        assert!(
            !attachment["policy_arn"]
                .to_string()
                .contains(&format!("aws_iam_policy.{name}")),
            "the repave policy is attached to a role: {attachment}"
        );
    }
    // Its ARN is an output, for the operator or CI to attach.
    let outputs: Vec<&Value> = tf_files()
        .filter_map(|(_, f)| f["output"].as_object())
        .flat_map(|o| o.values())
        .collect();
    assert!(
        outputs.iter().any(|o| o
            .to_string()
            .contains(&format!("aws_iam_policy.{name}.arn"))),
        "an output gives the repave policy's ARN"
    );
}

#[test]
fn secrets_are_created_by_name_and_never_given_a_value() {
    let policy = std::fs::read_to_string(repo().join("packaging/iam-policy.json")).expect("policy");
    let secrets = resources_of("aws_secretsmanager_secret");
    let names: BTreeSet<&str> = secrets
        .values()
        .map(|s| s["name"].as_str().expect("a literal secret name"))
        .collect();
    assert_eq!(names, BTreeSet::from(["tfe/shared", "tfe/license"]));
    for name in &names {
        assert!(
            policy.contains(&format!(":secret:{name}-??????\"")),
            "packaging/iam-policy.json grants {name}"
        );
    }
    // Values are put out of band: none may end up in the Terraform state.
    for (file, f) in tf_files() {
        assert!(
            f["resource"]["aws_secretsmanager_secret_version"].is_null(),
            "{file}: an aws_secretsmanager_secret_version puts a secret value into the state"
        );
    }
}

#[test]
fn every_variable_is_declared_described_typed_and_used() {
    let declared = variables();
    let mut referenced = BTreeSet::new();
    for (name, f) in tf_files() {
        if name != "variables.tf" {
            var_refs(f, &mut referenced);
        }
    }
    let undeclared: Vec<_> = referenced
        .iter()
        .filter(|v| !declared.contains_key(*v))
        .collect();
    assert!(
        undeclared.is_empty(),
        "var.X used but not declared: {undeclared:?}"
    );
    let unused: Vec<_> = declared
        .keys()
        .filter(|v| !referenced.contains(*v))
        .collect();
    assert!(
        unused.is_empty(),
        "variables declared but not used: {unused:?}"
    );
    // The brief's list, at least.
    for name in [
        "name",
        "ami_id",
        "instance_type",
        "subnet_ids",
        "security_group_ids",
        "target_group_arns",
        "min_size",
        "max_size",
        "desired_capacity",
        "release_sequence",
        "tfe_hostname",
        "pg_netloc",
        "pg_dbname",
        "pg_user",
        "s3_bucket",
        "redis_host",
        "launch_hook_name",
        "terminate_hook_name",
        "launch_heartbeat_timeout",
        "terminate_heartbeat_timeout",
        "package_url",
    ] {
        assert!(declared.contains_key(name), "variable {name} is declared");
    }
    assert_eq!(declared["package_url"]["default"], "");
    for (name, v) in &declared {
        assert!(
            v["description"].as_str().is_some_and(|d| d.len() > 10),
            "variable {name} has a description"
        );
        assert!(
            v["type"].as_str().is_some_and(|t| t.starts_with("${")),
            "variable {name} has a type: {v}"
        );
    }

    // terraform.tfvars.example sets only declared variables, and every one without a default.
    let tfvars = example()["terraform.tfvars.example"]
        .as_object()
        .expect("tfvars: attributes only");
    for key in tfvars.keys() {
        assert!(
            declared.contains_key(key),
            "tfvars example sets undeclared {key}"
        );
    }
    for (name, v) in &declared {
        if v.get("default").is_none() {
            assert!(
                tfvars.contains_key(name),
                "tfvars example lacks required {name}"
            );
        }
    }
}

/// A copy of the example's `file` in a temp dir, changed by `change`.
fn changed_copy(
    dir: &tempfile::TempDir,
    file: &str,
    change: impl Fn(&str) -> String,
) -> (PathBuf, PathBuf) {
    let text = std::fs::read_to_string(repo().join(EXAMPLE_DIR).join(file)).expect("read");
    let changed = change(&text);
    assert_ne!(changed, text, "the change to {file} changed nothing");
    let pristine = dir.path().join(format!("pristine-{file}"));
    let bad = dir.path().join(format!("bad-{file}"));
    std::fs::write(&pristine, &text).expect("write");
    std::fs::write(&bad, changed).expect("write");
    (pristine, bad)
}

fn assert_fails_naming(bad: &Path, good: &Path, expected: &str) {
    // The unchanged copy passes in the same place: the failure is the change's.
    let out = run_check(&[good]);
    assert!(out.status.success(), "{}: {}", good.display(), stderr(&out));

    let out = run_check(&[good, bad]);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "check.mjs on {}: {err}",
        bad.display()
    );
    assert!(out.stdout.is_empty(), "no JSON on failure");
    assert!(
        err.contains(&bad.display().to_string()) && err.contains(expected),
        "expected {} and {expected:?} in:\n{err}",
        bad.display()
    );
    assert!(
        !err.contains(&good.display().to_string()),
        "only the bad file is named:\n{err}"
    );
}

#[test]
fn broken_hcl_fails_naming_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The group's closing brace gone: an unclosed block.
    let (good, bad) = changed_copy(&dir, "asg.tf", |t| {
        let end = t.trim_end().rfind('}').expect("a closing brace");
        t[..end].to_owned()
    });
    assert_fails_naming(&bad, &good, "Unclosed configuration block");
}

#[test]
fn unformatted_hcl_fails_naming_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Indentation terraform fmt would undo; still valid HCL.
    let (good, bad) = changed_copy(&dir, "variables.tf", |t| {
        t.replacen("\n  type        = string\n", "\n      type = string\n", 1)
    });
    assert_fails_naming(&bad, &good, "not formatted as terraform fmt would");
    let out = run_check(&[&bad]);
    assert!(
        stderr(&out).contains("      type = string"),
        "the hint shows the line: {}",
        stderr(&out)
    );
}
