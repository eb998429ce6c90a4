//! A replaced TURN client, kept a few seconds so the release of its allocation is sent,
//! retransmitted and answered. Released first because the server may still hold the
//! allocation (an unanswered check is often our own uplink, briefly down), and while it
//! does a new Allocate from our address is refused; replaced because rtc-turn forgets a
//! relay only when its release succeeds, which a lost allocation's never does (the old
//! relay would go on refreshing itself and its permissions from our address, onto the new
//! allocation).

use bytes::BytesMut;
use rtc_shared::TransportMessage;
use rtc_turn::client::Client;
use sansio::Protocol;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Long enough for rtc-turn's retransmissions of the release; far below the 60 s after
/// which its relay would refresh itself.
const KEPT: Duration = Duration::from_secs(15);

pub(super) struct Retired {
    client: Client,
    until: Instant,
}

impl Retired {
    pub(super) fn new(client: Client, now: Instant) -> Retired {
        Retired {
            client,
            until: now + KEPT,
        }
    }

    pub(super) fn poll_transmit(&mut self) -> Option<(SocketAddr, BytesMut)> {
        self.client
            .poll_write()
            .map(|t| (t.transport.peer_addr, t.message))
    }

    /// A datagram from the server: the answer to the release, perhaps (anything else is
    /// for the new client, which gets it too).
    pub(super) fn handle_read(&mut self, msg: TransportMessage<BytesMut>) {
        let _ = self.client.handle_read(msg);
        while self.client.poll_event().is_some() {}
    }

    pub(super) fn poll_timeout(&mut self) -> Option<Instant> {
        let client = self.client.poll_timeout();
        Some(client.map_or(self.until, |t| t.min(self.until)))
    }

    /// Retransmits; false once its time is up (drop it).
    pub(super) fn handle_timeout(&mut self, now: Instant) -> bool {
        let _ = self.client.handle_timeout(now);
        while self.client.poll_event().is_some() {}
        now < self.until
    }
}
