//! Finding what to replicate: journal files after stime (History and
//! Changelog Crawl) or a walk of the brick (Hybrid Crawl), turned into
//! ordered, bounded [`Batch`]es.
//!
//! Also the sync filter ([`filter`]): what a session leaves out.
//!
//! May import: `changelog`, `relpath`, `session`.

pub mod batch;
pub mod filter;
pub mod hybrid;
pub mod journal;

pub use batch::{Batch, Entry};
pub use hybrid::HybridCrawl;
