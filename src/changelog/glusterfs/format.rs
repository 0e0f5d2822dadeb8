//! Parsing one GlusterFS changelog file (encoding 2, ASCII); the layout is
//! documented in the module docs.

use std::path::Path;

use super::gfid::{Gfid, Location, TEXT_LEN};
use crate::changelog::ChangelogError;

/// The first line of every file this reader accepts.
pub const HEADER: &[u8] = b"GlusterFS Changelog | version: v1.2 | encoding : 2\n";

/// GlusterFS's fop numbers (`glusterfs_fop_t`) found in E records.
const FOP_MKNOD: u32 = 3;
const FOP_MKDIR: u32 = 4;
const FOP_UNLINK: u32 = 5;
const FOP_RMDIR: u32 = 6;
const FOP_SYMLINK: u32 = 7;
const FOP_RENAME: u32 = 8;
const FOP_LINK: u32 = 9;
const FOP_CREATE: u32 = 23;

/// What an E record did to its entry.
///
/// Apart from georep's own `Record` because it is GlusterFS's format, read
/// as GlusterFS writes it: its entry is a gfid at a parent gfid and name
/// (a rename's source), and it keeps what GlusterFS gives (the mode of a
/// create or mknod, which tells a regular file from a special one). Only
/// once the gfids are resolved to paths (`resolve`) does it become a
/// `Record`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GEntryOp {
    Create {
        mode: u32,
    },
    Mkdir,
    Mknod {
        mode: u32,
    },
    Symlink,
    Link,
    Unlink,
    Rmdir,
    /// `at` (the record's location) is the source.
    Rename {
        to: Location,
    },
}

/// One record, as GlusterFS wrote it: keyed by gfid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GRecord {
    Entry {
        gfid: Gfid,
        op: GEntryOp,
        at: Location,
    },
    Data(Gfid),
    Meta(Gfid),
}

/// Parses the bytes of one changelog file. `file` only names it in errors.
pub fn parse(file: &Path, bytes: &[u8]) -> Result<Vec<GRecord>, ChangelogError> {
    let Some(body) = bytes.strip_prefix(HEADER) else {
        let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
        return Err(corrupt(
            file,
            0,
            format!(
                "not a GlusterFS v1.2 ASCII changelog (header {:?})",
                lossy(line)
            ),
        ));
    };
    let mut fields = Fields {
        file,
        bytes: body,
        pos: 0,
        base: HEADER.len(),
    };
    let mut out = Vec::new();
    while let Some((at, start)) = fields.next()? {
        if start.is_empty() {
            // UNLINK and RMDIR records end with empty fields.
            continue;
        }
        let (kind, gfid) = record_start(start).ok_or_else(|| {
            corrupt(
                file,
                at,
                format!("expected a record, found {:?}", lossy(start)),
            )
        })?;
        let record = match kind {
            b'D' => GRecord::Data(gfid),
            b'M' => {
                fields.number("fop")?;
                GRecord::Meta(gfid)
            }
            _ => {
                let op = match fields.number("fop")? {
                    FOP_CREATE => Some(GEntryOp::Create {
                        mode: fields.mode()?,
                    }),
                    FOP_MKDIR => {
                        fields.mode()?;
                        Some(GEntryOp::Mkdir)
                    }
                    FOP_MKNOD => Some(GEntryOp::Mknod {
                        mode: fields.mode()?,
                    }),
                    FOP_SYMLINK => Some(GEntryOp::Symlink),
                    FOP_LINK => Some(GEntryOp::Link),
                    FOP_UNLINK => Some(GEntryOp::Unlink),
                    FOP_RMDIR => Some(GEntryOp::Rmdir),
                    FOP_RENAME => None,
                    other => return Err(corrupt(file, at, format!("unknown entry fop {other}"))),
                };
                let at = fields.location("entry")?;
                let op = match op {
                    Some(op) => op,
                    None => GEntryOp::Rename {
                        to: fields.location("rename target")?,
                    },
                };
                GRecord::Entry { gfid, op, at }
            }
        };
        out.push(record);
    }
    Ok(out)
}

fn corrupt(file: &Path, offset: usize, reason: String) -> ChangelogError {
    ChangelogError::Corrupt {
        file: file.to_owned(),
        offset: offset as u64,
        reason,
    }
}

/// NUL-terminated fields with their offsets in the file.
struct Fields<'a> {
    file: &'a Path,
    bytes: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Fields<'a> {
    /// The next field with its offset; `None` at the end of the file.
    fn next(&mut self) -> Result<Option<(usize, &'a [u8])>, ChangelogError> {
        if self.pos >= self.bytes.len() {
            return Ok(None);
        }
        let rest = &self.bytes[self.pos..];
        let at = self.base + self.pos;
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| corrupt(self.file, at, "record cut short".into()))?;
        self.pos += len + 1;
        Ok(Some((at, &rest[..len])))
    }

    /// The next field, which `what` must be.
    fn take(&mut self, what: &str) -> Result<(usize, &'a [u8]), ChangelogError> {
        let end = self.base + self.pos;
        self.next()?.ok_or_else(|| {
            corrupt(
                self.file,
                end,
                format!("record cut short before its {what}"),
            )
        })
    }

    fn number(&mut self, what: &str) -> Result<u32, ChangelogError> {
        let (at, field) = self.take(what)?;
        std::str::from_utf8(field)
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                corrupt(
                    self.file,
                    at,
                    format!("expected a {what}, found {:?}", lossy(field)),
                )
            })
    }

    /// Mode, uid and gid of a new entry; only the mode matters (the brick
    /// has the owner too).
    fn mode(&mut self) -> Result<u32, ChangelogError> {
        let mode = self.number("mode")?;
        self.number("uid")?;
        self.number("gid")?;
        Ok(mode)
    }

    fn location(&mut self, what: &str) -> Result<Location, ChangelogError> {
        let (at, field) = self.take(what)?;
        Location::parse(field)
            .ok_or_else(|| corrupt(self.file, at, format!("bad {what} {:?}", lossy(field))))
    }
}

/// `E`, `D` or `M` directly followed by a gfid.
fn record_start(field: &[u8]) -> Option<(u8, Gfid)> {
    let (&kind, gfid) = field.split_first()?;
    if !matches!(kind, b'E' | b'D' | b'M') || gfid.len() != TEXT_LEN {
        return None;
    }
    Some((kind, Gfid::parse(gfid)?))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(80)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = include_bytes!("../../../tests/golden/glusterfs/CHANGELOG.1795797073");

    fn g(s: &str) -> Gfid {
        Gfid::parse(s.as_bytes()).unwrap()
    }

    /// A changelog written by a real GlusterFS 10.3 brick for: mkdir d1,
    /// write d1/f1 and f2, mv f2 d1/f2r, ln d1/f1 d1/hl, ln -s ../f2 d1/sl,
    /// chmod, chown, truncate, mkdir -p d2/sub, rmdir d2/sub, rm d1/hl,
    /// touch 'ñame é', mkfifo fifo, mv d1 d3.
    #[test]
    fn a_real_changelog_parses_into_its_operations() {
        let recs = parse(Path::new("sample"), SAMPLE).unwrap();
        let d1 = g("37cb0cef-ea72-410e-a4e0-b075f8a6c824");
        let f1 = g("f789d853-61ce-4299-8312-6b77587acbc7");
        let loc = |p: Gfid, n: &str| Location {
            parent: p,
            name: n.as_bytes().to_vec(),
        };
        let root = super::super::gfid::ROOT;
        assert_eq!(
            recs[0],
            GRecord::Entry {
                gfid: d1,
                op: GEntryOp::Mkdir,
                at: loc(root, "d1")
            }
        );
        assert_eq!(
            recs[1],
            GRecord::Entry {
                gfid: f1,
                op: GEntryOp::Create { mode: 0o100644 },
                at: loc(d1, "f1")
            }
        );
        assert_eq!(recs[2], GRecord::Data(f1));
        let kinds: Vec<String> = recs
            .iter()
            .map(|r| match r {
                GRecord::Entry { op, at, .. } => format!(
                    "{} {}",
                    format!("{op:?}").split([' ', '{']).next().unwrap(),
                    String::from_utf8_lossy(&at.name)
                ),
                GRecord::Data(_) => "D".into(),
                GRecord::Meta(_) => "M".into(),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "Mkdir d1",
                "Create f1",
                "D",
                "Create f2",
                "D",
                "Rename f2",
                "Link hl",
                "Symlink sl",
                "M",
                "M",
                "Mkdir d2",
                "Mkdir sub",
                "Rmdir sub",
                "Unlink hl",
                "Create ñame é",
                "M",
                "Mknod fifo",
                "Rename d1"
            ]
        );
        assert_eq!(
            recs.last(),
            Some(&GRecord::Entry {
                gfid: d1,
                op: GEntryOp::Rename {
                    to: loc(root, "d3")
                },
                at: loc(root, "d1")
            })
        );
    }

    #[test]
    fn damage_is_reported_with_its_offset_never_misread() {
        assert!(parse(Path::new("x"), b"garbage\n").is_err());
        assert_eq!(parse(Path::new("x"), HEADER).unwrap(), vec![]);
        // Every truncation of the real file either parses to a prefix of
        // its records or fails; none panics.
        let full = parse(Path::new("x"), SAMPLE).unwrap();
        for cut in 0..SAMPLE.len() {
            if let Ok(recs) = parse(Path::new("x"), &SAMPLE[..cut]) {
                assert!(recs.len() <= full.len());
            }
        }
        let mut bad = SAMPLE.to_vec();
        let pos = HEADER.len() + 38; // the fop of the first record
        bad[pos] = b'x';
        match parse(Path::new("x"), &bad) {
            Err(ChangelogError::Corrupt { offset, .. }) => assert_eq!(offset as usize, pos),
            other => panic!("{other:?}"),
        }
    }
}
