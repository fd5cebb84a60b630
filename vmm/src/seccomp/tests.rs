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
        let names: Vec<&str> = rules
            .iter()
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

/// A thread under its filter that makes a forbidden call: the process exits with
/// EXIT_SECCOMP and stderr names the thread and the call. Without the filter the same
/// call returns (EPERM for a non-root caller or 0), so the check can fail.
#[test]
fn a_forbidden_call_ends_the_process_with_status_5_and_a_line() {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two fds.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let run = |filtered: bool| {
        // SAFETY: the child only installs the filter, makes the call and _exits.
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: plain calls in the single-threaded child.
            unsafe {
                libc::dup2(fds[1], 2);
                if filtered {
                    prepare(Mode::Trap).unwrap();
                    apply(Thread::Vcpu).unwrap();
                }
                // acct(NULL) turns process accounting off (a no-op when it is off).
                libc::syscall(libc::SYS_acct, std::ptr::null::<libc::c_char>());
                libc::_exit(0);
            }
        }
        let mut status = 0;
        // SAFETY: `status` is valid; `child` is this test's child.
        unsafe { libc::waitpid(child, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "{status:#x}");
        libc::WEXITSTATUS(status)
    };
    assert_eq!(run(false), 0);
    assert_eq!(run(true), EXIT_SECCOMP);
    // SAFETY: fds[1] is open and owned here; fds[0] is owned by the File.
    let mut rd = unsafe {
        libc::close(fds[1]);
        std::fs::File::from(OwnedFd::from_raw_fd(fds[0]))
    };
    let mut err = String::new();
    rd.read_to_string(&mut err).unwrap();
    assert_eq!(
        err,
        format!(
            "runv-vmm: seccomp: thread vcpu made forbidden system call {}; exiting with status 5\n",
            libc::SYS_acct
        )
    );
}
