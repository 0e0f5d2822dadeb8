//! Where a session keeps its files under `GEOREP_HOME`.

use std::path::{Path, PathBuf};

use super::SessionId;
use crate::state::{SessionRecord, State, StateError};

#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    pub fn new(root: PathBuf) -> Self {
        Home { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn state(&self) -> Result<State, StateError> {
        State::open(&self.root)
    }

    pub fn session_dir(&self, id: SessionId) -> PathBuf {
        self.root.join("sessions").join(id.to_string())
    }

    /// The session's private key (GlusterFS calls it secret.pem too).
    pub fn session_key(&self, id: SessionId) -> PathBuf {
        self.session_dir(id).join("secret.pem")
    }

    /// The master volume's topology as `create` found it (GlusterFS
    /// volumes only), compared at `start` and while the session runs.
    pub fn session_topology(&self, id: SessionId) -> PathBuf {
        self.session_dir(id).join("topology.json")
    }

    /// Where the monitors' logs are.
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// The session's log: `logs/<vol>--<slavehost>--<id>.log` (rotated
    /// copies get `.1`, `.2`, … appended).
    pub fn session_log(&self, s: &SessionRecord) -> PathBuf {
        let host: String = s
            .slave
            .host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.logs_dir()
            .join(format!("{}--{host}--{}.log", s.master_vol, s.id))
    }

    /// What a background monitor writes outside its logger (a panic).
    pub fn session_stderr(&self, s: &SessionRecord) -> PathBuf {
        self.session_log(s).with_extension("stderr")
    }
}
