//! Logs go to the journal when stderr is connected to it (under systemd), else to stderr with a
//! UTC timestamp. Nothing logged ever holds a secret value: secrets are wrapped in `Secret`.

use log::{LevelFilter, Log, Metadata, Record};
use std::io::Write;

pub fn init(level: LevelFilter) {
    if systemd_journal_logger::connected_to_journal() {
        if let Ok(logger) = systemd_journal_logger::JournalLog::new() {
            let logger = logger
                .with_syslog_identifier("tfe-node-agent".into())
                .with_extra_fields(vec![("VERSION", env!("CARGO_PKG_VERSION"))]);
            if logger.install().is_ok() {
                log::set_max_level(level);
                return;
            }
        }
    }
    if log::set_boxed_logger(Box::new(StderrLog)).is_ok() {
        log::set_max_level(level);
    }
}

struct StderrLog;

impl Log for StderrLog {
    fn enabled(&self, _: &Metadata) -> bool {
        true
    }

    fn log(&self, record: &Record) {
        // Our own messages only; the SDK's internals stay quiet unless asked for with trace.
        if !record.target().starts_with("tfe_node_agent")
            && record.level() > log::Level::Warn
            && log::max_level() < LevelFilter::Trace
        {
            return;
        }
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        // The whole line in one write(2): stderr is unbuffered and `writeln!` on it writes piece
        // by piece, which costs syscalls and lets a child writing to the same stderr split a line.
        let line = format!("{now} {:<5} {}\n", record.level(), record.args());
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}
