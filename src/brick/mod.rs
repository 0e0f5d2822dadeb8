//! The master's reads of its own brick: one confined directory handle
//! ([`dir`]) through which every path is resolved, and the index of which
//! brick inode each slave entry was made from ([`origin`]).
//!
//! [`volume`] answers for the whole volume where one brick of a
//! distributed volume cannot: the union of the bricks' listings, less DHT
//! link files.
//!
//! Imports only `relpath` (and GlusterFS's internal names from
//! `changelog::glusterfs`); the shipper (`ship`) reads the brick through
//! it.

pub(crate) mod dir;
mod inode;
pub mod origin;
pub mod volume;

pub use inode::Inode;
