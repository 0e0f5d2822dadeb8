//! The HTIME index: which changelog files a brick closed, in order.

use std::io::{Read, Seek, SeekFrom};
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
    /// Two non-empty intervals of this second were both renamed to
    /// `CHANGELOG.<ts>`: the second replaced the first, whose records are
    /// lost.
    pub clobbered: bool,
}

/// Reads a brick's newest HTIME file incrementally: each refresh parses
/// only what was appended since the last one, and entries stime has passed
/// are forgotten, so polling stays cheap however long the index grows.
#[derive(Debug)]
pub struct IndexReader {
    changelogs: PathBuf,
    /// `HTIME.<started>` being followed.
    current: Option<(PathBuf, i64)>,
    /// Bytes of it parsed so far (up to the last complete entry).
    consumed: u64,
    /// Strictly increasing `ts`; an empty and a non-empty interval that
    /// share a second are one entry, with the file.
    entries: Vec<IndexEntry>,
}

impl IndexReader {
    pub fn new(changelogs: PathBuf) -> Self {
        IndexReader {
            changelogs,
            current: None,
            consumed: 0,
            entries: Vec::new(),
        }
    }

    /// Catches up with the newest HTIME file (`HTIME.<ts>` with the largest
    /// `ts`: a new one starts whenever the changelog is turned on again) and
    /// returns when it began and its entries not yet forgotten; `None` if
    /// the changelog was never enabled on this brick.
    pub fn refresh(&mut self) -> Result<Option<(i64, &[IndexEntry])>, ChangelogError> {
        let dir = self.changelogs.join("htime");
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
        if self.current.as_ref().is_none_or(|(p, _)| *p != path) {
            self.current = Some((path.clone(), started));
            self.consumed = 0;
            self.entries.clear();
        }
        let mut file =
            std::fs::File::open(&path).map_err(|e| ChangelogError::io("open", &path, e))?;
        let mut tail = Vec::new();
        file.seek(SeekFrom::Start(self.consumed))
            .and_then(|_| file.read_to_end(&mut tail))
            .map_err(|e| ChangelogError::io("read", &path, e))?;
        self.consumed += parse(&self.changelogs, &tail, &mut self.entries) as u64;
        Ok(Some((started, &self.entries)))
    }

    /// Drops the entries up to `ts`, keeping the last one (a later entry of
    /// the same second merges into it).
    pub fn forget_through(&mut self, ts: i64) {
        let keep_from = self
            .entries
            .iter()
            .position(|e| e.ts > ts)
            .unwrap_or(self.entries.len())
            .min(self.entries.len().saturating_sub(1));
        self.entries.drain(..keep_from);
    }
}

/// The index lists absolute paths of closed files, each followed by a NUL;
/// an unterminated tail is an entry still being written and is left for
/// the next read. Paths are taken relative to `changelogs` (the last four
/// components, `YYYY/MM/DD/CHANGELOG.<ts>`), so a brick that moved still
/// reads its own files. Appends to `out`; returns the bytes consumed.
pub fn parse(changelogs: &Path, bytes: &[u8], out: &mut Vec<IndexEntry>) -> usize {
    let Some(end) = bytes.iter().rposition(|&b| b == 0) else {
        return 0;
    };
    for path in bytes[..end].split(|&b| b == 0) {
        if let Some(entry) = entry(changelogs, path) {
            push(out, entry);
        }
    }
    end + 1
}

fn entry(changelogs: &Path, path: &[u8]) -> Option<IndexEntry> {
    let text = std::str::from_utf8(path).ok()?;
    let parts: Vec<&str> = text.rsplitn(5, '/').collect();
    let (name, date) = match parts.as_slice() {
        [name, d, m, y, ..] => (*name, [*y, *m, *d]),
        _ => return None,
    };
    if date.iter().any(|c| c.is_empty() || c.contains("..")) {
        return None;
    }
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
    } else {
        (None, name.strip_prefix("changelog.")?)
    };
    Some(IndexEntry {
        ts: digits.parse().ok()?,
        file,
        clobbered: false,
    })
}

/// Two rollovers within one second share a name; the first is often an
/// empty one.
fn push(out: &mut Vec<IndexEntry>, entry: IndexEntry) {
    match out.last_mut() {
        Some(last) if last.ts == entry.ts => {
            if last.file.is_none() {
                last.file = entry.file;
            } else if entry.file.is_some() {
                last.clobbered = true;
            }
        }
        Some(last) if last.ts > entry.ts => {}
        _ => out.push(entry),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = include_bytes!("../../../tests/golden/glusterfs/HTIME.1795797069");

    #[test]
    fn a_real_index_lists_closed_files_in_order() {
        let dir = Path::new("/moved/.glusterfs/changelogs");
        let mut entries = Vec::new();
        assert_eq!(parse(dir, SAMPLE, &mut entries), SAMPLE.len());
        let ts: Vec<i64> = entries.iter().map(|e| e.ts).collect();
        // The first entry is listed twice by GlusterFS; it is read once.
        assert_eq!(ts[..8], (1795797069..=1795797076).collect::<Vec<_>>());
        assert!(ts.windows(2).all(|w| w[0] < w[1]));
        let files: Vec<&IndexEntry> = entries.iter().filter(|e| e.file.is_some()).collect();
        assert!(files.len() >= 2);
        // An empty interval then a non-empty one in the same second.
        let mut same = Vec::new();
        parse(
            dir,
            b"/b/.glusterfs/changelogs/2026/01/02/changelog.10\0/b/.glusterfs/changelogs/2026/01/02/CHANGELOG.10\0",
            &mut same,
        );
        assert_eq!(
            same,
            vec![IndexEntry {
                ts: 10,
                file: Some(dir.join("2026/01/02/CHANGELOG.10")),
                clobbered: false,
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
        let mut got = Vec::new();
        let bytes: &[u8] = b"/b/.glusterfs/changelogs/2026/01/02/CHANGELOG.10\0junk\0/x/../CHANGELOG.11\0/b/.glusterfs/changelogs/2026/01/02/CHANGELOG.12";
        let consumed = parse(dir, bytes, &mut got);
        assert_eq!(
            &bytes[consumed..],
            b"/b/.glusterfs/changelogs/2026/01/02/CHANGELOG.12"
        );
        assert_eq!(
            got,
            vec![IndexEntry {
                ts: 10,
                file: Some(dir.join("2026/01/02/CHANGELOG.10")),
                clobbered: false,
            }]
        );
    }

    #[test]
    fn the_reader_follows_appends_and_forgets_what_stime_passed() {
        let tmp = tempfile::tempdir().unwrap();
        let cl = tmp.path().join("changelogs");
        std::fs::create_dir_all(cl.join("htime")).unwrap();
        let mut r = IndexReader::new(cl.clone());
        assert_eq!(r.refresh().unwrap(), None);
        let htime = cl.join("htime/HTIME.5");
        let line = |ts: i64, upper: bool| {
            format!(
                "/b/.glusterfs/changelogs/2026/01/02/{}.{ts}\0",
                if upper { "CHANGELOG" } else { "changelog" }
            )
        };
        std::fs::write(&htime, line(6, false) + &line(7, true) + "/b/.glust").unwrap();
        let (started, got) = r.refresh().unwrap().unwrap();
        assert_eq!(started, 5);
        assert_eq!(got.iter().map(|e| e.ts).collect::<Vec<_>>(), [6, 7]);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&htime)
            .unwrap();
        use std::io::Write;
        write!(f, "{}", &line(8, false)["/b/.glust".len()..]).unwrap();
        write!(f, "{}", line(8, true)).unwrap();
        let (_, got) = r.refresh().unwrap().unwrap();
        assert_eq!(got.iter().map(|e| e.ts).collect::<Vec<_>>(), [6, 7, 8]);
        assert!(got[2].file.is_some(), "{got:?}");
        assert!(!got[2].clobbered);
        // A second non-empty interval of second 8: the first was replaced.
        write!(f, "{}", line(8, true)).unwrap();
        let (_, got) = r.refresh().unwrap().unwrap();
        assert!(got[2].clobbered, "{got:?}");
        r.forget_through(7);
        let (_, got) = r.refresh().unwrap().unwrap();
        assert_eq!(got.iter().map(|e| e.ts).collect::<Vec<_>>(), [8]);
        r.forget_through(9);
        assert_eq!(r.refresh().unwrap().unwrap().1.len(), 1);
        // The changelog turned off and on: a new HTIME file is followed.
        std::fs::write(cl.join("htime/HTIME.20"), line(21, true)).unwrap();
        let (started, got) = r.refresh().unwrap().unwrap();
        assert_eq!((started, got.len(), got[0].ts), (20, 1, 21));
    }
}
