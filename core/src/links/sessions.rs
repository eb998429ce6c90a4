//! What one device's ICE sessions have been: the ids seen (a replayed or stale offer or
//! answer is recognised) and when the device started its recent ones (a device may start only
//! a few a minute: each costs an ICE agent and checks towards addresses it names).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Session ids remembered per device, to recognise replays.
const SEEN_SESSIONS: usize = 16;
/// New ICE sessions a device may start (offers, restart requests) per minute.
pub const SESSIONS_PER_MINUTE: usize = 6;
const RATE_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct SessionLog {
    seen: VecDeque<u64>,
    started: VecDeque<Instant>,
}

impl SessionLog {
    /// Whether `session` was seen before (ours or theirs).
    pub fn seen(&self, session: u64) -> bool {
        self.seen.contains(&session)
    }

    /// Remembers `session` (the oldest is forgotten past a bound).
    pub fn remember(&mut self, session: u64) {
        if self.seen.len() == SEEN_SESSIONS {
            self.seen.pop_front();
        }
        self.seen.push_back(session);
    }

    /// Forgets the ids (the device turned out to be another account's: its sessions with
    /// the impostor's link mean nothing).
    pub fn forget_sessions(&mut self) {
        self.seen.clear();
    }

    /// The device starts a session now: allowed (and counted) unless it started
    /// `SESSIONS_PER_MINUTE` in the last minute.
    pub fn may_start(&mut self, now: Instant) -> bool {
        while self
            .started
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= RATE_WINDOW)
        {
            self.started.pop_front();
        }
        if self.started.len() >= SESSIONS_PER_MINUTE {
            return false;
        }
        self.started.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_remembered_within_a_bound() {
        let mut log = SessionLog::default();
        for s in 0..SEEN_SESSIONS as u64 {
            log.remember(s);
        }
        assert!(log.seen(0));
        log.remember(99);
        assert!(!log.seen(0), "the oldest is forgotten");
        assert!(log.seen(1) && log.seen(99));
        log.forget_sessions();
        assert!(!log.seen(99));
    }

    #[test]
    fn a_device_starts_a_few_sessions_a_minute() {
        let mut log = SessionLog::default();
        let t0 = Instant::now();
        for i in 0..SESSIONS_PER_MINUTE {
            assert!(log.may_start(t0 + Duration::from_secs(i as u64)));
        }
        assert!(!log.may_start(t0 + Duration::from_secs(30)));
        // A refused attempt is not counted: the window frees up a minute after the first.
        assert!(log.may_start(t0 + RATE_WINDOW));
        assert!(!log.may_start(t0 + RATE_WINDOW));
    }
}
