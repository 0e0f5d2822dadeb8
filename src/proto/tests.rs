//! The wire format's own tests.

use super::*;

#[test]
fn literal_piece_frames_are_the_encoded_pieces() {
    for (index, len) in [
        (0, 0),
        (1, 1),
        (2, 127),
        (300, 128),
        (70_000, 16_384),
        (5, 8 << 20),
    ] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
        let frame = literal_piece_frame(index, len, |b| {
            b.copy_from_slice(&data);
            Ok(())
        })
        .unwrap();
        let piece = Request::Piece {
            index,
            kind: PieceKind::Literal,
            data,
        };
        assert_eq!(
            frame,
            encode(&piece).unwrap(),
            "piece {index} of {len} bytes"
        );
    }
    let failed = literal_piece_frame(0, 10, |_| Err(io::ErrorKind::UnexpectedEof.into()));
    assert!(matches!(failed, Err(ProtocolError::Io(_))));
    let huge = literal_piece_frame(0, MAX_FRAME + 1, |_| Ok(()));
    assert!(matches!(huge, Err(ProtocolError::Oversize(_))));
}

#[test]
fn listing_digest_depends_on_names_and_kinds_not_order() {
    let d = |v: &[(&str, NodeKind)]| listing_digest(&mut v.to_vec());
    let base = d(&[("a", NodeKind::File), ("bc", NodeKind::Dir)]);
    assert_eq!(base, d(&[("bc", NodeKind::Dir), ("a", NodeKind::File)]));
    assert_ne!(base, d(&[("a", NodeKind::File), ("bc", NodeKind::Symlink)]));
    assert_ne!(base, d(&[("ab", NodeKind::File), ("c", NodeKind::Dir)]));
    assert_ne!(base, d(&[("a", NodeKind::File)]));
    assert_ne!(d(&[]), d(&[("", NodeKind::File)]));
}

#[test]
fn round_trip_sync() {
    let msgs = vec![
        Request::Hello {
            protocol: PROTOCOL_VERSION,
            agent_version: "x".into(),
        },
        Request::Entry {
            seq: 7,
            op: EntryOp::Rename {
                from: RelPath::new("a").unwrap(),
                to: RelPath::new(b"b\xff\n".to_vec()).unwrap(),
            },
        },
        Request::Piece {
            index: 3,
            kind: PieceKind::Delta,
            data: vec![1, 2, 3],
        },
    ];
    let mut wire = Vec::new();
    for m in &msgs {
        write_frame(&mut wire, m).unwrap();
    }
    let mut r = &wire[..];
    for m in &msgs {
        assert_eq!(&read_frame::<Request, _>(&mut r).unwrap(), m);
    }
    assert!(matches!(
        read_frame::<Request, _>(&mut r),
        Err(ProtocolError::Closed)
    ));
}

#[test]
fn refuses_oversize_before_allocating() {
    let wire = u32::MAX.to_be_bytes();
    assert!(matches!(
        read_frame::<Request, _>(&mut &wire[..]),
        Err(ProtocolError::Oversize(_))
    ));
}

#[test]
fn truncated_and_garbage_frames_are_errors() {
    let frame = encode(&Request::Barrier { id: 1 }).unwrap();
    assert!(matches!(
        read_frame::<Request, _>(&mut &frame[..frame.len() - 1]),
        Err(ProtocolError::Closed)
    ));
    let garbage = [0, 0, 0, 3, 0xff, 0xff, 0xff];
    assert!(matches!(
        read_frame::<Request, _>(&mut &garbage[..]),
        Err(ProtocolError::Malformed(_))
    ));
}

#[test]
fn escaping_paths_are_refused_on_decode() {
    // Hand-build an Unlink with "../x": encode a valid one and patch it.
    let frame = encode(&Request::Entry {
        seq: 0,
        op: EntryOp::Unlink {
            path: RelPath::new("aa/x").unwrap(),
        },
    })
    .unwrap();
    let pos = frame.windows(4).position(|w| w == b"aa/x").unwrap();
    let mut evil = frame.clone();
    evil[pos..pos + 2].copy_from_slice(b"..");
    assert!(matches!(
        read_frame::<Request, _>(&mut &evil[..]),
        Err(ProtocolError::Malformed(_))
    ));
}

#[test]
fn sequences_over_their_caps_are_refused_when_their_count_is_read() {
    // MAX_SEGMENTS + 1 empty segments: refused on their count.
    let mut frame = encode(&Request::SparsePiece {
        index: 0,
        segments: Vec::new(),
    })
    .unwrap();
    frame.pop();
    let mut n = MAX_SEGMENTS + 1;
    while n >= 0x80 {
        frame.push((n as u8) | 0x80);
        n >>= 7;
    }
    frame.push(n as u8);
    frame.extend(std::iter::repeat_n(0u8, 2 * (MAX_SEGMENTS + 1)));
    let e = decode::<Request>(&frame[4..]).unwrap_err().to_string();
    assert!(e.contains(&format!("more than {MAX_SEGMENTS}")), "{e}");
    // At the cap, a piece decodes.
    let full = Request::SparsePiece {
        index: 0,
        segments: vec![
            Segment {
                offset: 0,
                data: vec![]
            };
            MAX_SEGMENTS
        ],
    };
    assert_eq!(
        decode::<Request>(&encode(&full).unwrap()[4..]).unwrap(),
        full
    );
    let empty_name = Request::Entry {
        seq: 1,
        op: EntryOp::Prune {
            path: RelPath::root(),
            keep: vec![serde_bytes::ByteBuf::new()],
            kinds: vec![],
        },
    };
    let e = decode::<Request>(&encode(&empty_name).unwrap()[4..]).unwrap_err();
    assert!(e.to_string().contains("empty name"), "{e}");
    // Other malformed frames keep their own error.
    assert!(matches!(
        decode::<Request>(&[0xff, 0xff]),
        Err(ProtocolError::Malformed(_))
    ));
}

#[test]
fn version_errors_name_the_side_to_upgrade() {
    let e = check_version(1, 2).unwrap_err().to_string();
    assert!(e.contains("upgrade the master"), "{e}");
    let e = check_version(3, 2).unwrap_err().to_string();
    assert!(e.contains("upgrade the slave"), "{e}");
}
