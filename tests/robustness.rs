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
            Stime(1),
            Stime(2),
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
