//! Rate limiting for log lines the guest can trigger: nothing a guest does may flood the
//! host log.

use std::time::{Duration, Instant};

/// Lines allowed per window.
const BURST: u32 = 10;
/// Window length.
const WINDOW: Duration = Duration::from_secs(5);

/// Allows `BURST` log lines per `WINDOW`; counts what it suppressed.
#[derive(Debug)]
pub struct LogLimiter {
    window_start: Instant,
    in_window: u32,
    suppressed: u64,
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl LogLimiter {
    /// A fresh limiter.
    pub fn new() -> Self {
        LogLimiter {
            window_start: Instant::now(),
            in_window: 0,
            suppressed: 0,
        }
    }

    /// Whether one more line may be logged now. When a window with suppressed lines ends,
    /// a line saying how many were dropped is logged first.
    pub fn allow(&mut self) -> bool {
        self.allow_at(Instant::now())
    }

    fn allow_at(&mut self, now: Instant) -> bool {
        if now.duration_since(self.window_start) >= WINDOW {
            if self.suppressed > 0 {
                tracing::warn!("{} similar messages suppressed", self.suppressed);
            }
            self.window_start = now;
            self.in_window = 0;
            self.suppressed = 0;
        }
        if self.in_window < BURST {
            self.in_window += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_are_cut_and_windows_reset() {
        let mut l = LogLimiter::new();
        let t0 = l.window_start;
        let allowed = (0..100).filter(|_| l.allow_at(t0)).count();
        assert_eq!(allowed, BURST as usize);
        assert_eq!(l.suppressed, 90);
        assert!(l.allow_at(t0 + WINDOW));
        assert_eq!(l.suppressed, 0);
    }
}
