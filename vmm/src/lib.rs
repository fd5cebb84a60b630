//! runv-vmm: the KVM micro-VM monitor of runv. One process per sandbox; it boots a Linux
//! guest kernel directly (no firmware) and exits with the VM's status.

pub mod acpi;
pub mod boot;
pub mod config;
pub mod cpu;
pub mod devices;
pub mod event_loop;
pub mod exit;
pub mod host;
pub mod jail;
pub mod memory;
pub mod ratelimit;
pub mod seccomp;
pub mod vm;

pub use config::{Console, VmConfig};
pub use exit::ExitReason;
pub use vm::run;
