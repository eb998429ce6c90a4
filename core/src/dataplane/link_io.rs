//! What the data plane does with one link's WireGuard state: ticks its timers, encrypts a
//! packet for it and sends the datagrams either produces.

use super::{NetSink, WG_DATA_OVERHEAD, WG_MIN_BUFFER};
use crate::counters::{Counters, DropReason};
use crate::path::{Path, PathKind};
use crate::wireguard::Link;
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::TunnResult;
use std::time::Instant;

/// Ticks a link not ticked for a tick period before it handles a packet or starts a
/// handshake: boringtun stamps both with the time of its last tick, and after a quiet spell
/// that would be long past.
pub(super) fn tick_if_quiet(
    link: &mut Link,
    now: Instant,
    scratch: &mut [u8],
    counters: &mut Counters,
    net: &mut impl NetSink,
) {
    if link.is_quiet(now) {
        tick(link, now, scratch, counters, net);
    }
}

/// Ticks one link's WireGuard timers and sends what they produce.
pub(super) fn tick(
    link: &mut Link,
    now: Instant,
    scratch: &mut [u8],
    counters: &mut Counters,
    net: &mut impl NetSink,
) {
    link.note_tick(now);
    match link.tunn.update_timers(scratch) {
        TunnResult::WriteToNetwork(datagram) => {
            if let Some(endpoint) = link.endpoint {
                link.note_sent(now, datagram);
                send(counters, net, endpoint, datagram);
            }
        }
        TunnResult::Err(WireGuardError::ConnectionExpired) => {
            tracing::debug!(peer = %link.uid, "session expired");
        }
        TunnResult::Err(e) => tracing::debug!(peer = %link.uid, error = ?e, "timer error"),
        _ => {}
    }
}

/// Encrypts `payload` (IP packet + UID header) for `link` and sends it to the link's
/// endpoint. While a handshake is pending boringtun queues the packet and starts one.
pub(super) fn encapsulate(
    link: &mut Link,
    now: Instant,
    payload: &[u8],
    scratch: &mut [u8],
    counters: &mut Counters,
    net: &mut impl NetSink,
) -> Result<(), DropReason> {
    tick_if_quiet(link, now, scratch, counters, net);
    link.mark_active(now);
    let Some(endpoint) = link.endpoint else {
        // The path is still being found: let boringtun queue the packet for the session
        // (the handshake it starts cannot be sent yet; it is resent once a path exists).
        // boringtun bounds that queue.
        let _ = link.tunn.encapsulate(payload, scratch);
        return Ok(());
    };
    // Encrypted straight into the socket's send batch where the sink has one, else (a
    // relayed path, wrapped for the relay; a sink without a batch) into `scratch`. boringtun
    // needs room for the payload and its overhead, or for a handshake initiation when the
    // session is gone (it then queues the packet).
    let expect = payload.len() + WG_DATA_OVERHEAD;
    let mut rejected = None;
    let mut build = |room: &mut [u8]| match link.tunn.encapsulate(payload, room) {
        TunnResult::WriteToNetwork(datagram) => {
            link.note_sent(now, datagram);
            // boringtun builds at the start of the buffer it is given.
            datagram.len()
        }
        TunnResult::Err(e) => {
            rejected = Some(e);
            0
        }
        TunnResult::Done | TunnResult::WriteToTunnelV4(..) | TunnResult::WriteToTunnelV6(..) => 0,
    };
    let built = match endpoint.kind {
        PathKind::Direct => net.send_built_to(
            endpoint.remote,
            expect,
            expect.max(WG_MIN_BUFFER),
            &mut build,
        ),
        PathKind::Relayed => None,
    };
    match built {
        Some(Ok(0)) => {}
        Some(Ok(len)) => counters.net_tx.add(len),
        Some(Err(e)) => {
            tracing::trace!(error = %e, "send failed");
            counters.drops.add(DropReason::NetSend);
        }
        None => {
            let len = build(scratch);
            if len > 0 {
                send(counters, net, endpoint, &scratch[..len]);
            }
        }
    }
    match rejected {
        Some(e) => {
            tracing::debug!(peer = %link.uid, error = ?e, "encapsulate failed");
            Err(DropReason::WireGuardRejected)
        }
        None => Ok(()),
    }
}

pub(super) fn send(counters: &mut Counters, net: &mut impl NetSink, path: Path, datagram: &[u8]) {
    match net.send_on(path, datagram) {
        Ok(()) => counters.net_tx.add(datagram.len()),
        Err(e) => {
            tracing::trace!(error = %e, "send failed");
            counters.drops.add(DropReason::NetSend);
        }
    }
}
