//! Bringing the repaired master level with the promoted DR directory: a
//! session in the reverse direction, DR shipping, the master's brick
//! served by georep's own slave code (`slave::serve_with`), through the
//! same protocol, confinement and verification as forward shipping.
//!
//! The connection goes from the master to the DR host (the operator's key,
//! as `delete` uses it), which runs `geo-rep dr-ship DIR` ([`ship_tree`])
//! on its end of the channel; the master serves its brick on the other end
//! ([`serve_brick`]). So the DR host needs no credential for the master,
//! the master's sshd need not be up yet, and what DR sends is confined to
//! the brick exactly as a master's batches are to a slave directory.
//!
//! What travels: DR walks its directory (a Hybrid Crawl with pruning) and
//! the master answers, 1,024 paths a round trip, which files it has with
//! the same size and mtime (the quick check); only the others' contents
//! are sent (as deltas where the master has a copy), attributes for the
//! rest. This covers what DR's journal recorded since the promotion and
//! what no journal knows (the loss window moved aside, batches the master
//! committed that DR had not recorded), at the cost of a walk. A run cut
//! off anywhere leaves only temporary files, which the next run's prune of
//! the same directories removes; then it converges.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::crawl::journal::ChangeSource;
use crate::crawl::{self, HybridCrawl};
use crate::relpath::RelPath;
use crate::session::Stime;
use crate::ship::{ShipError, ShipMemory, Shipper};
use crate::slave::{Policy, SlaveError};
use crate::transport::link::{LinkError, SlaveLink};

/// Operations per batch of the leveling walk.
const LEVEL_BATCH: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum LevelError {
    #[error("DR directory {dir}: {source}")]
    Link { dir: PathBuf, source: LinkError },
    #[error("DR directory {dir}: {source}")]
    Ship { dir: PathBuf, source: ShipError },
    #[error("DR directory {dir}: the walk stopped: {reason}")]
    Walk { dir: PathBuf, reason: String },
    #[error("DR directory {dir}: {count} path(s) could not be applied on the master, the first: {first}")]
    Failures {
        dir: PathBuf,
        count: usize,
        first: String,
    },
    #[error("brick {brick}: {source}")]
    Serve { brick: PathBuf, source: SlaveError },
    #[error("brick {brick}: the serving thread failed: {reason}")]
    Thread { brick: PathBuf, reason: String },
}

/// What the DR side shipped.
#[derive(Debug, Default, Clone, Copy)]
pub struct ShipTotals {
    pub files: u64,
    pub bytes: u64,
}

/// The DR side's conversation with the master's brick.
struct Sender<'d, S> {
    link: SlaveLink<S>,
    dir: &'d Path,
    memory: ShipMemory,
    batch_id: u64,
    totals: ShipTotals,
}

impl<S: AsyncRead + AsyncWrite + Send + 'static> Sender<'_, S> {
    /// One batch to the master, counted; a path the master could not
    /// apply fails the leveling.
    async fn ship(&mut self, batch: &crate::crawl::Batch) -> Result<(), LevelError> {
        self.batch_id += 1;
        let report = Shipper::new(&mut self.link, self.dir, &mut self.memory, self.batch_id)
            .ship(batch)
            .await
            .map_err(|source| LevelError::Ship {
                dir: self.dir.to_owned(),
                source,
            })?;
        if let Some(f) = report.failures.first() {
            return Err(LevelError::Failures {
                dir: self.dir.to_owned(),
                count: report.failures.len(),
                first: f.message.clone(),
            });
        }
        self.totals.files += report.data;
        self.totals.bytes += report.bytes_sent;
        Ok(())
    }
}

/// DR side: ships `dir` as the master's brick must be, over `stream`:
/// first the changes `journal` (the promotion's journal directory) holds,
/// so renames made at DR travel as renames, then the walk.
pub async fn ship_tree<S>(
    dir: &Path,
    journal: Option<&Path>,
    stream: S,
    timeout: Duration,
) -> Result<ShipTotals, LevelError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let link_err = |source| LevelError::Link {
        dir: dir.to_owned(),
        source,
    };
    let link = SlaveLink::open(stream, timeout).await.map_err(link_err)?;
    let mut to = Sender {
        link,
        dir,
        memory: ShipMemory::default(),
        batch_id: 0,
        totals: ShipTotals::default(),
    };
    if let Some(journal) = journal {
        let source = ChangeSource::Notify(journal.to_owned());
        let mut after = Stime::default();
        loop {
            let next = tokio::task::block_in_place(|| {
                crawl::journal::next_batch(&source, after, LEVEL_BATCH)
            })
            .map_err(|e| LevelError::Walk {
                dir: dir.to_owned(),
                reason: format!("reading the DR journal {}: {e}", journal.display()),
            })?;
            let Some(jb) = next else { break };
            // Its gaps need no crawl of their own: the walk follows.
            to.ship(&jb.batch).await?;
            after = jb.through;
        }
    }
    let crawl = HybridCrawl::new(dir.to_owned(), RelPath::root(), Vec::new(), None).with_prune();
    // The walk runs a batch ahead on its own thread, as the worker's does.
    let (tx, mut batches) = mpsc::channel(1);
    let walker = tokio::task::spawn_blocking(move || {
        let mut crawl = crawl;
        while let Some(batch) = crawl.next_batch(LEVEL_BATCH) {
            if tx.blocking_send((batch, crawl.take_errors())).is_err() {
                break;
            }
        }
    });
    while let Some((mut batch, errors)) = batches.recv().await {
        for e in errors {
            tracing::warn!("{e}");
        }
        batch.mark_quick_check();
        to.ship(&batch).await?;
    }
    walker.await.map_err(|e| LevelError::Walk {
        dir: dir.to_owned(),
        reason: e.to_string(),
    })?;
    to.link.close().await;
    Ok(to.totals)
}

/// Master side: serves `brick` as a slave root over `stream` until the DR
/// side ends; returns how many bytes DR sent. An end of DR other than a
/// clean exit is an error (the stream's read says so).
pub async fn serve_brick<S>(brick: &Path, policy: Policy, stream: S) -> Result<u64, LevelError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut read, mut write) = tokio::io::split(stream);
    let received = Arc::new(AtomicU64::new(0));
    let (in_tx, in_rx) = mpsc::channel::<io::Result<Vec<u8>>>(64);
    let counted = received.clone();
    let pump_in = tokio::spawn(async move {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match read.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    counted.fetch_add(n as u64, Ordering::Relaxed);
                    if in_tx.send(Ok(buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = in_tx.send(Err(e)).await;
                    break;
                }
            }
        }
    });
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    let pump_out = tokio::spawn(async move {
        while let Some(chunk) = out_rx.recv().await {
            if write.write_all(&chunk).await.is_err() || write.flush().await.is_err() {
                break;
            }
        }
        let _ = write.shutdown().await;
    });
    let root = brick.to_owned();
    let served = tokio::task::spawn_blocking(move || {
        crate::slave::serve_with(
            &root,
            policy,
            ChannelReader {
                rx: in_rx,
                chunk: Vec::new(),
                at: 0,
            },
            ChannelWriter(out_tx),
        )
    })
    .await;
    pump_in.abort();
    let _ = pump_out.await;
    match served {
        Ok(Ok(())) => Ok(received.load(Ordering::Relaxed)),
        Ok(Err(source)) => Err(LevelError::Serve {
            brick: brick.to_owned(),
            source,
        }),
        Err(e) => Err(LevelError::Thread {
            brick: brick.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// The blocking slave's input, fed by the task reading the channel.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len() - self.at);
        out[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The blocking slave's output, handed to the task writing the channel.
struct ChannelWriter(mpsc::Sender<Vec<u8>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .blocking_send(buf.to_vec())
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the DR channel is gone"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_brick_is_made_the_image_of_the_dr_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let (dr, brick) = (tmp.path().join("dr"), tmp.path().join("brick"));
        std::fs::create_dir_all(dr.join("d")).unwrap();
        std::fs::create_dir_all(brick.join("d")).unwrap();
        std::fs::create_dir_all(brick.join("gone-dir")).unwrap();
        let big = vec![7u8; 300 * 1024];
        std::fs::write(dr.join("d/same"), &big).unwrap();
        std::fs::write(brick.join("d/same"), &big).unwrap();
        let t = std::fs::metadata(dr.join("d/same"))
            .unwrap()
            .modified()
            .unwrap();
        std::fs::File::options()
            .write(true)
            .open(brick.join("d/same"))
            .unwrap()
            .set_modified(t)
            .unwrap();
        std::fs::write(dr.join("d/new"), b"made at DR").unwrap();
        std::fs::write(brick.join("d/stale"), b"not at DR").unwrap();
        let (a, b) = tokio::io::duplex(1 << 20);
        let dr2 = dr.clone();
        let shipper =
            tokio::spawn(async move { ship_tree(&dr2, None, a, Duration::from_secs(30)).await });
        let received = serve_brick(&brick, Policy::default(), b).await.unwrap();
        let totals = shipper.await.unwrap().unwrap();
        assert_eq!(std::fs::read(brick.join("d/new")).unwrap(), b"made at DR");
        assert!(!brick.join("d/stale").exists() && !brick.join("gone-dir").exists());
        assert_eq!(std::fs::read(brick.join("d/same")).unwrap(), big);
        assert!(
            received < 64 * 1024,
            "the unchanged file travelled: {received} bytes"
        );
        assert_eq!(totals.files, 1, "{totals:?}");
    }
}
