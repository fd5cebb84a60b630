//! The virtio-blk device: features, configuration space, activation. A [`Block`] is a
//! [`Device`] whose own part is the [`Disk`] it serves; its handler gets a copy of it.

use super::handler::{BlockHandler, Disk, ID_BYTES, MAX_DISCARD_SEG, SECTOR_SIZE};
use super::{BlockConfig, Error};
use crate::devices::virtio::common::{Device, DeviceCommon, DeviceKind};
use crate::devices::virtio::{
    ActivateArgs, ActivateError, QueueT, TYPE_BLOCK, VIRTIO_RING_F_EVENT_IDX,
    VIRTIO_RING_F_INDIRECT_DESC,
};
use crate::event_loop::EventSet;
use crate::ratelimit::LogLimiter;
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

/// Feature: `seg_max` in the config is valid. Without it Linux sends one data segment
/// per request (4 KiB for O_DIRECT I/O on scattered pages): a third of the throughput.
pub const VIRTIO_BLK_F_SEG_MAX: u32 = 2;
/// Feature: the device is read-only.
pub const VIRTIO_BLK_F_RO: u32 = 5;
/// Feature: the device supports FLUSH.
pub const VIRTIO_BLK_F_FLUSH: u32 = 9;
/// Feature: the device supports DISCARD (offered for writable images).
pub const VIRTIO_BLK_F_DISCARD: u32 = 13;
/// Size of the configuration space the device fills (through `discard_sector_alignment`).
const CONFIG_LEN: usize = 48;
/// Config offsets (virtio 1.2, 5.2.4).
const CFG_SEG_MAX: usize = 12;
const CFG_MAX_DISCARD_SECTORS: usize = 36;
const CFG_MAX_DISCARD_SEG: usize = 40;
const CFG_DISCARD_SECTOR_ALIGNMENT: usize = 44;
/// Discard granularity: 4 KiB, the host page and usual file-system block.
const DISCARD_ALIGNMENT_SECTORS: u32 = 8;
/// One request queue.
const QUEUE_SIZES: [u16; 1] = [256];

/// A raw disk image as a virtio block device.
pub type Block = Device<Disk>;

impl Block {
    /// Opens the image of `cfg` (read-only if `cfg.read_only`).
    pub fn new(cfg: &BlockConfig) -> Result<Self, Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(!cfg.read_only)
            .open(&cfg.path)
            .map_err(|source| Error::Open {
                path: cfg.path.clone(),
                source,
            })?;
        let len = file
            .metadata()
            .map_err(|source| Error::Open {
                path: cfg.path.clone(),
                source,
            })?
            .len();
        let capacity = len / SECTOR_SIZE;
        let id_str = cfg.id();
        let mut id = [0u8; ID_BYTES];
        let n = id_str.len().min(ID_BYTES);
        id[..n].copy_from_slice(&id_str.as_bytes()[..n]);
        let mut config = [0u8; CONFIG_LEN];
        config[..8].copy_from_slice(&capacity.to_le_bytes());
        let put = |config: &mut [u8; CONFIG_LEN], at: usize, v: u32| {
            config[at..at + 4].copy_from_slice(&v.to_le_bytes());
        };
        let max_discard =
            u32::try_from(capacity).unwrap_or(u32::MAX) & !(DISCARD_ALIGNMENT_SECTORS - 1);
        // Header and status take a descriptor each (as QEMU counts).
        put(&mut config, CFG_SEG_MAX, u32::from(QUEUE_SIZES[0]) - 2);
        put(&mut config, CFG_MAX_DISCARD_SECTORS, max_discard);
        put(&mut config, CFG_MAX_DISCARD_SEG, MAX_DISCARD_SEG);
        put(
            &mut config,
            CFG_DISCARD_SECTOR_ALIGNMENT,
            DISCARD_ALIGNMENT_SECTORS,
        );
        let disk = Disk {
            file,
            read_only: cfg.read_only,
            capacity,
            id,
        };
        Ok(Device::from_parts(
            format!("virtio-blk {id_str}"),
            &config,
            disk,
        ))
    }

    /// Disk size in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.kind.capacity
    }
}

impl DeviceKind for Disk {
    const DEVICE_TYPE: u32 = TYPE_BLOCK;
    const QUEUE_MAX_SIZES: &'static [u16] = &QUEUE_SIZES;

    fn features(&self) -> u64 {
        let access = if self.read_only {
            1 << VIRTIO_BLK_F_RO
        } else {
            1 << VIRTIO_BLK_F_DISCARD
        };
        // Indirect descriptors: a request of many segments takes one ring slot.
        access
            | (1 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << VIRTIO_BLK_F_FLUSH)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
    }

    fn activate(
        &mut self,
        common: &mut DeviceCommon,
        args: ActivateArgs,
    ) -> Result<(), ActivateError> {
        let queue = args
            .queues
            .into_iter()
            .next()
            .filter(|q| q.ready())
            .ok_or_else(|| common.invalid("the request queue is not ready"))?;
        let queue_evt = args
            .queue_evts
            .into_iter()
            .next()
            .ok_or_else(|| common.invalid("no queue eventfd"))?;
        let disk = self
            .try_clone()
            .map_err(|source| common.io_error("duplicating the image fd", source))?;
        let fd = queue_evt.as_raw_fd();
        let handler = BlockHandler {
            name: common.name().to_string(),
            mem: args.mem,
            queue,
            queue_evt,
            interrupt: args.interrupt,
            disk,
            limiter: LogLimiter::new(),
        };
        common.register(args.event_loop, Box::new(handler), &[(fd, EventSet::IN)])
    }
}
