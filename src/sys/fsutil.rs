//! Crash-safe file writes: a reader sees the old file or the new one, never a mix, and the new
//! file never exists, even briefly, with looser permissions than asked for.

use nix::unistd::{Gid, Uid};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set owner or mode of {path}")]
    Permissions {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Writes `bytes` to `path` atomically: a temp file in the same directory (created 0600), written,
/// chowned and chmodded, fsynced, renamed over `path`, and the directory fsynced so the rename
/// itself survives a crash. On any error the temp file is removed and `path` is untouched.
pub fn atomic_write(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(Uid, Gid)>,
) -> Result<(), FsError> {
    let dir = parent_of(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    remove_stale_temps(dir, &name);
    let result = write_temp(&tmp, bytes, mode, owner, path).and_then(|()| {
        fs::rename(&tmp, path).map_err(|source| FsError::Write {
            path: path.to_owned(),
            source,
        })
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    sync_dir(dir).map_err(|source| FsError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Temp files of `name` left by an agent killed mid-write (another pid in the name): only one
/// agent writes these files, so they are stale, and they may hold secrets.
fn remove_stale_temps(dir: &Path, name: &str) {
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
            log::info!(
                "removing {}, left by an interrupted write",
                entry.path().display()
            );
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn write_temp(
    tmp: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(Uid, Gid)>,
    target: &Path,
) -> Result<(), FsError> {
    let write_err = |source| FsError::Write {
        path: target.to_owned(),
        source,
    };
    // A stale temp from a crashed run would make create_new fail; it is ours to remove.
    let _ = fs::remove_file(tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(write_err)?;
    file.write_all(bytes).map_err(write_err)?;
    set_owner_and_mode(&file, mode, owner).map_err(|source| FsError::Permissions {
        path: target.to_owned(),
        source,
    })?;
    file.sync_all().map_err(write_err)
}

fn set_owner_and_mode(file: &File, mode: u32, owner: Option<(Uid, Gid)>) -> std::io::Result<()> {
    if let Some((uid, gid)) = owner {
        nix::unistd::fchown(file, Some(uid), Some(gid)).map_err(std::io::Error::from)?;
    }
    // After chown: chown may clear set-id bits, and mode is what the caller asked for, exactly.
    file.set_permissions(fs::Permissions::from_mode(mode))
}

/// Sets owner and mode of an existing file (used to undo install.sh's `chmod a+r`).
pub fn restrict(path: &Path, mode: u32, owner: Option<(Uid, Gid)>) -> Result<(), FsError> {
    let file = File::open(path).map_err(|source| FsError::Permissions {
        path: path.to_owned(),
        source,
    })?;
    set_owner_and_mode(&file, mode, owner).map_err(|source| FsError::Permissions {
        path: path.to_owned(),
        source,
    })
}

/// Creates a directory (and parents) with the given mode for any directory it creates.
pub fn create_dir(path: &Path, mode: u32) -> Result<(), FsError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|source| FsError::CreateDir {
            path: path.to_owned(),
            source,
        })
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

use std::os::unix::fs::DirBuilderExt;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn writes_replace_atomically_with_the_exact_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conf.json");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        atomic_write(&path, b"new", 0o600, None).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file may remain");
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conf.json");
        fs::write(&path, "old").unwrap();
        // The target being a non-empty directory makes the rename fail after the temp is written.
        let target = dir.path().join("adir");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("x"), "x").unwrap();
        assert!(atomic_write(&target, b"new", 0o600, None).is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
    }

    #[test]
    fn temps_left_by_a_killed_writer_are_removed_by_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let stale = dir.path().join(".state.json.tmp-999999");
        let unrelated = dir.path().join(".other.json.tmp-999999");
        fs::write(&stale, "half").unwrap();
        fs::write(&unrelated, "not ours to judge").unwrap();
        atomic_write(&path, b"{}", 0o600, None).unwrap();
        assert!(!stale.exists(), "the stale temp survived");
        assert!(unrelated.exists(), "another file's temp was removed");
        assert_eq!(fs::read(&path).unwrap(), b"{}");
    }

    #[test]
    fn owner_is_applied_when_given() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let me = (Uid::current(), Gid::current());
        atomic_write(&path, b"x", 0o640, Some(me)).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (me.0.as_raw(), me.1.as_raw()));
        assert_eq!(meta.mode() & 0o7777, 0o640);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        restrict(&path, 0o600, None).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
    }
}
