//! The hook against a real directory and real inotify. Every test polls with
//! a timeout (rollover, read what is closed, check) instead of sleeping.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::*;
use crate::changelog::{list_closed, read_file};

const TIMEOUT: Duration = Duration::from_secs(20);

struct Setup {
    brick: tempfile::TempDir,
    journal: tempfile::TempDir,
    outside: tempfile::TempDir,
    hook: Option<Hook>,
}

impl Setup {
    fn new(exclude: &[&str], rollover: Duration) -> Setup {
        let brick = tempfile::tempdir().unwrap();
        let journal = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        for x in exclude {
            fs::create_dir_all(brick.path().join(x)).unwrap();
        }
        let cfg = HookConfig {
            brick: brick.path().to_owned(),
            journal_dir: journal.path().to_owned(),
            rollover,
            exclude: exclude.iter().map(|x| brick.path().join(x)).collect(),
        };
        let hook = Hook::start(cfg).unwrap();
        Setup {
            brick,
            journal,
            outside,
            hook: Some(hook),
        }
    }

    fn b(&self, rel: &str) -> PathBuf {
        self.brick.path().join(rel)
    }

    fn hook(&self) -> &Hook {
        self.hook.as_ref().unwrap()
    }

    /// All records of all closed files so far, in order.
    fn records(&self) -> Vec<Record> {
        list_closed(self.journal.path(), Stime::from_nanos(i64::MIN))
            .unwrap()
            .iter()
            .flat_map(|f| read_file(&f.path).unwrap().records)
            .collect()
    }

    /// Rolls over and reads until `done` holds for the records.
    fn wait_for(&self, what: &str, done: impl Fn(&[Record]) -> bool) -> Vec<Record> {
        let t0 = Instant::now();
        loop {
            self.hook().rollover_now().unwrap();
            let recs = self.records();
            if done(&recs) {
                return recs;
            }
            assert!(
                t0.elapsed() < TIMEOUT,
                "timed out waiting for {what}; got {recs:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Makes a marker file and waits until it is journalled: everything done
    /// before it is then journalled too.
    fn settle(&self, name: &str) -> Vec<Record> {
        fs::write(self.b(name), b"").unwrap();
        let m = Record::Create(p(name));
        self.wait_for(name, |r| r.contains(&m))
    }
}

fn p(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

/// `want` appears in `got` in this order (other records may be between).
fn assert_subsequence(got: &[Record], want: &[Record]) {
    let mut it = got.iter();
    for w in want {
        assert!(
            it.any(|g| g == w),
            "{w:?} missing or out of order in {got:#?}"
        );
    }
}

fn is_start_gap(r: &Record) -> bool {
    matches!(r, Record::Gap { reason, .. } if reason.contains("journal hook started"))
}

#[test]
fn first_file_starts_with_a_gap() {
    let s = Setup::new(&[], DEFAULT_ROLLOVER);
    let recs = s.wait_for("start gap", |r| !r.is_empty());
    assert!(is_start_gap(&recs[0]), "{recs:?}");
}

#[test]
fn records_basic_operations_in_order() {
    let s = Setup::new(&[], DEFAULT_ROLLOVER);
    fs::write(s.b("a"), b"hello").unwrap();
    fs::create_dir(s.b("d")).unwrap();
    // Changes inside a brand-new directory before its watch exists show up
    // only as its final state (scan); wait so that the order below is exact.
    s.settle("m0");
    std::os::unix::fs::symlink("../a", s.b("d/ln")).unwrap();
    fs::set_permissions(s.b("a"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::rename(s.b("a"), s.b("d/b")).unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(s.b("d/b"))
        .unwrap()
        .write_all(b" world")
        .unwrap();
    // An entry already gone when its creation is handled is recorded from
    // what inotify says, which cannot tell a symlink from a file: let the
    // symlink live until it has been seen.
    s.settle("m1");
    fs::remove_file(s.b("d/ln")).unwrap();
    fs::create_dir(s.b("e")).unwrap();
    fs::remove_dir(s.b("e")).unwrap();
    fs::remove_file(s.b("d/b")).unwrap();
    let recs = s.settle("z");
    assert_subsequence(
        &recs,
        &[
            Record::Create(p("a")),
            Record::Data(p("a")),
            Record::Mkdir(p("d")),
            Record::Symlink(p("d/ln")),
            Record::Meta(p("a")),
            Record::Rename {
                from: p("a"),
                to: p("d/b"),
            },
            Record::Data(p("d/b")),
            Record::Unlink(p("d/ln")),
            Record::Mkdir(p("e")),
            Record::Rmdir(p("e")),
            Record::Unlink(p("d/b")),
        ],
    );
    // Within one file, writes of one path in a row are one Data record (a
    // timer rollover may fall between them, so not across files).
    for f in list_closed(s.journal.path(), Stime::from_nanos(i64::MIN)).unwrap() {
        let recs = read_file(&f.path).unwrap().records;
        for w in recs.windows(2) {
            let dup = matches!(&w[0], Record::Data(_)) && w[0] == w[1];
            assert!(!dup, "{recs:#?}");
        }
    }
}

use std::io::Write;

#[test]
fn a_rename_is_one_rename_record() {
    let s = Setup::new(&[], DEFAULT_ROLLOVER);
    fs::write(s.b("f"), b"x").unwrap();
    fs::create_dir(s.b("dir")).unwrap();
    s.settle("m1");
    fs::rename(s.b("f"), s.b("g")).unwrap();
    fs::rename(s.b("dir"), s.b("dir2")).unwrap();
    let recs = s.settle("m2");
    let after: Vec<_> = recs
        .iter()
        .skip_while(|r| **r != Record::Create(p("m1")))
        .collect();
    let renames: Vec<_> = after
        .iter()
        .filter(|r| matches!(r, Record::Rename { .. }))
        .collect();
    assert_eq!(
        renames,
        vec![
            &&Record::Rename {
                from: p("f"),
                to: p("g")
            },
            &&Record::Rename {
                from: p("dir"),
                to: p("dir2")
            },
        ]
    );
    for bad in [
        Record::Unlink(p("f")),
        Record::Create(p("g")),
        Record::Unlink(p("dir")),
        Record::Mkdir(p("dir2")),
    ] {
        assert!(!after.contains(&&bad), "{bad:?} in {after:#?}");
    }
}

#[test]
fn moves_across_the_brick_boundary() {
    let s = Setup::new(&[], DEFAULT_ROLLOVER);
    fs::write(s.b("leaving"), b"x").unwrap();
    s.settle("m1");
    fs::rename(s.b("leaving"), s.outside.path().join("left")).unwrap();
    fs::write(s.outside.path().join("coming"), b"content").unwrap();
    fs::rename(s.outside.path().join("coming"), s.b("came")).unwrap();
    let recs = s.settle("m2");
    assert_subsequence(
        &recs,
        &[
            Record::Create(p("m1")),
            Record::Unlink(p("leaving")),
            Record::Create(p("came")),
            Record::Data(p("came")),
        ],
    );
}

fn make_files(dir: &Path, n: usize) {
    for i in 0..n {
        fs::write(dir.join(format!("f{i:03}")), format!("file {i}")).unwrap();
    }
}

fn assert_all_files(recs: &[Record], dir: &str, n: usize) {
    for i in 0..n {
        let f = p(&format!("{dir}/f{i:03}"));
        let created = recs.iter().position(|r| *r == Record::Create(f.clone()));
        let created = created.unwrap_or_else(|| panic!("no Create of {f:?}"));
        assert!(
            recs[created..].contains(&Record::Data(f.clone())),
            "no Data of {f:?} after its Create"
        );
    }
}

#[test]
fn new_directory_with_200_files_moved_in() {
    let s = Setup::new(&[], DEFAULT_ROLLOVER);
    let src = s.outside.path().join("big");
    fs::create_dir(&src).unwrap();
    make_files(&src, 200);
    fs::create_dir(src.join("sub")).unwrap();
    make_files(&src.join("sub"), 10);
    fs::rename(&src, s.b("big")).unwrap();
    let recs = s.settle("m");
    assert!(recs.contains(&Record::Mkdir(p("big"))));
    assert!(recs.contains(&Record::Mkdir(p("big/sub"))));
    assert_all_files(&recs, "big", 200);
    assert_all_files(&recs, "big/sub", 10);
    // And the moved-in directory is watched afterwards.
    fs::write(s.b("big/sub/later"), b"x").unwrap();
    s.wait_for("big/sub/later", |r| {
        r.contains(&Record::Data(p("big/sub/later")))
    });
}

#[test]
fn new_directory_with_200_fast_writes() {
    let s = Setup::new(&[], DEFAULT_ROLLOVER);
    fs::create_dir(s.b("fast")).unwrap();
    make_files(&s.b("fast"), 200);
    fs::create_dir_all(s.b("fast/a/b/c")).unwrap();
    fs::write(s.b("fast/a/b/c/deep"), b"deep").unwrap();
    let recs = s.settle("m");
    assert_all_files(&recs, "fast", 200);
    assert_subsequence(
        &recs,
        &[
            Record::Mkdir(p("fast")),
            Record::Mkdir(p("fast/a")),
            Record::Mkdir(p("fast/a/b")),
            Record::Mkdir(p("fast/a/b/c")),
            Record::Create(p("fast/a/b/c/deep")),
        ],
    );
    assert!(recs.contains(&Record::Data(p("fast/a/b/c/deep"))));
}

#[test]
fn excluded_directory_is_ignored() {
    let s = Setup::new(&[".georep"], DEFAULT_ROLLOVER);
    fs::write(s.b(".georep/x"), b"x").unwrap();
    fs::create_dir(s.b(".georep/sub")).unwrap();
    fs::write(s.b(".georep/sub/y"), b"y").unwrap();
    fs::write(s.b("kept"), b"k").unwrap();
    let recs = s.settle("m");
    let ex = p(".georep");
    for r in &recs {
        let paths: Vec<&RelPath> = match r {
            Record::Rename { from, to } => vec![from, to],
            Record::Gap { .. } => vec![],
            Record::Create(x)
            | Record::Mkdir(x)
            | Record::Mknod(x)
            | Record::Symlink(x)
            | Record::Link(x)
            | Record::Unlink(x)
            | Record::Rmdir(x)
            | Record::Data(x)
            | Record::Meta(x) => vec![x],
        };
        assert!(!paths.iter().any(|x| x.starts_with(&ex)), "{r:?}");
    }
    assert!(recs.contains(&Record::Create(p("kept"))));
    // Moving out of the excluded dir is a creation; into it, a removal.
    fs::rename(s.b(".georep/x"), s.b("out")).unwrap();
    fs::rename(s.b("kept"), s.b(".georep/kept")).unwrap();
    let recs = s.settle("m2");
    assert_subsequence(
        &recs,
        &[
            Record::Create(p("m")),
            Record::Create(p("out")),
            Record::Unlink(p("kept")),
        ],
    );
}

#[test]
fn closed_through_advances_without_activity_and_writes_no_file() {
    let s = Setup::new(&[], Duration::from_millis(30));
    let hook = s.hook();
    let mut seen = vec![hook.closed_through()];
    let t0 = Instant::now();
    while seen.len() < 4 {
        let now = hook.closed_through();
        if now > *seen.last().unwrap() {
            seen.push(now);
        }
        assert!(t0.elapsed() < TIMEOUT, "closed_through stuck at {seen:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Only the start Gap's file: idle intervals write nothing.
    let files = list_closed(s.journal.path(), Stime::from_nanos(i64::MIN)).unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].end <= hook.closed_through());
    assert!(hook.error().is_none());
}

#[test]
fn closed_through_covers_what_was_journalled() {
    let s = Setup::new(&[], Duration::from_secs(3600));
    fs::write(s.b("a"), b"1").unwrap();
    let recs = s.settle("m");
    let through = s.hook().closed_through();
    let files = list_closed(s.journal.path(), Stime::from_nanos(i64::MIN)).unwrap();
    assert_eq!(files.last().unwrap().end, through);
    assert!(recs.contains(&Record::Create(p("a"))));
    // Consecutive files: each starts where the previous interval ended.
    let cls: Vec<_> = files.iter().map(|f| read_file(&f.path).unwrap()).collect();
    for w in cls.windows(2) {
        assert!(
            w[0].end <= w[1].start,
            "{:?} then {:?}",
            w[0].end,
            w[1].start
        );
    }
}

#[test]
fn stop_closes_the_last_file() {
    let mut s = Setup::new(&[], Duration::from_secs(3600));
    // The start Gap is in the open file; nothing has rolled over yet.
    assert!(s.journal.path().join(CURRENT_FILE).exists());
    assert!(s.records().is_empty());
    s.hook.take().unwrap().stop().unwrap();
    let recs = s.records();
    assert!(is_start_gap(&recs[0]), "{recs:?}");
    assert!(!s.journal.path().join(CURRENT_FILE).exists());
}

#[test]
fn restart_discards_unclosed_file_and_says_so() {
    let brick = tempfile::tempdir().unwrap();
    let journal = tempfile::tempdir().unwrap();
    fs::write(journal.path().join(CURRENT_FILE), b"half written").unwrap();
    let hook = Hook::start(HookConfig::new(brick.path(), journal.path())).unwrap();
    hook.stop().unwrap();
    let files = list_closed(journal.path(), Stime::from_nanos(i64::MIN)).unwrap();
    let recs = read_file(&files[0].path).unwrap().records;
    assert!(
        matches!(&recs[0], Record::Gap { reason, .. } if reason.contains("discarded")),
        "{recs:?}"
    );
}

#[test]
fn hard_links_and_nasty_names() {
    let s = Setup::new(&[], DEFAULT_ROLLOVER);
    fs::write(s.b("orig"), b"data").unwrap();
    s.settle("m1");
    fs::hard_link(s.b("orig"), s.b("second")).unwrap();
    let nasty = std::ffi::OsStr::from_bytes(b"caf\xe9\nname");
    fs::write(s.brick.path().join(nasty), b"x").unwrap();
    let recs = s.settle("m2");
    assert_subsequence(
        &recs,
        &[
            Record::Create(p("m1")),
            Record::Link(p("second")),
            Record::Data(p("second")),
            Record::Create(RelPath::new(b"caf\xe9\nname".to_vec()).unwrap()),
        ],
    );
}

#[test]
fn start_refuses_a_missing_brick() {
    let journal = tempfile::tempdir().unwrap();
    let err = Hook::start(HookConfig::new("/nonexistent/brick", journal.path())).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/brick"), "{err}");
}

/// Feeds hand-made notify events through the hook's own channel, in order
/// and in one message: events that the hook's own actions cause (a scan's
/// marker) then come after all of them, as they would after one inotify read.
fn inject(s: &Setup, evs: Vec<notify::Result<notify::Event>>) {
    let evs = evs.into_iter().map(|ev| (Stime::now(), ev)).collect();
    s.hook().tx.send(Msg::Events(evs)).unwrap();
}

fn ev(kind: EventKind, paths: &[PathBuf], tracker: Option<usize>) -> notify::Result<notify::Event> {
    let mut e = notify::Event::new(kind);
    for p in paths {
        e = e.add_path(p.clone());
    }
    if let Some(t) = tracker {
        e = e.set_tracker(t);
    }
    Ok(e)
}

#[test]
fn overflow_and_watch_errors_are_gaps() {
    let s = Setup::new(&[], DEFAULT_ROLLOVER);
    s.settle("m");
    inject(
        &s,
        vec![
            Ok(notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan)),
            Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch).add_path(s.b("deep"))),
            Err(notify::Error::generic("boom")),
        ],
    );
    let gaps = |r: &[Record]| -> Vec<(String, Option<Stime>)> {
        r.iter()
            .filter_map(|r| match r {
                Record::Gap { reason, since } if !reason.contains("hook started") => {
                    Some((reason.clone(), *since))
                }
                _ => None,
            })
            .collect()
    };
    // The watch error leaves a directory unwatched until the next rollover
    // watches the whole brick again (this brick has no real limit): that
    // rollover's Gap makes the crawl look back to the error.
    let recs = s.wait_for("4 gaps", |r| gaps(r).len() == 4);
    let g = gaps(&recs);
    assert!(
        g[0].0.contains("IN_Q_OVERFLOW") && g[0].1.is_none(),
        "{g:?}"
    );
    assert!(
        g[1].0.contains("max_user_watches") && g[1].0.contains("deep") && g[1].1.is_some(),
        "{g:?}"
    );
    assert!(g[2].0.contains("boom") && g[2].1 == g[1].1, "{g:?}");
    assert!(
        g[3].0.contains("watched again") && g[3].1 == g[1].1,
        "{g:?}"
    );
}

#[test]
fn rename_event_pairing() {
    let s = Setup::new(&[], DEFAULT_ROLLOVER);
    fs::write(s.b("came-in"), b"x").unwrap();
    s.settle("m");
    let from = EventKind::Modify(ModifyKind::Name(RenameMode::From));
    let to = EventKind::Modify(ModifyKind::Name(RenameMode::To));
    let both = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
    let data = EventKind::Modify(ModifyKind::Data(notify::event::DataChange::Any));
    inject(
        &s,
        vec![
            // A whole rename: From, To, Both → one Rename.
            ev(from, &[s.b("r1")], Some(1)),
            ev(to, &[s.b("r2")], Some(1)),
            ev(both, &[s.b("r1"), s.b("r2")], Some(1)),
            // A From whose To never comes: moved out.
            ev(from, &[s.b("gone")], Some(2)),
            ev(data, &[s.b("other")], None),
            // A To after its From was given up: a move in, Both ignored.
            ev(to, &[s.b("came-in")], Some(2)),
            ev(both, &[s.b("gone"), s.b("came-in")], Some(2)),
            // MOVE_SELF of a subdirectory: nothing; of the root: a Gap.
            ev(from, &[s.b("somedir")], None),
            ev(from, &[s.brick.path().canonicalize().unwrap()], None),
            ev(data, &[s.b("end")], None),
        ],
    );
    let recs = s.wait_for("end", |r| r.contains(&Record::Data(p("end"))));
    let after: Vec<Record> = recs
        .into_iter()
        .skip_while(|r| *r != Record::Create(p("m")))
        .filter(|r| !matches!(r, Record::Create(x) | Record::Data(x) if *x == p("m")))
        .collect();
    assert_eq!(after.len(), 7, "{after:#?}");
    assert_eq!(
        after[..5],
        [
            Record::Rename {
                from: p("r1"),
                to: p("r2")
            },
            Record::Unlink(p("gone")),
            Record::Data(p("other")),
            Record::Create(p("came-in")),
            Record::Data(p("came-in")),
        ]
    );
    assert!(
        matches!(&after[5], Record::Gap { reason, .. } if reason.contains("brick root")),
        "{after:#?}"
    );
    assert_eq!(after[6], Record::Data(p("end")));
}

#[test]
fn journal_dir_gone_is_a_fatal_error() {
    let s = Setup::new(&[], DEFAULT_ROLLOVER);
    s.settle("m");
    let before = s.hook().closed_through();
    fs::remove_dir_all(s.journal.path()).unwrap();
    fs::write(s.b("after"), b"x").unwrap();
    let t0 = Instant::now();
    while s.hook().error().is_none() {
        assert!(t0.elapsed() < TIMEOUT, "no error reported");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Whichever step failed first (writing the current file, or a timed
    // rollover renaming it into place), the error names the journal.
    let dir = s.journal.path().display().to_string();
    let err = s.hook().error().unwrap();
    assert!(err.contains(&dir), "{err}");
    let e = s.hook().rollover_now().unwrap_err().to_string();
    assert!(e.contains(&dir), "{e}");
    assert!(s.hook().closed_through() >= before);
    let stuck = s.hook().closed_through();
    std::thread::sleep(DEFAULT_ROLLOVER + Duration::from_millis(200));
    assert_eq!(s.hook().closed_through(), stuck);
}

#[test]
fn a_scan_is_journalled_after_the_events_queued_before_it() {
    // The tree exists before the hook starts, so only the injected events
    // speak of it: `d` "appears", and a removal of `d/y` made before the
    // scan is still queued behind it. The scan (which finds `d/y`, made
    // again meanwhile) must land after that removal, or replaying the
    // journal would delete a file the brick has.
    let brick = tempfile::tempdir().unwrap();
    let journal = tempfile::tempdir().unwrap();
    fs::create_dir(brick.path().join("d")).unwrap();
    fs::write(brick.path().join("d/y"), b"y").unwrap();
    let hook = Hook::start(HookConfig::new(brick.path(), journal.path())).unwrap();
    let s = Setup {
        brick,
        journal,
        outside: tempfile::tempdir().unwrap(),
        hook: Some(hook),
    };
    s.settle("m");
    let d = s.brick.path().canonicalize().unwrap().join("d");
    inject(
        &s,
        vec![
            ev(
                EventKind::Create(CreateKind::Folder),
                std::slice::from_ref(&d),
                None,
            ),
            ev(EventKind::Remove(RemoveKind::File), &[d.join("y")], None),
        ],
    );
    let recs = s.wait_for("the scan", |r| r.contains(&Record::Data(p("d/y"))));
    assert_subsequence(
        &recs,
        &[
            Record::Mkdir(p("d")),
            Record::Unlink(p("d/y")),
            Record::Create(p("d/y")),
            Record::Data(p("d/y")),
        ],
    );
    assert!(
        !recs.iter().any(
            |r| matches!(r, Record::Gap { reason, .. } if !is_start_gap(r) && !reason.is_empty())
        ),
        "no gap: the marker arrived: {recs:#?}"
    );
    // The marker directory holds nothing once the scan is journalled.
    let order = s.journal.path().join(ORDER_DIR);
    assert_eq!(fs::read_dir(order).unwrap().count(), 0);
}

#[test]
fn a_directory_reported_removed_but_present_is_watched_and_recorded_again() {
    // What notify reports when the IN_DELETE_SELF of a replaced directory
    // arrives after the new one is watched: a removal of a path that is a
    // directory. The hook must record it whole and watch it again.
    let s = Setup::new(&[], DEFAULT_ROLLOVER);
    fs::create_dir(s.b("d")).unwrap();
    fs::write(s.b("d/x"), b"x").unwrap();
    s.settle("m");
    let d = s.brick.path().canonicalize().unwrap().join("d");
    inject(
        &s,
        vec![ev(
            EventKind::Remove(RemoveKind::Folder),
            std::slice::from_ref(&d),
            None,
        )],
    );
    let recs = s.wait_for("the rescan", |r| {
        r.iter().filter(|r| **r == Record::Create(p("d/x"))).count() >= 2
    });
    let tail: Vec<Record> = recs
        .into_iter()
        .skip_while(|r| *r != Record::Rmdir(p("d")))
        .collect();
    assert_subsequence(
        &tail,
        &[
            Record::Rmdir(p("d")),
            Record::Mkdir(p("d")),
            Record::Create(p("d/x")),
        ],
    );
    // Still watched: a later change inside is journalled.
    fs::write(s.b("d/y"), b"y").unwrap();
    s.wait_for("d/y", |r| r.contains(&Record::Create(p("d/y"))));
}

#[test]
fn a_write_through_a_hard_link_that_goes_is_a_gap() {
    let s = Setup::new(&[], DEFAULT_ROLLOVER);
    fs::write(s.b("g"), b"old").unwrap();
    fs::write(s.b("t"), b"one name").unwrap();
    s.settle("m1");
    fs::hard_link(s.b("g"), s.b("l")).unwrap();
    s.settle("m2");
    fs::write(s.b("l"), b"new content").unwrap();
    fs::write(s.b("t"), b"rewritten").unwrap();
    s.settle("m3");
    fs::remove_file(s.b("t")).unwrap();
    fs::remove_file(s.b("l")).unwrap();
    // The same, with the events handled after all of it happened.
    inject(
        &s,
        vec![
            ev(EventKind::Create(CreateKind::File), &[s.b("x")], None),
            ev(
                EventKind::Modify(ModifyKind::Data(notify::event::DataChange::Any)),
                &[s.b("x")],
                None,
            ),
            ev(EventKind::Remove(RemoveKind::File), &[s.b("x")], None),
        ],
    );
    let recs = s.settle("m4");
    // (The injected events may be handled before the real ones.)
    let mut gaps: Vec<&str> = recs
        .iter()
        .filter_map(|r| match r {
            Record::Gap { reason, .. } if reason.starts_with(LINK_GAP) => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    gaps.sort_unstable();
    assert_eq!(
        gaps,
        [format!("{LINK_GAP} (l)"), format!("{LINK_GAP} (x)")],
        "{recs:#?}"
    );
}
