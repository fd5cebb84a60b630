use super::*;
use crate::devices::virtio::fs::FsConfig;
use crate::devices::virtio::vsock::VsockConfig;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};

fn vm(dir: &Path) -> VmConfig {
    VmConfig {
        kernel: dir.join("vmlinux"),
        initrd: Some(dir.join("initrd")),
        cmdline: None,
        cpus: 1,
        memory_mib: 128,
        console: Console::File(dir.join("c/console.log")),
        console_limit: None,
        fs: vec![FsConfig {
            tag: "runv".into(),
            path: dir.join("c/share"),
            read_only: false,
        }],
        block: Vec::new(),
        vsock: Some(VsockConfig {
            cid: 3,
            uds: dir.join("c/vsock/v.sock"),
        }),
        net: Vec::new(),
    }
}

#[test]
fn the_jail_holds_the_vm_files_parents_first() {
    let spec = JailSpec::for_vm(&vm(Path::new("/r")), 4096).unwrap();
    let paths: Vec<_> = spec.exposed.iter().map(|e| e.path.clone()).collect();
    assert_eq!(
        paths,
        [
            "/dev/kvm",
            "/r/vmlinux",
            "/r/initrd",
            "/r/c/share",
            "/r/c/vsock",
            "/r/c/console.log"
        ]
        .map(PathBuf::from)
    );
    let by = |p: &str| {
        spec.exposed
            .iter()
            .find(|e| e.path == Path::new(p))
            .unwrap()
    };
    assert!(by("/dev/kvm").device);
    assert_eq!(by("/r/vmlinux").access, Access::ReadOnly);
    assert!(by("/r/c/share").recursive && by("/r/c/share").access == Access::ReadWrite);
    assert!(by("/r/c/console.log").create);
    assert!(spec.exposed.iter().filter(|e| e.device).count() == 1);
    assert_eq!(spec.open_files, 4096);
}

#[test]
fn paths_the_jail_cannot_hold_are_refused_by_name() {
    let e = jail_path(Path::new("/a/../etc/shadow"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/a/../etc/shadow") && e.contains(".."), "{e}");
    assert!(jail_path(Path::new("/")).is_err());
    assert_eq!(
        jail_path(Path::new("/a/./b")).unwrap(),
        PathBuf::from("/a/b")
    );
    let mut c = vm(Path::new("/r"));
    c.vsock = Some(VsockConfig {
        cid: 3,
        uds: "/v.sock".into(),
    });
    let e = JailSpec::for_vm(&c, 1).unwrap_err().to_string();
    assert!(e.contains("/v.sock"), "{e}");
    let mut c = vm(Path::new("/r"));
    c.initrd = Some("/r/vmlinux".into());
    let e = JailSpec::for_vm(&c, 1).unwrap_err().to_string();
    assert!(e.contains("/r/vmlinux") && e.contains("twice"), "{e}");
}

#[test]
fn relative_paths_become_the_absolute_ones_the_jail_binds() {
    let mut c = vm(Path::new("rel"));
    absolute_paths(&mut c).unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(c.kernel, cwd.join("rel/vmlinux"));
    assert_eq!(c.fs[0].path, cwd.join("rel/c/share"));
    assert_eq!(c.vsock.unwrap().uds, cwd.join("rel/c/vsock/v.sock"));
    assert_eq!(c.console, Console::File(cwd.join("rel/c/console.log")));
}

fn pipe() -> (std::fs::File, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two fds, which are owned by the Files below.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds are fresh and owned by nothing else.
    unsafe {
        (
            OwnedFd::from_raw_fd(fds[0]).into(),
            OwnedFd::from_raw_fd(fds[1]).into(),
        )
    }
}

fn run(cmd: &str, args: &[&str]) {
    let ok = std::process::Command::new(cmd)
        .args(args)
        .status()
        .unwrap()
        .success();
    assert!(ok, "{cmd} {args:?}");
}

/// What the jailed process reports about itself, one `key=value` per line.
fn inside(dir: &Path, go: &mut std::fs::File) -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}:\t")))
            .unwrap_or("?")
            .to_string()
    };
    let mut out = String::new();
    // SAFETY: getpid has no memory effects.
    out += &format!("pid={}\n", unsafe { libc::getpid() });
    for k in [
        "NoNewPrivs",
        "CapInh",
        "CapPrm",
        "CapEff",
        "CapBnd",
        "CapAmb",
    ] {
        out += &format!("{k}={}\n", field(k));
    }
    out += &format!("etc={}\n", Path::new("/etc/passwd").exists());
    out += &format!(
        "hostname={}\n",
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
    );
    let kernel = dir.join("vmlinux");
    out += &format!(
        "kernel_read={}\n",
        std::fs::read_to_string(&kernel).unwrap_or_default()
    );
    out += &format!(
        "kernel_write={}\n",
        std::fs::OpenOptions::new()
            .append(true)
            .open(&kernel)
            .is_ok()
    );
    out += &format!(
        "share_write={}\n",
        std::fs::write(dir.join("c/share/from-jail"), "x").is_ok()
    );
    out += &format!(
        "sysctl_write={}\n",
        std::fs::write("/proc/sys/kernel/core_pattern", "x").is_ok()
    );
    out += &format!(
        "mount={}\n",
        // SAFETY: valid C strings; the call is expected to fail (no CAP_SYS_ADMIN).
        unsafe {
            libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            )
        } == 0
    );
    let mut core = libc::rlimit {
        rlim_cur: 1,
        rlim_max: 1,
    };
    // SAFETY: `core` is valid for the call.
    unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut core) };
    out += &format!("core={}\n", core.rlim_max);
    // The test mounts a tmpfs under the share now; it must appear here.
    go.write_all(b"r").unwrap();
    let mark = dir.join("c/share/later/mark");
    let mut later = String::new();
    for _ in 0..100 {
        later = std::fs::read_to_string(&mark).unwrap_or_default();
        if !later.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    out += &format!("later_mount={later}\n");
    out
}

/// The jail as an attacker inside the VMM would find it: PID 1 of its own namespace,
/// no host tree, the kernel read-only, the share writable, /proc/sys read-only, no
/// mount, only the kept capabilities, no core dumps; a mount the host makes under the
/// share later appears inside.
#[test]
#[ignore = "needs root: namespaces, mounts and pivot_root"]
fn root_the_jail_holds_only_the_vm_files_and_few_capabilities() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("c/share")).unwrap();
    std::fs::create_dir_all(dir.join("c/vsock")).unwrap();
    std::fs::write(dir.join("vmlinux"), "kernel").unwrap();
    std::fs::write(dir.join("initrd"), "initrd").unwrap();
    let share = dir.join("c/share");
    let s = share.to_str().unwrap();
    // A shared mount, as a host with systemd has: later mounts propagate.
    run("mount", &["--bind", s, s]);
    run("mount", &["--make-shared", s]);
    let mut spec = JailSpec::for_vm(&vm(dir), 512).unwrap();
    // This host's /dev/kvm may be missing or unusable; /dev/null is a device node too.
    spec.exposed[0].path = "/dev/null".into();
    let (mut rd, mut wr) = pipe();
    let (mut ready_rd, mut ready_wr) = pipe();
    // SAFETY: the child only runs the jail and the checks, then _exits; it is a copy of
    // this process with one thread.
    let child = unsafe { libc::fork() };
    if child == 0 {
        drop(rd);
        drop(ready_rd);
        let code = match enter(&spec) {
            Ok(()) => {
                let out = inside(dir, &mut ready_wr);
                let _ = wr.write_all(out.as_bytes());
                0
            }
            Err(e) => {
                let _ = wr.write_all(format!("error={e}\n").as_bytes());
                1
            }
        };
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    drop(wr);
    drop(ready_wr);
    let mut b = [0u8; 1];
    let ready = ready_rd.read(&mut b).unwrap_or(0) == 1;
    let later = share.join("later");
    std::fs::create_dir_all(&later).unwrap();
    run("mount", &["-t", "tmpfs", "later", later.to_str().unwrap()]);
    std::fs::write(later.join("mark"), "appeared").unwrap();
    let mut out = String::new();
    rd.read_to_string(&mut out).unwrap();
    let mut status = 0;
    // SAFETY: `status` is valid; `child` is this test's child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    run("umount", &[later.to_str().unwrap()]);
    run("umount", &[s]);
    assert!(ready, "{out}");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{out}"
    );
    let kept: u64 = caps::KEPT.iter().map(|c| 1u64 << c.index()).sum();
    let want = [
        "pid=1".to_string(),
        "NoNewPrivs=1".into(),
        "CapInh=0000000000000000".into(),
        format!("CapPrm={kept:016x}"),
        format!("CapEff={kept:016x}"),
        format!("CapBnd={kept:016x}"),
        "CapAmb=0000000000000000".into(),
        "etc=false".into(),
        "hostname=runv-vmm".into(),
        "kernel_read=kernel".into(),
        "kernel_write=false".into(),
        "share_write=true".into(),
        "sysctl_write=false".into(),
        "mount=false".into(),
        "core=0".into(),
        "later_mount=appeared".into(),
    ];
    for w in want {
        assert!(out.lines().any(|l| l == w), "want {w} in:\n{out}");
    }
    assert_eq!(
        std::fs::read_to_string(share.join("from-jail")).unwrap(),
        "x"
    );
}
