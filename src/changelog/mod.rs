//! The journal of one brick: what changed, in order, in rolling files.
//!
//! # Place in the flow
//!
//! The [`Hook`] watches a brick directory (notify, inotify backend, recursive)
//! and turns every event into a typed [`Record`]. Records are appended to
//! `CHANGELOG.current.tmp` in a journal directory that lives *outside* the
//! replicated data (under `GEOREP_HOME`). Every `rollover` (default 1 s) the
//! current file is closed: trailer written, fsynced, renamed to
//! `CHANGELOG.<end>` and the directory fsynced. The crawler later lists the
//! closed files with [`list_closed`], reads them with [`read_file`] and, once
//! stime has passed them, deletes them with [`purge`].
//!
//! # Invariants this module owns
//!
//! 1. **Nothing is lost silently.** Whenever events may have been lost, a
//!    [`Record::Gap`] is written in their place, in a file whose end is later
//!    than the loss: inotify queue overflow (notify's `Rescan` flag), a watch
//!    that could not be added (e.g. `fs.inotify.max_user_watches` reached), a
//!    watcher error, the hook's own event channel being full, a path that
//!    cannot be recorded, the brick root itself being moved or removed, and
//!    the hook (re)starting: changes made while no hook ran are unknown, so
//!    the first file after [`Hook::start`] always begins with a Gap. The
//!    crawler heals a Gap with a hybrid crawl (DESIGN.md invariant 4).
//! 2. **Corruption is detected, never misread.** Files are versioned and
//!    checksummed; the reader refuses anything it cannot fully verify with
//!    [`ChangelogError::Corrupt`], naming the file and byte offset. It never
//!    panics, whatever the bytes.
//! 3. **`closed_through` tells the truth.** [`Hook::closed_through`] returns
//!    T only once every event read before T is in a durable, closed file.
//!    At a rollover at time T the hook makes a marker entry in its own
//!    watched directory and handles events until the marker's arrives (one
//!    inotify FIFO, so every event of a change made before T is then
//!    handled), then closes the file with end = T. A marker that does not
//!    arrive within a bound is a Gap, healed by a hybrid crawl.
//! 4. **Paths never escape.** Every path in a record is a [`RelPath`]; the
//!    reader validates each one and refuses `..`, absolute paths and NUL.
//!
//! # File format (version 1)
//!
//! All integers little-endian. Offsets in bytes from the start of the file.
//!
//! ```text
//! header   "GEOREP-CHANGELOG\n" (17 bytes)
//!          version      u32   = 1
//!          start        i64   Stime (ns since epoch) the interval began
//! record*  kind         u8    1 Create 2 Mkdir 3 Mknod 4 Symlink 5 Link
//!                             6 Unlink 7 Rmdir 8 Rename 9 Data 10 Meta 11 Gap
//!                             12 Gap with since
//!          field*       u32 length + that many bytes
//!                             one field (a path) for kinds 1-7, 9, 10;
//!                             two (from, to) for Rename; one UTF-8 reason
//!                             for Gap; for kind 12 the reason, then since
//!                             (an i64 Stime, 8 bytes). Every field is at
//!                             most 4096 bytes.
//! trailer  0x00               marks the end of the records
//!          end          i64   Stime the interval ended (>= start)
//!          count        u64   number of records
//!          crc          u32   CRC-32 (crc32fast) of every byte before it
//!          "GEOREP-CHANGELOG-END\n" (21 bytes)
//! ```
//!
//! Paths are raw bytes (non-UTF-8 and newlines allowed): nothing in the
//! format is text except the two magics and the Gap reason.
//!
//! A closed file is named `CHANGELOG.<end>` with `end` in nanoseconds, as 20
//! zero-padded decimal digits, so lexical order is time order; the reader
//! refuses a closed file whose name disagrees with its trailer. Ends are
//! strictly increasing. An interval without records writes no file.
//!
//! # What a record means
//!
//! * `Create`, `Mkdir`, `Mknod`, `Symlink`: an entry of that type appeared
//!   (created, or moved in from outside the brick). For a new directory the
//!   hook also scans it at once and records everything already inside it
//!   (files created before its watch was in place give no events), with a
//!   `Data` for each non-empty regular file.
//! * `Link`: a regular file appeared that has more than one hard link; the
//!   other name is not recorded (the shipper knows the names of linked files
//!   it has seen and links them again on the slave). It replaces `Create` and
//!   is followed by `Data` if the file is non-empty.
//! * `Unlink`: a non-directory (or an entry of unknown type) was removed or
//!   moved out of the brick. `Rmdir`: a directory was removed.
//! * `Rename { from, to }`: one rename inside the brick, exactly one record
//!   (`to` was replaced if it existed, as rename(2) does).
//!   If `to` is a directory, the hook rescans it and records entries changed
//!   recently, because notify re-watches a moved directory under its new
//!   name only after the rename (see `hook.rs`).
//! * `Data`: content changed (consecutive duplicates for one path within a
//!   file are coalesced). `Meta`: mode, owner, times or xattrs changed; the
//!   brick root appears as the empty path only here.
//! * `Gap { reason, since }`: see invariant 1. With `since`, the crawl that
//!   heals it looks at everything changed since then, even before stime: the
//!   hook writes such Gaps while directories beyond the inotify watch limit
//!   are not watched (their changes are in no record at all). The hook
//!   also writes one, without `since`, when a name that was written
//!   through as a hard link is removed or replaced: the write is then in
//!   no record under a name that still exists (see `hook/links.rs`).
//!
//! Records are in the order the hook saw the events. A path in a record may
//! no longer exist when it is read (it was changed again later); the crawler
//! always consults the file system.
//!
//! May import: `relpath`, `session` (stime). Nothing downstream.

mod format;
pub mod glusterfs;
mod hook;
pub mod pending;

use std::io;
use std::path::PathBuf;

pub use format::{list_closed, purge, read_file, write_closed};
pub use hook::{Hook, HookConfig, LINK_GAP, RENAME_CTIME_MARGIN, START_GAP};

use crate::relpath::RelPath;
use crate::session::Stime;

/// Name of the file being written; never read by the crawler.
pub const CURRENT_FILE: &str = "CHANGELOG.current.tmp";

/// Prefix of closed files: `CHANGELOG.<end as 20 digits>`.
pub const CLOSED_PREFIX: &str = "CHANGELOG.";

/// One change of the brick; see the module documentation.
///
/// Not the same type as the batch's `crawl::Entry` or the wire's
/// `proto::EntryOp`, though its entry kinds have the same names: this is
/// what the journal file holds, so its encoding must read back files older
/// versions wrote whatever the other two become; it holds content,
/// attribute and gap records beside entries, and no prune (only a walk
/// makes one); and it names paths only, as the hook saw them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Record {
    Create(RelPath),
    Mkdir(RelPath),
    Mknod(RelPath),
    Symlink(RelPath),
    /// A new hard-link name; the other name is unknown.
    Link(RelPath),
    /// A non-directory or an entry of unknown type was removed or moved out.
    Unlink(RelPath),
    Rmdir(RelPath),
    Rename {
        from: RelPath,
        to: RelPath,
    },
    /// Content changed.
    Data(RelPath),
    /// Mode, owner, times or xattrs changed.
    Meta(RelPath),
    /// Events may have been lost; heal with a hybrid crawl.
    Gap {
        reason: String,
        /// Changes made since then may be in no record, even ones older than
        /// the last sync (directories the hook could not watch). `None`: the
        /// loss began after everything already synced.
        since: Option<Stime>,
    },
}

impl Record {
    /// A Gap whose loss began after the last sync (the usual kind).
    pub fn gap(reason: impl Into<String>) -> Record {
        Record::Gap {
            reason: reason.into(),
            since: None,
        }
    }
}

impl Record {
    /// What says that an existing entry appeared at `rel` (created, or
    /// moved in from where no record reached), by the type its lstat `md`
    /// shows: a regular file with several names is a `Link`, and a
    /// non-empty one also has `Data`.
    pub fn appeared(rel: &RelPath, md: &std::fs::Metadata) -> Vec<Record> {
        use std::os::unix::fs::MetadataExt;
        let ft = md.file_type();
        let rel = rel.clone();
        if ft.is_dir() {
            vec![Record::Mkdir(rel)]
        } else if ft.is_symlink() {
            vec![Record::Symlink(rel)]
        } else if ft.is_file() {
            let named = if md.nlink() > 1 {
                Record::Link(rel.clone())
            } else {
                Record::Create(rel.clone())
            };
            if md.len() > 0 {
                vec![named, Record::Data(rel)]
            } else {
                vec![named]
            }
        } else {
            vec![Record::Mknod(rel)]
        }
    }
}

/// The content of one closed changelog file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changelog {
    pub start: Stime,
    pub end: Stime,
    pub records: Vec<Record>,
}

/// A closed changelog file, as listed by [`list_closed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalFile {
    pub path: PathBuf,
    pub end: Stime,
}

/// What went wrong; every variant names the file or directory concerned.
#[derive(Debug, thiserror::Error)]
pub enum ChangelogError {
    #[error("cannot {op} {path:?}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("corrupt changelog {file:?} at byte {offset}: {reason}")]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("cannot watch brick {brick:?}: {reason}")]
    Watch { brick: PathBuf, reason: String },
    #[error("journal hook of brick {brick:?} failed: {reason}")]
    Hook { brick: PathBuf, reason: String },
    #[error("GlusterFS changelogs of brick {brick:?}: {reason}")]
    Gluster { brick: PathBuf, reason: String },
}

impl ChangelogError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        ChangelogError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
