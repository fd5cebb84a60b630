//! The client side of the agent suite, written once for both transports:
//!
//! - host mode (default): the suite starts `runv-agent --listen unix:<dir>/agent.sock`
//!   with its own state and share directories, and builds a busybox rootfs in the share;
//! - guest mode (`RUNV_AGENT_TEST_VSOCK=<uds>`): the agent is a VM's PID 1, reached
//!   through runv-vmm's hybrid vsock socket (`CONNECT 1024`); `RUNV_AGENT_TEST_SHARE`
//!   is the host directory of the VM's virtio-fs share tagged `runv`.
//!
//! Either way, stdio port P is the host's Unix socket `<base>_<P>`, where the agent (or
//! the VMM on its behalf) connects.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::Duration;

use oci_spec::runtime::{LinuxBuilder, ProcessBuilder, RootBuilder, Spec, UserBuilder};
use runv_agent_protocol::{
    Client, ClientError, ExitStatus, Request, Response, ShareLocation, StdioPorts, StdioToken,
};

pub const TAG: &str = "runv";
const LIMIT: Duration = Duration::from_secs(20);

pub struct Env {
    /// Where the control socket is (host mode: the agent's; guest: the VMM's).
    pub control: PathBuf,
    pub hybrid: bool,
    /// Host directory of the share tagged `runv`.
    pub share: PathBuf,
    pub guest: bool,
    _agent: Option<Child>,
}

static ENV: OnceLock<Env> = OnceLock::new();
static SANDBOX: OnceLock<()> = OnceLock::new();
static PORT: AtomicU32 = AtomicU32::new(0);

/// The agent under test. Panics with the reason when there is none to test: a host-mode
/// agent needs root and /bin/busybox (busybox-static) for the rootfs.
pub fn env() -> &'static Env {
    ENV.get_or_init(|| {
        if let Ok(uds) = std::env::var("RUNV_AGENT_TEST_VSOCK") {
            let share = std::env::var("RUNV_AGENT_TEST_SHARE").expect(
                "RUNV_AGENT_TEST_SHARE (the guest's share directory) with RUNV_AGENT_TEST_VSOCK",
            );
            let env = Env {
                control: uds.into(),
                hybrid: true,
                share: share.into(),
                guest: true,
                _agent: None,
            };
            build_rootfs(&env.share.join("rootfs"));
            return env;
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            panic!(
                "the agent suite runs a host-mode runv-agent, which needs root \
                 (or RUNV_AGENT_TEST_VSOCK for a guest agent: tests/e2e/agent.sh)"
            );
        }
        if !Path::new("/bin/busybox").exists() {
            panic!(
                "the agent suite needs /bin/busybox for its rootfs: apt-get install busybox-static"
            );
        }
        let dir = std::env::temp_dir().join(format!("runv-agent-suite-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let share_root = dir.join("shares");
        let share = share_root.join(TAG);
        build_rootfs(&share.join("rootfs"));
        let control = dir.join("agent.sock");
        // The agent outlives no test run: a shell holds it and kills it when its stdin
        // (a pipe from this process) reaches EOF, i.e. when the test binary exits.
        let agent = Command::new("sh")
            .arg("-c")
            .arg(r#""$@" & agent=$!; cat >/dev/null; kill $agent; wait"#)
            .arg("sh")
            .arg(env!("CARGO_BIN_EXE_runv-agent"))
            .arg("--listen")
            .arg(format!("unix:{}", control.display()))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--share-dir")
            .arg(&share_root)
            .env(
                "RUNV_AGENT_LOG",
                std::env::var("RUNV_AGENT_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("starting runv-agent");
        for _ in 0..200 {
            if UnixStream::connect(&control).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Env {
            control,
            hybrid: false,
            share,
            guest: false,
            _agent: Some(agent),
        }
    })
}

/// For the cases that only a guest agent can run: panics unless the suite talks to one.
pub fn require_guest() {
    assert!(
        std::env::var_os("RUNV_AGENT_TEST_VSOCK").is_some(),
        "this case needs a guest agent (RUNV_AGENT_TEST_VSOCK): run it through tests/e2e/agent.sh"
    );
}

/// A busybox rootfs: /bin/busybox, its applet links, /etc/passwd, empty mount points.
fn build_rootfs(root: &Path) {
    if root.join("bin/busybox").exists() {
        return;
    }
    for d in [
        "bin",
        "etc",
        "proc",
        "sys",
        "dev",
        "tmp",
        "home/user",
        "root",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nuser:x:1000:\n").unwrap();
    let perm = std::os::unix::fs::PermissionsExt::from_mode(0o1777);
    std::fs::set_permissions(root.join("tmp"), perm).unwrap();
}

pub fn connect() -> Client<UnixStream> {
    let e = env();
    if e.hybrid {
        // The guest agent mounts the share once per VM (create_sandbox).
        SANDBOX.get_or_init(|| {
            let mut c = open(e);
            let r = call(
                &mut c,
                Request::CreateSandbox {
                    sandbox_id: "suite".into(),
                    hostname: "runv-sandbox".into(),
                    dns: Default::default(),
                    shares: vec![TAG.into()],
                },
            );
            assert!(matches!(r, Ok(Response::Ok)), "create_sandbox: {r:?}");
        });
    }
    open(e)
}

fn open(_: &Env) -> Client<UnixStream> {
    Client::connect_timeout(raw_stream(), "runv-agent suite", LIMIT).expect("handshake")
}

/// A stream to the agent before the handshake (through `CONNECT 1024` in guest mode).
pub fn raw_stream() -> UnixStream {
    let e = env();
    if e.hybrid {
        runv_hvsock::connect(&e.control, runv_agent_protocol::AGENT_VSOCK_PORT, LIMIT)
            .expect("hybrid vsock connect to the agent")
    } else {
        UnixStream::connect(&e.control).expect("connecting to the agent")
    }
}

pub fn call(c: &mut Client<UnixStream>, r: Request) -> Result<Response, ClientError> {
    // A nested guest (kvmbox: TCG, then KVM) is slow: waits get more time.
    let limit = if matches!(r, Request::WaitProcess { .. }) {
        LIMIT * 3
    } else {
        LIMIT
    };
    c.call_timeout(&r, limit)
}

/// A spec for the busybox rootfs running `args` (runc's defaults otherwise).
pub fn spec(args: &[&str]) -> Spec {
    let mut spec = Spec::default();
    let process = ProcessBuilder::default()
        .args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .env(vec!["PATH=/bin".to_string(), "HOME=/root".to_string()])
        .cwd("/")
        .user(UserBuilder::default().uid(0u32).gid(0u32).build().unwrap())
        .capabilities(
            spec.process()
                .as_ref()
                .unwrap()
                .capabilities()
                .clone()
                .unwrap(),
        )
        .rlimits(
            spec.process()
                .as_ref()
                .unwrap()
                .rlimits()
                .clone()
                .unwrap_or_default(),
        )
        .no_new_privileges(true)
        .build()
        .unwrap();
    spec.set_process(Some(process));
    spec.set_root(Some(
        RootBuilder::default()
            .path("rootfs")
            .readonly(false)
            .build()
            .unwrap(),
    ));
    spec.set_hostname(Some("runv-test".into()));
    let linux = spec
        .linux()
        .clone()
        .unwrap_or_else(|| LinuxBuilder::default().build().unwrap());
    spec.set_linux(Some(linux));
    spec
}

fn port() -> u32 {
    if PORT.load(Ordering::Relaxed) == 0 {
        let _ = PORT.compare_exchange(
            0,
            20_000 + (std::process::id() % 20_000) * 2,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
    PORT.fetch_add(1, Ordering::Relaxed)
}

/// The host side of one process's stdio.
pub struct Stdio {
    pub ports: StdioPorts,
    stdin: Option<JoinHandle<()>>,
    out: Option<JoinHandle<Vec<u8>>>,
    err: Option<JoinHandle<Vec<u8>>>,
    paths: Vec<PathBuf>,
}

fn listen(p: u32) -> (UnixListener, PathBuf) {
    let e = env();
    let path = runv_hvsock::port_path(&e.control, p);
    let _ = std::fs::remove_file(&path);
    (
        UnixListener::bind(&path).expect("binding a stdio socket"),
        path,
    )
}

impl Stdio {
    /// Listens for the process's streams. `input`: what stdin reads, then EOF (`None`:
    /// no stdin port). `stderr`: whether to wire stderr (not with a terminal).
    pub fn new(input: Option<Vec<u8>>, stderr: bool) -> Stdio {
        // As runv does: every stream must begin with the token (checked below).
        let token = StdioToken::random().expect("a stdio token");
        let mut s = Stdio {
            ports: StdioPorts {
                token: Some(token),
                ..StdioPorts::default()
            },
            stdin: None,
            out: None,
            err: None,
            paths: vec![],
        };
        if let Some(data) = input {
            let p = port();
            let (l, path) = listen(p);
            s.paths.push(path);
            s.ports.stdin = Some(p);
            s.stdin = Some(std::thread::spawn(move || {
                if let Ok((mut c, _)) = l.accept() {
                    assert!(
                        token.read_preamble(&mut c).expect("the stdin preamble"),
                        "the agent's stdin stream began with another token"
                    );
                    let _ = c.write_all(&data);
                    let _ = c.shutdown(std::net::Shutdown::Write);
                    // Hold the connection until the agent closes it (a PTY's stdin
                    // closing early would not matter, but keep it alike).
                    let _ = c.read_to_end(&mut Vec::new());
                }
            }));
        }
        let reader = |l: UnixListener| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Ok((mut c, _)) = l.accept() {
                    assert!(
                        token.read_preamble(&mut c).expect("the output preamble"),
                        "the agent's output stream began with another token"
                    );
                    let _ = c.read_to_end(&mut buf);
                }
                buf
            })
        };
        let p = port();
        let (l, path) = listen(p);
        s.paths.push(path);
        s.ports.stdout = Some(p);
        s.out = Some(reader(l));
        if stderr {
            let p = port();
            let (l, path) = listen(p);
            s.paths.push(path);
            s.ports.stderr = Some(p);
            s.err = Some(reader(l));
        }
        s
    }

    /// Everything written to stdout and stderr (the streams must have ended).
    pub fn finish(mut self) -> (String, String) {
        let out = self
            .out
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default();
        let err = self
            .err
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default();
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
        (
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )
    }
}

pub fn rootfs() -> ShareLocation {
    ShareLocation::new(TAG, "rootfs").unwrap()
}

pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Creates, starts and waits for a container, then destroys it.
pub fn run(id: &str, spec: Spec, input: Option<&[u8]>) -> Outcome {
    let mut c = connect();
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let stdio = Stdio::new(input.map(|i| i.to_vec()), !terminal);
    let created = call(
        &mut c,
        Request::CreateContainer {
            container_id: id.into(),
            spec: Box::new(spec),
            rootfs: rootfs(),
            stdio: stdio.ports,
        },
    );
    assert!(
        matches!(created, Ok(Response::Created { .. })),
        "create {id}: {created:?}"
    );
    let started = call(
        &mut c,
        Request::StartContainer {
            container_id: id.into(),
        },
    );
    assert!(
        matches!(started, Ok(Response::Ok)),
        "start {id}: {started:?}"
    );
    let status = match call(
        &mut c,
        Request::WaitProcess {
            container_id: id.into(),
            exec_id: None,
            kill_on_close: false,
        },
    ) {
        Ok(Response::Exited { status }) => status,
        other => panic!("wait {id}: {other:?}"),
    };
    let (stdout, stderr) = stdio.finish();
    let destroyed = call(
        &mut c,
        Request::DestroyContainer {
            container_id: id.into(),
        },
    );
    assert!(
        matches!(destroyed, Ok(Response::Ok)),
        "destroy {id}: {destroyed:?}"
    );
    Outcome {
        status,
        stdout,
        stderr,
    }
}

/// Creates `id` with `spec` and expects an error answer; returns it.
pub fn create_error(id: &str, spec: Spec) -> runv_agent_protocol::ErrorResponse {
    let mut c = connect();
    match call(
        &mut c,
        Request::CreateContainer {
            container_id: id.into(),
            spec: Box::new(spec),
            rootfs: rootfs(),
            stdio: StdioPorts::default(),
        },
    ) {
        Err(ClientError::Agent { error, .. }) => error,
        other => panic!("create {id} should fail: {other:?}"),
    }
}
