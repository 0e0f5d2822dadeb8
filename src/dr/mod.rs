//! Disaster recovery: what `geo-rep promote` (on the DR host) and
//! `geo-rep failback` (on the repaired master) do, as the pieces the
//! command line drives.
//!
//! * [`keys`]: fencing the old master. Its forced-command lines for the
//!   promoted directory in the slave user's authorized_keys are commented
//!   out with a marker (never deleted), so sshd refuses the old session key
//!   and a failback can put the lines back as they were.
//! * [`promotion`]: the promotion record kept in the DR host's
//!   `GEOREP_HOME` (`promoted/<id>/`): when, and how far each brick of the
//!   old master had got by the commits the directory received; beside it
//!   the journal georep's hook writes of every change made at DR since.
//! * [`conflicts`]: the loss window of a failback, moved aside beside
//!   each brick before the master is brought level with DR.
//! * [`level`]: the master brought level with DR, DR shipping (the
//!   shipper, over a link) to the master's brick served by the slave code.
//!
//! May import: `session` (times), `slave` (the commit records, serving a
//! brick), `crawl`, `ship` and `transport::link` (the leveling). The
//! command line (`cli/promote.rs`, `cli/failback.rs`) does the I/O order:
//! mark, fence, record, journal; set aside, level, demote, resume.

pub mod conflicts;
pub mod keys;
pub mod level;
pub mod promotion;
