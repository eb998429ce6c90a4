//! The engine's wait for its next input.
//!
//! Each source's readiness is polled by hand, through the runtime's poll functions. A
//! `select!` over the same sources built one future per source on every wake-up, linked it
//! into its fd's list of waiters and unlinked it again when dropped (each under that fd's
//! lock), and drew a random number to pick among the ready ones: at idle, where one wake-up
//! carries one packet, that was a visible share of the engine's own work per packet
//! (ARCHITECTURE "Measured", idle RTT). A poll function keeps the task's waker in the fd's
//! fixed slot instead.
//!
//! The rare sources (requests, the timer, the XMPP session, the network watcher) are looked
//! at first, unless one of them woke the engine last time: then the traffic goes first, so
//! that a source that stays ready cannot starve it. Among themselves the rare sources take
//! turns (the one after the last to wake goes first): a request then waits behind at most
//! one XMPP input, and a server's flood of stanzas cannot hold back requests or the timer.
//! The tun and the links' socket take turns at going first, so that neither starves the
//! other under load.

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

/// Who goes first next time.
#[derive(Default)]
pub(super) struct Turn {
    /// Of the two traffic sources.
    network_first: bool,
    /// A rare source woke the engine last time: the traffic goes first now.
    rare_last: bool,
    /// The rare source looked at first (an index into `RARE`).
    rare_next: usize,
}

/// The rare sources, in the order of their turns.
#[derive(Clone, Copy)]
enum Rare {
    Command,
    Timer,
    Xmpp,
    NetWatch,
}

const RARE: [Rare; 4] = [Rare::Command, Rare::Timer, Rare::Xmpp, Rare::NetWatch];

impl Turn {
    /// The first ready source, or pending with every source's waker registered.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>, mut sources: Sources<'_>) -> Poll<Woken> {
        let traffic_first = self.rare_last;
        if traffic_first {
            if let Poll::Ready(woken) = self.poll_traffic(cx, &sources) {
                self.rare_last = false;
                return Poll::Ready(woken);
            }
        }
        if let Poll::Ready(woken) = self.poll_rare(cx, &mut sources) {
            self.rare_last = true;
            return Poll::Ready(woken);
        }
        if !traffic_first {
            if let Poll::Ready(woken) = self.poll_traffic(cx, &sources) {
                self.rare_last = false;
                return Poll::Ready(woken);
            }
        }
        Poll::Pending
    }

    /// The tun and the links' socket, in turns.
    fn poll_traffic(&mut self, cx: &mut Context<'_>, sources: &Sources<'_>) -> Poll<Woken> {
        self.network_first = !self.network_first;
        let network = |cx: &mut Context<'_>| sources.udp.poll_readable(cx).map(Woken::Network);
        if self.network_first {
            if let Poll::Ready(woken) = network(cx) {
                return Poll::Ready(woken);
            }
        }
        if let Some(Poll::Ready(woken)) = sources.tun.map(|tun| poll_tun(cx, tun)) {
            return Poll::Ready(woken);
        }
        if self.network_first {
            Poll::Pending
        } else {
            network(cx)
        }
    }

    /// Requests, the timer, the XMPP session and the network watcher, in turns.
    fn poll_rare(&mut self, cx: &mut Context<'_>, sources: &mut Sources<'_>) -> Poll<Woken> {
        for step in 0..RARE.len() {
            let at = (self.rare_next + step) % RARE.len();
            if let Poll::Ready(woken) = poll_one_rare(cx, sources, RARE[at]) {
                self.rare_next = (at + 1) % RARE.len();
                return Poll::Ready(woken);
            }
        }
        Poll::Pending
    }
}

fn poll_one_rare(cx: &mut Context<'_>, sources: &mut Sources<'_>, which: Rare) -> Poll<Woken> {
    match which {
        Rare::Command => sources.commands.poll_recv(cx).map(Woken::Command),
        Rare::Timer => sources.timer.poll_fired(cx).map(|()| Woken::Timer),
        Rare::Xmpp => match sources.xmpp.as_mut().map(|inputs| inputs.poll_recv(cx)) {
            Some(Poll::Ready(input)) => Poll::Ready(Woken::Xmpp(input)),
            _ => Poll::Pending,
        },
        Rare::NetWatch => match sources.netwatch.map(|watch| poll_network_change(watch, cx)) {
            Some(Poll::Ready(changed)) => Poll::Ready(Woken::NetworkChanged(changed)),
            _ => Poll::Pending,
        },
    }
}

/// Readable, or in error. A tun whose interface was deleted reports only EPOLLERR, which the
/// runtime's read readiness does not include. The fd is watched for reading only, and mio
/// reports an EPOLLERR alone as the write side closed (a tun never reports EPOLLHUP, the
/// other cause), so its write readiness comes only with that error (`cli_e2e`'s deleted
/// interface and `tunnel_attach`'s pipe check this; kqueue never sets it for a fd watched for
/// reading). A closed side is final in tokio: once set, it stays, and every wake-up reads
/// once more until the read says what failed (`TunReader::read_batch`).
fn poll_tun(cx: &mut Context<'_>, tun: &AsyncFd<TunDevice>) -> Poll<Woken> {
    if let Poll::Ready(ready) = tun.poll_read_ready(cx) {
        // The guard goes at once: a read that would block clears the readiness.
        return Poll::Ready(Woken::Tun {
            ready: ready.map(drop),
            failed: false,
        });
    }
    match tun.poll_write_ready(cx) {
        Poll::Ready(Ok(_failed)) => Poll::Ready(Woken::Tun {
            ready: Ok(()),
            failed: true,
        }),
        Poll::Ready(Err(gone)) => Poll::Ready(Woken::Tun {
            ready: Err(gone),
            failed: false,
        }),
        Poll::Pending => Poll::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::sync::oneshot;

    /// What each of `count` waits returns, by kind.
    async fn wake_order(
        turn: &mut Turn,
        udp: &UdpIo,
        timer: &mut EngineTimer,
        commands: &mut mpsc::Receiver<Command>,
        xmpp: &mut mpsc::Receiver<XmppInput>,
        count: usize,
    ) -> Vec<&'static str> {
        let mut order = Vec::new();
        for _ in 0..count {
            let woken = poll_fn(|cx| {
                turn.poll(
                    cx,
                    Sources {
                        tun: None,
                        udp,
                        xmpp: Some(&mut *xmpp),
                        netwatch: None,
                        timer: &mut *timer,
                        commands: &mut *commands,
                    },
                )
            })
            .await;
            order.push(match woken {
                Woken::Command(_) => "command",
                Woken::Xmpp(_) => "xmpp",
                _ => "other",
            });
        }
        order
    }

    #[tokio::test]
    async fn the_rare_sources_take_turns() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("loopback socket");
        let udp = UdpIo::new(socket).expect("watched socket");
        let mut timer = EngineTimer::new();
        let (command_tx, mut commands) = mpsc::channel(8);
        let (xmpp_tx, mut xmpp) = mpsc::channel(8);
        for _ in 0..3 {
            let (reply, _) = oneshot::channel();
            command_tx.try_send(Command::Stop(reply)).expect("room");
            xmpp_tx
                .try_send(XmppInput::Roster(Vec::new()))
                .expect("room");
        }
        let mut turn = Turn::default();
        // Queued requests do not hold back a queued stanza, nor stanzas a request.
        let order = wake_order(&mut turn, &udp, &mut timer, &mut commands, &mut xmpp, 4).await;
        assert_eq!(order, ["command", "xmpp", "command", "xmpp"]);
        // The turn passed the (absent) network watcher: requests are next.
        let order = wake_order(&mut turn, &udp, &mut timer, &mut commands, &mut xmpp, 2).await;
        assert_eq!(order, ["command", "xmpp"]);
    }
}
