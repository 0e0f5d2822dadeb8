//! The vocabulary of a session: which master volume goes to which slave, its
//! bricks, and how far each brick is synced ([`Stime`], apart from every
//! other moment, a [`Timestamp`]).
//!
//! Also the session's settings ([`config`]) and its home ([`Home`]: the
//! state database, keys, journals and logs of every session).
//!
//! May import: `crawl` (the filter a config builds), `proto` (compression),
//! `state` (opened by the home).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub mod config;
mod home;
mod time;

pub use home::Home;
pub use time::{Stime, Timestamp};

/// Why a session name, slave address or brick is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("invalid slave {0:?}: expected [USER@]HOST::VOLUME, e.g. root@dr1::/srv/dr/gv0")]
    SlaveUrl(String),
    #[error("invalid master volume name {0:?}: use letters, digits, `-`, `_` and `.` (not starting with `.`)")]
    VolumeName(String),
    #[error("brick {0:?} must be an absolute path")]
    BrickNotAbsolute(PathBuf),
}

/// Master volume name: also a directory name under `GEOREP_HOME`, hence the
/// restricted alphabet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VolumeName(String);

impl VolumeName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for VolumeName {
    type Err = SessionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if ok {
            Ok(VolumeName(s.to_owned()))
        } else {
            Err(SessionError::VolumeName(s.to_owned()))
        }
    }
}

impl fmt::Display for VolumeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `[user@]host::volume`. `volume` is the slave root: an absolute path, or a
/// name the slave maps to a directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlaveUrl {
    pub user: String,
    pub host: String,
    pub volume: String,
}

impl SlaveUrl {
    /// The form GlusterFS shows in its SLAVE column: `host::volume`.
    pub fn host_volume(&self) -> String {
        format!("{}::{}", self.host, self.volume)
    }
}

impl FromStr for SlaveUrl {
    type Err = SessionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || SessionError::SlaveUrl(s.to_owned());
        let s = s.strip_prefix("ssh://").unwrap_or(s);
        let (userhost, volume) = s.split_once("::").ok_or_else(bad)?;
        let (user, host) = match userhost.split_once('@') {
            Some((u, h)) => (u.to_owned(), h),
            None => ("root".to_owned(), userhost),
        };
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '_'));
        let user_ok = !user.is_empty()
            && user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        let volume_ok = !volume.is_empty()
            && !volume.contains(['\0', '\n', '"', '\''])
            && !volume.split('/').any(|c| c == "..");
        if !(host_ok && user_ok && volume_ok) {
            return Err(bad());
        }
        Ok(SlaveUrl {
            user,
            host: host.to_owned(),
            volume: volume.to_owned(),
        })
    }
}

impl fmt::Display for SlaveUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}::{}", self.user, self.host, self.volume)
    }
}

/// A brick: an absolute directory path on this master node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Brick(PathBuf);

impl Brick {
    pub fn new(path: impl Into<PathBuf>) -> Result<Self, SessionError> {
        let path = path.into();
        if !path.is_absolute() {
            return Err(SessionError::BrickNotAbsolute(path));
        }
        Ok(Brick(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl fmt::Display for Brick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.display())
    }
}

/// Row id of a session in the state database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(i64);

impl SessionId {
    pub const fn new(row: i64) -> SessionId {
        SessionId(row)
    }

    /// The database row id.
    pub const fn row(self) -> i64 {
        self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Row id of a brick in the state database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BrickId(i64);

impl BrickId {
    pub const fn new(row: i64) -> BrickId {
        BrickId(row)
    }

    /// The database row id.
    pub const fn row(self) -> i64 {
        self.0
    }
}

impl fmt::Display for BrickId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "brick-{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slave_urls() {
        let u: SlaveUrl = "geo@dr1.example::/srv/dr/gv0".parse().unwrap();
        assert_eq!(
            (u.user.as_str(), u.host.as_str(), u.volume.as_str()),
            ("geo", "dr1.example", "/srv/dr/gv0")
        );
        let u: SlaveUrl = "127.0.0.1::gv0".parse().unwrap();
        assert_eq!(u.user, "root");
        assert_eq!(u.to_string(), "root@127.0.0.1::gv0");
        for bad in [
            "host:/x",
            "::x",
            "a@::x",
            "h::",
            "h::/a/../b",
            "h::a\"b",
            "us er@h::x",
        ] {
            let e = bad.parse::<SlaveUrl>().unwrap_err().to_string();
            assert!(e.contains("[USER@]HOST::VOLUME"), "{bad}: {e}");
        }
    }

    #[test]
    fn volume_names() {
        assert!("gv0".parse::<VolumeName>().is_ok());
        for bad in ["", ".x", "a/b", "a b", "../x"] {
            assert!(bad.parse::<VolumeName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn bricks_are_absolute() {
        assert!(Brick::new("rel/x").is_err());
        assert!(Brick::new("/srv/b").is_ok());
    }
}
