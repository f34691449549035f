//! redis-server (Debian's, installed by tests/setup.sh) on a loopback port of its own: plain, with
//! a password, over TLS (a CA and a leaf certificate made here with openssl), or TLS with a
//! password. Nothing is persisted (`save ""`, no AOF, its dir a temporary one); the server is
//! killed by its pid when the handle drops. The password is in the server's config file, never
//! its argv, and reaches `redis-cli` through `REDISCLI_AUTH`, never its argv.

use super::processes::Proc;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// `requirepass`.
    pub password: Option<String>,
    /// TLS only (no plain port), with a leaf certificate for these subjectAltNames (default
    /// `IP:127.0.0.1,DNS:localhost`).
    pub tls: bool,
    pub tls_names: Option<String>,
    /// More config lines (`replicaof 127.0.0.1 PORT`, `rename-command ROLE ""`).
    pub extra: Option<String>,
}

pub struct Redis {
    pub port: u16,
    pub password: Option<String>,
    /// The CA that signed the server's certificate (PEM), when TLS.
    pub ca_pem: Option<String>,
    ca_file: Option<PathBuf>,
    options: RedisOptions,
    dir: tempfile::TempDir,
    proc: Proc,
}

fn need(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{tool} missing: run tests/setup.sh first (it installs redis-server)"
    );
}

/// A port nothing listens on (a listener's port, closed again).
pub fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`{name}.crt`, `{name}.key`) in `dir`.
pub fn make_ca(dir: &Path, name: &str) -> String {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-nodes",
            "-newkey",
            "rsa:2048",
            "-days",
            "2",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    std::fs::read_to_string(dir.join(format!("{name}.crt"))).unwrap()
}

/// A leaf (`server.crt`, `server.key`) signed by CA `ca`: rustls refuses a CA:TRUE certificate as
/// a server's and ignores the CN, so CA:FALSE and the names as subjectAltName.
pub fn make_leaf(dir: &Path, ca: &str, names: &str) {
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-nodes",
            "-newkey",
            "rsa:2048",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=redis-test",
        ],
    );
    std::fs::write(
        dir.join("leaf.ext"),
        format!(
            "subjectAltName={names}\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ],
    );
}

impl Redis {
    pub fn plain() -> Self {
        Self::start(RedisOptions::default())
    }

    pub fn with_password(password: &str) -> Self {
        Self::start(RedisOptions {
            password: Some(password.into()),
            ..Default::default()
        })
    }

    pub fn tls() -> Self {
        Self::start(RedisOptions {
            tls: true,
            ..Default::default()
        })
    }

    pub fn start(options: RedisOptions) -> Self {
        need("redis-server");
        need("redis-cli");
        let dir = tempfile::tempdir().unwrap();
        let mut ca_pem = None;
        if options.tls {
            need("openssl");
            ca_pem = Some(make_ca(dir.path(), "ca"));
            let names = options
                .tls_names
                .as_deref()
                .unwrap_or("IP:127.0.0.1,DNS:localhost");
            make_leaf(dir.path(), "ca", names);
        }
        let ca_file = options.tls.then(|| dir.path().join("ca.crt"));
        // redis-server cannot be told port 0 (that turns the listener off): take a free port and
        // try again should another process bind it first.
        for _ in 0..5 {
            let port = closed_port();
            let Some(proc) = launch(dir.path(), port, &options) else {
                continue;
            };
            return Redis {
                port,
                password: options.password.clone(),
                ca_pem,
                ca_file,
                options,
                dir,
                proc,
            };
        }
        panic!("redis-server did not start on any of 5 ports");
    }

    /// Kills the server (SIGKILL: nothing is saved anyway) and starts it again on the same port
    /// with the same config: every client's connection is cut and every key is gone.
    pub fn restart(&mut self) {
        let _ = self.proc.0.kill();
        let _ = self.proc.0.wait();
        // The port was just ours; a parallel test binding it in between is a tiny window, retried.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(proc) = launch(self.dir.path(), self.port, &self.options) {
                self.proc = proc;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start again on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's log (warnings, client errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        cli(
            self.port,
            self.ca_file.as_deref(),
            self.password.as_deref(),
            args,
        )
    }

    /// The server's clock (unix seconds): the one the agents' records are stamped with.
    pub fn server_time(&self) -> u64 {
        self.cli(&["TIME"])
            .lines()
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// `redis-cli ARGS` against this server (TLS and password as needed); its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("redis-cli {args:?} failed against port {}", self.port))
    }

    /// Every key of database `db` with its value (strings as they are, sorted sets as
    /// `member score` lines, anything else by its type), for leak scans.
    pub fn dump(&self, db: u32) -> Vec<(String, String)> {
        let n = db.to_string();
        let keys = self.cli(&["-n", &n, "--scan"]);
        keys.lines()
            .filter(|k| !k.is_empty())
            .map(|key| {
                let kind = self.cli(&["-n", &n, "TYPE", key]);
                let value = match kind.trim() {
                    "string" => self.cli(&["-n", &n, "GET", key]),
                    "zset" => self.cli(&["-n", &n, "ZRANGE", key, "0", "-1", "WITHSCORES"]),
                    other => format!("<{other}>"),
                };
                (key.to_string(), value)
            })
            .collect()
    }

    /// The ids of the clients connected, but for the `redis-cli` asking (Redis 7.0 has no
    /// `CLIENT SETINFO`, so a client cannot be told by its library).
    pub fn clients(&self) -> Vec<String> {
        self.cli(&["CLIENT", "LIST"])
            .lines()
            .filter(|l| !l.contains("cmd=client|list"))
            .filter_map(|l| l.split_whitespace().next())
            .map(|id| id.trim_start_matches("id=").to_string())
            .collect()
    }
}

/// `redis-cli` against 127.0.0.1:`port`, bounded to 10 s; its stdout if it exited 0.
fn cli(port: u16, ca_file: Option<&Path>, password: Option<&str>, args: &[&str]) -> Option<String> {
    let mut cmd = Command::new("timeout");
    cmd.args(["10", "redis-cli", "-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .env_remove("REDISCLI_AUTH");
    if let Some(ca) = ca_file {
        cmd.arg("--tls").arg("--cacert").arg(ca);
    }
    if let Some(p) = password {
        cmd.env("REDISCLI_AUTH", p);
    }
    let out = cmd.args(args).stdin(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts redis-server on `port` (config file in `dir`) and waits until it answers PING; None
/// when it exits first (the port was taken).
fn launch(dir: &Path, port: u16, options: &RedisOptions) -> Option<Proc> {
    let d = dir.display();
    let mut conf =
        format!("bind 127.0.0.1\nsave \"\"\nappendonly no\ndir {d}\nlogfile {d}/redis.log\n");
    if options.tls {
        conf.push_str(&format!(
            "port 0\ntls-port {port}\ntls-cert-file {d}/server.crt\n\
             tls-key-file {d}/server.key\ntls-ca-cert-file {d}/ca.crt\ntls-auth-clients no\n"
        ));
    } else {
        conf.push_str(&format!("port {port}\n"));
    }
    if let Some(p) = &options.password {
        conf.push_str(&format!("requirepass \"{p}\"\n"));
    }
    if let Some(extra) = &options.extra {
        conf.push_str(extra);
        conf.push('\n');
    }
    let conf_path = dir.join("redis.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = Command::new("redis-server")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting redis-server");
    let mut proc = Proc(child);
    let ca_file = options.tls.then(|| dir.join("ca.crt"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if cli(
            port,
            ca_file.as_deref(),
            options.password.as_deref(),
            &["PING"],
        )
        .is_some_and(|o| o.trim() == "PONG")
        {
            return Some(proc);
        }
        if let Ok(Some(_)) = proc.0.try_wait() {
            return None;
        }
        assert!(
            Instant::now() < deadline,
            "redis-server did not answer PING within 10 s: {}",
            std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
