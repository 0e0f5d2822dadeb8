//! Least privilege on the master's side, through the real sshd: what the
//! session excludes never reaches the slave, bricks are canonical and never
//! hold the home, the home is private, the remote command is a plain
//! program, and what the slave says is escaped before it reaches a
//! terminal. (What a hostile slave can make the shipper do is in
//! `ship::hostile_tests` and `robustness`.)

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::SystemTime;

use crate::common::Scenario;

/// Every path below `dir` (not following symlinks).
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.symlink_metadata().unwrap().is_dir() {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

#[test]
fn excluded_files_never_reach_a_slave_that_lost_their_directory() {
    let s = Scenario::new();
    s.create(false).ok();
    s.geo_rep(["config", &s.vol, &s.slave_url(), "exclude", "*.key"])
        .ok();
    s.start().ok();
    s.wait_active();
    fs::create_dir(s.brick.join("d")).unwrap();
    fs::write(s.brick.join("d/f"), b"replicated").unwrap();
    fs::write(s.brick.join("d/secret.key"), b"never leaves").unwrap();
    s.wait_synced_past(SystemTime::now());
    assert!(s.slave.join("d/f").is_file(), "{}", s.diagnostics());
    assert!(!s.slave.join("d/secret.key").exists());

    // The slave loses `d`; the master renames it: the rename finds no
    // source there, and the master heals `e` from the brick, whole.
    fs::remove_dir_all(s.slave.join("d")).unwrap();
    fs::rename(s.brick.join("d"), s.brick.join("e")).unwrap();
    s.wait_synced_past(SystemTime::now());
    assert_eq!(fs::read(s.slave.join("e/f")).unwrap(), b"replicated");
    let leaked: Vec<_> = walk(&s.slave)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".key"))
        .collect();
    assert!(leaked.is_empty(), "excluded files on the slave: {leaked:?}");
}

#[test]
fn a_brick_given_through_a_symlink_is_recorded_by_its_real_path_and_replicates() {
    let s = Scenario::new();
    let link = s.path("brick-link");
    std::os::unix::fs::symlink(&s.brick, &link).unwrap();
    let real = fs::canonicalize(&s.brick).unwrap();
    let created = s
        .geo_rep(s.create_args(&[&link], &s.slave_url(), false))
        .ok();
    assert!(
        created.stdout().contains(&real.display().to_string()),
        "{}",
        created.0
    );
    s.start().ok();
    s.wait_active();
    fs::write(link.join("through-the-link"), b"x").unwrap();
    s.wait_synced_past(SystemTime::now());
    assert!(
        s.slave.join("through-the-link").is_file(),
        "{}",
        s.diagnostics()
    );
    let rows = s.status_json();
    assert_eq!(
        rows[0]["master_brick"],
        real.display().to_string(),
        "{rows:?}"
    );
}

#[test]
fn a_brick_holding_the_home_is_refused_and_nothing_reaches_the_slave() {
    let s = Scenario::new();
    // A symlink to the directory that holds the home (and the brick, and
    // the slave directory): a string prefix check sees neither.
    let up = s.path("up");
    std::os::unix::fs::symlink(s.home.parent().unwrap(), &up).unwrap();
    s.geo_rep(s.create_args(&[&up], &s.slave_url(), false))
        .fails_with(1)
        .stderr_mentions("home");
    assert!(walk(&s.slave).is_empty(), "{:?}", walk(&s.slave));
    let keys = fs::read_to_string(s.sshd.authorized_keys()).unwrap();
    assert!(!keys.contains("command="), "{keys}");
    // `start` checks again: a brick swapped for a symlink since `create`
    // is refused.
    s.create(false).ok();
    let moved = s.path("brick-moved");
    fs::rename(&s.brick, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &s.brick).unwrap();
    s.start().fails_with(1).stderr_mentions("now resolves to");
}

#[test]
fn the_home_is_private_and_refused_when_another_user_owns_it() {
    let s = Scenario::new();
    s.create_and_start(false);
    fs::write(s.brick.join("f"), b"x").unwrap();
    s.wait_synced_past(SystemTime::now());
    s.stop().ok();
    let open: Vec<String> = walk(&s.home)
        .into_iter()
        .filter_map(|p| {
            let md = p.symlink_metadata().ok()?;
            let mode = md.permissions().mode();
            (md.is_file() || md.is_dir())
                .then_some(())
                .filter(|()| mode & 0o077 != 0)
                .map(|()| format!("{} {:o}", p.display(), mode & 0o7777))
        })
        .collect();
    assert!(open.is_empty(), "readable by others: {open:?}");

    let nobody = 65534;
    std::os::unix::fs::chown(&s.home, Some(nobody), None).unwrap();
    let run = s.geo_rep(["status", &s.vol, &s.slave_url()]);
    // Given back before the checks, so the scenario can clean up.
    std::os::unix::fs::chown(&s.home, Some(0), None).unwrap();
    assert_eq!(fs::metadata(&s.home).unwrap().uid(), 0);
    run.fails_with(1).stderr_mentions("owned by");
}

#[test]
fn a_remote_command_with_shell_syntax_is_refused_before_the_slave_is_touched() {
    let s = Scenario::new();
    let marker = s.path("ran");
    let evil = format!("/bin/true;touch {};true", marker.display());
    let mut args = s.create_args(&[&s.brick], &s.slave_url(), false);
    let at = args.iter().position(|a| a == "--remote-command").unwrap();
    args[at + 1] = evil;
    let run = s.geo_rep(args);
    assert_ne!(run.code(), Some(0), "{}", run.0);
    run.stderr_mentions("remote-command");
    assert!(!marker.exists());
    let keys = fs::read_to_string(s.sshd.authorized_keys()).unwrap();
    assert!(!keys.contains("command="), "{keys}");
}

#[test]
fn what_the_slave_says_is_escaped_before_it_reaches_the_terminal() {
    let s = Scenario::new();
    // A slave that answers the greeting with a `Fatal` whose text would
    // retitle the window and clear the screen.
    let fatal = georep::proto::encode(&georep::proto::Reply::Fatal {
        message: "pwned\u{1b}]0;owned\u{7}\u{1b}[2J".into(),
    })
    .unwrap();
    let frame = s.path("fatal.frame");
    fs::write(&frame, fatal).unwrap();
    let slave = s.path("hostile-slave");
    fs::write(&slave, format!("#!/bin/sh\ncat '{}'\n", frame.display())).unwrap();
    fs::set_permissions(&slave, fs::Permissions::from_mode(0o755)).unwrap();
    let mut args = s.create_args(&[&s.brick], &s.slave_url(), false);
    let at = args.iter().position(|a| a == "--remote-command").unwrap();
    args[at + 1] = slave.display().to_string();
    let run = s.geo_rep(args);
    assert_ne!(run.code(), Some(0), "{}", run.0);
    let err = run.stderr();
    assert!(err.contains("pwned\\u{1b}]0;owned"), "{err:?}");
    assert!(!err.contains('\u{1b}') && !err.contains('\u{7}'), "{err:?}");
}

#[test]
fn a_slave_whose_host_key_signs_only_with_sha1_is_refused() {
    let mut s = Scenario::new();
    s.sshd.restart_with_sha1_rsa_host_key().unwrap();
    // Control: the daemon is up, and a client that accepts SHA-1 gets in.
    let control = georep_testkit::run_with_timeout(
        s.sshd.ssh_command(s.sshd.operator_key()).args([
            "-o",
            "HostKeyAlgorithms=+ssh-rsa",
            "true",
        ]),
        crate::common::COMMAND_TIMEOUT,
    )
    .unwrap();
    assert!(control.success(), "{control}");
    let run = s.create(false);
    assert_ne!(run.code(), Some(0), "{}", run.0);
    let keys = fs::read_to_string(s.sshd.authorized_keys()).unwrap();
    assert!(!keys.contains("command="), "{keys}");
}
