//! Frames on the stream: length, encoding, bounded decoding, and the
//! version check.

use super::*;

/// Errors of the framing layer.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("connection closed by peer")]
    Closed,
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME} bytes")]
    Oversize(usize),
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("corrupt {0}")]
    Corrupt(String),
    #[error("unexpected message: {0}")]
    Unexpected(String),
    #[error("protocol version mismatch: master speaks {master}, slave speaks {slave}; upgrade the {older} side")]
    Version {
        master: u32,
        slave: u32,
        older: &'static str,
    },
    #[error("I/O error on the protocol stream: {0}")]
    Io(#[from] io::Error),
}

/// Encodes `msg` as one frame (length prefix included).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtocolError> {
    let mut buf = vec![0u8; 4];
    let mut buf = postcard::to_extend(msg, std::mem::take(&mut buf))?;
    let len = buf.len() - 4;
    if len > MAX_FRAME {
        return Err(ProtocolError::Oversize(len));
    }
    buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(buf)
}

/// The frame of a literal `Request::Piece` number `index` of `len` bytes,
/// with the bytes written by `fill` straight into the frame (a large file's
/// bytes are then copied once less on their way to the wire).
pub fn literal_piece_frame(
    index: u32,
    len: usize,
    fill: impl FnOnce(&mut [u8]) -> io::Result<()>,
) -> Result<Vec<u8>, ProtocolError> {
    // The frame of the piece with no bytes ends with their count (0, one
    // byte): put the real count there, then the bytes.
    let mut frame = encode(&Request::Piece {
        index,
        kind: PieceKind::Literal,
        data: Vec::new(),
    })?;
    frame.pop();
    let mut n = len;
    while n >= 0x80 {
        frame.push((n as u8) | 0x80);
        n >>= 7;
    }
    frame.push(n as u8);
    let head = frame.len();
    let body = head - 4 + len;
    if body > MAX_FRAME {
        return Err(ProtocolError::Oversize(body));
    }
    frame.resize(head + len, 0);
    fill(&mut frame[head..])?;
    frame[..4].copy_from_slice(&(body as u32).to_be_bytes());
    Ok(frame)
}

fn frame_len(header: [u8; 4]) -> Result<usize, ProtocolError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(ProtocolError::Oversize(len));
    }
    Ok(len)
}

/// The length (header included) of the frame at the start of `buf`, once
/// its header is there: whether the whole frame is buffered already.
pub fn next_frame_len(buf: &[u8]) -> Option<usize> {
    let header: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    Some(4 + u32::from_be_bytes(header) as usize)
}

fn map_eof(e: io::Error) -> ProtocolError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        ProtocolError::Closed
    } else {
        ProtocolError::Io(e)
    }
}

/// Reads one frame with blocking I/O (the slave side).
pub fn read_frame<T: for<'de> Deserialize<'de>, R: Read>(r: &mut R) -> Result<T, ProtocolError> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header).map_err(map_eof)?;
    let mut payload = vec![0u8; frame_len(header)?];
    r.read_exact(&mut payload).map_err(map_eof)?;
    decode(&payload)
}

/// Decodes one frame's payload. A sequence over its cap is refused as
/// [`ProtocolError::Corrupt`] naming the cap (postcard keeps no message of
/// its own for it).
pub fn decode<T: for<'de> Deserialize<'de>>(payload: &[u8]) -> Result<T, ProtocolError> {
    bounded::take_refusal();
    postcard::from_bytes(payload).map_err(|e| match bounded::take_refusal() {
        Some(why) => ProtocolError::Corrupt(format!("frame refused: {why}")),
        None => ProtocolError::Malformed(e),
    })
}

/// Writes one frame with blocking I/O (the slave side). Does not flush.
pub fn write_frame<T: Serialize, W: Write>(w: &mut W, msg: &T) -> Result<(), ProtocolError> {
    w.write_all(&encode(msg)?)?;
    Ok(())
}

/// Reads one frame from an async stream (the master side).
pub async fn read_frame_async<T, R>(r: &mut R) -> Result<T, ProtocolError>
where
    T: for<'de> Deserialize<'de>,
    R: AsyncRead + Unpin,
{
    read_frame_within(r, MAX_FRAME).await
}

/// [`read_frame_async`] for a frame of at most `max` bytes: what a peer may send of a kind of message is bounded by the
/// largest such message, not by [`MAX_FRAME`].
pub async fn read_frame_within<T, R>(r: &mut R, max: usize) -> Result<T, ProtocolError>
where
    T: for<'de> Deserialize<'de>,
    R: AsyncRead + Unpin,
{
    let mut header = [0u8; 4];
    r.read_exact(&mut header).await.map_err(map_eof)?;
    let len = frame_len(header)?;
    if len > max {
        return Err(ProtocolError::Corrupt(format!(
            "frame of {len} bytes, more than the {max} such a message can need"
        )));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await.map_err(map_eof)?;
    decode(&payload)
}

/// Writes one frame to an async stream (the master side). Does not flush.
pub async fn write_frame_async<T, W>(w: &mut W, msg: &T) -> Result<(), ProtocolError>
where
    T: Serialize,
    W: AsyncWrite + Unpin,
{
    w.write_all(&encode(msg)?).await?;
    Ok(())
}

/// Checks the peer's protocol version; `master` and `slave` as seen from the
/// handshake.
pub fn check_version(master: u32, slave: u32) -> Result<(), ProtocolError> {
    if master == slave {
        return Ok(());
    }
    Err(ProtocolError::Version {
        master,
        slave,
        older: if master < slave { "master" } else { "slave" },
    })
}
