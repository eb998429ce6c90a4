//! `socialvpn up`: the daemon. Creates the TUN, logs in, links, serves the control socket,
//! and on SIGINT/SIGTERM closes the links (friends are told) and removes the interface.

use crate::config::Config;
use crate::control;
use socialvpn_core::engine::{EngineEvent, XmppStatus};
use socialvpn_core::identity::DeviceIdentity;
use socialvpn_core::tun::linux::{create, TunConfig};
use socialvpn_core::{Engine, PreparedEngine};
use std::path::Path;
use tokio::signal::unix::{signal, SignalKind};

pub fn run(config_path: &Path) -> Result<(), String> {
    let config = Config::load(config_path).map_err(|e| e.to_string())?;
    let password = config.password().map_err(|e| e.to_string())?;
    let identity = DeviceIdentity::load_or_create(&config.state_dir).map_err(|e| e.to_string())?;
    let engine_config = config
        .engine_config(password, &identity.uid().to_string())
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
    .map_err(|e| format!("{e} (socialvpn up needs root or CAP_NET_ADMIN)"))?;
    say(&format!(
        "device {}, address {} in {} on {}",
        prepared.uid(),
        prepared.ipv4(),
        prepared.subnet(),
        config.network.tun
    ));
    let engine = prepared.start(Some(tun)).map_err(|e| e.to_string())?;
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
                Ok(event) => progress.report(engine, event).await,
                // Missed some while busy: nothing to catch up on for progress lines.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {}
            },
            () = engine.stopped() => {
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
}

impl Progress {
    async fn report(&mut self, engine: &Engine, event: EngineEvent) {
        match event {
            EngineEvent::Xmpp(state) => {
                self.online = state == XmppStatus::Online;
                match state {
                    XmppStatus::Online => say("logged in"),
                    XmppStatus::AuthFailed => say("login refused: check the password"),
                    XmppStatus::Connecting => {}
                    other => say(&format!("XMPP {other}")),
                }
            }
            EngineEvent::RosterChanged if self.online && !self.roster_loaded => {
                let Ok(roster) = engine.roster().await else {
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
            EngineEvent::FriendRequest(jid) => {
                say(&format!(
                    "{jid} asks to be your friend (socialvpn friend accept {jid})"
                ));
            }
            EngineEvent::Link { uid, up, relayed } => {
                let Ok(roster) = engine.roster().await else {
                    return;
                };
                let name = roster
                    .iter()
                    .flat_map(|e| e.devices.iter().map(move |d| (e, d)))
                    .find(|(_, d)| d.uid.as_deref() == Some(uid.as_str()))
                    .map(|(e, d)| format!("{}/{}", e.jid, d.resource))
                    .unwrap_or_else(|| uid.chars().take(12).collect());
                match (up, relayed) {
                    (true, true) => say(&format!("link to {name}: relayed (TURN)")),
                    (true, false) => say(&format!("link to {name}: direct")),
                    (false, _) => say(&format!("link to {name}: closed")),
                }
            }
            // `up` watches the engine task itself and reports how it ended.
            EngineEvent::RosterChanged | EngineEvent::Stopped { .. } => {}
        }
    }
}
