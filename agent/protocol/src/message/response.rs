//! Responses, agent to host. The host treats them as untrusted input.

use serde::{Deserialize, Serialize};

use super::request::Request;

/// Machine-readable class of an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No protocol version in common (handshake).
    UnsupportedVersion,
    /// A frame's length is over the limit.
    FrameTooLarge,
    /// A frame is empty, truncated, or its body is not JSON.
    MalformedFrame,
    /// A well-formed request whose `type` the agent does not know.
    UnknownRequest,
    /// A request with missing or ill-typed fields.
    InvalidRequest,
    /// A request whose content is refused: a bad spec field or value.
    InvalidArgument,
    /// No such container or process.
    NotFound,
    /// A container or exec id already in use.
    AlreadyExists,
    /// The container or process is not in a state that allows the request.
    InvalidState,
    /// Valid, but not supported by this agent or guest kernel.
    Unsupported,
    /// Anything else (a failed syscall, ...).
    Internal,
    /// A code from a newer agent that this side does not know.
    #[serde(other)]
    Unknown,
}

/// An error answer. `message` says what failed with which input; `field`, when
/// set, is the request or spec field at fault (`process.args`, `linux.seccomp`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ErrorResponse {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ErrorResponse {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorResponse {
            code,
            message: message.into(),
            field: None,
        }
    }

    /// An error about one field and its value.
    pub fn field(code: ErrorCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorResponse {
            code,
            message: message.into(),
            field: Some(field.into()),
        }
    }
}

/// How a process ended. `{"code": 0}` or `{"signal": 9}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    /// Exited with this code (0-255).
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl ExitStatus {
    /// The status as a shell reports it: the code, or 128 + the signal number.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

/// A container's status. OCI's states plus `paused` (as runc reports it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerStatus {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

/// What `State` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub id: String,
    pub status: ContainerStatus,
    /// Guest PID of the init process while it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The init's exit status once it has exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitStatus>,
}

/// cgroup v2 `cpu.stat` numbers, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuStats {
    pub usage_usec: u64,
    pub user_usec: u64,
    pub system_usec: u64,
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled_usec: u64,
}

/// cgroup v2 memory numbers, in bytes. `limit` absent means `max`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryStats {
    /// `memory.current`.
    pub usage: u64,
    /// `memory.peak` where the kernel has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_usage: Option<u64>,
    /// `memory.max`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// `memory.swap.current`.
    pub swap_usage: u64,
    /// `anon` and `file` from `memory.stat`.
    pub anon: u64,
    pub file: u64,
    /// `oom_kill` from `memory.events`.
    pub oom_kills: u64,
}

/// cgroup v2 pids numbers. `limit` absent means `max`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PidsStats {
    pub current: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// One process of a container as the guest's /proc shows it (what `runv ps` prints).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: u32,
    /// Real user id.
    pub uid: u32,
    /// The one-letter state of /proc/PID/stat (`R`, `S`, `D`, `Z`, `T`, ...).
    pub state: String,
    /// User plus system CPU time, in clock ticks (`utime + stime`).
    pub cpu_ticks: u64,
    /// The command line, arguments joined by spaces; `[comm]` when it is empty (a
    /// zombie or a kernel thread), as ps shows it.
    pub cmd: String,
}

/// What `Stats` answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerStats {
    pub cpu: CpuStats,
    pub memory: MemoryStats,
    pub pids: PidsStats,
}

/// A response. On the wire: a JSON object whose `type` is the snake_case variant
/// name, with the variant's fields beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// Done, nothing to report.
    Ok,
    /// `CreateContainer`: the init process exists (guest PID) and waits for start.
    Created { pid: u32 },
    /// `ExecProcess`: the process runs (guest PID).
    Started { pid: u32 },
    /// `WaitProcess`: the process has exited and its output is drained.
    Exited { status: ExitStatus },
    /// `State`.
    State { state: ContainerInfo },
    /// `ListProcesses`: guest PIDs, and what the guest's /proc says about each of them
    /// (empty from an agent that predates it; a process that exited between listing and
    /// reading has no entry).
    Processes {
        pids: Vec<u32>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        processes: Vec<ProcessInfo>,
    },
    /// `Stats`.
    Stats { stats: ContainerStats },
    /// Any request can fail.
    Error(ErrorResponse),
}

impl Response {
    /// The wire name of this response's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Response::Ok => "ok",
            Response::Created { .. } => "created",
            Response::Started { .. } => "started",
            Response::Exited { .. } => "exited",
            Response::State { .. } => "state",
            Response::Processes { .. } => "processes",
            Response::Stats { .. } => "stats",
            Response::Error(_) => "error",
        }
    }

    /// Shorthand for an error response.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Response::Error(ErrorResponse::new(code, message))
    }
}

impl Request {
    /// The response kind a successful answer to this request has.
    pub fn expected_response(&self) -> &'static str {
        match self {
            Request::CreateContainer { .. } => "created",
            Request::ExecProcess { .. } => "started",
            Request::WaitProcess { .. } => "exited",
            Request::State { .. } => "state",
            Request::ListProcesses { .. } => "processes",
            Request::Stats { .. } => "stats",
            Request::Ping
            | Request::CreateSandbox { .. }
            | Request::ConfigureNetwork { .. }
            | Request::StartContainer { .. }
            | Request::SignalProcess { .. }
            | Request::ResizeTty { .. }
            | Request::CloseStdin { .. }
            | Request::PauseContainer { .. }
            | Request::ResumeContainer { .. }
            | Request::UpdateContainer { .. }
            | Request::DestroyContainer { .. }
            | Request::Shutdown => "ok",
        }
    }

    /// True if `response` is a valid answer to this request: its expected kind,
    /// or an error.
    pub fn accepts(&self, response: &Response) -> bool {
        matches!(response, Response::Error(_)) || response.kind() == self.expected_response()
    }
}
