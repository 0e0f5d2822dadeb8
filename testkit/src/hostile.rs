//! A hostile master: writes crafted request frames into a real
//! `geo-rep slave` process (its stdin and stdout, no SSH) and reads its
//! replies, with the real wire encoding.
//!
//! It also builds the streams that once exhausted a slave's memory
//! ([`zero_piece_bomb`], [`sparse_bomb`], [`prune_bomb`]) and measures the
//! slave's peak resident memory from `/proc/PID/status` (`VmHWM`).

use std::io::PipeWriter;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use georep::proto::{
    encode, read_frame, write_frame, Attrs, EntryOp, PieceKind, ProtocolError, Reply, Request,
    MAX_FRAME, PROTOCOL_VERSION,
};
use georep::relpath::RelPath;

use crate::TestkitError;

/// How long to wait for one reply (a bound on waiting, never asserted).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// A `geo-rep slave` process driven by the test.
pub struct FakeMaster {
    child: Child,
    /// To the thread writing the slave's input: a slave that stops reading
    /// then never blocks the test, whose waits are all bounded.
    stdin: Option<std::sync::mpsc::Sender<Vec<u8>>>,
    replies: Receiver<Result<Reply, ProtocolError>>,
    peak: Option<PeakWatch>,
    pub root: PathBuf,
}

/// Samples `VmHWM` of a process until it is gone, keeping the highest.
struct PeakWatch {
    kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Drop for PeakWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl FakeMaster {
    /// Starts `geo_rep slave --root root <args>`, through `wrapper` (e.g.
    /// `["prlimit", "--nofile=128:4096", "--"]`) if not empty, with
    /// `prelude` (at most a pipe's 64 KiB) already waiting on its input: the
    /// slave's first read gets all of it at once.
    pub fn spawn(
        geo_rep: &Path,
        root: &Path,
        args: &[&str],
        wrapper: &[&str],
        prelude: &[u8],
    ) -> Result<FakeMaster, TestkitError> {
        let (input, mut stdin) = std::io::pipe().map_err(TestkitError::io("making a pipe"))?;
        stdin
            .write_all(prelude)
            .map_err(TestkitError::io("writing the prelude"))?;
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(geo_rep);
                c
            }
            None => Command::new(geo_rep),
        };
        cmd.arg("slave")
            .arg("--root")
            .arg(root)
            .args(args)
            .stdin(input)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(TestkitError::io(format!(
            "starting {} slave --root {}",
            geo_rep.display(),
            root.display()
        )))?;
        // The child's copy of the read end is its own now.
        drop(cmd);
        let stdout = child.stdout.take();
        let (tx, replies) = std::sync::mpsc::channel();
        if let Some(stdout) = stdout {
            std::thread::spawn(move || {
                let mut r = BufReader::new(stdout);
                loop {
                    let reply = read_frame::<Reply, _>(&mut r);
                    let end = reply.is_err();
                    if tx.send(reply).is_err() || end {
                        return;
                    }
                }
            });
        }
        Ok(FakeMaster {
            child,
            stdin: Some(writer(stdin)),
            replies,
            peak: None,
            root: root.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `Hello` and returns the slave's answer.
    pub fn hello(&mut self) -> Result<Reply, TestkitError> {
        self.send(&Request::Hello {
            protocol: PROTOCOL_VERSION,
            agent_version: "hostile".into(),
        })?;
        self.recv()
    }

    /// Writes one request frame.
    pub fn send(&mut self, req: &Request) -> Result<(), TestkitError> {
        let frame = encode(req).map_err(|e| TestkitError::Setup(format!("encoding: {e}")))?;
        self.send_raw(&frame)
    }

    /// Writes bytes as they are (crafted frames), without waiting for the
    /// slave to read them.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), TestkitError> {
        self.stdin
            .as_ref()
            .and_then(|tx| tx.send(bytes.to_vec()).ok())
            .ok_or_else(|| TestkitError::Setup("the slave's input is closed".into()))
    }

    /// The next reply (an error if the slave closed its output or sent an
    /// undecodable frame).
    pub fn recv(&mut self) -> Result<Reply, TestkitError> {
        match self.replies.recv_timeout(REPLY_TIMEOUT) {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(TestkitError::Setup(format!("reading a reply: {e}"))),
            Err(RecvTimeoutError::Timeout) => Err(TestkitError::Timeout {
                what: "a reply of the slave".into(),
                waited: REPLY_TIMEOUT,
            }),
            Err(RecvTimeoutError::Disconnected) => {
                Err(TestkitError::Setup("the slave's output ended".into()))
            }
        }
    }

    /// Replies up to and including the first that `last` accepts (or a
    /// `Fatal`), in order.
    pub fn recv_until(
        &mut self,
        last: impl Fn(&Reply) -> bool,
    ) -> Result<Vec<Reply>, TestkitError> {
        let mut got = Vec::new();
        loop {
            let r = self.recv()?;
            let done = last(&r) || matches!(r, Reply::Fatal { .. });
            got.push(r);
            if done {
                return Ok(got);
            }
        }
    }

    /// Sends `Barrier{id}` and returns the replies up to its answer: once
    /// it arrives, every request before it was decoded and applied.
    pub fn barrier(&mut self, id: u64) -> Result<Vec<Reply>, TestkitError> {
        self.send(&Request::Barrier { id })?;
        self.recv_until(|r| matches!(r, Reply::Barrier { id: i } if *i == id))
    }

    /// Sends `Commit{batch}` and returns the replies up to `Committed`.
    pub fn commit(&mut self, batch: u64) -> Result<Vec<Reply>, TestkitError> {
        self.send(&Request::Commit { batch })?;
        self.recv_until(|r| matches!(r, Reply::Committed { batch: b } if *b == batch))
    }

    /// Sends a whole regular file: `FileBegin`, one literal piece, `FileEnd`.
    pub fn send_file(
        &mut self,
        seq: u64,
        path: &str,
        data: &[u8],
        attrs: Attrs,
    ) -> Result<(), TestkitError> {
        self.send(&Request::FileBegin {
            seq,
            path: rel(path)?,
            size: data.len() as u64,
        })?;
        self.send(&Request::Piece {
            index: 0,
            kind: PieceKind::Literal,
            data: data.to_vec(),
        })?;
        self.send(&Request::FileEnd {
            attrs,
            hash: *blake3::hash(data).as_bytes(),
        })
    }

    /// Starts sampling the slave's `VmHWM` until it exits (see
    /// [`FakeMaster::peak_rss_kib`]).
    pub fn watch_peak(&mut self) {
        let kib = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (k, s, pid) = (kib.clone(), stop.clone(), self.pid());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match vm_hwm_kib(pid) {
                    Some(v) => k.fetch_max(v, Ordering::Relaxed),
                    None => return,
                };
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        self.peak = Some(PeakWatch { kib, stop });
    }

    /// The slave's peak resident memory in KiB: `VmHWM` now, or the highest
    /// sampled since [`FakeMaster::watch_peak`] if it has exited.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let sampled = self.peak.as_ref().map(|p| p.kib.load(Ordering::Relaxed));
        match (vm_hwm_kib(self.pid()), sampled) {
            (Some(now), s) => Some(now.max(s.unwrap_or(0))),
            (None, s) => s.filter(|&v| v > 0),
        }
    }

    /// Closes the slave's input (the end of the session between frames).
    pub fn close_input(&mut self) {
        self.stdin = None;
    }

    /// Closes the input and waits (at most [`REPLY_TIMEOUT`]) for the slave
    /// to exit: its status and what it wrote on stderr.
    pub fn finish(mut self) -> Result<(ExitStatus, String), TestkitError> {
        self.close_input();
        let stderr = self.child.stderr.take();
        let status = super::wait_for(REPLY_TIMEOUT, Duration::from_millis(10), || {
            self.child.try_wait().ok().flatten()
        })?;
        let mut text = String::new();
        if let Some(mut e) = stderr {
            use std::io::Read;
            let _ = e.read_to_string(&mut text);
        }
        Ok((status, text))
    }
}

/// A thread writing what it is sent to `w`, until the senders are gone (then
/// it closes `w`) or the slave stops reading for good.
fn writer(mut w: PipeWriter) -> std::sync::mpsc::Sender<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        for chunk in rx {
            if w.write_all(&chunk).and_then(|()| w.flush()).is_err() {
                return;
            }
        }
    });
    tx
}

impl Drop for FakeMaster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmHWM` of process `pid` in KiB (`None` once it has exited).
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A path for requests.
pub fn rel(path: &str) -> Result<RelPath, TestkitError> {
    RelPath::new(path).map_err(|e| TestkitError::Setup(format!("path {path:?}: {e}")))
}

/// Appends `n` as a postcard varint.
fn push_varint(frame: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        frame.push((n as u8) | 0x80);
        n >>= 7;
    }
    frame.push(n as u8);
}

/// The frame of `req`, whose encoding ends with `empties` empty sequences
/// (their counts, 0), with the first of them replaced by `n` copies of
/// `element`: a sequence far larger in memory than on the wire, without
/// building it here.
fn with_sequence(
    req: &Request,
    empties: usize,
    n: usize,
    element: &[u8],
) -> Result<Vec<u8>, TestkitError> {
    let mut frame = encode(req).map_err(|e| TestkitError::Setup(format!("encoding: {e}")))?;
    let tail = frame.split_off(frame.len() - empties);
    if tail.iter().any(|&b| b != 0) {
        return Err(TestkitError::Setup("the sequences are not last".into()));
    }
    push_varint(&mut frame, n);
    for _ in 0..n {
        frame.extend_from_slice(element);
    }
    frame.extend_from_slice(&tail[1..]);
    let len = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    Ok(frame)
}

/// `payload` (a frame without its length) wrapped in `Request::Compressed`.
fn compressed(payload: &[u8]) -> Result<Vec<u8>, TestkitError> {
    let data =
        zstd::bulk::compress(payload, 19).map_err(|e| TestkitError::Setup(format!("zstd: {e}")))?;
    encode(&Request::Compressed {
        raw_len: payload.len() as u32,
        data,
    })
    .map_err(|e| TestkitError::Setup(format!("encoding: {e}")))
}

/// `count` compressed literal pieces of [`MAX_FRAME`]-sized zeros: each a
/// few hundred bytes on the wire, 8 MiB once unpacked. Legitimate data
/// (a file of zeros that is not sparse), so the slave must take them,
/// within bounded memory.
pub fn zero_piece_bomb(count: usize) -> Result<Vec<u8>, TestkitError> {
    let piece = Request::Piece {
        index: 0,
        kind: PieceKind::Literal,
        data: vec![0; georep::proto::PIECE_SIZE as usize],
    };
    let raw =
        postcard::to_allocvec(&piece).map_err(|e| TestkitError::Setup(format!("encoding: {e}")))?;
    let one = compressed(&raw)?;
    Ok(one.repeat(count))
}

/// `count` compressed `SparsePiece`s of as many empty segments as a frame
/// holds (about 4.2 million, 2 bytes each): a few hundred bytes on the
/// wire each.
pub fn sparse_bomb(count: usize) -> Result<Vec<u8>, TestkitError> {
    let empty = Request::SparsePiece {
        index: 0,
        segments: Vec::new(),
    };
    let n = (MAX_FRAME - 16) / 2;
    let frame = with_sequence(&empty, 1, n, &[0, 0])?;
    let one = compressed(&frame[4..])?;
    Ok(one.repeat(count))
}

/// `count` `Prune`s of `dir` keeping as many one-byte names as a frame
/// holds (about 4.2 million: 2 bytes each on the wire, some 50 in memory).
pub fn prune_bomb(dir: &str, count: usize) -> Result<Vec<u8>, TestkitError> {
    prune_of_names(dir, count, (MAX_FRAME - 64) / 2)
}

/// `count` `Prune`s of `dir` keeping `names` one-byte names each.
pub fn prune_of_names(dir: &str, count: usize, names: usize) -> Result<Vec<u8>, TestkitError> {
    let head = Request::Entry {
        seq: 1,
        op: EntryOp::Prune {
            path: rel(dir)?,
            keep: Vec::new(),
            kinds: Vec::new(),
        },
    };
    let frame = with_sequence(&head, 2, names, &[1, b'a'])?;
    Ok(frame.repeat(count))
}

/// Writes `req` to a byte vector as one frame (for building streams).
pub fn frame(req: &Request) -> Result<Vec<u8>, TestkitError> {
    let mut v = Vec::new();
    write_frame(&mut v, req).map_err(|e| TestkitError::Setup(format!("encoding: {e}")))?;
    Ok(v)
}
