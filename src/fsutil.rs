//! Small file-system helpers shared by several modules.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` (and parents) if missing and makes it accessible to its
/// owner only: it holds keys and the state database.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let perms = fs::metadata(dir)?.permissions();
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
