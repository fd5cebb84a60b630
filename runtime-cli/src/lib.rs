//! runv's host side, shared by the `runv` CLI, `runv-shim` (and later hyperctl).
//!
//! - [`config`]: where the guest kernel, agent initramfs and runv-vmm are;
//! - [`state`]: `<root>/<id>/state.json` and the per-container lock;
//! - [`sandbox`]: create a sandbox (VMM, share, agent, container) and tear it down;
//! - [`vmm`], [`agent`], [`share`], [`shim`], [`console`], [`uds`]: its pieces;
//! - [`hooks`], [`cgroups`], [`sizing`], [`signals`], [`speccheck`]: host-side duties;
//! - [`oci`], [`log`]: runc's output and log formats.
//!
//! docs/runtime.md describes the whole.

pub mod agent;
pub mod cgroups;
pub mod config;
pub mod console;
pub mod hooks;
pub mod log;
pub mod oci;
pub mod sandbox;
pub mod share;
pub mod shim;
pub mod signals;
pub mod sizing;
pub mod speccheck;
pub mod state;
pub mod uds;
pub mod vmm;

#[cfg(test)]
mod test_util;
