//! The loss window of a failback: what the old master changed after its
//! last committed stime never reached DR, and bringing the master level
//! with DR would overwrite or remove it. Before anything else, failback
//! moves each such entry aside, keeping its path, into
//! `georep-conflicts/<time>/<brick name>/` beside the brick.
//!
//! Beside the brick, not in it: the same file system (a `rename`, never a
//! copy, so a kill at any moment leaves each file either in the brick or
//! in the conflicts directory), and outside what is replicated, so the
//! leveling never touches it. An entry is in the window when its ctime
//! (every create, write, rename, chmod or link sets it) is at or after the
//! stime less [`CTIME_MARGIN`]: file-system times come from a coarser clock
//! than stime, and moving a file DR has too only costs its resend.
//! Directories are not moved (their entries are); one that ends up empty
//! is left to the leveling.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::session::Stime;

/// How much earlier than stime a ctime still counts as in the window.
pub const CTIME_MARGIN: Duration = Duration::from_secs(2);

/// The folder, beside a brick, where failback keeps what it moves aside.
pub const CONFLICTS_DIR: &str = "georep-conflicts";

#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {source}")]
pub struct ConflictError {
    what: &'static str,
    path: PathBuf,
    source: io::Error,
}

fn err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ConflictError {
    let path = path.to_owned();
    move |source| ConflictError { what, path, source }
}

/// Where the entries of `brick` set aside at `stamp` go:
/// `<brick's parent>/georep-conflicts/<stamp>/<brick's name>`.
pub fn conflicts_dir(brick: &Path, stamp: &str) -> PathBuf {
    let name = brick.file_name().map(OsString::from).unwrap_or_default();
    brick
        .parent()
        .unwrap_or(Path::new("/"))
        .join(CONFLICTS_DIR)
        .join(stamp)
        .join(name)
}

/// Moves every entry of `brick` that is no directory and changed at or
/// after `stime` (less [`CTIME_MARGIN`]) to the same relative path under
/// `into`; `skip` holds absolute directories not to enter. Returns the
/// relative paths moved, in walk order. A name already taken in `into`
/// (a re-run after new writes) gets `~N` appended.
pub fn set_aside(
    brick: &Path,
    stime: Stime,
    into: &Path,
    skip: &[PathBuf],
) -> Result<Vec<PathBuf>, ConflictError> {
    let since = stime.minus(CTIME_MARGIN).nanos();
    let mut moved = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = brick.join(&rel);
        let mut names: Vec<OsString> = fs::read_dir(&dir)
            .map_err(err("listing", &dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(err("listing", &dir))?;
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let md = match fs::symlink_metadata(&path) {
                Ok(md) => md,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(err("reading", &path)(e)),
            };
            if md.is_dir() {
                if !skip.contains(&path) && path != into {
                    stack.push(rel.join(&name));
                }
                continue;
            }
            let ctime = md.ctime() * 1_000_000_000 + md.ctime_nsec();
            if ctime < since {
                continue;
            }
            let target = free_name(&into.join(rel.join(&name)));
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(err("creating", parent))?;
            }
            move_entry(&path, &target, &md).map_err(err("moving", &path))?;
            moved.push(rel.join(&name));
        }
    }
    Ok(moved)
}

/// Moves `path` (of lstat `md`) to `target`: a rename, or, where the two
/// are on different file systems (a GlusterFS volume's mount and georep's
/// home), a copy made durable under a temporary name, renamed into place,
/// and only then the original removed: a kill anywhere leaves the entry
/// in one place or both, never in neither.
fn move_entry(path: &Path, target: &Path, md: &fs::Metadata) -> io::Result<()> {
    match fs::rename(path, target) {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => {}
        done => return done,
    }
    let mut partial = target.as_os_str().to_owned();
    partial.push(".georep-partial");
    let partial = PathBuf::from(partial);
    let _ = fs::remove_file(&partial);
    let ft = md.file_type();
    if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(path)?, &partial)?;
    } else if ft.is_file() {
        fs::copy(path, &partial)?;
    } else {
        // A FIFO, socket or device node: its name and type are all it has.
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &partial,
            rustix::fs::FileType::from_raw_mode(md.mode()),
            rustix::fs::Mode::from_raw_mode(md.mode()),
            md.rdev(),
        )?;
    }
    // Owner and times as they were (the owner needs root: best effort).
    let _ = std::os::unix::fs::lchown(&partial, Some(md.uid()), Some(md.gid()));
    let times = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: md.atime(),
            tv_nsec: md.atime_nsec() as _,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: md.mtime(),
            tv_nsec: md.mtime_nsec() as _,
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        &partial,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )?;
    if ft.is_file() {
        fs::File::open(&partial)?.sync_all()?;
    }
    fs::rename(&partial, target)?;
    if let Some(parent) = target.parent() {
        fs::File::open(parent)?.sync_all()?;
    }
    fs::remove_file(path)
}

/// `path`, or `path~N` for the first N that is free.
fn free_name(path: &Path) -> PathBuf {
    if fs::symlink_metadata(path).is_err() {
        return path.to_owned();
    }
    (1..)
        .map(|n| {
            let mut s = path.as_os_str().to_owned();
            s.push(format!("~{n}"));
            PathBuf::from(s)
        })
        .find(|p| fs::symlink_metadata(p).is_err())
        .unwrap_or_else(|| path.to_owned())
}

/// Every entry below `dir` that is no directory, relative, sorted: what a
/// conflicts directory holds (so a re-run lists what an interrupted run
/// moved too).
pub fn listed(dir: &Path) -> Result<Vec<PathBuf>, ConflictError> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let here = dir.join(&rel);
        let rd = match fs::read_dir(&here) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(err("listing", &here)(e)),
        };
        for e in rd {
            let e = e.map_err(err("listing", &here))?;
            let is_dir = e.file_type().map_err(err("reading", &e.path()))?.is_dir();
            if is_dir {
                stack.push(rel.join(e.file_name()));
            } else {
                out.push(rel.join(e.file_name()));
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_changed_since_stime_is_moved_with_its_path() {
        let tmp = tempfile::tempdir().unwrap();
        let brick = tmp.path().join("brick");
        fs::create_dir_all(brick.join("d/e")).unwrap();
        fs::write(brick.join("old"), b"old").unwrap();
        fs::write(brick.join("d/old"), b"old").unwrap();
        std::thread::sleep(CTIME_MARGIN + Duration::from_millis(100));
        let stime = Stime::now();
        fs::write(brick.join("d/e/new"), b"new").unwrap();
        fs::rename(brick.join("d/old"), brick.join("d/renamed")).unwrap();
        std::os::unix::fs::symlink("old", brick.join("link")).unwrap();
        let into = conflicts_dir(&brick, "t1");
        assert_eq!(into, tmp.path().join("georep-conflicts/t1/brick"));
        let moved = set_aside(&brick, stime, &into, &[]).unwrap();
        let mut sorted = moved.clone();
        sorted.sort();
        let want: Vec<PathBuf> = ["d/e/new", "d/renamed", "link"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(sorted, want);
        assert_eq!(listed(&into).unwrap(), want);
        assert_eq!(fs::read(into.join("d/e/new")).unwrap(), b"new");
        assert!(brick.join("old").exists() && brick.join("d/e").is_dir());
        assert!(!brick.join("d/e/new").exists());
        // Run again after a new write at a taken name: both are kept.
        fs::write(brick.join("d/e/new"), b"newer").unwrap();
        assert_eq!(
            set_aside(&brick, stime, &into, &[]).unwrap(),
            [PathBuf::from("d/e/new")]
        );
        assert_eq!(fs::read(into.join("d/e/new~1")).unwrap(), b"newer");
        assert_eq!(fs::read(into.join("d/e/new")).unwrap(), b"new");
    }
}
