//! Processes and files the harness deals with: the repository's path, servers started on a port
//! of their own choosing, bounded waits, children killed on drop, and what a test asks of a file
//! or a process (mode, owner, gone).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Starts `cmd`, a server told to listen on 127.0.0.1 port 0, and returns it with the port it
/// announces in an output line as `marker` followed by the number (bounded wait). Letting the
/// server pick the port is race-free: a port picked here and handed over could be taken by a
/// parallel test's server in between. Both output streams keep being drained, so a server that
/// logs every request never blocks on a full pipe.
pub fn spawn_on_any_port(mut cmd: Command, marker: &'static str, timeout: Duration) -> (Proc, u16) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    let (tx, rx) = std::sync::mpsc::channel();
    let streams: [Box<dyn Read + Send>; 2] = [
        Box::new(child.stdout.take().unwrap()),
        Box::new(child.stderr.take().unwrap()),
    ];
    for stream in streams {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if let Some((_, after)) = line.split_once(marker) {
                    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
                    if let Ok(port) = digits.parse::<u16>() {
                        let _ = tx.send(port);
                    }
                }
            }
        });
    }
    let proc = Proc(child);
    let port = rx
        .recv_timeout(timeout)
        .unwrap_or_else(|_| panic!("{cmd:?} announced no port ({marker:?}) within {timeout:?}"));
    (proc, port)
}

pub fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} not ready within {timeout:?}");
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
}

pub fn owner_of(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().uid()
}

/// Whether `pid` has exited (no /proc entry) or is a zombie, checked until `timeout` has passed
/// (at least once).
pub fn process_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The command name may hold spaces: the state letter follows the last ')'.
        let state = stat.rsplit(')').next().unwrap_or("").trim_start();
        if stat.is_empty() || state.starts_with('Z') {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
