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
use crate::devices::virtio::{
    read_config_bytes, ActivateArgs, ActivateError, VirtioDevice, TYPE_FS,
    VIRTIO_RING_F_INDIRECT_DESC,
};
use crate::event_loop::{EventLoopHandle, HandlerId};
use crate::ratelimit::LogLimiter;

/// Size of each queue (as virtiofsd offers).
pub const QUEUE_SIZE: u16 = 1024;
/// hiprio + one request queue.
const NUM_QUEUES: usize = 2;
/// `num_request_queues` in the config space.
const NUM_REQUEST_QUEUES: u32 = 1;
/// Bytes of the config space.
const CONFIG_LEN: usize = TAG_MAX + 4;

/// One virtio-fs share.
pub struct Fs {
    tag: String,
    read_only: bool,
    config: [u8; CONFIG_LEN],
    server: Arc<Server<ShareFs>>,
    acked_features: u64,
    active: Option<(EventLoopHandle, HandlerId)>,
    log: LogLimiter,
}

impl Fs {
    /// A device serving `cfg`'s directory; fails if it is not a usable directory.
    pub fn new(cfg: &FsConfig) -> Result<Self, Error> {
        let server = Arc::new(cfg.server()?);
        let mut config = [0u8; CONFIG_LEN];
        config[..TAG_MAX].copy_from_slice(&cfg.tag_bytes());
        config[TAG_MAX..].copy_from_slice(&NUM_REQUEST_QUEUES.to_le_bytes());
        Ok(Fs {
            tag: cfg.tag.clone(),
            read_only: cfg.read_only,
            config,
            server,
            acked_features: 0,
            active: None,
            log: LogLimiter::new(),
        })
    }

    /// The share's tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Whether the share refuses writes.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Whether a handler is registered with the event loop.
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    fn name(&self) -> String {
        format!("virtio-fs {}", self.tag)
    }
}

impl VirtioDevice for Fs {
    fn device_type(&self) -> u32 {
        TYPE_FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; NUM_QUEUES]
    }

    fn features(&self) -> u64 {
        1 << VIRTIO_RING_F_INDIRECT_DESC
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        if self.log.allow() {
            tracing::warn!(
                "{}: ignored write of {} bytes at config offset {offset}: the config is read-only",
                self.name(),
                data.len()
            );
        }
    }

    fn activate(&mut self, args: ActivateArgs) -> Result<(), ActivateError> {
        if args.queues.len() != NUM_QUEUES || args.queue_evts.len() != NUM_QUEUES {
            return Err(ActivateError::Invalid {
                device: self.name(),
                reason: format!(
                    "{} queues and {} eventfds given, {NUM_QUEUES} expected",
                    args.queues.len(),
                    args.queue_evts.len()
                ),
            });
        }
        // A second activation without a reset replaces the first.
        self.reset_handler();
        let requests = RequestHandler::new(self.server.clone(), self.tag.clone());
        let worker = QueueWorker::new(
            requests,
            args.mem,
            args.queues,
            args.queue_evts,
            args.interrupt,
        );
        let fds = worker.fds();
        let id = args
            .event_loop
            .add_handler(Box::new(worker), &fds)
            .map_err(|source| ActivateError::EventLoop {
                device: self.name(),
                source,
            })?;
        self.active = Some((args.event_loop, id));
        Ok(())
    }

    fn reset(&mut self) {
        self.reset_handler();
        self.acked_features = 0;
    }
}

impl Fs {
    fn reset_handler(&mut self) {
        if let Some((event_loop, id)) = self.active.take() {
            // Waits for a callback in progress: the queues are no longer used after this.
            event_loop.remove_handler(id);
        }
    }
}
