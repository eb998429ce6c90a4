//! Reading the network in one go after an idle tick.
//!
//! At each point of the idle grid (`crate::idle_grid`) every idle link sends its keepalive,
//! and so do the friends' devices, whose grids are the same wall-clock instants as far as
//! their clocks agree. Read as they arrive, ten friends' keepalives are ten wake-ups a few
//! milliseconds apart. So after a timer wake-up of an engine that has nothing else due for a
//! while, the links' socket is not watched for [`GATHER`]: what arrives waits in its buffer
//! and is read in one wake-up when the time is up. Anything else that wakes the engine (a
//! packet from the tun, a signal from the XMPP server, a request) ends the wait at once.
//!
//! The cost: a packet from a friend that arrives within those 250 ms after an idle tick waits
//! for the rest of them, once (the first packet of a flow that starts in the 1 % of idle time
//! right after a tick). An engine with traffic never waits: its links tick every 250 ms
//! (boringtun's timers), which is not idle.

use super::udp_io::UdpIo;
use std::time::{Duration, Instant};

/// How long the socket is left unwatched after an idle tick: friends' clocks and one-way
/// delays agree within this (NTP keeps phones within tens of milliseconds).
pub(super) const GATHER: Duration = Duration::from_millis(250);

/// Whether the socket is being left unwatched, and until when.
#[derive(Default)]
pub(super) struct Gather {
    until: Option<Instant>,
}

impl Gather {
    /// When the engine must wake to read what gathered.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.until
    }

    /// After a timer wake-up: the gathering ends if its time is up; otherwise, if the engine
    /// is `idle` (`Node::is_idle` for `GATHER`), one starts.
    pub(super) fn after_timer(&mut self, now: Instant, idle: bool, udp: &mut UdpIo) {
        if self.until.is_some() {
            if self.until.is_some_and(|at| at <= now) {
                self.watch(now, udp);
            }
            return;
        }
        if idle {
            udp.unwatch();
            self.until = Some(now + GATHER);
        }
    }

    /// After any other wake-up: the engine is in use, so the network is read as it comes.
    pub(super) fn after_other(&mut self, now: Instant, udp: &mut UdpIo) {
        if self.until.is_some() {
            self.watch(now, udp);
        }
    }

    fn watch(&mut self, now: Instant, udp: &mut UdpIo) {
        match udp.watch() {
            Ok(()) => self.until = None,
            // Out of file descriptors, say: the datagrams keep in the socket's buffer; the
            // next wake-up tries again.
            Err(error) => {
                tracing::debug!(%error, "cannot watch the links' socket again yet");
                self.until = Some(now + GATHER);
            }
        }
    }
}
