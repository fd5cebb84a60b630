//! Kicking a vCPU thread out of `KVM_RUN` with one signal.
//!
//! A signal interrupts `KVM_RUN` (it returns `EINTR`), but one that lands just before the
//! thread enters `KVM_RUN` is handled in user space and lost: the thread would then sleep
//! in the guest. KVM's answer is `kvm_run.immediate_exit`: while it is non-zero, `KVM_RUN`
//! returns `EINTR` at once instead of entering the guest. The handler installed here sets
//! it for the vCPU of the thread that receives the signal, so a kick is never lost wherever
//! it lands; the vCPU loop clears it after an `EINTR` and looks at its event channel.
//!
//! Each vCPU thread arms the kick for its own `kvm_run` with [`arm`] and keeps the
//! returned [`Armed`] guard until it stops using the vCPU fd.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

/// The kick could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// sigaction for the kick signal failed.
    #[error("installing the vCPU kick handler for signal {signal} (SIGRTMIN): {source}")]
    Install {
        /// The signal number.
        signal: i32,
        /// Cause.
        source: std::io::Error,
    },
}

/// The signal that kicks a vCPU thread.
pub fn kick_signal() -> i32 {
    SIGRTMIN()
}

thread_local! {
    /// `immediate_exit` of the `kvm_run` of the vCPU this thread runs, or null. A plain
    /// `Cell` of a pointer with a constant initialiser: no lazy set-up, no destructor, so
    /// the signal handler may read it.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let Ok(flag) = IMMEDIATE_EXIT.try_with(Cell::get) else {
        return;
    };
    if !flag.is_null() {
        // SAFETY: a non-null pointer was stored by `arm` on this thread (the handler runs
        // on the thread the signal was sent to), whose contract keeps the byte valid until
        // the `Armed` guard, which lives on this same thread, clears the pointer; a u8 is
        // always aligned. The byte is in the kvm_run page, which the kernel writes too:
        // the loop reads and clears it only atomically (`Armed`), KVM reads it at KVM_RUN,
        // and the `&mut kvm_run` that kvm-ioctls forms to decode an exit never touches
        // this field.
        unsafe { AtomicU8::from_ptr(flag) }.store(1, Ordering::Release);
    }
}

/// Installs the kick handler, once per process; every call returns the outcome of the
/// first.
pub fn install_handler() -> Result<(), Error> {
    static RESULT: OnceLock<Result<(), i32>> = OnceLock::new();
    let result = RESULT
        .get_or_init(|| register_signal_handler(kick_signal(), handle_kick).map_err(|e| e.errno()));
    result.map_err(|errno| Error::Install {
        signal: kick_signal(),
        source: std::io::Error::from_raw_os_error(errno),
    })
}

/// The kick armed for this thread's vCPU; dropping it disarms the kick.
#[derive(Debug)]
pub struct Armed {
    flag: *mut u8,
}

/// Arms the kick of the current thread: a kick signal received by this thread from now on
/// sets the byte at `immediate_exit` to 1. One vCPU per thread: arming again replaces it.
///
/// # Safety
/// `immediate_exit` must point to the `immediate_exit` byte of a live `kvm_run` mapping
/// (or any byte valid for atomic writes) and stay valid until the returned guard is
/// dropped, on this thread.
pub unsafe fn arm(immediate_exit: *mut u8) -> Armed {
    IMMEDIATE_EXIT.with(|c| c.set(immediate_exit));
    Armed {
        flag: immediate_exit,
    }
}

impl Armed {
    /// Whether a kick arrived since the last [`Armed::clear`].
    pub fn is_set(&self) -> bool {
        // SAFETY: `arm`'s contract keeps the byte valid while the guard lives.
        unsafe { AtomicU8::from_ptr(self.flag) }.load(Ordering::Acquire) != 0
    }

    /// Clears `immediate_exit` so the next `KVM_RUN` enters the guest again; called after
    /// `KVM_RUN` returned `EINTR`, before the loop looks at its event channel.
    pub fn clear(&self) {
        // SAFETY: as in `is_set`.
        unsafe { AtomicU8::from_ptr(self.flag) }.store(0, Ordering::Release);
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        IMMEDIATE_EXIT.with(|c| c.set(std::ptr::null_mut()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raise_kick() {
        // SAFETY: pthread_self is always valid for the calling thread; the handler is
        // installed, so the signal does not end the process.
        let rc = unsafe { libc::pthread_kill(libc::pthread_self(), kick_signal()) };
        assert_eq!(rc, 0);
    }

    #[test]
    fn a_kick_sets_the_armed_flag_of_its_own_thread_only() {
        install_handler().unwrap();
        let mut mine = 0u8;
        // SAFETY: `mine` outlives the guard, which is dropped at the end of this scope.
        let armed = unsafe { arm(&mut mine) };
        assert!(!armed.is_set());
        // Another thread's kick does not touch this thread's flag.
        std::thread::spawn(raise_kick).join().unwrap();
        assert!(!armed.is_set());
        raise_kick();
        assert!(armed.is_set(), "a kick before KVM_RUN is remembered");
        armed.clear();
        assert!(!armed.is_set());
        drop(armed);
        // Disarmed: a kick is harmless and changes nothing.
        raise_kick();
        assert_eq!(mine, 0);
    }
}
