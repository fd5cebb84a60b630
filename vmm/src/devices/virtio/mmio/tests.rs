use super::*;
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
        self.seen
            .lock()
            .unwrap()
            .activations
            .push((qs, args.queue_evts.len()));
        Ok(())
    }
    fn reset(&mut self) {
        self.seen.lock().unwrap().resets += 1;
    }
}

struct Fixture {
    t: MmioTransport,
    seen: Arc<Mutex<Seen>>,
    _el: EventLoop,
}

fn fixture(sizes: &[u16], fail_activate: bool) -> Fixture {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
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
    negotiate(&mut f.t, V1);
    setup_queue(&mut f.t, 0, 128, 0x1_0000);
    wr(&mut f.t, reg::STATUS, ALL_OK);
    assert_eq!(f.t.status(), ALL_OK);
    assert!(f.t.is_activated());
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

#[test]
fn hostile_register_storm_never_panics() {
    let mut f = fixture(&[256, 256], false);
    let mut x: u64 = 0x1234_5678_9abc_def1;
    for _ in 0..20_000 {
        // xorshift: offsets, values and widths all over the window
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = ((x >> 8) % 0x140) & !3;
        let v = (x >> 20) as u32;
        let v = match x % 5 {
            0 => v & 0xff,
            1 => ALL_OK,
            _ => v,
        };
        if x % 7 == 0 {
            let mut b = [0u8; 8];
            let len = 1 + (x % 8) as usize;
            f.t.read(off, &mut b[..len]);
        } else {
            wr(&mut f.t, off, v);
        }
    }
}
