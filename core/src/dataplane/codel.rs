//! Controlled delay on the receive side (CoDel, RFC 8289): when decrypting is the slowest
//! stage (a phone downloading over fast Wi-Fi or 5G), the queue builds in the links' UDP
//! receive buffer. It is 7 MB so that a scheduling gap drops nothing (ARCHITECTURE, "Loss
//! under load"), which at a few hundred Mbit/s is a hundred milliseconds or more in front of
//! every packet of every flow: a video call behind a download. CoDel watches how long
//! datagrams waited in that buffer (the kernel's receive timestamp) and, once the wait has
//! stayed above [`TARGET`] for an [`INTERVAL`], asks for one congestion signal, then more
//! often (interval ÷ √count) while it stays there. The data plane gives the signal to the
//! next packet it delivers that can carry it: a CE mark on an ECN-capable packet (no loss),
//! else a drop of a TCP segment with data (counted as `congestion`), which TCP answers by
//! slowing down before the buffer holds seconds. Calls, DNS, pings and bare ACKs are never
//! dropped for it (their loss slows nobody); a due signal waits for a packet that can carry
//! it and lapses when the queue drains.
//!
//! Plain state, one per engine (there is one receive buffer): no clock of its own, no
//! allocation.

use std::time::{Duration, Instant};

/// A standing queue shorter than this is fine (RFC 8289's 5 ms).
pub const TARGET: Duration = Duration::from_millis(5);

/// How long the wait may stay above [`TARGET`] before the first signal, and the spacing of
/// the first signals after it (RFC 8289's 100 ms: a round trip of most paths).
pub const INTERVAL: Duration = Duration::from_millis(100);

/// CoDel's state between reads.
#[derive(Debug, Default)]
pub struct Codel {
    /// When the wait, above [`TARGET`] since shortly before, will have been so for an
    /// interval; `None` while it is below.
    above_until: Option<Instant>,
    /// In the signalling state (the wait has stood above target for an interval).
    signalling: bool,
    /// When the next signal is due; after a signalling state, when it would have been (a
    /// state that starts again soon after resumes its rate).
    next_signal: Option<Instant>,
    /// Signals so far (of this and, when they followed closely, earlier signalling states).
    count: u32,
    /// `count` when this signalling state started: a state that starts again soon after one
    /// ended resumes at the number of signals the last one needed (RFC 8289), since the
    /// queue it fights is likely the same.
    count_at_start: u32,
    /// A signal is due on the next packet delivered that can carry it.
    pending: bool,
}

impl Codel {
    /// One read from the receive buffer whose datagrams waited `waited` there (zero: the
    /// read found it empty). Returns whether a congestion signal is now due (it stays due
    /// until [`Codel::take_signal`], or until the queue no longer stands).
    pub fn handle_wait(&mut self, now: Instant, waited: Duration) -> bool {
        let standing = self.standing(now, waited);
        if !standing {
            // A signal still waiting for a packet that can carry it lapses, rather than
            // fall on one long after the queue is gone.
            self.pending = false;
            self.signalling = false;
            return false;
        }
        match self.next_signal {
            Some(due) if self.signalling => {
                if now >= due {
                    self.count = self.count.saturating_add(1);
                    self.next_signal = Some(control_law(due, self.count));
                    self.pending = true;
                }
            }
            last_due => {
                // Soon after a signalling state: resume at the number of signals it took.
                let taken = self.count.saturating_sub(self.count_at_start);
                let recent =
                    last_due.is_some_and(|due| now.saturating_duration_since(due) < 16 * INTERVAL);
                self.count = if recent && taken > 1 { taken } else { 1 };
                self.count_at_start = self.count;
                self.signalling = true;
                self.next_signal = Some(control_law(now, self.count));
                self.pending = true;
            }
        }
        self.pending
    }

    /// Whether a signal waits for a packet to carry it.
    pub fn signal_due(&self) -> bool {
        self.pending
    }

    /// Takes the due signal, if any: the packet being delivered carries it.
    pub fn take_signal(&mut self) -> bool {
        std::mem::take(&mut self.pending)
    }

    /// Whether the wait has stayed above [`TARGET`] for a whole interval.
    fn standing(&mut self, now: Instant, waited: Duration) -> bool {
        if waited < TARGET {
            self.above_until = None;
            return false;
        }
        match self.above_until {
            None => {
                self.above_until = Some(now + INTERVAL);
                false
            }
            Some(until) => now >= until,
        }
    }
}

/// The next signal after one at `at`: closer together as the count grows, so that TCP's
/// throughput (which falls as 1/√signals) is pushed down steadily until the queue drains.
fn control_law(at: Instant, count: u32) -> Instant {
    at + INTERVAL.div_f64(f64::from(count.max(1)).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds one read every `step` with the wait `waited` for `span`; returns the instants
    /// (from `start`) at which a signal was taken.
    fn feed(
        codel: &mut Codel,
        start: Instant,
        from: Duration,
        span: Duration,
        step: Duration,
        waited: Duration,
    ) -> Vec<Duration> {
        let mut signals = Vec::new();
        let mut t = from;
        while t < from + span {
            codel.handle_wait(start + t, waited);
            if codel.take_signal() {
                signals.push(t);
            }
            t += step;
        }
        signals
    }

    #[test]
    fn a_short_queue_is_never_signalled() {
        let mut codel = Codel::default();
        let t0 = Instant::now();
        let signals = feed(
            &mut codel,
            t0,
            Duration::ZERO,
            10 * INTERVAL,
            MS,
            TARGET - MS,
        );
        assert!(signals.is_empty());
    }

    #[test]
    fn a_burst_shorter_than_an_interval_is_never_signalled() {
        let mut codel = Codel::default();
        let t0 = Instant::now();
        // 90 ms of a long wait, then it drains, then another 90 ms: each below an interval.
        let mut signals = feed(&mut codel, t0, Duration::ZERO, 90 * MS, MS, 50 * MS);
        signals.extend(feed(&mut codel, t0, 90 * MS, 10 * MS, MS, Duration::ZERO));
        signals.extend(feed(&mut codel, t0, 100 * MS, 90 * MS, MS, 50 * MS));
        assert!(signals.is_empty(), "{signals:?}");
    }

    #[test]
    fn a_standing_queue_is_signalled_after_an_interval_then_ever_more_often() {
        let mut codel = Codel::default();
        let t0 = Instant::now();
        let signals = feed(&mut codel, t0, Duration::ZERO, 1000 * MS, MS, 20 * MS);
        // The first read above target starts the interval; the first signal comes at its end.
        assert_eq!(signals.first(), Some(&INTERVAL));
        // Then at 100/√1, 100/√2, 100/√3, ... ms after the one before.
        let gaps: Vec<Duration> = signals.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.len() >= 5, "{signals:?}");
        for (i, gap) in gaps.iter().enumerate() {
            let expected = INTERVAL.div_f64(((i + 1) as f64).sqrt());
            assert!(
                gap.abs_diff(expected) <= MS,
                "gap {i}: {gap:?}, expected about {expected:?}"
            );
        }
        assert!(gaps.windows(2).all(|w| w[1] <= w[0]));
    }

    #[test]
    fn signals_stop_when_the_queue_drains_and_resume_near_their_rate() {
        let mut codel = Codel::default();
        let t0 = Instant::now();
        let first = feed(&mut codel, t0, Duration::ZERO, 600 * MS, MS, 20 * MS);
        let count_then = codel.count;
        assert!(count_then >= 5);
        assert!(feed(&mut codel, t0, 600 * MS, 400 * MS, MS, MS).is_empty());
        // A queue again soon after: after its interval, signals come faster than a fresh
        // start's (the count resumes at the signals the last state took after its first).
        let again = feed(&mut codel, t0, 1000 * MS, 300 * MS, MS, 20 * MS);
        assert_eq!(again.first(), Some(&(1100 * MS)));
        assert_eq!(
            codel.count as usize,
            count_then as usize - 1 + again.len() - 1
        );
        // A fresh start's second signal comes a whole interval after its first.
        assert!(
            again[1] - again[0] < INTERVAL * 2 / 3,
            "{again:?} after {first:?}"
        );
    }

    /// What gathered around an idle tick waited up to 250 ms, once per tick; the read that
    /// finds the buffer empty after it (a zero wait) ends that queue, so the next tick's is
    /// judged on its own.
    #[test]
    fn a_drained_buffer_forgets_the_long_wait_before_it() {
        let mut codel = Codel::default();
        let t0 = Instant::now();
        for tick in 0..10u32 {
            let at = t0 + Duration::from_secs(25) * tick;
            assert!(!codel.handle_wait(at, 250 * MS));
            assert!(!codel.handle_wait(at, Duration::ZERO));
        }
    }

    #[test]
    fn a_signal_waits_for_a_packet_to_carry_it() {
        let mut codel = Codel::default();
        let t0 = Instant::now();
        assert!(!codel.handle_wait(t0, 20 * MS));
        assert!(codel.handle_wait(t0 + INTERVAL, 20 * MS));
        // Reads without a delivered packet in between do not add a second signal.
        assert!(codel.handle_wait(t0 + INTERVAL + MS, 20 * MS));
        assert!(codel.take_signal());
        assert!(!codel.take_signal());
        assert!(!codel.handle_wait(t0 + INTERVAL + 2 * MS, 20 * MS));
    }

    /// A signal no packet could carry (only calls and pings arrived) lapses when the queue
    /// drains, instead of dropping the first data packet minutes later.
    #[test]
    fn a_signal_nothing_carried_lapses_with_the_queue() {
        let mut codel = Codel::default();
        let t0 = Instant::now();
        codel.handle_wait(t0, 20 * MS);
        assert!(codel.handle_wait(t0 + INTERVAL, 20 * MS));
        assert!(codel.signal_due());
        assert!(!codel.handle_wait(t0 + INTERVAL + MS, Duration::ZERO));
        assert!(!codel.signal_due());
        assert!(!codel.handle_wait(t0 + Duration::from_secs(60), Duration::ZERO));
        assert!(!codel.take_signal());
    }
}
