//! PostgreSQL 15 (Debian's, installed by tests/setup.sh) on a loopback port of its own: a cluster
//! initdb'd in a temporary directory as `nobody` (PostgreSQL refuses to run as root), scram-sha-256
//! for TCP, trust only on its unix socket (in the same directory) for the set-up's `psql`. One
//! login role with a password and a database it owns; optionally TLS with a CA made here, or only
//! TLS clients admitted (`hostssl`). Stopped by its pid (fast shutdown) when the handle drops.
//! The role's password reaches `psql` on its stdin, never an argv.

use super::processes::Proc;
use super::redis::{closed_port, make_ca, make_leaf};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = "/usr/lib/postgresql/15/bin";
/// `nobody`: initdb and postgres refuse root, and the tests run as root.
const UID: u32 = 65534;
const GID: u32 = 65534;

#[derive(Debug, Clone, Default)]
pub struct PostgresOptions {
    /// ssl=on with a leaf for these subjectAltNames (default `IP:127.0.0.1`), signed by a CA
    /// made here (`Postgres::ca_pem`).
    pub tls: Option<String>,
    /// pg_hba admits only TLS clients (`hostssl`).
    pub tls_only: bool,
}

pub struct Postgres {
    pub port: u16,
    pub user: String,
    pub password: String,
    pub dbname: String,
    pub ca_pem: Option<String>,
    dir: tempfile::TempDir,
    proc: Option<Proc>,
}

impl Postgres {
    pub fn plain(user: &str, password: &str, dbname: &str) -> Self {
        Self::start(user, password, dbname, PostgresOptions::default())
    }

    pub fn start(user: &str, password: &str, dbname: &str, options: PostgresOptions) -> Self {
        let initdb = Path::new(BIN).join("initdb");
        assert!(
            initdb.exists(),
            "{} missing: run tests/setup.sh first (it installs postgresql-15)",
            initdb.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let data = d.join("data");
        let mut ca_pem = None;
        if let Some(names) = &options.tls {
            ca_pem = Some(make_ca(d, "ca"));
            make_leaf(d, "ca", names);
        }
        chown_tree(d);
        let out = as_nobody(&initdb)
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut conf = format!(
            "listen_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\n\
             synchronous_commit = off\nfull_page_writes = off\nshared_buffers = 16MB\n\
             max_connections = 20\n",
            d.display()
        );
        if options.tls.is_some() {
            conf.push_str(&format!(
                "ssl = on\nssl_cert_file = '{0}/server.crt'\nssl_key_file = '{0}/server.key'\n",
                d.display()
            ));
        }
        append(&data.join("postgresql.conf"), &conf);
        if options.tls_only {
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
            )
            .unwrap();
        }
        // postgres cannot be told port 0: take a free port, and another should a parallel test
        // bind it first.
        for _ in 0..5 {
            let port = closed_port();
            let Some(proc) = launch(d, &data, port) else {
                continue;
            };
            let pg = Postgres {
                port,
                user: user.into(),
                password: password.into(),
                dbname: dbname.into(),
                ca_pem,
                dir,
                proc: Some(proc),
            };
            pg.psql(&format!(
                "CREATE ROLE \"{user}\" LOGIN PASSWORD '{}';\nCREATE DATABASE \"{dbname}\" OWNER \"{user}\";\n",
                password.replace('\'', "''")
            ));
            return pg;
        }
        panic!("postgres did not start on any of 5 ports");
    }

    /// `psql` as the superuser over the unix socket, SQL on stdin; its stdout.
    pub fn psql(&self, sql: &str) -> String {
        let mut child = as_nobody(&Path::new(BIN).join("psql"))
            .arg("-h")
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("psql");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(sql.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let Some(mut proc) = self.proc.take() else {
            return;
        };
        // SIGINT: fast shutdown (backends ended, no checkpoint wait); SIGKILL (Proc's drop) only
        // if it hangs, since a killed postmaster leaves its backends to notice on their own.
        let pid = nix::unistd::Pid::from_raw(proc.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = proc.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn as_nobody(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.uid(UID)
        .gid(GID)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LC_ALL", "C")
        .current_dir("/")
        .stdin(Stdio::null());
    cmd
}

fn chown_tree(dir: &Path) {
    let status = Command::new("chown")
        .args(["-R", &format!("{UID}:{GID}")])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success(), "chown {}", dir.display());
    // The server key must be its owner's alone.
    let key = dir.join("server.key");
    if key.exists() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

fn append(path: &PathBuf, text: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Starts postgres on `port` and waits until it accepts connections; None when it exits first
/// (the port was taken).
fn launch(dir: &Path, data: &Path, port: u16) -> Option<Proc> {
    let log = std::fs::File::create(dir.join("postgres.log")).unwrap();
    let child = as_nobody(&Path::new(BIN).join("postgres"))
        .arg("-D")
        .arg(data)
        .args(["-p", &port.to_string()])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting postgres");
    let mut proc = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = as_nobody(&Path::new(BIN).join("pg_isready"))
            .arg("-h")
            .arg(dir)
            .args(["-p", &port.to_string(), "-U", "postgres", "-q"])
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            return Some(proc);
        }
        if let Ok(Some(_)) = proc.0.try_wait() {
            return None;
        }
        assert!(
            Instant::now() < deadline,
            "postgres did not accept connections within 20 s: {}",
            std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
