//! Signal names and numbers as `runc kill` takes them: `KILL`, `SIGKILL`, `9`.

use nix::sys::signal::Signal;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    /// runc's text.
    #[error("unknown signal {0:?}")]
    Unknown(String),
}

/// Parses a signal given by name (with or without `SIG`, any case) or number.
/// Numbers 1-64 are accepted (real-time signals included); names cover the
/// standard signals plus `RTMIN`, `RTMIN+N`, `RTMAX-N`.
pub fn parse_signal(s: &str) -> Result<i32, SignalError> {
    let unknown = || SignalError::Unknown(s.to_owned());
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=64).contains(&n) {
            Ok(n)
        } else {
            Err(unknown())
        };
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let rtmin = libc::SIGRTMIN();
    let rtmax = libc::SIGRTMAX();
    if let Some(rest) = name.strip_prefix("RTMIN") {
        let off = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix('+')
                .and_then(|n| n.parse::<i32>().ok())
                .ok_or_else(unknown)?
        };
        return (rtmin + off <= rtmax)
            .then_some(rtmin + off)
            .ok_or_else(unknown);
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        let off = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix('-')
                .and_then(|n| n.parse::<i32>().ok())
                .ok_or_else(unknown)?
        };
        return (rtmax - off >= rtmin)
            .then_some(rtmax - off)
            .ok_or_else(unknown);
    }
    let full = format!("SIG{name}");
    full.parse::<Signal>()
        .map(|s| s as i32)
        .or_else(|_| match name {
            // Aliases nix does not know.
            "IOT" => Ok(libc::SIGABRT),
            "POLL" => Ok(libc::SIGIO),
            "CLD" => Ok(libc::SIGCHLD),
            _ => Err(unknown()),
        })
}

/// The signals a shim forwards to its process: every catchable signal except those
/// that concern the shim itself (SIGCHLD, SIGPIPE, SIGWINCH, which becomes a resize),
/// and the job-control stops from the terminal (SIGTTIN, SIGTTOU, SIGTSTP would stop the
/// shim, not the process; they are forwarded too, which is what runc does).
pub fn forwarded_signals() -> Vec<Signal> {
    Signal::iterator()
        .filter(|s| {
            !matches!(
                s,
                Signal::SIGKILL | Signal::SIGSTOP | Signal::SIGCHLD | Signal::SIGPIPE
                    | Signal::SIGWINCH
                    // Synchronous faults of the shim itself.
                    | Signal::SIGSEGV | Signal::SIGBUS | Signal::SIGILL | Signal::SIGFPE
                    | Signal::SIGTRAP | Signal::SIGSYS
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        for (s, n) in [
            ("KILL", 9),
            ("SIGKILL", 9),
            ("kill", 9),
            ("sigterm", 15),
            ("9", 9),
            ("TERM", 15),
            ("HUP", 1),
            ("USR1", libc::SIGUSR1),
            ("SIGUSR2", libc::SIGUSR2),
            ("WINCH", libc::SIGWINCH),
            ("IOT", 6),
            ("RTMIN", libc::SIGRTMIN()),
            ("RTMIN+2", libc::SIGRTMIN() + 2),
            ("SIGRTMAX-1", libc::SIGRTMAX() - 1),
            ("64", 64),
        ] {
            assert_eq!(parse_signal(s), Ok(n), "{s}");
        }
    }

    #[test]
    fn unknown_signals_use_runcs_text() {
        for s in [
            "FOO", "SIGFOO", "0", "65", "-1", "", "RTMIN+99", "RTMIN-1", "SIG",
        ] {
            let e = parse_signal(s).unwrap_err();
            assert_eq!(e.to_string(), format!("unknown signal {s:?}"));
        }
    }

    #[test]
    fn forwarded_set() {
        let f = forwarded_signals();
        for s in [
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
            Signal::SIGQUIT,
            Signal::SIGUSR1,
            Signal::SIGUSR2,
        ] {
            assert!(f.contains(&s), "{s}");
        }
        for s in [
            Signal::SIGCHLD,
            Signal::SIGPIPE,
            Signal::SIGWINCH,
            Signal::SIGKILL,
        ] {
            assert!(!f.contains(&s), "{s}");
        }
    }
}
