//! Connections to a sandbox's agent through runv-vmm's hybrid vsock socket.
//!
//! The stream to the agent's control port is a hybrid-vsock connect (`runv_hvsock`);
//! every call has a time limit (the constants below); a connection that timed out is
//! dropped.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use runv_agent_protocol::{Client, ClientError, Request, Response, AGENT_VSOCK_PORT};

/// Connecting and the protocol handshake.
pub const CONNECT_LIMIT: Duration = Duration::from_secs(10);
/// Ordinary calls: state, signal, start, pause, resume, stats, update, list.
pub const CALL_LIMIT: Duration = Duration::from_secs(20);
/// `create_container` and `exec_process`: libcontainer builds the process, and a
/// nested test VM is slow.
pub const CREATE_LIMIT: Duration = Duration::from_secs(60);
/// Calls on the teardown path (`shutdown`, the signal of `kill`/`delete --force`): an
/// agent that does not answer in this time gets its VMM killed.
pub const TEARDOWN_LIMIT: Duration = Duration::from_secs(5);
/// How long `create` waits for a booting VM's agent to answer.
pub const BOOT_LIMIT: Duration = Duration::from_secs(30);

const SOFTWARE: &str = concat!("runv ", env!("CARGO_PKG_VERSION"));

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("connecting to the agent: {0}")]
    Connect(#[from] runv_hvsock::ConnectError),
    #[error("agent through {}: {source}", uds.display())]
    Protocol {
        uds: PathBuf,
        source: Box<ClientError>,
    },
    #[error("the agent of this container did not answer within {limit:?} ({last})")]
    NotReady { limit: Duration, last: String },
}

impl AgentError {
    /// The agent's own error answer, if that is what this is.
    pub fn agent_answer(&self) -> Option<&runv_agent_protocol::ErrorResponse> {
        match self {
            AgentError::Protocol { source, .. } => match source.as_ref() {
                ClientError::Agent { error, .. } => Some(error),
                _ => None,
            },
            _ => None,
        }
    }
}

/// A raw stream to guest vsock `port` through the VMM's socket `uds`.
pub fn hybrid_connect(uds: &Path, port: u32, limit: Duration) -> Result<UnixStream, AgentError> {
    runv_hvsock::connect(uds, port, limit).map_err(AgentError::from)
}

/// A protocol client to the agent of the VMM at `uds`.
pub fn connect(uds: &Path) -> Result<Client<UnixStream>, AgentError> {
    let s = hybrid_connect(uds, AGENT_VSOCK_PORT, CONNECT_LIMIT)?;
    Client::connect_timeout(s, SOFTWARE, CONNECT_LIMIT).map_err(|e| AgentError::Protocol {
        uds: uds.into(),
        source: Box::new(e),
    })
}

/// One call on a client, bounded by `limit`.
pub fn call(
    client: &mut Client<UnixStream>,
    uds: &Path,
    request: &Request,
    limit: Duration,
) -> Result<Response, AgentError> {
    client
        .call_timeout(request, limit)
        .map_err(|e| AgentError::Protocol {
            uds: uds.into(),
            source: Box::new(e),
        })
}

/// Connects and makes one call; the whole exchange is bounded by `limit` plus the
/// connect limit.
pub fn call_once(uds: &Path, request: &Request, limit: Duration) -> Result<Response, AgentError> {
    let mut c = connect(uds)?;
    call(&mut c, uds, request, limit)
}

/// Waits until the agent answers a ping, or `limit` passes, or `alive()` turns false
/// (the VMM died). Returns the connected client.
pub fn wait_ready(
    uds: &Path,
    limit: Duration,
    mut alive: impl FnMut() -> bool,
) -> Result<Client<UnixStream>, AgentError> {
    let start = Instant::now();
    let mut last = String::from("no attempt yet");
    while start.elapsed() < limit {
        if !alive() {
            return Err(AgentError::NotReady {
                limit,
                last: format!("runv-vmm exited; last attempt: {last}"),
            });
        }
        if uds.exists() {
            let attempt =
                hybrid_connect(uds, AGENT_VSOCK_PORT, Duration::from_secs(2)).and_then(|s| {
                    Client::connect_timeout(s, SOFTWARE, Duration::from_secs(5)).map_err(|e| {
                        AgentError::Protocol {
                            uds: uds.into(),
                            source: Box::new(e),
                        }
                    })
                });
            match attempt {
                Ok(mut c) => match call(&mut c, uds, &Request::Ping, Duration::from_secs(5)) {
                    Ok(_) => return Ok(c),
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(AgentError::NotReady { limit, last })
}
