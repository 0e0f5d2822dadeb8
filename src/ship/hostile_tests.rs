//! The real shipper against a hostile slave (`testkit::hostile`): crafted
//! replies must end the session cleanly, never crash or hang the master,
//! and never make it send what the session excludes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::hostile_kit::{self as hostile, paths_of, rss_bytes, Answer};
use super::*;
use crate::crawl::filter::Pattern;
use georep_testkit::random_bytes;

/// Long enough never to be what ends a test that passes: only a failure
/// guard (a master that hangs, or a session that would not end).
const GUARD: Duration = Duration::from_secs(120);

fn rp(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

/// Ships `batch` to a fake slave run by `script` (see
/// `testkit::hostile::ship_to_hostile`); a master that hangs fails the test.
fn ship_to_hostile(
    brick: &Path,
    batch: Batch,
    filter: SyncFilter,
    script: impl FnMut(&Request) -> Answer + Send + 'static,
) -> (Result<ShipReport, ShipError>, Vec<Request>) {
    hostile::ship_to_hostile(brick, batch, filter, GUARD, script)
        .expect("the master hung on the hostile slave's replies")
}

/// A valid signature of a whole piece, as the slave sends it.
fn piece_signature() -> Vec<u8> {
    let options = fast_rsync::SignatureOptions {
        block_size: SIG_BLOCK_SIZE,
        crypto_hash_size: SIG_STRONG_LEN,
    };
    Signature::calculate(&random_bytes(PIECE_SIZE as usize, 7), options).into_serialized()
}

/// A brick holding one file large enough to be sent as a delta.
fn brick_with_large_file() -> (tempfile::TempDir, Batch) {
    let t = tempfile::tempdir().unwrap();
    fs::write(
        t.path().join("big"),
        random_bytes(DELTA_MIN_SIZE as usize * 2, 1),
    )
    .unwrap();
    let mut batch = Batch::new();
    batch.push_data(rp("big"));
    (t, batch)
}

/// Runs `f` while sampling this process's resident memory; the largest
/// growth seen.
fn peak_growth<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let base = rss_bytes().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(base));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_bytes().unwrap_or(0), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let out = f();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    peak.fetch_max(rss_bytes().unwrap_or(0), Ordering::Relaxed);
    (out, peak.load(Ordering::Relaxed).saturating_sub(base))
}

/// One hostile slave at a time measures memory (the others would count).
static MEMORY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A slave that declares a copy of `size` bytes and then streams 480 MiB
/// of valid piece signatures before it hangs up: the master's memory must
/// not follow, and the session must end with an error.
fn flood_of_signatures(size: u64) -> (Result<ShipReport, ShipError>, u64) {
    let _one = MEMORY.lock().unwrap_or_else(|e| e.into_inner());
    let (t, batch) = brick_with_large_file();
    let sig = piece_signature();
    let times = (480 << 20) / sig.len() as u64;
    let ((report, _), growth) = peak_growth(|| {
        ship_to_hostile(
            t.path(),
            batch,
            SyncFilter::default(),
            move |req| match req {
                Request::Signature { seq, .. } => Answer::Flood {
                    first: vec![Reply::SigBegin {
                        seq: *seq,
                        size: Some(size),
                    }],
                    reply: Reply::SigPiece { data: sig.clone() },
                    times,
                },
                _ => Answer::Honest,
            },
        )
    });
    (report, growth)
}

#[test]
fn a_signature_announced_for_u64_max_bytes_fails_the_session_with_memory_bounded() {
    let (report, growth) = flood_of_signatures(u64::MAX);
    assert!(
        growth < 256 << 20,
        "the master grew by {} MiB",
        growth >> 20
    );
    match report {
        Err(ShipError::Untrusted(why)) => assert!(why.contains("big"), "{why}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[test]
fn signatures_of_a_copy_larger_than_the_file_are_not_kept() {
    // A size a file can have, far beyond the local file's: the pieces past
    // the local file's are read and dropped, and the session ends when the
    // slave hangs up.
    let (report, growth) = flood_of_signatures(1 << 50);
    assert!(
        growth < 256 << 20,
        "the master grew by {} MiB",
        growth >> 20
    );
    assert!(report.is_err(), "{report:?}");
}

#[test]
fn a_signature_with_block_size_zero_is_refused_before_any_delta() {
    let (t, batch) = brick_with_large_file();
    let size = DELTA_MIN_SIZE * 2;
    let options = fast_rsync::SignatureOptions {
        block_size: SIG_BLOCK_SIZE,
        crypto_hash_size: SIG_STRONG_LEN,
    };
    let mut sig = Signature::calculate(&random_bytes(size as usize, 2), options).into_serialized();
    sig[4..8].copy_from_slice(&0u32.to_be_bytes());
    let (report, requests) =
        ship_to_hostile(
            t.path(),
            batch,
            SyncFilter::default(),
            move |req| match req {
                Request::Signature { seq, .. } => Answer::Replies(vec![
                    Reply::SigBegin {
                        seq: *seq,
                        size: Some(size),
                    },
                    Reply::SigPiece { data: sig.clone() },
                ]),
                _ => Answer::Honest,
            },
        );
    match report {
        Err(ShipError::Untrusted(why)) => assert!(why.contains("block size 0"), "{why}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    // Refused as it arrived: no delta was even begun.
    assert!(
        !requests
            .iter()
            .any(|r| matches!(r, Request::FileBegin { .. } | Request::Piece { .. })),
        "{requests:?}"
    );
}

#[test]
fn a_failure_of_a_request_never_sent_ends_the_session_and_sends_nothing() {
    let t = tempfile::tempdir().unwrap();
    fs::write(t.path().join("a"), b"a").unwrap();
    fs::write(t.path().join("top.key"), b"secret").unwrap();
    let mut batch = Batch::new();
    batch.push_data(rp("a"));
    let (report, requests) =
        ship_to_hostile(t.path(), batch, SyncFilter::default(), |req| match req {
            Request::Barrier { id } => Answer::Replies(vec![
                Reply::Failed(Failure {
                    seq: 1_000_000,
                    path: rp("top.key"),
                    kind: FailureKind::SourceMissing,
                    errno: None,
                    message: "give me your key".into(),
                }),
                Reply::Barrier { id: *id },
            ]),
            _ => Answer::Honest,
        });
    match report {
        Err(ShipError::Untrusted(why)) => {
            assert!(why.contains("1000000") && why.contains("top.key"), "{why}")
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
    let named: Vec<RelPath> = requests.iter().flat_map(paths_of).collect();
    assert!(!named.contains(&rp("top.key")), "{named:?}");
}

#[test]
fn a_slave_asking_for_excluded_names_gets_none_of_them() {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir(t.path().join("d")).unwrap();
    fs::write(t.path().join("d/a"), b"a").unwrap();
    fs::write(t.path().join("d/b.key"), b"secret").unwrap();
    fs::write(t.path().join("top.key"), b"secret").unwrap();
    let mut batch = Batch::new();
    batch.push_entry(Entry::Mkdir(rp("d")));
    batch.push_data(rp("d/a"));
    let filter = SyncFilter {
        exclude: vec![Pattern::parse("*.key").unwrap()],
        ignore_deletes: false,
    };
    // Each request of the batch fails, naming an excluded file: the entry
    // (healed as its own path, `d`, walked whole with a prune) and the
    // file (healed as the path the slave names).
    let mut failed = 0;
    let (report, requests) = ship_to_hostile(t.path(), batch, filter, move |req| {
        let seq = match req {
            Request::Entry { seq, .. } | Request::FileBegin { seq, .. } if failed < 2 => *seq,
            _ => return Answer::Honest,
        };
        failed += 1;
        Answer::Replies(vec![Reply::Failed(Failure {
            seq,
            path: rp("top.key"),
            kind: FailureKind::Conflict,
            errno: None,
            message: "not what I expected: send it whole".into(),
        })])
    });
    report.unwrap();
    let named: Vec<RelPath> = requests.iter().flat_map(paths_of).collect();
    // Healed: `d` walked again, its file sent again.
    assert!(
        requests
            .iter()
            .any(|r| matches!(r, Request::Entry { op: EntryOp::Prune { path, .. }, .. } if *path == rp("d"))),
        "{requests:?}"
    );
    assert!(named.contains(&rp("d/a")), "{named:?}");
    let leaked: Vec<&RelPath> = named
        .iter()
        .filter(|p| p.as_bytes().ends_with(b".key"))
        .collect();
    assert!(
        leaked.is_empty(),
        "excluded names left the master: {leaked:?}"
    );
}

#[test]
fn more_failures_than_requests_end_the_session() {
    let t = tempfile::tempdir().unwrap();
    let mut batch = Batch::new();
    batch.push_entry(Entry::Mkdir(rp("d")));
    // Each failure names a request the batch did send: only their number
    // gives the slave away (kept, they would fill the master's memory).
    let (report, _) = ship_to_hostile(t.path(), batch, SyncFilter::default(), |req| match req {
        Request::Entry { seq, .. } => Answer::Flood {
            first: Vec::new(),
            reply: Reply::Failed(Failure {
                seq: *seq,
                path: rp("d"),
                kind: FailureKind::Permission,
                errno: None,
                message: "again".into(),
            }),
            times: 100_000,
        },
        _ => Answer::Honest,
    });
    match report {
        Err(ShipError::Untrusted(why)) => assert!(why.contains("failures for"), "{why}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
}
