//! A slave named by GlusterFS volume (`host::gv0`, run as `geo-rep slave
//! --volume gv0`): as GlusterFS's own slave side does, the slave mounts the
//! volume itself and applies everything through that mount.
//!
//! One mount per host and volume, at `<home>/slave-volumes/<vol>/mnt`,
//! shared by the session's parallel slave processes: each one writes its
//! pid into `users` under an exclusive `flock` of `lock`, the first mounts,
//! the last unmounts. A process killed before it could leave its pid
//! behind; the next one to come drops pids that no longer run, and reuses
//! the mount if it still answers or unmounts it lazily and mounts again if
//! it does not (a dead FUSE client answers `ENOTCONN`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::fs::{flock, FlockOperation};

use crate::proto::{read_frame, write_frame, Reply, Request};
use crate::volume::volume_info;

/// Why a slave volume cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("invalid GlusterFS volume name {0:?} (letters, digits, `-`, `_`, `.`)")]
    Name(String),
    #[error("GlusterFS volume {vol} on {host}: {reason}")]
    Volume {
        vol: String,
        host: String,
        reason: String,
    },
    #[error("mounting GlusterFS volume {vol} on {host} needs root; run the slave as root, use GlusterFS's mountbroker, or mount the volume as root and name its mount path instead (USER@{host}::/path/to/mount)")]
    NotRoot { vol: String, host: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("mount -t glusterfs localhost:/{vol} {mnt} on {host}: {reason}")]
    Mount {
        vol: String,
        mnt: PathBuf,
        host: String,
        reason: String,
    },
}

fn host() -> String {
    hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "this host".into())
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> MountError + '_ {
    move |source| MountError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The volume mounted for this process; unmounted when the last process
/// using it drops its `VolumeMount`.
#[derive(Debug)]
pub struct VolumeMount {
    vol: String,
    dir: PathBuf,
    mnt: PathBuf,
}

impl VolumeMount {
    /// Checks that `vol` is a started volume on this host and makes sure it
    /// is mounted, counting this process as a user of the mount.
    pub fn acquire(home: &Path, vol: &str) -> Result<VolumeMount, MountError> {
        let name_ok = !vol.is_empty()
            && !vol.starts_with('.')
            && vol
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(MountError::Name(vol.to_owned()));
        }
        let bad = |reason: String| MountError::Volume {
            vol: vol.to_owned(),
            host: host(),
            reason,
        };
        let topology = volume_info(vol).map_err(|e| bad(e.to_string()))?;
        if topology.status != "Started" {
            return Err(bad(format!(
                "is not started ({}); `gluster volume start {vol}` first",
                topology.status
            )));
        }
        let dir = home.join("slave-volumes").join(vol);
        let mnt = dir.join("mnt");
        for d in [home, &home.join("slave-volumes"), &dir, &mnt] {
            crate::fsutil::create_private_dir(d).map_err(io_err(d))?;
        }
        let this = VolumeMount {
            vol: vol.to_owned(),
            dir,
            mnt,
        };
        let lock = this.lock()?;
        let mut users = this.live_users()?;
        users.push(std::process::id());
        this.write_users(&users)?;
        let mounted = this.ensure_mounted();
        if mounted.is_err() {
            users.pop();
            this.write_users(&users)?;
        }
        drop(lock);
        mounted.map(|()| this)
    }

    /// The mount's root: the slave root of this session.
    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// The mount point's lock, held until dropped.
    fn lock(&self) -> Result<File, MountError> {
        let path = self.dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        flock(&file, FlockOperation::LockExclusive).map_err(|e| MountError::Io {
            path: path.clone(),
            source: e.into(),
        })?;
        Ok(file)
    }

    /// The pids in `users` that still run a slave.
    fn live_users(&self) -> Result<Vec<u32>, MountError> {
        let path = self.dir.join("users");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_err(&path)(e)),
        };
        Ok(text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|&pid| runs_a_slave(pid))
            .collect())
    }

    fn write_users(&self, users: &[u32]) -> Result<(), MountError> {
        let path = self.dir.join("users");
        let text: String = users.iter().map(|p| format!("{p}\n")).collect();
        crate::fsutil::write_private_file(&path, text.as_bytes()).map_err(io_err(&path))
    }

    fn ensure_mounted(&self) -> Result<(), MountError> {
        if self.is_mounted()? {
            if fs::read_dir(&self.mnt).is_ok() {
                return Ok(());
            }
            // Its FUSE client died with the slave that mounted it.
            self.unmount(true);
        }
        if !rustix::process::geteuid().is_root() {
            return Err(MountError::NotRoot {
                vol: self.vol.clone(),
                host: host(),
            });
        }
        let out = Command::new("mount")
            .args(["-t", "glusterfs"])
            .arg(format!("localhost:/{}", self.vol))
            .arg(&self.mnt)
            .output()
            .map_err(io_err(Path::new("mount")))?;
        if !out.status.success() {
            return Err(MountError::Mount {
                vol: self.vol.clone(),
                mnt: self.mnt.clone(),
                host: host(),
                reason: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(())
    }

    /// Whether something is mounted at the mount point (from mountinfo,
    /// which answers even when the mount itself does not).
    fn is_mounted(&self) -> Result<bool, MountError> {
        let info = Path::new("/proc/self/mountinfo");
        let text = fs::read_to_string(info).map_err(io_err(info))?;
        let target = self.mnt.to_string_lossy();
        Ok(text
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .any(|m| unescape_mountinfo(m) == target))
    }

    /// `umount` (lazily when `lazy`: a dead or busy mount).
    fn unmount(&self, lazy: bool) {
        let mut cmd = Command::new("umount");
        if lazy {
            cmd.arg("-l");
        }
        let ok = cmd
            .arg(&self.mnt)
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok && !lazy {
            self.unmount(true);
        }
    }
}

impl Drop for VolumeMount {
    /// Leaves the mount; the last user unmounts it.
    fn drop(&mut self) {
        let Ok(lock) = self.lock() else { return };
        let me = std::process::id();
        let users: Vec<u32> = self
            .live_users()
            .unwrap_or_default()
            .into_iter()
            .filter(|&p| p != me)
            .collect();
        if users.is_empty() && self.is_mounted().unwrap_or(false) {
            self.unmount(false);
        }
        let _ = self.write_users(&users);
        drop(lock);
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Whether `pid` runs a georep slave (not a pid reused by something else).
fn runs_a_slave(pid: u32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        let args: Vec<&[u8]> = c.split(|&b| b == 0).collect();
        args.contains(&&b"slave"[..])
    })
}

/// Answers a master whose slave cannot be served: its `Hello` gets a
/// `Fatal` that says why, as a directory root that cannot be opened does.
pub fn refuse<R: Read, W: Write>(mut input: R, mut output: W, why: &str) -> io::Result<()> {
    let _: Result<Request, _> = read_frame(&mut input);
    write_frame(
        &mut output,
        &Reply::Fatal {
            message: why.to_owned(),
        },
    )
    .map_err(|e| io::Error::other(e.to_string()))?;
    output.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mountinfo("/a\\040b\\134c"), "/a b\\c");
    }

    #[test]
    fn a_bad_volume_name_is_refused_before_anything_runs() {
        let home = tempfile::tempdir().unwrap();
        for bad in ["", ".hidden", "a/b", "x y", "v;rm"] {
            let e = VolumeMount::acquire(home.path(), bad).unwrap_err();
            assert!(matches!(e, MountError::Name(_)), "{bad:?}: {e}");
        }
        assert_eq!(fs::read_dir(home.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_refused_master_reads_why() {
        let mut hello = Vec::new();
        write_frame(
            &mut hello,
            &Request::Hello {
                protocol: crate::proto::PROTOCOL_VERSION,
                agent_version: "t".into(),
            },
        )
        .unwrap();
        let mut out = Vec::new();
        refuse(&hello[..], &mut out, "volume gv9 does not exist").unwrap();
        let reply: Reply = read_frame(&mut &out[..]).unwrap();
        assert_eq!(
            reply,
            Reply::Fatal {
                message: "volume gv9 does not exist".into()
            }
        );
    }
}
