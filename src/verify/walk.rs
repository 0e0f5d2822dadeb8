//! The walk: directory by directory in name order, the master's bricks
//! listed here and the slave's directory asked for with `Request::Scan`,
//! so memory holds one directory of each side and the directories still to
//! visit, never the whole tree.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncWrite};

use super::compare::{compare_dir, DirContext, Finding, MasterEntry, What};
use crate::brick::dir::BrickDir;
use crate::brick::volume::is_dht_link;
use crate::changelog::glusterfs::is_internal;
use crate::crawl::filter::SyncFilter;
use crate::fsutil::{hash_paced, Pace};
use crate::proto::{Reply, Request, ScanEntry};
use crate::relpath::RelPath;
use crate::transport::link::{LinkError, SlaveLink};

/// One distribute leg of the session's master volume, read through one
/// brick: a lone brick, or the member of a replica set chosen to stand
/// for the set (the caller chooses; see `cli::verify_legs`). The legs of a
/// distributed volume each hold part of its namespace.
pub struct Brick {
    pub path: PathBuf,
    pub dir: BrickDir,
    /// A GlusterFS brick: its internals are skipped, DHT link files left
    /// out, and files carry the mtime GlusterFS clients see.
    pub gluster: bool,
}

impl Brick {
    pub fn open(path: PathBuf, gluster: bool) -> Brick {
        Brick {
            dir: BrickDir::open(&path),
            path,
            gluster,
        }
    }
}

/// How to compare.
#[derive(Debug, Clone)]
pub struct Options {
    /// Compare regular files' contents (else metadata only: `--quick`).
    pub content: bool,
    /// Bytes a second each side hashes at most (0: unpaced).
    pub rate: u64,
    /// Compare numeric owners (the master sends them).
    pub owners: bool,
    /// Master changes after this (nanoseconds) may still be in flight.
    pub cutoff_ns: i64,
}

/// How far the walk got.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Counts {
    pub dirs: u64,
    pub entries: u64,
    pub differences: u64,
    pub in_flight: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// Compares the session's bricks (their union, as the slave holds it) with
/// the slave below `root`'s children, reporting each difference to
/// `found` and the counts after each directory to `progress`.
pub async fn verify<S: AsyncRead + AsyncWrite>(
    link: &mut SlaveLink<S>,
    bricks: &[Brick],
    filter: &SyncFilter,
    opts: &Options,
    found: &mut dyn FnMut(&Finding),
    progress: &mut dyn FnMut(&Counts),
) -> Result<Counts, VerifyError> {
    let mut counts = Counts::default();
    let mut pace = Pace::new(opts.rate);
    let mut links = LinkGroups::default();
    let root = RelPath::root();
    let root_in_flight = bricks
        .iter()
        .filter_map(|b| b.dir.lstat(&root).ok())
        .any(|md| changed_ns(&md) > opts.cutoff_ns);
    let mut stack = vec![(root, root_in_flight)];
    let mut scans = Scans::default();
    // Directories' mtime differences, until their entries are listed.
    let mut held: HashMap<RelPath, Finding> = HashMap::new();
    while let Some((dir, dir_in_flight)) = stack.pop() {
        // The directories to visit next are asked for ahead, so the walk
        // does not wait a round trip for each.
        let next = stack.iter().rev().map(|(d, _)| d);
        let slave = scans.get(link, &dir, next, opts).await?;
        counts.dirs += 1;
        let mut report = |f: Finding, counts: &mut Counts| {
            let f = recheck(bricks, f, opts.cutoff_ns);
            if f.in_flight {
                counts.in_flight += 1;
            } else {
                counts.differences += 1;
            }
            found(&f);
        };
        let mtime = held.remove(&dir);
        let master = match list_master(bricks, &dir, filter) {
            Ok(m) => m,
            Err(why) => {
                if let Some(f) = mtime {
                    report(f, &mut counts);
                }
                report(unreadable(&dir, why, dir_in_flight), &mut counts);
                continue;
            }
        };
        if let Some(mut f) = mtime {
            // Putting a changed entry in place touches the slave's
            // directory until its mtime is set again after the batch.
            f.in_flight |= master.iter().any(|m| m.changed_ns > opts.cutoff_ns);
            report(f, &mut counts);
        }
        let slave = match slave {
            Ok(s) => not_compared(s, &dir, &master, filter),
            Err(why) => {
                report(unreadable(&dir, why, dir_in_flight), &mut counts);
                continue;
            }
        };
        counts.entries += master.len() as u64;
        let cx = DirContext {
            dir: &dir,
            cutoff_ns: opts.cutoff_ns,
            dir_in_flight,
            owners: opts.owners,
            content: opts.content,
            dir_mtimes: !bricks.iter().any(|b| b.gluster),
        };
        let mut findings = Vec::new();
        let subdirs = compare_dir(
            &cx,
            &master,
            &slave,
            &mut |path, m| hash_master(bricks, path, m, &mut pace),
            &mut |f| findings.push(f),
        );
        links.check(bricks, &dir, &master, &slave, opts.cutoff_ns, &mut findings);
        let subpaths: Vec<RelPath> = subdirs.iter().map(|n| join(&dir, n)).collect();
        for f in findings {
            // A subdirectory's mtime waits until its entries are listed.
            let sub = subpaths.iter().find(|p| shown(p) == f.path);
            match sub {
                Some(sub) if matches!(f.what, What::Mtime { .. }) && !f.in_flight => {
                    held.insert(sub.clone(), f);
                }
                _ => report(f, &mut counts),
            }
        }
        // Pushed in reverse: popped in name order.
        for (name, sub) in subdirs.into_iter().zip(subpaths).rev() {
            let in_flight = master
                .iter()
                .find(|m| m.entry.name == name)
                .is_some_and(|m| m.changed_ns > opts.cutoff_ns);
            stack.push((sub, in_flight));
        }
        progress(&counts);
    }
    Ok(counts)
}

/// The slave's entries of `dir` without those verify does not compare:
/// what the session excludes (never sent, so never a difference), and
/// GlusterFS internals at the root that the master does not have (a slave
/// volume's own `.trashcan`).
fn not_compared(
    mut slave: Vec<ScanEntry>,
    dir: &RelPath,
    master: &[MasterEntry],
    filter: &SyncFilter,
) -> Vec<ScanEntry> {
    slave.retain(|s| {
        let internal = dir.is_root()
            && is_internal(OsStr::from_bytes(&s.name))
            && !master.iter().any(|m| m.entry.name == s.name);
        !internal && !filter.excluded(&join(dir, &s.name))
    });
    slave
}

fn unreadable(dir: &RelPath, why: String, in_flight: bool) -> Finding {
    Finding {
        path: shown(dir),
        what: What::Unreadable { why },
        in_flight,
    }
}

fn shown(path: &RelPath) -> String {
    if path.is_root() {
        ".".into()
    } else {
        path.to_string()
    }
}

/// `f`, in flight if the master's path changed (or went) after the cutoff
/// meanwhile: it may have changed while it was being compared.
/// An extra name is in flight if its directory changed (an entry removed
/// there since the cutoff) or the master has the name now.
fn recheck(bricks: &[Brick], mut f: Finding, cutoff_ns: i64) -> Finding {
    if f.in_flight {
        return f;
    }
    let Ok(path) = f.path.parse::<RelPath>() else {
        return f;
    };
    // The latest change on any leg: a directory of a distributed volume
    // changes on the leg where one of its entries did.
    let changed = |p: &RelPath| {
        let now = bricks.iter().filter_map(|b| volume_entry(b, p)).max();
        now.map(|ns| ns > cutoff_ns)
    };
    f.in_flight = if f.what == What::Extra {
        changed(&path).is_some() || changed(&path.parent().unwrap_or_default()) != Some(false)
    } else {
        changed(&path) != Some(false)
    };
    f
}

/// When the entry at `path` of leg `b` last changed (nanoseconds), unless
/// it is missing there or a DHT link file.
fn volume_entry(b: &Brick, path: &RelPath) -> Option<i64> {
    let md = b.dir.lstat(path).ok()?;
    (!link_file(b, path, &md)).then(|| changed_ns(&md))
}

/// Whether the entry at `path` of leg `b` is a DHT link file (a name whose
/// data is on another leg, or on its way there): the volume's clients
/// never see it as such.
fn link_file(b: &Brick, path: &RelPath, md: &fs::Metadata) -> bool {
    // Only what has the mode of one is looked at more closely.
    b.gluster
        && md.is_file()
        && md.mode() & 0o7777 == 0o1000
        && b.dir
            .handle(path)
            .is_ok_and(|h| is_dht_link(&h.proc_path(), md))
}

/// When an inode last changed, in nanoseconds.
fn changed_ns(md: &fs::Metadata) -> i64 {
    md.ctime()
        .saturating_mul(1_000_000_000)
        .saturating_add(md.ctime_nsec())
}

/// The union of the legs' listings of `dir`, sorted by name (the first
/// leg holding a name gives it, with the latest change of any leg: a
/// directory is on every leg), without what is excluded, GlusterFS
/// internals or DHT link files.
fn list_master(
    bricks: &[Brick],
    dir: &RelPath,
    filter: &SyncFilter,
) -> Result<Vec<MasterEntry>, String> {
    let mut all = Vec::new();
    for b in bricks {
        let listed = b.dir.handle(dir).and_then(|h| fs::read_dir(h.proc_path()));
        let rd = match listed {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("cannot list on brick {}: {e}", b.path.display())),
        };
        for e in rd {
            let name = e
                .map_err(|e| format!("cannot list on brick {}: {e}", b.path.display()))?
                .file_name();
            if b.gluster && dir.is_root() && is_internal(&name) {
                continue;
            }
            let Ok(path) = dir.join(&name) else {
                continue;
            };
            if filter.excluded(&path) {
                continue;
            }
            // Gone meanwhile: the next verify sees what took its place.
            let Ok(md) = b.dir.lstat(&path) else {
                continue;
            };
            if link_file(b, &path, &md) {
                continue;
            }
            all.push(master_entry(b, &path, name.as_bytes(), &md));
        }
    }
    // Stable: of one name, the first leg's entry stays first.
    all.sort_by(|a, b| a.entry.name.cmp(&b.entry.name));
    all.dedup_by(|later, first| {
        let same = later.entry.name == first.entry.name;
        if same {
            first.changed_ns = first.changed_ns.max(later.changed_ns);
        }
        same
    });
    Ok(all)
}

fn master_entry(b: &Brick, path: &RelPath, name: &[u8], md: &fs::Metadata) -> MasterEntry {
    let full = path.under(&b.path);
    let (mtime_sec, mtime_nsec) = b
        .gluster
        .then(|| crate::changelog::glusterfs::client_mtime(&full))
        .flatten()
        .unwrap_or((md.mtime(), md.mtime_nsec() as u32));
    let target = md
        .file_type()
        .is_symlink()
        .then(|| fs::read_link(&full).ok())
        .flatten()
        .map(|t| serde_bytes::ByteBuf::from(t.into_os_string().into_encoded_bytes()));
    MasterEntry {
        entry: ScanEntry {
            name: name.to_vec(),
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            rdev: md.rdev(),
            size: md.size(),
            mtime_sec,
            mtime_nsec,
            ino: md.ino(),
            nlink: md.nlink(),
            target,
            hash: None,
        },
        changed_ns: changed_ns(md),
    }
}

/// The content hash of the master's file at `path`, read beneath its brick.
fn hash_master(
    bricks: &[Brick],
    path: &RelPath,
    m: &MasterEntry,
    pace: &mut Pace,
) -> Result<[u8; 32], String> {
    for b in bricks {
        let Ok(h) = b.dir.handle(path) else {
            continue;
        };
        match h.metadata() {
            Ok(md) if md.is_file() && md.ino() == m.entry.ino => {}
            _ => continue,
        }
        let mut file = h
            .open_file()
            .map_err(|e| format!("cannot read on brick {}: {e}", b.path.display()))?;
        return hash_paced(&mut file, pace)
            .map_err(|e| format!("cannot read on brick {}: {e}", b.path.display()));
    }
    Err("gone from the master".into())
}

/// Directories whose scan is asked for ahead of the walk.
const SCANS_AHEAD: usize = 8;

/// A slave directory's entries, or why it cannot be listed there.
type Scanned = Result<Vec<ScanEntry>, String>;

/// Scans asked for and not yet used: at most [`SCANS_AHEAD`] directories,
/// the answered ones held until the walk gets to them.
#[derive(Default)]
struct Scans {
    /// Asked for, in order (the slave answers in this order).
    asked: std::collections::VecDeque<(u64, RelPath)>,
    answered: HashMap<RelPath, Scanned>,
}

impl Scans {
    /// The slave's directory `dir`, after asking for as many of `next`
    /// (the directories the walk visits after it, nearest first) as fit.
    async fn get<'p, S: AsyncRead + AsyncWrite>(
        &mut self,
        link: &mut SlaveLink<S>,
        dir: &RelPath,
        next: impl Iterator<Item = &'p RelPath>,
        opts: &Options,
    ) -> Result<Scanned, LinkError> {
        if let Some(done) = self.answered.remove(dir) {
            return Ok(done);
        }
        if !self.asked.iter().any(|(_, d)| d == dir) {
            self.ask(link, dir, opts).await?;
        }
        for d in next {
            if self.asked.len() + self.answered.len() >= SCANS_AHEAD {
                break;
            }
            if !self.answered.contains_key(d) && !self.asked.iter().any(|(_, a)| a == d) {
                self.ask(link, d, opts).await?;
            }
        }
        link.flush().await?;
        loop {
            let Some((seq, asked)) = self.asked.pop_front() else {
                return Err(crate::proto::ProtocolError::Unexpected(format!(
                    "no scan of {dir} outstanding"
                ))
                .into());
            };
            let got = receive(link, seq, &asked).await?;
            if asked == *dir {
                return Ok(got);
            }
            self.answered.insert(asked, got);
        }
    }

    async fn ask<S: AsyncRead + AsyncWrite>(
        &mut self,
        link: &mut SlaveLink<S>,
        dir: &RelPath,
        opts: &Options,
    ) -> Result<(), LinkError> {
        let seq = link.next_seq();
        link.send(&Request::Scan {
            seq,
            path: dir.clone(),
            hashes: opts.content,
            rate: opts.rate,
        })
        .await?;
        self.asked.push_back((seq, dir.clone()));
        Ok(())
    }
}

/// The answer to the scan `seq` of `dir`.
async fn receive<S: AsyncRead + AsyncWrite>(
    link: &mut SlaveLink<S>,
    seq: u64,
    dir: &RelPath,
) -> Result<Scanned, LinkError> {
    let mut entries = Vec::new();
    loop {
        match link.recv().await? {
            Reply::Scan {
                seq: got,
                entries: part,
                done,
            } if got == seq => {
                entries.extend(part);
                if done {
                    return Ok(Ok(entries));
                }
            }
            Reply::Failed(f) if f.seq == seq => return Ok(Err(f.message)),
            other => {
                return Err(crate::proto::ProtocolError::Unexpected(format!(
                    "{other:?} in answer to a scan of {dir}"
                ))
                .into())
            }
        }
    }
}

/// Hard-link groups seen so far: which slave inode each multiply-linked
/// master file has, and the other way round. Holds only files with more
/// than one name.
#[derive(Default)]
struct LinkGroups {
    slave_of: HashMap<(usize, u64), u64>,
    master_of: HashMap<u64, (usize, u64)>,
}

impl LinkGroups {
    /// Reports the files of `dir` whose names are grouped otherwise on the
    /// slave than on the master.
    fn check(
        &mut self,
        bricks: &[Brick],
        dir: &RelPath,
        master: &[MasterEntry],
        slave: &[ScanEntry],
        cutoff_ns: i64,
        found: &mut Vec<Finding>,
    ) {
        for m in master
            .iter()
            .filter(|m| m.entry.mode & 0o170000 == 0o100000)
        {
            let Ok(i) = slave.binary_search_by(|s| s.name.cmp(&m.entry.name)) else {
                continue;
            };
            let s = &slave[i];
            if m.entry.nlink <= 1 && s.nlink <= 1 {
                continue;
            }
            // A GlusterFS brick holds one more name of each file.
            let brick = bricks
                .iter()
                .position(|b| {
                    b.dir
                        .lstat(&join(dir, &m.entry.name))
                        .is_ok_and(|md| md.ino() == m.entry.ino)
                })
                .unwrap_or(0);
            let floor = 1 + u64::from(bricks.get(brick).is_some_and(|b| b.gluster));
            if m.entry.nlink <= floor && s.nlink <= 1 {
                continue;
            }
            let key = (brick, m.entry.ino);
            let seen_slave = *self.slave_of.entry(key).or_insert(s.ino);
            let seen_master = *self.master_of.entry(s.ino).or_insert(key);
            if seen_slave != s.ino || seen_master != key {
                found.push(Finding {
                    path: shown(&join(dir, &m.entry.name)),
                    what: What::HardLinks,
                    in_flight: m.changed_ns > cutoff_ns,
                });
            }
        }
    }
}

fn join(dir: &RelPath, name: &[u8]) -> RelPath {
    dir.join(OsStr::from_bytes(name))
        .unwrap_or_else(|_| dir.clone())
}
