//! georep: asynchronous, crash-safe geo-replication of directories over SSH.
//!
//! The flow of data, one module per step (see DESIGN.md):
//! `changelog` records what changed on a brick, `crawl` turns journal files
//! (or a walk of the brick) into ordered batches, `transport` moves them over
//! SSH, `slave` applies them on the remote side, `state` remembers sessions
//! and stime, `monitor` runs the workers of a session, `cli` talks to people.

pub mod brick;
pub mod changelog;
pub mod cli;
pub mod crawl;
pub mod dr;
pub mod fsutil;
pub mod meta;
pub mod monitor;
pub mod proto;
pub mod relpath;
pub mod session;
pub mod ship;
pub mod slave;
pub mod state;
pub mod terminal;
pub mod transport;
pub mod verify;
pub mod volume;
