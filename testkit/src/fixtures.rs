//! Making test data: random bytes, sample trees, exact copies, mtimes.

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use rustix::fs::{AtFlags, Timespec, Timestamps, CWD, UTIME_OMIT};

/// `len` pseudo-random (incompressible) bytes, the same for the same seed.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// `len` bytes of log-like text, the same for the same seed: compressible
/// as real logs are (a few times over, not the thousands of times of one
/// repeated line), for what compression buys.
pub fn log_text(len: usize, seed: u64) -> Vec<u8> {
    use std::io::Write;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(len + 200);
    let levels = ["INFO", "WARN", "DEBUG", "ERROR"];
    while out.len() < len {
        let _ = writeln!(
            out,
            "2026-11-27T{:02}:{:02}:{:02}.{:06}Z {} worker{} brick=/data/brick{}/vol batch={} files={} bytes={} elapsed_ms={}",
            rng.gen_range(0..24),
            rng.gen_range(0..60),
            rng.gen_range(0..60),
            rng.gen_range(0..1_000_000),
            levels[rng.gen_range(0..levels.len())],
            rng.gen_range(0..8),
            rng.gen_range(0..4),
            rng.gen_range(0..100_000),
            rng.gen_range(0..5000),
            rng.gen_range(0..100_000_000u64),
            rng.gen_range(0..20_000),
        );
    }
    out.truncate(len);
    out
}

/// Sets the mtime of `path` (to the nanosecond), leaving atime alone. With
/// `follow == false` a symlink's own mtime is set.
pub fn set_mtime(path: &Path, t: SystemTime, follow: bool) -> io::Result<()> {
    let (sec, nsec) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, i64::from(d.subsec_nanos())),
        Err(e) => {
            let d = e.duration();
            let mut sec = -(d.as_secs() as i64);
            let mut nsec = i64::from(d.subsec_nanos());
            if nsec > 0 {
                sec -= 1;
                nsec = 1_000_000_000 - nsec;
            }
            (sec, nsec)
        }
    };
    let ts = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
    };
    let flags = if follow {
        AtFlags::empty()
    } else {
        AtFlags::SYMLINK_NOFOLLOW
    };
    rustix::fs::utimensat(CWD, path, &ts, flags).map_err(io::Error::from)
}

/// Shape of a [`sample_tree`].
#[derive(Debug, Clone)]
pub struct SampleTree {
    pub files: usize,
    pub dirs: usize,
    /// Half relative links to files of the tree, half dangling.
    pub symlinks: usize,
    pub max_file_size: usize,
    pub seed: u64,
}

impl Default for SampleTree {
    fn default() -> Self {
        SampleTree {
            files: 300,
            dirs: 30,
            symlinks: 20,
            max_file_size: 64 * 1024,
            seed: 1,
        }
    }
}

/// Fills the existing directory `root` with a deterministic tree: nested
/// directories, files of varied sizes (some empty), modes and past mtimes,
/// and relative symlinks (some dangling). Directory mtimes are set last, in
/// the past, so they are part of what a replica must reproduce.
pub fn sample_tree(root: &Path, shape: &SampleTree) -> io::Result<()> {
    let mut rng = StdRng::seed_from_u64(shape.seed);
    let base = UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    let mut dirs = vec![root.to_path_buf()];
    for i in 0..shape.dirs {
        let parent = dirs[rng.gen_range(0..dirs.len())].clone();
        let d = parent.join(format!("dir{i:03}"));
        fs::create_dir(&d)?;
        dirs.push(d);
    }
    let mut files = Vec::new();
    for i in 0..shape.files {
        let d = &dirs[rng.gen_range(0..dirs.len())];
        let f = d.join(format!("file{i:04}.dat"));
        let len = match i % 10 {
            0 => 0,
            _ => rng.gen_range(0..=shape.max_file_size),
        };
        let mut data = vec![0u8; len];
        rng.fill_bytes(&mut data);
        fs::write(&f, &data)?;
        let mode = [0o644, 0o600, 0o755, 0o640][i % 4];
        fs::set_permissions(&f, fs::Permissions::from_mode(mode))?;
        let t = base
            + Duration::new(
                rng.gen_range(0..100_000_000),
                rng.gen_range(0..1_000_000_000),
            );
        set_mtime(&f, t, true)?;
        files.push(f);
    }
    for i in 0..shape.symlinks {
        let d = &dirs[rng.gen_range(0..dirs.len())];
        let l = d.join(format!("link{i:03}"));
        let target = if i % 2 == 0 && !files.is_empty() {
            let f = &files[rng.gen_range(0..files.len())];
            relative_target(d, f, root)
        } else {
            format!("../missing/target{i}").into()
        };
        symlink(&target, &l)?;
        set_mtime(
            &l,
            base + Duration::from_secs(rng.gen_range(0..100_000_000)),
            false,
        )?;
    }
    // Deepest first, so setting a child's time does not disturb the parent.
    for d in dirs.iter().skip(1).rev() {
        if rng.gen_bool(0.3) {
            fs::set_permissions(d, fs::Permissions::from_mode(0o750))?;
        }
        set_mtime(
            d,
            base + Duration::from_secs(rng.gen_range(0..100_000_000)),
            true,
        )?;
    }
    Ok(())
}

/// `to` as a relative path from directory `from`, both under `root`.
fn relative_target(from: &Path, to: &Path, root: &Path) -> std::path::PathBuf {
    let from = from.strip_prefix(root).unwrap_or(from);
    let to = to.strip_prefix(root).unwrap_or(to);
    let mut p = std::path::PathBuf::new();
    for _ in from.components() {
        p.push("..");
    }
    p.push(to);
    p
}

/// Copies the tree under `from` to `to` (created if missing) exactly as
/// [`crate::compare_trees`] sees it: contents, modes, symlink
/// targets, and mtimes of files, symlinks and directories (the root's too).
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    if !to.exists() {
        fs::create_dir(to)?;
    }
    for de in fs::read_dir(from)? {
        let de = de?;
        let src = de.path();
        let dst = to.join(de.file_name());
        let md = fs::symlink_metadata(&src)?;
        let ft = md.file_type();
        if ft.is_symlink() {
            symlink(fs::read_link(&src)?, &dst)?;
            set_mtime(&dst, md.modified()?, false)?;
        } else if ft.is_dir() {
            copy_tree(&src, &dst)?;
        } else if ft.is_file() {
            fs::copy(&src, &dst)?;
            fs::set_permissions(&dst, md.permissions())?;
            set_mtime(&dst, md.modified()?, true)?;
        }
    }
    let md = fs::metadata(from)?;
    fs::set_permissions(to, md.permissions())?;
    set_mtime(to, md.modified()?, true)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn random_bytes_are_deterministic_per_seed() {
        assert_eq!(random_bytes(100, 1), random_bytes(100, 1));
        assert_ne!(random_bytes(100, 1), random_bytes(100, 2));
    }

    #[test]
    fn set_mtime_sets_nanoseconds_and_before_epoch() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f");
        fs::write(&f, b"").unwrap();
        set_mtime(&f, UNIX_EPOCH + Duration::new(1_000, 123_456_789), true).unwrap();
        let md = fs::metadata(&f).unwrap();
        assert_eq!((md.mtime(), md.mtime_nsec()), (1_000, 123_456_789));
        set_mtime(&f, UNIX_EPOCH - Duration::new(1, 250_000_000), true).unwrap();
        let md = fs::metadata(&f).unwrap();
        assert_eq!((md.mtime(), md.mtime_nsec()), (-2, 750_000_000));
    }

    #[test]
    fn sample_tree_has_the_requested_shape() {
        let t = tempfile::tempdir().unwrap();
        let shape = SampleTree {
            files: 50,
            dirs: 5,
            symlinks: 6,
            max_file_size: 1000,
            seed: 3,
        };
        sample_tree(t.path(), &shape).unwrap();
        let (mut files, mut dirs, mut links) = (0, 0, 0);
        let mut stack = vec![t.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for de in fs::read_dir(d).unwrap() {
                let ft = de.as_ref().unwrap().file_type().unwrap();
                if ft.is_dir() {
                    dirs += 1;
                    stack.push(de.unwrap().path());
                } else if ft.is_symlink() {
                    links += 1;
                } else {
                    files += 1;
                }
            }
        }
        assert_eq!((files, dirs, links), (50, 5, 6));
    }
}
