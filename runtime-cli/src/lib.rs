//! runv's host side, shared by the `runv` CLI, `runv-shim` and hyperctl.
//!
//! - [`config`]: where the guest kernel, agent initramfs and runv-vmm are;
//! - [`state`]: `<root>/<id>/state.json` and the per-container lock;
//! - [`sandbox`]: create a sandbox (VMM, share, agent, container) and tear it down;
//! - [`vmm`], [`agent`], [`share`], [`shim`], [`console`]: its pieces (hybrid vsock is
//!   the `runv_hvsock` crate's);
//! - [`rewrite`]: the spec the guest gets (no host path in it) and the share layout;
//! - [`dns_relay`]: the host end of the guest's relay to Docker's embedded DNS;
//! - [`network`]: taps and tc redirect filters in the sandbox's network namespace;
//! - [`hooks`], [`cgroups`], [`sizing`], [`signals`], [`speccheck`]: host-side duties;
//! - [`check`]: `runv check`, whether this host can run sandboxes;
//! - [`oci`], [`log`]: runc's output and log formats.
//!
//! docs/runtime.md describes the whole.

pub mod agent;
pub mod cgroups;
pub mod check;
pub mod config;
pub mod console;
pub mod dns_relay;
pub mod hooks;
pub mod log;
pub mod network;
pub mod oci;
pub mod rewrite;
pub mod sandbox;
pub mod share;
pub mod shim;
pub mod signals;
pub mod sizing;
pub mod speccheck;
pub mod state;
pub mod vmm;
