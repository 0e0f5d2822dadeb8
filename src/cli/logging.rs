//! Where log lines go. Commands log to stderr; a session's monitor logs to
//! its own file, `GEOREP_HOME/logs/<vol>--<slavehost>--<id>.log`, rotated by
//! size ([`RotatingFile`]), as human-readable lines or JSON objects
//! (`log-format`). The verbosity (`log-level`) can be changed while the
//! monitor runs ([`LogHandle::set_level`], used on SIGHUP).
//!
//! Each brick's worker runs inside a `worker` span carrying `brick` and
//! `slave`, so every line it logs (a failure naming a path included) names
//! both without each call site repeating them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// A log file that is renamed to `<name>.1` (older ones shifting to `.2`,
/// …, the oldest beyond `keep` removed) before a write would take it past
/// `max_bytes`. A write is never split, so a line always lands whole in one
/// file; a single write larger than `max_bytes` gets a file to itself.
///
/// Written here rather than taken from a crate: `tracing-appender` rotates
/// by time only, and `file-rotate` 0.8 panics (`expect`) when the log's
/// directory cannot be created, lets a file pass its limit by a whole write
/// (`BytesSurpassed`) or splits lines (`Bytes`), and brings chrono and
/// flate2 for features georep does not use.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: File,
    size: u64,
}

impl RotatingFile {
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_owned(),
            max_bytes: max_bytes.max(1),
            keep: keep.max(1),
            file,
            size,
        })
    }

    /// `<path>.<n>`: the n-th most recent rotated file.
    pub fn rotated(path: &Path, n: u32) -> PathBuf {
        let mut s = path.as_os_str().to_owned();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let _ = fs::remove_file(Self::rotated(&self.path, self.keep));
        for n in (1..self.keep).rev() {
            let from = Self::rotated(&self.path, n);
            if from.exists() {
                fs::rename(&from, Self::rotated(&self.path, n + 1))?;
            }
        }
        fs::rename(&self.path, Self::rotated(&self.path, 1))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.size > 0 && self.size + buf.len() as u64 > self.max_bytes {
            // A log that cannot rotate keeps growing rather than losing lines.
            if let Err(e) = self.rotate() {
                eprintln!("geo-rep: rotating {}: {e}", self.path.display());
            }
        }
        self.file.write_all(buf)?;
        self.size += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// A [`RotatingFile`] shared by the logging threads.
#[derive(Debug, Clone)]
pub struct SharedLog(Arc<Mutex<RotatingFile>>);

/// One event's access to the file.
pub struct SharedLogGuard<'a>(MutexGuard<'a, RotatingFile>);

impl Write for SharedLogGuard<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<'a> MakeWriter<'a> for SharedLog {
    type Writer = SharedLogGuard<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        SharedLogGuard(self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// stderr that first clears a progress bar drawn there (and redraws it
/// after the line), so log lines and the bar do not garble each other.
#[derive(Clone)]
pub struct Stderr(pub Option<indicatif::MultiProgress>);

pub struct StderrWriter(Option<indicatif::MultiProgress>);

impl Write for StderrWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.0 {
            Some(bars) => bars.suspend(|| io::stderr().write_all(buf))?,
            None => io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = StderrWriter;
    fn make_writer(&'a self) -> Self::Writer {
        StderrWriter(self.0.clone())
    }
}

/// Changes the verbosity of the installed logger.
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
}

impl LogHandle {
    pub fn set_level(&self, level: &str) -> anyhow::Result<()> {
        let filter = EnvFilter::try_new(level).with_context(|| format!("log level {level:?}"))?;
        self.filter
            .reload(filter)
            .context("changing the log level")?;
        Ok(())
    }
}

/// How a monitor logs.
pub struct SessionLog<'a> {
    pub file: &'a Path,
    pub max_bytes: u64,
    pub keep: u32,
    pub json: bool,
    pub level: &'a str,
    /// Also write lines to stderr (a foreground monitor).
    pub stderr: Option<Stderr>,
}

/// The filter for `level`; `GEOREP_LOG`, if set, wins (for debugging).
fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_env("GEOREP_LOG")
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the logger of a monitor: the session's rotating file, and
/// stderr too if asked.
pub fn init_session(log: SessionLog<'_>) -> anyhow::Result<LogHandle> {
    let file = RotatingFile::open(log.file, log.max_bytes, log.keep)
        .with_context(|| format!("opening log {}", log.file.display()))?;
    let file = SharedLog(Arc::new(Mutex::new(file)));
    let (filter, handle) = reload::Layer::new(filter(log.level));
    let ansi = log.stderr.is_some() && io::IsTerminal::is_terminal(&io::stderr());
    let human = (!log.json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(file.clone())
    });
    let json = log.json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(file.clone())
    });
    let stderr = log.stderr.map(|w| {
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(w)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(human)
        .with(json)
        .with(stderr)
        .try_init()
        .context("installing the logger")?;
    Ok(LogHandle { filter: handle })
}

/// Installs the logger of every other command: stderr only (the slave
/// speaks its protocol on stdout).
pub fn init_stderr() {
    let _ = tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .with_env_filter(filter("info"))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().unwrap().len(),
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn rotation_bounds_size_and_count_and_keeps_lines_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        let mut f = RotatingFile::open(&path, 1000, 3).unwrap();
        let mut written = Vec::new();
        for i in 0..500 {
            let line = format!("line {i:05} {}\n", "x".repeat(i % 40));
            f.write_all(line.as_bytes()).unwrap();
            written.push(line);
        }
        f.flush().unwrap();
        let got = files(dir.path());
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["s.log", "s.log.1", "s.log.2", "s.log.3"], "{got:?}");
        for (name, len) in &got {
            assert!(*len <= 1000, "{name} has {len} bytes");
        }
        // The newest lines are all there, in order, whole.
        let mut text = String::new();
        for n in (1..=3).rev() {
            text += &fs::read_to_string(RotatingFile::rotated(&path, n)).unwrap();
        }
        text += &fs::read_to_string(&path).unwrap();
        assert!(text.ends_with(written.last().unwrap()));
        for line in text.lines() {
            assert!(written.contains(&format!("{line}\n")), "torn line {line:?}");
        }
        let tail: String = written[written.len() - text.lines().count()..].concat();
        assert_eq!(text, tail);
    }

    #[test]
    fn reopening_continues_the_size_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        let mut f = RotatingFile::open(&path, 100, 2).unwrap();
        f.write_all(&[b'a'; 80]).unwrap();
        drop(f);
        let mut f = RotatingFile::open(&path, 100, 2).unwrap();
        f.write_all(&[b'b'; 30]).unwrap();
        assert_eq!(
            fs::read(RotatingFile::rotated(&path, 1)).unwrap(),
            [b'a'; 80]
        );
        assert_eq!(fs::read(&path).unwrap(), [b'b'; 30]);
        // A write larger than the bound gets a file of its own.
        f.write_all(&[b'c'; 250]).unwrap();
        f.write_all(b"d").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"d");
        assert_eq!(
            fs::read(RotatingFile::rotated(&path, 1)).unwrap().len(),
            250
        );
        assert_eq!(
            fs::read(RotatingFile::rotated(&path, 2)).unwrap(),
            [b'b'; 30]
        );
        assert!(!RotatingFile::rotated(&path, 3).exists());
    }
}
