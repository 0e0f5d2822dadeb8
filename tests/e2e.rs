//! A brick replicated end to end: live changes (Changelog Crawl) and a brick
//! that already holds a tree at start (Hybrid Crawl).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use georep_testkit::{assert_trees_equal, random_bytes, sample_tree, set_mtime, SampleTree};

use crate::common::Scenario;

fn past(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_400_000_000 + secs)
}

#[test]
fn live_changes_reach_the_slave_and_the_trees_end_up_identical() {
    let s = Scenario::new();

    // create prints the slave's host key fingerprint.
    let created = s.create(false).ok();
    let fp = s.sshd.host_key_fingerprint().unwrap();
    assert!(
        created.stdout().contains(&fp),
        "create should print the host key fingerprint {fp}\n{}",
        created.0
    );

    s.start().ok();
    s.wait_active();

    let b = &s.brick;
    // Files: empty, small, 1 MiB random; nested directories.
    fs::write(b.join("empty"), b"").unwrap();
    fs::write(b.join("hello.txt"), b"hello, world\n").unwrap();
    fs::create_dir_all(b.join("a/b/c")).unwrap();
    fs::write(b.join("a/b/c/random.bin"), random_bytes(1 << 20, 1)).unwrap();
    fs::write(b.join("a/b/notes.txt"), b"first version\n").unwrap();
    fs::write(b.join("a/to-truncate"), random_bytes(100_000, 2)).unwrap();
    fs::write(b.join("a/doomed"), b"bye").unwrap();
    fs::create_dir_all(b.join("tree/x/y")).unwrap();
    fs::write(b.join("tree/x/y/z"), b"deep").unwrap();
    fs::write(b.join("tree/x/w"), b"w").unwrap();
    fs::create_dir_all(b.join("olddir/sub")).unwrap();
    fs::write(b.join("olddir/sub/kept"), b"moves along with its dir").unwrap();
    fs::write(b.join("oldname"), b"renamed file").unwrap();
    fs::write(b.join("replaced"), b"will be replaced by a rename").unwrap();
    fs::write(b.join("replacer"), b"replaces it").unwrap();

    // Modify: overwrite in place and append.
    fs::write(b.join("a/b/notes.txt"), b"second version, longer\n").unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(b.join("hello.txt"))
        .unwrap()
        .write_all(b"appended\n")
        .unwrap();
    // Truncate.
    fs::OpenOptions::new()
        .write(true)
        .open(b.join("a/to-truncate"))
        .unwrap()
        .set_len(1234)
        .unwrap();
    // Rename a file, a directory, and a file over an existing one.
    fs::rename(b.join("oldname"), b.join("a/newname")).unwrap();
    fs::rename(b.join("olddir"), b.join("newdir")).unwrap();
    fs::rename(b.join("replacer"), b.join("replaced")).unwrap();
    // Delete a file and a directory tree.
    fs::remove_file(b.join("a/doomed")).unwrap();
    fs::remove_dir_all(b.join("tree")).unwrap();
    // Symlinks: relative, and dangling.
    symlink("b/c/random.bin", b.join("a/link-to-random")).unwrap();
    symlink("../nowhere/at/all", b.join("a/dangling")).unwrap();
    // Modes.
    fs::set_permissions(b.join("hello.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(b.join("a/b/c"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(b.join("a/newname"), fs::Permissions::from_mode(0o755)).unwrap();
    // mtimes in the past: a file, and a directory whose content is final.
    set_mtime(&b.join("a/b/c/random.bin"), past(1), true).unwrap();
    set_mtime(&b.join("newdir/sub"), past(2), true).unwrap();

    let t = SystemTime::now();
    s.wait_synced_past(t);
    assert_trees_equal(&s.brick, &s.slave);

    // A second round on a synced tree.
    fs::write(b.join("a/b/notes.txt"), b"third\n").unwrap();
    fs::remove_file(b.join("a/link-to-random")).unwrap();
    fs::rename(b.join("newdir"), b.join("a/b/moved")).unwrap();
    let t = SystemTime::now();
    s.wait_synced_past(t);
    assert_trees_equal(&s.brick, &s.slave);

    s.stop().ok();
    let status = s.status_json();
    assert!(!status.is_empty());
    for brick in &status {
        assert_eq!(brick["status"], "Stopped", "after stop: {brick}");
    }
}

#[test]
fn a_brick_that_already_holds_a_tree_is_fully_synced_by_the_hybrid_crawl() {
    let s = Scenario::new();
    sample_tree(
        &s.brick,
        &SampleTree {
            files: 400,
            dirs: 40,
            symlinks: 30,
            max_file_size: 64 * 1024,
            seed: 11,
        },
    )
    .unwrap();
    let t = SystemTime::now();

    s.create_and_start(false);
    s.wait_synced_past(t);
    assert_trees_equal(&s.brick, &s.slave);

    let status = s.status_json();
    assert_eq!(status.len(), 1, "one brick: {status:?}");
    assert_eq!(status[0]["master_vol"], "gv0");
    assert_eq!(status[0]["master_brick"], s.brick.display().to_string());
    assert!(status[0]["last_synced"].is_string(), "{}", status[0]);
}

#[test]
fn status_table_has_the_glusterfs_columns() {
    let s = Scenario::new();
    s.create(false).ok();
    let out = s.geo_rep(["status", &s.vol, &s.slave_url()]).ok();
    // GlusterFS prints a blank line before the header; so does georep.
    let stdout = out.stdout();
    let mut lines = stdout.lines().skip_while(|l| l.trim().is_empty());
    let header = lines.next().unwrap_or_default().to_owned();
    let rule = lines.next().unwrap_or_default();
    assert!(
        !rule.is_empty() && rule.chars().all(|c| c == '-'),
        "a dashed rule follows the header: {rule:?}"
    );
    let cols = [
        "MASTER NODE",
        "MASTER VOL",
        "MASTER BRICK",
        "SLAVE USER",
        "SLAVE",
        "SLAVE NODE",
        "STATUS",
        "CRAWL STATUS",
        "LAST_SYNCED",
    ];
    let row = lines.next().unwrap_or_default();
    assert!(
        row.contains("Created"),
        "a new session's row says Created: {row:?}"
    );
    let mut at = 0;
    for c in cols {
        let i = header[at..]
            .find(c)
            .unwrap_or_else(|| panic!("column {c:?} missing or out of order in {header:?}"));
        at += i + c.len();
    }
    assert!(
        out.stdout().contains(&s.brick.display().to_string()),
        "the brick's row is missing\n{}",
        out.0
    );
}

#[test]
fn changes_made_while_stopped_are_healed_at_the_next_start() {
    let s = Scenario::new();
    let b = &s.brick;
    fs::create_dir_all(b.join("keep/sub")).unwrap();
    fs::write(b.join("keep/sub/file"), b"kept").unwrap();
    fs::write(b.join("deleted-later"), b"x").unwrap();
    fs::create_dir_all(b.join("tree-deleted-later/deep")).unwrap();
    fs::write(b.join("tree-deleted-later/deep/f"), b"y").unwrap();
    fs::write(b.join("renamed-later"), b"z").unwrap();
    let t = SystemTime::now();
    s.create_and_start(false);
    s.wait_synced_past(t);
    assert_trees_equal(&s.brick, &s.slave);

    // No hook runs while stopped: none of this is journalled.
    s.stop().ok();
    fs::remove_file(b.join("deleted-later")).unwrap();
    fs::remove_dir_all(b.join("tree-deleted-later")).unwrap();
    fs::rename(b.join("renamed-later"), b.join("keep/renamed")).unwrap();
    fs::write(b.join("keep/sub/file"), b"changed while stopped").unwrap();
    fs::write(b.join("new-while-stopped"), b"new").unwrap();

    let t = SystemTime::now();
    s.start().ok();
    s.wait_synced_past(t);
    assert_trees_equal(&s.brick, &s.slave);
}

#[test]
fn create_force_into_a_non_empty_slave_makes_it_an_exact_image() {
    let s = Scenario::new();
    fs::write(s.brick.join("wanted"), b"from the brick").unwrap();
    fs::create_dir_all(s.slave.join("stale/dir")).unwrap();
    fs::write(s.slave.join("stale/dir/f"), b"not on the brick").unwrap();
    fs::write(s.slave.join("wanted"), b"old content").unwrap();

    let created = s.create(true).ok();
    assert!(
        created.stdout().contains("not empty"),
        "create force warns about a non-empty slave directory\n{}",
        created.0
    );
    let t = SystemTime::now();
    s.start().ok();
    s.wait_synced_past(t);
    assert_trees_equal(&s.brick, &s.slave);
}

#[test]
fn a_touched_directory_is_listed_whole_only_where_the_slave_differs() {
    let s = Scenario::new();
    let d = s.brick.join("d");
    fs::create_dir(&d).unwrap();
    // Long names: the directory's name list (about 140 kB) dwarfs what a
    // batch of one rename sends.
    let files = 2000;
    let name = |i: usize| format!("{i:04}-{}", "n".repeat(64));
    for i in 0..files {
        fs::write(d.join(name(i)), b"x").unwrap();
    }
    let t = SystemTime::now();
    s.create_and_start(false);
    s.wait_synced_past(t);

    // A name the brick never had (as entries journalled out of order may
    // leave): the batch that touches its directory removes it.
    fs::write(s.slave.join("d/stray"), b"not on the brick").unwrap();
    let t = SystemTime::now();
    fs::rename(d.join(name(0)), d.join("renamed-0")).unwrap();
    s.wait_synced_past(t);
    assert_trees_equal(&s.brick, &s.slave);

    // The slave's listing matches: the name list does not travel.
    let before = s.bytes_sent();
    let t = SystemTime::now();
    fs::rename(d.join(name(1)), d.join("renamed-1")).unwrap();
    s.wait_synced_past(t);
    let sent = s.bytes_sent() - before;
    let list = (files * name(0).len()) as u64;
    assert!(
        sent < list / 10,
        "one rename sent {sent} bytes; the directory's name list is {list}"
    );
    assert_trees_equal(&s.brick, &s.slave);
}

#[test]
fn renames_that_go_on_while_batches_ship_send_no_file_again() {
    let s = Scenario::new();
    let d = s.brick.join("d");
    fs::create_dir(&d).unwrap();
    let files = 2000;
    let renamed = 400;
    let content = random_bytes(4096, 7);
    for i in 0..files {
        fs::write(d.join(format!("f{i:04}")), &content).unwrap();
    }
    let t = SystemTime::now();
    s.create_and_start(false);
    s.wait_synced_past(t);

    // Spread over many batches: each is shipped while the directory keeps
    // changing, so its listing already shows renames that later batches
    // replay. Such a name stays on the slave for the later rename to move
    // (pruned, its file would be sent again: 1.8 MB here instead of about
    // 130 kB; and had the heal resent the directory whole, more than all
    // its files). A name the brick never had still goes.
    fs::write(s.slave.join("d/stray"), b"not on the brick").unwrap();
    let before = s.bytes_sent();
    for i in 0..renamed {
        fs::rename(d.join(format!("f{i:04}")), d.join(format!("g{i:04}"))).unwrap();
        if i % 10 == 9 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let t = SystemTime::now();
    s.wait_synced_past(t);
    let sent = s.bytes_sent() - before;
    assert_trees_equal(&s.brick, &s.slave);
    let dir = (files * content.len()) as u64;
    eprintln!("{renamed} renames in a directory of {files} files: {sent} bytes sent");
    assert!(
        sent < dir / 16,
        "{renamed} renames in a directory of {files} files sent {sent} bytes; the files hold {dir}"
    );
}

#[test]
fn a_renamed_directory_that_matches_the_slave_is_not_walked_again() {
    let s = Scenario::new();
    let files = 2000;
    let content = random_bytes(4096, 9);
    for i in 0..files {
        let dir = s.brick.join(format!("a/sub{}", i % 4));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("file-{i:04}")), &content).unwrap();
    }
    let t = SystemTime::now();
    s.create_and_start(false);
    s.wait_synced_past(t);
    // Older than the hook's rescan of a renamed directory looks back.
    std::thread::sleep(Duration::from_secs(2));

    // The rename, and one digest of the whole subtree: neither the names
    // nor the paths of its files travel.
    let before = s.bytes_sent();
    let t = SystemTime::now();
    fs::rename(s.brick.join("a"), s.brick.join("b")).unwrap();
    s.wait_synced_past(t);
    let sent = s.bytes_sent() - before;
    assert_trees_equal(&s.brick, &s.slave);
    let tree = (files * content.len()) as u64;
    assert!(
        sent < tree / 1000,
        "renaming a directory of {files} files sent {sent} bytes; the files hold {tree}"
    );

    // Where the slave's copy differs, the walk still puts it right.
    fs::write(s.slave.join("b/sub1/stray"), b"not on the brick").unwrap();
    fs::write(s.slave.join("b/sub2/file-0002"), b"other").unwrap();
    let t = SystemTime::now();
    fs::rename(s.brick.join("b"), s.brick.join("c")).unwrap();
    s.wait_synced_past(t);
    assert_trees_equal(&s.brick, &s.slave);
}
