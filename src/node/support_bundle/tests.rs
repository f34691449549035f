//! The flow on the fakes: the TFE run reported, a secret in the journal refuses with nothing
//! written, a failed TFE run still gives the agent's bundle.

use super::*;
use crate::testing::fakes::{self, FakeHost};

fn request(dir: &Path) -> Request {
    Request {
        output: Some(dir.join("out")),
        journal_lines: 10,
        skip_tfe: false,
        config_path: dir.join("agent.toml"),
        status: Err("no agent in this test".into()),
    }
}

fn a_secret_value() -> String {
    let shared = crate::testing::valid_shared();
    let (_, v) = shared
        .iter()
        .find(|(_, v)| v.as_str().is_some_and(|s| s.len() >= MIN_SECRET_LEN))
        .expect("a long secret value");
    v.as_str().unwrap().to_string()
}

#[tokio::test(start_paused = true)]
async fn the_bundle_is_written_with_tfe_s_job_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = fakes::settings_in(dir.path());
    let w = fakes::world().build();
    let written = run(&w, &cfg, &request(dir.path())).await.unwrap();
    assert!(written.path.starts_with(dir.path().join("out")));
    let names: Vec<&str> = written.files.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"journal.txt") && names.contains(&"MANIFEST"),
        "{names:?}"
    );
    let text = describe_tfe(&written.tfe);
    assert!(
        text.contains("prefix: support-bundles/2026-12-03T17:00:00Z/"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_secret_in_the_journal_refuses_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = fakes::settings_in(dir.path());
    let host = FakeHost::default();
    *host.journal.lock().unwrap() = Some(format!("line {}\n", a_secret_value()).into_bytes());
    let w = fakes::world().host(host).build();
    let err = run(&w, &cfg, &request(dir.path())).await.unwrap_err();
    let shown = crate::error_chain(&err);
    assert!(matches!(err, BundleError::Refused(_)), "{shown}");
    assert!(shown.contains("journal.txt: setting "), "{shown}");
    assert!(!shown.contains(&a_secret_value()));
    assert!(!dir.path().join("out").exists());
}

#[tokio::test(start_paused = true)]
async fn a_failed_tfe_bundle_still_gives_the_agent_s() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = fakes::settings_in(dir.path());
    let w = fakes::world().build();
    *w.tfe.support_bundle_output.lock().unwrap() = Err("exit status: 3".into());
    let written = run(&w, &cfg, &request(dir.path())).await.unwrap();
    assert!(matches!(written.tfe, TfeBundle::Failed(_)));
    assert!(written.path.exists());
}
