//! virtio-blk request processing (virtio 1.2, 5.2.6), transport-agnostic.
//!
//! A request is a descriptor chain: a 16-byte device-readable header (type, reserved,
//! sector), data descriptors (device-writable for IN and GET_ID, device-readable for OUT),
//! and a final device-writable status byte. Every part is checked: directions, lengths
//! (data a multiple of 512 bytes, within the disk), addresses (inside guest memory), chain
//! termination (a descriptor loop ends the chain without a terminating descriptor). A bad
//! request gets VIRTIO_BLK_S_IOERR (or UNSUPP for an unknown type); a chain without a
//! usable status byte is returned to the driver with nothing written (used length 0).

use crate::devices::virtio::common::{next_chain, signal_used_queue};
use crate::devices::virtio::{Interrupt, Queue, QueueT};
use crate::event_loop::{Event, EventHandler, EventOps, HandlerError};
use crate::ratelimit::LogLimiter;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestMemory, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

/// Sector size of the virtio-blk protocol.
pub const SECTOR_SIZE: u64 = 512;
/// Length of the GET_ID answer (VIRTIO_BLK_ID_BYTES).
pub const ID_BYTES: usize = 20;

/// Request types.
pub const VIRTIO_BLK_T_IN: u32 = 0;
/// Write.
pub const VIRTIO_BLK_T_OUT: u32 = 1;
/// Flush.
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
/// Device ID string.
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;
/// Discard (punch a hole in the image).
pub const VIRTIO_BLK_T_DISCARD: u32 = 11;
/// Most discard segments per request (config `max_discard_seg`).
pub const MAX_DISCARD_SEG: u32 = 16;
/// Discard segment: sector u64, num_sectors u32, flags u32.
const DISCARD_SEGMENT_LEN: u64 = 16;

/// Status: success.
pub const VIRTIO_BLK_S_OK: u8 = 0;
/// Status: I/O error (also: malformed request, read-only device, out of range).
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
/// Status: unsupported request type.
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;

/// Request header size (type, reserved, sector).
const HEADER_LEN: u32 = 16;

/// Why one request failed; logged rate-limited, answered with a status byte.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The chain's shape is wrong (missing header or status, wrong direction, a loop).
    #[error("malformed descriptor chain: {0}")]
    Malformed(&'static str),
    /// A descriptor points outside guest memory.
    #[error("descriptor at {addr:#x} (+{len}) is outside guest memory")]
    BadAddress {
        /// Guest address.
        addr: u64,
        /// Length.
        len: u32,
    },
    /// Data length not a multiple of the sector size.
    #[error("data length {0} is not a multiple of 512")]
    BadLength(u64),
    /// The request reaches past the end of the disk.
    #[error("sectors {sector}+{len} bytes past the disk's {capacity} sectors")]
    OutOfRange {
        /// First sector.
        sector: u64,
        /// Data bytes.
        len: u64,
        /// Disk size in sectors.
        capacity: u64,
    },
    /// A write to a read-only disk.
    #[error("write to a read-only disk")]
    ReadOnly,
    /// Unknown request type.
    #[error("unsupported request type {0}")]
    Unsupported(u32),
    /// The image file failed.
    #[error("image I/O at byte {offset}: {source}")]
    Io {
        /// Offset in the image.
        offset: u64,
        /// Cause.
        source: std::io::Error,
    },
}

impl RequestError {
    fn status(&self) -> u8 {
        match self {
            RequestError::Unsupported(_) => VIRTIO_BLK_S_UNSUPP,
            _ => VIRTIO_BLK_S_IOERR,
        }
    }
}

/// The backing image.
pub struct Disk {
    /// Raw image, opened read-write unless `read_only`.
    pub file: File,
    /// Refuse writes.
    pub read_only: bool,
    /// Size in 512-byte sectors.
    pub capacity: u64,
    /// GET_ID answer, NUL-padded.
    pub id: [u8; ID_BYTES],
}

impl Disk {
    /// Another handle on the same image (a duplicated fd), for a handler.
    pub fn try_clone(&self) -> std::io::Result<Disk> {
        Ok(Disk {
            file: self.file.try_clone()?,
            read_only: self.read_only,
            capacity: self.capacity,
            id: self.id,
        })
    }
}

fn check(mem: &GuestMemoryMmap, d: &Descriptor) -> Result<(), RequestError> {
    if mem.check_range(d.addr(), d.len() as usize) {
        Ok(())
    } else {
        Err(RequestError::BadAddress {
            addr: d.addr().raw_value(),
            len: d.len(),
        })
    }
}

/// pread (`to_guest`) or pwrite of the whole of `len` bytes at `ptr`, at `offset`.
///
/// # Safety
/// `ptr..ptr + len` must be mapped, writable when `to_guest`, for the whole call.
unsafe fn pio_all(
    file: &File,
    ptr: *mut u8,
    len: usize,
    offset: u64,
    to_guest: bool,
) -> std::io::Result<()> {
    let mut done = 0usize;
    while done < len {
        let pos = libc::off_t::try_from(offset + done as u64)
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EOVERFLOW))?;
        // SAFETY: the caller guarantees ptr..ptr+len is mapped (and writable for reads);
        // the kernel touches at most len - done bytes from ptr + done.
        let n = unsafe {
            let at = ptr.add(done).cast();
            if to_guest {
                libc::pread(file.as_raw_fd(), at, len - done, pos)
            } else {
                libc::pwrite(file.as_raw_fd(), at, len - done, pos)
            }
        };
        match n {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n if n < 0 => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            n => done += n as usize,
        }
    }
    Ok(())
}

/// Moves data between the image at `offset` and the guest buffers, straight from and into
/// guest memory (no bounce buffer): one pread/pwrite per descriptor.
fn transfer(
    mem: &GuestMemoryMmap,
    disk: &Disk,
    data: &[Descriptor],
    mut offset: u64,
    to_guest: bool,
) -> Result<u32, RequestError> {
    let mut written = 0u32;
    for d in data {
        let slice =
            mem.get_slice(d.addr(), d.len() as usize)
                .map_err(|_| RequestError::BadAddress {
                    addr: d.addr().raw_value(),
                    len: d.len(),
                })?;
        let guard = slice.ptr_guard_mut();
        // SAFETY: the slice is guest RAM that `mem` (a clone held by the handler for as long
        // as it runs) keeps mapped read-write; `guard` covers exactly `slice.len()` bytes.
        unsafe { pio_all(&disk.file, guard.as_ptr(), slice.len(), offset, to_guest) }
            .map_err(|source| RequestError::Io { offset, source })?;
        offset += u64::from(d.len());
        if to_guest {
            written += d.len();
        }
    }
    Ok(written)
}

/// Executes one request whose chain is `descs` (status descriptor excluded); returns the
/// bytes written into guest buffers (excluding the status byte).
fn execute(mem: &GuestMemoryMmap, disk: &Disk, descs: &[Descriptor]) -> Result<u32, RequestError> {
    let (header, data) = descs
        .split_first()
        .ok_or(RequestError::Malformed("no header"))?;
    if header.is_write_only() || header.len() < HEADER_LEN {
        return Err(RequestError::Malformed(
            "header not device-readable or short",
        ));
    }
    let req_type: u32 = mem
        .read_obj(header.addr())
        .map_err(|_| RequestError::BadAddress {
            addr: header.addr().raw_value(),
            len: header.len(),
        })?;
    let sector: u64 = header
        .addr()
        .checked_add(8)
        .and_then(|a| mem.read_obj(a).ok())
        .ok_or(RequestError::BadAddress {
            addr: header.addr().raw_value(),
            len: header.len(),
        })?;
    for d in data {
        check(mem, d)?;
    }
    let total: u64 = data.iter().map(|d| u64::from(d.len())).sum();
    let want_write_only = match req_type {
        VIRTIO_BLK_T_IN | VIRTIO_BLK_T_GET_ID => true,
        VIRTIO_BLK_T_OUT => false,
        VIRTIO_BLK_T_FLUSH => return disk_flush(disk, data),
        VIRTIO_BLK_T_DISCARD => return discard(mem, disk, data),
        other => return Err(RequestError::Unsupported(other)),
    };
    if data.iter().any(|d| d.is_write_only() != want_write_only) {
        return Err(RequestError::Malformed(
            "data descriptor of the wrong direction",
        ));
    }
    if req_type == VIRTIO_BLK_T_GET_ID {
        let d = data
            .first()
            .ok_or(RequestError::Malformed("GET_ID without a buffer"))?;
        let n = (d.len() as usize).min(ID_BYTES);
        mem.write_slice(&disk.id[..n], d.addr())
            .map_err(|_| RequestError::BadAddress {
                addr: d.addr().raw_value(),
                len: d.len(),
            })?;
        return Ok(n as u32);
    }
    if total == 0 || total % SECTOR_SIZE != 0 {
        return Err(RequestError::BadLength(total));
    }
    let end = sector
        .checked_mul(SECTOR_SIZE)
        .and_then(|start| start.checked_add(total));
    if !end.is_some_and(|end| end <= disk.capacity * SECTOR_SIZE) {
        return Err(RequestError::OutOfRange {
            sector,
            len: total,
            capacity: disk.capacity,
        });
    }
    let offset = sector * SECTOR_SIZE;
    if req_type == VIRTIO_BLK_T_OUT {
        if disk.read_only {
            return Err(RequestError::ReadOnly);
        }
        transfer(mem, disk, data, offset, false)
    } else {
        transfer(mem, disk, data, offset, true)
    }
}

/// DISCARD: each segment's range becomes a hole in the image (reads as zeros, frees the
/// host blocks); the file size stays.
fn discard(mem: &GuestMemoryMmap, disk: &Disk, data: &[Descriptor]) -> Result<u32, RequestError> {
    if disk.read_only {
        return Err(RequestError::ReadOnly);
    }
    if data.iter().any(|d| d.is_write_only()) {
        return Err(RequestError::Malformed(
            "discard segments not device-readable",
        ));
    }
    let mut segments = 0u32;
    for d in data {
        let len = u64::from(d.len());
        if len == 0 || len % DISCARD_SEGMENT_LEN != 0 {
            return Err(RequestError::Malformed("discard segment of the wrong size"));
        }
        for k in 0..len / DISCARD_SEGMENT_LEN {
            segments += 1;
            if segments > MAX_DISCARD_SEG {
                return Err(RequestError::Malformed(
                    "more discard segments than offered",
                ));
            }
            let at = d.addr().unchecked_add(k * DISCARD_SEGMENT_LEN);
            let bad = |_| RequestError::BadAddress {
                addr: at.raw_value(),
                len: DISCARD_SEGMENT_LEN as u32,
            };
            let sector: u64 = mem.read_obj(at).map_err(bad)?;
            let num: u32 = mem.read_obj(at.unchecked_add(8)).map_err(bad)?;
            let flags: u32 = mem.read_obj(at.unchecked_add(12)).map_err(bad)?;
            if flags & !1 != 0 {
                return Err(RequestError::Malformed(
                    "discard segment with reserved flags",
                ));
            }
            let len = u64::from(num) * SECTOR_SIZE;
            let end = sector
                .checked_mul(SECTOR_SIZE)
                .and_then(|start| start.checked_add(len));
            if !end.is_some_and(|end| end <= disk.capacity * SECTOR_SIZE) {
                return Err(RequestError::OutOfRange {
                    sector,
                    len,
                    capacity: disk.capacity,
                });
            }
            punch_hole(&disk.file, sector * SECTOR_SIZE, len)?;
        }
    }
    Ok(0)
}

fn punch_hole(file: &File, offset: u64, len: u64) -> Result<(), RequestError> {
    let err = |source| RequestError::Io { offset, source };
    let (Ok(off), Ok(n)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(err(std::io::Error::from_raw_os_error(libc::EOVERFLOW)));
    };
    if n == 0 {
        return Ok(());
    }
    // SAFETY: fallocate on an fd this handler owns; no memory is passed.
    let ret = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            n,
        )
    };
    if ret != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(())
}

fn disk_flush(disk: &Disk, data: &[Descriptor]) -> Result<u32, RequestError> {
    if !data.is_empty() {
        return Err(RequestError::Malformed("FLUSH with data descriptors"));
    }
    if !disk.read_only {
        disk.file
            .sync_data()
            .map_err(|source| RequestError::Io { offset: 0, source })?;
    }
    Ok(0)
}

/// Handles one chain: returns the used length to report, after writing the status byte
/// (or `None` written when the chain has no usable status descriptor).
pub fn process_chain<I>(
    mem: &GuestMemoryMmap,
    disk: &Disk,
    chain: I,
    limiter: &mut LogLimiter,
    name: &str,
) -> u32
where
    I: Iterator<Item = Descriptor>,
{
    let mut descs: Vec<Descriptor> = chain.collect();
    // The iterator stops at a loop (after queue-size descriptors) or at an unreadable
    // descriptor; a chain whose last descriptor still points on was cut short.
    let terminated = descs.last().is_some_and(|d| !d.has_next());
    let status = match descs.pop() {
        Some(s) if terminated && s.is_write_only() && s.len() >= 1 && check(mem, &s).is_ok() => s,
        _ => {
            if limiter.allow() {
                tracing::warn!("{name}: request dropped: no valid status descriptor (loop, wrong direction or bad address)");
            }
            return 0;
        }
    };
    let (code, len) = match execute(mem, disk, &descs) {
        Ok(len) => (VIRTIO_BLK_S_OK, len),
        Err(e) => {
            if limiter.allow() {
                tracing::warn!("{name}: request failed: {e}");
            }
            (e.status(), 0)
        }
    };
    if mem.write_obj(code, status.addr()).is_err() {
        return 0;
    }
    len.saturating_add(1)
}

/// The virtio-blk queue handler, run on the event-loop thread.
pub struct BlockHandler {
    /// For logs.
    pub name: String,
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    /// The request queue.
    pub queue: Queue,
    /// Becomes readable when the driver notifies the queue.
    pub queue_evt: EventFd,
    /// The device's interrupt.
    pub interrupt: Arc<Interrupt>,
    /// The image.
    pub disk: Disk,
    /// Rate limit for guest-caused log lines.
    pub limiter: LogLimiter,
}

/// A queue-level failure: the rings themselves are unusable; the device is broken.
#[derive(Debug, thiserror::Error)]
#[error("{name}: request queue: {source:?}")]
pub struct QueueError {
    name: String,
    source: virtio_queue::Error,
}

impl BlockHandler {
    /// Serves every available request; raises the interrupt if the driver wants one.
    pub fn process_queue(&mut self) -> Result<(), QueueError> {
        let qerr = |name: &str| {
            let name = name.to_string();
            move |source| QueueError { name, source }
        };
        loop {
            self.queue
                .disable_notification(&self.mem)
                .map_err(qerr(&self.name))?;
            while let Some(chain) =
                next_chain(&mut self.queue, &self.mem).map_err(qerr(&self.name))?
            {
                let head = chain.head_index();
                let len =
                    process_chain(&self.mem, &self.disk, chain, &mut self.limiter, &self.name);
                self.queue
                    .add_used(&self.mem, head, len)
                    .map_err(qerr(&self.name))?;
            }
            if !self
                .queue
                .enable_notification(&self.mem)
                .map_err(qerr(&self.name))?
            {
                break;
            }
        }
        if self
            .queue
            .needs_notification(&self.mem)
            .map_err(qerr(&self.name))?
        {
            signal_used_queue(&self.interrupt, &mut self.limiter, &self.name);
        }
        Ok(())
    }
}

impl EventHandler for BlockHandler {
    fn name(&self) -> &str {
        &self.name
    }

    fn handle_event(&mut self, _event: Event, _ops: &mut EventOps<'_>) -> Result<(), HandlerError> {
        // EAGAIN: a spurious wake-up; process anyway, it is cheap.
        let _ = self.queue_evt.read();
        self.process_queue()?;
        Ok(())
    }

    fn broken(&mut self) {
        self.interrupt.set_needs_reset();
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
