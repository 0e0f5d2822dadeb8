//! Moving batches to the slave: the SSH session ([`ssh`]), the wire protocol
//! ([`protocol`]), one conversation with a slave ([`link`]) and the shipping
//! of a batch ([`ship`]).

pub(crate) mod brickdir;
pub mod command;
pub mod compress;
pub mod link;
pub mod origin;
pub mod protocol;
pub mod ship;
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
                LinkError::Protocol(protocol::ProtocolError::Version { .. })
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
pub async fn open(
    target: &SshTarget,
    policy: HostKeyPolicy,
    auth: &Auth,
    command: &str,
    timeout: Duration,
    streams: usize,
) -> Result<(SshConnection, SshLink), TransportError> {
    let conn = SshConnection::connect(target, policy, auth, timeout).await?;
    let link_err = |source| TransportError::Link {
        target: target.to_string(),
        source,
    };
    // The end of any conversation ends the whole link (see `link::Ending`).
    let ending = Ending::default();
    let stream = conn.exec_stream(command).await?;
    let mut link = SlaveLink::greet_with(stream, timeout, ending.clone())
        .await
        .map_err(link_err)?
        .greeted()
        .await
        .map_err(link_err)?;
    let more = streams.saturating_sub(1);
    if more > 0 {
        let (conn, command, shown) = (conn.clone(), command.to_owned(), target.to_string());
        link.lanes_opening(tokio::spawn(async move {
            let why = |e: &dyn std::fmt::Display| format!("{shown}: {e}");
            // They start at once; then each greeting is awaited.
            let mut greeted = Vec::with_capacity(more);
            for _ in 0..more {
                let stream = conn.exec_stream(&command).await.map_err(|e| why(&e))?;
                let lane = SlaveLink::greet_with(stream, timeout, ending.clone()).await;
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
