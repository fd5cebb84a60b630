use super::*;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};

#[test]
fn every_thread_has_a_filter_in_both_modes() {
    for mode in [Mode::Trap, Mode::Log] {
        let map = compile(mode).unwrap();
        for t in [
            Thread::Main,
            Thread::Vcpu,
            Thread::Devices,
            Thread::Supervisor,
        ] {
            assert!(!map.get(t.key()).unwrap().is_empty(), "{t:?} in {mode:?}");
        }
    }
    assert_eq!("log".parse::<Mode>().unwrap(), Mode::Log);
    assert!("strict".parse::<Mode>().unwrap_err().contains("strict"));
}

#[test]
fn the_lists_are_commented_and_name_each_call_once() {
    let json: serde_json::Value = serde_json::from_str(FILTERS).unwrap();
    for (thread, filter) in json.as_object().unwrap() {
        let rules = filter["filter"].as_array().unwrap();
        assert!(rules[0].get("comment").is_some(), "{thread}: first rule");
        // A call is listed once, but for rules on its arguments (one per allowed value).
        let names: Vec<&str> = rules
            .iter()
            .filter(|r| r.get("args").is_none())
            .map(|r| r["syscall"].as_str().unwrap())
            .collect();
        for (i, n) in names.iter().enumerate() {
            assert!(!names[..i].contains(n), "{thread}: {n} twice");
        }
        assert!(
            !names.contains(&"acct"),
            "{thread}: the selftest's call is allowed"
        );
        assert_eq!(filter["default_action"], "trap", "{thread}");
    }
}

#[test]
fn the_handler_formats_without_allocating() {
    let mut m = Message::default();
    m.push(b"n=");
    m.push_number(-163);
    m.push_number(0);
    assert_eq!(&m.buf[..m.len], b"n=-1630");
    let mut m = Message::default();
    m.push(&[b'x'; 200]);
    assert_eq!(m.len, 160);
}

/// The `ioctl` rules allow exactly the requests their comments name.
#[test]
fn ioctl_rules_allow_the_requests_they_name() {
    const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
        (dir << 30) | ((size as u64) << 16) | (0xAE << 8) | nr
    }
    let known = |name: &str| -> u64 {
        match name {
            "KVM_RUN" => ioc(0, 0x80, 0),
            "KVM_GET_REGS" => ioc(2, 0x81, std::mem::size_of::<kvm_bindings::kvm_regs>()),
            "TUNSETOFFLOAD" => libc::TUNSETOFFLOAD,
            "FIONBIO" => libc::FIONBIO,
            other => panic!("an ioctl rule names {other}, which this test does not know"),
        }
    };
    let json: serde_json::Value = serde_json::from_str(FILTERS).unwrap();
    let mut seen = 0;
    for (thread, filter) in json.as_object().unwrap() {
        for rule in filter["filter"].as_array().unwrap() {
            if rule["syscall"] != "ioctl" {
                continue;
            }
            let args = rule["args"]
                .as_array()
                .unwrap_or_else(|| panic!("{thread}: ioctl allowed whatever its request"));
            assert_eq!(args.len(), 1, "{thread}: {rule}");
            let a = &args[0];
            assert_eq!(
                (&a["index"], &a["type"], &a["op"]),
                (&1.into(), &"dword".into(), &"eq".into())
            );
            let name = a["comment"].as_str().unwrap();
            assert_eq!(a["val"].as_u64().unwrap(), known(name), "{thread}: {name}");
            seen += 1;
        }
    }
    assert_eq!(seen, 4);
}

/// Runs `call` in a child (under `thread`'s filter if given) and returns its exit status
/// and what it wrote to stderr.
fn in_child(thread: Option<Thread>, call: impl Fn()) -> (i32, String) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two fds.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: the child only installs the filter, makes the call and _exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: plain calls in the single-threaded child.
        unsafe {
            libc::dup2(fds[1], 2);
            if let Some(t) = thread {
                prepare(Mode::Trap).unwrap();
                apply(t).unwrap();
            }
            call();
            libc::_exit(0);
        }
    }
    // SAFETY: fds[1] is open and owned here; fds[0] is owned by the File.
    let mut rd = unsafe {
        libc::close(fds[1]);
        std::fs::File::from(OwnedFd::from_raw_fd(fds[0]))
    };
    let mut err = String::new();
    rd.read_to_string(&mut err).unwrap();
    let mut status = 0;
    // SAFETY: `status` is valid; `child` is this test's child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    assert!(libc::WIFEXITED(status), "{status:#x}");
    (libc::WEXITSTATUS(status), err)
}

fn forbidden_line(thread: &str, nr: libc::c_long) -> String {
    format!("runv-vmm: seccomp: thread {thread} made forbidden system call {nr}; exiting with status 5\n")
}

/// A thread under its filter that makes a forbidden call: the process exits with
/// EXIT_SECCOMP and stderr names the thread and the call. Without the filter the same
/// call returns (EPERM for a non-root caller or 0), so the check can fail.
#[test]
fn a_forbidden_call_ends_the_process_with_status_5_and_a_line() {
    // acct(NULL) turns process accounting off (a no-op when it is off).
    // SAFETY: acct with a null path has no memory effects.
    let acct = || unsafe {
        libc::syscall(libc::SYS_acct, std::ptr::null::<libc::c_char>());
    };
    assert_eq!(in_child(None, acct), (0, String::new()));
    assert_eq!(
        in_child(Some(Thread::Vcpu), acct),
        (EXIT_SECCOMP, forbidden_line("vcpu", libc::SYS_acct))
    );
}

/// An ioctl whose request is not listed traps like any forbidden call; a listed one
/// reaches the kernel (here it fails with EBADF, on a closed descriptor).
#[test]
fn an_unlisted_ioctl_request_traps() {
    // SAFETY: ioctls on descriptor -1 fail with EBADF and touch no memory.
    let listed = || unsafe {
        libc::ioctl(-1, 0xAE80, 0);
    };
    // SAFETY: as above; FIONREAD's pointer is never used on a bad descriptor.
    let unlisted = || unsafe {
        libc::ioctl(-1, libc::FIONREAD, 0);
    };
    assert_eq!(in_child(Some(Thread::Vcpu), listed), (0, String::new()));
    assert_eq!(in_child(None, unlisted), (0, String::new()));
    assert_eq!(
        in_child(Some(Thread::Vcpu), unlisted),
        (EXIT_SECCOMP, forbidden_line("vcpu", libc::SYS_ioctl))
    );
}
