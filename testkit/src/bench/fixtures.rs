//! The benchmark's data: trees of small files, one big random file, and the
//! changes made to them. Deterministic per seed; memory bounded.

use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

/// A tree of `files` files of 1–4 KiB spread over `dirs` directories
/// (`tNN/dNNNN/fNNNNNN`: two levels, so no directory is huge).
#[derive(Debug, Clone)]
pub struct SmallTree {
    pub root: PathBuf,
    /// Relative paths of the files, in creation order.
    pub files: Vec<PathBuf>,
    pub bytes: u64,
}

pub fn small_tree(root: &Path, files: usize, dirs: usize, seed: u64) -> Result<SmallTree> {
    let dirs = dirs.max(1);
    let mut rng = StdRng::seed_from_u64(seed);
    fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let mut dir_paths = Vec::with_capacity(dirs);
    for d in 0..dirs {
        let rel = PathBuf::from(format!("t{:02}/d{d:04}", d / 100));
        fs::create_dir_all(root.join(&rel))
            .with_context(|| format!("creating {}", rel.display()))?;
        dir_paths.push(rel);
    }
    let mut list = Vec::with_capacity(files);
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 4096];
    for i in 0..files {
        let rel = dir_paths[i % dirs].join(format!("f{i:07}"));
        let len = rng.gen_range(1024..=4096);
        rng.fill_bytes(&mut buf[..len]);
        fs::write(root.join(&rel), &buf[..len])
            .with_context(|| format!("writing {}", rel.display()))?;
        bytes += len as u64;
        list.push(rel);
    }
    Ok(SmallTree {
        root: root.to_path_buf(),
        files: list,
        bytes,
    })
}

/// Rewrites `count` files of the tree, spread evenly over it, with new
/// contents of 1–4 KiB. Returns the bytes written.
pub fn change_files(tree: &SmallTree, count: usize, seed: u64) -> Result<u64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = tree.files.len();
    let count = count.min(n);
    let stride = (n / count.max(1)).max(1);
    let offset = rng.gen_range(0..stride);
    let mut buf = vec![0u8; 4096];
    let mut bytes = 0;
    for k in 0..count {
        let rel = &tree.files[(offset + k * stride) % n];
        let len = rng.gen_range(1024..=4096);
        rng.fill_bytes(&mut buf[..len]);
        fs::write(tree.root.join(rel), &buf[..len])
            .with_context(|| format!("rewriting {}", rel.display()))?;
        bytes += len as u64;
    }
    Ok(bytes)
}

/// One file of `len` random bytes, written in 8 MiB pieces.
pub fn big_file(path: &Path, len: u64, seed: u64) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut f = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut buf = vec![0u8; 8 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n])
            .with_context(|| format!("writing {}", path.display()))?;
        left -= n as u64;
    }
    Ok(())
}

/// Overwrites `len` bytes in the middle of `path` with random bytes, in
/// place (size unchanged).
pub fn change_middle(path: &Path, len: u64, seed: u64) -> Result<()> {
    let f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let size = f.metadata()?.len();
    let off = (size / 2).saturating_sub(len / 2);
    let mut data = vec![0u8; len as usize];
    StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    f.write_all_at(&data, off)
        .with_context(|| format!("writing into {}", path.display()))?;
    Ok(())
}

/// Writes a small file (`len` random bytes).
pub fn small_file(path: &Path, len: usize, seed: u64) -> Result<()> {
    let mut data = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    fs::write(path, &data).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_tree_and_changes() {
        let t = tempfile::tempdir().unwrap();
        let tree = small_tree(&t.path().join("m"), 50, 7, 1).unwrap();
        assert_eq!(tree.files.len(), 50);
        assert!(tree.bytes >= 50 * 1024);
        let before = fs::read(tree.root.join(&tree.files[0])).unwrap();
        change_files(&tree, 50, 2).unwrap();
        assert_ne!(before, fs::read(tree.root.join(&tree.files[0])).unwrap());
    }

    #[test]
    fn big_file_changes_in_the_middle_only() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("big");
        big_file(&p, 1 << 20, 1).unwrap();
        let a = fs::read(&p).unwrap();
        change_middle(&p, 4096, 2).unwrap();
        let b = fs::read(&p).unwrap();
        assert_eq!(a.len(), b.len());
        let mid = a.len() / 2;
        assert_eq!(a[..mid - 2048], b[..mid - 2048]);
        assert_ne!(a[mid - 2048..mid + 2048], b[mid - 2048..mid + 2048]);
        assert_eq!(a[mid + 2048..], b[mid + 2048..]);
    }
}
