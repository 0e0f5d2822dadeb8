//! The table of settable keys: each is written once, with when it applies,
//! its help, the kind of value it takes (and so its range), and how it is
//! read from and written to [`SessionConfig`].

use std::net::SocketAddr;

use super::values::{optional_addr, ChangeDetector, LogFormat, LogLevel};
use super::{Applies, ConfigError, SessionConfig};
use crate::crawl::filter::Pattern;
use crate::proto::compress::Compression;

/// What a key takes; the only place its range or names are stated.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Bool,
    Int {
        min: u64,
        max: u64,
    },
    Seconds {
        min: f64,
        max: f64,
    },
    /// One of these words, in any case.
    Choice(&'static [&'static str]),
    /// Comma-separated glob patterns.
    Patterns,
    /// `IP:PORT`, or empty.
    Addr,
    /// Text that ends up inside `command="…"` in the slave's
    /// authorized_keys.
    ForcedCommandText,
    /// The program of the slave's forced command: an absolute path or a
    /// bare program name, never a shell snippet.
    Program,
}

/// A value read by its [`Kind`], range and names already checked.
#[derive(Debug, Clone)]
pub enum Value {
    Bool(bool),
    Int(u64),
    Seconds(f64),
    Word(String),
    Patterns(Vec<String>),
    Addr(Option<SocketAddr>),
    Text(String),
}

impl Value {
    fn int(&self) -> u64 {
        match self {
            Value::Int(n) => *n,
            _ => 0,
        }
    }

    fn bool(&self) -> bool {
        matches!(self, Value::Bool(true))
    }

    fn text(self) -> String {
        match self {
            Value::Word(s) | Value::Text(s) => s,
            _ => String::new(),
        }
    }
}

impl Kind {
    /// Reads `text` as a value of this kind for `key`.
    pub fn parse(self, key: &'static str, text: &str) -> Result<Value, ConfigError> {
        let bad = |why: String| ConfigError::Value { key, why };
        let t = text.trim();
        match self {
            Kind::Bool => match t.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => Ok(Value::Bool(true)),
                "false" | "no" | "off" | "0" => Ok(Value::Bool(false)),
                _ => Err(bad(format!("{text:?} is not a boolean (true or false)"))),
            },
            Kind::Int { min, max } => {
                let n: u64 = t
                    .parse()
                    .map_err(|_| bad(format!("{text:?} is not a whole number")))?;
                if !(min..=max).contains(&n) {
                    return Err(bad(format!("{n} is out of range ({min}..={max})")));
                }
                Ok(Value::Int(n))
            }
            Kind::Seconds { min, max } => {
                let s: f64 = t
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite())
                    .ok_or_else(|| bad(format!("{text:?} is not a number of seconds")))?;
                if !(min..=max).contains(&s) {
                    return Err(bad(format!("must be between {min} and {max} seconds")));
                }
                Ok(Value::Seconds(s))
            }
            Kind::Choice(names) => {
                let word = t.to_ascii_lowercase();
                if names.contains(&word.as_str()) {
                    Ok(Value::Word(word))
                } else {
                    Err(bad(format!("{text:?} is not one of {}", names.join(", "))))
                }
            }
            Kind::Patterns => {
                let patterns: Vec<String> = t
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect();
                for p in &patterns {
                    Pattern::parse(p).map_err(bad)?;
                }
                Ok(Value::Patterns(patterns))
            }
            Kind::Addr => optional_addr::parse(t).map(Value::Addr).map_err(bad),
            Kind::Program => {
                super::command::check_program(text).map_err(bad)?;
                Ok(Value::Text(text.to_owned()))
            }
            Kind::ForcedCommandText => {
                if text.contains(['"', '\'', '\n', '\0', '\\']) {
                    return Err(bad(
                        "must not contain quotes, backslashes or newlines".into()
                    ));
                }
                Ok(Value::Text(text.to_owned()))
            }
        }
    }

    /// The range or names, as the key's help shows them.
    pub fn describe(self) -> String {
        match self {
            Kind::Bool => "true or false".into(),
            Kind::Int { min, max } => format!("{min}..={max}"),
            Kind::Seconds { min, max } => format!("{min}..={max} seconds"),
            Kind::Choice(names) => names.join(", "),
            Kind::Patterns => "comma-separated glob patterns".into(),
            Kind::Addr => "IP:PORT, or empty".into(),
            Kind::ForcedCommandText => "text without quotes".into(),
            Kind::Program => "an absolute path or a bare program name".into(),
        }
    }
}

/// One settable key.
#[derive(Clone, Copy)]
pub struct OptionSpec {
    pub key: &'static str,
    pub applies: Applies,
    pub help: &'static str,
    pub kind: Kind,
    get: fn(&SessionConfig) -> String,
    /// Stores a value already checked by `kind`.
    set: fn(&mut SessionConfig, Value),
}

impl std::fmt::Debug for OptionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OptionSpec")
            .field("key", &self.key)
            .field("applies", &self.applies)
            .finish_non_exhaustive()
    }
}

impl OptionSpec {
    /// The value of this key in `c`, as `config … KEY` prints it.
    pub fn get(&self, c: &SessionConfig) -> String {
        (self.get)(c)
    }

    /// Sets this key in `c` from `text`; `c` is untouched on error.
    pub fn set(&self, c: &mut SessionConfig, text: &str) -> Result<(), ConfigError> {
        let v = self.kind.parse(self.key, text)?;
        (self.set)(c, v);
        Ok(())
    }

    /// What the key does, with its range or names.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.help, self.kind.describe())
    }
}

/// Every key of [`SessionConfig`], in listing order. (`checkpoint` is a
/// key of `geo-rep config` too, but lives in the state database.)
pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        key: "changelog-batch-size",
        applies: Applies::Live,
        help: "most operations shipped in one batch",
        kind: Kind::Int {
            min: 1,
            max: 1_000_000,
        },
        get: |c| c.changelog_batch_size.to_string(),
        set: |c, v| c.changelog_batch_size = v.int() as usize,
    },
    OptionSpec {
        key: "exclude",
        applies: Applies::Live,
        help: "paths not to replicate",
        kind: Kind::Patterns,
        get: |c| c.exclude.join(","),
        set: |c, v| {
            if let Value::Patterns(p) = v {
                c.exclude = p;
            }
        },
    },
    OptionSpec {
        key: "ignore-deletes",
        applies: Applies::Live,
        help: "true: deletions on the master are not replicated",
        kind: Kind::Bool,
        get: |c| c.ignore_deletes.to_string(),
        set: |c, v| c.ignore_deletes = v.bool(),
    },
    OptionSpec {
        key: "rollover-time",
        applies: Applies::NextStart,
        help: "seconds between journal rollovers",
        kind: Kind::Seconds {
            min: 0.1,
            max: 3600.0,
        },
        get: |c| c.rollover_time.to_string(),
        set: |c, v| {
            if let Value::Seconds(s) = v {
                c.rollover_time = s;
            }
        },
    },
    OptionSpec {
        key: "change-detector",
        applies: Applies::NextStart,
        help: "auto, glusterfs (the brick's GlusterFS changelogs) or notify (georep's journal hook)",
        kind: Kind::Choice(ChangeDetector::NAMES),
        get: |c| c.change_detector.to_string(),
        set: |c, v| c.change_detector = v.text().parse().unwrap_or(ChangeDetector::Auto),
    },
    OptionSpec {
        key: "ssh-port",
        applies: Applies::NextStart,
        help: "SSH port of the slave",
        kind: Kind::Int { min: 1, max: 65_535 },
        get: |c| c.ssh_port.to_string(),
        set: |c, v| c.ssh_port = v.int() as u16,
    },
    OptionSpec {
        key: "timeout",
        applies: Applies::NextStart,
        help: "seconds without an answer before the slave counts as hung",
        kind: Kind::Int { min: 1, max: 86_400 },
        get: |c| c.timeout.to_string(),
        set: |c, v| c.timeout = v.int(),
    },
    OptionSpec {
        key: "bandwidth-limit",
        applies: Applies::NextStart,
        help: "most bytes per second sent to the slave, over every brick and stream of the session (token bucket); 0: no limit",
        kind: Kind::Int {
            min: 0,
            max: u64::MAX / 2,
        },
        get: |c| c.bandwidth_limit.to_string(),
        set: |c, v| c.bandwidth_limit = v.int(),
    },
    OptionSpec {
        key: "compression",
        applies: Applies::Live,
        help: "zstd (file data compressed at level 1 where it shrinks; incompressible data goes raw) or none",
        kind: Kind::Choice(Compression::NAMES),
        get: |c| c.compression.as_str().to_owned(),
        set: |c, v| c.compression = Compression::from_name(&v.text()).unwrap_or_default(),
    },
    OptionSpec {
        key: "retry-max-interval",
        applies: Applies::NextStart,
        help: "longest wait in seconds between retries of a failing worker",
        kind: Kind::Int { min: 1, max: 3600 },
        get: |c| c.retry_max_interval.to_string(),
        set: |c, v| c.retry_max_interval = v.int(),
    },
    OptionSpec {
        key: "replica-failover-interval",
        applies: Applies::NextStart,
        help: "seconds within which a Passive worker of a replica set becomes Active when the Active brick goes down",
        kind: Kind::Int { min: 1, max: 600 },
        get: |c| c.replica_failover_interval.to_string(),
        set: |c, v| c.replica_failover_interval = v.int(),
    },
    OptionSpec {
        key: "volume-check-interval",
        applies: Applies::NextStart,
        help: "seconds between comparisons of the GlusterFS master volume's bricks with those recorded at create",
        kind: Kind::Int { min: 1, max: 86400 },
        get: |c| c.volume_check_interval.to_string(),
        set: |c, v| c.volume_check_interval = v.int(),
    },
    OptionSpec {
        key: "log-level",
        applies: Applies::Reload,
        help: "monitor log verbosity",
        kind: Kind::Choice(LogLevel::NAMES),
        get: |c| c.log_level.to_string(),
        set: |c, v| c.log_level = v.text().parse().unwrap_or(LogLevel::Info),
    },
    OptionSpec {
        key: "log-format",
        applies: Applies::NextStart,
        help: "session log lines: human, or json (one object per line)",
        kind: Kind::Choice(LogFormat::NAMES),
        get: |c| c.log_format.to_string(),
        set: |c, v| c.log_format = v.text().parse().unwrap_or(LogFormat::Human),
    },
    OptionSpec {
        key: "log-rotate-size",
        applies: Applies::NextStart,
        help: "MiB at which the session log is rotated",
        kind: Kind::Int { min: 1, max: 1024 },
        get: |c| c.log_rotate_size.to_string(),
        set: |c, v| c.log_rotate_size = v.int(),
    },
    OptionSpec {
        key: "log-rotate-keep",
        applies: Applies::NextStart,
        help: "rotated session logs kept",
        kind: Kind::Int { min: 1, max: 100 },
        get: |c| c.log_rotate_keep.to_string(),
        set: |c, v| c.log_rotate_keep = v.int() as u32,
    },
    OptionSpec {
        key: "metrics-addr",
        applies: Applies::NextStart,
        help: "where the Prometheus endpoint GET /metrics listens; empty: off",
        kind: Kind::Addr,
        get: |c| c.metrics_addr.map(|a| a.to_string()).unwrap_or_default(),
        set: |c, v| {
            if let Value::Addr(a) = v {
                c.metrics_addr = a;
            }
        },
    },
    OptionSpec {
        key: "remote-command",
        applies: Applies::AtCreate,
        help: "georep on the slave; it is the forced command in the slave's authorized_keys",
        kind: Kind::Program,
        get: |c| c.remote_command.clone(),
        set: |c, v| c.remote_command = v.text(),
    },
    OptionSpec {
        key: "authorized-keys-file",
        applies: Applies::AtCreate,
        help: "the slave's authorized_keys file push-pem wrote to",
        kind: Kind::ForcedCommandText,
        get: |c| c.authorized_keys_file.clone(),
        set: |c, v| c.authorized_keys_file = v.text(),
    },
    OptionSpec {
        key: "sync-jobs",
        applies: Applies::NextStart,
        help: "parallel transfer streams per brick: channels to as many slave processes, file contents spread over them by directory",
        kind: Kind::Int { min: 1, max: 64 },
        get: |c| c.sync_jobs.to_string(),
        set: |c, v| c.sync_jobs = v.int() as u32,
    },
    OptionSpec {
        key: "sync-xattrs",
        applies: Applies::Live,
        help: "replicate user.* extended attributes",
        kind: Kind::Bool,
        get: |c| c.sync_xattrs.to_string(),
        set: |c, v| c.sync_xattrs = v.bool(),
    },
    OptionSpec {
        key: "sync-acls",
        applies: Applies::Live,
        help: "replicate POSIX ACLs (system.posix_acl_access/default)",
        kind: Kind::Bool,
        get: |c| c.sync_acls.to_string(),
        set: |c, v| c.sync_acls = v.bool(),
    },
];

/// The spec of `key`, or [`ConfigError::UnknownKey`].
pub fn option(key: &str) -> Result<&'static OptionSpec, ConfigError> {
    OPTIONS
        .iter()
        .find(|o| o.key == key)
        .ok_or_else(|| ConfigError::UnknownKey(key.to_owned()))
}

pub(super) fn known_keys() -> String {
    let mut keys: Vec<&str> = OPTIONS.iter().map(|o| o.key).collect();
    keys.push("checkpoint");
    keys.join(", ")
}
