//! What the reading thread may hold: frames are counted by the memory they
//! take once decoded, not by their bytes on the wire.
//!
//! A compressed frame of a few hundred bytes may unpack to [`MAX_FRAME`]
//! bytes, and a frame of many small elements (segments, names, xattrs)
//! takes several times its bytes as `Vec`s. Counting wire bytes let a few
//! KB of input hold gigabytes ahead of the request being applied. The caps
//! on elements per frame (`protocol`) bound what one frame can take; this
//! bounds how many such frames wait: the reader stops decoding while
//! [`READ_AHEAD_BYTES`] of decoded frames wait to be applied.
//!
//! [`MAX_FRAME`]: crate::proto::MAX_FRAME

use std::mem::size_of;
use std::sync::{Arc, Condvar, Mutex};

use crate::proto::{EntryOp, Request, Segment, Xattr};
use crate::relpath::RelPath;

/// Decoded bytes that may wait ahead of the request being applied (one
/// frame more may, whatever its size, so a large piece still gets through).
pub(crate) const READ_AHEAD_BYTES: usize = 32 * 1024 * 1024;

/// What a malloc'd block costs beyond its bytes (bookkeeping, rounding).
const ALLOC_OVERHEAD: usize = 16;

/// An estimate, from above, of the memory `req` takes once decoded.
pub(crate) fn decoded_size(req: &Request) -> usize {
    let heap = |len: usize| if len == 0 { 0 } else { len + ALLOC_OVERHEAD };
    let xattrs = |x: &Option<Vec<Xattr>>| {
        x.as_ref().map_or(0, |x| {
            heap(x.len() * size_of::<Xattr>())
                + x.iter()
                    .map(|x| heap(x.name.len()) + heap(x.value.len()))
                    .sum::<usize>()
        })
    };
    let path = |p: &RelPath| heap(p.as_bytes().len());
    size_of::<Request>()
        + match req {
            Request::Piece { data, .. } => heap(data.len()),
            Request::Compressed { data, .. } => heap(data.len()),
            Request::SparsePiece { segments, .. } => {
                heap(segments.len() * size_of::<Segment>())
                    + segments.iter().map(|s| heap(s.data.len())).sum::<usize>()
            }
            Request::Stat { paths, .. } => {
                heap(paths.len() * size_of::<RelPath>()) + paths.iter().map(path).sum::<usize>()
            }
            Request::FileEnd { attrs, .. } | Request::SetAttr { attrs, .. } => {
                xattrs(&attrs.xattrs)
            }
            Request::Entry {
                op: EntryOp::Prune { keep, kinds, .. },
                ..
            } => {
                heap(keep.len() * size_of::<serde_bytes::ByteBuf>())
                    + keep.iter().map(|n| heap(n.len())).sum::<usize>()
                    + heap(kinds.len())
            }
            Request::Entry {
                op: EntryOp::Symlink { target, .. },
                ..
            } => heap(target.len()),
            Request::Hello { agent_version, .. } => heap(agent_version.len()),
            // Paths, a few small fields: bounded by the frame.
            _ => 64,
        }
}

/// Decoded bytes handed over and not yet applied, shared by the reading
/// thread and the session.
#[derive(Clone, Default)]
pub(crate) struct InFlight(Arc<(Mutex<State>, Condvar)>);

#[derive(Default)]
struct State {
    bytes: usize,
    /// The session ended: the reader must not wait any more.
    closed: bool,
}

impl InFlight {
    /// Waits until `bytes` more may be handed over (at once when nothing
    /// waits), then counts them. `false` once the session has ended.
    pub fn reserve(&self, bytes: usize) -> bool {
        let (lock, freed) = &*self.0;
        let Ok(mut s) = lock.lock() else { return false };
        while !s.closed && s.bytes > 0 && s.bytes.saturating_add(bytes) > READ_AHEAD_BYTES {
            s = match freed.wait(s) {
                Ok(s) => s,
                Err(_) => return false,
            };
        }
        s.bytes = s.bytes.saturating_add(bytes);
        !s.closed
    }

    /// `bytes` handed over earlier were applied.
    pub fn release(&self, bytes: usize) {
        let (lock, freed) = &*self.0;
        if let Ok(mut s) = lock.lock() {
            s.bytes = s.bytes.saturating_sub(bytes);
            freed.notify_all();
        }
    }

    /// The session ended: wake the reader for good.
    pub fn close(&self) {
        let (lock, freed) = &*self.0;
        if let Ok(mut s) = lock.lock() {
            s.closed = true;
            freed.notify_all();
        }
    }
}
