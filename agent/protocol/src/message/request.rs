//! Requests, host to agent.

use oci_spec::runtime::{LinuxResources, Process, Spec};
use serde::{Deserialize, Serialize};

use super::network::NetworkConfig;
use crate::share::ShareLocation;
use crate::stdio_token::StdioToken;

/// DNS configuration the agent writes to the guest's `/etc/resolv.conf`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    /// `nameserver` lines, in order.
    #[serde(default)]
    pub servers: Vec<String>,
    /// The `search` domains.
    #[serde(default)]
    pub searches: Vec<String>,
    /// The `options` entries (`ndots:5`, ...).
    #[serde(default)]
    pub options: Vec<String>,
}

/// The host-side vsock ports of one process's stdio streams. The agent connects to
/// the host (CID 2) at each port given; an absent port means the stream is not
/// wired (stdin reads EOF, output goes to `/dev/null`). With `terminal: true` the
/// PTY is relayed over `stdin` and `stdout`; `stderr` must then be absent. With a
/// `token`, the agent writes it first on every stream it connects (see
/// [`crate::stdio_token`]); runv always sends one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdioPorts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<StdioToken>,
}

/// A request. On the wire: a JSON object whose `type` is the snake_case variant
/// name, with the variant's fields beside it.
///
/// `exec_id: None` (or absent) names a container's init process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Liveness check. Answer: `Ok`.
    Ping,
    /// Prepares the guest for a sandbox: hostname, resolv.conf, and the virtio-fs
    /// shares to mount at `GUEST_SHARE_ROOT/<tag>`. Answer: `Ok`.
    CreateSandbox {
        sandbox_id: String,
        hostname: String,
        #[serde(default)]
        dns: DnsConfig,
        #[serde(default)]
        shares: Vec<String>,
    },
    /// Configures the guest's network before any container starts: each interface
    /// (the virtio-net device with its MAC) is renamed, given its MTU and addresses and
    /// brought up; then the routes and neighbours are added, and the DNS relay (if
    /// any) starts. The loopback is always up. Answer: `Ok`.
    ConfigureNetwork { network: NetworkConfig },
    /// Creates a container whose init process waits for `StartContainer`.
    /// `spec` is the already rewritten spec (see `rewrite`); `rootfs` is where its
    /// root filesystem is, and takes precedence over `spec.root.path`.
    /// Answer: `Created`.
    CreateContainer {
        container_id: String,
        spec: Box<Spec>,
        rootfs: ShareLocation,
        #[serde(default)]
        stdio: StdioPorts,
    },
    /// Lets a created container's init process run. Answer: `Ok`.
    StartContainer { container_id: String },
    /// Starts another process in a running container. Answer: `Started`.
    ExecProcess {
        container_id: String,
        exec_id: String,
        process: Box<Process>,
        #[serde(default)]
        stdio: StdioPorts,
    },
    /// Sends `signal` to a process, or with `all` to every process of the
    /// container (only with `exec_id` absent). Answer: `Ok`.
    SignalProcess {
        container_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exec_id: Option<String>,
        signal: i32,
        #[serde(default)]
        all: bool,
    },
    /// Blocks until the process has exited and its output streams are drained.
    /// Answer: `Exited`. With `kill_on_close`, the agent SIGKILLs the process if this
    /// connection closes before the exit is reported: a shim that dies takes its
    /// process with it.
    WaitProcess {
        container_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exec_id: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        kill_on_close: bool,
    },
    /// Answer: `State`.
    State { container_id: String },
    /// Answer: `Processes` (guest PIDs of every process in the container's cgroup).
    ListProcesses { container_id: String },
    /// Resizes a process's PTY. Answer: `Ok`.
    ResizeTty {
        container_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exec_id: Option<String>,
        rows: u16,
        cols: u16,
    },
    /// Closes a process's stdin (the process reads EOF). Answer: `Ok`.
    CloseStdin {
        container_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exec_id: Option<String>,
    },
    /// Cgroup statistics. Answer: `Stats`.
    Stats { container_id: String },
    /// Freezes the container's cgroup. Answer: `Ok`.
    PauseContainer { container_id: String },
    /// Thaws the container's cgroup. Answer: `Ok`.
    ResumeContainer { container_id: String },
    /// Applies new cgroup resources. Answer: `Ok`.
    UpdateContainer {
        container_id: String,
        resources: Box<LinuxResources>,
    },
    /// Removes a stopped container: kills what is left, removes its cgroup and
    /// mounts. Answer: `Ok`.
    DestroyContainer { container_id: String },
    /// Syncs filesystems and powers the VM off; the answer `Ok` is sent first.
    Shutdown,
}

impl Request {
    /// The wire name of this request's kind (its `type`).
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::CreateSandbox { .. } => "create_sandbox",
            Request::ConfigureNetwork { .. } => "configure_network",
            Request::CreateContainer { .. } => "create_container",
            Request::StartContainer { .. } => "start_container",
            Request::ExecProcess { .. } => "exec_process",
            Request::SignalProcess { .. } => "signal_process",
            Request::WaitProcess { .. } => "wait_process",
            Request::State { .. } => "state",
            Request::ListProcesses { .. } => "list_processes",
            Request::ResizeTty { .. } => "resize_tty",
            Request::CloseStdin { .. } => "close_stdin",
            Request::Stats { .. } => "stats",
            Request::PauseContainer { .. } => "pause_container",
            Request::ResumeContainer { .. } => "resume_container",
            Request::UpdateContainer { .. } => "update_container",
            Request::DestroyContainer { .. } => "destroy_container",
            Request::Shutdown => "shutdown",
        }
    }

    /// Every request kind's wire name.
    pub const KINDS: &'static [&'static str] = &[
        "ping",
        "create_sandbox",
        "configure_network",
        "create_container",
        "start_container",
        "exec_process",
        "signal_process",
        "wait_process",
        "state",
        "list_processes",
        "resize_tty",
        "close_stdin",
        "stats",
        "pause_container",
        "resume_container",
        "update_container",
        "destroy_container",
        "shutdown",
    ];

    /// The container this request is about, if any.
    pub fn container_id(&self) -> Option<&str> {
        match self {
            Request::Ping
            | Request::CreateSandbox { .. }
            | Request::ConfigureNetwork { .. }
            | Request::Shutdown => None,
            Request::CreateContainer { container_id, .. }
            | Request::StartContainer { container_id }
            | Request::ExecProcess { container_id, .. }
            | Request::SignalProcess { container_id, .. }
            | Request::WaitProcess { container_id, .. }
            | Request::State { container_id }
            | Request::ListProcesses { container_id }
            | Request::ResizeTty { container_id, .. }
            | Request::CloseStdin { container_id, .. }
            | Request::Stats { container_id }
            | Request::PauseContainer { container_id }
            | Request::ResumeContainer { container_id }
            | Request::UpdateContainer { container_id, .. }
            | Request::DestroyContainer { container_id } => Some(container_id),
        }
    }
}
