//! The changelog file format: encoding, the streaming writer used by the
//! hook, the verifying reader, listing and purging. See the module docs.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{Changelog, ChangelogError, JournalFile, Record, CLOSED_PREFIX, CURRENT_FILE};
use crate::relpath::RelPath;
use crate::session::Stime;

pub(crate) const MAGIC: &[u8] = b"GEOREP-CHANGELOG\n";
pub(crate) const END_MAGIC: &[u8] = b"GEOREP-CHANGELOG-END\n";
pub(crate) const VERSION: u32 = 1;
/// Longest field (path or Gap reason) in bytes.
pub(crate) const MAX_FIELD: usize = 4096;
const HEADER_LEN: usize = MAGIC.len() + 4 + 8;
/// Trailer marker, end, count, crc, end magic.
const TRAILER_LEN: usize = 1 + 8 + 8 + 4 + END_MAGIC.len();
const TRAILER_MARK: u8 = 0;

const K_CREATE: u8 = 1;
const K_MKDIR: u8 = 2;
const K_MKNOD: u8 = 3;
const K_SYMLINK: u8 = 4;
const K_LINK: u8 = 5;
const K_UNLINK: u8 = 6;
const K_RMDIR: u8 = 7;
const K_RENAME: u8 = 8;
const K_DATA: u8 = 9;
const K_META: u8 = 10;
const K_GAP: u8 = 11;
const K_GAP_SINCE: u8 = 12;

/// The name of the closed file ending at `end`.
pub(crate) fn closed_name(end: Stime) -> String {
    format!("{CLOSED_PREFIX}{:020}", end.nanos())
}

/// The end time in a closed file's name, if it is one.
fn parse_closed_name(name: &[u8]) -> Option<Option<Stime>> {
    let digits = name.strip_prefix(CLOSED_PREFIX.as_bytes())?;
    if digits.len() != 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Our name, but perhaps not a valid i64: Some(None).
    Some(
        std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .map(Stime::from_nanos),
    )
}

fn put_field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A Gap reason cut to the field limit, on a character boundary.
fn clip_reason(reason: &str) -> &str {
    if reason.len() <= MAX_FIELD {
        return reason;
    }
    let mut n = MAX_FIELD;
    while !reason.is_char_boundary(n) {
        n -= 1;
    }
    &reason[..n]
}

/// Appends the encoding of one record to `out`.
pub(crate) fn encode_record(r: &Record, out: &mut Vec<u8>) {
    let one = |out: &mut Vec<u8>, kind: u8, p: &RelPath| {
        out.push(kind);
        put_field(out, p.as_bytes());
    };
    match r {
        Record::Create(p) => one(out, K_CREATE, p),
        Record::Mkdir(p) => one(out, K_MKDIR, p),
        Record::Mknod(p) => one(out, K_MKNOD, p),
        Record::Symlink(p) => one(out, K_SYMLINK, p),
        Record::Link(p) => one(out, K_LINK, p),
        Record::Unlink(p) => one(out, K_UNLINK, p),
        Record::Rmdir(p) => one(out, K_RMDIR, p),
        Record::Data(p) => one(out, K_DATA, p),
        Record::Meta(p) => one(out, K_META, p),
        Record::Rename { from, to } => {
            out.push(K_RENAME);
            put_field(out, from.as_bytes());
            put_field(out, to.as_bytes());
        }
        Record::Gap {
            reason,
            since: None,
        } => {
            out.push(K_GAP);
            put_field(out, clip_reason(reason).as_bytes());
        }
        Record::Gap {
            reason,
            since: Some(since),
        } => {
            out.push(K_GAP_SINCE);
            put_field(out, clip_reason(reason).as_bytes());
            put_field(out, &since.nanos().to_le_bytes());
        }
    }
}

fn header(start: Stime) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&start.nanos().to_le_bytes());
    h
}

/// Trailer bytes up to (not including) the CRC.
fn trailer_head(end: Stime, count: u64) -> Vec<u8> {
    let mut t = Vec::with_capacity(17);
    t.push(TRAILER_MARK);
    t.extend_from_slice(&end.nanos().to_le_bytes());
    t.extend_from_slice(&count.to_le_bytes());
    t
}

/// The complete bytes of a closed file.
pub(crate) fn encode_file(start: Stime, end: Stime, records: &[Record]) -> Vec<u8> {
    let mut b = header(start);
    for r in records {
        encode_record(r, &mut b);
    }
    b.extend_from_slice(&trailer_head(end, records.len() as u64));
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b.extend_from_slice(END_MAGIC);
    b
}

fn fsync_dir(dir: &Path) -> Result<(), ChangelogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ChangelogError::io("fsync directory", dir, e))
}

/// Writes a closed file for `records` into `dir` durably (temp name, fsync,
/// rename, fsync of the directory). The hook streams instead; this serves
/// tests and fixtures of other modules.
pub fn write_closed(
    dir: &Path,
    start: Stime,
    end: Stime,
    records: &[Record],
) -> Result<JournalFile, ChangelogError> {
    let bytes = encode_file(start, end, records);
    let path = dir.join(closed_name(end));
    let tmp = dir.join(format!("{}.writing", closed_name(end)));
    let mut f = File::create(&tmp).map_err(|e| ChangelogError::io("create", &tmp, e))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| ChangelogError::io("write", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| ChangelogError::io("rename into place", &path, e))?;
    fsync_dir(dir)?;
    Ok(JournalFile { path, end })
}

/// The file being written by the hook: `CHANGELOG.current.tmp`, buffered,
/// with a running CRC.
pub(crate) struct OpenFile {
    dir: PathBuf,
    path: PathBuf,
    w: BufWriter<File>,
    crc: crc32fast::Hasher,
    count: u64,
    scratch: Vec<u8>,
}

impl OpenFile {
    /// Creates (truncating) the current file in `dir` and writes its header.
    pub(crate) fn create(dir: &Path, start: Stime) -> Result<OpenFile, ChangelogError> {
        let path = dir.join(CURRENT_FILE);
        let f = File::create(&path).map_err(|e| ChangelogError::io("create", &path, e))?;
        let mut me = OpenFile {
            dir: dir.to_owned(),
            path,
            w: BufWriter::with_capacity(64 * 1024, f),
            crc: crc32fast::Hasher::new(),
            count: 0,
            scratch: Vec::new(),
        };
        me.put(&header(start))?;
        Ok(me)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), ChangelogError> {
        self.crc.update(bytes);
        self.w
            .write_all(bytes)
            .map_err(|e| ChangelogError::io("write", &self.path, e))
    }

    pub(crate) fn append(&mut self, r: &Record) -> Result<(), ChangelogError> {
        let mut s = std::mem::take(&mut self.scratch);
        s.clear();
        encode_record(r, &mut s);
        let res = self.put(&s);
        self.scratch = s;
        res?;
        self.count += 1;
        Ok(())
    }

    /// Writes the trailer, fsyncs, renames to `CHANGELOG.<end>` and fsyncs
    /// the directory. Only then is the file closed.
    pub(crate) fn close(mut self, end: Stime) -> Result<JournalFile, ChangelogError> {
        let head = trailer_head(end, self.count);
        self.put(&head)?;
        let crc = self.crc.clone().finalize();
        let mut tail = crc.to_le_bytes().to_vec();
        tail.extend_from_slice(END_MAGIC);
        self.w
            .write_all(&tail)
            .map_err(|e| ChangelogError::io("write", &self.path, e))?;
        let f = self
            .w
            .into_inner()
            .map_err(|e| ChangelogError::io("write", &self.path, e.into_error()))?;
        f.sync_all()
            .map_err(|e| ChangelogError::io("fsync", &self.path, e))?;
        drop(f);
        let closed = self.dir.join(closed_name(end));
        fs::rename(&self.path, &closed)
            .map_err(|e| ChangelogError::io("rename into place", &closed, e))?;
        fsync_dir(&self.dir)?;
        Ok(JournalFile { path: closed, end })
    }
}

/// A cursor over the bytes of one file that turns every problem into
/// `Corrupt` with the offset.
struct Cursor<'a> {
    file: &'a Path,
    b: &'a [u8],
    pos: usize,
    /// Records may not extend past here (start of the trailer).
    limit: usize,
}

impl Cursor<'_> {
    fn corrupt(&self, offset: usize, reason: impl Into<String>) -> ChangelogError {
        ChangelogError::Corrupt {
            file: self.file.to_owned(),
            offset: offset as u64,
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], ChangelogError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.limit)
            .ok_or_else(|| {
                self.corrupt(
                    self.pos,
                    format!(
                        "{what} of {n} bytes runs past the records (only {} left)",
                        self.limit.saturating_sub(self.pos)
                    ),
                )
            })?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn field(&mut self, what: &str) -> Result<(usize, &[u8]), ChangelogError> {
        let at = self.pos;
        let len_bytes = self.take(4, "length field")?;
        let len = u32::from_le_bytes(len_bytes.try_into().unwrap_or([0xff; 4])) as usize;
        let left = self.limit - self.pos;
        if len > MAX_FIELD || len > left {
            return Err(self.corrupt(
                at,
                format!("absurd {what} length {len} (limit {MAX_FIELD}, {left} bytes left)"),
            ));
        }
        let bytes = self.take(len, what)?;
        Ok((at, bytes))
    }

    fn path(&mut self) -> Result<RelPath, ChangelogError> {
        let (at, bytes) = self.field("path")?;
        let bytes = bytes.to_vec();
        RelPath::new(bytes).map_err(|e| self.corrupt(at, format!("invalid path: {e}")))
    }
}

fn le_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_le_bytes(a)
}

/// Decodes and verifies the bytes of a changelog file named `file`.
pub(crate) fn decode(file: &Path, b: &[u8]) -> Result<Changelog, ChangelogError> {
    let corrupt = |offset: usize, reason: String| ChangelogError::Corrupt {
        file: file.to_owned(),
        offset: offset as u64,
        reason,
    };
    let n = b.len();
    // Magic and version first: they say whether we can read this at all.
    let magic_len = MAGIC.len().min(n);
    if b[..magic_len] != MAGIC[..magic_len] {
        return Err(corrupt(0, "wrong magic: not a georep changelog".into()));
    }
    if n >= MAGIC.len() + 4 {
        let v = u32::from_le_bytes([b[17], b[18], b[19], b[20]]);
        if v != VERSION {
            return Err(corrupt(
                MAGIC.len(),
                format!("unknown format version {v} (this georep reads {VERSION})"),
            ));
        }
    }
    if n < HEADER_LEN + TRAILER_LEN || &b[n - END_MAGIC.len()..] != END_MAGIC {
        return Err(corrupt(
            n,
            format!("truncated: {n} bytes and no trailer (file not closed?)"),
        ));
    }
    let crc_at = n - END_MAGIC.len() - 4;
    let stored = u32::from_le_bytes([b[crc_at], b[crc_at + 1], b[crc_at + 2], b[crc_at + 3]]);
    let computed = crc32fast::hash(&b[..crc_at]);
    if stored != computed {
        return Err(corrupt(
            crc_at,
            format!("CRC mismatch: stored {stored:08x}, computed {computed:08x}"),
        ));
    }
    let trailer_at = n - TRAILER_LEN;
    if b[trailer_at] != TRAILER_MARK {
        return Err(corrupt(trailer_at, "trailer marker missing".into()));
    }
    let start = Stime::from_nanos(le_i64(b, MAGIC.len() + 4));
    let end = Stime::from_nanos(le_i64(b, trailer_at + 1));
    let count = u64::from_le_bytes(
        b[trailer_at + 9..trailer_at + 17]
            .try_into()
            .unwrap_or([0xff; 8]),
    );
    if end < start {
        return Err(corrupt(
            trailer_at + 1,
            format!("end {end} is before start {start}"),
        ));
    }

    let mut c = Cursor {
        file,
        b,
        pos: HEADER_LEN,
        limit: trailer_at,
    };
    let mut records = Vec::new();
    while c.pos < c.limit {
        let at = c.pos;
        let kind = b[at];
        c.pos += 1;
        let r = match kind {
            K_CREATE => Record::Create(c.path()?),
            K_MKDIR => Record::Mkdir(c.path()?),
            K_MKNOD => Record::Mknod(c.path()?),
            K_SYMLINK => Record::Symlink(c.path()?),
            K_LINK => Record::Link(c.path()?),
            K_UNLINK => Record::Unlink(c.path()?),
            K_RMDIR => Record::Rmdir(c.path()?),
            K_DATA => Record::Data(c.path()?),
            K_META => Record::Meta(c.path()?),
            K_RENAME => {
                let from = c.path()?;
                let to = c.path()?;
                Record::Rename { from, to }
            }
            K_GAP | K_GAP_SINCE => {
                let (fat, bytes) = c.field("gap reason")?;
                let reason = std::str::from_utf8(bytes)
                    .map_err(|e| corrupt(fat, format!("gap reason is not UTF-8: {e}")))?
                    .to_owned();
                let since = if kind == K_GAP_SINCE {
                    let (sat, bytes) = c.field("gap since")?;
                    let nanos: [u8; 8] = bytes.try_into().map_err(|_| {
                        corrupt(sat, format!("gap since is {} bytes, not 8", bytes.len()))
                    })?;
                    Some(Stime::from_nanos(i64::from_le_bytes(nanos)))
                } else {
                    None
                };
                Record::Gap { reason, since }
            }
            other => return Err(corrupt(at, format!("unknown record kind {other}"))),
        };
        records.push(r);
    }
    if records.len() as u64 != count {
        return Err(corrupt(
            trailer_at + 9,
            format!(
                "trailer counts {count} records, file holds {}",
                records.len()
            ),
        ));
    }
    if let Some(name) = file.file_name() {
        use std::os::unix::ffi::OsStrExt;
        if let Some(named) = parse_closed_name(name.as_bytes()) {
            if named != Some(end) {
                return Err(corrupt(
                    trailer_at + 1,
                    format!("file name says it ends at {named:?}, trailer says {end}"),
                ));
            }
        }
    }
    Ok(Changelog {
        start,
        end,
        records,
    })
}

/// All records of one closed file, in order; plus its start and end.
pub fn read_file(path: &Path) -> Result<Changelog, ChangelogError> {
    let bytes = fs::read(path).map_err(|e| ChangelogError::io("read", path, e))?;
    decode(path, &bytes)
}

/// Closed changelog files in `dir` with end > `after`, oldest first.
/// Other files (the current one, anything foreign) are ignored.
pub fn list_closed(dir: &Path, after: Stime) -> Result<Vec<JournalFile>, ChangelogError> {
    use std::os::unix::ffi::OsStrExt;
    let rd = fs::read_dir(dir).map_err(|e| ChangelogError::io("list", dir, e))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| ChangelogError::io("list", dir, e))?;
        let name = entry.file_name();
        match parse_closed_name(name.as_bytes()) {
            None => continue,
            Some(None) => {
                return Err(ChangelogError::Corrupt {
                    file: entry.path(),
                    offset: 0,
                    reason: "file name is not a valid end time".into(),
                })
            }
            Some(Some(end)) if end > after => out.push(JournalFile {
                path: entry.path(),
                end,
            }),
            Some(Some(_)) => {}
        }
    }
    out.sort_by_key(|f| f.end);
    Ok(out)
}

/// Deletes closed files with end <= `through` (stime has passed them);
/// returns how many were deleted.
pub fn purge(dir: &Path, through: Stime) -> Result<usize, ChangelogError> {
    let mut n = 0;
    for f in list_closed(dir, Stime::from_nanos(i64::MIN))? {
        if f.end > through {
            break;
        }
        match fs::remove_file(&f.path) {
            Ok(()) => n += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ChangelogError::io("delete", &f.path, e)),
        }
    }
    if n > 0 {
        fsync_dir(dir)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn p(b: &[u8]) -> RelPath {
        RelPath::new(b.to_vec()).unwrap()
    }

    fn nasty_records() -> Vec<Record> {
        let long = vec![b'x'; 255];
        let mut deep = b"d/".to_vec();
        deep.extend_from_slice(&long);
        vec![
            Record::Mkdir(p(b"d")),
            Record::Create(p(b"caf\xe9\xff")),
            Record::Data(p(b"line\nbreak")),
            Record::Meta(RelPath::root()),
            Record::Symlink(p(b"d/ln")),
            Record::Mknod(p(b"fifo")),
            Record::Link(p(b"hard")),
            Record::Rename {
                from: p(b"caf\xe9\xff"),
                to: p(&deep),
            },
            Record::Unlink(p(b"hard")),
            Record::Rmdir(p(b"d")),
            Record::gap("inotify queue overflowed: ünïcode"),
            Record::Gap {
                reason: "directories are not watched".into(),
                since: Some(Stime::from_nanos(1_700_000_000_123_456_789)),
            },
        ]
    }

    fn corrupt_at(r: Result<Changelog, ChangelogError>) -> (u64, String) {
        match r {
            Err(ChangelogError::Corrupt { offset, reason, .. }) => (offset, reason),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    /// Recomputes the CRC after tampering, so deeper checks are reached.
    fn reseal(b: &mut [u8]) {
        let crc_at = b.len() - END_MAGIC.len() - 4;
        let crc = crc32fast::hash(&b[..crc_at]);
        b[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn round_trip_nasty_names() {
        let dir = tempfile::tempdir().unwrap();
        let recs = nasty_records();
        let f = write_closed(
            dir.path(),
            Stime::from_nanos(5),
            Stime::from_nanos(1_700_000_000_123_456_789),
            &recs,
        )
        .unwrap();
        assert_eq!(
            f.path.file_name().unwrap(),
            "CHANGELOG.01700000000123456789"
        );
        let c = read_file(&f.path).unwrap();
        assert_eq!(c.start, Stime::from_nanos(5));
        assert_eq!(c.end, Stime::from_nanos(1_700_000_000_123_456_789));
        assert_eq!(c.records, recs);
    }

    #[test]
    fn streaming_writer_matches_encoder() {
        let dir = tempfile::tempdir().unwrap();
        let recs = nasty_records();
        let mut w = OpenFile::create(dir.path(), Stime::from_nanos(10)).unwrap();
        for r in &recs {
            w.append(r).unwrap();
        }
        let f = w.close(Stime::from_nanos(20)).unwrap();
        assert!(!dir.path().join(CURRENT_FILE).exists());
        assert_eq!(
            fs::read(&f.path).unwrap(),
            encode_file(Stime::from_nanos(10), Stime::from_nanos(20), &recs)
        );
    }

    #[test]
    fn each_corruption_is_named_with_its_offset() {
        let f = Path::new("CHANGELOG.x");
        let good = encode_file(
            Stime::from_nanos(1),
            Stime::from_nanos(2),
            &[Record::Data(p(b"a")), Record::Data(p(b"bb"))],
        );
        let n = good.len();
        let first_field = HEADER_LEN + 1; // length of the first record's path

        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(corrupt_at(decode(f, &b)).0, 0);

        let mut b = good.clone();
        b[17] = 2;
        let (off, why) = corrupt_at(decode(f, &b));
        assert_eq!((off, why.contains("version 2")), (17, true), "{why}");

        let (off, why) = corrupt_at(decode(f, &good[..n - 1]));
        assert_eq!(off, (n - 1) as u64);
        assert!(why.contains("truncated"), "{why}");
        let (off, _) = corrupt_at(decode(f, &good[..HEADER_LEN + 3]));
        assert_eq!(off, (HEADER_LEN + 3) as u64);

        let mut b = good.clone();
        b[HEADER_LEN + 5] ^= 1; // the path byte
        let (off, why) = corrupt_at(decode(f, &b));
        assert_eq!(off, (n - END_MAGIC.len() - 4) as u64);
        assert!(why.contains("CRC"), "{why}");

        let mut b = good.clone();
        b[first_field..first_field + 4].copy_from_slice(&100_000u32.to_le_bytes());
        reseal(&mut b);
        let (off, why) = corrupt_at(decode(f, &b));
        assert_eq!(off, first_field as u64);
        assert!(why.contains("absurd"), "{why}");

        // A length within the 4096 limit but longer than what is left.
        let mut b = good.clone();
        b[first_field..first_field + 4].copy_from_slice(&60u32.to_le_bytes());
        reseal(&mut b);
        assert_eq!(corrupt_at(decode(f, &b)).0, first_field as u64);

        // Invalid RelPaths, CRC-valid files: `..`, absolute, NUL.
        for bad in [&b".."[..], b"/a", b"\0b"] {
            let mut b = encode_file(
                Stime::from_nanos(1),
                Stime::from_nanos(2),
                &[Record::Data(p(b"ok"))],
            );
            let pos = first_field + 4;
            b.splice(pos..pos + 2, bad.iter().copied());
            b[first_field..first_field + 4].copy_from_slice(&(bad.len() as u32).to_le_bytes());
            reseal(&mut b);
            let (off, why) = corrupt_at(decode(f, &b));
            assert_eq!(off, first_field as u64, "{why}");
            assert!(why.contains("invalid path"), "{why}");
        }

        let mut b = good.clone();
        b[HEADER_LEN] = 99;
        reseal(&mut b);
        let (off, why) = corrupt_at(decode(f, &b));
        assert_eq!((off, why.contains("kind 99")), (HEADER_LEN as u64, true));

        let mut b = good.clone();
        let count_at = n - TRAILER_LEN + 9;
        b[count_at] = 3;
        reseal(&mut b);
        assert_eq!(corrupt_at(decode(f, &b)).0, count_at as u64);
    }

    #[test]
    fn name_must_match_trailer() {
        let dir = tempfile::tempdir().unwrap();
        let f = write_closed(
            dir.path(),
            Stime::from_nanos(1),
            Stime::from_nanos(2),
            &[Record::Data(p(b"a"))],
        )
        .unwrap();
        let other = dir.path().join(closed_name(Stime::from_nanos(3)));
        fs::rename(&f.path, &other).unwrap();
        let (_, why) = corrupt_at(read_file(&other));
        assert!(why.contains("file name"), "{why}");
    }

    #[test]
    fn random_damage_never_panics() {
        let good = encode_file(Stime::from_nanos(1), Stime::from_nanos(2), &nasty_records());
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x6e0_4e9);
        let f = Path::new("fuzz");
        for round in 0..20_000 {
            let mut b = good.clone();
            match round % 4 {
                0 => {
                    let i = rng.gen_range(0..b.len());
                    b[i] ^= 1 << rng.gen_range(0..8);
                }
                1 => b.truncate(rng.gen_range(0..b.len())),
                2 => {
                    for _ in 0..rng.gen_range(1..8) {
                        let i = rng.gen_range(0..b.len());
                        b[i] = rng.gen();
                    }
                    // Reseal half of the time so the record parser is hit.
                    if rng.gen_bool(0.5) && b.len() > TRAILER_LEN {
                        reseal(&mut b);
                    }
                }
                _ => {
                    let i = rng.gen_range(HEADER_LEN..b.len() - TRAILER_LEN);
                    b[i] = rng.gen();
                    reseal(&mut b);
                }
            }
            match decode(f, &b) {
                Ok(_) | Err(ChangelogError::Corrupt { .. }) => {}
                Err(e) => panic!("unexpected error kind: {e}"),
            }
        }
    }

    #[test]
    fn list_and_purge() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for end in [30, 10, 20] {
            write_closed(
                d,
                Stime::from_nanos(end - 5),
                Stime::from_nanos(end),
                &[Record::Data(p(b"a"))],
            )
            .unwrap();
        }
        fs::write(d.join(CURRENT_FILE), b"partial").unwrap();
        fs::write(d.join("README"), b"x").unwrap();
        let ends = |after| -> Vec<i64> {
            list_closed(d, Stime::from_nanos(after))
                .unwrap()
                .iter()
                .map(|f| f.end.nanos())
                .collect()
        };
        assert_eq!(ends(0), vec![10, 20, 30]);
        assert_eq!(ends(10), vec![20, 30]);
        assert_eq!(ends(30), Vec::<i64>::new());
        assert_eq!(purge(d, Stime::from_nanos(20)).unwrap(), 2);
        assert_eq!(ends(0), vec![30]);
        assert_eq!(purge(d, Stime::from_nanos(20)).unwrap(), 0);
        assert!(d.join(CURRENT_FILE).exists());
    }
}
