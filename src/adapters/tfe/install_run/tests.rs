use super::*;

fn script(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("install.sh");
    std::fs::write(&path, format!("{body}\n")).unwrap();
    path
}

fn command(script: &Path, instance: &str, timeout: Duration) -> InstallCommand {
    InstallCommand {
        instance_id: instance.into(),
        script: script.to_owned(),
        args: vec!["flag-a".into()],
        timeout,
    }
}

fn runs(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("runs"))
        .unwrap_or_default()
        .lines()
        .count()
}

#[tokio::test]
async fn a_recorded_success_is_adopted_not_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let s = script(dir.path(), "echo run >> runs; echo \"args: $*\"");
    let files = Detached::new(&dir.path().join("state"), "install", "install.sh");
    let p = command(&s, "i-1", Duration::from_secs(30));
    install(&files, None, &p).await.unwrap();
    assert_eq!(runs(dir.path()), 1);
    assert_eq!(
        std::fs::read_to_string(files.log()).unwrap(),
        "args: flag-a\n"
    );
    // A restarted agent (nothing recorded in its state yet) asks again: the status decides.
    let again = Detached::new(&files.dir, "install", "install.sh");
    install(&again, None, &p).await.unwrap();
    assert_eq!(runs(dir.path()), 1, "install.sh ran a second time");
}

#[tokio::test]
async fn a_recorded_failure_is_reported_not_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let s = script(dir.path(), "echo run >> runs; exit 3");
    let files = Detached::new(dir.path(), "install", "install.sh");
    let p = command(&s, "i-1", Duration::from_secs(30));
    let first = install(&files, None, &p).await.unwrap_err().to_string();
    let second = install(&files, None, &p).await.unwrap_err().to_string();
    assert!(first.contains("exit status: 3"), "{first}");
    assert_eq!(first, second);
    assert_eq!(runs(dir.path()), 1);
}

#[tokio::test]
async fn a_run_left_by_a_dead_agent_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let s = script(dir.path(), "echo run >> runs; sleep 1; echo done");
    let files = Detached::new(dir.path(), "install", "install.sh");
    let p = command(&s, "i-1", Duration::from_secs(30));
    // What a killed agent leaves behind: the run going on, and its record.
    let args = vec![s.to_string_lossy().into_owned()];
    let (process, gate) = files
        .start(Path::new("/bin/bash"), &args, Some(dir.path()))
        .unwrap();
    gate.go().unwrap();
    let record = InstallRecord {
        instance_id: "i-1".into(),
        started_at: unix_now(),
        process,
    };
    std::fs::write(
        dir.path().join("install.pid"),
        serde_json::to_vec(&record).unwrap(),
    )
    .unwrap();
    let restarted = Detached::new(dir.path(), "install", "install.sh");
    install(&restarted, None, &p).await.unwrap();
    assert_eq!(runs(dir.path()), 1);
    assert_eq!(restarted.exit_status(), Some(0));
}

#[tokio::test]
async fn another_instances_record_is_not_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let s = script(dir.path(), "echo run >> runs");
    let files = Detached::new(dir.path(), "install", "install.sh");
    install(
        &files,
        None,
        &command(&s, "i-baked", Duration::from_secs(30)),
    )
    .await
    .unwrap();
    install(&files, None, &command(&s, "i-new", Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(runs(dir.path()), 2);
}

#[tokio::test]
async fn the_timeout_kills_the_run_and_a_cancelled_run_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let s = script(dir.path(), "echo $$ > pid; sleep 300");
    let files = Detached::new(dir.path(), "install", "install.sh");
    let err = install(&files, None, &command(&s, "i-1", Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TfeError::Process(ProcessError::TimedOut { .. })),
        "{err}"
    );

    let second = command(&s, "i-2", Duration::from_secs(60));
    let cancelled = install(&files, None, &second);
    let _ = tokio::time::timeout(Duration::from_millis(500), cancelled).await;
    let pid: i32 = std::fs::read_to_string(dir.path().join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let gone = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.is_empty()
            || stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
    });
    assert!(gone, "a cancelled install kept running");
    assert!(!dir.path().join("install.pid").exists());
}

#[tokio::test]
async fn a_digest_mismatch_refuses_before_running() {
    let dir = tempfile::tempdir().unwrap();
    let s = script(dir.path(), "echo run >> runs");
    let files = Detached::new(dir.path(), "install", "install.sh");
    let err = install(
        &files,
        Some("00"),
        &command(&s, "i-1", Duration::from_secs(5)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, TfeError::DigestMismatch { .. }), "{err}");
    assert_eq!(runs(dir.path()), 0);
}
