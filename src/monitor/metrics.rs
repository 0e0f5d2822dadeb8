//! The Prometheus endpoint (`metrics-addr`): `GET /metrics` answers, in the
//! OpenMetrics text format (written by `prometheus-client`), what `status --json` tells per brick: stime and
//! lag, pending journal records, what was shipped, failures, worker and
//! crawl status as labelled gauges, and the Hybrid Crawl's progress.
//!
//! HTTP/1.1 by hyper: one request per connection, the request head bounded
//! in size and time, the body computed from the state database on a
//! blocking thread. A port that cannot be bound is logged and replication goes on
//! without the endpoint.
//!
//! The endpoint has no authentication (bind it to a trusted address), so
//! what anyone can make it cost is bounded: at most [`MAX_CONNECTIONS`] are
//! served at once (more are closed at once), and a scrape is answered from
//! the last rendering, made again (a database query and a read of the
//! journals) at most once per [`REFRESH`], however many scrape.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::changelog::pending::pending;
use crate::crawl::journal::journal_dir;
use crate::session::{SessionId, Timestamp};
use crate::state::{CrawlStatus, State, StateError, WorkerStatus};

/// Longest request head read (hyper's smallest buffer limit).
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
    pub session_id: SessionId,
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
                        if let Err(e) = answer(stream, src, cache, limits.refresh).await {
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

/// Serves one request on `stream` with hyper (HTTP/1.1, no keep-alive,
/// the request head bounded in size and in time).
async fn answer(
    stream: TcpStream,
    src: Source,
    cache: SharedCache,
    refresh: Duration,
) -> Result<(), hyper::Error> {
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let (src, cache) = (src.clone(), cache.clone());
        async move { Ok::<_, std::convert::Infallible>(respond(&req, &src, &cache, refresh).await) }
    });
    hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .max_buf_size(MAX_HEAD)
        .timer(TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await
}

/// The answer to `req` (hyper leaves out the body of a HEAD's).
async fn respond(
    req: &Request<hyper::body::Incoming>,
    src: &Source,
    cache: &SharedCache,
    refresh: Duration,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    if req.uri().path() != "/metrics" {
        return text(StatusCode::NOT_FOUND, "see /metrics\n".into());
    }
    match rendering(cache, src, refresh).await {
        Ok(body) => text(StatusCode::OK, body.to_string()),
        Err(e) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("state database: {e}\n"),
        ),
    }
}

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(CONTENT_TYPE),
    );
    r
}

/// A series' labels (the crate escapes their values).
type Labels = Vec<(String, String)>;
type GaugeFamily = Family<Labels, Gauge<f64, AtomicU64>>;
type CounterFamily = Family<Labels, Counter<u64>>;

/// The families of one rendering, registered in the order they are shown.
struct Families(Registry);

impl Families {
    fn gauge(&mut self, name: &str, help: &str) -> GaugeFamily {
        let f = GaugeFamily::default();
        self.0.register(name, help, f.clone());
        f
    }

    /// A counter, shown as `<name>_total`.
    fn counter(&mut self, name: &str, help: &str) -> CounterFamily {
        let f = CounterFamily::default();
        self.0.register(name, help, f.clone());
        f
    }
}

fn set(f: &GaugeFamily, labels: &Labels, v: f64) {
    f.get_or_create(labels).set(v);
}

fn with(labels: &Labels, key: &str, value: impl ToString) -> Labels {
    let mut l = labels.clone();
    l.push((key.to_owned(), value.to_string()));
    l
}

/// Why the metrics could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("encoding the metrics: {0}")]
    Encode(#[from] std::fmt::Error),
}

/// The metrics text for `src`'s session, in the OpenMetrics text format.
pub fn render(src: &Source) -> Result<String, RenderError> {
    let state = State::open(&src.state_home)?;
    let session = state.session(src.session_id)?;
    let now = Timestamp::now();
    // The crate ends each help with a period.
    let mut m = Families(Registry::default());
    let stime = m.gauge(
        "georep_stime_seconds",
        "Time up to which every change of the brick is on the slave (seconds since the epoch)",
    );
    let lag = m.gauge(
        "georep_stime_lag_seconds",
        "Now minus stime: how far the slave is behind",
    );
    let pend = m.gauge(
        "georep_pending",
        "Journal records not yet on the slave, by kind (entry, data, meta)",
    );
    let exact = m.gauge(
        "georep_pending_exact",
        "1 if the pending counts are exact, 0 if they are lower bounds",
    );
    let bytes = m.counter("georep_bytes_sent", "Protocol bytes sent to the slave");
    let files = m.counter("georep_files_shipped", "Files whose content was shipped");
    let entries = m.counter(
        "georep_entries_shipped",
        "Entry operations (create, mkdir, rename, unlink, ...) shipped",
    );
    let meta = m.counter("georep_meta_shipped", "Attribute updates shipped");
    let failures = m.counter(
        "georep_failures",
        "Operations that failed permanently, and worker failures",
    );
    let status = m.gauge(
        "georep_worker_status",
        "1 for the brick worker's current status, 0 for the others",
    );
    let crawl = m.gauge(
        "georep_crawl_status",
        "1 for the brick's current crawl, 0 for the others",
    );
    let crawl_files = m.gauge(
        "georep_hybrid_crawl_files_shipped",
        "Files shipped by the brick's latest Hybrid Crawl",
    );
    let crawl_total = m.gauge(
        "georep_hybrid_crawl_files_total",
        "Files the brick's latest Hybrid Crawl has to ship (once counted)",
    );
    let crawl_eta = m.gauge(
        "georep_hybrid_crawl_eta_seconds",
        "Estimated seconds left of the running Hybrid Crawl",
    );
    let checkpoint = m.gauge(
        "georep_checkpoint_completed",
        "1 if the session's checkpoint is completed, 0 if not (absent: no checkpoint)",
    );
    let session_labels: Labels = vec![
        ("vol".into(), session.master_vol.to_string()),
        ("slave".into(), session.slave.to_string()),
    ];
    for b in state.bricks(src.session_id)? {
        let l = with(&session_labels, "brick", &b.brick);
        if let Some(s) = b.stime {
            set(&stime, &l, s.nanos() as f64 / 1e9);
            set(&lag, &l, now.seconds_since(s.as_timestamp()));
        }
        if let Some(p) = pending(&journal_dir(&src.session_dir, b.id), b.stime) {
            for (kind, n) in [("entry", p.entry), ("data", p.data), ("meta", p.meta)] {
                set(&pend, &with(&l, "kind", kind), n as f64);
            }
            set(&exact, &l, u8::from(p.exact).into());
        }
        for (family, n) in [
            (&bytes, b.bytes_sent),
            (&files, b.data),
            (&entries, b.entries),
            (&meta, b.meta),
            (&failures, b.failures),
        ] {
            family.get_or_create(&l).inc_by(n);
        }
        for w in WorkerStatus::ALL {
            set(
                &status,
                &with(&l, "status", w),
                u8::from(w == b.status).into(),
            );
        }
        for c in CrawlStatus::ALL {
            set(&crawl, &with(&l, "crawl", c), u8::from(c == b.crawl).into());
        }
        if let Some(e) = super::progress::estimate(&b.progress, now) {
            set(&crawl_files, &l, b.progress.files as f64);
            if let Some(t) = b.progress.total_files {
                set(&crawl_total, &l, t as f64);
            }
            if let Some(eta) = e.eta_seconds {
                set(&crawl_eta, &l, eta);
            }
        }
    }
    if session.checkpoint.is_some() {
        let done = u8::from(session.checkpoint_completed.is_some());
        set(&checkpoint, &session_labels, done.into());
    }
    let mut out = String::new();
    encode(&mut out, &m.0)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
            session_id: SessionId::new(1),
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
        ask(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await
    }

    /// What `request` on a new connection reads back.
    async fn ask(addr: SocketAddr, request: &[u8]) -> String {
        let mut c = TcpStream::connect(addr).await.unwrap();
        // The server may answer (and close) before it read it all.
        let _ = c.write_all(request).await;
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
    async fn only_get_of_metrics_is_answered_and_heads_are_bounded() {
        let (addr, _cache, _stop, _home) = endpoint(Limits::default()).await;
        let post = ask(addr, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        let other = ask(addr, b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
        let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', 4 * MAX_HEAD));
        huge.extend(b"\r\n\r\n");
        let refused = ask(addr, &huge).await;
        assert!(refused.starts_with("HTTP/1.1 431"), "{refused}");
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
}
