//! Session settings: one validated struct whose kebab-case field names are
//! the keys of `geo-rep config KEY VALUE`. Stored as JSON in the state
//! database; unknown keys and bad values are refused when set.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct SessionConfig {
    /// SSH port of the slave host.
    pub ssh_port: u16,
    /// Command that runs georep on the slave.
    pub remote_command: String,
    /// authorized_keys file on the slave that push-pem wrote to (so
    /// `delete` can find the key again); empty means `~/.ssh/authorized_keys`.
    pub authorized_keys_file: String,
    /// Seconds between journal rollovers.
    pub rollover_time: f64,
    /// Most operations shipped in one batch.
    pub changelog_batch_size: usize,
    /// Seconds without an answer after which the slave counts as hung.
    pub timeout: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            ssh_port: 22,
            remote_command: "geo-rep".into(),
            authorized_keys_file: String::new(),
            rollover_time: 1.0,
            changelog_batch_size: 8192,
            timeout: 120,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid session configuration: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid value for {key}: {why}")]
    Value { key: &'static str, why: String },
}

impl SessionConfig {
    pub fn from_json(s: &str) -> Result<Self, ConfigError> {
        let c: SessionConfig = serde_json::from_str(s)?;
        c.validate()?;
        Ok(c)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("config serializes")
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, why: &str| {
            Err(ConfigError::Value {
                key,
                why: why.to_owned(),
            })
        };
        if !(0.1..=3600.0).contains(&self.rollover_time) {
            return bad("rollover-time", "must be between 0.1 and 3600 seconds");
        }
        if self.changelog_batch_size == 0 {
            return bad("changelog-batch-size", "must be at least 1");
        }
        if self.timeout == 0 {
            return bad("timeout", "must be at least 1 second");
        }
        if self.ssh_port == 0 {
            return bad("ssh-port", "must be between 1 and 65535");
        }
        // Both end up inside `command="…"` in authorized_keys.
        for (key, v) in [
            ("remote-command", &self.remote_command),
            ("authorized-keys-file", &self.authorized_keys_file),
        ] {
            if v.contains(['"', '\'', '\n', '\0', '\\']) {
                return bad(key, "must not contain quotes, backslashes or newlines");
            }
        }
        if self.remote_command.trim().is_empty() {
            return bad("remote-command", "must not be empty");
        }
        Ok(())
    }

    pub fn rollover(&self) -> Duration {
        Duration::from_secs_f64(self.rollover_time)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }

    /// The command line the slave runs for this session.
    pub fn slave_command(&self, root: &str) -> String {
        format!("{} slave --root '{}'", self.remote_command, root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_unknown_keys() {
        let c = SessionConfig::default();
        assert_eq!(SessionConfig::from_json(&c.to_json()).unwrap(), c);
        let e = SessionConfig::from_json(r#"{"no-such-key": 1}"#).unwrap_err();
        assert!(e.to_string().contains("no-such-key"), "{e}");
        let e = SessionConfig::from_json(r#"{"rollover-time": 0}"#).unwrap_err();
        assert!(e.to_string().contains("rollover-time"), "{e}");
        let e = SessionConfig::from_json(r#"{"remote-command": "x\" evil"}"#).unwrap_err();
        assert!(e.to_string().contains("remote-command"), "{e}");
    }
}
