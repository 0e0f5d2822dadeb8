//! A hostile slave: a fake `geo-rep slave` that answers the real master
//! (its [`SlaveLink`] and shipper) with crafted replies, to show what the
//! master trusts from the slave.
//!
//! It greets as a slave of this protocol version with an empty root, then
//! hands each request to a script. The script answers with crafted replies
//! ([`Answer`]), or leaves the request to [`honest_answer`]: what a slave
//! whose tree is empty would say. Every request is recorded, so a test can
//! tell what left the master ([`HostileSlave::paths_named`]).
//!
//! Part of the shipper's tests, since it drives the shipper itself; it
//! runs in-process over a [`tokio::io::duplex`] pipe: what the master
//! sees is the byte stream a real slave would send.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, DuplexStream};

use super::{ShipError, ShipMemory, ShipReport, Shipper};
use crate::crawl::filter::SyncFilter;
use crate::crawl::Batch;
use crate::proto::{
    encode, read_frame_async, EntryOp, ProtocolError, Reply, Request, PROTOCOL_VERSION,
};
use crate::relpath::RelPath;
use crate::transport::link::{LinkError, SlaveLink};

/// What the fake slave answers to one request.
pub enum Answer {
    /// What an honest slave with an empty tree answers ([`honest_answer`]).
    Honest,
    /// These replies, in order.
    Replies(Vec<Reply>),
    /// These replies, then `reply` `times` times: a stream far larger than
    /// anything the fake slave holds in memory (encoded once). Then the
    /// slave hangs up.
    Flood {
        first: Vec<Reply>,
        reply: Reply,
        times: u64,
    },
}

/// What an honest slave whose tree is empty answers to `req`.
pub fn honest_answer(req: &Request) -> Vec<Reply> {
    match req {
        Request::Hello { .. } => vec![Reply::Hello {
            protocol: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").into(),
            root: "/hostile".into(),
            root_empty: true,
        }],
        Request::Barrier { id } => vec![Reply::Barrier { id: *id }],
        Request::Commit { batch } => vec![Reply::Committed { batch: *batch }],
        Request::Stat { seq, paths } => vec![Reply::Stat {
            seq: *seq,
            files: vec![None; paths.len()],
        }],
        Request::Signature { seq, .. } => vec![Reply::SigBegin {
            seq: *seq,
            size: None,
        }],
        Request::Partial { seq, .. } => vec![Reply::Partial {
            seq: *seq,
            pieces: 0,
        }],
        Request::CheckTree { seq, .. } => vec![Reply::Tree {
            seq: *seq,
            same: false,
        }],
        _ => Vec::new(),
    }
}

/// A fake slave serving one conversation.
pub struct HostileSlave {
    requests: Arc<Mutex<Vec<Request>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HostileSlave {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HostileSlave {
    /// A link of the real master to a fake slave run by `script` (see the
    /// module docs), greeted.
    pub async fn link(
        timeout: Duration,
        script: impl FnMut(&Request) -> Answer + Send + 'static,
    ) -> Result<(SlaveLink<DuplexStream>, HostileSlave), LinkError> {
        let (master, slave) = tokio::io::duplex(64 * 1024);
        let fake = HostileSlave::spawn(slave, script);
        let link = SlaveLink::open(master, timeout).await?;
        Ok((link, fake))
    }

    /// Serves the slave's end `stream` of a conversation.
    pub fn spawn(
        stream: DuplexStream,
        mut script: impl FnMut(&Request) -> Answer + Send + 'static,
    ) -> HostileSlave {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            let (mut read, mut write) = tokio::io::split(stream);
            loop {
                let req: Request = match read_frame_async(&mut read).await {
                    Ok(r) => r,
                    // The master hung up (or sent garbage): the end.
                    Err(_) => return,
                };
                let answer = match &req {
                    Request::Hello { .. } => Answer::Honest,
                    other => script(other),
                };
                let (first, flood) = match answer {
                    Answer::Honest => (honest_answer(&req), None),
                    Answer::Replies(r) => (r, None),
                    Answer::Flood {
                        first,
                        reply,
                        times,
                    } => (first, Some((reply, times))),
                };
                seen.lock().unwrap_or_else(|e| e.into_inner()).push(req);
                // A flood ends the conversation: the slave hangs up after it.
                let last = flood.is_some();
                if write_all(&mut write, &first, flood).await.is_err() || last {
                    return;
                }
            }
        });
        HostileSlave { requests, task }
    }

    /// Every request the master sent, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every path the master's requests named (a `Prune`'s kept names as
    /// paths below its directory, a `Link`'s target, a `Stat`'s paths).
    pub fn paths_named(&self) -> Vec<RelPath> {
        self.requests().iter().flat_map(paths_of).collect()
    }
}

async fn write_all<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    replies: &[Reply],
    flood: Option<(Reply, u64)>,
) -> Result<(), ProtocolError> {
    for r in replies {
        w.write_all(&encode(r)?).await?;
    }
    if let Some((reply, times)) = flood {
        let frame = encode(&reply)?;
        for _ in 0..times {
            w.write_all(&frame).await?;
        }
    }
    w.flush().await?;
    Ok(())
}

/// The paths one request names (see [`HostileSlave::paths_named`]).
pub fn paths_of(req: &Request) -> Vec<RelPath> {
    match req {
        Request::Entry { op, .. } => {
            let (path, other) = op.paths();
            let kept: &[serde_bytes::ByteBuf] = match op {
                EntryOp::Prune { keep, .. } => keep,
                _ => &[],
            };
            std::iter::once(path.clone())
                .chain(other.cloned())
                .chain(kept.iter().filter_map(|k| {
                    let name: &std::ffi::OsStr = std::os::unix::ffi::OsStrExt::from_bytes(k);
                    path.join(name).ok()
                }))
                .collect()
        }
        Request::Signature { path, .. }
        | Request::FileBegin { path, .. }
        | Request::Partial { path, .. }
        | Request::FileResume { path, .. }
        | Request::SetAttr { path, .. }
        | Request::CheckListing { path, .. }
        | Request::CheckTree { path, .. }
        | Request::Scan { path, .. } => vec![path.clone()],
        Request::Stat { paths, .. } => paths.clone(),
        Request::Hello { .. }
        | Request::Piece { .. }
        | Request::SparsePiece { .. }
        | Request::FileEnd { .. }
        | Request::FileAbort
        | Request::Barrier { .. }
        | Request::Commit { .. }
        | Request::Stime { .. }
        | Request::Fence(_)
        | Request::Compressed { .. } => Vec::new(),
    }
}

/// Ships `batch` from `brick` (with the session filter `filter`) to a fake
/// slave run by `script`, on a runtime of its own in a thread of its own:
/// the outcome and every request the master sent, or `None` if the master
/// did not finish within `guard` (it hung, in a CPU loop or waiting; its
/// thread is left behind). `guard` is only a failure guard.
pub fn ship_to_hostile(
    brick: &Path,
    batch: Batch,
    filter: SyncFilter,
    guard: Duration,
    script: impl FnMut(&Request) -> Answer + Send + 'static,
) -> Option<(Result<ShipReport, ShipError>, Vec<Request>)> {
    let brick = brick.to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
                return;
            }
        };
        let out = rt.block_on(async {
            let (mut link, fake) = HostileSlave::link(guard, script)
                .await
                .map_err(|e| format!("greeting the fake slave: {e}"))?;
            let mut memory = ShipMemory::default();
            let mut shipper = Shipper::new(&mut link, &brick, &mut memory, 1);
            shipper.filter = filter;
            let report = shipper.ship(&batch).await;
            Ok((report, fake.requests()))
        });
        let _ = tx.send(out);
        rt.shutdown_background();
    });
    match rx.recv_timeout(guard) {
        Ok(Ok(out)) => Some(out),
        // The kit itself failed: no outcome of the master to judge.
        Ok(Err(e)) => panic!("hostile slave kit: {e}"),
        Err(_) => None,
    }
}

/// The resident memory of this process now, in bytes (from `/proc`).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}
