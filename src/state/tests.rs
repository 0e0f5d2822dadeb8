//! The state database's own tests.

use super::*;

fn sample(dir: &Path) -> (State, SessionRecord) {
    let mut st = State::open(dir).unwrap();
    let s = st
        .create_session(&NewSession {
            master_vol: "gv0".parse().unwrap(),
            slave: "root@h::/srv/x".parse().unwrap(),
            port: 22,
            host_key: "ssh-ed25519 AAAA".into(),
            config: "{}".into(),
            bricks: vec![Brick::new("/b1").unwrap(), Brick::new("/b2").unwrap()],
        })
        .unwrap();
    (st, s)
}

#[test]
fn sessions_and_bricks_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (st, s) = sample(dir.path());
    assert_eq!(s.state, SessionState::Created);
    let bricks = st.bricks(s.id).unwrap();
    assert_eq!(bricks.len(), 2);
    assert_eq!(bricks[0].status, WorkerStatus::Created);
    assert_eq!(bricks[0].crawl, CrawlStatus::NotApplicable);
    assert_eq!(bricks[0].stime, None);
    st.set_worker(
        bricks[0].id,
        WorkerStatus::Initializing,
        CrawlStatus::Hybrid,
    )
    .unwrap();
    let b = &st.bricks(s.id).unwrap()[0];
    assert_eq!(
        (b.status, b.crawl),
        (WorkerStatus::Initializing, CrawlStatus::Hybrid)
    );
    let again = State::open(dir.path()).unwrap();
    assert_eq!(again.sessions().unwrap().len(), 1);
}

#[test]
fn duplicate_session_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut st, _) = sample(dir.path());
    let err = st
        .create_session(&NewSession {
            master_vol: "gv0".parse().unwrap(),
            slave: "root@h::/srv/x".parse().unwrap(),
            port: 22,
            host_key: String::new(),
            config: "{}".into(),
            bricks: vec![],
        })
        .unwrap_err();
    assert!(matches!(err, StateError::Exists(..)), "{err}");
}

#[test]
fn stime_never_goes_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let (st, s) = sample(dir.path());
    let b = st.bricks(s.id).unwrap()[0].id;
    st.set_stime(b, Stime::from_nanos(100)).unwrap();
    st.set_stime(b, Stime::from_nanos(100)).unwrap();
    st.set_stime(b, Stime::from_nanos(200)).unwrap();
    let err = st.set_stime(b, Stime::from_nanos(150)).unwrap_err();
    assert!(matches!(err, StateError::StimeBackwards { .. }), "{err}");
    assert_eq!(
        st.bricks(s.id).unwrap()[0].stime,
        Some(Stime::from_nanos(200))
    );
    st.add_counters(
        b,
        Counters {
            bytes_sent: 5,
            failures: 1,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(st.bricks(s.id).unwrap()[0].bytes_sent, 5);
}

#[test]
fn checkpoint_completes_once_every_brick_passes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (st, s) = sample(dir.path());
    let b: Vec<BrickId> = st.bricks(s.id).unwrap().iter().map(|b| b.id).collect();
    assert!(
        !st.note_checkpoint(s.id, Timestamp::from_nanos(1)).unwrap(),
        "no checkpoint set"
    );
    st.set_checkpoint(s.id, Some(Timestamp::from_nanos(100)))
        .unwrap();
    st.set_stime(b[0], Stime::from_nanos(150)).unwrap();
    assert!(
        !st.note_checkpoint(s.id, Timestamp::from_nanos(160))
            .unwrap(),
        "brick 2 has no stime"
    );
    st.set_stime(b[1], Stime::from_nanos(99)).unwrap();
    assert!(
        !st.note_checkpoint(s.id, Timestamp::from_nanos(170))
            .unwrap(),
        "brick 2 is behind"
    );
    st.set_stime(b[1], Stime::from_nanos(100)).unwrap();
    assert!(st
        .note_checkpoint(s.id, Timestamp::from_nanos(180))
        .unwrap());
    assert!(
        !st.note_checkpoint(s.id, Timestamp::from_nanos(190))
            .unwrap(),
        "only once"
    );
    let r = st.find_session(&s.master_vol, &s.slave).unwrap().unwrap();
    assert_eq!(
        (r.checkpoint, r.checkpoint_completed),
        (
            Some(Timestamp::from_nanos(100)),
            Some(Timestamp::from_nanos(180))
        )
    );
    st.set_checkpoint(s.id, Some(Timestamp::from_nanos(200)))
        .unwrap();
    let r = st.find_session(&s.master_vol, &s.slave).unwrap().unwrap();
    assert_eq!(
        (r.checkpoint, r.checkpoint_completed),
        (Some(Timestamp::from_nanos(200)), None)
    );
}

#[test]
fn kept_stimes_go_to_a_recreated_session_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut st, s) = sample(dir.path());
    let b = st.bricks(s.id).unwrap()[0].id;
    st.set_stime(b, Stime::from_nanos(500)).unwrap();
    st.keep_stimes(s.id).unwrap();
    st.delete_session(s.id).unwrap();
    let again = st
        .create_session(&NewSession {
            master_vol: "gv0".parse().unwrap(),
            slave: "root@h::/srv/x".parse().unwrap(),
            port: 22,
            host_key: String::new(),
            config: "{}".into(),
            bricks: vec![Brick::new("/b1").unwrap(), Brick::new("/b3").unwrap()],
        })
        .unwrap();
    assert_eq!(st.take_kept_stimes(again.id).unwrap(), 1);
    let stimes: Vec<Option<Stime>> = st
        .bricks(again.id)
        .unwrap()
        .iter()
        .map(|b| b.stime)
        .collect();
    assert_eq!(stimes, vec![Some(Stime::from_nanos(500)), None]);
    assert_eq!(st.take_kept_stimes(again.id).unwrap(), 0, "taken once");
}

#[test]
fn crawl_progress_accumulates() {
    let dir = tempfile::tempdir().unwrap();
    let (st, s) = sample(dir.path());
    let b = st.bricks(s.id).unwrap()[0].id;
    let started = st.crawl_begin(b).unwrap();
    st.crawl_add(b, 2, 100).unwrap();
    st.crawl_add(b, 3, 50).unwrap();
    let p = st.bricks(s.id).unwrap()[0].progress;
    assert_eq!((p.files, p.bytes, p.finished), (5, 150, None));
    assert_eq!(p.started, Some(started));
    assert_eq!(p.total_files, None);
    st.crawl_total(b, started, 10, 4096).unwrap();
    st.crawl_total(b, Timestamp::from_nanos(started.nanos() - 1), 99, 99)
        .unwrap();
    let p = st.bricks(s.id).unwrap()[0].progress;
    assert_eq!((p.total_files, p.total_bytes), (Some(10), Some(4096)));
    std::thread::sleep(std::time::Duration::from_millis(2));
    st.crawl_begin(b).unwrap();
    let p = st.bricks(s.id).unwrap()[0].progress;
    assert_eq!(
        (p.files, p.total_files),
        (0, None),
        "a new crawl starts afresh"
    );
    st.crawl_end(b).unwrap();
    assert!(st.bricks(s.id).unwrap()[0].progress.finished.is_some());
}

#[test]
fn a_version_1_database_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let conn = Connection::open(dir.path().join("georep.db")).unwrap();
    conn.execute_batch(schema::MIGRATIONS[0]).unwrap();
    conn.execute_batch(
        "INSERT INTO sessions (master_vol, slave_user, slave_host, slave_volume, port, host_key, config, state)
         VALUES ('gv0', 'root', 'h', '/x', 22, 'k', '{}', 'Stopped');
         INSERT INTO bricks (session_id, path, stime_ns, status, crawl) VALUES (1, '/b', 42, 'Stopped', 'N/A');
         PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(conn);
    let st = State::open(dir.path()).unwrap();
    let s = &st.sessions().unwrap()[0];
    assert_eq!(s.checkpoint, None);
    let b = &st.bricks(s.id).unwrap()[0];
    assert_eq!(
        (b.stime, b.progress),
        (Some(Stime::from_nanos(42)), CrawlProgress::default())
    );
}

#[test]
fn a_database_locked_by_another_process_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (st, s) = sample(dir.path());
    let b = st.bricks(s.id).unwrap()[0].id;
    // Another process holds the write lock for longer than we wait.
    let other = Connection::open(dir.path().join("georep.db")).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let err = st
        .set_stime(b, Stime::from_nanos(1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("locked by another process"), "{err}");
    assert!(err.contains("georep.db"), "names the database: {err}");
    other.execute_batch("ROLLBACK").unwrap();
    st.set_stime(b, Stime::from_nanos(1)).unwrap();
}

#[test]
fn the_state_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    drop(State::open(&home).unwrap());
    let mode = std::fs::metadata(&home).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(sample(dir.path()));
    let conn = Connection::open(dir.path().join("georep.db")).unwrap();
    conn.pragma_update(None, "user_version", 999).unwrap();
    drop(conn);
    let err = State::open(dir.path()).err().unwrap();
    assert!(err.to_string().contains("upgrade geo-rep"), "{err}");
}
