//! The engine's one timer.
//!
//! tokio keeps its timers in a hierarchical wheel whose coarse slots are seconds wide: a
//! sleep of 25 s is filed in a 4-s slot, and the runtime wakes when that slot comes up only
//! to move the timer to a 64-ms slot, wakes again to move it to a 1-ms slot, then fires it.
//! Three wake-ups for each idle tick, as `strace` of the idle daemon showed. Where the kernel
//! has timer fds (Linux, Android), the engine's timer is one: armed for the next deadline,
//! it wakes the engine once, when that deadline comes. Elsewhere, and if the kernel refuses
//! one, it is a tokio sleep.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

pub(super) struct EngineTimer {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fd: Option<timerfd::TimerFd>,
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// The deadline armed, if any.
    armed: Option<Instant>,
}

impl EngineTimer {
    /// A disarmed timer; needs a tokio runtime.
    pub(super) fn new() -> EngineTimer {
        EngineTimer {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            fd: timerfd::TimerFd::new()
                .map_err(|error| tracing::debug!(%error, "no timer fd; using tokio's timer"))
                .ok(),
            sleep: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
            armed: None,
        }
    }

    /// The deadline it is armed for.
    pub(super) fn armed(&self) -> Option<Instant> {
        self.armed
    }

    /// Arms it for `deadline` (none: disarmed).
    pub(super) fn set(&mut self, deadline: Option<Instant>) {
        self.armed = deadline;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Some(fd) = &self.fd {
            match fd.set(deadline) {
                Ok(()) => return,
                Err(error) => {
                    tracing::debug!(%error, "timer fd refused a deadline; using tokio's timer");
                    self.fd = None;
                }
            }
        }
        if let Some(at) = deadline {
            self.sleep.as_mut().reset(at.into());
        }
    }

    /// Ready when the armed deadline has come (never while disarmed); it is disarmed then.
    pub(super) fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.armed.is_none() {
            return Poll::Pending;
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Some(fd) = &self.fd {
            match ready!(fd.poll_expired(cx)) {
                Ok(()) => {
                    self.armed = None;
                    return Poll::Ready(());
                }
                Err(error) => {
                    tracing::debug!(%error, "timer fd failed; using tokio's timer");
                    self.fd = None;
                    if let Some(at) = self.armed {
                        self.sleep.as_mut().reset(at.into());
                    }
                }
            }
        }
        ready!(self.sleep.as_mut().poll(cx));
        self.armed = None;
        Poll::Ready(())
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod timerfd {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::task::{ready, Context, Poll};
    use std::time::Instant;
    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;

    /// A non-blocking monotonic timer fd watched by the runtime. Monotonic like `Instant`:
    /// it does not count time the device is suspended, nor wake it.
    pub(super) struct TimerFd(AsyncFd<OwnedFd>);

    impl TimerFd {
        pub(super) fn new() -> io::Result<TimerFd> {
            // SAFETY: a plain syscall; the fd it returns is ours alone.
            let raw = unsafe {
                libc::timerfd_create(
                    libc::CLOCK_MONOTONIC,
                    libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
                )
            };
            if raw < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `raw` is a new, valid fd nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            // SAFETY: the AsyncFd owns this fd, which stays open while it is registered.
            let watched = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
                .map_err(|e| e.into_parts().1)?;
            Ok(TimerFd(watched))
        }

        /// Arms it for `deadline`, or disarms it.
        pub(super) fn set(&self, deadline: Option<Instant>) -> io::Result<()> {
            let after = deadline.map(|at| at.saturating_duration_since(Instant::now()));
            let value = match after {
                // A zero value would disarm it: a deadline already past fires at once.
                Some(d) => libc::timespec {
                    tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
                    tv_nsec: libc::c_long::from(d.subsec_nanos().max(1)),
                },
                None => libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
            };
            let spec = libc::itimerspec {
                it_interval: libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: value,
            };
            // SAFETY: our own timer fd, with a valid spec; the old value is not asked for.
            let rc = unsafe {
                libc::timerfd_settime(self.0.as_raw_fd(), 0, &spec, std::ptr::null_mut())
            };
            if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        }

        /// Ready once the armed deadline has passed (reading the expiry clears it).
        pub(super) fn poll_expired(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            loop {
                let mut guard = ready!(self.0.poll_read_ready(cx))?;
                let mut count = [0u8; 8];
                let read = guard.try_io(|fd| {
                    // SAFETY: reading 8 bytes into a buffer of 8 from our own fd.
                    let n = unsafe {
                        libc::read(fd.as_raw_fd(), count.as_mut_ptr().cast(), count.len())
                    };
                    if n < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(())
                    }
                });
                match read {
                    Ok(result) => return Poll::Ready(result),
                    // Spurious readiness (re-armed meanwhile): wait on.
                    Err(_would_block) => continue,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn fired(timer: &mut EngineTimer) {
        std::future::poll_fn(|cx| timer.poll_fired(cx)).await
    }

    #[tokio::test]
    async fn fires_once_at_its_deadline_and_not_when_disarmed() {
        let mut timer = EngineTimer::new();
        #[cfg(target_os = "linux")]
        assert!(timer.fd.is_some(), "Linux has timer fds");
        let start = Instant::now();
        timer.set(Some(start + Duration::from_millis(30)));
        fired(&mut timer).await;
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert_eq!(timer.armed(), None);
        // Disarmed, it never fires.
        let waited = tokio::time::timeout(Duration::from_millis(50), fired(&mut timer)).await;
        assert!(waited.is_err());
        // A deadline moved later replaces the earlier one; one already past fires at once.
        timer.set(Some(Instant::now() + Duration::from_millis(10)));
        timer.set(Some(Instant::now() + Duration::from_secs(3)));
        let early = tokio::time::timeout(Duration::from_millis(200), fired(&mut timer)).await;
        assert!(early.is_err(), "fired at the replaced deadline");
        timer.set(Some(Instant::now() - Duration::from_millis(5)));
        tokio::time::timeout(Duration::from_secs(5), fired(&mut timer))
            .await
            .expect("a past deadline fires at once");
    }
}
