//! virtio-vsock in user space, mapped to Unix sockets: Firecracker's "hybrid vsock".
//!
//! - Host to guest: a host process connects to the VMM's Unix socket `uds`, writes
//!   `CONNECT <guest port>\n` and, once the guest accepted, reads `OK <host port>\n`; the
//!   rest of the stream is the connection's bytes.
//! - Guest to host: a guest connect to CID 2, port P reaches the Unix listener at
//!   `<uds>_<P>`; the guest gets a RST when nothing listens there.
//!
//! Layers: [`handler`] moves packets between the virtqueues and the [`muxer::Muxer`]
//! (transport-agnostic, unit-tested with mock queues); the muxer owns the Unix sockets,
//! one [`connection::Connection`] per stream, and a nested epoll whose single fd the
//! device hands to the VMM's event loop ([`device`]).
//!
//! Flow control is the spec's credit scheme, and nothing grows without bound: the guest may
//! have at most [`CONN_BUF_SIZE`] bytes in flight towards a host stream (the VMM stores what
//! the Unix socket did not take, up to that much, and tells the guest how much it forwarded),
//! and data from a host stream is read straight into guest RX buffers, only as far as the
//! guest granted credit and posted buffers; a stalled side stops being read.

pub mod connection;
pub mod device;
pub mod handler;
pub mod muxer;
mod packet;
pub mod uds;

pub use device::{VsockConfig, VsockDevice};
pub use packet::{Hdr, Op};

/// The host's CID, where guest connects to hybrid-vsock Unix listeners go.
pub const HOST_CID: u64 = 2;
/// Largest payload of one packet, the Linux driver's `VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`.
pub const MAX_PKT_DATA: u32 = 64 * 1024;
/// Receive buffer the VMM announces (`buf_alloc`) per connection: the most guest data it
/// holds for a host stream that does not read.
pub const CONN_BUF_SIZE: u32 = 256 * 1024;
/// The VMM sends a credit update once it forwarded this much since the guest last heard.
pub const CREDIT_UPDATE_THRESHOLD: u32 = CONN_BUF_SIZE / 4;
/// Most connections (both directions together); worst-case buffering is this many times
/// [`CONN_BUF_SIZE`], and only while host readers stall.
pub const MAX_CONNECTIONS: usize = 1024;

/// Stream socket type (the only one supported; no SEQPACKET feature).
pub const TYPE_STREAM: u16 = 1;
/// SHUTDOWN flag: the sender will receive no more.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more.
pub const SHUTDOWN_SEND: u32 = 2;
