//! Fixtures shared by every virtio device test of this crate (after Firecracker's
//! `devices/virtio/test_utils.rs`), on virtio-queue's `MockSplitQueue`:
//!
//! * [`guest_memory`], descriptor flags ([`F_NEXT`], [`F_WRITE`], [`F_INDIRECT`], from
//!   `virtio-bindings`), [`desc`] for a raw descriptor with its own `next`;
//! * [`Buf`] and [`chain`] for a well-formed chain: device-readable buffers (a request, a
//!   TX packet) and device-writable ones (a reply, RX buffers), any number of each;
//! * [`TestQueue`], a queue as a driver fills it: [`TestQueue::add`] writes a chain at the
//!   next free descriptors and publishes it (the avail ring wraps), [`TestQueue::used`]
//!   reads back what the device returned; its used ring does not overlap the avail ring
//!   (virtio-queue's mock's does), so a test may post a whole queue of chains;
//! * [`Activation`], the [`ActivateArgs`] of a device under test with the eventfds that
//!   notify its queues and its [`Interrupt`];
//! * [`seeded`] and [`Replay`] for random-input tests: a fixed seed, named on failure;
//! * [`vsock`], the vsock packet header in guest memory.

use std::sync::Arc;

use virtio_bindings::bindings::virtio_ring::{
    VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
};
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
pub use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::{MockSplitQueue, UsedRing};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::{ActivateArgs, GuestMemoryMmap, Interrupt, Queue};
use crate::event_loop::EventLoop;

/// VRING_DESC_F_NEXT: the chain goes on at `next`.
pub const F_NEXT: u16 = VRING_DESC_F_NEXT as u16;
/// VRING_DESC_F_WRITE: the device writes the buffer (device-writable).
pub const F_WRITE: u16 = VRING_DESC_F_WRITE as u16;
/// VRING_DESC_F_INDIRECT: the buffer is a table of descriptors.
pub const F_INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;

/// `size` bytes of guest RAM at guest address 0.
pub fn guest_memory(size: usize) -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap()
}

/// One descriptor as the driver writes it, `next` and all: for hostile layouts (loops,
/// indexes past the table) that [`chain`] does not make.
pub fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
}

/// One buffer of a chain: address, length and flags other than NEXT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buf {
    /// Guest address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// Flags; [`chain`] adds NEXT itself.
    pub flags: u16,
}

impl Buf {
    /// A buffer the device reads (a request, a TX packet).
    pub const fn readable(addr: u64, len: u32) -> Buf {
        Buf {
            addr,
            len,
            flags: 0,
        }
    }

    /// A buffer the device writes (a reply, an RX buffer, a status byte).
    pub const fn writable(addr: u64, len: u32) -> Buf {
        Buf {
            addr,
            len,
            flags: F_WRITE,
        }
    }

    /// A buffer with any flags (F_INDIRECT, or a wrong direction on purpose).
    pub const fn with_flags(addr: u64, len: u32, flags: u16) -> Buf {
        Buf { addr, len, flags }
    }
}

/// `bufs` as one chain in descriptors `first..`: each but the last gets NEXT and points
/// at the following index; the last ends the chain.
pub fn chain(first: u16, bufs: &[Buf]) -> Vec<RawDescriptor> {
    bufs.iter()
        .enumerate()
        .map(|(i, b)| {
            let last = i + 1 == bufs.len();
            let (flags, next) = if last {
                (b.flags & !F_NEXT, 0)
            } else {
                (b.flags | F_NEXT, first + i as u16 + 1)
            };
            desc(b.addr, b.len, flags, next)
        })
        .collect()
}

/// One split queue in guest memory, filled as a driver would.
///
/// The descriptor table and the avail ring are `MockSplitQueue`'s; the used ring is this
/// fixture's own. virtio-queue 0.17's mock puts its used ring over the second half of the
/// avail ring (`SplitQueueRing::end` adds the element count, not the byte size), so once
/// more than `size / 2` chains are posted, heads the driver published and elements the
/// device wrote overwrite each other. Here the used ring follows the avail ring as the
/// virtio spec lays a split queue out (2.7.2): table, avail ring with `used_event`, used
/// ring aligned to 4, `26 * size + 12` bytes in all from `base`.
pub struct TestQueue<'a> {
    mem: &'a GuestMemoryMmap,
    mock: MockSplitQueue<'a, GuestMemoryMmap>,
    used: UsedRing<'a, GuestMemoryMmap>,
    used_addr: GuestAddress,
    size: u16,
    next_desc: u16,
}

impl<'a> TestQueue<'a> {
    /// A queue of `size` descriptors whose table starts at `base`, rings right after.
    pub fn new(mem: &'a GuestMemoryMmap, base: u64, size: u16) -> Self {
        let mock = MockSplitQueue::create(mem, GuestAddress(base), size);
        // flags, idx, ring[size], used_event.
        let avail_end = mock.avail_addr().0 + 4 + 2 * u64::from(size) + 2;
        let used_addr = GuestAddress(avail_end.next_multiple_of(4));
        TestQueue {
            mem,
            mock,
            used: UsedRing::new(mem, used_addr, size),
            used_addr,
            size,
            next_desc: 0,
        }
    }

    /// The device side of the queue: ready, with this queue's size and rings.
    pub fn queue(&self) -> Queue {
        let mut q: Queue = self.mock.create_queue().unwrap();
        q.set_used_ring_address(
            Some(self.used_addr.0 as u32),
            Some((self.used_addr.0 >> 32) as u32),
        );
        q
    }

    /// (descriptor table, avail ring, used ring) guest addresses, as a driver writes them
    /// into the transport's queue registers.
    pub fn addrs(&self) -> (u64, u64, u64) {
        (
            self.mock.desc_table_addr().0,
            self.mock.avail_addr().0,
            self.used_addr.0,
        )
    }

    /// Takes the next `n` free descriptors (back at 0 when they would run past the table)
    /// and returns the first, for [`TestQueue::add_raw`] chains that name their own
    /// indexes (a descriptor that loops to itself) after other chains.
    pub fn reserve(&mut self, n: u16) -> u16 {
        assert!(
            n > 0 && n <= self.size,
            "a chain of {n} in a queue of {}",
            self.size
        );
        if self.next_desc + n > self.size {
            self.next_desc = 0;
        }
        let first = self.next_desc;
        self.next_desc = (first + n) % self.size;
        first
    }

    /// Writes `bufs` as a chain at the next free descriptors (see [`TestQueue::reserve`])
    /// and publishes its head; returns the head.
    pub fn add(&mut self, bufs: &[Buf]) -> u16 {
        let head = self.reserve(bufs.len() as u16);
        for (i, d) in chain(head, bufs).into_iter().enumerate() {
            self.mock.desc_table().store(head + i as u16, d).unwrap();
        }
        self.publish(head);
        head
    }
    /// Writes `descs` as they are at descriptors `first..` and publishes each head (a
    /// descriptor that does not follow one with NEXT), as `MockSplitQueue` does.
    pub fn add_raw(&self, descs: &[RawDescriptor], first: u16) {
        let mut follows_next = false;
        for (i, d) in descs.iter().enumerate() {
            self.mock.desc_table().store(first + i as u16, *d).unwrap();
            if !follows_next {
                self.publish(first + i as u16);
            }
            follows_next = SplitDescriptor::from(*d).flags() & F_NEXT != 0;
        }
    }

    /// Puts `head` in the next avail slot (wrapping) and bumps the avail index.
    pub fn publish(&self, head: u16) {
        let idx = self.mock.avail().idx().load();
        let slot = usize::from(idx % self.size);
        self.mock.avail().ring().ref_at(slot).unwrap().store(head);
        self.mock.avail().idx().store(idx.wrapping_add(1));
    }

    /// The used index the device wrote.
    pub fn used_idx(&self) -> u16 {
        self.used.idx().load()
    }

    /// The used elements still in the ring, oldest first: (head, length written).
    pub fn used(&self) -> Vec<(u32, u32)> {
        let idx = self.used_idx();
        (idx.saturating_sub(self.size)..idx)
            .map(|i| {
                let slot = usize::from(i % self.size);
                let e = self.used.ring().ref_at(slot).unwrap().load();
                (e.id(), e.len())
            })
            .collect()
    }

    /// The last used element: (head, length written).
    pub fn last_used(&self) -> Option<(u32, u32)> {
        self.used().last().copied()
    }

    /// `avail_event`, after the used ring: with EVENT_IDX, the avail index at which the
    /// device wants the driver's next notification.
    pub fn avail_event(&self) -> u16 {
        let at = self.used_addr.0 + 4 + 8 * u64::from(self.size);
        self.mem.read_obj(GuestAddress(at)).unwrap()
    }

    /// The mock queue, to poke the descriptor table and the avail ring directly (hostile
    /// indexes). Its own used ring is not the one the device writes: see [`TestQueue`].
    pub fn mock(&self) -> &MockSplitQueue<'a, GuestMemoryMmap> {
        &self.mock
    }
}

/// What a device under test is activated with, and the test's ends of it.
pub struct Activation {
    /// For [`crate::devices::virtio::VirtioDevice::activate`].
    pub args: ActivateArgs,
    /// A clone of each queue's eventfd: writing `kicks[i]` notifies queue `i`.
    pub kicks: Vec<EventFd>,
    /// The device's interrupt; its irqfd reads back whether it fired.
    pub interrupt: Arc<Interrupt>,
}

impl Activation {
    /// `queues` on `mem`, one eventfd per queue, a test interrupt, and `event_loop`.
    pub fn new(mem: &GuestMemoryMmap, queues: Vec<Queue>, event_loop: &EventLoop) -> Self {
        let queue_evts: Vec<EventFd> = queues
            .iter()
            .map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap())
            .collect();
        let kicks = queue_evts.iter().map(|e| e.try_clone().unwrap()).collect();
        let interrupt = Arc::new(Interrupt::for_tests().unwrap());
        Activation {
            args: ActivateArgs {
                mem: mem.clone(),
                queues,
                queue_evts,
                interrupt: interrupt.clone(),
                event_loop: event_loop.handle(),
            },
            kicks,
            interrupt,
        }
    }
}

/// A random generator with a fixed seed, so that a failure replays.
pub fn seeded(seed: u64) -> fastrand::Rng {
    fastrand::Rng::with_seed(seed)
}

/// Names the seed and round of a random-input test when the test fails (panics) while
/// it is alive, so that the failing input can be replayed.
pub struct Replay {
    /// The generator's seed.
    pub seed: u64,
    /// The round being run.
    pub round: u64,
}

impl Replay {
    /// Round 0 of `seed`.
    pub fn new(seed: u64) -> Self {
        Replay { seed, round: 0 }
    }
}

impl std::fmt::Display for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "seed {:#x}, round {}", self.seed, self.round)
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("failing random input: {self}");
        }
    }
}

/// The vsock packet header in guest memory.
pub mod vsock {
    use vm_memory::{Bytes, GuestAddress};

    use crate::devices::virtio::vsock::{Hdr, Op, CONN_BUF_SIZE, HOST_CID, TYPE_STREAM};
    use crate::devices::virtio::GuestMemoryMmap;

    /// The guest's CID in the vsock tests.
    pub const GUEST_CID: u64 = 3;

    /// A stream header the guest sends to the host.
    pub fn guest_hdr(op: Op, src_port: u32, dst_port: u32, len: u32) -> Hdr {
        Hdr {
            src_cid: GUEST_CID,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            len,
            type_: TYPE_STREAM,
            op: op as u16,
            flags: 0,
            buf_alloc: CONN_BUF_SIZE,
            fwd_cnt: 0,
        }
    }

    /// Writes `h` at `addr` as the driver would (little-endian, packed).
    pub fn put_hdr(mem: &GuestMemoryMmap, addr: u64, h: &Hdr) {
        let raw = [
            &h.src_cid.to_le_bytes()[..],
            &h.dst_cid.to_le_bytes(),
            &h.src_port.to_le_bytes(),
            &h.dst_port.to_le_bytes(),
            &h.len.to_le_bytes(),
            &h.type_.to_le_bytes(),
            &h.op.to_le_bytes(),
            &h.flags.to_le_bytes(),
            &h.buf_alloc.to_le_bytes(),
            &h.fwd_cnt.to_le_bytes(),
        ]
        .concat();
        mem.write_slice(&raw, GuestAddress(addr)).unwrap();
    }

    /// Reads the header the device wrote at `addr`.
    pub fn get_hdr(mem: &GuestMemoryMmap, addr: u64) -> Hdr {
        let u64_at = |o: u64| mem.read_obj::<u64>(GuestAddress(addr + o)).unwrap();
        let u32_at = |o: u64| mem.read_obj::<u32>(GuestAddress(addr + o)).unwrap();
        let u16_at = |o: u64| mem.read_obj::<u16>(GuestAddress(addr + o)).unwrap();
        Hdr {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::QueueT;

    #[test]
    fn chains_link_consecutive_descriptors_and_keep_their_flags() {
        let c = chain(
            4,
            &[
                Buf::readable(0x1000, 16),
                Buf::writable(0x2000, 512),
                Buf::writable(0x3000, 1),
            ],
        );
        let d: Vec<SplitDescriptor> = c.into_iter().map(SplitDescriptor::from).collect();
        assert_eq!(
            d.iter().map(|d| (d.flags(), d.next())).collect::<Vec<_>>(),
            [(F_NEXT, 5), (F_NEXT | F_WRITE, 6), (F_WRITE, 0)]
        );
        assert_eq!((d[1].addr().0, d[1].len()), (0x2000, 512));
    }

    /// The RX pattern of a net device: many chains of several writable buffers, more
    /// than the queue holds over time, so the table and the avail ring wrap.
    #[test]
    fn a_queue_wraps_its_table_and_avail_ring() {
        let mem = guest_memory(0x10_0000);
        let mut tq = TestQueue::new(&mem, 0, 8);
        let mut q = tq.queue();
        for round in 0..20u32 {
            let rx = [0, 1, 2].map(|i| Buf::writable(0x1_0000 + i * 0x1000, 1526));
            let head = tq.add(&rx);
            let chain = q.pop_descriptor_chain(&mem).unwrap();
            assert_eq!(chain.head_index(), head);
            let descs: Vec<_> = chain.collect();
            assert_eq!(descs.len(), 3, "round {round}");
            assert!(descs.iter().all(|d| d.is_write_only()));
            q.add_used(&mem, head, 42 + round).unwrap();
        }
        assert_eq!(tq.used_idx(), 20);
        assert_eq!(tq.used().len(), 8, "the ring holds the last 8");
        assert_eq!(tq.last_used().unwrap().1, 42 + 19);
    }

    /// A full ring of chains posted before the device takes any: the used elements the
    /// device writes must not land on heads it has yet to read (they do in
    /// `MockSplitQueue`'s own layout past `size / 2` chains).
    #[test]
    fn a_full_ring_of_chains_survives_the_device_returning_them() {
        let mem = guest_memory(0x10_0000);
        let mut tq = TestQueue::new(&mem, 0x1000, 16);
        let (desc, avail, used) = tq.addrs();
        assert_eq!((desc, avail), (0x1000, 0x1000 + 16 * 16));
        assert_eq!(used, (avail + 4 + 2 * 16 + 2).next_multiple_of(4));
        let mut q = tq.queue();
        let heads: Vec<u16> = (0..16u64)
            .map(|i| tq.add(&[Buf::writable(0x8_0000 + i * 0x100, 64)]))
            .collect();
        let mut seen = Vec::new();
        while let Some(c) = q.pop_descriptor_chain(&mem) {
            let head = c.head_index();
            seen.push(head);
            q.add_used(&mem, head, 7).unwrap();
        }
        assert_eq!(seen, heads);
        assert_eq!(tq.used_idx(), 16);
        let want: Vec<(u32, u32)> = heads.iter().map(|&h| (h.into(), 7)).collect();
        assert_eq!(tq.used(), want);
    }

    #[test]
    fn reserved_descriptors_are_skipped_by_the_next_chain() {
        let mem = guest_memory(0x10_0000);
        let mut tq = TestQueue::new(&mem, 0, 8);
        assert_eq!(tq.add(&[Buf::readable(0x1_0000, 1); 3]), 0);
        let at = tq.reserve(2);
        assert_eq!(at, 3);
        tq.add_raw(&[desc(0x1_0000, 1, F_NEXT, at)], at);
        assert_eq!(tq.add(&[Buf::readable(0x1_0000, 1); 3]), 5);
        // A chain that does not fit before the end starts again at 0.
        assert_eq!(tq.add(&[Buf::readable(0x1_0000, 1)]), 0);
    }

    #[test]
    fn raw_descriptors_publish_each_chain_head() {
        let mem = guest_memory(0x10_0000);
        let tq = TestQueue::new(&mem, 0, 16);
        tq.add_raw(
            &[
                desc(0x1_0000, 44, F_NEXT, 1),
                desc(0x2_0000, 100, 0, 0),
                desc(0x1_0000, 44, 0, 0),
            ],
            3,
        );
        assert_eq!(tq.mock().avail().idx().load(), 2);
        let heads: Vec<u16> = (0..2)
            .map(|i| tq.mock().avail().ring().ref_at(i).unwrap().load())
            .collect();
        assert_eq!(heads, [3, 5]);
    }
}
