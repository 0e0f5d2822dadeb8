//! A client's workload for whole-volume tests, and a watch on the slave
//! while it syncs.
//!
//! [`churn`] makes, through a mount, every kind of change a volume test
//! must see replicated: creates, writes, truncates, renames within and
//! across directories (many new names, so that on a distributed volume
//! they hash to other bricks), hard links, symlinks, unlinks, `rm -r`, a
//! directory rename, chmod and chown, and non-ASCII names. Each round
//! builds on the previous one's result, so rounds can run before and after
//! a session starts.
//!
//! [`SlaveWatch`] samples the slave in the background and remembers every
//! path a check flags, because a volume's internals (DHT link files,
//! `.shard` pieces) may show up only between two batches.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::fixtures::random_bytes;

/// How many files each round makes in its fresh directory.
const FILES_PER_ROUND: usize = 40;

/// One round of changes under `root` (a client mount). Round `n` works in
/// `r<n>/` and on what earlier rounds left; every file it leaves is
/// non-empty, so an empty file on the slave is never the workload's.
pub fn churn(root: &Path, round: u32) -> io::Result<()> {
    let dir = root.join(format!("r{round}"));
    fs::create_dir_all(dir.join("sub/deeper"))?;
    for i in 0..FILES_PER_ROUND {
        let len = 1 + (i * 997) % 9000;
        write(
            &dir.join(format!("f{i}")),
            &random_bytes(len, seed(round, i)),
        )?;
    }
    write(
        &dir.join("sub/deeper/big"),
        &random_bytes(300_000, seed(round, 999)),
    )?;
    // Non-ASCII names, in a file and a directory.
    fs::create_dir_all(dir.join("répertoire"))?;
    write(&dir.join("répertoire/données-ü-日本"), b"unicode")?;
    // Renames within the directory: new names hash to other bricks.
    for i in 0..10 {
        fs::rename(
            dir.join(format!("f{i}")),
            dir.join(format!("renamed-{i}-{round}")),
        )?;
    }
    // Renames across directories.
    for i in 10..15 {
        fs::rename(
            dir.join(format!("f{i}")),
            dir.join(format!("sub/moved-{i}")),
        )?;
    }
    // Hard links and symlinks.
    fs::hard_link(dir.join("f20"), dir.join("sub/link-to-f20"))?;
    symlink("../f21", dir.join("sub/sym-f21"))?;
    symlink("no/such/target", dir.join("dangling"))?;
    // Writes into the middle, appends and truncates (never to zero).
    rewrite_middle(
        &dir.join("sub/deeper/big"),
        100_000,
        &random_bytes(5000, seed(round, 1001)),
    )?;
    fs::OpenOptions::new()
        .append(true)
        .open(dir.join("f22"))?
        .write_all(b"appended")?;
    fs::OpenOptions::new()
        .write(true)
        .open(dir.join("f23"))?
        .set_len(3)?;
    // Unlinks, and `rm -r` of a subtree.
    fs::remove_file(dir.join("f24"))?;
    fs::create_dir_all(dir.join("doomed/inner"))?;
    write(&dir.join("doomed/inner/x"), b"soon gone")?;
    fs::remove_dir_all(dir.join("doomed"))?;
    // Mode and owner.
    fs::set_permissions(dir.join("f25"), fs::Permissions::from_mode(0o640))?;
    fs::set_permissions(dir.join("sub"), fs::Permissions::from_mode(0o750))?;
    std::os::unix::fs::chown(dir.join("f26"), Some(1234), Some(2345))?;
    // What earlier rounds left: a directory renamed, files rewritten,
    // removed and renamed across directories.
    if round > 0 {
        let prev = root.join(format!("r{}", round - 1));
        fs::rename(prev.join("sub"), prev.join(format!("sub-renamed-{round}")))?;
        write(&prev.join("f30"), &random_bytes(4321, seed(round, 30)))?;
        fs::remove_file(prev.join("f31"))?;
        fs::rename(
            prev.join("f32"),
            dir.join(format!("from-r{}-f32", round - 1)),
        )?;
    }
    Ok(())
}

fn seed(round: u32, i: usize) -> u64 {
    u64::from(round) << 32 | i as u64
}

fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    fs::write(path, bytes).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn rewrite_middle(path: &Path, at: u64, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all_at(bytes, at)
}

/// Whether a path on the slave must never be there; `Some(why)` flags it.
pub type SlaveCheck = dyn Fn(&Path, &fs::Metadata) -> Option<String> + Send + Sync;

/// A background walk of the slave every few hundred milliseconds that
/// keeps every path a check flagged, with the reason. Stops when dropped.
pub struct SlaveWatch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(PathBuf, String)>>>,
    samples: Arc<Mutex<u64>>,
    thread: Option<JoinHandle<()>>,
}

impl SlaveWatch {
    /// Watches `slave` with `check`; [`SlaveWatch::volume_internals`] is
    /// the usual check.
    pub fn start(slave: &Path, check: Box<SlaveCheck>) -> SlaveWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let samples = Arc::new(Mutex::new(0));
        let thread = {
            let (stop, seen, samples) = (stop.clone(), seen.clone(), samples.clone());
            let slave = slave.to_owned();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    walk(&slave, &slave, &*check, &seen);
                    *samples.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        };
        SlaveWatch {
            stop,
            seen,
            samples,
            thread: Some(thread),
        }
    }

    /// The usual check: no DHT link file (mode `---------T`), no `.shard`
    /// piece, nothing under a GlusterFS-internal name.
    pub fn volume_internals() -> Box<SlaveCheck> {
        Box::new(|rel, md| {
            use std::os::unix::fs::MetadataExt;
            let name = rel.file_name()?.to_string_lossy();
            if md.is_file() && md.mode() & 0o7777 == 0o1000 {
                return Some("a DHT link file (mode ---------T)".into());
            }
            if rel.components().any(|c| c.as_os_str() == ".shard") {
                return Some("a .shard piece".into());
            }
            if name.starts_with(".glusterfs") || name == ".trashcan" {
                return Some("a GlusterFS-internal name".into());
            }
            None
        })
    }

    /// Every path flagged so far (relative to the slave), with its reason.
    pub fn flagged(&self) -> Vec<(PathBuf, String)> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many whole walks have been made: a test asserts some were, so
    /// that an empty [`SlaveWatch::flagged`] means something.
    pub fn samples(&self) -> u64 {
        *self.samples.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for SlaveWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn walk(root: &Path, dir: &Path, check: &SlaveCheck, seen: &Mutex<Vec<(PathBuf, String)>>) {
    // The slave changes under the walk: what vanished meanwhile is skipped.
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(md) = fs::symlink_metadata(&path) else {
            continue;
        };
        let rel = path.strip_prefix(root).unwrap_or(&path).to_owned();
        if let Some(why) = check(&rel, &md) {
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            if !seen.iter().any(|(p, _)| p == &rel) {
                seen.push((rel.clone(), why));
            }
        }
        if md.is_dir() {
            walk(root, &path, check, seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_build_on_each_other_and_leave_no_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..3 {
            churn(dir.path(), round).unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
        let watch = SlaveWatch::start(
            dir.path(),
            Box::new(|_, md: &fs::Metadata| {
                (md.is_file() && md.len() == 0).then(|| "empty".into())
            }),
        );
        while watch.samples() == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(watch.flagged(), vec![]);
        assert!(dir.path().join("r0/sub-renamed-1").is_dir());
        assert!(dir.path().join("r2/from-r1-f32").is_file());
    }
}
