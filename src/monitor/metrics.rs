//! The Prometheus endpoint (`metrics-addr`): `GET /metrics` answers, in the
//! text exposition format, what `status --json` tells per brick: stime and
//! lag, pending journal records, what was shipped, failures, worker and
//! crawl status as labelled gauges, and the Hybrid Crawl's progress.
//!
//! A deliberately small HTTP/1.1 responder: one request per connection,
//! headers bounded, body computed from the state database on a blocking
//! thread. A port that cannot be bound is logged and replication goes on
//! without the endpoint.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::changelog::pending::pending;
use crate::crawl::journal::journal_dir;
use crate::session::Stime;
use crate::state::{CrawlStatus, State, StateError, WorkerStatus};

/// Longest request head read.
const MAX_HEAD: usize = 8192;
/// A client that sends nothing for this long is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What the endpoint reports on.
#[derive(Debug, Clone)]
pub struct Source {
    pub state_home: PathBuf,
    pub session_id: i64,
    /// `sessions/<id>` under the home: where the journals are.
    pub session_dir: PathBuf,
}

/// Serves until `shutdown` turns true.
pub async fn serve(addr: SocketAddr, src: Source, mut shutdown: watch::Receiver<bool>) {
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("metrics endpoint: cannot listen on {addr}: {e}; serving no metrics");
            return;
        }
    };
    tracing::info!("serving Prometheus metrics at http://{addr}/metrics");
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let src = src.clone();
                    tokio::spawn(async move {
                        if let Err(e) = answer(stream, src).await {
                            tracing::debug!("metrics request: {e}");
                        }
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

async fn answer(mut stream: TcpStream, src: Source) -> std::io::Result<()> {
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
    let body = tokio::task::spawn_blocking(move || render(&src))
        .await
        .map_err(std::io::Error::other)?;
    match body {
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

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("a\nb"), r"a\nb");
    }
}
