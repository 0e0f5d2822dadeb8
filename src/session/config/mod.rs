//! Session settings: one validated struct whose kebab-case field names are
//! the keys of `geo-rep config KEY VALUE`. Stored as JSON in the state
//! database; unknown keys and bad values are refused when set, so a worker
//! never meets one.
//!
//! [`OPTIONS`] says, per key, when a change takes effect: `live` (the
//! monitor re-reads the settings before each batch), `next start`, `at
//! create` (fixed by `create push-pem`; changing it needs a new session) or
//! `not yet applied` (stored and validated, but georep does not act on it
//! yet: the listing says so rather than pretend).

mod command;
mod options;
mod values;

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::crawl::filter::{Pattern, SyncFilter};
use crate::proto::compress::Compression;

pub use options::{option, Kind, OptionSpec, OPTIONS};
pub use values::{ChangeDetector, LogFormat, LogLevel};

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
    /// Most bytes per second the session sends to the slave, over all its
    /// bricks and streams; 0: no limit.
    pub bandwidth_limit: u64,
    /// How file data travels: compressed where it shrinks, or raw.
    pub compression: Compression,
    /// Longest wait, in seconds, between retries of a failing worker (the
    /// wait starts at 1 s and doubles).
    pub retry_max_interval: u64,
    /// Parallel transfer streams per brick: SSH channels to as many slave
    /// processes; file contents are spread over them by directory.
    pub sync_jobs: u32,
    /// Leave on the slave what is deleted on the master.
    pub ignore_deletes: bool,
    /// Replicate `user.*` extended attributes.
    pub sync_xattrs: bool,
    /// Replicate POSIX ACLs.
    pub sync_acls: bool,
    /// Log verbosity of the monitor.
    pub log_level: LogLevel,
    /// Glob patterns of paths not to replicate (see `crawl::filter`).
    pub exclude: Vec<String>,
    /// Monitor log lines: readable, or one JSON object per line.
    pub log_format: LogFormat,
    /// The session log is rotated when it would grow past this many MiB.
    pub log_rotate_size: u64,
    /// Rotated session logs kept besides the current one.
    pub log_rotate_keep: u32,
    /// Where the monitor serves Prometheus metrics at `/metrics`; stored
    /// as `""` when off.
    #[serde(with = "values::optional_addr")]
    pub metrics_addr: Option<SocketAddr>,
    /// Where changes are found.
    pub change_detector: ChangeDetector,
    /// Seconds within which a Passive worker of a replica set takes over
    /// when the Active one's brick goes down.
    pub replica_failover_interval: u64,
    /// Seconds between two comparisons of a GlusterFS master volume's
    /// topology with the one recorded at `create`, while the session runs.
    pub volume_check_interval: u64,
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
            bandwidth_limit: 0,
            // On: a frame that does not shrink goes raw at the cost of a
            // compressed sample (see `proto::compress`), while text, logs
            // and databases cross a WAN link several times faster.
            compression: Compression::Zstd,
            retry_max_interval: 60,
            sync_jobs: 3,
            ignore_deletes: false,
            sync_xattrs: true,
            sync_acls: true,
            log_level: LogLevel::Info,
            exclude: Vec::new(),
            log_format: LogFormat::Human,
            log_rotate_size: 10,
            log_rotate_keep: 5,
            metrics_addr: None,
            change_detector: ChangeDetector::Auto,
            replica_failover_interval: 5,
            volume_check_interval: 60,
        }
    }
}

/// When a change to an option takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies {
    Live,
    /// On SIGHUP to the monitor (`systemctl reload`), or the next start.
    Reload,
    NextStart,
    AtCreate,
    NotYetApplied,
}

impl std::fmt::Display for Applies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Applies::Live => "live",
            Applies::Reload => "reload",
            Applies::NextStart => "next start",
            Applies::AtCreate => "at create",
            Applies::NotYetApplied => "not yet applied",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid session configuration: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unknown config option {0:?} (known: {known})", known = options::known_keys())]
    UnknownKey(String),
    #[error("invalid value for {key}: {why}")]
    Value { key: &'static str, why: String },
    #[error("{key} is fixed at create (it is part of the key installed on the slave); delete and re-create the session to change it")]
    Fixed { key: &'static str },
    #[error("{file}:{line}: {why}")]
    File {
        file: String,
        line: usize,
        why: String,
    },
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

    /// Every key's value read back through its [`Kind`]: a stored config
    /// edited by hand (or by an older version) is checked like a `config`
    /// command.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for o in OPTIONS {
            o.kind.parse(o.key, &o.get(self))?;
        }
        Ok(())
    }

    /// The value of `key` as `config … KEY` prints it.
    pub fn get(&self, key: &str) -> Result<String, ConfigError> {
        Ok(option(key)?.get(self))
    }

    /// `self` with `key` set to `value`, validated; `self` is untouched on
    /// error.
    pub fn with(&self, key: &str, value: &str) -> Result<SessionConfig, ConfigError> {
        let spec = option(key)?;
        if spec.applies == Applies::AtCreate {
            return Err(ConfigError::Fixed { key: spec.key });
        }
        let mut c = self.clone();
        spec.set(&mut c, value)?;
        Ok(c)
    }

    /// `self` with every `key = value` line of a config file applied (see
    /// `config/georep.conf`; `#` starts a comment). All or nothing: the
    /// first bad line is the error, naming `file` and the line. A key
    /// fixed at create may appear with its current value only.
    pub fn with_file(&self, file: &str, text: &str) -> Result<SessionConfig, ConfigError> {
        let mut c = self.clone();
        for (i, raw) in text.lines().enumerate() {
            let at = |why: String| ConfigError::File {
                file: file.to_owned(),
                line: i + 1,
                why,
            };
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(at(format!("expected `key = value`, found {line:?}")));
            };
            let (key, value) = (key.trim(), value.trim());
            if key == "checkpoint" {
                return Err(at(
                    "checkpoint is not a setting; use `geo-rep config … checkpoint now`".into(),
                ));
            }
            let spec = option(key).map_err(|e| at(e.to_string()))?;
            if spec.applies == Applies::AtCreate {
                if c.get(key).map_err(|e| at(e.to_string()))? != value {
                    return Err(at(ConfigError::Fixed { key: spec.key }.to_string()));
                }
                continue;
            }
            c = c.with(key, value).map_err(|e| at(e.to_string()))?;
        }
        Ok(c)
    }

    /// The options whose values differ in `other`: (option, old, new).
    pub fn changes(&self, other: &SessionConfig) -> Vec<(&'static OptionSpec, String, String)> {
        OPTIONS
            .iter()
            .filter_map(|o| {
                let (old, new) = (self.get(o.key).ok()?, other.get(o.key).ok()?);
                (old != new).then_some((o, old, new))
            })
            .collect()
    }

    /// `self` with `key` back at its default.
    pub fn without(&self, key: &str) -> Result<SessionConfig, ConfigError> {
        let spec = option(key)?;
        if spec.applies == Applies::AtCreate {
            return Err(ConfigError::Fixed { key: spec.key });
        }
        let default = SessionConfig::default().get(spec.key)?;
        self.with(spec.key, &default)
    }

    pub fn rollover(&self) -> Duration {
        Duration::from_secs_f64(self.rollover_time)
    }

    /// Rotation threshold of the session log, in bytes.
    pub fn log_rotate_bytes(&self) -> u64 {
        self.log_rotate_size * 1024 * 1024
    }

    /// What the worker does with data frames.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }

    /// The command line the slave runs for this session: a slave directory
    /// is an absolute path; any other name is a GlusterFS volume on the
    /// slave host, which the slave mounts itself.
    pub fn slave_command(&self, root: &str) -> String {
        if root.starts_with('/') {
            format!("{} slave --root '{}'", self.remote_command, root)
        } else {
            format!("{} slave --volume '{}'", self.remote_command, root)
        }
    }

    /// What the worker leaves out of each batch.
    pub fn filter(&self) -> SyncFilter {
        SyncFilter {
            // Validated when set; a pattern that no longer parses is skipped.
            exclude: self
                .exclude
                .iter()
                .filter_map(|p| Pattern::parse(p).ok())
                .collect(),
            ignore_deletes: self.ignore_deletes,
        }
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

    #[test]
    fn an_old_config_without_new_keys_gets_defaults() {
        let c = SessionConfig::from_json(r#"{"ssh-port": 2222, "timeout": 5}"#).unwrap();
        assert_eq!(c.ssh_port, 2222);
        assert_eq!(c.sync_jobs, 3);
        assert!(c.exclude.is_empty());
    }

    #[test]
    fn every_option_gets_and_resets() {
        let c = SessionConfig::default();
        for o in OPTIONS {
            let v = c.get(o.key).unwrap();
            if o.applies == Applies::AtCreate {
                assert!(matches!(c.with(o.key, &v), Err(ConfigError::Fixed { .. })));
            } else {
                assert_eq!(c.with(o.key, &v).unwrap(), c, "{}", o.key);
                assert_eq!(c.without(o.key).unwrap(), c, "{}", o.key);
            }
        }
    }

    #[test]
    fn the_shipped_config_file_documents_every_option_at_its_default() {
        let text = include_str!("../../../config/georep.conf");
        let c = SessionConfig::default();
        assert_eq!(c.with_file("georep.conf", text).unwrap(), c);
        for o in OPTIONS {
            let line = format!("\n{} = {}", o.key, c.get(o.key).unwrap());
            assert!(text.contains(line.trim_end()), "georep.conf lacks {line:?}");
        }
    }

    #[test]
    fn config_files_are_all_or_nothing_and_errors_name_the_line() {
        let c = SessionConfig::default();
        let got = c
            .with_file(
                "f",
                "# comment\n\ntimeout = 30 # seconds\nexclude = *.tmp, cache\n",
            )
            .unwrap();
        assert_eq!((got.timeout, got.exclude.len()), (30, 2));
        for (text, why) in [
            (
                "timeout = 30\ntimeout = 0\n",
                "f:2: invalid value for timeout",
            ),
            ("timeout 30\n", "f:1: expected `key = value`"),
            ("nope = 1\n", "f:1: unknown config option"),
            ("checkpoint = now\n", "f:1: checkpoint is not a setting"),
            ("remote-command = /bin/sh\n", "f:1: remote-command is fixed"),
        ] {
            let e = c.with_file("f", text).unwrap_err().to_string();
            assert!(e.starts_with(why), "{text:?}: {e}");
        }
        assert_eq!(
            c.with_file("f", "remote-command = geo-rep\n").unwrap(),
            c,
            "a fixed key with its current value is fine"
        );
    }

    #[test]
    fn good_values_are_taken() {
        let c = SessionConfig::default();
        let table: &[(&str, &str, &str)] = &[
            ("changelog-batch-size", "10", "10"),
            ("exclude", "*.tmp, cache/**", "*.tmp,cache/**"),
            ("exclude", "", ""),
            ("ignore-deletes", "yes", "true"),
            ("ignore-deletes", "FALSE", "false"),
            ("rollover-time", "0.5", "0.5"),
            ("ssh-port", "2222", "2222"),
            ("timeout", "30", "30"),
            ("bandwidth-limit", "1000000", "1000000"),
            ("compression", "NONE", "none"),
            ("compression", "zstd", "zstd"),
            ("log-level", "DEBUG", "debug"),
            ("log-format", "JSON", "json"),
            ("log-rotate-size", "1", "1"),
            ("log-rotate-keep", "2", "2"),
            ("metrics-addr", "127.0.0.1:9810", "127.0.0.1:9810"),
            ("metrics-addr", "[::1]:9810", "[::1]:9810"),
            ("metrics-addr", "", ""),
            ("sync-jobs", "3", "3"),
            ("sync-xattrs", "true", "true"),
            ("sync-acls", "off", "false"),
            ("change-detector", "GlusterFS", "glusterfs"),
            ("change-detector", "notify", "notify"),
        ];
        for (key, value, shown) in table {
            let got = c
                .with(key, value)
                .unwrap_or_else(|e| panic!("{key}={value}: {e}"));
            assert_eq!(got.get(key).unwrap(), *shown, "{key}={value}");
            assert_eq!(got.without(key).unwrap(), c, "reset {key}");
        }
    }

    #[test]
    fn bad_values_are_refused_naming_key_and_reason() {
        let c = SessionConfig::default();
        let table: &[(&str, &str, &str)] = &[
            ("no-such-key", "1", "unknown config option"),
            ("changelog-batch-size", "0", "out of range"),
            ("changelog-batch-size", "-1", "not a whole number"),
            ("changelog-batch-size", "lots", "not a whole number"),
            (
                "changelog-batch-size",
                "99999999999999999999999",
                "not a whole number",
            ),
            ("ssh-port", "65536", "out of range"),
            ("ssh-port", "0", "out of range"),
            ("timeout", "0", "out of range"),
            ("bandwidth-limit", "-1", "not a whole number"),
            ("compression", "gzip", "one of zstd, none"),
            ("rollover-time", "0.01", "between 0.1 and 3600"),
            ("rollover-time", "NaN", "not a number"),
            ("rollover-time", "inf", "not a number"),
            ("rollover-time", "soon", "not a number"),
            ("ignore-deletes", "maybe", "not a boolean"),
            ("sync-jobs", "65", "out of range"),
            ("log-level", "loud", "one of"),
            ("log-format", "xml", "one of human, json"),
            ("log-rotate-size", "0", "out of range"),
            ("log-rotate-keep", "101", "out of range"),
            ("metrics-addr", "localhost", "IP:PORT"),
            ("metrics-addr", "127.0.0.1", "IP:PORT"),
            ("exclude", "[abc", "unclosed"),
            ("exclude", "/", "whole brick"),
            ("remote-command", "/bin/sh", "fixed at create"),
            ("authorized-keys-file", "/x", "fixed at create"),
        ];
        for (key, value, why) in table {
            let e = c.with(key, value).unwrap_err().to_string();
            assert!(e.contains(why), "{key}={value}: {e}");
            if *key != "no-such-key" {
                assert!(e.contains(key), "{key}={value}: {e}");
            }
        }
    }
}
