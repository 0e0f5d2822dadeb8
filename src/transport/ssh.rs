//! SSH sessions to the slave host (russh client).
//!
//! Host keys are pinned per session: `create` records the key the slave
//! presented ([`HostKeyPolicy::Record`]); every later connection compares it
//! with `==` ([`HostKeyPolicy::Pinned`]) and refuses any other key with both
//! fingerprints in the error. No known_hosts wildcards, no "accept new".

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use russh::client::{self, AuthResult, Handle};
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{cipher, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Sig};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;

use super::link::StreamEnded;

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
}

impl std::fmt::Display for SshTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}:{}", self.user, self.host, self.port)
    }
}

/// How to judge the key the server presents.
#[derive(Debug, Clone)]
pub enum HostKeyPolicy {
    /// First contact (`create`): accept the key the caller then records,
    /// unless this known_hosts file (OpenSSH format) lists another key of
    /// the same type for the host.
    Record { known_hosts: Option<PathBuf> },
    /// The key recorded at `create`; anything else is refused.
    Pinned(PublicKey),
}

/// How to authenticate.
#[derive(Debug, Clone)]
pub enum Auth {
    /// The session's own key (every connection after `create`).
    Key(PathBuf),
    /// The operator's credentials for `create`: this key file if given, else
    /// `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa` (with the `rsa` feature),
    /// then the ssh-agent.
    Operator(Option<PathBuf>),
}

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        source: std::io::Error,
    },
    #[error("connection to {target} timed out after {secs} s")]
    Timeout { target: String, secs: u64 },
    #[error(
        "host key of {host} port {port} has changed: recorded {expected}, presented {presented}. \
         If the slave was reinstalled on purpose, delete and re-create the session"
    )]
    HostKeyChanged {
        host: String,
        port: u16,
        expected: String,
        presented: String,
    },
    #[error(
        "host key of {host} port {port} does not match {known_hosts} line {line}: that file \
         records {expected}, the host presented {presented}. Check with the slave's \
         administrator; if the key changed on purpose, fix that line (ssh-keygen -R {host})"
    )]
    KnownHostsMismatch {
        host: String,
        port: u16,
        known_hosts: String,
        line: usize,
        expected: String,
        presented: String,
    },
    #[error("authentication as {target} failed: {detail}")]
    Auth { target: String, detail: String },
    #[error("cannot read key {path}: {detail}")]
    Key { path: PathBuf, detail: String },
    #[error("SSH error with {target}: {source}")]
    Ssh {
        target: String,
        source: russh::Error,
    },
}

impl SshError {
    /// Whether trying again later may help (the monitor backs off and
    /// retries these; the others need the operator).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SshError::Connect { .. } | SshError::Timeout { .. } | SshError::Ssh { .. }
        )
    }
}

/// SHA256 fingerprint as OpenSSH prints it (`SHA256:…`).
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The line and key of `path` that contradict `key` for `host`, if any.
/// An unreadable or missing file contradicts nothing.
fn known_hosts_conflict(
    host: &str,
    port: u16,
    key: &PublicKey,
    path: &Path,
) -> Option<(usize, PublicKey)> {
    let recorded = russh::keys::known_hosts::known_host_keys_path(host, port, path).ok()?;
    let same_type: Vec<_> = recorded
        .into_iter()
        .filter(|(_, k)| k.algorithm() == key.algorithm())
        .collect();
    if same_type
        .iter()
        .any(|(_, k)| k.key_data() == key.key_data())
    {
        return None;
    }
    same_type.into_iter().next()
}

struct Checker {
    host: String,
    port: u16,
    policy: HostKeyPolicy,
    seen: Arc<Mutex<Option<PublicKey>>>,
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            // Certificates would need a trusted CA; georep pins plain keys.
            PublicKeyOrCertificate::Certificate(_) => return Ok(false),
        };
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(key.clone());
        Ok(match &self.policy {
            HostKeyPolicy::Record { known_hosts: None } => true,
            HostKeyPolicy::Record {
                known_hosts: Some(path),
            } => known_hosts_conflict(&self.host, self.port, &key, path).is_none(),
            HostKeyPolicy::Pinned(pinned) => pinned.key_data() == key.key_data(),
        })
    }
}

/// An authenticated SSH connection; its clones share it (a link's lanes
/// are opened over it in the background, see `transport::open`).
#[derive(Clone)]
pub struct SshConnection {
    handle: std::sync::Arc<Handle<Checker>>,
    target: SshTarget,
    host_key: PublicKey,
}

/// Set to `1`, a slave whose only RSA host key signature is SHA-1
/// (`ssh-rsa`) is accepted; by default it is refused (SHA-1 signatures can
/// be forged for a price within reach).
pub const ALLOW_SSH_RSA_SHA1: &str = "GEOREP_ALLOW_SSH_RSA_SHA1";

/// The host key algorithms offered: russh's defaults, without `ssh-rsa`
/// unless `allow_sha1`, and without any RSA one unless built with the `rsa`
/// feature (it could not be verified).
fn host_key_algorithms(allow_sha1: bool) -> std::borrow::Cow<'static, [russh::keys::Algorithm]> {
    use russh::keys::Algorithm;
    russh::Preferred::DEFAULT
        .key
        .iter()
        .filter(|a| match a {
            Algorithm::Rsa { hash } => cfg!(feature = "rsa") && (hash.is_some() || allow_sha1),
            _ => true,
        })
        .cloned()
        .collect::<Vec<_>>()
        .into()
}

fn client_config(timeout: Duration) -> client::Config {
    client::Config {
        // AES-GCM is fastest here (AES-NI); see DEPENDENCIES.md.
        preferred: russh::Preferred {
            cipher: std::borrow::Cow::Borrowed(&[
                cipher::AES_128_GCM,
                cipher::AES_256_GCM,
                cipher::CHACHA20_POLY1305,
            ]),
            key: host_key_algorithms(
                std::env::var_os(ALLOW_SSH_RSA_SHA1).is_some_and(|v| v == "1"),
            ),
            ..Default::default()
        },
        nodelay: true,
        keepalive_interval: Some((timeout / 4).max(Duration::from_secs(1))),
        keepalive_max: 3,
        window_size: 16 * 1024 * 1024,
        ..Default::default()
    }
}

impl SshConnection {
    /// Connects, checks the host key, and authenticates. `timeout` bounds
    /// the TCP connect and handshake, and (through keepalives) detects a
    /// connection that later hangs.
    pub async fn connect(
        target: &SshTarget,
        policy: HostKeyPolicy,
        auth: &Auth,
        timeout: Duration,
    ) -> Result<SshConnection, SshError> {
        let shown = target.to_string();
        let seen = Arc::new(Mutex::new(None));
        let checker = Checker {
            host: target.host.clone(),
            port: target.port,
            policy: policy.clone(),
            seen: seen.clone(),
        };
        let addr = (target.host.as_str(), target.port);
        let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| SshError::Timeout {
                target: shown.clone(),
                secs: timeout.as_secs(),
            })?
            .map_err(|source| SshError::Connect {
                target: format!("{}:{}", target.host, target.port),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let config = Arc::new(client_config(timeout));
        let connected = tokio::time::timeout(timeout, client::connect_stream(config, tcp, checker))
            .await
            .map_err(|_| SshError::Timeout {
                target: shown.clone(),
                secs: timeout.as_secs(),
            })?;
        let presented = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut handle = match connected {
            Ok(h) => h,
            Err(russh::Error::UnknownKey) => {
                if let (
                    HostKeyPolicy::Record {
                        known_hosts: Some(path),
                    },
                    Some(presented),
                ) = (&policy, &presented)
                {
                    if let Some((line, expected)) =
                        known_hosts_conflict(&target.host, target.port, presented, path)
                    {
                        return Err(SshError::KnownHostsMismatch {
                            host: target.host.clone(),
                            port: target.port,
                            known_hosts: path.display().to_string(),
                            line,
                            expected: fingerprint(&expected),
                            presented: fingerprint(presented),
                        });
                    }
                }
                let (HostKeyPolicy::Pinned(pinned), Some(presented)) = (&policy, presented) else {
                    return Err(SshError::Ssh {
                        target: shown,
                        source: russh::Error::UnknownKey,
                    });
                };
                return Err(SshError::HostKeyChanged {
                    host: target.host.clone(),
                    port: target.port,
                    expected: fingerprint(pinned),
                    presented: fingerprint(&presented),
                });
            }
            Err(source) => {
                return Err(SshError::Ssh {
                    target: shown,
                    source,
                })
            }
        };
        let host_key = presented.ok_or_else(|| SshError::Ssh {
            target: shown.clone(),
            source: russh::Error::UnknownKey,
        })?;
        authenticate(&mut handle, target, auth).await?;
        Ok(SshConnection {
            handle: std::sync::Arc::new(handle),
            target: target.clone(),
            host_key,
        })
    }

    /// The key the server presented (already checked against the policy).
    pub fn host_key(&self) -> &PublicKey {
        &self.host_key
    }

    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    fn ssh_err(&self, source: russh::Error) -> SshError {
        SshError::Ssh {
            target: self.target.to_string(),
            source,
        }
    }

    /// Runs `command` and returns its stdin/stdout as one byte stream (the
    /// protocol channel). The remote stderr is discarded.
    pub async fn exec_stream(&self, command: &str) -> Result<ExecStream, SshError> {
        let channel = self.exec(command).await?;
        Ok(ExecStream::new(channel, &self.target.host))
    }

    /// A new session channel running `command`.
    async fn exec(&self, command: &str) -> Result<russh::Channel<client::Msg>, SshError> {
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| self.ssh_err(e))?;
        channel
            .exec(true, command)
            .await
            .map_err(|e| self.ssh_err(e))?;
        Ok(channel)
    }

    /// Runs `command` with `stdin`, waits for it, and returns its exit
    /// status, stdout and stderr (for one-shot set-up steps like push-pem).
    pub async fn run(&self, command: &str, stdin: &[u8]) -> Result<RemoteOutput, SshError> {
        let mut channel = self.exec(command).await?;
        {
            let mut w = channel.make_writer();
            w.write_all(stdin)
                .await
                .map_err(|e| self.ssh_err(russh::Error::IO(e)))?;
            w.shutdown().await.ok();
        }
        channel.eof().await.map_err(|e| self.ssh_err(e))?;
        let mut out = RemoteOutput::default();
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, .. } => out.stderr.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => out.status = Some(exit_status),
                _ => {}
            }
        }
        Ok(out)
    }

    pub async fn close(self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}

/// How long after the end of a command's output its exit status may come
/// (sshd sends it when it has reaped the process, usually at once).
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// How many data messages of a channel (each at most an SSH packet) wait
/// for the reader of its [`ExecStream`].
const INCOMING_MAX: usize = 64;

/// What the channel of an [`ExecStream`] delivers to its reader.
enum Delivery {
    Data(Bytes),
    /// The end of the output, with why if the process did not end cleanly.
    End(Option<String>),
}

/// A remote command's stdin and stdout as one byte stream, which, unlike
/// russh's `ChannelStream`, says how the command ended: the read that meets
/// the end of a command that exited with a non-zero status, died of a
/// signal, or lost its channel fails with a [`StreamEnded`] naming the host
/// and what happened (the link then fails every lane at once, see
/// [`super::link::Ending`]). A write after that fails the same way.
pub struct ExecStream {
    writer: Pin<Box<dyn AsyncWrite + Send + Sync>>,
    incoming: mpsc::Receiver<Delivery>,
    /// The part of the last data message not read yet.
    chunk: Bytes,
    /// Set once the reader met the end (kept for every later read).
    end: Option<Option<String>>,
    /// How the command ended, as soon as the channel said so.
    ended: Arc<Mutex<Option<String>>>,
    pump: tokio::task::JoinHandle<()>,
    /// Closed when the stream is dropped.
    channel: Option<ChannelWriteHalf<client::Msg>>,
}

impl ExecStream {
    fn new(channel: russh::Channel<client::Msg>, host: &str) -> ExecStream {
        let (read, write) = channel.split();
        // Bounded: a slave that writes faster than the link reads waits
        // (the pump stops taking from the channel, and the SSH window
        // closes), instead of filling the master's memory.
        let (tx, incoming) = mpsc::channel(INCOMING_MAX);
        let ended = Arc::new(Mutex::new(None));
        let pump = tokio::spawn(pump(read, tx, host.to_owned(), ended.clone()));
        ExecStream {
            writer: Box::pin(write.make_writer()),
            incoming,
            chunk: Bytes::new(),
            end: None,
            ended,
            pump,
            channel: Some(write),
        }
    }

    fn ended_error(why: String) -> io::Error {
        io::Error::new(io::ErrorKind::BrokenPipe, StreamEnded(why))
    }
}

impl Drop for ExecStream {
    fn drop(&mut self) {
        self.pump.abort();
        // As russh's own stream does: the server may still hold the
        // channel (and the process) open otherwise.
        if let (Some(channel), Ok(rt)) =
            (self.channel.take(), tokio::runtime::Handle::try_current())
        {
            rt.spawn(async move {
                let _ = channel.close().await;
            });
        }
    }
}

/// How a remote command ended: its exit status, or how it was killed.
type Exit = Result<u32, String>;

/// Moves a channel's messages to its [`ExecStream`]: data to the reader,
/// and how the command ended to both the reader and the writer.
async fn pump(
    mut read: ChannelReadHalf,
    tx: mpsc::Sender<Delivery>,
    host: String,
    ended: Arc<Mutex<Option<String>>>,
) {
    let mut exit: Option<Exit> = None;
    let mut eof = false;
    loop {
        let msg = if eof {
            // The exit status normally follows the end of output at once.
            tokio::time::timeout(EXIT_GRACE, read.wait())
                .await
                .unwrap_or(None)
        } else {
            read.wait().await
        };
        match msg {
            Some(ChannelMsg::Data { data }) => {
                if tx.send(Delivery::Data(data)).await.is_err() {
                    return;
                }
                continue;
            }
            Some(ChannelMsg::ExitStatus { exit_status }) => exit = Some(Ok(exit_status)),
            Some(ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                ..
            }) => {
                let mut how = format!("was killed by signal {}", sig_name(&signal_name));
                if core_dumped {
                    how.push_str(" (core dumped)");
                }
                if !error_message.is_empty() {
                    how.push_str(": ");
                    how.push_str(&crate::terminal::escape_controls(&error_message));
                }
                exit = Some(Err(how));
            }
            Some(ChannelMsg::Eof) => eof = true,
            Some(ChannelMsg::Close) | None => break,
            Some(_) => continue,
        }
        if let Some(e) = &exit {
            // The process is gone: nobody reads what is still being
            // written. Its output may still be on the way, up to the end.
            set_ended(&ended, describe_exit(&host, e));
            if eof {
                break;
            }
        }
    }
    let why = match &exit {
        Some(Ok(0)) => None,
        Some(e) => Some(describe_exit(&host, e)),
        None if eof => Some(format!(
            "the slave process on {host} closed its output and sent no exit status"
        )),
        None => Some(format!(
            "the SSH channel to the slave process on {host} closed without an exit status"
        )),
    };
    set_ended(
        &ended,
        why.clone()
            .unwrap_or_else(|| format!("the slave process on {host} exited")),
    );
    let _ = tx.send(Delivery::End(why)).await;
}

fn describe_exit(host: &str, exit: &Exit) -> String {
    match exit {
        Ok(status) => format!("the slave process on {host} exited with status {status}"),
        Err(how) => format!("the slave process on {host} {how}"),
    }
}

fn set_ended(ended: &Mutex<Option<String>>, why: String) {
    ended
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert(why);
}

fn sig_name(sig: &Sig) -> String {
    match sig {
        Sig::Custom(name) => crate::terminal::escape_controls(name).into_owned(),
        other => format!("{other:?}"),
    }
}

impl AsyncRead for ExecStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.chunk.is_empty() {
                let n = self.chunk.len().min(buf.remaining());
                buf.put_slice(&self.chunk.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if let Some(end) = &self.end {
                return Poll::Ready(match end {
                    None => Ok(()),
                    Some(why) => Err(Self::ended_error(why.clone())),
                });
            }
            match std::task::ready!(self.incoming.poll_recv(cx)) {
                Some(Delivery::Data(data)) => self.chunk = data,
                Some(Delivery::End(why)) => self.end = Some(why),
                // The pump was stopped: only when the stream is dropped.
                None => self.end = Some(None),
            }
        }
    }
}

impl AsyncWrite for ExecStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let ended = self.ended.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(why) = ended {
            return Poll::Ready(Err(Self::ended_error(why)));
        }
        self.writer.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.as_mut().poll_shutdown(cx)
    }
}

/// What a remote command left behind.
#[derive(Debug, Default)]
pub struct RemoteOutput {
    /// `None` if the server sent no exit status (e.g. killed by a signal).
    pub status: Option<u32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

fn load_key(path: &Path) -> Result<PrivateKey, SshError> {
    russh::keys::load_secret_key(path, None).map_err(|e| SshError::Key {
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

async fn try_key(
    handle: &mut Handle<Checker>,
    target: &SshTarget,
    key: PrivateKey,
) -> Result<bool, SshError> {
    let hash = handle
        .best_supported_rsa_hash()
        .await
        .map_err(|source| SshError::Ssh {
            target: target.to_string(),
            source,
        })?
        .flatten();
    let res = handle
        .authenticate_publickey(
            &target.user,
            PrivateKeyWithHashAlg::new(Arc::new(key), hash),
        )
        .await
        .map_err(|source| SshError::Ssh {
            target: target.to_string(),
            source,
        })?;
    Ok(matches!(res, AuthResult::Success))
}

async fn authenticate(
    handle: &mut Handle<Checker>,
    target: &SshTarget,
    auth: &Auth,
) -> Result<(), SshError> {
    let failed = |detail: String| SshError::Auth {
        target: target.to_string(),
        detail,
    };
    match auth {
        Auth::Key(path) | Auth::Operator(Some(path)) => {
            if try_key(handle, target, load_key(path)?).await? {
                return Ok(());
            }
            Err(failed(format!("the server refused key {}", path.display())))
        }
        Auth::Operator(None) => {
            let mut tried = Vec::new();
            if let Some(home) = std::env::var_os("HOME") {
                // RSA keys only with the `rsa` feature (see Cargo.toml).
                let names: &[&str] = if cfg!(feature = "rsa") {
                    &["id_ed25519", "id_ecdsa", "id_rsa"]
                } else {
                    &["id_ed25519", "id_ecdsa"]
                };
                for name in names {
                    let path = Path::new(&home).join(".ssh").join(name);
                    if !path.exists() {
                        continue;
                    }
                    tried.push(path.display().to_string());
                    // An encrypted key without an agent cannot be used here.
                    let Ok(key) = russh::keys::load_secret_key(&path, None) else {
                        continue;
                    };
                    if try_key(handle, target, key).await? {
                        return Ok(());
                    }
                }
            }
            if try_agent(handle, target).await? {
                return Ok(());
            }
            tried.push("ssh-agent".into());
            Err(failed(format!(
                "no accepted key (tried {}); pass --identity KEYFILE",
                tried.join(", ")
            )))
        }
    }
}

async fn try_agent(handle: &mut Handle<Checker>, target: &SshTarget) -> Result<bool, SshError> {
    let Ok(mut agent) = russh::keys::agent::client::AgentClient::connect_env().await else {
        return Ok(false);
    };
    let Ok(identities) = agent.request_identities().await else {
        return Ok(false);
    };
    for id in identities {
        let russh::keys::agent::AgentIdentity::PublicKey { key, .. } = id else {
            continue;
        };
        if let Ok(AuthResult::Success) = handle
            .authenticate_publickey_with(&target.user, key, None, &mut agent)
            .await
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A new ed25519 key pair for a session: (private key in OpenSSH PEM, public
/// key line).
pub fn generate_session_key(comment: &str) -> std::io::Result<(String, String)> {
    use std::io::Read;
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
    let pair = russh::keys::ssh_key::private::Ed25519Keypair::from_seed(&seed);
    let mut key = PrivateKey::from(pair);
    key.set_comment(comment);
    let private = key
        .to_openssh(russh::keys::ssh_key::LineEnding::LF)
        .map_err(std::io::Error::other)?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(std::io::Error::other)?;
    Ok((private.to_string(), public))
}

/// Parses a recorded host key line (`ssh-ed25519 AAAA…`).
pub fn parse_public_key(line: &str) -> Result<PublicKey, String> {
    PublicKey::from_openssh(line.trim()).map_err(|e| format!("invalid public key {line:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_back() {
        let (private, public) = generate_session_key("georep test").unwrap();
        assert!(private.contains("OPENSSH PRIVATE KEY"));
        let key = parse_public_key(&public).unwrap();
        assert!(fingerprint(&key).starts_with("SHA256:"));
        let parsed = russh::keys::decode_secret_key(&private, None).unwrap();
        assert_eq!(parsed.public_key().key_data(), key.key_data());
    }

    #[test]
    fn sha1_rsa_host_keys_are_offered_only_when_allowed() {
        use russh::keys::{Algorithm, HashAlg};
        let sha1 = Algorithm::Rsa { hash: None };
        let sha256 = Algorithm::Rsa {
            hash: Some(HashAlg::Sha256),
        };
        let offered = client_config(Duration::from_secs(5)).preferred.key;
        assert!(!offered.contains(&sha1), "{offered:?}");
        assert!(offered.contains(&Algorithm::Ed25519));
        let rsa = cfg!(feature = "rsa");
        assert_eq!(offered.contains(&sha256), rsa, "{offered:?}");
        assert_eq!(host_key_algorithms(true).contains(&sha1), rsa);
    }
}
