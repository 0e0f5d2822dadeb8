//! Where a session keeps its files under `GEOREP_HOME`.

use std::path::{Path, PathBuf};

use crate::state::{State, StateError};

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

    pub fn session_dir(&self, id: i64) -> PathBuf {
        self.root.join("sessions").join(id.to_string())
    }

    /// The session's private key (GlusterFS calls it secret.pem too).
    pub fn session_key(&self, id: i64) -> PathBuf {
        self.session_dir(id).join("secret.pem")
    }

    pub fn monitor_log(&self, id: i64) -> PathBuf {
        self.session_dir(id).join("monitor.log")
    }
}
