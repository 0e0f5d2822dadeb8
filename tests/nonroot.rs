//! The slave side as an unprivileged user who owns the slave directory:
//! no root on the disaster-recovery host, no GlusterFS-style mountbroker.

use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::process::Command;
use std::time::SystemTime;

use std::os::unix::fs::FileTypeExt;

use georep_testkit::{assert_trees_equal_with, CompareOptions};

use crate::common::{Scenario, GEO_REP};

const USER: &str = "georep-it-slave";

/// A throwaway system user, removed again when dropped.
struct TestUser {
    uid: u32,
    gid: u32,
}

impl TestUser {
    fn create() -> TestUser {
        let _ = Command::new("userdel").arg(USER).status();
        // `-p '*'`: no password, but not a locked account (sshd refuses
        // locked accounts even for key logins).
        let ok = Command::new("useradd")
            .args(["--system", "--no-create-home", "--home-dir", "/nonexistent"])
            .args(["--shell", "/bin/sh", "-p", "*", USER])
            .status()
            .expect("useradd");
        assert!(ok.success(), "useradd {USER} (the tests run as root)");
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, USER]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        TestUser {
            uid: id("-u"),
            gid: id("-g"),
        }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(USER).status();
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

#[test]
fn an_unprivileged_slave_user_receives_the_replica() {
    let s = Scenario::new();
    let user = TestUser::create();
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

    let url = format!("{USER}@127.0.0.1::{}", slave.display());
    struct Stop<'a>(&'a Scenario, String);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = self.0.geo_rep(["stop", &self.0.vol, &self.1, "force"]);
        }
    }
    s.geo_rep(with_remote_command(
        s.create_args(&[&s.brick], &url, false),
        &installed_for(&s),
    ))
    .ok();
    let _stop = Stop(&s, url.clone());

    fs::create_dir(s.brick.join("dir")).unwrap();
    fs::write(s.brick.join("dir/file"), b"owned by root on the master").unwrap();
    fs::set_permissions(s.brick.join("dir/file"), fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("dir/file", s.brick.join("link")).unwrap();
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
    let t = SystemTime::now();
    s.geo_rep(["start", &s.vol, &url]).ok();
    s.wait_synced_past_of(&s.vol, &url, t);

    // Content, modes and times arrive; owners are the slave user's, since
    // only a root slave can keep numeric owners. The device node cannot be
    // made: it is a failure in `status detail` and in the log, not silently
    // dropped.
    assert!(!slave.join("dir/device").exists());
    assert_trees_equal_with(
        &s.brick,
        &slave,
        &CompareOptions::default().exclude("dir/device"),
    );
    assert!(fs::symlink_metadata(slave.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    let detail = s.geo_rep(["status", &s.vol, &url, "detail"]).ok().stdout();
    // The table is aligned: the count sits under the FAILURES header.
    let mut lines = detail.lines().skip_while(|l| l.trim().is_empty());
    let header = lines.next().unwrap_or_default();
    let row = lines.nth(1).unwrap_or_default();
    let col = header.find("FAILURES").expect("a FAILURES column");
    let failures: Option<u64> = row
        .get(col..)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok());
    assert!(
        failures.is_some_and(|n| n >= 1),
        "status detail counts the device node as a failure:\n{detail}"
    );
    let log = s.monitor_log();
    assert!(
        log.contains("dir/device"),
        "the log names the device node that could not be made:\n{log}"
    );
    let md = fs::metadata(slave.join("dir/file")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((md.uid(), md.gid()), (user.uid, user.gid));
    let status = s.geo_rep(["status", &s.vol, &url, "--json"]).ok();
    assert!(
        status
            .stdout()
            .contains("\"slave_user\": \"georep-it-slave\""),
        "{}",
        status.0
    );
}
