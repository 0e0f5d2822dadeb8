//! Small file-system helpers shared by several modules.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` (and parents) if missing and makes it accessible to its
/// owner only: it holds keys and the state database. A `dir` that another
/// user owns is refused: that user could read or replace what georep keeps
/// there (keys, the database that says what to replicate where).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let md = fs::metadata(dir)?;
    let me = rustix::process::geteuid().as_raw();
    if !md.is_dir() || md.uid() != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "not a directory owned by the running user (uid {me}): owner uid {}{}",
                md.uid(),
                if md.is_dir() { "" } else { ", not a directory" }
            ),
        ));
    }
    let perms = md.permissions();
    if perms.mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes `contents` to `path` with mode 0600, replacing it atomically.
pub fn write_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

/// Makes every file and directory this process creates from now on
/// private to its user (0600, 0700), whatever the caller's umask: the
/// master's home holds keys, the database, journals and logs.
pub fn private_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Raises this process's soft limit of open files to its hard limit and
/// returns the soft limit now in force (`u64::MAX`: unlimited). The usual
/// soft limit, 1024, is far below what both ends may need (the slave keeps
/// a directory fd per file waiting to be renamed into place), while the
/// hard limit is usually much higher and is the operator's to set.
pub fn raise_nofile_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    if now.current != now.maximum {
        let raised = Rlimit {
            current: now.maximum,
            maximum: now.maximum,
        };
        // Linux refuses an unlimited soft limit (above fs.nr_open): then the
        // soft limit stays, and the caches are sized from it.
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return now.maximum.unwrap_or(u64::MAX);
        }
    }
    now.current.unwrap_or(u64::MAX)
}

/// Reads at most a given number of bytes a second, on average since it
/// began (`geo-rep verify --rate`), by sleeping when ahead.
#[derive(Debug)]
pub struct Pace {
    rate: u64,
    start: std::time::Instant,
    bytes: u64,
}

impl Pace {
    /// `rate` bytes a second; 0 never sleeps.
    pub fn new(rate: u64) -> Pace {
        Pace {
            rate,
            start: std::time::Instant::now(),
            bytes: 0,
        }
    }

    /// Counts `n` bytes read, then sleeps until the average is back to the
    /// rate.
    pub fn took(&mut self, n: u64) {
        self.bytes += n;
        if self.rate == 0 {
            return;
        }
        let due = std::time::Duration::from_secs_f64(self.bytes as f64 / self.rate as f64);
        if let Some(ahead) = due.checked_sub(self.start.elapsed()) {
            std::thread::sleep(ahead);
        }
    }
}

/// The BLAKE3 hash of everything `input` yields, read in bounded pieces at
/// `pace`.
pub fn hash_paced(input: &mut impl io::Read, pace: &mut Pace) -> io::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(*hasher.finalize().as_bytes()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        pace.took(n as u64);
    }
}
