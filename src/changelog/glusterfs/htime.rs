//! The HTIME index: which changelog files a brick closed, in order.

use std::path::{Path, PathBuf};

use crate::changelog::ChangelogError;

/// One closed changelog interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// Seconds since the epoch at the rollover that closed it.
    pub ts: i64,
    /// The file, or `None` for an interval without changes (GlusterFS
    /// names those `changelog.<ts>` in lower case and keeps no file).
    pub file: Option<PathBuf>,
}

/// The newest HTIME file of a brick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    /// When the changelog was (re)enabled: `HTIME.<ts>`. Changes before it
    /// are in no file of this index.
    pub started: i64,
    /// Strictly increasing `ts`; an empty and a non-empty interval that
    /// share a second are one entry, with the file.
    pub entries: Vec<IndexEntry>,
}

/// Reads `<changelogs>/htime/HTIME.<ts>` with the largest `ts`; `None` if
/// there is none (the changelog was never enabled on this brick).
pub fn read(changelogs: &Path) -> Result<Option<Index>, ChangelogError> {
    let dir = changelogs.join("htime");
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ChangelogError::io("list", dir, e)),
    };
    let newest = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let ts = name.to_str()?.strip_prefix("HTIME.")?.parse::<i64>().ok()?;
            Some((ts, e.path()))
        })
        .max();
    let Some((started, path)) = newest else {
        return Ok(None);
    };
    let bytes = std::fs::read(&path).map_err(|e| ChangelogError::io("read", &path, e))?;
    Ok(Some(Index {
        started,
        entries: parse(changelogs, &bytes),
    }))
}

/// The index lists absolute paths of closed files, each followed by a NUL;
/// an unterminated tail is an entry still being written and is left for
/// the next read. Paths are taken relative to `changelogs` (the last four
/// components, `YYYY/MM/DD/CHANGELOG.<ts>`), so a brick that moved still
/// reads its own files.
pub fn parse(changelogs: &Path, bytes: &[u8]) -> Vec<IndexEntry> {
    let mut out: Vec<IndexEntry> = Vec::new();
    let complete = match bytes.iter().rposition(|&b| b == 0) {
        Some(end) => &bytes[..end],
        None => return out,
    };
    for path in complete.split(|&b| b == 0) {
        let Ok(text) = std::str::from_utf8(path) else {
            continue;
        };
        let parts: Vec<&str> = text.rsplitn(5, '/').collect();
        let (name, date) = match parts.as_slice() {
            [name, d, m, y, ..] => (*name, [*y, *m, *d]),
            _ => continue,
        };
        let (file, digits) = if let Some(d) = name.strip_prefix("CHANGELOG.") {
            (
                Some(
                    changelogs
                        .join(date[0])
                        .join(date[1])
                        .join(date[2])
                        .join(name),
                ),
                d,
            )
        } else if let Some(d) = name.strip_prefix("changelog.") {
            (None, d)
        } else {
            continue;
        };
        let Ok(ts) = digits.parse::<i64>() else {
            continue;
        };
        if date.iter().any(|c| c.is_empty() || c.contains("..")) {
            continue;
        }
        match out.last_mut() {
            // Two rollovers within one second share a name; the first is
            // often an empty one.
            Some(last) if last.ts == ts => {
                if last.file.is_none() {
                    last.file = file;
                }
            }
            Some(last) if last.ts > ts => {}
            _ => out.push(IndexEntry { ts, file }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = include_bytes!("../../../tests/golden/glusterfs/HTIME.1795797069");

    #[test]
    fn a_real_index_lists_closed_files_in_order() {
        let dir = Path::new("/moved/.glusterfs/changelogs");
        let entries = parse(dir, SAMPLE);
        let ts: Vec<i64> = entries.iter().map(|e| e.ts).collect();
        // The first entry is listed twice by GlusterFS; it is read once.
        assert_eq!(ts[..8], (1795797069..=1795797076).collect::<Vec<_>>());
        assert!(ts.windows(2).all(|w| w[0] < w[1]));
        let files: Vec<&IndexEntry> = entries.iter().filter(|e| e.file.is_some()).collect();
        assert!(files.len() >= 2);
        // An empty interval then a non-empty one in the same second.
        let same = parse(
            dir,
            b"/b/.glusterfs/changelogs/2026/01/02/changelog.10\0/b/.glusterfs/changelogs/2026/01/02/CHANGELOG.10\0",
        );
        assert_eq!(
            same,
            vec![IndexEntry {
                ts: 10,
                file: Some(dir.join("2026/01/02/CHANGELOG.10"))
            }]
        );
        assert_eq!(
            files[1].file.as_deref(),
            Some(dir.join("2026/11/27/CHANGELOG.1795797073").as_path())
        );
    }

    #[test]
    fn an_unterminated_tail_and_junk_are_left_out() {
        let dir = Path::new("/c");
        let got = parse(
            dir,
            b"/b/.glusterfs/changelogs/2026/01/02/CHANGELOG.10\0junk\0/x/../CHANGELOG.11\0/b/.glusterfs/changelogs/2026/01/02/CHANGELOG.12",
        );
        assert_eq!(
            got,
            vec![IndexEntry {
                ts: 10,
                file: Some(dir.join("2026/01/02/CHANGELOG.10"))
            }]
        );
    }
}
