//! The Prometheus endpoint (`metrics-addr`): `GET /metrics` answers, in the
//! text exposition format, what `status --json` tells per brick: stime and
//! lag, pending journal records, what was shipped, failures, worker and
//! crawl status as labelled gauges, and the Hybrid Crawl's progress.
//!
//! A deliberately small HTTP/1.1 responder: one request per connection,
//! headers bounded, body computed from the state database on a blocking
//! thread. A port that cannot be bound is logged and replication goes on
//! without the endpoint.
//!
//! The endpoint has no authentication (bind it to a trusted address), so
//! what anyone can make it cost is bounded: at most [`MAX_CONNECTIONS`] are
//! served at once (more are closed at once), and a scrape is answered from
//! the last rendering, made again (a database query and a read of the
//! journals) at most once per [`REFRESH`], however many scrape.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::cli::status::pending;
use crate::crawl::journal::journal_dir;
use crate::session::Stime;
use crate::state::{CrawlStatus, State, StateError, WorkerStatus};

/// Longest request head read.
const MAX_HEAD: usize = 8192;
/// A client that sends nothing for this long is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// How old the rendering a scrape gets may be.
pub const REFRESH: Duration = Duration::from_secs(1);

/// The bounds of an endpoint (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub refresh: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            refresh: REFRESH,
        }
    }
}

/// The last rendering, shared by the connections.
#[derive(Default)]
struct Cache {
    rendered: Option<(std::time::Instant, Result<Arc<str>, String>)>,
    /// How many times the metrics were rendered (what a scrape costs).
    renders: u64,
}

type SharedCache = Arc<tokio::sync::Mutex<Cache>>;

/// What scrapes get: the cached rendering, made again when older than
/// `refresh` (one connection renders, the others wait for it).
async fn rendering(
    cache: &SharedCache,
    src: &Source,
    refresh: Duration,
) -> Result<Arc<str>, String> {
    let mut cache = cache.lock().await;
    if let Some((at, body)) = &cache.rendered {
        if at.elapsed() < refresh {
            return body.clone();
        }
    }
    let src = src.clone();
    let body = tokio::task::spawn_blocking(move || render(&src))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map(Arc::from).map_err(|e| e.to_string()));
    cache.renders += 1;
    cache.rendered = Some((std::time::Instant::now(), body.clone()));
    body
}

/// What the endpoint reports on.
#[derive(Debug, Clone)]
pub struct Source {
    pub state_home: PathBuf,
    pub session_id: i64,
    /// `sessions/<id>` under the home: where the journals are.
    pub session_dir: PathBuf,
}

/// Serves until `shutdown` turns true.
pub async fn serve(addr: SocketAddr, src: Source, shutdown: watch::Receiver<bool>) {
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("metrics endpoint: cannot listen on {addr}: {e}; serving no metrics");
            return;
        }
    };
    tracing::info!("serving Prometheus metrics at http://{addr}/metrics");
    serve_on(
        listener,
        src,
        Limits::default(),
        Default::default(),
        shutdown,
    )
    .await;
}

/// [`serve`] on a bound `listener`, within `limits`, rendering into `cache`.
async fn serve_on(
    listener: TcpListener,
    src: Source,
    limits: Limits,
    cache: SharedCache,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Over the cap, the connection is closed unanswered.
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        tracing::debug!("metrics endpoint: {peer} refused, {} connections open", limits.max_connections);
                        continue;
                    };
                    let (src, cache) = (src.clone(), cache.clone());
                    tokio::spawn(async move {
                        if let Err(e) = answer(stream, &src, &cache, limits.refresh).await {
                            tracing::debug!("metrics request: {e}");
                        }
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!("metrics endpoint: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
}

async fn answer(
    mut stream: TcpStream,
    src: &Source,
    cache: &SharedCache,
    refresh: Duration,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return respond(&mut stream, "431 Request Header Fields Too Large", "").await;
        }
        let n = tokio::time::timeout(READ_TIMEOUT, stream.read(&mut buf))
            .await
            .map_err(|_| std::io::Error::other("request timed out"))??;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(head.split(|&b| b == b'\r').next().unwrap_or(&[]));
    let mut words = line.split(' ');
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, "405 Method Not Allowed", "only GET\n").await;
    }
    if path != "/metrics" {
        return respond(&mut stream, "404 Not Found", "see /metrics\n").await;
    }
    match rendering(cache, src, refresh).await {
        Ok(body) if method == "HEAD" => respond_head(&mut stream, body.len()).await,
        Ok(body) => respond(&mut stream, "200 OK", &body).await,
        Err(e) => {
            respond(
                &mut stream,
                "503 Service Unavailable",
                &format!("state database: {e}\n"),
            )
            .await
        }
    }
}

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

async fn respond_head(stream: &mut TcpStream, len: usize) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    stream.shutdown().await
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

/// Collects samples of one metric family, printed under one HELP/TYPE.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: Vec<(String, f64)>,
}

fn family(name: &'static str, kind: &'static str, help: &'static str) -> Family {
    Family {
        name,
        help,
        kind,
        samples: Vec::new(),
    }
}

/// The metrics text for `src`'s session.
pub fn render(src: &Source) -> Result<String, StateError> {
    let state = State::open(&src.state_home)?;
    let session = state.session(src.session_id)?;
    let now = Stime::now();
    let mut stime = family(
        "georep_stime_seconds",
        "gauge",
        "Time up to which every change of the brick is on the slave (seconds since the epoch).",
    );
    let mut lag = family(
        "georep_stime_lag_seconds",
        "gauge",
        "Now minus stime: how far the slave is behind.",
    );
    let mut pend = family(
        "georep_pending",
        "gauge",
        "Journal records not yet on the slave, by kind (entry, data, meta).",
    );
    let mut exact = family(
        "georep_pending_exact",
        "gauge",
        "1 if the pending counts are exact, 0 if they are lower bounds.",
    );
    let mut bytes = family(
        "georep_bytes_sent_total",
        "counter",
        "Protocol bytes sent to the slave.",
    );
    let mut files = family(
        "georep_files_shipped_total",
        "counter",
        "Files whose content was shipped.",
    );
    let mut entries = family(
        "georep_entries_shipped_total",
        "counter",
        "Entry operations (create, mkdir, rename, unlink, ...) shipped.",
    );
    let mut meta = family(
        "georep_meta_shipped_total",
        "counter",
        "Attribute updates shipped.",
    );
    let mut failures = family(
        "georep_failures_total",
        "counter",
        "Operations that failed permanently, and worker failures.",
    );
    let mut status = family(
        "georep_worker_status",
        "gauge",
        "1 for the brick worker's current status, 0 for the others.",
    );
    let mut crawl = family(
        "georep_crawl_status",
        "gauge",
        "1 for the brick's current crawl, 0 for the others.",
    );
    let mut crawl_files = family(
        "georep_hybrid_crawl_files_shipped",
        "gauge",
        "Files shipped by the brick's latest Hybrid Crawl.",
    );
    let mut crawl_total = family(
        "georep_hybrid_crawl_files_total",
        "gauge",
        "Files the brick's latest Hybrid Crawl has to ship (once counted).",
    );
    let mut crawl_eta = family(
        "georep_hybrid_crawl_eta_seconds",
        "gauge",
        "Estimated seconds left of the running Hybrid Crawl.",
    );
    let session_labels = format!(
        "vol=\"{}\",slave=\"{}\"",
        escape(session.master_vol.as_str()),
        escape(&session.slave.to_string())
    );
    for b in state.bricks(src.session_id)? {
        let l = format!(
            "{session_labels},brick=\"{}\"",
            escape(&b.brick.to_string())
        );
        if let Some(s) = b.stime {
            stime.samples.push((l.clone(), s.nanos() as f64 / 1e9));
            lag.samples
                .push((l.clone(), (now.nanos() - s.nanos()) as f64 / 1e9));
        }
        if let Some(p) = pending(&journal_dir(&src.session_dir, b.id), b.stime) {
            for (kind, n) in [("entry", p.entry), ("data", p.data), ("meta", p.meta)] {
                pend.samples
                    .push((format!("{l},kind=\"{kind}\""), n as f64));
            }
            exact.samples.push((l.clone(), u8::from(p.exact).into()));
        }
        bytes.samples.push((l.clone(), b.bytes_sent as f64));
        files.samples.push((l.clone(), b.data as f64));
        entries.samples.push((l.clone(), b.entries as f64));
        meta.samples.push((l.clone(), b.meta as f64));
        failures.samples.push((l.clone(), b.failures as f64));
        for w in WorkerStatus::ALL {
            let on = w == b.status;
            status
                .samples
                .push((format!("{l},status=\"{w}\""), u8::from(on).into()));
        }
        for c in CrawlStatus::ALL {
            let on = c == b.crawl;
            crawl
                .samples
                .push((format!("{l},crawl=\"{c}\""), u8::from(on).into()));
        }
        if let Some(e) = super::progress::estimate(&b.progress, now) {
            crawl_files
                .samples
                .push((l.clone(), b.progress.files as f64));
            if let Some(t) = b.progress.total_files {
                crawl_total.samples.push((l.clone(), t as f64));
            }
            if let Some(eta) = e.eta_seconds {
                crawl_eta.samples.push((l.clone(), eta));
            }
        }
    }
    let mut checkpoint = family(
        "georep_checkpoint_completed",
        "gauge",
        "1 if the session's checkpoint is completed, 0 if not (absent: no checkpoint).",
    );
    if session.checkpoint.is_some() {
        checkpoint.samples.push((
            session_labels.clone(),
            u8::from(session.checkpoint_completed.is_some()).into(),
        ));
    }
    let mut out = String::new();
    for f in [
        stime,
        lag,
        pend,
        exact,
        bytes,
        files,
        entries,
        meta,
        failures,
        status,
        crawl,
        crawl_files,
        crawl_total,
        crawl_eta,
        checkpoint,
    ] {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        for (labels, v) in f.samples {
            let _ = writeln!(out, "{}{{{labels}}} {v}", f.name);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An endpoint on a free port with `limits`, for a home without the
    /// session (every rendering is an error: what it costs is the same).
    async fn endpoint(
        limits: Limits,
    ) -> (
        SocketAddr,
        SharedCache,
        watch::Sender<bool>,
        tempfile::TempDir,
    ) {
        let home = tempfile::tempdir().unwrap();
        let src = Source {
            state_home: home.path().to_owned(),
            session_id: 1,
            session_dir: home.path().join("sessions/1"),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cache = SharedCache::default();
        let (stop, shutdown) = watch::channel(false);
        tokio::spawn(serve_on(listener, src, limits, cache.clone(), shutdown));
        (addr, cache, stop, home)
    }

    /// What one `GET /metrics` on a new connection reads back.
    async fn scrape(addr: SocketAddr) -> String {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        // A connection closed unanswered may also be reset.
        let _ = c.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn scrapes_are_served_from_one_rendering_per_refresh() {
        let limits = Limits {
            max_connections: 4,
            refresh: Duration::from_secs(3600),
        };
        let (addr, cache, _stop, _home) = endpoint(limits).await;
        for _ in 0..5 {
            let answer = scrape(addr).await;
            assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        }
        assert_eq!(cache.lock().await.renders, 1);
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed_unanswered() {
        let limits = Limits {
            max_connections: 2,
            refresh: REFRESH,
        };
        let (addr, _cache, _stop, _home) = endpoint(limits).await;
        // Two clients that say nothing hold both places (accepted in the
        // order they connected).
        let held = [
            TcpStream::connect(addr).await.unwrap(),
            TcpStream::connect(addr).await.unwrap(),
        ];
        assert_eq!(scrape(addr).await, "");
        drop(held);
        // Their places free again once they are gone.
        let mut answer = String::new();
        for _ in 0..1000 {
            answer = scrape(addr).await;
            if !answer.is_empty() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("a\nb"), r"a\nb");
    }
}
