//! virtio-blk request handling against mock queues: no KVM.

use super::*;
use crate::devices::virtio::test_utils::{
    desc as d, guest_memory, Buf, RawDescriptor, TestQueue, F_INDIRECT, F_NEXT, F_WRITE,
};
use vm_memory::GuestAddress;

const MEM_SIZE: usize = 0x10_0000;
const HDR: u64 = 0x1_0000;
const DATA: u64 = 0x2_0000;
const STATUS: u64 = 0x3_0000;
const SECTORS: u64 = 16;

struct Fixture {
    mem: GuestMemoryMmap,
    path: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn fixture(tag: &str) -> Fixture {
    let mem = guest_memory(MEM_SIZE);
    let path = std::env::temp_dir().join(format!("runv-blk-{tag}-{}.img", std::process::id()));
    let image: Vec<u8> = (0..SECTORS * SECTOR_SIZE)
        .map(|i| (i / 512) as u8)
        .collect();
    std::fs::write(&path, image).unwrap();
    Fixture { mem, path }
}

fn disk(f: &Fixture, read_only: bool) -> Disk {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(&f.path)
        .unwrap();
    let mut id = [0u8; ID_BYTES];
    id[..4].copy_from_slice(b"vda0");
    Disk {
        file,
        read_only,
        capacity: SECTORS,
        id,
    }
}

fn header(mem: &GuestMemoryMmap, req_type: u32, sector: u64) {
    mem.write_obj(req_type, GuestAddress(HDR)).unwrap();
    mem.write_obj(0u32, GuestAddress(HDR + 4)).unwrap();
    mem.write_obj(sector, GuestAddress(HDR + 8)).unwrap();
    mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
}

/// Data descriptors of a test chain: (address, length, device-writable).
type Data<'a> = &'a [(u64, u32, bool)];

/// A well-formed chain: header, then `data` as (addr, len, write_only), then status.
fn chain(data: Data) -> Vec<RawDescriptor> {
    let mut bufs = vec![Buf::readable(HDR, 16)];
    bufs.extend(data.iter().map(|&(addr, len, w)| match w {
        true => Buf::writable(addr, len),
        false => Buf::readable(addr, len),
    }));
    bufs.push(Buf::writable(STATUS, 1));
    crate::devices::virtio::test_utils::chain(0, &bufs)
}

/// Runs `descs` through a BlockHandler; returns (used length, status byte, interrupt fired).
fn run(f: &Fixture, disk: Disk, descs: &[RawDescriptor]) -> (u32, u8, bool) {
    let tq = TestQueue::new(&f.mem, 0, 16);
    tq.add_raw(descs, 0);
    let queue = tq.queue();
    let interrupt = Arc::new(Interrupt::for_tests().unwrap());
    let mut h = BlockHandler {
        name: "virtio-blk test".into(),
        mem: f.mem.clone(),
        queue,
        queue_evt: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        interrupt: interrupt.clone(),
        disk,
        limiter: LogLimiter::new(),
    };
    h.process_queue().unwrap();
    let used = tq.used();
    assert_eq!(used.len(), 1, "every chain is returned to the driver");
    let status: u8 = f.mem.read_obj(GuestAddress(STATUS)).unwrap();
    (used[0].1, status, interrupt.irqfd().read().is_ok())
}

#[test]
fn read_returns_the_image_bytes() {
    let f = fixture("read");
    header(&f.mem, VIRTIO_BLK_T_IN, 3);
    let (len, status, irq) = run(&f, disk(&f, false), &chain(&[(DATA, 1024, true)]));
    assert_eq!((len, status, irq), (1025, VIRTIO_BLK_S_OK, true));
    let mut buf = [0u8; 1024];
    f.mem.read_slice(&mut buf, GuestAddress(DATA)).unwrap();
    assert!(buf[..512].iter().all(|&b| b == 3));
    assert!(buf[512..].iter().all(|&b| b == 4));
}

#[test]
fn write_lands_in_the_image_across_two_descriptors() {
    let f = fixture("write");
    header(&f.mem, VIRTIO_BLK_T_OUT, 2);
    f.mem.write_slice(&[0xaa; 512], GuestAddress(DATA)).unwrap();
    f.mem
        .write_slice(&[0xbb; 512], GuestAddress(DATA + 0x1000))
        .unwrap();
    let descs = chain(&[(DATA, 512, false), (DATA + 0x1000, 512, false)]);
    let (len, status, _) = run(&f, disk(&f, false), &descs);
    assert_eq!((len, status), (1, VIRTIO_BLK_S_OK));
    let image = std::fs::read(&f.path).unwrap();
    assert!(image[1024..1536].iter().all(|&b| b == 0xaa));
    assert!(image[1536..2048].iter().all(|&b| b == 0xbb));
    assert!(image[2048..2560].iter().all(|&b| b == 4));
}

#[test]
fn flush_and_get_id() {
    let f = fixture("flush");
    header(&f.mem, VIRTIO_BLK_T_FLUSH, 0);
    let (len, status, _) = run(&f, disk(&f, false), &chain(&[]));
    assert_eq!((len, status), (1, VIRTIO_BLK_S_OK));

    let f = fixture("getid");
    header(&f.mem, VIRTIO_BLK_T_GET_ID, 0);
    let (len, status, _) = run(&f, disk(&f, false), &chain(&[(DATA, 20, true)]));
    assert_eq!((len, status), (21, VIRTIO_BLK_S_OK));
    let mut id = [0u8; 20];
    f.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id[..5], b"vda0\0");
}

#[test]
fn read_only_disk_refuses_writes_and_keeps_its_bytes() {
    let f = fixture("ro");
    header(&f.mem, VIRTIO_BLK_T_OUT, 0);
    f.mem.write_slice(&[0xcc; 512], GuestAddress(DATA)).unwrap();
    let (len, status, _) = run(&f, disk(&f, true), &chain(&[(DATA, 512, false)]));
    assert_eq!((len, status), (1, VIRTIO_BLK_S_IOERR));
    assert!(std::fs::read(&f.path).unwrap()[..512]
        .iter()
        .all(|&b| b == 0));
}

#[test]
fn requests_past_the_end_fail() {
    let f = fixture("range");
    for (sector, len) in [(SECTORS, 512), (SECTORS - 1, 1024), (u64::MAX / 256, 512)] {
        header(&f.mem, VIRTIO_BLK_T_IN, sector);
        let (_, status, _) = run(&f, disk(&f, false), &chain(&[(DATA, len, true)]));
        assert_eq!(status, VIRTIO_BLK_S_IOERR, "sector {sector}");
    }
    // The last sector is fine.
    header(&f.mem, VIRTIO_BLK_T_IN, SECTORS - 1);
    let (_, status, _) = run(&f, disk(&f, false), &chain(&[(DATA, 512, true)]));
    assert_eq!(status, VIRTIO_BLK_S_OK);
}

#[test]
fn unknown_type_is_unsupported() {
    let f = fixture("unsupp");
    header(&f.mem, 0x1234, 0);
    let (_, status, _) = run(&f, disk(&f, false), &chain(&[]));
    assert_eq!(status, VIRTIO_BLK_S_UNSUPP);
}

#[test]
fn zero_length_partial_and_wrong_direction_data_fail() {
    let f = fixture("shape");
    let cases: [(u32, Data); 5] = [
        (VIRTIO_BLK_T_IN, &[(DATA, 0, true)]),
        (VIRTIO_BLK_T_IN, &[]),
        (VIRTIO_BLK_T_IN, &[(DATA, 100, true)]),
        (VIRTIO_BLK_T_IN, &[(DATA, 512, false)]),
        (VIRTIO_BLK_T_OUT, &[(DATA, 512, true)]),
    ];
    for (t, data) in cases {
        header(&f.mem, t, 0);
        let (_, status, _) = run(&f, disk(&f, false), &chain(data));
        assert_eq!(status, VIRTIO_BLK_S_IOERR, "type {t} data {data:?}");
    }
    // A device-writable header.
    header(&f.mem, VIRTIO_BLK_T_IN, 0);
    let mut descs = chain(&[(DATA, 512, true)]);
    descs[0] = d(HDR, 16, F_NEXT | F_WRITE, 1);
    assert_eq!(run(&f, disk(&f, false), &descs).1, VIRTIO_BLK_S_IOERR);
    // A short header.
    descs[0] = d(HDR, 8, F_NEXT, 1);
    assert_eq!(run(&f, disk(&f, false), &descs).1, VIRTIO_BLK_S_IOERR);
}

#[test]
fn a_read_only_status_descriptor_drops_the_request() {
    let f = fixture("status");
    header(&f.mem, VIRTIO_BLK_T_IN, 0);
    let mut descs = chain(&[(DATA, 512, true)]);
    descs[2] = d(STATUS, 1, 0, 0);
    let (len, status, _) = run(&f, disk(&f, false), &descs);
    assert_eq!((len, status), (0, 0xff), "nothing written");
}

#[test]
fn descriptors_outside_guest_memory_fail() {
    let f = fixture("oob");
    header(&f.mem, VIRTIO_BLK_T_IN, 0);
    let far = MEM_SIZE as u64 - 256;
    for data in [(far, 512u32), (u64::MAX - 100, 512), (0x4000_0000, 512)] {
        let (len, status, _) = run(&f, disk(&f, false), &chain(&[(data.0, data.1, true)]));
        assert_eq!((len, status), (1, VIRTIO_BLK_S_IOERR), "{data:x?}");
    }
    // Header outside memory.
    let mut descs = chain(&[(DATA, 512, true)]);
    descs[0] = d(u64::MAX - 8, 16, F_NEXT, 1);
    assert_eq!(run(&f, disk(&f, false), &descs).1, VIRTIO_BLK_S_IOERR);
    // Status outside memory: dropped, no write anywhere.
    let mut descs = chain(&[(DATA, 512, true)]);
    descs[2] = d(MEM_SIZE as u64, 1, F_WRITE, 0);
    assert_eq!(run(&f, disk(&f, false), &descs).0, 0);
}

#[test]
fn a_descriptor_loop_is_dropped_not_spun_on() {
    let f = fixture("loop");
    header(&f.mem, VIRTIO_BLK_T_IN, 0);
    let descs = [
        d(HDR, 16, F_NEXT, 1),
        d(DATA, 512, F_NEXT | F_WRITE, 2),
        d(STATUS, 1, F_NEXT | F_WRITE, 1),
    ];
    let (len, status, _) = run(&f, disk(&f, false), &descs);
    assert_eq!((len, status), (0, 0xff));
    // A chain pointing past the descriptor table ends there too.
    let descs = [d(HDR, 16, F_NEXT, 1), d(STATUS, 1, F_NEXT | F_WRITE, 999)];
    assert_eq!(run(&f, disk(&f, false), &descs).0, 0);
}

/// Writes discard segments (sector, sectors, flags) at DATA; returns the chain.
fn discard_chain(f: &Fixture, segs: &[(u64, u32, u32)]) -> Vec<RawDescriptor> {
    for (i, &(sector, num, flags)) in segs.iter().enumerate() {
        let at = DATA + 16 * i as u64;
        f.mem.write_obj(sector, GuestAddress(at)).unwrap();
        f.mem.write_obj(num, GuestAddress(at + 8)).unwrap();
        f.mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
    }
    chain(&[(DATA, 16 * segs.len() as u32, false)])
}

#[test]
fn discard_punches_holes_within_the_disk_only() {
    let f = fixture("discard");
    header(&f.mem, VIRTIO_BLK_T_DISCARD, 0);
    let descs = discard_chain(&f, &[(2, 2, 0), (8, 1, 1)]);
    let (len, status, _) = run(&f, disk(&f, false), &descs);
    assert_eq!((len, status), (1, VIRTIO_BLK_S_OK));
    let image = std::fs::read(&f.path).unwrap();
    assert_eq!(image.len() as u64, SECTORS * SECTOR_SIZE, "size kept");
    assert!(image[1024..2048].iter().all(|&b| b == 0));
    assert!(image[2048..2560].iter().all(|&b| b == 4));
    assert!(image[4096..4608].iter().all(|&b| b == 0));
    assert!(image[4608..5120].iter().all(|&b| b == 9));

    for (segs, ro) in [
        (vec![(SECTORS - 1, 2, 0)], false),  // past the end
        (vec![(u64::MAX / 2, 1, 0)], false), // overflow
        (vec![(0, 1, 2)], false),            // reserved flag
        (vec![(0, 1, 0); 17], false),        // more segments than offered
        (vec![(0, 1, 0)], true),             // read-only disk
    ] {
        header(&f.mem, VIRTIO_BLK_T_DISCARD, 0);
        let descs = discard_chain(&f, &segs);
        let (_, status, _) = run(&f, disk(&f, ro), &descs);
        assert_eq!(status, VIRTIO_BLK_S_IOERR, "{segs:?} ro={ro}");
    }
    assert!(std::fs::read(&f.path).unwrap()[..512]
        .iter()
        .all(|&b| b == 0));
}

#[test]
fn config_space_has_capacity_and_discard_limits() {
    let f = fixture("config");
    let cfg: super::super::BlockConfig = format!("path={}", f.path.display()).parse().unwrap();
    let dev = super::super::Block::new(&cfg).unwrap();
    use crate::devices::virtio::VirtioDevice;
    let mut b = [0u8; 8];
    dev.read_config(0, &mut b);
    assert_eq!(u64::from_le_bytes(b), SECTORS);
    let mut w = [0u8; 4];
    dev.read_config(40, &mut w);
    assert_eq!(u32::from_le_bytes(w), MAX_DISCARD_SEG);
    assert_ne!(
        dev.features() & (1 << 13),
        0,
        "DISCARD offered on a writable image"
    );
    let ro: super::super::BlockConfig = format!("path={},ro", f.path.display()).parse().unwrap();
    let dev = super::super::Block::new(&ro).unwrap();
    assert_eq!(dev.features() & (1 << 13), 0);
    assert_ne!(dev.features() & (1 << 5), 0);
}

#[test]
fn an_indirect_chain_is_served() {
    let f = fixture("indirect");
    header(&f.mem, VIRTIO_BLK_T_IN, 5);
    let table = 0x4_0000u64;
    let entries: [(u64, u32, u16, u16); 4] = [
        (HDR, 16, F_NEXT, 1),
        (DATA, 512, F_NEXT | F_WRITE, 2),
        (DATA + 0x1000, 512, F_NEXT | F_WRITE, 3),
        (STATUS, 1, F_WRITE, 0),
    ];
    for (i, (addr, len, flags, next)) in entries.into_iter().enumerate() {
        let at = table + 16 * i as u64;
        f.mem.write_obj(addr, GuestAddress(at)).unwrap();
        f.mem.write_obj(len, GuestAddress(at + 8)).unwrap();
        f.mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
        f.mem.write_obj(next, GuestAddress(at + 14)).unwrap();
    }
    let (len, status, _) = run(&f, disk(&f, false), &[d(table, 64, F_INDIRECT, 0)]);
    assert_eq!((len, status), (1025, VIRTIO_BLK_S_OK));
    let mut b = [0u8; 1];
    f.mem
        .read_slice(&mut b, GuestAddress(DATA + 0x1000))
        .unwrap();
    assert_eq!(b[0], 6);
}
