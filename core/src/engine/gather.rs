//! Reading the network in one go around an idle tick.
//!
//! At each point of the idle grid (`crate::idle_grid`) every idle link sends its keepalive,
//! and so do the friends' devices, whose grids are the same wall-clock instants as far as
//! their clocks agree. Read as they arrive, ten friends' keepalives are ten wake-ups a few
//! milliseconds apart. So the links' socket is left unwatched for a moment around the tick:
//! what arrives meanwhile waits in its buffer and is read in one wake-up.
//!
//! - After a timer wake-up of an idle engine (`Node::activity`) with nothing due for
//!   [`GATHER`], the socket is not watched for `GATHER`: the keepalives of friends whose
//!   clocks are a little behind ours, and the TURN server's answers.
//! - A datagram that wakes an idle engine whose next timer is a tick of the idle grid within
//!   `GATHER` is, most likely, the keepalive of a friend whose clock is a little ahead: the socket is left
//!   unwatched until our tick, and for `GATHER` after it as above. Each friend ahead would
//!   otherwise wake us once more per tick.
//!
//! Anything else that wakes the engine (a packet from the tun, a signal from the XMPP server,
//! a request) ends the wait at once. The cost: a packet from a friend that arrives in those
//! moments waits for the rest of them, once (the first packet of a flow that starts in the
//! 1–2 % of idle time around a tick). An engine with traffic never waits: a link that carried
//! traffic in the last 20 s is busy.

use crate::node::Activity;
use std::io;
use std::time::{Duration, Instant};

/// How long the socket is left unwatched after an idle tick: friends' clocks and one-way
/// delays agree within this (NTP keeps phones within tens of milliseconds).
pub(super) const GATHER: Duration = Duration::from_millis(250);

/// The socket's watch, as the gathering needs it (the links' `UdpIo`).
pub(super) trait Watch {
    fn unwatch(&mut self);
    fn watch(&mut self) -> io::Result<()>;
}

/// What woke the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Wake {
    Timer,
    /// Datagrams on the links' socket.
    Network,
    /// The tun, the XMPP session, a request, the network watcher.
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Early keepalives arrived; waiting for our own tick.
    BeforeTick,
    /// After our tick.
    AfterTick,
}

/// Whether the socket is left unwatched, until when, and why.
#[derive(Default)]
pub(super) struct Gather {
    unwatched: Option<(Instant, Phase)>,
}

impl Gather {
    /// When the engine must wake to read what gathered.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.unwatched.map(|(until, _)| until)
    }

    /// After the engine handled a wake-up: `activity` says the node's state now (asked only
    /// when the choice depends on it: not for the wake-ups that end a wait). True when the
    /// wait after an idle tick ran its full time and the socket is watched again: the engine
    /// sleeps until its next deadline, usually the next tick, and may tidy up first (`heap`).
    /// A wait ended early by traffic, or one the socket could not be watched after, is false.
    #[must_use]
    pub(super) fn after(
        &mut self,
        now: Instant,
        wake: Wake,
        activity: impl FnOnce() -> Activity,
        socket: &mut impl Watch,
    ) -> bool {
        let quiet_after_tick = |activity: Activity| match activity {
            Activity::Busy => false,
            Activity::Idle { next, .. } => next.is_none_or(|at| at >= now + GATHER),
        };
        match (self.unwatched, wake) {
            (None, Wake::Timer) => {
                if quiet_after_tick(activity()) {
                    socket.unwatch();
                    self.unwatched = Some((now + GATHER, Phase::AfterTick));
                }
            }
            (None, Wake::Network) => {
                if let Activity::Idle {
                    next: Some(tick),
                    tick: true,
                } = activity()
                {
                    if tick > now && tick <= now + GATHER {
                        socket.unwatch();
                        self.unwatched = Some((tick, Phase::BeforeTick));
                    }
                }
            }
            (None, _) => {}
            // Our tick came (the node has handled it): on for the time after it.
            (Some((until, Phase::BeforeTick)), Wake::Timer) if until <= now => {
                if quiet_after_tick(activity()) {
                    self.unwatched = Some((now + GATHER, Phase::AfterTick));
                } else {
                    self.watch(now, socket);
                }
            }
            (Some((until, Phase::AfterTick)), Wake::Timer) if until <= now => {
                return self.watch(now, socket);
            }
            // Another timer within the wait: it goes on.
            (Some(_), Wake::Timer) => {}
            (Some(_), Wake::Network | Wake::Other) => {
                self.watch(now, socket);
            }
        }
        false
    }

    /// Watches the socket again; false if it could not be (tried again later).
    fn watch(&mut self, now: Instant, socket: &mut impl Watch) -> bool {
        match socket.watch() {
            Ok(()) => {
                self.unwatched = None;
                true
            }
            // Out of file descriptors, say: the datagrams keep in the socket's buffer; the
            // next wake-up tries again.
            Err(error) => {
                tracing::debug!(%error, "cannot watch the links' socket again yet");
                self.unwatched = Some((now + GATHER, Phase::AfterTick));
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Socket {
        unwatched: bool,
        refuse: bool,
    }

    impl Watch for Socket {
        fn unwatch(&mut self) {
            self.unwatched = true;
        }
        fn watch(&mut self) -> io::Result<()> {
            if self.refuse {
                return Err(io::Error::from_raw_os_error(libc::EMFILE));
            }
            self.unwatched = false;
            Ok(())
        }
    }

    const TICK: Duration = Duration::from_secs(25);

    /// Idle, the next deadline a tick of the idle grid.
    fn idle(next: Instant) -> Activity {
        Activity::Idle {
            next: Some(next),
            tick: true,
        }
    }

    /// Idle, the next deadline something else's (ICE checks while a link forms).
    fn forming(next: Instant) -> Activity {
        Activity::Idle {
            next: Some(next),
            tick: false,
        }
    }

    #[test]
    fn an_idle_tick_leaves_the_socket_unwatched_for_a_moment() {
        let t0 = Instant::now();
        let (mut g, mut s) = (Gather::default(), Socket::default());
        assert!(!g.after(t0, Wake::Timer, || idle(t0 + TICK), &mut s));
        assert!(s.unwatched);
        assert_eq!(g.deadline(), Some(t0 + GATHER));
        // Another timer meanwhile (a TURN retransmission, say) does not end it.
        let mid = t0 + GATHER / 2;
        assert!(!g.after(mid, Wake::Timer, || idle(t0 + TICK), &mut s));
        assert!(s.unwatched);
        assert!(g.after(t0 + GATHER, Wake::Timer, || idle(t0 + TICK), &mut s));
        assert!(!s.unwatched);
        assert_eq!(g.deadline(), None);
    }

    #[test]
    fn a_keepalive_just_before_our_tick_waits_for_it_and_what_follows() {
        let t0 = Instant::now();
        let tick = t0 + Duration::from_millis(40);
        let (mut g, mut s) = (Gather::default(), Socket::default());
        assert!(!g.after(t0, Wake::Network, || idle(tick), &mut s));
        assert!(s.unwatched);
        assert_eq!(g.deadline(), Some(tick));
        // The tick (handled by the node) keeps it unwatched for the time after it.
        assert!(!g.after(tick, Wake::Timer, || idle(tick + TICK), &mut s));
        assert!(s.unwatched);
        assert_eq!(g.deadline(), Some(tick + GATHER));
        assert!(g.after(tick + GATHER, Wake::Timer, || idle(tick + TICK), &mut s));
        assert!(!s.unwatched);
        // A datagram far from any tick is read as it comes.
        let later = tick + Duration::from_secs(10);
        assert!(!g.after(later, Wake::Network, || idle(tick + TICK), &mut s));
        assert!(!s.unwatched);
    }

    #[test]
    fn a_busy_engine_or_one_with_timers_due_reads_the_network_as_it_comes() {
        let t0 = Instant::now();
        let (mut g, mut s) = (Gather::default(), Socket::default());
        assert!(!g.after(t0, Wake::Timer, || Activity::Busy, &mut s));
        assert!(!g.after(t0, Wake::Network, || Activity::Busy, &mut s));
        // ICE checks every 200 ms while a link forms: their answers are read as they come.
        let soon = t0 + Duration::from_millis(200);
        assert!(!g.after(t0, Wake::Timer, || forming(soon), &mut s));
        assert!(!g.after(t0, Wake::Network, || forming(soon), &mut s));
        assert!(!s.unwatched);
        assert_eq!(g.deadline(), None);
        // A friend's data starting while we wait for our tick makes the node busy: read on.
        assert!(!g.after(t0, Wake::Network, || idle(soon), &mut s));
        assert!(s.unwatched);
        assert!(!g.after(soon, Wake::Timer, || Activity::Busy, &mut s));
        assert!(!s.unwatched);
    }

    #[test]
    fn anything_else_that_wakes_the_engine_ends_the_wait() {
        let t0 = Instant::now();
        let (mut g, mut s) = (Gather::default(), Socket::default());
        assert!(!g.after(t0, Wake::Timer, || idle(t0 + TICK), &mut s));
        assert!(s.unwatched);
        assert!(!g.after(t0 + GATHER / 5, Wake::Other, || idle(t0 + TICK), &mut s));
        assert!(!s.unwatched);
        assert_eq!(g.deadline(), None);
    }

    #[test]
    fn a_refused_watch_is_tried_again() {
        let t0 = Instant::now();
        let (mut g, mut s) = (Gather::default(), Socket::default());
        assert!(!g.after(t0, Wake::Timer, || idle(t0 + TICK), &mut s));
        s.refuse = true;
        assert!(!g.after(t0 + GATHER, Wake::Timer, || idle(t0 + TICK), &mut s));
        assert!(s.unwatched);
        assert_eq!(g.deadline(), Some(t0 + GATHER * 2));
        s.refuse = false;
        assert!(g.after(t0 + GATHER * 2, Wake::Timer, || idle(t0 + TICK), &mut s));
        assert!(!s.unwatched);
    }
}
