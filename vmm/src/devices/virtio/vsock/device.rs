//! The virtio-vsock device: configuration (the guest's CID), features, activation and
//! reset. The queues are served by [`super::handler::VsockHandler`] on the event loop.

use super::handler::{VsockHandler, RX_QUEUE, TX_QUEUE};
use super::muxer::{self, Muxer};
use crate::config::options::{self, Key, Spec};
use crate::devices::virtio::common::{queue_fds, Device, DeviceCommon, DeviceKind};
use crate::devices::virtio::{ActivateArgs, ActivateError, TYPE_VSOCK, VIRTIO_RING_F_EVENT_IDX};
use crate::event_loop::EventSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Queue sizes: RX, TX, event.
const QUEUE_SIZES: [u16; 3] = [256, 256, 16];

/// Why the device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// CIDs 0-2 are reserved and the CID must fit 32 bits, below VMADDR_CID_ANY.
    #[error("vsock cid={0} is invalid: {CID_RANGE}")]
    Cid(u64),
    /// The muxer (socket, epoll) could not be set up.
    #[error(transparent)]
    Muxer(#[from] muxer::Error),
}

/// `--vsock cid=N,uds=PATH`: the guest's CID and the VMM's hybrid-vsock socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's CID (3 to 2^32-2).
    pub cid: u64,
    /// The Unix socket the VMM listens on; guest connects to port P go to `<uds>_P`.
    pub uds: PathBuf,
}

/// Longest file name of the `uds=` socket. The path may be of any length (a long one is
/// reached through `/proc/self/fd/<dir fd>/`, see uds.rs), but that prefix plus the name
/// plus `_4294967295` must fit a sockaddr_un (107 bytes).
pub const MAX_UDS_NAME_LEN: usize = 107 - "/proc/self/fd/4294967295/".len() - "_4294967295".len();

/// `--vsock cid=N,uds=PATH`.
pub const OPTION: Spec = Spec::new(
    "--vsock",
    &[Key::required("cid", "N"), Key::required("uds", "PATH")],
);

impl std::str::FromStr for VsockConfig {
    type Err = options::Error;

    /// `cid=N,uds=PATH`, see [`OPTION`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let o = OPTION.parse(s)?;
        let cid: u64 = o.required("cid")?;
        if !valid_cid(cid) {
            return Err(o.invalid("cid", CID_RANGE));
        }
        let uds: PathBuf = o.required("uds")?;
        match uds.file_name() {
            Some(n) if n.len() <= MAX_UDS_NAME_LEN => {}
            Some(_) => {
                return Err(o.invalid(
                    "uds",
                    format!("the file name is longer than {MAX_UDS_NAME_LEN} bytes"),
                ))
            }
            None => return Err(o.invalid("uds", "the path has no file name")),
        }
        Ok(VsockConfig { cid, uds })
    }
}

/// CIDs 0-2 are reserved and the CID must fit 32 bits, below VMADDR_CID_ANY.
fn valid_cid(cid: u64) -> bool {
    (3..u64::from(u32::MAX)).contains(&cid)
}

const CID_RANGE: &str = "it must be between 3 and 4294967294";

/// A hybrid-vsock device: guest CID `cid`, host side on the Unix socket `uds`.
pub type VsockDevice = Device<VsockKind>;

/// What is virtio-vsock's own in a [`VsockDevice`].
pub struct VsockKind {
    cid: u64,
    uds: PathBuf,
    muxer: Arc<Mutex<Muxer>>,
}

impl std::fmt::Debug for VsockDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VsockDevice")
            .field("cid", &self.kind.cid)
            .field("active", &self.is_active())
            .finish()
    }
}

impl VsockDevice {
    /// Binds `uds` (which must not exist) and makes the device.
    pub fn new(cid: u64, uds: &Path) -> Result<Self, Error> {
        if !valid_cid(cid) {
            return Err(Error::Cid(cid));
        }
        let kind = VsockKind {
            cid,
            uds: uds.to_path_buf(),
            muxer: Arc::new(Mutex::new(Muxer::new(cid, uds)?)),
        };
        // struct virtio_vsock_config { le64 guest_cid; }
        let config = cid.to_le_bytes();
        Ok(Device::from_parts(
            format!("virtio-vsock cid {cid}"),
            &config,
            kind,
        ))
    }

    /// The guest's CID.
    pub fn cid(&self) -> u64 {
        self.kind.cid
    }
}

impl DeviceKind for VsockKind {
    const DEVICE_TYPE: u32 = TYPE_VSOCK;
    const QUEUE_MAX_SIZES: &'static [u16] = &QUEUE_SIZES;

    fn features(&self) -> u64 {
        // Stream sockets only (no SEQPACKET); VERSION_1 comes from the transport. EVENT_IDX
        // lets the driver skip interrupts (and the device notifications) it does not need.
        1 << VIRTIO_RING_F_EVENT_IDX
    }

    fn activate(
        &mut self,
        common: &mut DeviceCommon,
        args: ActivateArgs,
    ) -> Result<(), ActivateError> {
        common.check_queue_count(&args, QUEUE_SIZES.len())?;
        common.check_inactive()?;
        let mut queues = args.queues;
        let txq = queues.swap_remove(TX_QUEUE);
        let rxq = queues.swap_remove(RX_QUEUE);
        // Every queue's eventfd (RX, TX and the unused event queue's), then the muxer's.
        let mut fds = queue_fds(&args.queue_evts);
        let handler = VsockHandler::new(
            common.name().to_string(),
            args.mem,
            rxq,
            txq,
            args.queue_evts,
            args.interrupt,
            self.muxer.clone(),
        );
        fds.push((handler.muxer_fd(), EventSet::IN));
        common.register(args.event_loop, Box::new(handler), &fds)
    }

    fn reset(&mut self, _common: &mut DeviceCommon, _acked_features: u64) {
        // The handler is gone (and with it its hold on the muxer): drop every connection.
        self.muxer.lock().unwrap_or_else(|e| e.into_inner()).reset();
    }
}

impl Drop for VsockKind {
    /// Removes the socket file now: the muxer (which also removes it) may outlive the
    /// device for a moment on the event-loop thread.
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.uds) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("removing vsock socket {}: {e}", self.uds.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::VirtioDevice;

    fn uds(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("runv-vsock-dev-{}-{name}", std::process::id()))
    }

    #[test]
    fn config_holds_the_cid_and_reserved_cids_are_refused() {
        let path = uds("cfg");
        let dev = VsockDevice::new(0x1_0203, &path).unwrap();
        assert_eq!(dev.device_type(), TYPE_VSOCK);
        assert_eq!(dev.queue_max_sizes().len(), 3);
        let mut d = [0u8; 8];
        dev.read_config(0, &mut d);
        assert_eq!(u64::from_le_bytes(d), 0x1_0203);
        let mut d = [0u8; 4];
        dev.read_config(6, &mut d);
        assert_eq!(d, [0; 4]);
        drop(dev);
        assert!(!path.exists());
        for cid in [0, 1, 2, u64::from(u32::MAX), 1 << 40] {
            let e = VsockDevice::new(cid, &path).unwrap_err();
            assert!(e.to_string().contains(&format!("cid={cid}")), "{e}");
        }
    }

    #[test]
    fn the_command_line_form_parses_and_bad_ones_are_named() {
        let c: VsockConfig = "cid=3,uds=/run/v.sock".parse().unwrap();
        assert_eq!(
            c,
            VsockConfig {
                cid: 3,
                uds: "/run/v.sock".into()
            }
        );
        assert_eq!("uds=/a,cid=99".parse::<VsockConfig>().unwrap().cid, 99);
        crate::config::options::assert_refused::<VsockConfig>(
            &OPTION,
            &[
                ("cid=3", "uds= is missing"),
                ("uds=/a", "cid= is missing"),
                ("cid=x,uds=/a", "cid=x is invalid: invalid digit"),
                ("cid=2,uds=/a", "cid=2 is invalid: it must be between 3"),
                ("cid=4294967295,uds=/a", "is invalid"),
                ("cid=3,uds=", "uds needs a value"),
                ("cid=3,cid=4,uds=/a", "cid is given twice"),
                ("cid=3,uds=/a,ro", "unknown key \"ro\""),
                ("cid=3,uds=/", "uds=/ is invalid: the path has no file name"),
            ],
        );
        let long = format!("cid=3,uds=/{}", "x".repeat(MAX_UDS_NAME_LEN + 1));
        let e = long.parse::<VsockConfig>().unwrap_err().to_string();
        assert!(e.contains("the file name is longer than"), "{e}");
        // A deep directory is fine: only the name counts.
        let deep = format!("cid=3,uds=/{}/v.sock", "d/".repeat(100));
        assert!(deep.parse::<VsockConfig>().is_ok());
    }

    #[test]
    fn activation_checks_the_queue_count() {
        use crate::devices::virtio::test_utils::{guest_memory, Activation};
        let path = uds("act");
        let mut dev = VsockDevice::new(3, &path).unwrap();
        let el = crate::event_loop::EventLoop::start().unwrap();
        let act = Activation::new(&guest_memory(0x1_0000), Vec::new(), &el);
        let e = dev.activate(act.args).unwrap_err();
        assert!(e.to_string().contains("0 queues"), "{e}");
        dev.reset();
    }
}
