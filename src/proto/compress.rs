//! zstd for data frames (`compression zstd`, protocol version 5).
//!
//! Only the frames that carry file bytes are worth it: [`Request::Piece`]
//! (literal bytes, or a delta whose literal runs are file bytes) and
//! [`Request::SparsePiece`]. The master wraps such a frame, already encoded,
//! in [`Request::Compressed`] when that makes it smaller, and sends it as it
//! is otherwise; the slave unwraps it before anything else looks at it, so
//! the rest of the conversation never knows.
//!
//! * **No CPU spent on what does not shrink** (media, archives, encrypted
//!   data): a sample of the payload is compressed first, and a piece whose
//!   sample does not shrink by [`SAMPLE_GAIN_PERCENT`] goes raw without
//!   compressing the rest. When the whole payload is compressed, the output
//!   buffer is one byte shorter than the input, so output that would not be
//!   smaller fails fast and the frame goes raw too: compression never
//!   inflates a frame.
//! * **Bounded memory on the slave**: [`Request::Compressed::raw_len`] may
//!   not exceed [`MAX_FRAME`], the output buffer is exactly that long, and
//!   zstd refuses to write past it; a frame that does not decompress to
//!   exactly `raw_len` bytes, or holds anything but a data frame, is a
//!   protocol error (a corrupt or hostile peer, never a reason to allocate).
//!
//! The level is [`ZSTD_LEVEL`]: level 1 compresses at several hundred MB/s
//! per core here, faster than the links georep is meant for (WAN links of a
//! few to a few hundred Mbit/s), and compressible data (text, logs, sparse
//! databases) already shrinks 3–10× at that level; higher levels buy a few
//! percent for several times the CPU. Pieces are compressed off the async
//! runtime, one piece ahead of the one being sent (see `ship`).

use std::cell::RefCell;

use super::{ProtocolError, Request, MAX_FRAME};

/// zstd level used for data frames (see the module docs).
pub const ZSTD_LEVEL: i32 = 1;

/// Frames with fewer payload bytes than this are sent raw: too small to
/// gain anything after zstd's frame header.
pub const MIN_PAYLOAD: usize = 128;

/// Bytes of a payload compressed as a sample before the rest (taken at
/// the start and in the middle of larger payloads).
pub const SAMPLE: usize = 64 * 1024;

/// A sample must shrink by at least this many percent, or its frame goes
/// raw: below that, compressing costs more CPU than the bytes it saves.
pub const SAMPLE_GAIN_PERCENT: usize = 3;

/// What a session does with data frames (`compression`); stored by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Everything goes raw.
    None,
    /// zstd at [`ZSTD_LEVEL`] for data frames that shrink.
    #[default]
    Zstd,
}

impl Compression {
    /// The names `geo-rep config … compression` takes.
    pub const NAMES: &'static [&'static str] = &["zstd", "none"];

    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::None => "none",
        }
    }

    /// Parses a name of [`Compression::NAMES`].
    pub fn from_name(name: &str) -> Option<Compression> {
        match name {
            "zstd" => Some(Compression::Zstd),
            "none" => Some(Compression::None),
            _ => None,
        }
    }
}

thread_local! {
    /// One zstd context per thread that compresses (the piece readers),
    /// reused: creating one per frame would cost more than small frames.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { RefCell::new(None) };
}

fn compress_into(data: &[u8], out: &mut Vec<u8>) -> bool {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
        }
        let Some(c) = c.as_mut() else { return false };
        // A buffer shorter than the input: output that would not be smaller
        // is an error ("destination too small"), found without finishing.
        *out = Vec::with_capacity(data.len().saturating_sub(1));
        c.compress_to_buffer(data, out).is_ok() && out.len() < data.len()
    })
}

/// The file bytes a data frame carries, as the sample is taken from them.
fn payload(req: &Request) -> Option<&[u8]> {
    match req {
        Request::Piece { data, .. } => Some(data),
        // The first segment stands for the piece (they are usually few).
        Request::SparsePiece { segments, .. } => segments.first().map(|s| &s.data[..]),
        _ => None,
    }
}

/// Whether `out` is at least [`SAMPLE_GAIN_PERCENT`] smaller than `input`.
fn gains_enough(out: usize, input: usize) -> bool {
    out * 100 <= input * (100 - SAMPLE_GAIN_PERCENT)
}

/// Whether a sample of `data` (longer than two samples) shrinks enough.
fn sample_shrinks(data: &[u8]) -> bool {
    let mid = data.len() / 2;
    let mut sample = Vec::with_capacity(SAMPLE);
    sample.extend_from_slice(&data[..SAMPLE / 2]);
    sample.extend_from_slice(&data[mid..mid + SAMPLE / 2]);
    let mut out = Vec::new();
    compress_into(&sample, &mut out) && gains_enough(out.len(), sample.len())
}

/// Whether a data frame carrying `data` is worth compressing under
/// `compression` (see [`pack`]): one of at most two samples is tried whole.
/// Blocking (CPU).
pub fn worth_packing(data: &[u8], compression: Compression) -> bool {
    compression != Compression::None
        && data.len() >= MIN_PAYLOAD
        && (data.len() <= 2 * SAMPLE || sample_shrinks(data))
}

/// `req` as it should travel under `compression`: wrapped in
/// [`Request::Compressed`] if it is a data frame that zstd makes smaller,
/// else unchanged. Blocking (CPU): call it off the async runtime.
pub fn pack(req: Request, compression: Compression) -> Request {
    // A payload of at most two samples would be its own sample: the frame
    // is compressed once, and the gain judged on that (small files would
    // otherwise be compressed twice).
    let judge_whole = match payload(&req) {
        Some(p) if worth_packing(p, compression) => p.len() <= 2 * SAMPLE,
        _ => return req,
    };
    let Ok(raw) = postcard::to_allocvec(&req) else {
        return req;
    };
    let mut out = Vec::new();
    if raw.len() > MAX_FRAME || !compress_into(&raw, &mut out) {
        return req;
    }
    if judge_whole && !gains_enough(out.len(), raw.len()) {
        return req;
    }
    Request::Compressed {
        raw_len: raw.len() as u32,
        data: out,
    }
}

/// The data frame inside a [`Request::Compressed`] frame; any other request
/// is returned as it is. Memory is bounded by [`MAX_FRAME`] whatever the
/// frame says.
pub fn unpack(req: Request) -> Result<Request, ProtocolError> {
    let Request::Compressed { raw_len, data } = req else {
        return Ok(req);
    };
    let raw_len = raw_len as usize;
    if raw_len > MAX_FRAME {
        return Err(ProtocolError::Oversize(raw_len));
    }
    let corrupt = |why: String| ProtocolError::Corrupt(format!("compressed frame: {why}"));
    let mut raw = Vec::with_capacity(raw_len);
    let mut d = zstd::bulk::Decompressor::new().map_err(|e| corrupt(e.to_string()))?;
    d.decompress_to_buffer(&data, &mut raw)
        .map_err(|e| corrupt(format!("{e} (announced {raw_len} bytes)")))?;
    if raw.len() != raw_len {
        return Err(corrupt(format!(
            "{} bytes instead of the announced {raw_len}",
            raw.len()
        )));
    }
    let inner: Request = super::decode(&raw)?;
    match inner {
        Request::Piece { .. } | Request::SparsePiece { .. } => Ok(inner),
        _ => Err(ProtocolError::Unexpected(
            "a frame other than file data inside a compressed frame".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{PieceKind, Segment, PIECE_SIZE};

    fn piece(data: Vec<u8>) -> Request {
        Request::Piece {
            index: 2,
            kind: PieceKind::Literal,
            data,
        }
    }

    fn text(len: usize) -> Vec<u8> {
        let line = b"2026-11-27T19:00:00Z worker brick=/data/b1 shipped batch 1234 ok\n";
        line.iter().copied().cycle().take(len).collect()
    }

    fn random(len: usize) -> Vec<u8> {
        georep_testkit::random_bytes(len, 9)
    }

    fn wire_len(r: &Request) -> usize {
        crate::proto::encode(r).unwrap().len()
    }

    #[test]
    fn compressible_pieces_shrink_and_come_back_identical() {
        for len in [MIN_PAYLOAD, 4096, 3 * SAMPLE, PIECE_SIZE as usize] {
            let req = piece(text(len));
            let packed = pack(req.clone(), Compression::Zstd);
            assert!(
                matches!(packed, Request::Compressed { .. }),
                "{len} bytes of text were not compressed"
            );
            // Past zstd's frame overhead, repetitive text shrinks a lot.
            let factor = if len >= 4096 { 4 } else { 1 };
            assert!(wire_len(&packed) * factor < wire_len(&req), "{len}");
            assert_eq!(unpack(packed).unwrap(), req);
        }
        let sparse = Request::SparsePiece {
            index: 0,
            segments: vec![Segment {
                offset: 4096,
                data: text(100_000),
            }],
        };
        let packed = pack(sparse.clone(), Compression::Zstd);
        assert!(matches!(packed, Request::Compressed { .. }));
        assert_eq!(unpack(packed).unwrap(), sparse);
    }

    #[test]
    fn incompressible_tiny_and_control_frames_go_raw() {
        for req in [
            piece(random(PIECE_SIZE as usize)),
            piece(random(5000)),
            piece(text(MIN_PAYLOAD - 1)),
            Request::Barrier { id: 1 },
            Request::FileAbort,
        ] {
            assert_eq!(pack(req.clone(), Compression::Zstd), req);
        }
        // Random with a compressible head: the sample is taken from the
        // middle too, and the whole never grows.
        let mut mixed = text(SAMPLE);
        mixed.extend(random(4 * SAMPLE));
        let req = piece(mixed);
        assert!(wire_len(&pack(req.clone(), Compression::Zstd)) <= wire_len(&req));
        assert_eq!(
            pack(piece(text(4096)), Compression::None),
            piece(text(4096))
        );
    }

    #[test]
    fn passes_other_requests_through_unchanged() {
        let r = Request::Commit { batch: 3 };
        assert_eq!(unpack(r.clone()).unwrap(), r);
    }

    #[test]
    fn corrupt_oversize_lying_and_nested_frames_are_errors() {
        let Request::Compressed { raw_len, data } = pack(piece(text(100_000)), Compression::Zstd)
        else {
            panic!("not compressed");
        };
        // Announces more than any frame may hold: refused before decoding.
        let e = unpack(Request::Compressed {
            raw_len: MAX_FRAME as u32 + 1,
            data: data.clone(),
        });
        assert!(matches!(e, Err(ProtocolError::Oversize(_))), "{e:?}");
        // Announces less than it holds: zstd stops at the buffer's end.
        let e = unpack(Request::Compressed {
            raw_len: raw_len - 1,
            data: data.clone(),
        });
        assert!(matches!(e, Err(ProtocolError::Corrupt(_))), "{e:?}");
        // Announces more than it holds.
        let e = unpack(Request::Compressed {
            raw_len: raw_len + 1,
            data: data.clone(),
        });
        assert!(matches!(e, Err(ProtocolError::Corrupt(_))), "{e:?}");
        // Garbage and a truncated stream.
        for bad in [vec![0xde; 64], data[..data.len() / 2].to_vec()] {
            let e = unpack(Request::Compressed { raw_len, data: bad });
            assert!(matches!(e, Err(ProtocolError::Corrupt(_))), "{e:?}");
        }
        // A bomb: 8 MiB of zeros claiming the maximum is fine (bounded),
        // claiming a little less is an error, not a bigger buffer.
        let zeros = zstd::bulk::compress(&vec![0u8; MAX_FRAME + 1], 1).unwrap();
        let e = unpack(Request::Compressed {
            raw_len: MAX_FRAME as u32,
            data: zeros,
        });
        assert!(matches!(e, Err(ProtocolError::Corrupt(_))), "{e:?}");
        // Only file data may be inside.
        for inner in [
            Request::Barrier { id: 7 },
            Request::Compressed {
                raw_len: 1,
                data: vec![0],
            },
        ] {
            let raw = postcard::to_allocvec(&inner).unwrap();
            let e = unpack(Request::Compressed {
                raw_len: raw.len() as u32,
                data: zstd::bulk::compress(&raw, 1).unwrap(),
            });
            assert!(matches!(e, Err(ProtocolError::Unexpected(_))), "{e:?}");
        }
    }

    #[test]
    fn names_parse() {
        for n in Compression::NAMES {
            assert!(Compression::from_name(n).is_some());
        }
        assert_eq!(Compression::from_name("gzip"), None);
        assert_eq!(Compression::default(), Compression::Zstd);
    }
}
