//! cgroup v2 cases of the agent suite. They need a pure cgroup v2 hierarchy, which the
//! guest has and this project's build host does not (hybrid v1): they run only against
//! a guest agent (RUNV_AGENT_TEST_VSOCK, tests/e2e/agent.sh), so they are `kvm_` tests,
//! ignored by a plain `cargo test`, and fail saying so when run without a guest agent.

mod harness;

use harness::{call, connect, require_guest, run, spec, Stdio};
use oci_spec::runtime::{LinuxResources, Spec};
use runv_agent_protocol::{ExitStatus, Request, Response};

fn with_resources(mut s: Spec, json: &str) -> Spec {
    let resources: LinuxResources = serde_json::from_str(json).unwrap();
    let linux = s.linux().clone().map(|mut l| {
        l.set_resources(Some(resources));
        l
    });
    s.set_linux(linux);
    s
}

#[test]
#[ignore = "needs KVM: cgroup v2 limits in a guest agent (tests/e2e/agent.sh)"]
fn kvm_a_pids_limit_stops_forks() {
    require_guest();
    let s = with_resources(
        spec(&[
            "sh",
            "-c",
            "for i in $(seq 1 40); do sleep 3 & done; wait; echo done",
        ]),
        r#"{"pids": {"limit": 10}}"#,
    );
    let o = run("pids", s, None);
    assert!(o.stderr.contains("fork"), "{:?} {:?}", o.status, o.stderr);
}

#[test]
#[ignore = "needs KVM: cgroup v2 limits in a guest agent (tests/e2e/agent.sh)"]
fn kvm_the_cpu_weight_is_set() {
    require_guest();
    let script = "p=$(cut -d: -f3 /proc/self/cgroup); cat /sys/fs/cgroup$p/cpu.weight 2>/dev/null || cat /sys/fs/cgroup/cpu.weight";
    let s = with_resources(spec(&["sh", "-c", script]), r#"{"cpu": {"shares": 512}}"#);
    let o = run("cpuw", s, None);
    assert_eq!(o.status, ExitStatus::Code(0), "{}", o.stderr);
    // libcontainer's (and runc 1.3's) log-scale shares-to-weight conversion maps
    // 1024 to 100 and 512 to 59; the default would be 100.
    assert_eq!(o.stdout.trim(), "59");
}

#[test]
#[ignore = "needs KVM: cgroup v2 limits in a guest agent (tests/e2e/agent.sh)"]
fn kvm_a_memory_limit_ooms_and_the_oom_is_reported() {
    require_guest();
    let id = "oom";
    let s = with_resources(
        spec(&[
            "sh",
            "-c",
            // dd's 100 MiB buffer cannot fit in 32 MiB: the OOM killer ends dd (137).
            "dd if=/dev/zero of=/dev/null bs=100M count=1; echo dd-exit=$?",
        ]),
        r#"{"memory": {"limit": 33554432, "swap": 33554432}}"#,
    );
    let mut c = connect();
    let io = Stdio::new(None, true);
    let r = call(
        &mut c,
        Request::CreateContainer {
            container_id: id.into(),
            spec: Box::new(s),
            rootfs: harness::rootfs(),
            stdio: io.ports,
        },
    );
    assert!(matches!(r, Ok(Response::Created { .. })), "{r:?}");
    call(
        &mut c,
        Request::StartContainer {
            container_id: id.into(),
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
    let (out, _) = io.finish();
    assert!(out.contains("dd-exit=137"), "{out:?} {r:?}");
    let stats = call(
        &mut c,
        Request::Stats {
            container_id: id.into(),
        },
    )
    .unwrap();
    match stats {
        Response::Stats { stats } => {
            assert!(stats.memory.oom_kills >= 1, "{stats:?} after {r:?}");
            assert_eq!(stats.memory.limit, Some(33_554_432));
        }
        other => panic!("{other:?}"),
    }
    call(
        &mut c,
        Request::DestroyContainer {
            container_id: id.into(),
        },
    )
    .unwrap();
}
