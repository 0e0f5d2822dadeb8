//! What the master checks in the slave's replies before it acts on them: a
//! hostile or broken slave must neither crash nor hang the master, nor make
//! it send what the session excludes.
//!
//! * A signature must be one the master could have asked for: the block size
//!   and strong hash length of [`SIG_BLOCK_SIZE`] and [`SIG_STRONG_LEN`] (a
//!   block size of 0 sends `fast_rsync::diff` into an endless loop), and no
//!   more blocks than its piece of the slave's file holds. Only as many
//!   pieces as the local file has are kept; the slave's further pieces
//!   (its copy is larger) are read and dropped one by one, so memory never
//!   follows the size the slave declares.
//! * A failure names a request of this batch: a sequence number never sent
//!   ends the session instead of sending the path the slave names.

use fast_rsync::{Signature, SignatureOptions};

use crate::proto::{PIECE_SIZE, SIG_BLOCK_SIZE, SIG_STRONG_LEN};
use crate::relpath::RelPath;

/// The largest size a regular file can have (`off_t`): a slave declaring
/// more lies.
const MAX_FILE_SIZE: u64 = i64::MAX as u64;

/// Header of a serialized signature: magic, block size, strong hash length.
const SIG_HEADER: usize = 12;

/// How many pieces of the slave's signatures of `path` to keep and to drop:
/// `(keep, drop)` for a slave copy of `slave_size` bytes and a local file
/// of `local_size` bytes.
pub(super) fn signature_pieces(
    path: &RelPath,
    slave_size: u64,
    local_size: u64,
) -> Result<(u64, u64), String> {
    if slave_size > MAX_FILE_SIZE {
        return Err(format!(
            "the slave announced signatures of {path} for {slave_size} bytes, more than any file can hold"
        ));
    }
    let pieces = slave_size.div_ceil(PIECE_SIZE);
    let keep = pieces.min(local_size.div_ceil(PIECE_SIZE));
    Ok((keep, pieces - keep))
}

/// Piece `index` of the slave's signatures of `path`, a copy of
/// `slave_size` bytes, checked against what the master asks for.
pub(super) fn check_signature(
    path: &RelPath,
    index: u64,
    slave_size: u64,
    data: Vec<u8>,
) -> Result<Signature, String> {
    let bad = |why: String| format!("signature {index} of {path} from the slave: {why}");
    let header = data
        .get(..SIG_HEADER)
        .ok_or_else(|| bad(format!("{} bytes, shorter than its header", data.len())))?;
    let word = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    if header[..4] != expected_magic() {
        return Err(bad("not an MD4 signature".into()));
    }
    let (block, strong) = (word(4), word(8));
    if block != SIG_BLOCK_SIZE || strong != SIG_STRONG_LEN {
        return Err(bad(format!(
            "block size {block} and hash length {strong}, not the {SIG_BLOCK_SIZE} and {SIG_STRONG_LEN} asked for"
        )));
    }
    let per_block = 4 + SIG_STRONG_LEN as usize;
    let body = data.len() - SIG_HEADER;
    // A piece read short on the slave (the file shrank meanwhile) has fewer
    // blocks, never more.
    let piece = slave_size
        .saturating_sub(index.saturating_mul(PIECE_SIZE))
        .min(PIECE_SIZE);
    let most = piece.div_ceil(u64::from(SIG_BLOCK_SIZE));
    if !body.is_multiple_of(per_block) || (body / per_block) as u64 > most {
        return Err(bad(format!(
            "{body} bytes of block hashes, for a piece of at most {most} blocks"
        )));
    }
    Signature::deserialize(data).map_err(|e| bad(e.to_string()))
}

/// The magic of the signatures the slave makes (MD4, as `fast_rsync` writes
/// it).
fn expected_magic() -> [u8; 4] {
    let options = SignatureOptions {
        block_size: SIG_BLOCK_SIZE,
        crypto_hash_size: SIG_STRONG_LEN,
    };
    let sig = Signature::calculate(&[], options);
    let s = sig.serialized();
    [s[0], s[1], s[2], s[3]]
}

/// Whether `seq` numbers a request of this batch: after `before` (the last
/// number of earlier batches) and at most `last` (the last one sent).
pub(super) fn sent_in_batch(seq: u64, before: u64, last: u64) -> bool {
    seq > before && seq <= last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> RelPath {
        RelPath::new("d/f").unwrap()
    }

    fn sig(data: &[u8], block_size: u32, crypto_hash_size: u32) -> Vec<u8> {
        let options = SignatureOptions {
            block_size,
            crypto_hash_size,
        };
        Signature::calculate(data, options).into_serialized()
    }

    #[test]
    fn signatures_must_have_the_asked_shape() {
        let data = vec![7u8; 3 * SIG_BLOCK_SIZE as usize];
        let size = data.len() as u64;
        let good = sig(&data, SIG_BLOCK_SIZE, SIG_STRONG_LEN);
        assert!(check_signature(&p(), 0, size, good.clone()).is_ok());
        // Read short on the slave: fewer blocks are fine.
        assert!(check_signature(&p(), 0, size + 1, sig(&data[..10], 4096, 8)).is_ok());
        let mut zero_block = good.clone();
        zero_block[4..8].copy_from_slice(&0u32.to_be_bytes());
        let e = check_signature(&p(), 0, size, zero_block).unwrap_err();
        assert!(e.contains("block size 0") && e.contains("d/f"), "{e}");
        assert!(check_signature(&p(), 0, size, sig(&data, 2048, 8)).is_err());
        assert!(check_signature(&p(), 0, size, sig(&data, 4096, 16)).is_err());
        // More blocks than the announced size holds.
        assert!(check_signature(&p(), 0, size - 4096, good.clone()).is_err());
        // Past the end of the announced size: no block at all.
        assert!(check_signature(&p(), 1, size, good.clone()).is_err());
        assert!(check_signature(&p(), 0, size, good[..5].to_vec()).is_err());
        assert!(check_signature(&p(), 0, size, good[..good.len() - 1].to_vec()).is_err());
    }

    #[test]
    fn only_the_local_files_pieces_are_kept() {
        assert_eq!(signature_pieces(&p(), 0, 5), Ok((0, 0)));
        assert_eq!(
            signature_pieces(&p(), 3 * PIECE_SIZE, PIECE_SIZE + 1),
            Ok((2, 1))
        );
        assert_eq!(
            signature_pieces(&p(), PIECE_SIZE, 9 * PIECE_SIZE),
            Ok((1, 0))
        );
        assert!(signature_pieces(&p(), u64::MAX, 1).is_err());
        assert!(signature_pieces(&p(), MAX_FILE_SIZE, 1).is_ok());
    }

    #[test]
    fn a_sequence_number_belongs_to_the_batch_or_to_nothing() {
        assert!(sent_in_batch(5, 4, 9));
        assert!(sent_in_batch(9, 4, 9));
        assert!(!sent_in_batch(4, 4, 9));
        assert!(!sent_in_batch(10, 4, 9));
        assert!(!sent_in_batch(0, 0, 9));
    }
}
