//! A hostile master against a real `geo-rep slave` process (no SSH): the
//! streams that exhausted its memory, its file descriptors under a low
//! limit, what it arms by default, and a second lane swapping a name while
//! attributes are set (issue 15).

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use georep::proto::{
    Attrs, EntryOp, FailureKind, NodeKind, Reply, Request, SpecialKind, Xattr, MAX_PRUNE_NAMES,
};
use georep::slave::policy::{recorded_stat, FakeStat, ACL_ACCESS_XATTR};
use georep_testkit::hostile::{
    frame, prune_bomb, prune_of_names, rel, sparse_bomb, zero_piece_bomb, FakeMaster,
};
use tempfile::TempDir;

use crate::common::GEO_REP;

/// The bound the issue sets on the slave's peak resident memory.
const PEAK_LIMIT_KIB: u64 = 256 * 1024;

/// Keeps a slave that would still run away from taking the machine down:
/// it then fails an allocation (and the test) instead.
const AS_LIMIT: &str = "--as=8589934592";

fn slave(root: &Path, args: &[&str], wrapper: &[&str], prelude: &[u8]) -> FakeMaster {
    let mut m = FakeMaster::spawn(Path::new(GEO_REP), root, args, wrapper, prelude)
        .unwrap_or_else(|e| panic!("{e}"));
    let hello = m.hello().unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(hello, Reply::Hello { .. }), "{hello:?}");
    m
}

fn attrs(mode: u32, uid: Option<u32>, gid: Option<u32>) -> Attrs {
    Attrs {
        mode,
        uid,
        gid,
        mtime_sec: 1_700_000_000,
        mtime_nsec: 0,
        xattrs: None,
    }
}

fn failures(replies: &[Reply]) -> Vec<&Reply> {
    replies
        .iter()
        .filter(|r| matches!(r, Reply::Failed(_) | Reply::Fatal { .. }))
        .collect()
}

/// Sends `Mknod` of `path` as the device (`major`, `minor`).
fn mknod(m: &mut FakeMaster, seq: u64, path: &str, kind: SpecialKind, mode: u32, dev: (u32, u32)) {
    let op = EntryOp::Mknod {
        path: rel(path).unwrap(),
        kind,
        mode,
        rdev: rustix::fs::makedev(dev.0, dev.1),
    };
    m.send(&Request::Entry { seq, op }).unwrap();
}

/// Commits, expecting no failure, and ends the session.
fn commit_cleanly(mut m: FakeMaster) {
    let replies = m.commit(1).unwrap();
    assert!(failures(&replies).is_empty(), "{replies:?}");
    let (status, stderr) = m.finish().unwrap();
    assert!(status.success(), "{stderr}");
}

/// The `Fatal` text among `replies`.
fn fatal(replies: &[Reply]) -> Option<&str> {
    replies.iter().find_map(|r| match r {
        Reply::Fatal { message } => Some(message.as_str()),
        _ => None,
    })
}

/// Replies until the slave's output ends (after a `Fatal`).
fn drain(m: &mut FakeMaster) -> Vec<Reply> {
    let mut got = Vec::new();
    while let Ok(r) = m.recv() {
        got.push(r);
    }
    got
}

#[test]
fn compressed_zero_pieces_are_counted_decoded_so_memory_stays_bounded() {
    let dir = TempDir::new().unwrap();
    // 64 pieces of 8 MiB of zeros, 64 × ~300 bytes on the wire, all in the
    // slave's first read: counted by wire bytes they made one batch of
    // 512 MiB. The file announces 0 bytes, so its first piece fails it and
    // the rest are skipped: the slave takes the whole stream and lives.
    let mut prelude = frame(&Request::Hello {
        protocol: georep::proto::PROTOCOL_VERSION,
        agent_version: "hostile".into(),
    })
    .unwrap();
    prelude.extend(
        frame(&Request::FileBegin {
            seq: 1,
            path: rel("zeros").unwrap(),
            size: 0,
        })
        .unwrap(),
    );
    let bomb = zero_piece_bomb(64).unwrap();
    assert!(bomb.len() < 32 * 1024, "{} bytes", bomb.len());
    prelude.extend(bomb);
    prelude.extend(frame(&Request::FileAbort).unwrap());
    let mut m = FakeMaster::spawn(
        Path::new(GEO_REP),
        dir.path(),
        &[],
        &["prlimit", AS_LIMIT, "--"],
        &prelude,
    )
    .unwrap();
    assert!(matches!(m.recv().unwrap(), Reply::Hello { .. }));
    let replies = m.barrier(2).unwrap();
    let peak = m.peak_rss_kib().expect("the slave is alive");
    println!("peak RSS of the slave: {peak} KiB");
    assert!(
        matches!(&replies[0], Reply::Failed(f) if f.seq == 1 && f.kind == FailureKind::Mismatch),
        "{replies:?}"
    );
    assert_eq!(fatal(&replies), None, "{replies:?}");
    assert!(
        peak < PEAK_LIMIT_KIB,
        "peak RSS {peak} KiB under the zero-piece stream"
    );
    let (status, stderr) = m.finish().unwrap();
    assert!(status.success(), "{stderr}");
}

#[test]
fn a_sparse_piece_of_millions_of_empty_segments_is_refused_before_decoding() {
    let dir = TempDir::new().unwrap();
    let mut m = slave(dir.path(), &[], &["prlimit", AS_LIMIT, "--"], &[]);
    m.watch_peak();
    m.send(&Request::FileBegin {
        seq: 1,
        path: rel("sparse").unwrap(),
        size: 1 << 30,
    })
    .unwrap();
    // 8 frames of ~4.2 million segments: 135 MiB or more each once decoded.
    let bomb = sparse_bomb(8).unwrap();
    assert!(bomb.len() < 64 * 1024, "{} bytes", bomb.len());
    m.send_raw(&bomb).unwrap();
    let replies = drain(&mut m);
    let peak = m.peak_rss_kib().unwrap_or(0);
    println!("peak RSS of the slave: {peak} KiB");
    let (status, stderr) = m.finish().unwrap();
    let message = fatal(&replies).unwrap_or_else(|| panic!("no Fatal: {replies:?} {stderr}"));
    assert!(message.contains("protocol error"), "{message}");
    assert!(message.contains("elements"), "{message}");
    assert!(!status.success());
    assert!(
        peak < PEAK_LIMIT_KIB,
        "peak RSS {peak} KiB under the sparse bomb"
    );
}

#[test]
fn a_prune_of_millions_of_names_is_refused_before_decoding() {
    let dir = TempDir::new().unwrap();
    fs::create_dir(dir.path().join("d")).unwrap();
    fs::write(dir.path().join("d/a"), b"kept").unwrap();
    let mut m = slave(dir.path(), &[], &["prlimit", AS_LIMIT, "--"], &[]);
    m.watch_peak();
    // Each frame: 8 MiB of one-byte names, some 200 MiB of `Vec`s decoded.
    let bomb = prune_bomb("d", 3).unwrap();
    // The slave may hang up half way: what it read is what matters.
    let _ = m.send_raw(&bomb);
    let replies = drain(&mut m);
    let peak = m.peak_rss_kib().unwrap_or(0);
    println!("peak RSS of the slave: {peak} KiB");
    let (status, stderr) = m.finish().unwrap();
    let message = fatal(&replies).unwrap_or_else(|| panic!("no Fatal: {replies:?} {stderr}"));
    assert!(message.contains("protocol error"), "{message}");
    assert!(!status.success());
    assert!(
        peak < PEAK_LIMIT_KIB,
        "peak RSS {peak} KiB under the prune bomb"
    );
    assert_eq!(fs::read(dir.path().join("d/a")).unwrap(), b"kept");
}

#[test]
fn a_prune_naming_an_empty_name_is_refused() {
    let dir = TempDir::new().unwrap();
    let mut m = slave(dir.path(), &[], &[], &[]);
    m.send(&Request::Entry {
        seq: 1,
        op: EntryOp::Prune {
            path: rel("d").unwrap(),
            keep: vec![serde_bytes::ByteBuf::from(Vec::new())],
            kinds: Vec::new(),
        },
    })
    .unwrap();
    let replies = drain(&mut m);
    let message = fatal(&replies).unwrap_or_else(|| panic!("no Fatal: {replies:?}"));
    assert!(message.contains("empty name"), "{message}");
}

/// 1,500 files, each in its own directory, then a commit: every one must
/// arrive under the given limit of open files.
fn many_directories_under(nofile: &str) {
    let dir = TempDir::new().unwrap();
    let mut m = slave(dir.path(), &[], &["prlimit", nofile, "--"], &[]);
    for i in 0..1500u64 {
        m.send_file(i, &format!("d{i}/f"), b"x", attrs(0o644, None, None))
            .unwrap();
    }
    let replies = m.commit(1).unwrap();
    assert!(
        failures(&replies).is_empty(),
        "under {nofile}: {:?}",
        failures(&replies).first()
    );
    let (status, stderr) = m.finish().unwrap();
    assert!(status.success(), "{stderr}");
    for i in [0, 777, 1499] {
        assert_eq!(fs::read(dir.path().join(format!("d{i}/f"))).unwrap(), b"x");
    }
}

#[test]
fn fifteen_hundred_directories_arrive_under_a_low_soft_fd_limit() {
    // The soft limit is raised to the hard one at start.
    many_directories_under("--nofile=128:8192");
}

#[test]
fn fifteen_hundred_directories_arrive_when_the_hard_fd_limit_is_low_too() {
    // Nothing to raise: the caches are sized from the limit.
    many_directories_under("--nofile=128:128");
}

#[test]
fn by_default_set_id_bits_devices_and_the_roots_own_mode_are_recorded_not_applied() {
    let dir = TempDir::new().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let root_owner = fs::metadata(dir.path()).unwrap().uid();
    let mut m = slave(dir.path(), &[], &[], &[]);
    m.send_file(
        1,
        "bin/su",
        b"#!/bin/sh\nid\n",
        attrs(0o4755, Some(0), Some(0)),
    )
    .unwrap();
    mknod(&mut m, 2, "disk", SpecialKind::BlockDevice, 0o640, (254, 0));
    m.send(&Request::SetAttr {
        seq: 3,
        path: rel("disk").unwrap(),
        attrs: attrs(0o660, Some(0), Some(6)),
    })
    .unwrap();
    m.send(&Request::SetAttr {
        seq: 4,
        path: rel("").unwrap(),
        attrs: attrs(0o777, Some(65534), Some(65534)),
    })
    .unwrap();
    // The master's listing says `disk` is a special file: so is the
    // placeholder, no conflict.
    m.send(&Request::Entry {
        seq: 5,
        op: EntryOp::Prune {
            path: rel("").unwrap(),
            keep: vec![b"bin".to_vec().into(), b"disk".to_vec().into()],
            kinds: vec![NodeKind::Dir, NodeKind::Other],
        },
    })
    .unwrap();
    // Replayed, nothing changes.
    mknod(&mut m, 6, "disk", SpecialKind::BlockDevice, 0o640, (254, 0));
    commit_cleanly(m);

    let su = dir.path().join("bin/su");
    let md = fs::metadata(&su).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o755, "set-id bits applied");
    assert_eq!(
        recorded_stat(&su).unwrap(),
        Some(FakeStat {
            mode: 0o104755,
            rdev: 0,
            uid: 0,
            gid: 0
        })
    );
    let disk = dir.path().join("disk");
    let md = fs::symlink_metadata(&disk).unwrap();
    assert!(md.file_type().is_file(), "{:?}", md.file_type());
    assert!(!md.file_type().is_block_device());
    assert_eq!(md.len(), 0);
    let rec = recorded_stat(&disk)
        .unwrap()
        .expect("the device is recorded");
    assert_eq!(rec.mode, 0o060660);
    assert_eq!(rec.rdev, rustix::fs::makedev(254, 0));
    let md = fs::metadata(dir.path()).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o700, "the root's mode was given away");
    assert_eq!(md.uid(), root_owner, "the root's owner was given away");
    let rec = recorded_stat(dir.path())
        .unwrap()
        .expect("the root's values");
    assert_eq!((rec.mode & 0o7777, rec.uid), (0o777, root_owner));
}

#[test]
fn with_the_opt_ins_set_id_bits_and_devices_are_applied() {
    if !rustix::process::geteuid().is_root() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let mut m = slave(dir.path(), &["--allow-devices", "--allow-setid"], &[], &[]);
    m.send_file(1, "su", b"x", attrs(0o4755, Some(0), Some(0)))
        .unwrap();
    mknod(&mut m, 2, "null", SpecialKind::CharDevice, 0o666, (1, 3));
    commit_cleanly(m);
    let su = dir.path().join("su");
    assert_eq!(fs::metadata(&su).unwrap().mode() & 0o7777, 0o4755);
    assert_eq!(recorded_stat(&su).unwrap(), None);
    let md = fs::symlink_metadata(dir.path().join("null")).unwrap();
    assert!(md.file_type().is_char_device());
    assert_eq!(md.rdev(), rustix::fs::makedev(1, 3));
}

#[test]
fn with_fake_owners_nothing_is_given_away_and_acls_are_recorded() {
    let dir = TempDir::new().unwrap();
    let me = rustix::process::geteuid().as_raw();
    let mut m = slave(dir.path(), &["--owners", "fake"], &[], &[]);
    // An ACL giving uid 65534 read access.
    let acl = acl_with_named_user(65534);
    let mut a = attrs(0o600, Some(1234), Some(5678));
    a.xattrs = Some(vec![
        Xattr {
            name: "system.posix_acl_access".as_bytes().to_vec().into(),
            value: acl.clone().into(),
        },
        Xattr {
            name: "user.georep.stat".as_bytes().to_vec().into(),
            value: b"104755 0,0 0:0".to_vec().into(),
        },
    ]);
    m.send_file(1, "secret", b"s", a.clone()).unwrap();
    m.send(&Request::SetAttr {
        seq: 2,
        path: rel("secret").unwrap(),
        attrs: a,
    })
    .unwrap();
    commit_cleanly(m);
    let f = dir.path().join("secret");
    let md = fs::metadata(&f).unwrap();
    assert_eq!(md.uid(), me, "given away");
    let mut buf = [0u8; 256];
    assert!(
        rustix::fs::lgetxattr(&f, "system.posix_acl_access", &mut buf[..]).is_err(),
        "the ACL was applied"
    );
    let n = rustix::fs::lgetxattr(&f, ACL_ACCESS_XATTR, &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], &acl[..]);
    let rec = recorded_stat(&f).unwrap().unwrap();
    // The master cannot write the record itself.
    assert_eq!((rec.mode, rec.uid, rec.gid), (0o100600, 1234, 5678));
}

/// A `system.posix_acl_access` value: owner rw, named user `uid` r, group
/// none, mask r, other none.
fn acl_with_named_user(uid: u32) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 6u16, u32::MAX),
        (2, 4, uid),
        (4, 0, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        v.extend(tag.to_le_bytes());
        v.extend(perm.to_le_bytes());
        v.extend(id.to_le_bytes());
    }
    v
}

#[test]
fn attributes_go_to_the_entry_that_was_looked_at_while_a_second_lane_swaps_it() {
    let dir = TempDir::new().unwrap();
    let root = dir.path().to_owned();
    fs::write(root.join("x"), b"file").unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("other"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let mut m = slave(&root, &[], &[], &[]);
    // The other lane: exchanges the regular file and the FIFO under `x`
    // until the slave is done.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (stop, root) = (stop.clone(), root.clone());
        std::thread::spawn(move || {
            let d = fs::File::open(&root).unwrap();
            let mut swaps = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                rustix::fs::renameat_with(&d, "x", &d, "other", rustix::fs::RenameFlags::EXCHANGE)
                    .unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let mut a = attrs(0o640, None, None);
    a.xattrs = Some(vec![Xattr {
        name: "user.k".as_bytes().to_vec().into(),
        value: b"v".to_vec().into(),
    }]);
    for seq in 0..20_000 {
        m.send(&Request::SetAttr {
            seq,
            path: rel("x").unwrap(),
            attrs: a.clone(),
        })
        .unwrap();
    }
    let replies = m.barrier(1).unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 0);
    // Looked at as a regular file but opened as the FIFO, the xattr failed.
    assert!(
        failures(&replies).is_empty(),
        "{:?}",
        failures(&replies).first()
    );
    m.finish().unwrap();
}

#[test]
fn max_processes_refuses_one_slave_process_too_many() {
    let dir = TempDir::new().unwrap();
    let home = TempDir::new().unwrap();
    let env_home = format!("HOME={}", home.path().display());
    let wrapper = ["env", env_home.as_str()];
    let args = ["--max-processes", "2"];
    let first = slave(dir.path(), &args, &wrapper, &[]);
    let _second = slave(dir.path(), &args, &wrapper, &[]);
    let mut third =
        FakeMaster::spawn(Path::new(GEO_REP), dir.path(), &args, &wrapper, &[]).unwrap();
    third
        .send(&Request::Hello {
            protocol: georep::proto::PROTOCOL_VERSION,
            agent_version: "hostile".into(),
        })
        .unwrap();
    let replies = drain(&mut third);
    let message = fatal(&replies).unwrap_or_else(|| panic!("no Fatal: {replies:?}"));
    assert!(message.contains("--max-processes 2"), "{message}");
    // A slot is free again as soon as its process ends.
    first.finish().unwrap();
    let _fourth = slave(dir.path(), &args, &wrapper, &[]);
}

#[test]
fn a_copy_within_the_policy_checks_as_the_same_tree_as_its_brick() {
    use georep::proto::{TreeDigest, TreeEntry};
    let dir = TempDir::new().unwrap();
    let mut m = slave(dir.path(), &["--owners", "fake"], &[], &[]);
    m.send_file(1, "bin/su", b"x", attrs(0o4755, Some(0), Some(0)))
        .unwrap();
    mknod(
        &mut m,
        2,
        "bin/disk",
        SpecialKind::BlockDevice,
        0o640,
        (254, 0),
    );
    assert!(failures(&m.barrier(3).unwrap()).is_empty());
    // The master's view: su setuid root, disk a device, bin as it is.
    let bin = fs::metadata(dir.path().join("bin")).unwrap();
    let mut d = TreeDigest::new(true);
    let entry =
        |path: &'static [u8], kind, mode, size, mtime: (i64, u32), owner: (u32, u32)| TreeEntry {
            path,
            kind,
            mode,
            size,
            mtime_sec: mtime.0,
            mtime_nsec: mtime.1,
            uid: owner.0,
            gid: owner.1,
        };
    let bin_mtime = (bin.mtime(), bin.mtime_nsec() as u32);
    d.add(&entry(
        b"",
        NodeKind::Dir,
        bin.mode() & 0o7777,
        0,
        bin_mtime,
        (bin.uid(), bin.gid()),
    ));
    d.add(&entry(b"disk", NodeKind::Other, 0o640, 0, (0, 0), (0, 0)));
    d.add(&entry(
        b"su",
        NodeKind::File,
        0o4755,
        1,
        (1_700_000_000, 0),
        (0, 0),
    ));
    m.send(&Request::CheckTree {
        seq: 4,
        path: rel("bin").unwrap(),
        digest: d.finish(),
        owners: true,
    })
    .unwrap();
    let replies = m.recv_until(|r| matches!(r, Reply::Tree { .. })).unwrap();
    assert_eq!(replies.last(), Some(&Reply::Tree { seq: 4, same: true }));
    m.finish().unwrap();
}

#[test]
fn prunes_of_a_million_names_each_go_through_within_bounded_memory() {
    let dir = TempDir::new().unwrap();
    fs::create_dir(dir.path().join("d")).unwrap();
    fs::write(dir.path().join("d/a"), b"kept").unwrap();
    fs::write(dir.path().join("d/b"), b"pruned").unwrap();
    let mut m = slave(dir.path(), &[], &["prlimit", AS_LIMIT, "--"], &[]);
    // Within the cap, each frame (2 MiB on the wire) decodes to more than
    // the whole read-ahead: they must still go through, one at a time.
    let prunes = prune_of_names("d", 8, MAX_PRUNE_NAMES).unwrap();
    m.send_raw(&prunes).unwrap();
    let replies = m.barrier(9).unwrap();
    let peak = m.peak_rss_kib().expect("the slave is alive");
    println!("peak RSS of the slave: {peak} KiB");
    assert!(failures(&replies).is_empty(), "{:?}", failures(&replies));
    assert!(
        peak < PEAK_LIMIT_KIB,
        "peak RSS {peak} KiB under the prunes"
    );
    assert!(dir.path().join("d/a").exists());
    assert!(!dir.path().join("d/b").exists());
    m.finish().unwrap();
}
