//! Per-thread seccomp filters, compiled with rust-vmm's `seccompiler` from the allow-lists
//! in `x86_64.json` (data, with a comment per syscall group; how they were derived is in
//! docs/security.md).
//!
//! Each thread installs its own filter once its set-up is done: the device thread when
//! it starts, each vCPU thread before its first KVM_RUN, the main thread once the vCPUs
//! run, the jail's supervisor before it waits. A call outside a thread's list raises
//! SIGSYS; [`install_sigsys_handler`]'s handler writes the thread's name and the call's
//! number to stderr (vmm.log under runv) and exits with [`EXIT_SECCOMP`].

use seccompiler::{BpfMap, TargetArch};
use std::cell::Cell;
use std::str::FromStr;
use std::sync::OnceLock;

/// runv-vmm's exit status when a thread made a system call its filter forbids.
pub const EXIT_SECCOMP: i32 = 5;

const FILTERS: &str = include_str!("x86_64.json");

/// What the filters do with a call outside the lists (`--seccomp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// SIGSYS: logged, then the VMM exits with [`EXIT_SECCOMP`]. The default.
    Trap,
    /// Allowed, and reported by the kernel's audit log (`dmesg`): for finding what a
    /// new code path calls.
    Log,
    /// No filters.
    Off,
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "trap" => Ok(Mode::Trap),
            "log" => Ok(Mode::Log),
            "off" => Ok(Mode::Off),
            other => Err(format!("--seccomp {other}: expected trap, log or off")),
        }
    }
}

/// The threads that have a filter of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thread {
    /// The main thread, once the VM runs: waits for the end and stops the rest.
    Main,
    /// A vCPU thread: KVM_RUN and the MMIO/PIO exits it handles.
    Vcpu,
    /// The device event loop: virtio queues, virtio-fs, vsock, net, block.
    Devices,
    /// The jail's supervisor outside the PID namespace.
    Supervisor,
}

impl Thread {
    fn key(self) -> &'static str {
        match self {
            Thread::Main => "main",
            Thread::Vcpu => "vcpu",
            Thread::Devices => "devices",
            Thread::Supervisor => "supervisor",
        }
    }
}

/// A filter that cannot be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The JSON allow-lists do not compile (a bug in x86_64.json).
    #[error("seccomp: compiling the filters: {0}")]
    Compile(String),
    /// No filter for a thread kind in the JSON.
    #[error("seccomp: no filter named {0:?}")]
    Missing(&'static str),
    /// The kernel refused the filter.
    #[error("seccomp: installing the {thread} filter: {reason}")]
    Apply {
        /// Which filter.
        thread: &'static str,
        /// Cause.
        reason: String,
    },
    /// The SIGSYS handler cannot be installed.
    #[error("seccomp: installing the SIGSYS handler: {0}")]
    Handler(std::io::Error),
}

static MODE: OnceLock<Mode> = OnceLock::new();
static COMPILED: OnceLock<Result<BpfMap, String>> = OnceLock::new();

/// Compiles the filters for `mode` and turns them on for [`apply`]; call once, before
/// any thread starts. Without it, [`apply`] does nothing.
pub fn prepare(mode: Mode) -> Result<(), Error> {
    let _ = MODE.set(mode);
    if mode == Mode::Off {
        return Ok(());
    }
    if mode == Mode::Trap {
        install_sigsys_handler()?;
    }
    compiled().map(|_| ())
}

fn compiled() -> Result<&'static BpfMap, Error> {
    let mode = *MODE.get().unwrap_or(&Mode::Trap);
    COMPILED
        .get_or_init(|| compile(mode))
        .as_ref()
        .map_err(|e| Error::Compile(e.clone()))
}

/// Compiles the JSON lists; in [`Mode::Log`] every default action becomes `log`.
pub fn compile(mode: Mode) -> Result<BpfMap, String> {
    let mut json: serde_json::Value = serde_json::from_str(FILTERS).map_err(|e| e.to_string())?;
    if mode == Mode::Log {
        if let Some(map) = json.as_object_mut() {
            for filter in map.values_mut() {
                filter["default_action"] = "log".into();
            }
        }
    }
    let text = json.to_string();
    seccompiler::compile_from_json(text.as_bytes(), TargetArch::x86_64).map_err(|e| e.to_string())
}

thread_local! {
    /// The thread's filter name, for the SIGSYS handler (a const initializer: reading it
    /// in a signal handler allocates nothing).
    static NAME: Cell<[u8; 16]> = const { Cell::new([0; 16]) };
}

/// Installs the filter of `thread` on the calling thread (nothing in [`Mode::Off`]).
pub fn apply(thread: Thread) -> Result<(), Error> {
    // Only a VMM that called `prepare` filters its threads (not, say, unit tests).
    if MODE.get().copied().unwrap_or(Mode::Off) == Mode::Off {
        return Ok(());
    }
    let key = thread.key();
    let mut name = [0u8; 16];
    name[..key.len()].copy_from_slice(key.as_bytes());
    NAME.with(|n| n.set(name));
    let filter = compiled()?.get(key).ok_or(Error::Missing(key))?;
    seccompiler::apply_filter(filter).map_err(|e| Error::Apply {
        thread: key,
        reason: e.to_string(),
    })
}

/// [`apply`], then the selftest point; a filter that cannot be installed ends the VMM
/// (status 1) rather than leave a thread unfiltered.
pub fn apply_or_exit(thread: Thread) {
    if let Err(e) = apply(thread) {
        eprintln!("runv-vmm: {e}");
        std::process::exit(1);
    }
    selftest_point(thread);
}

/// The jail's supervisor: no capability, and its own filter.
pub fn confine_supervisor() -> Result<(), Error> {
    crate::jail::caps::drop_everything().map_err(|e| Error::Apply {
        thread: "supervisor",
        reason: e.to_string(),
    })?;
    apply(Thread::Supervisor)
}

/// Installs the SIGSYS handler that reports a forbidden call and exits.
pub fn install_sigsys_handler() -> Result<(), Error> {
    // SAFETY: sigaction with a zeroed struct, the handler's address and SA_SIGINFO; the
    // handler only calls async-signal-safe functions (write, _exit).
    let rc = unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_sigsys as *const () as usize;
        act.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaction(libc::SIGSYS, &act, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(Error::Handler(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Offset of `si_syscall` in a SIGSYS siginfo on x86_64: after si_signo, si_errno,
/// si_code, padding (16 bytes) and si_call_addr (8).
const SI_SYSCALL_OFFSET: usize = 24;

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers; for SIGSYS the
    // union holds si_call_addr then si_syscall (an int) at SI_SYSCALL_OFFSET.
    let nr = unsafe {
        info.cast::<u8>()
            .add(SI_SYSCALL_OFFSET)
            .cast::<i32>()
            .read_unaligned()
    };
    let name = NAME.with(Cell::get);
    let mut msg = Message::default();
    msg.push(b"runv-vmm: seccomp: thread ");
    msg.push(name.split(|&b| b == 0).next().unwrap_or(b"?"));
    msg.push(b" made forbidden system call ");
    msg.push_number(nr);
    msg.push(b"; exiting with status 5\n");
    // SAFETY: write and _exit are async-signal-safe; `msg` is a valid buffer.
    unsafe {
        libc::write(2, msg.buf.as_ptr().cast(), msg.len);
        libc::_exit(EXIT_SECCOMP);
    }
}

/// A fixed buffer a signal handler can format into without allocating.
struct Message {
    buf: [u8; 160],
    len: usize,
}

impl Default for Message {
    fn default() -> Self {
        Message {
            buf: [0; 160],
            len: 0,
        }
    }
}

impl Message {
    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn push_number(&mut self, n: i32) {
        let mut digits = [0u8; 12];
        let mut i = digits.len();
        let mut v = i64::from(n).unsigned_abs();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        if n < 0 {
            i -= 1;
            digits[i] = b'-';
        }
        self.push(&digits[i..]);
    }
}

/// `--seccomp-selftest THREAD` (the `seccomp-selftest` feature only): the named thread
/// calls `acct(2)`, which no filter allows, once its filter is on.
#[cfg(feature = "seccomp-selftest")]
pub fn selftest_point(thread: Thread) {
    if std::env::var("RUNV_VMM_SECCOMP_SELFTEST").ok().as_deref() == Some(thread.key()) {
        // SAFETY: acct(NULL) would only turn process accounting off; the filter stops it.
        unsafe { libc::syscall(libc::SYS_acct, std::ptr::null::<libc::c_char>()) };
    }
}

/// Without the `seccomp-selftest` feature: nothing.
#[cfg(not(feature = "seccomp-selftest"))]
pub fn selftest_point(_thread: Thread) {}

#[cfg(test)]
mod tests;
