//! Why a VM stopped, and the process exit status the VMM reports for it.
//!
//! The VMM's exit status is the VM's, never a container's: 0 only for a clean ACPI
//! poweroff; every other end is non-zero with a one-line reason.

use std::fmt;

/// How the VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest entered ACPI S5.
    PowerOff,
    /// The guest reset the machine; the text says how (i8042, ACPI reset register, triple fault).
    Reset(String),
    /// The guest kernel reported a panic through pvpanic.
    Panic,
    /// KVM or the VMM failed; the text says what.
    Error(String),
}

impl ExitReason {
    /// Process exit status for this end of the VM.
    pub fn exit_code(&self) -> i32 {
        match self {
            ExitReason::PowerOff => 0,
            ExitReason::Error(_) => 1,
            ExitReason::Reset(_) => 3,
            ExitReason::Panic => 4,
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::PowerOff => write!(f, "guest powered off"),
            ExitReason::Reset(how) => write!(f, "guest reset ({how})"),
            ExitReason::Panic => write!(f, "guest kernel panic (reported through pvpanic)"),
            ExitReason::Error(what) => write!(f, "VM error: {what}"),
        }
    }
}

/// Where devices and vCPUs report the end of the VM. The first report wins.
pub type ExitSender = std::sync::mpsc::Sender<ExitReason>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_poweroff_is_success_and_reasons_are_one_line() {
        let all = [
            ExitReason::PowerOff,
            ExitReason::Reset("i8042 reset command".into()),
            ExitReason::Panic,
            ExitReason::Error("KVM_RUN failed".into()),
        ];
        let codes: Vec<i32> = all.iter().map(ExitReason::exit_code).collect();
        assert_eq!(codes, [0, 3, 4, 1]);
        assert!(all[1].to_string().contains("reset"));
        assert!(all.iter().all(|r| !r.to_string().contains('\n')));
    }
}
