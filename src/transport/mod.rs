//! Moving batches to the slave: the SSH session ([`ssh`]), the wire protocol
//! ([`protocol`]), one conversation with a slave ([`link`]) and the shipping
//! of a batch ([`ship`]).

pub(crate) mod brickdir;
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
    // All slaves start at once; then each greeting is awaited. The end of
    // any of them ends the whole link (see `link::Ending`).
    let ending = Ending::default();
    let mut greeted = Vec::with_capacity(streams.max(1));
    for _ in 0..streams.max(1) {
        let stream = conn.exec_stream(command).await?;
        let lane = SlaveLink::greet_with(stream, timeout, ending.clone()).await;
        greeted.push(lane.map_err(link_err)?);
    }
    let mut greeted = greeted.into_iter();
    let first = greeted.next().expect("at least one stream");
    let mut link = first.greeted().await.map_err(link_err)?;
    for lane in greeted {
        link.add_lane(lane.greeted().await.map_err(link_err)?);
    }
    Ok((conn, link))
}
