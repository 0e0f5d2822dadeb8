//! The master's reads of its own brick: one confined directory handle
//! ([`dir`]) through which every path is resolved, and the index of which
//! brick inode each slave entry was made from ([`origin`]).
//!
//! Imports only `relpath`; the shipper (`ship`) reads the brick through it.

pub(crate) mod dir;
mod inode;
pub mod origin;

pub use inode::Inode;
