//! The virtio-fs device (virtio 1.2, 5.11): its configuration space and activation.
//!
//! Config space: `tag` (36 bytes, NUL-padded) and `num_request_queues` (le32) = 1.
//! Queues: 0 is the hiprio queue (FORGET, INTERRUPT), 1 the single request queue; both
//! are served by the same [`QueueWorker`] on the event-loop thread. No notification queue
//! and no DAX window are offered.

use std::sync::Arc;

use fuse_backend_rs::api::server::Server;

use super::handler::{QueueWorker, RequestHandler};
use super::{Error, FsConfig, ShareFs, TAG_MAX};
use crate::devices::virtio::common::{Device, DeviceCommon, DeviceKind};
use crate::devices::virtio::{ActivateArgs, ActivateError, TYPE_FS, VIRTIO_RING_F_INDIRECT_DESC};

/// Size of each queue (as virtiofsd offers).
pub const QUEUE_SIZE: u16 = 1024;
/// hiprio + one request queue.
const NUM_QUEUES: usize = 2;
/// `num_request_queues` in the config space.
const NUM_REQUEST_QUEUES: u32 = 1;
/// Bytes of the config space.
const CONFIG_LEN: usize = TAG_MAX + 4;

/// One virtio-fs share.
pub type Fs = Device<FsKind>;

/// What is virtio-fs's own in an [`Fs`].
pub struct FsKind {
    tag: String,
    read_only: bool,
    server: Arc<Server<ShareFs>>,
}

impl Fs {
    /// A device serving `cfg`'s directory; fails if it is not a usable directory.
    pub fn new(cfg: &FsConfig) -> Result<Self, Error> {
        let server = Arc::new(cfg.server()?);
        let mut config = [0u8; CONFIG_LEN];
        config[..TAG_MAX].copy_from_slice(&cfg.tag_bytes());
        config[TAG_MAX..].copy_from_slice(&NUM_REQUEST_QUEUES.to_le_bytes());
        let kind = FsKind {
            tag: cfg.tag.clone(),
            read_only: cfg.read_only,
            server,
        };
        Ok(Device::from_parts(
            format!("virtio-fs {}", cfg.tag),
            &config,
            kind,
        ))
    }

    /// The share's tag.
    pub fn tag(&self) -> &str {
        &self.kind.tag
    }

    /// Whether the share refuses writes.
    pub fn read_only(&self) -> bool {
        self.kind.read_only
    }
}

impl DeviceKind for FsKind {
    const DEVICE_TYPE: u32 = TYPE_FS;
    const QUEUE_MAX_SIZES: &'static [u16] = &[QUEUE_SIZE; NUM_QUEUES];

    fn features(&self) -> u64 {
        1 << VIRTIO_RING_F_INDIRECT_DESC
    }

    fn activate(
        &mut self,
        common: &mut DeviceCommon,
        args: ActivateArgs,
    ) -> Result<(), ActivateError> {
        common.check_queue_count(&args, NUM_QUEUES)?;
        // A second activation without a reset replaces the first.
        common.remove_handler();
        let requests = RequestHandler::new(self.server.clone(), self.tag.clone());
        let worker = QueueWorker::new(
            requests,
            args.mem,
            args.queues,
            args.queue_evts,
            args.interrupt,
        );
        let fds = worker.fds();
        common.register(args.event_loop, Box::new(worker), &fds)
    }
}
