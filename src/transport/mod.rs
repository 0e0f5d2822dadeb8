//! Moving batches to the slave: the wire protocol and the SSH session.

pub mod link;
pub mod protocol;
pub mod ship;
pub mod ssh;
