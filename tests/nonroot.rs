//! The slave side as an unprivileged user who owns the slave directory:
//! no root on the disaster-recovery host, no GlusterFS-style mountbroker.

use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::process::Command;
use std::time::SystemTime;

use std::os::unix::fs::FileTypeExt;

use georep_testkit::{assert_trees_equal_with, CompareOptions};

use crate::common::{Scenario, GEO_REP};

/// A throwaway system user, removed again when dropped.
struct TestUser {
    name: &'static str,
    uid: u32,
    gid: u32,
}

impl TestUser {
    /// One name per test: the tests run in parallel.
    fn create(name: &'static str) -> TestUser {
        let _ = Command::new("userdel").arg(name).status();
        // `-p '*'`: no password, but not a locked account (sshd refuses
        // locked accounts even for key logins).
        let ok = Command::new("useradd")
            .args(["--system", "--no-create-home", "--home-dir", "/nonexistent"])
            .args(["--shell", "/bin/sh", "-p", "*", name])
            .status()
            .expect("useradd");
        assert!(ok.success(), "useradd {name} (the tests run as root)");
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, name]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        TestUser {
            name,
            uid: id("-u"),
            gid: id("-g"),
        }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(self.name).status();
    }
}

/// `geo-rep` copied where any user may run it: the checkout, and so
/// `target/`, may lie below a directory the slave user cannot traverse
/// (root's home is 0700 on Debian, and so is a `mktemp -d` directory).
fn installed_for(s: &Scenario) -> String {
    let bin = s.path("bin");
    fs::create_dir(&bin).unwrap();
    let exe = bin.join("geo-rep");
    fs::copy(GEO_REP, &exe).unwrap_or_else(|e| panic!("copying {GEO_REP}: {e}"));
    for (p, mode) in [(&bin, 0o755), (&exe, 0o755)] {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }
    exe.display().to_string()
}

/// `create` arguments whose `--remote-command` is `command`.
fn with_remote_command(mut args: Vec<String>, command: &str) -> Vec<String> {
    let at = args
        .iter()
        .position(|a| a == "--remote-command")
        .expect("create_args names a remote command");
    args[at + 1] = command.to_owned();
    args
}

/// A session of the scenario's brick to a slave directory owned by `user`,
/// logged in as `user`, created with `extra` options; stopped when dropped.
struct Unprivileged<'a> {
    s: &'a Scenario,
    url: String,
    slave: std::path::PathBuf,
}

impl Unprivileged<'_> {
    fn create<'a>(s: &'a Scenario, user: &TestUser, extra: &[&str]) -> Unprivileged<'a> {
        // The slave directory belongs to the user; the paths to it, to the
        // sshd's key file and to geo-rep must be reachable by them.
        for dir in [s.path(""), s.sshd.dir().to_owned()] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let slave = s.path("dr");
        fs::create_dir(&slave).unwrap();
        chown(&slave, Some(user.uid), Some(user.gid)).unwrap();
        // sshd reads (and push-pem appends to) the key file as the user.
        chown(s.sshd.authorized_keys(), Some(user.uid), Some(user.gid)).unwrap();
        let url = format!("{}@127.0.0.1::{}", user.name, slave.display());
        let mut args =
            with_remote_command(s.create_args(&[&s.brick], &url, false), &installed_for(s));
        args.extend(extra.iter().map(|a| a.to_string()));
        s.geo_rep(args).ok();
        Unprivileged { s, url, slave }
    }

    /// Starts it and waits until everything written so far is on the slave.
    fn start_and_sync(&self) {
        let t = SystemTime::now();
        self.s.geo_rep(["start", &self.s.vol, &self.url]).ok();
        self.s.wait_synced_past_of(&self.s.vol, &self.url, t);
    }

    fn failures(&self) -> u64 {
        self.s
            .status_json_of(&self.s.vol, &self.url)
            .iter()
            .map(|r| r["failures"].as_u64().unwrap_or(u64::MAX))
            .sum()
    }
}

impl Drop for Unprivileged<'_> {
    fn drop(&mut self) {
        let _ = self.s.geo_rep(["stop", &self.s.vol, &self.url, "force"]);
    }
}

#[test]
fn an_unprivileged_slave_user_receives_the_replica() {
    let s = Scenario::new();
    let user = TestUser::create("georep-it-slave");
    let session = Unprivileged::create(&s, &user, &[]);
    let (url, slave) = (&session.url, &session.slave);

    fs::create_dir(s.brick.join("dir")).unwrap();
    fs::write(s.brick.join("dir/file"), b"owned by root on the master").unwrap();
    fs::set_permissions(s.brick.join("dir/file"), fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("dir/file", s.brick.join("link")).unwrap();
    fs::write(s.brick.join("dir/read-only"), b"r").unwrap();
    fs::set_permissions(
        s.brick.join("dir/read-only"),
        fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    // A FIFO any user can make; a device node only root can.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        s.brick.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        s.brick.join("dir/device"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o600),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    session.start_and_sync();

    // Content, modes and times arrive; owners are the slave user's, since
    // only a root slave can keep numeric owners. The device node is not
    // made (the slave policy): an empty file records it, for a restore.
    let placeholder = fs::symlink_metadata(slave.join("dir/device")).unwrap();
    assert!(placeholder.file_type().is_file() && placeholder.len() == 0);
    let rec = georep::slave::policy::recorded_stat(&slave.join("dir/device"))
        .unwrap()
        .expect("the device is recorded");
    assert_eq!(rec.mode, 0o020600);
    assert_eq!(rec.rdev, rustix::fs::makedev(1, 3));
    assert_trees_equal_with(
        &s.brick,
        slave,
        &CompareOptions::default().exclude("dir/device"),
    );
    assert!(fs::symlink_metadata(slave.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(session.failures(), 0, "the session stays healthy");
    // New attributes for a read-only copy (its record needs no removal).
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
    georep_testkit::set_mtime(&s.brick.join("dir/read-only"), mtime, false).unwrap();
    s.wait_synced_past_of(&s.vol, url, SystemTime::now());
    let copy = fs::metadata(slave.join("dir/read-only")).unwrap();
    assert_eq!(copy.modified().unwrap(), mtime);
    assert_eq!(session.failures(), 0, "the session stays healthy");
    let md = fs::metadata(slave.join("dir/file")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((md.uid(), md.gid()), (user.uid, user.gid));
    let status = s.geo_rep(["status", &s.vol, url, "--json"]).ok();
    assert!(
        status
            .stdout()
            .contains("\"slave_user\": \"georep-it-slave\""),
        "{}",
        status.0
    );
}

#[test]
fn an_unprivileged_slave_with_fake_owners_keeps_every_owner_in_the_metadata() {
    use georep::slave::policy::recorded_stat;
    use std::os::unix::fs::MetadataExt;
    let s = Scenario::new();
    let user = TestUser::create("georep-it-fake");
    let session = Unprivileged::create(&s, &user, &["--owners", "fake"]);
    let b = &s.brick;
    fs::create_dir(b.join("dir")).unwrap();
    // Read-only, owned by someone else, with an xattr: the slave must still
    // be able to write its copy's xattrs and record.
    fs::write(b.join("dir/ro"), b"read only").unwrap();
    rustix::fs::lsetxattr(
        b.join("dir/ro"),
        "user.k",
        b"v",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    std::os::unix::fs::lchown(b.join("dir/ro"), Some(1234), Some(5678)).unwrap();
    fs::set_permissions(b.join("dir/ro"), fs::Permissions::from_mode(0o444)).unwrap();
    fs::write(b.join("su"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(b.join("su"), fs::Permissions::from_mode(0o4755)).unwrap();
    session.start_and_sync();
    assert_eq!(session.failures(), 0, "the session stays healthy");

    let ro = session.slave.join("dir/ro");
    let md = fs::metadata(&ro).unwrap();
    assert_eq!((md.uid(), md.gid()), (user.uid, user.gid));
    assert_eq!(
        md.mode() & 0o7777,
        0o644,
        "the slave keeps read and write access"
    );
    let rec = recorded_stat(&ro).unwrap().expect("the brick's values");
    assert_eq!((rec.mode, rec.uid, rec.gid), (0o100444, 1234, 5678));
    let mut v = [0u8; 8];
    let n = rustix::fs::lgetxattr(&ro, "user.k", &mut v[..]).unwrap();
    assert_eq!(&v[..n], b"v");
    let su = session.slave.join("su");
    assert_eq!(fs::metadata(&su).unwrap().mode() & 0o7777, 0o755);
    let rec = recorded_stat(&su).unwrap().expect("the brick's values");
    assert_eq!((rec.mode, rec.uid, rec.gid), (0o104755, 0, 0));
    assert!(s.session_key_lines().join("").contains("--owners fake"));
}
