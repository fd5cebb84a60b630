//! virtio-fs request decoding over mock queues (no KVM): FUSE INIT, LOOKUP, reads and
//! writes, read-only shares, escapes from the shared directory, malformed chains, and the
//! device on a real event loop.

use std::ffi::CString;
use std::mem::size_of;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuse_backend_rs::abi::fuse_abi::{
    CreateIn, EntryOut, InHeader, InitIn, InitOut, MkdirIn, Opcode, OpenIn, OpenOut, OutHeader,
    WriteIn, WriteOut, KERNEL_VERSION,
};
use fuse_backend_rs::api::filesystem::FsOptions;
use virtio_queue::Queue;
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::tempdir::TempDir;

use super::handler::{QueueError, RequestHandler, BUDGET};
use super::{Fs, FsConfig, TAG_MAX};
use crate::devices::virtio::test_utils::{
    desc, guest_memory, Activation, Buf, TestQueue, F_INDIRECT, F_NEXT,
};
use crate::devices::virtio::{VirtioDevice, TYPE_FS};
use crate::event_loop::EventLoop;

const QSIZE: u16 = 16;
const REQ: u64 = 0x10_0000;
const REPLY: u64 = 0x20_0000;
const REPLY_LEN: u32 = 0x2_0000;
const ROOT: u64 = 1;

fn memory() -> GuestMemoryMmap {
    guest_memory(0x100_0000)
}

fn share(dir: &Path, read_only: bool) -> RequestHandler {
    let cfg = FsConfig {
        tag: "share".into(),
        path: dir.to_path_buf(),
        read_only,
    };
    RequestHandler::new(Arc::new(cfg.server().unwrap()), cfg.tag)
}

/// A FUSE request: header (with `len` filled in) + body.
fn request(opcode: Opcode, unique: u64, nodeid: u64, body: &[u8]) -> Vec<u8> {
    let header = InHeader {
        len: (size_of::<InHeader>() + body.len()) as u32,
        opcode: opcode as u32,
        unique,
        nodeid,
        // SAFETY: no preconditions; they only read the caller's ids.
        uid: unsafe { libc::geteuid() },
        // SAFETY: as above.
        gid: unsafe { libc::getegid() },
        pid: 1,
        padding: 0,
    };
    let mut out = header.as_slice().to_vec();
    out.extend_from_slice(body);
    out
}

fn cstr(name: &str) -> Vec<u8> {
    CString::new(name).unwrap().into_bytes_with_nul()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// One queue driven like a guest driver: each call puts one chain on the avail ring and
/// runs the handler over the queue.
struct Session<'a> {
    mem: &'a GuestMemoryMmap,
    tq: TestQueue<'a>,
    queue: Queue,
    unique: u64,
}

impl<'a> Session<'a> {
    fn new(mem: &'a GuestMemoryMmap) -> Self {
        let tq = TestQueue::new(mem, 0, QSIZE);
        let queue = tq.queue();
        Session {
            mem,
            tq,
            queue,
            unique: 0,
        }
    }

    /// Adds one chain and processes the queue. Returns the used length of the chain.
    fn chain(&mut self, h: &mut RequestHandler, bufs: &[Buf]) -> u32 {
        let used = self.tq.used_idx();
        let head = self.tq.add(bufs);
        h.process_queue(&mut self.queue, self.mem).unwrap();
        assert_eq!(self.tq.used_idx(), used + 1, "one chain used");
        let (id, len) = self.tq.last_used().unwrap();
        assert_eq!(id, u32::from(head));
        len
    }

    /// Sends a well-formed request; returns the reply header and body.
    fn call(
        &mut self,
        h: &mut RequestHandler,
        op: Opcode,
        nodeid: u64,
        body: &[u8],
    ) -> (OutHeader, Vec<u8>) {
        self.unique += 1;
        let req = request(op, self.unique, nodeid, body);
        self.mem.write_slice(&req, GuestAddress(REQ)).unwrap();
        let used = self.chain(
            h,
            &[
                Buf::readable(REQ, req.len() as u32),
                Buf::writable(REPLY, REPLY_LEN),
            ],
        );
        let out: OutHeader = self.mem.read_obj(GuestAddress(REPLY)).unwrap();
        assert_eq!(out.unique, self.unique);
        assert_eq!(out.len, used, "used length is the reply length");
        let body_len = used as usize - size_of::<OutHeader>();
        let mut body = vec![0u8; body_len];
        self.mem
            .read_slice(
                &mut body,
                GuestAddress(REPLY + size_of::<OutHeader>() as u64),
            )
            .unwrap();
        (out, body)
    }

    fn init(&mut self, h: &mut RequestHandler) -> InitOut {
        let init = InitIn {
            major: KERNEL_VERSION,
            minor: 31,
            max_readahead: 0x2_0000,
            flags: 0,
        };
        let (out, body) = self.call(h, Opcode::Init, 0, init.as_slice());
        assert_eq!(out.error, 0);
        *InitOut::from_slice(&body[..size_of::<InitOut>()]).unwrap()
    }

    fn lookup(&mut self, h: &mut RequestHandler, parent: u64, name: &str) -> Result<EntryOut, i32> {
        let (out, body) = self.call(h, Opcode::Lookup, parent, &cstr(name));
        if out.error != 0 {
            return Err(-out.error);
        }
        Ok(*EntryOut::from_slice(&body[..size_of::<EntryOut>()]).unwrap())
    }

    fn open(&mut self, h: &mut RequestHandler, nodeid: u64, flags: i32) -> Result<u64, i32> {
        let open = OpenIn {
            flags: flags as u32,
            fuse_flags: 0,
        };
        let (out, body) = self.call(h, Opcode::Open, nodeid, open.as_slice());
        if out.error != 0 {
            return Err(-out.error);
        }
        Ok(OpenOut::from_slice(&body[..size_of::<OpenOut>()])
            .unwrap()
            .fh)
    }
}

fn tempdir() -> TempDir {
    TempDir::new_with_prefix("/tmp/runv-virtiofs-").unwrap()
}

#[test]
fn init_is_answered() {
    let dir = tempdir();
    let mem = memory();
    let mut h = share(dir.as_path(), false);
    let mut s = Session::new(&mem);
    let init = s.init(&mut h);
    assert_eq!(init.major, KERNEL_VERSION);
    assert!(init.minor >= 31);
    assert!(init.max_write > 0);
}

#[test]
fn init_enables_big_writes_and_readdirplus_but_no_writeback() {
    let dir = tempdir();
    let mem = memory();
    let mut h = share(dir.as_path(), false);
    let mut s = Session::new(&mem);
    let offered = FsOptions::BIG_WRITES
        | FsOptions::MAX_PAGES
        | FsOptions::PARALLEL_DIROPS
        | FsOptions::DO_READDIRPLUS
        | FsOptions::WRITEBACK_CACHE
        | FsOptions::POSIX_LOCKS;
    let init = InitIn {
        major: KERNEL_VERSION,
        minor: 31,
        max_readahead: 0x2_0000,
        flags: offered.bits() as u32,
    };
    let (out, body) = s.call(&mut h, Opcode::Init, 0, init.as_slice());
    assert_eq!(out.error, 0);
    let reply = InitOut::from_slice(&body[..size_of::<InitOut>()]).unwrap();
    let enabled = FsOptions::from_bits_truncate(u64::from(reply.flags));
    assert!(enabled.contains(
        FsOptions::BIG_WRITES
            | FsOptions::MAX_PAGES
            | FsOptions::PARALLEL_DIROPS
            | FsOptions::DO_READDIRPLUS
    ));
    assert!(!enabled.intersects(FsOptions::WRITEBACK_CACHE | FsOptions::POSIX_LOCKS));
    // One request carries up to 1 MiB.
    assert_eq!(reply.max_write, 1 << 20);
    assert_eq!(reply.max_pages, 256);
}

#[test]
fn lookup_finds_a_host_file() {
    let dir = tempdir();
    std::fs::write(dir.as_path().join("hello.txt"), b"hello from the host").unwrap();
    let mem = memory();
    let mut h = share(dir.as_path(), false);
    let mut s = Session::new(&mem);
    s.init(&mut h);
    let entry = s.lookup(&mut h, ROOT, "hello.txt").unwrap();
    assert!(entry.nodeid > ROOT);
    assert_eq!(entry.attr.size, 19);
    assert_eq!(entry.attr.mode & libc::S_IFMT, libc::S_IFREG);
    // Short metadata timeouts: a host-side change is seen soon.
    assert_eq!(entry.attr_valid, 0);
    assert_eq!(entry.attr_valid_nsec, 500_000_000);
    assert_eq!(s.lookup(&mut h, ROOT, "missing").err(), Some(libc::ENOENT));
}

#[test]
fn read_write_share_creates_and_writes() {
    let dir = tempdir();
    let mem = memory();
    let mut h = share(dir.as_path(), false);
    let mut s = Session::new(&mem);
    s.init(&mut h);
    let create = CreateIn {
        flags: (libc::O_WRONLY | libc::O_CREAT) as u32,
        mode: 0o644,
        umask: 0o022,
        fuse_flags: 0,
    };
    let (out, body) = s.call(
        &mut h,
        Opcode::Create,
        ROOT,
        &cat(&[create.as_slice(), &cstr("new.txt")]),
    );
    assert_eq!(out.error, 0);
    let entry = EntryOut::from_slice(&body[..size_of::<EntryOut>()]).unwrap();
    let fh = OpenOut::from_slice(&body[size_of::<EntryOut>()..][..size_of::<OpenOut>()])
        .unwrap()
        .fh;
    let data = b"written by the guest";
    let write = WriteIn {
        fh,
        offset: 0,
        size: data.len() as u32,
        ..Default::default()
    };
    let (out, body) = s.call(
        &mut h,
        Opcode::Write,
        entry.nodeid,
        &cat(&[write.as_slice(), data]),
    );
    assert_eq!(out.error, 0);
    let written = WriteOut::from_slice(&body[..size_of::<WriteOut>()]).unwrap();
    assert_eq!(written.size as usize, data.len());
    assert_eq!(std::fs::read(dir.as_path().join("new.txt")).unwrap(), data);
}

#[test]
fn read_only_share_refuses_writes_with_erofs() {
    let dir = tempdir();
    std::fs::write(dir.as_path().join("file"), b"keep").unwrap();
    let mem = memory();
    let mut h = share(dir.as_path(), true);
    let mut s = Session::new(&mem);
    s.init(&mut h);

    let create = CreateIn {
        flags: (libc::O_WRONLY | libc::O_CREAT) as u32,
        mode: 0o644,
        umask: 0,
        fuse_flags: 0,
    };
    let (out, _) = s.call(
        &mut h,
        Opcode::Create,
        ROOT,
        &cat(&[create.as_slice(), &cstr("new")]),
    );
    assert_eq!(out.error, -libc::EROFS, "CREATE");

    let mkdir = MkdirIn {
        mode: 0o755,
        umask: 0,
    };
    let (out, _) = s.call(
        &mut h,
        Opcode::Mkdir,
        ROOT,
        &cat(&[mkdir.as_slice(), &cstr("dir")]),
    );
    assert_eq!(out.error, -libc::EROFS, "MKDIR");

    let file = s.lookup(&mut h, ROOT, "file").unwrap().nodeid;
    assert_eq!(s.open(&mut h, file, libc::O_WRONLY), Err(libc::EROFS));
    assert_eq!(s.open(&mut h, file, libc::O_RDWR), Err(libc::EROFS));
    assert_eq!(
        s.open(&mut h, file, libc::O_RDONLY | libc::O_TRUNC),
        Err(libc::EROFS)
    );
    // Reading is fine; a WRITE on the read-only handle is refused before the host sees it.
    let fh = s.open(&mut h, file, libc::O_RDONLY).unwrap();
    let write = WriteIn {
        fh,
        offset: 0,
        size: 4,
        ..Default::default()
    };
    let (out, _) = s.call(
        &mut h,
        Opcode::Write,
        file,
        &cat(&[write.as_slice(), b"gone"]),
    );
    assert_eq!(out.error, -libc::EROFS, "WRITE");
    let (out, _) = s.call(&mut h, Opcode::Unlink, ROOT, &cstr("file"));
    assert_eq!(out.error, -libc::EROFS, "UNLINK");

    let names: Vec<_> = std::fs::read_dir(dir.as_path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["file"]);
    assert_eq!(std::fs::read(dir.as_path().join("file")).unwrap(), b"keep");
}

#[test]
fn dotdot_from_the_root_stays_at_the_root() {
    let dir = tempdir();
    std::fs::create_dir(dir.as_path().join("sub")).unwrap();
    let mem = memory();
    let mut h = share(dir.as_path(), false);
    let mut s = Session::new(&mem);
    s.init(&mut h);
    assert_eq!(s.lookup(&mut h, ROOT, "..").unwrap().nodeid, ROOT);
    let sub = s.lookup(&mut h, ROOT, "sub").unwrap().nodeid;
    assert_eq!(s.lookup(&mut h, sub, "..").unwrap().nodeid, ROOT);
    // Names are single components: a path is refused, never walked on the host.
    assert_eq!(s.lookup(&mut h, sub, "../..").err(), Some(libc::EINVAL));
    assert_eq!(s.lookup(&mut h, ROOT, "../etc").err(), Some(libc::EINVAL));
}

#[test]
fn symlink_pointing_outside_is_not_followed_on_the_host() {
    let outside = tempdir();
    std::fs::write(outside.as_path().join("secret"), b"host secret").unwrap();
    let dir = tempdir();
    let target = outside.as_path().join("secret");
    symlink(&target, dir.as_path().join("abs")).unwrap();
    symlink("../../../../../../..", dir.as_path().join("up")).unwrap();
    let mem = memory();
    let mut h = share(dir.as_path(), false);
    let mut s = Session::new(&mem);
    s.init(&mut h);

    let link = s.lookup(&mut h, ROOT, "abs").unwrap();
    // The entry is the link itself, not the host file it names.
    assert_eq!(link.attr.mode & libc::S_IFMT, libc::S_IFLNK);
    assert_eq!(link.attr.size, target.as_os_str().len() as u64);
    // Opening the link does not reach the target.
    assert!(s.open(&mut h, link.nodeid, libc::O_RDONLY).is_err());
    // READLINK hands the text to the guest, which resolves it in its own namespace.
    let (out, body) = s.call(&mut h, Opcode::Readlink, link.nodeid, &[]);
    assert_eq!(out.error, 0);
    assert_eq!(body, target.as_os_str().as_encoded_bytes());

    let up = s.lookup(&mut h, ROOT, "up").unwrap();
    assert_eq!(up.attr.mode & libc::S_IFMT, libc::S_IFLNK);
    // A lookup below a symlink is a lookup in a non-directory.
    assert!(s.lookup(&mut h, up.nodeid, "etc").is_err());
}

/// Each malformed chain is returned with a used length of 0; the queue goes on.
#[test]
fn malformed_chains_fail_one_request_each() {
    let dir = tempdir();
    let mem = memory();
    let mut h = share(dir.as_path(), false);
    let mut s = Session::new(&mem);
    let lookup = request(Opcode::Lookup, 7, ROOT, &cstr("x"));
    mem.write_slice(&lookup, GuestAddress(REQ)).unwrap();
    let len = lookup.len() as u32;
    let reply = Buf::writable(REPLY, REPLY_LEN);

    // Header too short.
    assert_eq!(s.chain(&mut h, &[Buf::readable(REQ, 8), reply]), 0);
    // Zero-length request.
    assert_eq!(s.chain(&mut h, &[Buf::readable(REQ, 0), reply]), 0);
    // Out-of-bounds addresses, for the request and for the reply.
    assert_eq!(
        s.chain(&mut h, &[Buf::readable(0xffff_0000_0000, len), reply]),
        0
    );
    assert_eq!(
        s.chain(&mut h, &[Buf::readable(0xfff_fff0, 0x100), reply]),
        0
    );
    assert_eq!(
        s.chain(
            &mut h,
            &[Buf::readable(REQ, len), Buf::writable(1 << 40, REPLY_LEN)]
        ),
        0
    );
    // Wrong direction: the request in a device-writable buffer, or no writable reply.
    assert_eq!(s.chain(&mut h, &[Buf::writable(REQ, len)]), 0);
    assert_eq!(
        s.chain(
            &mut h,
            &[Buf::readable(REQ, len), Buf::readable(REPLY, REPLY_LEN)]
        ),
        0
    );
    // An indirect table outside guest memory.
    assert_eq!(
        s.chain(&mut h, &[Buf::with_flags(1 << 40, 64, F_INDIRECT)]),
        0
    );

    // The queue still serves a good request.
    let init = s.init(&mut h);
    assert_eq!(init.major, KERNEL_VERSION);
}

#[test]
fn a_descriptor_loop_ends() {
    let dir = tempdir();
    let mem = memory();
    let mut h = share(dir.as_path(), false);
    let tq = TestQueue::new(&mem, 0, QSIZE);
    let req = request(Opcode::Lookup, 1, ROOT, &cstr("x"));
    mem.write_slice(&req, GuestAddress(REQ)).unwrap();
    // Descriptor 0 chains to itself.
    tq.add_raw(&[desc(REQ, req.len() as u32, F_NEXT, 0)], 0);
    let mut q = tq.queue();
    h.process_queue(&mut q, &mem).unwrap();
    assert_eq!(tq.used_idx(), 1);
}

#[test]
fn a_full_queue_is_served_within_a_budget() {
    let dir = tempdir();
    let mem = memory();
    let mut h = share(dir.as_path(), false);
    const SIZE: u16 = 512;
    let mut tq = TestQueue::new(&mem, 0, SIZE);
    let req = request(Opcode::Getattr, 1, ROOT, &[0; 16]);
    mem.write_slice(&req, GuestAddress(REQ)).unwrap();
    // SIZE one-descriptor chains (each fails: no reply buffer, used length 0).
    for _ in 0..SIZE {
        tq.add(&[Buf::readable(REQ, req.len() as u32)]);
    }
    let mut q = tq.queue();
    let first = h.process_queue(&mut q, &mem).unwrap();
    assert!(first.more);
    assert_eq!(usize::from(tq.used_idx()), BUDGET);
    let second = h.process_queue(&mut q, &mem).unwrap();
    assert!(!second.more && second.notify);
    assert_eq!(tq.used_idx(), SIZE);
}

#[test]
fn a_runaway_avail_index_is_a_queue_error() {
    let dir = tempdir();
    let mem = memory();
    let mut h = share(dir.as_path(), false);
    let tq = TestQueue::new(&mem, 0, QSIZE);
    tq.mock().avail().idx().store(1000);
    let mut q = tq.queue();
    let err = h.process_queue(&mut q, &mem).unwrap_err();
    assert!(matches!(err, QueueError::Avail { .. }), "{err}");
    assert!(err.to_string().contains("virtio-fs share"));
}

#[test]
fn spec_parses_and_names_bad_input() {
    let cfg: FsConfig = "tag=root,path=/srv/share".parse().unwrap();
    assert_eq!(cfg.tag, "root");
    assert_eq!(cfg.path, Path::new("/srv/share"));
    assert!(!cfg.read_only);
    let cfg: FsConfig = "path=/a,ro,tag=x".parse().unwrap();
    assert!(cfg.read_only);
    crate::config::options::assert_refused::<FsConfig>(
        &super::OPTION,
        &[
            ("", "empty item"),
            ("tag=x", "path= is missing"),
            ("path=/a", "tag= is missing"),
            ("tag=,path=/a", "tag needs a value"),
            ("tag=x,path=", "path needs a value"),
            ("tag=x,tag=y,path=/a", "tag is given twice"),
            ("tag=x,path=/a,ro,ro", "ro is given twice"),
            ("tag=x,path=/a,rw", "unknown key \"rw\""),
            ("tag=x,path=/a,cache=always", "unknown key \"cache\""),
        ],
    );
    let long = format!("tag={},path=/a", "t".repeat(TAG_MAX + 1));
    let err = long.parse::<FsConfig>().unwrap_err().to_string();
    assert!(err.contains("is invalid: a tag is 1 to 36 bytes"), "{err}");
    let full = format!("tag={},path=/a", "t".repeat(TAG_MAX));
    assert_eq!(
        full.parse::<FsConfig>().unwrap().tag_bytes(),
        [b't'; TAG_MAX]
    );
}

#[test]
fn a_missing_or_non_directory_share_is_refused() {
    let dir = tempdir();
    std::fs::write(dir.as_path().join("file"), b"").unwrap();
    for (path, want) in [("missing", "shared directory"), ("file", "not a directory")] {
        let cfg = FsConfig {
            tag: "t".into(),
            path: dir.as_path().join(path),
            read_only: false,
        };
        let err = Fs::new(&cfg).err().unwrap().to_string();
        assert!(err.contains(want) && err.contains(path), "{err}");
    }
}

#[test]
fn config_space_has_the_tag_and_one_request_queue() {
    let dir = tempdir();
    let cfg = FsConfig {
        tag: "rootfs".into(),
        path: dir.as_path().to_path_buf(),
        read_only: true,
    };
    let mut fs = Fs::new(&cfg).unwrap();
    assert_eq!(fs.device_type(), TYPE_FS);
    assert_eq!(fs.queue_max_sizes().len(), 2);
    let mut config = [0xaau8; TAG_MAX + 8];
    config.fill(0);
    fs.read_config(0, &mut config);
    assert_eq!(&config[..6], b"rootfs");
    assert!(config[6..TAG_MAX].iter().all(|&b| b == 0));
    assert_eq!(&config[TAG_MAX..TAG_MAX + 4], &1u32.to_le_bytes());
    assert_eq!(&config[TAG_MAX + 4..], &[0; 4]);
    let mut one = [0u8; 1];
    fs.read_config(u64::MAX, &mut one);
    assert_eq!(one, [0]);
    // Config writes are ignored.
    fs.write_config(0, b"evil");
    fs.read_config(0, &mut config);
    assert_eq!(&config[..6], b"rootfs");
}

/// A read-write share of `dir`, tagged `t`, as the device.
fn fs_device(dir: &TempDir) -> Fs {
    let cfg = FsConfig {
        tag: "t".into(),
        path: dir.as_path().to_path_buf(),
        read_only: false,
    };
    Fs::new(&cfg).unwrap()
}

/// The device on a real event loop: activation registers the worker, a queue
/// notification gets a reply and an interrupt, reset removes the worker.
#[test]
fn device_serves_a_notified_queue_on_the_event_loop() {
    let dir = tempdir();
    let mem = memory();
    let mut fs = fs_device(&dir);
    let event_loop = EventLoop::start().unwrap();
    let hiprio = TestQueue::new(&mem, 0x4_0000, QSIZE);
    let mut requests = TestQueue::new(&mem, 0x8_0000, QSIZE);
    let init = InitIn {
        major: KERNEL_VERSION,
        minor: 31,
        max_readahead: 0,
        flags: 0,
    };
    let req = request(Opcode::Init, 42, 0, init.as_slice());
    mem.write_slice(&req, GuestAddress(REQ)).unwrap();
    requests.add(&[
        Buf::readable(REQ, req.len() as u32),
        Buf::writable(REPLY, REPLY_LEN),
    ]);
    let act = Activation::new(&mem, vec![hiprio.queue(), requests.queue()], &event_loop);
    fs.activate(act.args).unwrap();
    assert!(fs.is_active());
    assert_eq!(event_loop.handle().handler_count(), 1);
    act.kicks[1].write(1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while requests.used_idx() == 0 {
        assert!(Instant::now() < deadline, "no reply from the event loop");
        std::thread::sleep(Duration::from_millis(5));
    }
    let out: OutHeader = mem.read_obj(GuestAddress(REPLY)).unwrap();
    assert_eq!((out.unique, out.error), (42, 0));
    assert_eq!(act.interrupt.irqfd().read().unwrap(), 1);
    fs.reset();
    assert!(!fs.is_active());
    assert_eq!(event_loop.handle().handler_count(), 0);
    event_loop.stop();
}

#[test]
fn activation_with_the_wrong_queue_count_is_refused() {
    let dir = tempdir();
    let mem = memory();
    let mut fs = fs_device(&dir);
    let event_loop = EventLoop::start().unwrap();
    let queue = TestQueue::new(&mem, 0, QSIZE).queue();
    let act = Activation::new(&mem, vec![queue], &event_loop);
    let err = fs.activate(act.args).unwrap_err();
    assert!(err.to_string().contains("virtio-fs t"), "{err}");
    assert!(!fs.is_active());
    event_loop.stop();
}
