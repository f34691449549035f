//! Binding `[observe].listen`: TCP addresses, and unix sockets for root only.

use crate::config::Endpoint;
use crate::sys::fsutil;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::net::{TcpListener, UnixListener};

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {endpoint}")]
    Bind {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot prepare the directory of unix socket {path}")]
    SocketDir {
        path: PathBuf,
        #[source]
        source: fsutil::FsError,
    },
    #[error("{path} exists and is not a socket; not replacing it")]
    NotASocket { path: PathBuf },
    #[error("cannot restrict unix socket {path} to mode 0660")]
    SocketMode {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a listener may serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// TCP: only what reads the node.
    ReadOnly,
    /// The unix socket (root only): what a later release adds to change the node, too.
    Operator,
}

#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener, String),
    Unix(UnixListener, String),
}

impl Listener {
    pub fn scope(&self) -> Scope {
        match self {
            Listener::Tcp(..) => Scope::ReadOnly,
            Listener::Unix(..) => Scope::Operator,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Listener::Tcp(_, n) | Listener::Unix(_, n) => n,
        }
    }
}

/// Binds every endpoint. A failure is returned with the endpoint it names; the caller decides
/// whether the node goes on without it (it does: observability never stops a node).
pub fn bind(endpoint: &Endpoint) -> Result<Listener, ListenError> {
    let name = endpoint.to_string();
    let bind_error = |source| ListenError::Bind {
        endpoint: name.clone(),
        source,
    };
    match endpoint {
        Endpoint::Tcp(addr) => {
            let socket = std::net::TcpListener::bind(addr).map_err(bind_error)?;
            socket.set_nonblocking(true).map_err(bind_error)?;
            // Port 0 takes a free port: the log line says which.
            let bound = socket.local_addr().map_err(bind_error)?;
            Ok(Listener::Tcp(
                TcpListener::from_std(socket).map_err(bind_error)?,
                format!("http://{bound}"),
            ))
        }
        Endpoint::Unix(path) => {
            prepare_socket_path(path)?;
            let listener = UnixListener::bind(path).map_err(bind_error)?;
            // Bound with the umask's mode; tightened before the first accept. Owner and group
            // are the agent's (root under systemd).
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(
                |source| ListenError::SocketMode {
                    path: path.clone(),
                    source,
                },
            )?;
            Ok(Listener::Unix(listener, name))
        }
    }
}

/// The socket's directory exists (0750 when created here) and a socket left by an earlier run
/// is removed; anything else at that path is left alone.
fn prepare_socket_path(path: &Path) -> Result<(), ListenError> {
    if let Some(dir) = path.parent() {
        fsutil::create_dir(dir, 0o750).map_err(|source| ListenError::SocketDir {
            path: path.to_owned(),
            source,
        })?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            let _ = std::fs::remove_file(path);
            Ok(())
        }
        Ok(_) => Err(ListenError::NotASocket {
            path: path.to_owned(),
        }),
        Err(_) => Ok(()),
    }
}
