//! virtio-net over a tap runv opened: `--net fd=N,mac=MAC[,mtu=N]`, one device per option.
//!
//! * `tap.rs`: the host end: [`tap::Tap`] (an inherited tap fd, checked and configured
//!   with the ioctls a tap's owner may use: no /dev/net/tun, no CAP_NET_ADMIN) and
//!   [`tap::FrameFd`], the one-frame-per-read/write fd the queue handler works on.
//! * `device.rs`: [`Net`], the virtio side: features, config space (MAC, status, MTU),
//!   activation (TUNSETOFFLOAD from the guest's features) and reset.
//! * `handler.rs`: [`handler::NetHandler`]: the rx and tx queues against the frame fd,
//!   with backpressure both ways, on the VMM's event loop.
//!
//! Two queues (rx 0, tx 1), no control queue. Every frame carries the 12-byte
//! `virtio_net_hdr_v1` (VERSION_1): the tap reads and writes it too (TUNSETVNETHDRSZ 12),
//! so frames go through unchanged apart from `num_buffers`, which the device fills in.
//! docs/virtio-net.md has the features, the backpressure and what a guest can and cannot do.

pub mod device;
#[cfg(test)]
mod device_tests;
pub mod handler;
pub mod tap;
#[cfg(test)]
mod tests;

pub use device::Net;

use crate::config::options::{self, Key, Spec};
use std::os::fd::RawFd;
use std::str::FromStr;

/// Size of `struct virtio_net_hdr_v1`, the header in front of every frame with VERSION_1.
pub const VNET_HDR_LEN: usize = 12;
/// Largest Ethernet frame the device moves, without the virtio-net header: a 64 KiB GSO
/// frame and its Ethernet and VLAN headers (as Firecracker and Cloud Hypervisor allow).
pub const MAX_FRAME_LEN: usize = 65550;
/// Largest header + frame in either direction.
pub const MAX_PACKET_LEN: usize = VNET_HDR_LEN + MAX_FRAME_LEN;
/// Smallest and largest MTU `mtu=` accepts (IPv4's minimum; the 16-bit config field).
pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;

/// Why a `--net` device could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The fd is not a usable tap.
    #[error(transparent)]
    Tap(#[from] tap::TapError),
}

/// A MAC address, `xx:xx:xx:xx:xx:xx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacAddr(pub [u8; 6]);

impl std::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = String;

    /// Six pairs of hex digits separated by `:`, a unicast address, not all zero. The
    /// reasons do not repeat the value: the option's error names it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || "it is not six hex pairs separated by ':'".to_string();
        let mut mac = [0u8; 6];
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(malformed());
        }
        for (byte, part) in mac.iter_mut().zip(&parts) {
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(malformed());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|e| e.to_string())?;
        }
        if mac[0] & 1 != 0 {
            return Err("it is a multicast address, not a unicast one".into());
        }
        if mac == [0; 6] {
            return Err("it is the all-zero address".into());
        }
        Ok(MacAddr(mac))
    }
}

/// One `--net` option: `fd=N,mac=MAC[,mtu=N]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// The tap fd runv passed down (open, `IFF_TAP|IFF_NO_PI|IFF_VNET_HDR`).
    pub fd: RawFd,
    /// The guest's MAC address (config space, VIRTIO_NET_F_MAC).
    pub mac: MacAddr,
    /// The MTU offered to the guest (VIRTIO_NET_F_MTU), if given.
    pub mtu: Option<u16>,
}

/// `--net fd=N,mac=MAC[,mtu=N]`.
pub const OPTION: Spec = Spec::new(
    "--net",
    &[
        Key::required("fd", "N"),
        Key::required("mac", "MAC"),
        Key::optional("mtu", "N"),
    ],
);

impl FromStr for NetConfig {
    type Err = options::Error;

    /// `fd=N,mac=MAC[,mtu=N]`, see [`OPTION`]. Whether the fd is an open tap is checked
    /// when the device takes it over ([`tap::Tap::from_inherited_fd`]), after
    /// [`crate::config::VmConfig::validate`] made sure no two devices share it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let o = OPTION.parse(s)?;
        let fd: RawFd = o.required("fd")?;
        if fd < 0 {
            return Err(o.invalid("fd", "it is not a file descriptor number"));
        }
        let mac = o.required("mac")?;
        let mtu = match o.value::<u32>("mtu")? {
            Some(n) if !MTU_RANGE.contains(&n) => {
                return Err(o.invalid(
                    "mtu",
                    format!(
                        "it must be between {} and {}",
                        MTU_RANGE.start(),
                        MTU_RANGE.end()
                    ),
                ))
            }
            mtu => mtu.map(|n| n as u16),
        };
        Ok(NetConfig { fd, mac, mtu })
    }
}
