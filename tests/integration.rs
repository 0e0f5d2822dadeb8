//! Integration tests: the real `geo-rep` binary against a real OpenSSH sshd
//! on 127.0.0.1 (see the `georep-testkit` crate). One module per topic; each test
//! builds its own [`common::Scenario`] (own sshd, `GEOREP_HOME`, brick and
//! slave directory), so they run in parallel.

mod cluster;
mod common;
mod confinement;

mod delta;
mod distribute;
mod dr;
mod e2e;
mod errors;
mod faults;
mod fidelity;
mod gaps;
mod gluster;
mod gluster_dr;
mod gluster_replica;
mod gluster_verify;
mod hostile;
mod layout;
mod limits;
mod master_trust;
mod model;
mod nodes;
mod nodes_dr;
mod nonroot;
mod ops;
mod policy;
mod robustness;
mod security;
mod service;
mod verify;
mod wan;
