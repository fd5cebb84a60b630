//! The agent's container suite: real containers with a busybox rootfs, driven over the
//! agent protocol. Host mode by default: root and /bin/busybox (busybox-static) needed,
//! so every case is a `root_` test, ignored by a plain `cargo test` and run by
//! `cargo test -- --ignored root_` (scripts/test.sh). The same tests run against a guest
//! agent over hybrid vsock with RUNV_AGENT_TEST_VSOCK (tests/harness, tests/e2e/agent.sh).

mod harness;

use harness::{call, connect, create_error, env, run, spec, Stdio};
use oci_spec::runtime::{LinuxSeccomp, ProcessBuilder, UserBuilder};
use runv_agent_protocol::{ClientError, ErrorCode, ExitStatus, Request, Response};

fn sh(script: &str) -> oci_spec::runtime::Spec {
    spec(&["sh", "-c", script])
}

#[test]
#[ignore = "needs root: runs containers through a host-mode runv-agent"]
fn root_exit_codes_are_reported() {
    assert_eq!(run("exit0", sh("true"), None).status, ExitStatus::Code(0));
    assert_eq!(run("exit3", sh("exit 3"), None).status, ExitStatus::Code(3));
}

#[test]
#[ignore = "needs root: runs containers through a host-mode runv-agent"]
fn root_stdout_and_stderr_are_separate() {
    let o = run("sep", sh("echo out; echo err >&2; echo out2"), None);
    assert_eq!(o.status, ExitStatus::Code(0));
    assert_eq!(o.stdout, "out\nout2\n");
    assert_eq!(o.stderr, "err\n");
}

#[test]
#[ignore = "needs root: runs containers through a host-mode runv-agent"]
fn root_stdin_is_read_to_eof() {
    let o = run("stdin", spec(&["cat"]), Some(b"hello\nworld\n"));
    assert_eq!(o.status, ExitStatus::Code(0));
    assert_eq!(o.stdout, "hello\nworld\n");
}

#[test]
#[ignore = "needs root: runs containers through a host-mode runv-agent"]
fn root_reopening_dev_stdout_works() {
    let o = run(
        "reopen",
        sh("echo x > /dev/stdout; echo y > /dev/stderr; ls -l /proc/self/fd/1"),
        None,
    );
    assert_eq!(o.status, ExitStatus::Code(0), "{}", o.stderr);
    assert!(o.stdout.starts_with("x\n"), "{:?}", o.stdout);
    assert!(
        o.stdout.contains("pipe:"),
        "stdout is a pipe: {:?}",
        o.stdout
    );
    assert_eq!(o.stderr, "y\n");
}

#[test]
#[ignore = "needs root: runs containers through a host-mode runv-agent"]
fn root_a_terminal_process_gets_a_pty() {
    let mut s = sh("tty; [ -t 0 ] && [ -t 1 ] && echo both-tty; read line; echo got:$line");
    let p = s.process().clone().map(|mut p| {
        p.set_terminal(Some(true));
        p
    });
    s.set_process(p);
    let o = run("tty", s, Some(b"typed\n"));
    assert_eq!(o.status, ExitStatus::Code(0), "{:?}", o.stdout);
    assert!(o.stdout.contains("/dev/pts/"), "{:?}", o.stdout);
    assert!(o.stdout.contains("both-tty"), "{:?}", o.stdout);
    assert!(o.stdout.contains("got:typed"), "{:?}", o.stdout);
}

#[test]
#[ignore = "needs root: runs containers through a host-mode runv-agent"]
fn root_env_cwd_user_and_hostname_apply() {
    let mut s = sh("echo $FOO $(pwd) $(id -u):$(id -g):$(id -G) $(hostname)");
    let p = s.process().clone().map(|mut p| {
        p.set_env(Some(vec!["PATH=/bin".into(), "FOO=bar".into()]));
        p.set_cwd("/home/user".into());
        p.set_user(
            UserBuilder::default()
                .uid(1000u32)
                .gid(1000u32)
                .additional_gids(vec![1000u32, 5u32])
                .build()
                .unwrap(),
        );
        p
    });
    s.set_process(p);
    s.set_hostname(Some("box".into()));
    let o = run("envs", s, None);
    assert_eq!(o.status, ExitStatus::Code(0), "{}", o.stderr);
    assert_eq!(o.stdout, "bar /home/user 1000:1000:1000 5 box\n");
}

#[test]
#[ignore = "needs root: runs containers through a host-mode runv-agent"]
fn root_a_read_only_rootfs_refuses_writes() {
    let mut s = sh("touch /newfile");
    let root = s.root().clone().map(|mut r| {
        r.set_readonly(Some(true));
        r
    });
    s.set_root(root);
    let o = run("ro", s, None);
    assert_ne!(o.status, ExitStatus::Code(0));
    assert!(o.stderr.contains("Read-only file system"), "{:?}", o.stderr);
}

#[test]
#[ignore = "needs root: runs containers through a host-mode runv-agent"]
fn root_without_cap_net_raw_a_raw_socket_is_refused() {
    // runc's default capability set has no CAP_NET_RAW.
    let o = run("noraw", sh("ping -c 1 -W 1 127.0.0.1"), None);
    assert_ne!(o.status, ExitStatus::Code(0));
    assert!(
        o.stderr.to_lowercase().contains("permission denied"),
        "{:?}",
        o.stderr
    );
}

fn seccomp(json: &str) -> LinuxSeccomp {
    serde_json::from_str(json).unwrap()
}

fn with_seccomp(mut s: oci_spec::runtime::Spec, profile: LinuxSeccomp) -> oci_spec::runtime::Spec {
    let linux = s.linux().clone().map(|mut l| {
        l.set_seccomp(Some(profile));
        l
    });
    s.set_linux(linux);
    s
}

const DENY_MKDIR: &str = r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
  "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}"#;

#[test]
#[ignore = "needs root: runs containers through a host-mode runv-agent"]
fn root_a_seccomp_profile_denies_a_syscall() {
    let o = run(
        "seccomp",
        with_seccomp(sh("mkdir /tmp/d"), seccomp(DENY_MKDIR)),
        None,
    );
    assert_ne!(o.status, ExitStatus::Code(0));
    assert!(
        o.stderr.contains("Operation not permitted"),
        "{:?}",
        o.stderr
    );
}

#[test]
#[ignore = "needs root: runs containers through a host-mode runv-agent"]
fn root_unknown_seccomp_syscall_names_are_skipped() {
    let profile = r#"{"defaultAction": "SCMP_ACT_ALLOW",
      "syscalls": [{"names": ["no_such_syscall_xyz", "mkdirat", "mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}"#;
    let o = run(
        "seccomp-unknown",
        with_seccomp(sh("echo ran; mkdir /tmp/d"), seccomp(profile)),
        None,
    );
    assert_eq!(o.stdout, "ran\n");
    assert!(
        o.stderr.contains("Operation not permitted"),
        "{:?}",
        o.stderr
    );
}

#[test]
#[ignore = "needs root: runs containers through a host-mode runv-agent"]
fn root_signals_reach_the_process() {
    let mut c = connect();
    let stdio = Stdio::new(None, true);
    let created = call(
        &mut c,
        Request::CreateContainer {
            container_id: "sig".into(),
            spec: Box::new(sh("echo ready; touch /tmp/sig-ready; exec sleep 60")),
            rootfs: harness::rootfs(),
            stdio: stdio.ports,
        },
    );
    assert!(
        matches!(created, Ok(Response::Created { .. })),
        "{created:?}"
    );
    let state = call(
        &mut c,
        Request::State {
            container_id: "sig".into(),
        },
    )
    .unwrap();
    assert!(format!("{state:?}").contains("Created"), "{state:?}");
    call(
        &mut c,
        Request::StartContainer {
            container_id: "sig".into(),
        },
    )
    .unwrap();
    let state = call(
        &mut c,
        Request::State {
            container_id: "sig".into(),
        },
    )
    .unwrap();
    assert!(format!("{state:?}").contains("Running"), "{state:?}");
    // Killed only once "ready" is in the pipe (a slow guest may take a while to get there).
    let marker = env().share.join("rootfs/tmp/sig-ready");
    let t0 = std::time::Instant::now();
    while !marker.exists() && t0.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = std::fs::remove_file(&marker);
    call(
        &mut c,
        Request::SignalProcess {
            container_id: "sig".into(),
            exec_id: None,
            signal: 9,
            all: false,
        },
    )
    .unwrap();
    let r = call(
        &mut c,
        Request::WaitProcess {
            container_id: "sig".into(),
            exec_id: None,
            kill_on_close: false,
        },
    )
    .unwrap();
    assert_eq!(
        r,
        Response::Exited {
            status: ExitStatus::Signal(9)
        }
    );
    let (out, _) = stdio.finish();
    assert_eq!(out, "ready\n");
    let state = call(
        &mut c,
        Request::State {
            container_id: "sig".into(),
        },
    )
    .unwrap();
    assert!(format!("{state:?}").contains("Stopped"), "{state:?}");
    call(
        &mut c,
        Request::DestroyContainer {
            container_id: "sig".into(),
        },
    )
    .unwrap();
}

#[test]
#[ignore = "needs root: runs containers through a host-mode runv-agent"]
fn root_exec_joins_a_running_container() {
    let mut c = connect();
    let id = "execs";
    let init_io = Stdio::new(None, true);
    call(
        &mut c,
        Request::CreateContainer {
            container_id: id.into(),
            spec: Box::new(sh(
                "echo $$ > /tmp/init-pid; hostname > /tmp/h; exec sleep 60",
            )),
            rootfs: harness::rootfs(),
            stdio: init_io.ports,
        },
    )
    .unwrap();
    call(
        &mut c,
        Request::StartContainer {
            container_id: id.into(),
        },
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let io = Stdio::new(Some(b"from-stdin\n".to_vec()), true);
    let process = ProcessBuilder::default()
        .args(vec![
            "sh".into(),
            "-c".into(),
            "cat /tmp/init-pid; hostname; read l; echo $X $l; echo e >&2; exit 5".into(),
        ])
        .env(vec!["PATH=/bin".into(), "X=exec-env".into()])
        .cwd("/tmp")
        .user(UserBuilder::default().uid(0u32).gid(0u32).build().unwrap())
        .build()
        .unwrap();
    let r = call(
        &mut c,
        Request::ExecProcess {
            container_id: id.into(),
            exec_id: "e1".into(),
            process: Box::new(process),
            stdio: io.ports,
        },
    );
    assert!(matches!(r, Ok(Response::Started { .. })), "{r:?}");
    let r = call(
        &mut c,
        Request::WaitProcess {
            container_id: id.into(),
            exec_id: Some("e1".into()),
            kill_on_close: false,
        },
    )
    .unwrap();
    assert_eq!(
        r,
        Response::Exited {
            status: ExitStatus::Code(5)
        }
    );
    let (out, err) = io.finish();
    // The exec sees the init as PID 1 (same PID namespace) and the same hostname.
    assert_eq!(out, "1\nrunv-test\nexec-env from-stdin\n", "stderr: {err}");
    assert_eq!(err, "e\n");
    let pids = call(
        &mut c,
        Request::ListProcesses {
            container_id: id.into(),
        },
    )
    .unwrap();
    // The init (`exec sleep 60`) is listed, with what the guest's /proc says about it.
    let Response::Processes { pids, processes } = pids else {
        panic!("list_processes answered {pids:?}");
    };
    assert!(!pids.is_empty());
    assert!(
        processes
            .iter()
            .any(|p| p.cmd == "sleep 60" && pids.contains(&p.pid) && p.uid == 0),
        "{processes:?}"
    );
    call(
        &mut c,
        Request::SignalProcess {
            container_id: id.into(),
            exec_id: None,
            signal: 9,
            all: true,
        },
    )
    .unwrap();
    let r = call(
        &mut c,
        Request::WaitProcess {
            container_id: id.into(),
            exec_id: None,
            kill_on_close: false,
        },
    )
    .unwrap();
    assert_eq!(
        r,
        Response::Exited {
            status: ExitStatus::Signal(9)
        }
    );
    init_io.finish();
    call(
        &mut c,
        Request::DestroyContainer {
            container_id: id.into(),
        },
    )
    .unwrap();
}

#[test]
#[ignore = "needs root: runs containers through a host-mode runv-agent"]
fn root_exit_is_reported_a_second_after_a_descendant_keeps_stdout() {
    // The background sleep keeps stdout open; without a PID namespace it survives
    // the shell, so the agent reports the exit after its grace period.
    let mut s = sh("sleep 30 & echo started");
    let linux = s.linux().clone().map(|mut l| {
        let ns = l.namespaces().clone().map(|v| {
            v.into_iter()
                .filter(|n| n.typ() != oci_spec::runtime::LinuxNamespaceType::Pid)
                .collect()
        });
        l.set_namespaces(ns);
        l
    });
    s.set_linux(linux);
    let mut c = connect();
    let io = Stdio::new(None, true);
    call(
        &mut c,
        Request::CreateContainer {
            container_id: "grace".into(),
            spec: Box::new(s),
            rootfs: harness::rootfs(),
            stdio: io.ports,
        },
    )
    .unwrap();
    call(
        &mut c,
        Request::StartContainer {
            container_id: "grace".into(),
        },
    )
    .unwrap();
    let t0 = std::time::Instant::now();
    let r = call(
        &mut c,
        Request::WaitProcess {
            container_id: "grace".into(),
            exec_id: None,
            kill_on_close: false,
        },
    )
    .unwrap();
    let waited = t0.elapsed();
    assert_eq!(
        r,
        Response::Exited {
            status: ExitStatus::Code(0)
        }
    );
    // Not a timing test: at least the grace, and long before the descendant ends.
    assert!(
        waited >= std::time::Duration::from_millis(900)
            && waited < std::time::Duration::from_secs(20),
        "{waited:?}"
    );
    call(
        &mut c,
        Request::DestroyContainer {
            container_id: "grace".into(),
        },
    )
    .unwrap();
    drop(io);
}

fn expect_field(e: runv_agent_protocol::ErrorResponse, field: &str, value: &str) {
    assert_eq!(e.code, ErrorCode::InvalidArgument, "{e:?}");
    assert_eq!(e.field.as_deref(), Some(field), "{e:?}");
    assert!(e.message.contains(value), "{e:?}");
}

#[test]
#[ignore = "needs root: runs containers through a host-mode runv-agent"]
fn root_bad_specs_are_refused_naming_the_field_and_the_agent_keeps_serving() {
    expect_field(create_error("bad1", spec(&[])), "process.args", "empty");
    expect_field(
        create_error("bad2", spec(&["/bin/nosuchbinary"])),
        "process.args",
        "/bin/nosuchbinary",
    );
    let mut s = sh("true");
    let p = s.process().clone().map(|mut p| {
        p.set_cwd("/nonexistent".into());
        p
    });
    s.set_process(p);
    expect_field(create_error("bad3", s), "process.cwd", "/nonexistent");
    let mut s = sh("true");
    let p = s.process().clone().map(|mut p| {
        p.set_user(
            UserBuilder::default()
                .uid(u32::MAX)
                .gid(0u32)
                .build()
                .unwrap(),
        );
        p
    });
    s.set_process(p);
    expect_field(create_error("bad4", s), "process.user.uid", "4294967295");
    // Still serving, and the failed ids are free again.
    let mut c = connect();
    assert_eq!(call(&mut c, Request::Ping).unwrap(), Response::Ok);
    assert_eq!(run("bad1", sh("exit 0"), None).status, ExitStatus::Code(0));
}

/// Sends a hand-made create_container whose spec JSON is edited by `edit`.
fn raw_create(edit: impl FnOnce(&mut serde_json::Value)) -> runv_agent_protocol::ErrorResponse {
    let mut spec = serde_json::to_value(sh("true")).unwrap();
    edit(&mut spec);
    let frame = serde_json::json!({"id": 1, "request": {"type": "create_container", "container_id": "raw",
        "spec": spec, "rootfs": {"tag": harness::TAG, "subpath": "rootfs"}}});
    let mut s = harness::raw_stream();
    let max = runv_agent_protocol::MAX_FRAME_LEN;
    runv_agent_protocol::handshake::client_handshake(
        &mut s,
        runv_agent_protocol::SUPPORTED_VERSIONS,
        "raw",
        max,
    )
    .unwrap();
    runv_agent_protocol::frame::write_message(&mut s, &frame, "request", max).unwrap();
    let answer: runv_agent_protocol::ResponseFrame =
        runv_agent_protocol::frame::read_message(&mut s, "answer", max).unwrap();
    match answer.response {
        Response::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
#[ignore = "needs root: runs containers through a host-mode runv-agent"]
fn root_unknown_namespace_and_seccomp_values_are_refused_naming_them() {
    let e = raw_create(|s| s["linux"]["namespaces"] = serde_json::json!([{"type": "bogusns"}]));
    expect_field(e, "spec.linux.namespaces[0].type", "bogusns");
    let e = raw_create(|s| {
        s["linux"]["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_EXPLODE"})
    });
    expect_field(e, "spec.linux.seccomp.defaultAction", "SCMP_ACT_EXPLODE");
    let e = raw_create(|s| {
        s["linux"]["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]})
    });
    expect_field(e, "spec.linux.seccomp.architectures[0]", "SCMP_ARCH_VAX");
    let e = raw_create(|s| {
        s["linux"]["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"],
            "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_WHATEVER"}]}]})
    });
    expect_field(
        e,
        "spec.linux.seccomp.syscalls[0].args[0].op",
        "SCMP_CMP_WHATEVER",
    );
    // The connection and the agent keep serving.
    assert_eq!(call(&mut connect(), Request::Ping).unwrap(), Response::Ok);
}

#[test]
#[ignore = "needs root: runs containers through a host-mode runv-agent"]
fn root_unknown_containers_are_not_found() {
    let mut c = connect();
    match call(
        &mut c,
        Request::StartContainer {
            container_id: "nosuch".into(),
        },
    ) {
        Err(ClientError::Agent { error, .. }) => assert_eq!(error.code, ErrorCode::NotFound),
        other => panic!("{other:?}"),
    }
}

#[test]
#[ignore = "needs root: runs containers through a host-mode runv-agent"]
fn root_concurrent_creates_all_finish() {
    // Builds run in the agent's single-threaded builder process; creates from many
    // connections at once, while other processes' relays run, must all complete.
    let threads: Vec<_> = (0..6)
        .map(|i| {
            std::thread::spawn(move || {
                let o = run(&format!("par{i}"), sh(&format!("echo par{i}")), None);
                (i, o)
            })
        })
        .collect();
    for t in threads {
        let (i, o) = t.join().expect("a create thread panicked");
        assert_eq!(o.status, ExitStatus::Code(0), "par{i}");
        assert_eq!(o.stdout, format!("par{i}\n"), "par{i}");
    }
}

#[test]
#[ignore = "needs root: runs containers through a host-mode runv-agent"]
fn root_a_closed_waiting_connection_kills_the_process() {
    let mut c = connect();
    let id = "lifeline";
    let stdio = Stdio::new(None, true);
    call(
        &mut c,
        Request::CreateContainer {
            container_id: id.into(),
            spec: Box::new(sh("exec sleep 600")),
            rootfs: harness::rootfs(),
            stdio: stdio.ports,
        },
    )
    .unwrap();
    call(
        &mut c,
        Request::StartContainer {
            container_id: id.into(),
        },
    )
    .unwrap();
    // A shim's connection: it waits with kill_on_close, then dies without an answer.
    let mut shim = connect();
    shim.send(&Request::WaitProcess {
        container_id: id.into(),
        exec_id: None,
        kill_on_close: true,
    })
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(shim);
    let r = call(
        &mut c,
        Request::WaitProcess {
            container_id: id.into(),
            exec_id: None,
            kill_on_close: false,
        },
    )
    .unwrap();
    assert_eq!(
        r,
        Response::Exited {
            status: ExitStatus::Signal(9)
        }
    );
    drop(stdio.finish());
    call(
        &mut c,
        Request::DestroyContainer {
            container_id: id.into(),
        },
    )
    .unwrap();
}
