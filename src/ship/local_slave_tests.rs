//! Batches shipped to a slave session run in-process (`slave::serve` on a
//! socket pair), with a hook that may change the slave's tree just before
//! the slave reads a request: races with a real slave, made deterministic.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::in_process::{ship_in_process, Cut};
use super::*;
use georep_testkit::random_bytes;

fn rp(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

/// Ships `batch` from `brick` to a slave session rooted at `slave`, with
/// `memory` as the worker's; `hook` sees every request before the slave.
async fn ship_locally(
    brick: &Path,
    slave: &Path,
    memory: &mut ShipMemory,
    batch: &Batch,
    hook: impl FnMut(&Request) + Send + 'static,
) -> Result<ShipReport, ShipError> {
    ship_locally_after(brick, slave, memory, batch, None, hook).await
}

/// [`ship_locally`] with what the journal holds after the batch.
async fn ship_locally_after(
    brick: &Path,
    slave: &Path,
    memory: &mut ShipMemory,
    batch: &Batch,
    later: Option<&dyn LaterRecords>,
    hook: impl FnMut(&Request) + Send + 'static,
) -> Result<ShipReport, ShipError> {
    ship_in_process(brick, None, slave, memory, batch, later, hook, Cut::Never)
        .await
        .0
}

/// Names in `dir` (temp files included).
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// A brick and a slave that both hold `d/f` (2 MiB, large enough for
/// deltas), the slave's copy differing from the brick's in one block.
fn brick_and_slave() -> (tempfile::TempDir, PathBuf, PathBuf, Vec<u8>) {
    let t = tempfile::tempdir().unwrap();
    let (brick, slave) = (t.path().join("brick"), t.path().join("slave"));
    fs::create_dir_all(brick.join("d")).unwrap();
    fs::create_dir_all(slave.join("d")).unwrap();
    let content = random_bytes(2 << 20, 1);
    fs::write(brick.join("d/f"), &content).unwrap();
    let mut old = content.clone();
    old[1 << 20..(1 << 20) + 4096].copy_from_slice(&random_bytes(4096, 2));
    fs::write(slave.join("d/f"), &old).unwrap();
    (t, brick, slave, content)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_against_a_copy_that_changed_since_its_signature_is_resent_whole() {
    let (_t, brick, slave, content) = brick_and_slave();
    let mut batch = Batch::new();
    batch.push_data(rp("d/f"));
    // Between the signature and the delta, the slave's copy is replaced
    // with a shorter one: the delta's copies point past its end.
    let target = slave.join("d/f");
    let begins = Arc::new(Mutex::new(0));
    let seen = begins.clone();
    let hook = move |req: &Request| {
        if let Request::FileBegin { path, .. } = req {
            if *path == rp("d/f") {
                let mut n = seen.lock().unwrap();
                if *n == 0 {
                    fs::write(&target, random_bytes(444_457, 3)).unwrap();
                }
                *n += 1;
            }
        }
    };
    let mut memory = ShipMemory::default();
    let report = ship_locally(&brick, &slave, &mut memory, &batch, hook)
        .await
        .expect("the batch completes");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(fs::read(slave.join("d/f")).unwrap(), content);
    assert_eq!(names(&slave.join("d")), ["f"], "no temp file left");
    assert_eq!(*begins.lock().unwrap(), 2, "sent as a delta, then whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_named_twice_in_a_batch_is_sent_once() {
    let (_t, brick, slave, content) = brick_and_slave();
    // Written (a data record), and owed by an earlier batch whose send was
    // abandoned, named here by an attribute record: both lists name it.
    let mut batch = Batch::new();
    batch.push_data(rp("d/f"));
    batch.push_meta(rp("d/f"));
    let mut memory = ShipMemory::default();
    memory.owe(&fs::symlink_metadata(brick.join("d/f")).unwrap());
    let begins = Arc::new(Mutex::new(0));
    let seen = begins.clone();
    let hook = move |req: &Request| {
        if matches!(req, Request::FileBegin { .. }) {
            *seen.lock().unwrap() += 1;
        }
    };
    let report = ship_locally(&brick, &slave, &mut memory, &batch, hook)
        .await
        .expect("the batch completes");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(fs::read(slave.join("d/f")).unwrap(), content);
    assert_eq!(*begins.lock().unwrap(), 1, "sent once, as one delta");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_read_through_a_symlink_that_replaced_an_ancestor() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let t = tempfile::tempdir().unwrap();
    let (brick, slave, outside) = (
        t.path().join("brick"),
        t.path().join("slave"),
        t.path().join("outside"),
    );
    for d in [brick.join("d"), slave.join("d"), outside.clone()] {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(slave.join("d/f"), b"slave").unwrap();
    fs::set_permissions(slave.join("d/f"), fs::Permissions::from_mode(0o644)).unwrap();
    let slave_before = fs::symlink_metadata(slave.join("d/f")).unwrap();
    // Outside the brick: other content, mode and an xattr.
    fs::write(outside.join("f"), b"secret").unwrap();
    fs::set_permissions(outside.join("f"), fs::Permissions::from_mode(0o600)).unwrap();
    let xattrs = rustix::fs::setxattr(
        outside.join("f"),
        "user.secret",
        b"1",
        rustix::fs::XattrFlags::empty(),
    )
    .is_ok();
    // The records of d/f are replayed after d became a symlink out.
    fs::remove_dir(brick.join("d")).unwrap();
    symlink(&outside, brick.join("d")).unwrap();
    let mut batch = Batch::new();
    batch.push_data(rp("d/f"));
    batch.push_meta(rp("d/f"));
    let mut memory = ShipMemory::default();
    let report = ship_locally(&brick, &slave, &mut memory, &batch, |_| {})
        .await
        .expect("the batch completes");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(fs::read(slave.join("d/f")).unwrap(), b"slave");
    let after = fs::symlink_metadata(slave.join("d/f")).unwrap();
    assert_eq!(after.permissions().mode() & 0o7777, 0o644);
    assert_eq!(
        (after.mtime(), after.mtime_nsec()),
        (slave_before.mtime(), slave_before.mtime_nsec())
    );
    if xattrs {
        let mut buf = [0u8; 16];
        assert!(rustix::fs::getxattr(slave.join("d/f"), "user.secret", &mut buf).is_err());
    }
}

/// Later journal records that take away the paths given.
struct Removed(Vec<RelPath>);

impl LaterRecords for Removed {
    fn removed(&self) -> Option<HashSet<RelPath>> {
        Some(self.0.iter().cloned().collect())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_written_in_its_batch_and_renamed_after_it_is_not_kept_stale() {
    let t = tempfile::tempdir().unwrap();
    let (brick, slave) = (t.path().join("brick"), t.path().join("slave"));
    for root in [&brick, &slave] {
        fs::create_dir_all(root.join("d")).unwrap();
        fs::write(root.join("d/other"), b"same on both").unwrap();
    }
    fs::write(slave.join("d/y"), random_bytes(52_079, 1)).unwrap();
    let new = random_bytes(1657, 2);
    fs::write(brick.join("d/y"), &new).unwrap();
    // The batch journals the write of d/y and touches d; before it ships,
    // a later record renames d/y to d/z and d/other to d/kept.
    let mut batch = Batch::new();
    batch.mark_journal();
    batch.push_entry(Entry::Create(rp("d/y")));
    batch.push_data(rp("d/y"));
    fs::rename(brick.join("d/y"), brick.join("d/z")).unwrap();
    fs::rename(brick.join("d/other"), brick.join("d/kept")).unwrap();
    let later = Removed(vec![rp("d/y"), rp("d/other")]);
    let mut memory = ShipMemory::default();
    ship_locally_after(&brick, &slave, &mut memory, &batch, Some(&later), |_| {})
        .await
        .expect("the batch completes");
    // A name this batch did not write stays for its rename to move.
    assert_eq!(names(&slave.join("d")), ["other"]);

    // The next batch replays the renames (a rename record carries no data).
    let mut next = Batch::new();
    next.mark_journal();
    for (from, to) in [("d/y", "d/z"), ("d/other", "d/kept")] {
        next.push_entry(Entry::Rename {
            from: rp(from),
            to: rp(to),
        });
        next.push_meta(rp(to));
    }
    let report = ship_locally(&brick, &slave, &mut memory, &next, |_| {})
        .await
        .expect("the batch completes");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let z = fs::read(slave.join("d/z")).unwrap();
    assert!(
        z == new,
        "d/z on the slave: {} bytes, not the brick's {} (stale)",
        z.len(),
        new.len()
    );
    assert_eq!(fs::read(slave.join("d/kept")).unwrap(), b"same on both");
    assert_eq!(names(&slave.join("d")), ["kept", "z"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_rename_of_a_name_created_alone_keeps_the_hard_link_group() {
    use std::os::unix::fs::MetadataExt;
    let t = tempfile::tempdir().unwrap();
    let (brick, slave) = (t.path().join("brick"), t.path().join("slave"));
    fs::create_dir_all(&brick).unwrap();
    fs::create_dir_all(&slave).unwrap();
    fs::create_dir(brick.join("a")).unwrap();
    fs::write(brick.join("a/f"), b"").unwrap();
    fs::hard_link(brick.join("a/f"), brick.join("d")).unwrap();
    // The batch journals the creation of `a/f` and the link `d`, empty
    // both: the slave makes each as an empty file of its own. Before the
    // data phase reads the brick, `a/f` is written and renamed to `x`, and
    // `a` removed: the slave keeps `a` until the later records remove it.
    let mut batch = Batch::new();
    batch.mark_journal();
    batch.push_entry(Entry::Mkdir(rp("a")));
    batch.push_entry(Entry::Create(rp("a/f")));
    batch.push_entry(Entry::Link(rp("d")));
    batch.push_data(rp("a/f"));
    batch.push_data(rp("d"));
    let b = brick.clone();
    let mut done = false;
    let hook = move |req: &Request| {
        if matches!(req, Request::Barrier { .. }) && !done {
            done = true;
            fs::write(b.join("a/f"), b"hello").unwrap();
            fs::rename(b.join("a/f"), b.join("x")).unwrap();
            fs::remove_dir(b.join("a")).unwrap();
        }
    };
    let later = Removed(vec![rp("a/f"), rp("a")]);
    let mut memory = ShipMemory::default();
    ship_locally_after(&brick, &slave, &mut memory, &batch, Some(&later), hook)
        .await
        .expect("the batch completes");

    // The next batch replays the rename: the slave's `a/f`, an empty copy of
    // its own, must not stand for the brick's `x`, a name of `d`'s file.
    let mut next = Batch::new();
    next.mark_journal();
    next.push_entry(Entry::Rename {
        from: rp("a/f"),
        to: rp("x"),
    });
    next.push_entry(Entry::Rmdir(rp("a")));
    next.push_meta(rp("x"));
    let report = ship_locally(&brick, &slave, &mut memory, &next, |_| {})
        .await
        .expect("the batch completes");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(fs::read(slave.join("x")).unwrap(), b"hello");
    assert_eq!(fs::read(slave.join("d")).unwrap(), b"hello");
    let (x, d) = (
        fs::metadata(slave.join("x")).unwrap(),
        fs::metadata(slave.join("d")).unwrap(),
    );
    assert_eq!(
        (x.dev(), x.ino()),
        (d.dev(), d.ino()),
        "x and d are one file"
    );
    assert_eq!(names(&slave), ["d", "x"]);
}
