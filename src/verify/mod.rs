//! `geo-rep verify`: is the slave a true copy of the master?
//!
//! # Place in the flow
//! Beside the shipping path, on demand: the command line opens one link to
//! the session's slave (as a worker does) and [`walk::verify`] compares the
//! master with the slave's tree, directory by directory in name order.
//! The master is read through one brick per distribute leg (the caller
//! picks, of each replica set, the member to read): each directory is the
//! union of the legs' listings without DHT link files, as a GlusterFS
//! client lists it, and each file has the mtime such a client sees. For each directory the slave answers one
//! `Request::Scan`: its entries with their status (the values its policy
//! recorded where it did not apply them, so a mode or owner left out on
//! purpose is no difference) and, unless `--quick`, each regular file's
//! BLAKE3 hash, computed on the slave; only hashes cross the link.
//! [`compare::compare_dir`] then reports what differs.
//!
//! # Live sessions
//! Changes the master made after the slave's stime (less a margin for the
//! coarse clock of ctimes) may be on their way: a difference whose master
//! entry (or, for an extra name, its directory) changed after that point,
//! or changed while it was compared, is reported as *in flight*, not as a
//! difference. A master entry older than that point which differs on the
//! slave is a real difference: how writes made on the slave behind
//! georep's back are caught.
//!
//! # Bounds
//! Memory holds one directory of each side, the directories still to
//! visit and the answers to the scans asked ahead (up to eight directories
//! the walk visits next, so it does not wait a round trip per directory); multiply-linked files are remembered (inode pairs) to compare
//! hard-link groups. Both sides hash at most `rate` bytes a second.
//!
//! May import: `proto`, `transport`, `brick`, `crawl` (the session's
//! filter), `changelog` (GlusterFS brick internals); never `slave`.

pub mod compare;
pub mod walk;

#[cfg(test)]
mod tests;

pub use compare::{Finding, What};
pub use walk::{verify, Brick, Counts, Options, VerifyError};
