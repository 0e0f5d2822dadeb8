//! Garbage in, errors out: the frame decoder, the journal reader and the
//! path sanitizer take arbitrary bytes without panicking, and whatever they
//! accept is well-formed. (A property-based stand-in for fuzzing, since
//! `cargo fuzz` needs a nightly toolchain; PROPTEST_CASES=100000 runs longer.)

use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use georep::changelog::{read_file, write_closed, Record};
use georep::proto::{encode, read_frame, EntryOp, Reply, Request, MAX_FRAME};
use georep::relpath::RelPath;
use georep::session::Stime;
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000),
        ..ProptestConfig::default()
    }
}

/// A few valid frames to mutate: mutations of real input reach deeper than
/// random bytes do.
fn seed_frames() -> Vec<Vec<u8>> {
    let p = |s: &str| RelPath::new(s).unwrap();
    [
        Request::Entry {
            seq: 1,
            op: EntryOp::Rename {
                from: p("a/b"),
                to: p("c"),
            },
        },
        Request::FileBegin {
            seq: 2,
            path: p("f"),
            size: 10,
        },
        Request::Barrier { id: 3 },
    ]
    .iter()
    .map(|r| encode(r).unwrap())
    .collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_frame_decoder_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = read_frame::<Request, _>(&mut &bytes[..]);
        let _ = read_frame::<Reply, _>(&mut &bytes[..]);
    }

    #[test]
    fn the_frame_decoder_never_panics_on_mutated_frames(
        which in 0usize..3,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
    ) {
        let mut frame = seed_frames()[which].clone();
        for (at, byte) in flips {
            let i = at % frame.len();
            frame[i] = byte;
        }
        frame.truncate(cut % (frame.len() + 1));
        if let Ok(req) = read_frame::<Request, _>(&mut &frame[..]) {
            // Whatever decodes re-encodes: no half-valid value gets through.
            prop_assert!(encode(&req).unwrap().len() <= MAX_FRAME + 4);
        }
    }

    #[test]
    fn the_journal_reader_never_panics(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in any::<usize>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let file = write_closed(
            dir.path(),
            Stime::from_nanos(1),
            Stime::from_nanos(2),
            &[
                Record::Create(RelPath::new("x/y").unwrap()),
                Record::Rename { from: RelPath::new("x").unwrap(), to: RelPath::new("z").unwrap() },
                Record::gap("test"),
            ],
        )
        .unwrap();
        let mut bytes = std::fs::read(&file.path).unwrap();
        for (at, byte) in &flips {
            let i = at % bytes.len();
            bytes[i] = *byte;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        std::fs::write(&file.path, &bytes).unwrap();
        match read_file(&file.path) {
            Ok(log) => prop_assert!(log.records.len() <= 3),
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.contains(&file.path.display().to_string()), "{msg}");
            }
        }
    }

    #[test]
    fn an_accepted_relpath_stays_below_its_root(bytes in proptest::collection::vec(
        prop_oneof![Just(b'/'), Just(b'.'), Just(0u8), Just(b'a'), any::<u8>()], 0..40)
    ) {
        if let Ok(p) = RelPath::new(bytes.clone()) {
            let joined = p.under(Path::new("/root"));
            prop_assert!(joined.starts_with("/root"));
            for c in Path::new(std::ffi::OsStr::from_bytes(p.as_bytes())).components() {
                prop_assert!(matches!(c, Component::Normal(_)), "{c:?} in {p:?}");
            }
            prop_assert!(!p.as_bytes().contains(&0));
        }
    }
}

/// Cases of the hostile-slave properties: each ships a batch to a fake
/// slave, so a tenth of the others' (200 by default).
fn hostile_config() -> ProptestConfig {
    let cases = (config().cases / 10).max(1);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Only a failure guard: a master that hangs on a reply fails the case.
const HOSTILE_GUARD: std::time::Duration = std::time::Duration::from_secs(120);

/// A brick with `big` (large enough to be sent as a delta, two pieces'
/// worth of blocks short of a piece), `d/a` and the excluded `d/s.key`.
fn hostile_brick() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(
        t.path().join("big"),
        georep_testkit::random_bytes(600 << 10, 3),
    )
    .unwrap();
    std::fs::create_dir(t.path().join("d")).unwrap();
    std::fs::write(t.path().join("d/a"), b"a").unwrap();
    std::fs::write(t.path().join("d/s.key"), b"secret").unwrap();
    std::fs::write(t.path().join("top.key"), b"secret").unwrap();
    t
}

fn key_filter() -> georep::crawl::filter::SyncFilter {
    georep::crawl::filter::SyncFilter {
        exclude: vec![georep::crawl::filter::Pattern::parse("*.key").unwrap()],
        ignore_deletes: false,
    }
}

/// The header fields of a serialized signature: block size, hash length.
fn sig_shape(sig: &[u8]) -> Option<(u32, u32)> {
    let word = |at: usize| Some(u32::from_be_bytes(sig.get(at..at + 4)?.try_into().ok()?));
    Some((word(4)?, word(8)?))
}

proptest! {
    #![proptest_config(hostile_config())]

    /// Whatever a slave answers to a signature request (any declared size,
    /// any number of pieces, any header and length), the master ends the
    /// batch, committed or with an error, without hanging; a signature
    /// whose block size or hash length is not the one asked for never
    /// leads to a delta.
    #[test]
    fn hostile_signatures_end_the_batch_and_never_feed_a_delta(
        size in prop_oneof![
            1 => Just(None),
            1 => Just(Some(u64::MAX)),
            1 => Just(Some(1u64 << 40)),
            4 => (0u64..(2 << 20)).prop_map(Some),
        ],
        pieces in proptest::collection::vec(
            // Flips aimed at the header (block size, hash length) as often
            // as anywhere else.
            (0usize..3, proptest::collection::vec((prop_oneof![4usize..12, any::<usize>()], prop_oneof![Just(0u8), any::<u8>()]), 0..3), any::<usize>()),
            0..3,
        ),
    ) {
        use georep::ship::hostile_kit::{ship_to_hostile, Answer};
        use georep::proto::{PieceKind, SIG_BLOCK_SIZE, SIG_STRONG_LEN};
        let brick = hostile_brick();
        let mut batch = georep::crawl::Batch::new();
        batch.push_data(RelPath::new("big").unwrap());
        // The brick's own bytes: a well-formed signature of them makes a
        // delta worth sending, so a malformed one would too.
        let base = georep_testkit::random_bytes(600 << 10, 3);
        let sigs: Vec<Vec<u8>> = pieces
            .iter()
            .map(|(len, flips, cut)| {
                let options = fast_rsync::SignatureOptions { block_size: SIG_BLOCK_SIZE, crypto_hash_size: SIG_STRONG_LEN };
                let mut s = fast_rsync::Signature::calculate(&base[..[0, 4096, 600 << 10][*len]], options).into_serialized();
                for (at, byte) in flips {
                    let i = at % s.len();
                    s[i] = *byte;
                }
                s.truncate(cut % (s.len() + 1));
                s
            })
            .collect();
        // As many pieces as the size declares, if there are that many;
        // else all there are, and the slave hangs up (a slave that says no
        // more only makes the master wait for its `timeout`).
        let declared = size.map_or(0, |s| s.div_ceil(georep::proto::PIECE_SIZE));
        let complete = declared <= sigs.len() as u64;
        let sent: Vec<Vec<u8>> = sigs.iter().take(declared.min(sigs.len() as u64) as usize).cloned().collect();
        let asked = Some((SIG_BLOCK_SIZE, SIG_STRONG_LEN));
        let well_shaped = sent.iter().all(|s| sig_shape(s) == asked);
        let replies = sent.clone();
        let outcome = ship_to_hostile(brick.path(), batch, key_filter(), HOSTILE_GUARD, move |req| match req {
            Request::Signature { seq, .. } => {
                let first: Vec<Reply> = std::iter::once(Reply::SigBegin { seq: *seq, size })
                    .chain(replies.iter().map(|d| Reply::SigPiece { data: d.clone() }))
                    .collect();
                if complete {
                    Answer::Replies(first)
                } else {
                    Answer::Flood { first, reply: Reply::Barrier { id: 0 }, times: 0 }
                }
            }
            _ => Answer::Honest,
        });
        let (report, requests) = outcome.expect("the master hung on hostile signatures");
        let delta = requests.iter().any(|r| matches!(r, Request::Piece { kind: PieceKind::Delta | PieceKind::Same, .. }));
        prop_assert!(!delta || well_shaped, "a delta against {sent:?}");
        if size == Some(u64::MAX) {
            prop_assert!(report.is_err());
        }
    }

    /// Whatever failures a slave reports (any sequence number, any path,
    /// any kind), no excluded name leaves the master, and a failure of a
    /// request the batch never sent ends it with an error.
    #[test]
    fn hostile_failures_never_draw_out_excluded_names(
        failures in proptest::collection::vec(
            (prop_oneof![Just(0u64), 1u64..12, Just(1_000_000u64), any::<u64>()],
             prop_oneof![Just("top.key"), Just("d/s.key"), Just("d"), Just("d/a"), Just("nope/x.key")],
             0usize..5),
            1..4,
        ),
        at_request in 0usize..6,
    ) {
        use georep::ship::hostile_kit::{ship_to_hostile, Answer};
        use georep::proto::{Failure, FailureKind};
        let brick = hostile_brick();
        let mut batch = georep::crawl::Batch::new();
        batch.push_entry(georep::crawl::Entry::Mkdir(RelPath::new("d").unwrap()));
        batch.push_data(RelPath::new("d/a").unwrap());
        let kinds = [FailureKind::SourceMissing, FailureKind::Conflict, FailureKind::Unsafe, FailureKind::Permission, FailureKind::Mismatch];
        let crafted: Vec<Reply> = failures
            .iter()
            .map(|(seq, path, kind)| Reply::Failed(Failure {
                seq: *seq,
                path: RelPath::new(*path).unwrap(),
                kind: kinds[*kind],
                errno: None,
                message: "crafted".into(),
            }))
            .collect();
        let mut seen = 0;
        let mut pending = Some(crafted);
        let outcome = ship_to_hostile(brick.path(), batch, key_filter(), HOSTILE_GUARD, move |req| {
            seen += 1;
            match pending.take_if(|_| seen > at_request) {
                Some(mut replies) => {
                    replies.extend(georep::ship::hostile_kit::honest_answer(req));
                    Answer::Replies(replies)
                }
                None => Answer::Honest,
            }
        });
        let (report, requests) = outcome.expect("the master hung on hostile failures");
        let named: Vec<RelPath> = requests.iter().flat_map(georep::ship::hostile_kit::paths_of).collect();
        prop_assert!(
            !named.iter().any(|p| p.as_bytes().ends_with(b".key")),
            "excluded names left the master: {named:?}"
        );
        let last_seq = requests.iter().filter_map(request_seq).max().unwrap_or(0);
        let foreign = failures.iter().any(|(seq, _, _)| *seq == 0 || *seq > last_seq);
        if foreign && requests.len() > at_request {
            prop_assert!(report.is_err(), "{report:?} after failures of {failures:?}");
        }
    }
}

/// The sequence number a request carries, if any.
fn request_seq(req: &Request) -> Option<u64> {
    match req {
        Request::Entry { seq, .. }
        | Request::Signature { seq, .. }
        | Request::FileBegin { seq, .. }
        | Request::Partial { seq, .. }
        | Request::FileResume { seq, .. }
        | Request::SetAttr { seq, .. }
        | Request::Stat { seq, .. }
        | Request::CheckListing { seq, .. }
        | Request::CheckTree { seq, .. } => Some(*seq),
        Request::Barrier { id } => Some(*id),
        _ => None,
    }
}
