use super::*;
use crate::devices::virtio::test_utils::{guest_memory, seeded, Replay};
use crate::devices::virtio::{ActivateError, INT_CONFIG, INT_VRING};
use crate::event_loop::EventLoop;
use std::sync::Mutex;

const MEM_SIZE: usize = 0x10_0000;

/// Per activation: (ready, size, descriptor table) of each queue, and the eventfd count.
type Activation = (Vec<(bool, u16, u64)>, usize);

#[derive(Default)]
struct Seen {
    acked: Option<u64>,
    activations: Vec<Activation>,
    resets: usize,
    config_writes: Vec<(u64, Vec<u8>)>,
    /// Activated and not reset since.
    active: bool,
    /// Activations of a device that was already active.
    double_activations: usize,
}

struct Dummy {
    sizes: Vec<u16>,
    fail_activate: bool,
    seen: Arc<Mutex<Seen>>,
}

impl VirtioDevice for Dummy {
    fn device_type(&self) -> u32 {
        2
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.sizes
    }
    fn features(&self) -> u64 {
        1 << 5
    }
    fn ack_features(&mut self, features: u64) {
        self.seen.lock().unwrap().acked = Some(features);
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::super::read_config_bytes(&[10, 11, 12, 13, 14, 15, 16, 17], offset, data);
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.seen
            .lock()
            .unwrap()
            .config_writes
            .push((offset, data.to_vec()));
    }
    fn activate(&mut self, args: ActivateArgs) -> Result<(), ActivateError> {
        if self.fail_activate {
            return Err(ActivateError::Invalid {
                device: "dummy".into(),
                reason: "told to fail".into(),
            });
        }
        let qs = args
            .queues
            .iter()
            .map(|q| (q.ready(), q.size(), q.desc_table()))
            .collect();
        let mut seen = self.seen.lock().unwrap();
        seen.double_activations += usize::from(seen.active);
        seen.active = true;
        seen.activations.push((qs, args.queue_evts.len()));
        Ok(())
    }
    fn reset(&mut self) {
        let mut seen = self.seen.lock().unwrap();
        seen.resets += 1;
        seen.active = false;
    }
}

struct Fixture {
    t: MmioTransport,
    seen: Arc<Mutex<Seen>>,
    _el: EventLoop,
}

fn fixture(sizes: &[u16], fail_activate: bool) -> Fixture {
    let mem = guest_memory(MEM_SIZE);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let dev = Dummy {
        sizes: sizes.to_vec(),
        fail_activate,
        seen: seen.clone(),
    };
    let el = EventLoop::start().unwrap();
    let t = MmioTransport::new(
        "dummy".into(),
        Box::new(dev),
        mem,
        Arc::new(Interrupt::for_tests().unwrap()),
        el.handle(),
    )
    .unwrap();
    Fixture { t, seen, _el: el }
}

fn rd(t: &mut MmioTransport, off: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(off, &mut b);
    u32::from_le_bytes(b)
}

fn wr(t: &mut MmioTransport, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

/// The Linux driver's sequence up to FEATURES_OK.
fn negotiate(t: &mut MmioTransport, features: u64) {
    wr(t, reg::STATUS, 0);
    wr(t, reg::STATUS, status::ACKNOWLEDGE);
    wr(t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    wr(t, reg::DRIVER_FEATURES_SEL, 0);
    wr(t, reg::DRIVER_FEATURES, features as u32);
    wr(t, reg::DRIVER_FEATURES_SEL, 1);
    wr(t, reg::DRIVER_FEATURES, (features >> 32) as u32);
    wr(
        t,
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
}

fn setup_queue(t: &mut MmioTransport, idx: u32, num: u32, desc: u64) {
    wr(t, reg::QUEUE_SEL, idx);
    wr(t, reg::QUEUE_NUM, num);
    wr(t, reg::QUEUE_DESC_LOW, desc as u32);
    wr(t, reg::QUEUE_DESC_HIGH, (desc >> 32) as u32);
    wr(t, reg::QUEUE_DRIVER_LOW, (desc + 0x1000) as u32);
    wr(t, reg::QUEUE_DRIVER_HIGH, 0);
    wr(t, reg::QUEUE_DEVICE_LOW, (desc + 0x2000) as u32);
    wr(t, reg::QUEUE_DEVICE_HIGH, 0);
    wr(t, reg::QUEUE_READY, 1);
}

/// The Linux driver's whole initialisation with queue 0 of 128 at 0x1_0000 (the other
/// queues left disabled); the device must come up.
fn bring_up(t: &mut MmioTransport) {
    negotiate(t, V1);
    setup_queue(t, 0, 128, 0x1_0000);
    wr(t, reg::STATUS, ALL_OK);
    assert_eq!(t.status(), ALL_OK);
    assert!(t.is_activated());
}

const ALL_OK: u32 = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;
const V1: u64 = 1 << VIRTIO_F_VERSION_1;

#[test]
fn identification_registers() {
    let mut f = fixture(&[256, 128], false);
    assert_eq!(rd(&mut f.t, reg::MAGIC), 0x7472_6976);
    assert_eq!(rd(&mut f.t, reg::VERSION), 2);
    assert_eq!(rd(&mut f.t, reg::DEVICE_ID), 2);
    assert_eq!(rd(&mut f.t, reg::VENDOR_ID), VENDOR_ID);
    wr(&mut f.t, reg::DEVICE_FEATURES_SEL, 0);
    assert_eq!(rd(&mut f.t, reg::DEVICE_FEATURES), 1 << 5);
    wr(&mut f.t, reg::DEVICE_FEATURES_SEL, 1);
    assert_eq!(rd(&mut f.t, reg::DEVICE_FEATURES), 1);
    wr(&mut f.t, reg::DEVICE_FEATURES_SEL, 7);
    assert_eq!(rd(&mut f.t, reg::DEVICE_FEATURES), 0);
    wr(&mut f.t, reg::QUEUE_SEL, 1);
    assert_eq!(rd(&mut f.t, reg::QUEUE_NUM_MAX), 128);
    wr(&mut f.t, reg::QUEUE_SEL, 2);
    assert_eq!(rd(&mut f.t, reg::QUEUE_NUM_MAX), 0);
}

#[test]
fn negotiation_needs_version_1_and_masks_to_the_offer() {
    let mut f = fixture(&[16], false);
    negotiate(&mut f.t, 1 << 5);
    assert_eq!(
        f.t.status() & status::FEATURES_OK,
        0,
        "legacy driver refused"
    );
    assert_eq!(f.seen.lock().unwrap().acked, None);
    negotiate(&mut f.t, V1 | (1 << 5) | (1 << 7) | (1 << 40));
    assert_ne!(f.t.status() & status::FEATURES_OK, 0);
    assert_eq!(f.seen.lock().unwrap().acked, Some(V1 | (1 << 5)));
}

#[test]
fn driver_ok_activates_with_the_driver_queues_and_notify_reaches_the_eventfd() {
    let mut f = fixture(&[256, 64], false);
    bring_up(&mut f.t);
    {
        let seen = f.seen.lock().unwrap();
        assert_eq!(
            seen.activations,
            vec![(vec![(true, 128, 0x1_0000), (false, 64, 0)], 2)]
        );
    }
    wr(&mut f.t, QUEUE_NOTIFY, 1);
    assert_eq!(f.t.queue_evts()[1].read().unwrap(), 1);
    wr(&mut f.t, QUEUE_NOTIFY, 9); // no such queue: ignored
                                   // Queue registers are frozen after DRIVER_OK.
    wr(&mut f.t, reg::QUEUE_SEL, 0);
    wr(&mut f.t, reg::QUEUE_NUM, 2);
    assert_eq!(rd(&mut f.t, reg::QUEUE_NUM), 128);
    // Reset.
    wr(&mut f.t, reg::STATUS, 0);
    assert_eq!(f.t.status(), 0);
    assert!(!f.t.is_activated());
    assert_eq!(f.seen.lock().unwrap().resets, 2, "negotiate resets first");
    assert_eq!(rd(&mut f.t, reg::QUEUE_READY), 0);
    assert_eq!(rd(&mut f.t, reg::QUEUE_NUM), 256);
}

#[test]
fn invalid_queues_set_needs_reset_instead_of_activating() {
    let cases: [(u32, u64); 5] = [
        (100, 0x1_0000),        // not a power of two
        (512, 0x1_0000),        // above the maximum
        (0, 0x1_0000),          // zero
        (256, MEM_SIZE as u64), // outside guest memory
        (256, 0x1_0008),        // misaligned descriptor table
    ];
    for (num, desc) in cases {
        let mut f = fixture(&[256], false);
        negotiate(&mut f.t, V1);
        setup_queue(&mut f.t, 0, num, desc);
        wr(&mut f.t, reg::STATUS, ALL_OK);
        assert!(!f.t.is_activated(), "num {num} desc {desc:#x}");
        assert_ne!(f.t.status() & status::DEVICE_NEEDS_RESET, 0);
        assert_ne!(rd(&mut f.t, reg::INTERRUPT_STATUS) & INT_CONFIG, 0);
        assert!(f.seen.lock().unwrap().activations.is_empty());
        // A reset brings it back.
        negotiate(&mut f.t, V1);
        assert_eq!(f.t.status() & status::DEVICE_NEEDS_RESET, 0);
        setup_queue(&mut f.t, 0, 256, 0x1_0000);
        wr(&mut f.t, reg::STATUS, ALL_OK);
        assert!(f.t.is_activated());
    }
}

#[test]
fn a_ring_running_past_the_end_of_memory_is_invalid() {
    let mut f = fixture(&[256], false);
    negotiate(&mut f.t, V1);
    setup_queue(&mut f.t, 0, 256, MEM_SIZE as u64 - 0x1010);
    wr(&mut f.t, reg::STATUS, ALL_OK);
    assert!(!f.t.is_activated());
}

#[test]
fn failing_activation_sets_needs_reset() {
    let mut f = fixture(&[16], true);
    negotiate(&mut f.t, V1);
    setup_queue(&mut f.t, 0, 16, 0x1_0000);
    wr(&mut f.t, reg::STATUS, ALL_OK);
    assert!(!f.t.is_activated());
    assert_ne!(f.t.status() & status::DEVICE_NEEDS_RESET, 0);
}

#[test]
fn out_of_order_status_is_ignored_and_failed_sticks() {
    let mut f = fixture(&[16], false);
    wr(&mut f.t, reg::STATUS, status::DRIVER_OK);
    assert_eq!(f.t.status(), 0);
    wr(&mut f.t, reg::STATUS, status::ACKNOWLEDGE);
    wr(
        &mut f.t,
        reg::STATUS,
        status::ACKNOWLEDGE | status::FEATURES_OK,
    );
    assert_eq!(f.t.status(), status::ACKNOWLEDGE);
    wr(&mut f.t, reg::STATUS, status::FAILED);
    assert_ne!(f.t.status() & status::FAILED, 0);
    // Queue set-up before FEATURES_OK is ignored.
    setup_queue(&mut f.t, 0, 8, 0x1_0000);
    assert_eq!(rd(&mut f.t, reg::QUEUE_READY), 0);
    assert!(f.seen.lock().unwrap().activations.is_empty());
}

#[test]
fn interrupt_status_and_ack() {
    let mut f = fixture(&[16], false);
    f.t.interrupt().signal_used_queue().unwrap();
    assert_eq!(rd(&mut f.t, reg::INTERRUPT_STATUS), INT_VRING);
    wr(&mut f.t, reg::INTERRUPT_ACK, INT_VRING);
    assert_eq!(rd(&mut f.t, reg::INTERRUPT_STATUS), 0);
    f.t.interrupt().signal_config_change().unwrap();
    assert_eq!(rd(&mut f.t, reg::CONFIG_GENERATION), 1);
}

#[test]
fn config_space_any_width_and_bad_register_widths() {
    let mut f = fixture(&[16], false);
    let mut b = [0u8; 2];
    f.t.read(CONFIG_SPACE + 3, &mut b);
    assert_eq!(b, [13, 14]);
    let mut b = [0xffu8; 8];
    f.t.read(CONFIG_SPACE + 6, &mut b);
    assert_eq!(b, [16, 17, 0, 0, 0, 0, 0, 0]);
    f.t.write(CONFIG_SPACE + 1, &[9]);
    assert_eq!(f.seen.lock().unwrap().config_writes, vec![(1, vec![9])]);
    let mut b = [0xffu8; 2];
    f.t.read(reg::MAGIC, &mut b);
    assert_eq!(b, [0, 0]);
    f.t.write(reg::STATUS, &[1]);
    assert_eq!(f.t.status(), 0);
    f.t.write(reg::STATUS + 1, &[1, 0, 0, 0]);
    assert_eq!(f.t.status(), 0);
}

/// What the Dummy's config space holds (see `read_config`).
const DUMMY_CONFIG: [u8; 8] = [10, 11, 12, 13, 14, 15, 16, 17];
/// Every status bit the transport may show.
const STATUS_BITS: u32 = ALL_OK | status::DEVICE_NEEDS_RESET | status::FAILED;
/// The seed of the register storm.
const STORM_SEED: u64 = 0x1234_5678_9abc_def1;

/// Checks one read of `data.len()` bytes at `off` against what the registers may hold.
fn check_read(f: &Fixture, off: u64, data: &[u8], replay: &Replay) {
    if off >= CONFIG_SPACE {
        let start = (off - CONFIG_SPACE) as usize;
        let want: Vec<u8> = (start..start + data.len())
            .map(|i| DUMMY_CONFIG.get(i).copied().unwrap_or(0))
            .collect();
        assert_eq!(data, want, "{replay}: config read at {off:#x}");
        return;
    }
    if data.len() != 4 {
        assert!(
            data.iter().all(|&b| b == 0),
            "{replay}: {data:?} at {off:#x}"
        );
        return;
    }
    let v = u32::from_le_bytes(data.try_into().unwrap());
    let want = match off {
        reg::MAGIC => Some(MAGIC_VALUE),
        reg::VERSION => Some(MMIO_VERSION),
        reg::DEVICE_ID => Some(2),
        reg::VENDOR_ID => Some(VENDOR_ID),
        reg::STATUS => Some(f.t.status()),
        reg::INTERRUPT_STATUS => Some(f.t.interrupt().status()),
        _ => None,
    };
    if let Some(want) = want {
        assert_eq!(v, want, "{replay}: register {off:#x}");
    }
    if off == reg::QUEUE_NUM_MAX {
        assert!(v == 0 || v == 256, "{replay}: QueueNumMax {v}");
    }
}

/// The transport and the device agree, whatever the driver did.
fn check_consistent(f: &Fixture, replay: &Replay) {
    let status = f.t.status();
    let seen = f.seen.lock().unwrap();
    assert_eq!(status & !STATUS_BITS, 0, "{replay}: status {status:#x}");
    assert_eq!(seen.double_activations, 0, "{replay}: activated twice");
    assert_eq!(
        seen.active,
        f.t.is_activated(),
        "{replay}: device and transport"
    );
    if f.t.is_activated() {
        assert_ne!(
            status & status::DRIVER_OK,
            0,
            "{replay}: active without DRIVER_OK"
        );
    }
    if status & status::FEATURES_OK != 0 {
        let acked = seen.acked.expect("FEATURES_OK without acked features");
        assert_ne!(acked & V1, 0, "{replay}: FEATURES_OK without VERSION_1");
        assert_eq!(
            acked & !(V1 | 1 << 5),
            0,
            "{replay}: acked {acked:#x} not offered"
        );
    }
}

/// A write a driver might make, right or wrong: the next step of the status sequence,
/// the VERSION_1 feature, queue registers with plausible and implausible values.
fn driver_like_write(f: &mut Fixture, rng: &mut fastrand::Rng) {
    let next_status = match f.t.status() & !status::DEVICE_NEEDS_RESET {
        0 => 1,
        1 => 3,
        3 => 11,
        11 => ALL_OK,
        _ => 0,
    };
    let addr = [0x1_0000, 0x1_0008, MEM_SIZE as u32, rng.u32(..)];
    let (off, v) = match rng.u32(..10) {
        0..=2 => (reg::STATUS, next_status),
        3 => (reg::DRIVER_FEATURES_SEL, rng.u32(..2)),
        4 => (
            reg::DRIVER_FEATURES,
            [1, 1 << 5, rng.u32(..)][rng.usize(..3)],
        ),
        5 => (reg::QUEUE_SEL, rng.u32(..3)),
        6 => (reg::QUEUE_NUM, [0, 3, 128, 256, 512][rng.usize(..5)]),
        7 => (reg::QUEUE_READY, rng.u32(..2)),
        8 => (reg::QUEUE_DESC_LOW, addr[rng.usize(..4)]),
        _ => (QUEUE_NOTIFY, rng.u32(..3)),
    };
    wr(&mut f.t, off, v);
}

/// Random register accesses mixed with driver-like ones, so the storm walks the state
/// machine: every read returns what the register holds (or zeros for a bad width), the
/// transport and the device never disagree, and afterwards a reset and a proper
/// initialisation bring the device up.
#[test]
fn hostile_register_storm_keeps_the_transport_consistent() {
    let mut f = fixture(&[256, 256], false);
    let mut rng = seeded(STORM_SEED);
    let mut replay = Replay::new(STORM_SEED);
    let (mut reads, mut activated, mut broken) = (0, 0, 0);
    for round in 0..20_000 {
        replay.round = round;
        let off = rng.u64(..0x140) & !3;
        match rng.u32(..7) {
            0 => {
                let mut b = [0xaau8; 8];
                let len = rng.usize(1..=8);
                f.t.read(off, &mut b[..len]);
                check_read(&f, off, &b[..len], &replay);
                reads += 1;
            }
            1 | 2 => wr(&mut f.t, off, rng.u32(..)),
            _ => driver_like_write(&mut f, &mut rng),
        }
        check_consistent(&f, &replay);
        activated += usize::from(f.t.is_activated());
        broken += usize::from(f.t.status() & status::DEVICE_NEEDS_RESET != 0);
    }
    // The storm reached every state: reads, activations, and broken queue set-ups.
    let activations = f.seen.lock().unwrap().activations.len();
    assert!(
        reads > 1000 && activations >= 10 && activated > 0 && broken > 0,
        "seed {STORM_SEED:#x}: {reads} reads, {activations} activations, {activated} rounds \
         active and {broken} broken"
    );

    // Reset: nothing of the storm is left, and a driver brings the device up again.
    wr(&mut f.t, reg::STATUS, 0);
    assert_eq!(f.t.status(), 0);
    assert!(!f.t.is_activated());
    assert_eq!(f.t.interrupt().status() & INT_CONFIG, 0);
    let before = f.seen.lock().unwrap().activations.len();
    bring_up(&mut f.t);
    let seen = f.seen.lock().unwrap();
    assert_eq!(seen.activations.len(), before + 1);
    assert_eq!(
        seen.activations.last().unwrap().0,
        vec![(true, 128, 0x1_0000), (false, 256, 0)]
    );
    drop(seen);
    while f.t.queue_evts()[0].read().is_ok() {}
    wr(&mut f.t, QUEUE_NOTIFY, 0);
    assert_eq!(f.t.queue_evts()[0].read().unwrap(), 1);
}
