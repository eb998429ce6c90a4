//! One link: the WireGuard session with one friend device and when it next needs a tick.
//!
//! boringtun wants `update_timers` roughly every 250 ms *while something is happening*
//! (handshake retries, rekeying, passive keepalives). When a link has been quiet for longer
//! than any of those timers, we stop ticking it entirely, except for a configured NAT
//! keepalive and one late tick that lets boringtun expire and wipe the session keys. Before
//! using a link after such a pause, the caller ticks it first, so boringtun sees time pass.

use crate::counters::Traffic;
use crate::uid::Uid;
use boringtun::noise::Tunn;
use boringtun::x25519::{PublicKey, StaticSecret};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Tick period while a link is busy (boringtun's recommendation).
pub const ACTIVE_TICK: Duration = Duration::from_millis(250);
/// How long after the last packet a link counts as busy: covers boringtun's 10 s passive
/// keepalive and the 5 s handshake retry with margin.
pub const ACTIVE_WINDOW: Duration = Duration::from_secs(15);
/// One tick after this much silence lets boringtun drop the session keys (3 x 180 s).
pub const SESSION_WIPE_AFTER: Duration = Duration::from_secs(541);

/// Per-link figures reported upward.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LinkCounters {
    pub tx: Traffic,
    pub rx: Traffic,
}

pub struct Link {
    pub(crate) uid: Uid,
    pub(crate) tunn: Tunn,
    pub(crate) endpoint: Option<SocketAddr>,
    pub(crate) counters: LinkCounters,
    keepalive: Option<Duration>,
    last_tick: Instant,
    last_activity: Instant,
    last_send: Instant,
    wiped: bool,
}

impl Link {
    pub(crate) fn new(
        own_secret: StaticSecret,
        public_key: PublicKey,
        index: u32,
        endpoint: Option<SocketAddr>,
        keepalive_secs: Option<u16>,
        now: Instant,
    ) -> Link {
        let uid = Uid::from_public_key(public_key.as_bytes());
        Link {
            uid,
            tunn: Tunn::new(own_secret, public_key, None, keepalive_secs, index, None),
            endpoint,
            counters: LinkCounters::default(),
            keepalive: keepalive_secs.map(|s| Duration::from_secs(u64::from(s))),
            last_tick: now,
            last_activity: now,
            last_send: now,
            wiped: false,
        }
    }

    pub fn uid(&self) -> Uid {
        self.uid
    }

    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.endpoint
    }

    /// Whether a handshake has completed within the session lifetime.
    pub fn has_session(&self) -> bool {
        self.tunn
            .time_since_last_handshake()
            .is_some_and(|t| t < Duration::from_secs(180))
    }

    /// Records traffic in either direction; returns true when the link had gone quiet, i.e.
    /// the caller must tick it before use.
    pub(crate) fn note_activity(&mut self, now: Instant) -> bool {
        let was_quiet = now.saturating_duration_since(self.last_tick) >= ACTIVE_TICK;
        self.last_activity = now;
        self.wiped = false;
        was_quiet
    }

    pub(crate) fn note_send(&mut self, now: Instant) {
        self.last_send = now;
    }

    pub(crate) fn note_tick(&mut self, now: Instant) {
        self.last_tick = now;
        if now.saturating_duration_since(self.last_activity) >= SESSION_WIPE_AFTER {
            self.wiped = true;
        }
    }

    /// When this link next needs `update_timers`, or `None` if it can sleep until traffic.
    pub fn next_deadline(&self) -> Option<Instant> {
        let busy_until = self.last_activity + ACTIVE_WINDOW;
        if self.last_tick < busy_until {
            return Some(self.last_tick + ACTIVE_TICK);
        }
        let keepalive = self
            .keepalive
            .map(|k| self.last_send.max(self.last_tick) + k);
        let wipe = (!self.wiped).then(|| self.last_activity + SESSION_WIPE_AFTER);
        match (keepalive, wipe) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(keepalive: Option<u16>, now: Instant) -> Link {
        let own = StaticSecret::from([1; 32]);
        let peer = PublicKey::from(&StaticSecret::from([2; 32]));
        Link::new(own, peer, 1, None, keepalive, now)
    }

    #[test]
    fn busy_link_ticks_then_goes_to_sleep() {
        let t0 = Instant::now();
        let mut l = link(None, t0);
        assert_eq!(l.next_deadline(), Some(t0 + ACTIVE_TICK));
        // Tick through the busy window.
        let mut t = t0;
        while let Some(d) = l.next_deadline() {
            if d > t0 + ACTIVE_WINDOW + ACTIVE_TICK {
                break;
            }
            t = d;
            l.note_tick(t);
        }
        // Quiet: the only deadline left is the late wipe tick, then nothing.
        assert_eq!(l.next_deadline(), Some(t0 + SESSION_WIPE_AFTER));
        l.note_tick(t0 + SESSION_WIPE_AFTER);
        assert_eq!(l.next_deadline(), None);
        // Traffic wakes it up again.
        let t2 = t0 + Duration::from_secs(1000);
        assert!(l.note_activity(t2));
        assert_eq!(
            l.next_deadline(),
            Some(t0 + SESSION_WIPE_AFTER + ACTIVE_TICK)
        );
        let _ = t;
    }

    #[test]
    fn keepalive_is_the_only_idle_wakeup() {
        let t0 = Instant::now();
        let mut l = link(Some(25), t0);
        let quiet = t0 + ACTIVE_WINDOW;
        l.note_tick(quiet);
        assert_eq!(l.next_deadline(), Some(quiet + Duration::from_secs(25)));
    }
}
