//! `support-bundle`: TFE's own bundle (`replicated admin support-bundle`, uploaded by TFE) and the
//! agent's bundle, a `.tar.gz` of what the agent knows about this node. Every file of the agent's
//! bundle is gathered in memory and scanned for every secret value the node fetched, in every
//! encoding of [`crate::model::leak`], before a byte is written: one hit and there is no bundle.

use crate::config::Settings;
use crate::model::cluster::ClusterView;
use crate::model::leak::{Finding, Needle, Scanner, MIN_SECRET_LEN};
use crate::model::tfe::SupportBundleRun;
use crate::node::cluster;
use crate::ports::{ClusterStore, ClusterStores, Host, TfeTools, ToolError, World};
use crate::sys::fsutil::{self, FsError};
use crate::tfe_files::secret_bundle::SecretBundle;
use crate::tfe_files::{self, ConfigureError};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What was asked on the command line.
#[derive(Debug, Clone)]
pub struct Request {
    /// Where the archive goes; default [`default_dir`].
    pub output: Option<PathBuf>,
    pub journal_lines: u32,
    pub skip_tfe: bool,
    /// agent.toml, included as is (it holds secret ids only, and is scanned all the same).
    pub config_path: PathBuf,
    /// The running agent's `/status` body, or why there is none.
    pub status: Result<String, String>,
}

/// The default output directory: root's own, beside state.json, kept across reboots.
pub fn default_dir(cfg: &Settings) -> PathBuf {
    cfg.paths.state_dir.join("support-bundles")
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read the node's secrets, so the bundle cannot be checked for them")]
    Secrets(#[source] ConfigureError),
    #[error("refused: the bundle would hold {} secret value(s): {}; no bundle was written", .0.len(), list(.0))]
    Refused(Vec<Finding>),
    #[error("cannot build the archive")]
    Archive(#[source] std::io::Error),
    #[error("cannot write the bundle")]
    Write(#[source] FsError),
}

fn list(findings: &[Finding]) -> String {
    let all: Vec<String> = findings.iter().map(Finding::to_string).collect();
    all.join("; ")
}

/// TFE's own bundle: where it went, or why not.
#[derive(Debug)]
pub enum TfeBundle {
    Skipped,
    Ran {
        run: SupportBundleRun,
        /// The `s3_bucket` setting, when the node's settings validate.
        bucket: Option<String>,
    },
    Failed(ToolError),
}

/// A bundle written.
#[derive(Debug)]
pub struct Written {
    pub path: PathBuf,
    pub files: Vec<(String, usize)>,
    pub tfe: TfeBundle,
}

/// One file of the bundle, in memory until the scan passed.
struct Entry {
    name: &'static str,
    bytes: Vec<u8>,
    source: String,
}

pub async fn run<W: World>(w: &W, cfg: &Settings, req: &Request) -> Result<Written, BundleError> {
    let (secrets, problems) = tfe_files::fetch(w.secrets(), w.clock(), cfg)
        .await
        .map_err(BundleError::Secrets)?;
    let scanner = Scanner::new(&needles(&secrets));
    let node = tfe_files::validate::validate(cfg, secrets.clone(), problems);
    let setting = |key: &str| match &node {
        Ok(n) => n.settings.get(key).map(|v| v.expose().to_string()),
        Err(_) => None,
    };

    let tfe = if req.skip_tfe {
        TfeBundle::Skipped
    } else {
        log::info!("running replicated admin support-bundle (TFE's bundle of every node)");
        match w.tfe().support_bundle().await {
            Ok(mut run) => {
                withhold_secrets(&mut run, &scanner);
                TfeBundle::Ran {
                    run,
                    bucket: setting("s3_bucket"),
                }
            }
            Err(e) => TfeBundle::Failed(e),
        }
    };

    let mut entries = Vec::new();
    let mut absent: Vec<(&str, String)> = Vec::new();
    let state_dir = &cfg.paths.state_dir;
    for name in ["state.json", "drain.log", "drain.status", "install.log"] {
        let path = state_dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => entries.push(Entry {
                name,
                bytes,
                source: path.display().to_string(),
            }),
            Err(e) => absent.push((name, format!("{}: {e}", path.display()))),
        }
    }
    match &req.status {
        Ok(body) => {
            entries.push(Entry {
                name: "status.json",
                bytes: body.clone().into_bytes(),
                source: "the running agent's /status".into(),
            });
            let drift = serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|doc| doc.get("drift").cloned())
                .filter(|d| !d.is_null());
            match drift {
                Some(d) => entries.push(Entry {
                    name: "drift.json",
                    bytes: pretty(&d),
                    source: "the `drift` field of /status".into(),
                }),
                None => absent.push(("drift.json", "/status has no drift report".into())),
            }
        }
        Err(why) => {
            absent.push(("status.json", format!("no running agent answered: {why}")));
            absent.push(("drift.json", "no /status to take it from".into()));
        }
    }
    match cluster_view(w, cfg, &node).await {
        Ok(view) => entries.push(Entry {
            name: "cluster.json",
            bytes: view,
            source: "the cluster store (as `tfe-node-agent cluster --json`)".into(),
        }),
        Err(why) => absent.push(("cluster.json", why)),
    }
    match std::fs::read(&req.config_path) {
        Ok(bytes) => entries.push(Entry {
            name: "agent.toml",
            bytes,
            source: req.config_path.display().to_string(),
        }),
        Err(e) => absent.push(("agent.toml", format!("{}: {e}", req.config_path.display()))),
    }
    match w.host().journal(req.journal_lines).await {
        Ok(bytes) => entries.push(Entry {
            name: "journal.txt",
            bytes,
            source: format!(
                "journalctl -u tfe-node-agent -n {} -o short-iso",
                req.journal_lines
            ),
        }),
        Err(e) => absent.push(("journal.txt", crate::error_chain(&e))),
    }
    entries.push(Entry {
        name: "versions.txt",
        bytes: versions(w).await.into_bytes(),
        source: "this agent; replicatedctl version".into(),
    });
    entries.push(Entry {
        name: "tfe-support-bundle.txt",
        bytes: describe_tfe(&tfe).into_bytes(),
        source: "replicated admin --tty=0 support-bundle".into(),
    });
    let manifest = manifest(&entries, &absent, &scanner);
    entries.push(Entry {
        name: "MANIFEST",
        bytes: manifest.into_bytes(),
        source: "this command".into(),
    });

    let findings: Vec<Finding> = entries
        .iter()
        .flat_map(|e| scanner.scan(e.name, &e.bytes))
        .collect();
    if !findings.is_empty() {
        return Err(BundleError::Refused(findings));
    }

    let now = std::time::SystemTime::now();
    let stamp = humantime::format_rfc3339_seconds(now)
        .to_string()
        .replace([':', '-'], "");
    let top = format!("tfe-node-agent-support-{stamp}");
    let archive = archive(&top, &entries, now).map_err(BundleError::Archive)?;
    let dir = req.output.clone().unwrap_or_else(|| default_dir(cfg));
    fsutil::create_dir(&dir, 0o700).map_err(BundleError::Write)?;
    let path = dir.join(format!("{top}.tar.gz"));
    fsutil::atomic_write(&path, &archive, 0o600, None).map_err(BundleError::Write)?;
    Ok(Written {
        path,
        files: entries
            .iter()
            .map(|e| (e.name.to_string(), e.bytes.len()))
            .collect(),
        tfe,
    })
}

/// Every value fetched from Secrets Manager, by a name that says which it is.
fn needles(s: &SecretBundle) -> Vec<Needle<'_>> {
    let mut out: Vec<Needle<'_>> = s
        .shared
        .iter()
        .map(|(k, v)| Needle {
            name: format!("setting {k} (secret {})", s.shared_id),
            value: v.expose().as_bytes(),
        })
        .collect();
    let others: [(&str, Option<&[u8]>); 5] = [
        ("the license", s.license.as_ref().map(|l| l.expose())),
        (
            "the console password",
            s.console_password.as_ref().map(|p| p.expose().as_bytes()),
        ),
        (
            "the TLS key",
            s.tls_key.as_ref().map(|p| p.expose().as_bytes()),
        ),
        (
            "the TLS certificate",
            s.tls_cert.as_ref().map(|p| p.expose().as_bytes()),
        ),
        (
            "the CA bundle",
            s.ca_bundle.as_ref().map(|(_, p)| p.expose().as_bytes()),
        ),
    ];
    for (name, value) in others {
        if let Some(value) = value {
            out.push(Needle {
                name: name.to_string(),
                value,
            });
        }
    }
    out
}

async fn cluster_view<W: World>(
    w: &W,
    cfg: &Settings,
    node: &Result<tfe_files::TfeConfig, Vec<crate::model::problem::Problem>>,
) -> Result<Vec<u8>, String> {
    let Ok(node) = node else {
        return Err("the node's settings do not validate (`tfe-node-agent validate`)".into());
    };
    let Some(target) = cluster::store_target(&cfg.cluster, node) else {
        return Err("no cluster store: [cluster].enabled is false, or no redis_host".into());
    };
    match w.stores().open(target).read().await {
        Ok(snapshot) => {
            let view = ClusterView::assess(&snapshot, cfg.cluster.node_ttl, cfg.cluster.max_nodes);
            Ok(pretty(&view))
        }
        Err(e) => Err(crate::error_chain(&e)),
    }
}

async fn versions<W: World>(w: &W) -> String {
    let replicated = match w.tfe().replicated_version().await {
        Ok(v) => v,
        Err(e) => format!("(no answer: {})", crate::error_chain(&e)),
    };
    format!(
        "tfe-node-agent {}\nreplicatedctl version: {replicated}\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// TFE's bundle as the operator needs it: where it went, and what was not understood.
pub fn describe_tfe(tfe: &TfeBundle) -> String {
    let mut out = String::new();
    match tfe {
        TfeBundle::Skipped => out.push_str("TFE's support bundle: skipped (--skip-tfe)\n"),
        TfeBundle::Failed(e) => {
            let _ = writeln!(
                out,
                "TFE's support bundle failed: {}",
                crate::error_chain(e)
            );
        }
        TfeBundle::Ran { run, bucket } => {
            let bucket = bucket
                .as_deref()
                .unwrap_or("(unknown: no s3_bucket setting)");
            match (&run.job_id, run.prefix()) {
                (Some(job), Some(prefix)) => {
                    let _ = writeln!(out, "TFE's support bundle: job {job}");
                    let _ = writeln!(out, "  bucket: {bucket}");
                    let _ = writeln!(out, "  prefix: {prefix}");
                    let _ = writeln!(out, "  s3://{bucket}/{prefix}");
                }
                _ if !run.locations.is_empty() => {
                    out.push_str("TFE's support bundle: no job id in its output\n");
                }
                _ => out.push_str(
                    "TFE's support bundle ran, but its output named no support-bundles/ location: where it went is not known\n",
                ),
            }
            for l in &run.locations {
                let _ = writeln!(out, "  bundle: {l}");
            }
            for l in &run.other_lines {
                let _ = writeln!(out, "  (output not understood) {l}");
            }
        }
    }
    out
}

fn manifest(entries: &[Entry], absent: &[(&str, String)], scanner: &Scanner) -> String {
    let mut out = format!(
        "tfe-node-agent {} support bundle\n\nfile\tbytes\tsource\n",
        env!("CARGO_PKG_VERSION")
    );
    for e in entries {
        let _ = writeln!(out, "{}\t{}\t{}", e.name, e.bytes.len(), e.source);
    }
    out.push_str("MANIFEST\t-\tthis file\n\nnot included:\n");
    for (name, why) in absent {
        let _ = writeln!(out, "{name}\t{why}");
    }
    let _ = writeln!(
        out,
        "\nsecret scan: passed; {} secret value(s) looked for in every file (raw, JSON-escaped, base64 and URL-safe base64 at every offset, hex, URL-encoded); {} shorter than {MIN_SECRET_LEN} bytes not looked for",
        scanner.secrets(),
        scanner.skipped
    );
    out
}

fn pretty<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(value).expect("serializes");
    out.push(b'\n');
    out
}

fn archive(top: &str, entries: &[Entry], now: std::time::SystemTime) -> std::io::Result<Vec<u8>> {
    let mtime = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for e in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(e.bytes.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(mtime);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        let path = Path::new(top).join(e.name);
        tar.append_data(&mut header, path, e.bytes.as_slice())?;
    }
    tar.into_inner()?.finish()
}

/// TFE's output lines that hold a secret value are withheld: they are printed and bundled.
fn withhold_secrets(run: &mut SupportBundleRun, scanner: &Scanner) {
    for line in run.other_lines.iter_mut().chain(run.locations.iter_mut()) {
        if let Some(f) = scanner.scan("output", line.as_bytes()).first() {
            *line = format!("<line withheld: it holds {} ({})>", f.secret, f.encoding);
        }
    }
}

#[cfg(test)]
mod tests;
