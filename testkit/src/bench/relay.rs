//! A simulated WAN link in user space: a TCP relay on 127.0.0.1 that delays
//! every byte by a fixed one-way latency in each direction and shapes each
//! direction to a fixed rate, with a bounded queue (like `tc netem delay
//! 25ms rate 200mbit limit 1000`). Used when the kernel has no `sch_netem`.
//!
//! Unlike netem, the relay terminates TCP: each endpoint's own TCP sees a
//! loopback peer, and the latency is seen by the application protocols
//! (SSH windows, request/response round trips), which is what the WAN
//! workloads are about.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Link parameters per direction.
#[derive(Debug, Clone, Copy)]
pub struct LinkShape {
    pub one_way: Duration,
    pub bits_per_sec: u64,
    /// Most data queued before the link (as time on the wire); a sender
    /// blocks beyond it, as a full netem queue would push back.
    pub queue: Duration,
}

impl LinkShape {
    /// 25 ms each way, 200 Mbit/s, a queue of ~1000 full-size packets.
    pub fn wan() -> LinkShape {
        LinkShape {
            one_way: Duration::from_millis(25),
            bits_per_sec: 200_000_000,
            queue: Duration::from_millis(60),
        }
    }

    /// No delay and no rate limit: a relay that only counts bytes.
    pub fn unshaped() -> LinkShape {
        LinkShape {
            one_way: Duration::ZERO,
            bits_per_sec: u64::MAX,
            queue: Duration::from_secs(1),
        }
    }

    fn wire_time(&self, bytes: usize) -> Duration {
        Duration::from_secs_f64(bytes as f64 * 8.0 / self.bits_per_sec as f64)
    }
}

/// The running relay; dropping it stops accepting (open connections end
/// when either side closes).
pub struct Relay {
    port: u16,
    /// Bytes relayed from clients to the upstream server, all connections.
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Relay {
    /// Listens on a free port of 127.0.0.1 and relays to 127.0.0.1:`upstream`.
    pub fn start(upstream: u16, shape: LinkShape) -> Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the WAN relay")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let sent = Arc::new(AtomicU64::new(0));
        let sent2 = sent.clone();
        let accept = thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(down) = conn else { continue };
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let _ = down.set_nodelay(true);
                let _ = up.set_nodelay(true);
                let (Ok(down2), Ok(up2)) = (down.try_clone(), up.try_clone()) else {
                    continue;
                };
                pipe(down, up, shape, Some(sent2.clone()));
                pipe(up2, down2, shape, None);
            }
        });
        Ok(Relay {
            port,
            sent,
            stop,
            accept: Some(accept),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Bytes clients have sent upstream through the relay so far.
    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// One direction: a reader that stamps each chunk with the moment it would
/// arrive at the far end, and a writer that delivers it then; `count`
/// adds up the bytes read.
fn pipe(mut from: TcpStream, mut to: TcpStream, shape: LinkShape, count: Option<Arc<AtomicU64>>) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut link_free = Instant::now();
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some(c) = &count {
                c.fetch_add(n as u64, Ordering::Relaxed);
            }
            let now = Instant::now();
            // Serialization on the link, then propagation.
            link_free = link_free.max(now) + shape.wire_time(n);
            let arrive = link_free + shape.one_way;
            if tx.send((arrive, buf[..n].to_vec())).is_err() {
                break;
            }
            // A full queue pushes back on the sender.
            let backlog = link_free.saturating_duration_since(Instant::now());
            if backlog > shape.queue {
                thread::sleep(backlog - shape.queue);
            }
        }
    });
    thread::spawn(move || {
        while let Ok((arrive, data)) = rx.recv() {
            let wait = arrive.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                thread::sleep(wait);
            }
            if to.write_all(&data).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_and_relays_both_ways() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = echo.local_addr().unwrap().port();
        thread::spawn(move || {
            let (mut s, _) = echo.accept().unwrap();
            let mut b = [0u8; 5];
            s.read_exact(&mut b).unwrap();
            s.write_all(&b).unwrap();
        });
        let relay = Relay::start(port, LinkShape::wan()).unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", relay.port())).unwrap();
        let t0 = Instant::now();
        c.write_all(b"hello").unwrap();
        let mut b = [0u8; 5];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hello");
        assert_eq!(relay.bytes_sent(), 5);
        assert!(
            t0.elapsed() >= Duration::from_millis(50),
            "{:?}",
            t0.elapsed()
        );
    }
}
