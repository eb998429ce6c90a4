//! One link: the WireGuard session with one friend device and when it next needs a tick.
//!
//! boringtun wants `update_timers` roughly every 250 ms *while something is happening*
//! (rekeying, passive keepalives). While a handshake is outstanding it retries every 5 s for
//! up to 90 s, so a link with a pending handshake ticks once a second until a session exists
//! or boringtun gives up. When a link has been quiet for longer than any of those timers, we
//! stop ticking it entirely, except for a configured NAT keepalive and one late tick that lets
//! boringtun expire and wipe the session keys. Before a quiet link is used again, the caller
//! ticks it first, so boringtun sees time pass.

use crate::counters::LinkTraffic;
use crate::idle_grid::IdleGrid;
use crate::liveness::PathWatch;
use crate::packet::uid_header::UID_HEADER_LEN;
use crate::path::Path;
use crate::uid::Uid;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::Tunn;
use boringtun::x25519::{PublicKey, StaticSecret};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// WireGuard message types (first byte of a datagram).
pub(crate) const WG_HANDSHAKE_INIT: u8 = 1;
/// A handshake response (the answer to an initiation).
pub(crate) const WG_HANDSHAKE_RESPONSE: u8 = 2;
pub(crate) const WG_COOKIE_REPLY: u8 = 3;
pub(crate) const WG_DATA: u8 = 4;
/// Header and tag of a WireGuard data message; a bare keepalive is exactly this long.
pub const WG_DATA_OVERHEAD: usize = 32;

/// Tick period while a link is busy (boringtun's recommendation).
pub const ACTIVE_TICK: Duration = Duration::from_millis(250);
/// How long after the last authentic packet a link counts as busy: boringtun's 10 s passive
/// keepalive plus its 5 s handshake retry, with 5 s of margin.
pub const ACTIVE_WINDOW: Duration = Duration::from_secs(20);
/// Tick period while only a handshake is outstanding (boringtun retries every 5 s).
pub const HANDSHAKE_TICK: Duration = Duration::from_secs(1);
/// boringtun stops retrying a handshake after 90 s; a little more covers its last check.
pub const HANDSHAKE_GIVE_UP: Duration = Duration::from_secs(92);
/// One tick after this much silence lets boringtun drop the session keys (3 x 180 s).
pub const SESSION_WIPE_AFTER: Duration = Duration::from_secs(541);

pub struct Link {
    pub(crate) uid: Uid,
    pub(crate) tunn: Tunn,
    /// Where datagrams go and how (the path ICE selected, or the one the peer last used).
    pub(crate) endpoint: Option<Path>,
    pub(crate) counters: LinkTraffic,
    /// Whether the path still answers the data we send.
    pub(crate) path: PathWatch,
    keepalive: Option<Duration>,
    last_tick: Instant,
    last_activity: Instant,
    last_send: Instant,
    /// When we started initiating a handshake that has not completed yet.
    handshake_since: Option<Instant>,
    wiped: bool,
}

impl Link {
    pub(crate) fn new(
        own_secret: StaticSecret,
        public_key: PublicKey,
        index: u32,
        endpoint: Option<Path>,
        keepalive_secs: Option<u16>,
        rate_limiter: Arc<RateLimiter>,
        now: Instant,
    ) -> Link {
        let uid = Uid::from_public_key(public_key.as_bytes());
        // boringtun treats 0 as "off"; so do we (a zero interval would spin the timer).
        let keepalive_secs = keepalive_secs.filter(|s| *s > 0);
        Link {
            uid,
            tunn: Tunn::new(
                own_secret,
                public_key,
                None,
                keepalive_secs,
                index,
                Some(rate_limiter),
            ),
            endpoint,
            counters: LinkTraffic::default(),
            path: PathWatch::default(),
            keepalive: keepalive_secs.map(|s| Duration::from_secs(u64::from(s))),
            last_tick: now,
            last_activity: now,
            last_send: now,
            handshake_since: None,
            wiped: false,
        }
    }

    pub fn uid(&self) -> Uid {
        self.uid
    }

    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.endpoint.map(|p| p.remote)
    }

    pub fn path(&self) -> Option<Path> {
        self.endpoint
    }

    pub fn last_activity(&self) -> Instant {
        self.last_activity
    }

    /// Whether a handshake has completed within the session lifetime.
    pub fn has_session(&self) -> bool {
        self.tunn
            .time_since_last_handshake()
            .is_some_and(|t| t < Duration::from_secs(180))
    }

    /// True when the link has not been ticked for a tick period: tick before using it.
    pub(crate) fn is_quiet(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_tick) >= ACTIVE_TICK
    }

    /// Records authentic traffic in either direction.
    pub(crate) fn mark_active(&mut self, now: Instant) {
        self.last_activity = now;
        self.wiped = false;
        if self.handshake_since.is_some() && self.has_session() {
            self.handshake_since = None;
        }
    }

    /// Records an authentic datagram from the peer: the path works.
    pub(crate) fn note_heard(&mut self, now: Instant) {
        self.mark_active(now);
        self.path.heard();
    }

    /// Records a datagram we sent: data for the counters and the path watch, an initiation
    /// for the retry timer.
    pub(crate) fn note_sent(&mut self, now: Instant, datagram: &[u8]) {
        self.last_send = now;
        match datagram.first() {
            Some(&WG_DATA) if datagram.len() > WG_DATA_OVERHEAD + UID_HEADER_LEN => {
                self.counters
                    .tx
                    .add(datagram.len() - WG_DATA_OVERHEAD - UID_HEADER_LEN);
                self.path.sent_data(now);
            }
            Some(&WG_HANDSHAKE_INIT) if self.handshake_since.is_none() => {
                self.handshake_since = Some(now);
            }
            _ => {}
        }
    }

    pub(crate) fn note_tick(&mut self, now: Instant) {
        self.last_tick = now;
        if now.saturating_duration_since(self.last_activity) >= SESSION_WIPE_AFTER {
            self.wiped = true;
        }
        if let Some(since) = self.handshake_since {
            if self.has_session() || now.saturating_duration_since(since) >= HANDSHAKE_GIVE_UP {
                self.handshake_since = None;
            }
        }
    }

    /// When this link next needs `update_timers` (or a look at its path), or `None` if it
    /// can sleep until traffic. The tick that drops old keys may run late: it goes on the
    /// node's idle grid, with the other links' timers.
    pub fn next_deadline(&self, grid: Option<&IdleGrid>) -> Option<Instant> {
        if self.last_tick < self.last_activity + ACTIVE_WINDOW {
            return Some(self.last_tick + ACTIVE_TICK);
        }
        let path = self.path.next_check();
        if self.handshake_since.is_some() {
            return Some(self.last_tick + HANDSHAKE_TICK);
        }
        let keepalive = self
            .keepalive
            .map(|k| self.last_send.max(self.last_tick) + k);
        let wipe = (!self.wiped).then(|| {
            let at = self.last_activity + SESSION_WIPE_AFTER;
            grid.map_or(at, |g| g.not_before(at))
        });
        [keepalive, wipe, path].into_iter().flatten().min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(keepalive: Option<u16>, now: Instant) -> Link {
        let own = StaticSecret::from([1; 32]);
        let peer = PublicKey::from(&StaticSecret::from([2; 32]));
        let limiter = Arc::new(RateLimiter::new(&PublicKey::from(&own), 10));
        Link::new(own, peer, 1, None, keepalive, limiter, now)
    }

    /// Ticks at every deadline up to `until`; returns the number of ticks.
    fn run_until(l: &mut Link, until: Instant) -> usize {
        let mut ticks = 0;
        while let Some(d) = l.next_deadline(None).filter(|d| *d <= until) {
            l.note_tick(d);
            ticks += 1;
        }
        ticks
    }

    #[test]
    fn busy_link_ticks_then_goes_to_sleep() {
        let t0 = Instant::now();
        let mut l = link(None, t0);
        assert_eq!(l.next_deadline(None), Some(t0 + ACTIVE_TICK));
        run_until(&mut l, t0 + ACTIVE_WINDOW + ACTIVE_TICK);
        // Quiet: the only deadline left is the late wipe tick, then nothing.
        assert_eq!(l.next_deadline(None), Some(t0 + SESSION_WIPE_AFTER));
        l.note_tick(t0 + SESSION_WIPE_AFTER);
        assert_eq!(l.next_deadline(None), None);
        // Traffic wakes it up again.
        let t2 = t0 + Duration::from_secs(1000);
        assert!(l.is_quiet(t2));
        l.note_tick(t2);
        l.mark_active(t2);
        assert_eq!(l.next_deadline(None), Some(t2 + ACTIVE_TICK));
    }

    #[test]
    fn pending_handshake_keeps_retrying_until_boringtun_gives_up() {
        let t0 = Instant::now();
        let mut l = link(None, t0);
        l.note_sent(t0, &[WG_HANDSHAKE_INIT, 0, 0, 0]);
        run_until(&mut l, t0 + Duration::from_secs(60));
        // Past the busy window, still ticking once a second for the retries.
        assert_eq!(l.next_deadline(None), Some(l.last_tick + HANDSHAKE_TICK));
        run_until(&mut l, t0 + Duration::from_secs(100));
        assert_eq!(l.next_deadline(None), Some(t0 + SESSION_WIPE_AFTER));
    }

    #[test]
    fn keepalive_is_the_only_idle_wakeup_and_zero_means_off() {
        let t0 = Instant::now();
        let mut l = link(Some(25), t0);
        let quiet = t0 + ACTIVE_WINDOW;
        l.note_tick(quiet);
        assert_eq!(l.next_deadline(None), Some(quiet + Duration::from_secs(25)));
        let mut off = link(Some(0), t0);
        off.note_tick(quiet);
        assert_eq!(off.next_deadline(None), Some(t0 + SESSION_WIPE_AFTER));
    }

    #[test]
    fn only_data_counts_as_sent_traffic() {
        let t0 = Instant::now();
        let mut l = link(None, t0);
        l.note_sent(t0, &[WG_DATA; WG_DATA_OVERHEAD]); // keepalive
        l.note_sent(t0, &[WG_DATA; WG_DATA_OVERHEAD + UID_HEADER_LEN + 100]);
        assert_eq!(l.counters.tx.packets, 1);
        assert_eq!(l.counters.tx.bytes, 100);
    }
}
