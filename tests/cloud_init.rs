//! The cloud-init user-data templates in `cloud-init/`, checked by the real `cloud-init schema`
//! and read for what the agent needs: agent.toml written 0600, valid for this agent, then the
//! unit enabled and started.
//!
//! What `cloud-init schema --config-file FILE` does and does not tell (cloud-init 22.4.2,
//! Debian 12; needs neither root nor a running cloud-init):
//! - a valid file: exit status 0, stdout `Valid cloud-config: FILE`;
//! - a schema error (`permissions: 600`, an int where the schema wants a string; `write_files:
//!   "oops"`), invalid YAML or a missing `#cloud-config` first line: exit status 1, stderr
//!   `Error:` and `Cloud config schema errors: ...`;
//! - an unknown top-level key (`runcmdd:`) is NOT reported: exit status 0, `Valid cloud-config`.
//!   So the keys the agent needs are checked here by reading the YAML, not left to the schema;
//! - `--annotate` crashes (KeyError) on some errors in this version: not used.
//!
//! The check is therefore the exit status, plus no `Error` in the output of a good file.
//! The YAML is read with the `/usr/bin/python3` that cloud-init itself runs on (python3-yaml is
//! one of its dependencies), converted to JSON.

#[path = "common/template.rs"]
mod template;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TEMPLATES: &[&str] = &["baked-ami.yaml", "package-from-url.yaml"];
const CONFIG_PATH: &str = "/etc/tfe-node-agent/agent.toml";
const CLOUD_INIT_PYTHON: &str = "/usr/bin/python3";
/// The sections `[tfe_node_agent::config::AgentConfig]` has.
const AGENT_SECTIONS: &[&str] = &[
    "aws",
    "secrets",
    "replicated",
    "settings",
    "install",
    "tools",
    "readiness",
    "lifecycle",
    "termination",
    "drain",
    "paths",
];

/// A plausible value for every template variable; a `${name}` not listed here fails the test.
fn placeholder_value(name: &str) -> Option<&'static str> {
    Some(match name {
        "secret_shared_id" => {
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:tfe/shared-AbCdEf"
        }
        "secret_license_id" => "tfe/license",
        "release_sequence" => "504",
        "tfe_hostname" => "tfe.example.com",
        "pg_netloc" => "tfe-db.cluster-abc.eu-west-1.rds.amazonaws.com:5432",
        "pg_dbname" => "tfe",
        "pg_user" => "tfe",
        "s3_bucket" => "tfe-data-123456789012",
        "aws_region" => "eu-west-1",
        "redis_host" => "master.tfe-redis.abc.euw1.cache.amazonaws.com",
        "launch_hook" => "tfe-launch",
        "terminate_hook" => "tfe-terminate",
        "package_url" => "s3://tfe-artifacts/tfe-node-agent_0.1.0-1_amd64.deb",
        _ => return None,
    })
}

fn template_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("cloud-init")
        .join(name)
}

fn template_text(name: &str) -> String {
    let path = template_path(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn run(mut cmd: Command, what: &str) -> Output {
    match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{what} is not installed: run tests/setup.sh (it installs the Debian package \
             `cloud-init`, which provides it and the python3-yaml it runs on)"
        ),
        Err(e) => panic!("running {cmd:?}: {e}"),
    }
}

fn temp_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .prefix("user-data-")
        .suffix(".yaml")
        .tempfile()
        .expect("creating a temp file");
    file.write_all(text.as_bytes())
        .expect("writing the temp file");
    file.flush().expect("flushing the temp file");
    file
}

/// `cloud-init schema --config-file` on `text`: (exit status 0, stdout + stderr).
fn schema(text: &str) -> (bool, String) {
    let file = temp_file(text);
    let mut cmd = Command::new("cloud-init");
    cmd.arg("schema").arg("--config-file").arg(file.path());
    let out = run(cmd, "cloud-init");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), output)
}

/// The YAML document `text`, as JSON.
fn yaml(text: &str) -> serde_json::Value {
    let file = temp_file(text);
    let mut cmd = Command::new(CLOUD_INIT_PYTHON);
    cmd.arg("-c")
        .arg("import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)")
        .arg(file.path());
    let out = run(cmd, CLOUD_INIT_PYTHON);
    assert!(
        out.status.success(),
        "reading the YAML failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python's JSON")
}

fn rendered(name: &str) -> String {
    template::render(name, &template_text(name), |v| {
        placeholder_value(v).map(str::to_string)
    })
}

#[test]
fn templates_pass_cloud_init_schema() {
    for name in TEMPLATES {
        let text = rendered(name);
        assert!(text.starts_with("#cloud-config\n"), "{name}: first line");
        let (ok, output) = schema(&text);
        assert!(ok, "{name}: cloud-init schema failed:\n{output}");
        assert!(
            output.contains("Valid cloud-config") && !output.contains("Error"),
            "{name}: unexpected cloud-init schema output:\n{output}"
        );
    }
}

#[test]
fn broken_templates_fail_cloud_init_schema() {
    for name in TEMPLATES {
        let text = rendered(name);
        let breakages = [
            // An octal mode written as a YAML int (and read as decimal 600 by YAML).
            (
                "permissions as an int",
                text.replacen("permissions: '0600'", "permissions: 600", 1),
                "is not of type 'string'",
            ),
            (
                "write_files not a list",
                text.replacen("write_files:\n", "write_files: \"oops\"\nwrite_filez:\n", 1),
                "is not of type 'array'",
            ),
            (
                "no #cloud-config line",
                text.replacen("#cloud-config\n", "", 1),
                "needs to begin with \"#cloud-config\"",
            ),
        ];
        for (what, broken, expected) in breakages {
            assert_ne!(
                broken, text,
                "{name}: the breakage {what:?} changed nothing"
            );
            let (ok, output) = schema(&broken);
            assert!(
                !ok,
                "{name} with {what}: cloud-init schema passed:\n{output}"
            );
            assert!(
                output.contains(expected),
                "{name} with {what}: expected {expected:?} in:\n{output}"
            );
        }
    }
}

/// The one write_files entry for agent.toml, from the rendered template.
fn agent_toml_entry(name: &str, doc: &serde_json::Value) -> serde_json::Value {
    let entries: Vec<&serde_json::Value> = doc["write_files"]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: write_files is not a list"))
        .iter()
        .filter(|e| e["path"] == CONFIG_PATH)
        .collect();
    assert_eq!(
        entries.len(),
        1,
        "{name}: one write_files entry for {CONFIG_PATH}"
    );
    entries[0].clone()
}

#[test]
fn templates_write_agent_toml_0600_then_start_the_agent() {
    for name in TEMPLATES {
        let doc = yaml(&rendered(name));
        let entry = agent_toml_entry(name, &doc);
        assert_eq!(entry["permissions"], "0600", "{name}: agent.toml mode");
        assert_eq!(entry["owner"], "root:root", "{name}: agent.toml owner");
        assert!(
            entry.get("defer").is_none() && entry.get("encoding").is_none(),
            "{name}: agent.toml must be written plain, in the init stage: {entry}"
        );
        // The config directory is made 0700 before write_files could create it 0755.
        let bootcmd = doc["bootcmd"].to_string();
        assert!(
            bootcmd.contains("\"0700\"") && bootcmd.contains("/etc/tfe-node-agent"),
            "{name}: bootcmd: {bootcmd}"
        );
        let runcmd = doc["runcmd"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: runcmd is not a list"));
        let enable = serde_json::json!([
            "systemctl",
            "enable",
            "--now",
            "--no-block",
            "tfe-node-agent.service"
        ]);
        assert_eq!(
            runcmd.last(),
            Some(&enable),
            "{name}: runcmd must end by enabling and starting the agent"
        );
    }
}

#[test]
fn embedded_agent_toml_is_valid_for_the_agent() {
    for name in TEMPLATES {
        let doc = yaml(&rendered(name));
        let content = agent_toml_entry(name, &doc)["content"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: agent.toml content is not a string"))
            .to_owned();
        let table: toml::Table = toml::from_str(&content)
            .unwrap_or_else(|e| panic!("{name}: agent.toml is not valid TOML: {e}\n{content}"));
        for section in table.keys() {
            assert!(
                AGENT_SECTIONS.contains(&section.as_str()),
                "{name}: unknown section [{section}] in agent.toml"
            );
        }
        // The agent's own parser: unknown keys, types and required keys.
        let config = tfe_node_agent::config::parse(&content, Path::new(CONFIG_PATH))
            .unwrap_or_else(|e| panic!("{name}: the agent rejects agent.toml: {e}\n{content}"));
        assert_eq!(
            config.secrets.shared,
            placeholder_value("secret_shared_id").unwrap()
        );
        assert_eq!(
            config.secrets.license.as_deref(),
            placeholder_value("secret_license_id")
        );
        assert_eq!(
            config.replicated.release_sequence,
            toml::Value::Integer(504)
        );
        assert_eq!(
            config.lifecycle.launch_hook.as_deref(),
            placeholder_value("launch_hook")
        );
        assert_eq!(
            config.lifecycle.terminate_hook.as_deref(),
            placeholder_value("terminate_hook")
        );
        let settings: BTreeMap<&str, &str> = config
            .settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str().expect("settings are strings")))
            .collect();
        assert_eq!(settings["hostname"], "tfe.example.com", "{name}");
        assert_eq!(settings["production_type"], "external", "{name}");
    }
}
