//! The engine's wait for its next input.
//!
//! Each source's readiness is polled by hand, in a fixed order, through the runtime's
//! poll functions. A `select!` over the same sources built, registered and dropped one future
//! per source on every wake-up (a readiness future's registration and its drop each take its
//! fd's lock), and drew a random number to pick among the ready ones: at idle, where one
//! wake-up carries one packet, that was a large share of the engine's own work per packet
//! (ARCHITECTURE "Timers", idle RTT). A poll function keeps one waker slot per fd instead.
//!
//! The rare sources (requests, the timer, the XMPP session, the network watcher) are looked
//! at first; the tun and the links' socket, which carry the traffic, take turns at going
//! first, so that neither starves the other under load.

use super::timer::EngineTimer;
use super::udp_io::UdpIo;
use super::{poll_network_change, Command, NetWatch};
use crate::tun::TunDevice;
use crate::xmpp::session::XmppInput;
use std::io;
use std::task::{Context, Poll};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

/// What is ready.
pub(super) enum Woken {
    /// Packets to read from the tun (or the runtime is gone: the error). `failed`: the tun
    /// reported an error condition instead (its interface was deleted); a read says which.
    Tun { ready: io::Result<()>, failed: bool },
    /// Datagrams may be waiting on the links' socket.
    Network(io::Result<()>),
    /// From the XMPP session; `None`: the session task has ended.
    Xmpp(Option<XmppInput>),
    /// The network watcher saw a change (or failed).
    NetworkChanged(io::Result<()>),
    /// The engine's timer fired.
    Timer,
    /// A command; `None`: every handle is gone.
    Command(Option<Command>),
}

/// What the engine waits on.
pub(super) struct Sources<'a> {
    pub(super) tun: Option<&'a AsyncFd<TunDevice>>,
    pub(super) udp: &'a UdpIo,
    /// The XMPP session's inputs, while it runs.
    pub(super) xmpp: Option<&'a mut mpsc::Receiver<XmppInput>>,
    pub(super) netwatch: Option<&'a NetWatch>,
    pub(super) timer: &'a mut EngineTimer,
    pub(super) commands: &'a mut mpsc::Receiver<Command>,
}

/// Which of the two traffic sources goes first next time.
#[derive(Default)]
pub(super) struct Turn {
    network_first: bool,
}

impl Turn {
    /// The first ready source, or pending with every source's waker registered.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>, sources: Sources<'_>) -> Poll<Woken> {
        let Sources {
            tun,
            udp,
            xmpp,
            netwatch,
            timer,
            commands,
        } = sources;
        if let Poll::Ready(command) = commands.poll_recv(cx) {
            return Poll::Ready(Woken::Command(command));
        }
        if timer.poll_fired(cx).is_ready() {
            return Poll::Ready(Woken::Timer);
        }
        if let Some(Poll::Ready(input)) = xmpp.map(|inputs| inputs.poll_recv(cx)) {
            return Poll::Ready(Woken::Xmpp(input));
        }
        if let Some(Poll::Ready(changed)) = netwatch.map(|watch| poll_network_change(watch, cx)) {
            return Poll::Ready(Woken::NetworkChanged(changed));
        }
        self.network_first = !self.network_first;
        if self.network_first {
            if let Poll::Ready(ready) = udp.poll_readable(cx) {
                return Poll::Ready(Woken::Network(ready));
            }
        }
        if let Some(Poll::Ready(woken)) = tun.map(|tun| poll_tun(cx, tun)) {
            return Poll::Ready(woken);
        }
        if !self.network_first {
            if let Poll::Ready(ready) = udp.poll_readable(cx) {
                return Poll::Ready(Woken::Network(ready));
            }
        }
        Poll::Pending
    }
}

/// Readable, or in error. A tun whose interface was deleted reports only EPOLLERR, which the
/// runtime's read readiness does not include; the fd is watched for reading only, and mio
/// reports an EPOLLERR alone as the write side closed, so its write readiness comes only
/// with that error (`cli_e2e`'s deleted interface checks this). It is cleared here, and the
/// read that follows says what the error is.
fn poll_tun(cx: &mut Context<'_>, tun: &AsyncFd<TunDevice>) -> Poll<Woken> {
    if let Poll::Ready(ready) = tun.poll_read_ready(cx) {
        // The guard goes at once: a read that would block clears the readiness.
        return Poll::Ready(Woken::Tun {
            ready: ready.map(drop),
            failed: false,
        });
    }
    match tun.poll_write_ready(cx) {
        Poll::Ready(Ok(mut guard)) => {
            guard.clear_ready();
            Poll::Ready(Woken::Tun {
                ready: Ok(()),
                failed: true,
            })
        }
        Poll::Ready(Err(gone)) => Poll::Ready(Woken::Tun {
            ready: Err(gone),
            failed: false,
        }),
        Poll::Pending => Poll::Pending,
    }
}
