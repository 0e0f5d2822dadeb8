//! A slave session run in-process (`slave::serve` on socket pairs) for the
//! shipper's tests, with a pipe in between that can see every request
//! before the slave does and cut either direction at a frame boundary:
//! races with a real slave and crashes at any point, made deterministic.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{Batch, LaterRecords, ShipError, ShipMemory, ShipReport, Shipper};
use crate::brick::volume::VolumeView;
use crate::proto::{read_frame, write_frame, ProtocolError, Reply, Request};
use crate::transport::link::SlaveLink;

/// Where the pipe breaks the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cut {
    Never,
    /// The slave reads this many requests, then its input ends.
    RequestsAfter(usize),
    /// The master reads this many replies, then the connection drops.
    RepliesAfter(usize),
    /// Reply number n (from 0) reaches the master half written, then the
    /// connection drops.
    TruncatedReply(usize),
    /// Reply number n (from 0) reaches the master twice.
    DuplicatedReply(usize),
}

/// What crossed the pipe in one run.
#[derive(Debug, Default)]
pub(super) struct Crossed {
    pub requests: Vec<Request>,
    pub replies: usize,
}

/// The slave's input: hands each request to a hook before the slave reads
/// it, and ends after `limit` requests.
struct Hooked<F> {
    inner: UnixStream,
    hook: F,
    limit: Option<usize>,
    seen: usize,
    buf: Vec<u8>,
    at: usize,
    record: Arc<std::sync::Mutex<Vec<Request>>>,
}

impl<F: FnMut(&Request)> Read for Hooked<F> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at == self.buf.len() {
            if self.limit.is_some_and(|l| self.seen >= l) {
                // The master's later frames vanish, as on a broken network:
                // its writes still succeed, and only its reads tell.
                if let Ok(mut rest) = self.inner.try_clone() {
                    std::thread::spawn(move || io::copy(&mut rest, &mut io::sink()));
                }
                self.limit = Some(usize::MAX);
                return Ok(0);
            }
            let req: Request = match read_frame(&mut self.inner) {
                Ok(r) => r,
                Err(ProtocolError::Closed) => return Ok(0),
                Err(e) => return Err(io::Error::other(e.to_string())),
            };
            (self.hook)(&req);
            self.buf.clear();
            self.at = 0;
            write_frame(&mut self.buf, &req).map_err(|e| io::Error::other(e.to_string()))?;
            self.seen += 1;
            if let Ok(mut r) = self.record.lock() {
                r.push(req);
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Ships `batch` from `brick` to a slave session rooted at `slave`, with
/// `memory` as the worker's; `hook` sees every request before the slave,
/// and `cut` may break the conversation. `volume` sees the other bricks
/// when `brick` is one of a distributed GlusterFS volume.
#[allow(clippy::too_many_arguments)]
pub(super) async fn ship_in_process(
    brick: &Path,
    volume: Option<&dyn VolumeView>,
    slave: &Path,
    memory: &mut ShipMemory,
    batch: &Batch,
    later: Option<&dyn LaterRecords>,
    hook: impl FnMut(&Request) + Send + 'static,
    cut: Cut,
) -> (Result<ShipReport, ShipError>, Crossed) {
    let (master_end, slave_end) = UnixStream::pair().expect("socket pair");
    let (reply_in, reply_out) = UnixStream::pair().expect("socket pair");
    let record = Arc::new(std::sync::Mutex::new(Vec::new()));
    let input = Hooked {
        inner: slave_end.try_clone().expect("dup"),
        hook,
        limit: match cut {
            Cut::RequestsAfter(n) => Some(n),
            _ => None,
        },
        seen: 0,
        buf: Vec::new(),
        at: 0,
        record: record.clone(),
    };
    let root: PathBuf = slave.to_owned();
    let served = std::thread::spawn(move || crate::slave::serve(&root, input, reply_in));
    // Replies travel through a relay that counts them and may drop the
    // connection between two of them.
    let replies = Arc::new(AtomicUsize::new(0));
    let relayed = replies.clone();
    let reply_limit = match cut {
        Cut::RepliesAfter(n) | Cut::TruncatedReply(n) => Some(n),
        _ => None,
    };
    let mut to_master = slave_end;
    let relay = std::thread::spawn(move || {
        let mut from_slave = reply_out;
        loop {
            if reply_limit.is_some_and(|l| relayed.load(Ordering::SeqCst) >= l) {
                break;
            }
            let Ok(reply) = read_frame::<Reply, _>(&mut from_slave) else {
                break;
            };
            let n = relayed.fetch_add(1, Ordering::SeqCst);
            let times = if cut == Cut::DuplicatedReply(n) { 2 } else { 1 };
            if (0..times).any(|_| write_frame(&mut to_master, &reply).is_err()) {
                break;
            }
        }
        if let Cut::TruncatedReply(n) = cut {
            if let Ok(reply) = read_frame::<Reply, _>(&mut from_slave) {
                let mut frame = Vec::new();
                if write_frame(&mut frame, &reply).is_ok() {
                    let _ = to_master.write_all(&frame[..frame.len() / 2]);
                    relayed.store(n, Ordering::SeqCst);
                }
            }
        }
        // The master reads the end; what the slave still says is dropped,
        // so it never blocks on a reply nobody reads.
        let _ = to_master.shutdown(std::net::Shutdown::Write);
        let _ = io::copy(&mut from_slave, &mut io::sink());
    });
    master_end.set_nonblocking(true).expect("nonblocking");
    let stream = tokio::net::UnixStream::from_std(master_end).expect("tokio stream");
    let report = match SlaveLink::open(stream, Duration::from_secs(60)).await {
        Ok(mut link) => {
            let mut shipper = Shipper::new(&mut link, brick, memory, 1);
            shipper.later = later;
            shipper.volume = volume;
            shipper.gluster_brick = volume.is_some();
            let report = shipper.ship(batch).await;
            link.close().await;
            report
        }
        Err(e) => Err(ShipError::Link(e)),
    };
    // A slave whose input was cut may fail; what it left is the point.
    let _ = served.join();
    let _ = relay.join();
    let requests = record.lock().map(|r| r.clone()).unwrap_or_default();
    (
        report,
        Crossed {
            requests,
            replies: replies.load(Ordering::SeqCst),
        },
    )
}
