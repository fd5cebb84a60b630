//! runv's hybrid vsock, both ends, defined once.
//!
//! runv-vmm implements virtio-vsock in user space and maps it to Unix sockets
//! (Firecracker's "hybrid vsock"):
//! - a host process reaches guest port `P` by connecting to the VMM's socket and
//!   writing `CONNECT P\n`; the VMM answers `OK <host port>\n` once the guest accepted,
//!   and the stream then belongs to the guest ([`handshake`]);
//! - a guest connection to port `P` reaches the host listener at `<uds>_P`
//!   ([`port_path`]);
//! - runv's sockets live in state directories that can be deeper than `sun_path`
//!   allows; [`uds`] binds and connects them through their directory.
//!
//! runv-vmm (the server side), runv and runv-shim (the host clients) and the agent's
//! test suites use this crate; none of them spells the exchange out itself.

pub mod handshake;
pub mod uds;

pub use handshake::{connect, ConnectError};
pub use uds::port_path;
