//! The master's end of one protocol conversation with a slave.
//!
//! One task reads replies into a queue as soon as they arrive, so the slave
//! never blocks on a full pipe while the master is busy sending: requests are
//! pipelined, and replies come back in request order.
//!
//! Small frames are gathered into one buffer and written together (at
//! [`WRITE_BUFFER`] bytes, or before waiting for a reply): each write to an
//! SSH channel is at least one packet, encrypted and woken up for on both
//! ends, so a frame per write made small files cost a packet each.
//!
//! A link may carry further *lanes* (`sync-jobs`): more conversations with
//! slave processes of the same session, each with its own channel, over
//! which file contents are spread by parent directory ([`SlaveLink::lane_of`]),
//! so several slave processes create files at once. Entry operations and
//! attributes stay on the link itself (lane 0), in order; the shipper puts a
//! barrier on every lane between the data and whatever depends on it.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::throttle::Throttle;
use crate::proto::compress::Compression;
use crate::proto::{self as protocol, FileStamp, ProtocolError, Reply, Request, PROTOCOL_VERSION};

/// Frames are gathered up to this many bytes before they are written.
pub const WRITE_BUFFER: usize = 256 * 1024;

/// The largest reply frame taken from a slave. The largest legitimate one,
/// a signature of a whole piece, is 24 KiB; a frame decodes to at most 32
/// times its size (a `Stat` of absent files), so one frame can never take
/// more than 32 MiB.
pub const REPLY_MAX_FRAME: usize = 1024 * 1024;

/// How much memory the replies read but not yet taken by the shipper may
/// hold (see [`reply_cost`]). Legitimately they are answers to requests
/// sent, a few hundred bytes each; a slave that sends more than this ahead
/// ends the conversation rather than the master's memory.
pub const REPLY_QUEUE_MAX: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("protocol error talking to the slave: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("the slave stopped answering (no reply within {0} s; see the `timeout` option)")]
    Timeout(u64),
    #[error("the slave reported: {0}")]
    Fatal(String),
    /// The slave has seen a later fencing epoch of the worker's replica set
    /// (see "Fencing" in [`crate::proto`]): another member ships it now.
    #[error("{0}")]
    Deposed(Box<protocol::Deposed>),
    #[error("the slave closed the connection")]
    Closed,
    /// The stream said how its slave ended ([`StreamEnded`]), or another
    /// lane of the link ended and took this one down with it.
    #[error("{0}")]
    Ended(String),
    /// The lanes opened in the background (see [`SlaveLink::lanes_opening`])
    /// could not be opened.
    #[error("opening a further stream to the slave failed: {0}")]
    Lanes(String),
}

/// Lanes being opened in the background, with why it failed.
pub type LanesOpening<S> = tokio::task::JoinHandle<Result<Vec<SlaveLink<S>>, String>>;

/// How a stream tells the link why it ended: the inner error of the
/// `io::Error` its read returns (an SSH channel knows the slave process's
/// exit status or signal; a plain stream only reaches its end).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StreamEnded(pub String);

/// Shared by a link and its lanes: the first of them whose conversation
/// ends records why, and every write or wait on any of them stops at once.
/// Without it a write blocked on a dead slave (an SSH channel whose window
/// never opens again) would only end at the `timeout`.
#[derive(Clone)]
pub struct Ending(Arc<watch::Sender<Option<String>>>);

impl Default for Ending {
    fn default() -> Self {
        Ending(Arc::new(watch::Sender::new(None)))
    }
}

impl Ending {
    fn record(&self, why: String) {
        self.0.send_if_modified(|v| {
            let first = v.is_none();
            if first {
                *v = Some(why);
            }
            first
        });
    }

    /// Waits until some conversation has ended, and says which and how.
    async fn ended(&self) -> LinkError {
        let mut rx = self.0.subscribe();
        let why = match rx.wait_for(Option::is_some).await {
            Ok(why) => why.clone().unwrap_or_default(),
            // Unreachable while `self` holds the sender.
            Err(_) => return LinkError::Closed,
        };
        LinkError::Ended(why)
    }
}

/// What the slave said about itself in the handshake.
#[derive(Debug, Clone)]
pub struct SlaveHello {
    pub agent_version: String,
    pub root: String,
    pub root_empty: bool,
}

/// A handshaken conversation with a slave.
pub struct SlaveLink<S> {
    writer: WriteHalf<S>,
    /// Frames not yet written (see [`WRITE_BUFFER`]).
    wbuf: Vec<u8>,
    replies: mpsc::UnboundedReceiver<Result<Reply, ProtocolError>>,
    /// What the replies in `replies` cost (see [`REPLY_QUEUE_MAX`]).
    queued: Arc<AtomicUsize>,
    reader: tokio::task::JoinHandle<()>,
    timeout: Duration,
    bytes_sent: u64,
    next_seq: u64,
    hello: SlaveHello,
    /// Further conversations for file contents (see the module docs).
    lanes: Vec<SlaveLink<S>>,
    /// Lanes still being opened (see [`SlaveLink::lanes_opening`]).
    opening: Option<LanesOpening<S>>,
    /// The session's bandwidth limit, if any.
    throttle: Option<Arc<Throttle>>,
    /// What the shipper does with data frames (`compression`).
    compression: Compression,
    /// Shared with the lanes (see [`Ending`]).
    ending: Ending,
    /// A fencing epoch was declared after `Hello`: its answer follows.
    fenced: bool,
}

impl<S> Drop for SlaveLink<S> {
    fn drop(&mut self) {
        self.reader.abort();
        if let Some(opening) = &self.opening {
            opening.abort();
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Send + 'static> SlaveLink<S> {
    /// Greets the slave and checks that both speak the same protocol.
    pub async fn open(stream: S, timeout: Duration) -> Result<SlaveLink<S>, LinkError> {
        Self::greet(stream, timeout).await?.greeted().await
    }

    /// Sends the greeting without waiting for the answer ([`SlaveLink::greeted`]),
    /// so several slaves can start at once: each start is a process run by
    /// the slave's sshd, typically a good part of a second.
    pub async fn greet(stream: S, timeout: Duration) -> Result<SlaveLink<S>, LinkError> {
        Self::greet_with(stream, timeout, Ending::default(), None).await
    }

    /// [`SlaveLink::greet`] for a conversation that is to be a lane of a
    /// link: give every lane the link's `ending`. With `fence`, the
    /// conversation ships under that epoch of its replica set, declared
    /// right after `Hello` (on every lane).
    pub async fn greet_with(
        stream: S,
        timeout: Duration,
        ending: Ending,
        fence: Option<&protocol::Fence>,
    ) -> Result<SlaveLink<S>, LinkError> {
        let (read, writer) = tokio::io::split(stream);
        let (tx, replies) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let reader = tokio::spawn(read_replies(read, tx, queued.clone(), ending.clone()));
        let mut link = SlaveLink {
            writer,
            wbuf: Vec::with_capacity(WRITE_BUFFER),
            replies,
            queued,
            reader,
            timeout,
            bytes_sent: 0,
            next_seq: 0,
            hello: SlaveHello {
                agent_version: String::new(),
                root: String::new(),
                root_empty: false,
            },
            lanes: Vec::new(),
            opening: None,
            throttle: None,
            compression: Compression::None,
            ending,
            fenced: fence.is_some(),
        };
        link.send(&Request::Hello {
            protocol: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").into(),
        })
        .await?;
        if let Some(fence) = fence {
            link.send(&Request::Fence(fence.clone())).await?;
        }
        link.flush().await?;
        Ok(link)
    }

    /// Waits for the slave's answer to [`SlaveLink::greet`].
    pub async fn greeted(mut self) -> Result<SlaveLink<S>, LinkError> {
        match self.recv().await? {
            Reply::Hello {
                protocol,
                agent_version,
                root,
                root_empty,
            } => {
                protocol::check_version(PROTOCOL_VERSION, protocol)?;
                self.hello = SlaveHello {
                    agent_version,
                    root,
                    root_empty,
                };
                if self.fenced {
                    // A deposed epoch is an error of `recv`.
                    match self.recv().await? {
                        Reply::Fenced { .. } => {}
                        other => {
                            return Err(ProtocolError::Unexpected(format!(
                                "{other:?} instead of Fenced"
                            ))
                            .into())
                        }
                    }
                }
                Ok(self)
            }
            other => Err(ProtocolError::Unexpected(format!("{other:?} instead of Hello")).into()),
        }
    }
}

impl<S: AsyncRead + AsyncWrite> SlaveLink<S> {
    pub fn hello(&self) -> &SlaveHello {
        &self.hello
    }

    /// Payload bytes written to the slave so far (frames included), over
    /// every lane.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent + self.lanes.iter().map(|l| l.bytes_sent).sum::<u64>()
    }

    /// Limits what this link and its lanes send (shared with whoever else
    /// holds `throttle`).
    pub fn set_throttle(&mut self, throttle: Option<Arc<Throttle>>) {
        for lane in &mut self.lanes {
            lane.set_throttle(throttle.clone());
        }
        self.throttle = throttle;
    }

    /// Sets what the shipper does with the data frames of this link and its
    /// lanes (see [`crate::proto::compress`]); every slave of protocol version 5
    /// takes either.
    pub fn set_compression(&mut self, compression: Compression) {
        self.compression = compression;
    }

    /// What the shipper does with data frames.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Adds a lane for file contents (with this link's bandwidth limit).
    pub fn add_lane(&mut self, mut lane: SlaveLink<S>) {
        lane.set_throttle(self.throttle.clone());
        self.lanes.push(lane);
    }

    /// Lanes for file contents that are being opened in the background;
    /// [`SlaveLink::adopt_lanes`] adds them once they are greeted. (Each is
    /// a remote login, which costs a good part of a second on some hosts:
    /// the first conversation starts work without waiting for them.)
    pub fn lanes_opening(&mut self, opening: LanesOpening<S>) {
        self.opening = Some(opening);
    }

    /// Adds the lanes opened in the background if they are ready; whether
    /// any were added. Their failure to open fails the link, as it would
    /// have failed to open with them. Which lane carries a path changes
    /// with the number of lanes: the caller must know that nothing sent so
    /// far is still being applied (see the shipper's barriers).
    pub async fn adopt_lanes(&mut self) -> Result<bool, LinkError> {
        if !self.opening.as_ref().is_some_and(|o| o.is_finished()) {
            return Ok(false);
        }
        let Some(opening) = self.opening.take() else {
            return Ok(false);
        };
        let lanes = opening
            .await
            .map_err(|e| LinkError::Lanes(e.to_string()))?
            .map_err(LinkError::Lanes)?;
        let added = !lanes.is_empty();
        for lane in lanes {
            self.add_lane(lane);
        }
        Ok(added)
    }

    /// How many conversations carry file contents (this link and its lanes).
    pub fn lane_count(&self) -> usize {
        1 + self.lanes.len()
    }

    /// The lane that carries the content of `path`: by its parent directory,
    /// so one directory's files are created by one slave process (creation
    /// in a directory is serialised by the kernel anyway), and a path always
    /// takes the same lane.
    pub fn lane_of(&self, path: &crate::relpath::RelPath) -> usize {
        if self.lanes.is_empty() {
            return 0;
        }
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        path.parent().unwrap_or_default().hash(&mut h);
        (h.finish() % self.lane_count() as u64) as usize
    }

    /// Lane `i` (0 is this link itself).
    pub fn lane(&mut self, i: usize) -> &mut SlaveLink<S> {
        match i {
            0 => self,
            i => &mut self.lanes[i - 1],
        }
    }

    /// The last sequence number handed out (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.next_seq
    }

    /// A fresh sequence number for a request.
    pub fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Sends one request (buffered: see [`WRITE_BUFFER`]). A slave that
    /// stops reading (frozen, or a hung connection) fills the window; that
    /// counts as no answer too.
    pub async fn send(&mut self, req: &Request) -> Result<(), LinkError> {
        self.send_frame(protocol::encode(req)?).await
    }

    /// Sends one frame already encoded (see [`protocol::encode`]), as
    /// [`SlaveLink::send`] does.
    pub async fn send_frame(&mut self, frame: Vec<u8>) -> Result<(), LinkError> {
        self.bytes_sent += frame.len() as u64;
        if self.wbuf.len() + frame.len() > WRITE_BUFFER {
            self.write_buffered().await?;
        }
        if frame.len() >= WRITE_BUFFER {
            // A large frame goes as it is rather than through another copy.
            return self.write_raw(&frame).await;
        }
        self.wbuf.extend_from_slice(&frame);
        Ok(())
    }

    async fn write_buffered(&mut self) -> Result<(), LinkError> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.wbuf);
        let r = self.write_raw(&buf).await;
        self.wbuf = buf;
        self.wbuf.clear();
        r
    }

    async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        let write = async {
            if let Some(t) = &self.throttle {
                t.take(bytes.len()).await;
            }
            tokio::time::timeout(self.timeout, self.writer.write_all(bytes)).await
        };
        // Written bytes win over an ending noticed at the same time: the
        // caller then meets the ending at its next step.
        tokio::select! {
            biased;
            written = write => {
                written
                    .map_err(|_| LinkError::Timeout(self.timeout.as_secs()))?
                    .map_err(|e| stream_error(e.into()))?;
                Ok(())
            }
            ended = self.ending.ended() => Err(ended),
        }
    }

    pub async fn flush(&mut self) -> Result<(), LinkError> {
        self.write_buffered().await?;
        tokio::select! {
            biased;
            flushed = tokio::time::timeout(self.timeout, self.writer.flush()) => {
                flushed
                    .map_err(|_| LinkError::Timeout(self.timeout.as_secs()))?
                    .map_err(|e| stream_error(e.into()))?;
                Ok(())
            }
            ended = self.ending.ended() => Err(ended),
        }
    }

    /// The next reply; a `Fatal` from the slave becomes an error. Buffered
    /// requests are written first: the reply may depend on them.
    pub async fn recv(&mut self) -> Result<Reply, LinkError> {
        if !self.wbuf.is_empty() {
            self.flush().await?;
        }
        // This lane's own replies first: when it is the one that ended,
        // its queue holds the precise error.
        let got = tokio::select! {
            biased;
            got = tokio::time::timeout(self.timeout, self.replies.recv()) => {
                got.map_err(|_| LinkError::Timeout(self.timeout.as_secs()))?
            }
            ended = self.ending.ended() => {
                match self.replies.try_recv() {
                    Ok(got) => Some(got),
                    Err(_) => return Err(ended),
                }
            }
        };
        match got {
            None => Err(LinkError::Closed),
            Some(Err(e)) => Err(stream_error(e)),
            Some(Ok(reply)) => {
                self.queued.fetch_sub(reply_cost(&reply), Ordering::Relaxed);
                match printable(reply) {
                    Reply::Fatal { message } => Err(LinkError::Fatal(message)),
                    Reply::Deposed(d) => Err(LinkError::Deposed(Box::new(d))),
                    reply => Ok(reply),
                }
            }
        }
    }

    /// Ends the conversation cleanly (the slave sees end of input); bounded
    /// by the timeout, since the slave may be the thing that hangs.
    pub async fn close(mut self) {
        // Lanes that opened meanwhile are ended cleanly too.
        if let Some(opening) = self.opening.take() {
            if opening.is_finished() {
                if let Ok(Ok(lanes)) = opening.await {
                    self.lanes.extend(lanes);
                }
            } else {
                opening.abort();
            }
        }
        for lane in std::mem::take(&mut self.lanes) {
            Box::pin(lane.close()).await;
        }
        // Straight to the stream, not through `flush`: the lanes just
        // closed may already have ended the link's `Ending`.
        let t = self.timeout;
        let wbuf = std::mem::take(&mut self.wbuf);
        let _ = tokio::time::timeout(t, async {
            if !wbuf.is_empty() {
                let _ = self.writer.write_all(&wbuf).await;
            }
            let _ = self.writer.flush().await;
            let _ = self.writer.shutdown().await;
        })
        .await;
    }
}

/// How the stream said it ended, if the reader's error is that.
fn stream_ended(e: &ProtocolError) -> Option<&StreamEnded> {
    match e {
        ProtocolError::Io(io) => io.get_ref()?.downcast_ref::<StreamEnded>(),
        _ => None,
    }
}

/// What an error of the stream means to the caller.
fn stream_error(e: ProtocolError) -> LinkError {
    if let Some(ended) = stream_ended(&e) {
        return LinkError::Ended(ended.0.clone());
    }
    match e {
        ProtocolError::Closed => LinkError::Closed,
        e => e.into(),
    }
}

/// `reply` with the text the slave wrote escaped (see [`crate::terminal`]):
/// it ends up in logs, in the state database and on terminals.
fn printable(reply: Reply) -> Reply {
    let escape = |s: String| match crate::terminal::escape_controls(&s) {
        std::borrow::Cow::Borrowed(_) => s,
        std::borrow::Cow::Owned(escaped) => escaped,
    };
    match reply {
        Reply::Fatal { message } => Reply::Fatal {
            message: escape(message),
        },
        Reply::Failed(mut f) => {
            f.message = escape(f.message);
            Reply::Failed(f)
        }
        Reply::Hello {
            protocol,
            agent_version,
            root,
            root_empty,
        } => Reply::Hello {
            protocol,
            agent_version: escape(agent_version),
            root: escape(root),
            root_empty,
        },
        Reply::Deposed(d) => Reply::Deposed(protocol::Deposed {
            set: escape(d.set),
            holder: escape(d.holder),
            root: escape(d.root),
            ..d
        }),
        other => other,
    }
}

/// What a reply read ahead holds in memory, about.
fn reply_cost(reply: &Reply) -> usize {
    std::mem::size_of::<Reply>()
        + match reply {
            Reply::SigPiece { data } => data.len(),
            Reply::Stat { files, .. } => files.len() * std::mem::size_of::<Option<FileStamp>>(),
            Reply::Failed(f) => f.path.as_bytes().len() + f.message.len(),
            Reply::Hello {
                agent_version,
                root,
                ..
            } => agent_version.len() + root.len(),
            Reply::Fatal { message } => message.len(),
            Reply::Deposed(d) => d.set.len() + d.holder.len() + d.root.len(),
            Reply::Scan { entries, .. } => entries
                .iter()
                .map(|e| {
                    std::mem::size_of::<crate::proto::ScanEntry>()
                        + e.name.len()
                        + e.target.as_ref().map_or(0, |t| t.len())
                })
                .sum(),
            Reply::SigBegin { .. }
            | Reply::Barrier { .. }
            | Reply::Committed { .. }
            | Reply::Partial { .. }
            | Reply::ListingDiffers { .. }
            | Reply::Tree { .. }
            | Reply::Fenced { .. } => 0,
        }
}

async fn read_replies<R: AsyncRead>(
    mut read: ReadHalf<R>,
    tx: mpsc::UnboundedSender<Result<Reply, ProtocolError>>,
    queued: Arc<AtomicUsize>,
    ending: Ending,
) {
    loop {
        let reply = protocol::read_frame_within::<Reply, _>(&mut read, REPLY_MAX_FRAME)
            .await
            .and_then(|reply| {
                let cost = reply_cost(&reply);
                let before = queued.fetch_add(cost, Ordering::Relaxed);
                if before + cost > REPLY_QUEUE_MAX {
                    return Err(ProtocolError::Unexpected(format!(
                        "the slave sent more than {} MiB of replies ahead of the master",
                        REPLY_QUEUE_MAX >> 20
                    )));
                }
                Ok(reply)
            });
        let Err(e) = reply else {
            if tx.send(reply).is_err() {
                return;
            }
            continue;
        };
        // Queued before the ending is recorded, so this lane's own wait
        // finds the precise error.
        let why = reader_error_text(&e);
        let _ = tx.send(Err(e));
        ending.record(why);
        return;
    }
}

/// The ending as the other lanes report it.
fn reader_error_text(e: &ProtocolError) -> String {
    match (stream_ended(e), e) {
        (Some(ended), _) => ended.0.clone(),
        (None, ProtocolError::Closed) => LinkError::Closed.to_string(),
        (None, e) => format!("a conversation with the slave failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lane whose slave went away ends a write blocked on another lane,
    /// instead of leaving it to the `timeout`.
    #[tokio::test]
    async fn the_end_of_one_lane_fails_a_write_blocked_on_another() {
        let ending = Ending::default();
        // This slave stays but never reads: a big enough write blocks.
        let (a, _stalled) = tokio::io::duplex(64 * 1024);
        let (b, gone) = tokio::io::duplex(64 * 1024);
        // Long enough that the test fails on `Timeout` if the ending is
        // not noticed.
        let timeout = Duration::from_secs(30);
        let mut link = SlaveLink::greet_with(a, timeout, ending.clone(), None)
            .await
            .unwrap();
        link.add_lane(
            SlaveLink::greet_with(b, timeout, ending, None)
                .await
                .unwrap(),
        );
        let write = link.write_raw(&[0u8; 1 << 20]);
        let dies = async {
            tokio::task::yield_now().await;
            drop(gone);
        };
        let (written, ()) = tokio::join!(write, dies);
        match written {
            Err(LinkError::Ended(why)) => assert_eq!(why, LinkError::Closed.to_string()),
            other => panic!("expected the lane's end, got {other:?}"),
        }
        // The lane that ended reports it too.
        assert!(matches!(link.lane(1).recv().await, Err(LinkError::Closed)));
    }

    /// Replies the master has not taken yet are bounded: a slave that sends
    /// more than [`REPLY_QUEUE_MAX`] ahead ends the conversation with a
    /// protocol error, and a reply frame larger than any reply needs is
    /// refused before it is read.
    #[tokio::test]
    async fn replies_read_ahead_are_bounded() {
        let big = Reply::Failed(protocol::Failure {
            seq: 1,
            path: crate::relpath::RelPath::new("f").unwrap(),
            kind: protocol::FailureKind::Io,
            errno: None,
            message: "x".repeat(REPLY_MAX_FRAME - 64),
        });
        let frame = protocol::encode(&big).unwrap();
        let sent = 2 * REPLY_QUEUE_MAX / frame.len();
        let stream = std::io::Cursor::new(frame.repeat(sent));
        let (read, _) = tokio::io::split(stream);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        // Nothing takes the replies meanwhile: the reader runs to its end.
        read_replies(read, tx, queued, Ending::default()).await;
        let mut taken = 0;
        let ended = loop {
            match rx.recv().await {
                Some(Ok(_)) => taken += 1,
                Some(Err(e)) => break e.to_string(),
                None => panic!("the reader ended without an error"),
            }
        };
        assert!(ended.contains("ahead of the master"), "{ended}");
        assert!(
            taken * frame.len() <= REPLY_QUEUE_MAX,
            "{taken} replies queued"
        );

        let huge = Reply::SigPiece {
            data: vec![0; REPLY_MAX_FRAME + 1],
        };
        let stream = std::io::Cursor::new(protocol::encode(&huge).unwrap());
        let (read, _) = tokio::io::split(stream);
        let (tx, mut rx) = mpsc::unbounded_channel();
        read_replies(read, tx, Arc::default(), Ending::default()).await;
        match rx.recv().await {
            Some(Err(e)) => assert!(e.to_string().contains("more than"), "{e}"),
            other => panic!("expected the frame refused, got {other:?}"),
        }
    }

    /// Lanes opened in the background join the link only once they are
    /// greeted, with the link's bandwidth limit; a failure to open them
    /// fails the link.
    #[tokio::test]
    async fn lanes_opened_in_the_background_are_taken_on_when_ready() {
        let timeout = Duration::from_secs(30);
        let (a, _slave_a) = tokio::io::duplex(64 * 1024);
        let mut link = SlaveLink::greet(a, timeout).await.unwrap();
        link.set_throttle(Throttle::new(1 << 30).map(Arc::new));
        let (go, ready) = tokio::sync::oneshot::channel::<()>();
        let (b, _slave_b) = tokio::io::duplex(64 * 1024);
        link.lanes_opening(tokio::spawn(async move {
            let _ = ready.await;
            Ok(vec![SlaveLink::greet(b, timeout)
                .await
                .map_err(|e| e.to_string())?])
        }));
        // Not waited for: the answer comes at once.
        let early = tokio::time::timeout(Duration::from_secs(10), link.adopt_lanes()).await;
        assert!(matches!(early, Ok(Ok(false))), "not opened yet");
        assert_eq!(link.lane_count(), 1);
        go.send(()).unwrap();
        while !link.adopt_lanes().await.unwrap() {
            tokio::task::yield_now().await;
        }
        assert_eq!(link.lane_count(), 2);
        assert!(link.lane(1).throttle.is_some());
        assert!(!link.adopt_lanes().await.unwrap(), "taken on once");

        link.lanes_opening(tokio::spawn(async { Err("no more sessions".to_owned()) }));
        let failed = loop {
            match link.adopt_lanes().await {
                Ok(false) => tokio::task::yield_now().await,
                other => break other,
            }
        };
        assert!(
            matches!(&failed, Err(LinkError::Lanes(why)) if why == "no more sessions"),
            "{failed:?}"
        );
    }
}
