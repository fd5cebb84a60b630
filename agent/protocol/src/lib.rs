//! The protocol between the runv host side (runtime CLI, shims) and `runv-agent`,
//! the guest's PID 1: the wire format only (the host-side rewrite of an OCI spec for the
//! guest is runv_runtime::rewrite).
//!
//! Wire format (docs/agent-protocol.md has the full description):
//! - every message is one frame: a 4-byte big-endian body length, then a JSON body
//!   of exactly that many bytes, at most [`MAX_FRAME_LEN`];
//! - at connect the client sends [`Handshake::Hello`] with the versions it speaks
//!   and the server answers [`Handshake::Welcome`] with the chosen one, or
//!   [`Handshake::Rejected`] naming both sides' versions, then closes;
//! - then the client sends [`RequestFrame`]s and the server answers each with a
//!   [`ResponseFrame`] carrying the same id (replies may come out of order).
//!
//! Stdio never goes through this channel: each process gets its own vsock streams,
//! whose ports travel in [`StdioPorts`], authenticated by a [`StdioToken`].
//!
//! The codec is blocking and works over any `Read + Write` ([`Client`], [`Server`]);
//! [`SetTimeout`] and [`Deadline`] give a per-call time limit on sockets.

pub mod client;
pub mod frame;
pub mod handshake;
pub mod message;
pub mod server;
pub mod share;
pub mod stdio_token;
pub mod timeout;

#[cfg(test)]
mod conn_tests;
#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod test_util;

pub use client::{Client, ClientError};
pub use frame::{FrameError, MAX_FRAME_LEN};
pub use handshake::{Handshake, HandshakeError};
pub use message::{
    ContainerInfo, ContainerStats, ContainerStatus, CpuStats, DnsConfig, DnsRelay, ErrorCode,
    ErrorResponse, ExitStatus, IpNet, MemoryStats, NetInterface, NetNeighbor, NetRoute,
    NetworkConfig, PidsStats, ProcessInfo, Request, RequestFrame, Response, ResponseFrame,
    StdioPorts,
};
pub use server::{ReadRequestError, Server, ServerError};
pub use share::{ShareError, ShareLocation, GUEST_SHARE_ROOT};
pub use stdio_token::{StdioToken, TokenError};
pub use timeout::{Deadline, SetTimeout};

/// The protocol version this crate speaks by default (the newest it knows).
pub const PROTOCOL_VERSION: u32 = 1;

/// Every protocol version this crate can speak, oldest first.
pub const SUPPORTED_VERSIONS: &[u32] = &[PROTOCOL_VERSION];

/// The vsock port the agent listens on for control connections.
pub const AGENT_VSOCK_PORT: u32 = 1024;
