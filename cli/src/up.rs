//! `socialvpn up`: the daemon. Creates the TUN, logs in, links, serves the control socket,
//! and on SIGINT/SIGTERM closes the links (friends are told) and removes the interface.

use crate::config::Config;
use crate::control;
use socialvpn_core::api::{Event, LinkChange, Request, Response, XmppStatus};
use socialvpn_core::identity::DeviceIdentity;
use socialvpn_core::tun::linux::{create, TunConfig};
use socialvpn_core::{Engine, PreparedEngine};
use std::collections::HashMap;
use std::path::Path;
use tokio::signal::unix::{signal, SignalKind};

pub fn run(config_path: &Path) -> Result<(), String> {
    let config = Config::load(config_path).map_err(|e| e.to_string())?;
    let credentials = config.credentials().map_err(|e| e.to_string())?;
    let identity = DeviceIdentity::load_or_create(&config.state_dir).map_err(|e| e.to_string())?;
    let engine_config = config
        .engine_config(credentials, &identity.uid().to_string())
        .map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        // Signals and the control socket first: whatever happens after the interface exists
        // ends in a clean shutdown.
        let signals = Signals::new().map_err(|e| e.to_string())?;
        let socket = config.control_socket();
        let listener = control::bind(&socket)
            .map_err(|e| format!("control socket {}: {e}", socket.display()))?;
        let result = run_engine(&config, engine_config, listener, signals).await;
        let _ = std::fs::remove_file(&socket);
        result
    })
}

async fn run_engine(
    config: &Config,
    engine_config: socialvpn_core::EngineConfig,
    listener: tokio::net::UnixListener,
    mut signals: Signals,
) -> Result<(), String> {
    let prepared = PreparedEngine::load(engine_config).map_err(|e| e.to_string())?;
    let tun = create(&TunConfig {
        name: config.network.tun.clone(),
        mtu: config.network.mtu,
        ipv4: prepared.ipv4(),
        ipv4_prefix: prepared.subnet().prefix(),
        ipv6: Some(prepared.ipv6()),
        offload: true,
    })
    .map_err(|e| {
        if e.needs_privileges() {
            format!("{e} (socialvpn up needs root or CAP_NET_ADMIN)")
        } else {
            e.to_string()
        }
    })?;
    say(&format!(
        "device {}, address {} in {} on {}",
        prepared.uid(),
        prepared.ipv4(),
        prepared.subnet(),
        config.network.tun
    ));
    if !tun.ipv6 {
        say("IPv6 is switched off on this machine: running IPv4 only");
    }
    let engine = prepared
        .start(Some(tun.device))
        .map_err(|e| e.to_string())?;
    say(&format!("logging in as {}", config.account.jid));
    let result = serve(&engine, listener, &mut signals).await;
    say("closing links");
    engine.shutdown().await.map_err(|e| e.to_string())?;
    say(&format!("stopped; {} removed", config.network.tun));
    result
}

/// A progress line; a closed stdout (a detached terminal) must not kill the daemon.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "socialvpn: {line}");
}

/// SIGINT, SIGTERM and SIGHUP all mean: close the links and stop.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    async fn any(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
            _ = self.hangup.recv() => {}
        }
    }
}

async fn serve(
    engine: &Engine,
    listener: tokio::net::UnixListener,
    signals: &mut Signals,
) -> Result<(), String> {
    let mut events = engine.subscribe();
    let mut progress = Progress::default();
    loop {
        tokio::select! {
            () = signals.any() => return Ok(()),
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    control::serve(stream, engine).await;
                }
            }
            event = events.recv() => match event {
                Ok(Event::TunnelLost { reason }) => {
                    // Nothing carries this device's traffic any more: stop rather than look
                    // connected (a service manager starts the daemon again with a new one).
                    return Err(format!("the tunnel failed ({reason})"));
                }
                Ok(event) => progress.report(engine, event).await,
                // Missed some while busy: nothing to catch up on for progress lines.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {}
            },
            () = engine.stopped() => {
                // Asked to (`sign_out` on the control socket) or after a fatal error.
                while let Ok(event) = events.try_recv() {
                    match event {
                        Event::Stopped { error: None } => {
                            say("signed out");
                            return Ok(());
                        }
                        Event::Stopped { error: Some(e) } => {
                            return Err(format!("the engine stopped: {e}"));
                        }
                        _ => {}
                    }
                }
                return Err("the engine stopped (see the log above)".into());
            }
        }
    }
}

/// Prints what changes: login state, the roster once loaded, links coming and going.
#[derive(Default)]
struct Progress {
    online: bool,
    roster_loaded: bool,
    /// The last reported change of each link (so a path replaced by one of the same kind,
    /// or a repeated report, prints nothing).
    links: HashMap<String, LinkChange>,
}

impl Progress {
    async fn report(&mut self, engine: &Engine, event: Event) {
        match event {
            Event::Xmpp { status: state } => {
                self.online = state == XmppStatus::Online;
                match state {
                    XmppStatus::Online => say("logged in"),
                    XmppStatus::AuthFailed => say("login refused: check the password"),
                    XmppStatus::TokenRejected => say(
                        "the sign-in token was refused (expired or revoked): run `socialvpn login`",
                    ),
                    XmppStatus::Connecting => {}
                    other => say(&format!("XMPP {other}")),
                }
            }
            Event::RosterChanged if self.online && !self.roster_loaded => {
                let Response::Roster { friends: roster } = engine.handle(Request::Roster).await
                else {
                    return;
                };
                let friends = roster.iter().filter(|e| e.mutual && !e.own).count();
                let online = roster
                    .iter()
                    .filter(|e| !e.own && !e.devices.is_empty())
                    .count();
                say(&format!(
                    "roster loaded: {friends} friends, {online} online"
                ));
                self.roster_loaded = true;
            }
            Event::FriendRequest { jid } => {
                say(&format!(
                    "{jid} asks to be your friend (socialvpn friend accept {jid})"
                ));
            }
            Event::Link {
                uid,
                device,
                change,
            } => {
                if let Some(line) = self.link_line(&uid, &device, change) {
                    say(&line);
                }
            }
            // `up` watches the engine task itself and reports how it ended.
            Event::RosterChanged
            | Event::Missed { .. }
            | Event::Unknown
            | Event::Stopped { .. }
            | Event::TunnelLost { .. } => {}
        }
    }

    /// What to print for a link's change, if anything.
    fn link_line(&mut self, uid: &str, device: &str, change: LinkChange) -> Option<String> {
        let before = self.links.insert(uid.to_string(), change);
        if before == Some(change) {
            return None;
        }
        let again = matches!(before, Some(LinkChange::PathLost));
        Some(match change {
            LinkChange::Up { relayed } => {
                let path = if relayed { "relayed (TURN)" } else { "direct" };
                if again {
                    format!("link to {device}: back, {path}")
                } else {
                    format!("link to {device}: {path}")
                }
            }
            LinkChange::PathLost => format!("link to {device}: path lost, reconnecting"),
            LinkChange::Closed { by_peer: true } => {
                self.links.remove(uid);
                format!("link to {device}: closed by the friend's device (switched off?)")
            }
            LinkChange::Closed { by_peer: false } => {
                self.links.remove(uid);
                format!("link to {device}: closed")
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_lines_say_what_changed_once() {
        let mut p = Progress::default();
        let d = "bob@example.org/laptop";
        let mut line = |c| p.link_line("ab12", d, c);
        assert_eq!(
            line(LinkChange::Up { relayed: false }).as_deref(),
            Some("link to bob@example.org/laptop: direct")
        );
        assert_eq!(line(LinkChange::Up { relayed: false }), None);
        assert_eq!(
            line(LinkChange::PathLost).as_deref(),
            Some("link to bob@example.org/laptop: path lost, reconnecting")
        );
        assert_eq!(
            line(LinkChange::Up { relayed: true }).as_deref(),
            Some("link to bob@example.org/laptop: back, relayed (TURN)")
        );
        assert_eq!(
            line(LinkChange::Closed { by_peer: false }).as_deref(),
            Some("link to bob@example.org/laptop: closed")
        );
        assert_eq!(
            line(LinkChange::Up { relayed: false }).as_deref(),
            Some("link to bob@example.org/laptop: direct")
        );
    }
}
