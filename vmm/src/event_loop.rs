//! The device event loop: ONE thread that does all device work (queue processing, backend
//! sockets), driven by epoll.
//!
//! Devices register an [`EventHandler`] together with the file descriptors it wants to be
//! woken for (queue eventfds, Unix sockets, timers ...). When one of them is ready the loop
//! calls [`EventHandler::handle_event`] on its thread; from inside that callback the
//! handler adds, changes or removes its own descriptors through [`EventOps`]. From any
//! other thread (a vCPU activating or resetting a device) the same is done with an
//! [`EventLoopHandle`].
//!
//! A handler that returns an error is removed from the loop (its descriptors are no longer
//! watched), [`EventHandler::broken`] is called once so the device can tell the guest
//! (virtio DEVICE_NEEDS_RESET), and one rate-limited line is logged. The VMM keeps running.
//!
//! [`EventLoop::stop`] (also run on drop) wakes the thread through a shutdown eventfd and
//! joins it, then drops every handler still registered.

use crate::ratelimit::LogLimiter;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{JoinHandle, ThreadId};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent};
use vmm_sys_util::eventfd::EventFd;

pub use vmm_sys_util::epoll::EventSet;

/// What a handler returns when it cannot go on; any error type converts into it with `?`.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// Errors of the event loop, naming the descriptor or handler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Creating the epoll instance or the shutdown eventfd.
    #[error("{what}: {source}")]
    Setup {
        /// What was being created.
        what: &'static str,
        /// Cause.
        source: std::io::Error,
    },
    /// epoll_ctl on a descriptor failed (bad or closed fd, or already registered).
    #[error("epoll_ctl {op} of fd {fd} for handler {handler}: {source}")]
    Ctl {
        /// ADD, MOD or DEL.
        op: &'static str,
        /// The descriptor.
        fd: RawFd,
        /// The handler's name.
        handler: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The handler id is not (or no longer) registered.
    #[error("no event handler with id {0}")]
    UnknownHandler(u32),
}

/// Which descriptor woke a handler, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The ready descriptor (one the handler registered).
    pub fd: RawFd,
    /// Readiness flags (IN, OUT, HANG_UP, ERROR ...).
    pub events: EventSet,
}

/// Work a device does on the event-loop thread.
///
/// epoll is level-triggered: a handler must consume what woke it (read the eventfd, drain
/// or stop watching the socket), or it is called again at once.
pub trait EventHandler: Send {
    /// Short name for logs, e.g. `"virtio-blk vda"`.
    fn name(&self) -> &str;
    /// Called when one of the handler's descriptors is ready. An `Err` means the device
    /// cannot go on: it is removed from the loop and [`EventHandler::broken`] is called.
    /// Errors a guest can cause per request (a malformed descriptor chain) should fail that
    /// request instead, and not reach here.
    fn handle_event(&mut self, event: Event, ops: &mut EventOps<'_>) -> Result<(), HandlerError>;
    /// Called once after `handle_event` failed, before the handler is dropped; virtio
    /// devices call [`crate::devices::virtio::Interrupt::set_needs_reset`] here.
    fn broken(&mut self) {}
}

/// Identifies a registered handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandlerId(u32);

impl std::fmt::Display for HandlerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Id 0 is the shutdown eventfd.
const SHUTDOWN_ID: u32 = 0;
/// Events read per epoll_wait.
const EVENT_BATCH: usize = 64;

struct Entry {
    name: String,
    handler: Arc<Mutex<Box<dyn EventHandler>>>,
    fds: Vec<RawFd>,
}

struct Inner {
    epoll: Epoll,
    handlers: Mutex<HashMap<u32, Entry>>,
    next_id: AtomicU32,
    thread: OnceLock<ThreadId>,
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn data(id: u32, fd: RawFd) -> u64 {
    (u64::from(id) << 32) | u64::from(fd as u32)
}

impl Inner {
    fn ctl(&self, id: u32, op: ControlOperation, fd: RawFd, events: EventSet) -> Result<(), Error> {
        let mut map = lock(&self.handlers);
        let entry = map.get_mut(&id).ok_or(Error::UnknownHandler(id))?;
        let (name, add, delete) = match op {
            ControlOperation::Add => ("ADD", true, false),
            ControlOperation::Modify => ("MOD", false, false),
            ControlOperation::Delete => ("DEL", false, true),
        };
        self.epoll
            .ctl(op, fd, EpollEvent::new(events, data(id, fd)))
            .map_err(|source| Error::Ctl {
                op: name,
                fd,
                handler: entry.name.clone(),
                source,
            })?;
        if add {
            entry.fds.push(fd);
        } else if delete {
            entry.fds.retain(|&f| f != fd);
        }
        Ok(())
    }

    /// Takes the handler out of the map and stops watching its descriptors.
    fn unregister(&self, id: u32) -> Option<Entry> {
        let entry = lock(&self.handlers).remove(&id)?;
        for &fd in &entry.fds {
            // The fd may already be closed (epoll then dropped it itself): nothing to do.
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        }
        Some(entry)
    }
}

/// Adds, changes and removes descriptors of the handler being called, from inside
/// [`EventHandler::handle_event`].
pub struct EventOps<'a> {
    inner: &'a Inner,
    id: u32,
    remove_self: bool,
}

impl EventOps<'_> {
    /// Starts watching `fd` for `events` (IN, OUT ...) on behalf of this handler. The
    /// handler must keep `fd` open until it removes it.
    pub fn add(&mut self, fd: RawFd, events: EventSet) -> Result<(), Error> {
        self.inner.ctl(self.id, ControlOperation::Add, fd, events)
    }
    /// Changes the events watched on `fd`.
    pub fn modify(&mut self, fd: RawFd, events: EventSet) -> Result<(), Error> {
        self.inner
            .ctl(self.id, ControlOperation::Modify, fd, events)
    }
    /// Stops watching `fd` (do this before closing it).
    pub fn remove(&mut self, fd: RawFd) -> Result<(), Error> {
        self.inner
            .ctl(self.id, ControlOperation::Delete, fd, EventSet::empty())
    }
    /// Removes this handler from the loop once the current callback returns.
    pub fn remove_self(&mut self) {
        self.remove_self = true;
    }
    /// This handler's id.
    pub fn id(&self) -> HandlerId {
        HandlerId(self.id)
    }
}

/// Registers and removes handlers from any thread. Cheap to clone.
#[derive(Clone)]
pub struct EventLoopHandle {
    inner: Arc<Inner>,
}

impl EventLoopHandle {
    /// Registers `handler`, woken for each `(fd, events)` of `fds`. If one descriptor
    /// cannot be added, nothing stays registered.
    pub fn add_handler(
        &self,
        handler: Box<dyn EventHandler>,
        fds: &[(RawFd, EventSet)],
    ) -> Result<HandlerId, Error> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let name = handler.name().to_string();
        lock(&self.inner.handlers).insert(
            id,
            Entry {
                name,
                handler: Arc::new(Mutex::new(handler)),
                fds: Vec::new(),
            },
        );
        for &(fd, events) in fds {
            if let Err(e) = self.inner.ctl(id, ControlOperation::Add, fd, events) {
                self.inner.unregister(id);
                return Err(e);
            }
        }
        Ok(HandlerId(id))
    }

    /// Removes a handler and stops watching its descriptors. Called from another thread,
    /// it returns only after a callback of that handler in progress has finished, so the
    /// caller may then reuse what the handler was working on (queues, guest memory).
    /// Removing an unknown (already removed or broken) handler does nothing.
    pub fn remove_handler(&self, id: HandlerId) {
        if let Some(entry) = self.inner.unregister(id.0) {
            if self.inner.thread.get() != Some(&std::thread::current().id()) {
                drop(lock(&entry.handler));
            }
        }
    }

    /// Starts watching `fd` for handler `id`.
    pub fn add_fd(&self, id: HandlerId, fd: RawFd, events: EventSet) -> Result<(), Error> {
        self.inner.ctl(id.0, ControlOperation::Add, fd, events)
    }
    /// Changes the events watched on `fd` of handler `id`.
    pub fn modify_fd(&self, id: HandlerId, fd: RawFd, events: EventSet) -> Result<(), Error> {
        self.inner.ctl(id.0, ControlOperation::Modify, fd, events)
    }
    /// Stops watching `fd` of handler `id`.
    pub fn remove_fd(&self, id: HandlerId, fd: RawFd) -> Result<(), Error> {
        self.inner
            .ctl(id.0, ControlOperation::Delete, fd, EventSet::empty())
    }
    /// Number of registered handlers (for tests and diagnostics).
    pub fn handler_count(&self) -> usize {
        lock(&self.inner.handlers).len()
    }
}

/// The event-loop thread.
pub struct EventLoop {
    handle: EventLoopHandle,
    shutdown: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl EventLoop {
    /// Creates the epoll instance and starts the thread (named `devices`).
    pub fn start() -> Result<Self, Error> {
        let epoll = Epoll::new().map_err(|source| Error::Setup {
            what: "creating the device epoll",
            source,
        })?;
        let shutdown = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| Error::Setup {
            what: "creating the event-loop shutdown eventfd",
            source,
        })?;
        epoll
            .ctl(
                ControlOperation::Add,
                shutdown.as_raw_fd(),
                EpollEvent::new(EventSet::IN, data(SHUTDOWN_ID, shutdown.as_raw_fd())),
            )
            .map_err(|source| Error::Setup {
                what: "watching the event-loop shutdown eventfd",
                source,
            })?;
        let inner = Arc::new(Inner {
            epoll,
            handlers: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(SHUTDOWN_ID + 1),
            thread: OnceLock::new(),
        });
        let thread_inner = inner.clone();
        let thread = std::thread::Builder::new()
            .name("devices".into())
            .spawn(move || run(&thread_inner))
            .map_err(|source| Error::Setup {
                what: "spawning the device event-loop thread",
                source,
            })?;
        let _ = inner.thread.set(thread.thread().id());
        Ok(EventLoop {
            handle: EventLoopHandle { inner },
            shutdown,
            thread: Some(thread),
        })
    }

    /// A handle to register handlers with.
    pub fn handle(&self) -> EventLoopHandle {
        self.handle.clone()
    }

    /// Wakes the thread, waits for it to end and drops every handler.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Some(thread) = self.thread.take() {
            if let Err(e) = self.shutdown.write(1) {
                tracing::warn!("waking the device event loop for shutdown: {e}");
            }
            if thread.join().is_err() {
                tracing::warn!("the device event-loop thread panicked");
            }
            let ids: Vec<u32> = lock(&self.handle.inner.handlers).keys().copied().collect();
            for id in ids {
                self.handle.inner.unregister(id);
            }
        }
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

fn run(inner: &Inner) {
    crate::seccomp::apply_or_exit(crate::seccomp::Thread::Devices);
    let mut limiter = LogLimiter::new();
    let mut events = vec![EpollEvent::default(); EVENT_BATCH];
    loop {
        let n = match inner.epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!("device event loop: epoll_wait failed, stopping: {e}");
                return;
            }
        };
        for ev in &events[..n] {
            let id = (ev.data() >> 32) as u32;
            if id == SHUTDOWN_ID {
                return;
            }
            dispatch(
                inner,
                id,
                ev.data() as u32 as RawFd,
                ev.event_set(),
                &mut limiter,
            );
        }
    }
}

fn dispatch(inner: &Inner, id: u32, fd: RawFd, events: EventSet, limiter: &mut LogLimiter) {
    // The handler may have been removed by an earlier event of this batch.
    let Some(handler) = lock(&inner.handlers).get(&id).map(|e| e.handler.clone()) else {
        return;
    };
    let mut ops = EventOps {
        inner,
        id,
        remove_self: false,
    };
    let mut h = lock(&handler);
    match h.handle_event(Event { fd, events }, &mut ops) {
        Ok(()) => {
            if ops.remove_self {
                inner.unregister(id);
            }
        }
        Err(e) => {
            inner.unregister(id);
            if limiter.allow() {
                tracing::error!("{}: {e}; device marked broken", h.name());
            }
            h.broken();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    struct Counter {
        evt: EventFd,
        tx: mpsc::Sender<u64>,
        fail_at: Option<u64>,
        broken_tx: mpsc::Sender<()>,
    }

    impl EventHandler for Counter {
        fn name(&self) -> &str {
            "counter"
        }
        fn handle_event(&mut self, ev: Event, _: &mut EventOps<'_>) -> Result<(), HandlerError> {
            assert_eq!(ev.fd, self.evt.as_raw_fd());
            let v = self.evt.read()?;
            if Some(v) == self.fail_at {
                return Err("boom".into());
            }
            let _ = self.tx.send(v);
            Ok(())
        }
        fn broken(&mut self) {
            let _ = self.broken_tx.send(());
        }
    }

    fn counter(
        fail_at: Option<u64>,
    ) -> (Counter, EventFd, mpsc::Receiver<u64>, mpsc::Receiver<()>) {
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let (tx, rx) = mpsc::channel();
        let (broken_tx, broken_rx) = mpsc::channel();
        let trigger = evt.try_clone().unwrap();
        (
            Counter {
                evt,
                tx,
                fail_at,
                broken_tx,
            },
            trigger,
            rx,
            broken_rx,
        )
    }

    const WAIT: Duration = Duration::from_secs(5);

    #[test]
    fn handlers_are_called_removed_and_the_loop_stops() {
        let el = EventLoop::start().unwrap();
        let (c, trigger, rx, _b) = counter(None);
        let fd = c.evt.as_raw_fd();
        let id = el
            .handle()
            .add_handler(Box::new(c), &[(fd, EventSet::IN)])
            .unwrap();
        trigger.write(3).unwrap();
        assert_eq!(rx.recv_timeout(WAIT).unwrap(), 3);
        el.handle().remove_handler(id);
        assert_eq!(el.handle().handler_count(), 0);
        trigger.write(1).unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        el.stop();
    }

    #[test]
    fn a_failing_handler_is_marked_broken_and_the_loop_goes_on() {
        let el = EventLoop::start().unwrap();
        let (bad, bad_trigger, _rx, broken) = counter(Some(7));
        let (good, good_trigger, good_rx, _b) = counter(None);
        let h = el.handle();
        let fd = bad.evt.as_raw_fd();
        h.add_handler(Box::new(bad), &[(fd, EventSet::IN)]).unwrap();
        let fd = good.evt.as_raw_fd();
        h.add_handler(Box::new(good), &[(fd, EventSet::IN)])
            .unwrap();
        bad_trigger.write(7).unwrap();
        broken.recv_timeout(WAIT).unwrap();
        good_trigger.write(2).unwrap();
        assert_eq!(good_rx.recv_timeout(WAIT).unwrap(), 2);
        assert_eq!(h.handler_count(), 1);
        drop(el);
        assert_eq!(h.handler_count(), 0);
    }

    #[test]
    fn a_bad_descriptor_is_refused_and_leaves_nothing_registered() {
        let el = EventLoop::start().unwrap();
        let (c, _t, _rx, _b) = counter(None);
        let e = el
            .handle()
            .add_handler(Box::new(c), &[(-1, EventSet::IN)])
            .unwrap_err();
        assert!(e.to_string().contains("fd -1"), "{e}");
        assert_eq!(el.handle().handler_count(), 0);
    }
}
