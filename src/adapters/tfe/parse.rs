//! Parsers for what replicatedctl and `replicated admin` print (docs/design/tfe-tools.md §4.2,
//! §4.3, §5.3). Each tolerates the stray `Error parsing config file: …` line the CLI can print
//! first.

use crate::model::drift::LiveSettings;
use crate::model::tfe::{AppState, AppStatus, HealthReport, SystemStatus};
use crate::sys::secret::Secret;
use serde::Deserialize;
use std::collections::BTreeMap;

/// `replicatedctl system status`: a JSON object of subsystem -> status.
pub fn system_status(stdout: &str) -> Result<SystemStatus, String> {
    let json = from_first(stdout, '{').ok_or("no JSON object in output")?;
    let map: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(json).map_err(|e| format!("not a JSON object: {e}"))?;
    let statuses = map
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect();
    Ok(SystemStatus { statuses })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawApp {
    state: String,
    desired_state: String,
    is_transitioning: bool,
    #[serde(default)]
    error: String,
}

/// `replicatedctl app status`: a JSON array with one object per app; TFE has one.
pub fn app_status(stdout: &str) -> Result<AppStatus, String> {
    let json = from_first(stdout, '[').ok_or("no JSON array in output")?;
    let apps: Vec<RawApp> =
        serde_json::from_str(json).map_err(|e| format!("unexpected app status shape: {e}"))?;
    let app = apps
        .into_iter()
        .next()
        .ok_or("no application installed yet")?;
    Ok(AppStatus {
        state: AppState::parse(&app.state),
        desired_state: AppState::parse(&app.desired_state),
        is_transitioning: app.is_transitioning,
        error: app.error,
    })
}

/// `replicated admin health-check`: judged by the summary line (`All checks passed.` or
/// `<n> checks failed.`), because its exit status on failure is undocumented.
pub fn health_check(stdout: &str) -> Result<HealthReport, String> {
    let mut current = None;
    let mut failed_checks = Vec::new();
    for line in stdout.lines() {
        let line = line.trim_end();
        if let Some(name) = line.strip_prefix("checking: ") {
            current = Some(name.trim_end_matches("...").to_string());
        } else if let Some(verdict) = line.strip_prefix("|- ") {
            // `✓ PASS`, or `✗ ERROR: <reason>`: judged by the marker before the reason, which may
            // itself say PASS (a password, a bypass).
            if !verdict
                .split(':')
                .next()
                .unwrap_or_default()
                .contains("PASS")
            {
                failed_checks.push(current.clone().unwrap_or_else(|| "unnamed check".into()));
            }
        }
        let summary = line.trim();
        if summary == "All checks passed." {
            return Ok(HealthReport {
                passed: failed_checks.is_empty(),
                failed_checks,
                summary: summary.to_string(),
            });
        }
        if let Some(n) = summary
            .strip_suffix(" checks failed.")
            .or(summary.strip_suffix(" check failed."))
        {
            if n.parse::<u32>().is_ok() {
                return Ok(HealthReport {
                    passed: false,
                    failed_checks,
                    summary: summary.to_string(),
                });
            }
        }
    }
    Err("no summary line (\"All checks passed.\" or \"<n> checks failed.\")".into())
}

/// The JSON from its first line on: skips warnings printed before it. The JSON starts at the first
/// line that begins with `open`, because a warning may hold the character itself (Go type names:
/// `map[string]interface {}`); failing such a line, at the first `open` anywhere.
/// `replicatedctl app-config export --hidden`: `{"<key>": {} | {"value": "<string>", …}}`
/// (docs/design/tfe-tools.md §4.5). Items without a value are left out. The output holds secret
/// values: no error message quotes it (serde's own messages can quote a value, so they are not
/// passed on past the JSON syntax).
pub fn app_config_export(stdout: &str) -> Result<LiveSettings, String> {
    let json = from_first(stdout, '{').ok_or("no JSON object in output")?;
    let items: BTreeMap<String, serde_json::Value> = serde_json::from_str(json).map_err(|e| {
        format!(
            "not a JSON object of config items (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    let mut values = BTreeMap::new();
    for (key, item) in items {
        let serde_json::Value::Object(fields) = item else {
            return Err(format!("config item {key:?} is not an object"));
        };
        match fields.get("value") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(v)) => {
                values.insert(key, Secret::new(v.as_str()));
            }
            Some(_) => {
                return Err(format!(
                    "config item {key:?} has a value that is not a string"
                ))
            }
        }
    }
    Ok(LiveSettings { values })
}

fn from_first(text: &str, open: char) -> Option<&str> {
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with(open) {
            return Some(&text[start..]);
        }
        start += line.len();
    }
    text.find(open).map(|i| &text[i..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_config_export_keeps_the_items_with_a_value() {
        let out = "Error parsing config file: x\n{\n  \"capacity_concurrency\": {\n    \"value\": \"10\"\n  },\n  \"disk_path\": {},\n  \"enc_password\": {\"value\": \"pw\", \"data\": \"\"}\n}\n";
        let live = app_config_export(out).unwrap();
        assert_eq!(live.values.len(), 2);
        assert_eq!(live.values["capacity_concurrency"].expose(), "10");
        assert_eq!(live.values["enc_password"].expose(), "pw");
    }

    #[test]
    fn app_config_export_errors_never_quote_a_value() {
        for bad in [
            "{\"enc_password\": {\"value\": 12345678}}",
            "{\"enc_password\": \"12345678\"}",
            "{\"enc_password\": {\"value\": \"12345678\"",
        ] {
            let e = app_config_export(bad).unwrap_err();
            assert!(!e.contains("12345678"), "{e}");
        }
    }

    const SYSTEM_READY: &str =
        "{\n    \"Replicated\": \"ready\",\n    \"Retraced\": \"ready\"\n}\n";

    #[test]
    fn system_status_ready_and_not() {
        assert!(system_status(SYSTEM_READY).unwrap().all_ready());
        let init =
            SYSTEM_READY.replace("\"Retraced\": \"ready\"", "\"Retraced\": \"initializing\"");
        assert!(!system_status(&init).unwrap().all_ready());
        assert!(!system_status("{}").unwrap().all_ready());
        assert!(system_status("Error: No such container: replicated").is_err());
    }

    #[test]
    fn system_status_skips_the_stray_config_error_line() {
        let text = format!("Error parsing config file: json: cannot unmarshal string into Go struct field Params.ReleaseSequence of type int\n{SYSTEM_READY}");
        assert!(system_status(&text).unwrap().all_ready());
    }

    const APP: &str = r#"[
    {
        "AppID": "218b78fa2bd6f0044c6a1010a51d5852",
        "Sequence": 504,
        "PatchSequence": 0,
        "State": "starting",
        "DesiredState": "started",
        "Error": "",
        "IsCancellable": false,
        "IsTransitioning": true,
        "LastModifiedAt": "2021-01-07T21:15:11.650385151Z"
    }
]"#;

    #[test]
    fn app_status_follows_the_documented_predicate() {
        let starting = app_status(APP).unwrap();
        assert_eq!(starting.state, "starting");
        assert!(!starting.is_started());
        let started = APP
            .replace("\"starting\"", "\"started\"")
            .replace("\"IsTransitioning\": true", "\"IsTransitioning\": false");
        assert!(app_status(&started).unwrap().is_started());
        // 2018 shape: no PatchSequence, still parses.
        let old = APP.replace("        \"PatchSequence\": 0,\n", "");
        assert_eq!(app_status(&old).unwrap().state, "starting");
        assert!(app_status("[]").is_err());
    }

    const HEALTHY: &str = "checking: Archivist Health Check...\n|  checks that Archivist is up and healthy\n|- ✓ PASS\n\nchecking: Vault Server Health Check...\n|  checks that the configured Vault Server is healthy\n|- ✓ PASS\n\n  All checks passed.\n";

    #[test]
    fn health_check_reads_the_summary_line() {
        let ok = health_check(HEALTHY).unwrap();
        assert!(ok.passed);
        assert_eq!(ok.summary, "All checks passed.");
        let bad = "checking: Terraform Enterprise Health Check...\n|  checks that TFE is up\n|- ✗ ERROR: http://atlas.ptfe:9292/_health_check?full did not return a healthy status, 500\n\nchecking: Vault Server Health Check...\n|  checks vault\n|- ✓ PASS\n\n1 checks failed.\n";
        let report = health_check(bad).unwrap();
        assert!(!report.passed);
        assert_eq!(
            report.failed_checks,
            vec!["Terraform Enterprise Health Check".to_string()]
        );
        assert!(
            health_check("checking: X...\n|- ✓ PASS\n").is_err(),
            "no summary means unknown"
        );
        let stray = format!("Error parsing config file: json: cannot unmarshal string\n{HEALTHY}");
        assert!(health_check(&stray).unwrap().passed);
    }
}
