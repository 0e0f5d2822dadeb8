//! `RelPath`: a path relative to a brick or slave root that cannot escape it.
//!
//! Invariant 3 of DESIGN.md lives in [`RelPath::new`]: every path that comes
//! from the journal, from a crawl or from the wire is turned into a `RelPath`
//! before anything touches the file system, so no other module has to think
//! about `..`, absolute paths or NUL bytes.
//!
//! A `RelPath` is a byte string (Linux file names need not be UTF-8) made of
//! `/`-separated components, each non-empty, not `.` or `..`, without NUL.
//! The empty path is the root itself.
//!
//! It says nothing about symlinks: a `RelPath` may name a path whose parent is
//! a symlink. Whoever resolves it must walk it component by component without
//! following links (see `slave::root`).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Longest path accepted, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;

/// Why a byte string is not a valid [`RelPath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelPathError {
    #[error("path {0:?} is absolute; expected a path relative to the root")]
    Absolute(String),
    #[error("path {0:?} has an empty component (`//` or a trailing `/`)")]
    EmptyComponent(String),
    #[error("path {0:?} has a `.` or `..` component")]
    DotComponent(String),
    #[error("path {0:?} contains a NUL byte")]
    Nul(String),
    #[error("path is {0} bytes long, more than the limit of {MAX_PATH_BYTES}")]
    TooLong(usize),
    #[error("path {path:?} is not below root {root:?}")]
    NotBelow { path: PathBuf, root: PathBuf },
}

/// A validated path relative to a root; see the module documentation.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(transparent)]
pub struct RelPath(#[serde(with = "serde_bytes")] Vec<u8>);

impl RelPath {
    /// The root itself.
    pub fn root() -> Self {
        RelPath(Vec::new())
    }

    /// Validates `bytes` as a relative path; see the module documentation.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, RelPathError> {
        let bytes = bytes.into();
        let shown = || String::from_utf8_lossy(&bytes).into_owned();
        if bytes.len() > MAX_PATH_BYTES {
            return Err(RelPathError::TooLong(bytes.len()));
        }
        if bytes.is_empty() {
            return Ok(RelPath(bytes));
        }
        if bytes[0] == b'/' {
            return Err(RelPathError::Absolute(shown()));
        }
        if bytes.contains(&0) {
            return Err(RelPathError::Nul(shown()));
        }
        for comp in bytes.split(|&b| b == b'/') {
            match comp {
                b"" => return Err(RelPathError::EmptyComponent(shown())),
                b"." | b".." => return Err(RelPathError::DotComponent(shown())),
                _ => {}
            }
        }
        Ok(RelPath(bytes))
    }

    /// The path of `full` relative to `root`, both as the OS gives them.
    pub fn from_full(root: &Path, full: &Path) -> Result<Self, RelPathError> {
        let rest = full
            .strip_prefix(root)
            .map_err(|_| RelPathError::NotBelow {
                path: full.to_owned(),
                root: root.to_owned(),
            })?;
        RelPath::new(rest.as_os_str().as_bytes())
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn as_os_str(&self) -> &OsStr {
        OsStr::from_bytes(&self.0)
    }

    /// The components, outermost first; none for the root.
    pub fn components(&self) -> impl Iterator<Item = &OsStr> {
        self.0
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .map(OsStr::from_bytes)
    }

    /// Parent directory and last component; `None` for the root.
    pub fn split_last(&self) -> Option<(RelPath, &OsStr)> {
        if self.is_root() {
            return None;
        }
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => Some((
                RelPath(self.0[..i].to_vec()),
                OsStr::from_bytes(&self.0[i + 1..]),
            )),
            None => Some((RelPath::root(), OsStr::from_bytes(&self.0))),
        }
    }

    pub fn parent(&self) -> Option<RelPath> {
        self.split_last().map(|(p, _)| p)
    }

    /// The last component; `None` for the root.
    pub fn file_name(&self) -> Option<&OsStr> {
        self.split_last().map(|(_, n)| n)
    }

    /// `self/name`, where `name` is one component (no `/`, not `.`/`..`).
    pub fn join(&self, name: &OsStr) -> Result<RelPath, RelPathError> {
        let mut v = self.0.clone();
        if !v.is_empty() {
            v.push(b'/');
        }
        v.extend_from_slice(name.as_bytes());
        if name.as_bytes().contains(&b'/') || name.is_empty() {
            return Err(RelPathError::EmptyComponent(
                String::from_utf8_lossy(&v).into_owned(),
            ));
        }
        RelPath::new(v)
    }

    /// True if `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        other.is_root()
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.get(other.0.len()) == Some(&b'/'))
    }

    /// Replaces the prefix `from` of `self` with `to` (for directory renames).
    pub fn rebase(&self, from: &RelPath, to: &RelPath) -> Option<RelPath> {
        if !self.starts_with(from) {
            return None;
        }
        let rest = &self.0[from.0.len()..];
        let rest = rest.strip_prefix(b"/").unwrap_or(rest);
        let mut v = to.0.clone();
        if !v.is_empty() && !rest.is_empty() {
            v.push(b'/');
        }
        v.extend_from_slice(rest);
        RelPath::new(v).ok()
    }

    /// `root/self` as an OS path (for the master side, where the brick is
    /// trusted; the slave resolves through directory fds instead).
    pub fn under(&self, root: &Path) -> PathBuf {
        if self.is_root() {
            root.to_owned()
        } else {
            root.join(self.as_os_str())
        }
    }

    pub fn into_os_string(self) -> OsString {
        OsString::from_vec(self.0)
    }
}

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
        RelPath::new(bytes.into_vec()).map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// Shown relative, `.` for the root; non-UTF-8 bytes are escaped.
impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            return f.write_str(".");
        }
        write!(f, "{}", self.0.escape_ascii())
    }
}

impl std::str::FromStr for RelPath {
    type Err = RelPathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RelPath::new(s.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        for ok in ["", "a", "a/b", "a b/-c", "..a/b..", ".hidden/x"] {
            assert!(RelPath::new(ok).is_ok(), "{ok:?} should be accepted");
        }
        assert!(RelPath::new(b"caf\xe9/\n".to_vec()).is_ok());
    }

    #[test]
    fn refuses_escapes() {
        let cases: &[(&[u8], &str)] = &[
            (b"/etc/passwd", "absolute"),
            (b"a/../../x", "`..`"),
            (b"..", "`..`"),
            (b"./a", "`.`"),
            (b"a//b", "empty component"),
            (b"a/", "empty component"),
            (b"a\0b", "NUL"),
        ];
        for (bad, why) in cases {
            let err = RelPath::new(bad.to_vec()).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        assert!(matches!(
            RelPath::new(vec![b'a'; MAX_PATH_BYTES + 1]),
            Err(RelPathError::TooLong(_))
        ));
    }

    #[test]
    fn deserializing_validates() {
        let evil = postcard::to_allocvec(&serde_bytes::ByteBuf::from(b"../x".to_vec())).unwrap();
        assert!(postcard::from_bytes::<RelPath>(&evil).is_err());
        let good = postcard::to_allocvec(&RelPath::new("a/b").unwrap()).unwrap();
        assert_eq!(
            postcard::from_bytes::<RelPath>(&good).unwrap(),
            RelPath::new("a/b").unwrap()
        );
    }

    #[test]
    fn structure() {
        let p = RelPath::new("a/b/c").unwrap();
        let (parent, name) = p.split_last().unwrap();
        assert_eq!(parent, RelPath::new("a/b").unwrap());
        assert_eq!(name, "c");
        assert_eq!(RelPath::new("a").unwrap().parent(), Some(RelPath::root()));
        assert!(p.starts_with(&RelPath::new("a/b").unwrap()));
        assert!(!RelPath::new("a/bc")
            .unwrap()
            .starts_with(&RelPath::new("a/b").unwrap()));
        assert_eq!(
            p.rebase(&RelPath::new("a").unwrap(), &RelPath::new("z").unwrap()),
            Some(RelPath::new("z/b/c").unwrap())
        );
        assert_eq!(
            RelPath::root().join(OsStr::new("x")).unwrap(),
            RelPath::new("x").unwrap()
        );
        assert!(p.join(OsStr::new("..")).is_err());
        assert_eq!(
            RelPath::from_full(Path::new("/b"), Path::new("/b/x/y")).unwrap(),
            RelPath::new("x/y").unwrap()
        );
    }
}
