//! Queue processing of virtio-fs, independent of the transport.
//!
//! Both queues (hiprio and request) carry FUSE messages: the device-readable part of a
//! chain is the request (`fuse_in_header` + body), the device-writable part receives the
//! reply. Each chain becomes a `Reader`/`Writer` pair over guest memory and goes to
//! `fuse_backend_rs`'s `Server`, which decodes it, calls the file system and writes the
//! reply. A chain that cannot be served (addresses outside guest memory, no readable
//! header, nowhere to write a reply the request needs) is returned to the driver with a used
//! length of 0 and one rate-limited log line; the queue and the VMM go on.

use std::mem::size_of;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use fuse_backend_rs::abi::fuse_abi::{InHeader, OutHeader};
use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::transport::{self, Reader, VirtioFsWriter, Writer};
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{GuestMemory, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::ShareFs;
use crate::devices::virtio::common::{next_chain, queue_fds, signal_used_queue};
use crate::devices::virtio::Interrupt;
use crate::event_loop::{Event, EventHandler, EventOps, EventSet, HandlerError};
use crate::ratelimit::LogLimiter;

/// Why one request failed (the chain is returned with a used length of 0).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The device-readable descriptors do not lie in guest memory.
    #[error("request descriptors of chain {head}: {source}")]
    Reader {
        /// Head index of the chain.
        head: u16,
        /// Cause.
        source: transport::Error,
    },
    /// The device-writable descriptors do not lie in guest memory.
    #[error("reply descriptors of chain {head}: {source}")]
    Writer {
        /// Head index of the chain.
        head: u16,
        /// Cause.
        source: transport::Error,
    },
    /// The FUSE message could not be decoded or its reply not written.
    #[error("FUSE message in chain {head}: {source}")]
    Fuse {
        /// Head index of the chain.
        head: u16,
        /// Cause.
        source: fuse_backend_rs::Error,
    },
}

/// A queue that cannot be processed at all: the device must be reset by the driver.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The available ring is unusable (e.g. an index that runs ahead by more than the size).
    #[error("virtio-fs {tag}: available ring: {source}")]
    Avail {
        /// The share's tag.
        tag: String,
        /// Cause.
        source: virtio_queue::Error,
    },
    /// The used ring could not be written.
    #[error("virtio-fs {tag}: used ring entry for chain {head}: {source}")]
    Used {
        /// The share's tag.
        tag: String,
        /// Head index of the chain.
        head: u16,
        /// Cause.
        source: virtio_queue::Error,
    },
}

/// Most chains served per call of [`RequestHandler::process_queue`].
pub const BUDGET: usize = 256;

/// What one call of [`RequestHandler::process_queue`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Used buffers were added and the driver wants an interrupt for them.
    pub notify: bool,
    /// The budget ran out with chains still available: call again.
    pub more: bool,
}

/// Serves the FUSE requests of one share's queues.
pub struct RequestHandler {
    server: Arc<Server<ShareFs>>,
    tag: String,
    log: LogLimiter,
}

impl RequestHandler {
    /// A handler for the share `tag`, answering with `server`.
    pub fn new(server: Arc<Server<ShareFs>>, tag: String) -> Self {
        RequestHandler {
            server,
            tag,
            log: LogLimiter::new(),
        }
    }

    /// Serves the chains available on `queue`, at most [`BUDGET`] of them, so a guest that
    /// keeps its queue full cannot starve the other devices on the event loop.
    pub fn process_queue<M: GuestMemory>(
        &mut self,
        queue: &mut Queue,
        mem: &M,
    ) -> Result<Progress, QueueError> {
        let mut progress = Progress::default();
        if !queue.ready() {
            return Ok(progress);
        }
        let mut served = 0;
        loop {
            if served == BUDGET {
                // More only if the driver has published chains we have not taken.
                progress.more = queue
                    .avail_idx(mem, Ordering::Acquire)
                    .map_or(true, |idx| idx.0 != queue.next_avail());
                break;
            }
            // One chain at a time: the iterator borrows the queue, `add_used` needs it.
            let chain = next_chain(queue, mem).map_err(|source| QueueError::Avail {
                tag: self.tag.clone(),
                source,
            })?;
            let Some(chain) = chain else { break };
            let head = chain.head_index();
            let len = match self.serve(mem, chain) {
                Ok(len) => len,
                Err(e) => {
                    if self.log.allow() {
                        tracing::warn!("virtio-fs {}: request failed: {e}", self.tag);
                    }
                    0
                }
            };
            queue
                .add_used(mem, head, len)
                .map_err(|source| QueueError::Used {
                    tag: self.tag.clone(),
                    head,
                    source,
                })?;
            served += 1;
        }
        if served > 0 {
            progress.notify = queue.needs_notification(mem).unwrap_or_else(|e| {
                // Without a readable used_event the safe choice is to notify.
                if self.log.allow() {
                    tracing::warn!("virtio-fs {}: notification check: {e}", self.tag);
                }
                true
            });
        }
        Ok(progress)
    }

    /// Serves one chain; returns the number of reply bytes written.
    pub fn serve<M: GuestMemory>(
        &self,
        mem: &M,
        chain: DescriptorChain<&M>,
    ) -> Result<u32, RequestError> {
        let head = chain.head_index();
        let reader = Reader::from_descriptor_chain(mem, chain.clone())
            .map_err(|source| RequestError::Reader { head, source })?;
        let mut writer = VirtioFsWriter::new(mem, chain)
            .map_err(|source| RequestError::Writer { head, source })?;
        if let Ok(header) = reader.clone().read_obj::<InHeader>() {
            if !known_opcode(header.opcode) {
                return reply_enosys(&mut writer, header.unique)
                    .map_err(|source| RequestError::Fuse { head, source });
            }
        }
        let written = self
            .server
            .handle_message(reader, Writer::VirtioFs(writer), None, None)
            .map_err(|source| RequestError::Fuse { head, source })?;
        // A reply never exceeds the chain's writable length, itself a sum of u32 lengths
        // bounded by the queue size; saturate rather than trust that.
        Ok(u32::try_from(written).unwrap_or(u32::MAX))
    }
}

/// Whether `opcode` is one fuse-backend-rs may be handed. Its `Opcode::from(u32)`
/// transmutes any value below `MaxOpcode` into the enum, so the gaps in the numbering
/// (0, 7, 19) would make an invalid enum value (undefined behaviour) whenever its trace
/// logging is on; they are answered `ENOSYS` here instead, as unknown opcodes are.
fn known_opcode(opcode: u32) -> bool {
    !matches!(opcode, 0 | 7 | 19)
}

/// Writes an `ENOSYS` reply for request `unique`; returns its length.
fn reply_enosys<S: vm_memory::bitmap::BitmapSlice>(
    writer: &mut VirtioFsWriter<'_, S>,
    unique: u64,
) -> Result<u32, fuse_backend_rs::Error> {
    let len = size_of::<OutHeader>() as u32;
    let header = OutHeader {
        len,
        error: -libc::ENOSYS,
        unique,
    };
    // Virtio writes go straight to guest memory: no commit needed.
    writer
        .write_obj(header)
        .map_err(fuse_backend_rs::Error::EncodeMessage)?;
    Ok(len)
}

/// The event-loop side of an active virtio-fs device: wakes on a queue's eventfd, serves
/// that queue and raises the interrupt.
pub struct QueueWorker {
    name: String,
    requests: RequestHandler,
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    queue_evts: Vec<EventFd>,
    interrupt: Arc<Interrupt>,
    log: LogLimiter,
}

impl QueueWorker {
    /// A worker over the activated queues (`queues[i]` is notified through
    /// `queue_evts[i]`).
    pub fn new(
        requests: RequestHandler,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        queue_evts: Vec<EventFd>,
        interrupt: Arc<Interrupt>,
    ) -> Self {
        QueueWorker {
            name: format!("virtio-fs {}", requests.tag),
            requests,
            mem,
            queues,
            queue_evts,
            interrupt,
            log: LogLimiter::new(),
        }
    }

    /// The descriptors to watch: every queue eventfd, for input.
    pub fn fds(&self) -> Vec<(RawFd, EventSet)> {
        queue_fds(&self.queue_evts)
    }

    /// Serves queue `index`; signals the driver if it must be told.
    pub fn process(&mut self, index: usize) -> Result<(), QueueError> {
        let Some(queue) = self.queues.get_mut(index) else {
            return Ok(());
        };
        let progress = self.requests.process_queue(queue, &self.mem)?;
        if progress.notify {
            signal_used_queue(&self.interrupt, &mut self.log, &self.name);
        }
        if progress.more {
            // Come back after the other handlers had their turn.
            if let Some(evt) = self.queue_evts.get(index) {
                if let Err(e) = evt.write(1) {
                    if self.log.allow() {
                        tracing::warn!("{}: re-arming queue {index}: {e}", self.name);
                    }
                }
            }
        }
        Ok(())
    }
}

impl EventHandler for QueueWorker {
    fn name(&self) -> &str {
        &self.name
    }

    fn handle_event(&mut self, event: Event, _ops: &mut EventOps<'_>) -> Result<(), HandlerError> {
        let Some(index) = self
            .queue_evts
            .iter()
            .position(|e| e.as_raw_fd() == event.fd)
        else {
            return Ok(());
        };
        // Clear the notification first, so one arriving while we work wakes us again.
        if let Err(e) = self.queue_evts[index].read() {
            if e.kind() != std::io::ErrorKind::WouldBlock && self.log.allow() {
                tracing::warn!("{}: reading queue {index}'s eventfd: {e}", self.name);
            }
        }
        self.process(index)?;
        Ok(())
    }

    fn broken(&mut self) {
        self.interrupt.set_needs_reset();
    }
}
