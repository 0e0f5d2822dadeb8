//! Reaching the slave: the SSH session ([`ssh`]), one conversation with a
//! slave over its lanes ([`link`]) speaking the wire format of
//! [`crate::proto`], and the bandwidth limit ([`throttle`]). What to send is
//! decided by [`crate::ship`], above it; the slave never imports it.
//!
//! May import: `proto`, `relpath`; never `ship` or `slave`.

pub mod link;
pub mod ssh;
pub mod throttle;

use std::time::Duration;

use link::{Ending, LinkError, SlaveLink};
use ssh::{Auth, ExecStream, HostKeyPolicy, SshConnection, SshError, SshTarget};

/// A live conversation with a slave over SSH.
pub type SshLink = SlaveLink<ExecStream>;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error("{target}: {source}")]
    Link { target: String, source: LinkError },
}

impl TransportError {
    /// Whether retrying later may help (see [`SshError::is_transient`]).
    pub fn is_transient(&self) -> bool {
        match self {
            TransportError::Ssh(e) => e.is_transient(),
            TransportError::Link { source, .. } => !matches!(
                source,
                LinkError::Protocol(crate::proto::ProtocolError::Version { .. })
            ),
        }
    }
}

/// Connects to `target`, runs `command` there and greets the slave, over
/// `streams` channels (the link and its lanes, see [`link`]). The
/// connection must be kept alive as long as the link is used.
///
/// Only the first conversation is waited for: every stream is a remote
/// login (a shell start-up that costs a good part of a second of CPU on
/// some hosts), so the others are opened in the background once the first
/// is greeted, and the shipper adds them when they are ready (see
/// [`SlaveLink::adopt_lanes`]). Work starts a login earlier, and the logins
/// do not compete with each other for the CPU before it does.
///
/// With `fence` (the Active worker of a replica set), every stream declares
/// that epoch of its set (see "Fencing" in [`crate::proto`]).
pub async fn open(
    target: &SshTarget,
    policy: HostKeyPolicy,
    auth: &Auth,
    command: &str,
    timeout: Duration,
    streams: usize,
    fence: Option<&crate::proto::Fence>,
) -> Result<(SshConnection, SshLink), TransportError> {
    let conn = SshConnection::connect(target, policy, auth, timeout).await?;
    let link_err = |source| TransportError::Link {
        target: target.to_string(),
        source,
    };
    // The end of any conversation ends the whole link (see `link::Ending`).
    let ending = Ending::default();
    let stream = conn.exec_stream(command).await?;
    let mut link = SlaveLink::greet_with(stream, timeout, ending.clone(), fence)
        .await
        .map_err(link_err)?
        .greeted()
        .await
        .map_err(link_err)?;
    let more = streams.saturating_sub(1);
    if more > 0 {
        let (conn, command, shown) = (conn.clone(), command.to_owned(), target.to_string());
        let fence = fence.cloned();
        link.lanes_opening(tokio::spawn(async move {
            let why = |e: &dyn std::fmt::Display| format!("{shown}: {e}");
            // They start at once; then each greeting is awaited.
            let mut greeted = Vec::with_capacity(more);
            for _ in 0..more {
                let stream = conn.exec_stream(&command).await.map_err(|e| why(&e))?;
                let lane =
                    SlaveLink::greet_with(stream, timeout, ending.clone(), fence.as_ref()).await;
                greeted.push(lane.map_err(|e| why(&e))?);
            }
            let mut lanes = Vec::with_capacity(more);
            for lane in greeted {
                lanes.push(lane.greeted().await.map_err(|e| why(&e))?);
            }
            Ok(lanes)
        }));
    }
    Ok((conn, link))
}
