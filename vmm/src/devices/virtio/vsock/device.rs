//! The virtio-vsock device: configuration (the guest's CID), features, activation and
//! reset. The queues are served by [`super::handler::VsockHandler`] on the event loop.

use super::handler::{VsockHandler, EVENT_QUEUE, RX_QUEUE, TX_QUEUE};
use super::muxer::{self, Muxer};
use crate::devices::virtio::{
    read_config_bytes, ActivateArgs, ActivateError, VirtioDevice, TYPE_VSOCK,
    VIRTIO_RING_F_EVENT_IDX,
};
use crate::event_loop::{EventLoopHandle, EventSet, HandlerId};
use crate::ratelimit::LogLimiter;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Queue sizes: RX, TX, event.
const QUEUE_SIZES: [u16; 3] = [256, 256, 16];

/// Why the device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// CIDs 0-2 are reserved and the CID must fit 32 bits, below VMADDR_CID_ANY.
    #[error("vsock cid={0} is invalid: it must be between 3 and 4294967294")]
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

impl std::str::FromStr for VsockConfig {
    type Err = String;

    /// `cid=N,uds=PATH`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut cid = None;
        let mut uds = None;
        for part in s.split(',') {
            match part.split_once('=') {
                Some(("cid", v)) if cid.is_none() => {
                    cid = Some(v.parse::<u64>().map_err(|_| {
                        format!("--vsock {s:?}: cid {v:?} is not a number")
                    })?)
                }
                Some(("uds", v)) if uds.is_none() && !v.is_empty() => uds = Some(PathBuf::from(v)),
                _ => {
                    return Err(format!(
                        "--vsock {s:?}: unknown, repeated or empty part {part:?} (expected cid=N,uds=PATH)"
                    ))
                }
            }
        }
        let cid = cid.ok_or_else(|| format!("--vsock {s:?}: cid=N is missing"))?;
        if !(3..u64::from(u32::MAX)).contains(&cid) {
            return Err(format!("--vsock {s:?}: {}", Error::Cid(cid)));
        }
        let uds = uds.ok_or_else(|| format!("--vsock {s:?}: uds=PATH is missing"))?;
        match uds.file_name() {
            Some(n) if n.len() <= MAX_UDS_NAME_LEN => {}
            Some(_) => {
                return Err(format!(
                    "--vsock {s:?}: the uds file name is longer than {MAX_UDS_NAME_LEN} bytes"
                ))
            }
            None => return Err(format!("--vsock {s:?}: the uds path has no file name")),
        }
        Ok(VsockConfig { cid, uds })
    }
}

/// A hybrid-vsock device: guest CID `cid`, host side on the Unix socket `uds`.
pub struct VsockDevice {
    cid: u64,
    uds: PathBuf,
    muxer: Arc<Mutex<Muxer>>,
    acked_features: u64,
    active: Option<(EventLoopHandle, HandlerId)>,
    log: LogLimiter,
}

impl std::fmt::Debug for VsockDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VsockDevice")
            .field("cid", &self.cid)
            .field("active", &self.active.is_some())
            .finish()
    }
}

impl VsockDevice {
    /// Binds `uds` (which must not exist) and makes the device.
    pub fn new(cid: u64, uds: &Path) -> Result<Self, Error> {
        if !(3..u64::from(u32::MAX)).contains(&cid) {
            return Err(Error::Cid(cid));
        }
        Ok(VsockDevice {
            cid,
            uds: uds.to_path_buf(),
            muxer: Arc::new(Mutex::new(Muxer::new(cid, uds)?)),
            acked_features: 0,
            active: None,
            log: LogLimiter::new(),
        })
    }

    /// The guest's CID.
    pub fn cid(&self) -> u64 {
        self.cid
    }

    fn name(&self) -> String {
        format!("virtio-vsock cid {}", self.cid)
    }
}

impl VirtioDevice for VsockDevice {
    fn device_type(&self) -> u32 {
        TYPE_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        // Stream sockets only (no SEQPACKET); VERSION_1 comes from the transport. EVENT_IDX
        // lets the driver skip interrupts (and the device notifications) it does not need.
        1 << VIRTIO_RING_F_EVENT_IDX
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_vsock_config { le64 guest_cid; }
        read_config_bytes(&self.cid.to_le_bytes(), offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        if self.log.allow() {
            tracing::warn!(
                "{}: guest wrote {} bytes to the read-only config at {offset:#x}, ignored",
                self.name(),
                data.len()
            );
        }
    }

    fn activate(&mut self, args: ActivateArgs) -> Result<(), ActivateError> {
        let name = self.name();
        let invalid = |reason: String| ActivateError::Invalid {
            device: name.clone(),
            reason,
        };
        if args.queues.len() != QUEUE_SIZES.len() || args.queue_evts.len() != QUEUE_SIZES.len() {
            return Err(invalid(format!(
                "{} queues and {} queue eventfds, expected {}",
                args.queues.len(),
                args.queue_evts.len(),
                QUEUE_SIZES.len()
            )));
        }
        if self.active.is_some() {
            return Err(invalid("activated twice without a reset".into()));
        }
        let mut queues = args.queues;
        let txq = queues.swap_remove(TX_QUEUE);
        let rxq = queues.swap_remove(RX_QUEUE);
        let mut fds: Vec<_> = [RX_QUEUE, TX_QUEUE, EVENT_QUEUE]
            .iter()
            .map(|&i| (args.queue_evts[i].as_raw_fd(), EventSet::IN))
            .collect();
        let handler = VsockHandler::new(
            name.clone(),
            args.mem,
            rxq,
            txq,
            args.queue_evts,
            args.interrupt,
            self.muxer.clone(),
        );
        fds.push((handler.muxer_fd(), EventSet::IN));
        let id = args
            .event_loop
            .add_handler(Box::new(handler), &fds)
            .map_err(|source| ActivateError::EventLoop {
                device: name,
                source,
            })?;
        self.active = Some((args.event_loop, id));
        Ok(())
    }

    fn reset(&mut self) {
        if let Some((event_loop, id)) = self.active.take() {
            // Waits for a callback in progress; the handler (queues, memory) is dropped.
            event_loop.remove_handler(id);
        }
        self.muxer.lock().unwrap_or_else(|e| e.into_inner()).reset();
        self.acked_features = 0;
    }
}

impl Drop for VsockDevice {
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
        for (bad, says) in [
            ("cid=3", "uds=PATH is missing"),
            ("uds=/a", "cid=N is missing"),
            ("cid=x,uds=/a", "cid \"x\""),
            ("cid=2,uds=/a", "cid=2 is invalid"),
            ("cid=4294967295,uds=/a", "is invalid"),
            ("cid=3,uds=", "empty part"),
            ("cid=3,cid=4,uds=/a", "repeated"),
            ("cid=3,uds=/a,ro", "\"ro\""),
        ] {
            let e = bad.parse::<VsockConfig>().unwrap_err();
            assert!(e.contains(says) && e.contains("--vsock"), "{bad}: {e}");
        }
        let long = format!("cid=3,uds=/{}", "x".repeat(MAX_UDS_NAME_LEN + 1));
        assert!(long.parse::<VsockConfig>().unwrap_err().contains("longer"));
        assert!("cid=3,uds=/"
            .parse::<VsockConfig>()
            .unwrap_err()
            .contains("no file name"));
        // A deep directory is fine: only the name counts.
        let deep = format!("cid=3,uds=/{}/v.sock", "d/".repeat(100));
        assert!(deep.parse::<VsockConfig>().is_ok());
    }

    #[test]
    fn activation_checks_the_queue_count() {
        let path = uds("act");
        let mut dev = VsockDevice::new(3, &path).unwrap();
        let el = crate::event_loop::EventLoop::start().unwrap();
        let mem = GuestMemoryMmapForTests::new();
        let args = ActivateArgs {
            mem: mem.0,
            queues: Vec::new(),
            queue_evts: Vec::new(),
            interrupt: Arc::new(crate::devices::virtio::Interrupt::for_tests().unwrap()),
            event_loop: el.handle(),
        };
        assert!(dev.activate(args).is_err());
        dev.reset();
    }

    struct GuestMemoryMmapForTests(crate::devices::virtio::GuestMemoryMmap);
    impl GuestMemoryMmapForTests {
        fn new() -> Self {
            Self(
                crate::devices::virtio::GuestMemoryMmap::from_ranges(&[(
                    vm_memory::GuestAddress(0),
                    0x1_0000,
                )])
                .unwrap(),
            )
        }
    }
}
