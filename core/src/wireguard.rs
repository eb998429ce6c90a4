//! One link: the WireGuard session with one friend device and when it next needs a tick.
//!
//! boringtun has no deadlines of its own: `update_timers` looks at when packets went and came
//! and acts when one of its timeouts has passed. It asks to be called every 250 ms; we call it
//! far less, and only when it can act, so that a link does not wake the device after traffic:
//! - before a link is used after [`ACTIVE_TICK`] without a tick (boringtun stamps each packet
//!   with the time of its last tick, so busy links tick with their packets, at no extra
//!   wake-up, and a quiet link sees time pass before it judges a datagram);
//! - once after data came and nothing went back for [`PASSIVE_KEEPALIVE`] (boringtun then
//!   sends the keepalive that tells the peer the data arrived), and once after data went and
//!   nothing came back for [`NO_REPLY`] (boringtun then starts a new handshake);
//! - once a second while a handshake is outstanding (boringtun retries every 5 s for up to
//!   90 s);
//! - at a configured NAT keepalive, when the path watch wants a look, and once, late, when the
//!   session keys may be wiped.
//!
//! Its rekeying after 120 s and 165 s is checked when traffic ticks the link, which is when
//! WireGuard wants it ("after sending", "after receiving").

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

/// A link untouched for this long is ticked before its next packet (boringtun's tick period).
pub const ACTIVE_TICK: Duration = Duration::from_millis(250);
/// A link counts as busy this long after its last authentic packet (boringtun's passive
/// keepalive and handshake retry, with margin): its peer is likely to send again soon.
pub const BUSY_AFTER_TRAFFIC: Duration = Duration::from_secs(20);
/// boringtun's KEEPALIVE_TIMEOUT: data heard and nothing sent back this long → a keepalive.
pub const PASSIVE_KEEPALIVE: Duration = Duration::from_secs(10);
/// boringtun's KEEPALIVE_TIMEOUT + REKEY_TIMEOUT: data sent and nothing heard this long → a
/// new handshake.
pub const NO_REPLY: Duration = Duration::from_secs(15);
/// How late after one of those timeouts the link is ticked: boringtun reads its own clock a
/// little after ours in every tick, and must find the timeout passed.
const TIMEOUT_SLACK: Duration = Duration::from_millis(100);
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
    /// What boringtun's timers know of the traffic: see [`TrafficStamps`].
    stamps: TrafficStamps,
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
            stamps: TrafficStamps::new(now),
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

    /// Whether a handshake completed since `since`. Not `has_session`: while a rekey is
    /// under way the old session is still good, and the rekey's retries still need ticks.
    /// boringtun dates a session by the tick before its handshake completed, and the link is
    /// ticked before an initiation and before a response after a quiet spell: so the tick
    /// before completion is at most one tick period before `since`.
    fn handshake_completed_since(&self, now: Instant, since: Instant) -> bool {
        self.tunn
            .time_since_last_handshake()
            .is_some_and(|age| age <= now.saturating_duration_since(since) + 2 * ACTIVE_TICK)
    }

    /// Whether the link carried traffic lately or waits for a handshake.
    pub(crate) fn is_busy(&self, now: Instant) -> bool {
        self.handshake_since.is_some()
            || now.saturating_duration_since(self.last_activity) < BUSY_AFTER_TRAFFIC
    }

    /// Records authentic traffic in either direction.
    pub(crate) fn mark_active(&mut self, now: Instant) {
        self.last_activity = now;
        self.wiped = false;
        if self
            .handshake_since
            .is_some_and(|since| self.handshake_completed_since(now, since))
        {
            self.handshake_since = None;
        }
    }

    /// Records an authentic datagram from the peer (`data`: an IP packet, not a handshake
    /// message or a keepalive): the path works.
    pub(crate) fn note_heard(&mut self, now: Instant, data: bool) {
        self.mark_active(now);
        self.path.heard();
        self.stamps.heard(self.last_tick, data);
    }

    /// Records a datagram we sent: data for the counters and the path watch, an initiation
    /// for the retry timer.
    pub(crate) fn note_sent(&mut self, now: Instant, datagram: &[u8]) {
        self.last_send = now;
        let data = datagram.first() == Some(&WG_DATA) && datagram.len() > WG_DATA_OVERHEAD;
        self.stamps.sent(self.last_tick, data);
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
        self.stamps.ticked(now);
        if now.saturating_duration_since(self.last_activity) >= SESSION_WIPE_AFTER {
            self.wiped = true;
        }
        if let Some(since) = self.handshake_since {
            if self.handshake_completed_since(now, since)
                || now.saturating_duration_since(since) >= HANDSHAKE_GIVE_UP
            {
                self.handshake_since = None;
            }
        }
    }

    /// When this link next needs `update_timers` (or a look at its path), or `None` if it
    /// can sleep until traffic. The tick that drops old keys may run late: it goes on the
    /// node's idle grid, with the other links' timers.
    pub fn next_deadline(&self, grid: Option<&IdleGrid>) -> Option<Instant> {
        if self.handshake_since.is_some() {
            return Some(self.last_tick + HANDSHAKE_TICK);
        }
        // boringtun reads its clock a little after ours in the tick that sends it and in the
        // one that checks: a tick exactly one interval on could find it not quite due.
        let keepalive = self
            .keepalive
            .map(|k| self.last_send.max(self.last_tick) + k + TIMEOUT_SLACK);
        let wipe = (!self.wiped).then(|| {
            let at = self.last_activity + SESSION_WIPE_AFTER;
            grid.map_or(at, |g| g.not_before(at))
        });
        [keepalive, wipe, self.path.next_check(), self.stamps.due()]
            .into_iter()
            .flatten()
            .min()
    }
}

/// boringtun's own record of a link's traffic, kept beside it so that we know when its
/// `update_timers` will act. boringtun stamps each packet with the time of the tick before
/// it (not the packet's own time) and compares the stamps strictly; so does this. Its two
/// flags say whether the last packet came in (a keepalive may be owed) or went out (an
/// answer is awaited); boringtun clears a flag when it acts on it, and so does a tick at or
/// after the due time here.
#[derive(Clone, Copy, Debug)]
struct TrafficStamps {
    heard: Instant,
    sent: Instant,
    data_heard: Option<Instant>,
    data_sent: Option<Instant>,
    want_keepalive: bool,
    want_handshake: bool,
}

impl TrafficStamps {
    fn new(now: Instant) -> TrafficStamps {
        TrafficStamps {
            heard: now,
            sent: now,
            data_heard: None,
            data_sent: None,
            want_keepalive: false,
            want_handshake: false,
        }
    }

    /// An authentic datagram came in after the tick at `tick`.
    fn heard(&mut self, tick: Instant, data: bool) {
        self.heard = tick;
        if data {
            self.data_heard = Some(tick);
        }
        self.want_keepalive = true;
        self.want_handshake = false;
    }

    /// A datagram went out after the tick at `tick`.
    fn sent(&mut self, tick: Instant, data: bool) {
        self.sent = tick;
        if data {
            self.data_sent = Some(tick);
        }
        self.want_handshake = true;
        self.want_keepalive = false;
    }

    /// The passive keepalive (data heard, nothing sent since) and the new handshake (data
    /// sent, nothing heard since), if one is owed.
    fn keepalive_due(&self) -> Option<Instant> {
        (self.want_keepalive && self.data_heard.is_some_and(|d| d > self.sent))
            .then(|| self.sent + PASSIVE_KEEPALIVE + TIMEOUT_SLACK)
    }

    fn handshake_due(&self) -> Option<Instant> {
        (self.want_handshake && self.data_sent.is_some_and(|d| d > self.heard))
            .then(|| self.heard + NO_REPLY + TIMEOUT_SLACK)
    }

    fn due(&self) -> Option<Instant> {
        self.keepalive_due().or(self.handshake_due())
    }

    /// A tick at `now` let boringtun act on what was due.
    fn ticked(&mut self, now: Instant) {
        if self.keepalive_due().is_some_and(|at| at <= now) {
            self.want_keepalive = false;
        }
        if self.handshake_due().is_some_and(|at| at <= now) {
            self.want_handshake = false;
        }
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

    const DATA: [u8; WG_DATA_OVERHEAD + UID_HEADER_LEN + 100] =
        [WG_DATA; WG_DATA_OVERHEAD + UID_HEADER_LEN + 100];
    const KEEPALIVE: [u8; WG_DATA_OVERHEAD] = [WG_DATA; WG_DATA_OVERHEAD];

    /// A link's ticks, as the data plane gives them: before a packet after a quiet spell.
    fn sent(l: &mut Link, now: Instant, datagram: &[u8]) {
        if l.is_quiet(now) {
            l.note_tick(now);
        }
        l.mark_active(now);
        l.note_sent(now, datagram);
    }

    fn heard(l: &mut Link, now: Instant, data: bool) {
        if l.is_quiet(now) {
            l.note_tick(now);
        }
        l.note_heard(now, data);
    }

    #[test]
    fn an_answered_exchange_leaves_nothing_to_tick_but_the_late_wipe() {
        let t0 = Instant::now();
        let mut l = link(None, t0);
        assert_eq!(l.next_deadline(None), Some(t0 + SESSION_WIPE_AFTER));
        // A ping and its reply within one tick period: boringtun stamps both with that tick,
        // owes no keepalive and awaits no answer.
        let t1 = t0 + Duration::from_secs(1);
        let t2 = t1 + Duration::from_millis(1);
        sent(&mut l, t1, &DATA);
        heard(&mut l, t2, true);
        assert_eq!(l.next_deadline(None), Some(t2 + SESSION_WIPE_AFTER));
        assert_eq!(run_until(&mut l, t1 + Duration::from_secs(120)), 0);
        l.note_tick(t2 + SESSION_WIPE_AFTER);
        assert_eq!(l.next_deadline(None), None);
    }

    #[test]
    fn data_heard_last_ticks_once_for_boringtuns_keepalive() {
        let t0 = Instant::now();
        let mut l = link(None, t0);
        sent(&mut l, t0, &DATA);
        // The answer comes after a quiet spell: boringtun owes a keepalive 10 s after what
        // it sent, unless something else goes out first.
        let t1 = t0 + Duration::from_secs(1);
        heard(&mut l, t1, true);
        let due = t0 + PASSIVE_KEEPALIVE + TIMEOUT_SLACK;
        assert_eq!(l.next_deadline(None), Some(due));
        // boringtun sends it in that tick; then only the wipe is left.
        l.note_tick(due);
        l.note_sent(due, &KEEPALIVE);
        assert_eq!(l.next_deadline(None), Some(t1 + SESSION_WIPE_AFTER));
        // Had it not (the peer's data was older on its clock), the tick still used it up.
        let mut m = link(None, t0);
        sent(&mut m, t0, &DATA);
        heard(&mut m, t1, true);
        assert_eq!(run_until(&mut m, t0 + Duration::from_secs(120)), 1);
        // A reply sent before the keepalive was due owes none.
        let mut r = link(None, t0);
        sent(&mut r, t0, &DATA);
        heard(&mut r, t1, true);
        sent(&mut r, t1 + Duration::from_millis(10), &DATA);
        assert_eq!(r.stamps.keepalive_due(), None);
    }

    #[test]
    fn unanswered_data_ticks_for_the_path_watch_and_boringtuns_handshake_only() {
        let t0 = Instant::now();
        let mut l = link(None, t0);
        heard(&mut l, t0, false);
        let t1 = t0 + Duration::from_secs(2);
        sent(&mut l, t1, &DATA);
        // Suspect and dead path (1.5 s, 4 s), then boringtun's handshake 15 s after it last
        // heard the peer.
        let mut ticks = Vec::new();
        while let Some(d) = l
            .next_deadline(None)
            .filter(|d| *d < t0 + Duration::from_secs(60))
        {
            l.note_tick(d);
            l.path.check(d);
            ticks.push(d);
        }
        assert_eq!(
            ticks,
            [
                t1 + crate::liveness::SUSPECT_AFTER,
                t1 + crate::liveness::DEAD_AFTER,
                t0 + NO_REPLY + TIMEOUT_SLACK,
            ]
        );
        // An answer in time cancels it.
        let mut m = link(None, t0);
        heard(&mut m, t0, false);
        sent(&mut m, t1, &DATA);
        let t2 = t1 + Duration::from_secs(1);
        heard(&mut m, t2, false);
        assert_eq!(m.stamps.handshake_due(), None);
        assert_eq!(m.next_deadline(None), Some(t2 + SESSION_WIPE_AFTER));
    }

    #[test]
    fn pending_handshake_keeps_retrying_until_boringtun_gives_up() {
        let t0 = Instant::now();
        let mut l = link(None, t0);
        l.note_sent(t0, &[WG_HANDSHAKE_INIT, 0, 0, 0]);
        run_until(&mut l, t0 + Duration::from_secs(60));
        // Still ticking once a second for the retries.
        assert_eq!(l.next_deadline(None), Some(l.last_tick + HANDSHAKE_TICK));
        run_until(&mut l, t0 + Duration::from_secs(100));
        assert_eq!(l.next_deadline(None), Some(t0 + SESSION_WIPE_AFTER));
    }

    #[test]
    fn keepalive_is_the_only_idle_wakeup_and_zero_means_off() {
        let t0 = Instant::now();
        let mut l = link(Some(25), t0);
        let quiet = t0 + Duration::from_secs(1);
        l.note_tick(quiet);
        assert_eq!(
            l.next_deadline(None),
            Some(quiet + Duration::from_secs(25) + TIMEOUT_SLACK)
        );
        let mut off = link(Some(0), t0);
        off.note_tick(quiet);
        assert_eq!(off.next_deadline(None), Some(t0 + SESSION_WIPE_AFTER));
    }

    #[test]
    fn only_data_counts_as_sent_traffic() {
        let t0 = Instant::now();
        let mut l = link(None, t0);
        l.note_sent(t0, &KEEPALIVE);
        l.note_sent(t0, &DATA);
        assert_eq!(l.counters.tx.packets, 1);
        assert_eq!(l.counters.tx.bytes, 100);
    }
}
