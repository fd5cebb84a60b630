//! The host end of a virtio-net device: a file descriptor that carries one Ethernet frame
//! (with its 12-byte virtio-net header) per read and per write.
//!
//! In production that is a tap runv opened in the sandbox's network namespace with
//! `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` and handed to runv-vmm as an inherited fd
//! ([`Tap::from_inherited_fd`]): the VMM needs neither `/dev/net/tun` nor CAP_NET_ADMIN,
//! only the ioctls a tap's owner may always use (TUNGETIFF, TUNSETVNETHDRSZ,
//! TUNSETOFFLOAD). The queue handler only sees a [`FrameFd`], so tests put one end of a
//! `socketpair(AF_UNIX, SOCK_SEQPACKET)` in its place (one read = one frame there too).

use super::VNET_HDR_LEN;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

/// Why an inherited fd cannot be used as the device's tap.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// Nothing is open under that number.
    #[error("--net fd={fd}: the fd is not open in runv-vmm (was it inherited?): {source}")]
    NotOpen {
        /// The fd.
        fd: RawFd,
        /// Cause (EBADF).
        source: io::Error,
    },
    /// The fd is open but TUNGETIFF fails: not a tun/tap fd, or one not attached to an
    /// interface.
    #[error("--net fd={fd}: not a tap (TUNGETIFF failed: {source})")]
    NotATap {
        /// The fd.
        fd: RawFd,
        /// Cause (ENOTTY, EBADFD ...).
        source: io::Error,
    },
    /// A tun (layer 3), or a tap without IFF_NO_PI or IFF_VNET_HDR.
    #[error("--net fd={fd}: the tap {name} has flags {flags:#x}; runv-vmm needs IFF_TAP|IFF_NO_PI|IFF_VNET_HDR (0x5002)")]
    Flags {
        /// The fd.
        fd: RawFd,
        /// Interface name.
        name: String,
        /// What TUNGETIFF reported.
        flags: u16,
    },
    /// An ioctl or fcntl configuring the tap failed.
    #[error("--net fd={fd}: {what} on the tap {name}: {source}")]
    Setup {
        /// The fd.
        fd: RawFd,
        /// Interface name.
        name: String,
        /// The call.
        what: &'static str,
        /// Cause.
        source: io::Error,
    },
}

/// A non-blocking fd on which each read returns one frame and each write sends one.
#[derive(Debug)]
pub struct FrameFd {
    fd: OwnedFd,
}

impl FrameFd {
    /// Wraps `fd`, which must be non-blocking and frame-oriented (a tap, a SEQPACKET socket).
    pub fn new(fd: OwnedFd) -> Self {
        FrameFd { fd }
    }

    /// Reads one frame into `buf`; EINTR is retried. A frame larger than `buf` is cut
    /// short by the kernel, so callers pass a buffer one byte larger than the largest
    /// frame they accept and treat a full buffer as too large.
    pub fn read_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes; the kernel
            // writes at most that many.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Sends the frame gathered from `iov` with one `writev`; EINTR is retried.
    ///
    /// # Safety
    /// Each entry of `iov` must point to `iov_len` readable bytes that stay mapped for
    /// the duration of the call (guest RAM kept mapped by the caller's memory handle).
    pub unsafe fn write_frame(&self, iov: &[libc::iovec]) -> io::Result<usize> {
        let count = libc::c_int::try_from(iov.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        loop {
            // SAFETY: the caller guarantees every iovec is readable memory for this call;
            // the kernel only reads from it.
            let n = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), count) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl AsRawFd for FrameFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// What the device needs from its host end: the frame fd for the queue handler, and the
/// offloads the guest accepted (TUNSETOFFLOAD on a tap; nothing for a test socket).
pub trait NetBackend: Send {
    /// The fd frames move through, shared with the queue handler.
    fn frames(&self) -> Arc<FrameFd>;
    /// Tells the host end which offloads the guest's receive path accepts
    /// (`TUN_F_CSUM`, `TUN_F_TSO4`, `TUN_F_TSO6`).
    fn set_offload(&self, tun_flags: libc::c_uint) -> io::Result<()>;
}

/// A tap fd runv opened for this VMM, checked and configured.
#[derive(Debug)]
pub struct Tap {
    frames: Arc<FrameFd>,
    name: String,
}

/// fcntl(F_GETFL): whether `fd` is open, and its status flags.
fn status_flags(fd: RawFd) -> io::Result<libc::c_int> {
    // SAFETY: F_GETFL takes no argument and touches no memory; a closed fd gives EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(flags)
    }
}

/// TUNGETIFF: the interface name and flags behind a tun/tap fd.
fn tun_get_iff(fd: RawFd) -> io::Result<(String, u16)> {
    // SAFETY: ifreq is plain data (a name array and a union of integers); all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // SAFETY: TUNGETIFF writes one struct ifreq to the pointer, which is `req`; on a
    // fd that is not a tun/tap the ioctl fails without writing.
    let r = unsafe { libc::ioctl(fd, libc::TUNGETIFF as _, &mut req) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: TUNGETIFF filled `ifru_flags`; every member of the union is an integer
    // type, so reading this one is defined whatever was written.
    let flags = unsafe { req.ifr_ifru.ifru_flags } as u16;
    let name: Vec<u8> = req
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Ok((String::from_utf8_lossy(&name).into_owned(), flags))
}

fn ioctl_int_ptr(fd: RawFd, request: libc::Ioctl, value: libc::c_int) -> io::Result<()> {
    // SAFETY: the request (TUNSETVNETHDRSZ) reads one int from the pointer, which points
    // to `value` on this stack frame.
    let r = unsafe { libc::ioctl(fd, request, &value as *const libc::c_int) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn set_offload(fd: RawFd, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its flags by value (an unsigned long), no memory.
    let r = unsafe { libc::ioctl(fd, libc::TUNSETOFFLOAD as _, libc::c_ulong::from(flags)) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The tap flags runv-vmm needs.
const NEEDED_FLAGS: u16 = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as u16;
/// IFF_TUN: a layer-3 device, which reads IP packets, not Ethernet frames.
const IFF_TUN: u16 = libc::IFF_TUN as u16;

impl Tap {
    /// Takes over `fd`, a tap inherited from runv: checks that it is open and a tap with
    /// `IFF_NO_PI | IFF_VNET_HDR`, sets the header size to 12 bytes (virtio 1.x's
    /// `virtio_net_hdr_v1`), no offloads until the guest negotiates some, and O_NONBLOCK.
    /// On error the fd is left open and untouched (it may not be ours to close).
    pub fn from_inherited_fd(fd: RawFd) -> Result<Tap, TapError> {
        let flags = status_flags(fd).map_err(|source| TapError::NotOpen { fd, source })?;
        let (name, iff) = tun_get_iff(fd).map_err(|source| TapError::NotATap { fd, source })?;
        if iff & NEEDED_FLAGS != NEEDED_FLAGS || iff & IFF_TUN != 0 {
            return Err(TapError::Flags {
                fd,
                name,
                flags: iff,
            });
        }
        let setup = |what, source| TapError::Setup {
            fd,
            name: name.clone(),
            what,
            source,
        };
        ioctl_int_ptr(fd, libc::TUNSETVNETHDRSZ, VNET_HDR_LEN as libc::c_int)
            .map_err(|e| setup("TUNSETVNETHDRSZ 12", e))?;
        set_offload(fd, 0).map_err(|e| setup("TUNSETOFFLOAD 0", e))?;
        // SAFETY: F_SETFL with an int argument touches no memory.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(setup("fcntl O_NONBLOCK", io::Error::last_os_error()));
        }
        // SAFETY: `fd` is open (F_GETFL succeeded) and is a tap runv handed to this process
        // for this device alone (the configuration refuses a fd given twice); nothing else
        // in the VMM uses or closes it, so the OwnedFd is its only owner from here on.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Tap {
            frames: Arc::new(FrameFd::new(owned)),
            name,
        })
    }

    /// The host interface name (for logs).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl NetBackend for Tap {
    fn frames(&self) -> Arc<FrameFd> {
        self.frames.clone()
    }

    fn set_offload(&self, tun_flags: libc::c_uint) -> io::Result<()> {
        set_offload(self.frames.as_raw_fd(), tun_flags)
    }
}
