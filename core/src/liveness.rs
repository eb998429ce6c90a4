//! Is the path a link uses still alive? WireGuard alone notices a dead path only after 15 s
//! (keepalive plus handshake retry) and then only retries the same path; a phone that moved
//! networks, a NAT that dropped its mapping or a TURN server that restarted need the path
//! found again, and quickly. The rule here: once we send data and nothing authentic comes
//! back for [`SUSPECT_AFTER`], the path is suspect (the link layer then asks ICE for a
//! consent check, which a live peer answers at once); still nothing after [`DEAD_AFTER`],
//! it is dead (the link layer runs ICE again; the WireGuard session stays).
//!
//! Only data we send starts the clock, so an idle link never wakes anything up.

use std::time::{Duration, Instant};

/// Data unanswered this long makes the path suspect.
pub const SUSPECT_AFTER: Duration = Duration::from_millis(1500);
/// Data unanswered this long (ICE consent checks included) means the path is dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(4);

/// What the watcher concluded about a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathAlarm {
    /// Nothing came back for a while: check the path.
    Suspect,
    /// Nothing came back, checks included: find a new path.
    Dead,
}

/// The liveness of one link's path.
#[derive(Clone, Copy, Debug, Default)]
pub struct PathWatch {
    /// The first data sent since we last heard from the peer.
    unanswered_since: Option<Instant>,
    /// The alarm already raised for this stretch of silence.
    raised: Option<PathAlarm>,
}

impl PathWatch {
    /// An authentic datagram from the peer, or a check it answered: the path works.
    pub fn heard(&mut self) {
        self.unanswered_since = None;
        self.raised = None;
    }

    /// We sent data over the path.
    pub fn sent_data(&mut self, now: Instant) {
        self.unanswered_since.get_or_insert(now);
    }

    /// The path was replaced (a new one selected): judge it afresh.
    pub fn reset(&mut self) {
        self.heard();
    }

    /// A new alarm, raised once per stretch of silence and level.
    pub fn check(&mut self, now: Instant) -> Option<PathAlarm> {
        let waited = now.saturating_duration_since(self.unanswered_since?);
        let level = if waited >= DEAD_AFTER {
            PathAlarm::Dead
        } else if waited >= SUSPECT_AFTER {
            PathAlarm::Suspect
        } else {
            return None;
        };
        if self.raised.is_some_and(|r| r >= level) {
            return None;
        }
        self.raised = Some(level);
        Some(level)
    }

    /// When [`PathWatch::check`] may next raise an alarm.
    pub fn next_check(&self) -> Option<Instant> {
        let since = self.unanswered_since?;
        match self.raised {
            None => Some(since + SUSPECT_AFTER),
            Some(PathAlarm::Suspect) => Some(since + DEAD_AFTER),
            Some(PathAlarm::Dead) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_after_sending_is_suspect_then_dead_once() {
        let t0 = Instant::now();
        let mut w = PathWatch::default();
        assert_eq!(w.check(t0 + Duration::from_secs(100)), None, "idle is fine");
        assert_eq!(w.next_check(), None);
        w.sent_data(t0);
        w.sent_data(t0 + Duration::from_millis(500));
        assert_eq!(w.next_check(), Some(t0 + SUSPECT_AFTER));
        assert_eq!(w.check(t0 + Duration::from_secs(1)), None);
        assert_eq!(w.check(t0 + SUSPECT_AFTER), Some(PathAlarm::Suspect));
        assert_eq!(w.check(t0 + Duration::from_secs(2)), None, "raised once");
        assert_eq!(w.check(t0 + DEAD_AFTER), Some(PathAlarm::Dead));
        assert_eq!(w.check(t0 + Duration::from_secs(10)), None);
        assert_eq!(w.next_check(), None);
    }

    #[test]
    fn an_answer_clears_the_silence() {
        let t0 = Instant::now();
        let mut w = PathWatch::default();
        w.sent_data(t0);
        assert_eq!(w.check(t0 + SUSPECT_AFTER), Some(PathAlarm::Suspect));
        w.heard();
        assert_eq!(w.check(t0 + DEAD_AFTER), None);
        // The clock starts again with the next unanswered send, not with the old one.
        let t1 = t0 + Duration::from_secs(60);
        w.sent_data(t1);
        assert_eq!(w.check(t1 + Duration::from_secs(1)), None);
        assert_eq!(w.check(t1 + SUSPECT_AFTER), Some(PathAlarm::Suspect));
    }

    #[test]
    fn a_long_idle_link_gets_its_full_chance() {
        let t0 = Instant::now();
        let mut w = PathWatch::default();
        w.heard();
        // Quiet for ten minutes, then one packet: not dead at once.
        let t1 = t0 + Duration::from_secs(600);
        w.sent_data(t1);
        assert_eq!(w.check(t1), None);
        assert_eq!(
            w.check(t1 + Duration::from_secs(3)),
            Some(PathAlarm::Suspect)
        );
    }
}
